"""PVA data containers: :class:`Value`, p4p-compatible.

A :class:`Value` is an instance of a structure :class:`~capva.pva.types.Type` together with a
*changed* mark per field.  Code written for ``p4p.Value`` works unchanged::

    >>> from capva import Type, Value
    >>> V = Value(Type([('value', 'd'), ('alarm', ('S', 'alarm_t', [('severity', 'i')]))]),
    ...           {'value': 1.5})
    >>> V.alarm.severity = 2          # attribute access, dotted item access also works
    >>> V['alarm.severity'], V.changedSet() == {'value', 'alarm.severity'}
    (2, True)

Storage is flat: one list per top-level Value, indexed by PVA bit number (depth-first
pre-order, pva-protocol.md §3.5), and one Python int as the changed-mask.  A sub-structure
(``V.alarm``) is a view sharing that list and mask, which is what makes partial encoding a
loop over set bits rather than a tree walk (see :mod:`capva.pva.codec`).

Assignment converts with p4p's rules (integers wrap to the field width, strings parse as
numbers, numeric arrays become read-only 1-d numpy arrays, ...).  A value that does not fit
raises ``TypeError``/``ValueError``/``OverflowError`` naming the field and its type.
"""

from __future__ import annotations

import math
import re
import struct
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from .types import CNAMES, Type, leaf, type_cname

__all__ = ["Value", "AssignError", "NoConvert", "DTYPES"]


class AssignError(TypeError, RuntimeError):
    """A value that cannot be stored in an array, union or variant field.

    It is both a ``TypeError`` (what it is) and a ``RuntimeError`` (what p4p raises in the
    same situations), so code written for either keeps working."""


class NoConvert(TypeError, ValueError):
    """A field cannot be converted to the requested Python type (``Value.as_int()`` of a
    string that is not a number, ``as_list()`` of a scalar ...).  pvxs/aiopvxs's name.

    Both a ``TypeError`` and a ``ValueError``, so callers catching either still work."""


#: numpy dtype of each numeric code
DTYPES: dict[str, np.dtype] = {
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
_KIND_FROM_DTYPE = {v: k for k, v in DTYPES.items()}


def _empty(code: str) -> np.ndarray:
    a = np.empty(0, DTYPES[code])
    a.flags.writeable = False
    return a


_EMPTY = {c: _empty(c) for c in DTYPES}

_I64_MIN = -(1 << 63)
_U64_MAX = (1 << 64) - 1

# -- scalar conversions ------------------------------------------------------------------

_INT_RE = re.compile(r"\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)\s*\Z")


def _parse_int(s: str | bytes, name: str, signed: bool) -> int:
    if isinstance(s, bytes):
        s = s.decode("utf-8", "replace")
    m = _INT_RE.match(s)
    if m is None:
        if re.match(r"\s*[+-]?(0[xX][0-9a-fA-F]+|[0-9]+)", s):
            raise ValueError(
                f'field {name!r}: extraneous characters after {"unsigned" if signed else "integer"}: "{s}"'
            )
        raise ValueError(f'field {name!r}: invalid input for an integer: "{s}"')
    sign, digits = m.groups()
    if digits[:2] in ("0x", "0X"):
        v = int(digits, 16)
    elif len(digits) > 1 and digits[0] == "0":
        v = int(digits, 8)
    else:
        v = int(digits)
    return -v if sign == "-" else v


def _check64(v: int) -> int:
    if v < _I64_MIN:
        raise OverflowError("long out of range low")
    if v > _U64_MAX:
        raise OverflowError("int too big to convert")
    return v


def _as_int(x: Any, code: str, name: str, signed: bool) -> int:
    if isinstance(x, (int, np.integer)):  # bool included
        return _check64(int(x))
    if isinstance(x, (float, np.floating)):
        if math.isnan(x) or math.isinf(x):
            return 0
        return _check64(int(x))
    if isinstance(x, (str, bytes)):
        return _check64(_parse_int(x, name, signed))
    raise TypeError(f"Can't assign {CNAMES[code]} field {name!r} with {type(x).__name__}")


def _int_converter(code: str, bits: int, signed: bool):
    lo = -(1 << (bits - 1)) if signed else 0
    hi = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    modmask = (1 << bits) - 1
    top = 1 << bits
    half = 1 << (bits - 1)

    def conv(x: Any, name: str) -> int:
        if type(x) is int and lo <= x <= hi:
            return x
        v = _as_int(x, code, name, signed) & modmask
        if signed and v >= half:
            v -= top
        return v

    return conv


def _conv_bool(x: Any, name: str) -> bool:
    if type(x) is bool:
        return x
    if isinstance(x, (int, np.integer)):
        return bool(_check64(int(x)))
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, (float, np.floating)):
        raise ValueError(f"field {name!r}: unable to assign bool with a real number {x!r}")
    if isinstance(x, str):
        if x == "true":
            return True
        if x == "false":
            return False
        raise ValueError(f"field {name!r}: unable to assign bool with string {x!r} (use 'true'/'false')")
    if isinstance(x, bytes):
        raise ValueError(f"field {name!r}: unable to assign bool with bytes {x!r}")
    raise TypeError(f"Can't assign bool field {name!r} with {type(x).__name__}")


