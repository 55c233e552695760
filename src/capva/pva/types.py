"""PVA type descriptions: :class:`Type`, p4p-compatible.

A :class:`Type` is an immutable description of a PVA field: a scalar ('d', 'i', ...), an
array ('ad', 'as', ...), a variant ('v', 'av'), or a compound (struct 'S', union 'U',
struct array 'aS', union array 'aU').  The public constructor builds structures exactly as
``p4p.Type`` does::

    >>> T = Type([('value', 'd'), ('alarm', ('S', 'alarm_t', [('severity', 'i')]))], id='my_t')
    >>> T.getID(), T.keys(), T['alarm'].getID()
    ('my_t', ['value', 'alarm'], 'alarm_t')
    >>> T.aspy()
    ('S', 'my_t', [('value', 'd'), ('alarm', ('S', 'alarm_t', [('severity', 'i')]))])

Every structure also carries its *flat layout*: the depth-first, pre-order list of its nodes
that defines PVA bit numbering (pva-protocol.md §3.5).  Values store their fields in one list
indexed by those bit numbers, so partial (changed-field) encoding needs no tree walk.

Unlike p4p (identity), ``==`` compares types by structure, ids included: the wire has no
other notion of type identity.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

__all__ = [
    "Type",
    "Struct",
    "Union",
    "StructArray",
    "UnionArray",
    "SCALAR_CODES",
    "SpecError",
    "intern_type",
    "CNAMES",
]

#: scalar type codes, p4p spelling
SCALAR_CODES = "?sbBhHiIlLfd"

#: p4p code -> C type name used by the pvxs printer (``str(Value)``)
CNAMES = {
    "?": "bool",
    "s": "string",
    "b": "int8_t",
    "B": "uint8_t",
    "h": "int16_t",
    "H": "uint16_t",
    "i": "int32_t",
    "I": "uint32_t",
    "l": "int64_t",
    "L": "uint64_t",
    "f": "float",
    "d": "double",
    "v": "any",
    "S": "struct",
    "U": "union",
}


class SpecError(ValueError, RuntimeError):
    """An invalid type spec: unknown code or kind, or a field name PVA cannot carry.

    A ``ValueError`` (what it is) and a ``RuntimeError`` (what p4p raises)."""


_NAME_OK = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_]*)?\Z")

_LEAF_CODES = frozenset(list(SCALAR_CODES) + ["a" + c for c in SCALAR_CODES] + ["v", "av"])
_COMPOUND = frozenset(("S", "U", "aS", "aU"))


def Struct(spec: list | None = None, id: str | None = None) -> tuple:
    """Spec helper: ``('S', id, spec)``."""
    return ("S", id, spec)


def Union(spec: list | None = None, id: str | None = None) -> tuple:
    """Spec helper: ``('U', id, spec)``."""
    return ("U", id, spec)


def StructArray(spec: list | None = None, id: str | None = None) -> tuple:
    """Spec helper: ``('aS', id, spec)``."""
    return ("aS", id, spec)


def UnionArray(spec: list | None = None, id: str | None = None) -> tuple:
    """Spec helper: ``('aU', id, spec)``."""
    return ("aU", id, spec)


class Type:
    """Type(fields, id=None, base=None)

    :param fields: list of ``(name, spec)``; spec is a type code string (``'d'``, ``'ai'``,
        ``'v'`` ...), a :class:`Type` (embedded structure), or ``(kind, id, fields)`` with
        kind ``'S'``, ``'U'``, ``'aS'`` or ``'aU'``.
    :param id: the structure's type id (``getID()`` shows ``'structure'`` when empty).
    :param base: copy the fields (and id, unless given) of this Type, then amend: a field of
        the same name is replaced in place, a new one is appended.

    Calling a Type builds a :class:`~capva.Value`: ``T({'value': 1.0})``.
    """

    __slots__ = (
        "code",
        "id",
        "members",
        "elem",
        "bound",
        "fixed",
        "_index",
        "_nodes",
        "_span",
        "_paths",
        "_names",
        "_hash",
        "_cache",
        "depth",
        "__weakref__",
    )

    # -- construction -------------------------------------------------------------------

    def __init__(self, spec: Any = None, id: str | None = None, base: Type | None = None):
        fields: list[tuple[str, Type]] = []
        if id is not None and not isinstance(id, str):
            raise TypeError(f"Type id must be a str or None, not {type(id).__name__}")
        if base is not None:
            if not isinstance(base, Type) or base.code != "S":
                raise TypeError("base= must be a structure Type")
            fields = list(base.members)
            if id is None:
                id = base.id
        if spec is None:
            spec = []
        if isinstance(spec, (str, bytes)) or not hasattr(spec, "__iter__"):
            raise TypeError(f"Type() expects a list of (name, spec) tuples, not {type(spec).__name__}")
        _merge_fields(fields, _parse_fields(spec, "structure"))
        self._init("S", id or "", tuple(fields), None)

    @classmethod
    def _make(
        cls,
        code: str,
        id: str = "",
        members: tuple = (),
        elem: Type | None = None,
        bound: int | None = None,
        fixed: bool = False,
    ) -> Type:
        """Internal constructor for any kind of node (leaves included)."""
        if not members and elem is None and bound is None and not fixed and code in _LEAF_TYPES:
            return _LEAF_TYPES[code]
        self = object.__new__(cls)
        self._init(code, id, members, elem, bound, fixed)
        return self

    def _init(self, code, id, members, elem, bound=None, fixed=False):
        self.code = code
        self.id = id
        self.members = members
        self.elem = elem
        self.bound = bound
        self.fixed = fixed
        self._index = {n: i for i, (n, _) in enumerate(members)}
        self._hash = None
        self._cache = {}
        # nesting depth of the description (1 for a leaf): decoders bound it
        self.depth = 1 + max([t.depth for _, t in members] + [elem.depth if elem is not None else 0])
        if code == "S":
            nodes: list[Type] = [self]
            paths: dict[str, int] = {}
            names: list[str] = [""]
            span: list[int] = [0]
            for name, child in members:
                start = len(nodes)
                paths[name] = start
                names.append(name)
                nodes.append(child)
                span.append(1)
                if child.code == "S":
                    for sub, idx in child._paths.items():
                        paths[name + "." + sub] = start + idx
                    names.extend(name + "." + n for n in child._names[1:])
                    nodes.extend(child._nodes[1:])
                    span.extend(child._span[1:])
                    span[start] = child._span[0]
            span[0] = len(nodes)
            self._nodes = tuple(nodes)
            self._span = tuple(span)
            self._paths = paths
            self._names = tuple(names)
        else:
            self._nodes = (self,)
            self._span = (1,)
            self._paths = {}
            self._names = ("",)

    # -- p4p API ------------------------------------------------------------------------

    def __call__(self, initial: Any = None):
        from .value import Value

        return Value(self, initial)

    def getID(self) -> str:
        """The type id, ``'structure'`` when none was given (as p4p)."""
        if self.code in ("aS", "aU") and self.elem is not None:
            return self.elem.id or "structure"
        return self.id or "structure"

    def keys(self) -> list[str]:
        """Names of the direct members (structures and unions)."""
        m = self.members if self.elem is None else self.elem.members
        return [n for n, _ in m]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.members if self.elem is None else self.elem.members)

    def has(self, name: str) -> bool:
        """True if ``name`` (dotted paths allowed) is a field of this structure."""
        return self._lookup(name) is not None

    __contains__ = has

    def items(self) -> list[tuple[str, Any]]:
        return [(k, self[k]) for k in self.keys()]

    def values(self) -> list[Any]:
        return [self[k] for k in self.keys()]

    def _lookup(self, name: str) -> Type | None:
        if self.code == "S":
            idx = self._paths.get(name)
            return None if idx is None else self._nodes[idx]
        node: Type | None = self
        for part in name.split("."):
            if node is None:
                return None
            if node.code in ("aS", "aU"):
                node = node.elem
            assert node is not None
            i = node._index.get(part)
            if i is None:
                return None
            node = node.members[i][1]
        return node

    def __getitem__(self, name: str) -> Any:
        """A structure member as a :class:`Type`; any other member as its spec (p4p)."""
        node = self._lookup(name)
        if node is None:
            raise KeyError(name)
        if node.code == "S":
            return node
        return node.aspy()

    def aspy(self, name: str | None = None) -> Any:
        """The spec that would rebuild this type: ``('S', id, [(name, spec), ...])``."""
        if name is not None:
            node = self._lookup(name)
            if node is None:
                raise KeyError(name)
            return node.aspy()
        code = self.code
        if code in ("S", "U"):
            return (code, self.id or "structure", [(n, t.aspy()) for n, t in self.members])
        if code in ("aS", "aU"):
            e = self.elem
            assert e is not None
            return (code, e.id or "structure", [(n, t.aspy()) for n, t in e.members])
        return code

    def tostr(self, limit: int = 0) -> str:
        """pvxs-style printout of the type (what ``str(Value.type())`` shows in pvxs)."""
        lines: list[str] = []
        _type_lines(self, "", 0, lines)
        s = "\n".join(lines) + "\n"
        if limit and len(s) > limit:
            return s[:limit] + "..."
        return s

    def __repr__(self) -> str:
        spec = self.aspy()
        if not isinstance(spec, tuple):
            return f"Type({spec!r})"
        _, id, fields = spec
        return f'Type({fields}, id="{id}")'

    __str__ = __repr__

    # -- structural identity ------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Type):
            return NotImplemented
        if self.__hash__() != other.__hash__():
            return False
        if (self.code, self.id, self.bound, self.fixed) != (other.code, other.id, other.bound, other.fixed):
            return False
        if len(self.members) != len(other.members) or self.elem != other.elem:
            return False
        return all(a == b and s == t for (a, s), (b, t) in zip(self.members, other.members))

    def __ne__(self, other: object) -> bool:
        r = self.__eq__(other)
        return r if r is NotImplemented else not r

    def __hash__(self) -> int:
        # children's hashes are cached on the children, so a type that shares sub-types
        # (as decoded introspection-cache references do) hashes in linear time
        h = self._hash
        if h is None:
            h = self._hash = hash(
                (
                    self.code,
                    self.id,
                    self.bound,
                    self.fixed,
                    tuple((n, t.__hash__()) for n, t in self.members),
                    self.elem.__hash__() if self.elem is not None else None,
                )
            )
        return h

    def __reduce__(self):
        return (_rebuild, (self.aspy(),))

    # -- internal helpers for values and codecs -------------------------------------------

    @property
    def is_struct(self) -> bool:
        return self.code == "S"


_INTERN: dict[Type, Type] = {}


def intern_type(T: Type) -> Type:
    """The canonical instance of a structurally equal Type.

    Per-type caches (encode/decode plans, value templates) live on the instance, so types
    that arrive again and again (pvRequests, every ``NTScalar('d')``) should share one."""
    t = _INTERN.get(T)
    if t is not None:
        return t
    if len(_INTERN) > 4096:
        _INTERN.clear()
    _INTERN[T] = T
    return T


def _rebuild(spec):
    return Type(spec[2], id=spec[1] if spec[1] != "structure" else None)


_LEAF_TYPES: dict[str, Type] = {}
for _c in _LEAF_CODES:
    _t = object.__new__(Type)
    _t._init(_c, "", (), None)
    _LEAF_TYPES[_c] = _t


def leaf(code: str) -> Type:
    """The shared :class:`Type` instance for a scalar/array/variant code."""
    try:
        return _LEAF_TYPES[code]
    except KeyError:
        raise ValueError(f"unknown type code {code!r}") from None


def _merge_fields(fields: list[tuple[str, Type]], new: list[tuple[str, Type]]) -> None:
    """p4p's rule for ``base=`` and repeated names: a field of the same name keeps its
    position and takes the new type, except that two structures merge member-wise."""
    for name, child in new:
        for i, (n, old) in enumerate(fields):
            if n == name:
                if old.code == "S" and child.code == "S":
                    sub = list(old.members)
                    _merge_fields(sub, list(child.members))
                    child = Type._make("S", child.id or old.id, tuple(sub))
                fields[i] = (name, child)
                break
        else:
            fields.append((name, child))


def _parse_fields(spec: Any, where: str) -> list[tuple[str, Type]]:
    out: list[tuple[str, Type]] = []
    for item in spec:
        try:
            name, fspec = item
        except (TypeError, ValueError):
            raise TypeError(f"{where}: field spec must be a (name, type) pair, not {item!r}") from None
        if not isinstance(name, str):
            raise TypeError(f"{where}: field name must be str, not {type(name).__name__}")
        if not _NAME_OK.match(name):
            raise SpecError(f"{where}: invalid field name {name!r} (letters, digits and _ only)")
        _merge_fields(out, [(name, parse_spec(fspec, name))])
    return out


def parse_spec(spec: Any, name: str = "?") -> Type:
    """One field spec (code string, Type, or (kind, id, fields) tuple) -> Type."""
    if isinstance(spec, Type):
        return spec
    if isinstance(spec, str):
        t = _LEAF_TYPES.get(spec)
        if t is None:
            raise SpecError(f"field {name!r}: unknown type code {spec!r}")
        return t
    if isinstance(spec, tuple) and len(spec) == 3 and spec[0] in _COMPOUND:
        kind, id, fields = spec
        if id is not None and not isinstance(id, str):
            raise TypeError(f"field {name!r}: type id must be str or None")
        members = tuple(_parse_fields(fields or [], name))
        if kind == "S":
            return Type._make("S", id or "", members)
        if kind == "U":
            return Type._make("U", id or "", members)
        e = Type._make(kind[1], id or "", members)
        return Type._make(kind, "", (), e)
    if isinstance(spec, tuple) and len(spec) == 3 and isinstance(spec[0], str):
        raise SpecError(f"field {name!r}: unknown kind {spec[0]!r} (use 'S', 'U', 'aS' or 'aU')")
    raise TypeError(f"field {name!r}: invalid type spec {spec!r}")


def _type_lines(t: Type, name: str, depth: int, out: list[str]) -> None:
    ind = "    " * depth
    suffix = f" {name}" if name else ""
    code = t.code
    if code in ("S", "U", "aS", "aU"):
        node = t.elem if t.elem is not None else t
        assert node is not None
        kw = {"S": "struct", "U": "union", "aS": "struct[]", "aU": "union[]"}[code]
        head = kw
        if code in ("S", "U") and node.id:
            head += f' "{node.id}"'
        if not node.members:
            out.append(f"{ind}{head} {{}}{suffix}")
            return
        out.append(f"{ind}{head} {{")
        for n, c in node.members:
            _type_lines(c, n, depth + 1, out)
        out.append(f"{ind}}}{suffix}")
        return
    out.append(f"{ind}{type_cname(t)}{suffix}")


def type_cname(t: Type) -> str:
    """pvxs printer name of a non-compound type: ``double``, ``int32_t[]``, ``any[]``."""
    code = t.code
    if code[0] == "a" and len(code) == 2:
        return CNAMES[code[1]] + "[]"
    return CNAMES[code]
