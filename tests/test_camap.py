"""The PVA <-> CA mapping (:mod:`capva.camap`): every rule of docs/ca-pva-mapping.md, round trips,
and a cross-check against a real IOC.

Why this file exists: one Value is served over both protocols, and CA clients must see what they
would see from an IOC serving the same record.  The rules are tested one by one (type decision,
snapshot, DBE bits, puts, alarms, stamps, strings), then as properties (a representable PVA value
read over CA and written back is the same value), and finally against pythonSoftIOC: its QSRV2
serves each record over PVA and its RSRV over CA, so applying our mapping to p4p's view of a record
must give exactly what caproto reads over CA (native type, count, value, alarm, stamp, metadata,
DBR_STRING text).
"""

from __future__ import annotations

import math
import socket
import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capva import Type, Value
from capva.camap import (
    ALARM_CONDITIONS,
    DBE_ALARM,
    DBE_LOG,
    DBE_PROPERTY,
    DBE_VALUE,
    CABadCount,
    CABadType,
    CAKind,
    CAPutError,
    CASnapshot,
    CAType,
    ca_alarm,
    ca_put_to_value,
    ca_snapshot,
    ca_view_type,
    cvt_float_to_string,
    dbe_mask,
    epics_stamp,
    long_string_type,
    native_count,
    pva_alarm,
    truncate_utf8,
    value_strings,
)
from capva.nt import NTEnum, NTScalar
from capva.pva.types import Type as _Type

ALL = DBE_VALUE | DBE_LOG | DBE_ALARM | DBE_PROPERTY

# ------------------------------------------------------------------------------- type decision

NATIVE = {
    "d": CAType.DOUBLE,
    "f": CAType.FLOAT,
    "i": CAType.LONG,
    "h": CAType.SHORT,
    "b": CAType.CHAR,
    "B": CAType.CHAR,
    "H": CAType.LONG,
    "I": CAType.DOUBLE,
    "l": CAType.DOUBLE,
    "L": CAType.DOUBLE,
    "s": CAType.STRING,
    "?": CAType.ENUM,
}


@pytest.mark.parametrize("code", sorted(NATIVE))
def test_scalar_and_array_native_types(code):
    k = ca_view_type(NTScalar(code).type)
    assert k == CAKind(NATIVE[code], code)
    ka = ca_view_type(NTScalar("a" + code).type)
    assert ka is not None and ka.native == NATIVE[code] and ka.array and ka.code == code
    assert ka.max_count is None


def test_ntenum_is_enum_whatever_the_extras():
    assert ca_view_type(NTEnum().type) == CAKind(CAType.ENUM, "enum")
    assert ca_view_type(NTEnum(display=True).type) == CAKind(CAType.ENUM, "enum")
    # decoded by name: no enum_t id needed, any integer index
    T = Type([("value", ("S", None, [("index", "h"), ("choices", "as")]))])
    assert ca_view_type(T) == CAKind(CAType.ENUM, "enum")


def test_plain_structure_with_value_is_served():
    assert ca_view_type(Type([("value", "d")])) == CAKind(CAType.DOUBLE, "d")


@pytest.mark.parametrize(
    "spec",
    [
        [("value", "v")],
        [("value", "av")],
        [("value", ("U", None, [("a", "d")]))],
        [("value", ("S", None, [("x", "d")]))],
        [("value", ("S", "enum_t", [("index", "i"), ("choices", "s")]))],
        [("value", ("aS", None, [("x", "d")]))],
        [("labels", "as"), ("value", ("S", None, [("a", "ad")]))],  # NTTable-like
        [("x", "d")],
        [],
    ],
)
def test_structures_ca_cannot_carry(spec):
    assert ca_view_type(Type(spec)) is None


def test_ntndarray_and_nttable_are_not_served():
    from capva.nt import NTNDArray, NTTable

    assert ca_view_type(NTNDArray.buildType()) is None
    assert ca_view_type(NTTable.buildType([("a", "ad")])) is None


def _bounded(code: str, bound: int, fixed: bool = False) -> Type:
    return Type(
        [("value", _Type._make(code, bound=bound, fixed=fixed))] + list(NTScalar("d").type.members[1:])
    )


def test_bounded_and_fixed_arrays_declare_the_count():
    k = ca_view_type(_bounded("ad", 16))
    assert k is not None and k.max_count == 16 and not k.fixed
    kf = ca_view_type(_bounded("ai", 4, fixed=True))
    assert kf is not None and kf.max_count == 4 and kf.fixed


def test_long_string_view_only_for_scalar_strings():
    k = long_string_type(NTScalar("s").type)
    assert k == CAKind(CAType.CHAR, "s", long_string=True)
    assert long_string_type(NTScalar("as").type) is None
    assert long_string_type(NTScalar("d").type) is None
    assert long_string_type(NTEnum().type) is None
    assert long_string_type(Type([("x", "s")])) is None


def test_native_count():
    kd = ca_view_type(NTScalar("d").type)
    assert kd is not None and native_count(kd, NTScalar("d").wrap(1.0)) == 1
    A = NTScalar("ad")
    ka = ca_view_type(A.type)
    assert ka is not None
    assert native_count(ka, A.wrap([1.0, 2.0, 3.0])) == 3  # length at channel creation
    assert native_count(ka, A.wrap([])) == 1  # never 0, as an IOC (NELM >= 1)
    assert native_count(ka) == 1
    kb = ca_view_type(_bounded("ad", 100))
    assert kb is not None and native_count(kb, Value(_bounded("ad", 100), {"value": [1.0]})) == 100
    S = NTScalar("s")
    kl = long_string_type(S.type)
    assert kl is not None
    assert native_count(kl, S.wrap("hello")) == 40  # as stringin.VAL$
    assert native_count(kl, S.wrap("x" * 100)) == 101
    assert native_count(kl, S.wrap("é" * 30)) == 61  # bytes, not characters


# ------------------------------------------------------------------------------------ snapshot


def snap(V: Value, kind: CAKind | None = None) -> CASnapshot:
    k = kind if kind is not None else ca_view_type(V.type())
    assert k is not None
    return ca_snapshot(V, k)


