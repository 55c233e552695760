"""p4p (pvxs) clients, thread and asyncio flavours, against our PVA server.

Why this file exists: capva.server promises p4p's exact server API *and* wire behaviour that
p4p's own client accepts.  Each test builds PVs with the server-side API (``capva.server``;
``CAPVA_TEST_REFERENCE=p4p`` runs the same test against p4p's server, to check the test
itself) and checks what a real pvxs client sees: get/put/monitor/rpc over every value shape
(scalars, arrays, NTEnum, NTTable, NTNDArray, unions, any, nested structures), pvRequest
masks and options reaching the handler, monitor flow control, errors, dynamic providers,
two servers on one host, and that one blocked handler never stalls other PVs.
"""

from __future__ import annotations

import asyncio
import queue
import re
import threading
import time

import numpy as np
import p4p.client.asyncio as p4p_aio
import p4p.nt as cnt
import pytest
from p4p import Type as CType
from p4p import Value as CValue
from p4p.client.thread import RemoteError

from support.server import (
    Mailbox,
    capva_only,
    client,
    client_conf,
    load_impl,
    p4p_bug,
    serve,
)

T = 5.0  # seconds: bound on every single wait for an expected event

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def impl():
    return load_impl()


def _drain_until(Q: queue.Queue, pred, timeout: float = 10.0):
    """Take updates from ``Q`` until ``pred(update)``; return all taken (the last matches)."""
    got = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no matching update within {timeout}s; last few: {got[-3:]!r}"
        V = Q.get(timeout=left)
        got.append(V)
        if not isinstance(V, Exception) and pred(V):
            return got


def _type_code(V, field="value"):
    """The p4p type code of ``V.field`` (e.g. 'd', 'ai')."""
    return dict(V.type().aspy()[2])[field]


# --------------------------------------------------------------------------- scalars and arrays

SCALARS = [
    pytest.param("d", 1.5, -2.25, id="double"),
    pytest.param("i", 7, -42, id="int"),
    pytest.param("s", "hello", "w\u00f6rld \u2603", id="string"),
    pytest.param("?", False, True, id="bool"),
    # the other scalar types, at their edges
    pytest.param("f", 0.5, -3.25, id="float"),
    pytest.param("b", -128, 127, id="int8"),
    pytest.param("B", 0, 255, id="uint8"),
    pytest.param("h", -32768, 32767, id="int16"),
    pytest.param("H", 0, 65535, id="uint16"),
    pytest.param("I", 0, 2**32 - 1, id="uint32"),
    pytest.param("l", -(2**62), 2**63 - 1, id="int64"),
    pytest.param("L", 0, 2**64 - 1, id="uint64"),
]


@pytest.mark.parametrize("code, initial, new", SCALARS)
def test_scalar_get_put_monitor(impl, code, initial, new):
    box = Mailbox()
    pv = impl.SharedPV(nt=impl.nt.NTScalar(code), initial=initial, handler=box)
    with serve(impl, {"sc:x": pv}) as S, client(S.conf()) as C:
        V = C.get("sc:x")
        assert V == initial
        assert V.raw.getID() == "epics:nt/NTScalar:1.0"
        assert _type_code(V.raw) == code
        Q = queue.Queue()
        with C.monitor("sc:x", Q.put):
            assert Q.get(timeout=T) == initial
            C.put("sc:x", new)
            sV, _req, _op = box.ops.get(timeout=T)
            assert sV == new
            assert "value" in sV.raw.changedSet()
            assert C.get("sc:x") == new
            assert Q.get(timeout=T) == new
        assert pv.current() == new


ARRAYS = [
    pytest.param("ad", [1.0, 2.5], np.linspace(-1.0, 1.0, 1001), id="double[]"),
    pytest.param("ai", [1, 2, 3], np.arange(-50, 50, dtype="i4"), id="int[]"),
    pytest.param("as", ["a", "b"], ["x", "", "long string " * 20, "\u00e9"], id="string[]"),
    pytest.param("a?", [True], np.array([True, False, True]), id="bool[]"),
    pytest.param("aB", [0], np.arange(256, dtype="u1"), id="uint8[]"),
    pytest.param("af", [0.5], np.linspace(0, 1, 17, dtype="f4"), id="float[]"),
    pytest.param("al", [0], np.array([-(2**63), 0, 2**63 - 1], dtype="i8"), id="int64[]"),
]


def _same_array(a, b):
    if isinstance(b, list) and b and isinstance(b[0], str):
        assert list(a) == list(b)
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("code, initial, new", ARRAYS)
def test_array_get_put_monitor(impl, code, initial, new):
    box = Mailbox()
    pv = impl.SharedPV(nt=impl.nt.NTScalar(code), initial=initial, handler=box)
    with serve(impl, {"ar:x": pv}) as S, client(S.conf()) as C:
        V = C.get("ar:x")
        _same_array(V, initial)
        assert V.raw.getID() == "epics:nt/NTScalarArray:1.0"
        assert _type_code(V.raw) == code
        Q = queue.Queue()
        with C.monitor("ar:x", Q.put):
            _same_array(Q.get(timeout=T), initial)
            C.put("ar:x", new)
            sV, _req, _op = box.ops.get(timeout=T)
            _same_array(sV, new)
            _same_array(C.get("ar:x"), new)
            _same_array(Q.get(timeout=T), new)
            C.put("ar:x", [])  # empty array
            box.ops.get(timeout=T)
            assert len(C.get("ar:x")) == 0


def test_get_many_names(impl):
    a = impl.SharedPV(nt=impl.nt.NTScalar("d"), initial=1.0)
    b = impl.SharedPV(nt=impl.nt.NTScalar("s"), initial="two")
    with serve(impl, {"m:a": a, "m:b": b}) as S, client(S.conf()) as C:
        assert C.get(["m:a", "m:b"]) == [1.0, "two"]
        res = C.get(["m:a", "m:missing"], timeout=0.5, throw=False)
        assert res[0] == 1.0
        assert isinstance(res[1], TimeoutError)


