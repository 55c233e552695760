"""asyncio PVA client, p4p-compatible, usable from any running loop::

    from capva.client.asyncio import Context

    async def main():
        ctxt = Context('pva')
        print(await ctxt.get('demo:pv:name'))
        await asyncio.wait_for(ctxt.put('demo:pv:name', 5.0), 3.0)
        async with ctxt.monitor('demo:pv:name') as sub:    # async-iterator form
            async for value in sub:
                print(value)
                break
        await ctxt.close()

Operations return asyncio Futures (aiopvxs style): await them, pass them to
``asyncio.wait_for``, or cancel them - cancelling cancels the operation on the wire.  The
network runs in the loop the Context is first used from.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import AsyncIterator
from typing import Any

from .._aio.config import ClientConfig
from .._aio.pva_client import Cancelled, ClientContext, Disconnected, Finished, RemoteError
from ..pva.types import Type
from ..pva.value import Value
from ..pva.value import Value as _Value
from ._common import Unwrappers, make_builder, monitor_options, nt_map, put_request, request_value

_log = logging.getLogger(__name__)

__all__ = ["Context", "Subscription", "RemoteError", "Disconnected", "Finished", "Cancelled", "timesout"]


def timesout(deftimeout: float = 5.0):
    """p4p's decorator: add a ``timeout=`` keyword (asyncio.wait_for) to a coroutine function."""

    def decorate(fn):
        async def wrapper(*args: Any, timeout: float | None = deftimeout, **kws: Any) -> Any:
            return await asyncio.wait_for(fn(*args, **kws), timeout)

        wrapper.__name__ = fn.__name__
        wrapper.__doc__ = fn.__doc__
        return wrapper

    return decorate


class Subscription:
    """A monitor.  Give ``cb`` (a coroutine function, or a plain function) to have it called
    for each update, or iterate: ``async for value in sub``."""

    def __init__(self, ctxt: Context, name: str, cb: Any, notify_disconnect: bool, maxsize: int = 0):
        self.name = name
        self._ctxt = ctxt
        self._cb = cb
        self._notify = notify_disconnect
        self._Q: asyncio.Queue = asyncio.Queue(maxsize)
        self._mon: Any = None
        self._closed = False
        self._task: asyncio.Task | None = None
        if notify_disconnect:
            self._Q.put_nowait(Disconnected())
        if cb is not None:
            self._task = asyncio.ensure_future(self._run())

    def _event(self, kind: str, payload: Any) -> None:
        if self._closed:
            return
        if kind == "value":
            item: Any = self._ctxt._unwrappers.unwrap(self.name, payload)
        elif kind == "disconnected":
            if not self._notify:
                return
            item = Disconnected()
        elif kind == "finished":
            item = Finished()
        else:
            item = payload
        try:
            self._Q.put_nowait(item)
        except asyncio.QueueFull:  # bounded iterator: keep the newest
            try:
                self._Q.get_nowait()
            except asyncio.QueueEmpty:
                pass
            self._Q.put_nowait(item)
        if kind in ("finished", "error"):
            self._closed = True
            self._Q.put_nowait(None)

    async def _run(self) -> None:
        while True:
            item = await self._Q.get()
            if item is None:
                return
            try:
                r = self._cb(item)
                if asyncio.iscoroutine(r):
                    await r
            except asyncio.CancelledError:
                raise
            except Exception:
                _log.exception("Error in monitor callback of %s", self.name)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Any]:
        while True:
            item = await self._Q.get()
            if item is None:
                return
            if isinstance(item, Finished):
                return
            if isinstance(item, Exception) and not isinstance(item, Disconnected):
                raise item
            yield item

    def close(self) -> None:
        self._closed = True
        mon, self._mon = self._mon, None
        if mon is not None:
            mon.close()
        try:
            self._Q.put_nowait(None)
        except asyncio.QueueFull:
            pass

    async def wait_closed(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    @property
    def done(self) -> bool:
        return self._closed

    @property
    def empty(self) -> bool:
        return self._Q.empty()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, A: Any, B: Any, C: Any) -> None:
        self.close()
        await self.wait_closed()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, A: Any, B: Any, C: Any) -> None:
        self.close()