def _parse_float(s: str | bytes, name: str) -> float:
    if isinstance(s, bytes):
        s = s.decode("utf-8", "replace")
    t = s.strip()
    try:
        return float(t)
    except ValueError:
        pass
    if re.match(r"[+-]?0[xX]", t):  # C strtod also reads hexadecimal
        try:
            return float.fromhex(t)
        except ValueError:
            pass
    raise ValueError(f'field {name!r}: invalid input for a number: "{s}"')


def _conv_double(x: Any, name: str) -> float:
    if type(x) is float:
        return x
    if isinstance(x, (float, np.floating)):
        return float(x)
    if isinstance(x, (int, np.integer)):
        return float(_check64(int(x)))
    if isinstance(x, (str, bytes)):
        return _parse_float(x, name)
    raise TypeError(f"Can't assign double field {name!r} with {type(x).__name__}")


_F32 = struct.Struct("f")


def _conv_float(x: Any, name: str) -> float:
    v = x if type(x) is float else _conv_double(x, name)
    try:
        return _F32.unpack(_F32.pack(v))[0]
    except OverflowError:
        return math.copysign(math.inf, v)


def _fmt_g(v: float) -> str:
    """C printf ``%g``: how pvxs prints floating point numbers (6 significant digits)."""
    return "%g" % v  # noqa: UP031 - printf semantics are the point


def _conv_str(x: Any, name: str) -> str:
    if type(x) is str:
        return x
    if isinstance(x, str):
        return str(x)
    if isinstance(x, bytes):
        return x.decode("utf-8", "surrogateescape")
    if isinstance(x, (bool, np.bool_)):
        return "true" if x else "false"
    if isinstance(x, (int, np.integer)):
        return str(_check64(int(x)))
    if isinstance(x, (float, np.floating)):
        return _fmt_g(float(x))
    raise TypeError(f"Can't assign string field {name!r} with {type(x).__name__}")


SCALAR_CONVERT = {
    "?": _conv_bool,
    "b": _int_converter("b", 8, True),
    "B": _int_converter("B", 8, False),
    "h": _int_converter("h", 16, True),
    "H": _int_converter("H", 16, False),
    "i": _int_converter("i", 32, True),
    "I": _int_converter("I", 32, False),
    "l": _int_converter("l", 64, True),
    "L": _int_converter("L", 64, False),
    "f": _conv_float,
    "d": _conv_double,
    "s": _conv_str,
}

DEFAULTS: dict[str, Any] = {
    "?": False,
    "b": 0,
    "B": 0,
    "h": 0,
    "H": 0,
    "i": 0,
    "I": 0,
    "l": 0,
    "L": 0,
    "f": 0.0,
    "d": 0.0,
    "s": "",
}


def _array_converter(code: str):
    dt = DTYPES[code]
    cname = CNAMES[code] + "[]"

    def conv(x: Any, name: str) -> np.ndarray:
        if isinstance(x, np.ndarray) and x.dtype == dt and x.ndim == 1 and not x.flags.writeable:
            return x  # already in storage form (immutable): share it
        try:
            a = np.array(x, dtype=dt)
        except OverflowError as e:
            raise OverflowError(f"field {name!r} ({cname}): {e}") from None
        except (TypeError, ValueError) as e:
            raise ValueError(f"field {name!r} ({cname}): {e}") from None
        if a.ndim != 1:
            raise AssignError(f"field {name!r} ({cname}): only a 1-d array can be assigned, not {a.ndim}-d")
        if a.dtype.char != dt.char:  # e.g. 'q' vs 'l': same layout, p4p reports the canonical one
            a = a.view(dt)
        a.flags.writeable = False
        return a

    return conv


def _conv_strarray(x: Any, name: str) -> list[str]:
    if isinstance(x, str):
        return list(x)
    if x is None or isinstance(x, (int, float)) or not hasattr(x, "__iter__"):
        raise AssignError(f"field {name!r} (string[]): must assign a sequence, not {type(x).__name__}")
    out = []
    for e in x:
        if isinstance(e, str):
            out.append(str(e))
        elif isinstance(e, bytes):
            out.append(e.decode("utf-8", "surrogateescape"))
        else:
            raise AssignError(
                f"field {name!r} (string[]): elements must be str or bytes, not {type(e).__name__}"
            )
    return out


CONVERT: dict[str, Any] = dict(SCALAR_CONVERT)
for _c in DTYPES:
    CONVERT["a" + _c] = _array_converter(_c)
CONVERT["as"] = _conv_strarray


def default_of(t: Type) -> Any:
    """Storage-form default of a non-struct node."""
    code = t.code
    d = DEFAULTS.get(code)
    if d is not None:
        return d
    if code[0] == "a":
        if code in ("as", "aS", "aU", "av"):
            return []
        return _EMPTY[code[1]]
    return None  # 'v', 'U'