def test_snapshot_of_a_full_ntscalar():
    N = NTScalar("d", display=True, control=True, valueAlarm=True, form=True)
    V = N.wrap(9.5, timestamp=(1_700_000_000, 123), severity=2, message="HIHI")
    V["alarm.status"] = 1
    V["display"] = {"limitLow": -10, "limitHigh": 10, "units": "mm", "precision": 3}
    V["control"] = {"limitLow": -5, "limitHigh": 5}
    V["valueAlarm"] = {"lowAlarmLimit": -9, "lowWarningLimit": -4, "highWarningLimit": 4, "highAlarmLimit": 9}
    s = snap(V)
    assert s.value.dtype == np.float64 and s.value.tolist() == [9.5] and s.count == 1
    assert (s.status, s.severity) == (ALARM_CONDITIONS.index("HIHI"), 2)
    assert s.stamp == (1_700_000_000 - 631152000, 123)
    assert s.units == b"mm" and s.precision == 3
    assert (s.lower_disp_limit, s.upper_disp_limit) == (-10.0, 10.0)
    assert (s.lower_ctrl_limit, s.upper_ctrl_limit) == (-5.0, 5.0)
    assert (s.lower_alarm_limit, s.lower_warning_limit, s.upper_warning_limit, s.upper_alarm_limit) == (
        -9.0,
        -4.0,
        4.0,
        9.0,
    )
    assert s.enum_strings == () and s.choices == ()
    assert not s.value.flags.writeable


def test_missing_metadata_reads_as_an_ioc_sends_it():
    s = snap(NTScalar("i").wrap(5))
    assert s.units == b"" and s.precision is None
    assert s.upper_disp_limit == s.lower_disp_limit == s.upper_ctrl_limit == s.lower_ctrl_limit == 0.0
    # no valueAlarm: NaN alarm limits, as a record without alarm limits (e.g. waveform)
    lims = (s.upper_alarm_limit, s.upper_warning_limit, s.lower_warning_limit, s.lower_alarm_limit)
    assert all(math.isnan(x) for x in lims)
    assert s.stamp == (0, 0)  # never stamped: CA's <undefined>


def test_precision_from_p4p_display_format():
    V = NTScalar("d", display=True).wrap(1.0)
    V["display.format"] = "%8.4f"
    assert snap(V).precision == 4
    V["display.format"] = "Default"
    assert snap(V).precision is None


def test_integers_served_as_double_have_precision_zero():
    # so that a DBR_STRING read prints 1099511627779, not 1.0995116e+12
    s = snap(NTScalar("l").wrap(2**40 + 3))
    assert s.precision == 0 and value_strings(s) == [b"1099511627779"]


def test_units_cut_to_seven_bytes_on_a_character_boundary():
    V = NTScalar("d", display=True).wrap(1.0)
    V["display.units"] = "millimetres"
    assert snap(V).units == b"millime"  # what RSRV sends (cross-checked below)
    V["display.units"] = "µµµµ"  # 2 bytes each: 3 whole characters fit in 7 bytes
    assert snap(V).units == "µµµ".encode()


def test_truncate_utf8():
    assert truncate_utf8("abc", 2) == b"ab"
    assert truncate_utf8("a\0bc", 10) == b"a"  # C strings end at NUL
    assert truncate_utf8("aé", 2) == b"a"
    assert truncate_utf8("a€", 3) == b"a"
    assert truncate_utf8("a€", 4) == "a€".encode()
    assert truncate_utf8("😀😀", 7) == "😀".encode()
    assert truncate_utf8(b"\xff\xfe", 1) == b"\xff"


def test_metadata_only_for_numeric_kinds():
    V = NTScalar("s", display=True).wrap("x")
    V["display.units"] = "V"
    s = snap(V)
    assert s.units == b"" and s.precision is None and s.value == [b"x"]
    E = NTEnum(display=True).wrap(0, choices=["a"])
    E["display.limitHigh"] = 5
    se = snap(E)
    assert se.upper_disp_limit == 0.0  # numeric GR of an enum channel: zeros (ca-protocol.md §3.4)


@pytest.mark.parametrize(
    "code,value,expect,dtype",
    [
        ("b", [-1, 5], [255, 5], np.uint8),  # same bits, CA CHAR is unsigned
        ("B", [200], [200], np.uint8),
        ("h", [-3], [-3], np.int16),
        ("H", [65535], [65535], np.int32),
        ("i", [-(2**31)], [-(2**31)], np.int32),
        ("I", [2**32 - 1], [2**32 - 1], np.float64),
        ("l", [-(2**53)], [-(2**53)], np.float64),
        ("L", [2**64 - 1], [2.0**64], np.float64),  # rounded: DOUBLE is exact to 2**53
        ("f", [0.5], [0.5], np.float32),
        ("d", [1e300], [1e300], np.float64),
        ("?", [True, False], [1, 0], np.uint16),
    ],
)
def test_array_values_in_the_native_dtype(code, value, expect, dtype):
    s = snap(NTScalar("a" + code).wrap(value))
    assert s.value.dtype == dtype and s.value.tolist() == expect and s.count == len(value)
    s1 = snap(NTScalar(code).wrap(value[0]))
    assert s1.value.dtype == dtype and s1.value.tolist() == expect[:1] and s1.count == 1


def test_same_dtype_arrays_are_shared_not_copied():
    V = NTScalar("ad").wrap(np.arange(1000.0))
    assert np.shares_memory(snap(V).value, V["value"])
    B = NTScalar("ab").wrap(np.arange(-5, 5, dtype=np.int8))
    assert np.shares_memory(snap(B).value, B["value"])


@pytest.mark.parametrize("code", list("?bBhHiIlLfd"))
def test_empty_arrays(code):
    s = snap(NTScalar("a" + code).wrap([]))
    assert s.count == 0 and len(s.value) == 0 and s.value.dtype == s.kind.dtype


def test_strings_and_string_arrays():
    s = snap(NTScalar("s").wrap("x" * 39 + "é"))
    assert s.value == [b"x" * 39] and s.count == 1  # 39 bytes + NUL; é would be cut in half
    sa = snap(NTScalar("as").wrap(["a", "b" * 50, ""]))
    assert sa.value == [b"a", b"b" * 39, b""] and sa.count == 3
    assert snap(NTScalar("as").wrap([])).count == 0


def test_long_string_view():
    S = NTScalar("s")
    k = long_string_type(S.type)
    assert k is not None
    s = ca_snapshot(S.wrap("hello"), k)
    assert s.value.dtype == np.uint8 and s.value.tobytes() == b"hello\0" and s.count == 6  # as RSRV
    long = "é" * 100
    s2 = ca_snapshot(S.wrap(long), k)
    assert s2.value.tobytes() == long.encode() + b"\0"
    assert ca_snapshot(S.wrap(""), k).value.tobytes() == b"\0"
    assert ca_snapshot(S.wrap("ab\0cd"), k).value.tobytes() == b"ab\0"


def test_ntenum_snapshot():
    E = NTEnum().wrap(2, choices=["zero", "one", "two"])
    s = snap(E)
    assert s.value.dtype == np.uint16 and s.value.tolist() == [2]
    assert s.enum_strings == (b"zero", b"one", b"two") == s.choices
    assert s.enum_overflow == 0


