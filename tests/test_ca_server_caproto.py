"""capva's Channel Access server driven by caproto's threading client.

Why this file exists: caproto is the other widely used CA client implementation (pure
Python, written from the protocol specification rather than from libca), so it decodes our
replies with independent code: DBR layouts, extended headers, enum strings, status codes.
Each test reads, writes or monitors capva PVs with ``caproto.threading.client`` in this
process and checks the decoded values and metadata, put completion and failure, monitors of
arrays that grow and shrink, long strings, and a put seen over PVA (p4p) too.

caproto reads ``EPICS_CA_*`` from the environment at search time, so the module fixture sets
exactly the server's CA client settings in ``os.environ`` for its lifetime (restored after).
"""

from __future__ import annotations

import os
import queue
import threading
import uuid

import numpy as np
import p4p.client.thread
import pytest
from caproto import ChannelType
from caproto.threading.client import Context, SharedBroadcaster

from capva.nt import NTEnum, NTScalar
from capva.server import Server
from capva.server import SharedPV as MailboxPV
from capva.server.thread import SharedPV
from support.ca import ca_conf

pytestmark = pytest.mark.timeout(60)

ECA_NORMAL, ECA_PUTFAIL = 1, 160
EPICS_EPOCH = 631152000
STAMP = (1_700_000_000, 250_000_000)
T = 5.0


def _writable(pv):
    pv.ops = queue.Queue()

    @pv.put
    def handle(pv_, op):
        pv_.ops.put((op.value(), op.peer(), op.account()))
        pv_.post(op.value())
        op.done()

    return pv


def _pvs():
    ntd = NTScalar("d", display=True, control=True, valueAlarm=True, form=True)
    d = ntd.wrap(
        {
            "value": 1.5,
            "display.units": "mm",
            "display.precision": 3,
            "display.limitLow": -10,
            "display.limitHigh": 10,
            "control.limitLow": -5,
            "control.limitHigh": 5,
            "valueAlarm.lowAlarmLimit": -9,
            "valueAlarm.lowWarningLimit": -8,
            "valueAlarm.highWarningLimit": 8,
            "valueAlarm.highAlarmLimit": 9,
        },
        timestamp=STAMP,
    )
    fail = SharedPV(nt=NTScalar("i"), initial=0)

    @fail.put
    def refuse(pv, op):
        op.done(error="no")

    return {
        "d": _writable(SharedPV(nt=ntd, initial=d)),
        "i": _writable(SharedPV(nt=NTScalar("i"), initial=42)),
        "h": SharedPV(nt=NTScalar("h"), initial=-3),
        "f": SharedPV(nt=NTScalar("f"), initial=0.25),
        "b": SharedPV(nt=NTScalar("B"), initial=7),
        "s": _writable(SharedPV(nt=NTScalar("s"), initial="hello")),
        "bool": SharedPV(nt=NTScalar("?"), initial=False),
        "enum": _writable(SharedPV(nt=NTEnum(), initial=NTEnum().wrap(1, choices=["off", "on", "auto"]))),
        "arr": _writable(SharedPV(nt=NTScalar("ad"), initial=[1.0, 2.0], max_length=6)),
        "big": SharedPV(nt=NTScalar("ai"), initial=np.arange(100_000, dtype=np.int32)),
        "long": _writable(SharedPV(nt=NTScalar("s"), initial="z" * 70)),
        "ro": SharedPV(nt=NTScalar("d"), initial=3.0),
        "mbox": MailboxPV(nt=NTScalar("d"), initial=0.0),
        "fail": fail,
        "enum20": _writable(
            SharedPV(
                nt=NTEnum(), initial=NTEnum().wrap(17, choices=[f"state number {i:02d}" for i in range(20)])
            )
        ),
        "utf": SharedPV(nt=NTScalar("s"), initial="é" * 30),
    }


@pytest.fixture(scope="module")
def prefix():
    return "cp" + uuid.uuid4().hex[:6] + ":"


