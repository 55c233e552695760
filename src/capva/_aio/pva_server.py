"""asyncio PVA server endpoint: TCP connections (and, through :mod:`.udp`, search/beacons).

One :class:`PVAServer` per :class:`capva.server.Server`.  Each client connection is an
:class:`asyncio.Protocol` (no stream wrappers on the hot path) that frames bytes with the
sans-I/O :class:`~capva.pva.framing.MessageReader`, dispatches on the command byte through
a dict, and batches its writes: everything queued in one loop turn leaves in a single
``transport.writelines`` (design.md §3).

Monitors keep a bounded queue (``record._options.queueSize``, default 4).  When it is full,
when the pipeline window is closed, or while the transport is paused by TCP back-pressure,
further updates are squashed into one "latest value" entry whose overrun BitSet names the
fields that changed more than once: a slow client costs bounded memory and never slows
anyone else.

Bad input from one peer closes that connection only, with one log line.
"""

from __future__ import annotations

import asyncio
import errno
import grp
import logging
import os
import pwd
import struct
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from ..pva import framing as F
from ..pva import messages as M
from ..pva.codec import (
    Status,
    decode_partial,
    decode_typed_value,
    encode_bitset,
    encode_status,
    encode_type,
    encode_typed_value,
)
from ..pva.errors import DecodeError
from ..pva.pvrequest import RequestError, option_bool, option_int, request_mask, request_options
from ..pva.value import Value
from .batching import BatchedProtocol
from .config import ServerConfig
from .sockconn import Listener, serve_tcp

_log = logging.getLogger("capva.server")

__all__ = ["PVAServer"]

_HDR = (struct.Struct("<BBBBI"), struct.Struct(">BBBBI"))
_IB = (struct.Struct("<IB"), struct.Struct(">IB"))
_IIB = (struct.Struct("<IIB"), struct.Struct(">IIB"))
_II = (struct.Struct("<II"), struct.Struct(">II"))
_U32 = (struct.Struct("<I"), struct.Struct(">I"))
_MON_HEAD = (struct.Struct("<BBBBIIB"), struct.Struct(">BBBBIIB"))
_SFLAG = 0x40  # server direction bit
_OK = b"\xff"
_EMPTY_BITSET = b"\x00"

SUB_INIT = 0x08
SUB_DESTROY = 0x10
SUB_GET = 0x40
SUB_GET_PUT = 0x80
SUB_PROCESS = 0x04

#: largest message a client may send (a cap on buffering, far above real use)
MAX_MESSAGE = 256 * 1024 * 1024


def _roles(account: str) -> list[str]:
    """Unix groups of ``account`` (as pvxs reports roles); empty if unknown here."""
    try:
        pw = pwd.getpwnam(account)
    except (KeyError, OSError):
        return []
    out = set()
    try:
        out.add(grp.getgrgid(pw.pw_gid).gr_name)
    except KeyError:
        pass
    try:
        for g in grp.getgrall():
            if account in g.gr_mem:
                out.add(g.gr_name)
    except OSError:
        pass
    return sorted(out)


class _Chan:
    __slots__ = ("conn", "sid", "cid", "name", "pv", "ops", "__weakref__")

    def __init__(self, conn: _Conn, sid: int, cid: int, name: str, pv: Any):
        self.conn = conn
        self.sid = sid
        self.cid = cid
        self.name = name
        self.pv = pv
        self.ops: set[int] = set()

    def pv_closed(self) -> None:
        """The SharedPV was closed (any thread): disconnect this client channel."""
        self.conn.call_in_loop(self.conn.chan_closed, self)


