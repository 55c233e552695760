"""Session-wide test configuration.

The CA cross-checks (test_ca_dbr, test_ca_status, test_ca_convert) load EPICS base's libca
and libCom through ctypes to compare our tables and conversions with the real C library.
In a full run the same process has also run p4p (pvxs) and pvapy (pvAccessCPP), which use
those libraries too; at interpreter exit the libraries' C finalisers then crash (SIGSEGV)
after every test has passed.  Importing pyepics (``epics``) or ``softioc`` in-process (the CA
server suites do, so that a missing peer fails loudly) loads the same libraries, with the
same result ("corrupted size vs. prev_size", SIGABRT).  When those modules ran, the last
unconfigure hook leaves with
``os._exit(exitstatus)``: pytest's result is kept and the crashing C teardown is skipped.
"""

from __future__ import annotations

import os
import sys

import pytest

_NATIVE_CHECKS = ("test_ca_dbr", "test_ca_status", "test_ca_convert")
#: peers whose import loads EPICS base's C libraries into this process (pyepics' libca,
#: softioc's IOC core); with p4p/pvapy also loaded their finalisers abort at exit the same way
_NATIVE_PEERS = ("epics", "softioc")


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if any(m in sys.modules for m in (*_NATIVE_CHECKS, *_NATIVE_PEERS)):
        status = getattr(config, "_capva_exitstatus", 0)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(status))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config._capva_exitstatus = exitstatus  # type: ignore[attr-defined]
