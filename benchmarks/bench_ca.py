"""Channel Access server benchmark: caproto's, softioc's (EPICS base RSRV) and capva's, side by side.

Every server runs in a subprocess of its own (``_ca_peers.py``: its CPU, RSS and GIL are its
own) and is driven by the same client, pyepics (libca), also in subprocesses: libca reads its
``EPICS_CA_*`` environment once per process, so each client process is started with the
environment of the server it talks to.  Everything is on 127.0.0.1 with free ports, no
automatic address lists, beacons to loopback only and a private CA repeater (caproto's) on a
free port, so nothing meets another CA user of the machine.  Workloads run ``--repeat`` times
(default 2) with the order of the servers rotated each time; a judged figure is the best of
the repeats (the least-disturbed run), an informational one their mean.

* W1  connect + get ``--gets`` (1000) distinct double PVs from a fresh client process (all
      channels created, then all gets in flight together: pyepics' recipe for many PVs),
      wall time from the first channel created to the last value; best of 3 clients, each
      on other names;
* W2  sequential ``ca.get`` of one PV for ``--duration`` seconds: gets/s;
* W3  sequential ``ca.put(wait=True)`` (put with completion): puts/s;
* W4  the server posts new values of one double as fast as it can, from inside its process
      (capva: ``pv.post(v)`` in a thread; softioc: ``rec.set(v)`` on an ao record, which
      processes it; caproto: ``await prop.write(v); await asyncio.sleep(0)`` in its loop),
      for ``--duration`` seconds, to 1 and to ``--monitors`` (10) client processes with one
      monitor each: posts/s, updates received per client (/s), dropped (posts - received:
      squashed in the server or the client), server CPU;
* W5  1M-element float64 array: the server posts (two arrays alternated) as fast as it can,
      one monitor counts the bytes it receives: MB/s;
* W6  server RSS per 1000 PVs: RSS of an idle server serving ``--pvs`` extra double PVs
      minus that of the same server with none (two processes, both measured right after
      start-up, no client), per 1000; and (information) RSS per connected channel: after
      W1's first client connected ``--gets`` channels, minus before.

Targets (issue): capva >= 1.0x softioc on every workload (the direction that is better:
throughput higher; time and memory lower, where the ratio must be <= 1.0), and >= 10x
caproto on W4's updates per client and on W5.  Figures only: nothing is asserted.

Run::

    python benchmarks/bench_ca.py                  # full run, about 4 minutes
    python benchmarks/bench_ca.py --quick          # smoke run
    python benchmarks/bench_ca.py --only W2,W4 --duration 5
    python benchmarks/bench_ca.py --impls softioc,capva
    python benchmarks/bench_ca.py --profile /tmp/prof   # capva's servers under py-spy

The machine may have few cores (2 here): clients and server share them, so a server that
sends more updates also makes its clients busier; read W4 with that in mind (10 client
processes on 2 cores are themselves a load).

Scheduling: EPICS base gives its threads real-time priorities (``SCHED_FIFO``) whenever the
process may, and a process of root's may.  Its threads then preempt every other thread of the
machine on wake-up, the clients' and the other servers' included, which is not what an IOC
run by an ordinary account gets.  So softioc's server drops ``CAP_SYS_NICE`` before EPICS
starts, and all three servers run under the normal policy; ``--softioc-rt`` keeps EPICS'
choice.  The report says which way softioc ran.  (On this machine, as root, the real-time
softioc was slower on W2-W4 and about as fast on W5 as the normal one: see CHANGELOG.)
The pyepics client is EPICS too: libca's threads took real-time priorities as well, and
preempted whichever server they talked to, on every reply.  The client drops the capability
in the same way (``--client-rt`` keeps libca's choice), and the report says how it ran.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from _ca_peers import IMPLS, Peer, Repeater, client_env, server_env

WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6")
QUIET = 1.0  # seconds without an update before a client counts as drained


class Row:
    """One line of the table.  ``better``: 'higher' or 'lower'.  ``targets``: (reference,
    factor) pairs; for a 'lower' figure a factor f means capva/ref <= 1/f.  No targets:
    informational."""

    def __init__(
        self,
        label: str,
        unit: str,
        better: str,
        vals: dict[str, float],
        targets: tuple[tuple[str, float], ...],
    ):
        self.label, self.unit, self.better, self.vals, self.targets = label, unit, better, vals, targets

    def ratio(self, ref: str) -> float | None:
        c, r = self.vals.get("capva"), self.vals.get(ref)
        if c is None or r is None or r == 0:
            return None
        return c / r

    @property
    def target(self) -> str:
        if not self.targets:
            return "(info)"
        op = ">=" if self.better == "higher" else "<="
        return ", ".join(f"{op}{f if self.better == 'higher' else 1 / f:g}x {ref}" for ref, f in self.targets)

    @property
    def met(self) -> bool | None:
        """None when informational or when a figure it needs is missing."""
        if not self.targets:
            return None
        ok = True
        for ref, f in self.targets:
            r = self.ratio(ref)
            if r is None:
                return None
            ok = ok and (r >= f if self.better == "higher" else r <= 1 / f)
        return ok


class Run:
    """Servers and clients of one benchmark run; :meth:`close` ends every process it started."""

    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.peers: list[Peer] = []
        self.nservers = 0
        #: the most threads with a real-time policy seen in a softioc server / a client
        #: (0: none had one)
        self.softioc_rt = 0
        self.client_rt = 0
        # every peer's stderr (EPICS banners, caproto's "High load" warnings...) goes here,
        # not between the lines of the table
        self.log = open(a.log, "a") if a.log != "-" else None
        try:
            self.repeater = Repeater(self.log)
        except BaseException:
            if self.log is not None:
                self.log.close()
            raise

    def started(self, what: str) -> None:
        if self.log is not None:
            self.log.write(f"\n===== {time.strftime('%H:%M:%S')} {what}\n")
            self.log.flush()

    def server(self, impl: str, *args: str, tag: str = "") -> Peer:
        prof = None
        self.nservers += 1
        if self.a.profile and impl == "capva":
            prof = os.path.join(self.a.profile, f"capva-{tag}-{self.nservers:02d}.txt")
        self.started(f"server {impl} {' '.join(args)}")
        env = server_env(self.repeater.port)
        if impl == "softioc" and self.a.softioc_rt:
            env["BENCH_SOFTIOC_RT"] = "1"
        p = Peer(impl, *args, env=env, profile=prof, timeout=120, stderr=self.log)
        self.peers.append(p)
        if impl == "softioc":
            self.softioc_rt = max(self.softioc_rt, int(p.hello.get("realtime", 0)))
        return p

    def clients(self, srv: Peer, n: int) -> list[Peer]:
        """``n`` client processes for ``srv``, started together (each takes a while to import)."""
        env = client_env(self.repeater.port, srv.conf)
        if self.a.client_rt:
            env["BENCH_CLIENT_RT"] = "1"
        self.started(f"{n} client(s) of {srv.impl}")
        with ThreadPoolExecutor(max_workers=n) as ex:
            futs = [ex.submit(Peer, "client", env=env, role="client", stderr=self.log) for _ in range(n)]
            out: list[Peer] = []
            err: BaseException | None = None
            for f in futs:
                try:
                    out.append(f.result())
                except BaseException as e:  # keep the others, to close them
                    err = e
        self.peers.extend(out)
        self.client_rt = max([self.client_rt] + [int(p.hello.get("realtime", 0)) for p in out])
        if err is not None:
            self.done(*out)
            raise err
        return out

    def done(self, *peers: Peer) -> None:
        for p in peers:
            p.close()
            if p in self.peers:
                self.peers.remove(p)

    def close(self) -> None:
        try:
            self.done(*list(self.peers))
        finally:
            self.repeater.close()
            if self.log is not None:
                self.log.close()


# ---------------------------------------------------------------- workloads (one server each)


def w1_w6(run: Run, impl: str, want: set[str]) -> dict[str, float]:
    a = run.a
    out: dict[str, float] = {}
    base = run.server(impl, tag="w6base")
    try:
        rss0 = base.hello["rss_kb"]
    finally:
        run.done(base)
    srv = run.server(impl, "--many", str(a.pvs), tag="w1w6")
    try:
        rss1 = srv.hello["rss_kb"]
        out["pv_kB_per_1000"] = (rss1 - rss0) / (a.pvs / 1000)
        times = []
        for rep in range(3 if "W1" in want else 1):
            (cl,) = run.clients(srv, 1)
            try:
                r = cl.call("getmany", "bench:many:", rep * a.gets, a.gets, timeout=120)
                times.append(r["s"])
                if rep == 0:
                    time.sleep(0.5)  # let the server finish whatever follows the last reply
                    out["chan_B_per_channel"] = (srv.call("stats")["rss_kb"] - rss1) * 1024 / a.gets
            finally:
                run.done(cl)
        out["w1_s"] = min(times)
        out["w1_pvs_s"] = a.gets / min(times)
    finally:
        run.done(srv)
    return out


def sequential(run: Run, srv: Peer, cmd: str) -> dict[str, float]:
    """W2 (``gets``) and W3 (``puts``): one client, one PV, back to back."""
    (cl,) = run.clients(srv, 1)
    try:
        c0 = srv.call("stats")["cpu"]
        r = cl.call(cmd, "bench:scalar", run.a.duration, timeout=run.a.duration + 60)
        c1 = srv.call("stats")["cpu"]
    finally:
        run.done(cl)
    return {"rate": r["n"] / r["wall"], "cpu_us": (c1 - c0) / r["n"] * 1e6}


def w2_w3(run: Run, impl: str, want: set[str]) -> dict[str, float]:
    srv = run.server(impl, tag="w2w3")
    try:
        out = {}
        if "W2" in want:
            out.update({"w2_" + k: v for k, v in sequential(run, srv, "gets").items()})
        if "W3" in want:
            out.update({"w3_" + k: v for k, v in sequential(run, srv, "puts").items()})
        return out
    finally:
        run.done(srv)


def w4(run: Run, impl: str, nmon: int) -> dict[str, float]:
    """A fresh server for each W4 run: caproto's may not survive the previous one (its
    subscription loop dies with "deque mutated during iteration" when a client leaves while
    updates for it are still queued)."""
    a = run.a
    srv = run.server(impl, tag=f"w4x{nmon}")
    try:
        cls = run.clients(srv, nmon)
        try:
            with ThreadPoolExecutor(max_workers=nmon) as ex:
                list(ex.map(lambda c: c.call("monitor", "bench:scalar"), cls))
                time.sleep(0.2)
                base = [c.call("mark")["n"] for c in cls]
                r = srv.call("post", "scalar", a.duration, timeout=a.duration + 120)
                ends = list(ex.map(lambda c: c.call("drain", QUIET, timeout=120), cls))
        finally:
            run.done(*cls)
    finally:
        run.done(srv)
    got = [e["n"] - b for e, b in zip(ends, base)]
    mean = sum(got) / nmon
    return {
        "posts_s": r["posts"] / r["wall"],
        "recv_s": mean / r["wall"],
        "recv_min_s": min(got) / r["wall"],
        "dropped_pct": 100.0 * (r["posts"] - mean) / r["posts"],
        "cpu": r["cpu"],
        "cpu_us_post": r["cpu"] / r["posts"] * 1e6,
        "sent_B_post": r["sent_bytes"] / r["posts"] / nmon,
    }


def w5(run: Run, impl: str) -> dict[str, float]:
    a = run.a
    srv = run.server(impl, "--array", str(a.elements), tag="w5")
    try:
        (cl,) = run.clients(srv, 1)
        try:
            cl.call("monitor", "bench:array")
            cl.call("drain", 0.2, timeout=60)  # the first update(s) out of the way
            m0 = cl.call("mark")
            r = srv.call("post", "array", a.duration, timeout=a.duration + 120)
            m1 = cl.call("drain", QUIET, timeout=120)
        finally:
            run.done(cl)
    finally:
        run.done(srv)
    dt = max(m1["t_last"] - r["t0"], r["wall"])
    n = m1["n"] - m0["n"]
    return {
        "MBps": (m1["bytes"] - m0["bytes"]) / dt / 1e6,
        "posts_s": r["posts"] / r["wall"],
        "recv_s": n / dt,
        "cpu": r["cpu"],
        "sent_MBps": r["sent_bytes"] / r["wall"] / 1e6,
    }


# ---------------------------------------------------------------- driver


def run_all(a: argparse.Namespace) -> tuple[dict[str, dict[str, list[float]]], list[str]]:
    """{impl: {key: [value per repeat]}} and the errors met (a failing server does not stop
    the others: its cells stay empty)."""
    want = set(a.only)
    res: dict[str, dict[str, list[float]]] = {i: collections.defaultdict(list) for i in a.impls}
    errors: list[str] = []
    if a.profile:
        os.makedirs(a.profile, exist_ok=True)
    run = Run(a)

    def attempt(impl: str, what: str, fn: Any, prefix: str = "") -> None:
        try:
            for k, v in fn().items():
                res[impl][prefix + k].append(v)
        except Exception as e:
            msg = f"{impl} {what}: {type(e).__name__}: {e}"
            errors.append(msg)
            print(f"  ERROR {msg}", file=sys.stderr, flush=True)

    try:
        for rep in range(a.repeat):
            k = rep % len(a.impls)
            order = a.impls[k:] + a.impls[:k]
            tag = f"[{rep + 1}/{a.repeat}]"
            if want & {"W1", "W6"}:
                for impl in order:
                    attempt(impl, "W1/W6", lambda impl=impl: w1_w6(run, impl, want))
                print(f"  {tag} W1/W6 done", flush=True)
            if want & {"W2", "W3"}:
                for impl in order:
                    attempt(impl, "W2/W3", lambda impl=impl: w2_w3(run, impl, want))
                print(f"  {tag} W2/W3 done", flush=True)
            if "W4" in want:
                for n in sorted({1, a.monitors}):
                    for impl in order:
                        attempt(impl, f"W4 x{n}", lambda impl=impl, n=n: w4(run, impl, n), f"w4_{n}_")
                    print(f"  {tag} W4 x{n} done", flush=True)
            if "W5" in want:
                for impl in order:
                    attempt(impl, "W5", lambda impl=impl: w5(run, impl), "w5_")
                print(f"  {tag} W5 done", flush=True)
    finally:
        a.softioc_rt_seen = run.softioc_rt
        a.client_rt_seen = run.client_rt
        run.close()
    return res, errors


def rows(res: dict[str, dict[str, list[float]]], a: argparse.Namespace) -> list[Row]:
    out: list[Row] = []
    soft, cap10 = ("softioc", 1.0), ("caproto", 10.0)

    def add(key: str, label: str, unit: str, better: str, *targets: tuple[str, float]) -> None:
        vals: dict[str, float] = {}
        for impl, figs in res.items():
            v = figs.get(key)
            if not v:
                continue
            if targets:  # judged: the best repeat; informational: the mean
                vals[impl] = max(v) if better == "higher" else min(v)
            else:
                vals[impl] = sum(v) / len(v)
        if vals:
            out.append(Row(label, unit, better, vals, targets))

    add("w1_s", f"W1 connect+get {a.gets} PVs", "s", "lower", soft)
    add("w1_pvs_s", "W1 connect+get rate", "PV/s", "higher")
    add("w2_rate", "W2 gets/s (sequential)", "/s", "higher", soft)
    add("w2_cpu_us", "W2 server CPU per get", "µs", "lower")
    add("w3_rate", "W3 puts/s (sequential, completion)", "/s", "higher", soft)
    add("w3_cpu_us", "W3 server CPU per put", "µs", "lower")
    for n in sorted({1, a.monitors}):
        lab = "1 client" if n == 1 else f"{n} clients"
        k = f"w4_{n}_"
        add(k + "posts_s", f"W4 {lab}: server posts/s", "/s", "higher", soft)
        add(k + "recv_s", f"W4 {lab}: updates/s per client", "/s", "higher", soft, cap10)
        if n > 1:
            add(k + "recv_min_s", f"W4 {lab}: updates/s slowest client", "/s", "higher")
        add(k + "dropped_pct", f"W4 {lab}: dropped (posts-recv)", "%", "lower")
        add(k + "cpu_us_post", f"W4 {lab}: server CPU per post", "µs", "lower")
        add(k + "sent_B_post", f"W4 {lab}: bytes sent/post/client", "B", "lower")
    add("w5_MBps", f"W5 {a.elements:,} x f64 monitor", "MB/s", "higher", soft, cap10)
    add("w5_posts_s", "W5 server posts/s", "/s", "higher")
    add("w5_recv_s", "W5 updates/s received", "/s", "higher")
    add("w5_cpu", f"W5 server CPU ({a.duration:g} s+0.5 s)", "s", "lower")
    add("w5_sent_MBps", "W5 server bytes sent", "MB/s", "higher")
    add("pv_kB_per_1000", f"W6 RSS per 1000 PVs ({a.pvs} vs 0)", "kB", "lower", soft)
    add("chan_B_per_channel", f"W6 RSS per channel ({a.gets} conn.)", "B", "lower")
    return out


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3f}"


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def report(table: list[Row], a: argparse.Namespace, errors: list[str]) -> None:
    print()
    print(
        f"CA servers: {', '.join(a.impls)} (client: pyepics {pyepics_version()} / libca, one process per "
        f"client; {os.cpu_count()} CPUs, Python {platform.python_version()}"
        f"{'; PROFILED: capva figures not comparable' if a.profile else ''})"
    )
    if "softioc" in a.impls:
        rt = getattr(a, "softioc_rt_seen", 0)
        print(
            f"(softioc: {rt} threads with real-time priorities: EPICS' own choice, --softioc-rt)"
            if rt
            else "(softioc: the normal scheduling policy, as the other servers"
            + (
                "; --softioc-rt asked for real-time priorities, EPICS could not have them)"
                if a.softioc_rt
                else ")"
            )
        )
    rt = getattr(a, "client_rt_seen", 0)
    print(
        f"(pyepics client: {rt} libca threads with real-time priorities: EPICS' own choice, --client-rt)"
        if rt
        else "(pyepics client: the normal scheduling policy, as the servers"
        + ("; --client-rt asked for real-time priorities, libca could not have them)" if a.client_rt else ")")
    )
    w = max([len(r.label) for r in table] + [20]) + 2
    head = (
        f"{'workload':<{w}}{'unit':>5} {'caproto':>10} {'softioc':>10} {'capva':>10} "
        f"{'capva/softioc':>14} {'capva/caproto':>14}  {'better':<7}{'target':<29}met"
    )
    print(head)
    print("-" * len(head))
    for r in table:
        met = {None: "", True: "yes", False: "NO"}[r.met]
        print(
            f"{r.label:<{w}}{r.unit:>5} {fmt(r.vals.get('caproto')):>10} {fmt(r.vals.get('softioc')):>10} "
            f"{fmt(r.vals.get('capva')):>10} {fmt_ratio(r.ratio('softioc')):>14} "
            f"{fmt_ratio(r.ratio('caproto')):>14}  {r.better:<7}{r.target:<29}{met}"
        )
    print("(ratios are capva/other for every row; 'better' says which direction wins: for time and RSS")
    print(" lower is better, so a ratio below 1.0x is capva ahead)")
    judged = [r for r in table if r.targets]
    known = [r for r in judged if r.met is not None]
    missed = [r.label for r in known if not r.met]
    print()
    if not judged:
        print("targets: none judged")
    elif not known:
        print("targets: none judged (capva or a reference server has no figures)")
    elif not missed:
        print(
            f"targets: all {len(known)} met"
            + (f" ({len(judged) - len(known)} not judged)" if len(known) < len(judged) else "")
        )
    else:
        print(f"targets: {len(known) - len(missed)}/{len(known)} met; missed: " + "; ".join(missed))
    if a.log != "-":
        print(f"(stderr of servers and clients: {a.log})")
    if errors:
        print("errors:")
        for e in errors:
            print(f"  {e}")


def pyepics_version() -> str:
    try:
        from importlib.metadata import version

        return version("pyepics")
    except Exception:
        return "?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="caproto vs softioc vs capva CA server benchmark (see module docstring)"
    )
    p.add_argument("--quick", action="store_true", help="short durations and fewer PVs (smoke run)")
    p.add_argument("--only", default=",".join(WORKLOADS), help="comma separated subset, e.g. W2,W4")
    p.add_argument("--impls", default=",".join(IMPLS), help=f"servers to run (default {','.join(IMPLS)})")
    p.add_argument("--duration", type=float, help="seconds per timed workload (default 3, quick 0.5)")
    p.add_argument("--gets", type=int, help="PVs per W1 client (default 1000, quick 200)")
    p.add_argument("--pvs", type=int, help="PVs of W6's server (default and minimum 3 x --gets)")
    p.add_argument("--elements", type=int, default=1_000_000, help="W5 array length")
    p.add_argument("--monitors", type=int, help="client processes in W4's second run (default 10, quick 4)")
    p.add_argument("--repeat", type=int, help="runs of every workload (default 2, quick 1)")
    p.add_argument("--profile", metavar="DIR", help="run capva's servers under py-spy, stacks in DIR")
    p.add_argument(
        "--softioc-rt",
        action="store_true",
        help="let EPICS give softioc's threads real-time priorities when it may (default: the "
        "normal policy, as the other servers have)",
    )
    p.add_argument(
        "--client-rt",
        action="store_true",
        help="let libca give the pyepics client's threads real-time priorities when it may "
        "(default: the normal policy, as the servers have)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the raw figures as JSON")
    p.add_argument(
        "--log", help="file for the stderr of every server and client (appended; '-': this stderr)"
    )
    a = p.parse_args(argv)
    a.only = [w.strip().upper() for w in a.only.split(",") if w.strip()]
    bad = set(a.only) - set(WORKLOADS)
    if bad:
        p.error(f"unknown workloads {sorted(bad)}")
    a.impls = [i.strip() for i in a.impls.split(",") if i.strip()]
    if set(a.impls) - set(IMPLS) or not a.impls:
        p.error(f"--impls: choose from {IMPLS}")
    a.duration = a.duration or (0.5 if a.quick else 3.0)
    a.repeat = a.repeat or (1 if a.quick else 2)
    a.gets = a.gets or (200 if a.quick else 1000)
    a.pvs = max(a.pvs or 0, 3 * a.gets)
    a.monitors = a.monitors or (4 if a.quick else 10)
    if a.log is None:
        fd, a.log = tempfile.mkstemp(prefix="bench_ca-", suffix=".log")
        os.close(fd)

    t0 = time.monotonic()
    res, errors = run_all(a)
    report(rows(res, a), a, errors)
    print(f"(run took {time.monotonic() - t0:.0f} s)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    if a.profile:
        from bench_server import profile_summary  # (imports p4p: only when profiling)

        for name in sorted(os.listdir(a.profile)):
            if name.startswith("capva-") and name.endswith(".txt"):
                profile_summary(os.path.join(a.profile, name))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
