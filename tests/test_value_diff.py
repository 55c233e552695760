"""Differential tests: ``capva.Value`` / ``capva.Type`` against ``p4p.Value`` / ``p4p.Type``.

Why these tests exist: capva promises to be a drop-in replacement for p4p, and the data model
(type specs, conversion rules on assignment, change tracking, string forms) is where code written
for p4p is most sensitive to small differences.  Instead of writing down what we *think* p4p does,
every case here is a small function ``op(mod)`` that is run twice, once with ``mod`` holding
p4p's ``Value``/``Type`` and once with capva's, and the two (normalised) results must be equal.
Raised exceptions are compared by class only, since messages legitimately differ; capva may
raise a subclass of p4p's class (so that ``except <p4p class>`` keeps working).

The p4p side is the reference and is always executed live (never recorded), so these tests also
document p4p 4.3 behaviour.  A missing or broken ``capva`` is a test failure, not a skip.
"""

import importlib
import math
import types
import warnings
from collections import OrderedDict

import numpy as np
import pytest

p4p = pytest.importorskip("p4p")

P4P = types.SimpleNamespace(Value=p4p.Value, Type=p4p.Type, name="p4p")

# exception classes a p4p reference result may legitimately raise
_EXPECTED_EXC = {
    "KeyError",
    "AttributeError",
    "TypeError",
    "ValueError",
    "OverflowError",
    "IndexError",
    "RuntimeError",
    "NotImplementedError",
}


def _capva_ns():
    """Import capva lazily: if it is missing, every case fails (not skipped)."""
    mod = importlib.import_module("capva")
    return types.SimpleNamespace(Value=mod.Value, Type=mod.Type, name="capva")


def norm(x, mod=None):
    """Turn a result into plain, comparable, type-tagged data."""
    if mod is not None and isinstance(x, mod.Value):
        return ("Value", x.getID(), norm(x.tolist()))
    if mod is not None and isinstance(x, mod.Type):
        return ("Type", norm(x.aspy()))
    if isinstance(x, np.ndarray):
        return ("ndarray", x.dtype.str, x.shape, norm(x.tolist()))
    if isinstance(x, np.generic):
        return ("np." + type(x).__name__, norm(x.item()))
    if isinstance(x, bool):
        return ("bool", x)
    if isinstance(x, int):
        return ("int", int(x))
    if isinstance(x, float):
        if math.isnan(x):
            return ("float", "nan")
        return ("float", x)
    if x is None or isinstance(x, (str, bytes)):
        return x
    if isinstance(x, dict):
        return (type(x).__name__, [(k, norm(v, mod)) for k, v in x.items()])
    if isinstance(x, list):
        return [norm(v, mod) for v in x]
    if isinstance(x, tuple):
        return tuple(norm(v, mod) for v in x)
    if isinstance(x, (set, frozenset)):
        return ("set", sorted(norm(v, mod) for v in x))
    if type(x).__name__ in ("Value", "Type"):
        return ("foreign-" + type(x).__name__, repr(x))
    return ("other", type(x).__name__, repr(x))


def run(op, mod, expected=None):
    """Run one case; ``expected`` is the reference (p4p) result, if already known.

    An exception is reported by class name.  When the reference raised class X and this
    implementation raised a subclass of X, X is reported: ``except X`` in user code still works.
    """
    with warnings.catch_warnings(record=True) as wlist:
        warnings.simplefilter("always")
        try:
            res = ("ok", norm(op(mod), mod))
        except Exception as e:  # compare exception class only
            name = type(e).__name__
            if expected is not None and expected[0] == "raise":
                if expected[1] in {c.__name__ for c in type(e).__mro__}:
                    name = expected[1]
            res = ("raise", name)
    warned = sorted(
        {
            w.category.__name__
            for w in wlist
            if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))
        }
    )
    if warned:
        res = res + ("warns", warned)
    return res


CASES = {}


def case(fn=None, *, name=None):
    def reg(f):
        key = name or f.__name__.lstrip("_")
        assert key not in CASES, key
        CASES[key] = f
        return f

    return reg(fn) if fn is not None else reg


def add(name, fn):
    assert name not in CASES, name
    CASES[name] = fn


SCALARS = "?sbBhHiIlLfd"
ARRAYS = ["a" + c for c in SCALARS]
ALLCODES = list(SCALARS) + ["v"] + ARRAYS + ["av"]


def vx(mod, code, **kws):
    """A Value with a single field 'x' of the given code."""
    return mod.Value(mod.Type([("x", code)], **kws))


def got(V, fld="x"):
    return V[fld]


# ---------------------------------------------------------------------------------------------
# Type construction and API
# ---------------------------------------------------------------------------------------------

for _c in ALLCODES:

    def _type_code(mod, c=_c):
        T = mod.Type([("x", c)])
        return T.aspy(), repr(T), T.tostr(), T["x"], T.aspy("x")

    add(f"type-code-{_c}", _type_code)

COMPLEX_SPEC = [
    ("a", "i"),
    ("b", ("S", "foo", [("x", "d"), ("y", "as")])),
    ("u", ("U", None, [("i", "i"), ("s", "s")])),
    ("vu", ("U", "myunion", [("d", "d"), ("sub", ("S", None, [("q", "I")]))])),
    ("v", "v"),
    ("sa", ("aS", None, [("q", "i"), ("r", "s")])),
    ("ua", ("aU", "ua_t", [("i", "i"), ("s", "s")])),
    ("av", "av"),
    ("e", ("S", "enum_t", [("index", "i"), ("choices", "as")])),
]


def cT(mod, **kws):
    return mod.Type(COMPLEX_SPEC, **kws)


@case
def type_complex_aspy(mod):
    return cT(mod).aspy()


@case
def type_complex_repr(mod):
    return repr(cT(mod, id="my_t"))


@case
def type_complex_str(mod):
    return str(cT(mod, id="my_t"))


@case
def type_complex_tostr(mod):
    return cT(mod, id="my_t").tostr()


@case
def type_complex_keys(mod):
    T = cT(mod)
    return T.keys(), list(T), len(T)


@case
def type_complex_items(mod):
    return cT(mod).items()


@case
def type_complex_values(mod):
    return cT(mod).values()


@case
def type_getitem_struct(mod):
    T = cT(mod)["b"]
    return type(T).__name__ == "Type", T.getID(), T.aspy(), repr(T)


@case
def type_getitem_union(mod):
    return cT(mod)["u"]


@case
def type_getitem_structarray(mod):
    return cT(mod)["sa"]


@case
def type_getitem_unionarray(mod):
    return cT(mod)["ua"]


@case
def type_getitem_scalar(mod):
    return cT(mod)["a"], cT(mod)["av"], cT(mod)["v"]


@case
def type_getitem_dotted(mod):
    return cT(mod)["b.x"]


