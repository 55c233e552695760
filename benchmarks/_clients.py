"""Client side of ``bench_client.py``: one PVA client (capva's or p4p's) in a process of its own.

Why a separate process: the figure that matters most is the *client's* CPU (a user watching
1000 PVs pays for it on every machine), and ``getrusage(RUSAGE_SELF)`` only isolates it when
the process holds nothing but that client (its network thread and callback threads included).
Both clients run this same script with the same calls (``<pkg>.client.thread.Context``, the
same API in both packages), so the only difference between them is the client package.

Protocol (JSON lines, as ``_servers.py``)::

    python benchmarks/_clients.py capva|p4p CONF_JSON [--raw]

CONF_JSON is the ``conf`` dict for ``Context('pva', conf=..., useenv=False)``; ``--raw`` gives
``nt=False`` (raw Values) instead of the default NT unwrapping that most users get.  Prints one
line ``{"conf": CONF, "pid": ..., "cpu": ..., "rss_kb": ..., "ctx_s": ...}`` once the Context is made, then
answers each command on stdin with one JSON line:

* ``gets NAME SECONDS``: one untimed get (connects), then sequential ``ctx.get(NAME)`` for
  SECONDS; answers ``n``, ``wall``, ``cpu``;
* ``batch PREFIX N SECONDS``: ``ctx.get([N names])`` (``PREFIX00000``...) back to back for
  SECONDS after one untimed batch (``first_s``: search + connect + get); answers ``batches``,
  ``wall``, ``cpu``, ``first_s``;
* ``monitor PREFIX N``: subscribe to N PVs, wait for every first update; answers
  ``connect_s``;
* ``mark``: ``t`` (perf_counter), ``cpu``, ``sys`` (its kernel part), ``count`` (updates
  received so far, all PVs) and ``threads``;
* ``drain QUIET``: wait until ``count`` stops changing for QUIET seconds, then as ``mark``;
* ``unmonitor``: close the subscriptions;
* ``stats``: ``rss_kb`` and ``cpu``;
* ``quit`` (or end of input): close the Context and exit.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from functools import partial
from typing import Any

from _servers import ServerProc, cpu_s, reply, rss_kb

HERE = os.path.abspath(__file__)


def load(impl: str) -> Any:
    """The thread Context class of one package (capva copies p4p's API)."""
    if impl == "capva":
        from capva.client.thread import Context
    elif impl == "p4p":
        from p4p.client.thread import Context
    else:
        raise SystemExit(f"unknown client {impl!r}: expected capva or p4p")
    return Context


def timed(fn: Any, seconds: float) -> tuple[int, float, float]:
    """Call ``fn()`` back to back for ``seconds``: (calls, wall seconds, CPU seconds).  The
    clock is read every 4 calls, so reading it costs little next to a call."""
    n = 0
    c0 = cpu_s()
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        for _ in range(4):
            fn()
        n += 4
        if time.perf_counter() >= end:
            break
    return n, time.perf_counter() - t0, cpu_s() - c0


class Monitors:
    """N subscriptions with one counter each.  The callback does nothing but count: what is
    measured is the client's cost of delivering an update, not the user's work.  One counter
    per subscription, because a subscription's callbacks run one at a time (both packages)
    while different subscriptions' may run in different worker threads."""

    def __init__(self, ctx: Any, names: list[str]):
        self.counts = [0] * len(names)
        self.subs: list[Any] = []
        for i, name in enumerate(names):
            self.subs.append(ctx.monitor(name, self._counter(i), notify_disconnect=False))

    def _counter(self, i: int) -> Any:
        counts = self.counts

        def cb(value: Any) -> None:
            counts[i] += 1

        return cb

    def count(self) -> int:
        return sum(self.counts)

    def all_started(self) -> bool:
        return all(self.counts)

    def close(self) -> None:
        for s in self.subs:
            s.close()
        self.subs = []


def threads() -> int:
    """Threads of this process now (from /proc): how many the client started for its work."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def mark(mons: Monitors | None) -> dict[str, Any]:
    """The time, this process's CPU split into user and kernel (``sys``: much of it is
    thread wake-ups and socket calls, which a profile of Python frames does not show), the
    updates received so far and the thread count."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "t": time.perf_counter(),
        "cpu": r.ru_utime + r.ru_stime,
        "sys": r.ru_stime,
        "count": mons.count() if mons else 0,
        "threads": threads(),
    }


