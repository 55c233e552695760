"""Work queues for server handlers.

``WorkQueue`` and ``ThreadedWorkQueue`` are p4p's (same methods), for users who pass
``queue=`` to :class:`capva.server.thread.SharedPV`.

By default each thread-flavour SharedPV gets a :class:`SerialQueue`: its handlers run in
order, one at a time, on a shared *elastic* pool that starts another thread whenever every
existing one is busy.  A handler that blocks (sleeps, or makes a client call to another PV
of the same server) therefore holds only its own PV; p4p's fixed pool of four threads
deadlocks in that situation (p4p issue #164).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from functools import partial
from queue import Empty, Queue

_log = logging.getLogger(__name__)

__all__ = ["WorkQueue", "ThreadedWorkQueue", "SerialQueue", "ElasticPool"]


class WorkQueue:
    """A queue of callables, run by whoever calls :meth:`handle` (p4p.util.WorkQueue)."""

    _stopit = object()

    def __init__(self, maxsize: int = 5):
        self._Q: Queue = Queue(maxsize=maxsize)

    def push(self, callable: Callable[[], None]) -> None:
        """Queue work; raises ``queue.Full`` if the queue is full."""
        self._Q.put_nowait(callable)

    def push_wait(self, callable: Callable[[], None]) -> None:
        self._Q.put(callable)

    def interrupt(self) -> None:
        """Make one running :meth:`handle` return."""
        self._Q.put(self._stopit)

    def handle(self) -> None:
        """Run queued work until :meth:`interrupt`."""
        while True:
            try:
                fn = None
                fn = self._Q.get(True, 1.0)
            except Empty:
                continue
            try:
                if fn is self._stopit:
                    break
                fn()
            except Exception:
                _log.exception("Error from WorkQueue w/ %r", fn)
            finally:
                self._Q.task_done()


class ThreadedWorkQueue(WorkQueue):
    """A WorkQueue with its own worker threads (p4p.util.ThreadedWorkQueue)."""

    def __init__(self, name: str | None = None, workers: int = 1, daemon: bool = False, **kws):
        if workers < 1:
            raise ValueError("workers must be >= 1")
        WorkQueue.__init__(self, **kws)
        self.name = name
        self._daemon = daemon
        self._T: list[threading.Thread | None] = [None] * workers

    def __enter__(self):
        return self.start()

    def __exit__(self, A, B, C):
        self.stop()

    def start(self) -> ThreadedWorkQueue:
        for n in range(len(self._T)):
            if self._T[n] is None:
                T = self._T[n] = threading.Thread(
                    name=f"{self.name}[{n}]", target=self.handle, daemon=self._daemon
                )
                T.start()
        return self

    def stop(self) -> ThreadedWorkQueue:
        for T in self._T:
            if T is not None:
                self.interrupt()
        for T in self._T:
            if T is not None:
                T.join()
        self._T = [None] * len(self._T)
        return self

    def sync(self, timeout: float | None = None) -> ThreadedWorkQueue:
        """Wait until everything queued before this call has run."""
        n = sum(1 for T in self._T if T is not None)
        wait1 = [threading.Event() for _ in range(n)]
        wait2 = [threading.Event() for _ in range(n)]

        def syncX(w1, w2):
            w1.set()
            w2.wait()

        for i in range(n):
            self.push_wait(partial(syncX, wait1[i], wait2[i]))
        for W in wait1:
            W.wait(timeout=timeout)
        for W in wait2:
            W.set()
        return self


class ElasticPool:
    """Threads that grow with demand: a job never waits behind a busy (or blocked) thread
    while fewer than ``max_threads`` exist; idle threads beyond ``keep`` exit after
    ``idle_timeout`` seconds."""

    def __init__(
        self, name: str = "capva-handler", keep: int = 2, idle_timeout: float = 5.0, max_threads: int = 256
    ):
        self._name = name
        self._keep = keep
        self._idle_timeout = idle_timeout
        self._max = max_threads
        self._lock = threading.Lock()
        self._jobs: deque[Callable[[], None]] = deque()
        self._cond = threading.Condition(self._lock)
        self._threads = 0
        self._idle = 0
        self._seq = 0

    def submit(self, fn: Callable[[], None]) -> None:
        with self._lock:
            self._jobs.append(fn)
            if self._idle >= len(self._jobs):
                # enough idle threads for every queued job (a notified thread may not have
                # woken yet, so compare with the queue, not with "anyone idle")
                self._cond.notify()
                return
            if self._idle:
                self._cond.notify()
            if self._threads >= self._max:
                return  # saturated: the job waits for a free thread
            self._threads += 1
            self._seq += 1
            name = f"{self._name}-{self._seq}"
        threading.Thread(target=self._worker, name=name, daemon=True).start()

    def _worker(self) -> None:
        while True:
            with self._lock:
                while not self._jobs:
                    self._idle += 1
                    ok = self._cond.wait(self._idle_timeout)
                    self._idle -= 1
                    if not ok and not self._jobs and self._threads > self._keep:
                        self._threads -= 1
                        return
                fn = self._jobs.popleft()
            try:
                fn()
            except Exception:
                _log.exception("Unexpected error in handler thread")
            fn = None  # type: ignore[assignment]

    @property
    def threads(self) -> int:
        return self._threads


_pool: ElasticPool | None = None
_pool_lock = threading.Lock()


def default_pool() -> ElasticPool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ElasticPool()
        return _pool


class SerialQueue:
    """Runs pushed callables in order, one at a time, on an :class:`ElasticPool`.

    It has WorkQueue's ``push`` and ThreadedWorkQueue's ``sync``, so it can stand wherever a
    p4p queue is expected.  It costs one lock until first used (servers hold thousands)."""

    __slots__ = ("_pool", "_lock", "_pending", "_running", "_idle")

    def __init__(self, pool: ElasticPool | None = None):
        self._pool = pool
        self._lock = threading.Lock()
        self._pending: deque[Callable[[], None]] | None = None
        self._running = False
        self._idle: threading.Event | None = None

    def push(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if self._pending is None:
                self._pending = deque()
            self._pending.append(fn)
            if self._running:
                return
            self._running = True
        (self._pool or default_pool()).submit(self._drain)

    push_wait = push

    def _drain(self) -> None:
        pending = self._pending
        assert pending is not None
        while True:
            with self._lock:
                if not pending:
                    self._running = False
                    if self._idle is not None:
                        self._idle.set()
                        self._idle = None
                    return
                fn = pending.popleft()
            try:
                fn()
            except Exception:
                _log.exception("Error from handler %r", fn)

    def sync(self, timeout: float | None = None) -> SerialQueue:
        """Wait until everything pushed so far has run."""
        with self._lock:
            if not self._running:
                return self
            if self._idle is None:
                self._idle = threading.Event()
            ev = self._idle
        ev.wait(timeout)
        return self
