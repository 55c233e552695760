"""SharedPV core, Handler and ServerOperation (p4p.server.raw), protocol-neutral.

A :class:`SharedPV` holds the current :class:`~capva.Value` of one PV, whether it is open,
its handler, and the subscribers of every connected client.  Network endpoints talk to it
through a small internal interface (``_attach``/``_detach`` channels, ``_subscribe``
monitors, ``_snapshot`` for GETs, ``_put``/``_rpc`` to run handlers); the concurrency
flavours (:mod:`.thread`, :mod:`.asyncio`, :mod:`.cothread`) only change :meth:`_exec`,
i.e. where handlers run.

``post()`` is thread-safe and cheap: it merges the marked fields into the current value
and encodes each update once per (byte order, field mask) group of subscribers; the bytes
are handed to the network loop in one batch per loop turn (design.md §3).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..pva.codec import encode_partial_parts, value_mask
from ..pva.types import Type
from ..pva.value import Value, _clone_value

_log = logging.getLogger(__name__)

__all__ = ["SharedPV", "Handler", "ServerOperation", "ServOpWrap", "RemoteError"]


class RemoteError(RuntimeError):
    """Raised by a handler to fail an operation with just its message (no traceback logged)."""


def _identity(x: Any, **kws: Any) -> Any:
    if kws:
        raise TypeError(f"unexpected keyword arguments {sorted(kws)} (no nt= or wrap= given)")
    return x


def _stamp_mask(T: Type) -> tuple[int, int, int] | None:
    """(mask of the timeStamp subtree, index of secondsPastEpoch, of nanoseconds) or None."""
    key = "_stampinfo"
    info = T._cache.get(key, False)
    if info is False:
        info = None
        ts = T._paths.get("timeStamp")
        sec = T._paths.get("timeStamp.secondsPastEpoch")
        ns = T._paths.get("timeStamp.nanoseconds")
        if ts is not None and sec is not None and ns is not None:
            info = (((1 << T._span[ts]) - 1) << ts, sec, ns)
        T._cache[key] = info
    return info


def _apply_time(V: Value) -> int:
    """Give V the current time when the caller set no timeStamp field (p4p leaves 1970);
    returns the bits that were set."""
    info = _stamp_mask(V._T)
    if info is None:
        return 0
    tsmask, sec, ns = info
    vals = V._s.vals
    if V._s.mask & tsmask and (vals[sec] or vals[ns]):
        return 0  # the caller chose a time (a zero stamp, e.g. from an unwrapped put, is "none")
    now = time.time()
    s = int(now)
    V._s.vals[sec] = s
    V._s.vals[ns] = int((now - s) * 1e9)
    bits = (1 << sec) | (1 << ns)
    V._s.mask |= bits
    return bits


#: updates larger than this stay as separate parts (no join copy of big arrays)
_BIG = 65536


def _body(V: Value, be: bool, mask: int) -> Any:
    """One update body: bytes, or a tuple of parts when it carries a large array."""
    parts = encode_partial_parts(V, be, mask)
    if len(parts) > 2 and sum(len(p) for p in parts) >= _BIG:
        return tuple(parts)
    return b"".join(parts)


_SCALARS = frozenset((float, int, bool, str))
#: NTScalar.unwrap()'s scalar classes (ntfloat...), filled in by :func:`_fast_path`
_UNWRAPPED: frozenset = frozenset()


def _plain_scalar(value: Any, idx: int, T: Type | None) -> Any:
    """What a post of ``value`` stores in 'value' (index ``idx`` of ``T``) when that and the
    time stamp are all it changes, so that wrap() can be skipped; :data:`_NOTSET` otherwise.

    That holds for a plain float/int/bool/str, and for an unwrapped scalar (``ntfloat``...)
    whose Value has only 'value' marked and no time stamp: the put handler idiom
    ``pv.post(op.value()); op.done()``.  wrap() would store its Value, stamp it with its
    (zero) time and :func:`_apply_time` would then give it the current time: the same
    fields and marks as the plain scalar's path, at a third of the cost."""
    cls = value.__class__
    if cls in _SCALARS:
        return value
    if cls in _UNWRAPPED:
        raw = value.raw  # (None for an ntfloat made by hand: wrap() says what is wrong)
        if raw.__class__ is Value and raw._T is T and not raw._b and raw._s.mask == 1 << idx:
            if value.raw_stamp == (0, 0):
                return raw._s.vals[idx]
    return _NOTSET


