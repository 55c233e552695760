"""capva's PVA client against a real EPICS IOC: pythonSoftIOC (``softioc``) with QSRV2.

Why this file exists: most PVs a client meets in a facility are database records served by
QSRV, not PVs made by a Python server.  Their NT layouts are QSRV's: NTScalar with
``display`` (with ``form`` and ``precision``), ``control`` and ``valueAlarm``; NTEnum for
mbbi/bo records; NTScalarArray for waveforms; alarms computed by the records themselves
(HIHI...), output clamping (DRVH), record fields as their own channels (``REC.EGU``) and
put processing (``process=``/``wait=``).  This file reads, writes and monitors such records
with both flavours of capva's client.

The IOC (softioc 4.x, which bundles pvxs's QSRV2) runs in a subprocess on 127.0.0.1 with
free ports (EPICS_PVAS_* for PVA, EPICS_CA*/EPICS_CAS_* for its Channel Access server, kept
off the default ports).  It prints ``READY`` after ``iocInit``, reports each record update
it sees (``UPDATE NAME VALUE``), takes ``set NAME JSON`` commands on stdin (which drive
input records from the IOC side), and exits when stdin closes.  softioc is a required peer:
if it is missing this module fails (``pip install softioc``).
"""

from __future__ import annotations

import json
import socket
import uuid

import numpy as np
import p4p  # noqa: F401  (a required peer of the client suites)
import pvaccess  # noqa: F401
import pytest
import softioc  # noqa: F401  (required: the IOC runs in a subprocess, but fail here, clearly)

import capva
from capva import nt as cnt
from capva.client import RemoteError
from support.client import FLAVOURS, ServerProcess, Updates, free_port, open_context, search_conf, server_env

pytestmark = pytest.mark.timeout(60)

IOC_SCRIPT = r"""
import json, os, sys
from softioc import softioc, builder, asyncio_dispatcher

dispatcher = asyncio_dispatcher.AsyncioDispatcher()
builder.SetDeviceName(os.environ["TEST_IOC_PREFIX"])

def report(name):
    def cb(value):
        print("UPDATE", name, json.dumps(value.tolist() if hasattr(value, "tolist") else value), flush=True)
    return cb

recs = {
    "AI": builder.aIn("AI", initial_value=1.25, LOPR=-10, HOPR=10, EGU="mm", PREC=3,
                      HIHI=9, HIGH=5, LOW=-5, LOLO=-9, HHSV="MAJOR", HSV="MINOR", LSV="MINOR", LLSV="MAJOR"),
    "AO": builder.aOut("AO", initial_value=2.5, DRVL=-100, DRVH=100, LOPR=-100, HOPR=100, EGU="V", PREC=2,
                       HIHI=90, HHSV="MAJOR", on_update=report("AO"), always_update=True),
    "LI": builder.longIn("LI", initial_value=7, LOPR=0, HOPR=1000),
    "LO": builder.longOut("LO", initial_value=3, on_update=report("LO"), always_update=True),
    "SI": builder.stringIn("SI", initial_value="hello"),
    "SO": builder.stringOut("SO", initial_value="world", on_update=report("SO"), always_update=True),
    "MBBI": builder.mbbIn("MBBI", "zero", "one", "two", initial_value=1),
    "MBBO": builder.mbbOut("MBBO", "red", "green", "blue", initial_value=0, on_update=report("MBBO"),
                           always_update=True),
    "BI": builder.boolIn("BI", "Low", "High", initial_value=1),
    "BO": builder.boolOut("BO", ZNAM="Off", ONAM="On", initial_value=0, on_update=report("BO"),
                          always_update=True),
    "WF": builder.WaveformOut("WF", [1.0, 2.0, 3.0], length=100, on_update=report("WF"), always_update=True),
    "WFI": builder.WaveformIn("WFI", initial_value=[1, 2, 3], length=10, datatype=int),
}
builder.LoadDatabase()
softioc.iocInit(dispatcher)
print("READY", flush=True)
for line in sys.stdin:
    cmd, name, value = line.split(" ", 2)
    if cmd == "set":
        recs[name].set(json.loads(value))
        print("DONE", name, flush=True)
softioc.epicsExit(0)
"""


