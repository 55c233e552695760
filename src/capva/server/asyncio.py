"""SharedPV whose handlers run in an asyncio event loop (p4p.server.asyncio).

Handlers may be plain functions or coroutine functions.  ``loop=`` selects the loop (as
the seed documents); by default the loop running when the SharedPV is created, or, if none
is running then, the loop from which it is first opened or posted.  The network itself runs
in capva's own loop thread, so a slow handler never delays I/O.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

from .raw import Handler, handler_failed
from .raw import SharedPV as _SharedPV

_log = logging.getLogger(__name__)

__all__ = ["SharedPV", "Handler"]


class SharedPV(_SharedPV):
    def __init__(self, handler: Any = None, loop: asyncio.AbstractEventLoop | None = None, **kws: Any):
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        self.loop = loop
        self._tasks: set[asyncio.Task] = set()
        self._disconnected: asyncio.Event | None = None
        _SharedPV.__init__(self, handler=handler, **kws)

    def _bind_running_loop(self) -> None:
        if self.loop is None:
            try:
                self.loop = asyncio.get_running_loop()
            except RuntimeError:
                pass

    def open(self, value: Any, *args: Any, **kws: Any) -> None:
        """As raw ``open()``; a PV created before any loop ran binds to the loop it is
        first opened or posted from."""
        self._bind_running_loop()
        _SharedPV.open(self, value, *args, **kws)

    def post(self, value: Any, **kws: Any) -> None:
        self._bind_running_loop()
        _SharedPV.post(self, value, **kws)

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            try:
                self.loop = asyncio.get_running_loop()
            except RuntimeError:
                raise RuntimeError(
                    "capva.server.asyncio.SharedPV has no event loop: create it inside a running "
                    "loop or pass loop="
                ) from None
        return self.loop

    def _exec(self, op: Any, M: Any, *args: Any) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            if op is not None:
                op.done(error="handler event loop is not running")
            return
        try:
            loop.call_soon_threadsafe(self._run, op, M, args)
        except RuntimeError:
            if op is not None:
                op.done(error="handler event loop is closed")

    def _run(self, op: Any, M: Any, args: tuple) -> None:
        try:
            r = M(*args)
            if inspect.isawaitable(r):
                task = asyncio.ensure_future(self._await(op, r))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except Exception as e:
            handler_failed(op, e)

    async def _await(self, op: Any, aw: Any) -> None:
        try:
            await aw
        except Exception as e:
            handler_failed(op, e)

    def _onFirstConnect(self) -> None:
        if self._disconnected is None:
            self._disconnected = asyncio.Event()
        self._disconnected.clear()

    def _onLastDisconnect(self) -> None:
        if self._disconnected is not None:
            self._disconnected.set()

    def close(self, destroy: bool = False, sync: bool = False, timeout: float | None = None) -> Any:
        """Close; with ``sync=True`` returns an awaitable that waits for running handler
        tasks and onLastDisconnect."""
        _SharedPV.close(self, destroy)
        if sync:
            return self._wait_closed(timeout)
        return None

    async def _wait_closed(self, timeout: float | None) -> None:
        async def inner() -> None:
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            if self._disconnected is not None and self._channels:
                await self._disconnected.wait()

        await asyncio.wait_for(inner(), timeout)