@pytest.fixture(scope="module")
def pvs():
    return _pvs()


@pytest.fixture(scope="module")
def server(pvs, prefix):
    S = Server(providers=[{prefix + k: v for k, v in pvs.items()}], isolate=True)
    try:
        yield S
    finally:
        S.stop()


@pytest.fixture(scope="module")
def ctx(server):
    conf = ca_conf(server.conf())
    with pytest.MonkeyPatch.context() as mp:
        for k in list(os.environ):
            if k.startswith("EPICS_CA"):
                mp.delenv(k)
        for k, v in conf.items():
            mp.setenv(k, v)
        B = SharedBroadcaster()
        C = Context(B, timeout=T)
        try:
            yield C
        finally:
            C.disconnect()
            B.disconnect()


@pytest.fixture
def pv(ctx, prefix):
    """``pv("d")``: a connected caproto PV."""

    def get(name):
        (p,) = ctx.get_pvs(prefix + name, timeout=T)
        p.wait_for_connection(timeout=T)
        return p

    return get


def test_native_types(pv):
    exp = {
        "d": (ChannelType.DOUBLE, 1),
        "i": (ChannelType.LONG, 1),
        "h": (ChannelType.INT, 1),
        "f": (ChannelType.FLOAT, 1),
        "b": (ChannelType.CHAR, 1),
        "s": (ChannelType.STRING, 1),
        "bool": (ChannelType.ENUM, 1),
        "enum": (ChannelType.ENUM, 1),
        "arr": (ChannelType.DOUBLE, 6),
        "big": (ChannelType.LONG, 100_000),
        "long.$": (ChannelType.CHAR, 71),
    }
    got = {}
    for n in exp:
        ch = pv(n).channel
        got[n] = (ch.native_data_type, ch.native_data_count)
    assert got == exp


def test_read_families(pv):
    p = pv("d")
    r = p.read()
    assert r.status.code_with_severity == ECA_NORMAL and r.data.tolist() == [1.5]
    r = p.read(data_type="status")
    assert r.data_type == ChannelType.STS_DOUBLE and r.metadata.severity == 0
    r = p.read(data_type="time")
    assert r.data_type == ChannelType.TIME_DOUBLE
    assert (r.metadata.secondsSinceEpoch + EPICS_EPOCH, r.metadata.nanoSeconds) == STAMP
    assert r.metadata.timestamp == pytest.approx(STAMP[0] + STAMP[1] * 1e-9)
    r = p.read(data_type="graphic")
    md = r.metadata
    assert r.data_type == ChannelType.GR_DOUBLE
    assert md.units == b"mm" and md.precision == 3
    assert (md.lower_disp_limit, md.upper_disp_limit) == (-10, 10)
    assert (md.lower_alarm_limit, md.lower_warning_limit, md.upper_warning_limit, md.upper_alarm_limit) == (
        -9,
        -8,
        8,
        9,
    )
    r = p.read(data_type="control")
    assert r.data_type == ChannelType.CTRL_DOUBLE
    assert (r.metadata.lower_ctrl_limit, r.metadata.upper_ctrl_limit) == (-5, 5)
    # the other base types, converted
    assert p.read(data_type=ChannelType.STRING).data == [b"1.500"]
    assert p.read(data_type=ChannelType.CTRL_LONG).data.tolist() == [1]
    assert p.read(data_type=ChannelType.CTRL_LONG).metadata.units == b"mm"
    assert p.read(data_type=ChannelType.TIME_FLOAT).data.tolist() == [1.5]
    # every type 0..34 and STSACK/CLASS_NAME decodes with status normal
    for t in list(range(35)) + [37, 38]:
        r = p.read(data_type=t)
        assert r.status.code_with_severity == ECA_NORMAL, (t, r)
        assert r.data_count == 1 and r.data_type == t