def _infer(x: Any, name: str) -> tuple[Type, Any]:
    """Variant ('any') assignment: infer the type of a Python value as p4p does."""
    if isinstance(x, Value):
        return x._T, _clone_value(x)
    if isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) and x[0] in CONVERT:
        t = leaf(x[0])
        return t, CONVERT[x[0]](x[1], name)
    if isinstance(x, (bool, np.bool_)):
        return leaf("?"), bool(x)
    if isinstance(x, (int, np.integer)):
        return leaf("l"), SCALAR_CONVERT["l"](x, name)
    if isinstance(x, (float, np.floating)):
        return leaf("d"), float(x)
    if isinstance(x, (str, bytes)):
        return leaf("s"), _conv_str(x, name)
    if isinstance(x, np.ndarray):
        code = _KIND_FROM_DTYPE.get(x.dtype.newbyteorder("="))
        if code is not None:
            return leaf("a" + code), CONVERT["a" + code](x, name)
        if x.dtype.kind in "US":
            return leaf("as"), _conv_strarray(x.tolist(), name)
        raise AssignError(f"field {name!r} (any): unable to infer a type for array of {x.dtype}")
    if isinstance(x, (list, tuple)):
        try:
            return leaf("as"), _conv_strarray(x, name)
        except AssignError as e:
            raise AssignError(f"field {name!r} (any): inferred type string[] from a list: {e}") from None
    raise AssignError(f"field {name!r} (any): unable to infer a type for {type(x).__name__}")


def convert_node(t: Type, x: Any, name: str, cur: Any = None) -> Any:
    """Convert ``x`` to the storage form of a non-struct node of type ``t``.

    ``cur`` is the current stored value (unions remember their selection)."""
    code = t.code
    conv = CONVERT.get(code)
    if conv is not None:
        return conv(x, name)
    if code == "U":
        return _conv_union(t, x, name, cur)
    if code == "v":
        if x is None:
            return None
        return _infer(x, name)
    if code == "aS":
        e = t.elem
        assert e is not None
        if isinstance(x, (str, bytes, Mapping)) or not hasattr(x, "__iter__"):
            raise AssignError(f"field {name!r} (struct[]): must assign a sequence, not {type(x).__name__}")
        return [None if v is None else _struct_from(e, v, name) for v in x]
    if code == "aU":
        e = t.elem
        assert e is not None
        if isinstance(x, (str, bytes, Mapping)) or not hasattr(x, "__iter__"):
            raise AssignError(f"field {name!r} (union[]): must assign a sequence, not {type(x).__name__}")
        return [None if v is None else _conv_union(e, v, name, None) for v in x]
    if code == "av":
        if isinstance(x, (str, bytes, Mapping)) or not hasattr(x, "__iter__"):
            raise AssignError(f"field {name!r} (any[]): must assign a sequence, not {type(x).__name__}")
        # None (a null element) is representable on the wire, so unlike p4p we accept it
        return [None if v is None else _infer(v, name) for v in x]
    raise TypeError(f"field {name!r}: cannot assign to a field of type {t.code!r}")


def _struct_from(t: Type, x: Any, name: str) -> Value:
    """A new Value of struct type ``t`` from a dict or another Value."""
    V = Value(t)
    if isinstance(x, Value):
        if x._T == t and x._b == 0 and x._s.T is x._T:
            V._s.vals = [_copy_stored(v) for v in x._s.vals]
            V._s.mask = x._s.mask
            return V
        V._assign_from_value(x, all_fields=True)
    elif isinstance(x, Mapping):
        for k, v in x.items():
            V[k] = v
    elif isinstance(x, (list, tuple)):
        try:
            pairs = [(k, v) for k, v in x]
        except (TypeError, ValueError):
            raise AssignError(
                f"field {name!r} (struct {t.getID()}): expected a dict, a Value or (name, value) pairs"
            ) from None
        for k, v in pairs:
            V[k] = v
    else:
        raise AssignError(f"field {name!r} (struct {t.getID()}): cannot assign from {type(x).__name__}")
    return V


def _conv_union(t: Type, x: Any, name: str, cur: Any) -> Any:
    if x is None:
        return None
    members = t.members
    if isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str):
        i = t._index.get(x[0])
        if i is None:
            raise KeyError(f"union {name!r} has no member {x[0]!r} (members: {[n for n, _ in members]})")
        return (i, _conv_member(members[i][1], x[1], f"{name}.{x[0]}"))
    if cur is not None:
        i = cur[0]
        return (i, _conv_member(members[i][1], x, f"{name}.{members[i][0]}"))
    for i, (n, mt) in enumerate(members):
        try:
            return (i, _conv_member(mt, x, f"{name}.{n}"))
        except (TypeError, ValueError, OverflowError):
            continue
    raise ValueError(f"field {name!r} (union): no member accepts a {type(x).__name__}")


def _conv_member(t: Type, x: Any, name: str) -> Any:
    if t.code == "S":
        if t.id == "enum_t" and not isinstance(x, (Mapping, Value)):
            V = Value(t)
            V._assign_node(0, t, x, name)
            return V
        return _struct_from(t, x, name)
    return convert_node(t, x, name)


def _copy_stored(v: Any) -> Any:
    """Deep enough copy of a stored item: nested Values are cloned, the rest is immutable."""
    if v is None or v.__class__ in (int, float, str, bool):
        return v
    if isinstance(v, Value):
        return _clone_value(v)
    if isinstance(v, list):
        return [_copy_stored(e) for e in v]
    if isinstance(v, tuple):
        return (v[0], _copy_stored(v[1]))
    return v  # read-only numpy arrays


def _clone_value(V: Value) -> Value:
    """Independent copy of V (a sub-structure view becomes a top-level Value)."""
    n = V._T._span[0]
    out = Value(V._T)
    b = V._b
    out._s.vals = [_copy_stored(v) for v in V._s.vals[b : b + n]]
    out._s.mask = (V._s.mask >> b) & ((1 << n) - 1)
    return out


