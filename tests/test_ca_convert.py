"""RSRV's conversions (§3.4) and element-count rules (§3.6).

The number formatting and the string parsers are compared with libCom itself
(``cvtDoubleToString``, ``cvtFloatToString``, ``epicsParseDouble`` … read with ctypes from
the libCom.so of epicscorelibs, the library RSRV links), over hypothesis-generated input.
The observations of ca-protocol.md §3.4/§3.6 are checked one by one.
"""

from __future__ import annotations

import ctypes
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from capva.ca import convert as cv
from capva.ca import dbr
from capva.ca.convert import CHAR, DOUBLE, ENUM, FLOAT, LONG, SHORT, STRING, ConversionError
from capva.ca.dbr import Metadata
from capva.ca.status import ECA_BADCOUNT, ECA_BADTYPE, ECA_GETFAIL, ECA_NORDACCESS, ECA_NORMAL, ECA_PUTFAIL

# -- libCom through ctypes ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def libcom() -> ctypes.CDLL:
    try:
        import epicscorelibs.path
    except ImportError:  # pragma: no cover
        pytest.fail(
            "epicscorelibs (installed with the p4p test extra) is required for the libCom/libca cross-checks"
        )
    path = Path(epicscorelibs.path.lib_path) / "libCom.so"
    if not path.exists():  # pragma: no cover
        pytest.fail("libCom.so not found in epicscorelibs")
    lib = ctypes.CDLL(str(path))
    lib.cvtDoubleToString.argtypes = [ctypes.c_double, ctypes.c_char_p, ctypes.c_ushort]
    lib.cvtFloatToString.argtypes = [ctypes.c_float, ctypes.c_char_p, ctypes.c_ushort]
    return lib


def _c_format(lib: ctypes.CDLL, fn: str, value: float, precision: int) -> str:
    buf = ctypes.create_string_buffer(128)
    getattr(lib, fn)(value, buf, precision)
    return buf.value.decode()


def _c_parse(lib: ctypes.CDLL, kind: str, text: str):
    ctype, name, base = {
        "d": (ctypes.c_double, "epicsParseDouble", None),
        "f": (ctypes.c_float, "epicsParseFloat", None),
        "s": (ctypes.c_int16, "epicsParseInt16", 10),
        "l": (ctypes.c_int32, "epicsParseInt32", 10),
        "c": (ctypes.c_uint8, "epicsParseUInt8", 10),
        "e": (ctypes.c_uint16, "epicsParseUInt16", 10),
    }[kind]
    fn = getattr(lib, name)
    out, end = ctype(), ctypes.c_char_p()
    raw = text.encode()
    if base is None:
        status = fn(raw, ctypes.byref(out), ctypes.byref(end))
    else:
        status = fn(raw, ctypes.byref(out), base, ctypes.byref(end))
    return None if status else out.value


precisions = st.one_of(st.integers(0, 20), st.sampled_from([0xFFFF, 0xFFF0, 100]))


@settings(max_examples=3000)
@given(st.floats(), precisions)
@example(65.0, 3)
@example(-0.3, 0)
@example(1e16, 2)
@example(1.0000001e16, 2)
@example(-0.0, 1)
@example(9999999.99999, 3)
@example(10000000.5, 6)
def test_format_double_equals_libcom(libcom, value: float, precision: int) -> None:
    assert cv.format_double(value, precision) == _c_format(libcom, "cvtDoubleToString", value, precision)


@settings(max_examples=3000)
@given(st.floats(width=32), precisions)
@example(99999992.0, 0)
@example(1e8, 3)
@example(-0.04, 0)
def test_format_float_equals_libcom(libcom, value: float, precision: int) -> None:
    assert cv.format_float(value, precision) == _c_format(libcom, "cvtFloatToString", value, precision)


_NUMBERISH = st.text(
    st.sampled_from(list("0123456789+-.eExXpPaAfFiInNtTyY()_ \t\v")), min_size=1, max_size=14
)
_texts = st.one_of(
    _NUMBERISH,
    st.integers(-(2**70), 2**70).map(str),
    st.floats().map(repr),
    st.tuples(
        st.floats(allow_nan=False), st.sampled_from(["", "abc", " ", "e", "e-330", "e400", "e-45", "e39"])
    ).map(lambda t: repr(t[0]) + t[1]),
)


