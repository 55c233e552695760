"""The background event loop that carries all network I/O for synchronous users.

One daemon thread runs one asyncio loop.  Servers (and later client Contexts) acquire it
and release it; the thread stops when the last user releases it, so tests that stop every
server leave no thread behind.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

__all__ = ["LoopThread", "acquire", "release"]


class LoopThread:
    def __init__(self, name: str = "capva-loop"):
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(started.set)
            self.loop.run_forever()
            # drain what close() scheduled, then close the loop in its own thread
            pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

        self.thread = threading.Thread(target=run, name=name, daemon=True)
        self.thread.start()
        started.wait()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        """Run a coroutine in the loop and wait for its result (from another thread)."""
        if threading.current_thread() is self.thread:
            raise RuntimeError("LoopThread.run() called from the loop thread itself: it would deadlock")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join(10.0)


_lock = threading.Lock()
_current: LoopThread | None = None
_users = 0


def acquire() -> LoopThread:
    """The shared loop thread, started if needed; pair every call with :func:`release`."""
    global _current, _users
    with _lock:
        if _current is None:
            _current = LoopThread()
        _users += 1
        return _current


def release(lt: LoopThread) -> None:
    global _current, _users
    with _lock:
        if lt is not _current:
            return
        _users -= 1
        if _users > 0:
            return
        _current = None
    lt.stop()
