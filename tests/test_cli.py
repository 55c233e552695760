"""capva's command line client (``python -m capva.client.cli``) against capva's PVA server.

The CLI runs as a subprocess that finds the server only through the ``EPICS_PVA_*`` variables
of ``Server.conf()`` (loopback, isolated server), as a deployed client would.  The PVs are
thread SharedPVs in this process, so the tests can check what the server received and post
updates while a ``monitor`` runs.  Every subprocess is bounded by a timeout.

The client inside the CLI is capva's ``Context``; ``CAPVA_CLI_BACKEND=p4p`` in the environment
of the test run makes the CLI use p4p's instead (the subprocesses inherit it), which checks the
CLI and these tests against the reference client:

    CAPVA_CLI_BACKEND=p4p pytest tests/test_cli.py

The last group of tests calls the parsing and formatting helpers in process.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from capva import Type, Value, nt
from capva.client import cli as clim
from capva.server import Server
from capva.server.thread import SharedPV
from support.server import Mailbox, cli_env

pytestmark = pytest.mark.timeout(90)

RUN_TIMEOUT = 30.0  # bound on every subprocess
T0 = 1700000000.25  # the timestamp of c:dbl


def stamp(t: float) -> str:
    """The CLI's timestamp text for POSIX time ``t`` (local time, milliseconds)."""
    sec = int(t)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(sec)) + f".{round((t - sec) * 1000):03d}"


class Srv:
    """The server of one test: ``pvs`` by name, the put ``box``, the ``rpc_calls`` received,
    and ``env`` for the CLI subprocesses."""

    def __init__(self) -> None:
        self.box = Mailbox()
        self.rpc_calls: queue.Queue = queue.Queue()
        box = self.box
        dbl = nt.NTScalar("d").wrap(2.5, timestamp=T0)
        self.pvs: dict[str, Any] = {
            "c:dbl": SharedPV(nt=nt.NTScalar("d"), initial=dbl, handler=box),
            "c:int": SharedPV(nt=nt.NTScalar("i"), initial=7, handler=box),
            "c:s": SharedPV(nt=nt.NTScalar("s"), initial="hi there", handler=box),
            "c:ai": SharedPV(nt=nt.NTScalar("ai"), initial=[1, 2, 3], handler=box),
            "c:as": SharedPV(nt=nt.NTScalar("as"), initial=["a", "b c"], handler=box),
            "c:e": SharedPV(nt=nt.NTEnum(), initial={"index": 0, "choices": ["aa", "bb"]}, handler=box),
            "c:tbl": SharedPV(nt=nt.NTTable([("x", "d"), ("y", "s")]), initial=[{"x": 1.0, "y": "a"}]),
            "c:ro": SharedPV(nt=nt.NTScalar("d"), initial=1.0),  # no handler: put not supported
            "c:mon": SharedPV(nt=nt.NTScalar("i"), initial=100),
        }
        reply_t = Type([("greeting", "s"), ("n", "i")], id="test:reply:1.0")

        def rpc(pv: Any, op: Any) -> None:
            q = op.value().query
            args = {k: q[k] for k in q.keys()}
            self.rpc_calls.put(args)
            op.done(Value(reply_t, {"greeting": f"ok {args.get('a', '')}", "n": len(args)}))

        calc = SharedPV(nt=nt.NTScalar("s"), initial="")
        calc.rpc(rpc)
        self.pvs["c:calc"] = calc
        self.S = Server(providers=[self.pvs], isolate=True)
        self.env = cli_env(self.S.conf())

    def value(self, name: str) -> Any:
        return self.pvs[name].current()


@pytest.fixture
def srv() -> Iterator[Srv]:
    s = Srv()
    try:
        yield s
    finally:
        s.S.stop()


CMD = [sys.executable, "-m", "capva.client.cli"]


def cli(srv: Srv, *args: str, timeout: float = RUN_TIMEOUT, cmd: list[str] | None = None):
    """Run the CLI to completion; a CompletedProcess with text stdout/stderr."""
    return subprocess.run(
        [*(cmd or CMD), *args], env=srv.env, capture_output=True, text=True, timeout=timeout
    )


