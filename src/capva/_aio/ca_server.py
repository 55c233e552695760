"""asyncio Channel Access server endpoint: UDP search and beacons, TCP circuits.

One :class:`CAServer` per :class:`capva.server.Server` that serves CA.  It uses the
sans-I/O core (:mod:`capva.ca`) for framing, messages, DBR encoding and RSRV's error policy,
and :mod:`capva.camap` for the CA view of each PV's Value: the server keeps no copy of the
data of its own (design.md §2).

* **UDP** (ca-protocol.md §2.3, §4, §10.2): one socket per interface on
  ``EPICS_CA_SERVER_PORT`` (plus the broadcast address of a specific interface), shared with
  other servers on the host through SO_REUSEADDR/SO_REUSEPORT.  A datagram counts only if it
  starts with VERSION; one reply datagram answers the names we have; unknown names get no
  reply.  Beacons go to the repeater port on the 0.02 s doubling schedule up to
  ``EPICS_CAS_BEACON_PERIOD``, with RSRV's ids (0, 0, 1, 2 ...).
* **TCP**: each circuit is an :class:`asyncio.Protocol`.  The server's VERSION goes out on
  accept; every message is checked by :class:`capva.ca.state.ServerCircuit` and
  :func:`capva.ca.state.check_operation` and answered as RSRV does; replies of one loop
  turn leave in one write.
* **Subscriptions**: a :class:`CAView` per (PV, CA type) computes one
  :class:`~capva.camap.CASnapshot` per post and its DBE bits (under the PV's lock), then
  hands it to the loop once per turn; each (DBR type, count) is encoded once per update
  whatever the number of subscribers.  While a circuit's events are off (EVENTS_OFF) or
  its transport is paused by TCP back-pressure, a subscription keeps only its latest update,
  as RSRV does: a slow client costs bounded memory and never slows anyone else.
* **Puts** go through the PV's put handler as a :class:`~capva.server.raw.ServerOperation`;
  WRITE_NOTIFY is answered when the handler calls ``op.done()``.

Bad input from one peer closes that circuit only (with one log line) or is dropped (UDP).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from .. import camap
from ..ca import commands as C
from ..ca import dbr as D
from ..ca import status as _status
from ..ca.constants import (
    ACCESS_READ,
    ACCESS_READ_WRITE,
    ACCESS_RIGHTS,
    ANY_ADDRESS,
    CLEAR_CHANNEL,
    CLIENT_NAME,
    CREATE_CHAN,
    DO_REPLY,
    ECHO,
    EVENT_ADD,
    EVENT_CANCEL,
    EVENTS_OFF,
    EVENTS_ON,
    HOST_NAME,
    MAX_PV_NAME_SIZE,
    MINOR_VERSION,
    READ,
    READ_NOTIFY,
    READ_SYNC,
    SEARCH,
    SERVER_DISCONN,
    VERSION,
    WRITE,
    WRITE_NOTIFY,
    supports,
)
from ..ca.convert import read_payload
from ..ca.errors import CADecodeError
from ..ca.framing import (
    _HDR_PACK,
    _HDR_UNPACK,
    CAMessageReader,
    RawMessage,
    encode_header,
    max_message_size_for,
    split_datagram,
)
from ..ca.state import (
    Action,
    ServerCircuit,
    Verdict,
    check_operation,
    plain_search_datagram,
    plain_search_reply,
    search_reply_datagram,
    server_datagram,
)
from ..ca.status import ECA_BADCOUNT, ECA_BADTYPE, ECA_INTERNAL, ECA_NORMAL, ECA_PUTFAIL, ECA_TOLARGE
from ..pva.value import Value
from .batching import BatchedProtocol
from .config import CAServerConfig
from .sockconn import Listener, serve_tcp
from .udp import _RateLimitedLog, _set_reuse, beacon_destinations, ipv4_interfaces

_log = logging.getLogger("capva.server.ca")
_rl = _RateLimitedLog(_log)

__all__ = ["CAServer", "CAView", "split_long_string_name"]

_STRING = int(D.STRING)
_LAST_PLAIN = int(D.DOUBLE)  # the plain types are 0 (STRING) .. 6 (DOUBLE)
_DBE_ALL = 0xFFFF
_DBE_VALUE_LOG = 1 | 2
_EMPTY = b""
#: replies up to this size may take the READ_NOTIFY fast path (below every size limit)
_FAST_READ_BYTES = 4096


def split_long_string_name(name: str) -> tuple[str, bool]:
    """``("NAME", True)`` for ``"NAME.$"`` (the long-string view of a string PV),
    ``(name, False)`` otherwise."""
    if name.endswith(".$") and len(name) > 2:
        return name[:-2], True
    return name, False


# ================================================================================================
# the CA view of one PV
# ================================================================================================


def _subtree_mask(T: Any, name: str) -> int:
    """The bits of field ``name`` and its sub-fields in a post's field mask."""
    idx = T._paths.get(name)
    if idx is None:
        return 0
    return ((1 << T._span[idx]) - 1) << idx


def _value_mask(T: Any) -> int:
    return _subtree_mask(T, "value")


def encode_update(
    snap: camap.CASnapshot, data_type: int, count: int, class_name: str = ""
) -> tuple[bytes, int, int]:
    """``(DBR payload, element count, ECA status)`` of ``snap`` read as ``data_type``.

    STRING-family reads of any channel carry :func:`capva.camap.value_strings` (the IOC's
    text of the value: precision, enum choices, the long string); everything else goes
    through RSRV's conversions (:func:`capva.ca.convert.read_payload`)."""
    info = D.DBR[data_type]
    # ACKT: transient alarms need acknowledging, an IOC record's default (YES); plain
    # types carry no metadata at all (the commonest read: skip building it)
    meta = None if info.meta_struct is None else D.Metadata(**snap.metadata_fields(), ackt=1)
    if info.native == _STRING and data_type not in (D.PUT_ACKT, D.PUT_ACKS, D.CLASS_NAME):
        return read_payload(data_type, count, _STRING, camap.value_strings(snap), meta)
    return read_payload(
        data_type, count, int(snap.kind.native), snap.value, meta, class_name=class_name, as_buffer=True
    )


