"""capva's Channel Access server driven by libca, the EPICS C client (through pyepics).

Why this file exists: libca is what caget, camonitor, EDM, CSS/Phoebus, the archiver and
pyepics use; a CA server is only useful if libca accepts every answer it gives.  Each test
reads, writes or monitors capva PVs with libca in a child process (tests/support/ca.py) and
checks what libca decoded: the native type and count chosen by docs/ca-pva-mapping.md, every
DBR family (plain, STS, TIME, GR, CTRL) of every native type, enums by index and by string,
put completion and put failures, alarms and time stamps, arrays that grow and shrink under
count-0 and fixed-count subscriptions, DBE masks, long strings (``NAME.$``), a PV seen over CA
and PVA at once, disconnection when the server stops, 1000 channels on one circuit, and two
servers sharing the CA UDP port.  A reference IOC (pythonSoftIOC, RSRV) serves records with
the same values and metadata, and the same libca reads must give the same answer from both.
"""

from __future__ import annotations

import math
import queue
import socket
import time
import uuid

import epics  # noqa: F401  (a required peer: fail here, clearly, if missing)
import numpy as np
import p4p.client.thread
import pytest
import softioc  # noqa: F401  (the reference IOC runs in a subprocess)

from capva.nt import NTEnum, NTScalar
from capva.nt.table import NTTable
from capva.server import Server
from capva.server import SharedPV as MailboxPV
from capva.server.thread import SharedPV
from support.ca import FAMILIES, STSACK_STRING, TYPES, SoftIOC, ca_conf, dbr_type, pyepics_worker

pytestmark = pytest.mark.timeout(60)

ECA_NORMAL, ECA_PUTFAIL, ECA_NOWTACCESS, ECA_BADCOUNT = 1, 160, 376, 176
EPICS_EPOCH = 631152000
STRING, SHORT, FLOAT, ENUM, CHAR, LONG, DOUBLE = range(7)
DBE_VALUE, DBE_LOG, DBE_ALARM, DBE_PROPERTY = 1, 2, 4, 8
STAMP = (1_700_000_000, 123456789)


# --------------------------------------------------------------------------- PVs


def _full(code: str, value, **fields):
    """A PV of an NTScalar with display (precision form), control and valueAlarm, whose
    fields are set from ``fields`` (``display__units="mm"``), stamped STAMP."""
    nt = NTScalar(code, display=True, control=True, valueAlarm=True, form=True)
    d = {"value": value}
    d.update({k.replace("__", "."): v for k, v in fields.items()})
    return SharedPV(nt=nt, initial=nt.wrap(d, timestamp=STAMP))


def _writable(pv):
    """A p4p-flavour PV whose put handler posts the value, records the op, and completes."""
    pv.ops = queue.Queue()

    @pv.put
    def handle(pv_, op):
        pv_.ops.put((op.value(), op.peer(), op.account()))
        pv_.post(op.value())
        op.done()

    return pv


# Values and metadata shared with the reference IOC (records of the same names).
REF_RECORDS = """
recs["AI"] = builder.aIn("AI", initial_value=1.25, LOPR=-10, HOPR=10, EGU="mm", PREC=3,
    HIHI=9, HIGH=5, LOW=-5, LOLO=-9, HHSV="MAJOR", HSV="MINOR", LSV="MINOR", LLSV="MAJOR")
recs["LI"] = builder.longIn("LI", initial_value=70, LOPR=0, HOPR=1000, EGU="cts",
    HIHI=900, HIGH=800, LOW=10, LOLO=5, HHSV="MAJOR", HSV="MINOR", LSV="MINOR", LLSV="MAJOR")
recs["MBBI"] = builder.mbbIn("MBBI", "zero", "one", "two", initial_value=1)
recs["SI"] = builder.stringIn("SI", initial_value="hello")
import numpy
recs["WF"] = builder.WaveformIn("WF", initial_value=[1.5, 2.5, 3.5], length=10, PREC=2, EGU="V",
    LOPR=0, HOPR=5)
recs["WFS"] = builder.WaveformIn("WFS", initial_value=numpy.array([1, 2, -3], numpy.int16), length=10)
recs["WFF"] = builder.WaveformIn("WFF", initial_value=numpy.array([0.5, 1.5], numpy.float32), length=10)
recs["WFC"] = builder.WaveformIn("WFC", initial_value=numpy.array([65, 66, 255], numpy.uint8), length=10)
"""


