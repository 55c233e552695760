"""The write side shared by the PVA and CA server connections (design.md §3).

Everything a connection queues during one loop turn leaves in one go: replies to a batch of
requests are flushed at the end of ``data_received``, and writes from elsewhere (monitor
updates, put completions) are flushed by one ``call_soon`` per turn.  Small pieces are
joined into one ``transport.write``; large ones (arrays) are handed over as memoryviews so the
transport slices them instead of copying them again.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from .sockconn import SocketTransport

__all__ = ["BatchedProtocol"]

#: pieces at least this big are written on their own, without a join copy
BIG_PIECE = 65536
#: queued pieces that make a batch long enough to send before its end (about 4 KB of
#: small replies)
FLUSH_PIECES = 256
#: receive buffer: starts small (idle connections cost little) and doubles, up to the
#: largest, whenever one read fills it (a big array arriving)
RX_FIRST = 16384
RX_LARGEST = 262144


class BatchedProtocol(asyncio.BufferedProtocol):
    """Base of a server connection: ``write_parts`` queues, ``flush`` sends, and
    ``call_in_loop`` runs a callable in the connection's loop from any thread.

    Reads land in a buffer of the connection's own (:class:`asyncio.BufferedProtocol`):
    a plain Protocol gets a fresh 256 KiB bytes object per read, which glibc maps and
    unmaps each time (three system calls and a page fault per request; 7-10 µs of a
    sequential get).  :meth:`data_received` is still the entry point for bytes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, thread_id: int) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.out: list = []
        self.flush_scheduled = False
        self.closed = False
        self._thread = thread_id
        self._rx = memoryview(bytearray(RX_FIRST))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._rx

    def buffer_updated(self, nbytes: int) -> None:
        rx = self._rx
        if nbytes == len(rx) and nbytes < RX_LARGEST:
            self._rx = memoryview(bytearray(2 * nbytes))
        with rx[:nbytes] as data:
            self.data_received(data)  # type: ignore[arg-type]

    def call_in_loop(self, fn: Callable, *args: Any) -> None:
        if threading.get_ident() == self._thread:
            fn(*args)
        else:
            try:
                self.loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:
                pass  # loop closed: server stopped

    def send_from_thread(self, data: bytes) -> bool:
        """(a thread other than the loop's) Send ``data`` now, without waking the loop, when
        nothing is queued before it; False: not sent, write it from the loop.  Only for a
        reply whose order against the other replies of this connection does not matter
        (a put's completion)."""
        t = self.transport
        if self.out or self.closed or type(t) is not SocketTransport:
            return False
        return t.send_now(data)

    def write_parts(self, *parts: bytes) -> None:
        if self.closed:
            return
        self.out.extend(parts)
        if len(self.out) >= FLUSH_PIECES:
            # a long batch (a client's 1000 requests in one read): let the first replies go
            # while the rest are worked on, so the client's processing overlaps ours
            self.flush()
            self.flush_scheduled = True  # (a flush still follows at the end of the batch)
        elif not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def data_received(self, data: bytes) -> None:
        """Handle ``data`` (:meth:`handle_data`); what it queued leaves at the end of the
        call, not one loop iteration (an extra ``epoll_wait`` and a Handle) later."""
        self.flush_scheduled = True  # write_parts during the call schedules nothing
        try:
            self.handle_data(data)
        finally:
            self.flush()

    def handle_data(self, data: bytes) -> None:
        """Parse and act on received bytes (replies via :meth:`write_parts`)."""
        raise NotImplementedError

    def flush(self) -> None:
        self.flush_scheduled = False
        out, self.out = self.out, []
        if not out or self.transport is None or self.closed:
            return
        t = self.transport
        if type(t) is SocketTransport:
            with t.write_lock:  # a message split over writes stays whole (send_from_thread)
                self._write_out(t, out)
        else:
            self._write_out(t, out)

    @staticmethod
    def _write_out(t: asyncio.Transport, out: list) -> None:
        small: list = []
        for p in out:
            if len(p) >= BIG_PIECE:
                if small:
                    t.write(b"".join(small))
                    small = []
                t.write(memoryview(p))
            else:
                small.append(p)
        if small:
            t.write(b"".join(small) if len(small) > 1 else small[0])

    # -- closing ----------------------------------------------------------------------------

    def abort(self) -> None:
        """Close now (what is queued is written first, then the transport is aborted)."""
        if self.transport is not None:
            self.flush()
            self.transport.abort()
        self.cleanup()

    def connection_lost(self, exc: Exception | None) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        """Forget every channel and operation of the connection (idempotent)."""
        raise NotImplementedError
