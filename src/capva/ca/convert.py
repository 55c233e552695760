"""What RSRV does between a channel's native type and the type a client asks for (§3.4, §3.6).

A client may read any DBR type 0..38 from any channel and write any plain type to it; the
server converts.  This module reproduces RSRV's conversions so that capva answers the way
an IOC does:

* numeric ↔ numeric: C casts (:func:`capva.ca.dbr.cast_array`);
* numeric → STRING: ``cvtDoubleToString`` / ``cvtFloatToString`` with the PV's precision
  (:func:`format_double`, :func:`format_float`), integers in decimal, ENUM as its state
  string;
* STRING → numeric: ``epicsParseFloat64`` / ``epicsParseInt32`` … with units allowed
  after the number (:func:`parse_double`, :func:`parse_integer`);
* STRING → ENUM on a write: an exact state string or a decimal index below no_str;
* element counts: count 0 is the current length, fixed counts zero-fill.

A conversion that fails raises :class:`ConversionError`, whose ``status`` is the ECA code
to send (ECA_GETFAIL for reads, ECA_PUTFAIL for writes)::

    >>> format_double(65.0, 3), format_double(-0.3, 0), format_float(1e8, 2)
    ('65.000', '-0', '1.00e+08')
    >>> convert([3.7], DOUBLE, STRING, precision=2)
    ['3.70']
    >>> convert(["12abc"], STRING, LONG).tolist()
    [12]
    >>> convert(["Off"], STRING, ENUM, enum_strings=("Off", "On"), write=True).tolist()
    [0]

The helpers at the bottom assemble whole read replies (:func:`read_payload`) and write
values (:func:`write_values`) with the ECA status RSRV would send.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from . import dbr as _dbr
from .constants import MAX_STRING_SIZE
from .dbr import CHAR, DOUBLE, ENUM, FLOAT, LONG, SHORT, STRING, Family, Metadata, Values
from .errors import CADecodeError
from .status import ECA_BADCOUNT, ECA_BADTYPE, ECA_GETFAIL, ECA_NORDACCESS, ECA_NORMAL, ECA_PUTFAIL

__all__ = [
    "STRING",
    "SHORT",
    "FLOAT",
    "ENUM",
    "CHAR",
    "LONG",
    "DOUBLE",
    "DEFAULT_PRECISION",
    "ILLEGAL_ENUM",
    "ConversionError",
    "format_double",
    "format_float",
    "format_value",
    "parse_double",
    "parse_float",
    "parse_integer",
    "parse_enum",
    "convert",
    "reply_count",
    "fit_count",
    "write_count",
    "check_request_count",
    "read_metadata",
    "read_payload",
    "write_values",
    "long_string_to_chars",
    "chars_to_long_string",
]

#: RSRV's precision for float → string when the record has no ``get_precision``
DEFAULT_PRECISION = 6
#: what bi/bo give for an index with no state string
ILLEGAL_ENUM = "Illegal_Value"


class ConversionError(ValueError):
    """A value that cannot be converted; ``status`` is the ECA code for the reply."""

    def __init__(self, message: str, status: int = ECA_GETFAIL) -> None:
        super().__init__(message)
        self.status = status


# -- number → text (libCom cvtFast.c) -------------------------------------------------------------------


def _c_float_text(text: str, value: float, width: int) -> str:
    """Python's formatting of a C ``%e``/``%f`` result, with glibc's spelling of NaN."""
    if math.isnan(value) and math.copysign(1.0, value) < 0:
        text = "-nan"
    elif math.isnan(value):
        text = "nan"
    return text.rjust(width)


def format_double(value: float, precision: int = DEFAULT_PRECISION) -> str:
    """libCom's ``cvtDoubleToString``: what RSRV sends for a DOUBLE read as DBR_STRING.

    Within ±1e7 and up to 8 digits: fixed point with ``precision`` decimals, rounded half
    away from zero (no sign on 0.0; but ``-0`` for -0.3 with precision 0, as libCom does).
    Up to ±1e16: ``%.*f`` with at most 3 decimals.  Beyond that, NaN's neighbours ±inf,
    or more than 8 digits: ``%*.*e`` (width precision+7, at most 17 digits).  NaN prints
    as ``nan``.  ``precision`` is taken as an unsigned 16-bit number, so a negative PREC
    means "many digits", as in C.  The tests compare this with libCom itself.
    """
    p = int(precision) & 0xFFFF
    v = float(value)
    if v != v or p > 8 or v > 10000000.0 or v < -10000000.0:
        if p > 8 or v > 1e16 or v < -1e16:
            p = min(p, 17)
            return _c_float_text(f"{v:{p + 7}.{p}e}", v, p + 7)
        p = min(p, 3)
        return _c_float_text(f"{v:.{p}f}", v, 0)
    sign = ""
    if v < 0:
        sign = "-"
        v = -v
    whole = int(v)
    fplace = 10**p
    fraction = (int((v - whole) * fplace * 10) + 5) // 10  # round half up, as cvtFast does
    if fraction >= fplace:
        whole += 1
        fraction -= fplace
    if p:
        return f"{sign}{whole}.{fraction:0{p}d}"
    return f"{sign}{whole}"


_F32 = np.float32


def format_float(value: float, precision: int = DEFAULT_PRECISION) -> str:
    """libCom's ``cvtFloatToString`` (FLOAT read as DBR_STRING): like :func:`format_double`
    but in single precision, switching to ``%e`` from ±1e8 with width precision+6 and at
    most 12 digits."""
    p = int(precision) & 0xFFFF
    f = _F32(value)
    v = float(f)
    if v != v or p > 8 or v > 10000000.0 or v < -10000000.0:
        if p > 8 or v >= 1e8 or v <= -1e8:
            p = min(p, 12)
            return _c_float_text(f"{v:{p + 6}.{p}e}", v, p + 6)
        p = min(p, 3)
        return _c_float_text(f"{v:.{p}f}", v, 0)
    sign = ""
    if v < 0:
        sign = "-"
        f = -f
    whole = int(f)
    fplace = 10**p
    with np.errstate(all="ignore"):
        ftemp = f - _F32(whole)
        fraction = (int(ftemp * _F32(fplace) * _F32(10)) + 5) // 10
    if fraction >= fplace:
        whole += 1
        fraction -= fplace
    if p:
        return f"{sign}{whole}.{fraction:0{p}d}"
    return f"{sign}{whole}"


def format_value(
    value: Any, native: int, *, precision: int = DEFAULT_PRECISION, enum_strings: Sequence[str] = ()
) -> str:
    """One element of a ``native`` channel as RSRV renders it for DBR_STRING."""
    if native == DOUBLE:
        return format_double(value, precision)
    if native == FLOAT:
        return format_float(value, precision)
    if native == ENUM:
        i = int(value)
        return enum_strings[i] if 0 <= i < len(enum_strings) else ILLEGAL_ENUM
    if native == STRING:
        return str(value)
    return str(int(value))


# -- text → number (libCom epicsStdlib.c on glibc) --------------------------------------------------------------

_C_SPACE = " \t\n\v\f\r"
_FLOAT_RE = re.compile(
    r"""[+-]?(?:
        inf(?:inity)?
      | nan(?:\([0-9a-z_]*\))?
      | 0x(?:[0-9a-f]+\.?[0-9a-f]*|\.[0-9a-f]+)(?:p[+-]?[0-9]+)?
      | (?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?
    )""",
    re.X | re.I,
)
_INT_RE = re.compile(r"[+-]?[0-9]+")
_DBL_MIN = 2.2250738585072014e-308
_FLT_MAX = float(np.finfo(np.float32).max)
_FLT_MIN = float(np.finfo(np.float32).tiny)


def _strtod(text: str) -> tuple[float, str]:
    """glibc ``strtod`` as ``epicsParseDouble`` uses it: (value, rest) or ConversionError."""
    s = text.lstrip(_C_SPACE)
    m = _FLOAT_RE.match(s)
    if m is None:
        raise ConversionError(f"no number in {text!r}")
    num = m.group()
    body = num.lstrip("+-").lower()
    neg = num.startswith("-")
    try:
        if body.startswith("inf"):
            return (-math.inf if neg else math.inf), s[m.end() :]
        if body.startswith("nan"):
            return (-math.nan if neg else math.nan), s[m.end() :]
        if body.startswith("0x"):
            value = float.fromhex(num)
        else:
            value = float(num)
    except OverflowError:
        raise ConversionError(f"{text!r} overflows a double") from None
    if math.isinf(value):
        raise ConversionError(f"{text!r} overflows a double")
    if abs(value) < _DBL_MIN and _exact(body) != Fraction(abs(value)):
        # glibc sets ERANGE for an inexact result below DBL_MIN (zero or subnormal)
        raise ConversionError(f"{text!r} underflows a double")
    return value, s[m.end() :]


def _exact(body: str) -> Fraction:
    """The exact value of an unsigned decimal or hex floating-point literal."""
    if not body.startswith("0x"):
        return Fraction(body)
    mant, _, exp = body[2:].partition("p")
    whole, _, frac = mant.partition(".")
    digits = int((whole + frac) or "0", 16)
    return Fraction(digits, 16 ** len(frac)) * Fraction(2) ** int(exp or "0")


def parse_double(text: str) -> float:
    """``epicsParseFloat64`` with units allowed: ``"3.9"``, ``" 12abc"`` (12), ``"0x10"``
    (16), ``"nan"``, ``"-inf"``.  Overflow and underflow fail, as does text with no number.
    An empty string is 0 (RSRV special-cases it before parsing)."""
    if text == "":
        return 0.0
    return _strtod(text)[0]


def parse_float(text: str) -> float:
    """``epicsParseFloat32``: :func:`parse_double`, then positive values within FLT_MIN
    and finite values at or beyond FLT_MAX fail; the result is rounded to float32."""
    if text == "":
        return 0.0
    v = _strtod(text)[0]
    a = abs(v)
    if v > 0 and a <= _FLT_MIN:
        raise ConversionError(f"{text!r} underflows a float")
    if math.isfinite(v) and a >= _FLT_MAX:
        raise ConversionError(f"{text!r} overflows a float")
    return float(_F32(v))


_ULONG = 1 << 64


def parse_integer(text: str, native: int, *, allow_units: bool = True) -> int:
    """``epicsParseInt16/Int32/UInt8/UInt16`` in base 10 for SHORT/LONG/CHAR/ENUM.

    Leading and trailing blanks are skipped; with ``allow_units`` anything after the
    number is ignored (``"3.9"`` → 3, ``"12abc"`` → 12).  Out of range fails.  The unsigned
    types go through ``strtoul``, so ``"-1"`` is 255 for CHAR and 65535 for ENUM (C).
    An empty string is 0.
    """
    if text == "":
        return 0
    s = text.lstrip(_C_SPACE)
    m = _INT_RE.match(s)
    if m is None:
        raise ConversionError(f"no integer in {text!r}")
    rest = s[m.end() :].lstrip(_C_SPACE)
    if rest and not allow_units:
        raise ConversionError(f"extraneous characters after the number in {text!r}")
    v = int(m.group())
    if native in (SHORT, LONG):
        if not -(1 << 63) <= v < (1 << 63):
            raise ConversionError(f"{text!r} overflows a long")
        lo, hi = (-0x8000, 0x7FFF) if native == SHORT else (-0x80000000, 0x7FFFFFFF)
        if not lo <= v <= hi:
            raise ConversionError(f"{text!r} out of range for {_dbr.NATIVE_NAMES[native]}")
        return v
    bits = 8 if native == CHAR else 16
    if abs(v) >= _ULONG:
        raise ConversionError(f"{text!r} overflows an unsigned long")
    u = v % _ULONG  # strtoul negates in unsigned arithmetic
    mask = (1 << bits) - 1
    if mask < u <= _ULONG - 1 - mask:
        raise ConversionError(f"{text!r} out of range for {_dbr.NATIVE_NAMES[native]}")
    return u & mask


def parse_enum(text: str, enum_strings: Sequence[str]) -> int:
    """RSRV's string write to an ENUM (``cvt_st_e``/``cvt_st_menu``): an exact state string,
    else a decimal index below the number of states (no trailing junk).  "7" on a bo fails."""
    for i, s in enumerate(enum_strings):
        if s == text:
            return i
    try:
        v = parse_integer(text, ENUM, allow_units=False) if text else -1
    except ConversionError:
        v = -1
    if 0 <= v < len(enum_strings):
        return v
    raise ConversionError(f"{text!r} is not one of the {len(enum_strings)} states", ECA_PUTFAIL)


# -- whole conversions --------------------------------------------------------------------------------------


def _as_list(values: Any) -> list[Any]:
    if isinstance(values, (str, bytes)):
        return [values]
    if isinstance(values, np.ndarray):
        return values.ravel().tolist()
    if isinstance(values, Sequence):
        return list(values)
    return [values]


def _text(v: Any) -> str:
    if isinstance(v, (bytes, bytearray, np.bytes_)):
        return bytes(v).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    return str(v).split("\0", 1)[0]


def convert(
    values: Any,
    from_native: int,
    to_native: int,
    *,
    precision: int = DEFAULT_PRECISION,
    enum_strings: Sequence[str] = (),
    write: bool = False,
) -> Values:
    """Convert values of one native type to another the way RSRV does.

    ``values``: a sequence / array of ``from_native`` values (strings for STRING).
    Returns a list of ``str`` for STRING, else a numpy array (wire dtype) ready for
    :func:`capva.ca.dbr.encode`.  ``precision`` and ``enum_strings`` describe the
    channel: the precision used to print FLOAT/DOUBLE (RSRV: the record's PREC, 6 if it
    has none) and the states of an ENUM channel.  ``write``: the conversion of a put
    (client type → channel type); string → ENUM then matches state strings.

    Raises :class:`ConversionError` with ``status`` ECA_PUTFAIL (writes) or ECA_GETFAIL.
    """
    status = ECA_PUTFAIL if write else ECA_GETFAIL
    try:
        if to_native == STRING:
            if from_native == STRING:
                return [_text(v) for v in _as_list(values)]
            return [
                format_value(v, from_native, precision=precision, enum_strings=enum_strings)
                for v in _as_list(values)
            ]
        if from_native == STRING:
            items = [_text(v) for v in _as_list(values)]
            if to_native in (DOUBLE, FLOAT):
                parse = parse_double if to_native == DOUBLE else parse_float
                return np.array([parse(s) for s in items], _dbr.NATIVE_DTYPES[to_native])
            if to_native == ENUM and write:
                return np.array([parse_enum(s, enum_strings) for s in items], _dbr.NATIVE_DTYPES[ENUM])
            return np.array([parse_integer(s, to_native) for s in items], _dbr.NATIVE_DTYPES[to_native])
        return _dbr.cast_array(np.asarray(values), to_native).ravel()
    except ConversionError as exc:
        exc.status = status
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConversionError(
            f"cannot convert {_dbr.NATIVE_NAMES[from_native]} data: {exc}", status
        ) from None


# -- element counts (§3.6) ----------------------------------------------------------------------------------


def reply_count(requested: int, current_length: int) -> int:
    """The element count of a read reply or monitor update: the requested count, or the
    current length for count 0 (RSRV does this for every client minor version)."""
    return requested if requested > 0 else current_length


def fit_count(values: Values, count: int, native: int) -> Values:
    """``values`` cut or zero-filled to exactly ``count`` elements (never stale data)."""
    n = len(values)
    if n == count:
        return values
    if n > count:
        return values[:count]
    fill = _dbr.zeros(native, count - n)
    if isinstance(values, list):
        return values + fill  # type: ignore[operator]
    out = np.zeros(count, values.dtype)
    out[:n] = values
    return out


def write_count(count: int, max_count: int) -> int:
    """RSRV writes min(N, NELM) elements; N = 0 empties an array."""
    return min(count, max_count)


def check_request_count(count: int, client_minor: int, *, strict_old_clients: bool = False) -> int:
    """ECA status for the element count of a READ_NOTIFY / EVENT_ADD request.

    Count 0 means "current length" from minor 13.  RSRV honours it from older clients
    too; catvs also accepts ECA_BADCOUNT there (``strict_old_clients=True``, PCAS).
    """
    if count == 0 and client_minor < 13 and strict_old_clients:
        return ECA_BADCOUNT
    return ECA_NORMAL


# -- whole read replies and writes --------------------------------------------------------------------------


def read_metadata(requested_type: int, native: int, metadata: Metadata | None) -> Metadata:
    """The metadata to send for ``requested_type`` from a ``native`` channel (§3.4).

    GR/CTRL_ENUM of a non-enum channel carries no states; numeric GR/CTRL of an enum
    channel carries zero limits (RSRV sends NaN or stale ones).  Everything else is sent
    as is and cast by :func:`capva.ca.dbr.encode`.
    """
    meta = metadata if metadata is not None else Metadata()
    info = _dbr.DBR[requested_type]
    if info.family in (Family.GR, Family.CTRL):
        if info.native == ENUM and native != ENUM:
            return meta.replace(enum_strings=())
        if info.native not in (ENUM, STRING) and native == ENUM:
            return Metadata(status=meta.status, severity=meta.severity)
    return meta


def read_payload(
    requested_type: int,
    requested_count: int,
    native: int,
    values: Any,
    metadata: Metadata | None = None,
    *,
    precision: int = DEFAULT_PRECISION,
    readable: bool = True,
    class_name: str = "",
    as_buffer: bool = False,
) -> tuple[bytes, int, int]:
    """A READ_NOTIFY reply / monitor update: ``(DBR payload, element count, ECA status)``.

    ``native`` and ``values`` describe the channel (current values, any length);
    ``metadata`` its alarm, time, limits, units and enum strings.  Applies the count
    rules (§3.6), the conversions (§3.4) and RSRV's failure forms: a full-size zeroed
    payload with ECA_NORDACCESS (no read access) or ECA_GETFAIL (conversion failed, or a
    read of PUT_ACKT/PUT_ACKS).  CLASS_NAME sends ``class_name`` (the record type).
    ``as_buffer``: see :func:`capva.ca.dbr.encode`.

    >>> from capva.ca.dbr import TIME_DOUBLE
    >>> payload, n, status = read_payload(TIME_DOUBLE, 0, DOUBLE, [3.25], Metadata(seconds=1))
    >>> n, status, len(payload)
    (1, 1, 24)
    >>> read_payload(DOUBLE, 1, STRING, ["hello"])[2] == ECA_GETFAIL
    True
    """
    if not _dbr.is_valid_type(requested_type):
        raise ValueError(f"invalid DBR type {requested_type}")
    info = _dbr.DBR[requested_type]
    items = _as_list(values) if native == STRING else np.asarray(values).ravel()
    count = reply_count(requested_count, len(items))
    if not readable:
        return bytes(_dbr.dbr_size_n(requested_type, count)), count, ECA_NORDACCESS
    if requested_type in (_dbr.PUT_ACKT, _dbr.PUT_ACKS):
        return bytes(_dbr.dbr_size_n(requested_type, count)), count, ECA_GETFAIL
    meta = read_metadata(requested_type, native, metadata)
    if requested_type == _dbr.CLASS_NAME:
        return _dbr.encode(requested_type, [class_name], count=count), count, ECA_NORMAL
    if as_buffer and native != STRING and info.native == DOUBLE and isinstance(items, np.ndarray):
        # numbers to DOUBLE: encode's own cast is the whole conversion (no intermediate copy)
        return _dbr.encode(requested_type, items, meta, count=count, as_buffer=True), count, ECA_NORMAL
    try:
        out = convert(
            fit_count(items, count, native) if count < len(items) else items,
            native,
            info.native,
            precision=precision,
            enum_strings=meta.enum_strings if metadata is not None else (),
        )
    except ConversionError:
        return bytes(_dbr.dbr_size_n(requested_type, count)), count, ECA_GETFAIL
    return _dbr.encode(requested_type, out, meta, count=count), count, ECA_NORMAL


def write_values(
    data_type: int,
    data: bytes,
    count: int,
    native: int,
    *,
    max_count: int,
    precision: int = DEFAULT_PRECISION,
    enum_strings: Sequence[str] = (),
) -> tuple[Values | None, int]:
    """Decode a WRITE / WRITE_NOTIFY payload and convert it to the channel's type.

    Returns ``(values, ECA_NORMAL)`` with at most ``max_count`` elements (RSRV writes
    min(N, NELM)), or ``(None, status)``: ECA_BADTYPE for a type that cannot be written
    (only plain types 0..6 can; PUT_ACKT/PUT_ACKS are the server's to handle), ECA_PUTFAIL
    when conversion fails.  Malformed payloads raise
    :class:`~capva.ca.errors.CADecodeError`.
    """
    if not 0 <= data_type <= DOUBLE:
        return None, ECA_BADTYPE
    n = write_count(count, max_count)
    if n < count:
        # the payload must hold all ``count`` elements, but only ``n`` are decoded
        info = _dbr.DBR[data_type]
        need = count * info.value_size
        if len(data) < need and not (info.native == STRING and count == 1):
            raise CADecodeError(f"write of {count} elements needs {need} bytes, {len(data)} present")
    values, _ = _dbr.decode(data_type, data, n)
    try:
        return convert(
            values, data_type, native, precision=precision, enum_strings=enum_strings, write=True
        ), ECA_NORMAL
    except ConversionError:
        return None, ECA_PUTFAIL


# -- long strings (the ``$`` channel-name modifier, §6.1) --------------------------------------------------


def long_string_to_chars(text: str, field_size: int = MAX_STRING_SIZE) -> np.ndarray:
    """A string field read through ``NAME.FIELD$``: CHAR elements with the NUL.

    A count-0 read sends strlen+1 elements (``"hello"`` → 6); the native count is the
    field size.
    """
    raw = text.encode("utf-8", "surrogateescape")[: field_size - 1] + b"\0"
    return np.frombuffer(raw, np.uint8).copy()


def chars_to_long_string(values: Any) -> str:
    """A CHAR write to a ``$`` channel: the bytes up to the first NUL are the new string."""
    raw = np.asarray(values).astype(np.uint8).tobytes()
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