class Context:
    """asyncio PVA client context (p4p.client.asyncio.Context).  It may be created before
    the loop runs; it binds to the loop of its first operation."""

    Value = Value
    name = ""

    def __init__(
        self,
        provider: str = "pva",
        conf: dict[str, str] | None = None,
        useenv: bool = True,
        nt: Any = None,
        unwrap: Any = None,
    ):
        self.name = provider
        self._cfg = ClientConfig.from_env(os.environ, conf, useenv)
        self._unwrappers = Unwrappers(nt_map(nt, unwrap))
        self._ctx: ClientContext | None = None
        self._starting: asyncio.Future | None = None
        self._closed = False
        self._subs: weakref.WeakSet[Subscription] = weakref.WeakSet()

    async def _core(self) -> ClientContext:
        if self._closed:
            raise RuntimeError("Context has been closed")
        if self._ctx is not None:
            if self._starting is not None and not self._starting.done():
                await self._starting
            return self._ctx
        loop = asyncio.get_running_loop()
        self._ctx = ClientContext(self._cfg, loop)
        self._starting = loop.create_future()
        try:
            await self._ctx.start()
        finally:
            self._starting.set_result(None)
        return self._ctx

    def _task(self, coro: Any) -> asyncio.Future:
        return asyncio.ensure_future(coro)

    # -- operations (each returns an awaitable Future) -----------------------------------------

    def get(self, name: Any, request: Any = None) -> asyncio.Future:
        """Fetch value(s); a list of names gives a list (``asyncio.gather``)."""
        if isinstance(name, bytes):
            name = name.decode()
        if not isinstance(name, str):
            reqs = request if isinstance(request, list) else [request] * len(name)
            return asyncio.gather(*[self.get(n, r) for n, r in zip(name, reqs)])

        async def op() -> Any:
            ctx = await self._core()
            V = await ctx.get(name, request_value(request))
            return self._unwrappers.unwrap(name, V)

        return self._task(op())

    def put(
        self,
        name: Any,
        values: Any,
        request: Any = None,
        process: str | None = None,
        wait: bool | None = None,
        get: bool = True,
    ) -> asyncio.Future:
        """Write value(s) (same value forms as the thread Context)."""
        request = put_request(request, process, wait)
        if isinstance(name, bytes):
            name = name.decode()
        if not isinstance(name, str):
            reqs = request if isinstance(request, list) else [request] * len(name)
            return asyncio.gather(*[self.put(n, v, r, get=get) for n, v, r in zip(name, values, reqs)])

        async def op() -> None:
            ctx = await self._core()
            builder = make_builder(values, self._unwrappers.get(name))
            await ctx.put(name, builder, request_value(request), get=get)

        return self._task(op())

    def rpc(self, name: str, value: _Value | None, request: Any = None) -> asyncio.Future:
        async def op() -> Any:
            ctx = await self._core()
            R = await ctx.rpc(name, value if value is not None else Value(Type([])), request_value(request))
            return self._unwrappers.unwrap(name, R)

        return self._task(op())

    def info(self, name: str) -> asyncio.Future:
        """The PV's type description (GET_FIELD)."""

        async def op() -> Type:
            ctx = await self._core()
            return await ctx.get_field(name)

        return self._task(op())

    def monitor(
        self, name: str, cb: Any = None, request: Any = None, notify_disconnect: bool = False
    ) -> Subscription:
        """Subscribe.  With ``cb`` each update is passed to it (awaited if a coroutine);
        without, iterate the returned Subscription with ``async for``."""
        if self._closed:
            raise RuntimeError("Context has been closed")
        sub = Subscription(self, name, cb, notify_disconnect)
        self._subs.add(sub)
        req = request_value(request)
        pipeline, qsize = monitor_options(req)

        async def start() -> None:
            ctx = await self._core()
            if not sub._closed:
                sub._mon = ctx.monitor(name, req, sub._event, pipeline, qsize)

        asyncio.ensure_future(start())
        return sub

    def disconnect(self, name: str | None = None) -> None:
        if self._ctx is not None:
            self._ctx.disconnect(name)

    async def close(self) -> None:
        """Close the context: every subscription ends (iteration stops, ``done`` is True)."""
        self._closed = True
        for sub in list(self._subs):
            sub.close()
        if self._ctx is not None:
            await self._ctx.close()

    def conf(self) -> dict[str, str]:
        return self._cfg.conf()

    @staticmethod
    def makeRequest(request: str) -> _Value:
        return request_value(request)

    async def __aenter__(self) -> Context:
        return self

    async def __aexit__(self, A: Any, B: Any, C: Any) -> None:
        await self.close()