@case
def type_getitem_missing(mod):
    return cT(mod)["nope"]


@case
def type_has(mod):
    T = cT(mod)
    return T.has("a"), T.has("b"), T.has("nope"), "a" in T, "nope" in T, "b.x" in T, T.has("b.x")


@case
def type_aspy_named(mod):
    T = cT(mod)
    return T.aspy("a"), T.aspy("b"), T.aspy("u"), T.aspy("sa")


@case
def type_aspy_missing(mod):
    return cT(mod).aspy("nope")


@case
def type_getid_default(mod):
    return mod.Type([("a", "i")]).getID()


@case
def type_getid_explicit(mod):
    return mod.Type([("a", "i")], id="foo_t").getID()


@case
def type_id_none(mod):
    return mod.Type([("a", "i")], id=None).aspy()


@case
def type_empty(mod):
    T = mod.Type([])
    return T.aspy(), repr(T), T.tostr(), len(T), T.keys()


@case
def type_kw_spec(mod):
    return mod.Type(spec=[("a", "i")], id="x").aspy()


@case
def type_base_extend(mod):
    B = mod.Type([("a", "I"), ("b", "d")], id="base_t")
    S = mod.Type([("c", "s")], base=B)
    return S.aspy(), S.getID()


@case
def type_base_extend_id(mod):
    B = mod.Type([("a", "I")], id="base_t")
    return mod.Type([("c", "s")], id="derived_t", base=B).aspy()


@case
def type_base_override(mod):
    B = mod.Type([("a", "I"), ("b", "d")])
    return mod.Type([("a", "s")], base=B).aspy()


@case
def type_base_nested_merge(mod):
    B = mod.Type([("a", "I"), ("s", ("S", None, [("x", "i")]))])
    return mod.Type([("s", ("S", None, [("y", "i")]))], base=B).aspy()


@case
def type_base_empty(mod):
    B = mod.Type([("a", "I")], id="keep")
    return mod.Type([], base=B).aspy()


@case
def type_embedded_type(mod):
    sub = mod.Type([("sec", "l"), ("ns", "i")], id="time_t")
    T = mod.Type([("ts", sub), ("v", "d")])
    return T.aspy(), T["ts"].getID()


@case
def type_embedded_in_structarray(mod):
    sub = mod.Type([("q", "i")], id="el_t")
    T = mod.Type([("arr", ("aS", "el_t", sub.aspy()[2]))])
    return T.aspy()


@case
def type_reserved_names(mod):
    T = mod.Type([("name", "s"), ("type", "as"), ("keys", "i"), ("value", "d")])
    return T.aspy(), T.keys()


@case
def type_bad_code(mod):
    return mod.Type([("a", "z")])


@case
def type_bad_array_code(mod):
    return mod.Type([("a", "aa")])


@case
def type_bad_tuple_kind(mod):
    return mod.Type([("a", ("X", None, []))])


@case
def type_bad_tuple_short(mod):
    return mod.Type([("a", ("S", None))])


@case
def type_bad_spec_not_list(mod):
    return mod.Type(5)


@case
def type_bad_entry(mod):
    return mod.Type([("a",)])


for _lbl, _fname in [
    ("qmark", "a?"),
    ("dot", "a.b"),
    ("empty", ""),
    ("digit", "1a"),
    ("space", "a b"),
    ("underscore", "_a"),
    ("upper", "A1"),
]:

    def _field_name(mod, fname=_fname):
        return mod.Type([(fname, "i")]).aspy()

    add(f"type-field-name-{_lbl}", _field_name)


@case
def type_duplicate_field(mod):
    T = mod.Type([("a", "i"), ("b", "s"), ("a", "d")])
    return T.aspy(), len(T)


@case
def type_union_empty(mod):
    T = mod.Type([("u", ("U", None, []))])
    return T.aspy(), T.tostr()


@case
def type_deep_nesting(mod):
    T = mod.Type(
        [("a", ("S", "A", [("b", ("aS", "B", [("c", ("U", "C", [("d", ("aU", None, [("e", "ai")]))]))]))]))]
    )
    return T.aspy(), T.tostr()


@case
def type_tostr_limit(mod):
    T = cT(mod)
    return T.tostr(limit=0), T.tostr(0)


@case
def type_iter_sub(mod):
    return list(cT(mod)["b"]), cT(mod)["b"].keys()


# ---------------------------------------------------------------------------------------------
# Default values of every type code
# ---------------------------------------------------------------------------------------------

for _c in ALLCODES:

    def _default(mod, c=_c):
        V = vx(mod, c)
        return V.x, V.tolist(), V.changedSet()

    add(f"default-{_c}", _default)


@case
def default_complex_tolist(mod):
    return cT(mod)().tolist()


@case
def default_complex_todict(mod):
    return cT(mod)().todict()


# ---------------------------------------------------------------------------------------------
# Scalar assignment conversion grid
# ---------------------------------------------------------------------------------------------

SCALAR_INPUTS = [
    ("zero", 0),
    ("one", 1),
    ("neg1", -1),
    ("255", 255),
    ("256", 256),
    ("neg129", -129),
    ("65536", 65536),
    ("0x80000000", 0x80000000),
    ("2p63", 2**63),
    ("2p64m1", 2**64 - 1),
    ("2p64", 2**64),
    ("neg2p63m1", -(2**63) - 1),
    ("f1.7", 1.7),
    ("fneg2.5", -2.5),
    ("fbig", 1e30),
    ("str5", "5"),
    ("strfloat", "2.5"),
    ("strhex", "0x10"),
    ("strabc", "abc"),
    ("true", True),
    ("none", None),
    ("list", [1]),
    ("npint8", np.int8(-3)),
    ("npfloat32", np.float32(0.5)),
]

_SCALAR_SUBSET = {
    # keep the grid focused: every code sees the core inputs, only ints see the range probes
    "?": ["zero", "one", "neg1", "f1.7", "str5", "strabc", "true", "none", "list"],
    "s": ["one", "neg1", "f1.7", "str5", "true", "none", "list", "npint8"],
    "f": ["one", "f1.7", "fbig", "str5", "strabc", "true", "none", "2p64", "npfloat32"],
    "d": ["one", "f1.7", "fbig", "str5", "strabc", "true", "none", "2p64", "list"],
}
_INT_SUBSET = [
    "zero",
    "neg1",
    "255",
    "256",
    "neg129",
    "65536",
    "0x80000000",
    "2p63",
    "2p64m1",
    "2p64",
    "neg2p63m1",
    "f1.7",
    "fneg2.5",
    "str5",
    "strfloat",
    "strhex",
    "strabc",
    "true",
    "none",
    "list",
    "npint8",
]
_INT_SHORT = ["neg1", "256", "0x80000000", "2p64", "neg2p63m1", "f1.7", "str5", "strabc", "true", "none"]
_INPUTS = dict(SCALAR_INPUTS)

