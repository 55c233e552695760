"""pvapy (pvAccessCPP) clients against our PVA server.

Why this file exists: pvAccessCPP is the other C++ PVA implementation, and it exercises what
p4p's client never sends: it caches every non-scalar type it sends (``0xFD``/``0xFE``
introspection-registry entries in pvRequests, put values and RPC arguments), segments large
messages, asks for ``field(value)`` by default, and uses GET_FIELD for introspection.  A
server that only talks to pvxs can still fail every one of these.

The pvapy client runs in one spawned worker process (:class:`support.server.PeerProcess`):
pvapy's blocking calls hold the GIL while they wait, so in the server's own process they
would deadlock against its loop thread.  The ``w_*`` functions below run in that worker; the
worker's single client context (and so its connection and type cache) lasts for the module,
and pvAccessCPP reads EPICS_PVA_* from the environment the worker is started with.
"""

from __future__ import annotations

import queue
import time
import types

import numpy as np
import pvaccess as pva
import pytest

from support.server import Mailbox, PeerError, PeerProcess, capva_only, load_impl, serve

T = 5.0
BIG = 1_000_000

pytestmark = pytest.mark.timeout(60)


# --------------------------------------------------------------------------- worker side (pvapy)

_CHANNELS: dict = {}
_MONITORS: dict = {}


def _chan(name, timeout=T):
    ch = _CHANNELS.get(name)
    if ch is None:
        ch = _CHANNELS[name] = pva.Channel(name)
    ch.setTimeout(timeout)
    return ch


def _spec(s):
    """A structure spec with type names ('DOUBLE') -> pvaccess type constants."""
    if isinstance(s, dict):
        return {k: _spec(v) for k, v in s.items()}
    if isinstance(s, list):
        return [_spec(v) for v in s]
    return getattr(pva, s)


