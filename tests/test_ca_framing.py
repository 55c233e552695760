"""CA framing: headers (16/24 bytes), padding, the TCP stream reader, the datagram splitter."""

from __future__ import annotations

import doctest
import importlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capva.ca import CADecodeError
from capva.ca.framing import (
    CAMessageReader,
    Header,
    RawMessage,
    decode_cstring,
    decode_header,
    encode_cstring,
    encode_header,
    encode_message,
    max_message_size_for,
    message_parts,
    needs_extended,
    pad,
    padded_size,
    split_datagram,
)

H = bytes.fromhex
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


@pytest.mark.parametrize(
    "module",
    [
        "capva.ca",
        "capva.ca.constants",
        "capva.ca.status",
        "capva.ca.framing",
        "capva.ca.commands",
        "capva.ca.dbr",
        "capva.ca.convert",
        "capva.ca.state",
    ],
)
def test_doctests(module: str) -> None:
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_core_is_sans_io() -> None:
    """design.md §1: nothing under capva.ca imports asyncio, socket, threading or reads os.environ."""
    import ast
    from pathlib import Path

    import capva.ca

    forbidden = {"asyncio", "socket", "threading", "os", "selectors", "subprocess"}
    for path in Path(capva.ca.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module.split(".")[0]]
            else:
                continue
            assert not forbidden & set(names), f"{path.name} imports {names}"


# -- headers ------------------------------------------------------------------------------------------


def test_standard_header_layout() -> None:
    assert encode_header(18, 8, 0, 0, 1, 13).hex() == "0012000800000000000000010000000d"
    hdr, n = decode_header(H("0012000800000000000000010000000d"))
    assert n == 16 and hdr == Header(18, 8, 0, 0, 1, 13, False)


def test_extended_header_layout() -> None:
    wire = H("000fffff0006000000000001000007e20001388000002710")
    hdr, n = decode_header(wire)
    assert n == 24 and hdr == Header(15, 80000, 6, 10000, 1, 0x7E2, True)
    assert hdr.encode() == wire


@pytest.mark.parametrize(
    "size,count,ext",
    [(0xFFF8, 0xFFFE, False), (0xFFFF, 1, True), (8, 0xFFFF, True), (0x10000, 0, True), (0, 0, False)],
)
def test_extended_switch_is_greater_or_equal(size: int, count: int, ext: bool) -> None:
    """RSRV/libca: extended when size or count >= 0xFFFF, so a plain header never carries
    0xFFFF in either field (catvs would read it as the extended marker)."""
    assert needs_extended(size, count) is ext
    wire = encode_header(1, size, 6, count, 0, 0)
    assert len(wire) == (24 if ext else 16)
    hdr, _ = decode_header(wire)
    assert (hdr.payload_size, hdr.data_count, hdr.extended) == (size, count, ext)
    if not ext:
        assert wire[2:4] != b"\xff\xff" and wire[6:8] != b"\xff\xff"


def test_forced_extended_small_header() -> None:
    wire = encode_header(15, 80, 6, 10, 1, 0x7DC, extended=True)
    assert wire.hex() == "000fffff0006000000000001000007dc000000500000000a"


def test_header_fields_out_of_range_raise_valueerror() -> None:
    with pytest.raises(ValueError):
        encode_header(0x10000, 0, 0, 0, 0, 0)
    with pytest.raises(ValueError):
        encode_header(1, 0, 0, 0, -1, 0)
    with pytest.raises(ValueError):
        encode_header(1, 1 << 32, 0, 0, 0, 0)


@given(u16, u32, u16, u32, u32, u32, st.booleans())
def test_header_round_trip(cmd, size, dtype, count, p1, p2, force) -> None:
    wire = encode_header(cmd, size, dtype, count, p1, p2, extended=force)
    hdr, n = decode_header(wire + b"junk")
    assert (hdr.command, hdr.payload_size, hdr.data_type, hdr.data_count, hdr.parameter1, hdr.parameter2) == (
        cmd,
        size,
        dtype,
        count,
        p1,
        p2,
    )
    assert n == len(wire) == (24 if force or needs_extended(size, count) else 16)
    assert hdr.encode() == wire


@pytest.mark.parametrize("n", range(0, 16))
def test_truncated_header(n: int) -> None:
    with pytest.raises(CADecodeError):
        decode_header(bytes(n))


def test_truncated_extended_header() -> None:
    with pytest.raises(CADecodeError):
        decode_header(H("000fffff00060000000000010000000000013880"))


# -- padding and strings --------------------------------------------------------------------------------


def test_padding() -> None:
    assert [padded_size(n) for n in (0, 1, 7, 8, 9, 16)] == [0, 8, 8, 8, 16, 16]
    assert pad(b"abc") == b"abc\0\0\0\0\0" and pad(b"") == b""
    assert encode_message(20, b"root\x00").hex() == "00140008000000000000000000000000726f6f7400000000"
    parts = message_parts(20, b"root\x00")
    assert b"".join(parts) == encode_message(20, b"root\x00") and len(parts) == 3
    assert message_parts(20, bytes(8))[1:] == [bytes(8)]
    assert message_parts(23, b"") == [encode_header(23, 0, 0, 0, 0, 0)]


def test_cstring_rules() -> None:
    assert encode_cstring("dval") == b"dval\0\0\0\0"
    assert encode_cstring("12345678") == b"12345678" + bytes(8)  # still gets its NUL
    assert encode_cstring(b"raw") == b"raw\0\0\0\0\0"
    assert decode_cstring(b"ro\0empts") == "ro"  # stale bytes after the NUL are ignored
    assert decode_cstring(b"\xff\xfe\0") == "\udcff\udcfe"  # not UTF-8: kept, reversible
    assert encode_cstring("\udcff\udcfe") == b"\xff\xfe\0" + bytes(5)
    with pytest.raises(CADecodeError):
        decode_cstring(b"no terminator")
    assert decode_cstring(b"no terminator", require_nul=False) == "no terminator"


