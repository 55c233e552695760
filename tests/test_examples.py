"""The examples and the demo IOC, run as users run them and read with p4p's client.

Each server test starts ``python -m capva.examples.<name> --isolate`` (127.0.0.1, random
ports) as a subprocess, reads the ``conf: {...}`` line it prints once it is serving, and
talks to it with ``p4p.client.thread.Context(conf=..., useenv=False)``.  At the end the
process gets SIGINT (Ctrl+C) and must exit with status 0 within a timeout: stopping cleanly
is part of what is tested.  ``--duration`` bounds every process in case a test dies early.

A few in-process tests call ``main()`` directly for ``--list-pvs`` and ``--duration``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy
import pytest
from p4p.client.thread import Context, RemoteError
from p4p.nt import NTURI

from capva.examples import EXAMPLES

SRC = Path(__file__).resolve().parent.parent / "src"
#: how long a process may take to start serving, and to stop after SIGINT
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
#: a safety net: every process stops by itself after this long even if the test hangs
MAX_DURATION = "120"
#: client operation timeout
TMO = 5.0


class Running:
    """A started example process: its ``conf`` and everything it printed so far."""

    def __init__(self, proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        self.proc = proc
        self._lines = lines
        self.output: list[str] = []
        self.conf: dict[str, str] = {}

    def wait_for_conf(self) -> dict[str, str]:
        """Read output lines until ``conf: {...}``; fail if the process dies or is too slow."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no 'conf:' line within {START_TIMEOUT:.0f} s; output:\n{self.text()}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(
                    f"process exited ({self.proc.wait(timeout=STOP_TIMEOUT)}) before serving:\n{self.text()}"
                )
            self.output.append(line)
            if line.startswith("conf: "):
                self.conf = json.loads(line[len("conf: ") :])
                return self.conf

    def drain(self) -> None:
        """Collect whatever output has arrived (non-blocking)."""
        with contextlib.suppress(queue.Empty):
            while (line := self._lines.get_nowait()) is not None:
                self.output.append(line)

    def text(self) -> str:
        self.drain()
        return "".join(self.output)


def _child_env() -> dict[str, str]:
    """The environment without EPICS_* (so nothing leaks in), with src/ importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPICS_")}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextlib.contextmanager
def serve(module: str, *args: str) -> Iterator[Running]:
    """Run ``python -m <module> --isolate ... <args>``; SIGINT it at the end and check it exits 0."""
    cmd = [sys.executable, "-m", module, "--isolate", "--duration", MAX_DURATION, *args]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=_child_env(),
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, name=f"output of {module}", daemon=True)
    reader.start()
    running = Running(proc, lines)
    try:
        running.wait_for_conf()
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)
            pytest.fail(f"{module} did not stop within {STOP_TIMEOUT} s of SIGINT:\n{running.text()}")
        reader.join(timeout=STOP_TIMEOUT)
        assert rc == 0, f"{module} exited with {rc}:\n{running.text()}"
        assert "stopped" in running.text(), running.text()


@contextlib.contextmanager
def client(conf: dict[str, str]) -> Iterator[Context]:
    """A p4p client Context that only sees the server described by ``conf``."""
    with Context("pva", conf=conf, useenv=False) as ctxt:
        yield ctxt


def updates(ctxt: Context, name: str) -> tuple[Any, queue.Queue[Any]]:
    """Subscribe to ``name``; returns (subscription, queue of updates)."""
    q: queue.Queue[Any] = queue.Queue()
    sub = ctxt.monitor(name, q.put, notify_disconnect=False)
    return sub, q


def next_update(q: queue.Queue[Any], timeout: float = TMO) -> Any:
    """The next monitor update; errors (RemoteError, Disconnected) fail the test."""
    try:
        V = q.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"no monitor update within {timeout} s")
    if isinstance(V, Exception):
        pytest.fail(f"monitor delivered {V!r}")
    return V


# --------------------------------------------------------------------------------------------
# in-process: --list-pvs and --duration


@pytest.mark.parametrize("name", EXAMPLES)
def test_list_pvs(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    mod = importlib.import_module(f"capva.examples.{name}")
    assert mod.__doc__ and "python -m p4p.client.cli get" in mod.__doc__, "docstring must show the p4p CLI"
    assert mod.main(["--list-pvs", "--prefix", "TST:"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert names and all(n.startswith("TST:") for n in names), names


def test_demo_list_pvs(capsys: pytest.CaptureFixture[str]) -> None:
    from capva import demo

    assert demo.main(["--list-pvs"]) == 0
    names = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()}
    expected = {
        "sine",
        "counter",
        "string",
        "bool",
        "waveform",
        "strings",
        "enum",
        "table",
        "image",
        "mailbox",
    }
    assert names == {"demo:" + n for n in expected}


@pytest.mark.parametrize("name", ["mailbox", "asyncio_mailbox", "ntndarray"])
def test_duration_returns(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``main([... '--duration', T])`` serves, then returns 0 and leaves no threads behind."""
    before = set(threading.enumerate())
    mod = importlib.import_module(f"capva.examples.{name}")
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(mod.main(["--isolate", "--duration", "0.5"])))
    t.start()
    t.join(timeout=30)
    assert not t.is_alive(), f"{name}.main() did not return"
    assert result == [0]
    out = capsys.readouterr().out
    assert "conf: {" in out and "stopped" in out, out
    # server threads may take a moment to wind down after stop()
    deadline = time.monotonic() + 10
    while (left := [x for x in threading.enumerate() if x not in before and x.is_alive()]) and (
        time.monotonic() < deadline
    ):
        left[0].join(timeout=0.5)
    assert not [x for x in left if not x.daemon], f"non-daemon threads left running: {left}"


