"""p4p-compatible PVA server API: ``from capva.server import Server, StaticProvider``.

Note: ``capva.server.SharedPV`` is the *aiopvxs* flavour (a writable mailbox by default,
see :class:`SharedPV`); p4p code takes its SharedPV from :mod:`.thread`, :mod:`.asyncio`,
:mod:`.cothread` or :mod:`.raw`, which refuse puts unless a handler is given, as p4p does.

    from capva.nt import NTScalar
    from capva.server import Server
    from capva.server.thread import SharedPV

    pv = SharedPV(nt=NTScalar('d'), initial=0.0)

    @pv.put
    def handle(pv, op):
        pv.post(op.value())       # store and send to subscribers
        op.done()

    Server.forever(providers=[{'demo:pv:name': pv}])

Providers are asked in order which of them has a PV: a dict ``{name: SharedPV}``, a
:class:`StaticProvider`, a :class:`DynamicProvider`, a name registered with
:func:`installProvider`, or ``(provider, order)`` with lower orders asked first.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Iterable
from typing import Any

from .. import camap
from .._aio import loop as _loopmod
from .._aio.ca_server import CAServer, split_long_string_name
from .._aio.config import CAServerConfig, ServerConfig
from .._aio.pva_server import PVAServer
from ..pva.types import Type
from ..pva.value import Value
from .raw import Handler, RemoteError, ServerOperation, handler_failed
from .raw import SharedPV as _RawSharedPV
from .thread import SharedPV as _ThreadSharedPV

_log = logging.getLogger(__name__)

__all__ = [
    "Server",
    "installProvider",
    "removeProvider",
    "StaticProvider",
    "DynamicProvider",
    "ServerOperation",
    "SharedPV",
    "ExecOp",
    "Handler",
    "RemoteError",
]

_providers: dict[str, weakref.ref] = {}


def installProvider(name: str, provider: Any) -> None:
    """Register ``provider`` under ``name`` for ``Server(providers=[name])``.  Held weakly,
    as p4p does: keep your own reference."""
    _providers[name] = weakref.ref(provider)


def removeProvider(name: str) -> None:
    _providers.pop(name, None)


def clearProviders() -> None:
    _providers.clear()


class StaticProvider:
    """A fixed (but mutable) set of named SharedPVs."""

    def __init__(self, name: str | None = None):
        self.name = name or str(uuid.uuid4())
        self._pvs: dict[str, _RawSharedPV] = {}
        self._lock = threading.Lock()
        self._servers: weakref.WeakSet = weakref.WeakSet()

    def add(self, name: str, pv: _RawSharedPV) -> None:
        if not isinstance(pv, _RawSharedPV):
            raise TypeError(f"StaticProvider.add() needs a SharedPV, not {type(pv).__name__}")
        with self._lock:
            if name in self._pvs:
                raise KeyError(f"PV {name!r} already in provider {self.name!r}")
            self._pvs[name] = pv
        self._poke()

    def remove(self, name: str) -> _RawSharedPV:
        with self._lock:
            pv = self._pvs.pop(name)
        for ch in list(pv._channels):
            if ch.name == name and getattr(ch, "conn", None) is not None and ch.conn.server in self._impls():
                ch.pv_closed()
        self._poke()
        return pv

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._pvs)

    def close(self) -> None:
        """Disconnect every client channel of this provider's PVs."""
        with self._lock:
            pvs = list(self._pvs.items())
        impls = self._impls()
        for name, pv in pvs:
            for ch in list(pv._channels):
                if ch.name == name and ch.conn.server in impls:
                    ch.pv_closed()

    def _impls(self) -> set:
        return {i for s in self._servers for i in (s._impl, s._ca) if i is not None}

    def _poke(self) -> None:
        for s in list(self._servers):
            s._poke()

    def _test(self, name: str) -> Any:
        return name in self._pvs

    def _make(self, name: str, peer: str) -> _RawSharedPV | None:
        return self._pvs.get(name)

    def _peek(self, name: str) -> _RawSharedPV | None:
        """The PV ``name`` without side effects (CA searches check its type)."""
        return self._pvs.get(name)

    def _list(self) -> list[str]:
        return self.keys()


