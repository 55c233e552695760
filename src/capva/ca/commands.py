"""Every CA command as a small class: fields in, bytes out, and back (ca-protocol.md §2).

A command code means different things depending on who sent it (a SEARCH request and a
SEARCH reply share code 6), so there is one class per (code, sender) and
:func:`decode_command` takes the sender::

    >>> from capva.ca.framing import split_datagram
    >>> raw = split_datagram(bytes.fromhex(
    ...     "000000000001000d0000000100000000000600080005000d00000001000000016476616c00000000"))
    >>> [decode_command(m, from_server=False) for m in raw]
    [VersionRequest(priority=1, version=13, sequence=1), SearchRequest(name='dval', cid=1, version=13, reply=5)]
    >>> SearchRequest("dval", cid=1).encode().hex()
    '000600080005000d00000001000000016476616c00000000'

Messages that carry DBR data (READ/READ_NOTIFY/EVENT_ADD replies, WRITE/WRITE_NOTIFY
requests) keep the payload bytes as received (``data``) and decode them on demand with
:meth:`~_DataCommand.values`; build them with ``from_values`` (encode once, send to many).
Decoding them again reproduces the received bytes exactly, including stale pad bytes.

Headers that arrived in the 24-byte form are re-encoded in that form (``extended``).
Reserved header fields are ignored when decoding and written as zero when encoding.

Every ``from_raw`` raises only :class:`~capva.ca.errors.CADecodeError` on bad input.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Mapping
from operator import attrgetter
from typing import Any, ClassVar, TypeVar

from . import dbr as _dbr
from .constants import (
    ACCESS_RIGHTS,
    ANY_ADDRESS,
    CLEAR_CHANNEL,
    CLIENT_NAME,
    CREATE_CH_FAIL,
    CREATE_CHAN,
    DBE_ALARM,
    DBE_VALUE,
    DO_REPLY,
    DONT_REPLY,
    ECHO,
    ERROR,
    EVENT_ADD,
    EVENT_CANCEL,
    EVENTS_OFF,
    EVENTS_ON,
    HOST_NAME,
    MINOR_VERSION,
    NOT_FOUND,
    READ,
    READ_NOTIFY,
    READ_SYNC,
    REPEATER_CONFIRM,
    REPEATER_REGISTER,
    RSRV_IS_UP,
    SEARCH,
    SEQUENCE_VALID,
    SERVER_DISCONN,
    VERSION,
    WRITE,
    WRITE_NOTIFY,
    supports,
)
from .errors import CADecodeError
from .framing import (
    Header,
    RawMessage,
    decode_cstring,
    decode_header,
    encode_cstring,
    encode_message,
    message_parts,
)
from .status import ECA_ALLOCMEM, ECA_NORMAL

__all__ = [
    "Command",
    "VersionRequest",
    "VersionResponse",
    "SearchRequest",
    "SearchResponse",
    "NotFoundResponse",
    "EchoRequest",
    "EchoResponse",
    "ReadSyncRequest",
    "ReadSyncResponse",
    "EventsOffRequest",
    "EventsOnRequest",
    "Beacon",
    "RepeaterRegisterRequest",
    "RepeaterConfirmResponse",
    "EventAddRequest",
    "EventAddResponse",
    "EventCancelRequest",
    "EventCancelResponse",
    "ReadRequest",
    "ReadResponse",
    "ReadNotifyRequest",
    "ReadNotifyResponse",
    "WriteRequest",
    "WriteNotifyRequest",
    "WriteNotifyResponse",
    "ErrorResponse",
    "ClearChannelRequest",
    "ClearChannelResponse",
    "CreateChanRequest",
    "CreateChanResponse",
    "ClientNameRequest",
    "HostNameRequest",
    "AccessRightsResponse",
    "CreateChFailResponse",
    "ServerDisconnResponse",
    "UnknownCommand",
    "CLIENT_COMMANDS",
    "SERVER_COMMANDS",
    "decode_command",
    "error_cid",
    "create_chan_replies",
    "create_chan_failure",
    "ipv4_to_int",
    "int_to_ipv4",
]

C = TypeVar("C", bound="Command")


def ipv4_to_int(address: str) -> int:
    """Dotted IPv4 text -> the u32 carried in p1/p2 (network order as an int).

    >>> hex(ipv4_to_int("127.0.0.1"))
    '0x7f000001'
    """
    return int(ipaddress.IPv4Address(address))


def int_to_ipv4(value: int) -> str:
    """The inverse of :func:`ipv4_to_int`."""
    return str(ipaddress.IPv4Address(value & 0xFFFFFFFF))


class Command:
    """Base of all commands.  Subclasses set ``ID`` (the command code), ``FROM_SERVER``
    (who sends it) and ``_FIELDS`` (their attribute names, for ``==`` and ``repr``), and
    implement ``_header()`` -> ``(data_type, data_count, p1, p2)``, ``_payload()`` and
    ``from_raw()``.
    """

    __slots__ = ("_extended",)
    ID: ClassVar[int]
    FROM_SERVER: ClassVar[bool]
    _FIELDS: ClassVar[tuple[str, ...]] = ()

    @property
    def extended(self) -> bool:
        """Encode with the 24-byte header even when the sizes do not need it."""
        try:
            return self._extended
        except AttributeError:
            return False

    @extended.setter
    def extended(self, value: bool) -> None:
        self._extended = bool(value)

    def _header(self) -> tuple[int, int, int, int]:
        return 0, 0, 0, 0

    def _payload(self) -> bytes:
        return b""

    def encode(self) -> bytes:
        """Header + payload padded to 8: the bytes to send."""
        dtype, dcnt, p1, p2 = self._header()
        return encode_message(self.ID, self._payload(), dtype, dcnt, p1, p2, extended=self.extended)

    def parts(self) -> list[bytes]:
        """``[header, payload, padding]`` for ``writelines`` (no copy of large data)."""
        dtype, dcnt, p1, p2 = self._header()
        return message_parts(self.ID, self._payload(), dtype, dcnt, p1, p2, extended=self.extended)

    @classmethod
    def from_raw(cls: type[C], raw: RawMessage) -> C:  # pragma: no cover - overridden
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._FIELDS)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        parts = []
        for f in self._FIELDS:
            v = getattr(self, f)
            if isinstance(v, (bytes, bytearray)) and len(v) > 16:
                parts.append(f"{f}=<{len(v)} bytes>")
            else:
                parts.append(f"{f}={v!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


# -- VERSION (0) ----------------------------------------------------------------------------------


class VersionRequest(Command):
    """Client VERSION: ``0,0,priority,minor,sequence,0``.

    Over TCP it must come first; ``priority`` is the circuit priority 0..99.  Over UDP
    libca puts :data:`~capva.ca.constants.SEQUENCE_VALID` (1) in the priority field and the
    search sequence number in p1 (see :meth:`udp`).
    """

    __slots__ = ("priority", "version", "sequence")
    _FIELDS = __slots__
    ID = VERSION
    FROM_SERVER = False

    def __init__(self, priority: int = 0, version: int = MINOR_VERSION, sequence: int = 0) -> None:
        self.priority = priority
        self.version = version
        self.sequence = sequence

    @classmethod
    def udp(cls, sequence: int, version: int = MINOR_VERSION) -> VersionRequest:
        """The VERSION libca puts in front of its search datagrams."""
        return cls(SEQUENCE_VALID, version, sequence)

    def _header(self) -> tuple[int, int, int, int]:
        return self.priority, self.version, self.sequence, 0

    @classmethod
    def from_raw(cls, raw: RawMessage) -> VersionRequest:
        return cls(raw.data_type, raw.data_count, raw.parameter1)


class VersionResponse(Command):
    """Server VERSION: ``0,0,flag,minor,sequence,0``.

    RSRV sends ``0,0,0,13,0,0`` on TCP at accept time, and ``0,0,1,13,<client seq>,0`` in
    front of UDP search replies to clients of minor ≥ 11 (:meth:`udp`).  caproto's TCP
    form ``0,0,1,13,1,0`` decodes as flag=1, sequence=1.
    """

    __slots__ = ("version", "flag", "sequence")
    _FIELDS = __slots__
    ID = VERSION
    FROM_SERVER = True

    def __init__(self, version: int = MINOR_VERSION, flag: int = 0, sequence: int = 0) -> None:
        self.version = version
        self.flag = flag
        self.sequence = sequence

    @classmethod
    def udp(cls, sequence: int, version: int = MINOR_VERSION) -> VersionResponse:
        """The VERSION RSRV puts in front of a search reply datagram (echoing ``sequence``)."""
        return cls(version, SEQUENCE_VALID, sequence)

    def _header(self) -> tuple[int, int, int, int]:
        return self.flag, self.version, self.sequence, 0

    @classmethod
    def from_raw(cls, raw: RawMessage) -> VersionResponse:
        return cls(raw.data_count, raw.data_type, raw.parameter1)


# -- SEARCH (6) / NOT_FOUND (14) ------------------------------------------------------------------


class SearchRequest(Command):
    """``6, len, reply flag, client minor, cid, cid`` + NUL-terminated name.

    ``reply`` is DONT_REPLY (5, libca over UDP) or DO_REPLY (10: a TCP name server answers
    NOT_FOUND for unknown names).  The CID goes in both p1 and p2 as libca does; decoding
    takes p2, the one RSRV echoes.
    """

    __slots__ = ("name", "cid", "version", "reply")
    _FIELDS = __slots__
    ID = SEARCH
    FROM_SERVER = False

    def __init__(self, name: str, cid: int, version: int = MINOR_VERSION, reply: int = DONT_REPLY) -> None:
        self.name = name
        self.cid = cid
        self.version = version
        self.reply = reply

    def _header(self) -> tuple[int, int, int, int]:
        return self.reply, self.version, self.cid, self.cid

    def _payload(self) -> bytes:
        return encode_cstring(self.name)

    @classmethod
    def from_raw(cls, raw: RawMessage) -> SearchRequest:
        return cls(decode_cstring(raw.payload), raw.parameter2, raw.data_count, raw.data_type)


_MINOR_PAYLOAD = struct.Struct(">H6x")


class SearchResponse(Command):
    """``6, 8, server TCP port, 0, server IPv4 or 0xFFFFFFFF, cid`` + u16 server minor.

    ``ip`` = :data:`~capva.ca.constants.ANY_ADDRESS` tells the client to use the reply's
    source address.  RSRV's TCP search reply has no payload: ``version=None``.
    """

    __slots__ = ("port", "cid", "ip", "version")
    _FIELDS = __slots__
    ID = SEARCH
    FROM_SERVER = True

    def __init__(
        self, port: int, cid: int, ip: int = ANY_ADDRESS, version: int | None = MINOR_VERSION
    ) -> None:
        self.port = port
        self.cid = cid
        self.ip = ip
        self.version = version

    def _header(self) -> tuple[int, int, int, int]:
        return self.port, 0, self.ip, self.cid

    def _payload(self) -> bytes:
        return b"" if self.version is None else _MINOR_PAYLOAD.pack(self.version)

    @property
    def address(self) -> str | None:
        """The server address as text, or None for "the sender of this reply"."""
        return None if self.ip == ANY_ADDRESS else int_to_ipv4(self.ip)

    @classmethod
    def from_raw(cls, raw: RawMessage) -> SearchResponse:
        p = raw.payload
        if not p:
            version = None
        elif len(p) >= 2:
            version = (p[0] << 8) | p[1]
        else:
            raise CADecodeError("search reply payload of 1 byte cannot hold the server minor version")
        return cls(raw.data_type, raw.parameter2, raw.parameter1, version)


class NotFoundResponse(Command):
    """``14, 0, reply flag, client minor, cid, cid``: the SEARCH request header echoed.

    Sent only over TCP, and only for DO_REPLY searches (§2.3).
    """

    __slots__ = ("cid", "version", "reply")
    _FIELDS = __slots__
    ID = NOT_FOUND
    FROM_SERVER = True

    def __init__(self, cid: int, version: int = MINOR_VERSION, reply: int = DO_REPLY) -> None:
        self.cid = cid
        self.version = version
        self.reply = reply

    @classmethod
    def for_search(cls, request: SearchRequest) -> NotFoundResponse:
        return cls(request.cid, request.version, request.reply)

    def _header(self) -> tuple[int, int, int, int]:
        return self.reply, self.version, self.cid, self.cid

    @classmethod
    def from_raw(cls, raw: RawMessage) -> NotFoundResponse:
        return cls(raw.parameter2, raw.data_count, raw.data_type)


# -- reflected messages: ECHO (23), READ_SYNC (10) ------------------------------------------------


class _Direct(Command):
    """Base of the commands whose first four fields are the header's data type, count, p1 and
    p2, in that order, and whose fifth, if they have one, is the payload as received: their
    ``_header`` and ``from_raw`` are these two, not a copy in every class."""

    __slots__ = ()
    _HEADER: ClassVar[Callable[[Any], tuple[int, int, int, int]]]

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if len(cls._FIELDS) >= 4:
            cls._HEADER = attrgetter(*cls._FIELDS[:4])  # type: ignore[assignment]

    def _header(self) -> tuple[int, int, int, int]:
        return type(self)._HEADER(self)

    @classmethod
    def from_raw(cls: type[C], raw: RawMessage) -> C:
        if len(cls._FIELDS) == 4:
            return cls(raw.data_type, raw.data_count, raw.parameter1, raw.parameter2)  # type: ignore[call-arg]
        return cls(raw.data_type, raw.data_count, raw.parameter1, raw.parameter2, raw.payload)  # type: ignore[call-arg]


class _Reflected(_Direct):
    """A header (and payload) the receiver sends back unchanged."""

    __slots__ = ("data_type", "data_count", "parameter1", "parameter2", "payload")
    _FIELDS = __slots__

    def __init__(
        self,
        data_type: int = 0,
        data_count: int = 0,
        parameter1: int = 0,
        parameter2: int = 0,
        payload: bytes = b"",
    ) -> None:
        self.data_type = data_type
        self.data_count = data_count
        self.parameter1 = parameter1
        self.parameter2 = parameter2
        self.payload = payload

    def _payload(self) -> bytes:
        return self.payload

    def reply(self) -> Command:
        """The reflection: same fields, the other direction's class."""
        return _REFLECTION[type(self)](
            self.data_type, self.data_count, self.parameter1, self.parameter2, self.payload
        )