def _fast_path(nt: Any, wrap: Callable, T: Type) -> tuple[int, Callable] | None:
    """(index of 'value', converter) when posting a plain Python scalar can skip wrap():
    the PV uses capva's own NTScalar wrapper and 'value' is a scalar field."""
    global _UNWRAPPED
    from ..nt.scalar import NTScalar, ntbool, ntfloat, ntint, ntstr

    _UNWRAPPED = frozenset((ntfloat, ntint, ntbool, ntstr))

    if not isinstance(nt, NTScalar) or getattr(wrap, "__func__", None) is not NTScalar.wrap:
        return None
    idx = T._paths.get("value")
    if idx is None:
        return None
    from ..pva.value import SCALAR_CONVERT

    conv = SCALAR_CONVERT.get(T._nodes[idx].code)
    return None if conv is None else (idx, conv)


def handler_failed(op: Any, e: BaseException) -> None:
    """A handler raised: fail its operation with the text (RemoteError: no traceback)."""
    if op is not None:
        op.done(error=str(e))
    if not isinstance(e, RemoteError):
        _log.exception("Unexpected error in handler", exc_info=e)


def run_handler(op: Any, M: Callable, *args: Any) -> None:
    """Call a handler method; an exception fails ``op`` instead of escaping."""
    try:
        M(*args)
    except Exception as e:
        handler_failed(op, e)


class Handler:
    """Optional base class of a SharedPV handler (p4p.server.raw.Handler)."""

    def put(self, pv: SharedPV, op: ServerOperation) -> None:
        op.done(error="Not supported")

    def rpc(self, pv: SharedPV, op: ServerOperation) -> None:
        op.done(error="Not supported")

    def onFirstConnect(self, pv: SharedPV) -> None:
        pass

    def onLastDisconnect(self, pv: SharedPV) -> None:
        pass


class ServerOperation:
    """One client PUT or RPC in progress, given to the handler (p4p ServerOperation).

    Complete it exactly once with :meth:`done`: ``done()`` for success, ``done(value)`` to
    return an RPC result, ``done(error="why")`` to fail it (the client sees the text)."""

    __slots__ = ("_impl", "_value", "_name", "_request", "_done", "_cancel", "__weakref__")

    def __init__(self, impl: Any, name: str, value: Value | None, request: Value | None):
        self._impl = impl  # the endpoint's op: has peer/account/roles/complete/message
        self._name = name
        self._value = value
        self._request = request
        self._done = False
        self._cancel: Callable[[], None] | None = None

    def done(self, value: Any = None, error: str | None = None, *, err: str | None = None) -> None:
        """Complete the operation (``err=`` is accepted as seed 001 spells it)."""
        if err is not None and error is None:
            error = err
        if self._done:
            _log.warning("%s: done() called twice; ignored", self._name)
            return
        self._done = True
        if value is not None and not isinstance(value, Value):
            raise TypeError(f"done(value=) needs a Value, not {type(value).__name__}")
        self._impl.complete(value, None if error is None else str(error))

    def value(self) -> Value | None:
        """The Value a client PUT (fields it set are marked) or the RPC argument."""
        return self._value

    def pvRequest(self) -> Value | None:
        return self._request

    def name(self) -> str:
        return self._name

    def peer(self) -> str:
        return self._impl.peer

    def account(self) -> str:
        return self._impl.account

    def roles(self) -> set[str]:
        return set(self._impl.roles)

    def onCancel(self, cb: Callable[[], None] | None) -> None:
        """``cb()`` runs if the client cancels or disconnects before done()."""
        self._cancel = cb

    def info(self, msg: str) -> None:
        """Send an informational message to the client (PVA CMD_MESSAGE)."""
        self._impl.message(0, msg)

    def warn(self, msg: str) -> None:
        self._impl.message(1, msg)

    def _cancelled(self) -> None:
        cb, self._cancel = self._cancel, None
        if cb is not None and not self._done:
            try:
                cb()
            except Exception:
                _log.exception("onCancel callback of %s", self._name)

    def __repr__(self) -> str:
        return f"ServerOperation({self._name!r}, peer={self.peer()!r})"


