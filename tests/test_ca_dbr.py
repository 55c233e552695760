"""DBR layouts and codecs for every type id 0..38.

* the layout tables equal libca's own ``dbr_size``, ``dbr_value_size``, ``dbr_value_offset``
  and ``dbr_text`` (read with ctypes from the libca.so that epicscorelibs installs);
* encode/decode round trips with hypothesis for every type id, scalars and arrays, values
  and metadata;
* bytes equal caproto's for representative types (caproto is a second, independent
  implementation; its CTRL_STRING layout is the documented divergence, so it is skipped);
* the string, units and enum-string rules, RSRV's numeric casts, and the timestamp helpers.
"""

from __future__ import annotations

import ctypes
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from capva.ca import CADecodeError, dbr
from capva.ca import commands as C
from capva.ca.dbr import DBR, Family, Metadata

# -- libca's own tables ---------------------------------------------------------------------------------


def _libca() -> ctypes.CDLL:
    try:
        import epicscorelibs.path
    except ImportError:  # pragma: no cover - the test extras install it
        pytest.fail(
            "epicscorelibs (installed with the p4p test extra) is required for the libCom/libca cross-checks"
        )
    lib = Path(epicscorelibs.path.lib_path) / "libca.so"
    if not lib.exists():  # pragma: no cover - non-Linux
        pytest.fail("libca.so not found in epicscorelibs")
    return ctypes.CDLL(str(lib))


@pytest.mark.parametrize(
    "table,attr",
    [("dbr_size", "size"), ("dbr_value_size", "value_size"), ("dbr_value_offset", "value_offset")],
)
def test_layout_tables_equal_libca(table: str, attr: str) -> None:
    lib = _libca()
    theirs = list((ctypes.c_ushort * 39).in_dll(lib, table))
    assert [getattr(info, attr) for info in DBR] == theirs


def test_type_names_equal_libca() -> None:
    lib = _libca()
    text = (ctypes.c_char_p * 39).in_dll(lib, "dbr_text")
    assert [t.decode() for t in text] == [info.name for info in DBR]


def test_family_and_native_tables() -> None:
    for t in range(35):
        assert dbr.native_type(t) == t % 7
        assert dbr.family_of(t) == Family(t // 7)
        assert dbr.promote(t % 7, t // 7) == t
    assert [dbr.native_type(t) for t in (35, 36, 37, 38)] == [dbr.ENUM, dbr.ENUM, dbr.STRING, dbr.STRING]
    assert all(dbr.family_of(t) is Family.SPECIAL for t in (35, 36, 37, 38))
    assert dbr.ChannelType.INT is dbr.ChannelType.SHORT and dbr.ChannelType(20).name == "TIME_DOUBLE"
    with pytest.raises(ValueError):
        dbr.promote(7, Family.TIME)
    with pytest.raises(ValueError):
        dbr.promote(dbr.DOUBLE, Family.SPECIAL)
    assert dbr.is_valid_type(38) and not dbr.is_valid_type(39) and not dbr.is_valid_type(-1)
    assert "TIME_DOUBLE" in repr(DBR[20])


@pytest.mark.parametrize("type_id", range(39))
def test_payload_sizes(type_id: int) -> None:
    info = DBR[type_id]
    for n in (0, 1, 2, 7):
        assert dbr.dbr_size_n(type_id, n) == info.value_offset + n * info.value_size
        assert dbr.payload_size(type_id, n) % 8 == 0
        assert len(dbr.encode(type_id, dbr.zeros(info.native, n), count=n)) == dbr.dbr_size_n(type_id, n)
    # count 0: metadata only (0 bytes for plain types, 14 -> 16 for TIME_SHORT)
    assert dbr.payload_size(dbr.TIME_SHORT, 0) == 16 and dbr.payload_size(dbr.DOUBLE, 0) == 0


# -- hypothesis strategies --------------------------------------------------------------------------------

_TEXT = st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))