def test_max_message_size_for() -> None:
    assert max_message_size_for(0) == 16384
    assert max_message_size_for(16384) == 16408
    assert max_message_size_for(20000) == 20024


# -- stream reader -----------------------------------------------------------------------------------------

raw_messages = st.builds(
    lambda cmd, dtype, count, p1, p2, payload, ext: RawMessage(
        cmd, len(payload), dtype, count, p1, p2, payload, ext or needs_extended(len(payload), count)
    ),
    u16,
    u16,
    st.integers(0, 0x1FFFF),
    u32,
    u32,
    st.binary(max_size=80),
    st.booleans(),
)


@settings(max_examples=200)
@given(st.lists(raw_messages, max_size=8), st.randoms(use_true_random=False), st.binary(max_size=15))
def test_reader_any_chunking(msgs: list[RawMessage], rnd: random.Random, tail: bytes) -> None:
    stream = b"".join(m.encode() for m in msgs)
    reader = CAMessageReader()
    got: list[RawMessage] = []
    pos = 0
    data = stream + tail  # fewer than 16 trailing bytes: an incomplete header
    while pos < len(data):
        n = rnd.randint(1, 50)
        got += reader.feed(data[pos : pos + n])
        pos += n
    assert got == msgs
    assert reader.pending == len(tail)


def test_reader_byte_at_a_time_and_whole() -> None:
    msgs = [
        encode_message(23),
        encode_message(18, encode_cstring("dval"), 0, 0, 1, 13),
        encode_header(15, 80, 6, 10, 1, 2, extended=True) + bytes(80),
    ]
    stream = b"".join(msgs)
    r1 = CAMessageReader()
    assert [m.encode() for m in r1.feed(stream)] == msgs
    r2 = CAMessageReader()
    out = []
    for i in range(len(stream)):
        out += r2.feed(stream[i : i + 1])
    assert [m.encode() for m in out] == msgs
    assert r2.pending == 0 and r2.feed() == []


def test_reader_waits_for_extended_header() -> None:
    r = CAMessageReader()
    wire = encode_header(15, 80, 6, 10, 1, 2, extended=True) + bytes(80)
    assert r.feed(wire[:20]) == []  # markers seen, size words not yet
    assert r.pending == 20
    (m,) = r.feed(wire[20:])
    assert m.extended and m.payload_size == 80


def test_reader_oversize_is_reported_and_drained() -> None:
    """RSRV with MAX_ARRAY_BYTES: ERROR ECA_TOLARGE, bytes drained, circuit kept."""
    r = CAMessageReader(max_message_size=64)
    big = encode_message(4, bytes(range(200)) * 10, 6, 250, 1, 2)
    small = encode_message(23)
    out = r.feed(big[:30])
    assert len(out) == 1 and out[0].oversize and out[0].payload == b"" and out[0].payload_size == 2000
    assert r.skipping == 2000 - 14 and r.pending == 0  # nothing of the big payload is buffered
    assert r.feed(big[30:1000]) == []
    assert r.pending == 0
    out = r.feed(big[1000:] + small)
    assert [m.encode() for m in out] == [small]
    assert not out[0].oversize


def test_reader_oversize_whole_in_one_feed() -> None:
    r = CAMessageReader(max_message_size=64)
    big = encode_message(4, bytes(100), 6, 100, 1, 2)
    out = r.feed(big + encode_message(23) + big)
    assert [m.oversize for m in out] == [True, False, True]
    assert r.skipping == 0 and r.pending == 0


def test_reader_rejects_tiny_limit() -> None:
    with pytest.raises(ValueError):
        CAMessageReader(max_message_size=8)


def test_reader_accepts_memoryview_and_bytearray() -> None:
    wire = encode_message(20, encode_cstring("root"))
    r = CAMessageReader()
    assert len(r.feed(memoryview(wire)[:10])) == 0
    assert len(r.feed(bytearray(wire[10:]))) == 1


def test_rawmessage_helpers() -> None:
    m = RawMessage(18, 8, 0, 0, 1, 13, b"dval\0\0\0\0")
    assert m.name == "CREATE_CHAN" and m.aligned
    assert m.header == Header(18, 8, 0, 0, 1, 13, False)
    assert not RawMessage(18, 5, 0, 0, 1, 13, b"dval\0").aligned
    assert RawMessage(99, 0, 0, 0, 0, 0).name == "0x0063"
    assert "CREATE_CHAN" in repr(m)
    assert m != RawMessage(18, 8, 0, 0, 1, 14, b"dval\0\0\0\0")
    assert m.__eq__(object()) is NotImplemented


# -- datagrams -------------------------------------------------------------------------------------------


def test_split_datagram_empty_is_repeater_registration() -> None:
    assert split_datagram(b"") == []


@given(st.lists(raw_messages, max_size=5))
def test_split_datagram_round_trip(msgs: list[RawMessage]) -> None:
    data = b"".join(m.encode() for m in msgs)
    assert split_datagram(data) == msgs


def test_split_datagram_truncated_keeps_prefix() -> None:
    good = encode_message(0, b"", 1, 13, 1, 0)
    bad = encode_message(6, encode_cstring("dval"), 5, 13, 1, 1)[:-3]
    with pytest.raises(CADecodeError) as info:
        split_datagram(good + bad)
    assert [m.encode() for m in info.value.messages] == [good]  # type: ignore[attr-defined]
    with pytest.raises(CADecodeError):
        split_datagram(good + b"\x00\x06")
