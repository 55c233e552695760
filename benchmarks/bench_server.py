"""Server benchmark: capva's PVA server against p4p's, side by side in one run.

Each server runs in its own subprocess (``_servers.py``), so its CPU time and RSS are its own
and the client's GIL does not slow it down; both are driven by the same client, p4p's
``p4p.client.thread.Context`` in this process, with the same discovery (``--discovery``).
Workloads alternate capva / p4p, and every workload runs ``--repeat`` times (default 2) with
the order swapped each time, so that slow drift of the machine hits both alike; a judged figure
is the best of the repeats (the least-disturbed run), an informational one their mean.

* W1  connect + get 1000 distinct NTScalar 'd' PVs (``Context.get`` of a list), wall time,
      best of 3 fresh Contexts (each on 1000 other names);
* W2  sequential gets/s of one PV for ``--duration`` seconds;
* W3  sequential puts/s with completion (handler posts, then ``op.done()``);
* W4  ``post()`` of a scalar as fast as the server process can for ``--duration`` seconds,
      with 1 and with 10 monitors (one Context each): posts/s, updates received per client,
      dropped (posts - received, i.e. squashed somewhere between post() and the callback),
      server CPU seconds (the post window plus 0.5 s for queued updates to go out), and the
      bytes the server put on the wire per post (TCP_INFO), which shows *where* updates were
      squashed: in the server (fewer bytes) or in the client's own queue;
* W5  1M-element float64 NTScalarArray: server posts as fast as it can, one monitor counts
      the bytes it receives -> MB/s;
* W6  server RSS per 1000 PVs (10000 PVs added to a running server, minus before) and per
      connected channel (RSS after a client connected 1000 channels, minus before).

Targets (issue): >= 1.0x p4p on every workload, W5 >= 1 GB/s, W6 <= p4p's memory.  The table
prints ``capva/p4p`` for every figure with the direction that is better (throughput: higher;
time and memory: lower) and whether the target is met.  Figures only: nothing is asserted.

Run::

    python benchmarks/bench_server.py              # full run, about 1.5 minutes
    python benchmarks/bench_server.py --quick      # smoke run, about 15 s
    python benchmarks/bench_server.py --only W2,W4 --duration 5 --discovery tcp
    python benchmarks/bench_server.py --profile /tmp/prof   # capva servers under py-spy

``--profile DIR`` runs capva's server processes under ``py-spy record`` (``pip install
py-spy`` into the venv) and prints the top functions of each; the profiled figures are then
not comparable with p4p's.  ``make bench`` runs this with the defaults.

The machine has few cores (2 here): client and server share them, so a server that sends
more updates also makes the client busier.  That is the real trade-off of a server, and it is
the same client for both, but read W4's drop counts with it in mind.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from p4p.client.thread import Context

from _servers import ServerProc

IMPLS = ("capva", "p4p")
WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6")


class Row:
    """One line of the result table.  ``better`` is 'higher' or 'lower'; ``target`` tells
    whether the row counts toward the summary (None: informational)."""

    def __init__(
        self,
        label: str,
        unit: str,
        better: str,
        capva: float,
        p4p: float,
        target: str | None = ">=1.0x p4p",
        absolute: Callable[[float], bool] | None = None,
    ):
        self.label, self.unit, self.better = label, unit, better
        self.capva, self.p4p, self.target, self.absolute = capva, p4p, target, absolute

    @property
    def ratio(self) -> float:
        return self.capva / self.p4p if self.p4p else float("inf")

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        r = self.ratio
        ok = r >= 1.0 if self.better == "higher" else r <= 1.0
        if self.absolute is not None:
            ok = ok and self.absolute(self.capva)
        return ok


def client(conf: dict[str, str], discovery: str) -> Context:
    """The one client used for both servers.  ``udp``: the server's own conf (unicast search
    to 127.0.0.1); ``tcp``: search through a TCP name server connection to that server."""
    if discovery == "udp" and conf.get("EPICS_PVA_BROADCAST_PORT", "0") == "0":
        raise RuntimeError("the server reports no UDP search port: try --discovery tcp")
    if discovery == "tcp":
        conf = {
            "EPICS_PVA_NAME_SERVERS": f"127.0.0.1:{conf['EPICS_PVA_SERVER_PORT']}",
            "EPICS_PVA_ADDR_LIST": "",
            "EPICS_PVA_AUTO_ADDR_LIST": "NO",
        }
    return Context("pva", conf=dict(conf), useenv=False, nt=False)


def timed_loop(fn: Callable[[int], Any], seconds: float) -> tuple[int, float]:
    """Call ``fn(i)`` back to back for ``seconds``; returns (calls, wall seconds)."""
    n = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        for _ in range(8):
            fn(n)
            n += 1
        if time.perf_counter() >= end:
            return n, time.perf_counter() - t0


def client_cpu() -> float:
    """CPU seconds of this (client) process: on a small machine the client competes with the
    server for cores, so how busy each server makes the same client is part of the picture."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise TimeoutError(what)
        time.sleep(0.01)