class EchoRequest(_Reflected):
    """ECHO from a client (libca: all zeros).  RSRV returns it exactly (§2.3)."""

    __slots__ = ()
    ID = ECHO
    FROM_SERVER = False


class EchoResponse(_Reflected):
    """ECHO from a server (the reflection of an :class:`EchoRequest`)."""

    __slots__ = ()
    ID = ECHO
    FROM_SERVER = True


class ReadSyncRequest(_Reflected):
    """READ_SYNC (deprecated): RSRV echoes the header back; libca treats that as an echo."""

    __slots__ = ()
    ID = READ_SYNC
    FROM_SERVER = False


class ReadSyncResponse(_Reflected):
    __slots__ = ()
    ID = READ_SYNC
    FROM_SERVER = True


_REFLECTION: dict[type, Any] = {
    EchoRequest: EchoResponse,
    EchoResponse: EchoRequest,
    ReadSyncRequest: ReadSyncResponse,
    ReadSyncResponse: ReadSyncRequest,
}


# -- header-only commands ---------------------------------------------------------------------------


class _Empty(Command):
    __slots__ = ()

    @classmethod
    def from_raw(cls: type[C], raw: RawMessage) -> C:
        return cls()


class EventsOffRequest(_Empty):
    """EVENTS_OFF: pause subscription updates on this circuit (flow control, §5.3)."""

    __slots__ = ()
    ID = EVENTS_OFF
    FROM_SERVER = False