def _text(max_bytes: int) -> st.SearchStrategy[str]:
    return st.text(_TEXT, max_size=max_bytes).filter(lambda s: len(s.encode()) <= max_bytes)


_INT_LIMITS = {
    dbr.SHORT: st.integers(-0x8000, 0x7FFF),
    dbr.ENUM: st.integers(0, 0xFFFF),
    dbr.CHAR: st.integers(0, 0xFF),
    dbr.LONG: st.integers(-0x80000000, 0x7FFFFFFF),
}
_LIMIT = {
    **_INT_LIMITS,
    dbr.FLOAT: st.floats(width=32, allow_nan=False, allow_subnormal=False),
    dbr.DOUBLE: st.floats(allow_nan=False),
}


def values_strategy(native: int, max_n: int = 6) -> st.SearchStrategy:
    if native == dbr.STRING:
        return st.lists(_text(39), max_size=max_n)
    dtype = dbr.NATIVE_DTYPES[native].newbyteorder("=")
    return hnp.arrays(dtype, st.integers(0, max_n))


def meta_strategy(info: dbr.DBRInfo) -> st.SearchStrategy[Metadata | None]:
    if info.meta_struct is None:
        return st.none()
    fields: dict[str, st.SearchStrategy] = {}
    signed16 = st.integers(-0x8000, 0x7FFF)
    for name in info.meta_fields:
        if name in ("status", "severity"):
            fields[name] = st.integers(0, 0xFFFF) if info.family is Family.SPECIAL else signed16
        elif name in ("ackt", "acks"):
            fields[name] = st.integers(0, 0xFFFF)
        elif name in ("seconds", "nanoseconds"):
            fields[name] = st.integers(0, 0xFFFFFFFF)
        elif name == "precision":
            fields[name] = signed16
        elif name == "units":
            fields[name] = _text(7)
        elif name == "enum_strings":
            fields[name] = st.lists(_text(25), max_size=16).map(tuple)
        elif name == "no_str":
            continue
        else:
            fields[name] = _LIMIT[info.native]
    return st.builds(Metadata, **fields)


def _same_values(a, b) -> bool:
    if isinstance(a, list):
        return a == b
    return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


@pytest.mark.parametrize("type_id", range(39), ids=lambda t: DBR[t].name)
@settings(max_examples=60, deadline=None)
@given(st.data())
def test_round_trip_every_type(type_id: int, data: st.DataObject) -> None:
    info = DBR[type_id]
    values = data.draw(values_strategy(info.native))
    meta = data.draw(meta_strategy(info))
    n = len(values)
    payload = dbr.encode(type_id, values, meta)
    assert len(payload) == dbr.dbr_size_n(type_id, n)
    got, got_meta = dbr.decode(type_id, payload, n)
    assert _same_values(got, values)
    assert got_meta == meta
    # a message pads to 8, the padding is ignored, and the decoder accepts memoryviews
    padded = payload + bytes(-len(payload) & 7)
    assert _same_values(dbr.decode(type_id, memoryview(padded), n)[0], values)
    # decoded arrays are writable, machine order, detached from the input
    if not isinstance(got, list):
        assert got.flags.writeable and got.dtype.isnative


_SCALARS = {
    dbr.STRING: _text(39),
    dbr.SHORT: _INT_LIMITS[dbr.SHORT],
    dbr.FLOAT: st.floats(width=32, allow_nan=False, allow_subnormal=False),
    dbr.ENUM: _INT_LIMITS[dbr.ENUM],
    dbr.CHAR: _INT_LIMITS[dbr.CHAR],
    dbr.LONG: _INT_LIMITS[dbr.LONG],
    dbr.DOUBLE: st.floats(allow_nan=False),
}


@pytest.mark.parametrize("type_id", range(39), ids=lambda t: DBR[t].name)
@settings(max_examples=30, deadline=None)
@given(st.data())
def test_scalar_round_trip_every_type(type_id: int, data: st.DataObject) -> None:
    """A bare Python scalar (not a list or array) encodes as one element."""
    info = DBR[type_id]
    v = data.draw(_SCALARS[info.native])
    meta = data.draw(meta_strategy(info))
    payload = dbr.encode(type_id, v, meta)
    assert len(payload) == info.size
    got, got_meta = dbr.decode(type_id, payload, 1)
    assert list(got) == [v] and got_meta == meta