def test_ntenum_more_than_16_choices_and_long_choices():
    names = [f"state number {i:02d} with a long name" for i in range(20)]  # 32 characters
    s = snap(NTEnum().wrap(18, choices=names))
    assert len(s.enum_strings) == 16 and s.enum_overflow == 4
    assert all(len(x) == 25 for x in s.enum_strings) and s.enum_strings[0] == names[0].encode()[:25]
    assert len(s.choices) == 20 and s.choices[18] == names[18].encode()  # 32 bytes fit 39
    assert s.value.tolist() == [18]
    assert value_strings(s) == [names[18].encode()]  # index >= 16 still has its text


@pytest.mark.parametrize("index,expect", [(-1, 65535), (70000, 65535), (65535, 65535), (0, 0)])
def test_ntenum_index_out_of_ca_range(index, expect):
    E = NTEnum().wrap(0, choices=["a"])
    E["value.index"] = index
    assert snap(E).value.tolist() == [expect]


def test_bool_is_an_enum_false_true():
    s = snap(NTScalar("?").wrap(True))
    assert s.value.tolist() == [1] and s.enum_strings == (b"false", b"true") == s.choices
    assert value_strings(s) == [b"true"]


# ---------------------------------------------------------------------------------- alarms


def test_alarm_from_message_as_qsrv_writes_it():
    for stat, name in enumerate(ALARM_CONDITIONS[1:], 1):
        assert ca_alarm(2, 1, name) == (stat, 2)
        assert ca_alarm(1, 3, name.lower() + "_ALARM") == (stat, 1)  # pvAccessCPP's spelling
    assert ca_alarm(2, 1, "HW_LIMIT_ALARM") == (ALARM_CONDITIONS.index("HWLIMIT"), 2)


def test_alarm_without_a_condition_name_uses_the_status_category():
    expect = ["SOFT", "HWLIMIT", "COMM", "CALC", "LINK", "BAD_SUB", "UDF", "SOFT"]
    for status, name in enumerate(expect):
        assert ca_alarm(1, status, "temperature too high") == (ALARM_CONDITIONS.index(name), 1)
    assert ca_alarm(2, 99, "") == (ALARM_CONDITIONS.index("SOFT"), 2)
    assert ca_alarm(2, 0, "NO_ALARM") == (ALARM_CONDITIONS.index("SOFT"), 2)


def test_alarm_severity_rules():
    assert ca_alarm(0, 1, "HIHI") == (0, 0)  # no severity, no status (an IOC never has one alone)
    assert ca_alarm(4, 6, "") == (ALARM_CONDITIONS.index("UDF"), 3)  # pvData UNDEFINED -> INVALID
    assert ca_alarm(-1, 0, "")[1] == 3
    assert ca_alarm(3, 0, "UDF") == (17, 3)


def test_pva_alarm_is_qsrv2s_table_and_ca_alarm_inverts_it():
    assert pva_alarm(0, 0) == (0, 0, "")
    assert pva_alarm(3, 2) == (2, 1, "HIHI")
    assert pva_alarm(9, 3) == (3, 2, "COMM")
    assert pva_alarm(15, 3) == (3, 3, "SOFT")
    assert pva_alarm(18, 3) == (3, 4, "DISABLE")
    assert pva_alarm(99, 3) == (3, 6, "")
    for stat in range(1, len(ALARM_CONDITIONS)):
        for sevr in (1, 2, 3):
            assert ca_alarm(*pva_alarm(stat, sevr)) == (stat, sevr)


def test_snapshot_alarm():
    V = NTScalar("d").wrap(1.0, severity=3, message="bad cable")
    V["alarm.status"] = 2
    s = snap(V)
    assert (s.status, s.severity) == (ALARM_CONDITIONS.index("COMM"), 3)


# ---------------------------------------------------------------------------------- stamps


def test_epics_stamp():
    assert epics_stamp(631152000, 0) == (0, 0)
    assert epics_stamp(631152001, 5) == (1, 5)
    assert epics_stamp(0, 0) == (0, 0)
    assert epics_stamp(100, 5) == (0, 0)
    assert epics_stamp(631152000 + 10, 1_500_000_000) == (11, 500_000_000)
    assert epics_stamp(631152000 + 10, -1) == (9, 999_999_999)
    assert epics_stamp(631152000 + 2**33, 0) == (0xFFFFFFFF, 999_999_999)


# -------------------------------------------------------------------------------- DBE bits


def test_dbe_first_update_has_every_bit():
    assert dbe_mask(None, snap(NTScalar("d").wrap(1.0))) == ALL


def test_dbe_value_on_change_or_on_a_post_marking_value():
    N = NTScalar("d")
    a, b = snap(N.wrap(1.0)), snap(N.wrap(2.0))
    assert dbe_mask(a, b, set()) == DBE_VALUE | DBE_LOG
    assert dbe_mask(a, a, {"value"}) == DBE_VALUE | DBE_LOG  # a post of the same value is news
    assert dbe_mask(a, a, set()) == 0
    assert dbe_mask(a, a, {"timeStamp", "timeStamp.secondsPastEpoch"}) == 0
    assert dbe_mask(a, a, {""}) == DBE_VALUE | DBE_LOG


def test_dbe_value_nan_and_length():
    N = NTScalar("ad")
    nan = snap(N.wrap([math.nan]))
    assert dbe_mask(nan, snap(N.wrap([math.nan])), set()) == 0
    assert dbe_mask(nan, snap(N.wrap([1.0])), set()) == DBE_VALUE | DBE_LOG
    assert dbe_mask(snap(N.wrap([1.0])), snap(N.wrap([1.0, 0.0])), set()) == DBE_VALUE | DBE_LOG
    S = NTScalar("as")
    assert dbe_mask(snap(S.wrap(["a"])), snap(S.wrap(["b"])), set()) == DBE_VALUE | DBE_LOG


def test_dbe_alarm_only_when_the_ca_alarm_changes():
    N = NTScalar("d")
    ok = snap(N.wrap(1.0))
    hihi = snap(N.wrap(1.0, severity=2, message="HIHI"))
    assert dbe_mask(ok, hihi, {"alarm", "alarm.severity"}) == DBE_ALARM
    hihi3 = snap(N.wrap(1.0, severity=3, message="HIHI"))
    assert dbe_mask(hihi, hihi3, {"alarm.severity"}) == DBE_ALARM
    # a new message naming no other condition: same STAT, no CA alarm event
    other = N.wrap(1.0, severity=2, message="hihi_alarm")
    assert dbe_mask(hihi, snap(other), {"alarm.message"}) == 0


def test_dbe_property_on_metadata_change():
    N = NTScalar("d", display=True, control=True, valueAlarm=True, form=True)
    V = N.wrap(1.0)
    a = snap(V)
    for field, x in [
        ("display.units", "V"),
        ("display.precision", 4),
        ("display.limitHigh", 3.0),
        ("control.limitLow", -1.0),
        ("valueAlarm.highAlarmLimit", 7.0),
    ]:
        W = N.wrap(1.0)
        W[field] = x
        assert dbe_mask(a, snap(W), {field}) == DBE_PROPERTY, field
    W = N.wrap(1.0)
    W["display.description"] = "not carried by CA"
    assert dbe_mask(a, snap(W), {"display.description"}) == 0