for _c in SCALARS:
    if _c in _SCALAR_SUBSET:
        _labels = _SCALAR_SUBSET[_c]
    elif _c in "iBl":
        _labels = _INT_SUBSET
    else:
        _labels = _INT_SHORT
    for _lbl in _labels:

        def _assign_scalar(mod, c=_c, val=_INPUTS[_lbl]):
            V = vx(mod, c)
            V.x = val
            return V.x, V.changedSet()

        add(f"assign-{_c}-{_lbl}", _assign_scalar)


@case
def assign_item_vs_attr(mod):
    V = vx(mod, "i")
    V["x"] = 7
    a = V.x
    V.x = 8
    return a, V["x"]


@case
def assign_init_wrap_i8(mod):
    return vx(mod, "b").type()({"x": 200}).x


@case
def assign_init_overflow(mod):
    return mod.Value(mod.Type([("x", "L")]), {"x": 2**64})


@case
def assign_float_nan_to_double(mod):
    V = vx(mod, "d")
    V.x = float("nan")
    return V.x


@case
def assign_float_inf_to_float32(mod):
    V = vx(mod, "f")
    V.x = float("inf")
    return V.x


@case
def assign_float32_precision(mod):
    V = vx(mod, "f")
    V.x = 0.1
    return V.x


@case
def assign_unicode_str(mod):
    V = vx(mod, "s")
    V.x = "h\u00e9llo \u2603"
    return V.x, str(V)


@case
def assign_bytes_str(mod):
    V = vx(mod, "s")
    V.x = b"abc"
    return V.x


@case
def assign_dict_to_scalar(mod):
    V = vx(mod, "i")
    V.x = {"a": 1}
    return V.x


@case
def assign_numpy_bool(mod):
    V = vx(mod, "?")
    V.x = np.bool_(True)
    return V.x


@case
def assign_numpy_uint64_to_i(mod):
    V = vx(mod, "i")
    V.x = np.uint64(2**63)
    return V.x


# ---------------------------------------------------------------------------------------------
# Array assignment
# ---------------------------------------------------------------------------------------------

for _c in ARRAYS:

    def _arr_list(mod, c=_c):
        V = vx(mod, c)
        V.x = [1, 0, 2] if c != "as" else ["a", "b"]
        return V.x, V.changedSet()

    add(f"array-list-{_c}", _arr_list)

    def _arr_range(mod, c=_c):
        V = vx(mod, c)
        V.x = range(3)
        return V.x

    add(f"array-range-{_c}", _arr_range)

for _c in ["a?", "ab", "aB", "ah", "aH", "ai", "aI", "al", "aL", "af", "ad"]:

    def _arr_from_f64(mod, c=_c):
        V = vx(mod, c)
        V.x = np.asarray([1.5, -2.7, 300.0])
        return V.x

    add(f"array-from-f64-{_c}", _arr_from_f64)

for _src in ["i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f4", "f8", "?"]:

    def _arr_dtype_into_ai(mod, src=_src):
        V = vx(mod, "ai")
        V.x = np.asarray([1, 0, 3], dtype=src)
        return V.x

    add(f"array-dtype-{_src}-into-ai", _arr_dtype_into_ai)


@case
def array_wrap_i8(mod):
    V = vx(mod, "ab")
    V.x = np.asarray([127, 128, 255, 256, -129], dtype="i8")
    return V.x


@case
def array_wrap_list_u8(mod):
    V = vx(mod, "aB")
    V.x = [1, 255, 256, -1]
    return V.x


@case
def array_list_mixed_float_into_ai(mod):
    V = vx(mod, "ai")
    V.x = [1, 2.5, 3]
    return V.x


@case
def array_list_str_into_ai(mod):
    V = vx(mod, "ai")
    V.x = ["1", "2"]
    return V.x


@case
def array_list_badstr_into_ai(mod):
    V = vx(mod, "ai")
    V.x = ["a", "b"]
    return V.x


@case
def array_2d(mod):
    V = vx(mod, "ad")
    V.x = np.zeros((2, 2))
    return V.x


@case
def array_scalar_into_array(mod):
    V = vx(mod, "ad")
    V.x = 5
    return V.x


@case
def array_tuple(mod):
    V = vx(mod, "ai")
    V.x = (4, 5)
    return V.x


@case
def array_empty_list(mod):
    V = vx(mod, "ai")
    V.x = [1]
    V.x = []
    return V.x, V.changedSet()


@case
def array_noncontiguous(mod):
    V = vx(mod, "ai")
    V.x = np.arange(10, dtype="i4")[::3]
    return V.x


@case
def array_readback_is_copy(mod):
    V = vx(mod, "ai")
    a = np.asarray([1, 2, 3], dtype="i4")
    V.x = a
    a[0] = 99
    return V.x


@case
def array_in_init(mod):
    return mod.Value(mod.Type([("x", "ad"), ("y", "as")]), {"x": [1, 2], "y": ("p", "q")}).tolist()


@case
def strarray_from_ints(mod):
    V = vx(mod, "as")
    V.x = [1, 2.5, True]
    return V.x


@case
def strarray_from_str(mod):
    V = vx(mod, "as")
    V.x = "abc"
    return V.x


@case
def strarray_from_ndarray(mod):
    V = vx(mod, "as")
    V.x = np.asarray(["a", "bc"])
    return V.x


@case
def strarray_with_none(mod):
    V = vx(mod, "as")
    V.x = ["a", None]
    return V.x


@case
def boolarray_from_list(mod):
    V = vx(mod, "a?")
    V.x = [True, False, 2]
    return V.x


# ---------------------------------------------------------------------------------------------
# Construction with initial values
# ---------------------------------------------------------------------------------------------


@case
def init_dict_dotted(mod):
    V = cT(mod)({"a": 5, "b.x": 1.5, "b.y": ["x", "y"]})
    return V.tolist(), V.changedSet()


@case
def init_dict_nested(mod):
    V = cT(mod)({"b": {"x": 2.5}})
    return V.tolist(), V.changedSet()


@case
def init_list_of_pairs(mod):
    V = mod.Value(cT(mod), [("a", 3), ("b", [("x", 4.0)])])
    return V.tolist(), V.changedSet()


@case
def init_unknown_key(mod):
    return mod.Value(cT(mod), {"invalid": 42})


@case
def init_unknown_dotted_key(mod):
    return mod.Value(cT(mod), {"b.invalid": 42})


@case
def init_not_mapping(mod):
    return mod.Value(cT(mod), 5)


@case
def init_none(mod):
    V = mod.Value(cT(mod), None)
    return V.changedSet()


@case
def init_empty_dict(mod):
    V = mod.Value(cT(mod), {})
    return V.changedSet()


