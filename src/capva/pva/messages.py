"""PVA application messages, sans-I/O: one small class per command and direction.

Each class decodes a message *body* (the bytes after the 8-byte header, see
:mod:`capva.pva.framing`) and encodes one back::

    msg = GetReply.decode(body, be, cache, optype)      # or decode_from(body, pos, ...)
    body = msg.encode(be, send_cache)
    wire = encode_message(msg, be)                       # header + body

Decoder conventions (the same for every class):

* ``cache`` is the receive introspection cache (``dict`` key -> Type) of this connection
  *and direction*: pvAccessCPP sends ``0xFD``/``0xFE`` cache codes everywhere a FieldDesc
  appears (pva-protocol.md §3.3).  ``None`` means a fresh, throw-away cache (UDP).
* ``optype`` is the type an operation's data messages are decoded against; the message
  itself does not carry it.  It is the Type from the INIT reply; for PUT_GET a
  ``(put_type, get_type)`` pair; for ARRAY the array field's Type.  Messages that carry
  no op data ignore it.  :class:`ConnectionDecoder` tracks it per ioid for you.
* Trailing bytes: ``decode_from`` returns the offset where the message ended, so a strict
  caller can check it; ``decode`` **ignores** bytes after the message, as pvxs does for
  forward compatibility ("silently drain any unprocessed body").  The exceptions are the
  messages whose layout is defined by the body length: ECHO (the payload is everything),
  :class:`Unknown`, MONITOR replies (pvAccessCPP's notify-only update is empty; a final
  ``0x10`` reply may carry data "if any bytes remain", as the pvxs client reads it) and the
  client's CONNECTION_VALIDATION (the auth data is optional for old clients).
* Every malformed input raises :class:`~capva.pva.errors.DecodeError`, nothing else.

Encoders write exactly the fields held; for op data they use the held Value's changed mask
(or ``mask`` when given), written as is (not normalized), so decoded messages re-encode
byte-identically, including pvAccessCPP's redundant masks.

The classes are plain ``__slots__`` classes: cheap to build on the hot path (design.md §4).
Dispatch is by dict on the command byte (:data:`CLIENT_MESSAGES`, :data:`SERVER_MESSAGES`).
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any, ClassVar

from .._wire import (
    WireError,
    decode_bitset,
    decode_size,
    decode_string,
    encode_bitset,
    encode_size,
    encode_string,
)
from .codec import (
    Status,
    decode_field_value,
    decode_partial,
    decode_status,
    decode_type,
    decode_typed_value,
    encode_field_value,
    encode_partial,
    encode_status,
    encode_type,
    encode_typed_value,
    value_mask,
)
from .errors import DecodeError
from .framing import FLAG_BE, FLAG_SERVER, Frame, encode_frame

__all__ = [
    "CMD_BEACON",
    "CMD_CONNECTION_VALIDATION",
    "CMD_ECHO",
    "CMD_SEARCH",
    "CMD_SEARCH_RESPONSE",
    "CMD_AUTHNZ",
    "CMD_ACL_CHANGE",
    "CMD_CREATE_CHANNEL",
    "CMD_DESTROY_CHANNEL",
    "CMD_CONNECTION_VALIDATED",
    "CMD_GET",
    "CMD_PUT",
    "CMD_PUT_GET",
    "CMD_MONITOR",
    "CMD_ARRAY",
    "CMD_DESTROY_REQUEST",
    "CMD_PROCESS",
    "CMD_GET_FIELD",
    "CMD_MESSAGE",
    "CMD_MULTIPLE_DATA",
    "CMD_RPC",
    "CMD_CANCEL_REQUEST",
    "CMD_ORIGIN_TAG",
    "COMMAND_NAMES",
    "SUB_INIT",
    "SUB_DESTROY",
    "SUB_GET",
    "SUB_GET_PUT",
    "SUB_PROCESS",
    "SUB_SHARE",
    "SEARCH_MUST_REPLY",
    "SEARCH_UNICAST",
    "ANY_ADDR",
    "ANY_ADDR_MAPPED",
    "format_addr",
    "parse_addr",
    "Beacon",
    "Search",
    "SearchResponse",
    "OriginTag",
    "ServerValidation",
    "ClientValidation",
    "ConnectionValidated",
    "Echo",
    "CreateChannelRequest",
    "CreateChannelResponse",
    "DestroyChannel",
    "DestroyRequest",
    "CancelRequest",
    "GetFieldRequest",
    "GetFieldResponse",
    "LogMessage",
    "GetRequest",
    "GetReply",
    "PutRequest",
    "PutReply",
    "PutGetRequest",
    "PutGetReply",
    "MonitorRequest",
    "MonitorReply",
    "ArrayRequest",
    "ArrayReply",
    "ProcessRequest",
    "ProcessReply",
    "RpcRequest",
    "RpcReply",
    "Unknown",
    "MissingTypeError",
    "CLIENT_MESSAGES",
    "SERVER_MESSAGES",
    "message_class",
    "decode_message",
    "encode_message",
    "ConnectionDecoder",
]

# -- command codes (pva-protocol.md §4.0) --------------------------------------------------

CMD_BEACON = 0x00
CMD_CONNECTION_VALIDATION = 0x01
CMD_ECHO = 0x02
CMD_SEARCH = 0x03
CMD_SEARCH_RESPONSE = 0x04
CMD_AUTHNZ = 0x05
CMD_ACL_CHANGE = 0x06
CMD_CREATE_CHANNEL = 0x07
CMD_DESTROY_CHANNEL = 0x08
CMD_CONNECTION_VALIDATED = 0x09
CMD_GET = 0x0A
CMD_PUT = 0x0B
CMD_PUT_GET = 0x0C
CMD_MONITOR = 0x0D
CMD_ARRAY = 0x0E
CMD_DESTROY_REQUEST = 0x0F
CMD_PROCESS = 0x10
CMD_GET_FIELD = 0x11
CMD_MESSAGE = 0x12
CMD_MULTIPLE_DATA = 0x13
CMD_RPC = 0x14
CMD_CANCEL_REQUEST = 0x15
CMD_ORIGIN_TAG = 0x16

COMMAND_NAMES: dict[int, str] = {
    CMD_BEACON: "BEACON",
    CMD_CONNECTION_VALIDATION: "CONNECTION_VALIDATION",
    CMD_ECHO: "ECHO",
    CMD_SEARCH: "SEARCH",
    CMD_SEARCH_RESPONSE: "SEARCH_RESPONSE",
    CMD_AUTHNZ: "AUTHNZ",
    CMD_ACL_CHANGE: "ACL_CHANGE",
    CMD_CREATE_CHANNEL: "CREATE_CHANNEL",
    CMD_DESTROY_CHANNEL: "DESTROY_CHANNEL",
    CMD_CONNECTION_VALIDATED: "CONNECTION_VALIDATED",
    CMD_GET: "GET",
    CMD_PUT: "PUT",
    CMD_PUT_GET: "PUT_GET",
    CMD_MONITOR: "MONITOR",
    CMD_ARRAY: "ARRAY",
    CMD_DESTROY_REQUEST: "DESTROY_REQUEST",
    CMD_PROCESS: "PROCESS",
    CMD_GET_FIELD: "GET_FIELD",
    CMD_MESSAGE: "MESSAGE",
    CMD_MULTIPLE_DATA: "MULTIPLE_DATA",
    CMD_RPC: "RPC",
    CMD_CANCEL_REQUEST: "CANCEL_REQUEST",
    CMD_ORIGIN_TAG: "ORIGIN_TAG",
}

# -- operation subcommand bits (§4.8) -------------------------------------------------------

SUB_INIT = 0x08
SUB_DESTROY = 0x10
SUB_GET = 0x40
SUB_GET_PUT = 0x80
SUB_PROCESS = 0x04
SUB_SHARE = 0x20

# -- SEARCH flags (§4.4) --------------------------------------------------------------------

SEARCH_MUST_REPLY = 0x01
SEARCH_UNICAST = 0x80

# -- addresses (§2.6) -----------------------------------------------------------------------

#: the two spellings of "use the sender's address": pvxs client searches send all zeros,
#: pvxs servers and pvAccessCPP clients send ::ffff:0.0.0.0
ANY_ADDR = bytes(16)
ANY_ADDR_MAPPED = bytes(10) + b"\xff\xff" + bytes(4)
_V4_PREFIX = bytes(10) + b"\xff\xff"


def format_addr(addr: bytes) -> str:
    """Addr16 -> text: dotted quad for IPv4-mapped addresses, IPv6 notation otherwise."""
    if addr[:12] == _V4_PREFIX:
        return ".".join(str(b) for b in addr[12:])
    return str(ipaddress.IPv6Address(bytes(addr)))


def parse_addr(text: str) -> bytes:
    """Text address -> Addr16 (IPv4 written IPv4-mapped, as both C++ peers do)."""
    ip = ipaddress.ip_address(text)
    if ip.version == 4:
        return _V4_PREFIX + ip.packed
    return ip.packed


# -- precompiled layouts: (little-endian, big-endian) ---------------------------------------


def _pair(fmt: str) -> tuple[struct.Struct, struct.Struct]:
    return struct.Struct("<" + fmt), struct.Struct(">" + fmt)


_U16 = _pair("H")
_U32 = _pair("I")
_I_I = _pair("II")  # sid ioid / sid cid / cid sid
_I_I_B = _pair("IIB")  # sid ioid subcmd
_I_B = _pair("IB")  # ioid subcmd
_I_H_S = _pair("IHH")  # bufsize regsize qos
_I_H = _pair("IH")  # bufsize regsize
_SEARCH_HEAD = _pair("IB3x")  # seq flags reserved[3]
_BEACON_HEAD = _pair("BBH")  # flags seq change
_U32_U8 = _pair("IB")  # ioid type (MESSAGE)

_DECODE_ERRORS = (WireError, struct.error, IndexError, UnicodeDecodeError)


def _need(buf, pos: int, n: int, what: str) -> None:
    if pos + n > len(buf):
        raise DecodeError(f"truncated {what}: need {n} bytes at offset {pos}, have {len(buf) - pos}")


def _read_addr(buf, pos: int) -> tuple[bytes, int]:
    _need(buf, pos, 16, "address")
    return bytes(buf[pos : pos + 16]), pos + 16


def _check_addr(addr: bytes) -> bytes:
    if len(addr) != 16:
        raise ValueError(f"Addr16 must be 16 bytes, not {len(addr)}")
    return bytes(addr)


def _is_success(status: Any) -> bool:
    """OK or WARNING: the payload follows only then (§2.3)."""
    return status.code <= 1


# -- base class ---------------------------------------------------------------------------


class _Message:
    """Common machinery; subclasses define ``command``, ``server`` and the field slots."""

    __slots__ = ()

    #: command byte
    command: ClassVar[int]
    #: True if sent by a server, False if by a client, None if either (header direction bit)
    server: ClassVar[bool | None] = None
    #: the decoder's extent is the whole body (trailing bytes are part of the message)
    length_defined: ClassVar[bool] = False

    @classmethod
    def decode(cls, body, be: bool, cache: dict | None = None, optype: Any = None) -> Any:
        """Decode a body, ignoring trailing bytes (see module docstring)."""
        return cls.decode_from(body, 0, be, cache, optype)[0]

    @classmethod
    def decode_from(
        cls, buf, pos: int, be: bool, cache: dict | None = None, optype: Any = None
    ) -> tuple[Any, int]:
        """Decode from ``buf[pos:]``; returns ``(message, end_offset)``."""
        try:
            return cls._decode(buf, pos, be, {} if cache is None else cache, optype)
        except DecodeError:
            raise
        except _DECODE_ERRORS as exc:
            raise DecodeError(f"{cls.__name__}: {exc}") from exc

    @classmethod
    def _decode(cls, buf, pos: int, be: bool, cache: dict, optype: Any) -> tuple[Any, int]:
        raise NotImplementedError

    def encode(self, be: bool, cache: Any = None) -> bytes:
        """Body bytes.  ``cache`` is a send-side type cache (codec.SendTypeCache) or None
        for plain type descriptions (what we normally send)."""
        raise NotImplementedError

    def _fields(self) -> tuple:
        return tuple(getattr(self, s) for s in _slot_names(type(self)))

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return _fields_equal(self._fields(), other._fields())  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        parts = ", ".join(f"{s}={getattr(self, s)!r}" for s in _slot_names(type(self)))
        return f"{type(self).__name__}({parts})"


_SLOT_NAMES: dict[type, tuple[str, ...]] = {}


def _slot_names(cls: type) -> tuple[str, ...]:
    """Every field of a message class, base classes first (``__slots__`` is per class)."""
    names = _SLOT_NAMES.get(cls)
    if names is None:
        seen: list[str] = []
        for k in reversed(cls.__mro__):
            for s in k.__dict__.get("__slots__", ()):
                if s not in seen:
                    seen.append(s)
        names = _SLOT_NAMES[cls] = tuple(seen)
    return names


def _fields_equal(a: tuple, b: tuple) -> bool:
    """Field-wise equality that also works for Values and numpy arrays (ARRAY data)."""
    return len(a) == len(b) and all(_eq(x, y) for x, y in zip(a, b))


def _eq(x: Any, y: Any) -> bool:
    if x is y:
        return True
    if isinstance(x, (tuple, list)) and isinstance(y, (tuple, list)):
        return type(x) is type(y) and len(x) == len(y) and all(_eq(p, q) for p, q in zip(x, y))
    if hasattr(x, "shape") or hasattr(y, "shape"):  # numpy arrays: same shape, same items
        return type(x) is type(y) and x.shape == y.shape and bool((x == y).all())
    try:
        return bool(x == y)
    except (TypeError, ValueError):
        return False


# -- discovery (UDP) ------------------------------------------------------------------------


class Beacon(_Message):
    """BEACON (0x00), S→C over UDP: server GUID, sequence, address and TCP port."""

    __slots__ = ("guid", "flags", "seq", "change", "addr", "port", "protocol", "status")
    command = CMD_BEACON
    server = True

    def __init__(
        self,
        guid: bytes,
        seq: int = 0,
        change: int = 0,
        addr: bytes = ANY_ADDR_MAPPED,
        port: int = 5075,
        protocol: str = "tcp",
        status: Any = None,
        flags: int = 0,
    ) -> None:
        if len(guid) != 12:
            raise ValueError(f"GUID must be 12 bytes, not {len(guid)}")
        self.guid = bytes(guid)
        self.flags = flags
        self.seq = seq
        self.change = change
        self.addr = _check_addr(addr)
        self.port = port
        self.protocol = protocol
        #: serverStatus: a Value or None (``ff``; what both C++ servers send)
        self.status = status

    @classmethod
    def _decode(cls, buf, pos, be, cache, optype):
        _need(buf, pos, 16, "BEACON")
        guid = bytes(buf[pos : pos + 12])
        flags, seq, change = _BEACON_HEAD[be].unpack_from(buf, pos + 12)
        addr, pos = _read_addr(buf, pos + 16)
        _need(buf, pos, 2, "BEACON port")
        port = _U16[be].unpack_from(buf, pos)[0]
        protocol, pos = decode_string(buf, pos + 2, be)
        status, pos = decode_typed_value(buf, pos, be, cache)
        return cls(guid, seq, change, addr, port, protocol, status, flags), pos

    def encode(self, be, cache=None):
        return b"".join(
            (
                self.guid,
                _BEACON_HEAD[be].pack(self.flags, self.seq, self.change),
                self.addr,
                _U16[be].pack(self.port),
                encode_string(self.protocol, be),
                encode_typed_value(self.status, be, cache),
            )
        )


class Search(_Message):
    """SEARCH (0x03), C→S over UDP (or TCP to a name server).

    ``channels`` is a list of ``(cid, name)``; an empty list with MustReply set is the
    discovery ping."""

    __slots__ = ("seq", "flags", "addr", "port", "protocols", "channels")
    command = CMD_SEARCH
    server = False

    def __init__(
        self,
        seq: int,
        channels: list[tuple[int, str]],
        port: int = 0,
        addr: bytes = ANY_ADDR,
        protocols: list[str] | None = None,
        flags: int = 0,
    ) -> None:
        self.seq = seq
        self.flags = flags
        self.addr = _check_addr(addr)
        self.port = port
        self.protocols = ["tcp"] if protocols is None else list(protocols)
        self.channels = list(channels)

    @property
    def must_reply(self) -> bool:
        return bool(self.flags & SEARCH_MUST_REPLY)

    @property
    def unicast(self) -> bool:
        return bool(self.flags & SEARCH_UNICAST)

    @classmethod
    def _decode(cls, buf, pos, be, cache, optype):
        _need(buf, pos, 8, "SEARCH")
        seq, flags = _SEARCH_HEAD[be].unpack_from(buf, pos)
        addr, pos = _read_addr(buf, pos + 8)
        _need(buf, pos, 2, "SEARCH port")
        port = _U16[be].unpack_from(buf, pos)[0]
        nproto, pos = decode_size(buf, pos + 2, be)
        _need(buf, pos, nproto, "SEARCH protocols")  # each string takes >= 1 byte
        protocols = []
        for _ in range(nproto):
            p, pos = decode_string(buf, pos, be)
            protocols.append(p)
        _need(buf, pos, 2, "SEARCH count")
        count = _U16[be].unpack_from(buf, pos)[0]
        pos += 2
        _need(buf, pos, 5 * count, "SEARCH names")
        channels = []
        u32 = _U32[be].unpack_from
        for _ in range(count):
            cid = u32(buf, pos)[0]
            name, pos = decode_string(buf, pos + 4, be)
            channels.append((cid, name))
        return cls(seq, channels, port, addr, protocols, flags), pos

    def encode(self, be, cache=None):
        u32 = _U32[be].pack
        parts = [
            _SEARCH_HEAD[be].pack(self.seq, self.flags),
            self.addr,
            _U16[be].pack(self.port),
            encode_size(len(self.protocols), be),
        ]
        parts.extend(encode_string(p, be) for p in self.protocols)
        parts.append(_U16[be].pack(len(self.channels)))
        for cid, name in self.channels:
            parts.append(u32(cid))
            parts.append(encode_string(name, be))
        return b"".join(parts)


class SearchResponse(_Message):
    """SEARCH_RESPONSE (0x04), S→C.  Ignore ``cids`` when ``found`` is false: pvAccessCPP
    lists the cid in negative replies (§4.5)."""

    __slots__ = ("guid", "seq", "addr", "port", "protocol", "found", "cids")
    command = CMD_SEARCH_RESPONSE
    server = True

    def __init__(
        self,
        guid: bytes,
        seq: int,
        cids: list[int],
        port: int,
        found: bool = True,
        addr: bytes = ANY_ADDR_MAPPED,
        protocol: str = "tcp",
    ) -> None:
        if len(guid) != 12:
            raise ValueError(f"GUID must be 12 bytes, not {len(guid)}")
        self.guid = bytes(guid)
        self.seq = seq
        self.addr = _check_addr(addr)
        self.port = port
        self.protocol = protocol
        self.found = found
        self.cids = list(cids)

    @classmethod
    def _decode(cls, buf, pos, be, cache, optype):
        _need(buf, pos, 16, "SEARCH_RESPONSE")
        guid = bytes(buf[pos : pos + 12])
        seq = _U32[be].unpack_from(buf, pos + 12)[0]
        addr, pos = _read_addr(buf, pos + 16)
        _need(buf, pos, 2, "SEARCH_RESPONSE port")
        port = _U16[be].unpack_from(buf, pos)[0]
        protocol, pos = decode_string(buf, pos + 2, be)
        _need(buf, pos, 3, "SEARCH_RESPONSE found/count")
        found = buf[pos] != 0
        count = _U16[be].unpack_from(buf, pos + 1)[0]
        pos += 3
        _need(buf, pos, 4 * count, "SEARCH_RESPONSE cids")
        cids = list(struct.unpack_from(f"{'>' if be else '<'}{count}I", buf, pos))
        pos += 4 * count
        return cls(guid, seq, cids, port, found, addr, protocol), pos

    def encode(self, be, cache=None):
        return b"".join(
            (
                self.guid,
                _U32[be].pack(self.seq),
                self.addr,
                _U16[be].pack(self.port),
                encode_string(self.protocol, be),
                b"\x01" if self.found else b"\x00",
                _U16[be].pack(len(self.cids)),
                struct.pack(f"{'>' if be else '<'}{len(self.cids)}I", *self.cids),
            )
        )


class OriginTag(_Message):
    """ORIGIN_TAG (0x16): prefix of a search forwarded to 224.0.0.128 on loopback, naming
    the interface the original unicast search arrived on (§4.19, §6.4)."""

    __slots__ = ("addr",)
    command = CMD_ORIGIN_TAG
    server = False

    def __init__(self, addr: bytes) -> None:
        self.addr = _check_addr(addr)

    @classmethod
    def _decode(cls, buf, pos, be, cache, optype):
        addr, pos = _read_addr(buf, pos)
        return cls(addr), pos

    def encode(self, be, cache=None):
        return self.addr


# -- connection setup -----------------------------------------------------------------------


class ServerValidation(_Message):
    """CONNECTION_VALIDATION (0x01) S→C: buffer size, registry size and the offered auth
    methods, in increasing order of preference (§4.2)."""

    __slots__ = ("buffer_size", "registry_size", "methods")
    command = CMD_CONNECTION_VALIDATION
    server = True

    def __init__(
        self, buffer_size: int = 0x10000, registry_size: int = 0x7FFF, methods: list[str] | None = None
    ):
        self.buffer_size = buffer_size
        self.registry_size = registry_size
        self.methods = ["anonymous", "ca"] if methods is None else list(methods)

    @classmethod
    def _decode(cls, buf, pos, be, cache, optype):
        _need(buf, pos, 6, "CONNECTION_VALIDATION")
        bufsize, regsize = _I_H[be].unpack_from(buf, pos)
        n, pos = decode_size(buf, pos + 6, be)
        _need(buf, pos, n, "auth methods")
        methods = []
        for _ in range(n):
            m, pos = decode_string(buf, pos, be)
            methods.append(m)
        return cls(bufsize, regsize, methods), pos

    def encode(self, be, cache=None):
        parts = [_I_H[be].pack(self.buffer_size, self.registry_size), encode_size(len(self.methods), be)]
        parts.extend(encode_string(m, be) for m in self.methods)
        return b"".join(parts)


class ClientValidation(_Message):
    """CONNECTION_VALIDATION (0x01) C→S: the client's sizes, QoS, chosen auth method and
    auth data (a Value, e.g. ``{user, host}`` for "ca", or None for ``ff``)."""

    __slots__ = ("buffer_size", "registry_size", "qos", "method", "auth")
    command = CMD_CONNECTION_VALIDATION
    server = False
    length_defined = True

    def __init__(
        self,
        method: str = "anonymous",
        auth: Any = None,
        buffer_size: int = 0x10000,
        registry_size: int = 0x7FFF,
        qos: int = 0,
    ) -> None:
        self.buffer_size = buffer_size
        self.registry_size = registry_size
        self.qos = qos
        self.method = method
        self.auth = auth

    @classmethod
    def _decode(cls, buf, pos, be, cache, optype):
        _need(buf, pos, 8, "CONNECTION_VALIDATION")
        bufsize, regsize, qos = _I_H_S[be].unpack_from(buf, pos)
        method, pos = decode_string(buf, pos + 8, be)
        auth = None
        if pos < len(buf):  # very old clients stop after the method name
            auth, pos = decode_typed_value(buf, pos, be, cache)
        return cls(method, auth, bufsize, regsize, qos), pos

    def encode(self, be, cache=None):
        return (
            _I_H_S[be].pack(self.buffer_size, self.registry_size, self.qos)
            + encode_string(self.method, be)
            + encode_typed_value(self.auth, be, cache)
        )


class ConnectionValidated(_Message):
    """CONNECTION_VALIDATED (0x09) S→C: the verdict on the client's validation."""

    __slots__ = ("status",)
    command = CMD_CONNECTION_VALIDATED
    server = True

    def __init__(self, status: Any = None) -> None:
        self.status = Status.OK if status is None else status

    @classmethod
    def _decode(cls, buf, pos, be, cache, optype):
        status, pos = decode_status(buf, pos, be)
        return cls(status), pos

    def encode(self, be, cache=None):
        return encode_status(self.status, be)


