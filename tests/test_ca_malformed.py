"""Malformed input: every decoder raises CADecodeError and nothing else, and never
allocates more than its input justifies (truncated messages, absurd sizes and counts,
bad type ids, random bytes and mutations of real messages)."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capva.ca import CADecodeError, convert, dbr
from capva.ca import commands as C
from capva.ca.framing import CAMessageReader, RawMessage, encode_header, split_datagram
from capva.ca.state import ClientCircuit, ServerCircuit, check_operation, server_datagram

H = bytes.fromhex

# real messages (the §9 vectors) to mutate
SEEDS = [
    H("000000000001000d0000000100000000000600080005000d00000001000000016476616c00000000"),
    H("000600083ad80000ffffffff00000001000d000000000000"),
    H("0012000800000000000000010000000d6476616c00000000"),
    H("000f0018001400010000000100000001000000004562eeb308d62e2100000000400a000000000000"),
    H(
        "000f0058002200010000000100000002000000000003eeb36d6d0000000000004059000000000000c059000000000000"
        "4054000000000000404e000000000000c04e000000000000c0540000000000004056800000000000c056800000000000"
        "400a000000000000"
    ),
    H("0001001000140000000000000000000300000000000000000000000000050000"),
    H("000b0018000000000000009e0000017800040008000500010000000200000001726f00656d707473"),
    H("000fffff0006000000000001000007dc000000500000000a") + bytes(80),
    H("00140008000000000000000000000000726f6f7400000000"),
    H("000f01b0001f00010000000100000002")
    + bytes(4)
    + b"\x00\x02"
    + b"Off".ljust(26, b"\0")
    + b"On".ljust(26, b"\0")
    + bytes(374),
]


def _exercise(messages: list[RawMessage]) -> None:
    """Push messages through everything that takes network input."""
    server = ServerCircuit()
    client = ClientCircuit()
    for raw in messages:
        server.receive(raw)
        client.receive(raw)
        for from_server in (False, True):
            try:
                cmd = C.decode_command(raw, from_server=from_server)
            except CADecodeError:
                continue
            check_operation(cmd)
            check_operation(cmd, readable=False, writable=False)
            if isinstance(cmd, (C.ReadNotifyResponse, C.EventAddResponse, C.WriteRequest, C.ReadResponse)):
                try:
                    cmd.values()
                except CADecodeError:
                    pass
            if isinstance(cmd, (C.WriteRequest, C.WriteNotifyRequest)):
                try:
                    convert.write_values(cmd.data_type, cmd.data, cmd.data_count, dbr.DOUBLE, max_count=10)
                except CADecodeError:
                    pass
            cmd.encode()
    server_datagram(messages)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    reader = CAMessageReader(max_message_size=4096)
    _exercise(reader.feed(data))
    try:
        _exercise(split_datagram(data))
    except CADecodeError:
        pass


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
    st.integers(0, 600),
)
def test_mutated_real_messages(seed: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(seed)
    for pos, val in flips:
        data[pos % len(data)] = val
    data = data[: max(cut, 1)] if cut < len(data) else data
    reader = CAMessageReader()
    _exercise(reader.feed(bytes(data)))
    try:
        _exercise(split_datagram(bytes(data)))
    except CADecodeError:
        pass


@settings(max_examples=400)
@given(st.integers(-5, 300), st.integers(-5, 2**40), st.binary(max_size=600))
def test_dbr_decode_only_raises_cadecodeerror(type_id: int, count: int, data: bytes) -> None:
    try:
        dbr.decode(type_id, data, count)
    except CADecodeError:
        pass


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("type_id", [dbr.STRING, dbr.DOUBLE, dbr.CTRL_STRING, dbr.TIME_CHAR, dbr.CTRL_ENUM])
def test_absurd_count_allocates_nothing(type_id: int) -> None:
    data = bytes(500)

    def go() -> None:
        with pytest.raises(CADecodeError):
            dbr.decode(type_id, data, 0xFFFFFFFF)

    assert _peak(go) < 64 * 1024


def test_absurd_size_is_not_preallocated() -> None:
    """A header announcing a 4 GiB payload: the reader buffers only what arrived."""
    reader = CAMessageReader()
    hdr = encode_header(4, 0xFFFFFFF8, 6, 0x1FFFFFFF, 0, 1)

    def go() -> None:
        assert reader.feed(hdr + bytes(1000)) == []

    assert _peak(go) < 64 * 1024
    assert reader.pending == len(hdr) + 1000


def test_absurd_size_with_a_limit_is_drained() -> None:
    reader = CAMessageReader(max_message_size=16408)
    hdr = encode_header(4, 0xFFFFFFF8, 6, 0x1FFFFFFF, 0, 1)
    (m,) = reader.feed(hdr + bytes(1000))
    assert m.oversize and reader.pending == 0 and reader.skipping == 0xFFFFFFF8 - 1000


def test_write_with_absurd_count_is_refused_early() -> None:
    w = C.WriteNotifyRequest(dbr.STRING, 0xFFFFFFFF, 0, 1, bytes(8))
    assert check_operation(w).status != 1  # ECA_BADCOUNT, not an attempt to decode

    def go() -> None:
        with pytest.raises(CADecodeError):
            convert.write_values(dbr.STRING, w.data, w.data_count, dbr.STRING, max_count=1)

    assert _peak(go) < 64 * 1024