@pytest.fixture(scope="module")
def ioc():
    tcp, udp = free_port(), free_port(socket.SOCK_DGRAM)
    ca_port = free_port()
    prefix = "CAPVA" + uuid.uuid4().hex[:8].upper()
    env = server_env(
        tcp,
        udp,
        TEST_IOC_PREFIX=prefix,
        EPICS_CAS_INTF_ADDR_LIST="127.0.0.1",
        EPICS_CA_SERVER_PORT=str(ca_port),
        EPICS_CAS_AUTO_BEACON_ADDR_LIST="NO",
        EPICS_CAS_BEACON_ADDR_LIST="127.0.0.1",
        EPICS_CA_AUTO_ADDR_LIST="NO",
        EPICS_CA_ADDR_LIST="127.0.0.1",
    )
    P = ServerProcess(IOC_SCRIPT, env, ready_timeout=60)
    try:
        P.prefix = prefix + ":"
        P.conf = search_conf(udp)
        yield P
    finally:
        P.stop()


@pytest.fixture(params=FLAVOURS)
def ctxt(request, ioc):
    with open_context(request.param, ioc.conf) as C:
        yield C


def ioc_set(ioc, name: str, value) -> None:
    """Drive a record from the IOC side (``rec.set()``) and wait until it was done."""
    ioc.send(f"set {name} {json.dumps(value)}")
    ioc.expect(lambda line: line == f"DONE {name}")


def updated(ioc, name: str, value) -> None:
    """Wait until the IOC reports ``name``'s on_update callback with ``value``."""
    ioc.expect(lambda line: line.startswith(f"UPDATE {name} ") and json.loads(line.split(" ", 2)[2]) == value)


def test_ai_layout(ctxt, ioc):
    v = ctxt.get(ioc.prefix + "AI")
    assert isinstance(v, cnt.ntfloat) and v == 1.25
    R = v.raw
    assert R.getID() == "epics:nt/NTScalar:1.0"
    assert list(R.keys())[:3] == ["value", "alarm", "timeStamp"]
    assert R.display.limitLow == -10 and R.display.limitHigh == 10
    assert R.display.units == "mm" and R.display.precision == 3
    assert R.display.form.choices[0] == "Default"
    assert R.control.limitLow == -10 and R.control.limitHigh == 10
    assert R.valueAlarm.highAlarmLimit == 9 and R.valueAlarm.lowWarningLimit == -5
    assert R.timeStamp.secondsPastEpoch > 0 and v.timestamp > 0
    T = ctxt.info(ioc.prefix + "AI")
    assert isinstance(T, capva.Type) and {"display", "control", "valueAlarm"} <= set(T.keys())


def test_ao_put_clamp_alarm(ctxt, ioc):
    name = ioc.prefix + "AO"
    ctxt.put(name, 5.0)
    updated(ioc, "AO", 5.0)
    v = ctxt.get(name)
    assert v == 5.0 and v.severity == 0 and v.raw.display.units == "V"
    ctxt.put(name, 1000.0)  # DRVH clamps
    updated(ioc, "AO", 100.0)
    v = ctxt.get(name)
    assert v == 100.0
    assert v.severity == 2 and v.raw.alarm.message == "HIHI"  # above HIHI=90, HHSV=MAJOR
    ctxt.put(name, {"value": 1.5})
    updated(ioc, "AO", 1.5)
    v = ctxt.get(name)
    assert v == 1.5 and v.severity == 0


def test_put_process_wait(ctxt, ioc):
    name = ioc.prefix + "AO"
    ctxt.put(name, 7.0, process="true", wait=True)
    updated(ioc, "AO", 7.0)
    assert ctxt.get(name) == 7.0
    ctxt.put(name, 8.0, request="record[block=true]")
    updated(ioc, "AO", 8.0)
    assert ctxt.get(name) == 8.0


def test_integers_and_strings(ctxt, ioc):
    v = ctxt.get(ioc.prefix + "LI")
    assert isinstance(v, cnt.ntint) and v == 7 and v.raw.display.limitHigh == 1000
    ctxt.put(ioc.prefix + "LO", 42)
    updated(ioc, "LO", 42)
    assert ctxt.get(ioc.prefix + "LO") == 42
    s = ctxt.get(ioc.prefix + "SI")
    assert isinstance(s, cnt.ntstr) and s == "hello"
    ctxt.put(ioc.prefix + "SO", "new text")
    updated(ioc, "SO", "new text")
    assert ctxt.get(ioc.prefix + "SO") == "new text"


def test_enums(ctxt, ioc):
    v = ctxt.get(ioc.prefix + "MBBI")
    assert isinstance(v, cnt.ntenum) and v == 1 and v.choice == "one"
    assert v.raw.getID() == "epics:nt/NTEnum:1.0"
    assert v.raw.value.choices == ["zero", "one", "two"]
    assert ctxt.get(ioc.prefix + "BI").choice == "High"
    name = ioc.prefix + "MBBO"
    ctxt.put(name, "blue")
    updated(ioc, "MBBO", 2)
    assert ctxt.get(name).choice == "blue"
    ctxt.put(name, 1)
    updated(ioc, "MBBO", 1)
    assert ctxt.get(name).choice == "green"
    with pytest.raises(ValueError):
        ctxt.put(name, "purple")
    ctxt.put(ioc.prefix + "BO", "On")
    updated(ioc, "BO", 1)
    v = ctxt.get(ioc.prefix + "BO")
    assert v == 1 and v.choice == "On"


