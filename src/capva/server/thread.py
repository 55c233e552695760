"""SharedPV whose handlers run in threads (p4p.server.thread).

Handlers of one PV run in order, one at a time; different PVs run concurrently, and a
handler that blocks holds only its own PV (see :mod:`capva.util`).  Pass ``queue=`` (a
``WorkQueue``) to choose where handlers run instead.
"""

from __future__ import annotations

import logging
import threading
from functools import partial
from typing import Any

from ..util import SerialQueue, WorkQueue
from .raw import Handler, run_handler
from .raw import SharedPV as _SharedPV

_log = logging.getLogger(__name__)

__all__ = ["SharedPV", "Handler"]


def _on_queue(op: Any, M: Any, *args: Any) -> None:
    run_handler(op, M, *args)


class SharedPV(_SharedPV):
    """Thread-flavour SharedPV; see :class:`capva.server.raw.SharedPV` for the arguments.

    :param queue: a ``WorkQueue`` (p4p) or :class:`~capva.util.SerialQueue`; default: a
        serial queue of this PV's own on the shared elastic thread pool.
    """

    def __init__(self, queue: WorkQueue | SerialQueue | None = None, **kws: Any):
        self._queue = queue or SerialQueue()
        #: set at the last disconnect; made only when close(sync=True) has to wait for one
        #: (a thread Event costs 1.5 µs, and a server may connect thousands of PVs at once)
        self._disconnected: threading.Event | None = None
        self._connected = False
        _SharedPV.__init__(self, **kws)

    def _exec(self, op: Any, M: Any, *args: Any) -> None:
        self._queue.push(partial(_on_queue, op, M, *args))

    def _onFirstConnect(self) -> None:
        self._connected = True
        ev = self._disconnected
        if ev is not None:
            ev.clear()

    def _onLastDisconnect(self) -> None:
        with self._lock:
            self._connected = False
            ev = self._disconnected
        if ev is not None:
            ev.set()

    def close(self, destroy: bool = False, sync: bool = False, timeout: float | None = None) -> None:
        """Close (see raw); with ``sync=True`` wait for queued handlers and for
        onLastDisconnect (bounded by ``timeout``)."""
        _SharedPV.close(self, destroy)
        if sync:
            sync_fn = getattr(self._queue, "sync", None)
            if sync_fn is not None:
                sync_fn(timeout)
            with self._lock:
                ev = None
                if self._connected:  # (until onLastDisconnect has run)
                    ev = self._disconnected = self._disconnected or threading.Event()
            if ev is not None:
                ev.wait(timeout)