def _ref_pvs() -> dict:
    lim = {
        "display__units": "mm",
        "display__precision": 3,
        "display__limitLow": -10,
        "display__limitHigh": 10,
    }
    lim.update(control__limitLow=-10, control__limitHigh=10)
    lim.update(
        valueAlarm__lowAlarmLimit=-9,
        valueAlarm__lowWarningLimit=-5,
        valueAlarm__highWarningLimit=5,
        valueAlarm__highAlarmLimit=9,
    )
    li = {"display__units": "cts", "display__limitLow": 0, "display__limitHigh": 1000}
    li.update(control__limitLow=0, control__limitHigh=1000)
    li.update(
        valueAlarm__lowAlarmLimit=5,
        valueAlarm__lowWarningLimit=10,
        valueAlarm__highWarningLimit=800,
        valueAlarm__highAlarmLimit=900,
    )
    ntli = NTScalar("i", display=True, control=True, valueAlarm=True)
    LI = ntli.wrap({"value": 70, **{k.replace("__", "."): v for k, v in li.items()}}, timestamp=STAMP)
    ntwf = NTScalar("ad", display=True, control=True, form=True)
    wf = ntwf.wrap(
        {
            "value": [1.5, 2.5, 3.5],
            "display.units": "V",
            "display.precision": 2,
            "display.limitLow": 0,
            "display.limitHigh": 5,
            "control.limitLow": 0,
            "control.limitHigh": 5,
        },
        timestamp=STAMP,
    )
    return {
        "AI": _full("d", 1.25, **lim),
        "LI": SharedPV(nt=ntli, initial=LI),
        "MBBI": SharedPV(nt=NTEnum(), initial=NTEnum().wrap(1, choices=["zero", "one", "two"])),
        "SI": SharedPV(nt=NTScalar("s"), initial="hello"),
        "WF": SharedPV(nt=ntwf, initial=wf, max_length=10),
        "WFS": SharedPV(nt=NTScalar("ah"), initial=np.array([1, 2, -3], np.int16), max_length=10),
        # PREC 0 on the record: precision 0 declared (an undeclared one prints the shortest text)
        "WFF": SharedPV(
            nt=NTScalar("af", display=True, form=True),
            initial={"value": [0.5, 1.5], "display.precision": 0},
            max_length=10,
        ),
        "WFC": SharedPV(nt=NTScalar("aB"), initial=np.array([65, 66, 255], np.uint8), max_length=10),
    }


class Slow:
    """A put handler that completes only when the test says so."""

    def __init__(self):
        self.ops: queue.Queue = queue.Queue()

    def put(self, pv, op):
        self.ops.put(op)


def _pvs() -> dict:
    pvs = _ref_pvs()
    pvs.update(
        h=_writable(_full("h", 3, display__units="A", display__limitLow=-5, display__limitHigh=5)),
        f=_writable(_full("f", 2.5, display__precision=2)),
        b=_writable(SharedPV(nt=NTScalar("b"), initial=-1)),
        B=_writable(SharedPV(nt=NTScalar("B"), initial=200)),
        bool=_writable(SharedPV(nt=NTScalar("?"), initial=True)),
        L=_writable(SharedPV(nt=NTScalar("L"), initial=2**40 + 3)),
        I=SharedPV(nt=NTScalar("I"), initial=4_000_000_000),
        l=SharedPV(nt=NTScalar("l"), initial=-(2**40)),
        H=SharedPV(nt=NTScalar("H"), initial=65535),
        i=_writable(SharedPV(nt=NTScalar("i"), initial=-7)),
        d=_writable(_full("d", 0.5, display__precision=2, display__units="V")),
        s=_writable(SharedPV(nt=NTScalar("s"), initial="text")),
        enum=_writable(SharedPV(nt=NTEnum(), initial=NTEnum().wrap(0, choices=["red", "green", "blue"]))),
        mbox=MailboxPV(nt=NTScalar("i"), initial=5),
        ro=SharedPV(nt=NTScalar("d"), initial=9.5),
        fail=SharedPV(nt=NTScalar("d"), initial=0.0),
        slow=SharedPV(handler=Slow(), nt=NTScalar("d"), initial=0.0),
        arr=_writable(SharedPV(nt=NTScalar("ad"), initial=[1.0, 2.0, 3.0], max_length=8)),
        arr4=SharedPV(nt=NTScalar("ai"), initial=[1, 2, 3, 4]),
        barr=SharedPV(nt=NTScalar("a?"), initial=[True, False, True]),
        sarr=SharedPV(nt=NTScalar("as"), initial=["a", "bc"]),
        long=_writable(SharedPV(nt=NTScalar("s"), initial="x" * 100)),
        alarm=_writable(_full("d", 1.0, display__units="mm", display__precision=1)),
        tbl=SharedPV(nt=NTTable([("a", "d")]), initial=[{"a": 1.0}]),
    )

    @pvs["fail"].put
    def refuse(pv, op):
        op.done(error="refused by the test handler")

    return pvs


@pytest.fixture(scope="module")
def prefix():
    return "capva" + uuid.uuid4().hex[:6] + ":"


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
def W(server):
    with pyepics_worker(ca_conf(server.conf())) as w:
        yield w


def connect(W, prefix, *names, timeout=10.0):
    info = W.call("connect", names=[prefix + n for n in names], timeout=timeout)
    for n, i in info.items():
        assert i["connected"], f"{n} did not connect: {i}"
    return {n[len(prefix) :]: i for n, i in info.items()}


