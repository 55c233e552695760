"""asyncio PVA client endpoint: discovery, connections, channels and operations.

:class:`ClientContext` runs in one event loop (capva's background loop thread for the thread
Context, the user's loop for the asyncio Context).  It

* searches by UDP (EPICS_PVA_ADDR_LIST, plus interface broadcast addresses when
  EPICS_PVA_AUTO_ADDR_LIST is YES) and by TCP to EPICS_PVA_NAME_SERVERS, with pvxs's
  schedule: a 10 ms batch, then a linear back-off from 1 s to 30 s per channel, and an
  immediate retry when a beacon announces a new or restarted server;
* keeps one TCP connection per server, shared by all channels, with echo keepalive and the
  4/3 x EPICS_PVA_CONN_TMO inactivity timeout (pva-protocol.md §7);
* re-creates channels after a disconnect and re-subscribes monitors.

Operations are coroutines (``get``, ``put``, ``rpc``, ``get_field``) that survive a
reconnect (they restart on the new connection); cancelling the awaiting task cancels the
operation on the wire.  Monitors call a callback in the loop with ``('value', Value)``,
``('disconnected', None)``, ``('error', RemoteError)`` or ``('finished', None)``; the public
Contexts move those to the user's thread or task.
"""

from __future__ import annotations

import asyncio
import getpass
import ipaddress
import itertools
import logging
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

from ..pva import framing as F
from ..pva import messages as M
from ..pva.codec import (
    Status,
    decode_partial,
    decode_status,
    decode_type,
    decode_typed_value,
    encode_partial,
    encode_typed_value,
)
from ..pva.errors import DecodeError
from ..pva.types import Type
from ..pva.value import Value, _clone_value
from .config import ClientConfig

_log = logging.getLogger("capva.client")

__all__ = ["ClientContext", "RemoteError", "Disconnected", "Finished", "Cancelled"]


class RemoteError(RuntimeError):
    """The server failed the operation; the message is the server's."""


class Disconnected(RuntimeError):
    """The channel lost its connection (a monitor delivers this, then values again)."""

    def __init__(self, msg: str = "Disconnected"):
        super().__init__(msg)


class Finished(Disconnected):
    """The server ended a subscription."""

    def __init__(self, msg: str = "Finished"):
        super().__init__(msg)


class Cancelled(RuntimeError):
    """The operation was cancelled."""


_HDR = (struct.Struct("<BBBBI"), struct.Struct(">BBBBI"))
_IIB = (struct.Struct("<IIB"), struct.Struct(">IIB"))
_IB = (struct.Struct("<IB"), struct.Struct(">IB"))
_II = (struct.Struct("<II"), struct.Struct(">II"))
_III = (struct.Struct("<IIBI"), struct.Struct(">IIBI"))

SUB_INIT = 0x08
SUB_DESTROY = 0x10
SUB_GET = 0x40
SUB_GET_PUT = 0x80
SUB_PROCESS = 0x04

_ANY_ADDR = (b"\x00" * 16, b"\x00" * 10 + b"\xff\xff" + b"\x00" * 4)


class _Retry(Exception):
    """Internal: the connection went away under an operation; run it again."""


def _unwrap_addr(addr: bytes, fallback: str) -> str:
    if addr in _ANY_ADDR:
        return fallback
    try:
        ip = ipaddress.IPv6Address(addr)
    except ValueError:
        return fallback
    return str(ip.ipv4_mapped) if ip.ipv4_mapped is not None else str(ip)


class _Channel:
    __slots__ = (
        "ctx",
        "name",
        "cid",
        "conn",
        "sid",
        "waiters",
        "subs",
        "searches",
        "next_search",
        "__weakref__",
    )

    def __init__(self, ctx: ClientContext, name: str, cid: int):
        self.ctx = ctx
        self.name = name
        self.cid = cid
        self.conn: _ClientConn | None = None
        self.sid: int | None = None
        self.waiters: list[asyncio.Future] = []
        self.subs: set[_Monitor] = set()
        self.searches = 0
        self.next_search = 0.0

    @property
    def connected(self) -> bool:
        return self.sid is not None and self.conn is not None and not self.conn.closed

    async def wait_connected(self) -> _ClientConn:
        while not self.connected:
            fut = self.ctx.loop.create_future()
            self.waiters.append(fut)
            self.ctx.want_search(self)
            try:
                await fut
            finally:
                try:
                    self.waiters.remove(fut)
                except ValueError:
                    pass
        assert self.conn is not None
        return self.conn

    def on_connected(self, conn: _ClientConn, sid: int) -> None:
        self.conn = conn
        self.sid = sid
        self.searches = 0
        for w in self.waiters:
            if not w.done():
                w.set_result(None)
        for sub in list(self.subs):
            sub.start_on(conn, self)

    def on_disconnected(self) -> None:
        self.conn = None
        self.sid = None
        for sub in list(self.subs):
            sub.lost()
        if self.waiters or self.subs:
            self.ctx.want_search(self)