class EventsOnRequest(_Empty):
    """EVENTS_ON: resume updates; the server sends each subscription's latest value."""

    __slots__ = ()
    ID = EVENTS_ON
    FROM_SERVER = False


class Beacon(Command):
    """RSRV_IS_UP: ``13, 0, server minor, server TCP port, beacon id, server IPv4 or 0``.

    RSRV sends address 0 and lets the repeater fill in the source address (§4.3).
    """

    __slots__ = ("version", "server_port", "beacon_id", "address")
    _FIELDS = __slots__
    ID = RSRV_IS_UP
    FROM_SERVER = True

    def __init__(
        self, server_port: int, beacon_id: int, address: int = 0, version: int = MINOR_VERSION
    ) -> None:
        self.version = version
        self.server_port = server_port
        self.beacon_id = beacon_id
        self.address = address

    def _header(self) -> tuple[int, int, int, int]:
        return self.version, self.server_port, self.beacon_id, self.address

    @classmethod
    def from_raw(cls, raw: RawMessage) -> Beacon:
        return cls(raw.data_count, raw.parameter1, raw.parameter2, raw.data_type)


class RepeaterRegisterRequest(Command):
    """``24,0,0,0,0,client IPv4``.  On Linux libca registers with an empty datagram
    instead, which :func:`~capva.ca.framing.split_datagram` returns as ``[]``."""

    __slots__ = ("client_address",)
    _FIELDS = __slots__
    ID = REPEATER_REGISTER
    FROM_SERVER = False

    def __init__(self, client_address: int = 0) -> None:
        self.client_address = client_address

    def _header(self) -> tuple[int, int, int, int]:
        return 0, 0, 0, self.client_address

    @classmethod
    def from_raw(cls, raw: RawMessage) -> RepeaterRegisterRequest:
        return cls(raw.parameter2)