class Echo(_Message):
    """ECHO (0x02): keepalive.  The server answers with exactly the same body bytes."""

    __slots__ = ("payload",)
    command = CMD_ECHO
    length_defined = True

    def __init__(self, payload: bytes = b"") -> None:
        self.payload = bytes(payload)

    @classmethod
    def _decode(cls, buf, pos, be, cache, optype):
        return cls(bytes(buf[pos:])), len(buf)

    def encode(self, be, cache=None):
        return self.payload


# -- channels -----------------------------------------------------------------------------


class CreateChannelRequest(_Message):
    """CREATE_CHANNEL (0x07) C→S: ``[(cid, name)]``.  Send exactly one: pvAccessCPP's server
    drops the connection on any other count (§4.6)."""

    __slots__ = ("channels",)
    command = CMD_CREATE_CHANNEL
    server = False

    def __init__(self, channels: list[tuple[int, str]]) -> None:
        self.channels = list(channels)

    @classmethod
    def _decode(cls, buf, pos, be, cache, optype):
        _need(buf, pos, 2, "CREATE_CHANNEL count")
        count = _U16[be].unpack_from(buf, pos)[0]
        pos += 2
        _need(buf, pos, 5 * count, "CREATE_CHANNEL names")
        u32 = _U32[be].unpack_from
        channels = []
        for _ in range(count):
            cid = u32(buf, pos)[0]
            name, pos = decode_string(buf, pos + 4, be)
            channels.append((cid, name))
        return cls(channels), pos

    def encode(self, be, cache=None):
        u32 = _U32[be].pack
        parts = [_U16[be].pack(len(self.channels))]
        for cid, name in self.channels:
            parts.append(u32(cid))
            parts.append(encode_string(name, be))
        return b"".join(parts)