# -- cross-check against caproto ----------------------------------------------------------------------------

# representative types; CTRL_STRING is where caproto diverges from libca (doc §3.2)
CAPROTO_TYPES = [
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    10,
    11,
    13,
    14,
    15,
    17,
    18,
    20,
    22,
    23,
    24,
    25,
    26,
    27,
    29,
    30,
    31,
    32,
    33,
    34,
]


def _caproto_meta(type_id: int, meta: Metadata):
    from caproto import _dbr as cd

    cls = cd.DBR_TYPES[type_id]
    m = cls()
    for name, _ in cls._fields_:
        if name == "stamp":
            m.stamp = cd.TimeStamp(meta.seconds, meta.nanoseconds)
        elif name == "units":
            m.units = meta.units.encode()
        elif name == "strs":
            m.enum_strings = [s.encode() for s in meta.enum_strings]
        elif name == "no_str" or name.startswith("RISC"):
            continue
        else:
            setattr(m, name, getattr(meta, name))
    return m


@pytest.mark.parametrize("type_id", CAPROTO_TYPES, ids=lambda t: DBR[t].name)
@settings(max_examples=25, deadline=None)
@given(st.data())
def test_bytes_equal_caproto(type_id: int, data: st.DataObject) -> None:
    import caproto as cap

    info = DBR[type_id]
    values = data.draw(values_strategy(info.native, 4).filter(len))
    meta = data.draw(meta_strategy(info))
    ours = C.ReadNotifyResponse.from_values(type_id, values, meta, ioid=7).encode()
    cap_values = values if info.native != dbr.STRING else [v.encode() for v in values]
    theirs = cap.ReadNotifyResponse(
        data=cap_values,
        data_type=type_id,
        data_count=len(values),
        status=1,
        ioid=7,
        metadata=None if meta is None else _caproto_meta(type_id, meta),
    )
    assert ours == bytes(theirs)


def test_ctrl_string_follows_libca_not_caproto() -> None:
    payload = dbr.encode(dbr.CTRL_STRING, ["abc"], Metadata(status=1, severity=2))
    assert len(payload) == 44 and payload[:4].hex() == "00010002"


# -- strings, units, enum strings ---------------------------------------------------------------------------


def test_string_rules() -> None:
    long = "x" * 50
    (v,), _ = dbr.decode(dbr.STRING, dbr.encode(dbr.STRING, long), 1)
    assert v == "x" * 39  # cut to 39 plus NUL
    assert dbr.encode(dbr.STRING, "ab\0cd")[:3] == b"ab\0"  # cut at an embedded NUL
    assert dbr.encode(dbr.STRING, b"raw") == b"raw" + bytes(37)
    assert dbr.encode(dbr.STRING, np.array(["a", "b"])) == b"a" + bytes(39) + b"b" + bytes(39)
    # stale bytes after the NUL (RSRV leaks them) never show
    assert dbr.decode(dbr.STRING, b"hello\0junk" + bytes(30), 1)[0] == ["hello"]
    # a single string may be short (libca writes strlen+1, RSRV's READ reply cuts it)
    assert dbr.decode(dbr.STRING, b"42\0\x2a\0\0\0\0", 1)[0] == ["42"]
    assert dbr.decode(dbr.STRING, b"", 1)[0] == [""]
    assert dbr.encode(dbr.STRING, ["hello"], compact=True) == b"hello\0"
    # undecodable bytes are kept
    assert dbr.decode(dbr.STRING, b"\xff\xfe" + bytes(38), 1)[0] == ["\udcff\udcfe"]
    assert dbr.encode(dbr.STRING, "\udcff\udcfe")[:3] == b"\xff\xfe\0"
    with pytest.raises(CADecodeError):
        dbr.decode(dbr.STRING, bytes(60), 2)


