"""Shared helpers for the server interop suites (``tests/test_server_*.py``).

Those suites drive *our* server (``capva.server``) with real peers: p4p (pvxs) clients in
process and as CLI subprocesses, pvapy (pvAccessCPP), and raw sockets.  The server side is
chosen here, by :func:`load_impl`:

* default: ``capva`` (``capva.server``, ``capva.server.thread``, ``capva.nt``, ...);
* ``CAPVA_TEST_REFERENCE=p4p``: the same tests run against p4p's own server, as a sanity check
  of the test logic (p4p is the behaviour we copy).  Tests of deliberate differences from p4p
  call :func:`capva_only`, which turns them into an expected failure on the reference.

Everything binds 127.0.0.1 (``Server(..., isolate=True)``), and every server and client made
here is closed by a context manager.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import queue
import socket
import struct
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from p4p.client.thread import Context

__all__ = [
    "REFERENCE_ENV",
    "impl_name",
    "load_impl",
    "capva_only",
    "p4p_bug",
    "serve",
    "client",
    "client_conf",
    "ports",
    "cli_env",
    "Mailbox",
    "wait_until",
    "thread_idents",
    "assert_no_new_threads",
    "collected",
    "RawPVA",
    "PeerError",
    "PeerProcess",
]

REFERENCE_ENV = "CAPVA_TEST_REFERENCE"
_IMPLS = ("capva", "p4p")


def impl_name() -> str:
    """Which server the suites drive: ``capva`` unless ``$CAPVA_TEST_REFERENCE`` says ``p4p``."""
    name = os.environ.get(REFERENCE_ENV, "").strip() or "capva"
    if name not in _IMPLS:
        raise RuntimeError(f"{REFERENCE_ENV}={name!r}: expected one of {_IMPLS}")
    return name


def load_impl(name: str | None = None) -> types.SimpleNamespace:
    """The server-side API of ``capva`` or ``p4p`` as one namespace.

    Attributes: ``name``, ``Server``, ``StaticProvider``, ``DynamicProvider``,
    ``installProvider``, ``removeProvider``, ``ServerOperation``, ``SharedPV`` (thread
    flavour), ``thread`` and ``asyncio`` (the flavour modules), ``nt`` (NT helpers of the same
    package, so values handed to the server are the server's own Value class), ``Value``,
    ``Type``, ``WorkQueue``.  A missing module raises ImportError: the suites fail, never skip.
    """
    pkg = name or impl_name()
    root = importlib.import_module(pkg)
    server = importlib.import_module(f"{pkg}.server")
    thread = importlib.import_module(f"{pkg}.server.thread")
    aio = importlib.import_module(f"{pkg}.server.asyncio")
    nt = importlib.import_module(f"{pkg}.nt")
    util = importlib.import_module(f"{pkg}.util")
    return types.SimpleNamespace(
        name=pkg,
        Server=server.Server,
        StaticProvider=server.StaticProvider,
        DynamicProvider=server.DynamicProvider,
        installProvider=server.installProvider,
        removeProvider=server.removeProvider,
        ServerOperation=server.ServerOperation,
        SharedPV=thread.SharedPV,
        thread=thread,
        asyncio=aio,
        nt=nt,
        Value=root.Value,
        Type=root.Type,
        WorkQueue=util.WorkQueue,
    )


def capva_only(impl: types.SimpleNamespace, why: str) -> None:
    """Mark a test of a deliberate capva difference: on the p4p reference it is an expected
    failure (so the reference run stays green and documents the difference)."""
    if impl.name != "capva":
        pytest.xfail(f"capva-only behaviour (p4p differs): {why}")


def p4p_bug(impl: types.SimpleNamespace, why: str) -> None:
    """Mark a test that p4p's own server fails (a reference bug, seen when the suite runs with
    ``CAPVA_TEST_REFERENCE=p4p``): an expected failure there, a plain test against capva."""
    if impl.name != "capva":
        pytest.xfail(f"p4p reference bug: {why}")


# --------------------------------------------------------------------------- servers, clients


@contextlib.contextmanager
def serve(impl: types.SimpleNamespace, *providers: Any, **kws: Any) -> Iterator[Any]:
    """``impl.Server(providers=[...], isolate=True)``, always stopped afterwards."""
    kws.setdefault("isolate", True)
    S = impl.Server(providers=list(providers), **kws)
    try:
        yield S
    finally:
        S.stop()


def ports(conf: dict) -> tuple[int, int]:
    """(TCP port, UDP search port) of a server, from its ``conf()``."""
    tcp = int(conf.get("EPICS_PVAS_SERVER_PORT") or conf["EPICS_PVA_SERVER_PORT"])
    udp = int(conf.get("EPICS_PVAS_BROADCAST_PORT") or conf["EPICS_PVA_BROADCAST_PORT"])
    return tcp, udp


def client_conf(*confs: dict) -> dict:
    """A p4p client configuration that searches every listed server by unicast on loopback."""
    addrs = []
    for c in confs:
        _tcp, udp = ports(c)
        addrs.append(f"127.0.0.1:{udp}")
    _tcp, udp0 = ports(confs[0])
    return {
        "EPICS_PVA_ADDR_LIST": " ".join(addrs),
        "EPICS_PVA_AUTO_ADDR_LIST": "NO",
        "EPICS_PVA_BROADCAST_PORT": str(udp0),
    }


@contextlib.contextmanager
def client(conf: dict, **kws: Any) -> Iterator[Context]:
    """A p4p thread Context for a server's ``conf()`` (never the process environment)."""
    with Context("pva", conf=conf, useenv=False, **kws) as C:
        yield C


