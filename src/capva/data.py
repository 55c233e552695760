"""aiopvxs-style data API: ``from capva.data import TypeCodeEnum as T, Member, TypeDef, Value``.

aiopvxs (pybind11 bindings of pvxs) describes structures with pvxs's ``TypeDef``/``Member``
builders rather than p4p's ``Type([(name, spec), ...])``.  This module accepts that spelling
and produces ordinary capva :class:`~capva.Type` / :class:`~capva.Value` objects, so code
ported from aiopvxs needs only its imports changed::

    >>> from capva.data import Member as M, TypeCodeEnum as T, TypeDef
    >>> V = TypeDef(T.Struct, [M(T.String, "desc"), M(T.Int64A, "array64")]).create()
    >>> V.desc = "some string"
    >>> V["array64"] = [1, 2, 3]
    >>> V.as_dict()
    {'desc': 'some string', 'array64': [1, 2, 3]}

What differs from aiopvxs, and why:

* A capva :class:`Value` is always a *structure* (as in p4p): reading a leaf field gives a
  plain Python value (``V.desc`` is a ``str``), not a nested Value.  The ``as_*`` methods
  therefore take an optional field name: ``V.as_int("value.index")``.  Called on a structure
  without a name they convert its ``value`` field (NTScalar-style), or an ``enum_t``
  (``index``/``choices``) as pvxs does.  ``TypeDef(T.Int32).create()`` has no capva
  equivalent and raises ``TypeError``; such a TypeDef is still useful as a member
  (:meth:`TypeDef.as_member`) or for ``.type``.
* :class:`TypeCode` is a ``str`` enum whose values are p4p's type codes (``T.Int32A == 'ai'``),
  so it can be passed anywhere capva or p4p take a code (``NTScalar(T.Float64)``,
  ``Type([('x', T.Int32)])``).  ``TypeCode.Int32.pvxs_code`` gives pvxs's numeric code.
* Children of a :class:`Member` may be given as a ``set`` (the aiopvxs README does); a set
  has no order, so the members come out in an arbitrary (per-process) order.  Use a list
  when the order matters (it fixes PVA bit numbers and the printed layout).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .pva.codec import TYPE_CODES
from .pva.types import Type, intern_type, parse_spec
from .pva.value import NoConvert, Value, _conv_bool, _fmt_g, _parse_float, _parse_int

__all__ = [
    "TypeCode",
    "TypeCodeEnum",
    "StoreType",
    "StoreTypeEnum",
    "Member",
    "TypeDef",
    "Value",
    "NoConvert",
]


class TypeCode(str, enum.Enum):
    """PVA field type codes under pvxs's names; each value is the p4p code string.

    ``TypeCode.Float64 == 'd'`` and ``TypeCode.StringA == 'as'``, so a member can be used as
    a p4p spec directly.  Compound kinds: ``Struct`` ('S'), ``Union`` ('U'), ``Any`` ('v'),
    and their arrays ``StructA`` ('aS'), ``UnionA`` ('aU'), ``AnyA`` ('av').
    """

    Bool = "?"
    Int8 = "b"
    Int16 = "h"
    Int32 = "i"
    Int64 = "l"
    UInt8 = "B"
    UInt16 = "H"
    UInt32 = "I"
    UInt64 = "L"
    Float32 = "f"
    Float64 = "d"
    String = "s"
    BoolA = "a?"
    Int8A = "ab"
    Int16A = "ah"
    Int32A = "ai"
    Int64A = "al"
    UInt8A = "aB"
    UInt16A = "aH"
    UInt32A = "aI"
    UInt64A = "aL"
    Float32A = "af"
    Float64A = "ad"
    StringA = "as"
    Struct = "S"
    Union = "U"
    Any = "v"
    StructA = "aS"
    UnionA = "aU"
    AnyA = "av"

    # str() gives the p4p code (what Type() and the NT helpers want), on every Python version
    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(str(self), spec)

    @property
    def pvxs_code(self) -> int:
        """pvxs's ``TypeCode::code_t`` number (the byte PVA puts on the wire)."""
        return _PVXS_CODES[self.value]

    def is_array(self) -> bool:
        return self.value[0] == "a"

    def is_unsigned(self) -> bool:
        return self.value[-1] in "BHIL"

    def scalarOf(self) -> TypeCode:
        """The element code of an array code (``Int32A`` -> ``Int32``); itself otherwise."""
        return TypeCode(self.value[1:]) if self.is_array() else self

    def arrayOf(self) -> TypeCode:
        """The array code of an element code (``Int32`` -> ``Int32A``)."""
        if self.is_array():
            raise ValueError(f"{self.name} is already an array code")
        return TypeCode("a" + self.value)


