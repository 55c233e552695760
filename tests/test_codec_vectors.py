"""Type and value serialization against the vectors quoted in pva-protocol.md §3 and §10.15
(pvxs ``test/testxcode.cpp``) and the captures' NT layouts.

Each vector is checked in both directions: our encoder produces the exact bytes, and the
decoder reads them back into an equal Value with exactly the transmitted changed mask."""

from __future__ import annotations

import numpy as np
import pytest

from capva import Type, Value
from capva.pva import DecodeError
from capva.pva.codec import (
    SendTypeCache,
    decode_full,
    decode_partial,
    decode_type,
    decode_typed_value,
    encode_full,
    encode_partial,
    encode_type,
    encode_typed_value,
    value_mask,
)

H = bytes.fromhex


def s(x: str) -> str:
    """hex of a PVA String"""
    return f"{len(x):02x}" + x.encode().hex()


ALARM = ("S", "alarm_t", [("severity", "i"), ("status", "i"), ("message", "s")])
TIME = ("S", "time_t", [("secondsPastEpoch", "l"), ("nanoseconds", "i"), ("userTag", "i")])


def ntscalar(code: str) -> Type:
    tid = "epics:nt/NTScalarArray:1.0" if code[0] == "a" else "epics:nt/NTScalar:1.0"
    return Type([("value", code), ("alarm", ALARM), ("timeStamp", TIME)], id=tid)


NTSA_HEX = (
    "80"
    + s("epics:nt/NTScalarArray:1.0")
    + "03"
    + s("value")
    + "4b"
    + s("alarm")
    + "80"
    + s("alarm_t")
    + "03"
    + s("severity")
    + "22"
    + s("status")
    + "22"
    + s("message")
    + "60"
    + s("timeStamp")
    + "80"
    + s("time_t")
    + "03"
    + s("secondsPastEpoch")
    + "23"
    + s("nanoseconds")
    + "22"
    + s("userTag")
    + "22"
)


@pytest.mark.parametrize("be", [False, True])
def test_ntscalararray_type(be):
    T = ntscalar("ad")
    assert encode_type(T, be).hex() == NTSA_HEX
    T2, end = decode_type(H(NTSA_HEX), 0, be, {})
    assert T2 == T and end == len(NTSA_HEX) // 2
    assert T2.getID() == "epics:nt/NTScalarArray:1.0"


def test_partial_uint32_be():
    T = ntscalar("I")
    V = Value(T)
    V.unmark()
    V.value = 0xDEADBEEF
    assert encode_partial(V, True).hex() == "0102deadbeef"
    W = Value(T)
    W.unmark()
    W["alarm.message"] = "hello world"
    W["timeStamp.nanoseconds"] = 0xAB
    wire = "022001" + s("hello world") + "000000ab"
    assert encode_partial(W, True).hex() == wire
    X, end = decode_partial(T, H(wire), 0, True, {})
    assert X.changedSet() == {"alarm.message", "timeStamp.nanoseconds"}
    assert X["alarm.message"] == "hello world" and X["timeStamp.nanoseconds"] == 0xAB
    assert end == len(wire) // 2


def test_sub_structure_renumbering():
    T = ntscalar("I")
    V = Value(T)
    V.unmark()
    V["timeStamp.secondsPastEpoch"] = 0x1122334455667788
    assert encode_partial(V, True).hex() == "0180" + "1122334455667788"
    assert encode_partial(V.timeStamp, True).hex() == "0102" + "1122334455667788"


SIMPLE = Type(
    [
        ("value", "aL"),
        ("timeStamp", ("S", "time_t", [("secondsPastEpoch", "l"), ("nanoseconds", "i")])),
        ("arbitrary", ("S", None, [("sarr", ("aS", None, [("value", "I")]))])),
        ("any", "v"),
        ("anya", "av"),
        ("choice", ("U", None, [("a", "f"), ("b", "s")])),
        ("achoice", ("aU", None, [("x", "s"), ("y", "s")])),
    ]
)


@pytest.mark.parametrize(
    "field, value, wire",
    [
        (
            "value",
            [1, 0xDEADBEEF, 2],
            "0102" + "03" + "0000000000000001" + "00000000deadbeef" + "0000000000000002",
        ),
        (
            "arbitrary.sarr",
            [{"value": 0xDEADBEEF}, {"value": 0x1BADFACE}, None],
            "014003" + "01deadbeef" + "011badface" + "00",
        ),
        ("choice", ("b", "test"), "02000201" + s("test")),
        (
            "achoice",
            [("x", "theX"), ("y", "theY"), None],
            "020004" + "03" + "0100" + s("theX") + "0101" + s("theY") + "00",
        ),
        ("any", ("I", 0x600DF00D), "018026600df00d"),
        ("any", None, "0180ff"),
        (
            "anya",
            [("I", 0x7B), Value(Type([("q", "s")]), {"q": "theq"}), None],
            "020001" + "03" + "01260000007b" + "01" + "8000" + "01" + s("q") + "60" + s("theq") + "00",
        ),
    ],
)
def test_testxcode_union_any_array_vectors(field, value, wire):
    V = Value(SIMPLE)
    V.unmark()
    V[field] = value
    assert encode_partial(V, True).hex() == wire
    W, end = decode_partial(SIMPLE, H(wire), 0, True, {})
    assert end == len(wire) // 2
    assert value_mask(W) == value_mask(V)
    assert encode_partial(W, True).hex() == wire


def test_anya_reads_back_values():
    V = Value(SIMPLE)
    V.anya = [("I", 0x7B), "x"]
    W, _ = decode_full(SIMPLE, encode_full(V, False), 0, False, {})
    assert W.anya == [0x7B, "x"]