@settings(max_examples=1500)
@given(_texts)
@example("0x10")
@example("0x1.8p1")
@example("1e-310")
@example("0x1p-1070")
@example("4.9e-324")
@example("nan(abc)")
@example("infinity")
@example("-1")
@example("-255")
@example("-256")
@example("99999999999")
@example("18446744073709551616")
def test_parsers_equal_libcom(libcom, text: str) -> None:
    ours = {
        "d": lambda t: cv.parse_double(t),
        "f": lambda t: cv.parse_float(t),
        "s": lambda t: cv.parse_integer(t, SHORT),
        "l": lambda t: cv.parse_integer(t, LONG),
        "c": lambda t: cv.parse_integer(t, CHAR),
        "e": lambda t: cv.parse_integer(t, ENUM),
    }
    for kind, parse in ours.items():
        try:
            got = parse(text)
        except ConversionError:
            got = None
        theirs = _c_parse(libcom, kind, text)
        if isinstance(theirs, float) and math.isnan(theirs):
            assert got is not None and math.isnan(got), (kind, text)
        else:
            assert got == theirs, (kind, text)


# -- the observations of §3.4 ---------------------------------------------------------------------------


def test_numeric_to_string() -> None:
    assert cv.convert([65.0], DOUBLE, STRING, precision=3) == ["65.000"]
    assert cv.convert([math.nan], DOUBLE, STRING, precision=3) == ["nan"]
    assert cv.convert(np.array([7, -3], ">i4"), LONG, STRING) == ["7", "-3"]
    assert cv.convert(np.array([97], "u1"), CHAR, STRING) == ["97"]  # CHAR arrays are not strings
    assert cv.convert([1.5], FLOAT, STRING, precision=2) == ["1.50"]
    assert cv.convert([3.25], DOUBLE, STRING) == ["3.250000"]  # RSRV's default precision 6


def test_enum_to_string() -> None:
    bo = ("Off", "On")
    assert cv.convert([1, 0], ENUM, STRING, enum_strings=bo) == ["On", "Off"]
    assert cv.convert([5], ENUM, STRING, enum_strings=bo) == ["Illegal_Value"]
    mbbo = ("a", "b", "")  # an unused mbbo slot is an empty string
    assert cv.convert([2], ENUM, STRING, enum_strings=mbbo) == [""]


def test_string_to_numbers() -> None:
    assert cv.convert(["0x10"], STRING, DOUBLE).tolist() == [16.0]
    assert cv.convert([" 3.9 "], STRING, LONG).tolist() == [3]
    assert cv.convert(["12abc"], STRING, LONG).tolist() == [12]
    assert cv.convert([""], STRING, DOUBLE).tolist() == [0.0]
    assert cv.convert([""], STRING, SHORT).tolist() == [0]
    assert cv.convert(["-1"], STRING, CHAR).tolist() == [255]
    assert cv.convert(["7"], STRING, ENUM).tolist() == [7]  # a read: plain number
    for text, native in (("1e400", DOUBLE), ("99999999999", LONG), ("hello", DOUBLE), ("70000", SHORT)):
        with pytest.raises(ConversionError) as info:
            cv.convert([text], STRING, native, write=True)
        assert info.value.status == ECA_PUTFAIL
        with pytest.raises(ConversionError) as info:
            cv.convert([text], STRING, native)
        assert info.value.status == ECA_GETFAIL


def test_string_write_to_enum() -> None:
    bo = ("Off", "On")
    assert cv.convert(["Off"], STRING, ENUM, enum_strings=bo, write=True).tolist() == [0]
    assert cv.convert(["1"], STRING, ENUM, enum_strings=bo, write=True).tolist() == [1]
    assert cv.convert(["1 "], STRING, ENUM, enum_strings=bo, write=True).tolist() == [1]
    for bad, states in (("7", bo), ("3", ("a", "b", "c")), ("1x", bo), ("", bo), ("off", bo)):
        with pytest.raises(ConversionError) as info:
            cv.convert([bad], STRING, ENUM, enum_strings=states, write=True)
        assert info.value.status == ECA_PUTFAIL
    # a numeric write of an out-of-range index is accepted (bo/mbbo do)
    assert cv.convert([7], LONG, ENUM, write=True).tolist() == [7]


def test_string_write_to_char_array_fails() -> None:
    with pytest.raises(ConversionError):
        cv.convert(["hello"], STRING, CHAR, write=True)


def test_string_to_string_is_cut_at_nul() -> None:
    assert cv.convert(["ab\0cd", b"xy\0z"], STRING, STRING) == ["ab", "xy"]


