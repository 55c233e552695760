"""Server side of ``bench_server.py``: one PVA server (capva's or p4p's) in a process of its own.

Why a separate process: the figures we want are the *server's* (CPU seconds, RSS, posts per
second), and a server sharing a process with the p4p client would share its GIL, its allocator
and its rusage.  Each server process runs the same script with the same API calls, so the only
difference between the two is the server package.

Protocol (JSON lines, so it can also be driven by hand)::

    python benchmarks/_servers.py capva|p4p [--array N]

prints one line ``{"conf": {...}, "pid": ..., "rss_kb": ..., "cpu": ...}`` once the server
(``Server(isolate=True)``: 127.0.0.1, random ports) is up, then reads commands on stdin and
answers each with one JSON line:

* ``stats``: ``rss_kb`` (VmRSS after a gc) and ``cpu`` (user+system seconds, all threads);
* ``addpvs N``: add N NTScalar 'd' PVs ``bench:many:00000``... to the running server;
* ``post NAME SECONDS``: call ``pv.post()`` on PV ``bench:scalar`` or ``bench:array`` as fast
  as possible for SECONDS in this (main) thread; answers ``posts``, ``wall``, ``cpu``;
* ``ticker N RATE SECONDS [STEPS]``: post to the first N ``bench:many:`` PVs, RATE times a
  second each, at a steady pace (STEPS timer steps a second, default 500) for SECONDS, in
  this thread; answers ``posts``, ``wall``, ``cpu`` and ``late_max`` (worst step lateness, s)
  (``bench_client.py``'s monitor load: the client, not the server, is measured there);
* ``quit`` (or end of input): stop the server and exit.

PVs always present: ``bench:scalar`` (NTScalar 'd'; its put handler posts the value and
completes, which is the p4p idiom), and with ``--array N`` ``bench:array`` (NTScalarArray
'ad' of N elements).  Handlers are the thread flavour (``<pkg>.server.thread.SharedPV``).
"""

from __future__ import annotations

import gc
import json
import os
import queue
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any

HERE = os.path.abspath(__file__)


def load(impl: str) -> SimpleNamespace:
    """The server API of one package; both expose the same names (capva copies p4p's API)."""
    if impl == "capva":
        from capva.nt import NTScalar
        from capva.server import Server, StaticProvider
        from capva.server.thread import SharedPV
    elif impl == "p4p":
        from p4p.nt import NTScalar
        from p4p.server import Server, StaticProvider
        from p4p.server.thread import SharedPV
    else:
        raise SystemExit(f"unknown server {impl!r}: expected capva or p4p")
    return SimpleNamespace(Server=Server, StaticProvider=StaticProvider, SharedPV=SharedPV, NTScalar=NTScalar)


def rss_kb() -> int:
    """Resident set size from /proc (ru_maxrss would be the peak, not the current size)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s() -> float:
    """User+system CPU of the whole process: the network thread and handler threads included."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def tcp_sent() -> int:
    """Bytes the peers have acknowledged on this process's TCP sockets (TCP_INFO
    ``tcpi_bytes_acked``): what the server put on the wire, which tells squashing in the server
    apart from squashing in the client.  (/proc/self/io would miss Python's send() calls.)"""
    total = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            s = socket.socket(fileno=os.dup(int(fd)))
        except OSError:
            continue
        try:
            if s.type == socket.SOCK_STREAM and s.family in (socket.AF_INET, socket.AF_INET6):
                info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
                if len(info) >= 128:
                    total += struct.unpack_from("Q", info, 120)[0]
        except OSError:
            pass
        finally:
            s.close()
    return total


def stats() -> dict[str, Any]:
    """CPU first, so that the gc.collect() (done so RSS is not inflated by garbage) is not
    counted in a CPU difference between two calls."""
    cpu = cpu_s()
    gc.collect()
    return {"rss_kb": rss_kb(), "cpu": cpu}


def serve(impl: str, array: int) -> None:
    api = load(impl)
    provider = api.StaticProvider("bench")
    scalar = api.SharedPV(nt=api.NTScalar("d"), initial=0.0)

    @scalar.put
    def _put(pv: Any, op: Any) -> None:
        pv.post(op.value())
        op.done()

    provider.add("bench:scalar", scalar)
    pvs: dict[str, Any] = {"bench:scalar": scalar}
    arrays: list[Any] = []
    if array:
        import numpy as np

        # two different arrays, alternated, so no server can skip a post as "unchanged"
        arrays = [np.arange(array, dtype="f8"), np.arange(array, dtype="f8")[::-1].copy()]
        pvs["bench:array"] = api.SharedPV(nt=api.NTScalar("ad"), initial=arrays[0])
        provider.add("bench:array", pvs["bench:array"])
    many: list[Any] = []  # keep them alive: StaticProvider holds them, but be explicit

    server = api.Server(providers=[provider], isolate=True)
    try:
        reply({"conf": server.conf(), "pid": os.getpid(), **stats()})
        for line in sys.stdin:
            cmd = line.split()
            if not cmd:
                continue
            if cmd[0] == "quit":
                break
            if cmd[0] == "stats":
                reply(stats())
            elif cmd[0] == "addpvs":
                start = len(many)
                for i in range(start, start + int(cmd[1])):
                    pv = api.SharedPV(nt=api.NTScalar("d"), initial=float(i))
                    provider.add(f"bench:many:{i:05d}", pv)
                    many.append(pv)
                time.sleep(0.2)  # let the network thread settle (e.g. a beacon change count)
                reply(stats())
            elif cmd[0] == "post":
                reply(post(pvs[cmd[1]], float(cmd[2]), arrays))
            elif cmd[0] == "ticker":
                steps = int(cmd[4]) if len(cmd) > 4 else 500
                reply(ticker(many[: int(cmd[1])], float(cmd[2]), float(cmd[3]), steps))
            else:
                reply({"error": f"unknown command {cmd[0]!r}"})
    finally:
        server.stop()