#: aiopvxs's name for the enum
TypeCodeEnum = TypeCode

_PVXS_CODES = dict(TYPE_CODES)  # p4p code -> pvxs/wire type byte (arrays add 0x08)
_PVXS_CODES.update({"a" + c: n | 0x08 for c, n in list(_PVXS_CODES.items())})


class StoreType(enum.Enum):
    """How a field's value is held (pvxs ``StoreType``), as ``Value.storageType()`` reports."""

    Null = 0
    Bool = 1
    UInteger = 2
    Integer = 3
    Real = 4
    String = 5
    Compound = 6
    Array = 7


#: aiopvxs's name for the enum
StoreTypeEnum = StoreType

_COMPOUND = frozenset(("S", "U", "aS", "aU"))


def _code(code: Any) -> str:
    """A TypeCode, or a p4p code string, as the plain p4p code."""
    if isinstance(code, TypeCode):
        return code.value
    if isinstance(code, str):
        try:
            return TypeCode(code).value
        except ValueError:
            pass
    raise TypeError(f"not a type code: {code!r} (use capva.data.TypeCode, e.g. TypeCode.Int32)")


def _split_args(what: str, args: tuple, id: str | None) -> tuple[str | None, list]:
    """pvxs's optional ``id`` then ``children`` positional arguments -> (id, children)."""
    children: Any = ()
    if len(args) > 2:
        raise TypeError(f"{what}: too many arguments (expected [id], [children])")
    if args and isinstance(args[0], str):
        if id is not None:
            raise TypeError(f"{what}: id given twice")
        id, args = args[0], args[1:]
    if args:
        children = args[0]
    if len(args) > 1:
        raise TypeError(f"{what}: expected [id], [children]")
    if children is None:
        children = ()
    if isinstance(children, (str, bytes, Mapping)) or not isinstance(children, Iterable):
        raise TypeError(f"{what}: children must be a list (or set) of Member, not {type(children).__name__}")
    kids = list(children)
    for k in kids:
        if not isinstance(k, Member):
            raise TypeError(f"{what}: children must be Member objects, not {type(k).__name__}")
    if id is not None and not isinstance(id, str):
        raise TypeError(f"{what}: id must be a str")
    return id, kids


def _spec(code: str, id: str | None, children: list[Member], what: str) -> Any:
    """The p4p spec of a node: a code string or ``(kind, id, [(name, spec), ...])``."""
    if code in _COMPOUND:
        return (code, id or None, [(m.name, m.spec()) for m in children])
    if children:
        raise TypeError(f"{what}: a {TypeCode(code).name} has no members (only Struct/Union and arrays)")
    if id:
        raise TypeError(f"{what}: only Struct/Union (and their arrays) have a type id")
    return code


class Member:
    """One named field of a :class:`TypeDef`: ``Member(code, name[, id][, children])``.

    :param code: a :class:`TypeCode` (or a p4p code string such as ``'ai'``)
    :param name: the field name
    :param id: optional type id of a Struct/Union member (may also be given positionally
        before the children, as pvxs's ``Member(code, name, id, {children})``)
    :param children: members of a Struct/Union/StructA/UnionA member, as a list (ordered)
        or a set (arbitrary order: see the module docstring)

        >>> sub = Member(T.Struct, "substruct", "my_t", [Member(T.Bool, "flag")])
    """

    __slots__ = ("code", "name", "id", "children")

    def __init__(self, code: Any, name: str, *args: Any, children: Any = None, id: str | None = None):
        self.code = TypeCode(_code(code))
        if not isinstance(name, str):
            raise TypeError(f"Member name must be a str, not {type(name).__name__}")
        self.name = name
        if children is not None:
            args = (*args, children)
        self.id, self.children = _split_args(f"Member {name!r}", args, id)
        _spec(self.code.value, self.id, self.children, f"Member {name!r}")  # validate early

    def spec(self) -> Any:
        """This member's type as a p4p field spec (a code string or a ``(kind, id, fields)``)."""
        return _spec(self.code.value, self.id, self.children, f"Member {self.name!r}")

    def __repr__(self) -> str:
        extra = f", {self.id!r}" if self.id else ""
        if self.children:
            extra += f", {self.children!r}"
        return f"Member(TypeCode.{self.code.name}, {self.name!r}{extra})"