class _Op:
    """Base of one operation (ioid) on a channel."""

    __slots__ = ("conn", "chan", "ioid", "cmd", "be", "request", "reqmask", "ready", "busy", "sop", "waiter")

    def __init__(self, conn: _Conn, chan: _Chan, ioid: int, cmd: int, be: bool, request: Any):
        self.conn = conn
        self.chan = chan
        self.ioid = ioid
        self.cmd = cmd
        self.be = be
        self.request = request
        self.reqmask = -1
        self.ready = False
        self.busy = False
        self.sop: Any = None
        self.waiter: Callable[[], None] | None = None

    # server -> client helpers
    def reply(self, subcmd: int, payload: bytes = _OK) -> None:
        self.conn.send(self.cmd, _IB[self.be].pack(self.ioid, subcmd) + payload, self.be)

    def reply_error(self, subcmd: int, msg: str) -> None:
        self.reply(subcmd, encode_status(Status.error(msg), self.be))

    def start(self) -> None:
        """INIT: reply now if the PV is open, else when it opens."""
        pv = self.chan.pv
        if pv._when_open(self._opened_threadsafe):
            self.opened()
        else:
            self.waiter = self._opened_threadsafe

    def _opened_threadsafe(self) -> None:
        self.waiter = None
        self.conn.call_in_loop(self.opened)

    def opened(self) -> None:
        if self.conn.closed or self.ioid not in self.conn.ops:
            return
        T = self.chan.pv._type
        if T is None:  # closed again meanwhile: wait for the next open
            self.start()
            return
        if self.cmd != M.CMD_RPC:
            try:
                self.reqmask = request_mask(T, self.request)
            except RequestError as e:
                self.conn.drop_op(self)
                self.reply_error(SUB_INIT, str(e))
                return
        self.ready = True
        self.init_reply(T)

    def init_reply(self, T: Any) -> None:
        self.reply(SUB_INIT, _OK + encode_type(T, self.be))

    def execute(self, subcmd: int, body: Any, pos: int) -> None:
        raise NotImplementedError

    def destroyed(self) -> None:
        """Dropped (destroy, cancel of the channel, disconnect)."""
        if self.waiter is not None:
            self.chan.pv._cancel_wait(self.waiter)
            self.waiter = None
        sop, self.sop = self.sop, None
        if sop is not None:
            sop._cancelled()

    # ServerOperation back end ---------------------------------------------------------------

    @property
    def peer(self) -> str:
        return self.conn.peer

    @property
    def account(self) -> str:
        return self.conn.account

    @property
    def roles(self) -> list[str]:
        return self.conn.roles

    def message(self, mtype: int, text: str) -> None:
        self.conn.call_in_loop(
            self.conn.send, M.CMD_MESSAGE, M.LogMessage(self.ioid, mtype, text).encode(self.be), self.be
        )


class _GetOp(_Op):
    __slots__ = ()

    def execute(self, subcmd: int, body: Any, pos: int) -> None:
        data = self.chan.pv._snapshot(self.be, self.reqmask)
        if data is None:
            self.reply_error(subcmd, "PV closed")
        elif data.__class__ is tuple:  # a large value in parts
            head = _IB[self.be].pack(self.ioid, subcmd) + _OK
            n = len(head) + sum(len(p) for p in data)
            hdr = _HDR[self.be].pack(0xCA, 2, _SFLAG | (0x80 if self.be else 0), self.cmd, n)
            self.conn.write_parts(hdr, head, *data)
        else:
            self.reply(subcmd, _OK + data)
        if subcmd & SUB_DESTROY:
            self.conn.drop_op(self)


class _PutOp(_Op):
    __slots__ = ("pending_sub",)

    def execute(self, subcmd: int, body: Any, pos: int) -> None:
        if subcmd & SUB_GET:
            _GetOp.execute(self, subcmd, body, pos)  # type: ignore[arg-type]
            return
        if self.busy:
            self.conn.send_message(self.ioid, 1, "PUT already in progress", self.be)
            return
        pv = self.chan.pv
        T = pv._type
        if T is None:
            self.reply_error(subcmd, "PV closed")
            return
        V, _ = decode_partial(T, body, pos, self.be, self.conn.rx_cache)
        self.busy = True
        self.pending_sub = subcmd
        from ..server.raw import ServerOperation

        self.sop = ServerOperation(self, self.chan.name, V, self.request)
        pv._put(self.sop)

    def complete(self, value: Value | None, error: str | None) -> None:
        self.conn.call_in_loop(self._complete, error)

    def _complete(self, error: str | None) -> None:
        self.sop = None
        self.busy = False
        if self.ioid not in self.conn.ops or self.conn.closed:
            return
        sub = self.pending_sub
        if error is None:
            self.reply(sub)
        else:
            self.reply_error(sub, error)
        if sub & SUB_DESTROY:
            self.conn.drop_op(self)
        self.conn.flush()