class CreateChannelResponse(_Message):
    """CREATE_CHANNEL (0x07) S→C: ``cid sid Status``; sid 0xFFFFFFFF on failure.  No
    access-rights field follows (old spec drafts had one; no C++ peer sends it)."""

    __slots__ = ("cid", "sid", "status")
    command = CMD_CREATE_CHANNEL
    server = True

    def __init__(self, cid: int, sid: int, status: Any = None) -> None:
        self.cid = cid
        self.sid = sid
        self.status = Status.OK if status is None else status

    @classmethod
    def _decode(cls, buf, pos, be, cache, optype):
        _need(buf, pos, 8, "CREATE_CHANNEL reply")
        cid, sid = _I_I[be].unpack_from(buf, pos)
        status, pos = decode_status(buf, pos + 8, be)
        return cls(cid, sid, status), pos

    def encode(self, be, cache=None):
        return _I_I[be].pack(self.cid, self.sid) + encode_status(self.status, be)


class DestroyChannel(_Message):
    """DESTROY_CHANNEL (0x08), both directions: ``sid cid``.  The server echoes the client's
    request; unsolicited from the server it means the PV went away."""

    __slots__ = ("sid", "cid")
    command = CMD_DESTROY_CHANNEL

    def __init__(self, sid: int, cid: int) -> None:
        self.sid = sid
        self.cid = cid

    @classmethod
    def _decode(cls, buf, pos, be, cache, optype):
        _need(buf, pos, 8, "DESTROY_CHANNEL")
        sid, cid = _I_I[be].unpack_from(buf, pos)
        return cls(sid, cid), pos + 8

    def encode(self, be, cache=None):
        return _I_I[be].pack(self.sid, self.cid)