# --------------------------------------------------------------------------------------------
# the examples, as processes


def test_mailbox() -> None:
    with serve("capva.examples.mailbox") as S, client(S.conf) as C:
        assert C.get("example:mailbox", timeout=TMO) == 0.0
        C.put("example:mailbox", 4.5, timeout=TMO)
        V = C.get("example:mailbox", timeout=TMO)
        assert V == 4.5
        assert V.raw.getID() == "epics:nt/NTScalar:1.0"


def test_mailbox_prefix() -> None:
    with serve("capva.examples.mailbox", "--prefix", "other:") as S, client(S.conf) as C:
        C.put("other:mailbox", -1.25, timeout=TMO)
        assert C.get("other:mailbox", timeout=TMO) == -1.25


def test_mailbox_monitor_sees_put() -> None:
    with serve("capva.examples.mailbox") as S, client(S.conf) as C:
        sub, q = updates(C, "example:mailbox")
        try:
            assert next_update(q) == 0.0
            C.put("example:mailbox", 7.0, timeout=TMO)
            assert next_update(q) == 7.0
        finally:
            sub.close()


def test_dynamicbox() -> None:
    with serve("capva.examples.dynamicbox", "--max", "2") as S:
        with client(S.conf) as C:
            assert list(C.get("example:boxes", timeout=TMO)) == []
            # created on demand
            assert C.get("example:box:one", timeout=TMO) == 0.0
            C.put("example:box:one", 1.5, timeout=TMO)
            assert C.get("example:box:one", timeout=TMO) == 1.5
            assert C.get("example:box:two", timeout=TMO) == 0.0
            assert sorted(C.get("example:boxes", timeout=TMO)) == ["example:box:one", "example:box:two"]
            # outside the prefix: never claimed
            with pytest.raises(TimeoutError):
                C.get("example:nobox", timeout=1.0)
            # full: a third box is not claimed (NotYet) ...
            with pytest.raises(TimeoutError):
                C.get("example:box:three", timeout=1.0)
            # ... until one is deleted
            uri = NTURI([("name", "s")]).wrap("example:boxdel", kws={"name": "example:box:two"})
            C.rpc("example:boxdel", uri, timeout=TMO)
            assert list(C.get("example:boxes", timeout=TMO)) == ["example:box:one"]
            with pytest.raises(RemoteError):
                C.rpc("example:boxdel", uri, timeout=TMO)  # already gone
        # NotYet was not cached: a new search finds the third box now
        with client(S.conf) as C:
            assert C.get("example:box:three", timeout=TMO) == 0.0
            assert C.get("example:box:one", timeout=TMO) == 1.5  # the value outlived the channel


def test_rpcserver() -> None:
    with serve("capva.examples.rpcserver") as S, client(S.conf) as C:
        uri = NTURI([("a", "d"), ("b", "d")]).wrap("example:add", kws={"a": 1.5, "b": 2})
        assert C.rpc("example:add", uri, timeout=TMO) == 3.5
        # the p4p CLI sends strings
        suri = NTURI([("a", "s"), ("b", "s")]).wrap("example:add", kws={"a": "10", "b": "-4"})
        assert C.rpc("example:add", suri, timeout=TMO) == 6.0
        assert C.get("example:add", timeout=TMO) == 6.0  # the last result
        with pytest.raises(RemoteError, match="'b'"):
            C.rpc("example:add", NTURI([("a", "d")]).wrap("example:add", kws={"a": 1.0}), timeout=TMO)
        with pytest.raises(RemoteError, match="not a number"):
            C.rpc(
                "example:add",
                NTURI([("a", "s"), ("b", "s")]).wrap("x", kws={"a": "x", "b": "1"}),
                timeout=TMO,
            )


def test_ntndarray() -> None:
    args = ("--width", "64", "--height", "48", "--dtype", "uint16", "--rate", "20")
    with serve("capva.examples.ntndarray", *args) as S, client(S.conf) as C:
        img = C.get("example:image", timeout=TMO)
        assert img.shape == (48, 64)
        assert img.dtype == numpy.uint16
        assert img.raw.getID() == "epics:nt/NTNDArray:1.0"
        assert img.max() > img.min()  # an image, not a constant
        sub, q = updates(C, "example:image")
        try:
            ids = [next_update(q).raw["uniqueId"] for _ in range(3)]
        finally:
            sub.close()
        assert ids == sorted(ids) and len(set(ids)) == 3, ids  # new frames, in order


