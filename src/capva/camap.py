"""The one mapping between a PV's PVA :class:`~capva.Value` and its Channel Access view.

Every capva PV holds a PVA Value (usually a Normative Type).  The CA server never keeps a copy of
the data: it asks this module what CA can make of the PV's Type (:func:`ca_view_type`, once, at
channel creation, because a CA channel's native type and element count are fixed then), derives a
protocol-neutral :class:`CASnapshot` from each posted Value (:func:`ca_snapshot`), decides which
subscriptions an update wakes (:func:`dbe_mask`) and turns a CA write back into the Value a PVA put
would have produced (:func:`ca_put_to_value`), so that one put handler serves both protocols.

The rules, and why each was chosen, are in ``docs/ca-pva-mapping.md``; design.md §2 is the summary.
In short:

* ``'d' 'f' 'i' 'h'`` -> DOUBLE FLOAT LONG SHORT; ``'b' 'B'`` -> CHAR; ``'H'`` -> LONG;
  ``'I' 'l' 'L'`` -> DOUBLE (always: the IOC's rule for ULONG/INT64/UINT64, exact to 2**53);
* ``'s'`` -> STRING (at most 39 bytes of UTF-8 plus NUL; the whole string via ``NAME.$``, a
  NUL-terminated CHAR array, see :func:`long_string_type`);
* ``'?'`` -> ENUM with the choices ``"false"``/``"true"`` (pvxs's text for a bool);
* arrays of the above -> arrays of the same native type; NTEnum -> ENUM;
* anything else (unions, variants, tables, images...) -> not served over CA (``None``).

Like :mod:`capva.pva` this module does no I/O: no sockets, threads, clocks or environment.  It
does not depend on the CA wire core either: native types are plain ``0..6`` DBR codes
(:class:`CAType`), values are numpy arrays in native byte order, and strings are ``bytes`` that
are already cut to what the DBR field can hold, so the encoder only has to place them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from .ca.constants import (
    ALARM_STATUSES,
    DBE_ALARM,
    DBE_ARCHIVE,
    DBE_LOG,
    DBE_PROPERTY,
    DBE_VALUE,
    MAX_ENUM_STATES,
    MAX_ENUM_STRING_SIZE,
    MAX_STRING_SIZE,
    MAX_UNITS_SIZE,
)
from .ca.dbr import EPICS_EPOCH_OFFSET as POSIX_TIME_AT_EPICS_EPOCH
from .pva import Type, Value
from .pva.types import SCALAR_CODES

__all__ = [
    "CAType",
    "CAKind",
    "CASnapshot",
    "CAPutError",
    "CABadType",
    "CABadCount",
    "ca_view_type",
    "long_string_type",
    "native_count",
    "ca_snapshot",
    "ca_snapshot_value",
    "value_strings",
    "dbe_mask",
    "ca_put_to_value",
    "ca_alarm",
    "pva_alarm",
    "epics_stamp",
    "truncate_utf8",
    "cvt_float_to_string",
    "ALARM_CONDITIONS",
    "BOOL_CHOICES",
    "DBE_VALUE",
    "DBE_LOG",
    "DBE_ARCHIVE",
    "DBE_ALARM",
    "DBE_PROPERTY",
    "MAX_STRING_SIZE",
    "MAX_UNITS_SIZE",
    "MAX_ENUM_STATES",
    "MAX_ENUM_STRING_SIZE",
    "POSIX_TIME_AT_EPICS_EPOCH",
]


class CAType(IntEnum):
    """The native DBR types (db_access.h ``DBR_STRING`` ... ``DBR_DOUBLE``)."""

    STRING = 0
    SHORT = 1
    FLOAT = 2
    ENUM = 3
    CHAR = 4
    LONG = 5
    DOUBLE = 6


#: numpy dtype (native byte order) of each numeric CA type; STRING has none (bytes per element)
NATIVE_DTYPE: dict[CAType, np.dtype] = {
    CAType.SHORT: np.dtype(np.int16),
    CAType.FLOAT: np.dtype(np.float32),
    CAType.ENUM: np.dtype(np.uint16),
    CAType.CHAR: np.dtype(np.uint8),
    CAType.LONG: np.dtype(np.int32),
    CAType.DOUBLE: np.dtype(np.float64),
}

# DBR field sizes (MAX_STRING_SIZE 40, MAX_UNITS_SIZE 8, 16 enum states of 26 bytes), the
# EPICS epoch and the DBE bits come from capva.ca: one table for the core and the mapping.

#: epicsAlarmConditionStrings: the CA alarm status (STAT) names, indexed by code
ALARM_CONDITIONS = ALARM_STATUSES
_STAT_BY_NAME = {n: i for i, n in enumerate(ALARM_CONDITIONS)}
# pvAccessCPP's CA provider spells them "HIHI_ALARM", "HW_LIMIT_ALARM" (caStatus.cpp); accept both
_STAT_BY_NAME["HW_LIMIT"] = _STAT_BY_NAME["HWLIMIT"]

#: CA STAT -> PVA alarm.status, exactly as QSRV2 maps it (pvxs ioc/iocsource.cpp getTimeAlarm):
#: 0 none, 1 device, 2 driver, 3 record, 4 db
_PVA_STATUS_OF_STAT: tuple[int, ...] = (
    0,  # NO_ALARM
    1,  # READ
    1,  # WRITE
    1,  # HIHI
    1,  # HIGH
    1,  # LOLO
    1,  # LOW
    1,  # STATE
    1,  # COS
    2,  # COMM
    2,  # TIMEOUT
    1,  # HWLIMIT
    3,  # CALC
    3,  # SCAN
    3,  # LINK
    3,  # SOFT
    3,  # BAD_SUB
    2,  # UDF
    4,  # DISABLE
    4,  # SIMM
    4,  # READ_ACCESS
    4,  # WRITE_ACCESS
)

#: PVA alarm.status -> CA STAT when ``alarm.message`` names no CA condition.  The PVA status is a
#: coarse category, so this is the closest single condition (pvData's meaning of each category):
#: none -> SOFT (an alarm raised by software: ``post(v, severity=2)``), device -> HWLIMIT,
#: driver -> COMM, record -> CALC, db -> LINK, conf -> BAD_SUB, undefined -> UDF, client -> SOFT.
_STAT_OF_PVA_STATUS: tuple[int, ...] = (15, 11, 9, 12, 14, 16, 17, 15)
_STAT_SOFT = 15

#: alarm limits of a PV without ``valueAlarm``: NaN, as an IOC sends for records without alarm
#: limits (dbAccess.c get_alarm); NaN reads as "not set" in CA clients, where 0 is a real limit
_NAN = float("nan")

#: the two choices of a PVA bool served as ENUM: pvxs prints and parses a bool as false/true
BOOL_CHOICES: tuple[str, str] = ("false", "true")
_BOOL_CHOICES_B = (b"false", b"true")

# PVA element code -> CA native type (design.md §2, ca-protocol.md §3.1 dbDBRnewToDBRold)
_NATIVE_OF_CODE: dict[str, CAType] = {
    "d": CAType.DOUBLE,
    "f": CAType.FLOAT,
    "i": CAType.LONG,
    "h": CAType.SHORT,
    "b": CAType.CHAR,
    "B": CAType.CHAR,
    "H": CAType.LONG,  # USHORT -> LONG in the IOC: always fits
    "I": CAType.DOUBLE,  # ULONG -> DOUBLE in the IOC
    "l": CAType.DOUBLE,  # INT64 -> DOUBLE in the IOC
    "L": CAType.DOUBLE,  # UINT64 -> DOUBLE in the IOC
    "s": CAType.STRING,
    "?": CAType.ENUM,
}

# value range a CA write may have for each integer PVA code.  'b' accepts [-128, 255]: its CA
# view is CHAR (uint8, the same bits), so both the signed and the CA reading of a byte are valid.
_INT_RANGE: dict[str, tuple[int, int]] = {
    "b": (-128, 255),
    "B": (0, 255),
    "h": (-(1 << 15), (1 << 15) - 1),
    "H": (0, (1 << 16) - 1),
    "i": (-(1 << 31), (1 << 31) - 1),
    "I": (0, (1 << 32) - 1),
    "l": (-(1 << 63), (1 << 63) - 1),
    "L": (0, (1 << 64) - 1),
    "?": (0, 1),
    "enum": (0, (1 << 16) - 1),
}

#: numpy dtype of each PVA element code (as capva.pva.value.DTYPES)
_PVA_DTYPE: dict[str, np.dtype] = {
    "?": np.dtype(np.bool_),
    "b": np.dtype(np.int8),
    "B": np.dtype(np.uint8),
    "h": np.dtype(np.int16),
    "H": np.dtype(np.uint16),
    "i": np.dtype(np.int32),
    "I": np.dtype(np.uint32),
    "l": np.dtype(np.int64),
    "L": np.dtype(np.uint64),
    "f": np.dtype(np.float32),
    "d": np.dtype(np.float64),
}

# ================================================================================================
# the type-level decision
# ================================================================================================


@dataclass(frozen=True, slots=True)
class CAKind:
    """How CA serves a PV of one Type; decided once, when a CA channel is created.

    :param native: the native DBR type reported to clients (CREATE_CHAN ``dtype``)
    :param code: the PVA element code of ``value`` (``'d'``, ``'s'``, ``'?'`` ...) or ``'enum'``
        for an NTEnum (``value`` is ``enum_t {index, choices}``)
    :param array: the PVA ``value`` is an array (a scalar PV has CA count 1)
    :param max_count: the declared maximum length of a bounded or fixed PVA array (or string, for
        ``long_string``), else None: the input of :func:`native_count`
    :param fixed: the PVA array has a fixed length (``max_count``); puts are zero-padded to it
    :param long_string: the ``NAME.$`` view of a string PV: a NUL-terminated CHAR array
    """

    native: CAType
    code: str
    array: bool = False
    max_count: int | None = None
    fixed: bool = False
    long_string: bool = False

    @property
    def dtype(self) -> np.dtype | None:
        """numpy dtype of the CA value (native byte order), None for STRING."""
        return NATIVE_DTYPE.get(self.native)

    @property
    def numeric(self) -> bool:
        """True when GR/CTRL metadata (units, limits, precision) applies: a numeric value,
        neither a string, an enum nor a long string."""
        return self.native not in (CAType.STRING, CAType.ENUM) and not self.long_string


def _is_enum_struct(t: Type) -> bool:
    """``value`` of an NTEnum: a structure with an integer ``index`` and a ``string[] choices``
    (the id is usually ``enum_t`` but not required: decode by name, pva-protocol.md §8)."""
    if t.code != "S" or "index" not in t._index or "choices" not in t._index:
        return False
    idx = t.members[t._index["index"]][1]
    ch = t.members[t._index["choices"]][1]
    return idx.code in "bBhHiIlL" and len(idx.code) == 1 and ch.code == "as"


def ca_view_type(T: Type) -> CAKind | None:
    """What CA can make of a PV of Type ``T``: its :class:`CAKind`, or None if CA cannot carry it.

    Any structure whose ``value`` is a scalar, a scalar array or an ``enum_t`` is served, whatever
    its type id (NTScalar, NTScalarArray, NTEnum, QSRV layouts, plain ``{value: 'd'}``).  The
    native type is a function of the Type alone, never of the current value: a CA channel's
    native type cannot change while it is open.  Unions, variants, structures and structure
    arrays as ``value`` (NTNDArray, NTTable, NTMultiChannel ...) and Types without ``value`` give
    None: such PVs are not found by CA searches (design.md §2, last row).
    """
    if not isinstance(T, Type):
        return None
    return _per_type("ca_kind", T, _ca_view_type)


_MISSING: Any = object()


def _per_type(key: str, T: Type, make: Callable[[Type], Any]) -> Any:
    """``make(T)``, kept in the Type's own cache under ``key``: Types are immutable, and a
    search or a channel creation asks about the same few Types over and over."""
    made = T._cache.get(key, _MISSING)
    if made is _MISSING:
        made = T._cache[key] = make(T)
    return made


def _ca_view_type(T: Type) -> CAKind | None:
    if not isinstance(T, Type) or T.code != "S":
        return None
    v = T._lookup("value")
    if v is None:
        return None
    code = v.code
    if code == "S":
        return CAKind(CAType.ENUM, "enum") if _is_enum_struct(v) else None
    array = len(code) == 2 and code[0] == "a"
    elem = code[1] if array else code
    if elem not in SCALAR_CODES:
        return None  # 'v', 'U', 'aS', 'aU', 'av'
    native = _NATIVE_OF_CODE[elem]
    if array:
        return CAKind(native, elem, True, v.bound, bool(v.fixed))
    return CAKind(native, elem)


def long_string_type(T: Type) -> CAKind | None:
    """The ``NAME.$`` view of a PV: a CHAR array holding the whole string, UTF-8 and
    NUL-terminated, for PVs whose ``value`` is a scalar string; None otherwise.

    This is how an IOC serves strings longer than DBR_STRING's 39 characters (``FIELD$``,
    ca-protocol.md §6.1), what ``caget -S``, PyDM and archivers use.
    """
    if not isinstance(T, Type) or T.code != "S":
        return None
    v = T._lookup("value")
    if v is None or v.code != "s":
        return None
    return CAKind(CAType.CHAR, "s", max_count=None if v.bound is None else v.bound + 1, long_string=True)


def native_count(kind: CAKind, V: Value | None = None) -> int:
    """The element count a CA channel reports at creation (CREATE_CHAN ``dcnt``).

    * scalars (and NTEnum): 1;
    * arrays: the declared maximum (bounded/fixed arrays), else the current length, at least 1
      (an IOC never reports 0: NELM >= 1, and some clients mis-handle a zero count);
    * ``NAME.$``: the declared bound + 1, else the current length in bytes + the NUL, at least
      ``MAX_STRING_SIZE`` (what ``stringin.VAL$`` reports).

    Reads and subscriptions with count 0 follow the current length (:attr:`CASnapshot.count`),
    so a PV that grows later is still served whole to modern clients.
    """
    if kind.max_count is not None:
        return kind.max_count
    if kind.long_string:
        n = len(_long_string_bytes(V.get("value", "") if V is not None else "")) + 1
        return max(MAX_STRING_SIZE, n)
    if not kind.array:
        return 1
    if V is None:
        return 1
    cur = V.get("value")
    return max(1, 0 if cur is None else len(cur))


# ================================================================================================
# Value -> CA view
# ================================================================================================


def truncate_utf8(s: str | bytes, limit: int) -> bytes:
    """``s`` as UTF-8 bytes, cut at the first NUL and to at most ``limit`` bytes without
    splitting a multi-byte character.

    CA strings are C strings (a NUL ends them) in fixed-size fields; cutting inside a character
    would leave clients an invalid UTF-8 tail.  Undecodable bytes that arrived from CA are kept
    as they were (``surrogateescape``, like the PVA codec).
    """
    b = s if isinstance(s, bytes) else s.encode("utf-8", "surrogateescape")
    nul = b.find(b"\0")
    if nul >= 0:
        b = b[:nul]
    if len(b) <= limit:
        return b
    n = limit
    # back off over continuation bytes (10xxxxxx) to the start of the cut character
    while n > 0 and (b[n] & 0xC0) == 0x80 and limit - n < 3:
        n -= 1
    return b[:n]


def _long_string_bytes(s: str) -> bytes:
    b = s.encode("utf-8", "surrogateescape")
    nul = b.find(b"\0")
    return b if nul < 0 else b[:nul]


def epics_stamp(seconds: int, nanoseconds: int) -> tuple[int, int]:
    """A PVA ``timeStamp`` (POSIX seconds) as the CA stamp (u32 seconds since 1990, u32 ns).

    Times before 1990 (notably the zero stamp of a Value nobody stamped) become ``(0, 0)``,
    which CA tools show as ``<undefined>``; times after 2126 saturate.  Nanoseconds outside
    ``0 .. 999999999`` carry into the seconds.
    """
    extra, ns = divmod(int(nanoseconds), 1_000_000_000)
    sec = int(seconds) + extra - POSIX_TIME_AT_EPICS_EPOCH
    if sec < 0:
        return 0, 0
    if sec > 0xFFFFFFFF:
        return 0xFFFFFFFF, 999_999_999
    return sec, ns


def ca_alarm(severity: int, status: int, message: str = "") -> tuple[int, int]:
    """PVA ``alarm`` -> CA ``(STAT, SEVR)``.

    * SEVR: PVA severity 0..3 as is; anything else (pvData's 4 "UNDEFINED", negative) -> INVALID.
    * STAT: NO_ALARM when the severity is NO_ALARM (an IOC never has one without the other);
      else the condition named by ``message`` when it names one, as QSRV does (``"HIHI"``; also
      pvAccessCPP's ``"HIHI_ALARM"``, any case); else a default per PVA status category
      (``_STAT_OF_PVA_STATUS``: none/client -> SOFT, device -> HWLIMIT, driver -> COMM,
      record -> CALC, db -> LINK, conf -> BAD_SUB, undefined -> UDF).
    """
    sevr = severity if 0 <= severity <= 3 else 3
    if sevr == 0:
        return 0, 0
    if message:
        name = message.strip().upper()
        if name.endswith("_ALARM"):
            name = name[:-6]
        stat = _STAT_BY_NAME.get(name)
        if stat is not None and stat != 0:
            return stat, sevr
    if 0 <= status < len(_STAT_OF_PVA_STATUS):
        return _STAT_OF_PVA_STATUS[status], sevr
    return _STAT_SOFT, sevr


def pva_alarm(stat: int, sevr: int) -> tuple[int, int, str]:
    """CA ``(STAT, SEVR)`` -> PVA ``(severity, status, message)`` exactly as QSRV2 builds it:
    the status category from pvxs's table and the condition's name as the message (empty for
    NO_ALARM).  For Python IOCs that compute alarms the record way; ``ca_alarm`` inverts it."""
    if 0 <= stat < len(ALARM_CONDITIONS):
        return sevr, _PVA_STATUS_OF_STAT[stat], (ALARM_CONDITIONS[stat] if stat else "")
    return sevr, 6, ""


def _precision(p: Any, fmt: Any, kind: CAKind) -> int | None:
    """``display.precision`` ``p`` (QSRV, pvxs, p4p ``form=True``), else the digits of a
    printf ``display.format`` ``fmt`` such as ``"%.3f"`` (p4p's older layout), else None
    (undeclared)."""
    if isinstance(p, int) and not isinstance(p, bool):
        return max(-32768, min(32767, p))
    if isinstance(fmt, str) and fmt:
        m = re.search(r"%[-+ #0]*\d*\.(\d+)[eEfFgG]", fmt)
        if m:
            return int(m.group(1))
    if kind.native in (CAType.FLOAT, CAType.DOUBLE) and kind.code not in "fd":
        return 0  # integers served as DOUBLE print as integers
    return None


def _num(x: Any, missing: float = 0.0) -> float:
    if x is None or isinstance(x, (str, Value, list, np.ndarray)):
        return missing
    try:
        return float(x)
    except (TypeError, ValueError, OverflowError):
        return 0.0


def _frozen(a: np.ndarray) -> np.ndarray:
    if a.flags.writeable:
        a.flags.writeable = False
    return a


def _ca_array(kind: CAKind, raw: Any) -> np.ndarray:
    """The PVA numeric value (scalar, array or None for an empty array) as the CA native array.
    Same-dtype arrays are shared (Values store read-only arrays), 'b' is viewed as uint8."""
    code = kind.code
    dt = NATIVE_DTYPE[kind.native]
    if raw is None:
        return _frozen(np.zeros(0, dt))
    if isinstance(raw, np.ndarray):
        a = raw
    else:
        a = np.array([raw], dtype=_PVA_DTYPE[code])
    if code == "b":
        return _frozen(a.view(np.uint8))
    if a.dtype == dt:
        return _frozen(a)
    return _frozen(a.astype(dt))


@dataclass(frozen=True, slots=True, eq=False)
class CASnapshot:
    """Everything a DBR of any family (plain, STS, TIME, GR, CTRL) needs, derived from one Value.

    The CA encoder converts ``value`` and the limits to the requested DBR type; the limits are
    floats here whatever the native type (they are doubles in most PVA layouts).  Alarm and
    warning limits are NaN when the PV has no ``valueAlarm`` (as an IOC record without alarm
    limits); converted to an integer DBR type a NaN limit must become 0.  Text fields
    are ``bytes`` already cut to fit their DBR field with the terminating NUL (see
    :func:`truncate_utf8`), so the encoder only has to pad them with zeros.
    """

    kind: CAKind
    #: the value: a read-only numpy array of the native dtype, or ``list[bytes]`` for STRING
    #: (each at most 39 bytes); ENUM values are indexes (uint16)
    value: np.ndarray | list[bytes]
    #: current number of elements: what a count-0 read or subscription carries
    count: int
    #: CA alarm status (epicsAlarmCondition) and severity (0..3), see :func:`ca_alarm`
    status: int
    severity: int
    #: ``(seconds since 1990, nanoseconds)``, see :func:`epics_stamp`
    stamp: tuple[int, int]
    #: GR/CTRL ``units``: at most 7 bytes (RSRV always NUL-terminates the 8-byte field)
    units: bytes = b""
    #: ``display.precision``; None when the PV declares none (GR/CTRL then carry 0, and a
    #: DBR_STRING rendition uses the shortest exact text, see :func:`value_strings`)
    precision: int | None = None
    upper_disp_limit: float = 0.0
    lower_disp_limit: float = 0.0
    upper_alarm_limit: float = 0.0
    upper_warning_limit: float = 0.0
    lower_warning_limit: float = 0.0
    lower_alarm_limit: float = 0.0
    upper_ctrl_limit: float = 0.0
    lower_ctrl_limit: float = 0.0
    #: GR/CTRL_ENUM state strings: the first 16 choices, each at most 25 bytes
    enum_strings: tuple[bytes, ...] = ()
    #: every choice, each at most 39 bytes: the DBR_STRING text of an ENUM index (index >= 16
    #: included), and what a DBR_STRING write is matched against
    choices: tuple[bytes, ...] = ()

    @property
    def enum_overflow(self) -> int:
        """How many choices GR/CTRL_ENUM cannot list (more than 16): for a server to report."""
        return max(0, len(self.choices) - MAX_ENUM_STATES)

    def metadata_fields(self) -> dict[str, Any]:
        """The DBR metadata by pyepics/caproto field name (``status``, ``severity``,
        ``seconds``, ``nanoseconds``, ``units``, ``precision``, the eight limits,
        ``enum_strings``): keyword arguments for a DBR encoder's metadata record.  An
        undeclared precision is 0 there."""
        return {
            "status": self.status,
            "severity": self.severity,
            "seconds": self.stamp[0],
            "nanoseconds": self.stamp[1],
            "units": self.units,
            "precision": 0 if self.precision is None else self.precision,
            "upper_disp_limit": self.upper_disp_limit,
            "lower_disp_limit": self.lower_disp_limit,
            "upper_alarm_limit": self.upper_alarm_limit,
            "upper_warning_limit": self.upper_warning_limit,
            "lower_warning_limit": self.lower_warning_limit,
            "lower_alarm_limit": self.lower_alarm_limit,
            "upper_ctrl_limit": self.upper_ctrl_limit,
            "lower_ctrl_limit": self.lower_ctrl_limit,
            "enum_strings": self.enum_strings,
        }

    def meta_key(self) -> tuple:
        """The DBE_PROPERTY part of the snapshot (metadata), comparable with ``==``."""
        lim = tuple(
            _nan_key(x)
            for x in (
                self.upper_disp_limit,
                self.lower_disp_limit,
                self.upper_alarm_limit,
                self.upper_warning_limit,
                self.lower_warning_limit,
                self.lower_alarm_limit,
                self.upper_ctrl_limit,
                self.lower_ctrl_limit,
            )
        )
        return (self.units, self.precision, lim, self.enum_strings, self.choices)


def _nan_key(x: float) -> Any:
    return "nan" if x != x else x


def ca_snapshot(V: Value, kind: CAKind) -> CASnapshot:
    """The CA view of the Value ``V`` (of a Type for which ``kind`` was decided).

    Values: see :class:`CASnapshot`.  An NTEnum index outside ``0..65535`` reads as 65535 (no
    state).  Missing metadata reads as an IOC sends it for a record that lacks it: zero/empty,
    and NaN for alarm and warning limits.  Metadata is only filled for numeric kinds (STRING and
    ENUM DBRs have no limits and units; numeric GR/CTRL of an enum channel carry zeros).
    """
    code = kind.code
    choices: tuple[bytes, ...] = ()
    enum_strings: tuple[bytes, ...] = ()
    value: np.ndarray | list[bytes]
    if kind.long_string:
        b = _long_string_bytes(V["value"]) + b"\0"
        value = _frozen(np.frombuffer(b, np.uint8))
    elif code == "enum":
        idx = V["value.index"]
        value = _frozen(np.array([idx if 0 <= idx <= 0xFFFF else 0xFFFF], np.uint16))
        names = V["value.choices"] or []
        choices = tuple(truncate_utf8(c, MAX_STRING_SIZE - 1) for c in names)
        enum_strings = tuple(truncate_utf8(c, MAX_ENUM_STRING_SIZE - 1) for c in names[:MAX_ENUM_STATES])
    elif code == "s":
        raw = V["value"]
        if kind.array:
            value = [truncate_utf8(x, MAX_STRING_SIZE - 1) for x in raw]
        else:
            value = [truncate_utf8(raw, MAX_STRING_SIZE - 1)]
    elif code == "?":
        raw = V["value"]
        if raw is None:
            raw = []  # an empty array reads as None
        value = _frozen(np.asarray(raw if kind.array else [raw], dtype=np.bool_).astype(np.uint16))
        choices = enum_strings = _BOOL_CHOICES_B
    else:
        value = _ca_array(kind, V["value"])

    (sev, st, msg, sec, ns, units, prec, fmt, dhi, dlo, ahi, whi, wlo, alo, chi, clo) = _meta_fields(V)
    stat, sevr = ca_alarm(sev or 0, st or 0, msg or "")
    stamp = epics_stamp(sec or 0, ns or 0)
    count = len(value)
    if not kind.numeric:
        return CASnapshot(kind, value, count, stat, sevr, stamp, enum_strings=enum_strings, choices=choices)
    return CASnapshot(
        kind,
        value,
        count,
        stat,
        sevr,
        stamp,
        units=truncate_utf8(units if isinstance(units, str) else "", MAX_UNITS_SIZE - 1),
        precision=_precision(prec, fmt, kind),
        upper_disp_limit=_num(dhi),
        lower_disp_limit=_num(dlo),
        upper_alarm_limit=_num(ahi, _NAN),
        upper_warning_limit=_num(whi, _NAN),
        lower_warning_limit=_num(wlo, _NAN),
        lower_alarm_limit=_num(alo, _NAN),
        upper_ctrl_limit=_num(chi),
        lower_ctrl_limit=_num(clo),
    )


#: the fields every snapshot reads besides ``value``, in :func:`_meta_fields`'s order
_META_PATHS = (
    "alarm.severity",
    "alarm.status",
    "alarm.message",
    "timeStamp.secondsPastEpoch",
    "timeStamp.nanoseconds",
    "display.units",
    "display.precision",
    "display.format",
    "display.limitHigh",
    "display.limitLow",
    "valueAlarm.highAlarmLimit",
    "valueAlarm.highWarningLimit",
    "valueAlarm.lowWarningLimit",
    "valueAlarm.lowAlarmLimit",
    "control.limitHigh",
    "control.limitLow",
)


def _meta_plan(T: Type) -> tuple[int | str | None, ...]:
    """For each of ``_META_PATHS`` in ``T``: the storage index of a plain scalar field, None
    for a field ``T`` lacks, the path itself for one of another kind (read with
    ``Value.get``)."""
    plan: list[int | str | None] = []
    for path in _META_PATHS:
        rel = T._paths.get(path)
        plan.append(None if rel is None else rel if T._nodes[rel].code in SCALAR_CODES else path)
    return tuple(plan)


def _meta_fields(V: Value) -> list[Any]:
    """The values of ``_META_PATHS`` in ``V`` (None where missing), as ``V.get`` gives them.

    Why: a first read of each of 1000 channels computes 1000 snapshots; 16 ``Value.get``
    calls were 4 of a snapshot's 10 µs.  Plain scalar fields are read straight from the
    Value's storage (their getter is the identity), at indexes found once per Type."""
    vals = V._s.vals
    b = V._b
    return [vals[b + p] if type(p) is int else p and V.get(p) for p in _per_type("ca_meta", V._T, _meta_plan)]


def ca_value(V: Value, kind: CAKind) -> np.ndarray:
    """``ca_snapshot(V, kind).value`` alone, for a numeric ``kind`` (:attr:`CAKind.numeric`).

    Why: a plain DBR carries the value and nothing else, and a channel's first read is usually
    plain (caget, pyepics, an archiver connecting 1000 channels); the snapshot's alarm, time and
    metadata were half the cost of such a read.

    >>> from capva.nt import NTScalar
    >>> V = NTScalar("i").wrap(7)
    >>> ca_value(V, ca_view_type(V.type())).tolist()
    [7]
    """
    return _ca_array(kind, V["value"])


def ca_snapshot_value(V: Value, prev: CASnapshot) -> CASnapshot:
    """``prev`` with the value and time stamp of ``V``: the fast path for a post that changed
    nothing but those (alarm and metadata are taken as they were).  Numeric kinds only; for
    others this is :func:`ca_snapshot`.

    >>> from capva.nt import NTScalar
    >>> V = NTScalar("d").wrap(1.5)
    >>> snap = ca_snapshot(V, ca_view_type(V.type()))
    >>> V["value"] = 2.5
    >>> ca_snapshot_value(V, snap).value.tolist()
    [2.5]
    """
    kind = prev.kind
    if not kind.numeric or kind.code == "?":
        return ca_snapshot(V, kind)
    value = _ca_array(kind, V["value"])
    stamp = epics_stamp(V.get("timeStamp.secondsPastEpoch", 0), V.get("timeStamp.nanoseconds", 0))
    p = prev  # positional: a third of dataclasses.replace()'s cost, on every post
    return CASnapshot(
        kind,
        value,
        len(value),
        p.status,
        p.severity,
        stamp,
        p.units,
        p.precision,
        p.upper_disp_limit,
        p.lower_disp_limit,
        p.upper_alarm_limit,
        p.upper_warning_limit,
        p.lower_warning_limit,
        p.lower_alarm_limit,
        p.upper_ctrl_limit,
        p.lower_ctrl_limit,
        p.enum_strings,
        p.choices,
    )


_FRAC_MULTIPLIER = (1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000)


def cvt_float_to_string(x: float, precision: int, f32: bool = False) -> str:
    """libCom's ``cvtDoubleToString`` / ``cvtFloatToString`` (cvtFast.c, base 7.0): how an IOC
    prints a DOUBLE/FLOAT value with PREC digits for a DBR_STRING read.

    Up to +/-1e7 with at most 8 digits the IOC rounds half up (0.5 -> "1", where printf gives
    "0"); above that it uses ``%.*f`` (at most 3 digits) and beyond 1e16 (1e8 for FLOAT), or
    with more than 8 digits, ``%*.*e``.  The FLOAT variant computes the fraction in float32.
    """
    p = max(0, int(precision))
    if f32:
        x = float(np.float32(x))
    if math.isnan(x) or p > 8 or x > 1e7 or x < -1e7:
        huge = (x >= 1e8 or x <= -1e8) if f32 else (x > 1e16 or x < -1e16)
        if p > 8 or huge:
            p = min(p, 12 if f32 else 17)
            return f"{x:{p + (6 if f32 else 7)}.{p}e}"
        return f"{x:.{min(p, 3)}f}"
    sign = ""
    if x < 0:
        sign = "-"
        x = -x
    whole = int(x)
    fplace = _FRAC_MULTIPLIER[p]
    if f32:
        ftemp = np.float32(x) - np.float32(whole)
        fraction = int(ftemp * np.float32(fplace) * np.float32(10))
    else:
        fraction = int((x - whole) * fplace * 10)
    fraction = (fraction + 5) // 10  # round half up
    if fraction // fplace >= 1:
        whole += 1
        fraction -= fplace
    if p == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction:0{p}d}"


def _format_float(x: float, precision: int | None, f32: bool) -> str:
    """A DBR_STRING number: the IOC's PREC rule when the PV declares a precision, else the
    shortest text that reads back as the same number (float32 for FLOAT): no digit is lost
    for PVs that never said how many digits matter."""
    if precision is not None:
        return cvt_float_to_string(x, precision, f32)
    if math.isnan(x):
        return "nan"
    return str(np.float32(x)) if f32 else repr(float(x))


def value_strings(snap: CASnapshot) -> list[bytes]:
    """The DBR_STRING rendition of ``snap.value`` (what a STRING/STS/TIME_STRING read of any
    channel carries), each element at most 39 bytes.

    * STRING: the value; ENUM: the choice text (``b""`` for an index without one, as RSRV gives
      for an unused mbbo state); ``NAME.$``: the string itself (cut to 39 bytes);
    * floats: ``precision`` digits when the PV declares a precision, exactly as an IOC prints
      them (:func:`cvt_float_to_string`), else the shortest text that reads back exactly;
    * integers: decimal.
    """
    kind = snap.kind
    v = snap.value
    if isinstance(v, list):
        return list(v)
    if kind.long_string:
        return [truncate_utf8(v.tobytes(), MAX_STRING_SIZE - 1)]
    if kind.native == CAType.ENUM:
        ch = snap.choices
        return [ch[i] if i < len(ch) else b"" for i in v.tolist()]
    if kind.native in (CAType.FLOAT, CAType.DOUBLE):
        f32 = kind.native == CAType.FLOAT
        p = snap.precision
        return [_format_float(x, p, f32).encode()[: MAX_STRING_SIZE - 1] for x in v.tolist()]
    if kind.code == "b":
        v = v.view(np.int8)  # an IOC prints a signed CHAR field signed, although CA carries it as uint8
    return [str(x).encode() for x in v.tolist()]


# ================================================================================================
# which subscriptions an update wakes
# ================================================================================================


def _same_value(a: np.ndarray | list[bytes], b: np.ndarray | list[bytes]) -> bool:
    if isinstance(a, list) or isinstance(b, list):
        return a == b
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def dbe_mask(old: CASnapshot | None, new: CASnapshot, changed_fields: Iterable[str] | None = None) -> int:
    """The DBE bits an update carries (ca-protocol.md §5.1).

    * VALUE | LOG: the post marked ``value`` (or ``value.index``), or the CA value differs.  A
      post of the same value is delivered, as it is to PVA subscribers (and as an IOC array
      write always posts): posting is the server's statement that there is news.
    * ALARM: the CA status or severity differ (marking ``alarm`` with the same alarm, or a new
      ``alarm.message`` that maps to the same STAT, is no CA alarm event; recGblResetAlarms).
    * PROPERTY: units, precision, any limit or the enum strings differ (display / control /
      valueAlarm / ``value.choices``).

    ``changed_fields`` is the post's ``Value.changedSet()``; ``""`` or None in it means the
    whole structure.  With no ``old`` snapshot (the first update) every bit is set.
    """
    if old is None:
        return DBE_VALUE | DBE_LOG | DBE_ALARM | DBE_PROPERTY
    mask = 0
    fields: set[Any] = set(changed_fields or ())
    if (
        "value" in fields
        or "value.index" in fields
        or "" in fields
        or None in fields
        or old.count != new.count
        or not _same_value(old.value, new.value)
    ):
        mask |= DBE_VALUE | DBE_LOG
    if old.status != new.status or old.severity != new.severity:
        mask |= DBE_ALARM
    if old.meta_key() != new.meta_key():
        mask |= DBE_PROPERTY
    return mask


# ================================================================================================
# CA put -> Value
# ================================================================================================


class CAPutError(ValueError):
    """A CA write that cannot become a PVA put.  ``eca_name`` is the CA status to reply with."""

    eca_name = "ECA_PUTFAIL"


class CABadType(CAPutError):
    """The DBR type of the write is not one this channel accepts (not a plain type 0..6)."""

    eca_name = "ECA_BADTYPE"


class CABadCount(CAPutError):
    """A write of no elements to a scalar channel."""

    eca_name = "ECA_BADCOUNT"


_INT_TEXT = re.compile(r"[+-]?[0-9]+\Z")
_HEX_TEXT = re.compile(r"[+-]?0[xX][0-9a-fA-F]+\Z")


def _parse_text(text: str, integer: bool, what: str) -> int | float:
    """A DBR_STRING element written to a number: RSRV's strtod/strtol rules, stricter about
    junk.  Blanks around are allowed, empty means 0, hexadecimal (``0x10``) is read, a real
    number written to an integer is truncated toward zero, overflow (``"1e400"``) fails as on
    RSRV; trailing junk is an error (RSRV accepts ``"12abc"`` as 12: silently wrong data is
    worse than a failed put).  Integers come back exact (Python ints of any size)."""
    t = text.strip()
    if not t:
        return 0 if integer else 0.0
    if _INT_TEXT.match(t) or _HEX_TEXT.match(t):
        v = int(t, 16 if "x" in t or "X" in t else 10)
        if integer:
            return v
        try:
            return float(v)
        except OverflowError:
            raise CAPutError(f"{what}: {text!r} is out of range") from None
    try:
        x = float(t)
    except ValueError:
        try:
            if not re.match(r"[+-]?0[xX]", t):  # fromhex would read "12abc" as hexadecimal
                raise ValueError(t)
            x = float.fromhex(t)  # C99 hexadecimal floats: 0x1.8p1
        except (ValueError, OverflowError):
            raise CAPutError(f"{what}: {text!r} is not a number") from None
    if math.isinf(x) and "inf" not in t.lower():
        raise CAPutError(f"{what}: {text!r} is out of range")
    if integer:
        if not math.isfinite(x):
            raise CAPutError(f"{what}: {text!r} is not a finite number")
        return int(x)
    return x


def _texts(values: Any) -> list[str]:
    """DBR_STRING payload elements (bytes, str, or a numpy 'S' array) as str, each cut at its
    first NUL and decoded as UTF-8 (undecodable bytes kept, as the PVA codec does)."""
    if isinstance(values, (bytes, str)):
        values = [values]
    out = []
    for e in values:
        if isinstance(e, np.bytes_):
            e = bytes(e)
        if isinstance(e, bytes):
            nul = e.find(b"\0")
            out.append((e if nul < 0 else e[:nul]).decode("utf-8", "surrogateescape"))
        elif isinstance(e, str):
            nul = e.find("\0")
            out.append(e if nul < 0 else e[:nul])
        else:
            raise CAPutError(f"a DBR_STRING write carries text, not {type(e).__name__}")
    return out


def _numbers(values: Any, what: str) -> np.ndarray:
    """A numeric payload as a 1-d numpy array (int64/uint64/float64 or the DBR dtype)."""
    a = np.asarray(values)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1:
        raise CAPutError(f"{what}: a CA write is 1-d, not shape {a.shape}")
    if a.dtype.kind == "b":
        a = a.astype(np.uint8)
    if a.dtype.kind not in "iuf":
        raise CAPutError(f"{what}: expected numbers, not {a.dtype}")
    return a


def _check_int_range(a: np.ndarray, code: str, what: str) -> np.ndarray:
    """``a`` (numbers) as int64/uint64 integers in the range of ``code``: reals truncate toward
    zero (C cast, as RSRV), NaN/inf and values out of range fail (RSRV's result is platform
    defined there, ca-protocol.md §3.4; a failed put is deterministic)."""
    lo, hi = _INT_RANGE[code]
    if a.size == 0:
        return a.astype(np.int64)
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise CAPutError(f"{what}: NaN or infinity cannot be written to an integer")
        a = np.trunc(a)
    # Python compares int and float exactly, so these bounds hold for 2**63 and 2**64 too
    mn, mx = a.min().item(), a.max().item()
    if mn < lo or mx > hi:
        bad = mn if mn < lo else mx
        raise CAPutError(f"{what}: {bad!r} is out of range [{lo}, {hi}]")
    return a.astype(np.uint64 if code == "L" else np.int64)


def _to_pva_numbers(a: np.ndarray, code: str, what: str) -> np.ndarray:
    """Numbers from a CA write as an array of the PVA element type ``code``."""
    if code in "df":
        out = a.astype(np.float64)
        if code == "f":
            with np.errstate(over="ignore"):
                f = out.astype(np.float32)
            bad = np.isinf(f) & np.isfinite(out)  # rounds beyond float32's largest value
            if bad.any():
                raise CAPutError(f"{what}: {out[bad][0]!r} does not fit a float32")
            return f
        return out
    ints = _check_int_range(a, code, what)
    if code == "b":
        return np.where(ints > 127, ints - 256, ints).astype(np.int8)
    if code == "?":
        return ints.astype(np.bool_)
    return ints.astype(_PVA_DTYPE[code])


def _number_texts(a: np.ndarray) -> list[str]:
    """Numbers written to a string PV: integers in decimal, reals as the shortest exact text."""
    if a.dtype.kind == "f":
        f32 = a.dtype.itemsize == 4
        return [_format_float(x, None, f32) for x in a.tolist()]
    return [str(x) for x in a.tolist()]


def _enum_index(text: str, choices: Sequence[str], what: str) -> int:
    """A DBR_STRING written to an ENUM: an exact choice (first match), else a choice whose
    39-byte CA text (what a client read) is the text, else a decimal index of an existing
    choice (RSRV's rule, ca-protocol.md §3.4)."""
    for i, c in enumerate(choices):
        if c == text:
            return i
    cut = truncate_utf8(text, MAX_STRING_SIZE - 1)
    for i, c in enumerate(choices):
        if truncate_utf8(c, MAX_STRING_SIZE - 1) == cut:
            return i
    t = text.strip()
    if _INT_TEXT.match(t):
        i = int(t, 10)
        if 0 <= i < len(choices):
            return i
    raise CAPutError(f"{what}: {text!r} is not one of the choices {list(choices)}")


def _current_choices(current: Value | CASnapshot | None) -> list[str]:
    """The enum choices to match a DBR_STRING write against.  A snapshot's choices are the
    (cut) texts CA clients read, which is exactly what they write back."""
    if current is None:
        return []
    if isinstance(current, CASnapshot):
        return [c.decode("utf-8", "surrogateescape") for c in current.choices]
    return list(current.get("value.choices") or [])


def ca_put_to_value(
    T: Type,
    kind: CAKind | None,
    values: Any,
    dbr_type: int,
    current: Value | CASnapshot | None = None,
) -> Value:
    """A CA write as the Value a PVA put would have produced: a new Value of ``T`` with only
    ``value`` (``value.index`` for an NTEnum) assigned and marked.

    :param T: the PV's Type
    :param kind: ``ca_view_type(T)`` (or ``long_string_type(T)`` for ``NAME.$``); None computes
        ``ca_view_type(T)``
    :param values: the decoded payload: numbers (a numpy array of the DBR's dtype, any byte
        order, or a sequence) or, for DBR_STRING, a sequence of ``bytes``/``str`` (or a numpy
        ``S40`` array); its length is the CA count
    :param dbr_type: the plain DBR type of the payload, 0..6
    :param current: the PV's current Value or latest :class:`CASnapshot`: the enum choices a
        string write is matched against (NTEnum only)

    Rules (``docs/ca-pva-mapping.md``): numbers convert to the PVA type with range checks
    (reals truncate toward zero into integers; out of range, NaN into an integer, a float32
    overflow fail); text parses as a number (:func:`_parse_text`); numbers written to a string
    become their decimal/shortest text; an ENUM takes an index or a choice string; a bool takes
    0/1 or ``"false"``/``"true"``.  A scalar takes the first element of a longer write; an
    array takes the written elements (its new length), cut to a declared maximum; ``NAME.$``
    takes bytes up to the first NUL as UTF-8.

    :raises CABadType: ``dbr_type`` is not 0..6 (or the PV has no CA view)
    :raises CABadCount: no element written to a scalar
    :raises CAPutError: the value does not fit (becomes ECA_PUTFAIL)
    """
    if kind is None:
        kind = ca_view_type(T)
        if kind is None:
            raise CABadType(f"a PV of type {T.getID()} has no Channel Access view")
    try:
        dbr = CAType(int(dbr_type))
    except ValueError:
        raise CABadType(f"DBR type {dbr_type!r} cannot be written (plain types 0..6 only)") from None
    is_text = dbr == CAType.STRING
    if (
        kind.code == "d"
        and not kind.array
        and not is_text
        and isinstance(values, np.ndarray)
        and values.dtype.kind in "fiu"
        and values.size
    ):
        # the commonest write, a number to a double scalar: every CA number fits exactly
        V = Value(T)
        V["value"] = float(values.flat[0])
        return V
    what = f"CA put ({dbr.name}) to {kind.code if kind.code != 'enum' else 'enum'} value"
    if is_text:
        items: Any = _texts(values)
        n = len(items)
    else:
        items = _numbers(values, what)
        n = int(items.size)

    V = Value(T)
    code = kind.code

    if kind.long_string:
        if is_text:
            s = items[0] if items else ""
        else:
            b = bytes(_check_int_range(items, "B", what).astype(np.uint8).tobytes())
            nul = b.find(b"\0")
            s = (b if nul < 0 else b[:nul]).decode("utf-8", "surrogateescape")
        V["value"] = s
        return V

    if not kind.array:
        if n == 0:
            raise CABadCount(f"{what}: a write of no elements to a scalar")
        items = items[:1]
    elif kind.max_count is not None and n > kind.max_count:
        items = items[: kind.max_count]

    if code == "enum":
        if is_text:
            idx = _enum_index(items[0], _current_choices(current), what)
        else:
            idx = int(_check_int_range(items, "enum", what)[0])
        V["value.index"] = idx
        return V

    if code == "s":
        texts = items if is_text else _number_texts(items)
        V["value"] = texts if kind.array else texts[0]
        return V

    if is_text:
        if code == "?":
            nums: Any = np.array([_enum_index(t, BOOL_CHOICES, what) for t in items], dtype=np.int64)
        elif code in "fd":
            nums = np.array([_parse_text(t, False, what) for t in items], dtype=np.float64)
        else:
            nums = _object_ints([_parse_text(t, True, what) for t in items], code, what)
    else:
        nums = items
    out = _to_pva_numbers(nums, code, what)
    if kind.array:
        if kind.fixed and kind.max_count is not None and out.size < kind.max_count:
            out = np.concatenate([out, np.zeros(kind.max_count - out.size, out.dtype)])
        V["value"] = out
    else:
        V["value"] = out[0].item()
    return V


def _object_ints(parsed: list, code: str, what: str) -> np.ndarray:
    """Parsed integers (Python ints of any size) as a checked int64/uint64 array."""
    lo, hi = _INT_RANGE[code]
    for x in parsed:
        if x < lo or x > hi:
            raise CAPutError(f"{what}: {x!r} is out of range [{lo}, {hi}]")
    return np.array(parsed, dtype=np.uint64 if code == "L" else np.int64)