class DestroyRequest(_Message):
    """DESTROY_REQUEST (0x0F) C→S: ``sid ioid``; frees an operation, no reply."""

    __slots__ = ("sid", "ioid")
    command = CMD_DESTROY_REQUEST
    server = False

    def __init__(self, sid: int, ioid: int) -> None:
        self.sid = sid
        self.ioid = ioid

    @classmethod
    def _decode(cls, buf, pos, be, cache, optype):
        _need(buf, pos, 8, COMMAND_NAMES[cls.command])
        sid, ioid = _I_I[be].unpack_from(buf, pos)
        return cls(sid, ioid), pos + 8

    def encode(self, be, cache=None):
        return _I_I[be].pack(self.sid, self.ioid)


class CancelRequest(DestroyRequest):
    """CANCEL_REQUEST (0x15) C→S: ``sid ioid``; aborts an executing GET/PUT/RPC, the
    operation stays alive.  No reply."""

    __slots__ = ()
    command = CMD_CANCEL_REQUEST


class GetFieldRequest(_Message):
    """GET_FIELD (0x11) C→S: ``sid ioid subField`` ("" = the whole PV)."""

    __slots__ = ("sid", "ioid", "subfield")
    command = CMD_GET_FIELD
    server = False

    def __init__(self, sid: int, ioid: int, subfield: str = "") -> None:
        self.sid = sid
        self.ioid = ioid
        self.subfield = subfield

    @classmethod
    def _decode(cls, buf, pos, be, cache, optype):
        _need(buf, pos, 8, "GET_FIELD")
        sid, ioid = _I_I[be].unpack_from(buf, pos)
        subfield, pos = decode_string(buf, pos + 8, be)
        return cls(sid, ioid, subfield), pos

    def encode(self, be, cache=None):
        return _I_I[be].pack(self.sid, self.ioid) + encode_string(self.subfield, be)


class GetFieldResponse(_Message):
    """GET_FIELD (0x11) S→C: ``ioid Status [FieldDesc]`` (the type only on success)."""

    __slots__ = ("ioid", "status", "type")
    command = CMD_GET_FIELD
    server = True

    def __init__(self, ioid: int, status: Any = None, type: Any = None) -> None:
        self.ioid = ioid
        self.status = Status.OK if status is None else status
        self.type = type

    @classmethod
    def _decode(cls, buf, pos, be, cache, optype):
        _need(buf, pos, 4, "GET_FIELD reply")
        ioid = _U32[be].unpack_from(buf, pos)[0]
        status, pos = decode_status(buf, pos + 4, be)
        T = None
        if _is_success(status):
            T, pos = decode_type(buf, pos, be, cache)
        return cls(ioid, status, T), pos

    def encode(self, be, cache=None):
        out = _U32[be].pack(self.ioid) + encode_status(self.status, be)
        if _is_success(self.status):
            out += encode_type(self.type, be, cache)
        return out


