"""capva's PVA client (thread and asyncio Contexts) against p4p's server (pvxs).

Why this file exists: pvxs is the reference PVA server, and p4p's client API is the one
capva's client copies.  Every client operation (get, put in each value form, process=/wait=,
get=False, list forms, rpc, monitor with pipeline/queueSize/field masks, info, disconnect)
and every type family (all scalars and arrays, strings, NTEnum, NTTable, NTNDArray, unions,
any, nested structures, a 10 MB array) is driven here over the wire against a real pvxs
server, with both flavours of capva's client (the ``flavour`` parameter: the asyncio
Context runs through :class:`support.client.AioContext`).  The errors (remote errors,
missing handlers, timeouts) and cancellation of asyncio operations are checked too.

The server is ``p4p.server.Server(isolate=True)`` (127.0.0.1, random ports) in this
process, serving :class:`p4p.server.thread.SharedPV` objects from one StaticProvider;
each test adds its own PVs (unique names) and removes them afterwards.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import types
from typing import Any

import numpy as np
import p4p
import pytest
from p4p.nt import NTEnum, NTNDArray, NTScalar, NTTable
from p4p.server import Server, StaticProvider
from p4p.server.thread import SharedPV

import capva
from capva import nt as cnt
from capva.client import Cancelled, Disconnected, Finished, RemoteError
from capva.client import asyncio as caio
from capva.client import thread as cthread
from support.client import FLAVOURS, Updates, open_context
from support.server import Mailbox

pytestmark = pytest.mark.timeout(60)

_names = itertools.count()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server():
    prov = StaticProvider("capva-client-tests")
    S = Server(providers=[prov], isolate=True)
    try:
        yield types.SimpleNamespace(S=S, prov=prov, conf=S.conf())
    finally:
        S.stop()
        prov.close()


@pytest.fixture
def pvs(server):
    """``add(pv, stem)`` serves ``pv`` under a fresh name (returned); removed afterwards."""
    added: list[tuple[str, Any]] = []

    def add(pv: Any, stem: str = "pv") -> str:
        name = f"cli:{stem}:{next(_names)}"
        server.prov.add(name, pv)
        added.append((name, pv))
        return name

    try:
        yield add
    finally:
        for name, pv in added:
            server.prov.remove(name)
            pv.close()


@pytest.fixture(params=FLAVOURS)
def ctxt(request, server):
    with open_context(request.param, server.conf) as C:
        yield C


@pytest.fixture
def raw_ctxt(server):
    """A thread Context that does not unwrap (``nt=False``): results are capva Values."""
    with open_context("thread", server.conf, nt=False) as C:
        yield C


def mailbox_pv(**kws: Any) -> tuple[SharedPV, Mailbox]:
    box = Mailbox()
    return SharedPV(handler=box, **kws), box


class Hanging:
    """A put handler that never completes: it reports the op, then its cancellation."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.cancelled = threading.Event()
        self.ops: list = []

    def put(self, pv: Any, op: Any) -> None:
        self.ops.append(op)  # keep the op alive (dropping it would complete it)
        op.onCancel(self.cancelled.set)
        self.started.set()


# --------------------------------------------------------------------------- scalars and arrays

SCALARS = {
    "?": True,
    "b": -100,
    "B": 200,
    "h": -30000,
    "H": 60000,
    "i": -(2**31) + 1,
    "I": 2**32 - 1,
    "l": -(2**63) + 1,
    "L": 2**64 - 1,
    "f": 1.5,
    "d": 1e300,
    "s": "héllo wörld ✓",
}
UNWRAPPED = {"?": cnt.ntbool, "f": cnt.ntfloat, "d": cnt.ntfloat, "s": cnt.ntstr}
DTYPES = {
    "?": np.bool_,
    "b": np.int8,
    "B": np.uint8,
    "h": np.int16,
    "H": np.uint16,
    "i": np.int32,
    "I": np.uint32,
    "l": np.int64,
    "L": np.uint64,
    "f": np.float32,
    "d": np.float64,
}


@pytest.mark.parametrize("code", list(SCALARS))
def test_scalar_get_put(ctxt, pvs, code):
    initial = "" if code == "s" else 0
    pv, box = mailbox_pv(nt=NTScalar(code), initial=initial)
    name = pvs(pv, "s" + code)
    v0 = ctxt.get(name)
    assert isinstance(v0, UNWRAPPED.get(code, cnt.ntint))
    assert v0 == initial
    ctxt.put(name, SCALARS[code])
    V, _req, _op = box.ops.get(timeout=5)
    assert V == SCALARS[code]
    v = ctxt.get(name)
    assert v == SCALARS[code]
    assert isinstance(v, UNWRAPPED.get(code, cnt.ntint))
    assert v.raw.getID() == "epics:nt/NTScalar:1.0"
    assert v.severity == 0


