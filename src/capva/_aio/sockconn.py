"""Server TCP connections on a selector loop without asyncio's socket transport.

Why: asyncio 3.11's ``_SelectorSocketTransport.write`` copies whatever the kernel did not take
at once into a ``bytearray`` and then trims it from the front as sends succeed. For the CA
and PVA servers' big array updates (8 MB for a million doubles) that is one more full copy
of every update, on the loop thread, on top of the encoding and the kernel's own copy:
py-spy put a third of the loop thread's time in ``bytearray.extend`` and ``del
buffer[:n]`` when a 1M-element float64 PV was posted as fast as possible.  This transport
keeps what is unsent as memoryviews of the caller's buffers (as asyncio 3.12 does) and
sends them with ``sendmsg``, and its read path is one ``recv_into`` into the protocol's
buffer with nothing else on the way.

It is used for the listeners of :func:`serve_tcp` on selector event loops (the default on
Linux and macOS); other loops (Windows' proactor) get ``loop.create_server`` unchanged.

Usage::

    listener = await serve_tcp(loop, lambda: MyProtocol(), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    ...
    listener.close()

The protocol is an :class:`asyncio.BufferedProtocol` (``get_buffer``/``buffer_updated``)
or a plain :class:`asyncio.Protocol` (``data_received``).
"""

from __future__ import annotations

import asyncio
import collections
import errno
import itertools
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["SocketTransport", "Listener", "serve_tcp"]

_log = logging.getLogger(__name__)

#: asyncio's defaults: protocol paused above HIGH bytes unsent, resumed at LOW or below
HIGH_WATER = 65536
LOW_WATER = 16384
#: buffers handed to one ``sendmsg`` (Linux's IOV_MAX is 1024)
_IOV = 64
#: errors that end a connection without a traceback in the log (the peer went away)
_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)
_AGAIN = (BlockingIOError, InterruptedError)
_HAS_SENDMSG = hasattr(socket.socket, "sendmsg")