class LogMessage(_Message):
    """MESSAGE (0x12): ``ioid type text``, a remote log line (0 info, 1 warning, 2 error,
    3 fatal).  Advice only, never an operation failure (§4.18)."""

    __slots__ = ("ioid", "mtype", "text")
    command = CMD_MESSAGE

    def __init__(self, ioid: int, mtype: int, text: str) -> None:
        self.ioid = ioid
        self.mtype = mtype
        self.text = text

    @classmethod
    def _decode(cls, buf, pos, be, cache, optype):
        _need(buf, pos, 5, "MESSAGE")
        ioid, mtype = _U32_U8[be].unpack_from(buf, pos)
        text, pos = decode_string(buf, pos + 5, be)
        return cls(ioid, mtype, text), pos

    def encode(self, be, cache=None):
        return _U32_U8[be].pack(self.ioid, self.mtype) + encode_string(self.text, be)


class Unknown(_Message):
    """Any command we do not decode (or cannot, e.g. op data for an ioid whose type is not
    known): the raw body, so it can be forwarded or re-encoded unchanged."""

    __slots__ = ("command", "body", "sender", "reason")  # type: ignore[misc]
    length_defined = True

    def __init__(self, command: int, body: bytes, sender: bool | None = None, reason: str = "") -> None:
        self.command = command  # type: ignore[misc]
        self.body = bytes(body)
        #: the header's direction bit when decoded (True = server), for re-encoding
        self.sender = sender
        self.reason = reason

    @classmethod
    def decode_from(cls, buf, pos, be, cache=None, optype=None):
        raise TypeError("Unknown needs the command byte: use Unknown(command, body)")

    def encode(self, be, cache=None):
        return self.body


# -- channel operations (§4.8 - §4.15) ------------------------------------------------------


class MissingTypeError(DecodeError):
    """A data message was decoded without the operation's type (``optype``).  Not a
    malformed message as such: :class:`ConnectionDecoder` turns it into :class:`Unknown`."""


def _need_type(cls: type, optype: Any) -> Any:
    if optype is None:
        raise MissingTypeError(f"{cls.__name__}: data message, but the operation's type is unknown")
    return optype


class _SubcmdFlags:
    """The INIT / DESTROY bits of an operation's subcommand, shared by requests and replies."""

    __slots__ = ()
    subcmd: int

    @property
    def init(self) -> bool:
        return bool(self.subcmd & SUB_INIT)

    @property
    def destroy(self) -> bool:
        return bool(self.subcmd & SUB_DESTROY)


class _OpRequest(_SubcmdFlags, _Message):
    """``sid ioid subcmd`` + a payload chosen by the subcommand bits; C→S."""

    __slots__ = ("sid", "ioid", "subcmd")
    sid: int
    ioid: int
    subcmd: int
    server = False

    @classmethod
    def _decode(cls, buf, pos, be, cache, optype):
        _need(buf, pos, 9, COMMAND_NAMES[cls.command])
        sid, ioid, subcmd = _I_I_B[be].unpack_from(buf, pos)
        self = cls.__new__(cls)
        self.sid = sid
        self.ioid = ioid
        self.subcmd = subcmd
        pos = self._decode_payload(buf, pos + 9, be, cache, optype)
        return self, pos

    def _decode_payload(self, buf, pos, be, cache, optype) -> int:
        raise NotImplementedError

    def encode(self, be, cache=None):
        return _I_I_B[be].pack(self.sid, self.ioid, self.subcmd) + self._encode_payload(be, cache)

    def _encode_payload(self, be, cache) -> bytes:
        raise NotImplementedError


class _OpReply(_SubcmdFlags, _Message):
    """``ioid subcmd Status`` + a payload on success; S→C."""

    __slots__ = ("ioid", "subcmd", "status")
    ioid: int
    subcmd: int
    status: Any
    server = True

    @classmethod
    def _decode(cls, buf, pos, be, cache, optype):
        _need(buf, pos, 5, COMMAND_NAMES[cls.command])
        ioid, subcmd = _I_B[be].unpack_from(buf, pos)
        self = cls.__new__(cls)
        self.ioid = ioid
        self.subcmd = subcmd
        self._clear()
        pos = self._decode_payload(buf, pos + 5, be, cache, optype)
        return self, pos

    def _clear(self) -> None:
        raise NotImplementedError

    def _decode_payload(self, buf, pos, be, cache, optype) -> int:
        self.status, pos = decode_status(buf, pos, be)
        if _is_success(self.status):
            pos = self._decode_data(buf, pos, be, cache, optype)
        return pos

    def _decode_data(self, buf, pos, be, cache, optype) -> int:
        return pos

    def encode(self, be, cache=None):
        head = _I_B[be].pack(self.ioid, self.subcmd) + encode_status(self.status, be)
        if _is_success(self.status):
            return head + self._encode_data(be, cache)
        return head

    def _encode_data(self, be, cache) -> bytes:
        return b""


def _decode_any(T: Any, buf, pos: int, be: bool, cache: dict) -> tuple[tuple[Any, Any], int]:
    """Full value of any type (ARRAY data: a scalar/struct/union/any array) -> ``(T, v)``,
    the codec's convention for typed non-structure values."""
    v, pos = decode_field_value(T, buf, pos, be, cache)
    return (T, v), pos


def _encode_any(tv: tuple[Any, Any], be: bool, cache: Any) -> bytes:
    return encode_field_value(tv[0], tv[1], be, cache)


def _partial(value: Any, mask: int | None) -> int:
    return value_mask(value) if mask is None else mask


class _WithPvRequest(_OpRequest):
    """Requests whose INIT carries only the pvRequest (GET, PROCESS)."""

    __slots__ = ("pvrequest",)

    def __init__(self, sid: int, ioid: int, subcmd: int = 0, pvrequest: Any = None) -> None:
        self.sid = sid
        self.ioid = ioid
        self.subcmd = subcmd
        #: INIT only: the pvRequest Value (None = ``ff``, "everything")
        self.pvrequest = pvrequest

    def _decode_payload(self, buf, pos, be, cache, optype):
        self.pvrequest = None
        if self.subcmd & SUB_INIT:
            self.pvrequest, pos = decode_typed_value(buf, pos, be, cache)
        return pos

    def _encode_payload(self, be, cache):
        if self.subcmd & SUB_INIT:
            return encode_typed_value(self.pvrequest, be, cache)
        return b""


class GetRequest(_WithPvRequest):
    """GET (0x0A) C→S.  INIT ``08`` + pvRequest; EXEC ``00``/``40`` (``|10`` destroys after
    the reply) has no payload."""

    __slots__ = ()
    command = CMD_GET


class ProcessRequest(_WithPvRequest):
    """PROCESS (0x10) C→S (pvAccessCPP only): INIT + pvRequest, then bare EXECs."""

    __slots__ = ()
    command = CMD_PROCESS