class DynamicProvider:
    """PVs made on demand by a handler:

    * ``handler.testChannel(name)`` -> True (mine), False (never mine: cached so the handler
      is not asked again for a while) or :attr:`NotYet` (not now; ask again next time);
    * ``handler.makeChannel(name, peer)`` -> a SharedPV or None.  ``peer`` is ``'ip:port'``.
    """

    NotYet = b"nocache"
    #: seconds a negative testChannel() answer is remembered
    negative_ttl = 10.0

    def __init__(self, name: str, handler: Any):
        self.name = name
        self._handler = handler
        self._neg: dict[str, float] = {}
        self._servers: weakref.WeakSet = weakref.WeakSet()

    def _test(self, name: str) -> Any:
        now = time.monotonic()
        t = self._neg.get(name)
        if t is not None and now - t < self.negative_ttl:
            return False
        try:
            r = self._handler.testChannel(name)
        except Exception:
            _log.exception("%s.testChannel(%r)", self.name, name)
            return False
        if r is self.NotYet or r == self.NotYet:
            return False
        if not r:
            if len(self._neg) > 10000:
                self._neg.clear()
            self._neg[name] = now
            return False
        self._neg.pop(name, None)
        return True

    def _make(self, name: str, peer: str) -> _RawSharedPV | None:
        try:
            pv = self._handler.makeChannel(name, peer)
        except Exception:
            _log.exception("%s.makeChannel(%r)", self.name, name)
            return None
        if pv is not None and not isinstance(pv, _RawSharedPV):
            _log.error("%s.makeChannel(%r) returned %r, not a SharedPV", self.name, name, pv)
            return None
        return pv

    def _list(self) -> list[str]:
        return []

    def _peek(self, name: str) -> _RawSharedPV | None:
        return None  # unknown until makeChannel(): searches are answered on testChannel()


def _resolve_providers(providers: Any) -> list[Any]:
    if isinstance(providers, dict):
        providers = [providers]
    elif isinstance(providers, str):
        warnings.warn(
            "providers= as a space separated string is deprecated", DeprecationWarning, stacklevel=3
        )
        providers = providers.split()
    ordered: list[tuple[int, int, Any]] = []
    for i, p in enumerate(providers or []):
        order = 0
        if isinstance(p, tuple):
            p, order = p
        if isinstance(p, str):
            ref = _providers.get(p)
            prov = ref() if ref is not None else None
            if prov is None:
                raise KeyError(f"No provider named {p!r} (installProvider() it first)")
            p = prov
        elif isinstance(p, dict):
            sp = StaticProvider()
            for k, v in p.items():
                sp.add(k, v)
            p = sp
        if not isinstance(p, (StaticProvider, DynamicProvider)):
            raise TypeError(f"not a provider: {p!r}")
        order = getattr(p, "order", order)
        ordered.append((order, i, p))
    ordered.sort(key=lambda t: (t[0], t[1]))
    return [p for _, _, p in ordered]


_PROTOCOLS = ("pva", "ca")