class _Store:
    """Shared storage of one top-level Value and all its sub-structure views."""

    __slots__ = ("T", "vals", "mask")

    def __init__(self, T: Type, vals: list, mask: int = 0):
        self.T = T
        self.vals = vals
        self.mask = mask


def _init_vals(T: Type) -> list:
    """Fresh storage list for struct type T (memoised template, copied)."""
    tmpl = T._cache.get("tmpl")
    if tmpl is None:
        tmpl = [None if t.code == "S" else default_of(t) for t in T._nodes]
        T._cache["tmpl"] = tmpl
    vals = tmpl.copy()
    # mutable defaults (lists) must not be shared between Values
    lst = T._cache.get("listidx")
    if lst is None:
        lst = T._cache["listidx"] = tuple(i for i, v in enumerate(tmpl) if isinstance(v, list))
    for i in lst:
        vals[i] = []
    return vals


def _parents(T: Type) -> tuple[int, ...]:
    p = T._cache.get("parents")
    if p is None:
        par = [-1] * len(T._nodes)
        span = T._span
        for i in range(len(span)):
            for j in range(i + 1, i + span[i]):
                par[j] = i  # later (deeper) i overwrite earlier: ends as the nearest parent
        p = T._cache["parents"] = tuple(par)
    return p


_SLOTS = frozenset(("_T", "_s", "_b"))


class _yields_to_field:
    """Method decorator for the aiopvxs names added to :class:`Value`: on attribute access a
    structure field of the same name is returned instead (what ``V.name`` meant before the
    method existed), else the bound method.  ``Value.name(V)`` is always the method."""

    def __init__(self, fn: Any):
        self._fn = fn
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __get__(self, obj: Any, cls: Any = None) -> Any:
        if obj is None:
            return self._fn
        rel = obj._T._paths.get(self.__name__)
        if rel is not None:
            return obj._get(rel)
        return self._fn.__get__(obj, cls)


