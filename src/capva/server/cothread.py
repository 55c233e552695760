"""SharedPV whose handlers run as cothreads (p4p.server.cothread).

Needs the ``cothread`` package; importing this module without it raises an ImportError
that says so.
"""

from __future__ import annotations

import logging
from typing import Any

try:
    import cothread as _cothread
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "capva.server.cothread needs the 'cothread' package (pip install cothread); "
        "use capva.server.thread or capva.server.asyncio instead"
    ) from e

from functools import partial

from .raw import Handler, run_handler
from .raw import SharedPV as _SharedPV

_log = logging.getLogger(__name__)

__all__ = ["SharedPV", "Handler"]


def _sync(timeout: float | None = None) -> None:
    event = _cothread.Event()
    _cothread.Callback(event.Signal)
    event.Wait(timeout)


class SharedPV(_SharedPV):
    def __init__(self, queue: Any = None, **kws: Any):
        self._queue = queue or _cothread.Callback
        self._disconnected = _cothread.Event(auto_reset=False)
        self._disconnected.Signal()
        _SharedPV.__init__(self, **kws)

    def _exec(self, op: Any, M: Any, *args: Any) -> None:
        self._queue(partial(run_handler, op, M, *args))

    def _onFirstConnect(self) -> None:
        self._disconnected.Reset()

    def _onLastDisconnect(self) -> None:
        self._disconnected.Signal()

    def close(self, destroy: bool = False, sync: bool = False, timeout: float | None = None) -> None:
        _SharedPV.close(self, destroy)
        if sync:
            _sync(timeout)
            self._disconnected.Wait(timeout)