def test_units_and_enum_strings_are_cut() -> None:
    p = dbr.encode(dbr.GR_DOUBLE, [1.0], Metadata(units="millimetres"))
    assert p[8:16] == b"millime\0"
    _, m = dbr.decode(dbr.GR_DOUBLE, p, 1)
    assert m is not None and m.units == "millime"
    # a peer that fills all 8 unit bytes without a NUL is still read
    raw = bytearray(p)
    raw[8:16] = b"12345678"
    assert dbr.decode(dbr.GR_DOUBLE, bytes(raw), 1)[1].units == "12345678"  # type: ignore[union-attr]
    states = tuple(f"state{i:02d}" + "y" * 30 for i in range(20))
    _, m = dbr.decode(dbr.CTRL_ENUM, dbr.encode(dbr.CTRL_ENUM, [3], Metadata(enum_strings=states)), 1)
    assert m is not None and len(m.enum_strings) == 16 and m.enum_strings[0] == states[0][:25]


@pytest.mark.parametrize("no_str", [-1, 17, 0x7FFF])
def test_bad_no_str(no_str: int) -> None:
    p = bytearray(dbr.encode(dbr.GR_ENUM, [0], Metadata()))
    p[4:6] = no_str.to_bytes(2, "big", signed=True)
    with pytest.raises(CADecodeError):
        dbr.decode(dbr.GR_ENUM, bytes(p), 1)


# -- numeric casts (§3.4) -----------------------------------------------------------------------------------


def test_numeric_casts_like_rsrv() -> None:
    enc = dbr.encode
    assert dbr.decode(dbr.LONG, enc(dbr.LONG, [3.7, -3.7, 2.5]), 3)[0].tolist() == [3, -3, 2]
    assert dbr.decode(dbr.SHORT, enc(dbr.SHORT, np.array([2147483647], "i4")), 1)[0].tolist() == [-1]
    assert dbr.decode(dbr.CHAR, enc(dbr.CHAR, np.array([2147483647], "i4")), 1)[0].tolist() == [255]
    assert dbr.decode(dbr.ENUM, enc(dbr.ENUM, np.array([2147483647], "i4")), 1)[0].tolist() == [65535]
    assert dbr.decode(dbr.ENUM, enc(dbr.ENUM, [-3.7]), 1)[0].tolist() == [65533]
    assert dbr.decode(dbr.CHAR, enc(dbr.CHAR, [-3.7]), 1)[0].tolist() == [253]
    assert dbr.decode(dbr.FLOAT, enc(dbr.FLOAT, np.array([2147483647], "i4")), 1)[0].tolist() == [
        2147483648.0
    ]
    # deterministic where x86 is not: NaN -> 0, out of int32 range saturates
    got = dbr.decode(dbr.LONG, enc(dbr.LONG, [math.nan, 1e20, -1e20, math.inf]), 4)[0].tolist()
    assert got == [0, 2147483647, -2147483648, 2147483647]
    assert dbr.decode(dbr.SHORT, enc(dbr.SHORT, [1e10]), 1)[0].tolist() == [32767]
    # epicsConvertDoubleToFloat: clamp to ±FLT_MAX / ±FLT_MIN
    f32 = np.finfo(np.float32)
    got = dbr.decode(dbr.FLOAT, enc(dbr.FLOAT, [1e300, -1e300, 1e-300, -1e-300, 0.0, math.inf]), 6)[0]
    assert got.tolist() == [f32.max, -f32.max, f32.tiny, -f32.tiny, 0.0, math.inf]
    # float32 input is not touched (RSRV does not convert float to float)
    sub = np.array([1e-40], np.float32)
    assert dbr.decode(dbr.FLOAT, enc(dbr.FLOAT, sub), 1)[0].tolist() == sub.tolist()
    assert dbr.decode(dbr.DOUBLE, enc(dbr.DOUBLE, [True, 2]), 2)[0].tolist() == [1.0, 2.0]