def wait_quiet(counts: Callable[[], Any], quiet: float = 0.3, timeout: float = 10.0) -> None:
    """Wait until ``counts()`` stops changing for ``quiet`` seconds (updates still in flight)."""
    end = time.monotonic() + timeout
    last = counts()
    t_last = time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.05)
        now = counts()
        if now != last:
            last, t_last = now, time.monotonic()
        elif time.monotonic() - t_last >= quiet:
            return


# ---------------------------------------------------------------- workloads (one server each)


def w1_w6(srv: ServerProc, a: argparse.Namespace, want: set[str]) -> dict[str, float]:
    """W6 (memory) and W1 (connect+get) share one server: add the PVs, then connect to them."""
    npv, nget = a.pvs, a.gets
    s0 = srv.call("stats")
    s1 = srv.call("addpvs", npv, timeout=120)
    out = {"pv_kB_per_1000": (s1["rss_kb"] - s0["rss_kb"]) / (npv / 1000)}
    names = [f"bench:many:{i:05d}" for i in range(npv)]
    times = []
    for rep in range(3 if "W1" in want else 1):
        chunk = names[rep * nget : (rep + 1) * nget]
        if len(chunk) < nget:
            break
        with client(srv.conf, a.discovery) as ctx:
            t0 = time.perf_counter()
            vals = ctx.get(chunk, timeout=60)
            times.append(time.perf_counter() - t0)
            assert len(vals) == nget
            if rep == 0:
                time.sleep(0.5)  # let the server finish whatever it does after the last reply
                s2 = srv.call("stats")
                out["chan_B_per_channel"] = (s2["rss_kb"] - s1["rss_kb"]) * 1024 / nget
    out["w1_s"] = min(times)
    return out


def w2(srv: ServerProc, a: argparse.Namespace) -> dict[str, float]:
    with client(srv.conf, a.discovery) as ctx:
        ctx.get("bench:scalar", timeout=10)
        c0 = srv.call("stats")["cpu"]
        n, dt = timed_loop(lambda i: ctx.get("bench:scalar", timeout=10), a.duration)
        c1 = srv.call("stats")["cpu"]
    return {"rate": n / dt, "cpu_us": (c1 - c0) / n * 1e6}


def w3(srv: ServerProc, a: argparse.Namespace) -> dict[str, float]:
    with client(srv.conf, a.discovery) as ctx:
        ctx.put("bench:scalar", 1.0, wait=True, timeout=10)
        c0 = srv.call("stats")["cpu"]
        n, dt = timed_loop(lambda i: ctx.put("bench:scalar", float(i), wait=True, timeout=10), a.duration)
        c1 = srv.call("stats")["cpu"]
    return {"rate": n / dt, "cpu_us": (c1 - c0) / n * 1e6}


