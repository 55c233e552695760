"""p4p's command line client (``python -m p4p.client.cli``) against our PVA server.

Why this file exists: the CLI is how people first poke a server, and it runs in a separate
process that finds the server only through ``EPICS_PVA_*`` environment variables, exactly as
a deployed client would.  So these tests check that ``Server.conf()`` describes a reachable
server, that search over UDP and the whole client start-up work from scratch, and that
get/put/monitor/rpc print what users expect.  Every subprocess is bounded by a timeout.

p4p 4.3.0's ``cli put`` performs the put and then crashes on ``izip`` (a py2 leftover) before
printing; put tests therefore check the effect on the server, not the exit code.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from support.server import Mailbox, cli_env, load_impl, serve

T = 5.0
RUN_TIMEOUT = 30.0

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def impl():
    return load_impl()


@pytest.fixture
def srv(impl):
    box = Mailbox()
    nt = impl.nt
    pvs = {
        "c:d": impl.SharedPV(nt=nt.NTScalar("d"), initial=1.5, handler=box),
        "c:s": impl.SharedPV(nt=nt.NTScalar("s"), initial="hi there", handler=box),
        "c:ai": impl.SharedPV(nt=nt.NTScalar("ai"), initial=[1, 2, 3], handler=box),
        "c:e": impl.SharedPV(nt=nt.NTEnum(), initial={"index": 0, "choices": ["aa", "bb"]}, handler=box),
        "c:mon": impl.SharedPV(nt=nt.NTScalar("i"), initial=100),
    }
    calls = queue.Queue()
    reply_t = impl.Type([("greeting", "s"), ("n", "i")], id="test:reply:1.0")

    def rpc(pv, op):
        q = op.value().query
        calls.put({k: q[k] for k in q.keys()})
        op.done(impl.Value(reply_t, {"greeting": f"ok {q.a}", "n": len(q.keys())}))

    calc = impl.SharedPV(nt=nt.NTScalar("s"), initial="")
    calc.rpc(rpc)
    pvs["c:calc"] = calc
    with serve(impl, pvs) as S:
        yield type("Srv", (), {"S": S, "pvs": pvs, "box": box, "calls": calls, "env": cli_env(S.conf())})


def cli(srv, *args, timeout=RUN_TIMEOUT):
    return subprocess.run(
        [sys.executable, "-m", "p4p.client.cli", "-w", "5", *args],
        env=srv.env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def lines_by_name(stdout):
    out = {}
    for line in stdout.splitlines():
        name, _, rest = line.partition(" ")
        out[name] = rest
    return out


def assert_put_ran(r):
    """The put command finished; p4p 4.3.0 always dies afterwards on ``izip``."""
    assert r.returncode == 0 or "izip" in r.stderr, r.stderr


def test_cli_get(srv):
    r = cli(srv, "get", "c:d", "c:s", "c:ai", "c:e")
    assert r.returncode == 0, r.stderr
    got = lines_by_name(r.stdout)
    assert got["c:d"].endswith(" 1.5")
    assert got["c:s"].endswith(" 'hi there'")
    assert "[1, 2, 3]" in got["c:ai"]
    assert got["c:e"] == "aa"


def test_cli_get_missing(srv):
    r = subprocess.run(
        [sys.executable, "-m", "p4p.client.cli", "-w", "1", "get", "c:d", "c:missing"],
        env=srv.env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert r.returncode == 1
    got = lines_by_name(r.stdout)
    assert got["c:d"].endswith(" 1.5")
    assert got["c:missing"].startswith("Error:")


def test_cli_get_request_and_raw(srv):
    r = cli(srv, "-r", "field(value)", "get", "c:d")
    assert r.returncode == 0, r.stderr
    assert lines_by_name(r.stdout)["c:d"].endswith(" 1.5")
    r = cli(srv, "--raw", "get", "c:d")
    assert r.returncode == 0, r.stderr
    assert 'struct "epics:nt/NTScalar:1.0"' in r.stdout
    assert "double value = 1.5" in r.stdout


@pytest.mark.parametrize(
    "arg, name, check",
    [
        ("c:d=4.5", "c:d", lambda V: V == 4.5),
        ("c:d=-1e-3", "c:d", lambda V: V == -1e-3),
        ('c:d={"value": 6.5}', "c:d", lambda V: V == 6.5),
        ("c:s=some words", "c:s", lambda V: V == "some words"),
        ("c:ai=[4, 5, 6, 7]", "c:ai", lambda V: list(V) == [4, 5, 6, 7]),
        ("c:e=bb", "c:e", lambda V: V.raw["value.index"] == 1),
        ("c:e=0", "c:e", lambda V: V.raw["value.index"] == 0),
    ],
)
def test_cli_put(srv, arg, name, check):
    assert_put_ran(cli(srv, "put", arg))
    V, _req, op = srv.box.ops.get(timeout=T)
    assert op.name() == name
    assert check(V), V
    assert check(srv.pvs[name].current())


def test_cli_put_then_get(srv):
    assert_put_ran(cli(srv, "put", "c:d=12.25", "c:s=two words"))
    seen = {srv.box.ops.get(timeout=T)[2].name() for _ in range(2)}
    assert seen == {"c:d", "c:s"}
    r = cli(srv, "get", "c:d", "c:s")
    got = lines_by_name(r.stdout)
    assert got["c:d"].endswith(" 12.25")
    assert got["c:s"].endswith(" 'two words'")


def test_cli_rpc(srv):
    r = cli(srv, "rpc", "c:calc", "a=hello", "b=2")
    assert r.returncode == 0, r.stderr
    assert "('greeting', 'ok hello')" in r.stdout
    assert "('n', 2)" in r.stdout
    assert srv.calls.get(timeout=T) == {"a": "hello", "b": "2"}  # NTURI query fields are strings


class _Lines:
    """Collect a subprocess's stdout lines on a thread, for waiting with a timeout."""

    def __init__(self, proc):
        self.q = queue.Queue()
        self.seen = []
        self.t = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self.t.start()

    def _read(self, f):
        for line in f:
            self.q.put(line.rstrip("\n"))
        self.q.put(None)

    def until(self, pred, timeout=10.0, since=None):
        """The first line matching ``pred``: among lines already seen from index ``since`` on
        (when given), else among lines still to come."""
        if since is not None:
            for line in self.seen[since:]:
                if pred(line):
                    return line
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no matching line within {timeout}s; seen {self.seen[-5:]!r}"
            try:
                line = self.q.get(timeout=left)
            except queue.Empty:
                raise AssertionError(f"no matching line within {timeout}s; seen {self.seen[-5:]!r}") from None
            assert line is not None, f"monitor ended; seen {self.seen[-5:]!r}"
            self.seen.append(line)
            if pred(line):
                return line