def _plain(d):
    """An introspection dict with pvaccess ScalarType members -> type names."""
    if isinstance(d, dict):
        return {k: _plain(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_plain(v) for v in d]
    return str(d).rsplit(".", 1)[-1]


def w_get(name, request=None, timeout=T):
    ch = _chan(name, timeout)
    return (ch.get() if request is None else ch.get(request)).toDict()


def w_get_value(name, timeout=T):
    return _chan(name, timeout).get()["value"]


def w_get_union(name, field="value"):
    """(selected member dict) of a union/any field, from a full get."""
    return _chan(name).get("field()")[field][0]


def w_put(name, method, value, timeout=T):
    getattr(_chan(name, timeout), method)(value)


def w_put_struct(name, spec, value, request=None):
    V = pva.PvObject(_spec(spec), value)
    ch = _chan(name)
    if request is None:
        ch.put(V)
    else:
        ch.put(V, request)


def w_introspect(name):
    return _plain(_chan(name).getIntrospectionDict())


def w_rpc(name, query, timeout=T):
    types_ = {k: (pva.DOUBLE if isinstance(v, float) else pva.BOOLEAN) for k, v in query.items()}
    U = pva.PvObject({"scheme": pva.STRING, "path": pva.STRING, "query": types_}, "epics:nt/NTURI:1.0")
    U.set({"scheme": "pva", "path": name, "query": query})
    return pva.RpcClient(name).invoke(U, timeout).toDict()


def w_mon_start(key, name, request="field(value)"):
    Q = _MONITORS[key] = queue.Queue()
    ch = pva.Channel(name)  # a channel per monitor: pvapy allows one monitor per Channel
    _CHANNELS[("mon", key)] = ch
    ch.subscribe(key, lambda V: Q.put(V["value"]))
    ch.startMonitor(request)


def w_mon_until(key, last, timeout=10.0):
    """Updates of monitor ``key`` up to and including the value ``last``."""
    Q = _MONITORS[key]
    got = []
    deadline = time.monotonic() + timeout
    while not got or got[-1] != last:
        got.append(Q.get(timeout=max(0.01, deadline - time.monotonic())))
    return got


def w_mon_stop(key):
    ch = _CHANNELS.pop(("mon", key))
    ch.stopMonitor()
    ch.unsubscribe(key)
    _MONITORS.pop(key, None)


# --------------------------------------------------------------------------- test side (server)


@pytest.fixture(scope="module")
def impl():
    return load_impl()


@pytest.fixture(scope="module")
def srv(impl):
    nt = impl.nt
    boxes: dict = {}
    pvs = {}

    def add(name, handler=True, **kws):
        boxes[name] = Mailbox()
        pvs[name] = impl.SharedPV(handler=boxes[name] if handler else None, **kws)

    add("py:d", nt=nt.NTScalar("d"), initial=1.5)
    add("py:i", nt=nt.NTScalar("i"), initial=-7)
    add("py:s", nt=nt.NTScalar("s"), initial="hello")
    add("py:b", nt=nt.NTScalar("?"), initial=True)
    add("py:ad", nt=nt.NTScalar("ad"), initial=[1.0, 2.0, 3.0])
    add("py:ai", nt=nt.NTScalar("ai"), initial=[1, 2, 3])
    add("py:as", nt=nt.NTScalar("as"), initial=["x", "y"])
    add("py:big", nt=nt.NTScalar("ad"), initial=np.arange(BIG, dtype="f8"))
    add("py:bigput", nt=nt.NTScalar("ad"), initial=[0.0])
    add("py:enum", nt=nt.NTEnum(), initial={"index": 1, "choices": ["a", "b", "c"]})
    add("py:table", nt=nt.NTTable([("a", "i"), ("b", "s")]), initial=[{"a": 1, "b": "x"}, {"a": 2, "b": "y"}])
    img = np.arange(12, dtype="u2").reshape(3, 4).view(nt.NTNDArray.ntndarray)
    img.attrib = {"ColorMode": 0, "Gain": 2.5}
    add("py:nd", nt=nt.NTNDArray(), initial=img)
    UT = impl.Type([("value", ("U", None, [("i", "i"), ("s", "s")])), ("label", "s")], id="test:union:1.0")
    add("py:union", initial=impl.Value(UT, {"value": ("i", 3), "label": "u"}))
    AT = impl.Type([("value", "v")], id="test:any:1.0")
    add("py:any", initial=impl.Value(AT, {"value": 2.5}))
    NT_ = impl.Type(
        [("a", ("S", "a_t", [("b", ("S", None, [("c", "i"), ("d", "s")]))])), ("f", "l")],
        id="test:nested:1.0",
    )
    add("py:nested", initial=impl.Value(NT_, {"a": {"b": {"c": 1, "d": "dee"}}, "f": 5}))
    add("py:mon", nt=nt.NTScalar("i"), initial=0)
    add("py:ro", nt=nt.NTScalar("d"), initial=1.0, handler=False)

    class Raises:
        def put(self, pv, op):
            raise ValueError("pvapy-put-boom")

    pvs["py:raise"] = impl.SharedPV(nt=nt.NTScalar("d"), initial=1.0, handler=Raises())

    def calc(pv, op):
        q = op.value().query
        if "oops" in q:
            op.done(error="rpc oops requested")
        else:
            op.done(nt.NTScalar("d").wrap(float(q.a) + float(q.b)))

    pvs["py:calc"] = impl.SharedPV(nt=nt.NTScalar("d"), initial=0.0)
    pvs["py:calc"].rpc(calc)

    with serve(impl, pvs) as S:
        conf = S.conf()
        udp = conf["EPICS_PVAS_BROADCAST_PORT"]
        peer = PeerProcess(
            {
                "EPICS_PVA_ADDR_LIST": f"127.0.0.1:{udp}",
                "EPICS_PVA_AUTO_ADDR_LIST": "NO",
                "EPICS_PVA_BROADCAST_PORT": udp,
            }
        )
        try:
            yield types.SimpleNamespace(S=S, pvs=pvs, boxes=boxes, impl=impl, call=peer.call)
        finally:
            peer.close()


def _put_seen(srv, name):
    V, _req, _op = srv.boxes[name].ops.get(timeout=T)
    return V


# --------------------------------------------------------------------------- scalars and arrays


@pytest.mark.parametrize(
    "name, initial, new, method",
    [
        ("py:d", 1.5, -2.25, "putDouble"),
        ("py:i", -7, 123456, "putInt"),
        ("py:s", "hello", "w\u00f6rld", "putString"),
        ("py:b", True, False, "putBoolean"),
    ],
)
def test_scalar_get_put(srv, name, initial, new, method):
    assert srv.call(w_get_value, name) == initial
    full = srv.call(w_get, name, "field()")
    assert set(full) >= {"value", "alarm", "timeStamp"}
    srv.call(w_put, name, method, new)
    assert _put_seen(srv, name) == new
    assert srv.call(w_get_value, name) == new
    # the generic put (pvapy converts; it cannot parse bools from "True")
    srv.call(w_put, name, "putBoolean" if isinstance(initial, bool) else "put", initial)
    assert _put_seen(srv, name) == initial
    assert srv.call(w_get, name, "field(value)")["value"] == initial


def test_scalar_put_structure_with_mask(srv):
    srv.call(w_put_struct, "py:d", {"value": "DOUBLE"}, {"value": 7.0}, "field(value)")
    V = _put_seen(srv, "py:d")
    assert V == 7.0
    assert "value" in V.raw.changedSet()
    assert srv.call(w_get_value, "py:d") == 7.0
    # the same structure type again: pvAccessCPP now sends its type as a cache reference
    for x in (8.0, 9.0):
        srv.call(w_put_struct, "py:d", {"value": "DOUBLE"}, {"value": x}, "field(value)")
        assert _put_seen(srv, "py:d") == x
    srv.call(w_put, "py:d", "put", 1.5)
    _put_seen(srv, "py:d")


@pytest.mark.parametrize(
    "name, initial, new",
    [
        ("py:ad", [1.0, 2.0, 3.0], [0.5, -0.5]),
        ("py:ai", [1, 2, 3], list(range(-100, 100))),
        ("py:as", ["x", "y"], ["p", "", "q" * 300]),
    ],
)
def test_array_get_put(srv, name, initial, new):
    assert list(srv.call(w_get_value, name)) == initial
    srv.call(w_put, name, "putScalarArray", new)
    assert list(_put_seen(srv, name)) == new
    assert list(srv.call(w_get_value, name)) == new
    srv.call(w_put, name, "putScalarArray", initial)
    _put_seen(srv, name)


def test_big_array_get(srv):
    """A 1M-element double array (8 MB) in one GET reply."""
    t0 = time.monotonic()
    V = srv.call(w_get_value, "py:big", 30.0, timeout=45)
    dt = time.monotonic() - t0
    assert len(V) == BIG
    np.testing.assert_array_equal(np.asarray(V), np.arange(BIG, dtype="f8"))
    assert dt < 20, f"1M-element get took {dt:.1f}s"


def test_big_array_put_segmented(srv):
    """pvAccessCPP sends a large put as several segments: the server must reassemble them."""
    data = np.linspace(0, 1, BIG)
    srv.call(w_put, "py:bigput", "putScalarArray", data.tolist(), 30.0, timeout=45)
    V = _put_seen(srv, "py:bigput")
    assert len(V) == BIG
    np.testing.assert_array_equal(np.asarray(V), data)
    np.testing.assert_array_equal(np.asarray(srv.call(w_get_value, "py:bigput", 30.0, timeout=45)), data)


# --------------------------------------------------------------------------- NT types and structures


def test_enum(srv):
    d = srv.call(w_get, "py:enum", "field()")
    assert d["value"] == {"index": 1, "choices": ["a", "b", "c"]}
    srv.call(w_put_struct, "py:enum", {"value": {"index": "INT"}}, {"value": {"index": 2}})
    assert _put_seen(srv, "py:enum").raw["value.index"] == 2
    srv.call(w_put, "py:enum", "putInt", 0)
    assert _put_seen(srv, "py:enum").raw["value.index"] == 0
    srv.call(w_put, "py:enum", "putString", "c")
    assert _put_seen(srv, "py:enum").raw["value.index"] == 2
    assert srv.call(w_get, "py:enum")["value"]["index"] == 2


def test_table(srv):
    d = srv.call(w_get, "py:table", "field()")
    assert list(d["labels"]) == ["a", "b"]
    assert list(d["value"]["a"]) == [1, 2]
    assert list(d["value"]["b"]) == ["x", "y"]


def test_ndarray(srv):
    d = srv.call(w_get, "py:nd", "field()")
    u = srv.call(w_get_union, "py:nd")
    np.testing.assert_array_equal(u["ushortValue"], np.arange(12, dtype="u2"))
    assert [x["size"] for x in d["dimension"]] == [4, 3]
    names = {a["name"] for a in d["attribute"]}
    assert {"ColorMode", "Gain"} <= names


def test_union_and_any(srv):
    assert srv.call(w_get_union, "py:union") == {"i": 3}
    assert srv.call(w_get, "py:union", "field()")["label"] == "u"
    assert srv.call(w_get_union, "py:any") == {"value": 2.5}


def test_nested_get_put(srv):
    d = srv.call(w_get, "py:nested", "field()")
    assert d["a"]["b"] == {"c": 1, "d": "dee"}
    assert d["f"] == 5
    srv.call(w_put_struct, "py:nested", {"a": {"b": {"c": "INT"}}}, {"a": {"b": {"c": 42}}}, "field(a.b.c)")
    V = _put_seen(srv, "py:nested")
    assert V.a.b.c == 42
    d = srv.call(w_get, "py:nested", "field()")
    assert d["a"]["b"] == {"c": 42, "d": "dee"}


def test_get_field_introspection(srv):
    """GET_FIELD (pvAccessCPP's getIntrospectionDict), on NT and custom types."""
    t = srv.call(w_introspect, "py:d")
    assert t["value"] == "DOUBLE"
    assert set(t["alarm"]) == {"severity", "status", "message"}
    n = srv.call(w_introspect, "py:nested")
    assert n["a"]["b"] == {"c": "INT", "d": "STRING"}
    assert n["f"] == "LONG"
    e = srv.call(w_introspect, "py:enum")
    assert e["value"] == {"index": "INT", "choices": ["STRING"]}


def test_timestamp_is_set(srv):
    capva_only(srv.impl, "values opened without timeStamp get the current time")
    d = srv.call(w_get, "py:i", "field(timeStamp)")
    assert abs(d["timeStamp"]["secondsPastEpoch"] - time.time()) < 3600


# --------------------------------------------------------------------------- monitors


def test_monitor(srv):
    pv = srv.pvs["py:mon"]
    srv.call(w_mon_start, "m1", "py:mon")
    try:
        first = srv.call(w_mon_until, "m1", int(pv.current()))[-1]
        for i in range(1, 51):
            pv.post(first + i)
        got = srv.call(w_mon_until, "m1", first + 50)
        assert got == sorted(got)
    finally:
        srv.call(w_mon_stop, "m1")


def test_two_subscribers(srv):
    pv = srv.pvs["py:mon"]
    srv.call(w_mon_start, "a", "py:mon", "field(value,alarm)")
    srv.call(w_mon_start, "b", "py:mon", "record[queueSize=4]field(value)")
    try:
        cur = int(pv.current())
        srv.call(w_mon_until, "a", cur)
        srv.call(w_mon_until, "b", cur)
        pv.post(1000)
        assert srv.call(w_mon_until, "a", 1000)[-1] == 1000
        assert srv.call(w_mon_until, "b", 1000)[-1] == 1000
    finally:
        srv.call(w_mon_stop, "a")
        srv.call(w_mon_stop, "b")


# --------------------------------------------------------------------------- rpc and errors


def test_rpc(srv):
    assert srv.call(w_rpc, "py:calc", {"a": 1.0, "b": 2.5})["value"] == 3.5
    # the same argument type twice more: pvAccessCPP sends it as a type-cache reference
    assert srv.call(w_rpc, "py:calc", {"a": 10.0, "b": 20.0})["value"] == 30.0
    assert srv.call(w_rpc, "py:calc", {"a": -1.0, "b": 1.0})["value"] == 0.0


def test_rpc_error(srv):
    with pytest.raises(PeerError, match="rpc oops requested"):
        srv.call(w_rpc, "py:calc", {"oops": True})
    assert srv.call(w_rpc, "py:calc", {"a": 1.0, "b": 1.0})["value"] == 2.0


def test_put_refused_without_handler(srv):
    with pytest.raises(PeerError, match="PvaException"):
        srv.call(w_put, "py:ro", "put", 2.0)
    assert srv.call(w_get_value, "py:ro") == 1.0


def test_put_handler_raises(srv):
    with pytest.raises(PeerError, match="pvapy-put-boom"):
        srv.call(w_put, "py:raise", "put", 2.0)
    assert srv.call(w_get_value, "py:raise") == 1.0


def test_missing_channel_times_out(srv):
    with pytest.raises(PeerError, match="PvaException"):
        srv.call(w_get_value, "py:does-not-exist", 1.0)