def ok(r: subprocess.CompletedProcess) -> list[str]:
    """Assert success with a clean stderr; the stdout lines."""
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    assert r.stderr == "", r.stderr
    return r.stdout.splitlines()


def failed(r: subprocess.CompletedProcess, n: int = 1) -> list[str]:
    """Assert exit status 1 and ``n`` error lines (no traceback); the stderr lines."""
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == n, r.stderr
    assert "Traceback" not in r.stderr
    return lines


class Proc:
    """A running CLI (``monitor``) whose stdout lines are read by a thread."""

    def __init__(self, srv: Srv, *args: str) -> None:
        self.p = subprocess.Popen(
            [*CMD, *args],
            env=srv.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # SIGINT as in a terminal, even when pytest runs as a background job (SIG_IGN inherited)
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.lines: queue.Queue = queue.Queue()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.put(line.rstrip("\n"))

    def line(self, timeout: float = 15.0) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise AssertionError("no output from the CLI") from None

    def wait(self, timeout: float = RUN_TIMEOUT) -> tuple[int, str]:
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self.t.join(5)
        assert self.p.stderr is not None
        return rc, self.p.stderr.read()

    def rest(self) -> list[str]:
        out = []
        while not self.lines.empty():
            out.append(self.lines.get_nowait())
        return out

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.kill()
        for f in (self.p.stdout, self.p.stderr):
            if f:
                f.close()


# --------------------------------------------------------------------------- get


def test_get_ntscalar(srv: Srv) -> None:
    assert ok(cli(srv, "get", "c:dbl")) == [f"c:dbl {stamp(T0)}  2.5"]


def test_get_kinds(srv: Srv) -> None:
    lines = ok(cli(srv, "get", "c:int", "c:s", "c:ai", "c:as", "c:e"))
    assert len(lines) == 5
    vals = {}
    for line in lines:
        name, _, rest = line.partition(" ")
        # name, date, time, then two spaces and the value
        _date, _time, val = rest.split(" ", 2)
        assert val.startswith(" ")
        vals[name] = val[1:]
    assert vals == {"c:int": "7", "c:s": "hi there", "c:ai": "[1, 2, 3]", "c:as": '["a", "b c"]', "c:e": "aa"}


def test_get_alarm_shown(srv: Srv) -> None:
    V = nt.NTScalar("d").wrap(3.0, timestamp=T0)
    V["alarm"] = {"severity": 2, "status": 1, "message": "too hot"}
    srv.pvs["c:dbl"].post(V)
    assert ok(cli(srv, "get", "c:dbl")) == [f"c:dbl {stamp(T0)}  3.0  MAJOR DEVICE too hot"]


def test_get_json(srv: Srv) -> None:
    lines = ok(cli(srv, "get", "--json", "c:dbl", "c:e", "c:ai"))
    recs = [json.loads(line) for line in lines]
    assert recs[0] == {
        "name": "c:dbl",
        "value": 2.5,
        "timestamp": T0,
        "severity": 0,
        "status": 0,
        "message": "",
    }
    assert recs[1]["name"] == "c:e" and recs[1]["value"] == "aa"
    assert recs[1]["index"] == 0 and recs[1]["choices"] == ["aa", "bb"]
    assert recs[2]["value"] == [1, 2, 3]


def test_get_raw(srv: Srv) -> None:
    out = cli(srv, "get", "--raw", "c:dbl")
    lines = ok(out)
    assert lines[0] == "c:dbl"
    assert lines[1] == 'struct "epics:nt/NTScalar:1.0" {'
    assert "    double value = 2.5" in lines
    assert "        int64_t secondsPastEpoch = 1700000000" in lines


def test_get_raw_json(srv: Srv) -> None:
    (line,) = ok(cli(srv, "get", "--raw", "--json", "c:dbl"))
    rec = json.loads(line)
    assert rec["name"] == "c:dbl"
    assert rec["value"]["value"] == 2.5
    assert rec["value"]["timeStamp"]["secondsPastEpoch"] == 1700000000


def test_get_structure_prints_tree(srv: Srv) -> None:
    lines = ok(cli(srv, "get", "c:tbl"))
    assert lines[0] == "c:tbl"
    assert lines[1] == 'struct "epics:nt/NTTable:1.0" {'
    assert '    string[] labels = {2}["x", "y"]' in lines


def test_options_anywhere(srv: Srv) -> None:
    """Options before the command, after it, and between the names."""
    for args in (
        ("-w", "5", "--json", "get", "c:dbl", "c:int"),
        ("get", "--json", "-w", "5", "c:dbl", "c:int"),
        ("get", "c:dbl", "-w", "5", "c:int", "--json"),
        ("--json", "get", "c:dbl", "--timeout=5", "c:int"),
    ):
        lines = ok(cli(srv, *args))
        assert [json.loads(line)["name"] for line in lines] == ["c:dbl", "c:int"], args


def test_get_missing_pv_times_out(srv: Srv) -> None:
    t0 = time.monotonic()
    r = cli(srv, "get", "-w", "0.5", "c:nope")
    assert time.monotonic() - t0 < 10
    assert failed(r) == ["c:nope: timeout after 0.5 s"]
    assert r.stdout == ""


def test_get_partial_failure(srv: Srv) -> None:
    r = cli(srv, "get", "-w", "1", "c:dbl", "c:nope")
    assert failed(r) == ["c:nope: timeout after 1.0 s"]
    assert r.stdout.splitlines() == [f"c:dbl {stamp(T0)}  2.5"]


def test_verbose_timeout_no_traceback(srv: Srv) -> None:
    r = cli(srv, "-v", "get", "-w", "0.3", "c:nope")
    assert r.returncode == 1
    assert "c:nope: timeout after 0.3 s" in r.stderr
    assert "Traceback" not in r.stderr


# --------------------------------------------------------------------------- put


def test_put_name_equals_value(srv: Srv) -> None:
    lines = ok(cli(srv, "put", "c:dbl=3.5"))
    assert srv.value("c:dbl") == 3.5
    assert len(lines) == 2
    assert lines[0] == f"Old : c:dbl {stamp(T0)}  2.5"
    assert lines[1].startswith("New : c:dbl ") and lines[1].endswith("  3.5")


def test_put_name_value(srv: Srv) -> None:
    ok(cli(srv, "put", "c:dbl", "-1.25"))
    assert srv.value("c:dbl") == -1.25
    ok(cli(srv, "put", "c:int", "0x10"))
    assert srv.value("c:int") == 16
    ok(cli(srv, "put", "c:s", "two words"))
    assert srv.value("c:s") == "two words"
    ok(cli(srv, "put", "c:s", "a=b c"))  # 'a' is no field of c:s: the whole text is the value
    assert srv.value("c:s") == "a=b c"
    ok(cli(srv, "put", "c:s", "value=v"))  # pvxs: NAME field=VALUE
    assert srv.value("c:s") == "v"
    ok(cli(srv, "put", "c:s=x=y"))  # NAME=VALUE: split at the first '='
    assert srv.value("c:s") == "x=y"


def test_put_several_pvs(srv: Srv) -> None:
    lines = ok(cli(srv, "put", "c:dbl=1.5", "c:int=-3"))
    assert srv.value("c:dbl") == 1.5 and srv.value("c:int") == -3
    assert [line.split(" ")[:3] for line in lines] == [
        ["Old", ":", "c:dbl"],
        ["New", ":", "c:dbl"],
        ["Old", ":", "c:int"],
        ["New", ":", "c:int"],
    ]


def test_put_enum_by_name_and_index(srv: Srv) -> None:
    lines = ok(cli(srv, "put", "c:e", "bb"))
    assert srv.value("c:e") == 1
    assert lines[1].endswith("  bb")
    ok(cli(srv, "put", "c:e=0"))
    assert srv.value("c:e") == 0
    r = cli(srv, "put", "c:e", "zz")
    assert failed(r) == ["c:e: 'zz' is not one of the choices ['aa', 'bb']"]
    assert srv.value("c:e") == 0


def test_put_arrays(srv: Srv) -> None:
    ok(cli(srv, "put", "c:ai", "[7, 8]"))
    assert srv.value("c:ai").tolist() == [7, 8]
    ok(cli(srv, "put", "c:ai", "4,5,6"))
    assert srv.value("c:ai").tolist() == [4, 5, 6]
    ok(cli(srv, "put", "c:ai=1 2"))
    assert srv.value("c:ai").tolist() == [1, 2]
    ok(cli(srv, "put", "c:as", '["x", "y z"]'))
    assert list(srv.value("c:as")) == ["x", "y z"]


def test_put_fields_and_json(srv: Srv) -> None:
    ok(cli(srv, "put", "c:dbl", "value=4", "alarm.severity=1", "alarm.message=meh"))
    V = srv.box.ops.get(timeout=5)[0].raw  # the handler sees the NT-unwrapped value
    assert V.value == 4.0 and V.alarm.severity == 1 and V.alarm.message == "meh"
    ok(cli(srv, "put", 'c:dbl={"value": 5, "alarm": {"severity": 2}}'))
    V = srv.box.ops.get(timeout=5)[0].raw
    assert V.value == 5.0 and V.alarm.severity == 2


def test_put_json_output(srv: Srv) -> None:
    (line,) = ok(cli(srv, "--json", "put", "c:dbl=3.5"))
    rec = json.loads(line)
    assert rec["name"] == "c:dbl" and rec["value"] == 3.5 and rec["old"] == 2.5


def test_put_request_passed(srv: Srv) -> None:
    ok(cli(srv, "put", "-r", "record[process=true]", "c:dbl=1"))
    _V, req, _op = srv.box.ops.get(timeout=5)
    assert req["record._options.process"] == "true"  # capva: V._options raises AttributeError


def test_bad_request_is_usage_error(srv: Srv) -> None:
    r = cli(srv, "put", "-r", "field(value", "c:dbl=1")
    assert r.returncode == 2
    assert r.stderr.startswith("capva: bad pvRequest 'field(value': ") and len(r.stderr.splitlines()) == 1
    assert srv.box.ops.empty()


def test_put_bad_value(srv: Srv) -> None:
    r = cli(srv, "put", "c:dbl", "abc")
    assert failed(r) == ["c:dbl: cannot convert 'abc' to double for field 'value'"]
    assert srv.value("c:dbl") == 2.5
    assert srv.box.ops.empty()
    r = cli(srv, "put", "c:dbl", "nofield=1")  # no such field: taken as the value
    assert failed(r) == ["c:dbl: cannot convert 'nofield=1' to double for field 'value'"]
    r = cli(srv, "put", "c:dbl", "nofield=1", "value=2")
    assert failed(r) == ["c:dbl: no field 'nofield'"]


def test_put_read_only(srv: Srv) -> None:
    r = cli(srv, "put", "c:ro=2")
    (line,) = failed(r)
    assert line.startswith("c:ro: remote error: ")
    assert srv.value("c:ro") == 1.0


def test_put_missing_pv(srv: Srv) -> None:
    r = cli(srv, "put", "-w", "0.5", "c:nope=1")
    assert failed(r) == ["c:nope: timeout after 0.5 s"]


def test_put_usage_errors(srv: Srv) -> None:
    for args in (("put",), ("put", "c:dbl"), ("put", "c:dbl=1", "c:int")):
        r = cli(srv, *args)
        assert r.returncode == 2, args
        assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr


# --------------------------------------------------------------------------- monitor


def test_monitor_count(srv: Srv) -> None:
    with Proc(srv, "monitor", "--count", "3", "c:mon") as P:
        first = P.line()
        assert first.startswith("c:mon ") and first.endswith("  100")
        srv.pvs["c:mon"].post(101)
        assert P.line().endswith("  101")
        srv.pvs["c:mon"].post(102)
        rc, err = P.wait()
        assert (rc, err) == (0, "")
        assert [line.rsplit(" ", 1)[1] for line in P.rest()] == ["102"]


def test_monitor_several_json(srv: Srv) -> None:
    with Proc(srv, "monitor", "--json", "c:mon", "c:e", "--count", "2") as P:
        got = [json.loads(P.line()), json.loads(P.line())]
        assert sorted(r["name"] for r in got) == ["c:e", "c:mon"]
        srv.pvs["c:mon"].post(5)
        srv.pvs["c:e"].post({"index": 1, "choices": ["aa", "bb"]})
        rc, err = P.wait()
        assert (rc, err) == (0, "")
        recs = {r["name"]: r for r in map(json.loads, P.rest())}
        assert recs["c:mon"]["value"] == 5 and recs["c:e"]["value"] == "bb"


def test_monitor_ctrl_c_exits_0(srv: Srv) -> None:
    with Proc(srv, "monitor", "c:mon") as P:
        P.line()
        P.p.send_signal(signal.SIGINT)
        rc, err = P.wait()
        assert rc == 0, err
        assert "Traceback" not in err


def test_monitor_duration(srv: Srv) -> None:
    """``-w`` given to monitor: the run time; a PV that never updated is an error."""
    t0 = time.monotonic()
    r = cli(srv, "monitor", "-w", "1", "c:mon", "c:nope")
    assert 0.9 < time.monotonic() - t0 < 15
    assert failed(r) == ["c:nope: no update within 1.0 s"]
    assert r.stdout.splitlines()[0].startswith("c:mon ")
    r = cli(srv, "monitor", "-w", "0.5", "c:mon")
    assert ok(r)[0].endswith("  100")


def test_monitor_disconnect_and_reconnect(srv: Srv) -> None:
    pv = srv.pvs["c:mon"]
    with Proc(srv, "monitor", "--count", "2", "c:mon") as P:
        assert P.line().endswith("  100")
        pv.close()
        assert P.line() == "c:mon *** disconnected"
        pv.open(200)
        assert P.line() == "c:mon *** reconnected"
        assert P.line().endswith("  200")
        rc, err = P.wait()
        assert (rc, err) == (0, "")


# --------------------------------------------------------------------------- info, call


def test_info(srv: Srv) -> None:
    lines = ok(cli(srv, "info", "c:dbl", "c:e"))
    dbl = [
        "c:dbl",
        'struct "epics:nt/NTScalar:1.0" {',
        "    double value",
        '    struct "alarm_t" {',
        "        int32_t severity",
        "        int32_t status",
        "        string message",
        "    } alarm",
        '    struct "time_t" {',
        "        int64_t secondsPastEpoch",
        "        int32_t nanoseconds",
        "        int32_t userTag",
        "    } timeStamp",
        "}",
    ]
    assert lines[: len(dbl)] == dbl
    assert lines[len(dbl)] == "c:e"
    assert '    struct "enum_t" {' in lines and "        string[] choices" in lines


def test_info_json_and_timeout(srv: Srv) -> None:
    (line,) = ok(cli(srv, "info", "--json", "c:ai"))
    rec = json.loads(line)
    assert rec["name"] == "c:ai"
    assert rec["type"][:2] == ["S", "epics:nt/NTScalarArray:1.0"]
    assert ["value", "ai"] in rec["type"][2]
    assert failed(cli(srv, "info", "-w", "0.5", "c:nope")) == ["c:nope: timeout after 0.5 s"]


def test_call(srv: Srv) -> None:
    lines = ok(cli(srv, "call", "c:calc", "a=1", "b=hello world"))
    assert lines == ['struct "test:reply:1.0" {', '    string greeting = "ok 1"', "    int32_t n = 2", "}"]
    assert srv.rpc_calls.get(timeout=5) == {"a": "1", "b": "hello world"}  # string-typed args


def test_rpc_alias_json_no_args(srv: Srv) -> None:
    (line,) = ok(cli(srv, "rpc", "--json", "c:calc"))
    assert json.loads(line) == {"name": "c:calc", "value": {"greeting": "ok ", "n": 0}}
    assert srv.rpc_calls.get(timeout=5) == {}


def test_call_errors(srv: Srv) -> None:
    (line,) = failed(cli(srv, "call", "c:dbl", "a=1"))
    assert line.startswith("c:dbl: remote error: ")
    assert failed(cli(srv, "call", "-w", "0.5", "c:nope")) == ["c:nope: timeout after 0.5 s"]
    r = cli(srv, "call", "c:calc", "a=1", "a=2")
    assert r.returncode == 2 and "duplicate" in r.stderr


# --------------------------------------------------------------------------- entry points


def test_usage(srv: Srv) -> None:
    r = cli(srv)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = cli(srv, "frobnicate")
    assert r.returncode == 2
    r = cli(srv, "get")
    assert r.returncode == 2 and r.stderr.strip() == "capva: get: expected at least one PV name"
    r = cli(srv, "--help")
    assert r.returncode == 0 and "monitor" in r.stdout


def test_python_m_capva(srv: Srv) -> None:
    assert ok(cli(srv, "get", "c:dbl", cmd=[sys.executable, "-m", "capva"])) == [f"c:dbl {stamp(T0)}  2.5"]


def test_console_script(srv: Srv) -> None:
    """``[project.scripts] capva = "capva.client.cli:main"``: the installed script when present
    (after ``pip install -e .``), else the same call the generated script makes."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml")) as f:
        assert 'capva = "capva.client.cli:main"' in f.read()
    exe = shutil.which("capva", path=os.path.dirname(sys.executable))
    cmd = (
        [exe]
        if exe
        else [sys.executable, "-c", "import sys; from capva.client.cli import main; sys.exit(main())"]
    )
    assert ok(cli(srv, "get", "c:dbl", cmd=cmd)) == [f"c:dbl {stamp(T0)}  2.5"]
    assert failed(cli(srv, "get", "-w", "0.3", "c:nope", cmd=cmd)) == ["c:nope: timeout after 0.3 s"]


def test_environment_is_used(srv: Srv) -> None:
    """The CLI finds the server only through EPICS_PVA_*: point them elsewhere and it fails."""
    env = dict(srv.env, EPICS_PVA_ADDR_LIST="127.0.0.1:9", EPICS_PVA_BROADCAST_PORT="9")
    r = subprocess.run(
        [*CMD, "get", "-w", "0.5", "c:dbl"], env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    assert failed(r) == ["c:dbl: timeout after 0.5 s"]


# --------------------------------------------------------------------------- helpers, in process


def test_parse_put_args() -> None:
    P = clim.parse_put_args
    assert P(["A=1", "B=x=y"]) == [("A", [(None, "1")]), ("B", [(None, "x=y")])]
    assert P(["A", "1"]) == [("A", [(None, "1")])]
    assert P(["A", "value=1"]) == [("A", [("value", "1")])]
    assert P(["A", "value=1", "alarm.severity=2"]) == [("A", [("value", "1"), ("alarm.severity", "2")])]
    assert P(["A", '{"value": 1}']) == [("A", [(None, '{"value": 1}')])]
    for bad in ([], ["A"], ["A=1", "B"], ["A", "1", "2"]):
        with pytest.raises(clim.UsageError):
            P(bad)


def test_convert_field() -> None:
    V = nt.NTScalar("ad").wrap([1.0])
    assert clim.convert_field(V, "value", "1, 2.5") == {"value": [1.0, 2.5]}
    assert clim.convert_field(V, "value", "") == {"value": []}
    assert clim.convert_field(V, "alarm.severity", "2") == {"alarm.severity": 2}
    B = Value(Type([("value", "?")]), {})
    assert clim.convert_field(B, "value", "true") == {"value": True}
    with pytest.raises(ValueError, match="to bool"):
        clim.convert_field(B, "value", "maybe")


def test_format_helpers() -> None:
    assert clim.format_plain(1.0) == "1.0"
    assert clim.format_plain(True) == "true"
    assert clim.format_plain(["a", 'b"']) == '["a", "b\\""]'
    V = nt.NTScalar("d").wrap(2.5)
    assert clim.format_timestamp(V) == "<undefined>"
    assert clim.format_text("X", V) == "X <undefined>  2.5"
    assert clim.format_text(None, V) == "2.5"
    assert clim.format_type(Type([("a", "ai"), ("u", ("U", None, [("x", "s")]))], id="t")) == [
        'struct "t" {',
        "    int32_t[] a",
        "    union {",
        "        string x",
        "    } u",
        "}",
    ]