class Server:
    """A running server (p4p.server.Server) for PVA **and Channel Access**: every PV is
    served over both protocols, from construction until :meth:`stop` (or the end of a
    ``with`` block).  CA clients see the CA view of each PV (docs/ca-pva-mapping.md); PVs
    whose structure CA cannot carry (NTTable, NTNDArray ...) are simply not found over CA.

    :param providers: see the module docstring; a bare dict is accepted too.
    :param isolate: bind 127.0.0.1 with random ports, ignore the environment (for tests).
    :param conf: EPICS_PVAS_* / EPICS_PVA_* and EPICS_CAS_* / EPICS_CA_* settings (strings);
        they win over the environment.
    :param useenv: also read the process environment.
    :param protocols: which protocols to serve, ``("pva", "ca")`` by default.

        with Server(providers=[{"demo:x": pv}], isolate=True) as S:
            S.conf()      # EPICS_PVA* and EPICS_CA* keys: what a client needs to reach us
    """

    def __init__(
        self,
        providers: Any = None,
        isolate: bool = False,
        conf: dict[str, str] | None = None,
        useenv: bool = True,
        protocols: Iterable[str] = _PROTOCOLS,
    ):
        if isinstance(protocols, str):
            protocols = protocols.replace(",", " ").split()
        protos = {str(p).lower() for p in protocols}
        if not protos or protos - set(_PROTOCOLS):
            raise ValueError(f"protocols must be a non-empty selection of {_PROTOCOLS}, not {protocols!r}")
        ca_cfg: CAServerConfig | None = None
        if isolate:
            if conf is not None:
                raise ValueError("isolate=True excludes conf=")
            cfg = ServerConfig.isolated()
            ca_cfg = CAServerConfig.isolated()
        else:
            ca_keys = {
                k: v for k, v in (conf or {}).items() if isinstance(k, str) and k.startswith("EPICS_CA")
            }
            pva_keys = {k: v for k, v in (conf or {}).items() if k not in ca_keys}
            cfg = ServerConfig.from_env(os.environ, pva_keys, useenv)
            ca_cfg = CAServerConfig.from_env(os.environ, ca_keys, useenv)
        self._providers = _resolve_providers(providers)
        for p in self._providers:
            p._servers.add(self)
        self._impl: PVAServer | None = None
        self._ca: CAServer | None = None
        self._conf = cfg
        self._ca_conf: CAServerConfig | None = None
        self._lt = _loopmod.acquire()
        try:
            if "pva" in protos:
                impl = PVAServer(cfg, self._lookup, self._make_channel, self._lt.loop)
                self._conf = self._lt.run(impl.start(), timeout=30)
                self._impl = impl
            if "ca" in protos:
                ca = CAServer(ca_cfg, self._ca_lookup, self._ca_make, self._lt.loop, self._lookup)
                try:
                    self._ca_conf = self._lt.run(ca.start(), timeout=30)
                except BaseException:
                    self._lt.run(ca.close(), timeout=30)
                    raise
                self._ca = ca
        except BaseException as e:
            impl_, self._impl = self._impl, None
            if impl_ is not None:
                self._lt.run(impl_.close(), timeout=30)
            _loopmod.release(self._lt)
            if isinstance(e, OSError):
                raise RuntimeError(f"invalid server configuration or address in use: {e}") from e
            raise

    # provider queries, called in the network loop
    def _lookup(self, name: str) -> bool:
        for p in self._providers:
            if p._test(name):
                return True
        return False

    def _make_channel(self, name: str, peer: str) -> _RawSharedPV | None:
        for p in self._providers:
            if p._test(name):
                pv = p._make(name, peer)
                if pv is not None:
                    return pv
        return None

    def _ca_lookup(self, name: str) -> bool:
        """CA search: the name is ours and, when its type is known, CA can carry it."""
        base, long_string = split_long_string_name(name)
        for cand, ls in ((name, False), (base, True)) if long_string else ((name, False),):
            for p in self._providers:
                if p._test(cand):
                    pv = p._peek(cand)
                    T = None if pv is None else pv._type
                    if T is None:
                        return True  # a dynamic PV, or not open yet: as for PVA
                    kind = camap.long_string_type(T) if ls else camap.ca_view_type(T)
                    return kind is not None
        return False

    def _ca_make(self, name: str, peer: str) -> _RawSharedPV | None:
        pv = self._make_channel(name, peer)
        if pv is None and name.endswith(".$"):
            pv = self._make_channel(split_long_string_name(name)[0], peer)
        return pv

    def _poke(self) -> None:
        impl = self._impl
        if impl is not None:
            impl.loop.call_soon_threadsafe(impl.poke)

    def conf(self) -> dict[str, str]:
        """Effective configuration of every protocol served:
        ``Context('pva', conf=S.conf(), useenv=False)`` reaches us, and so does a CA client
        (pyepics, caproto, caget) given the ``EPICS_CA*`` keys as its environment."""
        out: dict[str, str] = {}
        if self._impl is not None or self._ca_conf is None:
            out.update(self._conf.conf())
        if self._ca_conf is not None:
            out.update(self._ca_conf.conf())
        return out

    def stop(self) -> None:
        """Stop serving: close listeners and every client connection (PVA and CA)."""
        impl, self._impl = self._impl, None
        ca, self._ca = self._ca, None
        if impl is None and ca is None:
            return
        try:
            if impl is not None:
                self._lt.run(impl.close(), timeout=30)
            if ca is not None:
                self._lt.run(ca.close(), timeout=30)
        finally:
            _loopmod.release(self._lt)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, A: Any, B: Any, C: Any) -> None:
        self.stop()

    def __del__(self) -> None:
        if getattr(self, "_impl", None) is not None or getattr(self, "_ca", None) is not None:
            try:
                self.stop()
            except Exception:
                pass

    @classmethod
    def forever(cls, *args: Any, **kws: Any) -> None:
        """Run a server until KeyboardInterrupt (Ctrl+C)."""
        with cls(*args, **kws):
            try:
                while True:
                    time.sleep(100)
            except KeyboardInterrupt:
                pass

    def run(self) -> None:
        """Serve until :meth:`interrupt` (from another thread or a signal handler) or Ctrl+C,
        then stop: pvxs/aiopvxs ``Server.run()``, for scripts whose only job is serving::

            Server({"test:pv:int32": pv}).run()

        It blocks the calling thread, so do not call it from a running asyncio loop (there,
        keep the server in a ``with`` block and ``await`` something instead)."""
        ev = self._interrupt_event()
        try:
            while not ev.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            ev.clear()
            self.stop()

    def interrupt(self) -> None:
        """Make :meth:`run` return (thread-safe, signal-safe)."""
        self._interrupt_event().set()

    def _interrupt_event(self) -> threading.Event:
        ev = self.__dict__.get("_interrupted")
        if ev is None:
            ev = self.__dict__.setdefault("_interrupted", threading.Event())
        return ev

    def tostr(self, detail: int = 0) -> str:
        lines = [f"{k}={v}" for k, v in sorted(self.conf().items()) if k.startswith("EPICS_PVAS_")]
        for p in self._providers:
            lines.append(f"Source: {p.name} prio=0 {type(p).__name__}")
            if detail > 0:
                lines.extend(f"    {n}" for n in p._list())
        if self._impl is not None:
            st = self._impl.stats()
            lines.append(
                f"connections={st['connections']} channels={st['channels']} operations={st['operations']}"
            )
        if self._ca is not None and self._ca_conf is not None:
            lines.extend(
                f"{k}={v}" for k, v in sorted(self._ca_conf.conf().items()) if k.startswith("EPICS_CAS_")
            )
            st = self._ca.stats()
            lines.append(
                f"CA circuits={st['circuits']} channels={st['channels']} subscriptions={st['subscriptions']}"
            )
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        if self._impl is None and self._ca is None:
            return "<capva.server.Server stopped>"
        parts = []
        if self._impl is not None:
            parts.append(f"pva port {self._conf.tcp_port}")
        if self._ca is not None and self._ca_conf is not None:
            parts.append(f"ca port {self._ca_conf.port}")
        return f"<capva.server.Server {', '.join(parts)}>"


