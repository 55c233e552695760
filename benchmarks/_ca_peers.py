"""Peers of ``bench_ca.py``: three Channel Access servers and one CA client, each in a process.

Why processes: a server's figures (CPU, RSS, posts per second) are only its own when nothing
else shares its process, GIL and allocator; and libca reads its ``EPICS_CA_*`` environment
once, when its context is made, so a client process per server is the only way to point the
same client at three servers.  Everything speaks the JSON-lines protocol of ``_servers.py``
(whose ``ServerProc`` plumbing :class:`Peer` reuses: a timeout on every call, ``close()``
always ends the process).

Servers (``python benchmarks/_ca_peers.py caproto|softioc|capva [--many N] [--array N]``):

* ``caproto``: a ``caproto.server.PVGroup`` of ``pvproperty``s, asyncio backend, its event
  loop in a thread of its own (commands arrive on the main thread and run in the loop);
* ``softioc``: pythonSoftIOC, i.e. EPICS base's RSRV serving database records (``ao`` for
  the scalar, ``waveform`` for the array, ``ai`` for the many PVs), with the normal
  scheduling policy of the other servers unless ``BENCH_SOFTIOC_RT=1`` (:func:`drop_realtime`);
* ``capva``: ``capva.server.Server(..., protocols=["ca"], isolate=True)`` with
  ``capva.server.thread.SharedPV`` (a put handler that posts and completes, the p4p idiom).

PVs: ``bench:scalar`` (a double that takes puts with completion), with ``--array N``
``bench:array`` (N float64s) and with ``--many N`` ``bench:many:00000``... (doubles).  The
server reads its network settings from the environment the driver gives it (``server_env``:
loopback only, free ports).  It prints ``{"conf": {...}, "pid": ..., "rss_kb": ..., "cpu": ...}``
once it serves (``conf``: the ``EPICS_CA_*`` settings a client needs; ``realtime``: how many of
its threads have a real-time scheduling policy), then answers:

* ``stats``: ``rss_kb`` (VmRSS after a gc) and ``cpu`` (all threads);
* ``post NAME SECONDS``: new values to ``bench:NAME`` (``scalar``: 1.0, 2.0...; ``array``: two
  arrays alternated) as fast as the server's own API allows, from inside the server process
  (capva: ``pv.post(v)`` in a thread; softioc: ``rec.set(v)`` in a thread; caproto:
  ``await pvprop.write(v)`` in its event loop) for SECONDS; answers ``posts``, ``t0``
  (``perf_counter``, the same clock in every process), ``wall``, ``cpu`` and ``sent_bytes``;
* ``quit`` (or end of input).

Client (``python benchmarks/_ca_peers.py client``): pyepics (libca) with the environment it
was started with, under the normal scheduling policy unless ``BENCH_CLIENT_RT=1`` (libca's
threads are EPICS threads too); prints ``{"conf": {...}, "pid": ..., "realtime": ...}`` and
answers:

* ``getmany PREFIX START N``: channels for N names (``PREFIX00000``...), all searched at
  once, then one get each, all in flight together: ``s`` from the first create to the last
  value (pyepics' recipe for many PVs);
* ``gets NAME SECONDS`` / ``puts NAME SECONDS``: connect and one untimed call, then
  ``ca.get(chid)`` / ``ca.put(chid, v, wait=True)`` back to back for SECONDS: ``n``, ``wall``;
* ``monitor NAME``: a subscription whose callback counts updates and bytes; answers once the
  first update arrived;
* ``mark``: ``n`` and ``bytes`` received so far, ``t_last`` (time of the last update), ``cpu``;
* ``drain QUIET``: waits until no update came for QUIET seconds, then as ``mark``;
* ``quit``.

Each server runs with C-level stdout sent to stderr (EPICS prints there), so that only the
JSON answers reach the driver.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from _servers import ServerProc, cpu_s, rss_kb, tcp_sent

HERE = os.path.abspath(__file__)
IMPLS = ("caproto", "softioc", "capva")
PREFIX = "bench:"
MAX_ARRAY_BYTES = 20_000_000  # 1M doubles (8 MB) plus headroom, on clients and servers
EPICS_KEYS = ("EPICS_CA_", "EPICS_CAS_", "EPICS_PVA", "EPICS_IOC_")

# ---------------------------------------------------------------- environment (driver side)


def free_ca_port() -> int:
    """A port free for both TCP and UDP: a CA server listens on both with one number."""
    for _ in range(100):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
        finally:
            t.close()
            u.close()
    raise RuntimeError("no free TCP+UDP port")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        return u.getsockname()[1]


def clean_env(repeater_port: int) -> dict[str, str]:
    """This process's environment without any EPICS setting, plus the ones every peer shares:
    no automatic address lists, the private repeater port (so beacons and repeater traffic
    never meet another CA user of the machine) and an array limit above 1M doubles."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(EPICS_KEYS)}
    env.update(
        EPICS_CA_AUTO_ADDR_LIST="NO",
        EPICS_CA_ADDR_LIST="127.0.0.1",
        EPICS_CA_REPEATER_PORT=str(repeater_port),
        EPICS_CA_MAX_ARRAY_BYTES=str(MAX_ARRAY_BYTES),
        PYTHONUNBUFFERED="1",
    )
    return env