# --------------------------------------------------------------------------- types, counts


NATIVE = {
    # name: (native type, native count)
    "AI": (DOUBLE, 1),
    "LI": (LONG, 1),
    "MBBI": (ENUM, 1),
    "SI": (STRING, 1),
    "h": (SHORT, 1),
    "f": (FLOAT, 1),
    "b": (CHAR, 1),
    "B": (CHAR, 1),
    "bool": (ENUM, 1),
    "L": (DOUBLE, 1),
    "I": (DOUBLE, 1),
    "l": (DOUBLE, 1),
    "H": (LONG, 1),
    "i": (LONG, 1),
    "enum": (ENUM, 1),
    "WF": (DOUBLE, 10),
    "WFS": (SHORT, 10),
    "WFF": (FLOAT, 10),
    "WFC": (CHAR, 10),
    "arr": (DOUBLE, 8),
    "arr4": (LONG, 4),
    "barr": (ENUM, 3),
    "sarr": (STRING, 2),
    "long.$": (CHAR, 101),
}


def test_native_type_and_count(W, prefix, server):
    info = connect(W, prefix, *NATIVE)
    got = {n: (i["type"], i["count"]) for n, i in info.items()}
    assert got == NATIVE
    hosts = {i["host"] for i in info.values()}
    assert len(hosts) == 1, f"one circuit expected, got {hosts}"
    port = int(server.conf()["EPICS_CA_ADDR_LIST"].split(":")[1])
    assert hosts.pop().endswith(f":{port}")
    assert info["AI"]["read"] and info["AI"]["write"] is False  # no put handler: read-only


def test_no_ca_view_not_found(W, prefix):
    """NTTable has no CA view: the search gets no answer (and unknown names neither)."""
    info = W.call("connect", names=[prefix + "tbl", prefix + "nosuch"], timeout=1.0)
    assert not any(i["connected"] for i in info.values()), info


def test_access_rights(W, prefix):
    info = connect(W, prefix, "ro", "mbox", "d", "fail")
    assert info["ro"]["read"] and not info["ro"]["write"]
    assert info["mbox"]["write"] and info["d"]["write"] and info["fail"]["write"]


# --------------------------------------------------------------------------- every DBR family