class PutRequest(_OpRequest):
    """PUT (0x0B) C→S.  INIT + pvRequest; ``40`` fetches the current value (no payload);
    any other EXEC carries BitSet + partial value of the op's type (``value``, marked
    fields = the BitSet, or ``mask`` to override)."""

    __slots__ = ("pvrequest", "value", "mask")
    command = CMD_PUT

    def __init__(
        self,
        sid: int,
        ioid: int,
        subcmd: int = 0,
        pvrequest: Any = None,
        value: Any = None,
        mask: int | None = None,
    ) -> None:
        self.sid = sid
        self.ioid = ioid
        self.subcmd = subcmd
        self.pvrequest = pvrequest
        self.value = value
        self.mask = mask

    @property
    def changed(self) -> int:
        """The BitSet as an int mask."""
        return _partial(self.value, self.mask)

    def _has_data(self) -> bool:
        return not self.subcmd & (SUB_INIT | SUB_GET)

    def _decode_payload(self, buf, pos, be, cache, optype):
        self.pvrequest = self.value = self.mask = None
        if self.subcmd & SUB_INIT:
            self.pvrequest, pos = decode_typed_value(buf, pos, be, cache)
        elif self._has_data():
            self.value, pos = decode_partial(self._put_type(optype), buf, pos, be, cache)
        return pos

    def _put_type(self, optype: Any) -> Any:
        return _need_type(type(self), optype)

    def _encode_payload(self, be, cache):
        if self.subcmd & SUB_INIT:
            return encode_typed_value(self.pvrequest, be, cache)
        if self._has_data():
            return encode_partial(self.value, be, self.mask, cache)
        return b""


class PutGetRequest(PutRequest):
    """PUT_GET (0x0C) C→S (pvAccessCPP servers only).  INIT + pvRequest; ``40`` getGet and
    ``80`` getPut have no payload; putGet (``00``) carries BitSet + partial value of the put
    type.  ``optype`` is ``(put_type, get_type)``."""

    __slots__ = ()
    command = CMD_PUT_GET

    def _has_data(self) -> bool:
        return not self.subcmd & (SUB_INIT | SUB_GET | SUB_GET_PUT)

    def _put_type(self, optype: Any) -> Any:
        return _need_type(type(self), optype)[0]


class MonitorRequest(_OpRequest):
    """MONITOR (0x0D) C→S.  INIT ``08`` + pvRequest (``88``: + u32 ``nfree``, the initial
    pipeline window); ``80`` is a pipeline ACK carrying u32 ``nfree`` (updates consumed);
    ``44`` start, ``04`` stop, ``10`` destroy carry nothing."""

    __slots__ = ("pvrequest", "nfree")
    command = CMD_MONITOR

    def __init__(
        self, sid: int, ioid: int, subcmd: int = 0, pvrequest: Any = None, nfree: int | None = None
    ) -> None:
        self.sid = sid
        self.ioid = ioid
        self.subcmd = subcmd
        self.pvrequest = pvrequest
        self.nfree = nfree

    def _decode_payload(self, buf, pos, be, cache, optype):
        self.pvrequest = self.nfree = None
        if self.subcmd & SUB_INIT:
            self.pvrequest, pos = decode_typed_value(buf, pos, be, cache)
        if self.subcmd & SUB_GET_PUT:
            _need(buf, pos, 4, "MONITOR nfree")
            self.nfree = _U32[be].unpack_from(buf, pos)[0]
            pos += 4
        return pos

    def _encode_payload(self, be, cache):
        out = b""
        if self.subcmd & SUB_INIT:
            out = encode_typed_value(self.pvrequest, be, cache)
        if self.subcmd & SUB_GET_PUT:
            out += _U32[be].pack(self.nfree or 0)
        return out


class ArrayRequest(_OpRequest):
    """ARRAY (0x0E) C→S (pvAccessCPP only).  Precedence as pvAccessCPP's server reads it:
    INIT + pvRequest; ``40`` getArray ``offset count stride``; ``80`` setLength ``length``;
    ``04`` getLength; otherwise putArray ``offset stride`` + array (``optype`` = the array
    field's Type)."""

    __slots__ = ("pvrequest", "offset", "count", "stride", "length", "array")
    command = CMD_ARRAY

    def __init__(
        self,
        sid: int,
        ioid: int,
        subcmd: int = 0,
        pvrequest: Any = None,
        offset: int = 0,
        count: int = 0,
        stride: int = 1,
        length: int = 0,
        array: Any = None,
    ) -> None:
        self.sid = sid
        self.ioid = ioid
        self.subcmd = subcmd
        self.pvrequest = pvrequest
        self.offset = offset
        self.count = count
        self.stride = stride
        self.length = length
        self.array = array

    def _decode_payload(self, buf, pos, be, cache, optype):
        sub = self.subcmd
        self.pvrequest = self.array = None
        self.offset = self.count = self.length = 0
        self.stride = 1
        if sub & SUB_INIT:
            self.pvrequest, pos = decode_typed_value(buf, pos, be, cache)
        elif sub & SUB_GET:
            self.offset, pos = decode_size(buf, pos, be)
            self.count, pos = decode_size(buf, pos, be)
            self.stride, pos = decode_size(buf, pos, be)
        elif sub & SUB_GET_PUT:
            self.length, pos = decode_size(buf, pos, be)
        elif sub & SUB_PROCESS:
            pass
        else:
            self.offset, pos = decode_size(buf, pos, be)
            self.stride, pos = decode_size(buf, pos, be)
            self.array, pos = _decode_any(_need_type(type(self), optype), buf, pos, be, cache)
        return pos

    def _encode_payload(self, be, cache):
        sub = self.subcmd
        if sub & SUB_INIT:
            return encode_typed_value(self.pvrequest, be, cache)
        if sub & SUB_GET:
            return encode_size(self.offset, be) + encode_size(self.count, be) + encode_size(self.stride, be)
        if sub & SUB_GET_PUT:
            return encode_size(self.length, be)
        if sub & SUB_PROCESS:
            return b""
        return (
            encode_size(self.offset, be) + encode_size(self.stride, be) + _encode_any(self.array, be, cache)
        )


class RpcRequest(_OpRequest):
    """RPC (0x14) C→S.  INIT + pvRequest; EXEC carries the argument as FieldDesc + full
    value (``arg``; None = ``ff``), by convention an NTURI."""

    __slots__ = ("pvrequest", "arg")
    command = CMD_RPC

    def __init__(self, sid: int, ioid: int, subcmd: int = 0, pvrequest: Any = None, arg: Any = None) -> None:
        self.sid = sid
        self.ioid = ioid
        self.subcmd = subcmd
        self.pvrequest = pvrequest
        self.arg = arg

    def _decode_payload(self, buf, pos, be, cache, optype):
        self.pvrequest = self.arg = None
        if self.subcmd & SUB_INIT:
            self.pvrequest, pos = decode_typed_value(buf, pos, be, cache)
        else:
            self.arg, pos = decode_typed_value(buf, pos, be, cache)
        return pos

    def _encode_payload(self, be, cache):
        if self.subcmd & SUB_INIT:
            return encode_typed_value(self.pvrequest, be, cache)
        return encode_typed_value(self.arg, be, cache)


class GetReply(_OpReply):
    """GET (0x0A) S→C.  INIT reply: Status + the op's type; EXEC reply: Status + BitSet +
    partial value (``value`` decoded against ``optype``)."""

    __slots__ = ("type", "value", "mask")
    command = CMD_GET

    def __init__(
        self,
        ioid: int,
        subcmd: int = 0,
        status: Any = None,
        type: Any = None,
        value: Any = None,
        mask: int | None = None,
    ) -> None:
        self.ioid = ioid
        self.subcmd = subcmd
        self.status = Status.OK if status is None else status
        self.type = type
        self.value = value
        self.mask = mask

    @property
    def changed(self) -> int:
        return _partial(self.value, self.mask)

    def _clear(self):
        self.type = self.value = self.mask = None

    def _decode_data(self, buf, pos, be, cache, optype):
        if self.subcmd & SUB_INIT:
            self.type, pos = decode_type(buf, pos, be, cache)
        else:
            self.value, pos = decode_partial(_need_type(type(self), optype), buf, pos, be, cache)
        return pos

    def _encode_data(self, be, cache):
        if self.subcmd & SUB_INIT:
            return encode_type(self.type, be, cache)
        return encode_partial(self.value, be, self.mask, cache)