def test_post_merges_changed_fields(impl):
    pv = impl.SharedPV(nt=impl.nt.NTScalar("d"), initial=0.0)
    with serve(impl, {"mg:x": pv}) as S, client(S.conf()) as C:
        pv.post({"value": 3.0, "alarm.severity": 2, "alarm.message": "hot"})
        pv.post(4.0)
        V = C.get("mg:x")
        assert V == 4.0
        assert V.severity == 2
        assert V.raw.alarm.message == "hot"


def test_post_explicit_timestamp_and_alarm_kws(impl):
    pv = impl.SharedPV(nt=impl.nt.NTScalar("d"), initial=0.0)
    with serve(impl, {"ts:x": pv}) as S, client(S.conf()) as C:
        pv.post(5.0, timestamp=1234567890.25, severity=1, message="low")
        V = C.get("ts:x")
        assert V == 5.0
        assert V.timestamp == pytest.approx(1234567890.25)
        assert V.severity == 1
        assert V.raw.alarm.message == "low"


def test_put_without_preceding_get(impl):
    box = Mailbox()
    pv = impl.SharedPV(nt=impl.nt.NTScalar("d"), initial=1.0, handler=box)
    with serve(impl, {"ng:x": pv}) as S, client(S.conf()) as C:
        C.put("ng:x", 8.5, get=False)
        assert box.ops.get(timeout=T)[0] == 8.5
        assert C.get("ng:x") == 8.5


def test_ntscalar_display_control_alarm_limits(impl):
    nt = impl.nt.NTScalar("d", display=True, control=True, valueAlarm=True)
    pv = impl.SharedPV(nt=nt, initial=0.0, handler=Mailbox())
    with serve(impl, {"dc:x": pv}) as S, client(S.conf()) as C:
        pv.post(
            {
                "value": 2.5,
                "display.units": "mm",
                "display.limitHigh": 10.0,
                "control.limitLow": -1.0,
                "valueAlarm.highAlarmLimit": 9.0,
            }
        )
        V = C.get("dc:x")
        assert V == 2.5
        assert V.raw.display.units == "mm"
        assert V.raw.display.limitHigh == 10.0
        assert V.raw.control.limitLow == -1.0
        assert V.raw.valueAlarm.highAlarmLimit == 9.0
        C.put("dc:x", 3.0)  # a put of the value alone leaves the metadata alone
        V = C.get("dc:x")
        assert (V, V.raw.display.units) == (3.0, "mm")


def test_custom_wrap_unwrap(impl):
    """SharedPV(wrap=, unwrap=): the handler and current() see the unwrapped form."""
    T_ = impl.Type([("x", "i"), ("y", "i")], id="point_t")

    def wrap(pt, **kws):
        return impl.Value(T_, {"x": pt[0], "y": pt[1]})

    def unwrap(V):
        return (V.x, V.y)

    seen = queue.Queue()

    def put(pv, op):
        seen.put(op.value())
        pv.post(op.value())
        op.done()

    pv = impl.SharedPV(initial=(1, 2), wrap=wrap, unwrap=unwrap)
    pv.put(put)
    with serve(impl, {"wu:x": pv}) as S, client(S.conf()) as C:
        V = C.get("wu:x")
        assert (V.x, V.y) == (1, 2)
        C.put("wu:x", {"x": 5, "y": 6})
        assert seen.get(timeout=T) == (5, 6)
        assert pv.current() == (5, 6)


def test_many_pvs_one_search_burst(impl):
    """300 PVs fetched at once: the client spreads the names over several search datagrams."""
    pvs = {
        f"many:{i:03d}:" + "n" * 40: impl.SharedPV(nt=impl.nt.NTScalar("i"), initial=i) for i in range(300)
    }
    with serve(impl, pvs) as S, client(S.conf()) as C:
        assert C.get(list(pvs), timeout=15) == list(range(300))


def test_long_and_odd_pv_names(impl):
    names = ["x" * 400, "a:b{c}[d]<e>=f;g", "caf\u00e9:\u2603", "1234", "-dash-.dot."]
    pvs = {n: impl.SharedPV(nt=impl.nt.NTScalar("s"), initial=n) for n in names}
    with serve(impl, pvs) as S, client(S.conf()) as C:
        assert C.get(names) == names


def test_put_handlers_of_one_pv_run_one_at_a_time(impl):
    """Concurrent puts to one PV: its handler is never re-entered, and every put completes."""
    lock = threading.Lock()
    state = {"inside": 0, "max": 0, "n": 0}

    class Serial:
        def put(self, pv, op):
            with lock:
                state["inside"] += 1
                state["max"] = max(state["max"], state["inside"])
            time.sleep(0.002)
            with lock:
                state["inside"] -= 1
                state["n"] += 1
            pv.post(op.value())
            op.done()

    pv = impl.SharedPV(nt=impl.nt.NTScalar("i"), initial=0, handler=Serial())
    with serve(impl, {"ser:x": pv}) as S, client(S.conf()) as C:
        errors = queue.Queue()

        def worker(k):
            for j in range(20):
                r = C.put("ser:x", k * 100 + j, timeout=10, throw=False)
                if r is not None:
                    errors.put(r)

        ths = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for th in ths:
            th.start()
        for th in ths:
            th.join(30)
        assert errors.empty(), errors.get()
    assert state["n"] == 160
    assert state["max"] == 1


def test_posts_from_many_threads(impl):
    pvs = {f"mt:{k}": impl.SharedPV(nt=impl.nt.NTScalar("i"), initial=0) for k in range(4)}
    with serve(impl, pvs) as S, client(S.conf()) as C:
        Qs = {n: queue.Queue() for n in pvs}
        subs = [C.monitor(n, Qs[n].put) for n in pvs]
        try:

            def poster(name):
                for i in range(1, 501):
                    pvs[name].post(i)

            ths = [threading.Thread(target=poster, args=(n,)) for n in pvs for _ in range(2)]
            for th in ths:
                th.start()
            for th in ths:
                th.join(30)
            for n in pvs:
                _drain_until(Qs[n], lambda V: V == 500)
        finally:
            for s in subs:
                s.close()


