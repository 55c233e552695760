"""capva's PVA client against capva's own PVA server: a smoke set.

Why this file exists: the server is tested against p4p and pvapy clients elsewhere
(``test_server_*.py``) and the client against p4p, pvapy and softioc servers
(``test_client_*.py``); this file checks that the two halves of capva also agree with each
other over the wire, for each operation and both client flavours.  It also holds the
pipelined-monitor burst test, which pvxs's server cannot pass (it does not release queued
updates when an ACK reopens the window) but capva's server must.

The server is ``capva.server.Server(isolate=True)`` (127.0.0.1, random ports) in this
process, serving :class:`capva.server.thread.SharedPV` objects.
"""

from __future__ import annotations

import asyncio
import threading
import types

import numpy as np
import p4p  # noqa: F401  (a required peer of the client suites)
import pvaccess  # noqa: F401
import pytest

import capva
from capva import nt as cnt
from capva.client import Disconnected, RemoteError
from capva.client import asyncio as caio
from capva.server import Server, StaticProvider
from capva.server.thread import SharedPV
from support.client import FLAVOURS, Updates, open_context
from support.server import Mailbox

pytestmark = pytest.mark.timeout(60)


class Hanging:
    """A put handler that never completes; it reports the op, then its cancellation."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.cancelled = threading.Event()
        self.ops: list = []

    def put(self, pv, op) -> None:
        self.ops.append(op)
        op.onCancel(self.cancelled.set)
        self.started.set()


@pytest.fixture(scope="module")
def server():
    boxes = {k: Mailbox() for k in ("d", "ad", "s", "e", "st", "big", "mon")}
    calc = SharedPV(nt=cnt.NTScalar("d"), initial=0.0)

    @calc.rpc
    def add(pv, op):
        V = op.value()
        if V.query.a < 0:
            op.done(error="negative!")
        else:
            op.done(cnt.NTScalar("d").wrap(V.query.a + V.query.b))

    hang = Hanging()
    st_t = capva.Type([("a", "i"), ("u", ("U", None, [("i", "i"), ("s", "s")])), ("any", "v"), ("arr", "as")])
    pvs = {
        "cs:d": SharedPV(handler=boxes["d"], nt=cnt.NTScalar("d", display=True), initial=1.0),
        "cs:ad": SharedPV(handler=boxes["ad"], nt=cnt.NTScalar("ai"), initial=[1, 2, 3]),
        "cs:s": SharedPV(handler=boxes["s"], nt=cnt.NTScalar("s"), initial="hi"),
        "cs:e": SharedPV(
            handler=boxes["e"], nt=cnt.NTEnum(), initial={"index": 0, "choices": ["a", "b", "c"]}
        ),
        "cs:st": SharedPV(handler=boxes["st"], initial=capva.Value(st_t, {"a": 1, "u": ("s", "x")})),
        "cs:big": SharedPV(
            handler=boxes["big"], nt=cnt.NTScalar("ad"), initial=np.arange(10 * 2**20 // 8, dtype="f8")
        ),
        "cs:mon": SharedPV(handler=boxes["mon"], nt=cnt.NTScalar("i"), initial=0),
        "cs:ro": SharedPV(nt=cnt.NTScalar("d"), initial=0.0),
        "cs:calc": calc,
        "cs:hang": SharedPV(handler=hang, nt=cnt.NTScalar("d"), initial=0.0),
        "cs:nd": SharedPV(nt=cnt.NTNDArray(), initial=np.arange(6, dtype=np.int16).reshape(2, 3)),
    }
    prov = StaticProvider("capva-client-smoke")
    for k, v in pvs.items():
        prov.add(k, v)
    S = Server(providers=[prov], isolate=True)
    try:
        yield types.SimpleNamespace(S=S, conf=S.conf(), pvs=pvs, boxes=boxes, hang=hang, prov=prov)
    finally:
        S.stop()


@pytest.fixture(params=FLAVOURS)
def ctxt(request, server):
    with open_context(request.param, server.conf) as C:
        yield C


def test_get_put_forms(ctxt, server):
    pv, box = server.pvs["cs:d"], server.boxes["d"]
    assert isinstance(ctxt.get("cs:d"), cnt.ntfloat)
    for value, expect in [
        (2.0, 2.0),
        ({"value": 3.0, "display.units": "mm"}, 3.0),
        ('{"value": 4.0}', 4.0),
        (lambda V: setattr(V, "value", 5.0), 5.0),
        (cnt.NTScalar("d").wrap(6.0), 6.0),
    ]:
        ctxt.put("cs:d", value)
        box.ops.get(timeout=5)
        assert ctxt.get("cs:d") == expect == pv.current()
    assert ctxt.get("cs:d").raw.display.units == "mm"
    ctxt.put("cs:d", 7.0, process="true", wait=True)
    _V, req, _op = box.ops.get(timeout=5)
    assert req.todict()["record"]["_options"] == {"block": "true", "process": "true"}


def test_types(ctxt, server):
    ctxt.put("cs:ad", np.array([4, 5], dtype=np.int32))
    server.boxes["ad"].ops.get(timeout=5)
    v = ctxt.get("cs:ad")
    assert v.dtype == np.int32 and v.tolist() == [4, 5]
    ctxt.put("cs:s", "wörld")
    server.boxes["s"].ops.get(timeout=5)
    assert ctxt.get("cs:s") == "wörld"
    ctxt.put("cs:e", "c")
    server.boxes["e"].ops.get(timeout=5)
    e = ctxt.get("cs:e")
    assert e == 2 and e.choice == "c"
    ctxt.put("cs:st", {"u": ("i", 5), "any": 1.5, "arr": ["p", "q"]})
    server.boxes["st"].ops.get(timeout=5)
    V = ctxt.get("cs:st")
    assert V.u == 5 and V.any == 1.5 and V.arr == ["p", "q"]
    nd = ctxt.get("cs:nd")
    assert isinstance(nd, cnt.ntndarray) and nd.shape == (2, 3) and nd.dtype == np.int16


def test_big_array(ctxt, server):
    n = 10 * 2**20 // 8
    v = ctxt.get("cs:big", timeout=30)
    assert v.shape == (n,) and abs(v[-1] - v[0]) == n - 1
    ctxt.put("cs:big", v[::-1].copy(), timeout=30)
    server.boxes["big"].ops.get(timeout=10)
    np.testing.assert_array_equal(ctxt.get("cs:big", timeout=30), v[::-1])


def test_rpc_info_errors(ctxt, server):
    U = cnt.NTURI([("a", "d"), ("b", "d")])
    assert ctxt.rpc("cs:calc", U.wrap("cs:calc", kws={"a": 1.0, "b": 2.0})) == 3.0
    with pytest.raises(RemoteError, match="negative!"):
        ctxt.rpc("cs:calc", U.wrap("cs:calc", kws={"a": -1.0, "b": 2.0}))
    T = ctxt.info("cs:st")
    assert isinstance(T, capva.Type) and list(T.keys()) == ["a", "u", "any", "arr"]
    with pytest.raises(RemoteError):
        ctxt.put("cs:ro", 1.0)
    with pytest.raises(TimeoutError):
        ctxt.get("cs:missing", timeout=0.5)
    got = ctxt.get(["cs:s", "cs:missing"], timeout=0.5, throw=False)
    assert isinstance(got[1], TimeoutError) and isinstance(got[0], cnt.ntstr)


def test_monitor(ctxt, server):
    pv = server.pvs["cs:mon"]
    upd = Updates()
    with ctxt.monitor("cs:mon", upd, notify_disconnect=True):
        assert isinstance(upd.next(), Disconnected)
        base = int(upd.next())
        for k in range(1, 4):
            pv.post(base + k)
            assert upd.next() == base + k
    mupd = Updates()
    with open_context("thread", server.conf, nt=False) as C, C.monitor("cs:d", mupd, request="field(value)"):
        V = mupd.next()
        assert isinstance(V, capva.Value) and "value" in V.changedSet()


@pytest.mark.parametrize(
    "request_", ["record[pipeline=true,queueSize=2]", "record[pipeline=true,queueSize=5]"]
)
def test_monitor_pipeline_burst(ctxt, server, request_):
    """A burst of posts into a pipelined monitor: the client's ACKs keep the window open,
    updates arrive in order and the last one always arrives."""
    pv = server.pvs["cs:mon"]
    upd = Updates()
    with ctxt.monitor("cs:mon", upd, request=request_):
        base = int(upd.next())
        for k in range(1, 201):
            pv.post(base + k)
        seen = [int(v) for v in upd.until(lambda v: v == base + 200, timeout=20)]
        assert seen == sorted(set(seen))
        pv.post(base + 201)
        assert upd.next() == base + 201


def test_disconnect(ctxt, server):
    assert ctxt.get("cs:s") is not None
    ctxt.disconnect("cs:s")
    ctxt.disconnect()
    assert isinstance(ctxt.get("cs:s"), cnt.ntstr)


def test_asyncio_cancel_and_iterate(server):
    hang = server.hang

    async def main() -> None:
        async with caio.Context("pva", conf=server.conf, useenv=False) as C:
            hang.started.clear()
            hang.cancelled.clear()
            fut = C.put("cs:hang", 1.0)
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, hang.started.wait, 5)
            fut.cancel()
            with pytest.raises(asyncio.CancelledError):
                await fut
            assert await loop.run_in_executor(None, hang.cancelled.wait, 5)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(C.put("cs:hang", 2.0), 0.3)
            async with C.monitor("cs:s") as sub:
                async for v in sub:
                    assert isinstance(v, cnt.ntstr)
                    break
            assert await asyncio.wait_for(C.get(["cs:s", "cs:d"]), 5)

    asyncio.run(asyncio.wait_for(main(), 30))
