"""A lazy counter: ``<prefix>lazy`` counts up only while at least one client is connected.

Work that nobody looks at is wasted.  A SharedPV handler may define ``onFirstConnect(pv)``,
called when the first client channel to the PV is created, and ``onLastDisconnect(pv)``,
called when the last one closes.  Here the first starts a thread that increments and posts
the count every ``--period`` seconds, and the second stops it, so the count freezes while
nobody watches and carries on from there when someone comes back.  A put sets the count.

``<prefix>lazy:active`` (a bool) tells whether the counter is running; reading it does not
connect to the counter, so it is how you watch the counter's state without waking it.

Run it, then compare (default ports)::

    python -m p4p.client.cli monitor example:lazy:active     # false
    python -m p4p.client.cli monitor example:lazy            # counts, and :active turns true
    # Ctrl+C the second monitor: :active turns false and the count stops
    python -m p4p.client.cli put example:lazy=100
    python -m p4p.client.cli get example:lazy:active example:lazy   # a get connects, briefly

The callbacks run on the server's threads, so they must not block: they start and signal the
counting thread rather than doing the counting themselves.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from capva.nt import NTScalar
from capva.server.thread import SharedPV

from . import make_parser, run

if TYPE_CHECKING:
    from capva.server.raw import ServOpWrap  # what put handlers get: value() is unwrapped


class LazyCounter:
    """SharedPV handler that counts every ``period`` seconds while the PV has clients.

    ``active`` is the SharedPV that publishes whether the counter runs.  The lock orders
    ticks against connect/disconnect: once ``onLastDisconnect`` returns, no tick posts.
    """

    def __init__(self, period: float, active: SharedPV) -> None:
        self.period = period
        self.active = active
        self.count = 0
        self._lock = threading.Lock()
        self._stop: threading.Event | None = None  # set: the current counting thread must end
        self._thread: threading.Thread | None = None

    def onFirstConnect(self, pv: SharedPV) -> None:
        with self._lock:
            if self._stop is not None:
                return  # already counting
            stop = self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._count, args=(pv, stop), name="lazycounter", daemon=True
            )
            self.active.post(True, timestamp=time.time())
        self._thread.start()

    def onLastDisconnect(self, pv: SharedPV) -> None:
        self.halt()

    def halt(self) -> None:
        """Stop counting (also used at shutdown)."""
        with self._lock:
            if self._stop is None:
                return
            self._stop.set()
            self._stop = None
            self.active.post(False, timestamp=time.time())

    def put(self, pv: SharedPV, op: ServOpWrap) -> None:
        with self._lock:
            self.count = int(op.value())
            pv.post(self.count, timestamp=time.time())
        op.done()

    def _count(self, pv: SharedPV, stop: threading.Event) -> None:
        """Body of the counting thread: tick until ``stop`` is set."""
        deadline = time.monotonic()
        while True:
            deadline += self.period
            if stop.wait(max(0.0, deadline - time.monotonic())):
                return
            with self._lock:
                if stop.is_set():  # halted while we waited for the lock
                    return
                self.count += 1
                pv.post(self.count, timestamp=time.time())


def build(prefix: str, period: float) -> tuple[dict[str, SharedPV], LazyCounter]:
    """The PVs of this example and the handler (whose ``halt()`` stops it at shutdown)."""
    active = SharedPV(nt=NTScalar("?"), initial=False)
    counter = LazyCounter(period, active)
    pv = SharedPV(nt=NTScalar("l"), initial=0, handler=counter)
    return {prefix + "lazy": pv, prefix + "lazy:active": active}, counter


def main(argv: list[str] | None = None) -> int:
    """Serve the lazy counter until Ctrl+C (or ``--duration``)."""
    P = make_parser("python -m capva.examples.lazycounter", __doc__)
    P.add_argument("--period", type=float, default=1.0, help="seconds between counts (default 1)")
    args = P.parse_args(argv)
    if args.period < 0.01:
        P.error("--period must be at least 0.01 s")
    name = args.prefix + "lazy"
    pvs = {
        name: f"NTScalar int64, +1 every {args.period:g} s while a client is connected; put sets it",
        name + ":active": "NTScalar bool: whether the counter is running",
    }
    pvmap, counter = build(args.prefix, args.period)
    try:
        return run("lazycounter", [pvmap], pvs, args, examples=[f"monitor {name}"])
    finally:
        counter.halt()


if __name__ == "__main__":
    raise SystemExit(main())