# --------------------------------------------------------------------------- NT types


def test_ntenum_string_and_int_puts(impl):
    box = Mailbox()
    pv = impl.SharedPV(
        nt=impl.nt.NTEnum(), initial={"index": 1, "choices": ["zero", "one", "two"]}, handler=box
    )
    with serve(impl, {"en:x": pv}) as S, client(S.conf()) as C:
        V = C.get("en:x")
        assert isinstance(V, cnt.enum.ntenum)
        assert (int(V), V.choice) == (1, "one")
        assert list(V.raw.value.choices) == ["zero", "one", "two"]
        assert V.raw.getID() == "epics:nt/NTEnum:1.0"

        C.put("en:x", "two")  # by choice string
        sV, _r, _o = box.ops.get(timeout=T)
        assert sV.raw["value.index"] == 2
        V = C.get("en:x")
        assert (int(V), V.choice) == (2, "two")

        C.put("en:x", 0)  # by index
        sV, _r, _o = box.ops.get(timeout=T)
        assert sV.raw["value.index"] == 0
        assert C.get("en:x").choice == "zero"

        with pytest.raises((ValueError, RemoteError)):
            C.put("en:x", "no such choice")


def test_nttable(impl):
    box = Mailbox()
    tbl = impl.nt.NTTable([("a", "i"), ("b", "s"), ("c", "d")])
    rows = [{"a": 1, "b": "x", "c": 0.5}, {"a": 2, "b": "y", "c": -1.5}]
    pv = impl.SharedPV(nt=tbl, initial=rows, handler=box)
    with serve(impl, {"tb:x": pv}) as S, client(S.conf()) as C:
        V = C.get("tb:x")  # NTTable is not unwrapped by p4p's client
        assert V.getID() == "epics:nt/NTTable:1.0"
        assert list(V.labels) == ["a", "b", "c"]
        np.testing.assert_array_equal(V.value.a, [1, 2])
        assert list(V.value.b) == ["x", "y"]
        np.testing.assert_array_equal(V.value.c, [0.5, -1.5])

        Q = queue.Queue()
        with C.monitor("tb:x", Q.put):
            Q.get(timeout=T)
            C.put("tb:x", {"value.a": [5, 6, 7], "value.b": ["p", "q", "r"], "value.c": [1.0, 2.0, 3.0]})
            box.ops.get(timeout=T)
            V = Q.get(timeout=T)
            np.testing.assert_array_equal(V.value.a, [5, 6, 7])
            assert list(V.value.b) == ["p", "q", "r"]
        # the server-side unwrap of an NTTable is the list of rows
        cur = pv.current()
        assert [r["b"] for r in cur] == ["p", "q", "r"]


def _image(impl, arr, **attrib):
    a = np.asarray(arr).view(impl.nt.NTNDArray.ntndarray)
    a.attrib = dict(attrib)
    return a


def test_ntndarray_image_and_attributes(impl):
    box = Mailbox()
    img = np.arange(12, dtype="u2").reshape(3, 4)
    pv = impl.SharedPV(nt=impl.nt.NTNDArray(), initial=_image(impl, img, ColorMode=0, Gain=2.5), handler=box)
    with serve(impl, {"nd:x": pv}) as S, client(S.conf()) as C:
        V = C.get("nd:x")
        assert isinstance(V, cnt.ndarray.ntndarray)
        assert V.shape == (3, 4)
        assert V.dtype == np.uint16
        np.testing.assert_array_equal(V, img)
        assert V.attrib["ColorMode"] == 0
        assert V.attrib["Gain"] == pytest.approx(2.5)
        assert [d.size for d in V.raw.dimension] == [4, 3]  # inner-most first

        Q = queue.Queue()
        with C.monitor("nd:x", Q.put):
            Q.get(timeout=T)
            img2 = np.linspace(0, 1, 10).reshape(2, 5)
            pv.post(_image(impl, img2, ColorMode=0, Label="second"))
            V = Q.get(timeout=T)
            assert V.shape == (2, 5)
            assert V.dtype == np.float64
            np.testing.assert_allclose(V, img2)
            assert V.attrib["Label"] == "second"

            img3 = np.full((4, 2), 7, dtype="i1")
            C.put("nd:x", img3)
            sV, _r, _o = box.ops.get(timeout=T)
            assert sV.shape == (4, 2)
            V = Q.get(timeout=T)
            np.testing.assert_array_equal(V, img3)
            assert V.dtype == np.int8


def test_struct_with_union(impl):
    box = Mailbox()
    T_ = impl.Type(
        [("value", ("U", None, [("i", "i"), ("s", "s"), ("arr", "ad")])), ("label", "s")],
        id="test:union:1.0",
    )
    pv = impl.SharedPV(initial=impl.Value(T_, {"value": ("i", 5), "label": "u"}), handler=box)
    with serve(impl, {"un:x": pv}) as S, client(S.conf()) as C:
        V = C.get("un:x")
        assert V.getID() == "test:union:1.0"
        assert V.value == 5
        assert V.label == "u"
        C.put("un:x", {"value": ("s", "text")})
        box.ops.get(timeout=T)
        assert C.get("un:x").value == "text"
        C.put("un:x", {"value": ("arr", [1.0, 2.0])})
        box.ops.get(timeout=T)
        V = C.get("un:x")
        np.testing.assert_array_equal(V.value, [1.0, 2.0])
        assert V.label == "u"