class RepeaterConfirmResponse(Command):
    """``17,0,0,0,0,IPv4 of the registered client``, from the repeater."""

    __slots__ = ("client_address",)
    _FIELDS = __slots__
    ID = REPEATER_CONFIRM
    FROM_SERVER = True

    def __init__(self, client_address: int) -> None:
        self.client_address = client_address

    def _header(self) -> tuple[int, int, int, int]:
        return 0, 0, 0, self.client_address

    @classmethod
    def from_raw(cls, raw: RawMessage) -> RepeaterConfirmResponse:
        return cls(raw.parameter2)


# -- commands with DBR data ---------------------------------------------------------------------------


class _DataCommand(_Direct):
    """Base of the messages whose payload is a DBR (``data``, kept as received)."""

    __slots__ = ()
    data_type: int
    data_count: int
    data: bytes

    def _payload(self) -> bytes:
        return self.data

    def values(self) -> tuple[_dbr.Values, _dbr.Metadata | None]:
        """``(values, metadata)`` decoded from ``data`` (see :func:`capva.ca.dbr.decode`)."""
        return _dbr.decode(self.data_type, self.data, self.data_count)


def _dbr_payload(
    data_type: int, values: Any, metadata: _dbr.Metadata | None, count: int | None, compact: bool = False
) -> tuple[bytes, int]:
    data = _dbr.encode(data_type, values, metadata, count=count, compact=compact)
    if count is None:
        info = _dbr.DBR[data_type]
        count = (len(data) - info.value_offset) // info.value_size if not compact else 1
    return data, count


class EventAddRequest(_Direct):
    """``1, 16, type, count, sid, subscription id`` + f32 low, high, timeout, u16 mask, pad.

    low/high/timeout are obsolete (always 0, ignored by servers).  ``mask`` is a
    combination of ``DBE_*``; pyepics and camonitor use VALUE|ALARM (5).
    """

    __slots__ = ("data_type", "data_count", "sid", "subscription_id", "mask", "low", "high", "timeout")
    _FIELDS = __slots__
    ID = EVENT_ADD
    FROM_SERVER = False
    _BODY = struct.Struct(">fffH2x")

    def __init__(
        self,
        data_type: int,
        data_count: int,
        sid: int,
        subscription_id: int,
        mask: int = DBE_VALUE | DBE_ALARM,
        low: float = 0.0,
        high: float = 0.0,
        timeout: float = 0.0,
    ) -> None:
        self.data_type = data_type
        self.data_count = data_count
        self.sid = sid
        self.subscription_id = subscription_id
        self.mask = mask
        self.low = low
        self.high = high
        self.timeout = timeout

    def _payload(self) -> bytes:
        return self._BODY.pack(self.low, self.high, self.timeout, self.mask)

    @classmethod
    def from_raw(cls, raw: RawMessage) -> EventAddRequest:
        if len(raw.payload) < cls._BODY.size:
            raise CADecodeError(f"EVENT_ADD request payload of {len(raw.payload)} bytes, 16 expected")
        low, high, timeout, mask = cls._BODY.unpack_from(raw.payload)
        return cls(raw.data_type, raw.data_count, raw.parameter1, raw.parameter2, mask, low, high, timeout)


class EventAddResponse(_DataCommand):
    """A subscription update: ``1, size, type, count, ECA status, subscription id`` + DBR.

    Build with :meth:`from_values`; read with :meth:`values`.  An update whose payload is
    empty is an :class:`EventCancelResponse` (libca treats it so).
    """

    __slots__ = ("data_type", "data_count", "status", "subscription_id", "data")
    _FIELDS = __slots__
    ID = EVENT_ADD
    FROM_SERVER = True

    def __init__(
        self, data_type: int, data_count: int, status: int, subscription_id: int, data: bytes = b""
    ) -> None:
        self.data_type = data_type
        self.data_count = data_count
        self.status = status
        self.subscription_id = subscription_id
        self.data = data

    @classmethod
    def from_values(
        cls,
        data_type: int,
        values: Any,
        metadata: _dbr.Metadata | None = None,
        *,
        subscription_id: int,
        status: int = ECA_NORMAL,
        count: int | None = None,
    ) -> EventAddResponse:
        data, n = _dbr_payload(data_type, values, metadata, count)
        return cls(data_type, n, status, subscription_id, data)


