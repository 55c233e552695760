"""Shared helpers for the client interop suites (``tests/test_client_*.py``).

Those suites drive *our* client (``capva.client.thread`` and ``capva.client.asyncio``)
against real servers: p4p (pvxs), pvapy (pvAccessCPP), softioc (QSRV2), capva's own server,
and servers in subprocesses that are killed and restarted.  This module holds what they
share:

* :class:`LoopThread` and :class:`AioContext`: capva's asyncio Context driven from plain test
  code through a loop thread, with the thread Context's call signatures (``timeout=``,
  ``throw=``), so one test body runs against both flavours (the ``flavour`` parameter);
* :class:`Updates`: a monitor callback that queues what it is given, for waiting on;
* :func:`free_port`, :func:`search_conf`: loopback ports and the client settings to reach a
  server on them;
* :class:`ServerProcess`: a server script in a subprocess, ready when it prints ``READY``,
  stopped by closing its stdin (or killed).

Everything binds 127.0.0.1, every thread, loop, context and process made here is closed by
its owner (fixtures use ``try/finally``), and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from capva.client import asyncio as caio
from capva.client import thread as cthread

__all__ = [
    "FLAVOURS",
    "LoopThread",
    "AioContext",
    "open_context",
    "Updates",
    "free_port",
    "search_conf",
    "ServerProcess",
]

FLAVOURS = ("thread", "asyncio")


# --------------------------------------------------------------------------- asyncio flavour


class LoopThread:
    """An asyncio loop running in a daemon thread; ``run(coro)`` waits for a result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-aio-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except BaseException:
            fut.cancel()
            raise

    def call(self, fn: Callable, *args: Any, timeout: float = 30.0) -> Any:
        """``fn(*args)`` in the loop thread (for APIs that need the running loop)."""

        async def wrapper() -> Any:
            return fn(*args)

        return self.run(wrapper(), timeout)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self.loop.is_running():
            with contextlib.suppress(Exception):
                self.run(cancel_all(), 10.0)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


class _AioSub:
    """The asyncio Subscription seen through :class:`AioContext`."""

    def __init__(self, lt: LoopThread, sub: caio.Subscription) -> None:
        self._lt = lt
        self.sub = sub

    def close(self) -> None:
        if not self._lt.loop.is_closed():
            self._lt.call(self.sub.close)
            self._lt.run(self.sub.wait_closed(), 10.0)

    def __enter__(self) -> _AioSub:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AioContext:
    """capva's asyncio ``Context`` with the thread Context's signatures.

    Each call runs in the loop thread: single names go through ``Context.get/put`` wrapped
    in ``asyncio.wait_for``; lists with ``throw=True`` use the Context's own list form
    (``asyncio.gather``); lists with ``throw=False`` gather per-name results with
    ``return_exceptions`` (the asyncio Context has no ``throw=``).  Monitor callbacks are
    coroutine functions, as p4p's asyncio client requires.
    """

    flavour = "asyncio"

    def __init__(self, lt: LoopThread, **kws: Any) -> None:
        self.lt = lt
        self.ctxt = caio.Context("pva", **kws)

    def _many(self, fn: Callable, names: list, args: list, timeout: float, throw: bool) -> Any:
        async def one(n: str, a: tuple) -> Any:
            try:
                return await asyncio.wait_for(fn(n, *a), timeout)
            except (asyncio.TimeoutError, TimeoutError):
                raise TimeoutError(n) from None

        async def run() -> Any:
            if throw:
                return await asyncio.gather(*[one(n, a) for n, a in zip(names, args)])
            return await asyncio.gather(*[one(n, a) for n, a in zip(names, args)], return_exceptions=True)

        return self.lt.run(run(), timeout + 10)

    def get(self, name: Any, request: Any = None, timeout: float = 5.0, throw: bool = True) -> Any:
        if isinstance(name, str):
            return self._many(self.ctxt.get, [name], [(request,)], timeout, True)[0]
        if throw:

            async def run() -> Any:
                return await asyncio.wait_for(self.ctxt.get(list(name), request), timeout)

            return self.lt.run(run(), timeout + 10)
        reqs = request if isinstance(request, list) else [request] * len(name)
        return self._many(self.ctxt.get, list(name), [(r,) for r in reqs], timeout, False)

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
        def put1(n: str, v: Any, r: Any) -> Any:
            return self.ctxt.put(n, v, r, process=process, wait=wait, get=get)

        if isinstance(name, str):
            return self._many(put1, [name], [(values, request)], timeout, True)[0]
        reqs = request if isinstance(request, list) else [request] * len(name)
        return self._many(put1, list(name), list(zip(values, reqs)), timeout, throw)

    def rpc(
        self, name: str, value: Any, request: Any = None, timeout: float = 5.0, throw: bool = True
    ) -> Any:
        return self._many(self.ctxt.rpc, [name], [(value, request)], timeout, throw)[0]

    def info(self, name: str, timeout: float = 5.0, throw: bool = True) -> Any:
        return self._many(self.ctxt.info, [name], [()], timeout, throw)[0]

    def monitor(
        self, name: str, cb: Callable, request: Any = None, notify_disconnect: bool = False
    ) -> _AioSub:
        async def acb(value: Any) -> None:
            cb(value)

        sub = self.lt.call(lambda: self.ctxt.monitor(name, acb, request, notify_disconnect=notify_disconnect))
        return _AioSub(self.lt, sub)

    def disconnect(self, name: str | None = None) -> None:
        self.lt.call(self.ctxt.disconnect, name)

    def close(self) -> None:
        self.lt.run(self.ctxt.close(), 15.0)

    def __enter__(self) -> AioContext:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@contextlib.contextmanager
