"""What a CA peer accepts, in which state, and what it answers otherwise — as data.

ca-protocol.md has no formal state diagram; it records what RSRV and libca do with each
command (§2.1 table, §2.3, §10 checklist).  Those facts are collected here as tables plus
small validators that return a :class:`Verdict` instead of doing I/O, so a transport
applies them in a few lines::

    >>> from capva.ca.framing import split_datagram
    >>> circuit = ServerCircuit()
    >>> echo, version = split_datagram(bytes.fromhex(
    ...     "00170000000000000000000000000000" "000000000000000d0000000000000000"))
    >>> circuit.receive(echo)          # anything before VERSION
    Verdict(action=<Action.ERROR: 2>, status=278, text='CAS: Client version 0 too old')
    >>> circuit.receive(version).action, circuit.client_minor
    (<Action.ACCEPT: 0>, 13)

Where RSRV and catvs disagree the choice is documented at the rule (e.g. an invalid type
in WRITE keeps the circuit open, as catvs prefers).
"""

from __future__ import annotations

import struct
from enum import Enum, IntEnum
from typing import NamedTuple

from . import commands as _cmd
from . import dbr as _dbr
from .constants import (
    ACCESS_RIGHTS,
    ANY_ADDRESS,
    CLEAR_CHANNEL,
    CLIENT_NAME,
    CREATE_CH_FAIL,
    CREATE_CHAN,
    ECHO,
    ERROR,
    EVENT_ADD,
    EVENT_CANCEL,
    EVENTS_OFF,
    EVENTS_ON,
    HOST_NAME,
    MAX_CLIENT_NAME_SIZE,
    MAX_PV_NAME_SIZE,
    MINIMUM_SUPPORTED_MINOR,
    MINOR_VERSION,
    NOT_FOUND,
    PRIORITY_MAX,
    READ,
    READ_NOTIFY,
    READ_SYNC,
    REPEATER_CONFIRM,
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
from .framing import _HDR, _HDR_PACK, RawMessage, decode_cstring
from .status import (
    ECA_BADCOUNT,
    ECA_BADMASK,
    ECA_BADMONID,
    ECA_BADTYPE,
    ECA_DEFUNCT,
    ECA_INTERNAL,
    ECA_NORDACCESS,
    ECA_NORMAL,
    ECA_NOWTACCESS,
    ECA_TOLARGE,
)

__all__ = [
    "Action",
    "Verdict",
    "ACCEPT",
    "IGNORE",
    "CLIENT_TCP_COMMANDS",
    "SERVER_TCP_COMMANDS",
    "CLIENT_UDP_COMMANDS",
    "SERVER_UDP_COMMANDS",
    "CHANNEL_OPERATIONS",
    "ServerCircuit",
    "ClientCircuit",
    "check_operation",
    "server_datagram",
    "search_reply_datagram",
    "ChannelState",
    "ChannelEvent",
    "CHANNEL_TRANSITIONS",
    "next_channel_state",
]


class Action(IntEnum):
    """What the receiver of a message does."""

    ACCEPT = 0  # process it normally
    IGNORE = 1  # nothing to send, nothing to do (state may have been updated)
    ERROR = 2  # send ERROR(status, text) about it; keep the circuit; do not process it
    ERROR_CLOSE = 3  # send ERROR(status, text), then close the circuit
    CLOSE = 4  # close the circuit without a reply
    REPLY = 5  # do not process; answer with the command's own reply carrying ``status``


class Verdict(NamedTuple):
    action: Action
    status: int = ECA_NORMAL
    text: str = ""


ACCEPT = Verdict(Action.ACCEPT)
IGNORE = Verdict(Action.IGNORE)

# -- who may send what, over which transport (§2.1) -----------------------------------------------------

#: what RSRV processes from a client over TCP; anything else: ERROR ECA_INTERNAL + close
CLIENT_TCP_COMMANDS = frozenset(
    {
        VERSION,
        EVENT_ADD,
        EVENT_CANCEL,
        READ,
        WRITE,
        SEARCH,
        EVENTS_OFF,
        EVENTS_ON,
        READ_SYNC,
        CLEAR_CHANNEL,
        READ_NOTIFY,
        CREATE_CHAN,
        WRITE_NOTIFY,
        CLIENT_NAME,
        HOST_NAME,
        ECHO,
    }
)
#: what libca accepts from a server over TCP; anything else disconnects the circuit
SERVER_TCP_COMMANDS = frozenset(
    {
        VERSION,
        EVENT_ADD,
        READ,
        SEARCH,
        READ_SYNC,
        ERROR,
        CLEAR_CHANNEL,
        NOT_FOUND,
        READ_NOTIFY,
        CREATE_CHAN,
        WRITE_NOTIFY,
        ACCESS_RIGHTS,
        ECHO,
        CREATE_CH_FAIL,
        SERVER_DISCONN,
    }
)
#: what RSRV reads from a search datagram; any other command ends the datagram
CLIENT_UDP_COMMANDS = frozenset({VERSION, SEARCH})
#: what a client reads from datagrams (search replies, beacons, the repeater)
SERVER_UDP_COMMANDS = frozenset({VERSION, SEARCH, RSRV_IS_UP, REPEATER_CONFIRM, NOT_FOUND})

#: requests that name a channel by SID (p1); an unknown SID is "Bad Resource ID"
CHANNEL_OPERATIONS = frozenset(
    {EVENT_ADD, EVENT_CANCEL, READ, WRITE, READ_NOTIFY, WRITE_NOTIFY, CLEAR_CHANNEL}
)

_BAD_CODE = Verdict(Action.ERROR_CLOSE, ECA_INTERNAL, "CAS: invalid (damaged?) request code from TCP")
_MISALIGNED = Verdict(Action.ERROR_CLOSE, ECA_INTERNAL, "CAS: Missaligned protocol rejected")
_TOO_OLD = Verdict(Action.ERROR, ECA_DEFUNCT, "CAS: Client version 0 too old")


class ServerCircuit:
    """The server's view of one TCP circuit, before any channel logic (RSRV, §2.3, §10.3).

    Feed every framed message to :meth:`receive` and act on the :class:`Verdict`.  The
    rules, in order:

    * a payload size that is not a multiple of 8: ERROR ECA_INTERNAL, close;
    * a code a client never sends (obsolete codes, codes ≥ 28, server-only codes):
      ERROR ECA_INTERNAL "invalid (damaged?) request code from TCP", close;
    * a message over the reader's size limit: ERROR ECA_TOLARGE, circuit kept (§1.4);
    * before the client's VERSION: ERROR ECA_DEFUNCT, circuit kept, request dropped;
      VERSION with priority > 99 closes the circuit; a minor below 4 is refused the same
      way as a missing VERSION;
    * later VERSIONs update minor and priority silently;
    * CLIENT_NAME / HOST_NAME: empty, without NUL or longer than 512 bytes: ERROR, close;
      once a channel exists: ERROR ECA_INTERNAL "... ignored by server", circuit kept.

    Tell it about channels with :meth:`channel_created` / :meth:`channel_cleared`.
    """

    __slots__ = ("client_minor", "priority", "user_name", "host_name", "channels")

    def __init__(self) -> None:
        self.client_minor = 0  # 0 until VERSION arrives
        self.priority = 0
        self.user_name = ""
        self.host_name = ""
        self.channels = 0

    @property
    def versioned(self) -> bool:
        return self.client_minor >= MINIMUM_SUPPORTED_MINOR

    def channel_created(self) -> None:
        self.channels += 1

    def channel_cleared(self) -> None:
        self.channels = max(0, self.channels - 1)

    def receive(self, raw: RawMessage) -> Verdict:
        cmd = raw.command
        if raw.payload_size & 7:
            return _MISALIGNED
        if cmd not in CLIENT_TCP_COMMANDS:
            return _BAD_CODE
        if raw.oversize:
            return Verdict(
                Action.ERROR,
                ECA_TOLARGE,
                f"CAS: Server unable to load large request message ({raw.payload_size} bytes)",
            )
        if cmd == VERSION:
            if raw.data_type > PRIORITY_MAX:
                return Verdict(Action.CLOSE, ECA_NORMAL, f"priority {raw.data_type} above {PRIORITY_MAX}")
            if raw.data_count < MINIMUM_SUPPORTED_MINOR:
                return Verdict(Action.ERROR, ECA_DEFUNCT, f"CAS: Client version {raw.data_count} too old")
            first = not self.versioned
            self.client_minor = raw.data_count
            self.priority = raw.data_type
            return ACCEPT if first else IGNORE
        if not self.versioned:
            return _TOO_OLD
        if cmd in (CLIENT_NAME, HOST_NAME):
            return self._name(raw)
        return ACCEPT

    def _name(self, raw: RawMessage) -> Verdict:
        what = "client name" if raw.command == CLIENT_NAME else "host name"
        if raw.payload_size > MAX_CLIENT_NAME_SIZE:
            return Verdict(Action.ERROR_CLOSE, ECA_INTERNAL, f"CAS: {what} too long")
        try:
            name = decode_cstring(raw.payload)
        except CADecodeError:
            return Verdict(Action.ERROR_CLOSE, ECA_INTERNAL, f"CAS: {what} without terminator")
        if self.channels:
            return Verdict(Action.ERROR, ECA_INTERNAL, f"CAS: {what} change ignored by server")
        if raw.command == CLIENT_NAME:
            self.user_name = name
        else:
            self.host_name = name
        return ACCEPT


_WRITE_TYPES = frozenset(range(_dbr.DOUBLE + 1)) | {_dbr.PUT_ACKT, _dbr.PUT_ACKS}


def check_operation(
    command: _cmd.Command,
    *,
    sid_known: bool = True,
    subscription_known: bool = True,
    readable: bool = True,
    writable: bool = True,
) -> Verdict:
    """The error policy for channel requests (§2.3, §5.4, §10.5).

    * unknown SID: ERROR ECA_INTERNAL "Bad Resource ID", close (RSRV);
    * invalid DBR type (> 38): READ_NOTIFY, EVENT_ADD and READ close silently (catvs
      ``test_get_bad``); WRITE gets ERROR ECA_BADTYPE and keeps the circuit (catvs
      accepts that); WRITE_NOTIFY gets its reply with ECA_BADTYPE.  Writes accept only
      the plain types and PUT_ACKT/PUT_ACKS (libca refuses others; so do we);
    * a write whose payload is shorter than its count needs: ECA_BADCOUNT (ERROR for
      WRITE, the reply for WRITE_NOTIFY);
    * EVENT_ADD with mask 0: ERROR ECA_BADMASK, circuit kept (RSRV sends ECA_ALLOCMEM
      and disconnects; the doc allows the better answer);
    * EVENT_CANCEL of an unknown subscription: ERROR ECA_BADMONID, close (RSRV);
    * no read access: READ_NOTIFY / EVENT_ADD reply with ECA_NORDACCESS and zeroed
      data; READ gets ERROR ECA_NORDACCESS;
    * no write access: WRITE gets ERROR ECA_NOWTACCESS, WRITE_NOTIFY its reply.
    """
    code = command.ID
    if code not in CHANNEL_OPERATIONS:
        return ACCEPT
    if not sid_known:
        return Verdict(Action.ERROR_CLOSE, ECA_INTERNAL, "Bad Resource ID")
    if code == CLEAR_CHANNEL:
        return ACCEPT
    if code == EVENT_CANCEL:
        if not subscription_known:
            return Verdict(Action.ERROR_CLOSE, ECA_BADMONID, "bad subscription id")
        return ACCEPT
    dtype = getattr(command, "data_type", 0)
    if code in (WRITE, WRITE_NOTIFY):
        action = Action.ERROR if code == WRITE else Action.REPLY
        if dtype not in _WRITE_TYPES:
            return Verdict(action, ECA_BADTYPE, f"invalid DBR type {dtype} for a write")
        info = _dbr.DBR[dtype]
        count = getattr(command, "data_count", 0)
        need = info.value_offset + count * info.value_size
        data = getattr(command, "data", b"")
        short_string = info.native == _dbr.STRING and count == 1
        if len(data) < need and not short_string:
            return Verdict(action, ECA_BADCOUNT, f"{count} elements of type {dtype} need {need} bytes")
        if not writable:
            return Verdict(action, ECA_NOWTACCESS, "write access denied")
        return ACCEPT
    if not _dbr.is_valid_type(dtype):
        return Verdict(Action.CLOSE, ECA_BADTYPE, f"invalid DBR type {dtype}")
    if code == EVENT_ADD and getattr(command, "mask", 1) == 0:
        return Verdict(Action.ERROR, ECA_BADMASK, "subscription install with empty event mask")
    if not readable:
        if code == READ:
            return Verdict(Action.ERROR, ECA_NORDACCESS, "read access denied")
        return Verdict(Action.REPLY, ECA_NORDACCESS, "read access denied")
    return ACCEPT


class ClientCircuit:
    """libca's rule for a TCP circuit: a command it does not expect from a server closes
    the whole circuit ("bad TCP response", §2.1)."""

    __slots__ = ("server_minor",)

    def __init__(self) -> None:
        self.server_minor = 0

    def receive(self, raw: RawMessage) -> Verdict:
        if raw.command not in SERVER_TCP_COMMANDS:
            return Verdict(Action.CLOSE, ECA_INTERNAL, f"bad TCP response: command {raw.command}")
        if raw.command == VERSION:
            self.server_minor = raw.data_count
        return ACCEPT


# -- search datagrams (§2.3, §10.2) ---------------------------------------------------------------------


def server_datagram(
    messages: list[RawMessage],
) -> tuple[_cmd.VersionRequest | None, list[_cmd.SearchRequest]]:
    """RSRV's reading of one search datagram: ``(VERSION, searches)``.

    The datagram counts only if it starts with a VERSION of a supported minor (≥ 4);
    each later VERSION replaces it.  Names over 500 characters are skipped (RSRV's
    ``unreasonablePVNameSize``).  Parsing stops at the first command other than
    VERSION/SEARCH (a UDP ECHO included) or at a malformed SEARCH; the searches before
    that point stand.  ``(None, [])`` means "drop the datagram".
    """
    if not messages or messages[0].command != VERSION:
        return None, []
    version = _cmd.VersionRequest.from_raw(messages[0])
    if version.version < MINIMUM_SUPPORTED_MINOR:
        return None, []
    searches: list[_cmd.SearchRequest] = []
    for raw in messages[1:]:
        if raw.command == VERSION:
            version = _cmd.VersionRequest.from_raw(raw)
            if version.version < MINIMUM_SUPPORTED_MINOR:
                break
            continue
        if raw.command != SEARCH:
            break
        try:
            search = _cmd.SearchRequest.from_raw(raw)
        except CADecodeError:
            break
        if len(search.name) <= MAX_PV_NAME_SIZE:  # longer: RSRV's "unreasonable" names
            searches.append(search)
    return version, searches


def plain_search_datagram(data: bytes) -> tuple[int, int, list[tuple[str, int]]] | None:
    """``(client minor, sequence, [(name, cid)])`` of a search datagram of the ordinary shape:
    one VERSION, then SEARCH requests with 16-byte headers, 8-byte aligned, with names that
    are NUL-terminated and at most ``MAX_PV_NAME_SIZE`` bytes long; None for anything else.

    Why: that is every datagram libca sends, and a connect of 1000 channels waits for 40 of
    them in turn; this reads one without building a message object per search (the general
    :func:`server_datagram` took 5 µs a name).  None means "ask the general path", which
    gives the same answer for a datagram this one accepts, and handles every corner case.
    """
    n = len(data)
    if n < 16:
        return None
    cmd, size, _, minor, seq, _ = _HDR.unpack_from(data, 0)
    if cmd != VERSION or size or minor < MINIMUM_SUPPORTED_MINOR:
        return None
    out = []
    off = 16
    while off < n:
        if n - off < 16:
            return None
        cmd, size, _, _, _, cid = _HDR.unpack_from(data, off)
        off += 16
        if cmd != SEARCH or size == 0xFFFF or size & 7 or off + size > n:
            return None
        end = data.find(b"\0", off, off + size) - off
        if end <= 0 or end > MAX_PV_NAME_SIZE:
            return None
        out.append((data[off : off + end].decode("utf-8", "surrogateescape"), cid))
        off += size
    return (minor, seq, out) if out else None


_MINOR_PAYLOAD = struct.Struct(">H6x").pack(MINOR_VERSION)


def plain_search_reply(minor: int, sequence: int, port: int, cids: list[int]) -> bytes:
    """:func:`search_reply_datagram` for :func:`plain_search_datagram`'s reading: replies
    (this server's TCP ``port``, the source address) for ``cids``, in their order."""
    if not cids:
        return b""
    parts = (
        [_HDR_PACK(VERSION, 0, SEQUENCE_VALID, MINOR_VERSION, sequence, 0)]
        if supports(minor, "udp_sequence")
        else []
    )
    for cid in cids:
        parts.append(_HDR_PACK(SEARCH, 8, port, 0, ANY_ADDRESS, cid))
        parts.append(_MINOR_PAYLOAD)
    return b"".join(parts)


def search_reply_datagram(version: _cmd.VersionRequest, replies: list[_cmd.SearchResponse]) -> bytes:
    """One reply datagram for one request datagram (§2.3).

    Unknown names get nothing over UDP, so no replies means no datagram (``b""``).
    Clients of minor ≥ 11 get VERSION(flag 1, 13, their sequence number) first.
    """
    if not replies:
        return b""
    parts = []
    if supports(version.version, "udp_sequence"):
        parts.append(_cmd.VersionResponse.udp(version.sequence).encode())
    parts.extend(r.encode() for r in replies)
    return b"".join(parts)


# -- a client's channel (§10 client checklist) --------------------------------------------------------------


class ChannelState(Enum):
    SEARCHING = "searching"  # search datagrams out, no reply yet
    CREATING = "creating"  # CREATE_CHAN sent on a circuit
    CONNECTED = "connected"  # CREATE_CHAN reply received
    CLEARING = "clearing"  # CLEAR_CHANNEL sent
    CLOSED = "closed"


class ChannelEvent(Enum):
    SEARCH_REPLY = "search reply"
    CREATED = "CREATE_CHAN reply"
    CREATE_FAILED = "CREATE_CH_FAIL"
    SERVER_DISCONN = "SERVER_DISCONN"
    CIRCUIT_LOST = "circuit lost"
    CLEAR = "clear requested"
    CLEARED = "CLEAR_CHANNEL reply"


_S, _E = ChannelState, ChannelEvent
#: (state, event) -> next state.  CREATE_CH_FAIL, SERVER_DISCONN and a lost circuit send a
#: channel back to searching; pairs not listed are protocol errors or no-ops.
CHANNEL_TRANSITIONS: dict[tuple[ChannelState, ChannelEvent], ChannelState] = {
    (_S.SEARCHING, _E.SEARCH_REPLY): _S.CREATING,
    (_S.SEARCHING, _E.CLEAR): _S.CLOSED,
    (_S.CREATING, _E.CREATED): _S.CONNECTED,
    (_S.CREATING, _E.CREATE_FAILED): _S.SEARCHING,
    (_S.CREATING, _E.CIRCUIT_LOST): _S.SEARCHING,
    (_S.CREATING, _E.CLEAR): _S.CLOSED,
    (_S.CONNECTED, _E.SERVER_DISCONN): _S.SEARCHING,
    (_S.CONNECTED, _E.CIRCUIT_LOST): _S.SEARCHING,
    (_S.CONNECTED, _E.CLEAR): _S.CLEARING,
    (_S.CLEARING, _E.CLEARED): _S.CLOSED,
    (_S.CLEARING, _E.CIRCUIT_LOST): _S.CLOSED,
}


def next_channel_state(state: ChannelState, event: ChannelEvent) -> ChannelState | None:
    """The state after ``event``, or None when the event is not expected in ``state``
    (a duplicate search reply while creating, for instance: libca warns and ignores it)."""
    return CHANNEL_TRANSITIONS.get((state, event))