def _cmp(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _comparable(r: dict, native: int) -> dict:
    """What must match RSRV: all but stamps, ACKT/ACKS (no alarm acknowledgement here) and
    two documented choices: the count of a count-0 read that failed (RSRV: 0, capva: 1),
    and the alarm limits of a numeric GR/CTRL read of an ENUM channel (RSRV sends NaN or
    stale values; docs/ca-pva-mapping.md §2 and ca-protocol.md §3.4 say zeros)."""
    out = {k: v for k, v in r.items() if k not in ("secs", "nsec", "ackt", "acks")}
    if r["eca"] != ECA_NORMAL:
        out.pop("count")
    if native == ENUM and r["type"] % 7 != ENUM:
        for k in ("upper_alarm_limit", "upper_warning_limit", "lower_warning_limit", "lower_alarm_limit"):
            out.pop(k, None)
    return out


REF_NAMES = ("AI", "LI", "MBBI", "SI", "WF", "WFS", "WFF", "WFC")
ALL_TYPES = [dbr_type(f, t) for f in FAMILIES for t in TYPES]


@pytest.fixture(scope="module")
def ioc():
    P = SoftIOC(REF_RECORDS, "REF" + uuid.uuid4().hex[:6].upper())
    try:
        yield P
    finally:
        P.stop()


@pytest.fixture(scope="module")
def W_ioc(ioc):
    with pyepics_worker(ca_conf(ioc.conf)) as w:
        yield w


@pytest.mark.parametrize("name", REF_NAMES)
def test_same_answer_as_rsrv(W, W_ioc, ioc, prefix, name):
    """Every DBR type 0..34 (and STSACK_STRING), count 0 and the native count: libca decodes
    the same value and metadata from capva as from RSRV serving a record with the same value,
    limits, units and precision (stamps aside)."""
    ci = connect(W, prefix, name)[name]
    ri = W_ioc.call("connect", names=[ioc.prefix + name], timeout=10)[ioc.prefix + name]
    assert (ci["type"], ci["count"]) == (ri["type"], ri["count"])
    diffs = []
    for t in ALL_TYPES + [STSACK_STRING]:
        for count in (None, ci["count"]):
            c = _comparable(W.call("get", name=prefix + name, type=t, count=count), ci["type"])
            r = _comparable(W_ioc.call("get", name=ioc.prefix + name, type=t, count=count), ci["type"])
            keys = sorted(set(c) | set(r))
            bad = {
                k: (c.get(k), r.get(k))
                for k in keys
                if not (_cmp(c.get(k), r.get(k)) or _listcmp(c.get(k), r.get(k)))
            }
            if bad:
                diffs.append(f"type {t} count {count}: (capva, rsrv) {bad}")
    assert not diffs, "\n".join(diffs)


def _listcmp(a, b):
    return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(map(_cmp, a, b))


def _conv(x, native):
    """C-cast of a number to a native CA type (ca-protocol.md §3.4)."""
    if native in (FLOAT,):
        return float(np.float32(x))
    if native == DOUBLE:
        return float(x)
    v = int(math.trunc(x))
    bits, signed = {SHORT: (16, True), ENUM: (16, False), CHAR: (8, False), LONG: (32, True)}[native]
    v &= (1 << bits) - 1
    if signed and v >= 1 << (bits - 1):
        v -= 1 << bits
    return v


@pytest.mark.parametrize(
    "name,value,text",
    [
        ("h", 3, "3"),
        ("f", 2.5, "2.50"),
        ("b", 255, "-1"),
        ("B", 200, "200"),
        ("i", -7, "-7"),
        ("H", 65535, "65535"),
    ],
)
def test_numeric_every_family(W, prefix, name, value, text):
    """Natives RSRV has no record for here: every family and base type, value converted by
    C-cast rules, alarm fields present, stamps where TIME, metadata where GR/CTRL."""
    native = connect(W, prefix, name)[name]["type"]
    for fam in FAMILIES:
        for t in TYPES:
            code = dbr_type(fam, t)
            r = W.call("get", name=prefix + name, type=code)
            assert r["eca"] == ECA_NORMAL and r["count"] == 1, (code, r)
            if t == "STRING":
                assert r["value"] == [text], (code, r)
            else:
                raw = value if native != CHAR or name != "b" else 255
                assert r["value"] == [_conv(raw, TYPES.index(t))], (code, r)
            if fam:
                assert (r["status"], r["severity"]) == (0, 0), (code, r)
            if fam == "TIME":
                assert (r["secs"], r["nsec"]) != (0, 0) or name in ("b", "B", "i", "H"), r
    if name == "h":
        r = W.call("get", name=prefix + "h", type=dbr_type("CTRL", "DOUBLE"))
        assert r["units"] == "A" and (r["lower_disp_limit"], r["upper_disp_limit"]) == (-5.0, 5.0)
        assert r["precision"] == 0


def test_time_stamp_exact(W, prefix):
    connect(W, prefix, "AI")
    r = W.call("get", name=prefix + "AI", type=dbr_type("TIME", "DOUBLE"))
    assert (r["secs"] + EPICS_EPOCH, r["nsec"]) == STAMP


def test_64bit_as_double(W, prefix):
    connect(W, prefix, "L", "I", "l")
    assert W.call("get", name=prefix + "L")["value"] == [float(2**40 + 3)]
    assert W.call("get", name=prefix + "L", type=STRING)["value"] == [str(2**40 + 3)]
    assert W.call("get", name=prefix + "I")["value"] == [4e9]
    assert W.call("get", name=prefix + "l", type=STRING)["value"] == [str(-(2**40))]


def test_bool_is_enum(W, prefix, pvs):
    connect(W, prefix, "bool")
    r = W.call("get", name=prefix + "bool", type=dbr_type("CTRL", "ENUM"))
    assert r["enum_strs"] == ["false", "true"] and r["value"] == [1]
    assert W.call("get", name=prefix + "bool", type=STRING)["value"] == ["true"]
    assert (
        W.call("put", name=prefix + "bool", value="false", type=STRING, notify=True)["status"] == ECA_NORMAL
    )
    assert bool(pvs["bool"].current()) is False
    assert W.call("put", name=prefix + "bool", value=1, type=ENUM, notify=True)["status"] == ECA_NORMAL
    assert bool(pvs["bool"].current()) is True
    assert (
        W.call("put", name=prefix + "bool", value="maybe", type=STRING, notify=True)["status"] == ECA_PUTFAIL
    )


def test_array_families(W, prefix):
    """Arrays: count 0 gives the current length, a larger count zero-fills, a smaller one cuts."""
    connect(W, prefix, "arr4", "barr", "sarr")
    for fam in FAMILIES:
        for t in TYPES:
            code = dbr_type(fam, t)
            r = W.call("get", name=prefix + "arr4", type=code)
            assert r["eca"] == ECA_NORMAL and r["count"] == 4, (code, r)
            exp = ["1", "2", "3", "4"] if t == "STRING" else [_conv(x, TYPES.index(t)) for x in (1, 2, 3, 4)]
            assert r["value"] == exp, (code, r)
            r = W.call("get", name=prefix + "arr4", type=code, count=2)
            assert r["count"] == 2 and r["value"] == exp[:2], (code, r)
    r = W.call("get", name=prefix + "barr", type=dbr_type("CTRL", "ENUM"))
    assert r["value"] == [1, 0, 1] and r["enum_strs"] == ["false", "true"]
    assert W.call("get", name=prefix + "sarr")["value"] == ["a", "bc"]


# --------------------------------------------------------------------------- enums


def test_enum_by_index_and_string(W, prefix, pvs):
    connect(W, prefix, "enum")
    r = W.call("get", name=prefix + "enum", type=dbr_type("CTRL", "ENUM"))
    assert r["enum_strs"] == ["red", "green", "blue"] and r["no_str"] == 3 and r["value"] == [0]
    assert W.call("put", name=prefix + "enum", value=2, type=ENUM, notify=True)["status"] == ECA_NORMAL
    assert W.call("get", name=prefix + "enum", type=STRING)["value"] == ["blue"]
    assert (
        W.call("put", name=prefix + "enum", value="green", type=STRING, notify=True)["status"] == ECA_NORMAL
    )
    assert W.call("get", name=prefix + "enum")["value"] == [1]
    assert pvs["enum"].current() == 1
    assert W.call("put", name=prefix + "enum", value="0", type=STRING, notify=True)["status"] == ECA_NORMAL
    assert W.call("get", name=prefix + "enum")["value"] == [0]
    assert (
        W.call("put", name=prefix + "enum", value="purple", type=STRING, notify=True)["status"] == ECA_PUTFAIL
    )
    assert W.call("get", name=prefix + "enum")["value"] == [0]
    # pyepics' own high level: enum as string
    assert W.call("pv_get", name=prefix + "enum", as_string=True) == "red"
    info = W.call("pv_info", name=prefix + "enum")
    assert info["enum_strs"] == ["red", "green", "blue"]


# --------------------------------------------------------------------------- puts


def test_put_every_type_reaches_handler(W, prefix, pvs):
    connect(W, prefix, "d", "i", "s", "h", "f")
    for t, v in ((DOUBLE, 1.5), (FLOAT, 2.25), (LONG, 3), (SHORT, -4), (CHAR, 5), (STRING, "6.5")):
        assert W.call("put", name=prefix + "d", value=v, type=t, notify=True)["status"] == ECA_NORMAL
        assert pvs["d"].current() == float(v)
        _, peer, account = pvs["d"].ops.get(timeout=5)
        assert peer.startswith("127.0.0.1:") and account
    assert W.call("put", name=prefix + "i", value="0x10", type=STRING, notify=True)["status"] == ECA_NORMAL
    assert pvs["i"].current() == 16
    assert W.call("put", name=prefix + "i", value=3.9, type=DOUBLE, notify=True)["status"] == ECA_NORMAL
    assert pvs["i"].current() == 3
    assert (
        W.call("put", name=prefix + "s", value="hello world", type=STRING, notify=True)["status"]
        == ECA_NORMAL
    )
    assert pvs["s"].current() == "hello world"
    assert W.call("put", name=prefix + "s", value=42, type=LONG, notify=True)["status"] == ECA_NORMAL
    assert pvs["s"].current() == "42"
    # conversion failures are ECA_PUTFAIL (and the PV keeps its value)
    for name, v, t in (("i", "12abc", STRING), ("i", 1e12, DOUBLE), ("h", 70000, LONG), ("d", "abc", STRING)):
        before = pvs[name].current()
        assert W.call("put", name=prefix + name, value=v, type=t, notify=True)["status"] == ECA_PUTFAIL, (
            name,
            v,
        )
        assert pvs[name].current() == before
    # a plain put (no callback) works as well
    W.call("put", name=prefix + "d", value=8.0, type=DOUBLE)
    assert pvs["d"].ops.get(timeout=5)[0] == 8.0


def test_put_callback_waits_for_done(W, prefix, pvs):
    connect(W, prefix, "slow")
    handler = pvs["slow"]._handler
    key = W.call("put_start", name=prefix + "slow", value=4.0, type=DOUBLE)
    op = handler.ops.get(timeout=5)
    assert op.value() == 4.0
    assert W.call("put_result", key=key, timeout=0.3) is None, "WRITE_NOTIFY completed before op.done()"
    pvs["slow"].post(op.value())
    op.done()
    assert W.call("put_result", key=key, timeout=5) == ECA_NORMAL
    # an error completion
    key = W.call("put_start", name=prefix + "slow", value=5.0, type=DOUBLE)
    op = handler.ops.get(timeout=5)
    op.done(error="late failure")
    assert W.call("put_result", key=key, timeout=5) == ECA_PUTFAIL


def test_put_error_from_handler(W, prefix):
    connect(W, prefix, "fail")
    r = W.call("put", name=prefix + "fail", value=1.0, type=DOUBLE, notify=True)
    assert r["status"] == ECA_PUTFAIL
    # a plain put gets an ERROR message: libca's exception handler sees ECA_PUTFAIL
    W.call("exceptions", n=0, timeout=0)
    W.call("put", name=prefix + "fail", value=2.0, type=DOUBLE)
    ex = W.call("exceptions", n=1, timeout=5)
    assert [e["stat"] for e in ex] == [ECA_PUTFAIL], ex
    # pyepics' high-level put with wait=True returns (it does not see the status)
    assert W.call("pv_put", name=prefix + "fail", value=3.0, wait=True) == 1


def test_read_only_refuses_puts(W, prefix, pvs):
    connect(W, prefix, "ro")
    r = W.call("put", name=prefix + "ro", value=1.0, type=DOUBLE, notify=True)
    assert r.get("request_status", r.get("status")) == ECA_NOWTACCESS
    assert pvs["ro"].current() == 9.5


def test_mailbox_pv(W, prefix, pvs):
    connect(W, prefix, "mbox")
    assert W.call("put", name=prefix + "mbox", value=11, type=LONG, notify=True)["status"] == ECA_NORMAL
    assert pvs["mbox"].current() == 11
    assert W.call("get", name=prefix + "mbox")["value"] == [11]


# --------------------------------------------------------------------------- alarms, time, DBE


def test_alarm_and_timestamp_monitor(W, prefix, pvs):
    pv = pvs["alarm"]
    connect(W, prefix, "alarm")
    sub_all = W.call(
        "monitor", name=prefix + "alarm", type=dbr_type("TIME", "DOUBLE"), mask=DBE_VALUE | DBE_ALARM
    )
    sub_alarm = W.call("monitor", name=prefix + "alarm", type=dbr_type("STS", "DOUBLE"), mask=DBE_ALARM)
    sub_prop = W.call("monitor", name=prefix + "alarm", type=dbr_type("CTRL", "DOUBLE"), mask=DBE_PROPERTY)
    for s in (sub_all, sub_alarm, sub_prop):
        (first,) = W.call("events", sub=s, n=1, timeout=5)
        assert first["eca"] == ECA_NORMAL and first["value"] == [1.0]
    # a value change, no alarm change
    pv.post(2.0, timestamp=(1_800_000_000, 5))
    (e,) = W.call("events", sub=sub_all, n=1, timeout=5)
    assert e["value"] == [2.0] and (e["secs"] + EPICS_EPOCH, e["nsec"]) == (1_800_000_000, 5)
    assert (e["status"], e["severity"]) == (0, 0)
    # an alarm: MAJOR with a QSRV-style message names the CA condition (HIHI = 3)
    pv.post(3.0, severity=2, message="HIHI", timestamp=(1_800_000_001, 0))
    (e,) = W.call("events", sub=sub_all, n=1, timeout=5)
    assert e["value"] == [3.0] and (e["severity"], e["status"]) == (2, 3)
    (e,) = W.call("events", sub=sub_alarm, n=1, timeout=5)
    assert (e["severity"], e["status"], e["value"]) == (2, 3, [3.0])
    # a software alarm without a known message: SOFT (19)
    pv.post(4.0, severity=1, message="custom text")
    (e,) = W.call("events", sub=sub_alarm, n=1, timeout=5)
    assert (e["severity"], e["status"]) == (1, 15)
    # metadata change: PROPERTY only
    pv.post({"display.units": "km"})
    (e,) = W.call("events", sub=sub_prop, n=1, timeout=5)
    assert e["units"] == "km"
    # back to no alarm
    pv.post(5.0, severity=0, message="")
    (e,) = W.call("events", sub=sub_alarm, n=1, timeout=5)
    assert (e["severity"], e["status"]) == (0, 0)
    # VALUE|ALARM saw 4.0 (value and alarm) and 5.0, not the units change (PROPERTY only)
    evs = W.call("events", sub=sub_all, n=2, timeout=5)
    assert [(x["value"], x["severity"]) for x in evs] == [([4.0], 1), ([5.0], 0)]
    # nothing more for the alarm-only and property-only subscriptions
    assert W.call("events", sub=sub_alarm, n=1, timeout=0.3) == []
    assert W.call("events", sub=sub_prop, n=1, timeout=0.3) == []
    for s in (sub_all, sub_alarm, sub_prop):
        W.call("unmonitor", sub=s)


def test_monitor_every_family(W, prefix, pvs):
    """One subscription per DBR family of DOUBLE and of STRING: each gets the initial value
    and a post, decoded by libca."""
    pv = pvs["d"]
    connect(W, prefix, "d")
    subs = {}
    for fam in FAMILIES:
        for t in ("DOUBLE", "STRING", "LONG"):
            subs[(fam, t)] = W.call("monitor", name=prefix + "d", type=dbr_type(fam, t))
    for s in subs.values():
        (e,) = W.call("events", sub=s, n=1, timeout=5)
        assert e["eca"] == ECA_NORMAL
    pv.post(42.125)
    for (fam, t), s in subs.items():
        (e,) = W.call("events", sub=s, n=1, timeout=5)
        exp = {"DOUBLE": 42.125, "STRING": "42.13", "LONG": 42}[t]
        assert e["value"] == [exp], (fam, t, e)
        if fam in ("GR", "CTRL") and t != "STRING":
            assert e["units"] == "V"
        W.call("unmonitor", sub=s)


def test_array_monitors_grow_and_shrink(W, prefix, pvs):
    pv = pvs["arr"]
    connect(W, prefix, "arr")
    # count 0 with TIME_DOUBLE: an empty array still has a payload (the metadata); a plain
    # DBR_DOUBLE update of 0 elements has none, and libca takes that for a cancel reply
    # (it does the same with RSRV)
    dyn = W.call("monitor", name=prefix + "arr", type=dbr_type("TIME", "DOUBLE"), count=0)
    fixed = W.call("monitor", name=prefix + "arr", type=dbr_type("TIME", "DOUBLE"), count=5)
    (e,) = W.call("events", sub=dyn, n=1, timeout=5)
    assert e["value"] == [1.0, 2.0, 3.0] and e["count"] == 3
    (e,) = W.call("events", sub=fixed, n=1, timeout=5)
    assert e["value"] == [1.0, 2.0, 3.0, 0.0, 0.0] and e["count"] == 5
    for arr in ([7.0] * 6, [44.0], [], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]):
        pv.post(arr)
        (e,) = W.call("events", sub=dyn, n=1, timeout=5)
        assert e["value"] == arr and e["count"] == len(arr)
        (e,) = W.call("events", sub=fixed, n=1, timeout=5)
        assert e["value"] == (arr + [0.0] * 5)[:5], arr
    # a write from CA of more than max_length elements is cut to it; fewer shrinks the array
    assert W.call("put", name=prefix + "arr", value=[9.0, 8.0], type=DOUBLE, notify=True)["status"] == 1
    (e,) = W.call("events", sub=dyn, n=1, timeout=5)
    assert e["value"] == [9.0, 8.0]
    assert list(pv.current()) == [9.0, 8.0]
    r = W.call("get", name=prefix + "arr", type=DOUBLE, count=8)
    assert r["value"] == [9.0, 8.0, 0, 0, 0, 0, 0, 0]
    W.call("unmonitor", sub=dyn)
    W.call("unmonitor", sub=fixed)


