"""Synchronous PVA client, p4p-compatible: ``from capva.client.thread import Context``.

    with Context('pva') as ctxt:
        print(ctxt.get('demo:pv:name'))            # an ntfloat (value, .severity, .timestamp)
        ctxt.put('demo:pv:name', 5.0)
        sub = ctxt.monitor('demo:pv:name', print)  # callbacks run in a worker thread
        ...
        sub.close()

The network runs in capva's background loop thread; callbacks never run there.  Lists of
names run in parallel and return lists (with ``throw=False`` exceptions go in the list).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from collections import deque
from typing import Any

from .._aio import loop as _loopmod
from .._aio.config import ClientConfig
from .._aio.pva_client import Cancelled, ClientContext, Disconnected, Finished, RemoteError
from ..pva.value import Value
from ..pva.value import Value as _Value
from ..util import SerialQueue
from ._common import Unwrappers, make_builder, monitor_options, nt_map, put_request, request_value

_log = logging.getLogger(__name__)

__all__ = ["Context", "Subscription", "RemoteError", "Disconnected", "Finished", "Cancelled", "TimeoutError"]

TimeoutError = TimeoutError  # the builtin, as p4p uses it


class _Flag:
    """A bool you can also call: ``sub.done`` and ``sub.done()`` both work."""

    __slots__ = ("_fn",)

    def __init__(self, fn):
        self._fn = fn

    def __bool__(self) -> bool:
        return bool(self._fn())

    def __call__(self) -> bool:
        return bool(self._fn())

    def __repr__(self) -> str:
        return repr(bool(self))


class Subscription:
    """A monitor; ``close()`` it (or use ``with``).  Callbacks for one subscription run in
    order, one at a time, never in the network thread.

    Events are appended to this subscription's own deque; the subscription is queued on the
    Context's dispatcher only when that deque goes from empty to non-empty, and the
    dispatcher drains it in one go: a burst of updates costs one hand-off, not one each."""

    def __init__(self, ctxt: Context, name: str, cb: Any, notify_disconnect: bool, queue: Any):
        self.name = name
        self._ctxt = ctxt
        self._cb = cb
        self._notify = notify_disconnect
        self._q = queue or ctxt._dispatch
        self._mon: Any = None
        self._closed = False
        self._events: deque = deque()
        self._busy = False  # queued on, or running in, the dispatcher
        self._lock = threading.Lock()
        if notify_disconnect:
            self._event("disconnected", None)

    def _event(self, kind: str, payload: Any) -> None:
        """(network loop) queue an event for the callback thread."""
        if self._closed and kind != "disconnected":
            return
        with self._lock:
            self._events.append((kind, payload))
            if self._busy:
                return
            self._busy = True
        self._q.push(self._drain)
        if kind in ("finished", "error"):
            self._closed = True

    def _drain(self) -> None:
        unwrap = self._ctxt._unwrappers.unwrap
        while True:
            with self._lock:
                if not self._events:
                    self._busy = False
                    return
                kind, payload = self._events.popleft()
            try:
                if kind == "value":
                    if self._mon is None and self._closed:
                        continue
                    arg = unwrap(self.name, payload)
                elif kind == "disconnected":
                    if not self._notify:
                        _log.debug("Subscription %s: disconnected", self.name)
                        continue
                    arg = Disconnected()
                elif kind == "finished":
                    arg = Finished()
                else:
                    arg = payload
                self._cb(arg)
            except Exception:
                _log.exception("Error in monitor callback of %s", self.name)

    def close(self) -> None:
        """Stop the subscription (idempotent)."""
        self._closed = True
        mon, self._mon = self._mon, None
        if mon is not None and not self._ctxt._closed:
            self._ctxt._lt.loop.call_soon_threadsafe(mon.close)

    @property
    def done(self) -> _Flag:
        """True once closed or finished by the server."""
        return _Flag(lambda: self._closed)

    @property
    def empty(self) -> _Flag:
        """True when no callback is queued or running."""
        return _Flag(lambda: not self._busy)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, A: Any, B: Any, C: Any) -> None:
        self.close()


class _OpFuture(concurrent.futures.Future):
    """A caller-side future whose cancel() also cancels the operation in the loop."""

    def __init__(self, loop: Any):
        super().__init__()
        self._loop = loop
        self._canceller: Any = None

    def cancel(self) -> bool:
        c = self._canceller
        if c is not None:
            try:
                self._loop.call_soon_threadsafe(c)
            except RuntimeError:
                pass
        return super().cancel()


class Context:
    """PVA client context (p4p.client.thread.Context); see the module docstring.

    :param provider: only ``'pva'`` is served (others are accepted and ignored, as p4p).
    :param conf: EPICS_PVA_* settings (strings), winning over the environment.
    :param useenv: also read the process environment.
    :param nt: None for the default NT unwrapping, False for raw Values, or {id: helper}.
    :param unwrap: legacy {id: function} unwrappers.
    """

    Value = Value
    name = ""

    def __init__(
        self,
        provider: str = "pva",
        conf: dict[str, str] | None = None,
        useenv: bool = True,
        nt: Any = None,
        unwrap: Any = None,
        maxsize: int = 0,
        queue: Any = None,
    ):
        self.name = provider
        self._cfg = ClientConfig.from_env(os.environ, conf, useenv)
        self._unwrappers = Unwrappers(nt_map(nt, unwrap))
        self._queue = queue
        # one serial dispatcher for this Context's monitor callbacks (p4p also funnels them
        # through a small shared work queue); pass queue= to monitor() for another
        self._dispatch = SerialQueue()
        self._closed = False
        self._lt = _loopmod.acquire()
        self._ctx = ClientContext(self._cfg, self._lt.loop)
        try:
            self._lt.run(self._ctx.start(), timeout=30)
        except BaseException:
            _loopmod.release(self._lt)
            raise

    # -- helpers ------------------------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise RuntimeError("Context has been closed")

    def _submit(self, coro: Any) -> concurrent.futures.Future:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self._lt.loop)

    def _collect(self, names: list[str], futs: list, timeout: float | None, throw: bool, post: Any) -> list:
        deadline = None if timeout is None else time.monotonic() + timeout
        results: list[Any] = [None] * len(names)
        try:
            for i, f in enumerate(futs):
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    results[i] = post(names[i], f.result(left))
                except concurrent.futures.TimeoutError:
                    results[i] = TimeoutError(names[i])
                except (concurrent.futures.CancelledError, Cancelled):
                    results[i] = Cancelled(names[i])
                except Exception as e:
                    results[i] = e
                if throw and isinstance(results[i], Exception):
                    raise results[i]
        finally:
            for f in futs:
                if not f.done():
                    f.cancel()  # cancels the operation on the wire
        return results

    @staticmethod
    def _as_list(name: Any) -> tuple[bool, list[str]]:
        if isinstance(name, (str, bytes)):
            return True, [name.decode() if isinstance(name, bytes) else name]
        return False, list(name)

    # -- operations ---------------------------------------------------------------------------

    def get(self, name: Any, request: Any = None, timeout: float = 5.0, throw: bool = True) -> Any:
        """Fetch the current value(s)."""
        self._check()
        single, names = self._as_list(name)
        reqs = request if isinstance(request, list) else [request] * len(names)
        futs = [self._start_get(n, request_value(r)) for n, r in zip(names, reqs)]
        res = self._collect(names, futs, timeout, throw, self._unwrappers.unwrap)
        return res[0] if single else res

    def _start_get(self, name: str, request: _Value) -> concurrent.futures.Future:
        loop = self._lt.loop
        fut = _OpFuture(loop)

        def done(value: Any, exc: BaseException | None) -> None:
            if fut.done():
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(value)

        def start() -> None:
            if not fut.done():
                fut._canceller = self._ctx.start_get(name, request, done)

        loop.call_soon_threadsafe(start)
        return fut

    def put(
        self,
        name: Any,
        values: Any,
        request: Any = None,
        timeout: float = 5.0,
        throw: bool = True,
        process: str | None = None,
        wait: bool | None = None,
        get: bool = True,
    ) -> Any:
        """Write value(s): a plain value (assigned through the NT helper), a dict of fields,
        a Value, a callable ``builder(V)``, or a JSON string starting with '{'."""
        self._check()
        single, names = self._as_list(name)
        vals = [values] if single else list(values)
        if len(vals) != len(names):
            raise ValueError("put() needs one value per name")
        request = put_request(request, process, wait)
        reqs = request if isinstance(request, list) else [request] * len(names)
        futs = []
        for n, v, r in zip(names, vals, reqs):
            builder = make_builder(v, self._unwrappers.get(n))
            futs.append(self._submit(self._ctx.put(n, builder, request_value(r), get=get)))
        res = self._collect(names, futs, timeout, throw, lambda n, r: r)
        return res[0] if single else res

    def rpc(
        self, name: str, value: _Value | None, request: Any = None, timeout: float = 5.0, throw: bool = True
    ) -> Any:
        """Remote procedure call; the result is unwrapped like a get."""
        self._check()
        if value is None:
            from ..pva.types import Type

            value = Value(Type([]))
        fut = self._submit(self._ctx.rpc(name, value, request_value(request)))
        return self._collect([name], [fut], timeout, throw, self._unwrappers.unwrap)[0]

    def info(self, name: str, timeout: float = 5.0, throw: bool = True) -> Any:
        """The PV's type description (PVA GET_FIELD), as a :class:`capva.Type`."""
        self._check()
        fut = self._submit(self._ctx.get_field(name))
        return self._collect([name], [fut], timeout, throw, lambda n, t: t)[0]

    def monitor(
        self, name: str, cb: Any, request: Any = None, notify_disconnect: bool = False, queue: Any = None
    ) -> Subscription:
        """Subscribe: ``cb(value)`` for every update (and Disconnected/RemoteError/Finished)."""
        self._check()
        sub = Subscription(self, name, cb, notify_disconnect, queue or self._queue)
        req = request_value(request)
        pipeline, qsize = monitor_options(req)

        def start() -> None:
            sub._mon = self._ctx.monitor(name, req, sub._event, pipeline, qsize)
            if sub._closed:
                sub._mon.close()

        self._lt.loop.call_soon_threadsafe(start)
        return sub

    def disconnect(self, name: str | None = None) -> None:
        """Forget cached channel(s); the next operation searches again."""
        if not self._closed:
            self._lt.loop.call_soon_threadsafe(self._ctx.disconnect, name)

    def hurryUp(self) -> None:
        """p4p compatibility: searches are already immediate for new channels."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._lt.run(self._ctx.close(), timeout=10)
        finally:
            _loopmod.release(self._lt)

    def conf(self) -> dict[str, str]:
        return self._cfg.conf()

    @staticmethod
    def makeRequest(request: str) -> _Value:
        return request_value(request)

    @staticmethod
    def providers() -> list[str]:
        return ["pva"]

    def __enter__(self) -> Context:
        return self

    def __exit__(self, A: Any, B: Any, C: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:
                pass