def test_any_field(impl):
    box = Mailbox()
    T_ = impl.Type([("value", "v"), ("n", "i")], id="test:any:1.0")
    pv = impl.SharedPV(initial=impl.Value(T_, {"value": 5, "n": 1}), handler=box)
    with serve(impl, {"any:x": pv}) as S, client(S.conf()) as C:
        assert C.get("any:x").value == 5
        for new in ("a string", 2.5):
            C.put("any:x", {"value": new})
            box.ops.get(timeout=T)
            assert C.get("any:x").value == new
        C.put("any:x", {"value": np.arange(4, dtype="i2")})
        box.ops.get(timeout=T)
        got = C.get("any:x").value
        np.testing.assert_array_equal(got, [0, 1, 2, 3])
        assert got.dtype == np.int16
        inner = CValue(CType([("x", "i"), ("y", "s")], id="inner_t"), {"x": 3, "y": "why"})
        C.put("any:x", {"value": inner})
        box.ops.get(timeout=T)
        got = C.get("any:x").value
        assert (got.x, got.y) == (3, "why")
        assert got.getID() == "inner_t"


def test_nested_structure(impl):
    box = Mailbox()
    T_ = impl.Type(
        [
            ("a", ("S", "a_t", [("b", ("S", None, [("c", "i"), ("d", "s")])), ("e", "ad")])),
            ("f", "l"),
            ("sa", ("aS", "elem_t", [("x", "i"), ("y", "s")])),
        ],
        id="test:nested:1.0",
    )
    init = impl.Value(T_, {"a": {"b": {"c": 1, "d": "dee"}, "e": [1.0]}, "f": 2**40, "sa": [{"x": 1}]})
    pv = impl.SharedPV(initial=init, handler=box)
    with serve(impl, {"ne:x": pv}) as S, client(S.conf()) as C:
        V = C.get("ne:x")
        assert V.getID() == "test:nested:1.0"
        assert (V.a.b.c, V.a.b.d, V.f) == (1, "dee", 2**40)
        assert [e.x for e in V.sa] == [1]

        C.put("ne:x", {"a.b.c": 42})
        sV, _r, _o = box.ops.get(timeout=T)
        assert "a.b.c" in sV.changedSet()
        assert "a.b.d" not in sV.changedSet()
        V = C.get("ne:x")
        assert (V.a.b.c, V.a.b.d) == (42, "dee")  # only the changed leaf was written

        C.put("ne:x", {"sa": [{"x": 5, "y": "five"}, {"x": 6, "y": "six"}], "a.e": [3.0, 4.0]})
        box.ops.get(timeout=T)
        V = C.get("ne:x")
        assert [(e.x, e.y) for e in V.sa] == [(5, "five"), (6, "six")]
        np.testing.assert_array_equal(V.a.e, [3.0, 4.0])
        assert V.a.b.c == 42


# --------------------------------------------------------------------------- pvRequest


def test_put_field_mask_and_get_mask(impl):
    box = Mailbox()
    pv = impl.SharedPV(nt=impl.nt.NTScalar("d"), initial=1.0, handler=box)
    with serve(impl, {"rq:x": pv}) as S, client(S.conf(), nt=False) as C:
        V = C.get("rq:x", request="field(value)")
        assert V.value == 1.0
        assert V.changedSet() == {"value"}

        C.put("rq:x", {"value": 2.0}, request="field(value)")
        sV, req, _op = box.ops.get(timeout=T)
        assert sV == 2.0
        assert "value" in sV.raw.changedSet()
        assert not {"alarm.severity", "alarm.status", "alarm.message"} & sV.raw.changedSet()
        assert req.todict()["field"] == {"value": {}}
        assert C.get("rq:x").value == 2.0


@pytest.mark.parametrize(
    "kws, options",
    [
        pytest.param({"process": "true", "wait": True}, {"process": "true", "block": "true"}, id="true-wait"),
        pytest.param(
            {"process": "passive", "wait": False}, {"process": "passive", "block": "false"}, id="passive"
        ),
        pytest.param({"process": "false"}, {"process": "false", "block": "false"}, id="false"),
    ],
)
def test_put_process_wait_reach_handler(impl, kws, options):
    box = Mailbox()
    pv = impl.SharedPV(nt=impl.nt.NTScalar("d"), initial=1.0, handler=box)
    with serve(impl, {"pw:x": pv}) as S, client(S.conf()) as C:
        C.put("pw:x", 3.0, **kws)
        sV, req, _op = box.ops.get(timeout=T)
        assert sV == 3.0
        assert req.todict()["record"]["_options"] == options


def test_server_operation_methods(impl):
    seen = queue.Queue()

    class H:
        def put(self, pv, op):
            seen.put(
                {
                    "name": op.name(),
                    "peer": op.peer(),
                    "account": op.account(),
                    "roles": op.roles(),
                    "req": op.pvRequest(),
                }
            )
            op.done()

    pv = impl.SharedPV(nt=impl.nt.NTScalar("i"), initial=0, handler=H())
    with serve(impl, {"op:x": pv}) as S, client(S.conf()) as C:
        C.put("op:x", 1)
        d = seen.get(timeout=T)
    assert d["name"] == "op:x"
    assert re.fullmatch(r"127\.0\.0\.1:\d+", d["peer"]), d["peer"]
    assert isinstance(d["account"], str)
    assert isinstance(d["roles"], set)
    assert all(isinstance(r, str) for r in d["roles"])
    assert isinstance(d["req"], impl.Value)


# --------------------------------------------------------------------------- monitors


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param("record[pipeline=true,queueSize=2]", id="pipeline-q2"),
        pytest.param("record[queueSize=2]", id="q2"),
        pytest.param("record[queueSize=100]", id="q100"),
        pytest.param(None, id="default"),
    ],
)
def test_monitor_fast_poster_slow_client(impl, request_):
    """Posts far faster than the client takes them: the client still ends on the last value,
    updates arrive in order, and neither the poster nor the client hangs."""
    N = 2000
    pv = impl.SharedPV(nt=impl.nt.NTScalar("i"), initial=0)
    gate = threading.Event()
    Q = queue.Queue()

    def slow(V):
        gate.wait(T)  # the first callback blocks until every post is done
        Q.put(V)

    with serve(impl, {"fast:x": pv}) as S, client(S.conf()) as C:
        with C.monitor("fast:x", slow, request=request_):
            t0 = time.monotonic()
            for i in range(1, N + 1):
                pv.post(i)
            post_time = time.monotonic() - t0
            gate.set()
            got = _drain_until(Q, lambda V: V == N, timeout=20.0)
    vals = [int(v) for v in got]
    assert vals == sorted(vals), "updates out of order"
    assert vals[-1] == N
    assert post_time < 10.0, f"{N} posts took {post_time:.1f}s (poster blocked by a slow client?)"