def test_array_native_count_follows_creation_length(W, prefix, pvs, server):
    """Without max_length the native count is the length when the channel was created, and a
    count-0 read still gives the whole current array after it grew."""
    info = connect(W, prefix, "arr4")["arr4"]
    assert info["count"] == 4
    pvs["arr4"].post([1, 2, 3, 4, 5, 6])
    assert W.call("get", name=prefix + "arr4")["value"] == [1, 2, 3, 4, 5, 6]
    assert W.call("get", name=prefix + "arr4", count=4)["value"] == [1, 2, 3, 4]
    pvs["arr4"].post([1, 2, 3, 4])


def test_long_string(W, prefix, pvs):
    connect(W, prefix, "long.$", "long")
    text = "x" * 100
    assert W.call("pv_get", name=prefix + "long.$", as_string=True) == text
    r = W.call("get", name=prefix + "long.$", type=CHAR)
    assert r["count"] == 101 and bytes(r["value"]) == text.encode() + b"\0"
    assert W.call("get", name=prefix + "long")["value"] == ["x" * 39]
    new = "a long string of more than forty characters: " + "é" * 10
    data = list(new.encode()) + [0]
    assert W.call("put", name=prefix + "long.$", value=data, type=CHAR, notify=True)["status"] == ECA_NORMAL
    assert pvs["long"].current() == new
    r = W.call("get", name=prefix + "long.$", type=CHAR)
    assert bytes(r["value"]) == new.encode() + b"\0"
    # pyepics' own put of a str to a CHAR array
    assert W.call("pv_put", name=prefix + "long.$", value="y" * 60, wait=True) == 1
    assert pvs["long"].current() == "y" * 60
    assert W.call("pv_get", name=prefix + "long.$", as_string=True) == "y" * 60
    pvs["long"].post(text)