class TypeDef:
    """A type built the pvxs way; ``.create()`` makes a :class:`~capva.Value` of it.

    Forms (as in aiopvxs / pvxs)::

        TypeDef(T.Struct, [Member(...), ...])          # anonymous structure
        TypeDef(T.Struct, "my:id/1.0", [Member(...)])  # with a type id
        TypeDef(T.Int32)                               # a leaf type (no Value of its own)
        TypeDef(some_capva_Type)                       # wrap an existing Type

    ``.type`` (or :meth:`as_type`) is the capva :class:`~capva.Type`.  A TypeDef can also be
    the ``nt=`` of a SharedPV: :meth:`wrap` turns a dict or Value into a Value of this type.
    """

    __slots__ = ("code", "id", "children", "_type", "_fromtype")

    def __init__(self, code: Any, *args: Any, id: str | None = None):
        if isinstance(code, Type):
            if args or id is not None:
                raise TypeError("TypeDef(Type) takes no further arguments")
            self._type: Type | None = code
            self.code = TypeCode(code.code)
            self.id = code.id or None
            self.children: list[Member] = []
            self._fromtype = True
            return
        self.code = TypeCode(_code(code))
        self.id, self.children = _split_args("TypeDef", args, id)
        _spec(self.code.value, self.id, self.children, "TypeDef")  # validate early
        self._type = None
        self._fromtype = False

    @classmethod
    def from_type(cls, T: Type) -> TypeDef:
        """The TypeDef of an existing capva/p4p-style :class:`~capva.Type`."""
        return cls(T)

    @property
    def type(self) -> Type:
        """The capva :class:`~capva.Type` (built once, shared by every :meth:`create`)."""
        T = self._type
        if T is None:
            spec = _spec(self.code.value, self.id, self.children, "TypeDef")
            if isinstance(spec, tuple) and spec[0] == "S":
                T = Type(spec[2], id=spec[1])
            else:
                T = parse_spec(spec, "TypeDef")
            self._type = T = intern_type(T)
        return T

    def as_type(self) -> Type:
        """Same as :attr:`type` (a method, for symmetry with the ``Value.as_*`` family)."""
        return self.type

    def as_member(self, name: str) -> Member:
        """This type as a field called ``name`` of another TypeDef (pvxs ``TypeDef::as``)."""
        if self._fromtype and self.code.value in _COMPOUND:
            raise TypeError("as_member() of a TypeDef made from a structured Type is not supported")
        return Member(self.code, name, list(self.children), id=self.id)

    def create(self) -> Value:
        """A new :class:`~capva.Value` of this type: every field at its default, none marked."""
        T = self.type
        if T.code != "S":
            raise TypeError(
                f"TypeDef({self.code.name}).create(): a capva Value is always a structure;"
                " use this TypeDef as a Member of a Struct instead"
            )
        return Value(T)

    # -- the NT-helper protocol, so that SharedPV(nt=TypeDef(...), initial={...}) works --------

    def wrap(self, value: Any, **kws: Any) -> Value:
        """A Value of this type from a dict (dotted keys allowed) or another Value."""
        if kws:
            raise TypeError(f"TypeDef.wrap() takes no keywords (got {sorted(kws)})")
        if isinstance(value, Value) and value.type() == self.type:
            return value
        return self.create().assign(value)

    def unwrap(self, V: Value) -> Value:
        """Identity: aiopvxs handlers work with Values."""
        return V

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TypeDef):
            return NotImplemented
        return self.type == other.type

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return self.type.tostr().rstrip("\n")