def test_metadata_is_cast_to_the_requested_type() -> None:
    """GR_SHORT of a double channel carries i16 limits; GR_CHAR wraps −100 to 0x9C (§3.4)."""
    meta = Metadata(upper_disp_limit=100.7, lower_disp_limit=-100.7, upper_alarm_limit=math.nan)
    _, m = dbr.decode(dbr.GR_SHORT, dbr.encode(dbr.GR_SHORT, [1], meta), 1)
    assert m is not None and (m.upper_disp_limit, m.lower_disp_limit, m.upper_alarm_limit) == (100, -100, 0)
    p = dbr.encode(dbr.GR_CHAR, [1], Metadata(lower_disp_limit=-100))
    assert p[13] == 0x9C  # ldisp sits at offset 13
    _, m = dbr.decode(dbr.GR_FLOAT, dbr.encode(dbr.GR_FLOAT, [1], Metadata(upper_disp_limit=1e300)), 1)
    assert m is not None and m.upper_disp_limit == float(np.finfo(np.float32).max)
    # status/severity travel as i16 (u16 in STSACK_STRING)
    _, m = dbr.decode(dbr.STS_LONG, dbr.encode(dbr.STS_LONG, [1], Metadata(status=0xFFFF)), 1)
    assert m is not None and m.status == -1
    _, m = dbr.decode(dbr.STSACK_STRING, dbr.encode(dbr.STSACK_STRING, "x", Metadata(status=0xFFFF)), 1)
    assert m is not None and m.status == 0xFFFF


def test_count_fits_values() -> None:
    """Fixed counts zero-fill (catvs test_monitor_three_fixed expects [44, 0, 0])."""
    assert dbr.decode(dbr.LONG, dbr.encode(dbr.LONG, [44], count=3), 3)[0].tolist() == [44, 0, 0]
    assert dbr.decode(dbr.LONG, dbr.encode(dbr.LONG, [1, 2, 3], count=2), 2)[0].tolist() == [1, 2]
    assert dbr.decode(dbr.STRING, dbr.encode(dbr.STRING, ["a"], count=2), 2)[0] == ["a", ""]
    assert dbr.encode(dbr.TIME_SHORT, [], count=0) == bytes(14)
    assert dbr.zeros(dbr.STRING, 2) == ["", ""] and dbr.zeros(dbr.DOUBLE, 2).tolist() == [0.0, 0.0]


def test_encode_rejects_wrong_kinds() -> None:
    with pytest.raises(ValueError):
        dbr.encode(dbr.DOUBLE, "3.5")
    with pytest.raises(ValueError):
        dbr.encode(dbr.DOUBLE, np.array(["3.5"]))
    with pytest.raises(ValueError):
        dbr.encode(dbr.STRING, [1.5])
    with pytest.raises(ValueError):
        dbr.encode(dbr.STRING, np.arange(3))
    with pytest.raises(ValueError):
        dbr.encode(dbr.STRING, 3)
    with pytest.raises(ValueError):
        dbr.encode(39, [1])
    with pytest.raises(ValueError):
        dbr.encode(dbr.TIME_DOUBLE, [1.0], Metadata(seconds="x"))  # type: ignore[arg-type]


# -- malformed input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("type_id", [-1, 39, 0xFFFF, 1.5, "6", None])
def test_decode_bad_type(type_id) -> None:
    with pytest.raises(CADecodeError):
        dbr.decode(type_id, bytes(64), 1)


@pytest.mark.parametrize("count", [-1, 1.0, None])
def test_decode_bad_count(count) -> None:
    with pytest.raises(CADecodeError):
        dbr.decode(dbr.DOUBLE, bytes(64), count)


@pytest.mark.parametrize("type_id", range(39))
def test_decode_truncated(type_id: int) -> None:
    info = DBR[type_id]
    full = dbr.encode(type_id, dbr.zeros(info.native, 2), count=2)
    if info.meta_struct is not None:
        with pytest.raises(CADecodeError):
            dbr.decode(type_id, full[: info.value_offset - 1], 0)
    with pytest.raises(CADecodeError):
        dbr.decode(type_id, full[:-1], 2)
    with pytest.raises(CADecodeError):
        dbr.decode(type_id, full, 0xFFFFFFFF)  # absurd count: refused before any allocation