@contextlib.contextmanager
def monitor_proc(srv, *names):
    proc = subprocess.Popen(
        [sys.executable, "-m", "p4p.client.cli", "monitor", *names],
        env=srv.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc, _Lines(proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def test_cli_monitor(srv):
    pv = srv.pvs["c:mon"]
    # one name per process: the CLI prints from several callback threads, and their output
    # interleaves mid-line ("c:dc:mon ...")
    with monitor_proc(srv, "c:mon") as (proc, out), monitor_proc(srv, "c:d") as (_p2, out2):
        out.until(lambda s: s.startswith("c:mon ") and s.endswith(" 100"))
        out2.until(lambda s: s.startswith("c:d ") and s.endswith(" 1.5"))
        for v in (101, 102, 103):
            pv.post(v)
        out.until(lambda s: s.startswith("c:mon ") and s.endswith(" 103"))
        vals = [int(s.rsplit(" ", 1)[1]) for s in out.seen if s.startswith("c:mon ") and "Error" not in s]
        assert vals == sorted(vals)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 1  # the CLI exits 1 on KeyboardInterrupt
    assert pv.isOpen()


def test_cli_monitor_sees_close_and_reopen(srv):
    pv = srv.pvs["c:mon"]
    with monitor_proc(srv, "c:mon") as (_proc, out):
        out.until(lambda s: s.endswith(" 100"))
        mark = len(out.seen)
        pv.close()
        out.until(lambda s: "Error" in s or "Disconnect" in s, since=mark)
        pv.open(200)
        out.until(lambda s: s.endswith(" 200"), timeout=30)