def w4(srv: ServerProc, a: argparse.Namespace, nmon: int) -> dict[str, float]:
    counts = [0] * nmon
    ctxs: list[Context] = []
    subs = []

    def counter(i: int) -> Callable[[Any], None]:
        def cb(v: Any) -> None:
            counts[i] += 1

        return cb

    try:
        for i in range(nmon):
            ctxs.append(client(srv.conf, a.discovery))
            subs.append(ctxs[i].monitor("bench:scalar", counter(i), notify_disconnect=False))
        wait_until(lambda: all(counts), 20, "W4: monitors did not connect")
        base = list(counts)
        cc0 = client_cpu()
        r = srv.call("post", "bench:scalar", a.duration, timeout=a.duration + 60)
        wait_quiet(lambda: list(counts))
        cc1 = client_cpu()
        got = [c - b for c, b in zip(counts, base)]
    finally:
        for s in subs:
            s.close()
        for c in ctxs:
            c.close()
    mean = sum(got) / nmon
    return {
        "posts_s": r["posts"] / r["wall"],
        "recv_s": mean / r["wall"],
        "recv": mean,
        "dropped_pct": 100.0 * (r["posts"] - mean) / r["posts"],
        "cpu": r["cpu"],
        "cpu_us_post": r["cpu"] / r["posts"] * 1e6,
        "sent_B_post": r["sent_bytes"] / r["posts"] / nmon,
        "client_cpu": cc1 - cc0,
    }


def w5(srv: ServerProc, a: argparse.Namespace) -> dict[str, float]:
    state = {"bytes": 0, "n": 0, "t": 0.0}
    lock = threading.Lock()

    def cb(v: Any) -> None:
        nb = v["value"].nbytes
        with lock:
            state["bytes"] += nb
            state["n"] += 1
            state["t"] = time.perf_counter()

    with client(srv.conf, a.discovery) as ctx:
        sub = ctx.monitor("bench:array", cb, notify_disconnect=False)
        try:
            wait_until(lambda: state["n"] > 0, 20, "W5: monitor did not connect")
            wait_quiet(lambda: state["n"], quiet=0.2)
            with lock:
                state["bytes"] = state["n"] = 0
            t0 = time.perf_counter()
            cc0 = client_cpu()
            r = srv.call("post", "bench:array", a.duration, timeout=a.duration + 60)
            wait_quiet(lambda: state["n"])
            cc1 = client_cpu()
        finally:
            sub.close()
    dt = max(state["t"] - t0, r["wall"])
    return {
        "MBps": state["bytes"] / dt / 1e6,
        "posts_s": r["posts"] / r["wall"],
        "recv_s": state["n"] / dt,
        "cpu": r["cpu"],
        "sent_MBps": r["sent_bytes"] / r["wall"] / 1e6,
        "client_cpu": cc1 - cc0,
    }


# ---------------------------------------------------------------- driver