class Value:
    """Value(type, initial=None, clone=None)

    :param type: a structure :class:`~capva.Type`.
    :param initial: a mapping (dotted keys allowed) or an iterable of ``(name, value)``
        pairs; every field given is assigned and marked changed.
    :param clone: another Value to copy (type, contents and changed marks).

    Read fields as attributes or items (``V.alarm.severity``, ``V['alarm.severity']``);
    scalars come back as bool/int/float/str, numeric arrays as read-only numpy arrays (None
    when empty), string arrays as lists, sub-structures as Values sharing this one's storage.
    """

    __slots__ = ("_T", "_s", "_b")

    def __init__(self, type: Type | None = None, initial: Any = None, clone: Value | None = None):
        if clone is not None:
            if not isinstance(clone, Value):
                raise TypeError("clone= must be a Value")
            c = _clone_value(clone)
            object.__setattr__(self, "_T", c._T)
            object.__setattr__(self, "_s", c._s)
            object.__setattr__(self, "_b", 0)
            if type is None:
                return
        if not isinstance(type, Type):
            raise TypeError(f"Value() needs a Type, not {type.__class__.__name__}")
        if type.code != "S":
            raise TypeError("Value() needs a structure Type")
        if clone is None:
            object.__setattr__(self, "_T", type)
            object.__setattr__(self, "_s", _Store(type, _init_vals(type)))
            object.__setattr__(self, "_b", 0)
        if initial is not None:
            self[None] = initial

    @classmethod
    def _view(cls, T: Type, store: _Store, base: int) -> Value:
        V = object.__new__(cls)
        object.__setattr__(V, "_T", T)
        object.__setattr__(V, "_s", store)
        object.__setattr__(V, "_b", base)
        return V

    @classmethod
    def _from_storage(cls, T: Type, vals: list, mask: int) -> Value:
        """Wrap an already-built storage list (used by the decoder)."""
        V = object.__new__(cls)
        object.__setattr__(V, "_T", T)
        object.__setattr__(V, "_s", _Store(T, vals, mask))
        object.__setattr__(V, "_b", 0)
        return V

    # -- field access ---------------------------------------------------------------------

    def _get(self, rel: int) -> Any:
        T = self._T
        node = T._nodes[rel]
        i = self._b + rel
        if node.code == "S":
            return Value._view(node, self._s, i)
        return _GETTERS[node.code](self._s.vals[i])

    def __getattr__(self, name: str) -> Any:
        if name in _SLOTS or name[:2] == "__":
            raise AttributeError(name)  # not a field (e.g. during copy/unpickling)
        rel = self._T._paths.get(name)
        if rel is None:
            raise AttributeError(name)
        return self._get(rel)

    def __getitem__(self, name: str) -> Any:
        rel = self._T._paths.get(name)
        if rel is None:
            if name == "":
                return self
            if not isinstance(name, str):
                raise TypeError(f"field names are str, not {type(name).__name__}")
            raise KeyError(f"no such member field '{name}'")
        return self._get(rel)

    def __setattr__(self, name: str, x: Any) -> None:
        if name in _SLOTS:
            object.__setattr__(self, name, x)
            return
        rel = self._T._paths.get(name)
        if rel is None:
            raise AttributeError(name)
        self._assign_node(rel, self._T._nodes[rel], x, name)

    def __setitem__(self, name: str | None, x: Any) -> None:
        if name is None:
            self._assign_node(0, self._T, x, "")
            return
        rel = self._T._paths.get(name)
        if rel is None:
            if name == "":
                self._assign_node(0, self._T, x, "")
                return
            if not isinstance(name, str):
                raise TypeError(f"field names are str, not {type(name).__name__}")
            raise KeyError(f"no such member field '{name}'")
        self._assign_node(rel, self._T._nodes[rel], x, name)

    def _assign_node(self, rel: int, node: Type, x: Any, name: str) -> None:
        s = self._s
        i = self._b + rel
        if node.code != "S":
            conv = CONVERT.get(node.code)
            if conv is not None:
                s.vals[i] = conv(x, name)
            else:
                s.vals[i] = convert_node(node, x, name, s.vals[i])
            s.mask |= 1 << i
            return
        sub = self if rel == 0 else Value._view(node, s, i)
        if isinstance(x, Value):
            sub._assign_from_value(x)
        elif isinstance(x, Mapping):
            for k, v in x.items():
                sub[k] = v
        elif node.id == "enum_t" and "index" in node._index:
            if isinstance(x, str):
                choices = sub["choices"] if "choices" in node._index else []
                try:
                    idx = choices.index(x)
                except ValueError:
                    try:
                        idx = int(x, 0)  # p4p: a number given as text selects by index
                    except ValueError:
                        raise ValueError(
                            f'field {name!r} (enum_t): "{x}" is not one of the choices {choices}'
                        ) from None
            else:
                if "choices" in node._index and not sub["choices"]:
                    warnings.warn("enum_t assignment with empty choices", UserWarning, stacklevel=3)
                idx = x
            sub["index"] = idx
        elif isinstance(x, (str, bytes)) or not hasattr(x, "__iter__"):
            raise TypeError(
                f"field {name or '<top>'!r} is a structure ({node.getID()}): assign a dict or a Value,"
                f" not {type(x).__name__}"
            )
        else:
            for k, v in x:
                sub[k] = v

    def _assign_from_value(self, src: Value, all_fields: bool = False) -> None:
        """Copy the fields of ``src`` marked changed (all of them if ``all_fields``) that
        exist here, by name.  This is p4p's ``V[None] = other``."""
        T = src._T
        names = T._names
        span = T._span
        b = src._b
        n = span[0]
        if all_fields:
            mask = (1 << n) - 2
        else:
            mask = (src._s.mask >> b) & ((1 << n) - 1)
            if mask & 1:
                mask = (1 << n) - 2
        vals = src._s.vals
        mine = self._T
        for i in _bits(mask):
            node = T._nodes[i]
            if node.code == "S":
                continue
            rel = mine._paths.get(names[i])
            if rel is None:
                if all_fields:
                    continue
                raise AssignError(
                    f"cannot assign: the source's changed field {names[i]!r} does not exist here"
                )
            mnode = mine._nodes[rel]
            if mnode == node:
                self._s.vals[self._b + rel] = _copy_stored(vals[b + i])
                self._s.mask |= 1 << (self._b + rel)
            else:
                self._assign_node(rel, mnode, _GETTERS[node.code](vals[b + i]), names[i])

    # -- p4p API ----------------------------------------------------------------------------

    def type(self, fld: str | None = None) -> Type:
        """The Type of this structure, or of the field ``fld``."""
        if fld is None:
            return self._T
        rel = self._T._paths.get(fld)
        if rel is None:
            raise KeyError(f"no such member field '{fld}'")
        return self._T._nodes[rel]

    def getID(self) -> str:
        return self._T.getID()

    def keys(self) -> list[str]:
        return self._T.keys()

    def __iter__(self):
        return iter(self._T.keys())

    def has(self, name: str) -> bool:
        return name in self._T._paths

    __contains__ = has

    def get(self, name: str, default: Any = None) -> Any:
        rel = self._T._paths.get(name)
        if rel is None:
            return default
        return self._get(rel)

    def items(self, key: str | None = None) -> list[tuple[str, Any]]:
        """``[(name, value)]`` of the direct members (sub-structures as Values)."""
        V = self if key is None else self[key]
        if not isinstance(V, Value):
            raise ValueError(f"{key!r} is not a structure")
        T = V._T
        out = []
        for n in T.keys():
            rel = T._paths[n]
            node = T._nodes[rel]
            if node.code == "S":
                out.append((n, Value._view(node, V._s, V._b + rel)))
            else:
                out.append((n, _tolist_item(node, V._s.vals[V._b + rel])))
        return out

    def todict(self, name: str | None = None, wrapper: Any = dict) -> Any:
        """Recursive conversion to (nested) dicts; ``wrapper`` e.g. ``OrderedDict``."""
        V = self if name is None else self[name]
        if not isinstance(V, Value):
            return V
        return _todict(V, wrapper)

    def tolist(self, name: str | None = None) -> Any:
        """Recursive conversion to lists of ``(name, value)`` tuples."""
        V = self if name is None else self[name]
        if not isinstance(V, Value):
            return V
        return _tolist(V)

    def _rel_mask(self) -> int:
        n = self._T._span[0]
        return (self._s.mask >> self._b) & ((1 << n) - 1)

    def changed(self, *fields: str) -> bool:
        """True if any of ``fields`` (or, with no argument, anything) is marked changed,
        counting a field as changed when its parent or any child is marked."""
        T = self._T
        mask = self._s.mask
        b = self._b
        par = _parents(self._s.T)
        for fld in fields or (None,):
            if fld is None:
                rel = 0
            else:
                rel = T._paths.get(fld)
                if rel is None:
                    raise KeyError(f"no such member field '{fld}'")
            i = b + rel
            span = T._span[rel]
            if (mask >> i) & ((1 << span) - 1):
                return True
            p = par[i]
            while p >= 0:
                if mask >> p & 1:
                    return True
                p = par[p]
        return False

    def changedSet(self, expand: bool = False, parents: bool = False) -> set[str]:
        """Names of the fields marked changed.

        A marked sub-structure contributes its own name and all its descendants' (as p4p
        4.3 reports); ``parents=True`` adds the enclosing structures of every marked field.
        The structure itself (bit 0 of this Value) is never named."""
        T = self._T
        names = T._names
        span = T._span
        out: set[str] = set()
        mask = self._rel_mask() & ~1
        for i in _bits(mask):
            out.add(names[i])
            if span[i] > 1:
                out.update(names[i + 1 : i + span[i]])
            if parents:
                nm = names[i]
                while "." in nm:
                    nm = nm.rsplit(".", 1)[0]
                    out.add(nm)
        return out

    asSet = changedSet

    def mark(self, field: str | None = None, val: bool = True) -> None:
        """Mark (or with ``val=False`` unmark) one field, or this whole structure."""
        rel = 0 if field is None else self._T._paths.get(field)
        if rel is None:
            raise KeyError(f"no such member field '{field}'")
        bit = 1 << (self._b + rel)
        if val:
            self._s.mask |= bit
        else:
            self._s.mask &= ~bit

    def unmark(self) -> None:
        """Clear every changed mark of this structure."""
        n = self._T._span[0]
        self._s.mask &= ~(((1 << n) - 1) << self._b)

    def clear(self) -> None:
        """p4p's ``clear()``: ``mark(None, False)``, i.e. only this structure's own mark."""
        self.mark(None, False)

    def select(self, name: str, selector: str | None = None) -> None:
        """Select member ``selector`` (default value) of union field ``name``; None deselects."""
        rel = self._T._paths.get(name)
        if rel is None:
            raise KeyError(f"no such member field '{name}'")
        node = self._T._nodes[rel]
        if node.code != "U":
            raise TypeError(f"field {name!r} is not a union")
        i = self._b + rel
        if selector is None:
            self._s.vals[i] = None
        else:
            k = node._index.get(selector)
            if k is None:
                raise KeyError(f"union {name!r} has no member {selector!r}")
            mt = node.members[k][1]
            self._s.vals[i] = (k, Value(mt) if mt.code == "S" else default_of(mt))
        self._s.mask |= 1 << i

    def tostr(self, limit: int = 0) -> str:
        """pvxs-style printout (what ``pvget``-like tools show), truncated to ``limit``."""
        lines: list[str] = []
        _value_lines(self._T, self, 0, "", lines)
        s = "\n".join(lines) + "\n"
        if limit and len(s) > limit:
            return s[:limit] + "..."
        return s

    __str__ = tostr

    def __repr__(self) -> str:
        parts = []
        ID = self.getID()
        if ID != "structure":
            parts.append("id:" + ID)
        if "value" in self._T._paths:
            parts.append(repr(self["value"]))
        else:
            keys = self._T.keys()
            if keys:
                parts.append(repr(self.get(keys[0])))
        return "Value({})".format(", ".join(parts))

    def __eq__(self, other: object) -> bool:
        """Equal type and equal contents (p4p compares identity; content is more useful)."""
        if self is other:
            return True
        if not isinstance(other, Value):
            return NotImplemented
        if self._T != other._T:
            return False
        n = self._T._span[0]
        a = self._s.vals[self._b : self._b + n]
        b = other._s.vals[other._b : other._b + n]
        return all(_eq_stored(x, y) for x, y in zip(a, b))

    def __ne__(self, other: object) -> bool:
        r = self.__eq__(other)
        return r if r is NotImplemented else not r

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self):
        return (_unpickle, (self._T, self.todict(), self.changedSet()))

    def __copy__(self) -> Value:
        return _clone_value(self)

    # -- aiopvxs (pvxs) API --------------------------------------------------------------------
    # Conversions live in capva.data.  A field of the same name wins over these methods on
    # attribute access (V.id is the field 'id' if there is one), so no p4p-style code changes
    # meaning; Value.id(V) always reaches the method.

    @_yields_to_field
    def as_dict(self, field: str | None = None) -> dict[str, Any]:
        """Nested dicts of plain Python values (arrays as lists, ``[]`` when empty); unlike
        :meth:`todict`, which keeps p4p's numpy arrays (None when empty).

        ``V.as_dict()`` of an NTScalar is ``{'value': [1, 2], 'alarm': {...}, ...}``."""
        from .. import data

        return data.as_dict(self, field)

    @_yields_to_field
    def as_bool(self, field: str | None = None) -> bool:
        """``field`` (default: this structure's ``value``, or the index of an enum) as a bool.

        Raises :class:`NoConvert` for arrays, structures and non-boolean strings."""
        from .. import data

        return data.as_bool(self, field)

    @_yields_to_field
    def as_int(self, field: str | None = None) -> int:
        """``field`` (default ``value``; an enum gives its index) as an int; see :meth:`as_bool`."""
        from .. import data

        return data.as_int(self, field)

    @_yields_to_field
    def as_float(self, field: str | None = None) -> float:
        """``field`` (default ``value``) as a float; see :meth:`as_bool`."""
        from .. import data

        return data.as_float(self, field)

    @_yields_to_field
    def as_string(self, field: str | None = None) -> str:
        """``field`` (default ``value``) as text, pvxs-style (``true``, ``%g``); an enum gives
        its selected choice."""
        from .. import data

        return data.as_string(self, field)

    @_yields_to_field
    def as_list(self, field: str | None = None) -> list:
        """An array field (default ``value``) as a Python list; scalars raise NoConvert."""
        from .. import data

        return data.as_list(self, field)

    @_yields_to_field
    def as_int_list(self, field: str | None = None) -> list[int]:
        """An integer/bool (or numeric string) array as ``list[int]``; float arrays raise."""
        from .. import data

        return data.as_int_list(self, field)

    @_yields_to_field
    def as_float_list(self, field: str | None = None) -> list[float]:
        """A numeric (or numeric string) array as ``list[float]``."""
        from .. import data

        return data.as_float_list(self, field)

    @_yields_to_field
    def as_string_list(self, field: str | None = None) -> list[str]:
        """A string array, or a numeric array formatted pvxs-style, as ``list[str]``."""
        from .. import data

        return data.as_string_list(self, field)

    @_yields_to_field
    def as_array(self, field: str | None = None) -> np.ndarray:
        """An array field as numpy: the stored read-only array for numbers, an object array
        for strings."""
        from .. import data

        return data.as_array(self, field)

    @_yields_to_field
    def id(self) -> str:
        """pvxs's ``id()``: the type id as declared, ``''`` when none (:meth:`getID`, p4p's
        spelling, says ``'structure'`` instead)."""
        return self._T.id

    @_yields_to_field
    def storageType(self, field: str | None = None) -> Any:
        """A :class:`capva.data.StoreType`: ``Compound`` for a structure, ``Array``,
        ``Integer``, ``UInteger``, ``Real``, ``Bool`` or ``String`` for a field."""
        from .. import data

        return data.storage_type(self, field)

    @_yields_to_field
    def assign(self, other: Any) -> Value:
        """Copy from a dict (dotted keys allowed) or a Value (its marked fields), as
        ``V[None] = other``; returns ``self`` so that ``T.create().assign({...})`` chains."""
        self[None] = other
        return self

    @_yields_to_field
    def cloneEmpty(self) -> Value:
        """A new Value of the same type with every field at its default and none marked."""
        return Value(self._T)

    def __deepcopy__(self, memo) -> Value:
        return _clone_value(self)