def test_ca_and_pva_together(W, prefix, pvs, server):
    """The same PV over PVA (p4p) and CA (libca) at once: a put on either is seen by the
    monitors of both."""
    connect(W, prefix, "d")
    name = prefix + "d"
    pva_q: queue.Queue = queue.Queue()
    with p4p.client.thread.Context("pva", conf=server.conf(), useenv=False) as C:
        sub = C.monitor(name, pva_q.put)
        try:
            first = pva_q.get(timeout=5)
            ca_sub = W.call("monitor", name=name, type=dbr_type("TIME", "DOUBLE"))
            (e,) = W.call("events", sub=ca_sub, n=1, timeout=5)
            assert e["value"] == [float(first)]
            assert (e["secs"] + EPICS_EPOCH, e["nsec"]) == first.raw_stamp
            # CA put -> PVA monitor
            assert W.call("put", name=name, value=12.5, type=DOUBLE, notify=True)["status"] == 1
            v = pva_q.get(timeout=5)
            assert v == 12.5
            (e,) = W.call("events", sub=ca_sub, n=1, timeout=5)
            assert e["value"] == [12.5]
            # PVA put -> CA monitor
            C.put(name, 13.5)
            (e,) = W.call("events", sub=ca_sub, n=1, timeout=5)
            assert e["value"] == [13.5]
            assert pva_q.get(timeout=5) == 13.5
            g = C.get(name)
            r = W.call("get", name=name, type=dbr_type("CTRL", "DOUBLE"))
            assert r["value"] == [float(g)] and r["units"] == g.raw.display.units
            assert r["precision"] == g.raw.display.precision
            W.call("unmonitor", sub=ca_sub)
        finally:
            sub.close()


