"""Smoke test of the CA server benchmark: it runs, all three servers answer, the table is printed.

``bench_ca.py`` drives caproto's, softioc's and capva's CA servers with pyepics clients, all
in subprocesses; benchmarks are run by hand or by ``make bench``, so without this test a change
to capva's server API, to the peers' protocol or to the benchmark could break it unnoticed.
Timings are never asserted: the run is short and the machine shared, so only the shape of the
output is (a W2 and a W4 row with figures for all three servers and both ratios, the
targets line, and softioc and the client under the normal scheduling policy).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import caproto  # noqa: F401  (required peers: fail here, clearly, rather than in the subprocess)
import epics  # noqa: F401  (pyepics: the benchmark's client)
import pytest
import softioc  # noqa: F401

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_ca.py"
NUM = r"[\d,]+\.?\d*"
RATIO = r"\d+\.\d\dx"

pytestmark = pytest.mark.timeout(180)


def test_bench_ca_quick_w2_w4(tmp_path: Path) -> None:
    log = tmp_path / "peers.log"
    r = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--only", "W2,W4", "--monitors", "2", "--log", str(log)],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    peers = log.read_text() if log.exists() else ""
    assert r.returncode == 0, r.stdout + r.stderr + peers[-4000:]
    # caproto, softioc, capva, capva/softioc, capva/caproto
    row = rf"\s+/s\s+{NUM}\s+{NUM}\s+{NUM}\s+{RATIO}\s+{RATIO}\s"
    assert re.search(rf"^W2 gets/s \(sequential\){row}", r.stdout, re.M), r.stdout
    assert re.search(rf"^W4 1 client: updates/s per client{row}", r.stdout, re.M), r.stdout
    assert re.search(rf"^W4 2 clients: server posts/s{row}", r.stdout, re.M), r.stdout
    assert re.search(r"^targets: ", r.stdout, re.M), r.stdout
    assert "errors:" not in r.stdout, r.stdout
    # softioc ran under the policy of the other servers (as root, EPICS would have taken
    # real-time priorities had the benchmark not dropped CAP_SYS_NICE)
    assert "(softioc: the normal scheduling policy, as the other servers)" in r.stdout, r.stdout
    assert "(pyepics client: the normal scheduling policy, as the servers)" in r.stdout, r.stdout