def test_dbe_enum_choices_are_property_index_is_value():
    E = NTEnum()
    a = snap(E.wrap(0, choices=["a", "b"]))
    b = E.wrap(0, choices=["a", "B"])
    b.unmark()
    b.mark("value.choices")
    assert dbe_mask(a, snap(b), b.changedSet()) == DBE_PROPERTY
    c = E.wrap(1, choices=["a", "b"])
    assert dbe_mask(a, snap(c), {"value.index"}) == DBE_VALUE | DBE_LOG


# ------------------------------------------------------------------------------------- puts


def put(T: Type, values, dbr, current=None, kind=None):
    return ca_put_to_value(T, kind if kind is not None else ca_view_type(T), values, dbr, current)


def test_put_marks_only_value():
    N = NTScalar("d", display=True, control=True, valueAlarm=True)
    V = put(N.type, np.array([2.5], ">f8"), CAType.DOUBLE)
    assert V.type() == N.type and V["value"] == 2.5 and V.changedSet() == {"value"}
    E = NTEnum()
    Ve = put(E.type, np.array([1], ">u2"), CAType.ENUM)
    assert Ve["value.index"] == 1 and Ve.changedSet() == {"value.index"}


@pytest.mark.parametrize(
    "code,values,dbr,expect",
    [
        ("d", [3], CAType.LONG, 3.0),
        ("d", [b"  2.5 "], CAType.STRING, 2.5),
        ("d", [b"0x10"], CAType.STRING, 16.0),
        ("d", [b""], CAType.STRING, 0.0),
        ("d", [b"-inf"], CAType.STRING, -math.inf),
        ("f", [0.1], CAType.DOUBLE, float(np.float32(0.1))),
        ("i", [3.7], CAType.DOUBLE, 3),  # C cast: toward zero
        ("i", [-3.7], CAType.DOUBLE, -3),
        ("i", [b"3.9"], CAType.STRING, 3),
        ("i", [b" 42 "], CAType.STRING, 42),
        ("i", [b"0x10"], CAType.STRING, 16),
        ("i", [b"010"], CAType.STRING, 10),  # decimal, as RSRV
        ("i", [b"-12\0junk"], CAType.STRING, -12),  # a C string ends at NUL
        ("h", [65], CAType.CHAR, 65),
        ("b", [255], CAType.CHAR, -1),  # the CA reading of the byte
        ("b", [-1], CAType.LONG, -1),  # the signed reading
        ("B", [255], CAType.CHAR, 255),
        ("H", [65535], CAType.LONG, 65535),
        ("I", [4294967295.0], CAType.DOUBLE, 4294967295),
        ("l", [-(2.0**53)], CAType.DOUBLE, -(2**53)),
        ("l", [b"9223372036854775807"], CAType.STRING, 2**63 - 1),  # text is exact
        ("L", [b"18446744073709551615"], CAType.STRING, 2**64 - 1),
        ("L", [2.0**63], CAType.DOUBLE, 2**63),
        ("s", [b"hello"], CAType.STRING, "hello"),
        ("s", ["str ok"], CAType.STRING, "str ok"),
        ("s", [b"caf\xc3\xa9"], CAType.STRING, "café"),
        ("s", [b"\xff"], CAType.STRING, "\udcff"),  # undecodable bytes kept (surrogateescape)
        ("s", [3], CAType.LONG, "3"),
        ("s", [0.1], CAType.DOUBLE, "0.1"),
        ("s", np.array([0.1], np.float32), CAType.FLOAT, "0.1"),
        ("?", [1], CAType.ENUM, True),
        ("?", [b"false"], CAType.STRING, False),
        ("?", [b"true"], CAType.STRING, True),
        ("?", [b"1"], CAType.STRING, True),
        ("?", [0.0], CAType.DOUBLE, False),
    ],
)
def test_put_conversions(code, values, dbr, expect):
    V = put(NTScalar(code).type, values, dbr)
    got = V["value"]
    assert got == expect and type(got) is type(expect)


@pytest.mark.parametrize(
    "code,values,dbr",
    [
        ("i", [2.0**31], CAType.DOUBLE),
        ("i", [math.nan], CAType.DOUBLE),
        ("i", [math.inf], CAType.DOUBLE),
        ("h", [40000], CAType.LONG),  # no silent wrap (RSRV keeps the low bits)
        ("b", [256], CAType.LONG),
        ("b", [-129], CAType.LONG),
        ("B", [-1], CAType.LONG),
        ("H", [-1], CAType.LONG),
        ("I", [-1.0], CAType.DOUBLE),
        ("l", [2.0**63], CAType.DOUBLE),
        ("L", [2.0**64], CAType.DOUBLE),
        ("L", [b"18446744073709551616"], CAType.STRING),
        ("f", [1e39], CAType.DOUBLE),
        ("d", [b"1e400"], CAType.STRING),  # overflow: PUTFAIL on RSRV too
        ("i", [b"99999999999"], CAType.STRING),
        ("d", [b"12abc"], CAType.STRING),  # stricter than RSRV
        ("i", [b"abc"], CAType.STRING),
        ("i", [b"nan"], CAType.STRING),
        ("?", [2], CAType.LONG),
        ("?", [b"True"], CAType.STRING),
        ("?", [b"2"], CAType.STRING),
    ],
)
def test_put_values_that_do_not_fit(code, values, dbr):
    with pytest.raises(CAPutError) as e:
        put(NTScalar(code).type, values, dbr)
    assert e.value.eca_name == "ECA_PUTFAIL"
    assert str(e.value)  # a clear message


def test_put_bad_type_and_count():
    T = NTScalar("d").type
    with pytest.raises(CABadType) as e:
        put(T, [1.0], 14)  # TIME_STRING is not a write type
    assert e.value.eca_name == "ECA_BADTYPE"
    with pytest.raises(CABadCount) as e2:
        put(T, np.zeros(0), CAType.DOUBLE)
    assert e2.value.eca_name == "ECA_BADCOUNT"
    with pytest.raises(CABadType):
        ca_put_to_value(Type([("value", "v")]), None, [1.0], CAType.DOUBLE)
    with pytest.raises(CAPutError):
        put(T, [object()], CAType.DOUBLE)
    with pytest.raises(CAPutError):
        put(T, [[1.0, 2.0]], CAType.DOUBLE)