@settings(max_examples=300)
@given(
    st.sampled_from(range(7)),
    st.sampled_from(range(7)),
    st.lists(st.one_of(st.floats(), st.integers(-(2**40), 2**40), st.text(max_size=12)), max_size=4),
    st.booleans(),
)
def test_convert_only_raises_conversion_error(frm: int, to: int, items: list, write: bool) -> None:
    if frm == STRING:
        values: object = [str(v) for v in items]
    else:
        nums = [v for v in items if not isinstance(v, str)]
        values = dbr.cast_array(np.array(nums, dtype=float) if nums else np.zeros(0), frm)
    try:
        out = cv.convert(values, frm, to, write=write, enum_strings=("a", "b"))
    except ConversionError as exc:
        assert exc.status == (ECA_PUTFAIL if write else ECA_GETFAIL)
        return
    assert len(out) == len(values)  # type: ignore[arg-type]
    dbr.encode(to, out)  # whatever comes out encodes


# -- element counts (§3.6) -----------------------------------------------------------------------------------


def test_counts() -> None:
    assert cv.reply_count(0, 7) == 7 and cv.reply_count(3, 7) == 3 and cv.reply_count(9, 7) == 9
    assert cv.write_count(10, 5) == 5 and cv.write_count(0, 5) == 0
    assert cv.fit_count(np.array([44]), 3, LONG).tolist() == [44, 0, 0]
    assert cv.fit_count(np.array([1, 2, 3]), 2, LONG).tolist() == [1, 2]
    assert cv.fit_count(["a"], 2, STRING) == ["a", ""]
    a = np.array([1.0])
    assert cv.fit_count(a, 1, DOUBLE) is a
    assert cv.check_request_count(0, 13) == ECA_NORMAL
    assert cv.check_request_count(0, 11) == ECA_NORMAL  # RSRV, whatever the minor
    assert cv.check_request_count(0, 11, strict_old_clients=True) == ECA_BADCOUNT
    assert cv.check_request_count(5, 11, strict_old_clients=True) == ECA_NORMAL


def test_read_payload_counts() -> None:
    wave = np.arange(1.0, 11.0)
    payload, n, st_ = cv.read_payload(dbr.DOUBLE, 0, DOUBLE, wave)  # count 0: current length
    assert (n, st_, len(payload)) == (10, ECA_NORMAL, 80)
    payload, n, _ = cv.read_payload(dbr.DOUBLE, 12, DOUBLE, wave)  # beyond: zero-filled
    assert n == 12 and dbr.decode(dbr.DOUBLE, payload, 12)[0].tolist()[-3:] == [10.0, 0.0, 0.0]
    payload, n, _ = cv.read_payload(dbr.DOUBLE, 2, DOUBLE, [4.0])  # count 2 on a scalar
    assert n == 2 and dbr.decode(dbr.DOUBLE, payload, 2)[0].tolist() == [4.0, 0.0]
    payload, n, _ = cv.read_payload(dbr.DOUBLE, 0, DOUBLE, [])  # empty array, count 0
    assert (n, payload) == (0, b"")
    payload, n, _ = cv.read_payload(dbr.TIME_SHORT, 0, SHORT, [])
    assert n == 0 and len(payload) == 14  # metadata only; the message pads to 16
    payload, n, _ = cv.read_payload(dbr.LONG, 5, LONG, [])  # catvs test_get_all: zeros
    assert n == 5 and payload == bytes(20)


def test_read_payload_failures() -> None:
    payload, n, status = cv.read_payload(dbr.TIME_DOUBLE, 1, STRING, ["hello"])
    assert (status, payload) == (ECA_GETFAIL, bytes(24))  # full size, zeroed
    payload, n, status = cv.read_payload(dbr.CTRL_DOUBLE, 1, DOUBLE, [1.0], readable=False)
    assert (status, payload) == (ECA_NORDACCESS, bytes(88))
    for t in (dbr.PUT_ACKT, dbr.PUT_ACKS):
        payload, n, status = cv.read_payload(t, 1, DOUBLE, [1.0])
        assert (status, payload) == (ECA_GETFAIL, bytes(2))
    with pytest.raises(ValueError):
        cv.read_payload(39, 1, DOUBLE, [1.0])


def test_read_payload_special_types() -> None:
    payload, n, status = cv.read_payload(dbr.CLASS_NAME, 0, DOUBLE, [1.0], class_name="ao")
    assert (n, status) == (1, ECA_NORMAL) and dbr.decode(dbr.CLASS_NAME, payload, 1)[0] == ["ao"]
    meta = Metadata(status=4, severity=1, ackt=1, acks=2)
    payload, n, _ = cv.read_payload(dbr.STSACK_STRING, 0, DOUBLE, [65.0], meta, precision=1)
    values, m = dbr.decode(dbr.STSACK_STRING, payload, 1)
    assert values == ["65.0"] and m is not None and (m.status, m.severity, m.ackt, m.acks) == (4, 1, 1, 2)


