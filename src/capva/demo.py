"""``make demo`` / ``python -m capva.demo``: a demo IOC to point p4p's client tools at.

It serves, under the prefix ``demo:`` (``--prefix``), one PV of each common kind:

==================  ==================================================================
``demo:sine``       NTScalar double, a sine updated at 2 Hz, with display, control and
                    valueAlarm metadata; its alarm severity follows the valueAlarm limits
``demo:counter``    NTScalar int32, +1 at every update (2 Hz)
``demo:string``     NTScalar string, writable
``demo:bool``       NTScalar bool, toggles every second
``demo:waveform``   NTScalarArray double[1000], a travelling wave updated at 2 Hz
``demo:strings``    NTScalarArray string[], writable
``demo:enum``       NTEnum, writable by choice name or index
``demo:table``      NTTable of four "axes" whose positions update at 2 Hz
``demo:image``      NTNDArray 120x160 uint8 image, a new frame at 2 Hz
``demo:mailbox``    NTScalar double, writable: stores whatever is put
==================  ==================================================================

By default it binds as ``EPICS_PVAS_*`` say (default ports), so on the same host plain
``python -m p4p.client.cli get demo:sine`` works; the banner prints the exact commands,
including the environment that reaches this server whatever the client's defaults are.
``--isolate`` listens on 127.0.0.1 with random ports instead; ``--duration N`` stops after N
seconds (default: run until Ctrl+C).  All updates happen at a few Hz, so the CPU cost is small.
"""

from __future__ import annotations

import argparse
import math
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy

from .examples import client_env, print_banner, print_pvs, serving, wait
from .examples.ntenum import EnumHandler
from .examples.ntndarray import ImageSource
from .nt import NTEnum, NTScalar, NTTable
from .server.thread import SharedPV

if TYPE_CHECKING:
    from .server.raw import ServOpWrap  # what put handlers get: value() is unwrapped

#: updates per second of the changing PVs
RATE = 2.0
#: the sine's period in seconds
SINE_PERIOD = 20.0
WAVEFORM_POINTS = 1000
ENUM_CHOICES = ("Off", "On", "Standby", "Fault")
AXES = ("x", "y", "z", "theta")


class Mailbox:
    """Put handler that stores whatever is put (the p4p documentation's mailbox)."""

    def put(self, pv: SharedPV, op: ServOpWrap) -> None:
        pv.post(op.value(), timestamp=time.time())
        op.done()


def _alarm(value: float, limits: dict[str, float]) -> dict[str, Any]:
    """The alarm fields for ``value`` against valueAlarm ``limits``, as an IOC record would set them."""
    if value >= limits["highAlarmLimit"]:
        return {"alarm.severity": 2, "alarm.status": 3, "alarm.message": "HIHI"}
    if value <= limits["lowAlarmLimit"]:
        return {"alarm.severity": 2, "alarm.status": 3, "alarm.message": "LOLO"}
    if value >= limits["highWarningLimit"]:
        return {"alarm.severity": 1, "alarm.status": 3, "alarm.message": "HIGH"}
    if value <= limits["lowWarningLimit"]:
        return {"alarm.severity": 1, "alarm.status": 3, "alarm.message": "LOW"}
    return {"alarm.severity": 0, "alarm.status": 0, "alarm.message": ""}


