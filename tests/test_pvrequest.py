"""pvRequest: text parsing differential against p4p's ``Context.makeRequest``, wire bytes of
the requests captured from real clients (pva-protocol.md §9.2), field masks (§9.3) and
option readers that accept both string and typed values."""

from __future__ import annotations

import pytest
from p4p.client.raw import Context as P4PContext

from capva.nt import NTEnum, NTScalar
from capva.pva.codec import decode_typed_value, encode_typed_value
from capva.pva.pvrequest import (
    RequestError,
    build_request,
    option_bool,
    option_int,
    parse_request,
    request_mask,
    request_options,
)

TEXTS = [
    "",
    "field()",
    "field(value)",
    "field(value,alarm)",
    "value",
    "field(value.index)",
    "record[queueSize=4,pipeline=true]field()",
    "field(value)record[b=1,a=2]",
    "field(a)field(b)",
    "record[x=1]record[x=2]",
    "field(a.b,a.c)",
    "field(timeStamp,value)",
    " field( value , alarm )",
    "value alarm",
    "record[process=passive,block=false]",
]


@pytest.mark.parametrize("text", TEXTS)
def test_parse_matches_p4p(text):
    ours = parse_request(text)
    theirs = P4PContext.makeRequest(text)
    assert ours.type().aspy() == theirs.type().aspy()
    assert ours.todict() == theirs.todict()


@pytest.mark.parametrize("text", ["field(", "record[a]", "foo(", "!!", "record[a=]", "field(a", "record[a=1"])
def test_parse_errors(text):
    with pytest.raises(RequestError):
        parse_request(text)
    with pytest.raises(RuntimeError):
        P4PContext.makeRequest(text)


def test_default_request_bytes():
    """p4p/pvxs default: ``80 00 01 05 "field" 80 00 00``."""
    assert encode_typed_value(parse_request(None), False).hex() == "800001056669656c64800000"


def test_typed_options_bytes_and_roundtrip():
    """Capture E: typed pipeline/queueSize options, built programmatically."""
    R = build_request(None, {"pipeline": True, "queueSize": 2})
    wire = encode_typed_value(R, False)
    V, end = decode_typed_value(wire, 0, False, {})
    assert end == len(wire)
    opts = request_options(V)
    assert opts == {"pipeline": True, "queueSize": 2}
    assert option_bool(opts, "pipeline", False) is True and option_int(opts, "queueSize", 4) == 2


def test_string_options_from_pvaccesscpp_capture():
    """pvxs testDeserialize3: record._options.queueSize="4", pipeline="true", via the type cache."""
    s = lambda x: f"{len(x):02x}" + x.encode().hex()  # noqa: E731
    wire = bytes.fromhex(
        "fd020080000106"
        + b"record".hex()
        + "fd0300800001"
        + s("_options")
        + "fd0400800002"
        + s("queueSize")
        + "60"
        + s("pipeline")
        + "60"
        + "0134"
        + s("true")
    )
    V, end = decode_typed_value(wire, 0, False, {})
    assert end == len(wire)
    opts = request_options(V)
    assert opts == {"queueSize": "4", "pipeline": "true"}
    assert option_int(opts, "queueSize", 0) == 4 and option_bool(opts, "pipeline", False) is True


@pytest.mark.parametrize(
    "raw, expect",
    [("true", True), ("false", False), ("1", True), ("0", False), (True, True), (0, False), ("junk", None)],
)
def test_option_bool(raw, expect):
    assert option_bool({"k": raw}, "k", None) is expect  # type: ignore[arg-type]


@pytest.mark.parametrize("raw, expect", [("4", 4), (" 10 ", 10), (7, 7), ("0x10", 16), ("x", -1), (True, -1)])
def test_option_int(raw, expect):
    assert option_int({"k": raw}, "k", -1) == expect


def bits(m: int) -> list[int]:
    return [i for i in range(m.bit_length()) if m >> i & 1]


def test_mask_rules():
    T = NTScalar("d").type
    assert bits(request_mask(T, None)) == list(range(10))
    assert bits(request_mask(T, parse_request(""))) == list(range(10))
    assert bits(request_mask(T, parse_request("field(value)"))) == [0, 1]
    assert bits(request_mask(T, parse_request("field(alarm)"))) == [0, 2, 3, 4, 5]
    assert bits(request_mask(T, parse_request("field(timeStamp.nanoseconds,value,nope)"))) == [0, 1, 8]
    with pytest.raises(RequestError):
        request_mask(T, parse_request("field(nope)"))
    E = NTEnum().type
    assert bits(request_mask(E, parse_request("field(value.index)"))) == [0, 2]
