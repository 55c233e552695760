"""The servers' own TCP transport (capva._aio.sockconn), over real loopback sockets.

Why: it replaces asyncio's socket transport for every PVA connection and CA circuit, so it
must keep the byte stream exact and in order (also when the kernel takes a big write in
pieces), copy nothing it can hold by reference yet never send bytes a caller changed after
``write``, pause and resume the protocol around its high-water mark, and end every
connection with exactly one ``connection_lost``, without disturbing the others.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from capva._aio import sockconn
from capva._aio.sockconn import Listener, SocketTransport, serve_tcp


class _Proto(asyncio.BufferedProtocol):
    """Records what happens; replies to b"big" / b"mut" / b"boom" / b"close" / b"abort"."""

    def __init__(self, events: list) -> None:
        self.events = events
        self.buf = bytearray(4096)
        self.got = bytearray()
        self.lost = asyncio.get_running_loop().create_future()
        self.lost_calls = 0
        self.paused = 0
        self.resumed = 0
        self.big = b""
        self.handled = asyncio.Event()  # set after each received chunk was acted on

    def connection_made(self, transport) -> None:
        self.t = transport
        self.events.append(self)

    def get_buffer(self, sizehint: int):
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        data = bytes(self.buf[:nbytes])
        self.got += data
        if b"boom" in data:
            raise RuntimeError("protocol failed")
        if b"big" in data:
            # a big read-only piece between two small ones, more than the kernel takes at once
            self.big = bytes(range(256)) * 40000  # 10 MB
            self.t.write(b"<")
            self.t.write(memoryview(self.big))
            self.t.write(b">")
        if b"mut" in data:
            ba = bytearray(b"m" * 8_000_000)
            self.t.write(memoryview(self.big or bytes(8_000_000)))  # fills the socket first
            self.t.write(ba)
            ba[:] = b"X" * len(ba)  # changed after write: must not be what is sent
        if b"close" in data:
            self.t.write(b"bye" * 1_000_000)
            self.t.close()
        if b"abort" in data:
            self.t.write(b"z" * 10_000_000)
            self.t.abort()
        if b"echo" in data:
            self.t.write(data)
        self.handled.set()

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        self.resumed += 1

    def connection_lost(self, exc) -> None:
        self.lost_calls += 1
        if not self.lost.done():
            self.lost.set_result(exc)


async def _serve(events: list) -> tuple[Listener, int]:
    lst = await serve_tcp(asyncio.get_running_loop(), lambda: _Proto(events), "127.0.0.1", 0)
    assert isinstance(lst, Listener)
    return lst, lst.sockets[0].getsockname()[1]


async def _read_all(reader: asyncio.StreamReader, n: int, *, slowly: bool = False) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = await reader.read(min(65536, n - len(out)) if slowly else n - len(out))
        if not chunk:
            break
        out += chunk
        if slowly:
            await asyncio.sleep(0)
    return bytes(out)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_echo_and_peer_address():
    async def main():
        events: list = []
        lst, port = await _serve(events)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"echo 1")
        assert await r.readexactly(6) == b"echo 1"
        (p,) = events
        assert isinstance(p.t, SocketTransport)
        assert p.t.get_extra_info("peername") == w.get_extra_info("sockname")
        assert p.t.get_extra_info("sockname")[1] == port
        w.close()
        assert await p.lost is None  # the client's EOF: closed, no error
        assert p.lost_calls == 1
        lst.close()
        assert lst.sockets == []

    run(main())


def test_big_write_keeps_order_pauses_and_resumes():
    async def main():
        events: list = []
        lst, port = await _serve(events)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"big")
        p = await _first(events)
        await p.handled.wait()  # the server has filled its socket before we read
        assert p.t.get_write_buffer_size() > sockconn.HIGH_WATER
        assert p.paused == 1 and p.resumed == 0
        n = 2 + len(p.big)
        data = await _read_all(r, n, slowly=True)
        assert data == b"<" + p.big + b">"
        await asyncio.sleep(0)
        assert p.t.get_write_buffer_size() == 0
        assert p.resumed == 1
        w.close()
        await p.lost
        lst.close()

    run(main())


def test_mutable_buffer_is_copied_when_kept():
    async def main():
        events: list = []
        lst, port = await _serve(events)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"mut")
        data = await _read_all(r, 16_000_000, slowly=True)
        assert data[8_000_000:] == b"m" * 8_000_000
        w.close()
        await events[0].lost
        lst.close()

    run(main())


def test_close_sends_what_is_queued_then_eof():
    async def main():
        events: list = []
        lst, port = await _serve(events)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"close")
        data = await r.read()  # up to EOF
        assert data == b"bye" * 1_000_000
        (p,) = events
        assert await p.lost is None and p.lost_calls == 1
        assert p.t.is_closing()
        p.t.write(b"ignored")  # after close: dropped, no error
        w.close()
        lst.close()

    run(main())


def test_abort_drops_queue_and_loses_once():
    async def main():
        events: list = []
        lst, port = await _serve(events)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"abort")
        (p,) = [await _first(events)]
        assert await p.lost is None
        data = b""
        try:
            data = await r.read()
        except ConnectionResetError:
            pass
        assert len(data) < 10_000_000  # the unsent rest was dropped
        p.t.abort()
        p.t.close()
        await asyncio.sleep(0)
        assert p.lost_calls == 1
        w.close()
        lst.close()

    run(main())


async def _first(events: list):
    while not events:
        await asyncio.sleep(0.001)
    return events[0]


def test_failing_protocol_loses_only_its_connection(caplog):
    async def main():
        events: list = []
        lst, port = await _serve(events)
        r1, w1 = await asyncio.open_connection("127.0.0.1", port)
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        w1.write(b"echo a")
        assert await r1.readexactly(6) == b"echo a"
        w2.write(b"boom")
        assert await r2.read() == b""  # closed by the server
        assert isinstance(await events[1].lost, RuntimeError)
        w1.write(b"echo b")
        assert await r1.readexactly(6) == b"echo b"  # the other one is still served
        r3, w3 = await asyncio.open_connection("127.0.0.1", port)  # and new ones accepted
        w3.write(b"echo c")
        assert await r3.readexactly(6) == b"echo c"
        for w in (w1, w3):
            w.close()
        lst.close()

    run(main())
    assert "protocol failed on received data" in caplog.text


def test_peer_reset_is_connection_lost_with_the_error():
    async def main():
        events: list = []
        lst, port = await _serve(events)
        loop = asyncio.get_running_loop()
        s = socket.socket()
        s.setblocking(False)
        await loop.sock_connect(s, ("127.0.0.1", port))
        p = await _first(events)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # RST
        exc = await p.lost
        assert exc is None or isinstance(exc, ConnectionResetError)
        assert p.lost_calls == 1
        lst.close()

    run(main())


def test_plain_protocol_gets_data_received():
    class Echo(asyncio.Protocol):
        def connection_made(self, transport) -> None:
            self.t = transport

        def data_received(self, data: bytes) -> None:
            self.t.write(data.upper())

    async def main():
        lst = await serve_tcp(asyncio.get_running_loop(), Echo, "127.0.0.1", 0)
        port = lst.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"hello")
        assert await r.readexactly(5) == b"HELLO"
        w.close()
        lst.close()

    run(main())


def test_write_buffer_limits_are_checked():
    async def main():
        events: list = []
        lst, port = await _serve(events)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        p = await _first(events)
        p.t.set_write_buffer_limits(high=100)
        assert p.t.get_write_buffer_limits() == (25, 100)
        with pytest.raises(ValueError):
            p.t.set_write_buffer_limits(high=1, low=2)
        w.close()
        await p.lost
        lst.close()

    run(main())


def test_address_in_use_is_an_oserror_with_its_errno():
    import errno

    async def main():
        lst, port = await _serve([])
        with socket.socket() as other:
            other.bind(("127.0.0.1", 0))
            other.listen()
            taken = other.getsockname()[1]
            with pytest.raises(OSError) as ei:
                await serve_tcp(asyncio.get_running_loop(), asyncio.Protocol, "127.0.0.1", taken)
            assert ei.value.errno == errno.EADDRINUSE
        lst.close()

    run(main())


def test_send_now_from_another_thread():
    """A thread's ``send_now`` goes out at once when nothing is queued, is refused while
    something is (the caller then writes from the loop), and a part the kernel did not take
    is sent before anything written after it."""
    import threading

    async def main():
        events: list = []
        lst, port = await _serve(events)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"echo 0")
        assert await r.readexactly(6) == b"echo 0"
        p = events[0]
        loop = asyncio.get_running_loop()

        def in_thread(data):
            return loop.run_in_executor(None, p.t.send_now, data)

        assert await in_thread(b"now!") is True
        assert await r.readexactly(4) == b"now!"
        # fill the socket from the loop: a thread's send is refused while that is queued
        big = bytes(range(256)) * 40000
        p.t.write(memoryview(big))
        assert p.t.get_write_buffer_size() > 0
        assert await in_thread(b"late") is False
        assert await _read_all(r, len(big), slowly=True) == big
        # a send bigger than the socket takes: the rest is queued, and leaves first
        huge = bytes(range(251)) * 80000
        done = threading.Event()
        sent = await loop.run_in_executor(None, lambda: (p.t.send_now(huge), done.set())[0])
        assert sent is True and done.is_set()
        p.t.write(b"after")
        assert await _read_all(r, len(huge) + 5, slowly=True) == huge + b"after"
        w.close()
        await p.lost
        lst.close()

    run(main())
