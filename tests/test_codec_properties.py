"""Property tests of the PVA type/value codec (pva-protocol.md §2-§3) over random types and values.

Why these tests exist: the vector tests (test_codec_vectors.py) pin a handful of known byte strings,
but the codec generates a specialised encode/decode function for every (type, field mask, byte
order) it meets, so a bug may hide in a layout no vector happens to use: a union inside a struct
array inside an ``any``, a mask that selects a sub-structure together with its own children, a
string whose length needs the 0xFE form of Size, a big-endian NaN.  Here hypothesis builds such
types and values through the public API and checks the round-trip laws in both byte orders:

* encode -> decode gives back an equal type / value, and re-encoding gives the same bytes;
* every decoder reports the end of the data it consumed and leaves trailing bytes alone;
* a partial value comes back with exactly the transmitted changed mask, the selected fields equal
  to the source and every other field at its default;
* the pvAccessCPP-style introspection cache (SendTypeCache) decodes with one receive cache shared
  across messages, and a repeated type is sent as ``fe key``;
* little- and big-endian encodings have the same length.

Comparisons use :func:`strategies.same`, which compares floats and arrays by their bytes, so NaN
payloads are checked instead of being an excuse for inequality.  Byte-at-a-time feeding is a
framing concern and is tested with the framer, not here.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capva import Type, Value
from capva._wire import encode_size, encode_string
from capva.pva.codec import (
    SendTypeCache,
    Status,
    decode_field_value,
    decode_full,
    decode_partial,
    decode_status,
    decode_type,
    decode_typed_value,
    encode_field_value,
    encode_full,
    encode_partial,
    encode_status,
    encode_type,
    encode_typed_value,
    value_mask,
)
from strategies import (
    covered,
    field_types,
    has_nan,
    layout,
    masks,
    same,
    stored,
    strings,
    struct_types,
    typed_values,
    values,
)

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

byte_orders = st.booleans()  # be
#: bytes placed before the data (decoders start at an offset) and after it (must stay unread)
garbage = st.binary(max_size=6)


def _assert_same_value(V2: Value, V: Value) -> None:
    assert V2.type() == V.type()
    assert same(V2, V)
    if not has_nan(V):
        assert V2 == V


# -- types ---------------------------------------------------------------------------------------


@SETTINGS
@given(T=st.one_of(struct_types(), field_types()), be=byte_orders, pre=garbage, post=garbage)
def test_type_roundtrip(T, be, pre, post):
    data = encode_type(T, be)
    T2, end = decode_type(pre + data + post, len(pre), be, {})
    assert end == len(pre) + len(data)
    assert T2 == T
    assert T2.aspy() == T.aspy()
    assert encode_type(T2, be) == data
    assert len(encode_type(T, not be)) == len(data)


_LEAF_BYTES = [0x00, *range(0x20, 0x28), 0x42, 0x43, 0x60, 0x82, 0x8A]


@SETTINGS
@given(
    fields=st.lists(
        st.tuples(st.text(max_size=6), st.sampled_from(_LEAF_BYTES + [b | 0x08 for b in _LEAF_BYTES[:-2]])),
        max_size=6,
        unique_by=lambda f: f[0],
    ),
    tid=st.text(max_size=8),
    be=byte_orders,
)
def test_wire_names_roundtrip(fields, tid, be):
    """Names on the wire are arbitrary strings (the constructor only accepts identifiers, but peers
    may send anything): decoding and re-encoding keeps them byte for byte."""
    wire = b"\x80" + encode_string(tid, be) + encode_size(len(fields), be)
    wire += b"".join(encode_string(n, be) + bytes((c,)) for n, c in fields)
    T, end = decode_type(wire, 0, be, {})
    assert end == len(wire)
    assert T.getID() == (tid or "structure")
    assert [n for n, _ in T.members] == [n for n, _ in fields]
    assert encode_type(T, be) == wire


def test_null_type_roundtrip():
    for be in (False, True):
        assert encode_type(None, be) == b"\xff"
        assert decode_type(b"\x00\xff\x00", 1, be, {}) == (None, 2)


# -- full values ---------------------------------------------------------------------------------


@SETTINGS
@given(V=typed_values(), be=byte_orders, pre=garbage, post=garbage)
def test_full_roundtrip(V, be, pre, post):
    T = V.type()
    data = encode_full(V, be)
    V2, end = decode_full(T, pre + data + post, len(pre), be, {})
    assert end == len(pre) + len(data)
    _assert_same_value(V2, V)
    assert value_mask(V2) == (1 << len(layout(T))) - 1  # every field comes back marked
    assert encode_full(V2, be) == data
    assert len(encode_full(V, not be)) == len(data)


@SETTINGS
@given(V=typed_values(max_depth=3), be=byte_orders)
def test_full_decode_from_reused_mutable_buffer(V, be):
    """A transport decodes straight out of its receive buffer and then overwrites it: the decoded
    Value must not share memory with a bytearray or memoryview."""
    data = encode_full(V, be)
    for kind in (bytearray, lambda b: memoryview(bytearray(b))):
        buf = kind(data + b"\xa5")
        V2, end = decode_full(V.type(), buf, 0, be, {})
        assert end == len(data)
        buf[:] = b"\x5a" * len(buf)
        _assert_same_value(V2, V)
        assert encode_full(V2, be) == data


@SETTINGS
@given(be=byte_orders, data=st.data())
def test_float_edge_bytes_roundtrip(be, data):
    """Scalars and arrays of f32/f64 keep NaN payloads, infinities and -0.0 bit for bit, and
    array elements go on the wire in the message's byte order."""
    T = Type([("f", "f"), ("d", "d"), ("af", "af"), ("ad", "ad")])
    specials = st.sampled_from([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 5e-324, 1e-45])
    raw_f = data.draw(st.binary(max_size=16).map(lambda b: b[: len(b) // 4 * 4]), "raw_f")
    raw_d = data.draw(st.binary(min_size=8, max_size=32).map(lambda b: b[: len(b) // 8 * 8]), "raw_d")
    ad = np.frombuffer(raw_d, "<f8")
    V = T(
        {
            "f": data.draw(st.floats(width=32) | specials, "f"),
            "d": data.draw(st.floats() | specials, "d"),
            "af": np.frombuffer(raw_f, "<f4"),
            "ad": ad,
        }
    )
    wire = encode_full(V, be)
    V2, _ = decode_full(T, wire, 0, be, {})
    assert same(V2, V)
    assert encode_full(V2, be) == wire
    assert wire.endswith(bytes((len(ad),)) + ad.astype(">f8" if be else "<f8").tobytes())


# -- partial values ------------------------------------------------------------------------------


@SETTINGS
@given(data=st.data(), be=byte_orders, pre=garbage, post=garbage)
def test_partial_roundtrip(data, be, pre, post):
    V = data.draw(typed_values(), "V")
    T = V.type()
    mask = data.draw(masks(T), "mask")
    wire = encode_partial(V, be, mask)
    V2, end = decode_partial(T, pre + wire + post, len(pre), be, {})
    assert end == len(pre) + len(wire)
    assert value_mask(V2) == mask  # exactly the transmitted BitSet, redundant bits included
    sel = covered(T, mask)
    src, got, dflt = stored(V), stored(V2), stored(Value(T))
    for i, (path, _t, _) in enumerate(layout(T)):
        want = src[i] if i in sel else dflt[i]
        assert same(got[i], want), (path, got[i], want)
    assert encode_partial(V2, be, mask) == wire
    assert encode_partial(V2, be) == wire  # the default mask is the received one
    assert len(encode_partial(V, not be, mask)) == len(wire)


@SETTINGS
@given(V=typed_values(), be=byte_orders, pre=garbage, post=garbage)
def test_partial_with_changed_marks(V, be, pre, post):
    """Without an explicit mask the Value's own changed marks are sent, and come back."""
    T = V.type()
    wire = encode_partial(V, be)
    V2, end = decode_partial(T, pre + wire + post, len(pre), be, {})
    assert end == len(pre) + len(wire)
    assert value_mask(V2) == value_mask(V)
    for i in covered(T, value_mask(V)):
        assert same(stored(V2)[i], stored(V)[i])
    assert encode_partial(V2, be) == wire


@SETTINGS
@given(data=st.data(), be=byte_orders, extra=st.integers(1, 9))
def test_partial_tolerates_non_shortest_bitset(data, be, extra):
    """§2.4: decoders must accept BitSets padded with zero bytes (encoders send the shortest form)."""
    V = data.draw(typed_values(max_depth=3), "V")
    T = V.type()
    mask = data.draw(masks(T), "mask")
    wire = encode_partial(V, be, mask)
    n = (mask.bit_length() + 7) // 8
    nbytes = n + extra
    raw = mask.to_bytes(nbytes, "little")
    if be:
        nw = nbytes // 8
        raw = b"".join(raw[8 * w : 8 * w + 8][::-1] for w in range(nw)) + raw[8 * nw :]
    head = bytes((nbytes,)) + raw
    body = wire[1 + n :]
    V2, end = decode_partial(T, head + body, 0, be, {})
    assert end == len(head) + len(body)
    assert value_mask(V2) == mask
    assert encode_partial(V2, be, mask) == wire


@SETTINGS
@given(data=st.data(), be=byte_orders)
def test_partial_into_existing_value(data, be):
    """``decode_partial(into=...)`` updates only the selected fields of an existing Value."""
    T = data.draw(struct_types(4), "T")
    base = data.draw(values(T), "base")
    upd = data.draw(values(T), "upd")
    mask = data.draw(masks(T), "mask")
    wire = encode_partial(upd, be, mask)
    target = Value(clone=base)
    V2, end = decode_partial(T, wire, 0, be, {}, into=target)
    assert end == len(wire)
    assert V2 is target
    assert value_mask(target) == mask
    sel = covered(T, mask)
    for i, (path, _t, _) in enumerate(layout(T)):
        want = stored(upd)[i] if i in sel else stored(base)[i]
        assert same(stored(target)[i], want), path


# -- typed values (FieldDesc + full value) -------------------------------------------------------


@SETTINGS
@given(data=st.data(), be=byte_orders, pre=garbage, post=garbage)
def test_typed_value_roundtrip(data, be, pre, post):
    if data.draw(st.booleans(), "structure"):
        V = data.draw(typed_values(), "V")
        wire = encode_typed_value(V, be)
        got, end = decode_typed_value(pre + wire + post, len(pre), be, {})
        assert isinstance(got, Value)
        _assert_same_value(got, V)
    else:
        # a bare field type: take a random field's stored value as the payload
        t = data.draw(field_types(4).filter(lambda t: t.code != "S"), "t")
        holder = data.draw(values(Type([("x", t)])), "holder")
        item = (t, stored(holder)[1])
        wire = encode_typed_value(item, be)
        got, end = decode_typed_value(pre + wire + post, len(pre), be, {})
        assert isinstance(got, tuple)
        assert got[0] == t
        assert same(got[1], item[1])
    assert end == len(pre) + len(wire)
    assert encode_typed_value(got, be) == wire
    assert len(encode_typed_value(got, not be)) == len(wire)


@SETTINGS
@given(data=st.data(), be=byte_orders, pre=garbage, post=garbage)
def test_field_value_roundtrip(data, be, pre, post):
    """Full value of a field of any type (a sub-structure, union, any, struct[] ...), no FieldDesc."""
    t = data.draw(field_types(4), "t")
    holder = data.draw(values(Type([("x", t)])), "holder")
    v = holder.x if t.code == "S" else stored(holder)[1]  # a sub-structure view, or the stored item
    wire = encode_field_value(t, v, be)
    got, end = decode_field_value(t, pre + wire + post, len(pre), be, {})
    assert end == len(pre) + len(wire)
    assert same(got, v)
    assert encode_field_value(t, got, be) == wire
    assert len(encode_field_value(t, v, not be)) == len(wire)


def test_null_typed_value():
    for be in (False, True):
        assert encode_typed_value(None, be) == b"\xff"
        assert decode_typed_value(b"\xff\x01", 0, be, {}) == (None, 1)


# -- introspection cache (pvAccessCPP style) -----------------------------------------------------


def _is_cacheable(T: Type) -> bool:
    """pvAccessCPP caches every type but scalars and scalar arrays (§3.3)."""
    return T.code in ("S", "U", "aS", "aU", "v", "av")


@SETTINGS
@given(
    pool=st.lists(st.one_of(struct_types(4), field_types(4)), min_size=1, max_size=4),
    picks=st.lists(st.integers(0, 3), min_size=1, max_size=8),
    be=byte_orders,
)
def test_send_type_cache_roundtrip(pool, picks, be):
    """Several messages through one SendTypeCache and one receive cache: every message decodes to
    the sent type, and a type sent before is exactly ``fe key``."""
    tx = SendTypeCache()
    rx: dict = {}
    order = "big" if be else "little"
    for p in picks:
        T = pool[p % len(pool)]
        known = tx.keys.get(T)  # sent before, alone or nested in another type
        msg = encode_type(T, be, tx)
        if known is not None:
            assert msg == b"\xfe" + known.to_bytes(2, order)
        elif _is_cacheable(T):
            assert msg[:3] == b"\xfd" + tx.keys[T].to_bytes(2, order)
        else:
            assert msg == encode_type(T, be)  # plain scalars are never cached
        T2, end = decode_type(msg + b"\x00", 0, be, rx)
        assert end == len(msg)
        assert T2 == T
    # the receive registry now holds exactly what the sender registered
    assert set(rx) == set(tx.keys.values())
    for T, k in tx.keys.items():
        assert rx[k] == T


@SETTINGS
@given(vals=st.lists(typed_values(4), min_size=1, max_size=4), repeat=st.booleans(), be=byte_orders)
def test_send_type_cache_typed_values(vals, repeat, be):
    """Typed values (types inside ``any`` contents included) sent through a shared SendTypeCache
    decode with a shared receive cache; resending a value sends its type as ``fe key``."""
    if repeat:
        vals = vals + vals
    tx = SendTypeCache()
    rx: dict = {}
    first: dict[int, int] = {}
    for k, V in enumerate(vals):
        msg = encode_typed_value(V, be, tx)
        got, end = decode_typed_value(msg + b"\xee", 0, be, rx)
        assert end == len(msg)
        _assert_same_value(got, V)
        first.setdefault(id(V), len(msg))
        if k >= len(vals) // 2 and repeat:
            assert msg[0] == 0xFE and len(msg) <= first[id(V)]
    # a full value whose any contents use the cache decodes with the same registry
    for V in vals:
        msg = encode_full(V, be, tx)
        got, end = decode_full(V.type(), msg, 0, be, rx)
        assert end == len(msg)
        _assert_same_value(got, V)


# -- Status --------------------------------------------------------------------------------------


@SETTINGS
@given(code=st.integers(0, 3), msg=strings, trace=strings, be=byte_orders, pre=garbage, post=garbage)
def test_status_roundtrip(code, msg, trace, be, pre, post):
    st_ = Status(code, msg, trace)
    wire = encode_status(st_, be)
    got, end = decode_status(pre + wire + post, len(pre), be)
    assert end == len(pre) + len(wire)
    assert got == st_
    assert got.ok == (code <= 1)
    assert len(encode_status(st_, not be)) == len(wire)
    if (code, msg, trace) == (0, "", ""):
        assert wire == b"\xff"
    else:
        assert wire[0] == code


# -- byte order ----------------------------------------------------------------------------------


@SETTINGS
@given(V=typed_values())
def test_byte_orders_differ_only_in_multibyte_numbers(V):
    """LE and BE encodings have the same length; a value made only of single-byte items
    (bools, int8, strings) is even byte-identical in both orders."""
    le, be = encode_full(V, False), encode_full(V, True)
    assert len(le) == len(be)
    T = V.type()
    single = all(t.code in ("?", "b", "B", "s", "as", "a?", "ab", "aB", "S") for _, t, _ in layout(T))
    if single and all(n < 254 for n in _sizes(stored(V))):
        assert le == be


def _sizes(items):
    """Every Size the encoding of these stored items contains (string and array lengths)."""
    for x in items:
        if isinstance(x, str):
            yield len(x.encode())
        elif isinstance(x, (list, np.ndarray)):
            yield len(x)
            if isinstance(x, list):
                yield from _sizes(x)


def test_struct_float_is_message_order():
    """Anchor for the properties above: a self-consistent codec could still swap the orders."""
    V = Type([("d", "d")])({"d": 1.5})
    assert encode_full(V, False) == struct.pack("<d", 1.5)
    assert encode_full(V, True) == struct.pack(">d", 1.5)


@pytest.mark.parametrize("be", [False, True])
def test_any_array_null_elements_roundtrip(be):
    """``any[]`` null elements cannot be assigned through the API, so build them from bytes."""
    T = Type([("a", "av")])
    u32 = (0x7B).to_bytes(4, "big" if be else "little")
    wire = b"\x03\x01\x26" + u32 + b"\x00\x01\x60\x02hi"
    V, end = decode_full(T, wire, 0, be, {})
    assert end == len(wire)
    assert V.a == [0x7B, None, "hi"]
    assert encode_full(V, be) == wire