@pytest.mark.parametrize("code", list(DTYPES) + ["s"])
def test_array_get_put(ctxt, pvs, code):
    if code == "s":
        data: Any = ["a", "", "längere zeichenkette"]
    elif code == "?":
        data = np.array([True, False, True])
    else:
        info = np.iinfo(DTYPES[code]) if np.issubdtype(DTYPES[code], np.integer) else None
        data = np.array([info.min, 0, info.max] if info else [-1.5, 0.0, 2.25], dtype=DTYPES[code])
    pv, box = mailbox_pv(nt=NTScalar("a" + code), initial=[])
    name = pvs(pv, "a" + code)
    assert len(ctxt.get(name)) == 0
    ctxt.put(name, data)
    box.ops.get(timeout=5)
    v = ctxt.get(name)
    assert v.raw.getID() == "epics:nt/NTScalarArray:1.0"
    if code == "s":
        assert isinstance(v, cnt.ntstringarray)
        assert list(v) == data
    else:
        assert isinstance(v, cnt.ntnumericarray)
        assert v.dtype == np.dtype(DTYPES[code])
        np.testing.assert_array_equal(v, data)
    assert list(pv.current().raw.value) == list(data)


def test_big_array(ctxt, pvs):
    """10 MiB of doubles both ways (many TCP segments; pvxs sends them unsegmented)."""
    big = np.arange(10 * 2**20 // 8, dtype=np.float64)
    pv, box = mailbox_pv(nt=NTScalar("ad"), initial=big)
    name = pvs(pv, "big")
    v = ctxt.get(name, timeout=30)
    assert v.shape == big.shape
    np.testing.assert_array_equal(v, big)
    ctxt.put(name, big[::-1], timeout=30)
    box.ops.get(timeout=5)
    np.testing.assert_array_equal(pv.current(), big[::-1])


# --------------------------------------------------------------------------- put value forms


def test_put_forms(ctxt, pvs):
    pv, box = mailbox_pv(nt=NTScalar("d", display=True), initial=1.0)
    name = pvs(pv, "forms")

    def put_and_check(value: Any, expect: float, **kws: Any) -> Any:
        ctxt.put(name, value, **kws)
        V, req, _op = box.ops.get(timeout=5)
        assert pv.current() == expect
        return V, req

    put_and_check(2.0, 2.0)  # plain value, through NTScalar.assign
    put_and_check(3, 3.0)  # int into a double
    put_and_check({"value": 4.0, "display.units": "mm"}, 4.0)  # dict, with a dotted key
    assert pv.current().raw.display.units == "mm"
    put_and_check('{"value": 5.5}', 5.5)  # JSON text

    def builder(V: capva.Value) -> None:
        assert isinstance(V, capva.Value)
        V.value = 6.5
        V["alarm.message"] = "built"

    put_and_check(builder, 6.5)
    assert pv.current().raw.alarm.message == "built"

    raw = ctxt.get(name).raw  # a Value of the PV's own type
    assert isinstance(raw, capva.Value)
    raw.value = 7.5
    put_and_check(raw, 7.5)

    # a Value built from scratch with capva's NT helper
    put_and_check(cnt.NTScalar("d").wrap(8.5), 8.5)


def test_put_value_errors(ctxt, pvs):
    pv, box = mailbox_pv(nt=NTScalar("d"), initial=1.0)
    name = pvs(pv, "badput")
    with pytest.raises(ValueError):
        ctxt.put(name, '{"value": ')  # not JSON
    with pytest.raises((ValueError, TypeError)):
        ctxt.put(name, "not a number")
    with pytest.raises((ValueError, KeyError, AttributeError)):
        ctxt.put(name, {"nosuchfield": 1})
    assert box.ops.empty()
    ctxt.put(name, 2.0)  # the channel still works
    assert ctxt.get(name) == 2.0


def test_put_process_wait(ctxt, pvs):
    pv, box = mailbox_pv(nt=NTScalar("i"), initial=0)
    name = pvs(pv, "proc")
    ctxt.put(name, 1, process="true", wait=True)
    _V, req, _op = box.ops.get(timeout=5)
    opts = req.todict()["record"]["_options"]
    assert opts == {"block": "true", "process": "true"}
    ctxt.put(name, 2, wait=False)
    _V, req, _op = box.ops.get(timeout=5)
    assert req.todict()["record"]["_options"] == {"block": "false", "process": "passive"}
    ctxt.put(name, 3, request="record[process=false]")
    _V, req, _op = box.ops.get(timeout=5)
    assert req.todict()["record"]["_options"]["process"] == "false"
    with pytest.raises(ValueError):
        ctxt.put(name, 4, request="record[process=true]", process="true")
    assert pv.current() == 3


def test_put_get_false(ctxt, pvs):
    """get=False: the builder sees an empty Value of the PV's type (no fetch first)."""
    pv, box = mailbox_pv(nt=NTScalar("d"), initial=1.0)
    name = pvs(pv, "nofetch")
    seen: list = []

    def builder(V: capva.Value) -> None:
        seen.append(V.value)
        V.value = V.value + 10.0

    ctxt.put(name, builder, get=True)
    box.ops.get(timeout=5)
    assert seen == [1.0] and pv.current() == 11.0
    ctxt.put(name, builder, get=False)
    box.ops.get(timeout=5)
    assert seen[1] == 0.0 and pv.current() == 10.0


def test_list_forms(ctxt, pvs):
    names = []
    boxes = []
    for i in range(4):
        pv, box = mailbox_pv(nt=NTScalar("i"), initial=i)
        names.append(pvs(pv, "list"))
        boxes.append(box)
    assert ctxt.get(names) == [0, 1, 2, 3]
    assert ctxt.put(names, [10, 11, 12, 13]) == [None] * 4
    assert ctxt.get(names, request=["field(value)"] * 4) == [10, 11, 12, 13]
    missing = "cli:missing:" + str(next(_names))
    got = ctxt.get(names[:2] + [missing], timeout=1.0, throw=False)
    assert got[:2] == [10, 11]
    assert isinstance(got[2], TimeoutError)
    res = ctxt.put([names[0], missing], [20, 21], timeout=1.0, throw=False)
    assert res[0] is None and isinstance(res[1], TimeoutError)
    assert ctxt.get(names[0]) == 20
    with pytest.raises(TimeoutError):
        ctxt.get([names[0], missing], timeout=1.0)
    # the names of a list run in parallel: three timeouts cost one timeout, not three
    t0 = time.monotonic()
    got = ctxt.get([missing + ":a", missing + ":b", missing + ":c"], timeout=1.0, throw=False)
    assert all(isinstance(e, TimeoutError) for e in got)
    assert time.monotonic() - t0 < 2.5


# --------------------------------------------------------------------------- NT families


def test_ntenum(ctxt, pvs):
    pv, box = mailbox_pv(nt=NTEnum(), initial={"index": 1, "choices": ["zero", "one", "two"]})
    name = pvs(pv, "enum")
    v = ctxt.get(name)
    assert isinstance(v, cnt.ntenum)
    assert v == 1 and v.choice == "one"
    ctxt.put(name, "two")  # by name (needs the fetched choices)
    box.ops.get(timeout=5)
    assert pv.current().raw.value.index == 2
    assert ctxt.get(name).choice == "two"
    ctxt.put(name, 0)  # by index
    box.ops.get(timeout=5)
    assert ctxt.get(name).choice == "zero"
    ctxt.put(name, 1, get=False)  # an index needs no choices
    box.ops.get(timeout=5)
    assert ctxt.get(name) == 1
    with pytest.raises(ValueError):
        ctxt.put(name, "three")
    assert pv.current().raw.value.choices == ["zero", "one", "two"]


def test_nttable(pvs, server):
    rows = [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    pv, box = mailbox_pv(nt=NTTable([("a", "i"), ("b", "s")]), initial=rows)
    name = pvs(pv, "table")
    with open_context("thread", server.conf) as C:
        V = C.get(name)  # NTTable is not in the default unwrappers: a Value
        assert isinstance(V, capva.Value) and V.getID() == "epics:nt/NTTable:1.0"
        assert V.labels == ["a", "b"]
        assert V.value.a.tolist() == [1, 2] and V.value.b == ["x", "y"]
        C.put(name, {"value.a": [3, 4, 5], "value.b": ["p", "q", "r"]})
        box.ops.get(timeout=5)
    with open_context("asyncio", server.conf, nt={"epics:nt/NTTable:1.0": cnt.NTTable}) as A:
        got = A.get(name)
        assert [dict(r) for r in got] == [{"a": 3, "b": "p"}, {"a": 4, "b": "q"}, {"a": 5, "b": "r"}]


def test_ntndarray(ctxt, pvs):
    img = np.arange(12, dtype=np.uint16).reshape(3, 4)
    pv, box = mailbox_pv(nt=NTNDArray(), initial=img)
    name = pvs(pv, "nd")
    v = ctxt.get(name)
    assert isinstance(v, cnt.ntndarray)
    assert v.shape == (3, 4) and v.dtype == np.uint16
    np.testing.assert_array_equal(v, img)
    assert v.raw.getID().startswith("epics:nt/NTNDArray:1.")
    new = np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)
    ctxt.put(name, new)
    box.ops.get(timeout=5)
    v = ctxt.get(name)
    assert v.shape == (2, 3) and v.dtype == np.float32
    np.testing.assert_array_equal(v, new)


UNION_T = p4p.Type(
    [
        ("u", ("U", None, [("i", "i"), ("s", "s"), ("a", "ad")])),
        ("any", "v"),
        ("ua", ("aU", None, [("i", "i"), ("s", "s")])),
    ]
)


def test_union_and_any(ctxt, pvs):
    pv, box = mailbox_pv(initial=p4p.Value(UNION_T, {"u": ("s", "start"), "any": 1.5}))
    name = pvs(pv, "union")
    V = ctxt.get(name)
    assert isinstance(V, capva.Value)
    assert V.u == "start" and V.any == 1.5
    ctxt.put(name, {"u": ("i", 42)})
    box.ops.get(timeout=5)
    cur = pv.current()
    assert cur.u == 42
    ctxt.put(name, {"u": ("a", np.array([1.0, 2.0])), "any": "text"})
    box.ops.get(timeout=5)
    cur = pv.current()
    assert cur.u.tolist() == [1.0, 2.0] and cur.any == "text"
    ctxt.put(name, {"any": np.array([1, 2, 3], dtype=np.int16)})
    box.ops.get(timeout=5)
    assert pv.current().any.dtype == np.int16
    ctxt.put(name, {"ua": [("i", 1), ("s", "two")]})
    box.ops.get(timeout=5)
    assert pv.current().ua == [1, "two"]
    V = ctxt.get(name)
    assert V.u.tolist() == [1.0, 2.0]
    assert V.any.tolist() == [1, 2, 3] and V.any.dtype == np.int16
    assert V.ua == [1, "two"]


NESTED_T = p4p.Type(
    [
        ("top", "i"),
        ("inner", ("S", "inner_t", [("x", "d"), ("deeper", ("S", None, [("name", "s"), ("arr", "al")]))])),
        ("items", ("aS", "item_t", [("k", "s"), ("v", "d")])),
    ],
    id="nested:1.0",
)


def test_nested_structures(ctxt, pvs, raw_ctxt):
    init = {"top": 1, "inner.x": 2.5, "inner.deeper.name": "n", "items": [{"k": "a", "v": 1.0}]}
    pv, box = mailbox_pv(initial=p4p.Value(NESTED_T, init))
    name = pvs(pv, "nested")
    V = ctxt.get(name)
    assert V.getID() == "nested:1.0"
    assert V.inner.deeper.name == "n" and V["inner.x"] == 2.5
    assert [(it.k, it.v) for it in V["items"]] == [("a", 1.0)]
    ctxt.put(name, {"inner.deeper.arr": [1, 2, 3], "top": 7, "items": [{"k": "b", "v": 2.0}, {"k": "c"}]})
    _V, _req, _op = box.ops.get(timeout=5)
    cur = pv.current()
    assert cur.top == 7 and cur.inner.deeper.arr.tolist() == [1, 2, 3]
    assert [(it.k, it.v) for it in cur["items"]] == [("b", 2.0), ("c", 0.0)]
    # pvxs sends the whole type and marks only the requested fields
    got = raw_ctxt.get(name, request="field(inner.deeper)")
    assert got.changedSet() == {"inner.deeper.name", "inner.deeper.arr"}, got.changedSet()
    assert got.inner.deeper.arr.tolist() == [1, 2, 3]


def test_info(ctxt, pvs):
    pv, _box = mailbox_pv(initial=p4p.Value(NESTED_T, {}))
    name = pvs(pv, "info")
    T = ctxt.info(name)
    assert isinstance(T, capva.Type)
    assert T.aspy() == NESTED_T.aspy()
    pv2, _box = mailbox_pv(nt=NTScalar("ad", display=True), initial=[])
    name2 = pvs(pv2, "info")
    T2 = ctxt.info(name2)
    assert T2.getID() == "epics:nt/NTScalarArray:1.0"
    assert list(T2.keys()) == ["value", "alarm", "timeStamp", "display"]
    with pytest.raises(TimeoutError):
        ctxt.info("cli:missing:" + str(next(_names)), timeout=0.5)


# --------------------------------------------------------------------------- rpc


def test_rpc_nturi(ctxt, pvs):
    pv = SharedPV(nt=NTScalar("d"), initial=0.0)

    @pv.rpc
    def add(pv, op):
        V = op.value()
        assert V.getID() == "epics:nt/NTURI:1.0", V.getID()
        if V.query.a < 0:
            op.done(error="negative!")
            return
        op.done(NTScalar("d").wrap(V.query.a + V.query.b))

    name = pvs(pv, "rpc")
    U = cnt.NTURI([("a", "d"), ("b", "d")])
    r = ctxt.rpc(name, U.wrap(name, kws={"a": 1.5, "b": 2.0}))
    assert isinstance(r, cnt.ntfloat) and r == 3.5
    with pytest.raises(RemoteError, match="negative!"):
        ctxt.rpc(name, U.wrap(name, kws={"a": -1.0, "b": 2.0}))


def test_rpc_plain_and_none(ctxt, pvs):
    pv = SharedPV(nt=NTScalar("d"), initial=0.0)
    args: list = []

    @pv.rpc
    def echo(pv, op):
        V = op.value()
        args.append(V.todict())
        op.done(
            p4p.Value(p4p.Type([("n", "i"), ("names", "as")]), {"n": len(V.keys()), "names": list(V.keys())})
        )

    name = pvs(pv, "rpc2")
    r = ctxt.rpc(name, capva.Value(capva.Type([("x", "i"), ("y", "s")]), {"x": 3, "y": "why"}))
    assert r.n == 2 and r.names == ["x", "y"]
    assert args[-1] == {"x": 3, "y": "why"}
    r = ctxt.rpc(name, None)
    assert r.n == 0


def test_rpc_errors(ctxt, pvs):
    pv, _box = mailbox_pv(nt=NTScalar("d"), initial=0.0)  # Mailbox: rpc -> "no rpc here"
    name = pvs(pv, "rpcerr")
    with pytest.raises(RemoteError, match="no rpc here"):
        ctxt.rpc(name, None)
    plain = SharedPV(nt=NTScalar("d"), initial=0.0)  # no handler at all
    name2 = pvs(plain, "rpcerr")
    with pytest.raises(RemoteError):
        ctxt.rpc(name2, None)
    assert isinstance(ctxt.rpc(name2, None, throw=False), RemoteError)


# --------------------------------------------------------------------------- errors


def test_remote_errors(ctxt, pvs):
    ro = SharedPV(nt=NTScalar("d"), initial=1.0)  # no put handler
    name = pvs(ro, "ro")
    with pytest.raises(RemoteError):
        ctxt.put(name, 2.0)
    assert ro.current() == 1.0

    failing = SharedPV(nt=NTScalar("d"), initial=1.0)

    @failing.put
    def reject(pv, op):
        raise ValueError("value out of range for this test")

    name2 = pvs(failing, "fail")
    with pytest.raises(RemoteError, match="value out of range for this test"):
        ctxt.put(name2, 3.0)

    refusing = SharedPV(nt=NTScalar("d"), initial=1.0)

    @refusing.put
    def refuse(pv, op):
        op.done(error="refused politely")

    name3 = pvs(refusing, "refuse")
    res = ctxt.put([name3, name2], [1.0, 2.0], throw=False)
    assert isinstance(res[0], RemoteError) and "refused politely" in str(res[0])
    assert isinstance(res[1], RemoteError)
    assert ctxt.get(name3) == 1.0  # the channel still works


def test_missing_pv_timeout(ctxt):
    missing = "cli:missing:" + str(next(_names))
    with pytest.raises(TimeoutError):
        ctxt.get(missing, timeout=0.5)
    got = ctxt.get([missing], timeout=0.5, throw=False)
    assert len(got) == 1 and isinstance(got[0], TimeoutError)


# --------------------------------------------------------------------------- monitors


def test_monitor_updates(ctxt, pvs):
    pv, _box = mailbox_pv(nt=NTScalar("i"), initial=0)
    name = pvs(pv, "mon")
    upd = Updates()
    sub = ctxt.monitor(name, upd)
    try:
        first = upd.next()
        assert isinstance(first, cnt.ntint) and first == 0
        for i in range(1, 6):
            pv.post(i)
            assert upd.next() == i  # one at a time: no squashing possible
        ctxt.put(name, 42)
        assert upd.until(lambda v: v == 42)[-1].raw.getID() == "epics:nt/NTScalar:1.0"
    finally:
        sub.close()


def test_monitor_notify_disconnect(ctxt, pvs):
    pv, _box = mailbox_pv(nt=NTScalar("s"), initial="hi")
    name = pvs(pv, "mond")
    upd = Updates()
    sub = ctxt.monitor(name, upd, notify_disconnect=True)
    try:
        first = upd.next()
        assert isinstance(first, Disconnected) and not isinstance(first, Finished)
        assert upd.next() == "hi"
    finally:
        sub.close()


@pytest.mark.parametrize("request_", ["record[pipeline=true,queueSize=2]", "record[pipeline=true]"])
def test_monitor_pipeline(ctxt, pvs, request_):
    """With pipeline the server sends only as many updates as the client acknowledged: a
    client that does not ack stalls after queueSize updates.  Updates are posted one at a
    time here: pvxs does not send queued updates when an ACK reopens the window, only with
    the next post (pva-protocol.md, "pvxs 1.5 server quirk"; p4p's own client stalls on a
    burst too), so a burst is tested against capva's server instead."""
    pv, _box = mailbox_pv(nt=NTScalar("i"), initial=0)
    name = pvs(pv, "pipe")
    upd = Updates()
    sub = ctxt.monitor(name, upd, request=request_)
    try:
        assert upd.next() == 0
        for i in range(1, 21):
            pv.post(i)
            assert upd.next() == i
    finally:
        sub.close()


def test_monitor_queue_size(ctxt, pvs):
    pv, _box = mailbox_pv(nt=NTScalar("i"), initial=0)
    name = pvs(pv, "qs")
    upd = Updates()
    sub = ctxt.monitor(name, upd, request="record[queueSize=20]")
    try:
        assert upd.next() == 0
        for i in range(1, 16):
            pv.post(i)
        seen = [int(v) for v in upd.until(lambda v: v == 15)]
        assert seen == sorted(set(seen))
    finally:
        sub.close()


def test_monitor_field_mask(pvs, server):
    """pvxs sends the whole type and marks (and sends) only the requested fields."""
    pv, _box = mailbox_pv(nt=NTScalar("d", display=True), initial=1.0)
    name = pvs(pv, "mask")
    with open_context("thread", server.conf, nt=False) as C:
        upd = Updates()
        upd2 = Updates()
        with (
            C.monitor(name, upd, request="field(value)"),
            C.monitor(name, upd2, request="field(alarm.severity)"),
        ):
            V = upd.next()
            assert isinstance(V, capva.Value) and V.value == 1.0
            assert V.changedSet() == {"value"}, V.changedSet()
            A = upd2.next()
            assert A.changedSet() <= {"alarm.severity"}, A.changedSet()  # pvxs: nothing marked yet
            pv.post(2.0, severity=2)
            V = upd.next()
            assert V.value == 2.0 and V.changedSet() == {"value"}
            A = upd2.until(lambda A: A.alarm.severity == 2)[-1]
            assert A.changedSet() == {"alarm.severity"}
            assert A.value == 0.0  # never sent: the type's default (as p4p's client)
    with open_context("asyncio", server.conf) as A:
        upd = Updates()
        with A.monitor(name, upd, request="field(value)"):
            v = upd.next()
            assert v == 2.0


def test_monitor_partial_updates_merge(ctxt, pvs):
    """Each update is the whole current value: fields the server did not resend keep
    their last value (the client merges changed fields into its copy)."""
    pv, _box = mailbox_pv(nt=NTScalar("d", display=True), initial={"value": 1.0, "display.units": "V"})
    name = pvs(pv, "merge")
    upd = Updates()
    with ctxt.monitor(name, upd):
        assert upd.next().raw.display.units == "V"
        pv.post(2.0)
        v = upd.next()
        assert v == 2.0 and v.raw.display.units == "V"
        assert v.raw.changed("value")


def test_monitor_meta_enum_union(ctxt, pvs):
    """Alarm and time stamp reach the unwrapped value; NTEnum choices sent once are
    remembered for index-only updates; a union changing member between updates."""
    pv, _box = mailbox_pv(nt=NTScalar("d"), initial=0.0)
    name = pvs(pv, "meta")
    e, _box = mailbox_pv(nt=NTEnum(), initial={"index": 0, "choices": ["a", "b", "c"]})
    ename = pvs(e, "menum")
    u, _box = mailbox_pv(initial=p4p.Value(UNION_T, {"u": ("i", 1)}))
    uname = pvs(u, "munion")
    m, ev, uv = Updates(), Updates(), Updates()
    with ctxt.monitor(name, m), ctxt.monitor(ename, ev), ctxt.monitor(uname, uv):
        assert m.next() == 0.0
        pv.post(1.5, timestamp=1234567890.25, severity=2, message="too high")
        v = m.next()
        assert v == 1.5 and v.severity == 2 and v.raw.alarm.message == "too high"
        assert v.timestamp == 1234567890.25 and v.raw_stamp == (1234567890, 250000000)
        assert ev.next().choice == "a"
        e.post(2)  # index only: the choices are not resent
        v = ev.next()
        assert v == 2 and v.choice == "c"
        assert uv.next().u == 1
        for member, val in [("s", "text"), ("a", np.array([1.0, 2.0])), ("i", 7), ("s", "again")]:
            u.post(p4p.Value(UNION_T, {"u": (member, val)}))
            got = uv.next().u
            assert (got.tolist() if member == "a" else got) == (val.tolist() if member == "a" else val)


def test_monitor_close_stops_callbacks(ctxt, pvs):
    pv, _box = mailbox_pv(nt=NTScalar("i"), initial=0)
    name = pvs(pv, "close")
    a, b = Updates(), Updates()
    sub_a = ctxt.monitor(name, a)
    sub_b = ctxt.monitor(name, b)
    try:
        assert a.next() == 0 and b.next() == 0
        sub_a.close()
        sub_a.close()  # idempotent
        pv.post(1)
        assert b.next() == 1
        pv.post(2)
        assert b.next() == 2
        assert a.drain() == []
    finally:
        sub_b.close()


def test_monitor_server_close(ctxt, pvs):
    """The server closing the PV ends the subscription: Finished (or Disconnected) and no
    callbacks after it; re-opening serves a fresh monitor."""
    pv, _box = mailbox_pv(nt=NTScalar("i"), initial=5)
    name = pvs(pv, "srvclose")
    upd = Updates()
    sub = ctxt.monitor(name, upd, notify_disconnect=True)
    try:
        assert isinstance(upd.next(), Disconnected)
        assert upd.next() == 5
        pv.close()
        end = upd.next()
        assert isinstance(end, Disconnected), end
        pv.open(6)
        assert upd.until(lambda v: v == 6)
    finally:
        sub.close()


def test_monitor_remote_error(ctxt, pvs):
    pv, _box = mailbox_pv(nt=NTScalar("i"), initial=0)
    name = pvs(pv, "monerr")
    upd = Updates()
    with ctxt.monitor(name, upd, request="field(nosuchfield)"):
        err = upd.next()
        assert isinstance(err, RemoteError), err
        assert upd.drain() == []
    assert ctxt.get(name) == 0


# --------------------------------------------------------------------------- disconnect


def test_disconnect(ctxt, pvs):
    pv, _box = mailbox_pv(nt=NTScalar("i"), initial=1)
    name = pvs(pv, "disc")
    pv2, _box = mailbox_pv(nt=NTScalar("i"), initial=2)
    name2 = pvs(pv2, "disc")
    assert ctxt.get([name, name2]) == [1, 2]
    ctxt.disconnect(name)
    pv.post(3)
    assert ctxt.get(name) == 3
    ctxt.disconnect()
    assert ctxt.get([name, name2]) == [3, 2]
    ctxt.disconnect("never:seen:pv")  # harmless


# --------------------------------------------------------------------------- timeouts, cancel


def test_thread_put_timeout_cancels(pvs, server):
    h = Hanging()
    pv = SharedPV(handler=h, nt=NTScalar("d"), initial=0.0)
    name = pvs(pv, "hang")
    with open_context("thread", server.conf) as C:
        with pytest.raises(TimeoutError):
            C.put(name, 1.0, timeout=1.0)
        assert h.started.is_set()
        assert h.cancelled.wait(5), "the server never saw the put cancelled"
        assert C.get(name) == 0.0


def test_thread_get_pending_until_open(pvs, server):
    """A get on a PV that is not open yet waits (pvxs holds it) and completes on open."""
    pv = SharedPV(nt=NTScalar("i"))  # closed
    name = pvs(pv, "later")
    with open_context("thread", server.conf) as C:
        with pytest.raises(TimeoutError):
            C.get(name, timeout=0.5)
        t = threading.Timer(0.3, pv.open, args=(9,))
        t.start()
        try:
            assert C.get(name, timeout=10) == 9
        finally:
            t.cancel()


def test_asyncio_cancel_put(pvs, server):
    h = Hanging()
    pv = SharedPV(handler=h, nt=NTScalar("d"), initial=0.0)
    name = pvs(pv, "ahang")

    async def main() -> None:
        async with caio.Context("pva", conf=server.conf, useenv=False) as C:
            fut = C.put(name, 1.0)
            assert await asyncio.get_running_loop().run_in_executor(None, h.started.wait, 5)
            assert not fut.done()
            fut.cancel()
            with pytest.raises(asyncio.CancelledError):
                await fut
            assert await asyncio.get_running_loop().run_in_executor(None, h.cancelled.wait, 5)
            h.started.clear()
            h.cancelled.clear()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(C.put(name, 2.0), 0.5)
            assert await asyncio.get_running_loop().run_in_executor(None, h.cancelled.wait, 5)
            assert await asyncio.wait_for(C.get(name), 5) == 0.0

    asyncio.run(asyncio.wait_for(main(), 30))


def test_asyncio_cancel_get(pvs, server):
    pv = SharedPV(nt=NTScalar("i"))  # closed: gets wait
    name = pvs(pv, "aget")

    async def main() -> None:
        C = caio.Context("pva", conf=server.conf, useenv=False)
        try:
            fut = C.get(name)
            await asyncio.sleep(0.3)
            assert not fut.done()
            fut.cancel()
            with pytest.raises(asyncio.CancelledError):
                await fut
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(C.get(name), 0.3)
            pv.open(4)
            assert await asyncio.wait_for(C.get(name), 5) == 4
        finally:
            await C.close()

    asyncio.run(asyncio.wait_for(main(), 30))


# --------------------------------------------------------------------------- asyncio idioms


def test_asyncio_native(pvs, server):
    """The asyncio Context used as documented: Futures, gather, the list form, a monitor
    as an async iterator and with a coroutine callback, ``async with``."""
    pvs_ = []
    for i in range(3):
        pv, _box = mailbox_pv(nt=NTScalar("i"), initial=i)
        pvs_.append((pvs(pv, "native"), pv))
    names = [n for n, _ in pvs_]

    async def main() -> None:
        async with caio.Context("pva", conf=server.conf, useenv=False) as C:
            assert await asyncio.gather(*[C.get(n) for n in names]) == [0, 1, 2]
            assert await C.get(names) == [0, 1, 2]
            await C.put(names, [5, 6, 7])
            assert await C.get(names) == [5, 6, 7]

            got: asyncio.Queue = asyncio.Queue()

            async def cb(v: Any) -> None:
                await got.put(v)

            with C.monitor(names[0], cb):
                assert await asyncio.wait_for(got.get(), 5) == 5
                await C.put(names[0], 8)
                assert await asyncio.wait_for(got.get(), 5) == 8

            async with C.monitor(names[1]) as sub:
                seen = []
                async for v in sub:
                    seen.append(int(v))
                    if v == 6:
                        await C.put(names[1], 60)
                    if v == 60:
                        break
                assert seen == [6, 60]

    asyncio.run(asyncio.wait_for(main(), 30))


def test_asyncio_closed_context(server):
    async def main() -> None:
        C = caio.Context("pva", conf=server.conf, useenv=False)
        await C.close()
        with pytest.raises(RuntimeError):
            await C.get("anything")

    asyncio.run(asyncio.wait_for(main(), 10))


async def _next_or_end(it: Any, timeout: float) -> Any:
    """The iterator's next item; 'END' when it stops or raises a capva end-of-stream error;
    a test failure when it just hangs."""
    try:
        return await asyncio.wait_for(it.__anext__(), timeout)
    except StopAsyncIteration:
        return "END"
    except (Disconnected, Cancelled, RuntimeError):
        return "END"
    except asyncio.TimeoutError:
        pytest.fail(f"the subscription neither ended nor yielded within {timeout} s")


def test_asyncio_close_ends_subscriptions(pvs, server):
    """Closing the Context must end its subscriptions: an ``async for`` over one returns (or
    raises), it does not wait forever for a connection that can never come back."""
    pv, _box = mailbox_pv(nt=NTScalar("i"), initial=0)
    name = pvs(pv, "aclose")

    async def main() -> None:
        C = caio.Context("pva", conf=server.conf, useenv=False)
        sub = C.monitor(name)
        it = sub.__aiter__()
        assert await asyncio.wait_for(it.__anext__(), 5) == 0
        await C.close()
        assert await _next_or_end(it, 3) == "END"
        assert sub.done

    asyncio.run(asyncio.wait_for(main(), 20))


def test_asyncio_monitor_on_closed_context(server):
    """monitor() on a closed asyncio Context: an error (as the thread Context raises), not a
    subscription that silently never starts (and a "Task exception was never retrieved")."""

    async def main() -> None:
        C = caio.Context("pva", conf=server.conf, useenv=False)
        await C.close()
        try:
            sub = C.monitor("anything")
        except RuntimeError:
            return
        assert await _next_or_end(sub.__aiter__(), 3) == "END"
        assert sub.done

    asyncio.run(asyncio.wait_for(main(), 20))


def test_thread_closed_context(server):
    C = cthread.Context("pva", conf=server.conf, useenv=False)
    C.close()
    C.close()
    with pytest.raises(RuntimeError):
        C.get("anything")
    with pytest.raises(RuntimeError):
        C.monitor("anything", print)


def test_thread_callbacks(pvs, server):
    """Thread-flavour callbacks run outside the network thread: they may make blocking
    calls on the same Context, close their own subscription, or raise (logged; the
    subscription goes on)."""
    pv, _box = mailbox_pv(nt=NTScalar("i"), initial=0)
    name = pvs(pv, "cbs")
    other, _box = mailbox_pv(nt=NTScalar("s"), initial="other")
    oname = pvs(other, "cbs")
    upd = Updates()
    subs: list = []
    with open_context("thread", server.conf) as C:

        def cb(v: Any) -> None:
            upd(v)
            if v == 0:
                raise RuntimeError("a broken callback (expected in the log)")
            if v == 1:
                upd(C.get(oname, timeout=5))
            if v == 2:
                subs[0].close()
                upd("closed")

        subs.append(C.monitor(name, cb))
        assert upd.next() == 0
        pv.post(1)
        assert upd.next() == 1 and upd.next() == "other"
        pv.post(2)
        assert upd.next() == 2 and upd.next() == "closed"
        pv.post(3)
        assert C.get(name) == 3
        assert upd.drain() == []


def test_context_conf_and_makerequest(server):
    with open_context("thread", server.conf) as C:
        conf = C.conf()
        assert conf["EPICS_PVA_BROADCAST_PORT"] == server.conf["EPICS_PVA_BROADCAST_PORT"]
        R = C.makeRequest("field(value)record[queueSize=4]")
        assert isinstance(R, capva.Value)
        assert cthread.Context.providers() == ["pva"]


def test_exceptions_exported():
    assert issubclass(Finished, Disconnected)
    assert cthread.RemoteError is RemoteError and caio.Cancelled is Cancelled
    assert cthread.TimeoutError is TimeoutError


def test_many_concurrent(ctxt, pvs):
    names = []
    for i in range(20):
        pv, _box = mailbox_pv(nt=NTScalar("i"), initial=i)
        names.append(pvs(pv, "many"))
    for _ in range(3):
        assert ctxt.get(names) == list(range(20))


def test_json_put_on_struct(ctxt, pvs):
    pv, box = mailbox_pv(initial=p4p.Value(NESTED_T, {}))
    name = pvs(pv, "json")
    ctxt.put(name, json.dumps({"top": 3, "inner": {"x": 1.25}}))
    box.ops.get(timeout=5)
    cur = pv.current()
    assert cur.top == 3 and cur.inner.x == 1.25


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_nt_and_unwrap_options(pvs, server, flavour):
    """``nt=False`` gives Values; ``unwrap={id: fn}`` (p4p's legacy form) applies only those
    functions; ``nt={id: helper}`` adds to the defaults."""
    pv, _box = mailbox_pv(nt=NTScalar("d"), initial=2.5)
    name = pvs(pv, "opts")
    e, _box = mailbox_pv(nt=NTEnum(), initial={"index": 1, "choices": ["x", "y"]})
    ename = pvs(e, "opts")
    with open_context(flavour, server.conf, nt=False) as C:
        V = C.get(name)
        assert isinstance(V, capva.Value) and V.value == 2.5
    with open_context(
        flavour, server.conf, unwrap={"epics:nt/NTScalar:1.0": lambda V: ("mine", V.value)}
    ) as C:
        assert C.get(name) == ("mine", 2.5)
        assert isinstance(C.get(ename), capva.Value)
    with open_context(flavour, server.conf, nt={"epics:nt/NTTable:1.0": cnt.NTTable}) as C:
        assert isinstance(C.get(name), cnt.ntfloat) and C.get(ename).choice == "y"
