"""Hypothesis strategies and comparison helpers for PVA types and values.

Why this module exists: the codec property tests need *arbitrary* PVA types (nested structures,
unions, struct/union arrays, any and any[] fields, every scalar and array code, type ids) and
arbitrary contents for them, built only through the public p4p-compatible API (``Type(spec)``,
``Value(T, initial)``), so that the tests exercise the same paths user code does.

The helpers at the bottom deliberately do *not* reuse the codec's own bookkeeping: the field
numbering (:func:`layout`) is recomputed here from ``Type.members`` by the pre-order rule of
pva-protocol.md §3.5, and :func:`same` compares stored contents exactly (floats and arrays by their
bytes, so NaN payloads and ``-0.0`` count, and Python types must match).
"""

from __future__ import annotations

import functools
import math
import struct

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from capva import Type, Value

SCALAR_CODES = "?sbBhHiIlLfd"
NUMERIC_CODES = "?bBhHiIlLfd"
ARRAY_CODES = tuple("a" + c for c in SCALAR_CODES)
LEAF_CODES = tuple(SCALAR_CODES) + ARRAY_CODES + ("v", "av")

#: numpy dtype of each numeric code (independent of capva's own table)
NP_DTYPES = {
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

# -- names, ids, strings ------------------------------------------------------------------------

_UTF8 = st.characters(codec="utf-8")  # any code point except surrogates
#: field names: what the p4p-compatible constructor accepts (identifiers; ids and values carry unicode)
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}", fullmatch=True)
#: type ids (NUL included: it once broke the generated plans, see test_nul_in_type_id)
ids = st.one_of(
    st.just(""),
    st.sampled_from(["epics:nt/NTScalar:1.0", "alarm_t", "time_t", "structure", "\x00"]),
    st.text(_UTF8, max_size=12),
)
#: short strings, plus long ones whose UTF-8 length needs the 0xFE form of Size
strings = st.one_of(
    st.text(_UTF8, max_size=8),
    st.builds(lambda s: s * 60, st.text(_UTF8, min_size=5, max_size=6)),
)

# -- types ---------------------------------------------------------------------------------------


@functools.cache
def field_spec(depth: int) -> st.SearchStrategy:
    """A p4p field spec: a leaf code, or ``(kind, id, fields)`` nested at most ``depth`` levels."""
    leaf = st.sampled_from(LEAF_CODES)
    if depth <= 0:
        return leaf
    compound = st.tuples(st.sampled_from(("S", "U", "aS", "aU")), ids, field_list(depth - 1))
    return st.one_of(leaf, compound)


@functools.cache
def field_list(depth: int) -> st.SearchStrategy:
    return st.lists(st.tuples(names, field_spec(depth)), max_size=4, unique_by=lambda f: f[0])


def struct_types(max_depth: int = 5) -> st.SearchStrategy:
    """Structure Types whose compound nesting (the top structure included) is at most ``max_depth``."""
    return st.builds(lambda f, i: Type(f, id=i), field_list(max_depth - 1), ids)


def field_types(max_depth: int = 5) -> st.SearchStrategy:
    """Any kind of Type (leaf, union, struct[], ...), as found in a field or an ``any``."""
    return field_spec(max_depth - 1).map(lambda s: Type([("x", s)]).members[0][1])


# -- contents ------------------------------------------------------------------------------------

_INT_BITS = {
    "b": (8, True),
    "B": (8, False),
    "h": (16, True),
    "H": (16, False),
    "i": (32, True),
    "I": (32, False),
    "l": (64, True),
    "L": (64, False),
}


def _int_range(code: str) -> st.SearchStrategy:
    bits, signed = _INT_BITS[code]
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return st.one_of(st.sampled_from([lo, hi, 0, -1 if signed else 1]), st.integers(lo, hi))


SCALARS: dict[str, st.SearchStrategy] = {c: _int_range(c) for c in _INT_BITS}
SCALARS["?"] = st.booleans()
SCALARS["s"] = strings
SCALARS["f"] = st.floats(width=32)  # NaN, +-inf, -0.0 and subnormals included
SCALARS["d"] = st.floats()

_lengths = st.one_of(st.integers(0, 5), st.integers(254, 258))


def numeric_arrays(code: str) -> st.SearchStrategy:
    """numpy arrays of the code's dtype (edge values included), sometimes in the other byte order."""
    dt = NP_DTYPES[code]
    order = st.sampled_from([dt, dt.newbyteorder()]) if dt.itemsize > 1 else st.just(dt)
    return order.flatmap(lambda d: hnp.arrays(d, _lengths))


string_lists = st.one_of(
    st.lists(strings, max_size=4),
    st.builds(lambda s, n: [s] * n, st.text(_UTF8, max_size=3), st.integers(254, 256)),
)


def leaf_input(draw, code: str):
    if code in SCALARS:
        return draw(SCALARS[code])
    if code == "as":
        return draw(string_lists)
    return draw(numeric_arrays(code[1]))