def cli_env(conf: dict) -> dict:
    """Environment for a client subprocess: this process's, minus every inherited EPICS_PVA*
    setting, plus the client keys (EPICS_PVA_*) of ``conf``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPICS_PVA")}
    env.update({k: str(v) for k, v in conf.items() if k.startswith("EPICS_PVA_")})
    env["EPICS_PVA_AUTO_ADDR_LIST"] = "NO"
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Mailbox:
    """A put/rpc handler: every put is recorded on ``self.ops`` (``(value, pvRequest, op)``),
    posted, and completed.  RPCs answer with ``self.rpc_reply(op)`` when given."""

    def __init__(self, rpc_reply: Callable[[Any], Any] | None = None) -> None:
        self.ops: queue.Queue = queue.Queue()
        self.rpc_reply = rpc_reply

    def put(self, pv: Any, op: Any) -> None:
        V = op.value()
        self.ops.put((V, op.pvRequest(), op))
        pv.post(V)
        op.done()

    def rpc(self, pv: Any, op: Any) -> None:
        if self.rpc_reply is None:
            op.done(error="no rpc here")
        else:
            op.done(self.rpc_reply(op))


# --------------------------------------------------------------------------- waiting and leaks


def wait_until(pred: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01) -> Any:
    """Poll ``pred`` until it returns something true (returned) or ``timeout`` passes (the last
    false result is returned).  For conditions no event reports (thread counts, gc)."""
    deadline = time.monotonic() + timeout
    while True:
        r = pred()
        if r or time.monotonic() >= deadline:
            return r
        time.sleep(interval)


def thread_idents() -> dict[int, str]:
    return {t.ident: t.name for t in threading.enumerate() if t.ident is not None}


def assert_no_new_threads(before: dict[int, str], timeout: float = 5.0) -> None:
    """Every thread alive now and not in ``before`` must end within ``timeout``."""

    def new() -> dict[int, str]:
        return {i: n for i, n in thread_idents().items() if i not in before}

    wait_until(lambda: not new(), timeout)
    left = new()
    assert not left, f"threads left running: {sorted(left.values())}"


def collected(*refs: Any, timeout: float = 5.0) -> list:
    """Run gc until every weakref in ``refs`` is dead (or ``timeout``); return the survivors."""

    def alive() -> list:
        gc.collect()
        return [r() for r in refs if r() is not None]

    wait_until(lambda: not alive(), timeout, interval=0.05)
    return [f"{type(o).__module__}.{type(o).__qualname__}" for o in alive()]


# --------------------------------------------------------------------------- peer subprocess


class PeerError(Exception):
    """An exception raised by a client library inside a :class:`PeerProcess` (its type name and
    text; the original may not be picklable, e.g. ``pvaccess.PvaException``)."""


def _peer_call(fn: Callable, args: tuple, kws: dict) -> Any:
    try:
        return fn(*args, **kws)
    except Exception as e:
        raise PeerError(f"{type(e).__name__}: {e}") from None


def _peer_ready() -> int:
    return os.getpid()


class PeerProcess:
    """A spawned worker process that runs module-level functions for the test process.

    Used for client libraries that cannot share a process with a pure-Python server: pvapy's
    blocking calls (``Channel.get``) hold the GIL while they wait for the network, so the
    server's loop thread could never answer them.  ``env`` is added to the worker's
    environment (pvAccessCPP reads EPICS_PVA_* once, from the environment).  The worker is
    one long-lived process, so its client context and its TCP connection (with its type
    cache) span every call.
    """

    def __init__(self, env: dict) -> None:
        import concurrent.futures
        import multiprocessing

        self._env = env
        self._cf = concurrent.futures
        self._ctx = multiprocessing.get_context("spawn")
        self._pool: Any = None
        self._start()

    def _start(self) -> None:
        saved = {k: os.environ.get(k) for k in self._env}
        os.environ.update(self._env)
        try:
            self._pool = self._cf.ProcessPoolExecutor(max_workers=1, mp_context=self._ctx)
            self._pool.submit(_peer_ready).result(timeout=60)  # spawned now, with env
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def call(self, fn: Callable, *args: Any, timeout: float = 30.0, **kws: Any) -> Any:
        """``fn(*args, **kws)`` in the worker; a worker that hangs or dies is replaced (and
        the call fails), so one bad call cannot wedge the rest of the module."""
        fut = self._pool.submit(_peer_call, fn, args, kws)
        try:
            return fut.result(timeout=timeout)
        except (self._cf.TimeoutError, self._cf.process.BrokenProcessPool):
            self._kill()
            self._start()
            raise

    def _kill(self) -> None:
        procs = list(getattr(self._pool, "_processes", {}).values())
        for p in procs:
            with contextlib.suppress(Exception):
                p.kill()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop the worker: politely, then by force after 10 s."""
        if self._pool is None:
            return
        procs = list(getattr(self._pool, "_processes", {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
        self._pool = None


# --------------------------------------------------------------------------- raw PVA over TCP

_HDR = struct.Struct("<BBBBI")


class RawPVA:
    """A deliberately minimal PVA client on a raw TCP socket, for feeding the server bad input.

    Messages are built by hand (little-endian, client direction) so that these tests do not
    depend on capva's own codec.  ``handshake()`` does the connection validation with
    ``anonymous`` auth; ``create_channel()`` returns the server's sid.
    """

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = bytearray()
        self.server_be = False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> RawPVA:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- bytes out
    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    @staticmethod
    def message(cmd: int, body: bytes = b"", flags: int = 0, size: int | None = None) -> bytes:
        return _HDR.pack(0xCA, 2, flags, cmd, len(body) if size is None else size) + body

    def send(self, cmd: int, body: bytes = b"", flags: int = 0) -> None:
        self.send_raw(self.message(cmd, body, flags))

    def try_send(self, cmd: int, body: bytes = b"", flags: int = 0) -> bool:
        """Like :meth:`send`, but False (not an error) when the server already hung up."""
        try:
            self.send(cmd, body, flags)
            return True
        except OSError:
            return False

    # -- bytes in
    def _fill(self, n: int) -> None:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by server")
            self.buf += chunk

    def recv(self) -> tuple[int, int, bytes]:
        """Next message as (flags, command, body); control messages have body b''."""
        self._fill(8)
        magic, _ver, flags, cmd = self.buf[0], self.buf[1], self.buf[2], self.buf[3]
        assert magic == 0xCA, f"bad magic from server: {bytes(self.buf[:8]).hex()}"
        size = struct.unpack_from(">I" if flags & 0x80 else "<I", self.buf, 4)[0]
        if flags & 0x01:
            del self.buf[:8]
            return flags, cmd, b""
        self._fill(8 + size)
        body = bytes(self.buf[8 : 8 + size])
        del self.buf[: 8 + size]
        return flags, cmd, body

    def recv_cmd(self, cmd: int) -> bytes:
        """Skip messages until one with application command ``cmd``; return its body."""
        while True:
            flags, c, body = self.recv()
            if c == cmd and not flags & 0x01:
                return body

    def closed_by_server(self, timeout: float = 5.0) -> bool:
        """True when the server closes (EOF or reset) within ``timeout``; replies are drained."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return False
            except OSError:
                return True
            if not chunk:
                return True

    def echo_ok(self, payload: bytes = b"ping", timeout: float = 3.0) -> bool:
        """Whether the connection still answers an ECHO (i.e. the server kept it usable)."""
        try:
            self.sock.settimeout(timeout)
            self.send(0x02, payload)
            return self.recv_cmd(0x02) == payload
        except (OSError, ConnectionError):
            return False

    # -- protocol steps
    @staticmethod
    def string(s: str) -> bytes:
        b = s.encode()
        assert len(b) < 254
        return bytes([len(b)]) + b

    def handshake(self) -> None:
        flags, cmd, _ = self.recv()
        assert flags & 0x01 and cmd == 2, "expected SET_BYTE_ORDER first"
        self.server_be = bool(flags & 0x80)
        self.recv_cmd(0x01)  # server's CONNECTION_VALIDATION
        body = struct.pack("<IHH", 0x10000, 0x7FFF, 0) + self.string("anonymous") + b"\xff"
        self.send(0x01, body)
        st = self.recv_cmd(0x09)
        assert st[:1] == b"\xff", f"validation refused: {st!r}"

    def create_channel(self, name: str, cid: int = 0x11) -> int:
        self.send(0x07, struct.pack("<HI", 1, cid) + self.string(name))
        body = self.recv_cmd(0x07)
        rcid, sid = struct.unpack_from("<II", body)
        assert rcid == cid and body[8:9] == b"\xff", f"channel {name!r} refused: {body!r}"
        return sid

    # an empty pvRequest: struct "" with no fields -> 80 00 00 (FieldDesc; the value is empty)
    EMPTY_REQUEST = b"\x80\x00\x00"

    def get(self, sid: int, ioid: int = 0x100, request: bytes = EMPTY_REQUEST) -> bytes:
        """GET INIT + EXEC; the EXEC reply body (ioid, subcmd, status, bitset, data)."""
        self.send(0x0A, struct.pack("<IIB", sid, ioid, 0x08) + request)
        init = self.recv_cmd(0x0A)
        assert init[5:6] == b"\xff", f"GET INIT failed: {init!r}"
        self.send(0x0A, struct.pack("<IIB", sid, ioid, 0x00))
        return self.recv_cmd(0x0A)


def python() -> str:
    return sys.executable