class PutReply(GetReply):
    """PUT (0x0B) S→C.  INIT reply: Status + type; ``40`` reply: Status + BitSet + partial
    value; a put reply is the Status alone."""

    __slots__ = ()
    command = CMD_PUT

    def _decode_data(self, buf, pos, be, cache, optype):
        if self.subcmd & SUB_INIT:
            self.type, pos = decode_type(buf, pos, be, cache)
        elif self.subcmd & SUB_GET:
            self.value, pos = decode_partial(_need_type(type(self), optype), buf, pos, be, cache)
        return pos

    def _encode_data(self, be, cache):
        if self.subcmd & SUB_INIT:
            return encode_type(self.type, be, cache)
        if self.subcmd & SUB_GET:
            return encode_partial(self.value, be, self.mask, cache)
        return b""


class PutGetReply(_OpReply):
    """PUT_GET (0x0C) S→C.  INIT reply: Status + put type + get type; ``80`` (getPut):
    BitSet + partial put value; ``00``/``40``: BitSet + partial get value."""

    __slots__ = ("put_type", "get_type", "value", "mask")
    command = CMD_PUT_GET

    def __init__(
        self,
        ioid: int,
        subcmd: int = 0,
        status: Any = None,
        put_type: Any = None,
        get_type: Any = None,
        value: Any = None,
        mask: int | None = None,
    ) -> None:
        self.ioid = ioid
        self.subcmd = subcmd
        self.status = Status.OK if status is None else status
        self.put_type = put_type
        self.get_type = get_type
        self.value = value
        self.mask = mask

    @property
    def changed(self) -> int:
        return _partial(self.value, self.mask)

    def _clear(self):
        self.put_type = self.get_type = self.value = self.mask = None

    def _decode_data(self, buf, pos, be, cache, optype):
        sub = self.subcmd
        if sub & SUB_INIT:
            self.put_type, pos = decode_type(buf, pos, be, cache)
            self.get_type, pos = decode_type(buf, pos, be, cache)
        else:
            types = _need_type(type(self), optype)
            T = types[0] if (sub & SUB_GET_PUT and not sub & SUB_GET) else types[1]
            self.value, pos = decode_partial(T, buf, pos, be, cache)
        return pos

    def _encode_data(self, be, cache):
        if self.subcmd & SUB_INIT:
            return encode_type(self.put_type, be, cache) + encode_type(self.get_type, be, cache)
        return encode_partial(self.value, be, self.mask, cache)


class MonitorReply(_OpReply):
    """MONITOR (0x0D) S→C, read as the pvxs client reads it:

    * ``08`` INIT reply: Status + type;
    * ``10`` end of stream: Status, then (rarely) an update if bytes remain;
    * anything else: an update, *no Status*: BitSet changed + partial value + BitSet
      overrun.  An empty update body (pvAccessCPP notify-only queue) leaves ``value`` None.

    ``status`` is None for plain updates."""

    __slots__ = ("type", "value", "mask", "overrun")
    command = CMD_MONITOR
    length_defined = True

    def __init__(
        self,
        ioid: int,
        subcmd: int = 0,
        status: Any = None,
        type: Any = None,
        value: Any = None,
        mask: int | None = None,
        overrun: int = 0,
    ) -> None:
        self.ioid = ioid
        self.subcmd = subcmd
        if status is None and subcmd & (SUB_INIT | SUB_DESTROY):
            status = Status.OK
        self.status = status
        self.type = type
        self.value = value
        self.mask = mask
        self.overrun = overrun

    @property
    def changed(self) -> int:
        return _partial(self.value, self.mask)

    def _clear(self):
        self.status = self.type = self.value = self.mask = None
        self.overrun = 0

    def _decode_payload(self, buf, pos, be, cache, optype):
        sub = self.subcmd
        if sub & (SUB_INIT | SUB_DESTROY):
            self.status, pos = decode_status(buf, pos, be)
            if not _is_success(self.status):
                return pos
            if sub & SUB_INIT:
                self.type, pos = decode_type(buf, pos, be, cache)
                return pos
        if pos < len(buf):
            self.value, pos = decode_partial(_need_type(type(self), optype), buf, pos, be, cache)
            self.overrun, pos = decode_bitset(buf, pos, be)
        return pos

    def encode(self, be, cache=None):
        sub = self.subcmd
        out = _I_B[be].pack(self.ioid, sub)
        if sub & (SUB_INIT | SUB_DESTROY):
            status = Status.OK if self.status is None else self.status
            out += encode_status(status, be)
            if not _is_success(status):
                return out
            if sub & SUB_INIT:
                return out + encode_type(self.type, be, cache)
        if self.value is not None:
            out += encode_partial(self.value, be, self.mask, cache) + encode_bitset(self.overrun, be)
        return out


class ArrayReply(_OpReply):
    """ARRAY (0x0E) S→C (pvAccessCPP only), in pvAccessCPP's order of precedence: ``40``
    getArray: the array (Size n + elements, no BitSet); ``04`` getLength: Size length;
    INIT: the array field's type; otherwise the Status alone."""

    __slots__ = ("type", "array", "length")
    command = CMD_ARRAY

    def __init__(
        self,
        ioid: int,
        subcmd: int = 0,
        status: Any = None,
        type: Any = None,
        array: Any = None,
        length: int = 0,
    ) -> None:
        self.ioid = ioid
        self.subcmd = subcmd
        self.status = Status.OK if status is None else status
        self.type = type
        self.array = array
        self.length = length

    def _clear(self):
        self.type = self.array = None
        self.length = 0

    def _decode_data(self, buf, pos, be, cache, optype):
        sub = self.subcmd
        if sub & SUB_GET:
            self.array, pos = _decode_any(_need_type(type(self), optype), buf, pos, be, cache)
        elif sub & SUB_PROCESS:
            self.length, pos = decode_size(buf, pos, be)
        elif sub & SUB_INIT:
            self.type, pos = decode_type(buf, pos, be, cache)
        return pos

    def _encode_data(self, be, cache):
        sub = self.subcmd
        if sub & SUB_GET:
            return _encode_any(self.array, be, cache)
        if sub & SUB_PROCESS:
            return encode_size(self.length, be)
        if sub & SUB_INIT:
            return encode_type(self.type, be, cache)
        return b""


class ProcessReply(_OpReply):
    """PROCESS (0x10) S→C: Status only, for INIT and EXEC alike."""

    __slots__ = ()
    command = CMD_PROCESS

    def __init__(self, ioid: int, subcmd: int = 0, status: Any = None) -> None:
        self.ioid = ioid
        self.subcmd = subcmd
        self.status = Status.OK if status is None else status

    def _clear(self):
        pass


class RpcReply(_OpReply):
    """RPC (0x14) S→C.  The INIT reply is the Status alone (no type); an EXEC reply carries
    the result as FieldDesc + full value (``value``; None = ``ff``)."""

    __slots__ = ("value",)
    command = CMD_RPC

    def __init__(self, ioid: int, subcmd: int = 0, status: Any = None, value: Any = None) -> None:
        self.ioid = ioid
        self.subcmd = subcmd
        self.status = Status.OK if status is None else status
        self.value = value

    def _clear(self):
        self.value = None

    def _decode_data(self, buf, pos, be, cache, optype):
        if not self.subcmd & SUB_INIT:
            self.value, pos = decode_typed_value(buf, pos, be, cache)
        return pos

    def _encode_data(self, be, cache):
        if self.subcmd & SUB_INIT:
            return b""
        return encode_typed_value(self.value, be, cache)


# -- dispatch ------------------------------------------------------------------------------