# --------------------------------------------------------------------------- servers


def test_disconnect_when_server_stops():
    pv = SharedPV(nt=NTScalar("d"), initial=1.0)
    S = Server(providers=[{"stop:x": pv}], isolate=True)
    try:
        with pyepics_worker(ca_conf(S.conf())) as w:
            assert w.call("connect", names=["stop:x"], timeout=10)["stop:x"]["connected"]
            assert w.call("conn_events", name="stop:x", n=1, timeout=5) == [True]
            sub = w.call("monitor", name="stop:x", type=DOUBLE)
            assert w.call("events", sub=sub, n=1, timeout=5)[0]["value"] == [1.0]
            S.stop()
            assert w.call("conn_events", name="stop:x", n=2, timeout=10) == [True, False]
            assert w.call("info", name="stop:x")["connected"] is False
    finally:
        S.stop()


def test_thousand_channels_one_circuit():
    N = 1000
    pvs = {f"many:{i}": SharedPV(nt=NTScalar("i"), initial=i) for i in range(N)}
    with Server(providers=[pvs], isolate=True) as S, pyepics_worker(ca_conf(S.conf())) as w:
        t0 = time.monotonic()
        info = w.call("connect", names=list(pvs), timeout=30)
        assert all(i["connected"] for i in info.values()), [n for n, i in info.items() if not i["connected"]][
            :5
        ]
        assert len({i["host"] for i in info.values()}) == 1
        res = w.call("get_many", names=list(pvs), timeout=20)
        assert [r["value"][0] for r in res] == list(range(N))
        assert time.monotonic() - t0 < 30