#: the subscriptions and encodings of a view nobody subscribed to or read yet (shared, never
#: changed: an add or an encoding replaces them with containers of the view's own)
_NO_SUBS: Any = frozenset()
_NO_ENC: Any = MappingProxyType({})


class CAView:
    """The CA view of one open PV for one :class:`~capva.camap.CAKind` (its native type, or
    the ``NAME.$`` long string): the subscriptions to it, and the latest snapshot.

    :meth:`posted` runs in the posting thread with the PV's lock held; the snapshot and DBE
    bits are computed there, once per post, and the loop is woken once per turn.
    """

    __slots__ = (
        "pv",
        "kind",
        "vmask",
        "other",
        "subs",
        "last",
        "pending",
        "scheduled",
        "loop",
        "enc_snap",
        "enc",
        "peeked",
    )

    def __init__(self, pv: Any, kind: camap.CAKind, loop: asyncio.AbstractEventLoop) -> None:
        self.pv = pv
        self.kind = kind
        T = pv._type
        self.vmask = _value_mask(T)
        #: every field but value and timeStamp: a post touching none of them changes no
        #: alarm or metadata (the fast path of :meth:`posted`)
        self.other = ~(self.vmask | _subtree_mask(T, "timeStamp"))
        # (the containers are made when first needed: connecting 1000 channels made 7
        # garbage-collected objects per channel, and the collections that followed cost
        # several ms of a connect burst)
        self.subs: set[_Sub] = _NO_SUBS  # (replaced by a set of its own at the first add)
        self.last: camap.CASnapshot | None = None
        self.pending: list[tuple[camap.CASnapshot, int]] | None = None
        self.scheduled = False
        self.loop = loop
        #: (loop only) encoded replies of the snapshot ``enc_snap`` by (DBR type, count):
        #: every reader and subscriber of the same form shares one encoding (a dict of its
        #: own from the first encoding on: encode_for replaces it, as enc_snap starts None)
        self.enc_snap: camap.CASnapshot | None = None
        self.enc: dict[tuple[int, int], tuple[bytes, int, int]] = _NO_ENC
        #: a plain read took the value alone since the last post (:meth:`_Circuit.first_read`):
        #: the next read computes and caches the snapshot
        self.peeked = False

    def snapshot(self) -> camap.CASnapshot | None:
        """The current CA view (None if the PV is closed), computed at most once per post."""
        with self.pv._lock:
            last = self.last
            if last is None:
                V = self.pv._V
                if V is None:
                    return None
                last = self.last = camap.ca_snapshot(V, self.kind)
            return last

    def posted(self, V: Value, mask: int) -> None:
        """(PV lock held, any thread) a post: compute the view and queue it for the loop.
        Without subscribers it only drops the cached view (reads compute it again)."""
        if not self.subs:
            self.last = None
            self.peeked = False
            return
        last = self.last
        if last is not None and not mask & self.other:
            snap = camap.ca_snapshot_value(V, last)
            dbe = _DBE_VALUE_LOG if mask & self.vmask else 0  # a new time stamp alone: no event
        else:
            snap = camap.ca_snapshot(V, self.kind)
            dbe = camap.dbe_mask(last, snap, ("value",) if mask & self.vmask else ())
        self.last = snap
        if not dbe:
            return
        if self.pending is None:
            self.pending = [(snap, dbe)]
        else:
            self.pending.append((snap, dbe))
        if not self.scheduled:
            self.scheduled = True
            try:
                self.loop.call_soon_threadsafe(self.deliver)
            except RuntimeError:  # loop closed: the server is stopping
                self.scheduled = False

    def deliver(self) -> None:
        """(loop) hand the queued updates to the subscriptions."""
        with self.pv._lock:
            batch, self.pending = self.pending, None
            self.scheduled = False
            subs = list(self.subs)
        for snap, dbe in batch or ():
            for sub in subs:
                if sub.mask & dbe:
                    sub.push(snap)

    def add(self, sub: _Sub) -> camap.CASnapshot | None:
        """(loop) register a subscription; returns the current view (its first update)."""
        with self.pv._lock:
            V = self.pv._V
            if V is None:
                return None
            if self.last is None:
                self.last = camap.ca_snapshot(V, self.kind)
            if self.subs is _NO_SUBS:
                self.subs = {sub}
            else:
                self.subs.add(sub)
            return self.last

    def remove(self, sub: _Sub) -> None:
        with self.pv._lock:
            if sub in self.subs:
                self.subs.discard(sub)


def _view_for(pv: Any, kind: camap.CAKind, loop: asyncio.AbstractEventLoop) -> CAView:
    """The PV's view for ``kind`` (one per kind, shared by every circuit and server)."""
    with pv._lock:
        reg = pv._ca_registry
        v = reg.get(kind)
        if v is None or (v.loop is not loop and not v.subs):
            old, v = v, CAView(pv, kind, loop)
            reg[kind] = v
            # told of every post from now on (posts keep its cached view current) until the PV
            # closes; copy-on-write, as post() iterates the list
            pv._ca_views = [*(x for x in pv._ca_views if x is not old), v]
        return v


# ================================================================================================
# a TCP circuit
# ================================================================================================