@case
def init_ordereddict(mod):
    V = mod.Value(mod.Type([("a", "i"), ("b", "i")]), OrderedDict([("b", 2), ("a", 1)]))
    return V.tolist()


@case
def init_type_call(mod):
    T = mod.Type([("a", "I")])
    V = T({"a": 4})
    return V.a, type(V).__name__


@case
def init_value_as_initial(mod):
    T = mod.Type([("a", "i"), ("b", "i")])
    A = T({"a": 1})
    B = mod.Value(T, A)
    return B.tolist(), B.changedSet()


@case
def init_clone(mod):
    T = mod.Type([("a", "i"), ("b", "i")])
    A = T({"a": 1})
    B = mod.Value(clone=A)
    B.b = 7
    return A.tolist(), B.tolist(), B.changedSet()


@case
def init_not_type(mod):
    return mod.Value([("a", "i")])


@case
def init_struct_from_value(mod):
    inner = mod.Value(mod.Type([("x", "d"), ("other", "i")]), {"x": 9.0})
    V = cT(mod)({"b": inner})
    return V.tolist(), V.changedSet()


# ---------------------------------------------------------------------------------------------
# Field access
# ---------------------------------------------------------------------------------------------


def cV(mod):
    return cT(mod)(
        {
            "a": 5,
            "b.x": 1.5,
            "b.y": ["p"],
            "u": ("s", "hi"),
            "v": 3,
            "sa": [{"q": 1, "r": "one"}, None],
            "e.choices": ["A", "B"],
            "e.index": 1,
        }
    )


@case
def access_attr_item_dotted(mod):
    V = cV(mod)
    return V.a, V["a"], V.b.x, V["b"].x, V["b.x"], V["b"]["y"]


@case
def access_attr_missing(mod):
    return cV(mod).nope


@case
def access_item_missing(mod):
    return cV(mod)["nope"]


@case
def access_item_dotted_missing(mod):
    return cV(mod)["b.nope"]


@case
def access_item_dotted_through_scalar(mod):
    return cV(mod)["a.x"]


@case
def access_item_empty(mod):
    return cV(mod)[""]


@case
def access_item_int(mod):
    return cV(mod)[0]


@case
def access_setitem_missing(mod):
    V = cV(mod)
    V["nope"] = 5


@case
def access_setattr_missing(mod):
    V = cV(mod)
    V.nope = 5


@case
def access_substruct_shares(mod):
    V = cV(mod)
    B = V.b
    B.x = 42.0
    return V["b.x"], V.changed("b.x"), type(B).__name__, B.getID()


@case
def access_substruct_write_through_item(mod):
    V = cV(mod)
    V["b"]["x"] = 3.0
    V.unmark()
    V.b.x = 4.0
    return V.b.x, V.changedSet()


@case
def access_get(mod):
    V = cV(mod)
    return V.get("a"), V.get("nope"), V.get("nope", 7), V.get("b.x"), V.get("b.nope", "d")


@case
def access_get_substruct(mod):
    return cV(mod).get("b")


@case
def access_contains(mod):
    V = cV(mod)
    return "a" in V, "b" in V, "nope" in V, "b.x" in V, V.has("a"), V.has("b.x"), V.has("nope")


@case
def access_keys(mod):
    V = cV(mod)
    return V.keys(), list(V), V.b.keys()


@case
def access_items(mod):
    return cV(mod).items()


@case
def access_items_sub(mod):
    return cV(mod).items("b")


@case
def access_tolist(mod):
    return cV(mod).tolist()


@case
def access_tolist_sub(mod):
    return cV(mod).tolist("b")


@case
def access_tolist_scalar_field(mod):
    return cV(mod).tolist("a")


@case
def access_todict(mod):
    return cV(mod).todict()


@case
def access_todict_sub(mod):
    return cV(mod).todict("b")


@case
def access_todict_ordered(mod):
    return cV(mod).todict(None, OrderedDict)


@case
def access_todict_wrapper_kw(mod):
    return cV(mod).todict(wrapper=OrderedDict)


@case
def access_type(mod):
    V = cV(mod)
    return V.type(), V.type("b"), V.type("u"), V.type("sa")


@case
def access_type_scalar_field(mod):
    return cV(mod).type("a")


@case
def access_type_missing(mod):
    return cV(mod).type("invalid")


@case
def access_getid(mod):
    V = cT(mod, id="top_t")()
    return V.getID(), V.b.getID(), V.e.getID()


@case
def access_reserved_field_item(mod):
    V = mod.Value(mod.Type([("name", "s"), ("type", "s"), ("value", "i")]))
    V["type"] = "hello"
    return V["type"], V.type().keys(), V.name


@case
def access_struct_array_elements(mod):
    V = cV(mod)
    arr = V.sa
    return len(arr), arr[0].q, arr[0].r, arr[1], arr[0].getID(), type(arr).__name__


@case
def access_iter_values_tolist(mod):
    V = cV(mod)
    return [k for k in V], V.items()[0]


# ---------------------------------------------------------------------------------------------
# Sub-structure assignment
# ---------------------------------------------------------------------------------------------


@case
def substruct_assign_dict(mod):
    V = cV(mod)
    V.unmark()
    V.b = {"x": 2.0}
    return V.tolist(), V.changedSet()


@case
def substruct_assign_dict_badkey(mod):
    V = cV(mod)
    V.b = {"nope": 2.0}


@case
def substruct_assign_value(mod):
    A = mod.Value(
        mod.Type([("x", "i"), ("z", ("S", None, [("a", "i"), ("b", "i"), ("c", "i")])), ("q", "v")])
    )
    B = mod.Value(mod.Type([("a", "i"), ("b", "i"), ("other", "i")]), {"a": 42, "b": 43})
    A.z = B
    A.q = B
    return A.z.a, A.z.b, A.q.a, A.q.b, A.changedSet(), A.q.getID()


@case
def substruct_assign_value_missing_field(mod):
    A = mod.Value(mod.Type([("z", ("S", None, [("a", "i")]))]))
    B = mod.Value(mod.Type([("a", "i"), ("other", "i")]), {"other": 1})
    A.z = B
    return A.tolist()


@case
def substruct_assign_scalar(mod):
    V = cV(mod)
    V.b = 5


@case
def top_assign_dict(mod):
    A = mod.Value(mod.Type([("x", "i"), ("y", "i"), ("z", ("S", None, [("a", "i"), ("b", "i")]))]))
    A[None] = {"x": 1, "z": {"a": 2}, "z.b": 3}
    return A.tolist(), A.changedSet()


@case
def top_assign_value_marked_only(mod):
    T = mod.Type([("x", "i"), ("y", "i")])
    A = T({"x": 1, "y": 2})
    B = T({"x": 10, "y": 20})
    B.mark("y", False)
    A.unmark()
    A[None] = B
    return A.tolist(), A.changedSet()