class _RpcOp(_Op):
    __slots__ = ("pending_sub",)

    def init_reply(self, T: Any) -> None:
        self.reply(SUB_INIT)  # RPC INIT replies carry no type

    def execute(self, subcmd: int, body: Any, pos: int) -> None:
        if self.busy:
            self.conn.send_message(self.ioid, 1, "RPC already in progress", self.be)
            return
        arg, _ = decode_typed_value(body, pos, self.be, self.conn.rx_cache)
        if arg is not None and not isinstance(arg, Value):
            self.reply_error(subcmd, "RPC argument must be a structure")
            return
        self.busy = True
        self.pending_sub = subcmd
        from ..server.raw import ServerOperation

        self.sop = ServerOperation(self, self.chan.name, arg, self.request)
        self.chan.pv._rpc(self.sop)

    def complete(self, value: Value | None, error: str | None) -> None:
        self.conn.call_in_loop(self._complete, value, error)

    def _complete(self, value: Value | None, error: str | None) -> None:
        self.sop = None
        self.busy = False
        if self.ioid not in self.conn.ops or self.conn.closed:
            return
        sub = self.pending_sub
        if error is not None:
            self.reply_error(sub, error)
        else:  # done() without a value: success with a null result (p4p's client gets None)
            self.reply(sub, _OK + encode_typed_value(value, self.be))
        if sub & SUB_DESTROY:
            self.conn.drop_op(self)
        self.conn.flush()


class _MonOp(_Op):
    """A subscription: bounded queue of encoded updates, pipeline window, squash."""

    __slots__ = (
        "queue",
        "qsize",
        "pipeline",
        "window",
        "started",
        "sq_mask",
        "overrun",
        "squashed",
        "loop",
        "channel",
        "__weakref__",
    )

    def __init__(
        self, conn: _Conn, chan: _Chan, ioid: int, cmd: int, be: bool, request: Any, nfree: int | None
    ):
        super().__init__(conn, chan, ioid, cmd, be, request)
        opts = request_options(request)
        self.qsize = max(2, option_int(opts, "queueSize", 4))
        self.pipeline = nfree is not None and option_bool(opts, "pipeline", False)
        self.window = nfree or 0
        self.queue: deque[tuple[bytes, int]] = deque()
        self.started = False
        self.sq_mask = 0
        self.overrun = 0
        self.squashed = False
        self.loop = conn.loop
        self.channel = chan

    def execute(self, subcmd: int, body: Any, pos: int) -> None:
        if subcmd & SUB_DESTROY:
            self.conn.drop_op(self)
            return
        if subcmd & SUB_GET_PUT:  # pipeline ACK
            if len(body) < pos + 4:
                raise DecodeError("MONITOR ack without a count")
            self.window += _U32[self.be].unpack_from(body, pos)[0]
            self.drain()
        if subcmd & SUB_PROCESS:
            if subcmd & SUB_GET:
                if not self.started:
                    self.started = True
                    first = self.chan.pv._subscribe(self)
                    if first is not None:
                        self.queue.appendleft((first, 0))
                    self.drain()
            elif self.started:
                self.started = False
                self.chan.pv._unsubscribe(self)

    def deliver_soon(self, cb: Callable[[], None]) -> None:
        self.conn.call_in_loop(cb)

    def _can_send(self) -> bool:
        return self.started and not self.conn.paused and (not self.pipeline or self.window > 0)

    def push(self, body: bytes, mask: int) -> None:
        """(loop) one new update."""
        if self.conn.closed:
            return
        if not self.queue and not self.squashed and self._can_send():
            self._send(body)
        elif not self.squashed and len(self.queue) < self.qsize:
            self.queue.append((body, mask))
        else:
            self.overrun |= self.sq_mask & mask
            self.sq_mask |= mask
            self.squashed = True

    def drain(self) -> None:
        while self.queue and self._can_send():
            body, _ = self.queue.popleft()
            self._send(body)
        if self.squashed and not self.queue and self._can_send():
            body = self.chan.pv._latest(self.be, self.sq_mask & self.reqmask)
            ov = self.overrun & self.reqmask
            self.squashed = False
            self.sq_mask = self.overrun = 0
            if body is not None:
                self._send(body, encode_bitset(ov, self.be) if ov else _EMPTY_BITSET)

    def _send(self, body: Any, overrun: bytes = _EMPTY_BITSET) -> None:
        be = self.be
        flags = _SFLAG | (0x80 if be else 0)
        if body.__class__ is tuple:  # a large update in parts
            n = sum(len(p) for p in body)
            head = _MON_HEAD[be].pack(0xCA, 2, flags, M.CMD_MONITOR, 5 + n + len(overrun), self.ioid, 0)
            self.conn.write_parts(head, *body, overrun)
        else:
            head = _MON_HEAD[be].pack(
                0xCA, 2, flags, M.CMD_MONITOR, 5 + len(body) + len(overrun), self.ioid, 0
            )
            self.conn.write_parts(head, body, overrun)
        if self.pipeline:
            self.window -= 1

    def destroyed(self) -> None:
        super().destroyed()
        if self.started:
            self.started = False
            self.chan.pv._unsubscribe(self)
        self.queue.clear()