def test_read_other_natives(pv):
    assert pv("i").read().data.tolist() == [42]
    assert pv("h").read(data_type="control").data.tolist() == [-3]
    assert pv("f").read(data_type="time").data.tolist() == [0.25]
    assert pv("b").read(data_type="graphic").data.tolist() == [7]
    assert pv("s").read(data_type="time").data == [b"hello"]
    r = pv("bool").read(data_type="control")
    assert r.data.tolist() == [0] and list(r.metadata.enum_strings) == [b"false", b"true"]
    r = pv("enum").read(data_type="control")
    assert r.data.tolist() == [1] and list(r.metadata.enum_strings) == [b"off", b"on", b"auto"]
    assert pv("enum").read(data_type=ChannelType.STRING).data == [b"on"]


def test_large_array(pv):
    """100000 LONGs: extended headers both ways."""
    r = pv("big").read()
    assert r.data_count == 100_000 and (r.data == np.arange(100_000)).all()
    r = pv("big").read(data_type="time", data_count=10)
    assert r.data.tolist() == list(range(10))


def test_write_and_errors(pv, pvs):
    r = pv("d").write([2.5], wait=True)
    assert r.status.code_with_severity == ECA_NORMAL
    assert pvs["d"].current() == 2.5
    _, peer, account = pvs["d"].ops.get(timeout=T)
    assert peer.startswith("127.0.0.1:") and account
    assert pv("i").write(["17"], data_type=ChannelType.STRING, wait=True).status.code_with_severity == 1
    assert pvs["i"].current() == 17
    assert pv("s").write([b"new text"], wait=True).status.code_with_severity == 1
    assert pvs["s"].current() == "new text"
    assert pv("mbox").write([4.5], wait=True).status.code_with_severity == 1
    assert pvs["mbox"].current() == 4.5
    # the handler's op.done(error=...) -> ECA_PUTFAIL
    r = pv("fail").write([1], wait=True)
    assert r.status.code_with_severity == ECA_PUTFAIL
    # a bad conversion -> ECA_PUTFAIL, value kept
    r = pv("i").write([b"abc"], data_type=ChannelType.STRING, wait=True)
    assert r.status.code_with_severity == ECA_PUTFAIL
    assert pvs["i"].current() == 17


def test_read_only(pv, pvs):
    p = pv("ro")
    assert p.access_rights == 1  # read, no write
    r = p.write([1.0], wait=True)
    assert r.status.code_with_severity == 376  # ECA_NOWTACCESS
    assert pvs["ro"].current() == 3.0


def test_enum_writes(pv, pvs):
    p = pv("enum")
    assert p.write(["auto"], data_type=ChannelType.STRING, wait=True).status.code_with_severity == 1
    assert pvs["enum"].current() == 2
    assert p.write([0], data_type=ChannelType.ENUM, wait=True).status.code_with_severity == 1
    assert p.read(data_type=ChannelType.STRING).data == [b"off"]
    assert (
        p.write(["bogus"], data_type=ChannelType.STRING, wait=True).status.code_with_severity == ECA_PUTFAIL
    )


class Collector:
    def __init__(self):
        self.q: queue.Queue = queue.Queue()

    def __call__(self, sub, response):
        self.q.put(response)

    def next(self, timeout=T):
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no update within {timeout} s") from None


def test_monitor_scalar_alarm(pv, pvs):
    p = pv("d")
    c, ca = Collector(), Collector()
    sub = p.subscribe(data_type="time")
    sub.add_callback(c)
    asub = p.subscribe(data_type="status", mask=4)  # DBE_ALARM
    asub.add_callback(ca)
    try:
        first = c.next()
        ca.next()
        assert first.data.tolist() == [float(pvs["d"].current())]
        pvs["d"].post(6.0, timestamp=(1_750_000_000, 1))
        r = c.next()
        assert r.data.tolist() == [6.0] and r.metadata.secondsSinceEpoch == 1_750_000_000 - EPICS_EPOCH
        pvs["d"].post(7.0, severity=2, message="LOLO")
        r = c.next()
        assert (r.metadata.severity, r.metadata.status) == (2, 5)
        r = ca.next()
        assert (r.metadata.severity, r.metadata.status) == (2, 5) and r.data.tolist() == [7.0]
        pvs["d"].post(1.0, severity=0)
        assert ca.next().metadata.severity == 0
    finally:
        sub.clear()
        asub.clear()