def test_put_counts():
    # a longer write to a scalar stores the first element (RSRV)
    assert put(NTScalar("d").type, [1.0, 2.0], CAType.DOUBLE)["value"] == 1.0
    # an array takes the written elements: its new length, also 0
    A = NTScalar("ai").type
    assert put(A, [1, 2, 3], CAType.LONG)["value"].tolist() == [1, 2, 3]
    assert put(A, np.zeros(0, ">i4"), CAType.LONG)["value"] is None  # empty (p4p reads None)
    # cut to a declared maximum
    B = _bounded("ad", 2)
    assert put(B, [1.0, 2.0, 3.0], CAType.DOUBLE)["value"].tolist() == [1.0, 2.0]
    # a fixed array is zero-padded
    F = _bounded("ai", 4, fixed=True)
    assert put(F, [7], CAType.LONG)["value"].tolist() == [7, 0, 0, 0]


def test_put_arrays_of_every_type():
    assert put(NTScalar("ab").type, np.array([255, 1], np.uint8), CAType.CHAR)["value"].tolist() == [-1, 1]
    assert put(NTScalar("a?").type, [1, 0], CAType.ENUM)["value"].tolist() == [True, False]
    assert put(NTScalar("a?").type, [b"true", b"0"], CAType.STRING)["value"].tolist() == [True, False]
    assert put(NTScalar("as").type, [b"a", b"b"], CAType.STRING)["value"] == ["a", "b"]
    assert put(NTScalar("as").type, [1, 2], CAType.SHORT)["value"] == ["1", "2"]
    assert put(NTScalar("af").type, [b"1.5", b"-2"], CAType.STRING)["value"].tolist() == [1.5, -2.0]
    assert put(NTScalar("aL").type, [b"1", b"0x10"], CAType.STRING)["value"].tolist() == [1, 16]
    assert put(NTScalar("ad").type, np.array(["1", "2"], "S40"), CAType.STRING)["value"].tolist() == [1, 2]


def test_put_enum():
    N = NTEnum()
    cur = N.wrap(0, choices=["Off", "On", "x" * 45])
    T = N.type
    assert put(T, [b"On"], CAType.STRING, cur)["value.index"] == 1
    assert put(T, [b"1"], CAType.STRING, cur)["value.index"] == 1  # decimal index of a state
    assert put(T, [b"x" * 39], CAType.STRING, cur)["value.index"] == 2  # the 39-byte text read
    assert put(T, [b"On"], CAType.STRING, snap(cur))["value.index"] == 1  # choices from a snapshot
    assert put(T, [5], CAType.ENUM, cur)["value.index"] == 5  # numeric: accepted as by bo/mbbo
    assert put(T, [2.9], CAType.DOUBLE)["value.index"] == 2
    for bad in ([b"on"], [b"3"], [b"7"], [b"-1"]):
        with pytest.raises(CAPutError):
            put(T, bad, CAType.STRING, cur)
    with pytest.raises(CAPutError):
        put(T, [b"On"], CAType.STRING)  # no choices known: only indexes... of no state
    for bad_num in ([-1], [65536]):
        with pytest.raises(CAPutError):
            put(T, bad_num, CAType.LONG, cur)


def test_put_long_string():
    S = NTScalar("s")
    k = long_string_type(S.type)
    long = "ünïcödé " * 20
    b = np.frombuffer(long.encode() + b"\0" + b"junk", np.uint8)
    V = put(S.type, b, CAType.CHAR, kind=k)
    assert V["value"] == long and V.changedSet() == {"value"}
    assert put(S.type, np.frombuffer(b"no nul", np.uint8), CAType.CHAR, kind=k)["value"] == "no nul"
    assert put(S.type, np.zeros(0, np.uint8), CAType.CHAR, kind=k)["value"] == ""
    assert put(S.type, [b"as text"], CAType.STRING, kind=k)["value"] == "as text"
    assert put(S.type, [104, 105], CAType.LONG, kind=k)["value"] == "hi"
    with pytest.raises(CAPutError):
        put(S.type, [300], CAType.LONG, kind=k)


# ---------------------------------------------------------------------------- DBR_STRING text


@pytest.mark.parametrize(
    "x,prec,f32,expect",
    [
        (9.5, 3, False, "9.500"),
        (0.5, 0, False, "1"),  # the IOC rounds half up (printf: "0")
        (0.5, 0, True, "1"),
        (-2.5, 0, False, "-3"),
        (1.25, 1, False, "1.3"),
        (0.0, 2, False, "0.00"),
        (-0.0, 2, False, "0.00"),
        (12345678.9, 5, False, "12345678.900"),  # > 1e7: %.*f with at most 3 digits
        (1099511627779.0, 0, False, "1099511627779"),
        (1e17, 3, False, " 1.000e+17"),  # > 1e16: %*.*e
        (1e8, 2, True, "1.00e+08"),  # FLOAT: from 1e8
        (1.0, 9, False, " 1.000000000e+00"),  # more than 8 digits: %*.*e, width p+7
        (math.nan, 2, False, "nan"),
        (math.inf, 3, False, "       inf"),
    ],
)
def test_cvt_float_to_string_as_the_ioc(x, prec, f32, expect):
    assert cvt_float_to_string(x, prec, f32) == expect


def test_value_strings():
    assert value_strings(snap(NTScalar("d").wrap(1.0 / 3))) == [b"0.3333333333333333"]  # undeclared: exact
    V = NTScalar("d", display=True, form=True).wrap(1.0 / 3)
    assert value_strings(snap(V)) == [b"0"]  # a precision field counts, even 0 (an IOC's PREC=0)
    V["display.precision"] = 2
    assert value_strings(snap(V)) == [b"0.33"]
    assert value_strings(snap(NTScalar("af").wrap([0.1, 2]))) == [b"0.1", b"2.0"]
    assert value_strings(snap(NTScalar("ab").wrap([-1, 3]))) == [b"-1", b"3"]  # signed, as an IOC
    assert value_strings(snap(NTScalar("aH").wrap([65535]))) == [b"65535"]
    assert value_strings(snap(NTScalar("as").wrap(["a", "b"]))) == [b"a", b"b"]
    E = NTEnum().wrap(3, choices=["a"])
    assert value_strings(snap(E)) == [b""]  # index without a state: empty (an unused mbbo state)
    S = NTScalar("s")
    k = long_string_type(S.type)
    assert k is not None
    assert value_strings(ca_snapshot(S.wrap("z" * 50), k)) == [b"z" * 39]


# -------------------------------------------------------------------------- QSRV-style layouts

_ALARM = ("S", "alarm_t", [("severity", "i"), ("status", "i"), ("message", "s")])
_FORM = ("S", "enum_t", [("index", "i"), ("choices", "as")])