def test_monitor_field_mask(impl):
    box = Mailbox()
    pv = impl.SharedPV(nt=impl.nt.NTScalar("d"), initial=1.0, handler=box)
    with serve(impl, {"mm:x": pv}) as S, client(S.conf(), nt=False) as C:
        Q = queue.Queue()
        with C.monitor("mm:x", Q.put, request="field(value)"):
            V = Q.get(timeout=T)
            assert V.value == 1.0
            assert V.changedSet() == {"value"}
            pv.post({"alarm.severity": 1})  # outside the mask: may be dropped or sent empty
            pv.post(3.0)
            got = _drain_until(Q, lambda V: V.value == 3.0)
            for V in got:
                assert V.changedSet() <= {"value"}, V.changedSet()


def test_monitor_queue_size_many_subscribers(impl):
    """Four subscriptions with different queue settings on one burst of posts: each ends on
    the last value, in order."""
    p4p_bug(impl, "pvxs reorders updates / never delivers the last one in pipeline mode on a burst")
    pv = impl.SharedPV(nt=impl.nt.NTScalar("i"), initial=0)
    with serve(impl, {"ms:x": pv}) as S, client(S.conf()) as C1, client(S.conf()) as C2:
        Qs = [queue.Queue() for _ in range(4)]
        subs = [
            C1.monitor("ms:x", Qs[0].put, request="record[queueSize=2]"),
            C1.monitor("ms:x", Qs[1].put, request="record[queueSize=8]"),
            C2.monitor("ms:x", Qs[2].put, request="record[pipeline=true,queueSize=3]"),
            C2.monitor("ms:x", Qs[3].put),
        ]
        try:
            for Q in Qs:
                assert Q.get(timeout=T) == 0
            for i in range(1, 201):
                pv.post(i)
            for Q in Qs:
                got = _drain_until(Q, lambda V: V == 200)
                assert [int(v) for v in got] == sorted(int(v) for v in got)
        finally:
            for s in subs:
                s.close()


# --------------------------------------------------------------------------- rpc


def _calc_pv(impl):
    def rpc(pv, op):
        V = op.value()
        q = V.query if "query" in V else V
        if "oops" in q and q.oops:
            op.done(error="oops requested")
        elif "null" in q and q.null:
            op.done()
        elif "x" in V and "query" not in V:
            op.done(impl.Value(impl.Type([("y", "i")], id="reply_t"), {"y": V.x * 10}))
        else:
            op.done(impl.nt.NTScalar("d").wrap(float(q.lhs) + float(q.rhs)))

    pv = impl.SharedPV(nt=impl.nt.NTScalar("d"), initial=0.0)
    pv.rpc(rpc)
    return pv


def test_rpc_nturi(impl):
    pv = _calc_pv(impl)
    with serve(impl, {"calc": pv}) as S, client(S.conf()) as C:
        args = cnt.NTURI([("lhs", "d"), ("rhs", "d")])
        assert C.rpc("calc", args.wrap("calc", kws={"lhs": 1.0, "rhs": 2.5})) == 3.5
        # the same argument type again (a peer may use its type cache the second time)
        assert C.rpc("calc", args.wrap("calc", kws={"lhs": 10.0, "rhs": 20.0})) == 30.0
        null = cnt.NTURI([("null", "?")])
        assert C.rpc("calc", null.wrap("calc", kws={"null": True})) is None
        oops = cnt.NTURI([("oops", "?")])
        with pytest.raises(RemoteError, match="oops requested"):
            C.rpc("calc", oops.wrap("calc", kws={"oops": True}))


def test_rpc_plain_value(impl):
    pv = _calc_pv(impl)
    with serve(impl, {"calc": pv}) as S, client(S.conf()) as C:
        R = C.rpc("calc", CValue(CType([("x", "i")]), {"x": 4}))
        assert R.getID() == "reply_t"
        assert R.y == 40


def test_rpc_without_handler_is_refused(impl):
    pv = impl.SharedPV(nt=impl.nt.NTScalar("d"), initial=0.0)
    with serve(impl, {"norpc": pv}) as S, client(S.conf()) as C:
        with pytest.raises(RemoteError):
            C.rpc("norpc", CValue(CType([("x", "i")]), {"x": 4}))
        assert C.get("norpc") == 0.0  # the channel still works


# --------------------------------------------------------------------------- errors


def test_put_without_handler_is_refused(impl):
    pv = impl.SharedPV(nt=impl.nt.NTScalar("d"), initial=1.0)
    with serve(impl, {"ro:x": pv}) as S, client(S.conf()) as C:
        with pytest.raises(RemoteError):
            C.put("ro:x", 2.0)
        assert C.get("ro:x") == 1.0


def test_handler_exception_becomes_remote_error(impl):
    class H:
        def put(self, pv, op):
            raise ValueError("boom 1234")

        def rpc(self, pv, op):
            raise KeyError("rpc-kaboom")

    pv = impl.SharedPV(nt=impl.nt.NTScalar("d"), initial=1.0, handler=H())
    with serve(impl, {"err:x": pv}) as S, client(S.conf()) as C:
        with pytest.raises(RemoteError, match="boom 1234"):
            C.put("err:x", 2.0)
        with pytest.raises(RemoteError, match="rpc-kaboom"):
            C.rpc("err:x", CValue(CType([("x", "i")]), {"x": 1}))
        assert C.get("err:x") == 1.0  # the server and the channel survive


def test_done_error(impl):
    class H:
        def put(self, pv, op):
            op.done(error=f"refused: {op.value().raw['value']}")

    pv = impl.SharedPV(nt=impl.nt.NTScalar("d"), initial=1.0, handler=H())
    with serve(impl, {"de:x": pv}) as S, client(S.conf()) as C:
        with pytest.raises(RemoteError, match="refused: 2.0"):
            C.put("de:x", 2.0)