def _iter_names(ps: Iterable[Any]) -> list[str]:
    return [n for p in ps for n in p._list()]


# --------------------------------------------------------------------------- aiopvxs flavour


class ExecOp:
    """The ``op`` an aiopvxs/pvxs ``onPut``/``onRPC`` callback receives: complete it with
    :meth:`reply` (``reply(value)`` answers an RPC) or :meth:`error`.  Everything else
    (``value()``, ``pvRequest()``, ``peer()``, ``onCancel()``, ``info()``...) is the
    underlying :class:`ServerOperation`'s."""

    __slots__ = ("_op",)

    def __init__(self, op: ServerOperation):
        self._op = op

    def reply(self, value: Value | None = None) -> None:
        """Succeed; ``value`` is the RPC result (puts reply with no value)."""
        self._op.done(value)

    def error(self, msg: str) -> None:
        """Fail the operation; the client sees ``msg``."""
        self._op.done(error=str(msg))

    def peerName(self) -> str:
        """The client's ``ip:port`` (pvxs spelling of ``peer()``)."""
        return self._op.peer()

    def __getattr__(self, key: str) -> Any:
        return getattr(self._op, key)

    def __repr__(self) -> str:
        return f"ExecOp({self._op.name()!r}, peer={self._op.peer()!r})"