class SocketTransport(asyncio.Transport):
    """One accepted, non-blocking TCP socket served by the loop's ``add_reader`` and
    ``add_writer``; the subset of :class:`asyncio.Transport` the servers use.

    Data given to :meth:`write` must not change afterwards: what the kernel does not take at
    once is kept by reference (a ``bytearray`` or writable memoryview is copied instead)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: asyncio.BaseProtocol,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self._info: dict[str, Any] = dict(extra or {})
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._pending: collections.deque[Any] = collections.deque()
        self._pending_bytes = 0
        #: guards the queue and the socket's send side: the loop writes, and so may a
        #: worker thread through :meth:`send_now`.  Reentrant: a protocol holds it across
        #: the several writes of one batch (:attr:`write_lock`), so that nothing sent from
        #: another thread lands between a message's header and its payload
        self._wlock = threading.RLock()
        self._closing = False  # close() called: no more reads or writes, then lost
        self._lost = False  # connection_lost scheduled
        self._reading = False
        self._writing = False  # registered with add_writer
        self._proto_paused = False
        self._high = HIGH_WATER
        self._low = LOW_WATER
        self._info.setdefault("socket", sock)
        try:
            self._info.setdefault("sockname", sock.getsockname())
        except OSError:
            pass
        if "peername" not in self._info:
            try:
                self._info["peername"] = sock.getpeername()
            except OSError:
                self._info["peername"] = None
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)
        protocol.connection_made(self)
        if not self._closing:
            self.resume_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._info.get(name, default)

    # -- reading ----------------------------------------------------------------------------

    def _read_ready(self) -> None:
        proto = self._protocol
        try:
            if self._buffered:
                n = self._sock.recv_into(proto.get_buffer(-1))  # type: ignore[attr-defined]
            else:
                data = self._sock.recv(262144)
                n = len(data)
        except _AGAIN:
            return
        except OSError as exc:
            self._fatal(exc)
            return
        if not n:
            self._eof()
            return
        try:
            if self._buffered:
                proto.buffer_updated(n)  # type: ignore[attr-defined]
            else:
                proto.data_received(data)  # type: ignore[attr-defined]
        except Exception as exc:
            # as asyncio's transports do: a protocol that fails on its input loses the
            # connection, and only that one
            _log.exception("%r: the protocol failed on received data; closing", self)
            self._force_close(exc)

    def _eof(self) -> None:
        self.pause_reading()
        keep_open = False
        try:
            keep_open = bool(self._protocol.eof_received())  # type: ignore[attr-defined]
        except AttributeError:
            pass
        if not keep_open:
            self.close()

    def pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if not self._reading and not self._closing:
            self._reading = True
            self._loop.add_reader(self._fd, self._read_ready)

    def is_reading(self) -> bool:
        return self._reading

    # -- writing ----------------------------------------------------------------------------

    def write(self, data: Any) -> None:
        """(loop) Send ``data`` (bytes-like) after everything written before it."""
        if self._closing or self._lost:
            return
        size = len(data) if isinstance(data, (bytes, bytearray)) else memoryview(data).nbytes
        if not size:
            return
        failed: BaseException | None = None
        with self._wlock:
            if self._pending:
                self._pending.append(self._keep(data, 0))
                self._pending_bytes += size
            else:
                try:
                    n = self._sock.send(data)
                except _AGAIN:
                    n = 0
                except OSError as exc:
                    n, failed = -1, exc
                if n == size:
                    return
                if n >= 0:
                    self._pending.append(self._keep(data, n))
                    self._pending_bytes += size - n
                    self._start_writing()
            pause = not self._proto_paused and self._pending_bytes > self._high
            if pause:
                self._proto_paused = True
        if failed is not None:
            self._fatal(failed)
        elif pause:
            try:
                self._protocol.pause_writing()
            except Exception:
                _log.exception("pause_writing failed")

    @property
    def write_lock(self) -> threading.RLock:
        """Hold it (``with t.write_lock:``) across writes that must stay together."""
        return self._wlock

    def send_now(self, data: bytes) -> bool:
        """(any thread) Send ``data`` at once if nothing written before it is still queued;
        False when it was not sent (the caller writes it from the loop instead).

        Why: a reply made in a worker thread (a put handler's ``op.done()``) need not wake
        the loop (a self-pipe write, an ``epoll_wait`` and a callback) just to be written;
        a lock keeps it whole between the loop's writes."""
        with self._wlock:
            if self._pending or self._closing or self._lost:
                return False
            try:
                n = self._sock.send(data)
            except OSError:  # (BlockingIOError included) the loop's write finds out the rest
                return False
            if n < len(data):
                if not n:
                    return False
                self._pending.append(memoryview(data)[n:])
                self._pending_bytes += len(data) - n
                try:
                    self._loop.call_soon_threadsafe(self._start_writing)
                except RuntimeError:  # loop closed: the connection is going anyway
                    pass
            return True

    def _start_writing(self) -> None:
        if self._pending and not self._writing and not self._lost:
            self._writing = True
            self._loop.add_writer(self._fd, self._write_ready)

    @staticmethod
    def _keep(data: Any, sent: int) -> Any:
        """What is left of ``data`` after ``sent`` bytes, without a copy when it cannot
        change (bytes, read-only views); mutable buffers are copied."""
        if isinstance(data, bytes):
            return memoryview(data)[sent:] if sent else data
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        if view.readonly:
            return view[sent:]
        return bytes(view[sent:])

    def _write_ready(self) -> None:
        pending = self._pending
        with self._wlock:
            if not pending:  # pragma: no cover - the writer is removed when the queue empties
                self._stop_writing()
                return
            try:
                if len(pending) == 1 or not _HAS_SENDMSG:
                    n = self._sock.send(pending[0])
                else:
                    n = self._sock.sendmsg(
                        itertools.islice(pending, _IOV) if len(pending) > _IOV else pending
                    )
            except _AGAIN:
                return
            except OSError as exc:
                failed: BaseException | None = exc
            else:
                failed = None
                self._pending_bytes -= n
                while n:
                    head = pending[0]
                    size = len(head) if not isinstance(head, memoryview) else head.nbytes
                    if n >= size:
                        pending.popleft()
                        n -= size
                    else:
                        pending[0] = memoryview(head)[n:]
                        break
                if not pending:
                    self._stop_writing()
            resume = self._proto_paused and self._pending_bytes <= self._low
            if resume:
                self._proto_paused = False
        if failed is not None:
            self._fatal(failed)
            return
        if not pending and self._closing:
            self._schedule_lost(None)
            return
        if resume:
            try:
                self._protocol.resume_writing()
            except Exception:
                _log.exception("resume_writing failed")

    def _stop_writing(self) -> None:
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self._pending_bytes

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low, self._high)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low

    # -- closing ----------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def close(self) -> None:
        """Stop reading; the protocol is told the connection is lost once what is queued has
        been sent."""
        if self._closing or self._lost:
            return
        self._closing = True
        self.pause_reading()
        if not self._pending:
            self._schedule_lost(None)

    def abort(self) -> None:
        """Close now, dropping whatever is unsent."""
        self._force_close(None)

    def _fatal(self, exc: BaseException) -> None:
        if not isinstance(exc, _GONE):
            _log.debug("%r: socket error: %s", self._info.get("peername"), exc)
        self._force_close(exc)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._closing = True
        self.pause_reading()
        with self._wlock:
            self._stop_writing()
            self._pending.clear()
            self._pending_bytes = 0
        self._schedule_lost(exc)

    def _schedule_lost(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        self.pause_reading()
        self._stop_writing()
        try:
            self._loop.call_soon(self._call_connection_lost, exc)
        except RuntimeError:  # the loop is closed: nobody is left to tell
            self._sock.close()

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            self._protocol.connection_lost(exc)  # type: ignore[arg-type]
        finally:
            self._sock.close()

    def __repr__(self) -> str:
        state = "closed" if self._lost else "closing" if self._closing else "open"
        return f"<SocketTransport fd={self._fd} {state} peer={self._info.get('peername')}>"


class Listener:
    """A listening socket whose connections get :class:`SocketTransport`; what the servers
    use of :class:`asyncio.Server` (``sockets``, ``close``, ``wait_closed``)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        factory: Callable[[], asyncio.BaseProtocol],
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._factory = factory
        self._open = True
        self._retry: asyncio.TimerHandle | None = None
        loop.add_reader(sock.fileno(), self._accept)

    @property
    def sockets(self) -> list[socket.socket]:
        return [self._sock] if self._open else []

    def _accept(self) -> None:
        for _ in range(100):  # a burst of connections, then back to the loop
            try:
                conn, addr = self._sock.accept()
            except _AGAIN:
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # out of descriptors: stop accepting for a second (as asyncio does)
                    _log.error("accept failed (%s); accepting again in 1 s", exc)
                    self._loop.remove_reader(self._sock.fileno())
                    self._retry = self._loop.call_later(1.0, self._resume)
                else:
                    _log.error("accept failed: %s", exc)
                return
            conn.setblocking(False)
            try:
                SocketTransport(self._loop, conn, self._factory(), {"peername": addr})
            except Exception:
                _log.exception("setting up a connection from %s failed", addr)
                conn.close()

    def _resume(self) -> None:
        self._retry = None
        if self._open:
            self._loop.add_reader(self._sock.fileno(), self._accept)

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        if self._retry is not None:
            self._retry.cancel()
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()

    async def wait_closed(self) -> None:
        return None


async def serve_tcp(
    loop: asyncio.AbstractEventLoop, factory: Callable[[], asyncio.BaseProtocol], host: str, port: int
) -> Listener | asyncio.Server:
    """Listen on ``host:port`` (``SO_REUSEADDR``, as ``create_server(reuse_address=True)``);
    every accepted connection gets a protocol from ``factory``.  Selector loops get a
    :class:`Listener`, others ``loop.create_server``'s server."""
    if not isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop):
        srv = await loop.create_server(factory, host, port, reuse_address=True)
        assert isinstance(srv, asyncio.Server)
        return srv
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.listen(100)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return Listener(loop, sock, factory)