def _unpickle(T, d, changed):
    V = Value(T, d)
    V.unmark()
    for f in changed:
        V.mark(f)
    return V


def _eq_stored(x: Any, y: Any) -> bool:
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        return isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and np.array_equal(x, y)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_eq_stored(a, b) for a, b in zip(x, y))
    if isinstance(x, tuple) and isinstance(y, tuple):
        return x[0] == y[0] and _eq_stored(x[1], y[1])
    return bool(x == y)


def _bits(mask: int):
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def _get_array(v):
    return None if len(v) == 0 else v


def _get_sel(v):
    return None if v is None else _GETTERS_ITEM(v[1])


def _get_list_sel(v):
    return [None if e is None else _GETTERS_ITEM(e[1]) for e in v]


_GETTERS: dict[str, Any] = {c: (lambda v: v) for c in DEFAULTS}
for _c in DTYPES:
    _GETTERS["a" + _c] = _get_array
_GETTERS["as"] = list
_GETTERS["v"] = _get_sel
_GETTERS["U"] = _get_sel
_GETTERS["aS"] = list
_GETTERS["aU"] = _get_list_sel
_GETTERS["av"] = _get_list_sel


def _todict(V: Value, wrapper: Any) -> Any:
    T = V._T
    out = []
    for n in T.keys():
        rel = T._paths[n]
        node = T._nodes[rel]
        if node.code == "S":
            out.append((n, _todict(Value._view(node, V._s, V._b + rel), wrapper)))
        else:
            out.append((n, _todict_item(node, V._s.vals[V._b + rel], wrapper)))
    return wrapper(out)