def qsrv2_type(code: str) -> Type:
    """pvxs QSRV2's NTScalar layout (pva-protocol.md §8.1, capture D)."""
    e = code[-1]
    return Type(
        [
            ("value", code),
            ("alarm", _ALARM),
            (
                "timeStamp",
                ("S", "time_t", [("secondsPastEpoch", "l"), ("nanoseconds", "i"), ("userTag", "i")]),
            ),
            (
                "display",
                (
                    "S",
                    None,
                    [
                        ("limitLow", e),
                        ("limitHigh", e),
                        ("description", "s"),
                        ("units", "s"),
                        ("precision", "i"),
                        ("form", _FORM),
                    ],
                ),
            ),
            ("control", ("S", None, [("limitLow", e), ("limitHigh", e), ("minStep", e)])),
            (
                "valueAlarm",
                (
                    "S",
                    None,
                    [("active", "?")]
                    + [
                        (n, e)
                        for n in ("lowAlarmLimit", "lowWarningLimit", "highWarningLimit", "highAlarmLimit")
                    ]
                    + [(n + "Severity", "i") for n in ("lowAlarm", "lowWarning", "highWarning", "highAlarm")]
                    + [("hysteresis", "d")],
                ),
            ),
        ],
        id="epics:nt/NTScalarArray:1.0" if code[0] == "a" else "epics:nt/NTScalar:1.0",
    )


def qsrv1_int_type() -> Type:
    """QSRV1 (pvAccessCPP) int32 record: double limits, control_t/valueAlarm_t ids, int8
    hysteresis, a timeStamp with an empty id (pvxs testRegressRedundantBitMask)."""
    return Type(
        [
            ("value", "i"),
            ("alarm", _ALARM),
            ("timeStamp", ("S", None, [("secondsPastEpoch", "l"), ("nanoseconds", "i"), ("userTag", "i")])),
            (
                "display",
                (
                    "S",
                    None,
                    [
                        ("limitLow", "d"),
                        ("limitHigh", "d"),
                        ("description", "s"),
                        ("units", "s"),
                        ("precision", "i"),
                        ("form", _FORM),
                    ],
                ),
            ),
            ("control", ("S", "control_t", [("limitLow", "d"), ("limitHigh", "d"), ("minStep", "d")])),
            (
                "valueAlarm",
                (
                    "S",
                    "valueAlarm_t",
                    [("active", "?")]
                    + [
                        (n, "d")
                        for n in ("lowAlarmLimit", "lowWarningLimit", "highWarningLimit", "highAlarmLimit")
                    ]
                    + [(n + "Severity", "i") for n in ("lowAlarm", "lowWarning", "highWarning", "highAlarm")]
                    + [("hysteresis", "b")],
                ),
            ),
        ],
        id="epics:nt/NTScalar:1.0",
    )


@pytest.mark.parametrize("code", ["d", "i", "ah", "aB", "f", "l"])
def test_qsrv2_layout(code):
    T = qsrv2_type(code)
    k = ca_view_type(T)
    assert k is not None and k.native == NATIVE[code[-1]] and k.array == (code[0] == "a")
    V = Value(
        T,
        {
            "value": [1, 2] if k.array else 1,
            "alarm": {"severity": 1, "status": 1, "message": "LOW"},
            "display": {"limitLow": 0, "limitHigh": 100, "units": "counts/s", "precision": 2},
            "control": {"limitLow": 1, "limitHigh": 99},
            "valueAlarm": {
                "lowAlarmLimit": 2,
                "lowWarningLimit": 3,
                "highWarningLimit": 97,
                "highAlarmLimit": 98,
            },
        },
    )
    s = ca_snapshot(V, k)
    assert (s.status, s.severity) == (ALARM_CONDITIONS.index("LOW"), 1)
    assert s.units == b"counts/" and s.precision == 2
    assert (s.lower_disp_limit, s.upper_disp_limit, s.lower_ctrl_limit, s.upper_ctrl_limit) == (0, 100, 1, 99)
    assert (s.lower_alarm_limit, s.lower_warning_limit, s.upper_warning_limit, s.upper_alarm_limit) == (
        2,
        3,
        97,
        98,
    )


def test_qsrv1_layout():
    T = qsrv1_int_type()
    k = ca_view_type(T)
    assert k == CAKind(CAType.LONG, "i")
    V = Value(
        T, {"value": 5, "display.limitHigh": 10.5, "valueAlarm.highAlarmLimit": 8.0, "display.units": "A"}
    )
    s = ca_snapshot(V, k)
    assert s.value.tolist() == [5] and s.upper_disp_limit == 10.5 and s.upper_alarm_limit == 8.0
    assert s.units == b"A"
    assert put(T, [b"7"], CAType.STRING)["value"] == 7


# ----------------------------------------------------------------------------- round trips

_HS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_INT_BOUNDS = {
    "b": (-128, 127),
    "B": (0, 255),
    "h": (-(2**15), 2**15 - 1),
    "H": (0, 2**16 - 1),
    "i": (-(2**31), 2**31 - 1),
    "I": (0, 2**32 - 1),
    "l": (-(2**53), 2**53),  # representable: DOUBLE is exact to 2**53
    "L": (0, 2**53),
}


def representable(code: str) -> st.SearchStrategy:
    """PVA values of ``code`` that CA represents exactly."""
    if code in _INT_BOUNDS:
        return st.integers(*_INT_BOUNDS[code])
    if code == "d":
        return st.floats(allow_nan=False)
    if code == "f":
        return st.floats(width=32, allow_nan=False)
    if code == "?":
        return st.booleans()
    # strings: no NUL, at most 39 bytes of UTF-8
    return st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=39).filter(
        lambda s: len(s.encode()) <= 39
    )


def _equal(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray) or a is None or b is None:
        x = np.asarray([] if a is None else a)
        y = np.asarray([] if b is None else b)
        return x.shape == y.shape and bool(np.array_equal(x.astype(float), y.astype(float)))
    return a == b and type(a) is type(b)


@pytest.mark.parametrize("code", list("?sbBhHiIlLfd"))
@given(data=st.data())
@_HS
def test_round_trip_native(code, data):
    """PVA value -> CA view -> CA put of that view (native type) -> the same PVA value."""
    for array in (False, True):
        N = NTScalar(("a" if array else "") + code)
        x = data.draw(st.lists(representable(code), max_size=5) if array else representable(code))
        V = N.wrap(x)
        k = ca_view_type(N.type)
        assert k is not None
        s = ca_snapshot(V, k)
        W = ca_put_to_value(N.type, k, s.value, k.native, s)
        assert _equal(W["value"], V["value"]), (x, s.value, W["value"])


@pytest.mark.parametrize("code", list("?sbBhHiIlLfd"))
@given(data=st.data())
@_HS
def test_round_trip_through_dbr_string(code, data):
    """PVA value -> DBR_STRING text -> CA put of that text -> the same PVA value (no precision
    declared: the text is the shortest exact one)."""
    N = NTScalar("a" + code)
    x = data.draw(st.lists(representable(code), max_size=5))
    V = N.wrap(x)
    k = ca_view_type(N.type)
    assert k is not None
    s = ca_snapshot(V, k)
    W = ca_put_to_value(N.type, k, value_strings(s), CAType.STRING, s)
    assert _equal(W["value"], V["value"]), (x, value_strings(s))