def test_monitor_array_grow_shrink(pv, pvs):
    p = pv("arr")
    dyn, fixed = Collector(), Collector()
    s1 = p.subscribe(data_type="time", data_count=0)
    s1.add_callback(dyn)
    s2 = p.subscribe(data_type="native", data_count=4)
    s2.add_callback(fixed)
    try:
        assert dyn.next().data.tolist() == [1.0, 2.0]
        assert fixed.next().data.tolist() == [1.0, 2.0, 0.0, 0.0]
        for arr in ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [9.0], []):
            pvs["arr"].post(arr)
            assert dyn.next().data.tolist() == arr
            assert fixed.next().data.tolist() == (arr + [0.0] * 4)[:4]
        assert p.write([5.0, 6.0, 7.0], wait=True).status.code_with_severity == 1
        assert dyn.next().data.tolist() == [5.0, 6.0, 7.0]
        r = p.read(data_count=0)
        assert r.data.tolist() == [5.0, 6.0, 7.0]
    finally:
        s1.clear()
        s2.clear()


def test_long_string(pv, pvs):
    p = pv("long.$")
    r = p.read()
    assert bytes(r.data) == b"z" * 70 + b"\0"
    assert p.write(list(b"short\0"), data_type=ChannelType.CHAR, wait=True).status.code_with_severity == 1
    assert pvs["long"].current() == "short"
    assert bytes(p.read(data_count=0).data) == b"short\0"
    pvs["long"].post("z" * 70)


def test_put_seen_over_pva(pv, pvs, server, prefix):
    q: queue.Queue = queue.Queue()
    with p4p.client.thread.Context("pva", conf=server.conf(), useenv=False) as C:
        sub = C.monitor(prefix + "i", q.put)
        try:
            q.get(timeout=T)
            assert pv("i").write([1234], wait=True).status.code_with_severity == 1
            assert q.get(timeout=T) == 1234
            C.put(prefix + "i", 4321)
            assert pv("i").read().data.tolist() == [4321]
        finally:
            sub.close()


def test_concurrent_writers(pv, pvs):
    """Several threads writing with notify on one circuit: every completion arrives."""
    p = pv("mbox")
    errors: list = []

    def writer(k):
        try:
            for j in range(20):
                r = p.write([float(k * 100 + j)], wait=True)
                assert r.status.code_with_severity == 1
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and not any(t.is_alive() for t in threads)


def test_enum_with_more_than_16_choices(pv, pvs):
    """docs/ca-pva-mapping.md §2: still ENUM; GR/CTRL list the first 16 choices; an index
    beyond them reads as its full text over DBR_STRING; a string write matches any choice."""
    p = pv("enum20")
    assert p.channel.native_data_type == ChannelType.ENUM
    ctrl = p.read(data_type=ChannelType.CTRL_ENUM)
    assert ctrl.data.tolist() == [17]
    assert [s.decode() for s in ctrl.metadata.enum_strings] == [f"state number {i:02d}" for i in range(16)]
    assert p.read(data_type=ChannelType.STRING).data == [b"state number 17"]
    assert (
        p.write(["state number 19"], data_type=ChannelType.STRING, wait=True).status.code_with_severity == 1
    )
    assert pvs["enum20"].current() == 19


def test_over_long_utf8_string_is_cut_at_a_character(pv):
    """DBR_STRING holds 39 bytes: 30 two-byte characters are cut to 19 whole ones, never a
    broken UTF-8 tail; ``NAME.$`` carries all 60 bytes."""
    assert pv("utf").read(data_type=ChannelType.STRING).data == [("é" * 19).encode()]
    whole = pv("utf.$").read(data_type=ChannelType.CHAR).data
    assert bytes(whole).rstrip(b"\0").decode() == "é" * 30