class _Op:
    """One operation in flight on a connection: replies are fed to :meth:`on_reply`."""

    __slots__ = ("conn", "ioid", "fut", "type", "stage")

    def __init__(self, conn: _ClientConn, ioid: int):
        self.conn = conn
        self.ioid = ioid
        self.fut: asyncio.Future = conn.loop.create_future()
        self.type: Any = None
        self.stage = 0

    def on_reply(self, subcmd: int, body: Any, pos: int, be: bool) -> None:
        raise NotImplementedError

    def fail(self, exc: BaseException) -> None:
        if not self.fut.done():
            self.fut.set_exception(exc)

    def send_init(self, cmd: int, sid: int, request: Value) -> None:
        """Register this op and send its INIT with the pvRequest."""
        c = self.conn
        c.start_op(self)
        c.send(cmd, _IIB[c.be].pack(sid, self.ioid, SUB_INIT) + encode_typed_value(request, c.be))

    def checked(self, body: Any, pos: int, be: bool) -> int | None:
        """Read a reply's Status: the position after it, or None when the server failed the
        operation (which is then ended with RemoteError)."""
        st, pos = decode_status(body, pos, be)
        if st.ok:
            return pos
        self.conn.ops.pop(self.ioid, None)
        self.fail(RemoteError(st.message))
        return None

    def status(self, body: Any, pos: int, be: bool) -> tuple[Status, int]:
        st, pos = decode_status(body, pos, be)
        return st, pos