class EventCancelRequest(_Direct):
    """``2, 0, type, count, sid, subscription id``."""

    __slots__ = ("data_type", "data_count", "sid", "subscription_id")
    _FIELDS = __slots__
    ID = EVENT_CANCEL
    FROM_SERVER = False

    def __init__(self, data_type: int, data_count: int, sid: int, subscription_id: int) -> None:
        self.data_type = data_type
        self.data_count = data_count
        self.sid = sid
        self.subscription_id = subscription_id


class EventCancelResponse(_Direct):
    """The cancel confirmation: **command 1**, size 0, the original EVENT_ADD's type and
    count, p1 = sid, p2 = subscription id (catvs checks all of it, §2.3)."""

    __slots__ = ("data_type", "data_count", "sid", "subscription_id")
    _FIELDS = __slots__
    ID = EVENT_ADD
    FROM_SERVER = True

    def __init__(self, data_type: int, data_count: int, sid: int, subscription_id: int) -> None:
        self.data_type = data_type
        self.data_count = data_count
        self.sid = sid
        self.subscription_id = subscription_id


class ReadRequest(_Direct):
    """READ (3, deprecated): ``3, 0, type, count, sid, ioid``."""

    __slots__ = ("data_type", "data_count", "sid", "ioid")
    _FIELDS = __slots__
    ID = READ
    FROM_SERVER = False

    def __init__(self, data_type: int, data_count: int, sid: int, ioid: int) -> None:
        self.data_type = data_type
        self.data_count = data_count
        self.sid = sid
        self.ioid = ioid


class ReadResponse(_DataCommand):
    """READ reply: ``3, size, type, count, cid, ioid`` + DBR.  p1 is the **CID**, not a
    status; errors come as ERROR messages.  RSRV cuts a count-1 DBR_STRING to strlen+1
    (``from_values(..., compact=True)``)."""

    __slots__ = ("data_type", "data_count", "cid", "ioid", "data")
    _FIELDS = __slots__
    ID = READ
    FROM_SERVER = True

    def __init__(self, data_type: int, data_count: int, cid: int, ioid: int, data: bytes = b"") -> None:
        self.data_type = data_type
        self.data_count = data_count
        self.cid = cid
        self.ioid = ioid
        self.data = data

    @classmethod
    def from_values(
        cls,
        data_type: int,
        values: Any,
        metadata: _dbr.Metadata | None = None,
        *,
        cid: int,
        ioid: int,
        count: int | None = None,
        compact: bool = False,
    ) -> ReadResponse:
        data, n = _dbr_payload(data_type, values, metadata, count, compact)
        return cls(data_type, n, cid, ioid, data)


class ReadNotifyRequest(_Direct):
    """``15, 0, type, count, sid, ioid``.  Count 0 asks for the current length (minor ≥ 13)."""

    __slots__ = ("data_type", "data_count", "sid", "ioid")
    _FIELDS = __slots__
    ID = READ_NOTIFY
    FROM_SERVER = False

    def __init__(self, data_type: int, data_count: int, sid: int, ioid: int) -> None:
        self.data_type = data_type
        self.data_count = data_count
        self.sid = sid
        self.ioid = ioid


class ReadNotifyResponse(_DataCommand):
    """``15, size, type, count, ECA status, ioid`` + DBR.

    On ECA_GETFAIL / ECA_NORDACCESS the payload is still full size, zeroed (§2.3).
    """

    __slots__ = ("data_type", "data_count", "status", "ioid", "data")
    _FIELDS = __slots__
    ID = READ_NOTIFY
    FROM_SERVER = True

    def __init__(self, data_type: int, data_count: int, status: int, ioid: int, data: bytes = b"") -> None:
        self.data_type = data_type
        self.data_count = data_count
        self.status = status
        self.ioid = ioid
        self.data = data

    @classmethod
    def from_values(
        cls,
        data_type: int,
        values: Any,
        metadata: _dbr.Metadata | None = None,
        *,
        ioid: int,
        status: int = ECA_NORMAL,
        count: int | None = None,
    ) -> ReadNotifyResponse:
        data, n = _dbr_payload(data_type, values, metadata, count)
        return cls(data_type, n, status, ioid, data)


class WriteRequest(_DataCommand):
    """WRITE: ``4, size, type, count, sid, cid`` + DBR; no reply on success.

    libca puts the channel's CID in p2 (the old spec calls it an IOID).  ``compact``
    sends a single string as strlen+1 bytes, as libca does.
    """

    __slots__ = ("data_type", "data_count", "sid", "cid", "data")
    _FIELDS = __slots__
    ID = WRITE
    FROM_SERVER = False

    def __init__(self, data_type: int, data_count: int, sid: int, cid: int, data: bytes = b"") -> None:
        self.data_type = data_type
        self.data_count = data_count
        self.sid = sid
        self.cid = cid
        self.data = data

    @classmethod
    def from_values(
        cls,
        data_type: int,
        values: Any,
        metadata: _dbr.Metadata | None = None,
        *,
        sid: int,
        cid: int,
        count: int | None = None,
        compact: bool = False,
    ) -> WriteRequest:
        data, n = _dbr_payload(data_type, values, metadata, count, compact)
        return cls(data_type, n, sid, cid, data)