def _shared_port_conf(port: int, beacon: int) -> dict:
    return {
        "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
        "EPICS_CA_SERVER_PORT": str(port),
        "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
        "EPICS_CAS_BEACON_ADDR_LIST": f"127.0.0.1:{beacon}",
        "EPICS_PVAS_INTF_ADDR_LIST": "127.0.0.1",
        "EPICS_PVAS_SERVER_PORT": "0",
        "EPICS_PVAS_BROADCAST_PORT": "0",
        "EPICS_PVAS_AUTO_BEACON_ADDR_LIST": "NO",
    }


def _udp_free_for_both() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
        with socket.socket() as t:
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for both UDP and TCP")


def test_two_servers_one_host():
    """Two servers share the CA UDP port (SO_REUSEPORT); the second's TCP port falls back to
    an ephemeral one.  One client, searching by unicast and by the loopback broadcast
    address, finds the PVs of both.  (Unicast reaches only one of the sockets sharing the
    port, RSRV's too; the broadcast must reach both.)"""
    port = _udp_free_for_both()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        b.bind(("127.0.0.1", 0))
        beacon = b.getsockname()[1]
    pa = SharedPV(nt=NTScalar("d"), initial=1.0)
    pb = SharedPV(nt=NTScalar("d"), initial=2.0)
    A = Server(providers=[{"two:a": pa}], conf=_shared_port_conf(port, beacon), useenv=False)
    try:
        B = Server(providers=[{"two:b": pb}], conf=_shared_port_conf(port, beacon), useenv=False)
        try:
            conf = {
                "EPICS_CA_ADDR_LIST": f"127.0.0.1:{port} 127.255.255.255:{port}",
                "EPICS_CA_AUTO_ADDR_LIST": "NO",
                "EPICS_CA_SERVER_PORT": str(port),
            }
            with pyepics_worker(ca_conf(conf)) as w:
                info = w.call("connect", names=["two:a", "two:b"], timeout=5)
                assert info["two:a"]["connected"] and info["two:b"]["connected"], info
                assert info["two:a"]["host"] != info["two:b"]["host"]
                assert w.call("get", name="two:a")["value"] == [1.0]
                assert w.call("get", name="two:b")["value"] == [2.0]
        finally:
            B.stop()
    finally:
        A.stop()


def test_put_acks_stsack(W, prefix):
    """STSACK_STRING reads and PUT_ACKS writes are accepted (no alarm acknowledgement in a
    Python PV: the answer is only well formed)."""
    connect(W, prefix, "AI")
    r = W.call("get", name=prefix + "AI", type=STSACK_STRING)
    assert r["eca"] == ECA_NORMAL and r["value"] == ["1.250"]