@case
def copy_substruct_full(mod):
    T = mod.Type(
        [
            (
                "x",
                (
                    "S",
                    None,
                    [("y", "i"), ("z", "ai"), ("q", "v"), ("m", "av"), ("a", ("S", None, [("A", "i")]))],
                ),
            )
        ]
    )
    A = T({"x.y": 42, "x.z": range(3), "x.q": "hello", "x.m": ["hello", 52], "x.a.A": 100})
    B = T({"x.y": 43, "x.z": range(4), "x.q": 15, "x.m": ["world", 62], "x.a.A": 101})
    B.x = A.x
    return B.tolist()


# ---------------------------------------------------------------------------------------------
# Discriminated unions
# ---------------------------------------------------------------------------------------------


def uV(mod):
    return mod.Value(mod.Type([("x", ("U", "x_t", [("a", "i"), ("b", "s")]))]))


@case
def union_default(mod):
    V = uV(mod)
    return V.x, V.tolist(), V.todict()


@case
def union_tuple_select(mod):
    V = uV(mod)
    V.x = ("a", 44)
    r1 = V.x
    V.x = ("b", "test")
    return r1, V.x, V.changedSet()


@case
def union_bare_previous(mod):
    V = uV(mod)
    V.x = ("b", "test")
    V.x = 128
    return V.x


@case
def union_bare_previous_int(mod):
    V = uV(mod)
    V.x = ("a", 1)
    V.x = 7.9
    return V.x


@case
def union_bare_previous_int_badstr(mod):
    V = uV(mod)
    V.x = ("a", 1)
    V.x = "xyz"
    return V.x


@case
def union_magic_int(mod):
    V = uV(mod)
    V.x = 5
    return V.x


@case
def union_magic_float(mod):
    V = uV(mod)
    V.x = 5.2
    return V.x


@case
def union_magic_str(mod):
    V = uV(mod)
    V.x = "bar"
    return V.x


@case
def union_magic_str_numeric(mod):
    V = uV(mod)
    V.x = "12"
    return V.x


@case
def union_none_deselect(mod):
    V = uV(mod)
    V.x = ("a", 1)
    V.x = None
    return V.x, V.tolist()


@case
def union_bad_member(mod):
    V = uV(mod)
    V.x = ("nope", 1)


@case
def union_select_method(mod):
    V = uV(mod)
    V.select("x", "b")
    return V.x


@case
def union_select_none(mod):
    V = uV(mod)
    V.x = ("a", 3)
    V.select("x", None)
    return V.x


@case
def union_struct_member(mod):
    V = mod.Value(
        mod.Type([("x", ("U", None, [("s", ("S", "sub_t", [("q", "I"), ("r", "s")])), ("d", "d")]))])
    )
    V.x = ("s", {"q": 4, "r": "z"})
    return V.x, V.tolist(), V.todict()


@case
def union_magic_dict_struct_member(mod):
    V = mod.Value(mod.Type([("x", ("U", None, [("d", "d"), ("s", ("S", None, [("q", "I")]))]))]))
    V.x = {"q": 4}
    return V.x


@case
def union_in_init(mod):
    V = mod.Value(mod.Type([("x", ("U", None, [("a", "i"), ("b", "s")]))]), {"x": ("b", "hi")})
    return V.x, V.changedSet()


@case
def union_type(mod):
    V = uV(mod)
    return V.type("x"), V.type().aspy()


@case
def union_array_magic(mod):
    V = mod.Value(mod.Type([("y", ("aU", "foo", [("a", "i"), ("b", "s")]))]))
    V.y = [2, 5.2, "bar"]
    return V.y


@case
def union_array_tuples(mod):
    V = mod.Value(mod.Type([("y", ("aU", "foo", [("a", "i"), ("b", "s")]))]))
    V.y = [("a", 3), ("b", 4.2), ("b", "baz"), None]
    return V.y, V.tolist()


@case
def union_array_bad(mod):
    V = mod.Value(mod.Type([("y", ("aU", "foo", [("a", "i")]))]))
    V.y = 5


# ---------------------------------------------------------------------------------------------
# Variant (any)
# ---------------------------------------------------------------------------------------------