#: command -> class for messages sent by clients (header direction bit clear)
CLIENT_MESSAGES: dict[int, type[_Message]] = {
    CMD_BEACON: Beacon,
    CMD_CONNECTION_VALIDATION: ClientValidation,
    CMD_ECHO: Echo,
    CMD_SEARCH: Search,
    CMD_SEARCH_RESPONSE: SearchResponse,
    CMD_CREATE_CHANNEL: CreateChannelRequest,
    CMD_DESTROY_CHANNEL: DestroyChannel,
    CMD_CONNECTION_VALIDATED: ConnectionValidated,
    CMD_GET: GetRequest,
    CMD_PUT: PutRequest,
    CMD_PUT_GET: PutGetRequest,
    CMD_MONITOR: MonitorRequest,
    CMD_ARRAY: ArrayRequest,
    CMD_DESTROY_REQUEST: DestroyRequest,
    CMD_PROCESS: ProcessRequest,
    CMD_GET_FIELD: GetFieldRequest,
    CMD_MESSAGE: LogMessage,
    CMD_RPC: RpcRequest,
    CMD_CANCEL_REQUEST: CancelRequest,
    CMD_ORIGIN_TAG: OriginTag,
}

#: command -> class for messages sent by servers (header direction bit set)
SERVER_MESSAGES: dict[int, type[_Message]] = {
    CMD_BEACON: Beacon,
    CMD_CONNECTION_VALIDATION: ServerValidation,
    CMD_ECHO: Echo,
    CMD_SEARCH: Search,
    CMD_SEARCH_RESPONSE: SearchResponse,
    CMD_CREATE_CHANNEL: CreateChannelResponse,
    CMD_DESTROY_CHANNEL: DestroyChannel,
    CMD_CONNECTION_VALIDATED: ConnectionValidated,
    CMD_GET: GetReply,
    CMD_PUT: PutReply,
    CMD_PUT_GET: PutGetReply,
    CMD_MONITOR: MonitorReply,
    CMD_ARRAY: ArrayReply,
    CMD_DESTROY_REQUEST: DestroyRequest,
    CMD_PROCESS: ProcessReply,
    CMD_GET_FIELD: GetFieldResponse,
    CMD_MESSAGE: LogMessage,
    CMD_RPC: RpcReply,
    CMD_CANCEL_REQUEST: CancelRequest,
    CMD_ORIGIN_TAG: OriginTag,
}

_TABLES = (CLIENT_MESSAGES, SERVER_MESSAGES)


def message_class(command: int, server: bool) -> type[_Message] | None:
    """The class decoding ``command`` sent by a server (True) or a client (False)."""
    return _TABLES[server].get(command)


def decode_message(frame: Frame, cache: dict | None = None, optype: Any = None) -> Any:
    """Decode one application frame with no connection state (``Unknown`` for commands we
    do not know).  Data messages need ``optype``; see :class:`ConnectionDecoder`."""
    server = bool(frame.flags & FLAG_SERVER)
    cls = _TABLES[server].get(frame.command)
    if cls is None:
        return Unknown(frame.command, frame.body, server, "unknown command")
    return cls.decode(frame.body, bool(frame.flags & FLAG_BE), cache, optype)


def encode_message(
    msg: Any, be: bool, cache: Any = None, *, server: bool | None = None, version: int = 2
) -> bytes:
    """Header + body.  The direction bit comes from ``server``, else from the message class
    (or, for :class:`Unknown`, the direction it was received with)."""
    if server is None:
        server = msg.sender if isinstance(msg, Unknown) else msg.server
        if server is None:
            raise ValueError(f"{type(msg).__name__} is sent by either side: pass server=True/False")
    return encode_frame(msg.command, msg.encode(be, cache), be=be, server=server, version=version)


# -- per-connection state ------------------------------------------------------------------

#: ops whose INIT reply defines the type used by later data messages
_TYPED_OPS = frozenset((CMD_GET, CMD_PUT, CMD_PUT_GET, CMD_MONITOR, CMD_ARRAY))
_OP_COMMANDS = frozenset((CMD_GET, CMD_PUT, CMD_PUT_GET, CMD_MONITOR, CMD_ARRAY, CMD_PROCESS, CMD_RPC))


class ConnectionDecoder:
    """Sans-I/O decoding state of one TCP connection: the two receive type caches (one per
    direction, §3.3) and the type of every live operation (ioid -> optype).

    It decodes both directions, so one instance can follow a whole captured conversation;
    a server (or client) feeds it only what it receives, tells it the op types it defines
    itself with :meth:`set_type` and calls :meth:`forget` for ops it destroys itself.  Op lifetime follows §4: a type is learned from a
    successful INIT reply and forgotten on DESTROY_REQUEST, a MONITOR ``10`` from either
    side, any reply with the ``10`` bit, a failed INIT, or DESTROY_CHANNEL of its channel.

    Data for an ioid whose type is unknown (e.g. a reply still in flight after a destroy)
    decodes as :class:`Unknown` with a reason instead of failing: pvxs ignores such
    messages too (and, like it, we cannot see cache definitions inside them).
    """

    __slots__ = ("caches", "types", "_sid_of")

    def __init__(self) -> None:
        #: receive caches keyed by the sender's direction bit (True = sent by the server)
        self.caches: dict[bool, dict] = {False: {}, True: {}}
        #: ioid -> optype for live operations
        self.types: dict[int, Any] = {}
        self._sid_of: dict[int, int] = {}

    def set_type(self, ioid: int, optype: Any, sid: int | None = None) -> None:
        """Record the type data messages of ``ioid`` decode against."""
        self.types[ioid] = optype
        if sid is not None:
            self._sid_of[ioid] = sid

    def forget(self, ioid: int) -> None:
        """Drop an op: later data for it decodes as :class:`Unknown`."""
        self.types.pop(ioid, None)
        self._sid_of.pop(ioid, None)

    def decode(self, frame: Frame) -> Any:
        """Decode one application frame and update the op table."""
        return self.decode_body(
            frame.command, frame.body, bool(frame.flags & FLAG_BE), bool(frame.flags & FLAG_SERVER)
        )

    def decode_body(self, command: int, body, be: bool, server: bool) -> Any:
        cls = _TABLES[server].get(command)
        if cls is None:
            return Unknown(command, body, server, "unknown command")
        cache = self.caches[server]
        if command not in _OP_COMMANDS:
            msg = cls.decode(body, be, cache)
            if command == CMD_DESTROY_REQUEST:
                self.forget(msg.ioid)
            elif command == CMD_DESTROY_CHANNEL:
                for ioid in [i for i, s in self._sid_of.items() if s == msg.sid]:
                    self.forget(ioid)
            return msg

        # an op message: its ioid selects the op's type (data messages need it)
        hdr = 9 if not server else 5
        if len(body) < hdr:
            raise DecodeError(f"{COMMAND_NAMES[command]}: truncated ({len(body)} bytes)")
        if server:
            ioid, subcmd = _I_B[be].unpack_from(body, 0)
        else:
            sid, ioid, subcmd = _I_I_B[be].unpack_from(body, 0)
        try:
            msg = cls.decode(body, be, cache, self.types.get(ioid))
        except MissingTypeError:
            return Unknown(command, body, server, f"no type known for ioid {ioid}")

        if not server:
            if subcmd & SUB_INIT:
                self._sid_of[ioid] = sid
            elif command == CMD_MONITOR and subcmd & SUB_DESTROY:
                self.forget(ioid)
        elif subcmd & SUB_INIT:
            if msg.status is not None and _is_success(msg.status):
                if command == CMD_PUT_GET:
                    self.types[ioid] = (msg.put_type, msg.get_type)
                elif command in _TYPED_OPS:
                    self.types[ioid] = msg.type
            else:
                self.forget(ioid)
        elif subcmd & SUB_DESTROY:
            self.forget(ioid)
        return msg