@given(st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=300))
@_HS
def test_round_trip_long_string(text):
    S = NTScalar("s")
    k = long_string_type(S.type)
    assert k is not None
    s = ca_snapshot(S.wrap(text), k)
    assert s.count == len(text.encode()) + 1
    assert ca_put_to_value(S.type, k, s.value, CAType.CHAR)["value"] == text


@given(
    st.lists(
        st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=20), min_size=1, max_size=40
    ),
    st.data(),
)
@_HS
def test_round_trip_enum(choices, data):
    """An index read over CA and written back (as ENUM, and as its DBR_STRING text when that
    text names a unique state) selects the same state."""
    idx = data.draw(st.integers(0, len(choices) - 1))
    N = NTEnum()
    V = N.wrap(idx, choices=choices)
    k = ca_view_type(N.type)
    assert k is not None
    s = ca_snapshot(V, k)
    assert ca_put_to_value(N.type, k, s.value, CAType.ENUM)["value.index"] == idx
    text = value_strings(s)
    W = ca_put_to_value(N.type, k, text, CAType.STRING, V)
    # the first state with that text (duplicates, and "12" naming state 12, are ambiguous)
    assert W["value.index"] == idx or s.choices[W["value.index"]] == text[0]


@given(st.integers(0, 2**40), st.integers(0, 999_999_999))
def test_stamp_round_trip(sec, ns):
    es, ens = epics_stamp(sec + 631152000, ns)
    assert (es + 631152000, ens) == (sec + 631152000, ns) or es == 0xFFFFFFFF


# ======================================================================= cross-check with an IOC

IOC_SCRIPT = r"""
import os, sys, numpy as np
from softioc import softioc, builder, asyncio_dispatcher
dispatcher = asyncio_dispatcher.AsyncioDispatcher()
builder.SetDeviceName(os.environ["TEST_IOC_PREFIX"])
r = {}
r["AI"] = builder.aIn("AI", initial_value=1.25, LOPR=-10, HOPR=10, EGU="millimetres", PREC=3,
      HIHI=9, HIGH=5, LOW=-5, LOLO=-9, HHSV="MAJOR", HSV="MINOR", LSV="MINOR", LLSV="MAJOR")
r["AO"] = builder.aOut("AO", initial_value=2.5, DRVL=-100, DRVH=100, LOPR=-50, HOPR=50, EGU="V", PREC=2)
r["LI"] = builder.longIn("LI", initial_value=7, LOPR=0, HOPR=1000, EGU="cts", HIGH=5, HSV="MINOR")
r["I64"] = builder.int64In("I64", initial_value=2**40 + 3)
r["SI"] = builder.stringIn("SI", initial_value="hello")
r["SL"] = builder.stringIn("SL", initial_value="x" * 39)
r["LSI"] = builder.longStringIn("LSI", initial_value="x" * 60 + "\u00e9", length=100)
r["MBBI"] = builder.mbbIn("MBBI", "zero", ("one", "MINOR"), "two", initial_value=1)
r["BO"] = builder.boolOut("BO", ZNAM="Off", ONAM="On", initial_value=1)
r["WF"] = builder.WaveformIn("WF", [1.0, 2.0, 3.0], length=100)
r["WFI"] = builder.WaveformIn("WFI", initial_value=[1, 2, 3], length=10, datatype=np.int32)
r["WFC"] = builder.WaveformIn("WFC", initial_value=[1, 200, 3], length=10, datatype=np.uint8)
r["WFB"] = builder.WaveformIn("WFB", initial_value=[-1, 5], length=10, datatype=np.int8)
r["WFS"] = builder.WaveformIn("WFS", initial_value=[-1, 2], length=10, datatype=np.int16)
r["WFF"] = builder.WaveformIn("WFF", initial_value=[0.5, 2.25], length=10, datatype=np.float32)
r["WFE"] = builder.WaveformIn("WFE", initial_value=np.zeros(0), length=5)
for stat in range(1, 22):
    r["ALM%d" % stat] = builder.aIn("ALM%d" % stat, initial_value=0.0, TSE=-2)
builder.LoadDatabase()
softioc.iocInit(dispatcher)
r["AI"].set(9.5)
for stat in range(1, 22):
    r["ALM%d" % stat].set(0.5 * stat, severity=1 + stat % 3, alarm=stat, timestamp=1.5e9 + stat + 0.25)
print("READY", flush=True)
for line in sys.stdin:
    pass
softioc.epicsExit(0)
"""

RECORDS = ["AI", "AO", "LI", "I64", "SI", "SL", "MBBI", "BO", "WF", "WFI", "WFC", "WFB", "WFS", "WFF", "WFE"]
RECORDS += [f"ALM{i}" for i in range(1, 22)]


@pytest.fixture(scope="module")
def ioc():
    """pythonSoftIOC with QSRV2 (PVA) and RSRV (CA) on loopback, free ports; p4p reads PVA,
    caproto's sync client reads CA (its environment points at the IOC only)."""
    pytest.importorskip("softioc")
    p4p_thread = pytest.importorskip("p4p.client.thread")
    pytest.importorskip("caproto")
    from support.client import ServerProcess, free_port, search_conf, server_env

    tcp, udp = free_port(), free_port(socket.SOCK_DGRAM)
    ca_port, rep = free_port(), free_port(socket.SOCK_DGRAM)
    prefix = "CAMAP" + uuid.uuid4().hex[:8].upper()
    ca_env = {
        "EPICS_CA_ADDR_LIST": "127.0.0.1",
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CA_SERVER_PORT": str(ca_port),
        "EPICS_CA_REPEATER_PORT": str(rep),
    }
    env = server_env(
        tcp,
        udp,
        TEST_IOC_PREFIX=prefix,
        EPICS_CAS_INTF_ADDR_LIST="127.0.0.1",
        EPICS_CAS_AUTO_BEACON_ADDR_LIST="NO",
        EPICS_CAS_BEACON_ADDR_LIST="127.0.0.1",
        **ca_env,
    )
    P = ServerProcess(IOC_SCRIPT, env, ready_timeout=60)
    ctx = p4p_thread.Context("pva", conf=search_conf(udp), useenv=False, nt=False)
    try:
        with pytest.MonkeyPatch.context() as mp:
            for k, v in ca_env.items():
                mp.setenv(k, v)
            P.prefix = prefix + ":"
            P.ctx = ctx
            yield P
    finally:
        ctx.close()
        P.stop()


def from_p4p(pv) -> Value:
    """A p4p Value as a capva Value (same type, same contents)."""
    _, tid, fields = pv.type().aspy()
    return Value(Type(fields, id=None if tid == "structure" else tid), pv.todict())