def test_ntenum() -> None:
    with serve("capva.examples.ntenum") as S, client(S.conf) as C:
        V = C.get("example:enum", timeout=TMO)
        assert (int(V), V.choice) == (0, "Red")
        C.put("example:enum", "Blue", timeout=TMO)  # by name
        V = C.get("example:enum", timeout=TMO)
        assert (int(V), V.choice) == (2, "Blue")
        C.put("example:enum", 1, timeout=TMO)  # by index
        assert C.get("example:enum", timeout=TMO).choice == "Green"
        with pytest.raises(RemoteError, match="out of range"):
            C.put("example:enum", 42, timeout=TMO)
        assert int(C.get("example:enum", timeout=TMO)) == 1


def test_lazycounter() -> None:
    period = 0.05
    with serve("capva.examples.lazycounter", "--period", str(period)) as S, client(S.conf) as watcher:
        sub_active, active = updates(watcher, "example:lazy:active")
        try:
            assert bool(next_update(active)) is False  # nobody connected to the counter yet

            with client(S.conf) as C:
                sub, q = updates(C, "example:lazy")
                seen = [int(next_update(q)) for _ in range(4)]
                assert seen == sorted(seen) and seen[-1] > seen[0], seen  # counting
                assert bool(next_update(active)) is True
                sub.close()
            # closing the only client's Context closes its channel: the counter stops
            assert bool(next_update(active)) is False
            last = seen[-1]

            # nobody connected: a measured interval (not synchronisation) of 20 periods
            time.sleep(20 * period)

            with client(S.conf) as C:
                sub, q = updates(C, "example:lazy")
                resumed = int(next_update(q))
                sub.close()
            # while running it would have gained ~20; stopped, at most the ticks in flight at close
            assert last <= resumed <= last + 5, (last, resumed)
            assert bool(next_update(active)) is True
        finally:
            sub_active.close()


def test_asyncio_mailbox() -> None:
    with serve("capva.examples.asyncio_mailbox", "--delay", "0.05") as S, client(S.conf) as C:
        assert C.get("example:amailbox", timeout=TMO) == 0.0
        C.put("example:amailbox", 2.5, timeout=TMO)
        assert C.get("example:amailbox", timeout=TMO) == 2.5


# --------------------------------------------------------------------------------------------
# the demo IOC


def test_demo() -> None:
    with serve("capva.demo") as S, client(S.conf) as C:
        out = S.text()
        assert "python -m p4p.client.cli get demo:sine" in out
        port = S.conf["EPICS_PVAS_BROADCAST_PORT"]
        assert f"EPICS_PVA_ADDR_LIST=127.0.0.1:{port} EPICS_PVA_AUTO_ADDR_LIST=NO" in out

        names = [
            "sine",
            "counter",
            "string",
            "bool",
            "waveform",
            "strings",
            "enum",
            "table",
            "image",
            "mailbox",
        ]
        values = dict(zip(names, C.get(["demo:" + n for n in names], timeout=TMO)))

        sine = values["sine"].raw
        assert -10.0 <= sine["value"] <= 10.0
        assert sine["display.units"] == "V" and sine["display.limitHigh"] == 10.0
        assert sine["control.limitLow"] == -10.0
        assert sine["valueAlarm.active"] is True and sine["valueAlarm.highAlarmLimit"] == 9.0
        assert isinstance(values["counter"], int)
        assert values["string"] == "Hello from capva"
        assert values["bool"] in (True, False)
        assert values["waveform"].shape == (1000,) and values["waveform"].dtype == numpy.float64
        assert values["strings"] == ["alpha", "beta", "gamma", "delta"]
        assert values["enum"].choice == "Off"
        table = values["table"]  # NTTable is not unwrapped by default: the raw Value
        assert table.getID() == "epics:nt/NTTable:1.0"
        assert list(table.value.axis) == ["x", "y", "z", "theta"]
        assert values["image"].shape == (120, 160) and values["image"].dtype == numpy.uint8
        assert values["mailbox"] == 0.0

        # the writable ones
        C.put("demo:mailbox", 42.0, timeout=TMO)
        C.put("demo:string", "changed", timeout=TMO)
        C.put("demo:strings", ["x", "y"], timeout=TMO)
        C.put("demo:enum", "Standby", timeout=TMO)
        got = C.get(["demo:mailbox", "demo:string", "demo:strings", "demo:enum"], timeout=TMO)
        assert got[0] == 42.0 and got[1] == "changed" and got[2] == ["x", "y"] and got[3].choice == "Standby"
        with pytest.raises(RemoteError):
            C.put("demo:sine", 1.0, timeout=TMO)  # read-only

        # the changing ones change, with fresh timestamps
        sub, q = updates(C, "demo:counter")
        try:
            first, second = int(next_update(q)), int(next_update(q))
        finally:
            sub.close()
        assert second > first
        assert abs(C.get("demo:sine", timeout=TMO).timestamp - time.time()) < 60