def server_env(repeater_port: int) -> dict[str, str]:
    """A server's environment: loopback only, a free port, beacons to loopback only."""
    env = clean_env(repeater_port)
    env.update(
        EPICS_CA_SERVER_PORT=str(free_ca_port()),
        EPICS_CAS_INTF_ADDR_LIST="127.0.0.1",
        EPICS_CAS_AUTO_BEACON_ADDR_LIST="NO",
        EPICS_CAS_BEACON_ADDR_LIST="127.0.0.1",
        EPICS_CAS_BEACON_PORT=str(repeater_port),
        # softioc also starts a PVA server (QSRV): keep it off the default ports too
        EPICS_PVAS_INTF_ADDR_LIST="127.0.0.1",
        EPICS_PVAS_SERVER_PORT="0",
        EPICS_PVAS_BROADCAST_PORT=str(free_udp_port()),
        EPICS_PVAS_AUTO_BEACON_ADDR_LIST="NO",
        EPICS_PVAS_BEACON_ADDR_LIST="127.0.0.1",
    )
    return env


def client_env(repeater_port: int, conf: dict[str, str]) -> dict[str, str]:
    """A client's environment: the server's ``EPICS_CA_*`` conf over the shared settings (the
    repeater port and array limit stay the driver's: one repeater for every client)."""
    env = clean_env(repeater_port)
    env.update({k: str(v) for k, v in conf.items() if k.startswith("EPICS_CA_")})
    env["EPICS_CA_AUTO_ADDR_LIST"] = "NO"
    env["EPICS_CA_REPEATER_PORT"] = str(repeater_port)
    env["EPICS_CA_MAX_ARRAY_BYTES"] = str(MAX_ARRAY_BYTES)
    return env


class Repeater:
    """A private CA repeater (caproto's) on a free port, for the clients of one run.

    libca registers with a repeater when its context starts and, finding none, tries to spawn
    the ``caRepeater`` program (which pyepics does not ship on Linux) and warns; a repeater on
    the shared default port would mix this run with any other CA user of the machine.  This
    one is started and ended by the driver."""

    def __init__(self, stderr: Any = None) -> None:
        self.port = free_udp_port()
        env = clean_env(self.port)
        code = "import sys; from caproto.commandline.repeater import main; sys.argv[1:] = ['-q']; main()"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr
        )
        # wait until it holds the port (bound: our own bind fails), at most 10 s
        end = time.monotonic() + 10
        while time.monotonic() < end and self.proc.poll() is None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind(("127.0.0.1", self.port))
                except OSError:
                    return
            time.sleep(0.05)
        self.close()
        raise RuntimeError("the CA repeater did not start")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Peer(ServerProc):
    """Driver-side handle of one peer process (a server or a client) with its own environment.

    Everything but the start is ``ServerProc``'s: JSON lines filtered from stdout, a timeout
    on every answer, ``close()`` sends ``quit`` and kills after ``timeout``.  ``profile``: run
    the peer under ``py-spy record`` (collapsed stacks in that file); ``stderr``: where its
    stderr goes (a file, or None: this process's)."""

    def __init__(
        self,
        impl: str,
        *args: str,
        env: dict[str, str],
        role: str = "server",
        profile: str | None = None,
        timeout: float = 60.0,
        stderr: Any = None,
    ):
        self.role = role
        super().__init__(impl, *args, profile=profile, timeout=timeout, script=HERE, env=env, stderr=stderr)