class DemoIOC:
    """The demo's PVs and the thread that updates them at :data:`RATE` Hz.

    ``pvs`` maps names to SharedPVs (give it to a Server); ``describe`` maps names to one-line
    descriptions.  ``start()`` and ``stop()`` bracket the updates.
    """

    LIMITS = {"lowAlarmLimit": -9.0, "lowWarningLimit": -7.0, "highWarningLimit": 7.0, "highAlarmLimit": 9.0}

    def __init__(self, prefix: str = "demo:") -> None:
        P = prefix
        self.sine_nt = NTScalar("d", display=True, control=True, valueAlarm=True)
        sine0 = {
            "value": 0.0,
            "display.limitLow": -10.0,
            "display.limitHigh": 10.0,
            "display.description": f"sine, period {SINE_PERIOD:g} s, updated at {RATE:g} Hz",
            "display.units": "V",
            "display.format": "%.3f",
            "control.limitLow": -10.0,
            "control.limitHigh": 10.0,
            "control.minStep": 0.001,
            "valueAlarm.active": True,
            "valueAlarm.lowAlarmSeverity": 2,
            "valueAlarm.lowWarningSeverity": 1,
            "valueAlarm.highWarningSeverity": 1,
            "valueAlarm.highAlarmSeverity": 2,
            "valueAlarm.hysteresis": 0.0,
            **{f"valueAlarm.{k}": v for k, v in self.LIMITS.items()},
        }
        self.sine = SharedPV(nt=self.sine_nt, initial=sine0)
        self.counter = SharedPV(nt=NTScalar("i"), initial=0)
        self.string = SharedPV(nt=NTScalar("s"), initial="Hello from capva", handler=Mailbox())
        self.bool = SharedPV(nt=NTScalar("?"), initial=False)
        self.wave_x = numpy.linspace(0.0, 3 * 2 * math.pi, WAVEFORM_POINTS)  # three periods
        self.waveform = SharedPV(
            nt=NTScalar("ad", display=True),
            initial={"value": numpy.sin(self.wave_x), "display.units": "V", "display.description": "wave"},
        )
        self.strings = SharedPV(
            nt=NTScalar("as"), initial=["alpha", "beta", "gamma", "delta"], handler=Mailbox()
        )
        self.enum = SharedPV(
            nt=NTEnum(),
            initial={"index": 0, "choices": list(ENUM_CHOICES)},
            handler=EnumHandler(ENUM_CHOICES),
        )
        self.table_nt = NTTable([("axis", "s"), ("position", "d"), ("velocity", "d"), ("moving", "?")])
        self.table = SharedPV(nt=self.table_nt, initial=self._rows(0.0))
        self.image = ImageSource((120, 160), "uint8", rate=RATE)
        self.mailbox = SharedPV(nt=NTScalar("d"), initial=0.0, handler=Mailbox())

        self.pvs: dict[str, SharedPV] = {
            P + "sine": self.sine,
            P + "counter": self.counter,
            P + "string": self.string,
            P + "bool": self.bool,
            P + "waveform": self.waveform,
            P + "strings": self.strings,
            P + "enum": self.enum,
            P + "table": self.table,
            P + "image": self.image.pv,
            P + "mailbox": self.mailbox,
        }
        self.describe: dict[str, str] = {
            P + "sine": f"NTScalar double, sine at {RATE:g} Hz, display/control/valueAlarm",
            P + "counter": f"NTScalar int32, +1 at {RATE:g} Hz",
            P + "string": "NTScalar string, writable",
            P + "bool": "NTScalar bool, toggles every second",
            P + "waveform": f"NTScalarArray double[{WAVEFORM_POINTS}], travelling wave at {RATE:g} Hz",
            P + "strings": "NTScalarArray string[], writable (put a JSON list)",
            P + "enum": f"NTEnum {list(ENUM_CHOICES)}, writable by name or index",
            P + "table": f"NTTable (axis, position, velocity, moving), {len(AXES)} rows at {RATE:g} Hz",
            P + "image": f"NTNDArray 120x160 uint8, a new frame at {RATE:g} Hz",
            P + "mailbox": "NTScalar double, writable",
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _rows(t: float) -> list[dict[str, Any]]:
        """The table at time ``t``: each axis oscillates with its own period."""
        rows = []
        for i, axis in enumerate(AXES):
            w = 2 * math.pi / (10.0 + 5 * i)
            rows.append(
                {
                    "axis": axis,
                    "position": round(5 * math.sin(w * t), 4),
                    "velocity": round(5 * w * math.cos(w * t), 4),
                    "moving": i % 2 == 0,
                }
            )
        return rows

    def update(self, n: int, t: float) -> None:
        """Post update number ``n``, ``t`` seconds after the start."""
        now = time.time()
        v = 10.0 * math.sin(2 * math.pi * t / SINE_PERIOD)
        self.sine.post({"value": v, **_alarm(v, self.LIMITS)}, timestamp=now)
        self.counter.post(n, timestamp=now)
        if n % int(RATE) == 0:
            self.bool.post(bool((n // int(RATE)) % 2), timestamp=now)
        self.waveform.post(numpy.sin(self.wave_x - 2 * math.pi * t / 5.0), timestamp=now)
        self.table.post(self._rows(t), timestamp=now)

    def _run(self) -> None:
        start = deadline = time.monotonic()
        n = 0
        while True:
            deadline += 1.0 / RATE
            if self._stop.wait(max(0.0, deadline - time.monotonic())):
                return
            n += 1
            self.update(n, time.monotonic() - start)

    def start(self) -> None:
        """Start the updates."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="capva-demo", daemon=True)
        self._thread.start()
        self.image.start()

    def stop(self) -> None:
        """Stop the updates and wait for the threads to end."""
        self.image.stop()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m capva.demo", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--prefix", default="demo:", help="PV name prefix (default 'demo:')")
    p.add_argument("--list-pvs", action="store_true", help="print the PV names and exit")
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after SECONDS (default: until Ctrl+C)",
    )
    p.add_argument(
        "--isolate",
        action="store_true",
        help="listen on 127.0.0.1 with random ports instead of per EPICS_PVAS_*",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the demo IOC; see the module docstring."""
    args = _parser().parse_args(argv)
    ioc = DemoIOC(args.prefix)
    if args.list_pvs:
        print_pvs(ioc.describe)
        return 0
    P = args.prefix
    with serving([ioc.pvs], args.isolate) as S:
        ioc.start()
        try:
            conf = S.conf()
            env = " ".join(f"{k}={v}" for k, v in client_env(conf).items())
            print_banner(
                "capva demo IOC",
                ioc.describe,
                conf,
                examples=[
                    f"monitor {P}sine {P}counter",
                    f"put {P}mailbox=42",
                    f"put {P}enum=On",
                    f'put {P}strings=["a","b"]',
                    f"get {P}table",
                ],
                notes=[
                    f"Or set the environment once: export {env}",
                    "(run these with a Python that has p4p installed, e.g. .venv/bin/python)",
                ],
            )
            wait(args.duration)
        finally:
            ioc.stop()
    print("capva demo IOC: stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