def post(pv: Any, seconds: float, arrays: list[Any]) -> dict[str, Any]:
    """Post as fast as this thread can for ``seconds``; the clock is read every 16 posts so
    that reading it costs little next to a post."""
    c0, w0 = cpu_s(), tcp_sent()
    t0 = time.perf_counter()
    end = t0 + seconds
    n = 0
    if arrays:
        a, b = arrays
        while True:
            for _ in range(2):
                pv.post(a)
                pv.post(b)
            n += 4
            if time.perf_counter() >= end:
                break
    else:
        x = 0.0
        while True:
            for _ in range(16):
                x += 1.0
                pv.post(x)
            n += 16
            if time.perf_counter() >= end:
                break
    wall = time.perf_counter() - t0
    time.sleep(0.5)  # updates still queued in the network thread are sent, then counted
    return {"posts": n, "wall": wall, "cpu": cpu_s() - c0, "sent_bytes": tcp_sent() - w0}


_TICKS = [0]  # ticker calls so far: every call posts values no earlier call posted


def ticker(pvs: list[Any], rate: float, seconds: float, steps: int) -> dict[str, Any]:
    """Post ``rate`` updates a second to each PV of ``pvs`` for ``seconds``, spread evenly.

    Why a timer loop and not "as fast as possible": a client's cost per update is only
    comparable between clients if both are offered the same load at the same pace.  Step k
    is due at ``t0 + k/steps`` (absolute deadlines, so sleep jitter does not drift the rate)
    and brings the running total of posts up to ``k * len(pvs) * rate / steps``, cycling
    through the PVs in order, so each PV is posted every 1/rate seconds.  A late step catches
    up, and its lateness is reported.  Every value is new (no server may skip it as unchanged).
    """
    if not pvs:
        raise ValueError("ticker: no PVs (addpvs first)")
    npv = len(pvs)
    per_step = npv * rate / steps
    base = _TICKS[0] * 1e7 + 0.5
    _TICKS[0] += 1
    c0 = cpu_s()
    t0 = time.perf_counter()
    nsteps = int(seconds * steps)
    n = 0
    late = 0.0
    for k in range(1, nsteps + 1):
        due = t0 + k / steps
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        else:
            late = max(late, now - due)
        target = int(k * per_step + 0.5)
        while n < target:
            pvs[n % npv].post(base + n)
            n += 1
    wall = time.perf_counter() - t0
    return {"posts": n, "wall": wall, "cpu": cpu_s() - c0, "late_max": late}


def reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def profiled(cmd: list[str], profile: str | None, spy_opts: tuple[str, ...] = ()) -> list[str]:
    """``cmd``, run under ``py-spy record`` (250 Hz, collapsed stacks in the file ``profile``)
    when ``profile`` is given."""
    if not profile:
        return cmd
    pyspy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return [
        pyspy,
        "record",
        *spy_opts,
        "--nonblocking",
        "-r",
        "250",
        "--format",
        "raw",
        "-o",
        profile,
        "--",
        *cmd,
    ]


class ServerProc:
    """Client-side handle of one server subprocess (used by ``bench_server.py``); with
    ``script`` any worker speaking the same JSON-lines protocol (``_clients.py``).

    Every call has a timeout and :meth:`close` always ends the process (quit, then kill), so a
    hung server cannot hang the benchmark.  ``profile`` names a py-spy output file: the server
    then runs under ``py-spy record`` (collapsed stacks, idle threads excluded; more
    ``py-spy record`` options in ``spy_opts``, e.g. ``("--gil",)``).
    """

    role = "server"  # in error messages; ``_clients.ClientProc`` says "client"

    def __init__(
        self,
        impl: str,
        *args: str,
        profile: str | None = None,
        timeout: float = 60.0,
        script: str = HERE,
        spy_opts: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        stderr: Any = None,
    ):
        self.impl = impl
        cmd = profiled([sys.executable, script, impl, *args], profile, spy_opts)
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True, bufsize=1, env=env
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self.hello = self._next(timeout)
        except BaseException:
            self.close()
            raise
        self.conf: dict[str, str] = self.hello["conf"]
        self.pid: int = self.hello["pid"]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):  # py-spy prints its own chatter on the same stdout
                self._lines.put(line)
        self._lines.put(None)

    def _next(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"{self.impl} {self.role}: no answer in {timeout} s") from None
        if line is None:
            raise RuntimeError(f"{self.impl} {self.role} exited (rc={self.proc.poll()})")
        return json.loads(line)

    def call(self, *cmd: Any, timeout: float = 60.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(" ".join(map(str, cmd)) + "\n")
        self.proc.stdin.flush()
        r = self._next(timeout)
        if "error" in r:
            raise RuntimeError(f"{self.impl} {self.role}: {r['error']}")
        return r

    def close(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            except (OSError, ValueError):
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)

    def __enter__(self) -> ServerProc:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("impl", choices=["capva", "p4p"])
    p.add_argument("--array", type=int, default=0, help="also serve bench:array with this many float64s")
    a = p.parse_args(argv)
    serve(a.impl, a.array)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