class ServOpWrap:
    """What a put handler receives: ``value()`` unwrapped with the PV's nt/unwrap (an
    ``ntfloat`` for an NTScalar), ``done(value)`` wrapped again; the rest delegated."""

    __slots__ = ("_op", "_wrap", "_unwrap")

    def __init__(self, op: ServerOperation, wrap: Callable, unwrap: Callable):
        self._op, self._wrap, self._unwrap = op, wrap, unwrap

    def value(self) -> Any:
        V = self._op.value()
        try:
            return self._unwrap(V)
        except Exception as e:
            raise ValueError(f"Unable to unwrap {V!r} with {self._unwrap!r}") from e

    def done(self, value: Any = None, error: str | None = None, *, err: str | None = None) -> None:
        if value is not None:
            try:
                value = self._wrap(value)
            except Exception as e:
                raise ValueError(f"Unable to wrap {value!r} with {self._wrap!r}") from e
        self._op.done(value, error, err=err)

    def __getattr__(self, key: str) -> Any:
        return getattr(self._op, key)


_NOTSET: Any = object()


class SharedPV:
    """Shared state of one PV (p4p.server.raw.SharedPV; see module docstring).

    :param handler: object with ``put(pv, op)``, ``rpc(pv, op)``, ``onFirstConnect(pv)``,
        ``onLastDisconnect(pv)`` (any may be missing), or use the decorators.
    :param initial: an initial value: the PV is open at once (else it starts closed and
        clients wait until :meth:`open`).  ``value=`` is accepted as an alias.
    :param nt: a Normative Type helper (``NTScalar('d')``) used to wrap and unwrap.
    :param wrap: / :param unwrap: alternatives to ``nt=``.
    :param options: accepted for p4p compatibility, unused.
    :param max_length: for an array PV, the largest length it will have: the native element
        count Channel Access reports (an IOC's NELM); CA writes are cut to it.  Without it CA
        clients are told the length at channel creation.
    Other keywords go to ``wrap()`` of the initial value (``timestamp=``, ``severity=`` ...).

        pv = SharedPV(nt=NTScalar('d'), initial=0.0)

        @pv.put
        def handle(pv, op):
            pv.post(op.value())
            op.done()
    """

    def __init__(
        self,
        handler: Any = None,
        initial: Any = None,
        nt: Any = None,
        wrap: Callable | None = None,
        unwrap: Callable | None = None,
        options: dict | None = None,
        value: Any = _NOTSET,
        max_length: int | None = None,
        **kws: Any,
    ):
        if value is not _NOTSET:
            if initial is not None:
                raise TypeError("give initial= or value= (its alias), not both")
            initial = value
        if initial is None and kws:
            raise TypeError(f"SharedPV() got unexpected keyword arguments {sorted(kws)}")
        self.nt = nt
        self._handler = handler or self._DummyHandler()
        self._wrap = wrap or (nt and nt.wrap) or _identity
        self._unwrap = unwrap or (nt and nt.unwrap) or (lambda x: x)
        self._lock = threading.RLock()
        self._V: Value | None = None
        self._type: Type | None = None
        self._valid = 0  # fields set since open(): what a GET returns
        self._channels: set = set()
        self._monitors: set = set()
        self._waiters: list[Callable[[], None]] = []
        self._pending: list = []
        self._scheduled: set = set()
        self._options = options
        self._fast: tuple[int, Callable] | None = None
        self._fast_type: Type | None = None
        if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
            raise ValueError(f"max_length must be a positive integer, not {max_length!r}")
        #: the declared maximum length of an array value: the element count Channel Access
        #: clients are told at channel creation (else the length at that moment)
        self.max_length = max_length
        #: CA views of this PV with subscribers (see capva._aio.ca_server.CAView): told of
        #: every post, under the lock
        self._ca_views: list = []
        self._ca_registry: dict = {}  # every CA view of the open PV, by kind
        if initial is not None:
            self.open(initial, nt=nt, wrap=wrap, unwrap=unwrap, **kws)

    # -- public API -------------------------------------------------------------------------

    def open(
        self,
        value: Any,
        nt: Any = None,
        wrap: Callable | None = None,
        unwrap: Callable | None = None,
        **kws: Any,
    ) -> None:
        """Open the PV with its first value (and type); clients waiting on it proceed."""
        self._wrap = wrap or (nt and nt.wrap) or self._wrap
        self._unwrap = unwrap or (nt and nt.unwrap) or self._unwrap
        V = self._wrap_value(value, kws)
        with self._lock:
            if self._V is not None:
                raise RuntimeError("close() first")
            V = _clone_value(V)
            _apply_time(V)
            self._V = V
            self._type = V._T
            self._valid = value_mask(V)
            self._fast = _fast_path(self.nt, self._wrap, V._T)
            self._fast_type = V._T
            waiters, self._waiters = self._waiters, []
        for w in waiters:
            w()

    def post(self, value: Any, **kws: Any) -> None:
        """Update the PV: the fields marked in ``value`` are stored and sent to every
        subscriber.  Keywords go to the wrapper (``timestamp=``, ``severity=``, ...)."""
        fast = self._fast
        if fast is not None and not kws:
            idx, conv = fast
            x = _plain_scalar(value, idx, self._fast_type)
        else:
            x = _NOTSET
        if x is not _NOTSET:
            with self._lock:
                cur = self._V
                if cur is None:
                    raise RuntimeError("Must open() before post()ing")
                if cur._T is self._fast_type:
                    # NTScalar.wrap(x) would mark just 'value': skip building a Value
                    cur._s.vals[idx] = conv(x, "value")
                    cur._s.mask = 0
                    mask = (1 << idx) | _apply_time(cur)
                    cur._s.mask = 0
                    self._valid |= mask
                    if self._monitors:
                        self._fanout(mask)
                    for view in self._ca_views:
                        view.posted(cur, mask)
                    return
        V = self._wrap_value(value, kws)
        with self._lock:
            cur = self._V
            if cur is None:
                raise RuntimeError("Must open() before post()ing")
            if V._T is not cur._T and V._T != cur._T:
                raise ValueError(f"post() of a {V.getID()} to a PV of type {cur.getID()}: types differ")
            mask = value_mask(V)
            if V._b == 0 and V._s.T is V._T and mask == (1 << len(V._s.vals)) - 1 - (1 & ~mask):
                cur._s.vals = list(V._s.vals)  # everything marked: take it whole
            else:
                cur._assign_from_value(V)
            cur._s.mask = mask
            mask |= _apply_time(cur)
            cur._s.mask = 0
            self._valid |= mask
            if self._monitors:
                self._fanout(mask)
            for view in self._ca_views:
                view.posted(cur, mask)

    def current(self) -> Any:
        """The current value (unwrapped with the PV's nt/unwrap)."""
        with self._lock:
            if self._V is None:
                raise RuntimeError("open() first")
            V = _clone_value(self._V)
            V._s.mask = self._valid
        try:
            return self._unwrap(V)
        except Exception as e:
            raise ValueError(f"Unable to unwrap {V!r} with {self._unwrap!r}") from e

    def close(self, destroy: bool = False) -> None:
        """Close the PV: connected clients are disconnected (they search again and wait
        for the next :meth:`open`)."""
        with self._lock:
            self._V = None
            self._type = None
            self._valid = 0
            chans = list(self._channels)
            self._monitors.clear()
            self._ca_views = []
            self._ca_registry = {}
        for ch in chans:
            ch.pv_closed()

    def isOpen(self) -> bool:
        return self._V is not None

    # decorators ------------------------------------------------------------------------------

    @property
    def onFirstConnect(self) -> Callable:
        def decorate(fn):
            self._handler.onFirstConnect = fn
            return fn

        return decorate

    @property
    def onLastDisconnect(self) -> Callable:
        def decorate(fn):
            self._handler.onLastDisconnect = fn
            return fn

        return decorate

    @property
    def put(self) -> Callable:
        def decorate(fn):
            self._handler.put = fn
            return fn

        return decorate

    @property
    def rpc(self) -> Callable:
        def decorate(fn):
            self._handler.rpc = fn
            return fn

        return decorate

    @property
    def handler(self) -> Any:
        return self._handler

    def __repr__(self) -> str:
        if self.isOpen():
            try:
                return f"{type(self).__name__}(value={self.current()!r})"
            except Exception:
                return f"{type(self).__name__}(<open>)"
        return f"{type(self).__name__}(<closed>)"

    __str__ = __repr__

    class _DummyHandler:
        pass

    # -- flavour hooks ----------------------------------------------------------------------

    def _exec(self, op: ServerOperation | None, M: Callable, *args: Any) -> None:
        """Run a handler method.  raw: right here (the network loop) - flavours override."""
        run_handler(op, M, *args)

    def _onFirstConnect(self) -> None:
        pass

    def _onLastDisconnect(self) -> None:
        pass

    # -- internals used by network endpoints ---------------------------------------------------

    def _wrap_value(self, value: Any, kws: dict) -> Value:
        try:
            V = self._wrap(value, **kws)
        except TypeError:
            raise
        except Exception as e:
            raise ValueError(f"Unable to wrap {value!r} with {self._wrap!r} and {kws!r}") from e
        if not isinstance(V, Value):
            raise TypeError(f"the value to open()/post() must wrap to a Value, got {type(V).__name__}")
        return V

    def _when_open(self, cb: Callable[[], None]) -> bool:
        """True if open now; else ``cb`` runs at the next open() (from that thread)."""
        with self._lock:
            if self._V is not None:
                return True
            self._waiters.append(cb)
            return False

    def _cancel_wait(self, cb: Callable[[], None]) -> None:
        with self._lock:
            try:
                self._waiters.remove(cb)
            except ValueError:
                pass

    def _snapshot(self, be: bool, reqmask: int) -> Any:
        """BitSet + fields of the current value selected by ``reqmask`` (None if closed)."""
        with self._lock:
            V = self._V
            if V is None:
                return None
            return _body(V, be, self._valid & reqmask)

    def _value_copy(self) -> Value | None:
        with self._lock:
            return None if self._V is None else _clone_value(self._V)

    def _attach(self, chan: Any) -> None:
        with self._lock:
            first = not self._channels
            self._channels.add(chan)
        if first:
            self._onFirstConnect()  # flavour bookkeeping: cheap, no hand-off
            M = getattr(self._handler, "onFirstConnect", None)
            if M is not None:
                self._exec(None, M, self)

    def _detach(self, chan: Any) -> None:
        with self._lock:
            if chan not in self._channels:
                return
            self._channels.discard(chan)
            for m in [m for m in self._monitors if m.channel is chan]:
                self._monitors.discard(m)
            last = not self._channels
        if last:
            M = getattr(self._handler, "onLastDisconnect", None)
            if M is not None:
                self._exec(None, self._last_disconnect)
            else:
                self._onLastDisconnect()

    def _last_disconnect(self) -> None:
        try:
            M = getattr(self._handler, "onLastDisconnect", None)
            if M is not None:
                M(self)
        finally:
            self._onLastDisconnect()

    def _subscribe(self, mon: Any) -> bytes | None:
        """Register a started monitor; returns its first update (the whole current value)."""
        with self._lock:
            if self._V is None:
                return None
            self._monitors.add(mon)
            return _body(self._V, mon.be, self._valid & mon.reqmask)

    def _unsubscribe(self, mon: Any) -> None:
        with self._lock:
            self._monitors.discard(mon)

    def _fanout(self, mask: int) -> None:
        """(lock held) encode the update once per (byte order, request mask) and queue it
        for every subscriber's loop."""
        V = self._V
        assert V is not None
        bodies: dict[tuple[bool, int], bytes | None] = {}
        pending = self._pending
        for mon in self._monitors:
            key = (mon.be, mon.reqmask)
            body = bodies.get(key, b"")
            if body == b"":
                m = mask & mon.reqmask
                body = bodies[key] = _body(V, mon.be, m) if m & ~1 or m == 1 else None
            if body is not None:
                pending.append((mon, body, mask))
        if pending:
            for mon in self._monitors:
                loop = mon.loop
                if loop not in self._scheduled:
                    self._scheduled.add(loop)
                    mon.deliver_soon(self._deliver)

    def _deliver(self) -> None:
        """(network loop) hand queued update bodies to their monitors."""
        with self._lock:
            batch, self._pending = self._pending, []
            self._scheduled.clear()
        for mon, body, mask in batch:
            mon.push(body, mask)

    def _latest(self, be: bool, mask: int) -> bytes | None:
        """Encode the current value for a squashed update."""
        with self._lock:
            V = self._V
            if V is None:
                return None
            return _body(V, be, mask)

    def _writable(self) -> bool:
        """Whether clients may write (a put handler is set): CA's write access right."""
        return getattr(self._handler, "put", None) is not None

    def _put(self, op: ServerOperation) -> None:
        M = getattr(self._handler, "put", None)
        if M is None:
            op.done(error="Put not supported")
            return
        self._exec(op, M, self, ServOpWrap(op, self._wrap, self._unwrap))

    def _rpc(self, op: ServerOperation) -> None:
        M = getattr(self._handler, "rpc", None)
        if M is None:
            op.done(error="RPC not supported")
            return
        self._exec(op, M, self, op)