class WriteNotifyRequest(_DataCommand):
    """``19, size, type, count, sid, ioid`` + DBR; answered after the put completes."""

    __slots__ = ("data_type", "data_count", "sid", "ioid", "data")
    _FIELDS = __slots__
    ID = WRITE_NOTIFY
    FROM_SERVER = False

    def __init__(self, data_type: int, data_count: int, sid: int, ioid: int, data: bytes = b"") -> None:
        self.data_type = data_type
        self.data_count = data_count
        self.sid = sid
        self.ioid = ioid
        self.data = data

    @classmethod
    def from_values(
        cls,
        data_type: int,
        values: Any,
        metadata: _dbr.Metadata | None = None,
        *,
        sid: int,
        ioid: int,
        count: int | None = None,
        compact: bool = False,
    ) -> WriteNotifyRequest:
        data, n = _dbr_payload(data_type, values, metadata, count, compact)
        return cls(data_type, n, sid, ioid, data)


class WriteNotifyResponse(_Direct):
    """``19, 0, type, count, ECA status, ioid``: type and count echoed from the request."""

    __slots__ = ("data_type", "data_count", "status", "ioid")
    _FIELDS = __slots__
    ID = WRITE_NOTIFY
    FROM_SERVER = True

    def __init__(self, data_type: int, data_count: int, status: int, ioid: int) -> None:
        self.data_type = data_type
        self.data_count = data_count
        self.status = status
        self.ioid = ioid

    @classmethod
    def for_request(cls, request: WriteNotifyRequest, status: int = ECA_NORMAL) -> WriteNotifyResponse:
        return cls(request.data_type, request.data_count, status, request.ioid)


# -- ERROR (11) ----------------------------------------------------------------------------------------


class ErrorResponse(Command):
    """``11, size, 0, 0, cid or 0xFFFFFFFF, ECA status`` + the failing request's header +
    NUL-terminated text.

    ``original`` is a :class:`~capva.ca.framing.Header` (24 bytes on the wire if it came
    extended).  libca dispatches an ERROR by the embedded command and its p2 (§2.3).
    Stale pad bytes after the text (RSRV leaks them) are dropped when decoding.
    """

    __slots__ = ("original", "cid", "status", "message")
    _FIELDS = __slots__
    ID = ERROR
    FROM_SERVER = True

    def __init__(self, original: Header, status: int, message: str = "", cid: int = 0xFFFFFFFF) -> None:
        self.original = original
        self.status = status
        self.message = message
        self.cid = cid

    @classmethod
    def for_request(
        cls,
        request: RawMessage | Header,
        status: int,
        message: str = "",
        *,
        cid: int = 0xFFFFFFFF,
        client_minor: int = MINOR_VERSION,
    ) -> ErrorResponse:
        """ERROR about ``request``: its header is copied without its payload.

        The copy keeps the 24-byte form only for clients of minor ≥ 9; for older ones an
        (impossible) large size or count is clipped to 0xFFFE to fit the 16-byte form.
        """
        hdr = request.header if isinstance(request, RawMessage) else request
        if hdr.extended and not supports(client_minor, "extended_header"):
            hdr = hdr._replace(
                payload_size=min(hdr.payload_size, 0xFFFE),
                data_count=min(hdr.data_count, 0xFFFE),
                extended=False,
            )
        return cls(hdr, status, message, cid)

    def _header(self) -> tuple[int, int, int, int]:
        return 0, 0, self.cid, self.status

    def _payload(self) -> bytes:
        return self.original.encode() + encode_cstring(self.message)

    @classmethod
    def from_raw(cls, raw: RawMessage) -> ErrorResponse:
        try:
            hdr, hlen = decode_header(raw.payload)
        except CADecodeError as exc:
            raise CADecodeError(f"ERROR message too short for the embedded header: {exc}") from None
        text = decode_cstring(raw.payload[hlen:], require_nul=False)
        return cls(hdr, raw.parameter2, text, raw.parameter1)


# -- channels ------------------------------------------------------------------------------------------


class ClearChannelRequest(Command):
    """``12, 0, 0, 0, sid, cid``."""

    __slots__ = ("sid", "cid")
    _FIELDS = __slots__
    ID = CLEAR_CHANNEL
    FROM_SERVER = False

    def __init__(self, sid: int, cid: int) -> None:
        self.sid = sid
        self.cid = cid

    def _header(self) -> tuple[int, int, int, int]:
        return 0, 0, self.sid, self.cid

    @classmethod
    def from_raw(cls, raw: RawMessage) -> ClearChannelRequest:
        return cls(raw.parameter1, raw.parameter2)


class ClearChannelResponse(Command):
    """The request header back, after the channel's subscriptions are gone."""

    __slots__ = ("sid", "cid")
    _FIELDS = __slots__
    ID = CLEAR_CHANNEL
    FROM_SERVER = True

    def __init__(self, sid: int, cid: int) -> None:
        self.sid = sid
        self.cid = cid

    def _header(self) -> tuple[int, int, int, int]:
        return 0, 0, self.sid, self.cid

    @classmethod
    def from_raw(cls, raw: RawMessage) -> ClearChannelResponse:
        return cls(raw.parameter1, raw.parameter2)