class _ClientConn(asyncio.Protocol):
    """One TCP connection to a server (or a name server)."""

    def __init__(self, ctx: ClientContext, addr: tuple[str, int]):
        self.ctx = ctx
        self.loop = ctx.loop
        self.addr = addr
        self.transport: asyncio.Transport | None = None
        self.reader = F.MessageReader(expect_server=True)
        self.be = False
        self.rx_cache: dict = {}
        self.ready = False
        self.closed = False
        self.ready_fut: asyncio.Future = ctx.loop.create_future()
        self.channels: dict[int, _Channel] = {}  # sid -> channel
        self.pending_create: dict[int, _Channel] = {}  # cid -> channel
        self.ops: dict[int, Any] = {}
        self.out: list[bytes] = []
        self.flush_scheduled = False
        self.last_rx = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.methods: list[str] = []
        self.type_memo: dict[bytes, Any] = {}

    def decode_type_memo(self, body: Any, pos: int, be: bool) -> Any:
        """The type description at the end of an INIT reply.  Servers send the same bytes
        for every operation on a PV (pvxs sends the full description each time), so plain
        descriptions are decoded once per connection; ones using the type cache are not
        memoised (their meaning depends on the cache)."""
        raw = bytes(body[pos:])
        T = self.type_memo.get(raw)
        if T is None:
            T, _ = decode_type(body, pos, be, self.rx_cache)
            if (
                raw[:1] == b"\x80"
                and b"\xfd" not in raw
                and b"\xfe" not in raw
                and len(self.type_memo) < 1024
            ):
                self.type_memo[raw] = T
        return T

    # -- plumbing ---------------------------------------------------------------------

    def send(self, cmd: int, body: bytes) -> None:
        if self.closed:
            return
        be = self.be
        self.out.append(_HDR[be].pack(0xCA, 2, 0x80 if be else 0, cmd, len(body)))
        self.out.append(body)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        out, self.out = self.out, []
        if out and self.transport is not None and not self.closed:
            self.transport.write(b"".join(out))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.last_rx = self.loop.time()
        self.timer = self.loop.call_later(self.ctx.echo_period, self._tick)

    def _tick(self) -> None:
        if self.closed:
            return
        idle = self.loop.time() - self.last_rx
        if idle > self.ctx.config.timeout:
            _log.info("%s:%d: no traffic for %.0f s, closing", *self.addr, idle)
            self.abort()
            return
        if self.ready:
            self.send(M.CMD_ECHO, b"")
        self.timer = self.loop.call_later(self.ctx.echo_period, self._tick)

    def data_received(self, data: bytes) -> None:
        self.last_rx = self.loop.time()
        try:
            frames = self.reader.feed(data)
        except DecodeError as e:
            _log.warning("%s:%d: protocol error, closing: %s", *self.addr, e)
            self.abort()
            return
        for fr in frames:
            if self.closed:
                return
            try:
                if fr.flags & 0x01:
                    if fr.command == 2:  # SET_BYTE_ORDER: answer in the server's order
                        self.be = bool(fr.flags & 0x80)
                    continue
                h = _HANDLERS.get(fr.command)
                if h is not None:
                    h(self, fr.body, bool(fr.flags & 0x80))
            except DecodeError as e:
                _log.warning("%s:%d: bad message 0x%02x, closing: %s", *self.addr, fr.command, e)
                self.abort()
                return
            except Exception:
                _log.exception("%s:%d: error handling command 0x%02x", *self.addr, fr.command)
                self.abort()
                return
        if self.out:
            self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cleanup()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._cleanup()

    def _cleanup(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.ready = False
        if self.timer is not None:
            self.timer.cancel()
        if not self.ready_fut.done():
            self.ready_fut.set_exception(ConnectionError(f"connection to {self.addr[0]}:{self.addr[1]} lost"))
            self.ready_fut.exception()  # mark retrieved
        self.ctx.conn_lost(self)
        for op in list(self.ops.values()):
            op.fail(_Retry())
        self.ops.clear()
        chans = list(self.channels.values()) + list(self.pending_create.values())
        self.channels.clear()
        self.pending_create.clear()
        for ch in chans:
            if ch.conn is self or ch.conn is None:
                ch.on_disconnected()

    # -- handshake ----------------------------------------------------------------------

    def on_validation(self, body: Any, be: bool) -> None:
        msg = M.ServerValidation.decode(body, be)
        self.methods = list(msg.methods)
        if "ca" in self.methods:
            from ..pva.types import Type as _T

            auth = Value(
                _T([("user", "s"), ("host", "s")]), {"user": _username(), "host": socket.gethostname()}
            )
            method = "ca"
        else:
            auth = None
            method = "anonymous"
        reply = M.ClientValidation(method, auth).encode(self.be)
        self.send(M.CMD_CONNECTION_VALIDATION, reply)

    def on_validated(self, body: Any, be: bool) -> None:
        st, _ = decode_status(body, 0, be)
        if not st.ok:
            _log.warning("%s:%d: validation: %s", *self.addr, st.message)
        self.ready = True
        if not self.ready_fut.done():
            self.ready_fut.set_result(self)
        for ch in list(self.pending_create.values()):
            self._send_create(ch)

    def on_echo(self, body: Any, be: bool) -> None:
        pass

    # -- channels -----------------------------------------------------------------------

    def create_channel(self, ch: _Channel) -> None:
        self.pending_create[ch.cid] = ch
        ch.conn = self
        if self.ready:
            self._send_create(ch)

    def _send_create(self, ch: _Channel) -> None:
        self.send(M.CMD_CREATE_CHANNEL, M.CreateChannelRequest([(ch.cid, ch.name)]).encode(self.be))

    def on_create_channel(self, body: Any, be: bool) -> None:
        msg = M.CreateChannelResponse.decode(body, be)
        ch = self.pending_create.pop(msg.cid, None)
        if ch is None:
            if msg.status is None or msg.status.ok:  # not wanted any more
                self.send(M.CMD_DESTROY_CHANNEL, _II[self.be].pack(msg.sid, msg.cid))
            return
        if msg.status is not None and not msg.status.ok:
            _log.debug("%s: server refused channel: %s", ch.name, msg.status.message)
            ch.conn = None
            ch.searches = max(ch.searches, 10)  # long delay before the next search
            self.ctx.want_search(ch)
            return
        self.channels[msg.sid] = ch
        ch.on_connected(self, msg.sid)

    def on_destroy_channel(self, body: Any, be: bool) -> None:
        if len(body) < 8:
            raise DecodeError("DESTROY_CHANNEL truncated")
        sid, cid = _II[be].unpack_from(body, 0)
        ch = self.channels.pop(sid, None)
        if ch is not None:  # the server dropped it (PV closed or removed)
            for ioid, op in list(self.ops.items()):
                if getattr(op, "sid", None) == sid:
                    del self.ops[ioid]
                    op.fail(_Retry())
            ch.on_disconnected()

    def drop_channel(self, ch: _Channel) -> None:
        if ch.sid is not None and self.channels.get(ch.sid) is ch:
            del self.channels[ch.sid]
            self.send(M.CMD_DESTROY_CHANNEL, _II[self.be].pack(ch.sid, ch.cid))
        self.pending_create.pop(ch.cid, None)

    # -- operations ---------------------------------------------------------------------

    def start_op(self, op: Any) -> None:
        self.ops[op.ioid] = op

    def destroy_op(self, ioid: int, sid: int) -> None:
        if self.ops.pop(ioid, None) is not None:
            self.send(M.CMD_DESTROY_REQUEST, _II[self.be].pack(sid, ioid))

    def on_op_reply(self, body: Any, be: bool) -> None:
        if len(body) < 5:
            raise DecodeError("operation reply truncated")
        ioid, subcmd = _IB[be].unpack_from(body, 0)
        op = self.ops.get(ioid)
        if op is None:
            return  # e.g. a reply still in flight after we destroyed the op
        op.on_reply(subcmd, body, 5, be)

    def on_get_field(self, body: Any, be: bool) -> None:
        msg = M.GetFieldResponse.decode(body, be, self.rx_cache)
        op = self.ops.pop(msg.ioid, None)
        if op is None:
            return
        if msg.status is not None and not msg.status.ok:
            op.fail(RemoteError(msg.status.message))
        elif not op.fut.done():
            op.fut.set_result(msg.type)

    def on_message(self, body: Any, be: bool) -> None:
        try:
            msg = M.LogMessage.decode(body, be)
        except DecodeError:
            return
        _log.info("%s:%d says: %s", *self.addr, msg.text)

    def on_search_response(self, body: Any, be: bool) -> None:
        msg = M.SearchResponse.decode(body, be)
        peer = self.transport.get_extra_info("peername") if self.transport else None
        self.ctx.on_search_response(msg, self.addr[0], peer[1] if peer else self.addr[1])


_HANDLERS: dict[int, Callable[[_ClientConn, Any, bool], None]] = {
    M.CMD_CONNECTION_VALIDATION: _ClientConn.on_validation,
    M.CMD_CONNECTION_VALIDATED: _ClientConn.on_validated,
    M.CMD_ECHO: _ClientConn.on_echo,
    M.CMD_CREATE_CHANNEL: _ClientConn.on_create_channel,
    M.CMD_DESTROY_CHANNEL: _ClientConn.on_destroy_channel,
    M.CMD_GET: _ClientConn.on_op_reply,
    M.CMD_PUT: _ClientConn.on_op_reply,
    M.CMD_MONITOR: _ClientConn.on_op_reply,
    M.CMD_RPC: _ClientConn.on_op_reply,
    M.CMD_GET_FIELD: _ClientConn.on_get_field,
    M.CMD_MESSAGE: _ClientConn.on_message,
    M.CMD_SEARCH_RESPONSE: _ClientConn.on_search_response,
}


def _username() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


# -- request/response operations --------------------------------------------------------------


class _GetOp(_Op):
    __slots__ = ("sid",)

    def __init__(self, conn: _ClientConn, ioid: int, sid: int, request: Value):
        super().__init__(conn, ioid)
        self.sid = sid
        self.send_init(M.CMD_GET, sid, request)

    def on_reply(self, subcmd: int, body: Any, pos: int, be: bool) -> None:
        p = self.checked(body, pos, be)
        if p is None:
            return
        pos = p
        if subcmd & SUB_INIT:
            self.type = self.conn.decode_type_memo(body, pos, be)
            c = self.conn
            c.send(M.CMD_GET, _IIB[c.be].pack(self.sid, self.ioid, SUB_DESTROY))
        else:
            self.conn.ops.pop(self.ioid, None)
            V, _ = decode_partial(self.type, body, pos, be, self.conn.rx_cache)
            if not self.fut.done():
                self.fut.set_result(V)


class _PutOp(_Op):
    __slots__ = ("sid", "builder", "get")

    def __init__(self, conn: _ClientConn, ioid: int, sid: int, request: Value, builder: Callable, get: bool):
        super().__init__(conn, ioid)
        self.sid = sid
        self.builder = builder
        self.get = get
        self.send_init(M.CMD_PUT, sid, request)

    def on_reply(self, subcmd: int, body: Any, pos: int, be: bool) -> None:
        p = self.checked(body, pos, be)
        if p is None:
            return
        pos = p
        c = self.conn
        if subcmd & SUB_INIT:
            self.type = c.decode_type_memo(body, pos, be)
            if self.get:
                c.send(M.CMD_PUT, _IIB[c.be].pack(self.sid, self.ioid, SUB_GET))
                return
            self._put(Value(self.type))
        elif subcmd & SUB_GET:
            V, _ = decode_partial(self.type, body, pos, be, c.rx_cache)
            V.unmark()
            self._put(V)
        else:
            c.ops.pop(self.ioid, None)
            if not self.fut.done():
                self.fut.set_result(None)

    def _put(self, V: Value) -> None:
        c = self.conn
        try:
            R = self.builder(V)
            if R is not None:
                V = R
        except Exception as e:
            c.destroy_op(self.ioid, self.sid)
            self.fail(e)
            return
        c.send(M.CMD_PUT, _IIB[c.be].pack(self.sid, self.ioid, SUB_DESTROY) + encode_partial(V, c.be))


class _RpcOp(_Op):
    __slots__ = ("sid", "arg")

    def __init__(self, conn: _ClientConn, ioid: int, sid: int, request: Value, arg: Value | None):
        super().__init__(conn, ioid)
        self.sid = sid
        self.arg = arg
        self.send_init(M.CMD_RPC, sid, request)

    def on_reply(self, subcmd: int, body: Any, pos: int, be: bool) -> None:
        p = self.checked(body, pos, be)
        if p is None:
            return
        pos = p
        c = self.conn
        if subcmd & SUB_INIT:
            c.send(
                M.CMD_RPC,
                _IIB[c.be].pack(self.sid, self.ioid, SUB_DESTROY) + encode_typed_value(self.arg, c.be),
            )
        else:
            c.ops.pop(self.ioid, None)
            R, _ = decode_typed_value(body, pos, be, c.rx_cache) if pos < len(body) else (None, pos)
            if not self.fut.done():
                self.fut.set_result(R)


class _GetFieldOp(_Op):
    __slots__ = ("sid",)

    def __init__(self, conn: _ClientConn, ioid: int, sid: int, subfield: str):
        super().__init__(conn, ioid)
        self.sid = sid
        conn.start_op(self)
        conn.send(M.CMD_GET_FIELD, M.GetFieldRequest(sid, ioid, subfield).encode(conn.be))


# -- monitors -------------------------------------------------------------------------------------


class _Monitor:
    """A subscription that outlives connections: it (re)starts whenever its channel
    connects and reports value / disconnected / error / finished events to ``cb``."""

    __slots__ = (
        "ctx",
        "ch",
        "request",
        "cb",
        "pipeline",
        "qsize",
        "conn",
        "ioid",
        "sid",
        "type",
        "V",
        "closed",
        "unacked",
        "__weakref__",
    )

    def __init__(
        self, ctx: ClientContext, ch: _Channel, request: Value, cb: Callable, pipeline: bool, qsize: int
    ):
        self.ctx = ctx
        self.ch = ch
        self.request = request
        self.cb = cb
        self.pipeline = pipeline
        self.qsize = qsize
        self.conn: _ClientConn | None = None
        self.ioid = 0
        self.sid = 0
        self.type: Type | None = None
        self.V: Value | None = None
        self.closed = False
        self.unacked = 0

    def start_on(self, conn: _ClientConn, ch: _Channel) -> None:
        if self.closed:
            return
        assert ch.sid is not None
        self.conn = conn
        self.sid = ch.sid
        self.ioid = self.ctx.next_ioid()
        self.V = None
        self.unacked = 0
        conn.ops[self.ioid] = self
        be = conn.be
        if self.pipeline:
            payload = _IIB[be].pack(self.sid, self.ioid, SUB_INIT | SUB_GET_PUT) + encode_typed_value(
                self.request, be
            )
            payload += struct.pack(">I" if be else "<I", self.qsize)
        else:
            payload = _IIB[be].pack(self.sid, self.ioid, SUB_INIT) + encode_typed_value(self.request, be)
        conn.send(M.CMD_MONITOR, payload)

    def on_reply(self, subcmd: int, body: Any, pos: int, be: bool) -> None:
        conn = self.conn
        assert conn is not None
        if subcmd & SUB_INIT:
            st, pos = decode_status(body, pos, be)
            if not st.ok:
                conn.ops.pop(self.ioid, None)
                self.closed = True
                self.ch.subs.discard(self)
                self.cb("error", RemoteError(st.message))
                return
            self.type = conn.decode_type_memo(body, pos, be)
            conn.send(M.CMD_MONITOR, _IIB[conn.be].pack(self.sid, self.ioid, SUB_GET | SUB_PROCESS))
            return
        if subcmd & SUB_DESTROY:
            conn.ops.pop(self.ioid, None)
            st, pos = decode_status(body, pos, be)
            self.closed = True
            self.ch.subs.discard(self)
            self.cb("finished" if st.ok else "error", None if st.ok else RemoteError(st.message))
            return
        if pos >= len(body) or self.type is None:
            return  # notify-only update (pvAccessCPP)
        V = self.V
        if V is None:
            V, pos = decode_partial(self.type, body, pos, be, conn.rx_cache)
            self.V = V
        else:
            V, pos = decode_partial(self.type, body, pos, be, conn.rx_cache, into=V)
        if self.pipeline:
            self.unacked += 1
            if self.unacked >= max(1, self.qsize // 2):
                conn.send(M.CMD_MONITOR, _III[conn.be].pack(self.sid, self.ioid, SUB_GET_PUT, self.unacked))
                self.unacked = 0
        self.cb("value", _clone_value(V))

    def fail(self, exc: BaseException) -> None:
        pass  # connection loss is reported through lost()

    def lost(self) -> None:
        if self.conn is not None:
            self.conn.ops.pop(self.ioid, None)
        self.conn = None
        self.V = None
        if not self.closed:
            self.cb("disconnected", None)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.ch.subs.discard(self)
        conn = self.conn
        if conn is not None and not conn.closed and conn.ops.pop(self.ioid, None) is not None:
            conn.send(M.CMD_DESTROY_REQUEST, _II[conn.be].pack(self.sid, self.ioid))
        self.ctx.maybe_forget(self.ch)


# -- the context --------------------------------------------------------------------------------------


class _SearchProtocol(asyncio.DatagramProtocol):
    def __init__(self, ctx: ClientContext, beacons: bool = False):
        self.ctx = ctx
        self.beacons = beacons

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        try:
            frames = F.split_datagram(data)
        except DecodeError:
            return
        if self.beacons and any(fr.command == M.CMD_SEARCH and not fr.flags & 0x40 for fr in frames):
            self.ctx.forward_search(frames, addr[0])
            return
        for fr in frames:
            try:
                if fr.command == M.CMD_SEARCH_RESPONSE and fr.flags & 0x40:
                    msg = M.SearchResponse.decode(fr.body, bool(fr.flags & 0x80))
                    self.ctx.on_search_response(msg, addr[0], None)
                elif fr.command == M.CMD_BEACON and fr.flags & 0x40:
                    msg = M.Beacon.decode(fr.body, bool(fr.flags & 0x80))
                    self.ctx.on_beacon(msg, addr[0])
            except DecodeError:
                continue


class ClientContext:
    """See the module docstring.  Create, ``await start()``, use, ``await close()``."""

    echo_period = 15.0

    def __init__(self, config: ClientConfig, loop: asyncio.AbstractEventLoop | None = None):
        self.config = config
        self.loop = loop or asyncio.get_event_loop()
        self.channels: dict[str, _Channel] = {}
        self.by_cid: dict[int, _Channel] = {}
        self.conns: dict[tuple[str, int], _ClientConn] = {}
        self.name_conns: dict[tuple[str, int], _ClientConn] = {}
        self._cids = itertools.count(0x12345678)
        self._ioids = itertools.count(0x10002000)
        self._search_set: set[_Channel] = set()
        self._search_handle: asyncio.TimerHandle | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._beacon_udp: asyncio.DatagramTransport | None = None
        self._group_tx: socket.socket | None = None
        self._dests: list[tuple[tuple[str, int], bool]] = []
        self._servers: dict[tuple[str, int], bytes] = {}
        self._last_poke = 0.0
        self._seq = 0x66696E64
        self.closed = False

    async def start(self) -> None:
        cfg = self.config
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.bind(("0.0.0.0", 0))
        sock.setblocking(False)
        self._udp, _ = await self.loop.create_datagram_endpoint(lambda: _SearchProtocol(self), sock=sock)
        self._dests = self._destinations()
        # beacons: listen on the broadcast port, shared with servers on this host
        try:
            bs = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            bs.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                bs.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            bs.bind(("0.0.0.0", cfg.udp_port))
            bs.setblocking(False)
            self._beacon_udp, _ = await self.loop.create_datagram_endpoint(
                lambda: _SearchProtocol(self, beacons=True), sock=bs
            )
            gs = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            gs.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
            gs.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            gs.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            gs.setblocking(False)
            self._group_tx = gs
        except OSError as e:
            _log.debug("not listening for beacons on port %d: %s", cfg.udp_port, e)
        for addr in cfg.name_servers:
            self._connect_name_server(addr)
        self._tick_handle = self.loop.call_later(1.0, self._tick)

    def forward_search(self, frames: list, src_ip: str) -> None:
        """A unicast SEARCH meant for a server on this host reached our beacon socket (they
        share the port and the kernel picks one socket): pass it on to every local server
        through the loopback group with an ORIGIN_TAG, as pvxs clients and servers do (§6.4)."""
        gs = self._group_tx
        if gs is None:
            return
        tag = b"\x00" * 10 + b"\xff\xff" + socket.inet_aton("127.0.0.1")
        parts = [F.encode_frame(M.CMD_ORIGIN_TAG, tag, be=True, server=False)]
        for fr in frames:
            if fr.command != M.CMD_SEARCH or len(fr.body) < 24 or not fr.body[4] & 0x80:
                continue  # only unicast searches are misdelivered; broadcasts reach everyone
            body = bytearray(fr.body)
            body[4] &= 0x7F
            if bytes(body[8:24]) in _ANY_ADDR:
                body[8:24] = b"\x00" * 10 + b"\xff\xff" + socket.inet_aton(src_ip)
            parts.append(F.Frame(fr.version, fr.flags, fr.command, bytes(body), len(body)).encode())
        if len(parts) > 1:
            try:
                gs.sendto(b"".join(parts), ("224.0.0.128", self.config.udp_port))
            except OSError as e:
                _log.debug("search forward failed: %s", e)

    def _destinations(self) -> list[tuple[tuple[str, int], bool]]:
        """(address, unicast flag) for every search destination."""
        cfg = self.config
        out: list[tuple[tuple[str, int], bool]] = []
        bcasts: set[str] = set()
        try:
            from .udp import ipv4_interfaces

            ifaces = ipv4_interfaces()
        except Exception:  # pragma: no cover
            ifaces = []
        for i in ifaces:
            if i.bcast:
                bcasts.add(i.bcast)
        for host, port in cfg.addr_list:
            uni = not (host in bcasts or host == "255.255.255.255" or ipaddress.ip_address(host).is_multicast)
            out.append(((host, port), uni))
        if cfg.auto_addr:
            for b in sorted(bcasts) or ["255.255.255.255"]:
                if ((b, cfg.udp_port), False) not in out:
                    out.append(((b, cfg.udp_port), False))
        return out

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for h in (self._search_handle, self._tick_handle):
            if h is not None:
                h.cancel()
        for c in list(self.conns.values()) + list(self.name_conns.values()):
            c.abort()
        for t in (self._udp, self._beacon_udp):
            if t is not None:
                t.close()
        if self._group_tx is not None:
            self._group_tx.close()
            self._group_tx = None
        for ch in self.channels.values():
            for w in ch.waiters:
                if not w.done():
                    w.set_exception(Cancelled("context closed"))

    # -- ids and channels -------------------------------------------------------------------

    def next_ioid(self) -> int:
        return next(self._ioids) & 0xFFFFFFFF

    def channel(self, name: str) -> _Channel:
        ch = self.channels.get(name)
        if ch is None:
            if self.closed:
                raise Cancelled("context closed")
            cid = next(self._cids) & 0xFFFFFFFF
            ch = self.channels[name] = _Channel(self, name, cid)
            self.by_cid[cid] = ch
        return ch

    def maybe_forget(self, ch: _Channel) -> None:
        """Keep channels cached (p4p does); dropped only by disconnect()."""

    def disconnect(self, name: str | None = None) -> None:
        names = [name] if name is not None else list(self.channels)
        for n in names:
            ch = self.channels.pop(n, None)
            if ch is None:
                continue
            self.by_cid.pop(ch.cid, None)
            self._search_set.discard(ch)
            for sub in list(ch.subs):
                sub.close()
            if ch.conn is not None:
                ch.conn.drop_channel(ch)
            ch.conn = None
            ch.sid = None

    # -- search -------------------------------------------------------------------------------

    def want_search(self, ch: _Channel) -> None:
        if self.closed or ch.connected or (ch.conn is not None and ch.cid in ch.conn.pending_create):
            return
        if ch not in self._search_set:
            self._search_set.add(ch)
            ch.next_search = 0.0
        if self._search_handle is None:
            self._search_handle = self.loop.call_later(0.01, self._search_now)

    def _tick(self) -> None:
        self._tick_handle = self.loop.call_later(1.0, self._tick)
        self._search_now()

    def _search_now(self) -> None:
        self._search_handle = None
        if self.closed:
            return
        now = self.loop.time()
        due = [ch for ch in self._search_set if ch.next_search <= now and not ch.connected]
        for ch in [c for c in self._search_set if c.connected]:
            self._search_set.discard(ch)
        if not due:
            return
        for ch in due:
            ch.searches += 1
            ch.next_search = now + min(ch.searches, 30)
        batch: list[tuple[int, str]] = []
        size = 0
        for ch in due:
            n = 5 + len(ch.name.encode())
            if batch and size + n > 1400 - 60:
                self._send_search(batch)
                batch, size = [], 0
            batch.append((ch.cid, ch.name))
            size += n
        if batch:
            self._send_search(batch)

    def _send_search(self, names: list[tuple[int, str]]) -> None:
        if self._udp is not None:
            port = self._udp.get_extra_info("sockname")[1]
            for dest, unicast in self._dests:
                msg = M.Search(self._seq, names, port=port, flags=0x80 if unicast else 0)
                data = F.encode_frame(M.CMD_SEARCH, msg.encode(True), be=True, server=False)
                try:
                    self._udp.sendto(data, dest)
                except OSError as e:
                    _log.debug("search to %s failed: %s", dest, e)
        for c in self.name_conns.values():
            if c.ready and not c.closed:
                c.send(M.CMD_SEARCH, M.Search(self._seq, names, port=0, flags=0x80).encode(c.be))

    def on_search_response(self, msg: Any, src_ip: str, tcp_port: int | None) -> None:
        if not msg.found or msg.protocol != "tcp":
            return
        host = _unwrap_addr(msg.addr, src_ip)
        port = msg.port or (tcp_port or 0)
        if not port:
            return
        for cid in msg.cids:
            ch = self.by_cid.get(cid)
            if ch is None or ch.connected or ch not in self._search_set:
                continue
            self._search_set.discard(ch)
            self._connect_channel(ch, (host, port))

    def on_beacon(self, msg: Any, src_ip: str) -> None:
        if msg.protocol != "tcp":
            return
        key = (_unwrap_addr(msg.addr, src_ip), msg.port)
        old = self._servers.get(key)
        self._servers[key] = msg.guid
        if old != msg.guid and self._search_set:
            now = self.loop.time()
            if now - self._last_poke >= 30.0 or old is not None:
                self._last_poke = now
                for ch in self._search_set:  # a new or restarted server: search again now
                    ch.next_search = 0.0
                if self._search_handle is None:
                    self._search_handle = self.loop.call_later(0.01, self._search_now)

    # -- connections ----------------------------------------------------------------------------

    def _connect_channel(self, ch: _Channel, addr: tuple[str, int]) -> None:
        conn = self.conns.get(addr)
        if conn is None or conn.closed:
            conn = self._open(addr, self.conns)
        conn.create_channel(ch)

    def _open(self, addr: tuple[str, int], table: dict) -> _ClientConn:
        conn = _ClientConn(self, addr)
        table[addr] = conn

        async def connect() -> None:
            try:
                await asyncio.wait_for(
                    self.loop.create_connection(lambda: conn, addr[0], addr[1]), self.config.timeout
                )
            except (OSError, asyncio.TimeoutError) as e:
                _log.debug("connect to %s:%d failed: %s", addr[0], addr[1], e)
                conn._cleanup()

        self.loop.create_task(connect())
        return conn

    def _connect_name_server(self, addr: tuple[str, int]) -> None:
        conn = self._open(addr, self.name_conns)

        def on_ready(fut: asyncio.Future) -> None:
            if not fut.exception() and self._search_set:
                for ch in self._search_set:
                    ch.next_search = 0.0
                self._search_now()

        conn.ready_fut.add_done_callback(on_ready)

    def conn_lost(self, conn: _ClientConn) -> None:
        for table in (self.conns, self.name_conns):
            if table.get(conn.addr) is conn:
                del table[conn.addr]
                if table is self.name_conns and not self.closed:
                    self.loop.call_later(10.0 if conn.ready else 2.0, self._reconnect_name_server, conn.addr)

    def _reconnect_name_server(self, addr: tuple[str, int]) -> None:
        if not self.closed and addr not in self.name_conns:
            self._connect_name_server(addr)

    # -- operations -------------------------------------------------------------------------------

    async def _run(self, name: str, start: Callable[[_ClientConn, int, int], _Op]) -> Any:
        """Run one request/response operation, restarting it after a reconnect; a cancelled
        caller cancels it on the wire."""
        ch = self.channel(name)
        while True:
            conn = await ch.wait_connected()
            assert ch.sid is not None
            ioid = self.next_ioid()
            op = start(conn, ioid, ch.sid)
            try:
                return await op.fut
            except _Retry:
                continue
            except asyncio.CancelledError:
                if not conn.closed and conn.ops.get(ioid) is op:
                    conn.destroy_op(ioid, ch.sid)
                raise

    def start_get(
        self, name: str, request: Value, done: Callable[[Any, BaseException | None], None]
    ) -> Callable[[], None]:
        """(loop) Start a get and call ``done(value, exc)`` in the loop when it ends.

        The fast path for synchronous callers: on a connected channel the operation starts
        right here, with no coroutine or Task; otherwise (or after a reconnect) it falls back
        to :meth:`get`.  Returns a function that cancels the operation on the wire."""
        state: dict[str, Any] = {}

        def slow() -> None:
            task = self.loop.create_task(self.get(name, request))
            state["task"] = task

            def fin(t: asyncio.Task) -> None:
                if t.cancelled():
                    return
                exc = t.exception()
                done(None if exc else t.result(), exc)

            task.add_done_callback(fin)

        ch = self.channel(name)
        if not ch.connected or ch.sid is None:
            slow()
        else:
            conn = ch.conn
            assert conn is not None
            sid = ch.sid
            op = _GetOp(conn, self.next_ioid(), sid, request)
            state["op"] = (conn, op, sid)

            def fin_op(f: asyncio.Future) -> None:
                if f.cancelled():
                    return
                exc = f.exception()
                if isinstance(exc, _Retry):
                    state.pop("op", None)
                    slow()
                else:
                    done(None if exc else f.result(), exc)

            op.fut.add_done_callback(fin_op)

        def cancel() -> None:
            task = state.get("task")
            if task is not None:
                task.cancel()
            entry = state.pop("op", None)
            if entry is not None:
                conn, op, sid = entry
                if not conn.closed and conn.ops.get(op.ioid) is op:
                    conn.destroy_op(op.ioid, sid)
                op.fut.cancel()

        return cancel

    async def get(self, name: str, request: Value) -> Value:
        return await self._run(name, lambda c, i, s: _GetOp(c, i, s, request))

    async def put(self, name: str, builder: Callable[[Value], Any], request: Value, get: bool = True) -> None:
        return await self._run(name, lambda c, i, s: _PutOp(c, i, s, request, builder, get))

    async def rpc(self, name: str, value: Value | None, request: Value) -> Any:
        return await self._run(name, lambda c, i, s: _RpcOp(c, i, s, request, value))

    async def get_field(self, name: str, subfield: str = "") -> Type:
        return await self._run(name, lambda c, i, s: _GetFieldOp(c, i, s, subfield))

    def monitor(
        self, name: str, request: Value, cb: Callable[[str, Any], None], pipeline: bool, qsize: int
    ) -> _Monitor:
        """Start a subscription (call in the loop); ``cb(kind, payload)`` runs in the loop."""
        ch = self.channel(name)
        sub = _Monitor(self, ch, request, cb, pipeline, qsize)
        ch.subs.add(sub)
        if ch.connected:
            assert ch.conn is not None
            sub.start_on(ch.conn, ch)
        else:
            self.want_search(ch)
        return sub
