"""Primitive encodings (pva-protocol.md §2) against the byte vectors of the reference doc.

These pin the bottom layer every other codec test stands on: Size, String, BitSet (both byte
orders, including the 8-byte group swap of big-endian BitSets), Status and Selector."""

from __future__ import annotations

import pytest

from capva._wire import (
    WireError,
    bits_from_mask,
    decode_bitset,
    decode_size,
    decode_size_or_null,
    decode_string,
    encode_bitset,
    encode_size,
    encode_string,
    mask_from_bits,
)
from capva.pva import DecodeError
from capva.pva.codec import Status, decode_selector, decode_status, encode_selector, encode_status


@pytest.mark.parametrize(
    "n, le, be",
    [
        (0, "00", "00"),
        (1, "01", "01"),
        (253, "fd", "fd"),
        (254, "fefe000000", "fe000000fe"),
        (40000, "fe409c0000", "fe00009c40"),
        (0xFFFFFFFF, "feffffffff", "feffffffff"),
    ],
)
def test_size(n, le, be):
    assert encode_size(n, False).hex() == le
    assert encode_size(n, True).hex() == be
    assert decode_size(bytes.fromhex(le), 0, False) == (n, len(le) // 2)
    assert decode_size(bytes.fromhex(be), 0, True) == (n, len(be) // 2)


def test_size_rejects_null_and_truncation():
    with pytest.raises(WireError):
        decode_size(b"\xff", 0, False)
    assert decode_size_or_null(b"\xff", 0, False) == (-1, 1)
    for bad in (b"", b"\xfe", b"\xfe\x00\x00\x00"):
        with pytest.raises(WireError):
            decode_size(bad, 0, False)
    with pytest.raises(ValueError):
        encode_size(-1, False)
    with pytest.raises(ValueError):
        encode_size(1 << 32, False)


@pytest.mark.parametrize(
    "s, hexs",
    [("", "00"), ("hello world", "0b68656c6c6f20776f726c64"), ("TST:dbl", "075453543a64626c")],
)
def test_string(s, hexs):
    for be in (False, True):
        assert encode_string(s, be).hex() == hexs
        assert decode_string(bytes.fromhex(hexs), 0, be) == (s, len(hexs) // 2)


def test_string_null_and_long_and_utf8():
    assert decode_string(b"\xff", 0, False) == ("", 1)
    long = "x" * 300
    enc = encode_string(long, True)
    assert enc[:5].hex() == "fe0000012c"
    assert decode_string(enc, 0, True) == (long, 305)
    u = "µs ✓"
    assert decode_string(encode_string(u, False), 0, False)[0] == u
    with pytest.raises(WireError):
        decode_string(b"\x05abc", 0, False)


@pytest.mark.parametrize(
    "bits, le, be",
    [
        (set(), "00", "00"),
        ({1}, "0102", "0102"),
        ({1, 7, 8}, "028201", "028201"),
        ({1, 63, 64}, "09020000000000008001", "09800000000000000201"),
        ({5, 8}, "022001", "022001"),
        (set(range(10)), "02ff03", "02ff03"),
    ],
)
def test_bitset(bits, le, be):
    m = mask_from_bits(bits)
    assert encode_bitset(m, False).hex() == le
    assert encode_bitset(m, True).hex() == be
    assert decode_bitset(bytes.fromhex(le), 0, False) == (m, len(le) // 2)
    assert decode_bitset(bytes.fromhex(be), 0, True) == (m, len(be) // 2)
    assert bits_from_mask(m) == sorted(bits)


def test_bitset_tolerates_extra_zero_bytes_and_rejects_null():
    assert decode_bitset(bytes.fromhex("03020000"), 0, False) == (2, 4)
    with pytest.raises(WireError):
        decode_bitset(b"\xff", 0, False)
    with pytest.raises(WireError):
        decode_bitset(b"\x05\x01", 0, False)


def test_status():
    assert encode_status(Status.OK, False) == b"\xff"
    assert decode_status(b"\xff", 0, False) == (Status.OK, 1)
    wire = bytes.fromhex("02") + encode_string("Put not supported", False) + b"\x00"
    st, end = decode_status(wire, 0, False)
    assert (st.code, st.message, st.trace, st.ok, st.name) == (2, "Put not supported", "", False, "ERROR")
    assert end == len(wire)
    assert encode_status(st, False) == wire
    refused = bytes.fromhex("0319") + b"Refused to create Channel" + b"\x14" + b"pvx:serv:refusechan:"
    st, _ = decode_status(refused, 0, True)
    assert (st.name, st.message, st.trace) == ("FATAL", "Refused to create Channel", "pvx:serv:refusechan:")
    assert Status(1, "careful").ok
    for bad in (b"\x04", b"\x02\x05ab", b""):
        with pytest.raises(DecodeError):
            decode_status(bad, 0, False)


def test_selector():
    assert encode_selector(None, False) == b"\xff"
    assert encode_selector(5, True) == b"\x05"
    assert decode_selector(b"\xff", 0, False) == (None, 1)
    assert decode_selector(b"\x02", 0, False) == (2, 1)