class CreateChanRequest(Command):
    """``18, len, 0, 0, cid, client minor`` + NUL-terminated name.

    RSRV silently ignores an empty name (payload of at most one byte): it decodes as
    ``name=""`` here so that the server can do the same.
    """

    __slots__ = ("name", "cid", "version")
    _FIELDS = __slots__
    ID = CREATE_CHAN
    FROM_SERVER = False

    def __init__(self, name: str, cid: int, version: int = MINOR_VERSION) -> None:
        self.name = name
        self.cid = cid
        self.version = version

    def _header(self) -> tuple[int, int, int, int]:
        return 0, 0, self.cid, self.version

    def _payload(self) -> bytes:
        return encode_cstring(self.name)

    @classmethod
    def from_raw(cls, raw: RawMessage) -> CreateChanRequest:
        p = raw.payload
        name = "" if len(p) <= 1 else decode_cstring(p)
        return cls(name, raw.parameter1, raw.parameter2)


class CreateChanResponse(_Direct):
    """``18, 0, native type, element count, cid, sid``: the channel is connected.

    The count is the maximum element count (NELM).  See :func:`create_chan_replies` for
    the forms older clients get.
    """

    __slots__ = ("data_type", "data_count", "cid", "sid")
    _FIELDS = __slots__
    ID = CREATE_CHAN
    FROM_SERVER = True

    def __init__(self, data_type: int, data_count: int, cid: int, sid: int) -> None:
        self.data_type = data_type
        self.data_count = data_count
        self.cid = cid
        self.sid = sid


class _NameRequest(Command):
    __slots__ = ("name",)
    _FIELDS = __slots__

    def __init__(self, name: str) -> None:
        self.name = name

    def _payload(self) -> bytes:
        return encode_cstring(self.name)

    @classmethod
    def from_raw(cls: type[C], raw: RawMessage) -> C:
        # RSRV: no NUL inside payload_size (an empty payload included) -> ERROR + disconnect
        return cls(decode_cstring(raw.payload))  # type: ignore[call-arg]


class ClientNameRequest(_NameRequest):
    """``20, len, 0, 0, 0, 0`` + user name.  Only before the first channel (§2.3)."""

    __slots__ = ()
    ID = CLIENT_NAME
    FROM_SERVER = False


class HostNameRequest(_NameRequest):
    """``21, len, 0, 0, 0, 0`` + host name.  Only before the first channel (§2.3)."""

    __slots__ = ()
    ID = HOST_NAME
    FROM_SERVER = False


class AccessRightsResponse(Command):
    """``22, 0, 0, 0, cid, rights`` with bit 0 = read, bit 1 = write."""

    __slots__ = ("cid", "access_rights")
    _FIELDS = __slots__
    ID = ACCESS_RIGHTS
    FROM_SERVER = True

    def __init__(self, cid: int, access_rights: int) -> None:
        self.cid = cid
        self.access_rights = access_rights

    def _header(self) -> tuple[int, int, int, int]:
        return 0, 0, self.cid, self.access_rights

    @classmethod
    def from_raw(cls, raw: RawMessage) -> AccessRightsResponse:
        return cls(raw.parameter1, raw.parameter2)


class _CidOnly(Command):
    __slots__ = ("cid",)
    _FIELDS = __slots__

    def __init__(self, cid: int) -> None:
        self.cid = cid

    def _header(self) -> tuple[int, int, int, int]:
        return 0, 0, self.cid, 0

    @classmethod
    def from_raw(cls: type[C], raw: RawMessage) -> C:
        return cls(raw.parameter1)  # type: ignore[call-arg]


class CreateChFailResponse(_CidOnly):
    """``26, 0, 0, 0, cid, 0``: the channel could not be created (minor ≥ 6)."""

    __slots__ = ()
    ID = CREATE_CH_FAIL
    FROM_SERVER = True


class ServerDisconnResponse(_CidOnly):
    """``27, 0, 0, 0, cid, 0``: the server dropped the channel (e.g. the PV was removed)."""

    __slots__ = ()
    ID = SERVER_DISCONN
    FROM_SERVER = True


class UnknownCommand(Command):
    """A command this sender should not send (obsolete codes, codes ≥ 28, or a code of the
    other direction).  All fields are kept so that the receiver can answer ERROR with the
    header copy, and re-encoding gives the same bytes."""

    __slots__ = ("command", "data_type", "data_count", "parameter1", "parameter2", "payload")
    _FIELDS = __slots__
    FROM_SERVER = False

    def __init__(
        self,
        command: int,
        data_type: int = 0,
        data_count: int = 0,
        parameter1: int = 0,
        parameter2: int = 0,
        payload: bytes = b"",
    ) -> None:
        self.command = command
        self.data_type = data_type
        self.data_count = data_count
        self.parameter1 = parameter1
        self.parameter2 = parameter2
        self.payload = payload

    @property
    def ID(self) -> int:  # type: ignore[override]
        return self.command

    def _header(self) -> tuple[int, int, int, int]:
        return self.data_type, self.data_count, self.parameter1, self.parameter2

    def _payload(self) -> bytes:
        return self.payload

    @classmethod
    def from_raw(cls, raw: RawMessage) -> UnknownCommand:
        return cls(raw.command, raw.data_type, raw.data_count, raw.parameter1, raw.parameter2, raw.payload)