def test_done_err_alias(impl):
    capva_only(impl, "op.done(err=...) is accepted as error=")

    class H:
        def put(self, pv, op):
            op.done(err="oops via err=")

    pv = impl.SharedPV(nt=impl.nt.NTScalar("d"), initial=1.0, handler=H())
    with serve(impl, {"da:x": pv}) as S, client(S.conf()) as C:
        with pytest.raises(RemoteError, match="^oops via err=$"):
            C.put("da:x", 2.0)


def test_unconvertible_put_fails_cleanly(impl):
    box = Mailbox()
    pv = impl.SharedPV(nt=impl.nt.NTScalar("i"), initial=1, handler=box)
    with serve(impl, {"uc:x": pv}) as S, client(S.conf()) as C:
        with pytest.raises((ValueError, TypeError, RemoteError)):
            C.put("uc:x", "not a number")
        C.put("uc:x", 5)
        assert C.get("uc:x") == 5


def test_client_timeout_cancels_put(impl):
    """A client gives up on a slow put: the handler's onCancel runs, its late done() is
    harmless, and the PV keeps working."""
    events = queue.Queue()
    release = threading.Event()

    class Slow:
        def put(self, pv, op):
            op.onCancel(lambda: events.put("cancel"))
            events.put("entered")
            release.wait(10)
            try:
                op.done()
                events.put("done ok")
            except Exception as e:
                events.put(f"done raised {e!r}")

    pv = impl.SharedPV(nt=impl.nt.NTScalar("d"), initial=1.0, handler=Slow())
    with serve(impl, {"cx:x": pv}) as S, client(S.conf()) as C:
        assert isinstance(C.put("cx:x", 2.0, timeout=0.3, throw=False), TimeoutError)
        assert events.get(timeout=T) == "entered"
        assert events.get(timeout=T) == "cancel"
        release.set()
        assert events.get(timeout=T) == "done ok"
        assert C.get("cx:x") == 1.0


def test_request_selecting_nothing_is_an_error(impl):
    pv = impl.SharedPV(nt=impl.nt.NTScalar("d"), initial=1.0)
    with serve(impl, {"rn:x": pv}) as S, client(S.conf()) as C:
        with pytest.raises(RemoteError):
            C.get("rn:x", request="field(nosuch)")
        assert C.get("rn:x") == 1.0


# --------------------------------------------------------------------------- capva differences


def test_value_kw_means_initial(impl):
    capva_only(impl, "SharedPV(value=...) means initial=")
    pv = impl.SharedPV(nt=impl.nt.NTScalar("d"), value=3.0)
    assert pv.isOpen()
    with serve(impl, {"vk:x": pv}) as S, client(S.conf()) as C:
        assert C.get("vk:x") == 3.0


def test_unknown_kw_is_type_error(impl):
    capva_only(impl, "unknown SharedPV keywords raise TypeError")
    with pytest.raises(TypeError):
        impl.SharedPV(nt=impl.nt.NTScalar("d"), initial=1.0, no_such_option=1)


def test_open_and_post_stamp_current_time(impl):
    capva_only(impl, "an open/post without timeStamp gets the current time (p4p sends 0)")
    pv = impl.SharedPV(nt=impl.nt.NTScalar("d"), initial=1.0)
    with serve(impl, {"st:x": pv}) as S, client(S.conf()) as C:
        t0 = C.get("st:x").timestamp
        assert abs(t0 - time.time()) < 60
        Q = queue.Queue()
        with C.monitor("st:x", Q.put):
            Q.get(timeout=T)
            pv.post(2.0)
            V = Q.get(timeout=T)
        assert V == 2.0
        assert abs(V.timestamp - time.time()) < 60
        assert V.timestamp >= t0


# --------------------------------------------------------------------------- providers


def test_dynamic_provider(impl):
    class Dyn:
        def __init__(self):
            self.tested = queue.Queue()
            self.made = queue.Queue()
            self.pvs = {}

        def testChannel(self, name):
            self.tested.put(name)
            if name.startswith("dyn:yes"):
                return True
            if name == "dyn:raise":
                raise RuntimeError("testChannel failure must not kill the server")
            return False

        def makeChannel(self, name, peer):
            self.made.put((name, peer))
            if name == "dyn:yes:none":
                return None
            if name not in self.pvs:
                self.pvs[name] = impl.SharedPV(nt=impl.nt.NTScalar("s"), initial=name)
            return self.pvs[name]

    H = Dyn()
    prov = impl.DynamicProvider("dynprov", H)
    with serve(impl, prov) as S, client(S.conf()) as C:
        assert C.get("dyn:yes:1") == "dyn:yes:1"
        assert C.get("dyn:yes:2") == "dyn:yes:2"
        made = [H.made.get(timeout=T) for _ in range(2)]
        assert sorted(n for n, _p in made) == ["dyn:yes:1", "dyn:yes:2"]
        for _n, peer in made:
            assert re.fullmatch(r"127\.0\.0\.1:\d+", peer), peer

        assert isinstance(C.get("dyn:no", timeout=0.5, throw=False), TimeoutError)
        assert isinstance(C.get("dyn:raise", timeout=0.5, throw=False), TimeoutError)
        assert isinstance(C.get("dyn:yes:none", timeout=0.5, throw=False), Exception)

        tested = set()
        while not H.tested.empty():
            tested.add(H.tested.get())
        assert {"dyn:no", "dyn:yes:1", "dyn:yes:2"} <= tested
        assert C.get("dyn:yes:1") == "dyn:yes:1"  # still serving after the failures


