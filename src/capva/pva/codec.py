"""PVA wire codec for types and values (pva-protocol.md §2-3), sans-I/O.

Types:
    ``encode_type(T, be)`` / ``decode_type(buf, pos, be, cache)`` - FieldDesc, including the
    per-connection introspection cache (``0xFD key`` define, ``0xFE key`` reuse).  We always
    *send* plain descriptions (every peer decodes them) unless a :class:`SendTypeCache` is
    given, which reproduces pvAccessCPP's registry byte for byte (used to re-encode captured
    pvAccessCPP traffic identically in the vector tests).

Values:
    ``encode_full(V, be)`` / ``decode_full(T, buf, pos, be, cache)`` - every field, no BitSet.
    ``encode_partial(V, be, mask)`` / ``decode_partial(T, buf, pos, be, cache)`` - BitSet, then
    the selected fields (GET/PUT data, MONITOR updates).

Speed (design.md §4): for each (type, field mask, byte order) the codec generates - once -
a small Python function that packs or unpacks every run of fixed-width fields with a single
precompiled ``struct.Struct`` call.  An NTScalar monitor update (value + two timeStamp
fields) is one ``pack`` call; a numeric array is a Size plus a buffer handed straight to
``bytes.join`` (encode) or a ``numpy.frombuffer`` view (decode).

Every malformed input raises :class:`~capva.pva.errors.DecodeError`; sizes are checked
against the bytes actually present before anything is allocated.

    >>> from capva import Type, Value
    >>> V = Value(Type([('value', 'd')]), {'value': 1.5})
    >>> encode_partial(V, False).hex()
    '0102000000000000f83f'
    >>> decode_partial(V.type(), bytes.fromhex('0102000000000000f83f'), 0, False, {})[0].value
    1.5
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from .._wire import (
    STRUCTS,
    U16,
    WireError,
    decode_bitset,
    decode_size,
    decode_size_or_null,
    decode_string,
    encode_bitset,
    encode_size,
    encode_string,
)
from .errors import DecodeError
from .types import Type, intern_type
from .value import DTYPES, Value, _init_vals, default_of

__all__ = [
    "MAX_DEPTH",
    "MAX_FIELDS",
    "Status",
    "SendTypeCache",
    "encode_type",
    "decode_type",
    "encode_full",
    "decode_full",
    "encode_partial",
    "encode_partial_parts",
    "decode_partial",
    "encode_typed_value",
    "encode_field_value",
    "decode_field_value",
    "decode_typed_value",
    "encode_status",
    "decode_status",
    "encode_selector",
    "decode_selector",
    "value_mask",
    "TYPE_CODES",
]

#: deepest nesting accepted from the network (pvxs faults beyond 20 levels)
MAX_DEPTH = 20

#: most fields (bit numbers) one structure may have when it comes from the network.  Cached
#: type references make descriptions tiny compared with the layouts they expand to; this
#: bound keeps a few hundred hostile bytes from building a multi-gigabyte type.
MAX_FIELDS = 1 << 16

#: p4p code -> wire type byte (scalar; arrays add 0x08)
TYPE_CODES = {
    "?": 0x00,
    "b": 0x20,
    "h": 0x21,
    "i": 0x22,
    "l": 0x23,
    "B": 0x24,
    "H": 0x25,
    "I": 0x26,
    "L": 0x27,
    "f": 0x42,
    "d": 0x43,
    "s": 0x60,
    "S": 0x80,
    "U": 0x81,
    "v": 0x82,
}
_CODE_FROM_BYTE = {v: k for k, v in TYPE_CODES.items()}
_STRUCT_CHAR = {
    "?": "?",
    "b": "b",
    "B": "B",
    "h": "h",
    "H": "H",
    "i": "i",
    "I": "I",
    "l": "q",
    "L": "Q",
    "f": "f",
    "d": "d",
}
_FIXED = frozenset(_STRUCT_CHAR)
_NDT = {
    be: {c: (dt.newbyteorder(">") if be else dt.newbyteorder("<")) for c, dt in DTYPES.items()}
    for be in (False, True)
}
_NATIVE_LE = np.little_endian


# -- Status -------------------------------------------------------------------------------


class Status:
    """Operation status (§2.3): code 0 OK, 1 WARNING, 2 ERROR, 3 FATAL, with message and
    stack trace.  ``Status.OK`` is the shared success value (``ff`` on the wire)."""

    __slots__ = ("code", "message", "trace")
    NAMES = ("OK", "WARNING", "ERROR", "FATAL")
    OK: Status

    def __init__(self, code: int = 0, message: str = "", trace: str = ""):
        self.code = code
        self.message = message
        self.trace = trace

    @property
    def ok(self) -> bool:
        """Success means OK or WARNING (the payload follows)."""
        return self.code <= 1

    @property
    def name(self) -> str:
        return self.NAMES[self.code] if 0 <= self.code < 4 else str(self.code)

    @classmethod
    def error(cls, message: str, trace: str = "") -> Status:
        return cls(2, message, trace)

    def __iter__(self):
        return iter((self.code, self.message, self.trace))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Status):
            return NotImplemented
        return (self.code, self.message, self.trace) == (other.code, other.message, other.trace)

    def __hash__(self) -> int:
        return hash((self.code, self.message, self.trace))

    def __repr__(self) -> str:
        return f"Status({self.name}, {self.message!r}, {self.trace!r})"


Status.OK = Status()


def encode_status(st: Status | None, be: bool) -> bytes:
    if st is None or (st.code == 0 and not st.message and not st.trace):
        return b"\xff"
    return bytes((st.code,)) + encode_string(st.message, be) + encode_string(st.trace, be)


def decode_status(buf, pos: int, be: bool) -> tuple[Status, int]:
    try:
        c = buf[pos]
    except IndexError:
        raise DecodeError(f"truncated: Status expected at offset {pos}") from None
    if c == 0xFF:
        return Status.OK, pos + 1
    if c > 3:
        raise DecodeError(f"invalid Status type {c} at offset {pos}")
    try:
        msg, pos = decode_string(buf, pos + 1, be)
        trace, pos = decode_string(buf, pos, be)
    except WireError as e:
        raise DecodeError(str(e)) from None
    return Status(c, msg, trace), pos


def encode_selector(i: int | None, be: bool) -> bytes:
    return b"\xff" if i is None or i < 0 else encode_size(i, be)


def decode_selector(buf, pos: int, be: bool) -> tuple[int | None, int]:
    try:
        n, pos = decode_size_or_null(buf, pos, be)
    except WireError as e:
        raise DecodeError(str(e)) from None
    return (None if n < 0 else n), pos


# -- types --------------------------------------------------------------------------------


class SendTypeCache:
    """pvAccessCPP-style outgoing introspection registry for one connection.

    Every type that is not a scalar or scalar array is registered on first send (``0xFD
    key`` + description, keys from 1) and referenced afterwards (``0xFE key``).  Use it only
    to reproduce pvAccessCPP bytes; plain descriptions are always acceptable to peers."""

    __slots__ = ("keys", "next")

    def __init__(self, first: int = 1):
        self.keys: dict[Type, int] = {}
        self.next = first


def encode_type(T: Type | None, be: bool, cache: SendTypeCache | None = None) -> bytes:
    """FieldDesc bytes for ``T`` (``ff`` for None)."""
    if T is None:
        return b"\xff"
    if cache is None:
        key = "fd>" if be else "fd<"
        b = T._cache.get(key)
        if b is None:
            out: list[bytes] = []
            _enc_type(T, be, out, None)
            b = T._cache[key] = b"".join(out)
        return b
    out = []
    _enc_type(T, be, out, cache)
    return b"".join(out)


def _enc_type(T: Type, be: bool, out: list, cache: SendTypeCache | None) -> None:
    code = T.code
    if cache is not None and not (
        code in _FIXED or code == "s" or (len(code) == 2 and code[1] in _FIXED) or code == "as"
    ):
        k = cache.keys.get(T)
        if k is not None:
            out.append(b"\xfe" + U16[be].pack(k))
            return
        k = cache.next
        cache.next += 1
        cache.keys[T] = k
        out.append(b"\xfd" + U16[be].pack(k))
    elif cache is not None and (T.bound is not None or T.fixed):
        pass
    if code in ("S", "U"):
        out.append(bytes((TYPE_CODES[code],)))
        out.append(encode_string(T.id, be))
        out.append(encode_size(len(T.members), be))
        for n, t in T.members:
            out.append(encode_string(n, be))
            _enc_type(t, be, out, cache)
    elif code in ("aS", "aU"):
        out.append(b"\x88" if code == "aS" else b"\x89")
        assert T.elem is not None
        _enc_type(T.elem, be, out, cache)
    elif code == "v":
        out.append(b"\x82")
    elif code == "av":
        out.append(b"\x8a")
    elif code == "s" and T.bound is not None:
        out.append(b"\x83" + encode_size(T.bound, be))
    elif len(code) == 2:
        base = TYPE_CODES[code[1]]
        if T.fixed:
            out.append(bytes((base | 0x18,)) + encode_size(T.bound or 0, be))
        elif T.bound is not None:
            out.append(bytes((base | 0x10,)) + encode_size(T.bound, be))
        else:
            out.append(bytes((base | 0x08,)))
    else:
        out.append(bytes((TYPE_CODES[code],)))


def decode_type(buf, pos: int, be: bool, cache: dict[int, Type | None]) -> tuple[Type | None, int]:
    """Decode one FieldDesc at ``pos``; ``cache`` is the connection's receive registry
    (a dict, updated in place by ``0xFD`` entries).  Returns ``(Type or None, new_pos)``."""
    try:
        T, pos = _dec_type(buf, pos, be, cache, 0)
        return (None if T is None else intern_type(T)), pos
    except DecodeError:
        raise
    except (WireError, IndexError, struct.error) as e:
        raise DecodeError(f"bad type description: {e}") from None


def _dec_type(buf, pos: int, be: bool, cache: dict, depth: int) -> tuple[Type | None, int]:
    if depth > MAX_DEPTH:
        raise DecodeError(f"type nesting deeper than {MAX_DEPTH} levels")
    c = buf[pos]
    pos += 1
    if c == 0xFF:
        return None, pos
    if c == 0xFD:
        if pos + 2 > len(buf):
            raise DecodeError("truncated type cache key")
        key = U16[be].unpack_from(buf, pos)[0]
        T, pos = _dec_type(buf, pos + 2, be, cache, depth + 1)
        cache[key] = T
        return T, pos
    if c == 0xFE:
        if pos + 2 > len(buf):
            raise DecodeError("truncated type cache key")
        key = U16[be].unpack_from(buf, pos)[0]
        try:
            T = cache[key]
        except KeyError:
            raise DecodeError(f"type cache key {key} used but never defined") from None
        if T is not None and depth + T.depth > MAX_DEPTH + 1:
            raise DecodeError(f"type nesting deeper than {MAX_DEPTH} levels (through cache key {key})")
        return T, pos + 2
    kind = c & 0xE0
    amode = c & 0x18
    if kind == 0x80:
        low = c & 0x07
        if amode == 0:
            if low in (0, 1):
                id, pos = decode_string(buf, pos, be)
                n, pos = decode_size(buf, pos, be)
                if n * 2 > len(buf) - pos:
                    raise DecodeError(f"structure claims {n} members, only {len(buf) - pos} bytes left")
                members = []
                seen = set()
                for _ in range(n):
                    name, pos = decode_string(buf, pos, be)
                    t, pos = _dec_type(buf, pos, be, cache, depth + 1)
                    if t is None:
                        raise DecodeError(f"member {name!r} has no type")
                    if name in seen:
                        raise DecodeError(f"duplicate member name {name!r}")
                    seen.add(name)
                    members.append((name, t))
                if low == 0 and 1 + sum(len(t._nodes) for _, t in members) > MAX_FIELDS:
                    raise DecodeError(f"structure would have more than {MAX_FIELDS} fields")
                return Type._make("S" if low == 0 else "U", id, tuple(members)), pos
            if low == 2:
                return Type._make("v"), pos
            if low == 3:
                bound, pos = decode_size(buf, pos, be)
                return Type._make("s", bound=bound), pos
        elif amode == 0x08:
            if low in (0, 1):
                e, pos = _dec_type(buf, pos, be, cache, depth + 1)
                want = "S" if low == 0 else "U"
                if e is None or e.code != want:
                    raise DecodeError(f"{want}[] element is not a {want} description")
                return Type._make("a" + want, "", (), e), pos
            if low == 2:
                return Type._make("av"), pos
        raise DecodeError(f"invalid type code 0x{c:02x}")
    code = _CODE_FROM_BYTE.get(c & 0xE7)
    if code is None or code in ("S", "U", "v"):
        raise DecodeError(f"invalid type code 0x{c:02x}")
    if amode == 0:
        return Type._make(code), pos
    if amode == 0x08:
        return Type._make("a" + code), pos
    bound, pos = decode_size(buf, pos, be)
    return Type._make("a" + code, bound=bound, fixed=(amode == 0x18)), pos


# -- value encode -------------------------------------------------------------------------


def _enc_array(code: str, v: Any, be: bool, out: list) -> None:
    n = len(v)
    out.append(encode_size(n, be))
    if n == 0:
        return
    if code == "s":
        out.extend(encode_string(s, be) for s in v)
        return
    if be == (not _NATIVE_LE) or code in ("?", "b", "B"):
        if v.flags.c_contiguous:
            out.append(v.data.cast("B") if v.dtype.itemsize else v.tobytes())
        else:
            out.append(v.tobytes())
    else:
        out.append(v.astype(_NDT[be][code]).tobytes())


def _enc_node(t: Type, v: Any, be: bool, out: list, cache: SendTypeCache | None) -> None:
    """Full serialization of one non-struct node (or a nested struct Value)."""
    code = t.code
    if code in _FIXED:
        out.append(STRUCTS[_STRUCT_CHAR[code]][be].pack(v))
    elif code == "s":
        out.append(encode_string(v, be))
    elif code == "S":
        _enc_struct(v, be, out, cache)
    elif len(code) == 2 and code[0] == "a" and code[1] not in "SU" and code != "av":
        if t.fixed:
            if len(v) != (t.bound or 0):
                raise ValueError(f"fixed array needs {t.bound} elements, has {len(v)}")
            tmp: list = []
            _enc_array(code[1], v, be, tmp)
            out.extend(tmp[1:])
        else:
            _enc_array(code[1], v, be, out)
    elif code == "U":
        if v is None:
            out.append(b"\xff")
        else:
            out.append(encode_size(v[0], be))
            _enc_node(t.members[v[0]][1], v[1], be, out, cache)
    elif code == "v":
        if v is None:
            out.append(b"\xff")
        else:
            vt = v[0]
            out.append(encode_type(vt, be, cache))
            _enc_node(vt, v[1], be, out, cache)
    elif code == "aS":
        out.append(encode_size(len(v), be))
        for e in v:
            if e is None:
                out.append(b"\x00")
            else:
                out.append(b"\x01")
                _enc_struct(e, be, out, cache)
    elif code in ("aU", "av"):
        out.append(encode_size(len(v), be))
        et = t.elem
        for e in v:
            if e is None:
                out.append(b"\x00")
            else:
                out.append(b"\x01")
                if code == "aU":
                    assert et is not None
                    out.append(encode_size(e[0], be))
                    _enc_node(et.members[e[0]][1], e[1], be, out, cache)
                else:
                    out.append(encode_type(e[0], be, cache))
                    _enc_node(e[0], e[1], be, out, cache)
    else:  # pragma: no cover - Type construction prevents this
        raise ValueError(f"cannot encode type {code!r}")


def _enc_struct(V: Value, be: bool, out: list, cache: SendTypeCache | None) -> None:
    T = V._T
    vals = V._s.vals
    if V._b:
        n = T._span[0]
        vals = vals[V._b : V._b + n]
    _plan(T, 1, be, True)(vals, out, cache)


def value_mask(V: Value) -> int:
    """The changed mask of V, renumbered relative to V (bit 0 = V itself)."""
    return V._rel_mask()


def encode_full(V: Value, be: bool, cache: SendTypeCache | None = None) -> bytes:
    """Every field of structure ``V``, no BitSet (§3.4)."""
    out: list = []
    _enc_struct(V, be, out, cache)
    return b"".join(out)


def encode_partial_parts(V: Value, be: bool, mask: int | None = None) -> list:
    """Like :func:`encode_partial` but returns the pieces (bytes and array memoryviews)
    without joining them: a transport can send a large array without copying it."""
    T = V._T
    vals = V._s.vals
    if mask is None:
        mask = V._rel_mask()
    if V._b:
        vals = vals[V._b : V._b + T._span[0]]
    if mask >> T._span[0]:
        raise ValueError(f"mask selects bit {mask.bit_length() - 1}; {T.getID()} has {T._span[0]} fields")
    out = [encode_bitset(mask, be)]
    if mask:
        _plan(T, mask, be, True)(vals, out, None)
    return out


def encode_partial(V: Value, be: bool, mask: int | None = None, cache: SendTypeCache | None = None) -> bytes:
    """BitSet + the fields it selects (§3.5).  ``mask`` defaults to V's changed marks; it is
    written exactly as given (redundant child bits included)."""
    T = V._T
    vals = V._s.vals
    if V._b:
        vals = vals[V._b : V._b + T._span[0]]
        if mask is None:
            mask = V._rel_mask()
    elif mask is None:
        mask = V._s.mask
    if mask >> T._span[0]:
        raise ValueError(f"mask selects bit {mask.bit_length() - 1}; {T.getID()} has {T._span[0]} fields")
    out = [encode_bitset(mask, be)]
    if mask:
        _plan(T, mask, be, True)(vals, out, cache)
    return b"".join(out)


# -- value decode -------------------------------------------------------------------------


def _dec_array(code: str, buf, pos: int, be: bool, n: int | None = None) -> tuple[Any, int]:
    if n is None:
        n, pos = decode_size(buf, pos, be)
    if code == "s":
        if n > len(buf) - pos:
            raise DecodeError(f"string array claims {n} elements, only {len(buf) - pos} bytes left")
        out = []
        for _ in range(n):
            s, pos = decode_string(buf, pos, be)
            out.append(s)
        return out, pos
    dt = _NDT[be][code]
    nbytes = n * dt.itemsize
    if nbytes > len(buf) - pos:
        raise DecodeError(f"array claims {n} elements ({nbytes} bytes), only {len(buf) - pos} bytes left")
    if n == 0:
        return default_of(Type._make("a" + code)), pos
    if code == "?":
        # any non-zero byte is true; numpy would keep the raw byte in a bool array
        a = np.frombuffer(buf, np.uint8, n, pos) != 0
    else:
        a = np.frombuffer(buf, dt, n, pos)
        if not dt.isnative:
            a = a.astype(DTYPES[code])
        elif not isinstance(buf, bytes):
            a = a.copy()  # the caller may reuse a mutable receive buffer
    a.flags.writeable = False
    return a, pos + nbytes


def _dec_node(t: Type, buf, pos: int, be: bool, cache: _Ctx, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise DecodeError(f"value nesting deeper than {MAX_DEPTH} levels")
    code = t.code
    if code in _FIXED:
        S = STRUCTS[_STRUCT_CHAR[code]][be]
        return S.unpack_from(buf, pos)[0], pos + S.size
    if code == "s":
        return decode_string(buf, pos, be)
    if code == "S":
        return _dec_struct(t, buf, pos, be, cache, depth + 1)
    if code[0] == "a" and code[1] not in "SU" and code != "av":
        if t.fixed:
            return _dec_array(code[1], buf, pos, be, t.bound or 0)
        return _dec_array(code[1], buf, pos, be)
    if code == "U":
        sel, pos = decode_selector(buf, pos, be)
        if sel is None:
            return None, pos
        if sel >= len(t.members):
            raise DecodeError(f"union selector {sel} out of range ({len(t.members)} members)")
        v, pos = _dec_node(t.members[sel][1], buf, pos, be, cache, depth + 1)
        return (sel, v), pos
    if code == "v":
        vt, pos = _dec_type(buf, pos, be, cache.types, depth + 1)
        if vt is None:
            return None, pos
        v, pos = _dec_node(vt, buf, pos, be, cache, depth + 1)
        return (vt, v), pos
    if code in ("aS", "aU", "av"):
        n, pos = decode_size(buf, pos, be)
        if n > len(buf) - pos:
            raise DecodeError(f"array claims {n} elements, only {len(buf) - pos} bytes left")
        et = t.elem
        out: list[Any] = []
        e: Any
        for _ in range(n):
            flag = buf[pos]
            pos += 1
            if flag == 0:
                out.append(None)
                continue
            if code == "aS":
                assert et is not None
                e, pos = _dec_struct(et, buf, pos, be, cache, depth + 1)
            elif code == "aU":
                assert et is not None
                # a present element with no member selected reads as null (pvxs)
                e, pos = _dec_node(et, buf, pos, be, cache, depth + 1)
            else:
                vt, pos = _dec_type(buf, pos, be, cache.types, depth + 1)
                if vt is None:
                    e = None
                else:
                    v, pos = _dec_node(vt, buf, pos, be, cache, depth + 1)
                    e = (vt, v)
            out.append(e)
        return out, pos
    raise DecodeError(f"cannot decode type {code!r}")  # pragma: no cover


class _Ctx:
    """State of one top-level value decode: the connection's type cache, and the number
    of field slots the decode may still allocate.  Nested structures (in unions, variants
    and arrays) draw on the budget, which is proportional to the input length, so a short
    message that references a large cached type many times cannot exhaust memory."""

    __slots__ = ("types", "budget")

    def __init__(self, types: dict, nbytes: int):
        self.types = types
        self.budget = MAX_FIELDS + SLOTS_PER_BYTE * nbytes


#: field slots a decode may allocate per input byte (beyond one MAX_FIELDS structure)
SLOTS_PER_BYTE = 8


def _dec_struct(T: Type, buf, pos: int, be: bool, cache: _Ctx, depth: int = 0) -> tuple[Value, int]:
    cache.budget -= len(T._nodes)
    if cache.budget < 0:
        raise DecodeError("value would allocate far more fields than the message length justifies")
    vals = _init_vals(T)
    pos = _plan(T, 1, be, False)(buf, pos, vals, cache, depth)
    return Value._from_storage(T, vals, (1 << len(vals)) - 1), pos


def decode_full(T: Type, buf, pos: int, be: bool, cache: dict) -> tuple[Value, int]:
    """Decode a full structure value of type ``T``; every field comes back marked."""
    try:
        return _dec_struct(T, buf, pos, be, _Ctx(cache, len(buf) - pos))
    except DecodeError:
        raise
    except (WireError, IndexError, struct.error, OverflowError) as e:
        raise DecodeError(f"bad value: {e}") from None


def decode_partial(
    T: Type, buf, pos: int, be: bool, cache: dict, into: Value | None = None
) -> tuple[Value, int]:
    """Decode BitSet + selected fields.  The result's changed mask is exactly the received
    BitSet.  With ``into`` (a top-level Value of type T) the fields are updated in place."""
    try:
        mask, pos = decode_bitset(buf, pos, be)
        n = T._span[0]
        if mask >> n:
            raise DecodeError(f"BitSet selects field {mask.bit_length() - 1}, type has only {n} fields")
        if into is None:
            vals = _init_vals(T)
            V = Value._from_storage(T, vals, mask)
        else:
            V = into
            vals = into._s.vals
            into._s.mask = mask
        if mask:
            pos = _plan(T, mask, be, False)(buf, pos, vals, _Ctx(cache, len(buf) - pos), 0)
        return V, pos
    except DecodeError:
        raise
    except (WireError, IndexError, struct.error, OverflowError) as e:
        raise DecodeError(f"bad value: {e}") from None


def encode_field_value(T: Type, v: Any, be: bool, cache: SendTypeCache | None = None) -> bytes:
    """Full serialization of a value of *any* type given in storage form: a Value for a
    structure, otherwise what :func:`decode_field_value` returns (``(sel, v)`` for a union,
    ``(Type, v)`` for a variant, lists for struct/union/any arrays, numpy arrays...)."""
    out: list = []
    _enc_node(T, v, be, out, cache)
    return b"".join(out)


def decode_field_value(T: Type, buf, pos: int, be: bool, cache: dict) -> tuple[Any, int]:
    """Decode a full value of any type ``T`` (e.g. the element array of an ARRAY reply)."""
    try:
        return _dec_node(T, buf, pos, be, _Ctx(cache, len(buf) - pos), 0)
    except DecodeError:
        raise
    except (WireError, IndexError, struct.error, OverflowError) as e:
        raise DecodeError(f"bad value: {e}") from None


def encode_typed_value(V: Value | tuple | None, be: bool, cache: SendTypeCache | None = None) -> bytes:
    """FieldDesc + full value (pvRequest, RPC arguments/results, auth data); ``ff`` for None.
    A non-structure is given as ``(Type, value)``."""
    if V is None:
        return b"\xff"
    if isinstance(V, Value):
        return encode_type(V._T, be, cache) + encode_full(V, be, cache)
    T, v = V
    out: list = [encode_type(T, be, cache)]
    _enc_node(T, v, be, out, cache)
    return b"".join(out)


def decode_typed_value(buf, pos: int, be: bool, cache: dict) -> tuple[Any, int]:
    """FieldDesc + full value.  Returns a Value for a structure, ``(Type, value)`` for any
    other type, or None for the NULL type."""
    T, pos = decode_type(buf, pos, be, cache)
    if T is None:
        return None, pos
    if T.code == "S":
        return decode_full(T, buf, pos, be, cache)
    try:
        v, pos = _dec_node(T, buf, pos, be, _Ctx(cache, len(buf) - pos), 0)
    except DecodeError:
        raise
    except (WireError, IndexError, struct.error, OverflowError) as e:
        raise DecodeError(f"bad value: {e}") from None
    return (T, v), pos


# -- generated plans ----------------------------------------------------------------------

_PLAN_LIMIT = 256
_PLANS: dict[tuple, Any] = {}


def _selected_leaves(T: Type, mask: int) -> list[int]:
    """Indices of the leaves (non-struct nodes) serialized for ``mask``, in wire order."""
    nodes = T._nodes
    span = T._span
    out: list[int] = []
    i = 0
    n = len(nodes)
    while i < n:
        if mask >> i & 1:
            end = i + span[i]
            out.extend(j for j in range(i, end) if nodes[j].code != "S")
            i = end
        else:
            i += 1
    return out


def _plan(T: Type, mask: int, be: bool, enc: bool):
    key = (mask, be, enc)
    fn = T._cache.get(key)
    if fn is not None:
        return fn
    gkey = (T, mask, be, enc)
    fn = _PLANS.get(gkey)  # structurally equal types share compiled plans
    if fn is not None:
        T._cache[key] = fn
        return fn
    leaves = _selected_leaves(T, mask)
    nodes = T._nodes
    env: dict[str, Any] = {"_enc_node": _enc_node, "_dec_node": _dec_node, "DecodeError": DecodeError}
    lines: list[str] = []
    run: list[int] = []

    def flush():
        if not run:
            return
        fmt = (">" if be else "<") + "".join(_STRUCT_CHAR[nodes[j].code] for j in run)
        S = struct.Struct(fmt)
        k = len(env)
        if enc:
            env[f"P{k}"] = S.pack
            args = ", ".join(f"vals[{j}]" for j in run)
            lines.append(f"    app(P{k}({args}))")
        else:
            env[f"U{k}"] = S.unpack_from
            targets = ", ".join(f"vals[{j}]" for j in run)
            lines.append(f"    {targets}{',' if len(run) == 1 else ''} = U{k}(buf, pos)")
            lines.append(f"    pos += {S.size}")
        run.clear()

    for j in leaves:
        code = nodes[j].code
        if code in _FIXED:
            run.append(j)
            continue
        flush()
        k = len(env)
        env[f"N{k}"] = nodes[j]
        if enc:
            lines.append(f"    _enc_node(N{k}, vals[{j}], be, out, cache)")
        else:
            lines.append(f"    vals[{j}], pos = _dec_node(N{k}, buf, pos, be, cache, depth + 1)")
    flush()
    env["be"] = be
    if enc:
        src = "def fn(vals, out, cache):\n    app = out.append\n" + "\n".join(lines) + "\n    return None\n"
    else:
        src = "def fn(buf, pos, vals, cache, depth):\n" + "\n".join(lines) + "\n    return pos\n"
    label = T.getID().encode("ascii", "backslashreplace").decode().replace("\x00", "\\x00")
    exec(compile(src, f"<capva plan {label} mask={mask:#x}>", "exec"), env)
    fn = env["fn"]
    if len(_PLANS) > 16 * _PLAN_LIMIT:
        _PLANS.clear()
    _PLANS[gkey] = fn
    if len(T._cache) > _PLAN_LIMIT:
        for old in [c for c in T._cache if isinstance(c, tuple)]:
            del T._cache[old]
    T._cache[key] = fn
    return fn