def test_read_payload_converts_types_and_metadata() -> None:
    meta = Metadata(
        units="mm",
        precision=3,
        upper_disp_limit=100.0,
        lower_disp_limit=-100.0,
        enum_strings=("should", "vanish"),
    )
    payload, _, _ = cv.read_payload(dbr.CTRL_ENUM, 1, DOUBLE, [2.7], meta)
    values, m = dbr.decode(dbr.CTRL_ENUM, payload, 1)
    assert values.tolist() == [2] and m is not None and m.enum_strings == ()  # no states on a double
    payload, _, _ = cv.read_payload(dbr.GR_CHAR, 1, DOUBLE, [2.7], meta)
    assert payload[13] == 0x9C  # -100 as u8
    enum_meta = Metadata(status=1, severity=2, enum_strings=("Off", "On"), upper_disp_limit=5)
    payload, _, _ = cv.read_payload(dbr.GR_DOUBLE, 1, ENUM, [1], enum_meta)
    values, m = dbr.decode(dbr.GR_DOUBLE, payload, 1)
    assert values.tolist() == [1.0] and m == Metadata(status=1, severity=2)  # zero limits
    payload, _, _ = cv.read_payload(dbr.TIME_STRING, 1, ENUM, [1], enum_meta)
    assert dbr.decode(dbr.TIME_STRING, payload, 1)[0] == ["On"]
    payload, _, _ = cv.read_payload(dbr.CTRL_ENUM, 1, ENUM, [1], enum_meta)
    assert dbr.decode(dbr.CTRL_ENUM, payload, 1)[1].enum_strings == ("Off", "On")  # type: ignore[union-attr]
    assert cv.read_metadata(dbr.TIME_DOUBLE, DOUBLE, None) == Metadata()


def test_write_values() -> None:
    data = dbr.encode(dbr.DOUBLE, [1.0, 2.0, 3.0])
    values, status = cv.write_values(dbr.DOUBLE, data, 3, LONG, max_count=2)
    assert status == ECA_NORMAL and values is not None and values.tolist() == [1, 2]
    values, status = cv.write_values(dbr.STRING, b"abc\0\0\0\0\0", 1, LONG, max_count=1)
    assert (values, status) == (None, ECA_PUTFAIL)
    values, status = cv.write_values(
        dbr.STRING, b"Off\0\0\0\0\0", 1, ENUM, max_count=1, enum_strings=("Off",)
    )
    assert status == ECA_NORMAL and values is not None and values.tolist() == [0]
    assert cv.write_values(dbr.TIME_DOUBLE, bytes(24), 1, DOUBLE, max_count=1) == (None, ECA_BADTYPE)
    values, status = cv.write_values(dbr.LONG, b"", 0, LONG, max_count=5)  # N = 0 empties
    assert status == ECA_NORMAL and values is not None and len(values) == 0


def test_long_strings() -> None:
    chars = cv.long_string_to_chars("hello")
    assert chars.tolist() == list(b"hello\0")  # count-0 read: strlen+1 elements
    assert len(cv.long_string_to_chars("x" * 100, 41)) == 41
    assert cv.chars_to_long_string(list(b"longer hello\0")) == "longer hello"
    assert cv.chars_to_long_string(np.frombuffer(b"ab", np.uint8)) == "ab"


def test_format_value() -> None:
    assert cv.format_value("abc", STRING) == "abc"
    assert cv.format_value(np.int16(-5), SHORT) == "-5"


def test_read_payload_as_buffer_equals_bytes() -> None:
    """The server's one-pass path (numbers read as a DOUBLE type) gives the same payload."""
    values = np.linspace(-5, 5, 9000)
    meta = dbr.Metadata(seconds=12, units="V", precision=3)
    for t in (dbr.DOUBLE, dbr.TIME_DOUBLE, dbr.CTRL_DOUBLE):
        for count in (0, 10, 9000, 12000):
            a = cv.read_payload(t, count, dbr.DOUBLE, values, meta)
            b = cv.read_payload(t, count, dbr.DOUBLE, values, meta, as_buffer=True)
            assert a[1:] == b[1:]
            assert bytes(b[0])[: len(a[0])] == a[0] and not any(bytes(b[0])[len(a[0]) :])