def variant_input(draw, depth: int, allow_none: bool = True):
    """What may be assigned to an ``any`` field: None, ``(code, value)`` or a structure Value."""
    kinds = ["leaf", "none"] if allow_none else ["leaf"]
    if depth > 0:
        kinds.append("struct")
    kind = draw(st.sampled_from(kinds))
    if kind == "none":
        return None
    if kind == "leaf":
        code = draw(st.sampled_from(tuple(SCALAR_CODES) + ARRAY_CODES))
        return (code, leaf_input(draw, code))
    T = draw(struct_types(max_depth=2))
    return draw(values(T, depth - 1))


def node_input(draw, t: Type, depth: int):
    """A Python object that Value assignment converts to a value of ``t``."""
    code = t.code
    if code in SCALARS or code in ARRAY_CODES:
        return leaf_input(draw, code)
    if code == "S":
        return {n: node_input(draw, mt, depth) for n, mt in t.members if draw(st.integers(0, 3))}
    if code == "U":
        if not t.members or draw(st.integers(0, 4)) == 0:
            return None
        name, mt = t.members[draw(st.integers(0, len(t.members) - 1))]
        return (name, node_input(draw, mt, depth))
    if code == "v":
        return variant_input(draw, depth)
    n = draw(st.integers(0, 3))
    e = t.elem
    if code == "aS":
        return [None if draw(st.integers(0, 3)) == 0 else node_input(draw, e, depth) for _ in range(n)]
    if code == "aU":
        out = []
        for _ in range(n):
            if not e.members or draw(st.integers(0, 3)) == 0:
                out.append(None)
            else:
                name, mt = e.members[draw(st.integers(0, len(e.members) - 1))]
                out.append((name, node_input(draw, mt, depth)))
        return out
    assert code == "av", code
    return [variant_input(draw, depth, allow_none=False) for _ in range(n)]


@st.composite
def values(draw, T: Type, depth: int = 2):
    """A Value of structure type ``T`` with random contents (``depth`` bounds nested ``any`` structures)."""
    return Value(T, node_input(draw, T, depth))


@st.composite
def typed_values(draw, max_depth: int = 5):
    return draw(values(draw(struct_types(max_depth))))


@st.composite
def masks(draw, T: Type):
    """A BitSet for ``T``: empty, full, random, or a parent together with all its descendants."""
    lay = layout(T)
    n = len(lay)
    kind = draw(st.sampled_from(["empty", "full", "random", "subtree", "subtree+random"]))
    if kind == "empty":
        return 0
    if kind == "full":
        return (1 << n) - 1
    m = 0
    if kind.startswith("subtree"):
        i = draw(st.integers(0, n - 1))
        m = ((1 << lay[i][2]) - 1) << i
    if kind.endswith("random"):
        m |= draw(st.integers(0, (1 << n) - 1))
    return m


# -- independent layout and exact comparison -------------------------------------------------------


def layout(T: Type, prefix: str = "") -> list[tuple[str, Type, int]]:
    """Pre-order ``(path, type, span)`` of every field of structure ``T``: entry i is bit i (§3.5)."""
    out: list[tuple[str, Type, int]] = [(prefix, T, 0)]
    for name, mt in T.members:
        path = f"{prefix}.{name}" if prefix else name
        if mt.code == "S":
            out.extend(layout(mt, path))
        else:
            out.append((path, mt, 1))
    out[0] = (prefix, T, len(out))
    return out


def covered(T: Type, mask: int) -> set[int]:
    """Bits whose field is serialized for ``mask``: set bits and all their descendants."""
    lay = layout(T)
    out: set[int] = set()
    for i, (_, _, span) in enumerate(lay):
        if mask >> i & 1:
            out.update(range(i, i + span))
    return out


def stored(V: Value) -> list:
    """The stored items of V in bit order (white-box: one list per Value, see value.py)."""
    n = len(layout(V.type()))
    return V._s.vals[V._b : V._b + n]


def same(x, y) -> bool:
    """Exact equality of stored items: types must match, floats and arrays compare by bytes."""
    if isinstance(x, Value) or isinstance(y, Value):
        return (
            isinstance(x, Value)
            and isinstance(y, Value)
            and x.type() == y.type()
            and all(same(a, b) for a, b in zip(stored(x), stored(y), strict=True))
        )
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        return (
            isinstance(x, np.ndarray)
            and isinstance(y, np.ndarray)
            and x.dtype == y.dtype
            and x.dtype.isnative
            and y.dtype.isnative
            and x.shape == y.shape
            and x.tobytes() == y.tobytes()
        )
    if type(x) is not type(y):
        return False
    if isinstance(x, float):
        return struct.pack("<d", x) == struct.pack("<d", y)
    if isinstance(x, (list, tuple)):
        return len(x) == len(y) and all(same(a, b) for a, b in zip(x, y))
    return bool(x == y)


def has_nan(x) -> bool:
    """True if a NaN is stored anywhere in x (then ``==`` cannot hold and bytes must be compared)."""
    if isinstance(x, Value):
        return any(has_nan(v) for v in stored(x))
    if isinstance(x, np.ndarray):
        return x.dtype.kind == "f" and bool(np.isnan(x).any())
    if isinstance(x, float):
        return math.isnan(x)
    if isinstance(x, (list, tuple)):
        return any(has_nan(v) for v in x)
    return False