def ca_read(name: str, data_type):
    from caproto.sync.client import read

    return read(name, data_type=data_type, repeater=False, timeout=5)


def ca_native(name: str) -> tuple[int, int]:
    """CREATE_CHAN's native type and count (caproto's sync client, cleaned up as its read())."""
    import caproto as ca
    from caproto.sync import client as cs

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        u.settimeout(5)
        ch = cs.make_channel(name, u, 0, 5)
    try:
        return int(ch.native_data_type), int(ch.native_data_count)
    finally:
        try:
            if ch.states[ca.CLIENT] is ca.CONNECTED:
                cs.send(ch.circuit, ch.clear(), ch.name)
        finally:
            cs.sockets.pop(ch.circuit).close()
            cs.global_circuits.pop((ch.circuit.address, ch.circuit.priority), None)


def _limit_eq(a: float, b, native: CAType) -> bool:
    """Our float limit ``a`` as the IOC sends it in a GR/CTRL of ``native`` type (``b``):
    integer DBRs carry a NaN limit as 0; caproto gives CHAR limits as bytes."""
    b = float(int.from_bytes(b, "little")) if isinstance(b, bytes) else float(b)
    if math.isnan(a) and native not in (CAType.FLOAT, CAType.DOUBLE):
        a = 0.0
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.mark.timeout(120)
@pytest.mark.parametrize("rec", RECORDS)
def test_matches_the_ioc_over_ca(ioc, rec):
    name = ioc.prefix + rec
    V = from_p4p(ioc.ctx.get(name, timeout=5))
    k = ca_view_type(V.type())
    assert k is not None
    s = ca_snapshot(V, k)

    native, count = ca_native(name)
    assert native == k.native
    if k.array:
        assert count >= s.count  # the IOC reports NELM; we report the length at creation
    else:
        assert count == 1 == native_count(k, V)

    ctrl = ca_read(name, "control")
    assert ctrl.data_count == s.count
    if isinstance(s.value, list):
        assert list(ctrl.data) == s.value
    else:
        assert np.asarray(ctrl.data).tolist() == s.value.tolist()
    m = ctrl.metadata
    assert (int(m.status), int(m.severity)) == (s.status, s.severity)
    if k.native == CAType.ENUM:
        assert tuple(m.enum_strings) == s.enum_strings
    elif k.native != CAType.STRING:
        assert m.units == s.units
        limits = ["upper_disp_limit", "lower_disp_limit", "upper_ctrl_limit", "lower_ctrl_limit"]
        alarm_limits = [
            "upper_alarm_limit",
            "upper_warning_limit",
            "lower_warning_limit",
            "lower_alarm_limit",
        ]
        if rec.startswith("WF") and k.native in (CAType.FLOAT, CAType.DOUBLE):
            # a waveform has no alarm limits: RSRV sends NaN, QSRV2 leaves valueAlarm at 0 (its
            # dbGet reports the limits missing); our mapping of that PVA value says 0
            assert all(getattr(s, f) == 0.0 and math.isnan(getattr(m, f)) for f in alarm_limits)
        else:
            limits += alarm_limits
        for f in limits:
            assert _limit_eq(getattr(s, f), getattr(m, f), k.native), f
        if k.native in (CAType.FLOAT, CAType.DOUBLE):
            assert m.precision == s.precision

    t = ca_read(name, "time")
    assert (t.metadata.stamp.secondsSinceEpoch, t.metadata.stamp.nanoSeconds) == s.stamp

    st_ = ca_read(name, 0)  # DBR_STRING of any channel
    assert list(st_.data) == value_strings(s)

    if rec.startswith("ALM"):
        stat = int(rec[3:])
        assert (V["alarm.severity"], V["alarm.status"], V["alarm.message"]) == pva_alarm(stat, 1 + stat % 3)
        assert s.stamp == (int(1.5e9) + stat - 631152000, 250_000_000)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("rec", ["SI", "SL", "LSI"])
def test_long_string_matches_the_ioc(ioc, rec):
    """``NAME.$`` of a string record, and the VAL of a long-string record (a CHAR array over CA,
    a string over PVA), are what our long-string view of the PVA string gives."""
    name = ioc.prefix + rec + ("" if rec == "LSI" else ".VAL$")
    V = from_p4p(ioc.ctx.get(ioc.prefix + rec, timeout=5))
    k = long_string_type(V.type())
    assert k is not None
    s = ca_snapshot(V, k)
    native, count = ca_native(name)
    assert native == CAType.CHAR
    if rec != "LSI":
        assert count == native_count(k, V) == 40  # as stringin.VAL$
    r = ca_read(name, "native")  # count 0: the current length
    assert r.data_count == s.count and bytes(np.asarray(r.data, np.uint8)) == s.value.tobytes()


def test_metadata_fields_for_a_dbr_encoder():
    V = NTScalar("d", display=True, form=True).wrap(1.0, timestamp=(631152000 + 7, 9))
    V["display.units"] = "V"
    m = snap(V).metadata_fields()
    assert m["seconds"] == 7 and m["nanoseconds"] == 9 and m["units"] == b"V" and m["precision"] == 0
    assert set(m) >= {"status", "severity", "upper_ctrl_limit", "lower_alarm_limit", "enum_strings"}
    assert snap(NTScalar("d").wrap(1.0)).metadata_fields()["precision"] == 0  # undeclared


@pytest.mark.parametrize(
    "make",
    [
        lambda: NTScalar("d").wrap(1.5),
        lambda: NTScalar("i", display=True, control=True, valueAlarm=True).wrap(3),
        lambda: NTScalar("ad", display=True).wrap([1.0, 2.0]),
        lambda: Value(Type([("value", "d")]), {"value": 2.0}),
        # odd layouts: a structure where a scalar is expected, a string limit, a missing
        # sub-field
        lambda: Value(
            Type(
                [
                    ("value", "d"),
                    ("alarm", ("S", None, [("severity", "i")])),
                    ("display", ("S", None, [("units", ("S", None, [("x", "i")])), ("limitHigh", "s")])),
                ]
            ),
            {"value": 1.0, "alarm": {"severity": 2}, "display": {"limitHigh": "high"}},
        ),
    ],
)
def test_meta_fields_read_as_value_get(make):
    """The snapshot's direct storage reads give what ``Value.get`` gives, for every field,
    in every layout (missing fields: None; non-scalar ones: through ``Value.get``)."""
    from capva.camap import _META_PATHS, _meta_fields

    V = make()
    got = _meta_fields(V)
    want = [V.get(p) for p in _META_PATHS]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if isinstance(w, Value):
            assert isinstance(g, Value) and g.todict() == w.todict()
        else:
            assert g == w and type(g) is type(w)
    assert _meta_fields(V) == got  # the memoised plan gives the same