# -- Value.as_*() implementations (the methods live on capva.pva.value.Value) ---------------

_UNSIGNED = frozenset("BHIL")
_SIGNED = frozenset("bhil")
_REAL = frozenset("fd")


def _target(V: Value, field: str | None) -> tuple[str, Any, Value | None]:
    """Resolve what an ``as_*`` call converts: (code, stored item, enclosing struct or None).

    A structure resolves to its ``value`` field (NTScalar style) unless it is an enum
    (``index`` + ``choices``), which the caller handles; a union/any resolves to its
    selected member."""
    if field is not None:
        T = V.type(field)
        if T.code == "S":
            return _target(V[field], None)
        item = V._s.vals[V._b + V._T._paths[field]]
        return _resolve(T, item, field)
    T = V._T
    if "index" in T._index and "choices" in T._index:
        return "S", None, V
    if "value" in T._index:
        return _target(V, "value")
    raise NoConvert(f"structure {V.getID()!r} has no 'value' field to convert")


def _resolve(T: Type, item: Any, name: str) -> tuple[str, Any, Value | None]:
    code = T.code
    if code in ("U", "v"):
        if item is None:
            raise NoConvert(f"field {name!r}: the {'union' if code == 'U' else 'any'} holds nothing")
        sel, inner = item
        t = T.members[sel][1] if code == "U" else sel
        if t.code == "S":
            return _target(inner, None)
        return _resolve(t, inner, name)
    return code, item, None


def _enum_parts(E: Value) -> tuple[int, list[str]]:
    return int(E["index"]), list(E["choices"] or [])


def as_bool(V: Value, field: str | None = None) -> bool:
    code, v, E = _target(V, field)
    if E is not None:
        return _enum_parts(E)[0] != 0
    if code == "?" or code in _SIGNED or code in _UNSIGNED or code in _REAL:
        return bool(v)
    if code == "s":
        try:
            return _conv_bool(v, field or "")
        except (TypeError, ValueError):
            pass
        raise NoConvert(f"cannot convert string {v!r} to bool")
    raise NoConvert(f"cannot convert a {code!r} field to bool")


def as_int(V: Value, field: str | None = None) -> int:
    code, v, E = _target(V, field)
    if E is not None:
        return _enum_parts(E)[0]
    if code == "?" or code in _SIGNED or code in _UNSIGNED:
        return int(v)
    if code in _REAL:
        if v != v or v in (float("inf"), float("-inf")):
            raise NoConvert(f"cannot convert {v!r} to int")
        return int(v)
    if code == "s":
        try:
            return _parse_int(v, field or "", True)
        except ValueError:
            pass
        raise NoConvert(f"cannot convert string {v!r} to int")
    raise NoConvert(f"cannot convert a {code!r} field to int")


def as_float(V: Value, field: str | None = None) -> float:
    code, v, E = _target(V, field)
    if E is not None:
        return float(_enum_parts(E)[0])
    if code == "?" or code in _SIGNED or code in _UNSIGNED or code in _REAL:
        return float(v)
    if code == "s":
        try:
            return _parse_float(v, field or "")
        except ValueError:
            pass
        raise NoConvert(f"cannot convert string {v!r} to float")
    raise NoConvert(f"cannot convert a {code!r} field to float")


def _scalar_str(code: str, v: Any) -> str:
    if code == "s":
        return v
    if code == "?":
        return "true" if v else "false"
    if code in _REAL:
        return _fmt_g(float(v))
    return str(int(v))


def as_string(V: Value, field: str | None = None) -> str:
    code, v, E = _target(V, field)
    if E is not None:
        idx, choices = _enum_parts(E)
        if 0 <= idx < len(choices):
            return choices[idx]
        raise NoConvert(f"enum index {idx} is not one of {len(choices)} choices")
    if code == "?" or code == "s" or code in _SIGNED or code in _UNSIGNED or code in _REAL:
        return _scalar_str(code, v)
    raise NoConvert(f"cannot convert a {code!r} field to str")