def _todict_item(node: Type, v: Any, wrapper: Any) -> Any:
    code = node.code
    if code in ("U", "v"):
        if v is None:
            return None
        inner = v[1]
        return _todict(inner, wrapper) if isinstance(inner, Value) else _GETTERS_ITEM(inner)
    if code == "aS":
        return [None if e is None else _todict(e, wrapper) for e in v]
    if code in ("aU", "av"):
        return [
            None if e is None else (_todict(e[1], wrapper) if isinstance(e[1], Value) else e[1]) for e in v
        ]
    return _GETTERS[code](v)


def _GETTERS_ITEM(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return None if len(v) == 0 else v
    if isinstance(v, list):
        return list(v)
    return v


def _tolist(V: Value) -> list:
    T = V._T
    out = []
    for n in T.keys():
        rel = T._paths[n]
        node = T._nodes[rel]
        if node.code == "S":
            out.append((n, _tolist(Value._view(node, V._s, V._b + rel))))
        else:
            out.append((n, _tolist_item(node, V._s.vals[V._b + rel])))
    return out


def _tolist_item(node: Type, v: Any) -> Any:
    code = node.code
    if code in ("U", "v"):
        if v is None:
            return None
        inner = v[1]
        return _tolist(inner) if isinstance(inner, Value) else _GETTERS_ITEM(inner)
    if code == "aS":
        return [None if e is None else _tolist(e) for e in v]
    if code in ("aU", "av"):
        return [None if e is None else (_tolist(e[1]) if isinstance(e[1], Value) else e[1]) for e in v]
    return _GETTERS[code](v)


# -- pvxs-style printer ----------------------------------------------------------------------

_ESC = {
    ord('"'): '\\"',
    ord("'"): "\\'",
    ord("\\"): "\\\\",
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
    ord("\a"): "\\a",
    ord("\b"): "\\b",
    ord("\f"): "\\f",
    ord("\v"): "\\v",
}


def _qstr(s: str) -> str:
    """pvxs's quoting: escapes for quotes and control characters, ``\\xNN`` for every other
    byte outside printable ASCII (so UTF-8 text prints as its bytes)."""
    out = []
    for b in s.encode("utf-8", "surrogateescape"):
        e = _ESC.get(b)
        if e is not None:
            out.append(e)
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return '"' + "".join(out) + '"'


def _fmt_scalar(code: str, v: Any) -> str:
    if code == "s":
        return _qstr(v)
    if code == "?":
        return "true" if v else "false"
    if code in ("f", "d"):
        return _fmt_g(v)
    return str(v)


def _fmt_array(code: str, v: Any) -> str:
    if len(v) == 0:
        return "{?}[]"
    if code == "as":
        body = ", ".join(_qstr(e) for e in v)
    elif code == "a?":
        body = ", ".join("1" if e else "0" for e in v)
    elif code in ("af", "ad"):
        body = ", ".join(_fmt_g(float(e)) for e in v)
    else:
        body = ", ".join(str(int(e)) for e in v)
    return f"{{{len(v)}}}[{body}]"


def _value_lines(T: Type, V: Value, depth: int, name: str, out: list[str]) -> None:
    """Print struct V (type T) at ``depth`` with member name ``name`` ('' at top)."""
    ind = "    " * depth
    head = "struct" + (f' "{T.id}"' if T.id else "")
    suffix = f" {name}" if name else ""
    if not T.members:
        out.append(f"{ind}{head} {{}}{suffix}")
        return
    out.append(f"{ind}{head} {{")
    for n, child in T.members:
        rel = T._paths[n]
        if child.code == "S":
            _value_lines(child, Value._view(child, V._s, V._b + rel), depth + 1, n, out)
        else:
            _field_lines(child, V._s.vals[V._b + rel], depth + 1, n, out)
    out.append(f"{ind}}}{suffix}")


def _inline(t: Type, v: Any, depth: int, prefix: str, out: list[str]) -> None:
    """``prefix`` then the type and value of a union member / variant content."""
    ind = "    " * depth
    if t.code == "S":
        sub: list[str] = []
        _value_lines(t, v, depth, "", sub)
        sub[0] = f"{ind}{prefix}{sub[0].lstrip()}"
        out.extend(sub)
    elif t.code in ("U", "v", "aS", "aU", "av"):
        sub = []
        _field_lines(t, v, depth, "", sub)
        sub[0] = f"{ind}{prefix}{sub[0].lstrip()}"
        out.extend(sub)
    elif t.code[0] == "a":
        out.append(f"{ind}{prefix}{type_cname(t)} = {_fmt_array(t.code, v)}")
    else:
        out.append(f"{ind}{prefix}{type_cname(t)} = {_fmt_scalar(t.code, v)}")


def _field_lines(t: Type, v: Any, depth: int, name: str, out: list[str]) -> None:
    ind = "    " * depth
    code = t.code
    nm = f" {name}" if name else ""
    if code == "U":
        kw = f'union "{t.id}"' if t.id else "union"
        if v is None:
            out.append(f"{ind}{kw}{nm} null")
        else:
            mname, mt = t.members[v[0]]
            _inline(mt, v[1], depth, f"{kw}{nm}.{mname} ", out)
    elif code == "v":
        if v is None:
            out.append(f"{ind}any{nm} null")
        else:
            _inline(v[0], v[1], depth, f"any{nm} ", out)
    elif code in ("aS", "aU", "av"):
        kw = {"aS": "struct[]", "aU": "union[]", "av": "any[]"}[code]
        if not v:
            out.append(f"{ind}{kw}{nm} = {{0}}[]")
            return
        out.append(f"{ind}{kw}{nm} = {{{len(v)}}}[")
        ind1 = "    " * (depth + 1)
        for e in v:
            if e is None:
                out.append(f"{ind1}null")
            elif code == "aS":
                _value_lines(e._T, e, depth + 1, "", out)
            elif code == "aU":
                assert t.elem is not None
                mname, mt = t.elem.members[e[0]]
                kw = f'union "{t.elem.id}"' if t.elem.id else "union"
                _inline(mt, e[1], depth + 1, f"{kw}.{mname} ", out)
            else:
                _inline(e[0], e[1], depth + 1, "", out)
        out.append(f"{ind}]")
    elif code[0] == "a":
        out.append(f"{ind}{type_cname(t)}{nm} = {_fmt_array(code, v)}")
    else:
        out.append(f"{ind}{type_cname(t)}{nm} = {_fmt_scalar(code, v)}")