class _Refused(_Op):
    """PUT_GET, ARRAY, PROCESS: answered with a clear error status (pvxs ignores them)."""

    __slots__ = ()

    def start(self) -> None:
        name = M.COMMAND_NAMES.get(self.cmd, hex(self.cmd))
        self.conn.drop_op(self)
        self.reply_error(SUB_INIT, f"{name} is not supported by this server")


class _Conn(BatchedProtocol):
    """One client TCP connection."""

    def __init__(self, server: PVAServer):
        super().__init__(server.loop, server.thread_id)
        self.server = server
        self.reader = F.MessageReader(expect_server=False, max_message_size=MAX_MESSAGE)
        self.rx_cache: dict = {}
        self.chans: dict[int, _Chan] = {}
        self.ops: dict[int, _Op] = {}
        self.paused = False
        self.validated = False
        self.peer = "?"
        self.account = ""
        self.host = ""
        self.roles: list[str] = []
        self.last_rx = 0.0
        self.timer: asyncio.TimerHandle | None = None

    # -- plumbing ---------------------------------------------------------------------------

    def send(self, cmd: int, body: bytes, be: bool = False) -> None:
        self.write_parts(_HDR[be].pack(0xCA, 2, _SFLAG | (0x80 if be else 0), cmd, len(body)), body)

    def send_message(self, ioid: int, mtype: int, text: str, be: bool = False) -> None:
        self.send(M.CMD_MESSAGE, M.LogMessage(ioid, mtype, text).encode(be), be)

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = f"{peer[0]}:{peer[1]}"
        self.server.conns.add(self)
        self.last_rx = self.loop.time()
        self.timer = self.loop.call_later(self.server.timeout / 2, self._check_idle)
        validation = M.ServerValidation(0x10000, 0x7FFF, ["anonymous", "ca"]).encode(False)
        self.write_parts(
            F.set_byte_order(False),
            _HDR[0].pack(0xCA, 2, _SFLAG, M.CMD_CONNECTION_VALIDATION, len(validation)),
            validation,
        )

    def _check_idle(self) -> None:
        idle = self.loop.time() - self.last_rx
        if idle > self.server.timeout:
            _log.info("%s: no traffic for %.0f s, closing", self.peer, idle)
            self.abort()
        else:
            self.timer = self.loop.call_later(max(0.5, self.server.timeout - idle), self._check_idle)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        for op in list(self.ops.values()):
            if isinstance(op, _MonOp):
                op.drain()

    def handle_data(self, data: bytes) -> None:
        self.last_rx = self.loop.time()
        try:
            frames = self.reader.feed(data)
        except DecodeError as e:
            for fr in getattr(e, "frames", ()):
                self._handle_safe(fr)
            self._protocol_error(e)
            return
        for fr in frames:
            if self.closed:
                return
            self._handle_safe(fr)

    def _handle_safe(self, fr: F.Frame) -> None:
        try:
            if fr.flags & 0x01:
                return  # control messages: nothing for a server to do
            h = _HANDLERS.get(fr.command)
            if h is not None:
                h(self, fr.body, bool(fr.flags & 0x80))
        except (DecodeError, RequestError) as e:
            self._protocol_error(e)
        except Exception:
            _log.exception("%s: error handling command 0x%02x; closing the connection", self.peer, fr.command)
            self.abort()

    def _protocol_error(self, e: Exception) -> None:
        _log.warning("%s: protocol error, closing: %s", self.peer, e)
        self.abort()

    def cleanup(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        self.server.conns.discard(self)
        for op in list(self.ops.values()):
            op.destroyed()
        self.ops.clear()
        for ch in list(self.chans.values()):
            ch.pv._detach(ch)
        self.chans.clear()
        self.out.clear()

    # -- commands ---------------------------------------------------------------------------

    def on_validation(self, body: Any, be: bool) -> None:
        msg = M.ClientValidation.decode(body, be, self.rx_cache)
        method = msg.method
        if method == "ca" and isinstance(msg.auth, Value):
            self.account = str(msg.auth.get("user", "") or "")
            self.host = str(msg.auth.get("host", "") or "")
            if "/" in self.account:
                self.account = self.account.rsplit("/", 1)[1]
            self.roles = _roles(self.account)
        elif method == "anonymous":
            self.account = "anonymous"
        if method not in ("anonymous", "ca"):
            st = Status.error("Client selects unadvertised auth")
        else:
            st = Status.OK
            self.validated = True
        self.send(M.CMD_CONNECTION_VALIDATED, encode_status(st, be), be)

    def on_echo(self, body: Any, be: bool) -> None:
        self.send(M.CMD_ECHO, bytes(body), be)

    def on_search(self, body: Any, be: bool) -> None:
        msg = M.Search.decode(body, be)
        reply = self.server.tcp_search(msg)
        if reply is not None:
            self.send(M.CMD_SEARCH_RESPONSE, reply.encode(be), be)

    def on_create_channel(self, body: Any, be: bool) -> None:
        msg = M.CreateChannelRequest.decode(body, be)
        for cid, name in msg.channels:
            pv = None
            err = None
            if not name or len(name) > 500:
                err = "invalid channel name"
            else:
                try:
                    pv = self.server.make_channel(name, self.peer)
                except Exception as e:
                    _log.exception("makeChannel(%r)", name)
                    err = f"makeChannel failed: {e}"
            if pv is None:
                st = Status(3, err or "Refused to create Channel", "")
                self.send(M.CMD_CREATE_CHANNEL, M.CreateChannelResponse(cid, 0xFFFFFFFF, st).encode(be), be)
                continue
            sid = self.server.next_sid()
            ch = _Chan(self, sid, cid, name, pv)
            self.chans[sid] = ch
            self.send(M.CMD_CREATE_CHANNEL, M.CreateChannelResponse(cid, sid, Status.OK).encode(be), be)
            pv._attach(ch)

    def on_destroy_channel(self, body: Any, be: bool) -> None:
        sid, cid = _II[be].unpack_from(body, 0) if len(body) >= 8 else (None, None)
        if sid is None:
            raise DecodeError("DESTROY_CHANNEL truncated")
        ch = self.chans.pop(sid, None)
        if ch is not None:
            self._drop_chan_ops(ch)
            ch.pv._detach(ch)
        self.send(M.CMD_DESTROY_CHANNEL, _II[be].pack(sid, cid), be)

    def chan_closed(self, ch: _Chan) -> None:
        """(loop) the PV behind ``ch`` was closed: tell the client, forget the channel."""
        if self.closed or self.chans.get(ch.sid) is not ch:
            return
        del self.chans[ch.sid]
        self._drop_chan_ops(ch)
        ch.pv._detach(ch)
        self.send(M.CMD_DESTROY_CHANNEL, _II[0].pack(ch.sid, ch.cid), False)

    def _drop_chan_ops(self, ch: _Chan) -> None:
        for ioid in list(ch.ops):
            op = self.ops.pop(ioid, None)
            if op is not None:
                op.destroyed()
        ch.ops.clear()

    def drop_op(self, op: _Op) -> None:
        if self.ops.get(op.ioid) is op:
            del self.ops[op.ioid]
            op.chan.ops.discard(op.ioid)
            op.destroyed()

    def on_op(self, body: Any, be: bool, cmd: int) -> None:
        if len(body) < 9:
            raise DecodeError(f"{M.COMMAND_NAMES.get(cmd)}: truncated")
        sid, ioid, subcmd = _IIB[be].unpack_from(body, 0)
        if subcmd & SUB_INIT:
            ch = self.chans.get(sid)
            if ioid in self.ops:
                raise DecodeError(f"INIT reuses live ioid {ioid}")
            if ch is None:
                self.send(
                    cmd, _IB[be].pack(ioid, subcmd) + encode_status(Status.error("bad channel id"), be), be
                )
                return
            if cmd in (M.CMD_PUT_GET, M.CMD_ARRAY, M.CMD_PROCESS):
                op: _Op = _Refused(self, ch, ioid, cmd, be, None)
                self.ops[ioid] = op
                op.start()
                return
            req, pos = decode_typed_value(body, 9, be, self.rx_cache)
            if req is not None and not isinstance(req, Value):
                req = None
            if cmd == M.CMD_MONITOR:
                nfree = None
                if subcmd & SUB_GET_PUT and len(body) >= pos + 4:
                    nfree = _U32[be].unpack_from(body, pos)[0]
                op = _MonOp(self, ch, ioid, cmd, be, req, nfree)
            else:
                op = _OP_CLASSES[cmd](self, ch, ioid, cmd, be, req)
            self.ops[ioid] = op
            ch.ops.add(ioid)
            op.start()
            return
        live = self.ops.get(ioid)
        if live is None or live.chan.sid != sid:
            if not (cmd == M.CMD_MONITOR and subcmd & SUB_DESTROY):
                self.send_message(ioid, 1, "bad request id", be)
            return
        if not live.ready:
            self.send_message(ioid, 1, "operation not ready (PV not open yet)", be)
            return
        live.be = be
        live.execute(subcmd, body, 9)

    def on_destroy_request(self, body: Any, be: bool) -> None:
        if len(body) < 8:
            raise DecodeError("DESTROY_REQUEST truncated")
        sid, ioid = _II[be].unpack_from(body, 0)
        op = self.ops.get(ioid)
        if op is not None:
            self.drop_op(op)

    def on_cancel_request(self, body: Any, be: bool) -> None:
        if len(body) < 8:
            raise DecodeError("CANCEL_REQUEST truncated")
        sid, ioid = _II[be].unpack_from(body, 0)
        op = self.ops.get(ioid)
        if op is not None and op.sop is not None:
            sop, op.sop = op.sop, None
            sop._cancelled()

    def on_get_field(self, body: Any, be: bool) -> None:
        msg = M.GetFieldRequest.decode(body, be)
        ch = self.chans.get(msg.sid)
        if ch is None:
            st = Status.error("bad channel id")
            self.send(M.CMD_GET_FIELD, M.GetFieldResponse(msg.ioid, st).encode(be), be)
            return
        conn = self

        def reply() -> None:
            T = ch.pv._type
            if conn.closed:
                return
            if T is None:
                ch.pv._when_open(lambda: conn.call_in_loop(reply))
                return
            sub = msg.subfield
            if sub:
                node = T._lookup(sub)
                if node is None:
                    conn.send(
                        M.CMD_GET_FIELD,
                        M.GetFieldResponse(msg.ioid, Status.error(f"no field {sub!r}")).encode(be),
                        be,
                    )
                    return
                T = node
            conn.send(M.CMD_GET_FIELD, M.GetFieldResponse(msg.ioid, Status.OK, T).encode(be), be)

        reply()

    def on_message(self, body: Any, be: bool) -> None:
        try:
            msg = M.LogMessage.decode(body, be)
            _log.info("%s says: %s", self.peer, msg.text)
        except DecodeError:
            pass


_OP_CLASSES: dict[int, type[_Op]] = {M.CMD_GET: _GetOp, M.CMD_PUT: _PutOp, M.CMD_RPC: _RpcOp}

_HANDLERS: dict[int, Callable[[_Conn, Any, bool], None]] = {
    M.CMD_CONNECTION_VALIDATION: _Conn.on_validation,
    M.CMD_ECHO: _Conn.on_echo,
    M.CMD_SEARCH: _Conn.on_search,
    M.CMD_CREATE_CHANNEL: _Conn.on_create_channel,
    M.CMD_DESTROY_CHANNEL: _Conn.on_destroy_channel,
    M.CMD_DESTROY_REQUEST: _Conn.on_destroy_request,
    M.CMD_CANCEL_REQUEST: _Conn.on_cancel_request,
    M.CMD_GET_FIELD: _Conn.on_get_field,
    M.CMD_MESSAGE: _Conn.on_message,
}


def _op_handler(cmd: int) -> Callable[[_Conn, Any, bool], None]:
    def handle(self: _Conn, body: Any, be: bool) -> None:
        self.on_op(body, be, cmd)

    return handle


for _cmd in (M.CMD_GET, M.CMD_PUT, M.CMD_PUT_GET, M.CMD_MONITOR, M.CMD_ARRAY, M.CMD_PROCESS, M.CMD_RPC):
    _HANDLERS[_cmd] = _op_handler(_cmd)


class PVAServer:
    """The network side of one Server: TCP listeners, connections, UDP search/beacons.

    ``lookup(name) -> bool`` answers searches; ``make_channel(name, peer) -> SharedPV|None``
    creates channels.  Both are called in the loop."""

    def __init__(
        self,
        config: ServerConfig,
        lookup: Callable[[str], bool],
        make_channel: Callable[[str, str], Any],
        loop: asyncio.AbstractEventLoop,
    ):
        self.config = config
        self.lookup = lookup
        self.make_channel = make_channel
        self.loop = loop
        self.thread_id = 0
        self.guid = os.urandom(12)
        self.conns: set[_Conn] = set()
        self.listeners: list[Listener | asyncio.Server] = []
        self.tcp_port = 0
        self.udp: Any = None
        self.timeout = config.timeout
        self._sid = 0x07050300

    def next_sid(self) -> int:
        self._sid = (self._sid + 1) & 0xFFFFFFFF or 1
        return self._sid

    async def start(self) -> ServerConfig:
        """Bind everything; returns the config with the ports actually bound."""
        self.thread_id = threading.get_ident()
        cfg = self.config
        port = cfg.tcp_port
        for i, host in enumerate(cfg.interfaces):
            try:
                srv = await serve_tcp(self.loop, lambda: _Conn(self), host, port)
            except OSError as e:
                if e.errno != errno.EADDRINUSE or i > 0 or port == 0:
                    await self.close()
                    raise
                _log.warning("TCP port %d on %s is in use; using a random port", port, host)
                srv = await serve_tcp(self.loop, lambda: _Conn(self), host, 0)
            self.listeners.append(srv)
            if port == 0 or i == 0:
                port = srv.sockets[0].getsockname()[1]
        self.tcp_port = port
        udp_port = cfg.udp_port
        try:
            from .udp import PVAUdpServer
        except ImportError:  # pragma: no cover - during development only
            PVAUdpServer = None  # type: ignore[assignment,misc]
        if PVAUdpServer is not None:
            self.udp = PVAUdpServer(cfg.with_ports(port, cfg.udp_port), self.guid, self.lookup, self.loop)
            try:
                udp_port = await self.udp.start(port)
            except BaseException:
                await self.close()
                raise
        return cfg.with_ports(port, udp_port)

    def tcp_search(self, msg: Any) -> Any:
        try:
            from .udp import search_reply
        except ImportError:  # pragma: no cover
            return None
        return search_reply(msg, self.guid, self.tcp_port, self.lookup, tcp=True)

    def poke(self) -> None:
        if self.udp is not None:
            self.udp.poke()

    async def close(self) -> None:
        for srv in self.listeners:
            srv.close()
        for c in list(self.conns):
            c.abort()
        for srv in self.listeners:
            try:
                await asyncio.wait_for(srv.wait_closed(), 2.0)
            except (asyncio.TimeoutError, Exception):
                pass
        self.listeners.clear()
        if self.udp is not None:
            await self.udp.close()
            self.udp = None

    def stats(self) -> dict[str, int]:
        return {
            "connections": len(self.conns),
            "channels": sum(len(c.chans) for c in self.conns),
            "operations": sum(len(c.ops) for c in self.conns),
        }
