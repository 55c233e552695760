"""PVA framing: headers, control messages, segmentation, the incremental reader's errors.

The reader's rules are pvxs's (``ConnBase::bevRead``, pva-protocol.md §1): a bad magic
byte, version 0, a continuation segment with no first segment, another message while a
segmented one is open, a command change between segments and (optionally) a wrong
direction bit are all fatal for the stream, raised as DecodeError.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capva.pva.errors import DecodeError
from capva.pva.framing import (
    CTRL_ECHO_REQUEST,
    CTRL_SET_BYTE_ORDER,
    FLAG_BE,
    FLAG_CONTROL,
    FLAG_SEGMENT_FIRST,
    FLAG_SEGMENT_LAST,
    FLAG_SEGMENT_MIDDLE,
    FLAG_SERVER,
    Frame,
    MessageReader,
    decode_header,
    encode_control,
    encode_frame,
    encode_header,
    is_be,
    is_control,
    is_server,
    make_flags,
    segment_of,
    set_byte_order,
    split_datagram,
)
from support import find_vectors
from support.pcap import read_pcap

HERE = Path(__file__).resolve().parent
_VEC = find_vectors("pva")


def seg(command: int, body: bytes, segment: int, *, server: bool = True, be: bool = False) -> bytes:
    """One segment (or unsegmented message) with explicit flags."""
    flags = make_flags(be=be, server=server, segment=segment)
    return encode_header(command, len(body), flags) + body


def feed_bytewise(rd: MessageReader, data: bytes) -> list[Frame]:
    out: list[Frame] = []
    for i in range(len(data)):
        out += rd.feed(data[i : i + 1])
    return out


# -- header and flags ----------------------------------------------------------------------


def test_set_byte_order_vectors() -> None:
    """§1.4: what little- and big-endian servers send first."""
    assert set_byte_order(False).hex() == "ca02410200000000"
    assert set_byte_order(True).hex() == "ca02c10200000000"
    assert encode_control(CTRL_SET_BYTE_ORDER, 0, be=False, server=True) == set_byte_order(False)


@pytest.mark.parametrize("be", [False, True])
def test_header_round_trip(be: bool) -> None:
    body = b"\x01\x03\x05\x07\x00\x20\x00\x10\x00"
    wire = encode_frame(0x0A, body, be=be, server=False)
    assert wire[:4] == bytes((0xCA, 2, 0x80 if be else 0, 0x0A))
    assert wire[4:8] == struct.pack(">I" if be else "<I", 9)
    assert decode_header(wire) == (2, FLAG_BE if be else 0, 0x0A, 9)
    (fr,) = MessageReader().feed(wire)
    assert (fr.command, fr.body, fr.be, fr.server, fr.control, fr.data, fr.segments) == (
        0x0A,
        body,
        be,
        False,
        False,
        9,
        1,
    )
    assert fr.encode() == wire


def test_size_word_follows_byte_order() -> None:
    """A BE header with 0x0102 bytes must not be read little-endian (that would be 0x201 << 16)."""
    body = bytes(0x102)
    wire = encode_frame(0x02, body, be=True, server=True)
    assert wire[4:8] == b"\x00\x00\x01\x02"
    (fr,) = MessageReader().feed(wire)
    assert len(fr.body) == 0x102


def test_flag_helpers() -> None:
    f = make_flags(be=True, server=True, control=True, segment=FLAG_SEGMENT_MIDDLE)
    assert f == 0xF1
    assert is_be(f) and is_server(f) and is_control(f) and segment_of(f) == FLAG_SEGMENT_MIDDLE
    assert not (is_be(0) or is_server(0) or is_control(0)) and segment_of(0) == 0


@pytest.mark.parametrize(
    "hdr, why",
    [
        (b"\xcb\x02\x00\x02\x00\x00\x00\x00", "magic"),
        (b"\xca\x00\x00\x02\x00\x00\x00\x00", "version"),
        (b"\xca\x02\x00\x02\x00\x00\x00", "truncated"),
    ],
)
def test_decode_header_errors(hdr: bytes, why: str) -> None:
    with pytest.raises(DecodeError):
        decode_header(hdr)


def test_any_nonzero_version_accepted() -> None:
    """Receivers reject only 0; the version is informational (§1.1)."""
    for v in (1, 2, 3, 0xFF):
        wire = encode_header(0x02, 0, 0, version=v)
        (fr,) = MessageReader().feed(wire)
        assert fr.version == v


# -- the incremental reader ----------------------------------------------------------------


def test_partial_bytes_left_for_later() -> None:
    a = encode_frame(0x02, b"hello", be=False, server=False)
    b = encode_frame(0x0F, bytes(8), be=True, server=False)
    rd = MessageReader()
    assert [f.body for f in rd.feed(a + b[:5])] == [b"hello"]
    assert rd.pending == 5
    assert rd.feed(b"") == []
    assert [f.command for f in rd.feed(b[5:11])] == []
    assert rd.pending == 11
    (fr,) = rd.feed(b[11:])
    assert fr.command == 0x0F and fr.be and rd.pending == 0


def test_next_frame_api() -> None:
    """receive() + next_frame() yields the same frames one at a time."""
    data = b"".join(encode_frame(0x02, bytes([i]) * i, be=bool(i & 1), server=False) for i in range(5))
    rd = MessageReader()
    rd.receive(data[:-1])
    got = []
    while (fr := rd.next_frame()) is not None:
        got.append(fr)
    assert len(got) == 4
    rd.receive(data[-1:])
    got.append(rd.next_frame())
    assert rd.next_frame() is None
    assert got == MessageReader().feed(data)


def test_many_messages_in_one_feed() -> None:
    """Draining N messages from one buffer is linear: the read offset moves, and the buffer
    is compacted once per call (a 100k-message batch would take seconds otherwise)."""
    msg = encode_frame(0x0D, bytes(21), be=False, server=True)
    rd = MessageReader()
    frames = rd.feed(msg * 100_000)
    assert len(frames) == 100_000 and rd.pending == 0


def test_control_message_returned_in_order() -> None:
    data = set_byte_order(False) + encode_frame(0x01, b"\x00" * 7, be=False, server=True)
    frames = MessageReader(expect_server=True).feed(data)
    assert [(f.control, f.command) for f in frames] == [(True, CTRL_SET_BYTE_ORDER), (False, 0x01)]
    assert frames[0].data == 0 and frames[0].body == b""


def test_control_data_word_byte_order() -> None:
    wire = encode_control(CTRL_ECHO_REQUEST, 0x01020304, be=True, server=False)
    assert wire[4:] == b"\x01\x02\x03\x04"
    (fr,) = MessageReader().feed(wire)
    assert fr.control and fr.data == 0x01020304


# -- segmentation --------------------------------------------------------------------------


def test_segments_reassembled_with_control_messages_between() -> None:
    """Control messages may come between segments (§1.4); they are returned first, in
    stream order, and the message after its last segment."""
    data = (
        seg(0x0A, b"AB", FLAG_SEGMENT_FIRST)
        + encode_control(CTRL_SET_BYTE_ORDER, 0, be=False, server=True)
        + seg(0x0A, b"CDE", FLAG_SEGMENT_MIDDLE)
        + seg(0x0A, b"", FLAG_SEGMENT_MIDDLE)
        + encode_control(CTRL_ECHO_REQUEST, 7, be=True, server=True)
        + seg(0x0A, b"F", FLAG_SEGMENT_LAST)
    )
    for frames in (MessageReader().feed(data), feed_bytewise(MessageReader(), data)):
        assert [(f.control, f.command) for f in frames] == [(True, 2), (True, 3), (False, 0x0A)]
        app = frames[-1]
        assert app.body == b"ABCDEF" and app.data == 6 and app.segments == 4
        assert app.flags == FLAG_SERVER  # segment bits cleared
        assert app.encode() == encode_frame(0x0A, b"ABCDEF", be=False, server=True)


def test_reader_state_while_segmented() -> None:
    rd = MessageReader()
    assert rd.feed(seg(0x0D, b"xy", FLAG_SEGMENT_FIRST)) == []
    assert rd.in_segment and rd.pending == 0
    assert rd.feed(seg(0x0D, b"z", FLAG_SEGMENT_MIDDLE)) == []
    (fr,) = rd.feed(seg(0x0D, b"!", FLAG_SEGMENT_LAST))
    assert fr.body == b"xyz!" and not rd.in_segment


def test_first_and_last_only() -> None:
    (fr,) = MessageReader().feed(seg(0x14, b"a", FLAG_SEGMENT_FIRST) + seg(0x14, b"b", FLAG_SEGMENT_LAST))
    assert fr.body == b"ab" and fr.segments == 2


def test_byte_order_taken_from_last_segment() -> None:
    """pvxs re-reads the byte order from every header and parses the body with the last
    one; the reassembled frame reports that."""
    data = seg(0x0A, b"a", FLAG_SEGMENT_FIRST, be=False) + seg(0x0A, b"b", FLAG_SEGMENT_LAST, be=True)
    (fr,) = MessageReader().feed(data)
    assert fr.be and fr.body == b"ab"


def test_c_pcap_40000_doubles() -> None:
    """Capture C: a pvAccessCPP server sends a GET reply with 40000 doubles as FIRST (14
    bytes, up to the array Size ``fe 40 9c 00 00``), MIDDLE (320000 bytes of f64) and LAST
    (25 bytes: alarm + timeStamp) segments (§1.5, V14)."""
    assert _VEC is not None
    cap = read_pcap(_VEC / "c.pcap")
    stream = next(s for (src, _dst), s in cap.streams().items() if src[1] == 15075)

    # find the three segments by walking the headers
    pos = 0
    pieces = []
    while pos < len(stream):
        version, flags, command, size = decode_header(stream, pos)
        if flags & 0x30 and not flags & FLAG_CONTROL:
            pieces.append((flags & 0x30, command, stream[pos + 8 : pos + 8 + size]))
        pos += 8 + (0 if flags & FLAG_CONTROL else size)
    assert [(s, c, len(b)) for s, c, b in pieces] == [
        (FLAG_SEGMENT_FIRST, 0x0A, 14),
        (FLAG_SEGMENT_MIDDLE, 0x0A, 320000),
        (FLAG_SEGMENT_LAST, 0x0A, 25),
    ]
    assert pieces[0][2].endswith(bytes.fromhex("fe409c0000"))
    body = b"".join(p[2] for p in pieces)

    def check(frames: list[Frame]) -> None:
        big = [f for f in frames if f.segments > 1]
        assert len(big) == 1
        assert big[0].body == body and big[0].command == 0x0A and big[0].server and not big[0].be

    whole = MessageReader(expect_server=True).feed(stream)
    check(whole)
    bytewise = feed_bytewise(MessageReader(expect_server=True), stream)
    assert bytewise == whole
    # a cut inside each segment's header and body
    rd = MessageReader(expect_server=True)
    cuts = [0, 3, 9, 5000, 200001, len(stream) - 30, len(stream) - 1, len(stream)]
    chunked: list[Frame] = []
    for a, b in zip(cuts, cuts[1:]):
        chunked += rd.feed(stream[a:b])
    assert chunked == whole


# -- errors (all DecodeError, all fatal for the stream) -------------------------------------


@pytest.mark.parametrize(
    "data, what",
    [
        (b"\xcb" + encode_frame(0x02, b"", be=False, server=False)[1:], "bad magic"),
        (encode_header(0x02, 0, 0, version=0), "version 0"),
        (seg(0x0A, b"x", FLAG_SEGMENT_LAST), "last segment without a first"),
        (seg(0x0A, b"x", FLAG_SEGMENT_MIDDLE), "middle segment without a first"),
        (seg(0x0A, b"", FLAG_SEGMENT_LAST), "empty continuation (pvxs rejects it)"),
        (seg(0x0A, b"a", FLAG_SEGMENT_FIRST) + seg(0x0B, b"b", FLAG_SEGMENT_LAST), "command change"),
        (
            seg(0x0A, b"a", FLAG_SEGMENT_FIRST) + seg(0x0B, b"b", FLAG_SEGMENT_MIDDLE),
            "command change (middle)",
        ),
        (seg(0x0A, b"a", FLAG_SEGMENT_FIRST) + seg(0x0A, b"b", 0), "unsegmented message inside"),
        (seg(0x0A, b"a", FLAG_SEGMENT_FIRST) + seg(0x0A, b"b", FLAG_SEGMENT_FIRST), "second first segment"),
    ],
)
def test_stream_errors(data: bytes, what: str) -> None:
    for feed in (lambda rd: rd.feed(data), lambda rd: feed_bytewise(rd, data)):
        rd = MessageReader()
        with pytest.raises(DecodeError):
            feed(rd)
        # the stream cannot be re-synchronised: the reader stays failed
        with pytest.raises(DecodeError):
            rd.feed(encode_frame(0x02, b"", be=False, server=True))
        with pytest.raises(DecodeError):
            rd.next_frame()


@pytest.mark.parametrize("expect_server", [True, False])
def test_direction_bit_checked_when_asked(expect_server: bool) -> None:
    """pvxs closes the connection when a message's direction bit is wrong, control messages
    included (§1.2).  With ``expect_server=None`` either bit is accepted."""
    good_app = encode_frame(0x02, b"", be=False, server=expect_server)
    bad_app = encode_frame(0x02, b"", be=False, server=not expect_server)
    bad_ctrl = encode_control(CTRL_SET_BYTE_ORDER, 0, be=False, server=not expect_server)
    assert len(MessageReader(expect_server=expect_server).feed(good_app)) == 1
    for bad in (bad_app, bad_ctrl):
        with pytest.raises(DecodeError):
            MessageReader(expect_server=expect_server).feed(good_app + bad)
        assert len(MessageReader().feed(good_app + bad)) == 2


def test_error_carries_frames_completed_before_it() -> None:
    """pvxs handles the good messages before the bad one, then disconnects; ``frames`` on
    the exception lets a caller do the same."""
    good = encode_frame(0x02, b"ok", be=False, server=False)
    with pytest.raises(DecodeError) as info:
        MessageReader().feed(good + good + b"\x00" * 8)
    assert [f.body for f in info.value.frames] == [b"ok", b"ok"]  # type: ignore[attr-defined]


def test_empty_continuation_option() -> None:
    """pvAccessCPP ignores a zero-length continuation outside a segmented message."""
    stray = seg(0x0A, b"", FLAG_SEGMENT_LAST)
    good = encode_frame(0x02, b"x", be=False, server=True)
    frames = MessageReader(allow_empty_continuation=True).feed(stray + good)
    assert [f.body for f in frames] == [b"x"]
    with pytest.raises(DecodeError):  # only empty ones
        MessageReader(allow_empty_continuation=True).feed(seg(0x0A, b"y", FLAG_SEGMENT_LAST))


def test_max_message_size() -> None:
    """Refused as soon as a header announces too much, before the body is buffered; the
    limit covers the reassembled body of a segmented message."""
    rd = MessageReader(max_message_size=100)
    assert len(rd.feed(encode_frame(0x02, bytes(100), be=False, server=True))) == 1
    with pytest.raises(DecodeError):
        MessageReader(max_message_size=100).feed(encode_header(0x02, 101, FLAG_SERVER))
    rd = MessageReader(max_message_size=100)
    rd.feed(seg(0x0A, bytes(60), FLAG_SEGMENT_FIRST))
    with pytest.raises(DecodeError):
        rd.feed(encode_header(0x0A, 41, FLAG_SERVER | FLAG_SEGMENT_LAST))


# -- UDP -----------------------------------------------------------------------------------

_ORIGIN_SEARCH = bytes.fromhex(
    "ca 02 80 16 00 00 00 10 00 00 00 00 00 00 00 00 00 00 ff ff 7f 00 00 01"
    " ca 02 80 03 00 00 00 2d 66 69 6e 64 00 00 00 00 00 00 00 00 00 00 00 00 00 00 ff ff 7f 00 00 01"
    " a0 86 01 03 74 63 70 00 01 12 34 56 78 07 54 53 54 3a 64 62 6c"
)


def test_split_datagram_origin_tag_then_search() -> None:
    """a2.txt: a forwarded search is ORIGIN_TAG + SEARCH in one datagram."""
    frames = split_datagram(_ORIGIN_SEARCH)
    assert [(f.command, len(f.body)) for f in frames] == [(0x16, 16), (0x03, 45)]


@pytest.mark.parametrize(
    "data",
    [
        _ORIGIN_SEARCH[:-1],  # truncated second message
        _ORIGIN_SEARCH + b"\xca\x02",  # trailing partial header
        set_byte_order(True),  # control messages never travel by UDP
        seg(0x03, b"abc", FLAG_SEGMENT_FIRST, server=False),  # nor segments
        b"\x00" * 12,
    ],
)
def test_split_datagram_errors(data: bytes) -> None:
    with pytest.raises(DecodeError):
        split_datagram(data)


def test_split_datagram_error_keeps_earlier_frames() -> None:
    with pytest.raises(DecodeError) as info:
        split_datagram(_ORIGIN_SEARCH[:-3])
    assert [f.command for f in info.value.frames] == [0x16]  # type: ignore[attr-defined]


# -- properties ----------------------------------------------------------------------------

_message = st.builds(
    lambda cmd, body, be, ctrl, data: (
        encode_control(cmd, data, be=be, server=False)
        if ctrl
        else encode_frame(cmd, body, be=be, server=False)
    ),
    st.integers(0, 0x16),
    st.binary(max_size=40),
    st.booleans(),
    st.booleans(),
    st.integers(0, 0xFFFFFFFF),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_message, max_size=12), st.lists(st.integers(0, 600), max_size=10))
def test_any_chunking_gives_the_same_frames(msgs: list[bytes], cuts: list[int]) -> None:
    data = b"".join(msgs)
    want = MessageReader().feed(data)
    assert len(want) == len(msgs)
    rd = MessageReader()
    got: list[Frame] = []
    points = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    for a, b in zip(points, points[1:]):
        got += rd.feed(data[a:b])
    assert got == want and rd.pending == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_raises_only_decode_error(data: bytes) -> None:
    rd = MessageReader()
    try:
        rd.feed(data)
    except DecodeError:
        pass
    try:
        split_datagram(data)
    except DecodeError:
        pass