@pytest.mark.parametrize(
    "code, value, wire",
    [
        ("aI", [], "010200"),
        ("aI", [0x12345678], "01020112345678"),
        ("aH", [1, 0xFFFF], "0102020001ffff"),
        ("ad", [1.0], "0102013ff0000000000000"),
        ("as", ["hello", "world"], "010202" + s("hello") + s("world")),
    ],
)
def test_array_partial_vectors(code, value, wire):
    T = Type([("value", code)])
    V = Value(T)
    V.unmark()
    V.value = value
    assert encode_partial(V, True).hex() == wire
    W, _ = decode_partial(T, H(wire), 0, True, {})
    got = W.value
    if code == "as":
        assert got == value
    elif not value:
        assert got is None
    else:
        assert list(got) == value and got.dtype == np.dtype({"aI": "u4", "aH": "u2", "ad": "f8"}[code])


def test_redundant_mask_is_kept_and_reencoded():
    """QSRV1/pvAccessCPP send bit 0 plus every child bit (capture C: ``02 ff 03``)."""
    T = ntscalar("d")
    V = Value(T, {"value": 2.5, "alarm.message": "m"})
    wire = encode_partial(V, False, mask=0x3FF)
    assert wire[:3].hex() == "02ff03"
    W, end = decode_partial(T, wire, 0, False, {})
    assert value_mask(W) == 0x3FF and end == len(wire)
    assert W.value == 2.5 and W["alarm.message"] == "m"
    assert encode_partial(W, False, mask=0x3FF) == wire
    assert len(wire) == 3 + len(encode_full(V, False))


def test_live_pvaccesscpp_any_union():
    """Capture C: struct {any any; union{int32 a; string b} u}, mask {0,1,2}."""
    T = Type([("any", "v"), ("u", ("U", None, [("a", "i"), ("b", "s")]))])
    wire = H("0107" + "222a000000" + "01026869")
    V, end = decode_partial(T, wire, 0, False, {})
    assert (V.any, V.u, end) == (42, "hi", len(wire))
    assert encode_partial(V, False, mask=0b111) == wire


def test_type_cache_vectors():
    cache: dict = {}
    req = H("fd0200800001" + s("field") + "fd0300800000")
    T, end = decode_type(req, 0, False, cache)
    assert T == Type([("field", ("S", None, []))]) and end == len(req)
    assert set(cache) == {2, 3}
    T2, end = decode_type(H("fe0200"), 0, False, cache)
    assert T2 == T and end == 3
    sc = SendTypeCache(first=2)
    assert encode_type(T, False, sc) == req
    assert encode_type(T, False, sc).hex() == "fe0200"
    with pytest.raises(DecodeError):
        decode_type(H("fe0900"), 0, False, cache)
    spec_be = H(
        "fd0001800b"
        + b"timeStamp_t".hex()
        + "03"
        + s("secondsPastEpoch")
        + "23"
        + s("nanoSeconds")
        + "22"
        + s("userTag")
        + "22"
    )
    c2: dict = {}
    t3, _ = decode_type(spec_be, 0, True, c2)
    assert c2[1] is t3 and t3.getID() == "timeStamp_t"


def test_ntnrui_rpc_argument_vector():
    T = Type(
        [
            ("scheme", "s"),
            ("authority", "s"),
            ("path", "s"),
            ("query", ("S", None, [("a", "d"), ("b", "d")])),
        ],
        id="epics:nt/NTURI:1.0",
    )
    V = Value(T, {"path": "TST:rpc", "query.a": 1.0, "query.b": 2.0})
    wire = (
        "80"
        + s("epics:nt/NTURI:1.0")
        + "04"
        + s("scheme")
        + "60"
        + s("authority")
        + "60"
        + s("path")
        + "60"
        + s("query")
        + "800002"
        + s("a")
        + "43"
        + s("b")
        + "43"
        + "0000"
        + s("TST:rpc")
        + "000000000000f03f"
        + "0000000000000040"
    )
    assert encode_typed_value(V, False).hex() == wire
    W, end = decode_typed_value(H(wire), 0, False, {})
    assert W == V and end == len(wire) // 2
    assert encode_typed_value(None, False) == b"\xff"
    assert decode_typed_value(b"\xff", 0, False, {}) == (None, 1)


def test_bounded_and_fixed_forms_decode():
    """pvData-only forms: bounded string 0x83, bounded array 0x10|x, fixed array 0x18|x."""
    cache: dict = {}
    T, _ = decode_type(H("800003" + s("b") + "8310" + s("ba") + "5304" + s("fa") + "3a02"), 0, False, cache)
    assert T["b"] == "s" and T["ba"] == "ad" and T["fa"] == "ai"
    val = H(s("hi") + "01" + "000000000000f03f" + "0100000002000000")
    V, end = decode_full(T, val, 0, False, cache)
    assert V.b == "hi" and list(V.ba) == [1.0] and list(V.fa) == [1, 2] and end == len(val)
    assert encode_full(V, False) == val
    assert encode_type(T, False).hex() == "800003" + s("b") + "8310" + s("ba") + "5304" + s("fa") + "3a02"


def test_nul_in_type_id_is_data_not_a_crash():
    """Regression: a type id from the wire once reached compile() as a file name."""
    wire = bytes.fromhex("8002610001017843") + bytes(8)
    V, end = decode_typed_value(wire, 0, False, {})
    assert V.getID() == "a\x00" and V.x == 0.0 and end == len(wire)