def run(a: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    """Run the chosen workloads ``a.repeat`` times, alternating which server goes first;
    returns {impl: {key: [value per repeat]}}."""
    want = set(a.only)
    res: dict[str, dict[str, list[float]]] = {i: collections.defaultdict(list) for i in IMPLS}
    if a.profile:
        os.makedirs(a.profile, exist_ok=True)

    def server(impl: str, group: str, rep: int, *args: str) -> ServerProc:
        prof = None
        if a.profile and impl == "capva":
            prof = os.path.join(a.profile, f"{impl}-{group}-{rep}.txt")
        return ServerProc(impl, *args, profile=prof)

    def store(impl: str, figures: dict[str, float], prefix: str = "") -> None:
        for k, v in figures.items():
            res[impl][prefix + k].append(v)

    for rep in range(a.repeat):
        order = IMPLS if rep % 2 == 0 else IMPLS[::-1]
        tag = f"[{rep + 1}/{a.repeat}]"
        if want & {"W1", "W6"}:
            for impl in order:
                with server(impl, "w1w6", rep) as srv:
                    store(impl, w1_w6(srv, a, want))
            print(f"  {tag} W1/W6 done", flush=True)
        if want & {"W2", "W3", "W4"}:
            # one scalar server per implementation for W2-W4, the workloads interleaved
            procs: dict[str, ServerProc] = {}
            try:
                for impl in order:
                    procs[impl] = server(impl, "scalar", rep)
                for key, prefix, fn in (
                    ("W2", "w2_", lambda s: w2(s, a)),
                    ("W3", "w3_", lambda s: w3(s, a)),
                    ("W4", "w4_1_", lambda s: w4(s, a, 1)),
                    ("W4", f"w4_{a.monitors}_", lambda s: w4(s, a, a.monitors)),
                ):
                    if key in want:
                        for impl in order:
                            store(impl, fn(procs[impl]), prefix)
                        print(f"  {tag} {prefix[:-1]} done", flush=True)
            finally:
                for p in procs.values():
                    p.close()
        if "W5" in want:
            for impl in order:
                with server(impl, "array", rep, "--array", str(a.elements)) as srv:
                    store(impl, w5(srv, a), "w5_")
            print(f"  {tag} W5 done", flush=True)
    return res


def rows(res: dict[str, dict[str, list[float]]], a: argparse.Namespace) -> list[Row]:
    """The table.  A judged figure is the best of the repeats (the least-disturbed run, as in
    bench_codec.py); an informational one is their mean."""
    c, p = res["capva"], res["p4p"]
    out: list[Row] = []

    def add(key: str, label: str, unit: str, better: str, *args: Any, **kws: Any) -> None:
        if not (c.get(key) and p.get(key)):
            return
        judged = (args[0] if args else ">=1.0x p4p") is not None
        if judged:
            pick = max if better == "higher" else min
        else:

            def pick(v: list[float]) -> float:
                return sum(v) / len(v)

        out.append(Row(label, unit, better, pick(c[key]), pick(p[key]), *args, **kws))

    add("w1_s", f"W1 connect+get {a.gets} PVs", "s", "lower")
    add("w2_rate", "W2 gets/s (sequential)", "/s", "higher")
    add("w2_cpu_us", "W2 server CPU per get", "µs", "lower", None)
    add("w3_rate", "W3 puts/s (sequential, completion)", "/s", "higher")
    add("w3_cpu_us", "W3 server CPU per put", "µs", "lower", None)
    for n in sorted({1, a.monitors}):
        lab = "1 monitor" if n == 1 else f"{n} monitors"
        k = f"w4_{n}_"
        add(k + "posts_s", f"W4 {lab}: posts/s", "/s", "higher")
        add(k + "recv_s", f"W4 {lab}: updates/s per client", "/s", "higher")
        add(k + "dropped_pct", f"W4 {lab}: dropped (posts-recv)", "%", "lower", None)
        add(k + "cpu", f"W4 {lab}: server CPU ({a.duration:g} s+drain)", "s", "lower", None)
        add(k + "cpu_us_post", f"W4 {lab}: server CPU per post", "µs", "lower", None)
        add(k + "sent_B_post", f"W4 {lab}: bytes sent per post per client", "B", "lower", None)
        add(k + "client_cpu", f"W4 {lab}: client CPU (all clients)", "s", "lower", None)
    add(
        "w5_MBps",
        f"W5 {a.elements:,} x f64 monitor",
        "MB/s",
        "higher",
        ">=1.0x p4p, >=1000 MB/s",
        absolute=lambda v: v >= 1000,
    )
    add("w5_posts_s", "W5 server posts/s", "/s", "higher", None)
    add("w5_cpu", f"W5 server CPU ({a.duration:g} s+drain)", "s", "lower", None)
    add("w5_sent_MBps", "W5 server bytes sent", "MB/s", "higher", None)
    add("w5_client_cpu", "W5 client CPU", "s", "lower", None)
    add("pv_kB_per_1000", f"W6 RSS per 1000 PVs ({a.pvs} added)", "kB", "lower", "<= p4p")
    add("chan_B_per_channel", f"W6 RSS per channel ({a.gets} connected)", "B", "lower", "<= p4p")
    return out


def fmt(v: float) -> str:
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3f}"