def test_waveforms(ctxt, ioc):
    v = ctxt.get(ioc.prefix + "WFI")
    assert isinstance(v, cnt.ntnumericarray) and v.dtype == np.int32
    assert v.tolist() == [1, 2, 3]
    name = ioc.prefix + "WF"
    data = np.linspace(0.0, 1.0, 11)
    ctxt.put(name, data)
    updated(ioc, "WF", data.tolist())
    v = ctxt.get(name)
    assert v.raw.getID() == "epics:nt/NTScalarArray:1.0"
    np.testing.assert_array_equal(v, data)  # NORD follows the put
    ctxt.put(name, [5.0])
    updated(ioc, "WF", [5.0])
    assert ctxt.get(name).tolist() == [5.0]


def test_record_fields(ctxt, ioc):
    """QSRV serves every record field as a channel of its own: REC.FIELD.  softioc sets
    DISP=1 on input records, so a put to one of their fields is refused by the IOC."""
    assert ctxt.get(ioc.prefix + "AO.EGU") == "V"
    assert ctxt.get(ioc.prefix + "AO.DRVH") == 100.0
    assert ctxt.get(ioc.prefix + "MBBO.TWST") == "blue"
    text = f"set over PVA by {type(ctxt).__module__}"
    ctxt.put(ioc.prefix + "AO.DESC", text)
    assert ctxt.get(ioc.prefix + "AO.DESC") == text
    assert ctxt.get(ioc.prefix + "AO").raw.display.description == text
    with pytest.raises(RemoteError, match="Disabled"):
        ctxt.put(ioc.prefix + "AI.DESC", "refused")


def test_monitor_ioc_side_alarms(ctxt, ioc):
    """Values set inside the IOC arrive with the alarm the ai record computed."""
    name = ioc.prefix + "AI"
    upd = Updates()
    with ctxt.monitor(name, upd):
        upd.next()
        ioc_set(ioc, "AI", 6.0)
        v = upd.until(lambda v: v == 6.0)[-1]
        assert v.severity == 1 and v.raw.alarm.message == "HIGH"
        ioc_set(ioc, "AI", 9.5)
        v = upd.until(lambda v: v == 9.5)[-1]
        assert v.severity == 2 and v.raw.alarm.message == "HIHI"
        ioc_set(ioc, "AI", 0.5)
        v = upd.until(lambda v: v == 0.5)[-1]
        assert v.severity == 0
        assert v.raw.display.units == "mm"  # unchanged fields are kept between updates


def test_monitor_puts_and_enum(ctxt, ioc):
    upd, eupd = Updates(), Updates()
    with (
        ctxt.monitor(ioc.prefix + "AO", upd, notify_disconnect=True),
        ctxt.monitor(ioc.prefix + "MBBO", eupd),
    ):
        assert type(upd.next()).__name__ == "Disconnected"
        base = float(upd.next())
        for k in (1.0, 2.0, 3.0):
            ctxt.put(ioc.prefix + "AO", base + k)
            assert upd.until(lambda v, x=base + k: v == x)
        idx = (int(eupd.next()) + 1) % 3
        choice = ["red", "green", "blue"][idx]
        ctxt.put(ioc.prefix + "MBBO", choice)  # a different choice: an unchanged one posts nothing
        v = eupd.until(lambda v: v == idx)[-1]
        assert v.choice == choice


def test_monitor_field_mask(ctxt, ioc):
    upd = Updates()
    with ctxt.monitor(ioc.prefix + "AO", upd, request="field(value,alarm)"):
        v = upd.next()
        assert isinstance(v, cnt.ntfloat)
        x = float(v) + 1.0  # a change: an ao posts nothing for an unchanged value (MDEL)
        ctxt.put(ioc.prefix + "AO", x)
        v = upd.until(lambda v: v == x)[-1]
        assert v.raw.changedSet() <= {"value", "alarm", "alarm.severity", "alarm.status", "alarm.message"}


def test_list_get_and_missing(ctxt, ioc):
    names = [ioc.prefix + n for n in ("AI", "LI", "SI", "MBBI", "WFI")]
    got = ctxt.get(names + [ioc.prefix + "NOPE"], timeout=1.0, throw=False)
    assert [type(v).__name__ for v in got] == [
        "ntfloat",
        "ntint",
        "ntstr",
        "ntenum",
        "ntnumericarray",
        "TimeoutError",
    ]
