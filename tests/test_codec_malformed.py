"""Malformed and hostile input to the PVA codec decoders (pva-protocol.md §2-§3).

Why these tests exist: every byte the decoders see comes from a peer we do not control.  The
codec promises (capva.pva.errors) that malformed input raises :class:`DecodeError` and nothing
else, so a transport can catch that one class, drop or answer the offending peer and keep
serving the others, and that no decoder allocates more than the input justifies before checking
it.  An ``IndexError``, ``struct.error``, ``KeyError``, ``MemoryError`` or ``RecursionError``
escaping from a decoder would take down the connection handler instead, and a 20-byte message
claiming four billion elements must not make us allocate gigabytes.

Covered: truncation at every offset of representative encodings (NT types and values, NTNDArray-
like union arrays, any, struct/union/any arrays, partial values, pvAccessCPP cached types,
Status), absurd Sizes, all 256 leading bytes in every FieldDesc position, introspection-cache
keys never defined, nesting beyond MAX_DEPTH, BitSets beyond the type, union selectors out of
range, a null (0xFF) Size where none is allowed, bad Status bytes, and random and mutated bytes
fed to every decoder.

The tests at the end pin codec bugs found while writing this file; all are fixed and stay as
regression tests.
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capva import Type, Value
from capva._wire import encode_bitset
from capva.pva import DecodeError
from capva.pva.codec import (
    MAX_DEPTH,
    SendTypeCache,
    Status,
    decode_field_value,
    decode_full,
    decode_partial,
    decode_status,
    decode_type,
    decode_typed_value,
    encode_field_value,
    encode_full,
    encode_partial,
    encode_status,
    encode_type,
    encode_typed_value,
)
from strategies import layout, struct_types

BOTH = pytest.mark.parametrize("be", [False, True], ids=["LE", "BE"])


def leaf(code: str) -> Type:
    """The Type of a non-structure field, built through the public constructor."""
    return Type([("x", code)]).members[0][1]


# -- representative types and values --------------------------------------------------------------

ALARM = ("S", "alarm_t", [("severity", "i"), ("status", "i"), ("message", "s")])
TIME = ("S", "time_t", [("secondsPastEpoch", "l"), ("nanoseconds", "i"), ("userTag", "i")])
DISPLAY = (
    "S",
    "display_t",
    [
        ("limitLow", "d"),
        ("limitHigh", "d"),
        ("description", "s"),
        ("units", "s"),
        ("precision", "i"),
        ("form", ("S", "enum_t", [("index", "i"), ("choices", "as")])),
    ],
)
CONTROL = ("S", "control_t", [("limitLow", "d"), ("limitHigh", "d"), ("minStep", "d")])

NTSCALAR = Type(
    [("value", "d"), ("alarm", ALARM), ("timeStamp", TIME), ("display", DISPLAY), ("control", CONTROL)],
    id="epics:nt/NTScalar:1.0",
)
NTSCALARARRAY = Type(
    [("value", "ad"), ("alarm", ALARM), ("timeStamp", TIME)], id="epics:nt/NTScalarArray:1.0"
)
_ND_VALUE = (
    "U",
    None,
    [
        (n + "Value", "a" + c)
        for n, c in [
            ("boolean", "?"),
            ("byte", "b"),
            ("short", "h"),
            ("int", "i"),
            ("long", "l"),
            ("ubyte", "B"),
            ("ushort", "H"),
            ("uint", "I"),
            ("ulong", "L"),
            ("float", "f"),
            ("double", "d"),
        ]
    ],
)
NTNDARRAY = Type(
    [
        ("value", _ND_VALUE),
        ("codec", ("S", "codec_t", [("name", "s"), ("parameters", "v")])),
        ("compressedSize", "l"),
        ("uncompressedSize", "l"),
        (
            "dimension",
            (
                "aS",
                "dimension_t",
                [("size", "i"), ("offset", "i"), ("fullSize", "i"), ("binning", "i"), ("reverse", "?")],
            ),
        ),
        ("uniqueId", "i"),
        ("dataTimeStamp", TIME),
        (
            "attribute",
            (
                "aS",
                "epics:nt/NTAttribute:1.0",
                [
                    ("name", "s"),
                    ("value", "v"),
                    ("tags", "as"),
                    ("descriptor", "s"),
                    ("alarm", ALARM),
                    ("timestamp", TIME),
                    ("sourceType", "i"),
                    ("source", "s"),
                ],
            ),
        ),
        ("descriptor", "s"),
        ("alarm", ALARM),
        ("timeStamp", TIME),
    ],
    id="epics:nt/NTNDArray:1.0",
)
ARRAYS = Type(
    [
        ("sa", ("aS", "elem_t", [("x", "i"), ("u", ("U", None, [("a", "d"), ("b", "s")]))])),
        ("ua", ("aU", None, [("x", "s"), ("y", "ai"), ("z", ("S", None, [("q", "h")]))])),
        ("va", "av"),
        ("last", "H"),
    ]
)
ATTR_T = dict(NTNDARRAY.members)["attribute"]
UA_T = dict(ARRAYS.members)["ua"]
ANYS = Type([("any", "v"), ("u", ("U", None, [("a", "i"), ("b", "s")])), ("tail", "i")])


def ntscalar_value() -> Value:
    return NTSCALAR(
        {
            "value": 1.5,
            "alarm.severity": 2,
            "alarm.message": "LOLO",
            "timeStamp.secondsPastEpoch": 1e9,
            "timeStamp.nanoseconds": 123,
            "display.units": "mm",
            "display.form.choices": ["a", "b"],
            "control.minStep": 0.25,
        }
    )


def ntndarray_value() -> Value:
    inner = Type([("name", "s"), ("n", "ai")])({"name": "x", "n": [1, 2]})
    return NTNDARRAY(
        {
            "value": ("ushortValue", np.arange(300, dtype=np.uint16)),
            "codec": {"name": "lz4", "parameters": ("i", 5)},
            "dimension": [{"size": 20, "reverse": True}, None, {"size": 15, "binning": 1}],
            "attribute": [
                {"name": "ColorMode", "value": ("i", 0), "tags": ["t"]},
                None,
                {"name": "Nested", "value": inner, "descriptor": "d" * 260},
            ],
            "uniqueId": 7,
            "timeStamp.userTag": 3,
        }
    )


def arrays_value() -> Value:
    return ARRAYS(
        {
            "sa": [{"x": 1, "u": ("b", "hi")}, None, {"x": 2}],
            "ua": [("x", "theX"), None, ("y", [1, 2, 3]), ("z", {"q": -1})],
            "va": [("I", 0x7B), Type([("q", "s")])({"q": "theq"}), ("as", ["a", ""])],
            "last": 0xBEEF,
        }
    )


def anys_value() -> Value:
    return ANYS({"any": NTSCALARARRAY({"value": [1.0, 2.0]}), "u": ("b", "hi"), "tail": -1})


def _full(T):
    return lambda b, be: decode_full(T, b, 0, be, {})


def _partial(T):
    return lambda b, be: decode_partial(T, b, 0, be, {})


def _field(T):
    return lambda b, be: decode_field_value(T, b, 0, be, {})


def _type(b, be):
    return decode_type(b, 0, be, {})


def _typed(b, be):
    return decode_typed_value(b, 0, be, {})


def _status(b, be):
    return decode_status(b, 0, be)


#: (name, decoder(buf, be) -> (result, end), encoding(be) -> bytes)
CASES = [
    ("type NTScalar", _type, lambda be: encode_type(NTSCALAR, be)),
    ("type NTScalarArray", _type, lambda be: encode_type(NTSCALARARRAY, be)),
    ("type NTNDArray", _type, lambda be: encode_type(NTNDARRAY, be)),
    ("type NTNDArray cached", _type, lambda be: encode_type(NTNDARRAY, be, SendTypeCache())),
    ("type arrays", _type, lambda be: encode_type(ARRAYS, be)),
    ("full NTScalar", _full(NTSCALAR), lambda be: encode_full(ntscalar_value(), be)),
    (
        "full NTScalarArray",
        _full(NTSCALARARRAY),
        lambda be: encode_full(NTSCALARARRAY({"value": np.linspace(0, 1, 260)}), be),
    ),
    ("full NTNDArray", _full(NTNDARRAY), lambda be: encode_full(ntndarray_value(), be)),
    ("full arrays", _full(ARRAYS), lambda be: encode_full(arrays_value(), be)),
    ("full any", _full(ANYS), lambda be: encode_full(anys_value(), be)),
    ("partial NTScalar", _partial(NTSCALAR), lambda be: encode_partial(ntscalar_value(), be, 0b110000010)),
    (
        "partial NTScalar redundant",
        _partial(NTSCALAR),
        lambda be: encode_partial(ntscalar_value(), be, (1 << 23) - 1),
    ),
    ("partial NTNDArray", _partial(NTNDARRAY), lambda be: encode_partial(ntndarray_value(), be)),
    ("partial arrays", _partial(ARRAYS), lambda be: encode_partial(arrays_value(), be, 0b1110)),
    ("typed NTNDArray", _typed, lambda be: encode_typed_value(ntndarray_value(), be)),
    ("typed cached any", _typed, lambda be: encode_typed_value(anys_value(), be, SendTypeCache())),
    ("typed any[]", _typed, lambda be: encode_typed_value((leaf("av"), [(leaf("s"), "x")]), be)),
    ("typed union[]", _typed, lambda be: encode_typed_value((UA_T, [None, (0, "u")]), be)),
    (
        "field struct[]",
        _field(ATTR_T),
        lambda be: encode_field_value(ATTR_T, ntndarray_value().attribute, be),
    ),
    (
        "field union[]",
        _field(UA_T),
        lambda be: encode_field_value(UA_T, [None, (2, Type([("q", "h")])({"q": 1}))], be),
    ),
    ("status", _status, lambda be: encode_status(Status(3, "Refused to create Channel", "pvx:serv:"), be)),
]


@pytest.mark.parametrize("name, decode, encode", CASES, ids=[c[0] for c in CASES])
@BOTH
def test_truncated_at_every_offset(name, decode, encode, be):
    data = encode(be)
    _, end = decode(data, be)  # the complete encoding is valid ...
    assert end == len(data)
    for k in range(len(data)):  # ... and every proper prefix of it is not
        with pytest.raises(DecodeError):
            decode(data[:k], be)


# -- absurd sizes ---------------------------------------------------------------------------------


def _size(n: int, be: bool) -> bytes:
    return b"\xfe" + n.to_bytes(4, "big" if be else "little")


def _pad(b: bytes, n: int = 20) -> bytes:
    return (b + b"\x01" * n)[: max(n, len(b))]


def _absurd_cases():
    """(name, decoder(buf, be), prefix, suffix): the Size goes between prefix and suffix."""
    out = [
        ("struct id", _type, b"\x80", b"abc"),
        ("struct member count", _type, b"\x80\x00", b"\x01a\x22"),
        ("union member count", _type, b"\x81\x00", b"\x01a\x22"),
        ("member name", _type, b"\x80\x00\x01", b"a"),
        ("string value", _full(Type([("s", "s")])), b"", b"xyz"),
        ("struct[] count", _full(Type([("a", ("aS", None, [("x", "i")]))])), b"", b"\x01\x00\x00\x00\x00"),
        ("union[] count", _full(Type([("a", ("aU", None, [("x", "i")]))])), b"", b"\x01\x00"),
        ("any[] count", _full(Type([("a", "av")])), b"", b"\x01\x22"),
        ("any content member count", _full(Type([("a", "v")])), b"\x80\x00", b"\x01a\x22"),
        ("any content string", _full(Type([("a", "v")])), b"\x60", b"abc"),
        ("any[] content array", _full(Type([("a", "av")])), b"\x01\x01\x4b", b"\x00"),
        ("fixed array value", _typed, b"\x3b", b"\x00"),  # pvData fixed double[N]: no count on the wire
        ("bounded array value", _typed, b"\x33\x05", b"\x00"),
        ("BitSet", _partial(NTSCALAR), b"", b"\xff"),
        ("status message", _status, b"\x02", b"abc"),
        ("status trace", _status, b"\x02\x00", b"abc"),
    ]
    for code in "?bBhHiIlLfds":
        out.append((f"{code}[] count", _full(Type([("a", "a" + code)])), b"", b"\x01\x02\x03"))
    return out


ABSURD = _absurd_cases()


@pytest.mark.parametrize("name, decode, prefix, suffix", ABSURD, ids=[c[0] for c in ABSURD])
@pytest.mark.parametrize("n", [0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 0x00100000], ids=hex)
@BOTH
def test_absurd_size_rejected_without_allocating(name, decode, prefix, suffix, n, be):
    buf = _pad(prefix + _size(n, be) + suffix)
    assert len(buf) == 20
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(DecodeError):
            decode(buf, be)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes allocated for a 20-byte input"
    assert time.perf_counter() - t0 < 1.0


# -- every leading byte in every FieldDesc position --------------------------------------------------

_SCALAR_BYTES = {0x00, *range(0x20, 0x28), 0x42, 0x43, 0x60}
#: the documented table (§3.1) plus the NULL type: these must decode
CORE_VALID = _SCALAR_BYTES | {b | 0x08 for b in _SCALAR_BYTES} | {0x80, 0x81, 0x82, 0x8A, 0xFF}
#: pvData-only bounded/fixed forms (followed by a Size): decoding them is optional
PVDATA_ONLY = {b | 0x10 for b in _SCALAR_BYTES} | {b | 0x18 for b in _SCALAR_BYTES} | {0x83}
PAD = b"\x00" * 8  # after the byte: empty id, zero members, Size 0, cache key 0, then bool


def _decode_outcome(fn, buf):
    try:
        return fn(buf)
    except DecodeError:
        return None


@BOTH
def test_every_leading_byte_as_type(be):
    for b in range(256):
        buf = bytes((b,)) + PAD
        got = _decode_outcome(lambda x: decode_type(x, 0, be, {}), buf)
        if b in CORE_VALID:
            assert got is not None, f"0x{b:02x} must decode"
            T, end = got
            assert encode_type(T, be) == buf[:end]
        elif b == 0xFD:  # define key 0 as the bool that follows
            assert got is not None and got[0] == leaf("?") and got[1] == 4
        elif b not in PVDATA_ONLY:  # 0x88/0x89 here get a bool element: invalid too
            assert got is None, f"0x{b:02x} must be rejected"


POSITIONS = [
    ("struct member", lambda be: lambda x: decode_type(b"\x80\x00\x01\x01a" + x, 0, be, {})),
    ("union member", lambda be: lambda x: decode_type(b"\x81\x05union\x01\x01a" + x, 0, be, {})),
    ("struct[] element", lambda be: lambda x: decode_type(b"\x88" + x, 0, be, {})),
    ("union[] element", lambda be: lambda x: decode_type(b"\x89" + x, 0, be, {})),
    ("cache definition", lambda be: lambda x: decode_type(b"\xfd\x01\x00" + x, 0, be, {})),
    ("any content", lambda be: lambda x: decode_full(Type([("a", "v")]), x, 0, be, {})),
    ("any[] element", lambda be: lambda x: decode_full(Type([("a", "av")]), b"\x01\x01" + x, 0, be, {})),
    ("typed value", lambda be: lambda x: decode_typed_value(x, 0, be, {})),
]


@pytest.mark.parametrize("name, make", POSITIONS, ids=[p[0] for p in POSITIONS])
@BOTH
def test_every_leading_byte_in_nested_positions(name, make, be):
    decode = make(be)
    accepted = set()
    for b in range(256):
        for tail in (PAD, b"\x01" * 8, b"\xfe" * 8, b""):
            if _decode_outcome(decode, bytes((b,)) + tail) is not None:
                accepted.add(b)
    # anything that decodes at all is a known code; 0xFC (tagged id) and the reserved kinds never do
    assert accepted <= CORE_VALID | PVDATA_ONLY | {0x88, 0x89, 0xFD}
    assert 0xFC not in accepted


# -- introspection cache keys never defined -----------------------------------------------------------


@BOTH
def test_undefined_cache_keys(be):
    k7 = (7).to_bytes(2, "big" if be else "little")
    defined = {1: NTSCALAR, 2: leaf("?")}
    cases = [
        lambda c: decode_type(b"\xfe" + k7, 0, be, c),
        lambda c: decode_type(b"\x80\x00\x01\x01a\xfe" + k7, 0, be, c),
        lambda c: decode_type(b"\x88\xfe" + k7, 0, be, c),
        lambda c: decode_full(Type([("a", "v")]), b"\xfe" + k7, 0, be, c),
        lambda c: decode_full(Type([("a", "av")]), b"\x01\x01\xfe" + k7, 0, be, c),
        lambda c: decode_typed_value(b"\xfe" + k7, 0, be, c),
        lambda c: decode_type(b"\xfe\x01", 0, be, c),  # truncated key
        lambda c: decode_type(b"\xfd\x01", 0, be, c),
    ]
    for case in cases:
        for cache in ({}, dict(defined)):
            with pytest.raises(DecodeError):
                case(cache)


def test_cache_key_is_in_message_byte_order():
    rx: dict = {}
    T, _ = decode_type(b"\xfd\x01\x00\x22", 0, False, rx)
    assert rx == {1: T}
    assert decode_type(b"\xfe\x01\x00", 0, False, rx) == (T, 3)
    with pytest.raises(DecodeError):
        decode_type(b"\xfe\x01\x00", 0, True, rx)  # key 256 in a big-endian message


@BOTH
def test_cached_entries_of_the_wrong_kind(be):
    rx: dict = {}
    decode_type(b"\xfd\x01\x00\xff", 0, be, rx)  # key 1 defined as the NULL type
    key = (1).to_bytes(2, "big" if be else "little")
    with pytest.raises(DecodeError):  # a struct member needs a type
        decode_type(b"\x80\x00\x01\x01a\xfe" + key, 0, be, rx)
    rx[1] = leaf("i")
    with pytest.raises(DecodeError):  # struct[] of a non-struct
        decode_type(b"\x88\xfe" + key, 0, be, rx)
    with pytest.raises(DecodeError):
        decode_type(b"\x89\xfe" + key, 0, be, rx)


# -- nesting beyond MAX_DEPTH -------------------------------------------------------------------------


def _nested_structs(levels: int) -> bytes:
    return b"\x80\x00\x01\x01a" * levels + b"\x22"


@BOTH
@pytest.mark.parametrize("levels", [MAX_DEPTH + 2, 200, 5000])
def test_deep_types_rejected(levels, be):
    bad = [
        _nested_structs(levels),
        b"\x81\x00\x01\x01a" * levels + b"\x22",
        b"\x88\x80\x00\x01\x01a" * levels + b"\x80\x00\x00",
        b"\xfd\x01\x00" * levels + b"\x22",
    ]
    for buf in bad:
        with pytest.raises(DecodeError):
            decode_type(buf, 0, be, {})
        with pytest.raises(DecodeError):
            decode_typed_value(buf + b"\x00" * 8, 0, be, {})
        with pytest.raises(DecodeError):
            decode_full(Type([("a", "v")]), buf + b"\x00" * 8, 0, be, {})


@BOTH
def test_moderately_deep_types_accepted(be):
    """The limit must not reject real types: 8 nested structures, also with every level cached."""
    T, end = decode_type(_nested_structs(8), 0, be, {})
    assert end == len(_nested_structs(8))
    wire = encode_type(T, be, SendTypeCache())
    assert decode_type(wire, 0, be, {}) == (T, len(wire))


@BOTH
@pytest.mark.parametrize("levels", [MAX_DEPTH + 2, 200, 5000])
def test_deep_values_rejected(levels, be):
    """any holding an any holding an any ...; any[] of any[] ...; unions of unions."""
    bad = [
        (_typed, b"\x82" * levels + b"\xff"),
        (_full(Type([("a", "v")])), b"\x82" * levels + b"\xff"),
        (_typed, b"\x8a" + b"\x01\x01\x8a" * levels + b"\x00"),
        (_full(Type([("a", "av")])), b"\x01\x01\x8a" * levels + b"\x00"),
        (_full(Type([("a", "v")])), b"\x81\x00\x01\x01a" * levels + b"\x22" + b"\x00" * (levels + 4)),
    ]
    for decode, buf in bad:
        with pytest.raises(DecodeError):
            decode(buf, be)


@BOTH
def test_moderately_deep_values_accepted(be):
    buf = b"\x82" * 5 + b"\x22\x00\x00\x00\x07"
    got, end = decode_typed_value(buf, 0, be, {})
    assert end == len(buf)
    for _ in range(5):  # the typed value's own type, then four nested any contents
        assert got[0] == leaf("v")
        got = got[1]
    assert got[0] == leaf("i")


# -- BitSets, selectors, null Sizes, Status -------------------------------------------------------------


@BOTH
def test_bitset_beyond_type(be):
    n = len(layout(NTSCALAR))  # bits 0 .. n-1 exist
    V = ntscalar_value()
    ok = encode_partial(V, be, 1 << (n - 1))
    assert decode_partial(NTSCALAR, ok, 0, be, {})[1] == len(ok)
    for mask in (1 << n, (1 << n) | 2, 1 << (n + 7), 1 << 200, (1 << 1000) - 1):
        # our encoder refuses such a mask; a peer's BitSet is built by hand
        with pytest.raises(ValueError):
            encode_partial(V, be, mask)
        buf = encode_bitset(mask, be) + b"\x00" * 64
        with pytest.raises(DecodeError):
            decode_partial(NTSCALAR, buf, 0, be, {})


@BOTH
def test_union_selector_out_of_range(be):
    U = Type([("u", ("U", None, [("a", "i"), ("b", "s")]))])
    UA = Type([("u", ("aU", None, [("a", "i"), ("b", "s")]))])
    empty = Type([("u", ("U", None, []))])
    assert decode_full(U, b"\x01\x02hi", 0, be, {})[0].u == "hi"
    assert decode_full(U, b"\xff", 0, be, {})[0].u is None
    assert decode_full(empty, b"\xff", 0, be, {})[0].u is None
    pad = b"\x00" * 8
    for T, buf in [
        (U, b"\x02"),
        (U, b"\xfd"),
        (U, _size(2, be)),
        (U, _size(0xFFFFFFFF, be)),
        (UA, b"\x02\x01\x00" + b"\x00" * 4 + b"\x01\x05"),
        (empty, b"\x00"),
    ]:
        with pytest.raises(DecodeError):
            decode_full(T, buf + pad, 0, be, {})
    with pytest.raises(DecodeError):  # union inside an any
        decode_full(Type([("a", "v")]), b"\x81\x00\x01\x01a\x22\x01" + pad, 0, be, {})


@BOTH
def test_null_size_only_where_allowed(be):
    pad = b"\x00" * 8
    for code in "?bBhHiIlLfds":
        with pytest.raises(DecodeError):
            decode_full(Type([("a", "a" + code)]), b"\xff" + pad, 0, be, {})
    for spec in [("aS", None, [("x", "i")]), ("aU", None, [("x", "i")]), "av"]:
        with pytest.raises(DecodeError):
            decode_full(Type([("a", spec)]), b"\xff" + pad, 0, be, {})
    with pytest.raises(DecodeError):  # BitSet length
        decode_partial(NTSCALAR, b"\xff" + pad, 0, be, {})
    for buf in [b"\x80\x00\xff", b"\x3b\xff", b"\x33\xff"]:  # member count, fixed/bounded length
        with pytest.raises(DecodeError):
            decode_type(buf + b"\x01" + pad, 0, be, {})
    # allowed: a null String reads as "", a null selector as "no member selected"
    assert decode_type(b"\x80\xff\x00", 0, be, {})[0] == Type([])
    assert decode_type(b"\x80\x00\x01\xff\x22", 0, be, {})[0] == Type([("", "i")])  # null member name
    assert decode_full(Type([("s", "s")]), b"\xff", 0, be, {})[0].s == ""
    assert decode_status(b"\x02\xff\xff", 0, be) == (Status(2, "", ""), 3)


@BOTH
def test_status_type_byte(be):
    for c in range(256):
        buf = bytes((c,)) + b"\x00\x00"
        if c == 0xFF:
            assert decode_status(buf, 0, be) == (Status(), 1)
        elif c <= 3:
            assert decode_status(buf, 0, be) == (Status(c), 3)
        else:
            with pytest.raises(DecodeError):
                decode_status(buf, 0, be)
    for buf in (b"", b"\x02", b"\x02\x00", b"\x02\x05abc"):
        with pytest.raises(DecodeError):
            decode_status(buf, 0, be)


# -- random and mutated bytes ------------------------------------------------------------------------

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _only_decode_error(fn, buf: bytes) -> None:
    try:
        _, end = fn(buf)
    except DecodeError:
        return
    assert 0 <= end <= len(buf)


def _preloaded_cache(be: bool) -> dict:
    rx: dict = {}
    decode_type(encode_type(NTNDARRAY, be, SendTypeCache()), 0, be, rx)
    return rx


DECODERS = {
    "type": lambda b, be: decode_type(b, 0, be, {}),
    "type cached": lambda b, be: decode_type(b, 0, be, _preloaded_cache(be)),
    "typed": lambda b, be: decode_typed_value(b, 0, be, {}),
    "typed cached": lambda b, be: decode_typed_value(b, 0, be, _preloaded_cache(be)),
    "status": lambda b, be: decode_status(b, 0, be),
    "full NTScalar": lambda b, be: decode_full(NTSCALAR, b, 0, be, {}),
    "full NTNDArray": lambda b, be: decode_full(NTNDARRAY, b, 0, be, {}),
    "full arrays": lambda b, be: decode_full(ARRAYS, b, 0, be, {}),
    "full any": lambda b, be: decode_full(ANYS, b, 0, be, _preloaded_cache(be)),
    "partial NTScalar": lambda b, be: decode_partial(NTSCALAR, b, 0, be, {}),
    "partial NTNDArray": lambda b, be: decode_partial(NTNDARRAY, b, 0, be, {}),
    "partial arrays": lambda b, be: decode_partial(ARRAYS, b, 0, be, {}),
    "field struct[]": lambda b, be: decode_field_value(ATTR_T, b, 0, be, {}),
    "field union[]": lambda b, be: decode_field_value(UA_T, b, 0, be, {}),
    "field any": lambda b, be: decode_field_value(leaf("v"), b, 0, be, _preloaded_cache(be)),
    "field any[]": lambda b, be: decode_field_value(leaf("av"), b, 0, be, {}),
}


@FUZZ
@given(name=st.sampled_from(sorted(DECODERS)), buf=st.binary(max_size=80), be=st.booleans())
def test_random_bytes_only_raise_decode_error(name, buf, be):
    _only_decode_error(lambda b: DECODERS[name](b, be), buf)


@FUZZ
@given(T=struct_types(4), buf=st.binary(max_size=80), be=st.booleans(), partial=st.booleans())
def test_random_bytes_for_random_types(T, buf, be, partial):
    dec = decode_partial if partial else decode_full
    _only_decode_error(lambda b: dec(T, b, 0, be, {}), buf)


_mutation = st.tuples(
    st.sampled_from(["set", "insert", "delete"]), st.integers(0, 1 << 16), st.integers(0, 255)
)


@FUZZ
@given(case=st.sampled_from(CASES), be=st.booleans(), edits=st.lists(_mutation, min_size=1, max_size=4))
def test_mutated_encodings_only_raise_decode_error(case, be, edits):
    """Valid encodings with a few bytes changed, inserted or removed reach far deeper into the
    decoders than random bytes do."""
    _, decode, encode = case
    buf = bytearray(encode(be))
    for op, at, val in edits:
        i = at % (len(buf) + 1)
        if op == "insert":
            buf.insert(i, val)
        elif i < len(buf):
            if op == "set":
                buf[i] = val
            else:
                del buf[i]
    _only_decode_error(lambda b: decode(b, be), bytes(buf))


# -- codec bugs found by these tests (see the module docstring) -----------------------------------------


def test_nul_in_type_id():
    """Regression: a NUL in a structure id used to reach compile() in the generated plan's
    filename and raise ValueError; ids are arbitrary wire strings."""
    wire_type = b"\x80\x01\x00\x01\x01a\x22"  # struct "\0" { int32 a }
    T, end = decode_type(wire_type, 0, False, {})
    assert end == len(wire_type) and T.getID() == "\x00"
    V, end = decode_full(T, b"\x07\x00\x00\x00", 0, False, {})
    assert V.a == 7
    assert encode_full(V, False) == b"\x07\x00\x00\x00"


@BOTH
def test_union_array_element_without_selection(be):
    """Regression: a union[] element flagged present with selector 0xFF (no member) is valid, and
    pvxs reads it as a null element; it used to raise DecodeError."""
    T = Type([("u", ("aU", None, [("a", "i")]))])
    V, end = decode_full(T, b"\x02\x01\xff\x00", 0, be, {})
    assert end == 4
    assert V.u == [None, None]


@BOTH
def test_invalid_utf8_reencodes_byte_identically(be):
    """Regression: invalid UTF-8 decoded with surrogateescape but re-encoding was strict."""
    T = Type([("s", "s")])
    V, _ = decode_full(T, b"\x02\xff\xfe", 0, be, {})
    assert encode_full(V, be) == b"\x02\xff\xfe"
    wire_type = b"\x80\x01\xff\x00"
    T2, _ = decode_type(wire_type, 0, be, {})
    assert encode_type(T2, be) == wire_type


@BOTH
@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_bool_array_normalised(kind, be):
    """Regression: bool[] elements used to keep the raw byte, so a received 0x02 was re-sent as 0x02."""
    T = Type([("a", "a?")])
    V, _ = decode_full(T, kind(b"\x03\x02\x00\xff"), 0, be, {})
    assert V.a.tolist() == [True, False, True]
    assert V.a.view(np.uint8).tolist() == [1, 0, 1]
    assert encode_full(V, be) == b"\x03\x01\x00\x01"


def test_send_type_cache_distinguishes_fixed_arrays():
    """Regression: Type ==/hash ignored bound/fixed, so SendTypeCache sent a variable int32[] struct
    as ``fe key`` of an earlier fixed int32[2] struct and the peer decoded it with the wrong layout."""
    T_fixed, _ = decode_type(b"\x80\x00\x01\x01a\x3a\x02", 0, False, {})
    T_var, _ = decode_type(b"\x80\x00\x01\x01a\x2a", 0, False, {})
    tx = SendTypeCache()
    rx: dict = {}
    decode_type(encode_type(T_fixed, False, tx), 0, False, rx)
    got, _ = decode_type(encode_type(T_var, False, tx), 0, False, rx)
    assert encode_type(got, False) == b"\x80\x00\x01\x01a\x2a"


def _cache_chain(levels_per_entry: int, entries: int) -> bytes:
    """One struct type whose members define cache entries k = 1..entries, each nesting
    ``levels_per_entry`` structures around a reference to entry k-1: every entry is within
    MAX_DEPTH on its own, but the resulting type nests levels_per_entry * entries deep."""
    members = []
    for k in range(1, entries + 1):
        inner = b"\xfe" + (k - 1).to_bytes(2, "little") if k > 1 else b"\x22"
        inner = b"\x80\x00\x01\x01a" * levels_per_entry + inner
        name = f"m{k}".encode()
        members.append(bytes((len(name),)) + name + b"\xfd" + k.to_bytes(2, "little") + inner)
    return b"\x80\x00" + bytes((entries,)) + b"".join(members)


def test_cached_types_cannot_exceed_max_depth():
    """Regression: cached types (0xFE) were spliced in without counting their depth; this 3.4 KB
    message built a type nested 600 deep, on which hash() raised RecursionError."""
    buf = _cache_chain(15, 40)
    with pytest.raises(DecodeError):
        decode_type(buf, 0, False, {})


def _doubling_types(levels: int) -> bytes:
    """Cache entry k+1 is a struct of two references to entry k: 20 bytes per level, and the
    flattened type doubles at each level ("billion laughs")."""
    members = [b"\x02l0\xfd\x01\x00\x80\x00\x02\x01a\x22\x01b\x22"]
    for k in range(1, levels):
        ref = b"\xfe" + k.to_bytes(2, "little")
        name = f"l{k}".encode()
        members.append(
            bytes((len(name),))
            + name
            + b"\xfd"
            + (k + 1).to_bytes(2, "little")
            + b"\x80\x00\x02\x01a"
            + ref
            + b"\x01b"
            + ref
        )
    return b"\x80\x00" + bytes((levels,)) + b"".join(members)


def test_cached_type_references_cannot_amplify():
    """Regression (billion laughs): 0xFE references expand into the flattened layout of the
    enclosing type, so ~20 bytes per level doubled the field count: these 330 bytes built a
    half-million-field type, and every further 20 bytes doubled it again."""
    buf = _doubling_types(17)
    assert len(buf) < 400
    with pytest.raises(DecodeError):
        decode_type(buf, 0, False, {})


@BOTH
def test_any_array_of_cached_big_type_is_bounded(be):
    """4-byte ``01 fe k k`` any[] elements must not each allocate a MAX_FIELDS-slot Value:
    a decode may allocate only SLOTS_PER_BYTE slots per input byte (plus one big struct)."""
    import struct as _st

    from capva.pva.codec import MAX_FIELDS

    order = ">" if be else "<"
    nfields = MAX_FIELDS - 2
    # one cached struct of ~MAX_FIELDS empty sub-structures, defined once (key 1)
    members = b"".join(bytes([len(f"f{i}")]) + f"f{i}".encode() + b"\x80\x00\x00" for i in range(nfields))
    big = (
        b"\xfd" + _st.pack(order + "H", 1) + b"\x80\x00" + b"\xfe" + _st.pack(order + "I", nfields) + members
    )
    cache: dict = {}
    decode_type(big, 0, be, cache)
    n = 2000
    elem = b"\x01\xfe" + _st.pack(order + "H", 1)
    wire = b"\xfe" + _st.pack(order + "I", n) + elem * n
    T = Type([("a", "av")])
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError):
            decode_full(T, wire, 0, be, cache)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 * 1024