class SharedPV(_ThreadSharedPV):
    """aiopvxs's ``SharedPV``: a PV that clients may write to by default (a pvxs *mailbox*).

    With no put handler a client PUT is simply posted (the new value is stored and sent to
    subscribers, with the current time if the client gave no timeStamp) and completed, as
    pvxs's ``SharedPV::buildMailbox()`` does.  That is the opposite of p4p, whose SharedPV
    (:mod:`.thread`, :mod:`.asyncio`, :mod:`.raw`...) refuses puts without a handler.
    ``open()``/``post()`` take Values (a dict is accepted once the PV has a type)::

        from capva.data import TypeCodeEnum as T
        from capva.nt import NTScalar
        from capva.server import Server, SharedPV

        val = NTScalar(T.Int32A).create()
        val['value'] = [-1, -2, -3]
        pv = SharedPV()
        pv.open(val)

        @pv.onPut                         # optional: replaces the mailbox behaviour
        def check(pv, op, value):
            if len(value['value']) > 10:
                op.error("too long")
            else:
                pv.post(value)
                op.reply()

        Server({"test:pv:int32": pv}).run()

    :param nt: optional type: a :class:`capva.data.TypeDef` (``NTScalar(T.Int32A).build()``),
        a :class:`~capva.Type`, or a p4p-style NT helper (``NTScalar('d')``)
    :param initial: with ``nt``, the initial value (a dict or Value): the PV opens at once
    Other keywords (``handler=``, ``queue=``, ``wrap=``, ``unwrap=``) are those of
    :class:`capva.server.thread.SharedPV`; a p4p-style ``handler.put(pv, op)`` (or
    ``@pv.put``) also replaces the mailbox.  Callbacks run on the PV's serial work queue,
    never in the network loop, so they may block.
    """

    def __init__(self, nt: Any = None, initial: Any = None, **kws: Any):
        self._onput: Any = None
        self._onrpc: Any = None
        if isinstance(nt, Type):
            from ..data import TypeDef

            nt = TypeDef(nt)
        _ThreadSharedPV.__init__(self, nt=nt, initial=initial, **kws)

    def onPut(self, cb: Any) -> Any:
        """Set the put callback ``cb(pv, op, value)`` (``None`` restores the mailbox); returns
        ``cb``, so it also works as a decorator.  ``value`` is the client's Value (the fields
        it sent are marked); ``op`` is an :class:`ExecOp`: call ``op.reply()`` or
        ``op.error(msg)``.  An exception from ``cb`` fails the put with its message."""
        self._onput = cb
        return cb

    def onRPC(self, cb: Any) -> Any:
        """Set the RPC callback ``cb(pv, op, value)``; answer with ``op.reply(result_value)``."""
        self._onrpc = cb
        return cb

    def _wrap_value(self, value: Any, kws: dict) -> Value:
        # Values are this flavour's currency: posted as they are (pvxs semantics)
        if isinstance(value, Value) and not kws:
            return value
        if isinstance(value, dict) and self.nt is None and self._type is not None and not kws:
            return Value(self._type, value)
        return _ThreadSharedPV._wrap_value(self, value, kws)

    def _put(self, op: ServerOperation) -> None:
        cb = self._onput
        if cb is not None:
            self._exec(op, cb, self, ExecOp(op), op.value())
        elif getattr(self._handler, "put", None) is not None:
            _ThreadSharedPV._put(self, op)
        else:
            try:  # the mailbox: cheap and thread-safe, so done right here
                self.post(op.value())
            except Exception as e:
                handler_failed(op, e)
            else:
                op.done()

    def _writable(self) -> bool:
        return True  # a mailbox, or an onPut callback

    def _rpc(self, op: ServerOperation) -> None:
        cb = self._onrpc
        if cb is not None:
            self._exec(op, cb, self, ExecOp(op), op.value())
        else:
            _ThreadSharedPV._rpc(self, op)