class _Chan:
    """One CA channel on a circuit."""

    __slots__ = ("conn", "sid", "cid", "name", "pv", "view", "count", "access", "subs", "__weakref__")

    def __init__(self, conn: _Circuit, sid: int, cid: int, name: str, pv: Any, view: CAView, count: int):
        self.conn = conn
        self.sid = sid
        self.cid = cid
        self.name = name
        self.pv = pv
        self.view = view
        self.count = count
        self.access = ACCESS_READ
        self.subs: set[int] | None = None  # subscription ids (made at the first)

    def pv_closed(self) -> None:
        """The SharedPV was closed or removed (any thread): disconnect this channel."""
        self.conn.call_in_loop(self.conn.chan_closed, self)


class _Sub:
    """One EVENT_ADD subscription."""

    __slots__ = ("conn", "chan", "subid", "data_type", "count", "mask", "latest", "__weakref__")

    def __init__(self, conn: _Circuit, chan: _Chan, subid: int, data_type: int, count: int, mask: int):
        self.conn = conn
        self.chan = chan
        self.subid = subid
        self.data_type = data_type
        self.count = count
        self.mask = mask
        self.latest: camap.CASnapshot | None = None  # held back while events are off / paused

    def push(self, snap: camap.CASnapshot) -> None:
        """(loop) one update for this subscription."""
        conn = self.conn
        if conn.closed:
            return
        if not conn.events_on or conn.paused:
            self.latest = snap  # only the latest is kept (RSRV)
            conn.held.add(self)
            return
        conn.send_update(self, conn.encode_for(snap, self.data_type, self.count, self.chan))

    def release(self) -> None:
        snap, self.latest = self.latest, None
        if snap is not None:
            self.push(snap)


class _PutOp:
    """The endpoint side of a CA write: what ServerOperation needs (peer, account, complete)."""

    __slots__ = ("conn", "chan", "raw", "notify", "done", "sop")

    def __init__(self, conn: _Circuit, chan: _Chan, raw: RawMessage, notify: bool):
        self.conn = conn
        self.chan = chan
        self.raw = raw
        self.notify = notify
        self.done = False
        self.sop: Any = None

    @property
    def peer(self) -> str:
        return self.conn.peer

    @property
    def account(self) -> str:
        return self.conn.state.user_name

    @property
    def roles(self) -> list[str]:
        from .pva_server import _roles

        return _roles(self.conn.state.user_name)

    def complete(self, value: Value | None, error: str | None) -> None:
        conn = self.conn
        if error is None and not self.done and threading.get_ident() != conn._thread:
            # a put handler's thread: a success needs no loop turn (W3: puts with completion)
            raw = self.raw
            if not self.notify:
                self._finished()
                return
            if raw.data_count < 0xFFFF and conn.send_from_thread(
                _HDR_PACK(WRITE_NOTIFY, 0, raw.data_type, raw.data_count, ECA_NORMAL, raw.parameter2)
            ):
                self._finished()
                return
        conn.call_in_loop(self._complete, error)

    def _finished(self) -> None:
        self.done = True
        self.conn.puts.discard(self)

    def _complete(self, error: str | None) -> None:
        conn = self.conn
        if self.done:
            return
        self.done = True
        conn.puts.discard(self)
        status = ECA_NORMAL
        if error is not None:
            status = ECA_PUTFAIL
            _log.warning("%s: CA put to %s failed: %s", conn.peer, self.chan.name, error)
        if conn.closed:
            return
        raw = self.raw
        if self.notify:
            conn.send(WRITE_NOTIFY, _EMPTY, raw.data_type, raw.data_count, status, raw.parameter2)
        elif error is not None:
            conn.send_error(raw, status, error)

    def message(self, mtype: int, text: str) -> None:
        _log.info("%s: message for the CA client writing %s: %s", self.conn.peer, self.chan.name, text)