def wait_for(pred: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise TimeoutError(what)
        time.sleep(0.01)


def drain(mons: Monitors, quiet: float, timeout: float = 30.0) -> dict[str, Any]:
    """Wait for updates still queued (in the server, the socket or the client) to arrive, so
    that posts minus received counts only real drops."""
    end = time.monotonic() + timeout
    last, t_last = mons.count(), time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.05)
        now = mons.count()
        if now != last:
            last, t_last = now, time.monotonic()
        elif time.monotonic() - t_last >= quiet:
            break
    return mark(mons)


def names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(n)]


def run(impl: str, conf: dict[str, str], raw: bool) -> None:
    Context = load(impl)
    t0 = time.perf_counter()
    ctx = Context("pva", conf=conf, useenv=False, nt=False if raw else None)
    mons: Monitors | None = None
    try:
        ctx_s = time.perf_counter() - t0
        reply({"conf": conf, "pid": os.getpid(), "cpu": cpu_s(), "rss_kb": rss_kb(), "ctx_s": ctx_s})
        for line in sys.stdin:
            cmd = line.split()
            if not cmd:
                continue
            try:
                if cmd[0] == "quit":
                    break
                elif cmd[0] == "gets":
                    get = partial(ctx.get, cmd[1], timeout=10)
                    get()
                    n, wall, cpu = timed(get, float(cmd[2]))
                    reply({"n": n, "wall": wall, "cpu": cpu})
                elif cmd[0] == "batch":
                    get = partial(ctx.get, names(cmd[1], int(cmd[2])), timeout=30)
                    t1 = time.perf_counter()
                    get()
                    first = time.perf_counter() - t1
                    n, wall, cpu = timed(get, float(cmd[3]))
                    reply({"batches": n, "wall": wall, "cpu": cpu, "first_s": first})
                elif cmd[0] == "monitor":
                    if mons is not None:
                        mons.close()
                    t1 = time.perf_counter()
                    mons = Monitors(ctx, names(cmd[1], int(cmd[2])))
                    wait_for(mons.all_started, 60, "monitors did not all get a first update")
                    reply({"connect_s": time.perf_counter() - t1})
                elif cmd[0] == "mark":
                    reply(mark(mons))
                elif cmd[0] == "drain":
                    if mons is None:
                        raise RuntimeError("drain before monitor")
                    reply(drain(mons, float(cmd[1])))
                elif cmd[0] == "unmonitor":
                    if mons is not None:
                        mons.close()
                        mons = None
                    reply({})
                elif cmd[0] == "stats":
                    reply({"rss_kb": rss_kb(), "cpu": cpu_s()})
                else:
                    reply({"error": f"unknown command {cmd[0]!r}"})
            except Exception as e:  # answer, so the driver reports it instead of timing out
                reply({"error": f"{cmd[0]}: {type(e).__name__}: {e}"})
    finally:
        if mons is not None:
            mons.close()
        ctx.close()


class ClientProc(ServerProc):
    """Driver-side handle of one client subprocess: ``ServerProc``'s JSON-lines plumbing
    (timeouts on every call, ``close()`` always ends the process, optional py-spy).

    py-spy samples only the thread holding the GIL (``--gil``): a client keeps threads
    parked in ``select()`` and ``Condition.wait()``, which py-spy's idle detection counts as
    busy under ``--nonblocking``, and they would otherwise fill the profile."""

    role = "client"

    def __init__(
        self,
        impl: str,
        conf: dict[str, str],
        raw: bool = False,
        profile: str | None = None,
        timeout: float = 60.0,
    ):
        args = [json.dumps(conf)] + (["--raw"] if raw else [])
        super().__init__(impl, *args, profile=profile, timeout=timeout, script=HERE, spy_opts=("--gil",))


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("impl", choices=["capva", "p4p"])
    p.add_argument("conf", help="Context conf as a JSON object")
    p.add_argument("--raw", action="store_true", help="nt=False: raw Values, no NT unwrapping")
    a = p.parse_args(argv)
    run(a.impl, json.loads(a.conf), a.raw)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