# ---------------------------------------------------------------- peer side: common


def reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def private_stdout() -> None:
    """Keep fd 1 (where C code such as EPICS prints) apart from the JSON answers: the answers
    go to a private copy of the original stdout, everything else written to fd 1 to stderr."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = out


def stats() -> dict[str, Any]:
    cpu = cpu_s()
    gc.collect()
    return {"rss_kb": rss_kb(), "cpu": cpu}


def values(name: str, nelm: int) -> list[Any]:
    """One batch of values to post: 16 scalars (each batch continues the count, so that no
    value repeats and no server may skip one as unchanged), or two different arrays."""
    if name == "array":
        import numpy as np

        a = np.arange(nelm, dtype="f8")
        return [a, a[::-1].copy()]
    return [float(i) for i in range(1, 17)]


def post_loop(post: Callable[[Any], Any], name: str, nelm: int, seconds: float) -> dict[str, Any]:
    """Call ``post(v)`` as fast as possible for ``seconds``; the clock is read once a batch."""
    batch = values(name, nelm)
    scalar = name != "array"
    c0, w0 = cpu_s(), tcp_sent()
    t0 = time.perf_counter()
    end = t0 + seconds
    n = 0
    base = 0.0
    while True:
        if scalar:
            for v in batch:
                post(base + v)
            base += 16.0
        else:
            for v in batch:
                post(v)
        n += len(batch)
        if time.perf_counter() >= end:
            break
    wall = time.perf_counter() - t0
    return {"posts": n, "t0": t0, "wall": wall, "c0": c0, "w0": w0}


async def apost_loop(write: Callable[[Any], Any], name: str, nelm: int, seconds: float) -> dict[str, Any]:
    """:func:`post_loop` for an asyncio server: ``await write(v)``, then ``await
    asyncio.sleep(0)``, as a ``scan`` with period 0 does.  Without that yield the loop would
    never let the server's own tasks run (caproto 1.3's ``write`` returns without yielding):
    its subscription queue overflows, nothing is sent, and the server dies with
    "deque mutated during iteration"."""
    batch = values(name, nelm)
    scalar = name != "array"
    c0, w0 = cpu_s(), tcp_sent()
    t0 = time.perf_counter()
    end = t0 + seconds
    n = 0
    base = 0.0
    while True:
        if scalar:
            for v in batch:
                await write(base + v)
                await asyncio.sleep(0)
            base += 16.0
        else:
            for v in batch:
                await write(v)
                await asyncio.sleep(0)
        n += len(batch)
        if time.perf_counter() >= end:
            break
    wall = time.perf_counter() - t0
    return {"posts": n, "t0": t0, "wall": wall, "c0": c0, "w0": w0}


def finish_post(r: dict[str, Any]) -> dict[str, Any]:
    """After the post window: let queued updates go out (0.5 s), then the CPU and bytes of
    the window plus that drain."""
    time.sleep(0.5)
    c0, w0 = r.pop("c0"), r.pop("w0")
    return {**r, "cpu": cpu_s() - c0, "sent_bytes": tcp_sent() - w0}


def ca_conf() -> dict[str, str]:
    """What a client needs to find a server started with this environment."""
    return {
        "EPICS_CA_ADDR_LIST": "127.0.0.1",
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CA_SERVER_PORT": os.environ["EPICS_CA_SERVER_PORT"],
    }


# ---------------------------------------------------------------- the three servers


class CaprotoServer:
    """A ``PVGroup`` made on the fly (one ``pvproperty`` per PV, as a caproto IOC declares
    them), served by caproto's asyncio server in an event loop thread."""

    def __init__(self, many: int, nelm: int):
        from caproto.asyncio.server import Context
        from caproto.server import PVGroup, pvproperty

        body: dict[str, Any] = {"scalar": pvproperty(value=0.0, name="scalar")}
        if nelm:
            import numpy as np

            body["array"] = pvproperty(value=np.zeros(nelm), name="array", max_length=nelm, dtype=float)
        for i in range(many):
            body[f"m{i:05d}"] = pvproperty(value=float(i), name=f"many:{i:05d}")
        group = type("BenchGroup", (PVGroup,), body)(prefix=PREFIX)
        self.group, self.nelm = group, nelm
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="caproto", daemon=True)
        self.thread.start()

        async def make() -> Any:
            return Context(group.pvdb, interfaces=["127.0.0.1"])

        self.ctx = asyncio.run_coroutine_threadsafe(make(), self.loop).result(30)
        self.task = asyncio.run_coroutine_threadsafe(self.ctx.run(log_pv_names=False), self.loop)
        end = time.monotonic() + 30
        while self.ctx.port is None or not self.ctx.udp_socks:
            if self.task.done():
                self.task.result()  # raises the server's error
            if time.monotonic() > end:
                raise TimeoutError("caproto server did not start")
            time.sleep(0.02)
        self.conf = ca_conf()

    def alive(self) -> None:
        if self.task.done():
            exc = self.task.exception() if not self.task.cancelled() else None
            raise RuntimeError(f"the caproto server has stopped ({exc!r})")

    def post(self, name: str, seconds: float) -> dict[str, Any]:
        self.alive()
        prop = getattr(self.group, name)
        fut = asyncio.run_coroutine_threadsafe(apost_loop(prop.write, name, self.nelm, seconds), self.loop)
        r = finish_post(fut.result(seconds + 120))
        self.alive()
        return r

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.task.cancel)
        time.sleep(0.2)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def drop_realtime() -> bool:
    """Give up ``CAP_SYS_NICE`` (True: done, or never had it; False: could not, and the report
    will say that softioc's threads are real-time).

    Why: EPICS base gives its threads real-time scheduling (``SCHED_FIFO``, priorities 10-70)
    whenever the process may, and a process running as root may.  Its CA server threads then
    preempt every other thread of the machine on wake-up -- the client's, and the other
    servers', which have no such priority.  An IOC run by an ordinary account (or root without
    this capability) gets the normal policy, as the Python servers do; the benchmark compares
    the servers under that one policy (``BENCH_SOFTIOC_RT=1`` keeps EPICS' own choice).  The
    same holds for the pyepics client: libca's receive threads are EPICS threads, and with
    real-time priorities they preempt the server they talk to on every reply
    (``BENCH_CLIENT_RT=1`` keeps them)."""
    import ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [(n, ctypes.c_uint32) for n in ("effective", "permitted", "inheritable")]

    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    hdr, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3: 2 words
    if libc.capget(ctypes.byref(hdr), data) != 0:
        return False
    nice = 1 << 23  # CAP_SYS_NICE, in the first word
    if not (data[0].effective | data[0].permitted) & nice:
        return True
    d = data[0]
    d.effective &= ~nice
    d.permitted &= ~nice
    d.inheritable &= ~nice
    return libc.capset(ctypes.byref(hdr), data) == 0