class _Circuit(BatchedProtocol):
    """One client TCP circuit."""

    def __init__(self, server: CAServer):
        super().__init__(server.loop, server.thread_id)
        self.server = server
        limit = server.config.max_array_bytes
        self.max_payload = None if limit is None else max_message_size_for(limit) - 24
        self.reader = CAMessageReader(max_message_size=None if limit is None else max_message_size_for(limit))
        self.state = ServerCircuit()
        self.chans: dict[int, _Chan] = {}
        self.subs: dict[int, _Sub] = {}
        self.puts: set[_PutOp] = set()
        self.held: set[_Sub] = set()
        self.events_on = True
        self.paused = False
        self.peer = "?"
        self.creates = 0

    # -- plumbing ---------------------------------------------------------------------------

    def send(
        self, cmd: int, payload: bytes, dtype: int = 0, count: int = 0, p1: int = 0, p2: int = 0
    ) -> None:
        """One message; the payload is padded to 8 bytes, the header extended if needed."""
        n = len(payload)
        pad = -n & 7
        if pad:
            payload = payload + bytes(pad)
            n += pad
        extended = n >= 0xFFFF or count >= 0xFFFF
        if extended and not supports(self.state.client_minor, "extended_header"):
            raise _TooLarge(f"{n} bytes / {count} elements need an extended header (client minor < 9)")
        hdr = encode_header(cmd, n, dtype, count, p1, p2, extended=extended)
        if n:
            self.write_parts(hdr, payload)
        else:
            self.write_parts(hdr)

    def send_command(self, msg: C.Command) -> None:
        self.write_parts(msg.encode())

    def send_error(self, raw: RawMessage, status: int, text: str) -> None:
        cid = C.error_cid(
            raw, {sid: ch.cid for sid, ch in self.chans.items()} if raw.command != SEARCH else {}
        )
        self.send_command(
            C.ErrorResponse.for_request(raw, status, text, cid=cid, client_minor=self.state.client_minor)
        )

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = f"{peer[0]}:{peer[1]}"
        self.server.circuits.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            except OSError:
                pass
        # RSRV queues its VERSION at accept, before reading anything (§2.3)
        self.write_parts(encode_header(VERSION, 0, 0, MINOR_VERSION, 0, 0))

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.release_held()

    def release_held(self) -> None:
        if not self.events_on or self.paused:
            return
        held, self.held = self.held, set()
        for sub in held:
            if self.subs.get(sub.subid) is sub:
                sub.release()

    def handle_data(self, data: bytes) -> None:
        if self.closed:
            return
        if len(data) == 16 and data[1] == READ_NOTIFY and self.fast_read(data):
            return
        try:
            msgs = self.reader.feed(data)
        except CADecodeError as e:  # pragma: no cover - the framer finds nothing malformed
            self.protocol_error(str(e))
            return
        for raw in msgs:
            if self.closed:
                return
            try:
                self.handle(raw)
            except (CADecodeError, camap.CAPutError, ValueError) as e:
                self.protocol_error(f"{raw.name}: {e}")
            except _TooLarge as e:
                self.send_error(raw, ECA_TOLARGE, str(e))
            except Exception:
                _log.exception("%s: error handling CA %s; closing the circuit", self.peer, raw.name)
                self.abort()

    def fast_read(self, data: bytes) -> bool:
        """A lone READ_NOTIFY (what a client polling one PV sends) answered from the view's
        encode cache, without framing, verdicts or locks.  Only when the general path would
        send exactly the same reply: nothing else buffered, a known channel, the current
        snapshot already encoded for this (type, count) with success, the count in range.
        False: the general path handles it."""
        reader = self.reader
        if reader.pending or reader.skipping:
            return False
        cmd, size, dtype, count, sid, ioid = _HDR_UNPACK(data)
        ch = self.chans.get(sid)
        if cmd != READ_NOTIFY or size or ch is None:
            return False
        view = ch.view
        snap = view.last  # one attribute read: this post's view or the next one's
        if snap is None or view.enc_snap is not snap:
            return False
        enc = view.enc.get((dtype, count))
        if enc is None or enc[2] != ECA_NORMAL or count > max(ch.count, snap.count):
            return False
        payload, n, status = enc
        if len(payload) > _FAST_READ_BYTES:  # arrays: the general path (limits, extended headers)
            return False
        self.send(READ_NOTIFY, payload, dtype, n, status, ioid)
        return True

    def protocol_error(self, text: str) -> None:
        _log.warning("%s: CA protocol error, closing the circuit: %s", self.peer, text)
        self.abort()

    def close_after_flush(self) -> None:
        if self.transport is not None:
            self.flush()
            self.transport.close()
        self.cleanup()

    def cleanup(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.server.circuits.discard(self)
        for sub in list(self.subs.values()):
            sub.chan.view.remove(sub)
        self.subs.clear()
        self.held.clear()
        for op in list(self.puts):
            sop, op.sop = op.sop, None
            if sop is not None:
                sop._cancelled()
        self.puts.clear()
        for ch in list(self.chans.values()):
            ch.pv._detach(ch)
        self.chans.clear()
        self.out.clear()

    # -- dispatch ---------------------------------------------------------------------------

    def handle(self, raw: RawMessage) -> None:
        verdict = self.state.receive(raw)
        action = verdict.action
        if action is not Action.ACCEPT:
            self.apply(raw, verdict)
            return
        h = _HANDLERS.get(raw.command)
        if h is not None:
            h(self, raw)

    def apply(self, raw: RawMessage, verdict: Verdict) -> None:
        """Act on a verdict other than ACCEPT."""
        action = verdict.action
        if action is Action.IGNORE:
            return
        if action in (Action.ERROR, Action.ERROR_CLOSE):
            self.send_error(raw, verdict.status, verdict.text)
        if action in (Action.CLOSE, Action.ERROR_CLOSE):
            _log.warning("%s: closing the CA circuit: %s (%s)", self.peer, verdict.text, raw.name)
            self.close_after_flush()

    def on_echo(self, raw: RawMessage) -> None:
        self.write_parts(raw.encode())

    def on_nothing(self, raw: RawMessage) -> None:
        pass  # VERSION, CLIENT_NAME, HOST_NAME: ServerCircuit took what they carry

    def on_search(self, raw: RawMessage) -> None:
        """A TCP search (name-server use, minor ≥ 12): RSRV's payload-less reply, or
        NOT_FOUND when the client asked for one."""
        req = C.SearchRequest.from_raw(raw)
        if self.server.lookup(req.name):
            self.send(SEARCH, _EMPTY, self.server.tcp_port, 0, ANY_ADDRESS, req.cid)
        elif req.reply == DO_REPLY:
            self.send_command(C.NotFoundResponse.for_search(req))

    def on_create_chan(self, raw: RawMessage) -> None:
        if raw.payload_size <= 1:
            return  # RSRV ignores an empty name
        self.creates += 1
        if not self.creates & 7:
            # searches first: a client connecting many channels sends its next search
            # datagram while we create the channels of the last one, and waits for its reply
            # (RSRV answers UDP in a thread of its own)
            self.server.drain_udp()
        req = C.CreateChanRequest.from_raw(raw)
        name = req.name
        pv = None
        if 0 < len(name) <= MAX_PV_NAME_SIZE:
            try:
                pv = self.server.make_channel(name, self.peer)
            except Exception:
                _log.exception("makeChannel(%r)", name)
        if pv is None:
            self.send_command(C.create_chan_failure(self.state.client_minor, raw))
            return
        if pv._type is None:  # not open yet: answer when it opens
            conn = self

            def opened() -> None:
                conn.call_in_loop(conn.finish_create, raw, name, pv)

            if not pv._when_open(opened):
                return
        self.finish_create(raw, name, pv)

    def finish_create(self, raw: RawMessage, name: str, pv: Any) -> None:
        if self.closed:
            return
        # ``NAME.$`` is the long-string view, unless a PV has that very name
        long_string = split_long_string_name(name)[1] and not self.server.lookup_exact(name)
        T = pv._type
        kind = None
        if T is not None:
            kind = camap.long_string_type(T) if long_string else camap.ca_view_type(T)
        if kind is None:
            self.send_command(C.create_chan_failure(self.state.client_minor, raw))
            return
        if kind.array and kind.max_count is None and pv.max_length is not None:
            kind = replace(kind, max_count=pv.max_length)
        with pv._lock:  # (the count is all we need of the Value: no copy)
            V = pv._V
            count = 0 if V is None else camap.native_count(kind, V)
        if V is None:
            self.send_command(C.create_chan_failure(self.state.client_minor, raw))
            return
        view = _view_for(pv, kind, self.loop)
        sid = self.server.next_sid()
        ch = _Chan(self, sid, raw.parameter1, name, pv, view, count)
        ch.access = ACCESS_READ_WRITE if pv._writable() else ACCESS_READ
        self.chans[sid] = ch
        self.state.channel_created()
        minor = self.state.client_minor
        if minor >= 9 and count < 0xFFFF:  # every modern client: the two headers directly
            self.write_parts(
                _HDR_PACK(ACCESS_RIGHTS, 0, 0, 0, ch.cid, ch.access),
                _HDR_PACK(CREATE_CHAN, 0, int(kind.native), count, ch.cid, sid),
            )
        else:
            for msg in C.create_chan_replies(minor, ch.cid, sid, int(kind.native), count, ch.access):
                self.send_command(msg)
        pv._attach(ch)

    def check(self, cmd: C.Command, ch: _Chan | None, **kws: Any) -> Verdict:
        return check_operation(
            cmd,
            sid_known=ch is not None,
            writable=ch is not None and bool(ch.access & 2),
            **kws,
        )

    def encode_for(
        self, snap: camap.CASnapshot, data_type: int, count: int, ch: _Chan
    ) -> tuple[bytes, int, int]:
        """A read reply / update of ``snap``, encoded once per (type, count) and snapshot;
        ECA_BADCOUNT for counts beyond what the channel has (a bound on what a request may
        make us allocate), ECA_TOLARGE beyond EPICS_CA_MAX_ARRAY_BYTES."""
        if count > max(ch.count, snap.count):
            return b"", count, ECA_BADCOUNT
        view = ch.view
        if view.enc_snap is not snap:
            view.enc_snap = snap
            view.enc = {}
        key = (data_type, count)
        enc = view.enc.get(key)
        if enc is None:
            # DBR_CLASS_NAME: an IOC sends the record type; a PV's nearest equivalent is its type id
            T = ch.pv._type
            cls = T.getID() if data_type == D.CLASS_NAME and T is not None else ""
            enc = view.enc[key] = encode_update(snap, data_type, count, cls)
        if self.max_payload is not None and len(enc[0]) > self.max_payload:
            return b"", enc[1], ECA_TOLARGE
        return enc

    def first_read(self, ch: _Chan, data_type: int, count: int) -> tuple[bytes, int, int] | None:
        """A plain, non-STRING read of a numeric view that no read has touched since the last
        post: the reply encoded from the value alone, byte for byte what :meth:`encode_for`
        sends (:func:`encode_update` of a plain type uses no metadata), without computing
        and caching a snapshot.  None: the general path (the next read of the view computes
        the snapshot, so a PV read over and over is served from its encode cache).

        Why: a client connecting 1000 channels and reading each once (an archiver, a
        display, W1 of the benchmark) paid for 1000 snapshots whose alarm, time and
        metadata it did not ask for: half the cost of each of those reads."""
        view = ch.view
        if view.last is not None or view.peeked or not 0 < data_type <= _LAST_PLAIN or not view.kind.numeric:
            return None
        pv = ch.pv
        with pv._lock:
            V = pv._V
            if V is None or view.last is not None:
                return None
            value = camap.ca_value(V, view.kind)
            view.peeked = True
        n = len(value)
        native = int(view.kind.native)
        if data_type == native and n and (count == n or not count):
            # the value as it is, in wire byte order: read_payload's whole work in this case
            enc = (value.astype(D.NATIVE_DTYPES[native]).tobytes(), n, ECA_NORMAL)
        elif count > max(ch.count, n):
            return None  # ECA_BADCOUNT: the general path
        else:
            enc = read_payload(data_type, count, native, value, None, as_buffer=True)
        if self.max_payload is not None and len(enc[0]) > self.max_payload:
            return None  # ECA_TOLARGE: the general path
        return enc

    def on_read(self, raw: RawMessage) -> None:
        notify = raw.command == READ_NOTIFY
        ch = self.chans.get(raw.parameter1)
        if ch is None or not D.is_valid_type(raw.data_type):
            # what check_operation refuses (a known channel and a valid type it accepts: the
            # commonest case skips building the request)
            req: C.Command = C.ReadNotifyRequest.from_raw(raw) if notify else C.ReadRequest.from_raw(raw)
            verdict = self.check(req, ch)
            if verdict.action is not Action.ACCEPT:
                if verdict.action is Action.REPLY and ch is not None and notify:
                    self.send(
                        READ_NOTIFY, _EMPTY, raw.data_type, raw.data_count, verdict.status, raw.parameter2
                    )
                else:
                    self.apply(raw, verdict)
                return
        assert ch is not None
        enc = self.first_read(ch, raw.data_type, raw.data_count)
        if enc is None:
            snap = ch.view.snapshot()
            if snap is None:
                self.send_error(raw, ECA_INTERNAL, "PV closed")
                return
            enc = self.encode_for(snap, raw.data_type, raw.data_count, ch)
        payload, n, status = enc
        if status in (ECA_BADCOUNT, ECA_TOLARGE) and not payload:
            self.send_error(raw, status, "server unable to load read response")
            return
        if notify:
            self.send(READ_NOTIFY, payload, raw.data_type, n, status, raw.parameter2)
        elif status != ECA_NORMAL:
            self.send_error(raw, status, "read failed")
        else:
            self.send(READ, payload, raw.data_type, n, ch.cid, raw.parameter2)

    def on_write(self, raw: RawMessage) -> None:
        notify = raw.command == WRITE_NOTIFY
        ch = self.chans.get(raw.parameter1)
        dtype = raw.data_type
        if not (
            # what check_operation accepts, tested without building the request: a plain
            # numeric type, enough bytes for the count, write access
            ch is not None
            and ch.access & 2
            and 0 < dtype <= _LAST_PLAIN
            and len(raw.payload) >= raw.data_count * D.DBR[dtype].value_size
        ):
            req: C.Command = C.WriteNotifyRequest.from_raw(raw) if notify else C.WriteRequest.from_raw(raw)
            verdict = self.check(req, ch)
            if verdict.action is not Action.ACCEPT:
                if verdict.action is Action.REPLY:
                    dtype = 0xEFEF if verdict.status == ECA_BADTYPE else raw.data_type
                    self.send(WRITE_NOTIFY, _EMPTY, dtype, raw.data_count, verdict.status, raw.parameter2)
                else:
                    self.apply(raw, verdict)
                return
        assert ch is not None
        status, text = ECA_PUTFAIL, ""
        V = None
        try:
            values, _ = D.decode(raw.data_type, raw.payload, raw.data_count)
            T = ch.pv._type
            if T is None:
                raise camap.CAPutError("PV closed")
            kind = ch.view.kind
            # the current view only matters for a string written to an enum (its choices)
            current = ch.view.snapshot() if kind.code == "enum" else None
            V = camap.ca_put_to_value(T, kind, values, raw.data_type, current)
        except camap.CAPutError as e:
            status = getattr(_status, e.eca_name, ECA_PUTFAIL)
            text = str(e)
        except CADecodeError as e:
            status, text = ECA_BADCOUNT, str(e)
        if V is None:
            _log.info("%s: CA put to %s refused: %s", self.peer, ch.name, text)
            if notify:
                self.send(WRITE_NOTIFY, _EMPTY, raw.data_type, raw.data_count, status, raw.parameter2)
            else:
                self.send_error(raw, status, text)
            return
        from ..server.raw import ServerOperation

        op = _PutOp(self, ch, raw, notify)
        sop = ServerOperation(op, ch.name, V, None)
        op.sop = sop
        self.puts.add(op)
        ch.pv._put(sop)

    def on_event_add(self, raw: RawMessage) -> None:
        req = C.EventAddRequest.from_raw(raw)
        ch = self.chans.get(raw.parameter1)
        verdict = self.check(req, ch)
        if verdict.action is not Action.ACCEPT:
            if verdict.action is Action.REPLY and ch is not None:
                self.send(EVENT_ADD, _EMPTY, raw.data_type, raw.data_count, verdict.status, raw.parameter2)
            else:
                self.apply(raw, verdict)
            return
        assert ch is not None
        subid = req.subscription_id
        old = self.subs.pop(subid, None)
        if old is not None:  # a reused id replaces the subscription (libca never does this)
            if old.chan.subs:
                old.chan.subs.discard(subid)
            old.chan.view.remove(old)
        sub = _Sub(self, ch, subid, req.data_type, req.data_count, req.mask & _DBE_ALL)
        self.subs[subid] = sub
        if ch.subs is None:
            ch.subs = {subid}
        else:
            ch.subs.add(subid)
        first = ch.view.add(sub)
        if first is not None:
            sub.push(first)

    def on_event_cancel(self, raw: RawMessage) -> None:
        req = C.EventCancelRequest.from_raw(raw)
        ch = self.chans.get(raw.parameter1)
        sub = self.subs.get(req.subscription_id)
        known = sub is not None and sub.chan is ch
        verdict = self.check(req, ch, subscription_known=known)
        if verdict.action is not Action.ACCEPT:
            self.apply(raw, verdict)
            return
        assert sub is not None and ch is not None
        self.drop_sub(sub)
        self.send(EVENT_ADD, _EMPTY, sub.data_type, sub.count, ch.sid, sub.subid)

    def drop_sub(self, sub: _Sub) -> None:
        self.subs.pop(sub.subid, None)
        if sub.chan.subs:
            sub.chan.subs.discard(sub.subid)
        sub.chan.view.remove(sub)
        self.held.discard(sub)
        sub.latest = None

    def on_events_off(self, raw: RawMessage) -> None:
        self.events_on = False

    def on_events_on(self, raw: RawMessage) -> None:
        self.events_on = True
        self.release_held()

    def on_read_sync(self, raw: RawMessage) -> None:
        self.write_parts(raw.encode())

    def on_clear(self, raw: RawMessage) -> None:
        req = C.ClearChannelRequest.from_raw(raw)
        ch = self.chans.get(req.sid)
        verdict = self.check(req, ch)
        if verdict.action is not Action.ACCEPT:
            self.apply(raw, verdict)
            return
        assert ch is not None
        self.forget_chan(ch)
        self.send(CLEAR_CHANNEL, _EMPTY, 0, 0, req.sid, req.cid)

    def forget_chan(self, ch: _Chan) -> None:
        del self.chans[ch.sid]
        self.state.channel_cleared()
        for subid in list(ch.subs or ()):
            sub = self.subs.get(subid)
            if sub is not None:
                self.drop_sub(sub)
        ch.pv._detach(ch)

    def chan_closed(self, ch: _Chan) -> None:
        """(loop) the PV behind ``ch`` was closed: SERVER_DISCONN, the client searches again."""
        if self.closed or self.chans.get(ch.sid) is not ch:
            return
        self.forget_chan(ch)
        self.send(SERVER_DISCONN, _EMPTY, 0, 0, ch.cid, 0)

    def send_update(self, sub: _Sub, enc: tuple[bytes, int, int]) -> None:
        payload, n, status = enc
        try:
            if status in (ECA_BADCOUNT, ECA_TOLARGE) and not payload:
                raise _TooLarge("server unable to load subscription update response")
            self.send(EVENT_ADD, payload, sub.data_type, n, status, sub.subid)
        except _TooLarge as e:
            request = RawMessage(EVENT_ADD, 16, sub.data_type, sub.count, sub.chan.sid, sub.subid)
            self.send_error(request, status if status != ECA_NORMAL else ECA_TOLARGE, str(e))


class _TooLarge(Exception):
    """A reply the client cannot receive (extended header before minor 9)."""


_HANDLERS: dict[int, Callable[[_Circuit, RawMessage], None]] = {
    VERSION: _Circuit.on_nothing,
    CLIENT_NAME: _Circuit.on_nothing,
    HOST_NAME: _Circuit.on_nothing,
    ECHO: _Circuit.on_echo,
    SEARCH: _Circuit.on_search,
    CREATE_CHAN: _Circuit.on_create_chan,
    READ_NOTIFY: _Circuit.on_read,
    READ: _Circuit.on_read,
    WRITE: _Circuit.on_write,
    WRITE_NOTIFY: _Circuit.on_write,
    EVENT_ADD: _Circuit.on_event_add,
    EVENT_CANCEL: _Circuit.on_event_cancel,
    EVENTS_OFF: _Circuit.on_events_off,
    EVENTS_ON: _Circuit.on_events_on,
    READ_SYNC: _Circuit.on_read_sync,
    CLEAR_CHANNEL: _Circuit.on_clear,
}


# ================================================================================================
# UDP: search and beacons
# ================================================================================================


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: CAServer, sock: socket.socket):
        self.server = server
        self.sock = sock
        self.transport: asyncio.DatagramTransport | None = None
        self.reply_via: _Udp = self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        try:
            self.server.on_datagram(data, addr, self)
        except Exception:
            _log.exception("CA search datagram from %s:%d", addr[0], addr[1])

    def error_received(self, exc: Exception) -> None:
        _rl("udp-error", logging.DEBUG, "CA UDP error: %s", exc)


