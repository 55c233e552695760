"""The batched write side shared by PVA connections and CA circuits (capva._aio.batching).

Why: replies of one read leave together (one write per batch, no extra loop turn), but a
very long batch must not hold every reply back until its end: the client could already be
working on the first ones.  Reads land in the connection's own buffer, which grows when a
read fills it.
"""

from __future__ import annotations

import asyncio

import pytest

from capva._aio import batching
from capva._aio.batching import BatchedProtocol


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data) -> None:  # type: ignore[override]
        self.writes.append(bytes(data))


class _Echo(BatchedProtocol):
    """Replies ``n`` pieces for a received ``n`` (as text)."""

    def handle_data(self, data: bytes) -> None:
        self.seen = bytes(data)
        if self.seen.startswith(b"#"):
            return
        for i in range(int(bytes(data))):
            self.write_parts(b"%05d" % i)

    def cleanup(self) -> None:
        self.closed = True


@pytest.fixture
def proto():
    loop = asyncio.new_event_loop()
    p = _Echo(loop, 0)
    p.transport = _Transport()
    yield p
    loop.close()


def test_short_batch_is_one_write(proto):
    proto.data_received(b"10")
    assert proto.transport.writes == [b"".join(b"%05d" % i for i in range(10))]


def test_long_batch_leaves_in_several_writes_in_order(proto):
    n = 3 * batching.FLUSH_PIECES + 5
    proto.data_received(str(n).encode())
    w = proto.transport.writes
    assert len(w) == 4, [len(x) for x in w]
    assert b"".join(w) == b"".join(b"%05d" % i for i in range(n))
    assert not proto.out


def test_receive_buffer_grows_when_filled(proto):
    buf = proto.get_buffer(-1)
    first = len(buf)
    buf[:2] = b"12"
    proto.buffer_updated(2)
    assert proto.seen == b"12" and len(proto.get_buffer(-1)) == first
    buf = proto.get_buffer(-1)
    buf[:] = b"#" * len(buf)
    proto.buffer_updated(len(buf))
    assert len(proto.get_buffer(-1)) == 2 * first