def realtime_threads() -> int:
    """How many threads of this process have a real-time policy (Linux; 0 elsewhere)."""
    n = 0
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[38]) in (1, 2):  # SCHED_FIFO, SCHED_RR
                    n += 1
    except (OSError, IndexError, ValueError):
        pass
    return n


class SoftiocServer:
    """pythonSoftIOC: records made with ``softioc.builder``, served by EPICS base's RSRV.
    ``rec.set(v)`` on an output record processes it at once (``dbPutField``), which posts
    the monitors: the closest thing to a post in an IOC."""

    def __init__(self, many: int, nelm: int):
        if os.environ.get("BENCH_SOFTIOC_RT") != "1":
            drop_realtime()
        from softioc import asyncio_dispatcher, builder, softioc

        self.softioc, self.nelm = softioc, nelm
        self.dispatcher = asyncio_dispatcher.AsyncioDispatcher()
        builder.SetDeviceName(PREFIX.rstrip(":"))
        self.recs: dict[str, Any] = {"scalar": builder.aOut("scalar", initial_value=0.0, always_update=True)}
        if nelm:
            import numpy as np

            self.recs["array"] = builder.WaveformOut(
                "array", initial_value=np.zeros(nelm), length=nelm, always_update=True
            )
        self.many = [builder.aIn(f"many:{i:05d}", initial_value=float(i)) for i in range(many)]
        builder.LoadDatabase()
        softioc.iocInit(self.dispatcher)
        self.conf = ca_conf()
        self.realtime = realtime_threads()

    def post(self, name: str, seconds: float) -> dict[str, Any]:
        rec = self.recs[name]
        return finish_post(post_loop(rec.set, name, self.nelm, seconds))

    def stop(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self.softioc.epicsExit(0)  # does not return


class CapvaServer:
    """capva's CA server (``protocols=["ca"]``), thread-flavour SharedPVs."""

    def __init__(self, many: int, nelm: int):
        from capva.nt import NTScalar
        from capva.server import Server
        from capva.server.thread import SharedPV

        self.nelm = nelm
        scalar = SharedPV(nt=NTScalar("d"), initial=0.0)

        @scalar.put
        def _put(pv: Any, op: Any) -> None:
            pv.post(op.value())
            op.done()

        self.pvs: dict[str, Any] = {PREFIX + "scalar": scalar}
        if nelm:
            import numpy as np

            self.pvs[PREFIX + "array"] = SharedPV(nt=NTScalar("ad"), initial=np.zeros(nelm), max_length=nelm)
        for i in range(many):
            self.pvs[f"{PREFIX}many:{i:05d}"] = SharedPV(nt=NTScalar("d"), initial=float(i))
        self.server = Server(providers=[self.pvs], isolate=True, protocols=["ca"])
        self.conf = {k: str(v) for k, v in self.server.conf().items() if k.startswith("EPICS_CA")}

    def post(self, name: str, seconds: float) -> dict[str, Any]:
        pv = self.pvs[PREFIX + name]
        return finish_post(post_loop(pv.post, name, self.nelm, seconds))

    def stop(self) -> None:
        self.server.stop()


SERVERS = {"caproto": CaprotoServer, "softioc": SoftiocServer, "capva": CapvaServer}


def serve(impl: str, many: int, nelm: int) -> None:
    private_stdout()
    srv = SERVERS[impl](many, nelm)
    try:
        reply({"conf": srv.conf, "pid": os.getpid(), "realtime": getattr(srv, "realtime", 0), **stats()})
        for line in sys.stdin:
            cmd = line.split()
            if not cmd:
                continue
            try:
                if cmd[0] == "quit":
                    break
                elif cmd[0] == "stats":
                    reply(stats())
                elif cmd[0] == "post":
                    reply(srv.post(cmd[1], float(cmd[2])))
                else:
                    reply({"error": f"unknown command {cmd[0]!r}"})
            except Exception as e:  # answer, so the driver reports it instead of timing out
                reply({"error": f"{cmd[0]}: {type(e).__name__}: {e}"})
    finally:
        srv.stop()


# ---------------------------------------------------------------- the client (pyepics)


class Counter:
    """Updates and bytes received by monitor callbacks (libca calls them from its threads)."""

    def __init__(self) -> None:
        self.n = 0
        self.bytes = 0
        self.t_last = 0.0
        self.lock = threading.Lock()

    def __call__(self, value: Any = None, **kw: Any) -> None:
        nb = getattr(value, "nbytes", 8)
        with self.lock:
            self.n += 1
            self.bytes += nb
            self.t_last = time.perf_counter()

    def mark(self) -> dict[str, Any]:
        with self.lock:
            return {
                "n": self.n,
                "bytes": self.bytes,
                "t_last": self.t_last,
                "t": time.perf_counter(),
                "cpu": cpu_s(),
            }


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise TimeoutError(what)
        time.sleep(0.01)


def timed(fn: Callable[[int], Any], seconds: float) -> tuple[int, float]:
    n = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        for _ in range(4):
            fn(n)
            n += 1
        if time.perf_counter() >= end:
            return n, time.perf_counter() - t0


def client() -> None:
    private_stdout()
    if os.environ.get("BENCH_CLIENT_RT") != "1":
        drop_realtime()  # libca's threads take real-time priorities as softioc's do
    from epics import ca

    ca.initialize_libca()
    chans: dict[str, Any] = {}
    subs: list[Any] = []
    counter = Counter()

    def channel(name: str) -> Any:
        if name not in chans:
            chid = ca.create_channel(name, connect=False, auto_cb=False)
            if not ca.connect_channel(chid, timeout=10):
                raise TimeoutError(f"{name}: no connection")
            chans[name] = chid
        return chans[name]

    conf = {k: v for k, v in os.environ.items() if k.startswith("EPICS_CA")}
    reply(
        {"conf": conf, "pid": os.getpid(), "cpu": cpu_s(), "rss_kb": rss_kb(), "realtime": realtime_threads()}
    )
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        try:
            if cmd[0] == "quit":
                break
            elif cmd[0] == "getmany":
                prefix, start, n = cmd[1], int(cmd[2]), int(cmd[3])
                t0 = time.perf_counter()
                chids = [
                    ca.create_channel(f"{prefix}{i:05d}", connect=False, auto_cb=False)
                    for i in range(start, start + n)
                ]
                for chid in chids:
                    if not ca.connect_channel(chid, timeout=30):
                        raise TimeoutError(f"{ca.name(chid)}: no connection")
                for chid in chids:
                    ca.get(chid, wait=False)
                ca.poll()
                got = [ca.get_complete(chid, timeout=30) for chid in chids]
                dt = time.perf_counter() - t0
                if any(v is None for v in got):
                    raise TimeoutError(f"{sum(v is None for v in got)} gets did not complete")
                reply({"s": dt, "n": n})
            elif cmd[0] == "gets":
                chid = channel(cmd[1])
                ca.get(chid, timeout=10)

                def get(i: int, chid: Any = chid) -> None:
                    if ca.get(chid, timeout=10) is None:
                        raise TimeoutError("get timed out")

                n, wall = timed(get, float(cmd[2]))
                reply({"n": n, "wall": wall})
            elif cmd[0] == "puts":
                chid = channel(cmd[1])
                ca.put(chid, 0.0, wait=True, timeout=10)

                def put(i: int, chid: Any = chid) -> None:
                    if ca.put(chid, float(i), wait=True, timeout=10) != 1:
                        raise TimeoutError("put did not complete")

                n, wall = timed(put, float(cmd[2]))
                reply({"n": n, "wall": wall})
            elif cmd[0] == "monitor":
                chid = channel(cmd[1])
                t0 = time.perf_counter()
                n0 = counter.n
                subs.append(ca.create_subscription(chid, callback=counter))
                wait_for(lambda n0=n0: counter.n > n0, 30, "monitor: no first update")
                reply({"connect_s": time.perf_counter() - t0})
            elif cmd[0] == "mark":
                reply(counter.mark())
            elif cmd[0] == "drain":
                quiet = float(cmd[1])
                end = time.monotonic() + 60
                last, t_last = counter.n, time.monotonic()
                while time.monotonic() < end:
                    time.sleep(0.05)
                    if counter.n != last:
                        last, t_last = counter.n, time.monotonic()
                    elif time.monotonic() - t_last >= quiet:
                        break
                reply(counter.mark())
            elif cmd[0] == "stats":
                reply(stats())
            else:
                reply({"error": f"unknown command {cmd[0]!r}"})
        except Exception as e:
            reply({"error": f"{cmd[0]}: {type(e).__name__}: {e}"})
    for s in subs:
        ca.clear_subscription(s[2])


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("impl", choices=[*IMPLS, "client"])
    p.add_argument("--many", type=int, default=0, help="also serve bench:many:00000... (this many doubles)")
    p.add_argument("--array", type=int, default=0, help="also serve bench:array with this many float64s")
    a = p.parse_args(argv)
    if a.impl == "client":
        client()
    else:
        serve(a.impl, a.many, a.array)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