def _udp_socket(host: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setblocking(False)
        _set_reuse(s)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.bind((host, port))
    except BaseException:
        s.close()
        raise
    return s


class CAServer:
    """The CA network side of one Server: TCP listeners, circuits, UDP search and beacons.

    ``lookup(name) -> bool`` answers searches (the caller decides whether the PV has a CA
    view); ``make_channel(name, peer) -> SharedPV | None`` finds the PV of a channel name
    (``NAME.$`` included); ``lookup_exact(name)`` tells whether a name with a ``.$`` suffix is
    a PV of its own.  All are called in the loop."""

    def __init__(
        self,
        config: CAServerConfig,
        lookup: Callable[[str], bool],
        make_channel: Callable[[str, str], Any],
        loop: asyncio.AbstractEventLoop,
        lookup_exact: Callable[[str], bool] | None = None,
    ):
        self.config = config
        self.lookup = lookup
        self.make_channel = make_channel
        self.lookup_exact = lookup_exact or (lambda name: False)
        self.loop = loop
        self.thread_id = 0
        self.circuits: set[_Circuit] = set()
        self.listeners: list[Listener | asyncio.Server] = []
        self.udp: list[tuple[asyncio.DatagramTransport, _Udp]] = []
        self.tcp_port = 0
        self.udp_port = 0
        self._sid = 0
        self._beacon_id = 0
        self._beacons_sent = 0
        self._beacon_gap = 0.02
        self._beacon_timer: asyncio.Handle | None = None
        self._beacon_dests: list[tuple[str, int]] = []

    def next_sid(self) -> int:
        self._sid = (self._sid + 1) & 0xFFFFFFFF
        return self._sid

    async def start(self) -> CAServerConfig:
        """Bind TCP and UDP; returns the config with the ports actually bound."""
        self.thread_id = threading.get_ident()
        cfg = self.config
        for attempt in range(20):
            try:
                await self._bind(cfg.port)
                break
            except _PortTaken:
                await self._close_sockets()
                if cfg.port != 0 or attempt == 19:
                    raise OSError(errno.EADDRINUSE, "no free port for both CA TCP and UDP") from None
        if cfg.beacon_port == 0:
            # isolated: a repeater port of our own, so clients given conf() never register
            # with (or hear beacons through) the host's shared caRepeater
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((cfg.interfaces[0], 0))
                cfg = self.config = replace(cfg, beacon_port=s.getsockname()[1])
        self._beacon_dests = beacon_destinations(cfg, cfg.beacon_port)  # type: ignore[arg-type]
        if self._beacon_dests:
            self._beacon_timer = self.loop.call_soon(self._beacon)
        return cfg.with_ports(self.tcp_port, self.udp_port)

    async def _bind(self, port: int) -> None:
        cfg = self.config
        tcp_port = port
        for i, host in enumerate(cfg.interfaces):
            try:
                srv = await serve_tcp(self.loop, lambda: _Circuit(self), host, tcp_port)
            except OSError as e:
                if e.errno != errno.EADDRINUSE or i > 0 or port == 0:
                    raise
                # RSRV: another server has the TCP port; take an ephemeral one, advertised in
                # search replies and beacons, and share the UDP port
                _log.warning("CA TCP port %d on %s is in use; using a random port", port, host)
                srv = await serve_tcp(self.loop, lambda: _Circuit(self), host, 0)
            self.listeners.append(srv)
            if i == 0:
                tcp_port = srv.sockets[0].getsockname()[1]
        self.tcp_port = tcp_port
        udp_port = port or tcp_port  # a random port: the same number for UDP, as RSRV has
        binds: list[tuple[str, str]] = []  # (address to bind, the interface it belongs to)
        ifaces = None
        for host in cfg.interfaces:
            binds.append((host, host))
            if host == "0.0.0.0":
                continue
            # a socket bound to a unicast address never sees broadcasts: bind the interface's
            # broadcast address too (127.255.255.255 for loopback), so that a broadcast search
            # reaches every server sharing the port even though a unicast one reaches only one
            if host.startswith("127."):
                bcasts = ["127.255.255.255"]
            else:
                if ifaces is None:
                    ifaces = ipv4_interfaces()
                bcasts = [i.bcast for i in ifaces if i.addr == host and i.bcast]
            binds.extend((b, host) for b in bcasts if all(b != x for x, _ in binds))
        by_host: dict[str, _Udp] = {}
        for host, owner in binds:
            try:
                sock = _udp_socket(host, udp_port)
            except OSError as e:
                if port == 0 and e.errno == errno.EADDRINUSE:
                    raise _PortTaken() from None
                raise
            tr, proto = await self.loop.create_datagram_endpoint(
                functools.partial(_Udp, self, sock), sock=sock
            )
            # replies leave through the interface's own socket: a real source address
            proto.reply_via = by_host.get(owner, proto)
            by_host.setdefault(host, proto)
            self.udp.append((tr, proto))  # type: ignore[arg-type]
        self.udp_port = udp_port

    def on_datagram(self, data: bytes, addr: tuple[str, int], proto: _Udp) -> None:
        ignore = self.config.ignore_addrs
        if ignore and any(ip == addr[0] and port in (0, addr[1]) for ip, port in ignore):
            return
        plain = plain_search_datagram(data)
        if plain is not None:  # what libca sends: no message objects
            minor, sequence, names = plain
            out = plain_search_reply(
                minor, sequence, self.tcp_port, [cid for name, cid in names if self.found(name)]
            )
        else:
            try:
                msgs = split_datagram(data)
            except CADecodeError as e:
                _rl("bad-datagram", logging.INFO, "malformed CA datagram from %s:%d: %s", addr[0], addr[1], e)
                return
            version, searches = server_datagram(msgs)
            if version is None or not searches:
                return
            port = self.tcp_port
            replies = [
                C.SearchResponse(port, s.cid, ANY_ADDRESS, MINOR_VERSION)
                for s in searches
                if self.found(s.name)
            ]
            out = search_reply_datagram(version, replies)
        tr = proto.reply_via.transport
        if out and tr is not None:
            tr.sendto(out, addr)

    def drain_udp(self) -> None:
        """Answer the search datagrams already waiting on the UDP sockets (a few per socket),
        ahead of the TCP work in progress."""
        for _, proto in self.udp:
            for _ in range(4):
                try:
                    data, addr = proto.sock.recvfrom(65536)
                except OSError:  # BlockingIOError: nothing waiting (others: the reader's turn)
                    break
                proto.datagram_received(data, addr)

    def found(self, name: str) -> bool:
        """Whether a search for ``name`` gets a reply (a failing lookup: no, and a log line)."""
        try:
            return bool(self.lookup(name))
        except Exception:
            _log.exception("CA search for %r", name)
            return False

    # -- beacons ----------------------------------------------------------------------------

    def _beacon(self) -> None:
        self._beacon_timer = None
        if not self.udp:
            return
        msg = C.Beacon(self.tcp_port, self._beacon_id).encode()
        self._beacons_sent += 1
        if self._beacons_sent >= 2:  # RSRV's ids: 0, 0, 1, 2, ...
            self._beacon_id = (self._beacon_id + 1) & 0xFFFFFFFF
        tr = self.udp[0][0]
        for dest in self._beacon_dests:
            try:
                tr.sendto(msg, dest)
            except OSError as e:
                _rl(f"beacon {dest}", logging.DEBUG, "CA beacon to %s:%d: %s", dest[0], dest[1], e)
        gap = self._beacon_gap
        self._beacon_gap = min(gap * 2, self.config.beacon_period)
        self._beacon_timer = self.loop.call_later(gap, self._beacon)

    # -- shutdown ---------------------------------------------------------------------------

    async def _close_sockets(self) -> None:
        for srv in self.listeners:
            srv.close()
        for srv in self.listeners:
            try:
                await asyncio.wait_for(srv.wait_closed(), 2.0)
            except (asyncio.TimeoutError, Exception):
                pass
        self.listeners.clear()
        for tr, _ in self.udp:
            tr.close()
        self.udp.clear()

    async def close(self) -> None:
        if self._beacon_timer is not None:
            self._beacon_timer.cancel()
            self._beacon_timer = None
        for srv in self.listeners:
            srv.close()
        for c in list(self.circuits):
            c.abort()
        await self._close_sockets()

    def stats(self) -> dict[str, int]:
        return {
            "circuits": len(self.circuits),
            "channels": sum(len(c.chans) for c in self.circuits),
            "subscriptions": sum(len(c.subs) for c in self.circuits),
        }


class _PortTaken(Exception):
    """The random TCP port's number is taken for UDP: try another."""