# -- dispatch -------------------------------------------------------------------------------------------

_ClientClasses = (
    VersionRequest,
    EventAddRequest,
    EventCancelRequest,
    ReadRequest,
    WriteRequest,
    SearchRequest,
    EventsOffRequest,
    EventsOnRequest,
    ReadSyncRequest,
    ClearChannelRequest,
    ReadNotifyRequest,
    CreateChanRequest,
    WriteNotifyRequest,
    ClientNameRequest,
    HostNameRequest,
    EchoRequest,
    RepeaterRegisterRequest,
)
_ServerClasses = (
    VersionResponse,
    EventAddResponse,
    ReadResponse,
    SearchResponse,
    ReadSyncResponse,
    ErrorResponse,
    ClearChannelResponse,
    Beacon,
    NotFoundResponse,
    ReadNotifyResponse,
    RepeaterConfirmResponse,
    CreateChanResponse,
    WriteNotifyResponse,
    AccessRightsResponse,
    EchoResponse,
    CreateChFailResponse,
    ServerDisconnResponse,
)

#: command code -> class, for messages sent by clients (what a server decodes)
CLIENT_COMMANDS: dict[int, type[Command]] = {c.ID: c for c in _ClientClasses}
#: command code -> class, for messages sent by servers, beacons and the repeater
SERVER_COMMANDS: dict[int, type[Command]] = {c.ID: c for c in _ServerClasses}


def decode_command(raw: RawMessage, *, from_server: bool) -> Command:
    """The typed command of a framed message.

    ``from_server``: the message was sent by a server (or is a beacon / repeater
    message); False for messages from clients.  Codes that sender never sends decode as
    :class:`UnknownCommand`.  A server message with command 1 and no payload is the
    subscription cancel confirmation (:class:`EventCancelResponse`), as libca reads it.

    Raises :class:`CADecodeError` when a payload does not have the command's shape.
    """
    if from_server:
        cls = SERVER_COMMANDS.get(raw.command)
        if cls is EventAddResponse and not raw.payload_size:
            cls = EventCancelResponse
    else:
        cls = CLIENT_COMMANDS.get(raw.command)
    if cls is None:
        cls = UnknownCommand
    cmd = cls.from_raw(raw)
    if raw.extended:
        cmd.extended = True
    return cmd


_SID_REQUESTS = frozenset({EVENT_ADD, EVENT_CANCEL, READ, READ_NOTIFY, WRITE, WRITE_NOTIFY})


def error_cid(request: RawMessage | Header, cid_of_sid: Mapping[int, int]) -> int:
    """p1 of an ERROR about ``request``, chosen as RSRV does (§2.3).

    For requests that name a channel by SID (EVENT_ADD, EVENT_CANCEL, READ, READ_NOTIFY,
    WRITE, WRITE_NOTIFY) the channel's CID, or 0xFFFFFFFF when the SID is unknown; for
    SEARCH the request's own p1; otherwise 0xFFFFFFFF.

    >>> error_cid(Header(READ_NOTIFY, 0, 6, 1, 5, 9), {5: 0x9E})
    158
    """
    if request.command in _SID_REQUESTS:
        return cid_of_sid.get(request.parameter1, 0xFFFFFFFF)
    if request.command == SEARCH:
        return request.parameter1
    return 0xFFFFFFFF


# -- replies that depend on the client's minor version (§2.2, §2.3) ------------------------------------------


def create_chan_replies(
    client_minor: int, cid: int, sid: int, native_type: int, count: int, access_rights: int
) -> list[Command]:
    """What a server sends for a successful CREATE_CHAN, by client minor version.

    * ACCESS_RIGHTS first (minor ≥ 2), then CREATE_CHAN (catvs checks the order);
    * the native type and count only for minor ≥ 2 (zeros before);
    * the count capped at 0xFFFE for clients without large-array support (minor < 9).

    >>> [type(c).__name__ for c in create_chan_replies(13, 1, 0, 6, 1, 3)]
    ['AccessRightsResponse', 'CreateChanResponse']
    """
    out: list[Command] = []
    if supports(client_minor, "access_rights"):
        out.append(AccessRightsResponse(cid, access_rights))
    if not supports(client_minor, "create_chan_type"):
        native_type, count = 0, 0
    elif not supports(client_minor, "extended_header") and count >= 0xFFFF:
        count = 0xFFFE
    out.append(CreateChanResponse(native_type, count, cid, sid))
    return out


def create_chan_failure(
    client_minor: int, request: RawMessage | CreateChanRequest, message: str = "channel not found"
) -> Command:
    """CREATE_CH_FAIL for clients of minor ≥ 6; for older ones an ERROR ECA_ALLOCMEM with
    the request header embedded (what PCAS's ``channelCreateFailed`` sends; catvs checks
    which form matches the client's version).

    >>> create_chan_failure(13, CreateChanRequest("nope", cid=0x9D)).encode().hex()
    '001a0000000000000000009d00000000'
    """
    cid = request.parameter1 if isinstance(request, RawMessage) else request.cid
    if supports(client_minor, "create_ch_fail"):
        return CreateChFailResponse(cid)
    if isinstance(request, RawMessage):
        hdr = request.header
    else:
        size = len(encode_cstring(request.name))
        hdr = Header(CREATE_CHAN, size, 0, 0, request.cid, request.version)
    return ErrorResponse.for_request(hdr, ECA_ALLOCMEM, message, cid=cid, client_minor=client_minor)