def _array(V: Value, field: str | None) -> tuple[str, Any]:
    code, v, E = _target(V, field)
    if E is not None or code[0] != "a":
        raise NoConvert(f"cannot convert a {'enum' if E is not None else repr(code)} field to a list")
    return code, v


def as_list(V: Value, field: str | None = None) -> list:
    code, v = _array(V, field)
    if code == "as":
        return list(v)
    if code == "aS":
        return [None if e is None else as_dict(e) for e in v]
    if code in ("aU", "av"):
        return [None if e is None else _py(e[1]) for e in v]
    return v.tolist()


def as_int_list(V: Value, field: str | None = None) -> list[int]:
    code, v = _array(V, field)
    el = code[1]
    if el == "?" or el in _SIGNED or el in _UNSIGNED:
        return [int(x) for x in v.tolist()]
    if el == "s":
        try:
            return [_parse_int(x, field or "", True) for x in v]
        except ValueError as e:
            raise NoConvert(f"cannot convert string array to int: {e}") from None
    raise NoConvert(f"cannot convert a {code!r} array to a list of int")


def as_float_list(V: Value, field: str | None = None) -> list[float]:
    code, v = _array(V, field)
    el = code[1]
    if el == "?" or el in _SIGNED or el in _UNSIGNED or el in _REAL:
        return [float(x) for x in v.tolist()]
    if el == "s":
        try:
            return [_parse_float(x, field or "") for x in v]
        except ValueError as e:
            raise NoConvert(f"cannot convert string array to float: {e}") from None
    raise NoConvert(f"cannot convert a {code!r} array to a list of float")


def as_string_list(V: Value, field: str | None = None) -> list[str]:
    code, v = _array(V, field)
    el = code[1]
    if el == "s":
        return list(v)
    if el == "?" or el in _SIGNED or el in _UNSIGNED or el in _REAL:
        return [_scalar_str(el, x) for x in v.tolist()]
    raise NoConvert(f"cannot convert a {code!r} array to a list of str")


def as_array(V: Value, field: str | None = None) -> np.ndarray:
    code, v = _array(V, field)
    if code == "as":
        return np.array(v, dtype=object)
    if code in ("aS", "aU", "av"):
        raise NoConvert(f"cannot convert a {code!r} array to a numpy array")
    return v  # the stored array: read-only, right dtype (empty arrays too)


def _py(item: Any) -> Any:
    """Plain Python form of a stored union/any member."""
    if isinstance(item, Value):
        return as_dict(item)
    if isinstance(item, np.ndarray):
        return item.tolist()
    if isinstance(item, list):
        return [as_dict(e) if isinstance(e, Value) else e for e in item]
    return item


def as_dict(V: Value, field: str | None = None) -> dict[str, Any]:
    """Nested dicts of plain Python values: arrays become lists (empty ones ``[]``)."""
    if field is not None:
        sub = V[field]
        if not isinstance(sub, Value):
            raise NoConvert(f"field {field!r} is not a structure")
        V = sub
    T = V._T
    out: dict[str, Any] = {}
    for n, t in T.members:
        rel = T._paths[n]
        item = V._s.vals[V._b + rel]
        code = t.code
        if code == "S":
            out[n] = as_dict(Value._view(t, V._s, V._b + rel))
        elif code in ("U", "v"):
            out[n] = None if item is None else _py(item[1])
        elif code == "aS":
            out[n] = [None if e is None else as_dict(e) for e in item]
        elif code in ("aU", "av"):
            out[n] = [None if e is None else _py(e[1]) for e in item]
        elif code[0] == "a":
            out[n] = item.tolist() if isinstance(item, np.ndarray) else list(item)
        else:
            out[n] = item
    return out


_STORE = {"?": StoreType.Bool, "s": StoreType.String}
_STORE.update(dict.fromkeys(_SIGNED, StoreType.Integer))
_STORE.update(dict.fromkeys(_UNSIGNED, StoreType.UInteger))
_STORE.update(dict.fromkeys(_REAL, StoreType.Real))


def storage_type(V: Value, field: str | None = None) -> StoreType:
    code = V._T.code if field is None else V.type(field).code
    if code[0] == "a":
        return StoreType.Array
    return _STORE.get(code, StoreType.Compound)