def test_dynamic_provider_notyet(impl):
    """testChannel() returning NotYet disclaims for now without caching the answer: once it
    says True, a client that keeps searching finds the PV."""
    p4p_bug(impl, "p4p 4.3 (pvxs) claims the PV at once: NotYet is b'nocache', which is truthy")
    NotYet = impl.DynamicProvider.NotYet
    ready = threading.Event()
    asked = queue.Queue()
    pv = impl.SharedPV(nt=impl.nt.NTScalar("s"), initial="lazy")

    class Lazy:
        def testChannel(self, name):
            asked.put(name)
            if name != "dyn:lazy":
                return False
            return True if ready.is_set() else NotYet

        def makeChannel(self, name, peer):
            return pv

    with serve(impl, impl.DynamicProvider("lazyprov", Lazy())) as S, client(S.conf()) as C:
        assert isinstance(C.get("dyn:lazy", timeout=0.5, throw=False), TimeoutError)
        assert asked.get(timeout=T) == "dyn:lazy"
        ready.set()
        C.hurryUp()
        assert C.get("dyn:lazy", timeout=15) == "lazy"


def test_static_provider_add_remove_keys(impl):
    prov = impl.StaticProvider("static-under-test")
    a = impl.SharedPV(nt=impl.nt.NTScalar("i"), initial=1)
    b = impl.SharedPV(nt=impl.nt.NTScalar("i"), initial=2)
    prov.add("sp:a", a)
    with serve(impl, prov) as S, client(S.conf()) as C:
        assert C.get("sp:a") == 1
        prov.add("sp:b", b)
        assert sorted(prov.keys()) == ["sp:a", "sp:b"]
        assert C.get("sp:b", timeout=10) == 2
        prov.remove("sp:b")
        assert sorted(prov.keys()) == ["sp:a"]
        with client(S.conf()) as C2:  # a fresh client cannot find it any more
            assert isinstance(C2.get("sp:b", timeout=0.5, throw=False), TimeoutError)
            assert C2.get("sp:a") == 1


def test_provider_order(impl):
    lo = impl.StaticProvider("low")
    hi = impl.StaticProvider("high")
    lo.add("ord:x", impl.SharedPV(nt=impl.nt.NTScalar("s"), initial="from-low"))
    hi.add("ord:x", impl.SharedPV(nt=impl.nt.NTScalar("s"), initial="from-high"))
    with serve(impl, (hi, 5), (lo, -5)) as S, client(S.conf()) as C:
        assert C.get("ord:x") == "from-low"  # lower order is asked first


def test_installed_provider_by_name(impl):
    prov = impl.StaticProvider("installed-under-test")
    prov.add("ip:x", impl.SharedPV(nt=impl.nt.NTScalar("i"), initial=11))
    impl.installProvider("capva-test-installed", prov)
    try:
        with serve(impl, "capva-test-installed") as S, client(S.conf()) as C:
            assert C.get("ip:x") == 11
    finally:
        impl.removeProvider("capva-test-installed")


def test_two_servers_one_host(impl):
    p1 = impl.SharedPV(nt=impl.nt.NTScalar("s"), initial="first")
    p2 = impl.SharedPV(nt=impl.nt.NTScalar("s"), initial="second")
    with serve(impl, {"one:x": p1}) as S1, serve(impl, {"two:x": p2}) as S2:
        c1, c2 = S1.conf(), S2.conf()
        assert c1["EPICS_PVAS_BROADCAST_PORT"] != c2["EPICS_PVAS_BROADCAST_PORT"]
        assert c1["EPICS_PVAS_SERVER_PORT"] != c2["EPICS_PVAS_SERVER_PORT"]
        with client(client_conf(c1, c2)) as C:
            assert C.get(["one:x", "two:x"]) == ["first", "second"]


def test_server_conf_keys(impl):
    with serve(impl, {}) as S:
        conf = S.conf()
    for k in (
        "EPICS_PVAS_INTF_ADDR_LIST",
        "EPICS_PVAS_SERVER_PORT",
        "EPICS_PVAS_BROADCAST_PORT",
        "EPICS_PVA_ADDR_LIST",
        "EPICS_PVA_AUTO_ADDR_LIST",
        "EPICS_PVA_SERVER_PORT",
        "EPICS_PVA_BROADCAST_PORT",
    ):
        assert k in conf, k
        assert isinstance(conf[k], str)
    assert conf["EPICS_PVAS_INTF_ADDR_LIST"] == "127.0.0.1"
    assert int(conf["EPICS_PVAS_SERVER_PORT"]) > 0
    assert int(conf["EPICS_PVAS_BROADCAST_PORT"]) > 0


# --------------------------------------------------------------------------- blocking handlers


def test_blocking_handler_does_not_stall_other_pvs(impl):
    """PV A's put handler sleeps 2 s; a put and a get on PV B complete within 1 s meanwhile."""
    entered = threading.Event()

    class Sleepy:
        def put(self, pv, op):
            entered.set()
            time.sleep(2.0)
            pv.post(op.value())
            op.done()

    a = impl.SharedPV(nt=impl.nt.NTScalar("d"), initial=0.0, handler=Sleepy())
    b = impl.SharedPV(nt=impl.nt.NTScalar("d"), initial=0.0, handler=Mailbox())
    with serve(impl, {"blk:a": a, "blk:b": b}) as S, client(S.conf()) as C:
        res = queue.Queue()
        th = threading.Thread(target=lambda: res.put(C.put("blk:a", 1.0, timeout=10, throw=False)))
        th.start()
        try:
            assert entered.wait(T)
            t0 = time.monotonic()
            C.put("blk:b", 2.0, timeout=5)
            assert C.get("blk:b", timeout=5) == 2.0
            dt = time.monotonic() - t0
            assert dt < 1.0, f"PV B waited {dt:.2f}s behind PV A's sleeping handler"
        finally:
            th.join(15)
        assert res.get(timeout=T) is None
        assert C.get("blk:a") == 1.0