def report(table: list[Row], a: argparse.Namespace) -> None:
    print()
    print(
        f"capva vs p4p PVA server (client: p4p thread Context, discovery: {a.discovery}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
        f"{', PROFILED: capva figures not comparable' if a.profile else ''})"
    )
    w = max(len(r.label) for r in table) + 2
    head = f"{'workload':<{w}}{'unit':>5} {'capva':>11} {'p4p':>11} {'capva/p4p':>10}  {'better':<7}{'target':<24}met"
    print(head)
    print("-" * len(head))
    for r in table:
        met = {None: "", True: "yes", False: "NO"}[r.met]
        print(
            f"{r.label:<{w}}{r.unit:>5} {fmt(r.capva):>11} {fmt(r.p4p):>11} {r.ratio:>9.2f}x  "
            f"{r.better:<7}{r.target or '(info)':<24}{met}"
        )
    judged = [r for r in table if r.met is not None]
    missed = [r.label for r in judged if not r.met]
    print()
    if not judged:
        print("targets: none judged")
    elif not missed:
        print(f"targets: all {len(judged)} met")
    else:
        print(f"targets: {len(judged) - len(missed)}/{len(judged)} met; missed: " + "; ".join(missed))


_LINENO = re.compile(r":\d+\)$")


def profile_summary(path: str, top: int = 15) -> None:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    selfc: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            k = int(n)
            # one entry per function, not per line: "f (file.py:12)" -> "f (file.py)"
            frames = [_LINENO.sub(")", fr) for fr in stack.split(";")]
            total += k
            selfc[frames[-1]] += k
            for fr in set(frames):
                incl[fr] += k
    if not total:
        return
    print(f"\n{os.path.basename(path)}: {total} samples (busy threads only)")
    print("  self%  incl%  function")
    for fr, k in selfc.most_common(top):
        print(f"  {100 * k / total:5.1f}  {100 * incl[fr] / total:5.1f}  {fr}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="capva vs p4p PVA server benchmark (see module docstring)")
    p.add_argument("--quick", action="store_true", help="short durations and fewer PVs (smoke run)")
    p.add_argument("--only", default=",".join(WORKLOADS), help="comma separated subset, e.g. W2,W4")
    p.add_argument("--discovery", choices=["udp", "tcp"], default="udp", help="client search method")
    p.add_argument("--duration", type=float, help="seconds per timed workload (default 3, quick 0.5)")
    p.add_argument("--pvs", type=int, help="PVs added for W6 (default 10000, quick 2000)")
    p.add_argument("--gets", type=int, help="PVs per W1 get / W6 channels (default 1000, quick 200)")
    p.add_argument("--elements", type=int, default=1_000_000, help="W5 array length")
    p.add_argument("--monitors", type=int, default=10, help="monitors in W4's second run")
    p.add_argument("--profile", metavar="DIR", help="run capva's servers under py-spy, stacks in DIR")
    p.add_argument("--repeat", type=int, help="runs of every workload (default 2, quick 1)")
    p.add_argument("--json", metavar="FILE", help="also write the raw figures as JSON")
    a = p.parse_args(argv)
    a.only = [w.strip().upper() for w in a.only.split(",") if w.strip()]
    bad = set(a.only) - set(WORKLOADS)
    if bad:
        p.error(f"unknown workloads {sorted(bad)}")
    a.duration = a.duration or (0.5 if a.quick else 3.0)
    a.repeat = a.repeat or (1 if a.quick else 2)
    a.pvs = a.pvs or (2000 if a.quick else 10000)
    a.gets = a.gets or (200 if a.quick else 1000)
    a.pvs = max(a.pvs, 3 * a.gets if "W1" in a.only else a.gets)

    t0 = time.monotonic()
    res = run(a)
    report(rows(res, a), a)
    print(f"(run took {time.monotonic() - t0:.0f} s)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    if a.profile:
        for name in sorted(os.listdir(a.profile)):
            if name.startswith("capva-") and name.endswith(".txt"):
                profile_summary(os.path.join(a.profile, name))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.TimeoutExpired as e:
        print(f"bench_server: timed out: {e}", file=sys.stderr)
        sys.exit(1)