def open_context(flavour: str, conf: dict, **kws: Any) -> Iterator[Any]:
    """A capva client Context of ``flavour`` ('thread' or 'asyncio') for ``conf`` (never
    the environment), closed afterwards (with its loop thread, for asyncio)."""
    if flavour == "thread":
        C = cthread.Context("pva", conf=conf, useenv=False, **kws)
        try:
            yield C
        finally:
            C.close()
        return
    lt = LoopThread()
    try:
        A = AioContext(lt, conf=conf, useenv=False, **kws)
        try:
            yield A
        finally:
            A.close()
    finally:
        lt.close()


# --------------------------------------------------------------------------- monitor updates


class Updates:
    """A monitor callback: every call is queued; ``next()`` / ``until()`` wait for them."""

    def __init__(self) -> None:
        self.q: queue.Queue = queue.Queue()

    def __call__(self, value: Any) -> None:
        self.q.put(value)

    def next(self, timeout: float = 10.0) -> Any:
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no monitor update within {timeout} s") from None

    def until(self, pred: Callable[[Any], Any], timeout: float = 10.0) -> list:
        """Updates up to and including the first one for which ``pred`` is true."""
        deadline = time.monotonic() + timeout
        seen: list = []
        while True:
            left = deadline - time.monotonic()
            try:
                v = self.q.get(timeout=max(0.0, left))
            except queue.Empty:
                raise AssertionError(f"condition not met within {timeout} s; saw {seen!r}") from None
            seen.append(v)
            if pred(v):
                return seen

    def drain(self) -> list:
        out = []
        while True:
            try:
                out.append(self.q.get_nowait())
            except queue.Empty:
                return out


# --------------------------------------------------------------------------- ports, config


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free on 127.0.0.1 right now (TCP by default, ``socket.SOCK_DGRAM`` for UDP)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def search_conf(udp: int) -> dict[str, str]:
    """Client settings that search a server by unicast UDP on 127.0.0.1:``udp``."""
    return {
        "EPICS_PVA_ADDR_LIST": f"127.0.0.1:{udp}",
        "EPICS_PVA_AUTO_ADDR_LIST": "NO",
        "EPICS_PVA_BROADCAST_PORT": str(udp),
        "EPICS_PVA_NAME_SERVERS": "",
    }


def server_env(tcp: int, udp: int, **extra: str) -> dict[str, str]:
    """Environment for a PVA server subprocess on 127.0.0.1 with the given ports: this
    process's environment minus every EPICS_PVA*/EPICS_CA* setting, plus the server keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EPICS_PVA", "EPICS_CA"))}
    env.update(
        EPICS_PVAS_INTF_ADDR_LIST="127.0.0.1",
        EPICS_PVAS_SERVER_PORT=str(tcp),
        EPICS_PVAS_BROADCAST_PORT=str(udp),
        EPICS_PVAS_BEACON_ADDR_LIST=f"127.0.0.1:{udp}",
        EPICS_PVAS_AUTO_BEACON_ADDR_LIST="NO",
        EPICS_PVA_ADDR_LIST="127.0.0.1",
        EPICS_PVA_AUTO_ADDR_LIST="NO",
        # a capva server also serves CA: keep it on loopback, on a random port, silent
        EPICS_CAS_INTF_ADDR_LIST="127.0.0.1",
        EPICS_CA_SERVER_PORT="0",
        EPICS_CAS_AUTO_BEACON_ADDR_LIST="NO",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


# --------------------------------------------------------------------------- server subprocess


class ServerProcess:
    """``python -c script`` with ``env``; the script prints ``READY`` once it serves and
    exits when its stdin closes.  ``stop()`` asks politely (then kills), ``kill()`` is
    SIGKILL (a crashed server).  Output is kept for failure messages."""

    def __init__(self, script: str, env: dict[str, str], ready_timeout: float = 30.0) -> None:
        self.script = script
        self.env = env
        self.lines: list[str] = []
        self._q: queue.Queue = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, name="server-output", daemon=True)
        self._reader.start()
        try:
            self._wait_ready(ready_timeout)
        except BaseException:
            self.kill()
            raise

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._q.put(line.strip())
        self._q.put(None)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._q.get(timeout=max(0.0, left))
            except queue.Empty:
                raise RuntimeError(f"server not ready within {timeout} s: {self.output()}") from None
            if line is None:
                raise RuntimeError(f"server exited ({self.proc.wait(5)}) before READY: {self.output()}")
            if line == "READY":
                return

    def expect(self, pred: Callable[[str], Any], timeout: float = 10.0) -> str:
        """The next output line (after READY) for which ``pred`` is true; earlier lines are
        skipped (they stay in ``lines``)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._q.get(timeout=max(0.0, left))
            except queue.Empty:
                raise AssertionError(
                    f"no matching server output within {timeout} s: {self.output()}"
                ) from None
            if line is None:
                raise AssertionError(f"server exited: {self.output()}")
            if pred(line):
                return line

    def send(self, line: str) -> None:
        """A line to the script's stdin (for scripts that take commands)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def output(self) -> str:
        return "\n".join(self.lines[-50:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._close_pipes()

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close_pipes()

    def _close_pipes(self) -> None:
        self._reader.join(5)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