def test_many_blocked_handlers_do_not_stall_others(impl):
    """More blocked handlers than p4p's 4 default workers: another PV still answers."""
    capva_only(impl, "p4p's fixed 4-thread pool stalls here")
    release = threading.Event()
    entered = queue.Queue()

    class Stuck:
        def put(self, pv, op):
            entered.put(op.name())
            release.wait(20)
            op.done()

    stuck = {
        f"stk:{i}": impl.SharedPV(nt=impl.nt.NTScalar("d"), initial=0.0, handler=Stuck()) for i in range(6)
    }
    free = impl.SharedPV(nt=impl.nt.NTScalar("d"), initial=0.0, handler=Mailbox())
    with serve(impl, dict(stuck, **{"stk:free": free})) as S, client(S.conf()) as C:
        res = queue.Queue()
        ths = [
            threading.Thread(target=lambda n=n: res.put(C.put(n, 1.0, timeout=20, throw=False)))
            for n in stuck
        ]
        for th in ths:
            th.start()
        try:
            names = {entered.get(timeout=T) for _ in stuck}
            assert names == set(stuck)
            t0 = time.monotonic()
            C.put("stk:free", 5.0, timeout=5)
            assert time.monotonic() - t0 < 1.0
        finally:
            release.set()
            for th in ths:
                th.join(20)
        assert [res.get(timeout=T) for _ in ths] == [None] * len(ths)


def test_handler_puts_to_other_pv_of_same_server(impl):
    """A's put handler performs a client put to B on the same server, then completes."""
    b_box = Mailbox()
    ctx = {}
    inner_errors = queue.Queue()

    class Forward:
        def put(self, pv, op):
            try:
                ctx["inner"].put("nest:b", float(op.value()) + 1, timeout=5)
            except Exception as e:  # reported below
                inner_errors.put(e)
            pv.post(op.value())
            op.done()

    a = impl.SharedPV(nt=impl.nt.NTScalar("d"), initial=0.0, handler=Forward())
    b = impl.SharedPV(nt=impl.nt.NTScalar("d"), initial=0.0, handler=b_box)
    with serve(impl, {"nest:a": a, "nest:b": b}) as S, client(S.conf()) as C, client(S.conf()) as inner:
        ctx["inner"] = inner
        t0 = time.monotonic()
        C.put("nest:a", 10.0, timeout=10)
        assert time.monotonic() - t0 < 5.0
        assert inner_errors.empty(), inner_errors.get()
        assert C.get("nest:b") == 11.0
        assert C.get("nest:a") == 10.0


# --------------------------------------------------------------------------- asyncio


def test_asyncio_client_against_thread_pvs(impl):
    box = Mailbox(rpc_reply=lambda op: impl.nt.NTScalar("i").wrap(7))
    pv = impl.SharedPV(nt=impl.nt.NTScalar("d"), initial=1.0, handler=box)

    async def main(conf):
        with p4p_aio.Context("pva", conf=conf, useenv=False) as ctx:
            assert await asyncio.wait_for(ctx.get("ac:x"), T) == 1.0
            Q = asyncio.Queue()

            async def cb(V):
                await Q.put(V)

            sub = ctx.monitor("ac:x", cb)
            try:
                assert await asyncio.wait_for(Q.get(), T) == 1.0
                await asyncio.wait_for(ctx.put("ac:x", 2.0), T)
                assert await asyncio.wait_for(Q.get(), T) == 2.0
                assert await asyncio.wait_for(ctx.get(["ac:x", "ac:x"]), T) == [2.0, 2.0]
                R = await asyncio.wait_for(ctx.rpc("ac:x", CValue(CType([("x", "i")]), {"x": 1})), T)
                assert R == 7
                with pytest.raises(RemoteError):
                    await asyncio.wait_for(ctx.put("ac:ro", 1.0), T)
            finally:
                sub.close()

    ro = impl.SharedPV(nt=impl.nt.NTScalar("d"), initial=0.0)
    with serve(impl, {"ac:x": pv, "ac:ro": ro}) as S:
        asyncio.run(asyncio.wait_for(main(S.conf()), 30))


def test_asyncio_sharedpv(impl):
    """server.asyncio.SharedPV with coroutine handlers, served and used from one loop."""

    class Handler:
        async def put(self, pv, op):
            await asyncio.sleep(0)  # prove that we can
            pv.post(op.value() * 2)
            op.done()

        async def rpc(self, pv, op):
            await asyncio.sleep(0)
            op.done(impl.nt.NTScalar("i").wrap(op.value().x + 1))

    async def main():
        pv = impl.asyncio.SharedPV(nt=impl.nt.NTScalar("i"), initial=0, handler=Handler())
        with serve(impl, {"as:x": pv}) as S:
            with p4p_aio.Context("pva", conf=S.conf(), useenv=False) as ctx:
                assert await asyncio.wait_for(ctx.get("as:x"), T) == 0
                await asyncio.wait_for(ctx.put("as:x", 21), T)
                assert await asyncio.wait_for(ctx.get("as:x"), T) == 42
                R = await asyncio.wait_for(ctx.rpc("as:x", CValue(CType([("x", "i")]), {"x": 1})), T)
                assert R == 2
                # a blocking thread client in an executor: the loop must keep serving
                loop = asyncio.get_running_loop()

                def blocking():
                    with client(S.conf()) as C:
                        C.put("as:x", 5, timeout=5)
                        return C.get("as:x", timeout=5)

                assert await asyncio.wait_for(loop.run_in_executor(None, blocking), 15) == 10
            pv.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_asyncio_sharedpv_loop_kw(impl):
    capva_only(impl, "asyncio.SharedPV accepts loop=")
    loop = asyncio.new_event_loop()
    ran_on = queue.Queue()

    class Handler:
        async def put(self, pv, op):
            ran_on.put(asyncio.get_running_loop())
            pv.post(op.value())
            op.done()

    try:
        pv = impl.asyncio.SharedPV(nt=impl.nt.NTScalar("d"), initial=1.0, handler=Handler(), loop=loop)

        async def main():
            with serve(impl, {"al:x": pv}) as S:
                with p4p_aio.Context("pva", conf=S.conf(), useenv=False) as ctx:
                    await asyncio.wait_for(ctx.put("al:x", 4.0), T)
                    assert await asyncio.wait_for(ctx.get("al:x"), T) == 4.0

        loop.run_until_complete(asyncio.wait_for(main(), 30))
        assert ran_on.get(timeout=T) is loop
    finally:
        loop.close()