VARIANT_INPUTS = [
    ("none", None),
    ("bool", True),
    ("int", 5),
    ("bigint", 2**63 + 1),
    ("hugeint", 2**70),
    ("float", 1.1),
    ("str", "test"),
    ("bytes", b"raw"),
    ("liststr", ["hello", "world"]),
    ("listint", [1, 2]),
    ("emptylist", []),
    ("dict", {"a": 1}),
    ("explicit-B", ("B", 0xFFFF)),
    ("explicit-d", ("d", 42)),
    ("explicit-s", ("s", 5)),
    ("explicit-ad", ("ad", [1, 2])),
    ("explicit-as", ("as", ["one", "two"])),
    ("explicit-bad", ("z", 1)),
    ("tuple3", (1, 2, 3)),
    ("npint32", np.int32(3)),
    ("npfloat32", np.float32(0.25)),
]
for _d in ["?", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f4", "f8"]:
    VARIANT_INPUTS.append(("nd-" + _d, np.asarray([1, 0], dtype=_d)))
VARIANT_INPUTS.append(("nd-unicode", np.asarray(["a", "b"])))
VARIANT_INPUTS.append(("nd-2d", np.zeros((2, 2))))

for _lbl, _val in VARIANT_INPUTS:

    def _variant(mod, val=_val):
        V = vx(mod, "v")
        V.x = val
        return V.x, V.changedSet()

    add(f"variant-{_lbl}", _variant)


@case
def variant_str_form(mod):
    V = vx(mod, "v")
    out = []
    for val in (None, True, 5, 1.5, "txt", ["a"], np.asarray([1, 2], dtype="i2"), ("B", 300)):
        V.x = val
        out.append(str(V))
    return out


@case
def variant_value(mod):
    S = mod.Value(mod.Type([("x", "i")], id="in_t"), {"x": 42})
    V = mod.Value(mod.Type([("y", "v")]), {"y": S})
    return V.y, V.tolist(), V.todict(), str(V)


@case
def variant_roundtrip_top_assign(mod):
    T = mod.Type([("x", "v")])
    out = []
    for X in (None, True, 42, 4.2, "hello", ["hello", "world"], np.asarray([-1, 1], dtype="i1")):
        V = T()
        V.x = X
        V2 = T()
        V2[None] = V
        out.append(V2.x)
    return out


@case
def variant_array_mixed(mod):
    V = vx(mod, "av")
    V.x = [1, 4.2, "foo", True]
    return V.x, V.tolist()


@case
def variant_array_with_none(mod):
    V = vx(mod, "av")
    V.x = [1, None]
    return V.x


@case
def variant_array_value(mod):
    S = mod.Value(mod.Type([("x", "i")]), {"x": 42})
    V = mod.Value(mod.Type([("y", "av")]), {"y": [S]})
    return V.y, V.tolist()


@case
def variant_array_scalar(mod):
    V = vx(mod, "av")
    V.x = 5


# ---------------------------------------------------------------------------------------------
# Struct arrays
# ---------------------------------------------------------------------------------------------


def saV(mod):
    return mod.Value(mod.Type([("a", ("aS", "el_t", [("b", "i"), ("c", "s")]))]))


@case
def structarray_dicts_none_pairs(mod):
    V = saV(mod)
    V.a = [{"b": 4}, None, [("b", 5)]]
    return V.a, V.tolist(), V.todict(), V.changedSet()


@case
def structarray_values(mod):
    V = saV(mod)
    el = mod.Value(mod.Type([("b", "i"), ("c", "s")], id="el_t"), {"b": 1, "c": "x"})
    V.a = [el, el]
    return V.a


@case
def structarray_value_foreign_type(mod):
    V = saV(mod)
    el = mod.Value(mod.Type([("b", "i"), ("zz", "d")]), {"b": 1})
    V.a = [el]
    return V.a


@case
def structarray_reassign(mod):
    V = saV(mod)
    V.a = [{"b": 4}]
    V.a = [None, {"b": 1}]
    return V.a


@case
def structarray_bad_key(mod):
    V = saV(mod)
    V.a = [{"nope": 4}]


@case
def structarray_bad_elem(mod):
    V = saV(mod)
    V.a = [5]


@case
def structarray_scalar(mod):
    V = saV(mod)
    V.a = 5


@case
def structarray_elements_are_independent(mod):
    V = saV(mod)
    V.a = [{"b": 4}]
    el = V.a[0]
    el.b = 99
    return V.a[0].b, el.b


@case
def structarray_str(mod):
    V = saV(mod)
    V.a = [{"b": 4, "c": "q"}, None]
    return str(V)


# ---------------------------------------------------------------------------------------------
# enum_t
# ---------------------------------------------------------------------------------------------


def eV(mod, choices=("zero", "one", "two")):
    T = mod.Type([("e", ("S", "enum_t", [("index", "i"), ("choices", "as")]))])
    return T({"e.choices": list(choices)})


@case
def enum_assign_str(mod):
    V = eV(mod)
    V.e = "two"
    return V.e.index, V.changedSet()


@case
def enum_assign_int(mod):
    V = eV(mod)
    V.e = 1
    return V.e.index, V.changedSet()


@case
def enum_assign_bad_str(mod):
    V = eV(mod)
    V.e = "seven"
    return V.e.index


@case
def enum_assign_out_of_range_int(mod):
    V = eV(mod)
    V.e = 10
    return V.e.index


@case
def enum_assign_float(mod):
    V = eV(mod)
    V.e = 1.0
    return V.e.index


@case
def enum_assign_empty_choices(mod):
    V = eV(mod, choices=())
    V.e = 1
    return V.e.index


@case
def enum_assign_numeric_str(mod):
    V = eV(mod)
    V.e = "1"
    return V.e.index


@case
def enum_init(mod):
    T = mod.Type([("e", ("S", "enum_t", [("index", "i"), ("choices", "as")]))])
    V = T({"e": {"index": 2, "choices": ["a", "b", "c"]}})
    return V.tolist(), repr(V.e)


@case
def enum_not_enum_id(mod):
    T = mod.Type([("e", ("S", "other_t", [("index", "i"), ("choices", "as")]))])
    V = T({"e.choices": ["a"]})
    V.e = 1


# ---------------------------------------------------------------------------------------------
# Change tracking
# ---------------------------------------------------------------------------------------------


def bT(mod):
    return mod.Type(
        [
            ("x", "i"),
            ("y", "i"),
            ("z", ("S", None, [("a", "i"), ("b", "i"), ("q", ("S", None, [("m", "i")]))])),
        ]
    )


@case
def changed_initial(mod):
    A = mod.Value(mod.Type([("x", "i"), ("y", "i")]), {"y": 42})
    return A.changedSet(), A.changed(), A.changed("x"), A.changed("y"), A.changed("x", "y")


@case
def changed_invalid(mod):
    return mod.Value(mod.Type([("x", "i")])).changed("invalid")


@case
def changed_mark_unmark(mod):
    A = mod.Value(mod.Type([("x", "i"), ("y", "i")]), {"y": 42})
    A.mark("x")
    s1 = A.changedSet()
    A.mark("x", False)
    s2 = A.changedSet()
    A.unmark()
    return s1, s2, A.changedSet(), A.changed()


@case
def changed_same_value_marks(mod):
    A = mod.Value(mod.Type([("x", "i")]), {"x": 1})
    A.unmark()
    A.x = 1
    return A.changedSet()


@case
def changed_mark_substruct(mod):
    A = bT(mod)()
    A.mark("z")
    return [A.changedSet(expand=e, parents=p) for e in (False, True) for p in (False, True)]


@case
def changed_mark_leaf(mod):
    A = bT(mod)()
    A.mark("z.a")
    return [A.changedSet(expand=e, parents=p) for e in (False, True) for p in (False, True)]


@case
def changed_mark_inner_struct(mod):
    A = bT(mod)()
    A.mark("z.q")
    return [A.changedSet(expand=e, parents=p) for e in (False, True) for p in (False, True)]


@case
def changed_docstring_example(mod):
    A = mod.Value(mod.Type([("x", "i"), ("z", ("S", None, [("a", "i"), ("b", "i")]))]), {})
    A.mark("z")
    r = [A.changedSet(expand=False), A.changedSet(expand=True)]
    A.mark("z.a")
    r += [A.changedSet(expand=False), A.changedSet(expand=True)]
    A.mark("z", False)
    r += [
        A.changedSet(expand=False),
        A.changedSet(expand=True),
        A.changedSet(expand=False, parents=True),
        A.changedSet(expand=True, parents=True),
    ]
    return r


@case
def changed_parent_child(mod):
    A = bT(mod)()
    A.mark("z.a")
    r = [A.changed("z"), A.changed("z.a"), A.changed("z.b"), A.changed("z.q.m"), A.changed()]
    A.unmark()
    A.mark("z")
    r += [A.changed("z"), A.changed("z.a"), A.changed("z.q.m"), A.changed("x")]
    return r


@case
def changed_multi_fields(mod):
    A = bT(mod)()
    A.mark("y")
    return A.changed("x", "y"), A.changed("x", "z"), A.changed("x")


@case
def changed_mark_all(mod):
    A = bT(mod)()
    A.mark()
    return A.changedSet(), A.changedSet(expand=True), A.changed("x")


@case
def changed_mark_none_false(mod):
    A = bT(mod)({"x": 1, "z.a": 2})
    A.mark(None, False)
    return A.changedSet()


@case
def changed_clear(mod):
    A = bT(mod)({"x": 1, "z.a": 2})
    A.clear()
    return A.changedSet(), A.x, A.changed()


@case
def changed_unmark_field(mod):
    A = bT(mod)({"x": 1, "y": 2})
    A.unmark("x")
    return A.changedSet()


@case
def changed_mark_invalid(mod):
    A = bT(mod)()
    A.mark("invalid")


@case
def changed_substruct_view(mod):
    A = bT(mod)()
    A.mark("y")
    A.mark("z.a")
    Z = A.z
    r = [Z.changed("a"), Z.changed("b"), Z.changedSet()]
    Z.mark("a", False)
    Z.mark("b", True)
    return r, A.changedSet(), Z.changedSet(), A.changed("z.a"), A.changed("z.b")


@case
def changed_asset_alias(mod):
    A = bT(mod)({"x": 1})
    return A.asSet(), A.asSet(True, True)


@case
def changed_union_array_fields(mod):
    V = cT(mod)()
    V.u = ("i", 1)
    V.sa = [{"q": 1}]
    V.av = [1]
    V.v = 2
    return V.changedSet(), V.changedSet(expand=True)


@case
def changed_mark_union(mod):
    V = cT(mod)()
    V.mark("u")
    V.mark("sa")
    return V.changedSet(expand=True, parents=True)


@case
def changed_whole_struct_assign(mod):
    A = bT(mod)()
    A.z = {"q": {"m": 3}}
    return A.changedSet(), A.changedSet(expand=True, parents=True)


@case
def changed_mark_sub_from_view_top(mod):
    A = bT(mod)()
    A.z.mark()
    return A.changedSet()


# ---------------------------------------------------------------------------------------------
# Miscellaneous corners
# ---------------------------------------------------------------------------------------------


def mT(mod):
    return mod.Type(
        [
            ("a", "i"),
            ("b", ("S", "foo", [("x", "d")])),
            ("sa", ("aS", "el", [("q", "i")])),
            ("u", ("U", None, [("i", "i"), ("s", ("S", None, [("z", "i")]))])),
        ]
    )


@case
def misc_len_value(mod):
    return len(mT(mod)())


@case
def misc_bool_value(mod):
    return bool(mT(mod)())


@case
def misc_init_dotted_into_union(mod):
    return mT(mod)({"u.i": 5})


@case
def misc_init_union_struct_member(mod):
    return mT(mod)({"u": ("s", {"z": 3})}).tolist()


@case
def misc_type_spec_tuple(mod):
    return mod.Type((("a", "i"),)).aspy()


@case
def misc_type_id_not_str(mod):
    return mod.Type([("a", "i")], id=5)


@case
def misc_type_base_not_type(mod):
    return mod.Type([("a", "i")], base=5)


@case
def misc_type_empty_substruct(mod):
    T = mod.Type([("a", ("S", None, []))])
    return T.tostr(), str(T()), T().tolist()


@case
def misc_type_bad_plain_union_code(mod):
    return mod.Type([("x", "aU")])


@case
def misc_setitem_dotted(mod):
    V = mT(mod)()
    V["b.x"] = 3
    return V.b.x, V.changedSet()


@case
def misc_top_assign_bad_key(mod):
    V = mT(mod)()
    V[None] = {"nope": 1}


@case
def misc_top_assign_scalar(mod):
    V = mT(mod)()
    V[None] = 5


@case
def misc_structarray_element_writes_through(mod):
    V = mT(mod)()
    V.sa = [{"q": 1}]
    V.unmark()
    V.sa[0].q = 5
    return V.sa[0].q, V.changedSet()


@case
def misc_variant_from_substruct_view(mod):
    V = vx(mod, "v")
    W = mT(mod)({"b.x": 2.5})
    V.x = W.b
    return V.x, V.x.getID(), str(V)


@case
def misc_numpy_scalar_into_array(mod):
    V = vx(mod, "ai")
    V.x = np.int32(5)
    return V.x


@case
def misc_structarray_type_call(mod):
    return mT(mod)().type("sa")().tolist()


@case
def misc_union_array_str(mod):
    V = mod.Value(mod.Type([("y", ("aU", None, [("a", "i"), ("s", ("S", "inner", [("z", "s")]))]))]))
    V.y = [("a", 1), ("s", {"z": "q"}), None]
    return str(V), V.tolist()


@case
def misc_nested_structarray_str(mod):
    T = mod.Type([("o", ("aS", None, [("i", ("aS", None, [("v", "d")])), ("n", "s")]))])
    V = T({"o": [{"i": [{"v": 1.0}, None], "n": "first"}, {"n": "second"}]})
    return str(V), V.todict()


# ---------------------------------------------------------------------------------------------
# Equality, str() and repr()
# ---------------------------------------------------------------------------------------------


@case
def eq_same(mod):
    T = mod.Type([("x", "i"), ("y", "s")])
    return T({"x": 1}) == T({"x": 1}), T({"x": 1}) == T({"x": 2}), T({"x": 1}) != T({"x": 2})


@case
def eq_different_types(mod):
    A = mod.Value(mod.Type([("x", "i")]), {"x": 1})
    B = mod.Value(mod.Type([("x", "d")]), {"x": 1})
    return A == B


@case
def eq_marks_irrelevant(mod):
    T = mod.Type([("x", "i")])
    A = T({"x": 0})
    B = T()
    return A == B


@case
def eq_non_value(mod):
    A = mod.Value(mod.Type([("x", "i")]), {"x": 1})
    return A == 1, A == None  # noqa: E711


@case
def eq_arrays(mod):
    T = mod.Type([("x", "ai")])
    return T({"x": [1, 2]}) == T({"x": [1, 2]}), T({"x": [1, 2]}) == T({"x": [1, 3]})


@case
def eq_self(mod):
    A = cV(mod)
    return A == A


STR_CASES = {
    "scalars": ([("ival", "i"), ("dval", "d"), ("sval", "s")], {"ival": 42, "dval": 4.2, "sval": "hello"}),
    "all-ints": (
        [("b", "b"), ("B", "B"), ("h", "h"), ("H", "H"), ("i", "i"), ("I", "I"), ("l", "l"), ("L", "L")],
        {"b": -1, "B": 255, "h": -300, "H": 60000, "i": -5, "I": 2**32 - 1, "l": -(2**63), "L": 2**64 - 1},
    ),
    "bool-float": (
        [("t", "?"), ("f", "?"), ("f32", "f"), ("f64", "d")],
        {"t": True, "f32": 0.1, "f64": 1e100},
    ),
    "float-formats": (
        [("a", "d"), ("b", "d"), ("c", "d"), ("d", "d"), ("e", "d")],
        {"a": 1.0, "b": 1e-7, "c": 123456789.0, "d": -0.5, "e": 1.0 / 3},
    ),
    "float-special": (
        [("a", "d"), ("b", "d"), ("c", "f")],
        {"a": float("inf"), "b": float("nan"), "c": -float("inf")},
    ),
    "string-escape": ([("s", "s")], {"s": 'a"b\\c\nd\te'}),
    "string-unicode": ([("s", "s")], {"s": "caf\u00e9"}),
    "arrays": (
        [("ai", "ai"), ("ad", "ad"), ("as", "as"), ("abool", "a?"), ("aB", "aB"), ("af", "af")],
        {
            "ai": [1, 2, 3],
            "ad": [1.5, 2],
            "as": ["x", 'y"z'],
            "abool": [True, False],
            "aB": [255],
            "af": [0.1, -1e-20],
        },
    ),
    "empty-arrays": ([("ai", "ai"), ("as", "as"), ("av", "av")], {"ai": []}),
    "nested": (
        COMPLEX_SPEC,
        {
            "a": 5,
            "b.x": 1.5,
            "b.y": ["x", "y"],
            "u": ("s", "hi"),
            "v": 3,
            "sa": [{"q": 1}, None],
            "e.choices": ["A"],
            "ua": [("i", 1), None],
            "av": [1, "two"],
            "vu": ("sub", {"q": 3}),
        },
    ),
    "nested-default": (COMPLEX_SPEC, {}),
    "variant-types": (
        [("v1", "v"), ("v2", "v"), ("v3", "v"), ("v4", "v")],
        {"v1": ("B", 7), "v2": ("ad", [1]), "v3": ["a"], "v4": 2.5},
    ),
    "long-array": ([("x", "ai")], {"x": list(range(300))}),
    "deep": ([("a", ("S", "A", [("b", ("S", None, [("c", ("S", "C", [("d", "i")]))]))]))], {"a.b.c.d": 1}),
    "id-only": ([], {}),
}

for _lbl, (_spec, _init) in STR_CASES.items():

    def _str_case(mod, spec=_spec, init=_init):
        return str(mod.Value(mod.Type(spec, id="str_t" if len(spec) % 2 else None), init))

    add(f"str-{_lbl}", _str_case)

    def _tostr_limit(mod, spec=_spec, init=_init):
        V = mod.Value(mod.Type(spec), init)
        return V.tostr(), V.tostr(limit=0) == str(V)

    add(f"tostr-{_lbl}", _tostr_limit)


@case
def str_substruct_view(mod):
    return str(cV(mod).b)


@case
def str_tostr_limited(mod):
    V = mod.Value(mod.Type([("x", "ai"), ("s", "s")]), {"x": list(range(100)), "s": "hello world"})
    return V.tostr(limit=20), V.tostr(limit=60)


REPR_CASES = [
    ("value-field", [("value", "d"), ("x", "i")], {"value": 1.5}, None),
    ("value-field-id", [("value", "as"), ("x", "i")], {"value": ["a"]}, "epics:nt/NTScalarArray:1.0"),
    ("first-field", [("a", "i"), ("b", "d")], {"a": 3}, None),
    ("first-field-id", [("a", "s")], {"a": "q"}, "foo_t"),
    ("first-field-struct", [("a", ("S", None, [("x", "i")]))], {}, "x_t"),
    ("empty", [], {}, None),
    ("empty-id", [], {}, "e_t"),
    ("array", [("value", "ai")], {"value": [1, 2]}, None),
    ("union-value", [("value", ("U", None, [("a", "i")]))], {"value": ("a", 3)}, None),
    ("variant-none", [("value", "v")], {}, None),
    ("struct-array", [("value", ("aS", None, [("a", "i")]))], {"value": [{"a": 1}]}, None),
]

for _lbl, _spec, _init, _id in REPR_CASES:

    def _repr_case(mod, spec=_spec, init=_init, id=_id):
        return repr(mod.Value(mod.Type(spec, id=id), init))

    add(f"repr-{_lbl}", _repr_case)


@case
def repr_type_nested(mod):
    return repr(cT(mod)), repr(cT(mod)["b"]), str(cT(mod)["b"])


@case
def repr_enum(mod):
    return repr(eV(mod).e)


# ---------------------------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------------------------

CASE_NAMES = list(CASES)


def test_case_count():
    assert len(CASES) >= 180


@pytest.mark.parametrize("name", CASE_NAMES)
def test_p4p_reference_is_sane(name):
    """A case only raises in p4p with one of the ordinary exception classes."""
    res = run(CASES[name], P4P)
    if res[0] == "raise":
        assert res[1] in _EXPECTED_EXC, res


@pytest.mark.parametrize("name", CASE_NAMES)
def test_diff(name):
    cap = _capva_ns()
    op = CASES[name]
    expected = run(op, P4P)
    actual = run(op, cap, expected)
    if name in DELIBERATE:
        # a documented divergence (CHANGELOG): it must still diverge, or this entry is stale
        assert actual != expected, f"{name} now matches p4p: drop it from DELIBERATE"
    else:
        assert actual == expected


#: cases where capva deliberately differs from p4p 4.3.0, and why
DELIBERATE = {
    "type_base_extend_id": "capva accepts id= together with base= (p4p raises ValueError)",
    "assign_numpy_bool": "capva stores numpy.bool_ in a bool field (p4p raises TypeError)",
    "assign_numpy_uint64_to_i": "capva converts numpy integers like Python ints, wrapping (p4p raises TypeError)",
    "union_select_method": "p4p 4.3.0's Value.select() always raises TypeError on Python 3; capva's works",
    "union_select_none": "p4p 4.3.0's Value.select() always raises TypeError on Python 3; capva's works",
    "variant-npint32": "capva infers a variant's type from numpy scalars (p4p raises RuntimeError)",
    "variant-npfloat32": "capva infers a variant's type from numpy scalars (p4p raises RuntimeError)",
    "variant-nd-unicode": "capva stores a numpy unicode array in a variant as string[] (p4p raises)",
    "variant_array_with_none": "capva accepts None (a null element, which the wire carries) in any[]",
    "misc_structarray_element_writes_through": (
        "known gap: struct[] elements are independent Values, so writing into one does not mark"
        " the array field as p4p does; re-assign the array to mark it"
    ),
    "misc_structarray_type_call": "p4p builds an unexplained empty Value from a struct[] Type; capva raises TypeError",
    "eq_same": "capva compares Values by type and contents; p4p compares identity",
    "eq_marks_irrelevant": "capva compares Values by type and contents; p4p compares identity",
    "eq_arrays": "capva compares Values by type and contents; p4p compares identity",
}