# -- timestamps ---------------------------------------------------------------------------------------------


def test_timestamps() -> None:
    assert dbr.EPICS_EPOCH_OFFSET == 631152000
    assert dbr.posix_to_epics(631152000.0) == (0, 0)
    sec, ns = dbr.posix_to_epics(1795263539.148254241)  # a double holds ~240 ns here
    assert sec == 1164111539 and abs(ns - 148254241) < 500
    assert dbr.posix_to_epics(1.9999999999) == (0, 0)  # before 1990: undefined stamp
    assert dbr.posix_to_epics(math.nan) == (0, 0)
    assert dbr.posix_to_epics(631152000 + 0.9999999999) == (1, 0)  # rounding carries
    assert dbr.posix_to_epics(1e12) == (0xFFFFFFFF, 999_999_999)
    assert dbr.posix_ns_to_epics(1795263539_148254241) == (1164111539, 148254241)
    assert dbr.posix_ns_to_epics(0) == (0, 0) and dbr.posix_ns_to_epics(10**20) == (0xFFFFFFFF, 999_999_999)
    assert dbr.epics_to_posix_ns(1164111539, 148254241) == 1795263539_148254241
    m = Metadata()
    assert m.timestamp == 0.0
    m.timestamp = 1795263539.5
    assert (m.seconds, m.nanoseconds) == (1164111539, 500000000) and m.timestamp == 1795263539.5
    assert m.replace(status=3).status == 3 and m.status == 0


@given(st.integers(0, 0xFFFFFFFF), st.integers(0, 999_999_999))
def test_timestamp_ns_round_trip(sec: int, ns: int) -> None:
    assert dbr.posix_ns_to_epics(dbr.epics_to_posix_ns(sec, ns)) == (sec, ns)


# -- one-pass encoding of big double arrays (the server's as_buffer path) ------------------------

_DOUBLE_FAMILY = [t for t in range(dbr.LAST_TYPE + 1) if DBR[t].native == dbr.DOUBLE]


@pytest.mark.parametrize("type_id", _DOUBLE_FAMILY)
@pytest.mark.parametrize("dtype", ["f8", "f4", "i4", "u2", "i1"])
@pytest.mark.parametrize("count", [None, 3, 5000, 20000])
def test_as_buffer_equals_plain_encoding(type_id: int, dtype: str, count: int | None) -> None:
    """The single-pass buffer holds exactly the bytes of the ordinary encoding (cut or
    zero-filled to the count), then zero padding to a multiple of 8."""
    values = (np.arange(10000) % 120 - 7).astype(dtype)
    meta = Metadata(status=3, severity=2, seconds=7, nanoseconds=9, units="mm", precision=4)
    plain = dbr.encode(type_id, values, meta, count=count)
    buf = dbr.encode(type_id, values, meta, count=count, as_buffer=True)
    assert isinstance(buf, memoryview) and buf.readonly
    assert len(buf) % 8 == 0 and len(buf) - len(plain) < 8
    data = bytes(buf)
    assert data[: len(plain)] == plain
    assert not any(data[len(plain) :])


def test_as_buffer_small_or_other_types_stay_bytes() -> None:
    """Below the threshold, and for other natives, ``as_buffer`` changes nothing."""
    small = np.arange(10.0)
    assert dbr.encode(dbr.TIME_DOUBLE, small, as_buffer=True) == dbr.encode(dbr.TIME_DOUBLE, small)
    assert isinstance(dbr.encode(dbr.TIME_DOUBLE, small, as_buffer=True), bytes)
    big = np.arange(10000.0)
    out = dbr.encode(dbr.TIME_FLOAT, big, as_buffer=True)
    assert isinstance(out, bytes) and out == dbr.encode(dbr.TIME_FLOAT, big)
