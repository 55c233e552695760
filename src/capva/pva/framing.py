"""PVA framing, sans-I/O: the 8-byte header, flag bits, control messages, segmentation.

Every PVA message, TCP or UDP, starts with ``magic(0xCA) version flags command u32`` where the
u32 is in the byte order of flags bit 7 (pva-protocol.md §1).  This module turns a TCP byte
stream into whole application messages (:class:`MessageReader`), splits UDP datagrams
(:func:`split_datagram`) and builds headers.  It knows nothing about message bodies; that is
:mod:`capva.pva.messages`.

Receive-path rules follow pvxs ``ConnBase::bevRead`` (the strictest peer), because a message
that pvxs would reject is one we should never accept silently either:

* magic must be 0xCA and version non-zero;
* optionally, the direction bit must match the expected sender (pvxs closes the connection);
* control messages are returned as they come, even between the segments of a message;
* a continuation segment (middle/last) without an open segmented message, a new message while
  one is open, or a continuation with another command byte is an error.

All errors are :class:`~capva.pva.errors.DecodeError`.
"""

from __future__ import annotations

import struct

from .errors import DecodeError

__all__ = [
    "MAGIC",
    "PVA_VERSION",
    "HEADER_SIZE",
    "FLAG_CONTROL",
    "FLAG_SEGMENT_MASK",
    "FLAG_SEGMENT_FIRST",
    "FLAG_SEGMENT_MIDDLE",
    "FLAG_SEGMENT_LAST",
    "FLAG_SERVER",
    "FLAG_BE",
    "CTRL_SET_MARKER",
    "CTRL_ACK_MARKER",
    "CTRL_SET_BYTE_ORDER",
    "CTRL_ECHO_REQUEST",
    "CTRL_ECHO_RESPONSE",
    "CONTROL_NAMES",
    "Frame",
    "make_flags",
    "is_control",
    "is_server",
    "is_be",
    "segment_of",
    "encode_header",
    "decode_header",
    "encode_frame",
    "encode_control",
    "set_byte_order",
    "split_datagram",
    "MessageReader",
]

MAGIC = 0xCA
#: version byte we send; both C++ peers send 2 and pvAccessCPP disables its inactivity
#: timeout for peers that send <= 1 (pva-protocol.md §11.3)
PVA_VERSION = 2
HEADER_SIZE = 8

FLAG_CONTROL = 0x01
FLAG_SEGMENT_MASK = 0x30
FLAG_SEGMENT_FIRST = 0x10
FLAG_SEGMENT_MIDDLE = 0x30
FLAG_SEGMENT_LAST = 0x20
FLAG_SERVER = 0x40
FLAG_BE = 0x80

CTRL_SET_MARKER = 0
CTRL_ACK_MARKER = 1
CTRL_SET_BYTE_ORDER = 2
CTRL_ECHO_REQUEST = 3
CTRL_ECHO_RESPONSE = 4

CONTROL_NAMES = {
    CTRL_SET_MARKER: "SET_MARKER",
    CTRL_ACK_MARKER: "ACK_MARKER",
    CTRL_SET_BYTE_ORDER: "SET_BYTE_ORDER",
    CTRL_ECHO_REQUEST: "ECHO_REQUEST",
    CTRL_ECHO_RESPONSE: "ECHO_RESPONSE",
}

# magic, version, flags, command, size: the size is re-read big-endian when flags say so
_HDR_LE = struct.Struct("<BBBBI")
_HDR_BE = struct.Struct(">BBBBI")
_HDR_LE_UNPACK = _HDR_LE.unpack_from
_U32_BE_UNPACK = struct.Struct(">I").unpack_from


class Frame:
    """One complete message off the wire: header fields plus the (reassembled) body.

    For an application message ``body`` holds the payload (all segments joined) and ``data``
    its length.  For a control message ``body`` is empty and ``data`` is the 32-bit data word
    from the size field.  ``flags`` of a reassembled message are those of its last segment
    with the segment bits cleared (pvxs also takes the byte order from the last header);
    ``segments`` says how many pieces it came in (1 = unsegmented).
    """

    __slots__ = ("version", "flags", "command", "body", "data", "segments")

    def __init__(
        self, version: int, flags: int, command: int, body: bytes, data: int, segments: int = 1
    ) -> None:
        self.version = version
        self.flags = flags
        self.command = command
        self.body = body
        self.data = data
        self.segments = segments

    @property
    def be(self) -> bool:
        """Body (and size field) are big-endian."""
        return bool(self.flags & FLAG_BE)

    @property
    def server(self) -> bool:
        """Sent by a server (flags bit 6)."""
        return bool(self.flags & FLAG_SERVER)

    @property
    def control(self) -> bool:
        """A control message: no body, ``data`` carries the payload word."""
        return bool(self.flags & FLAG_CONTROL)

    def encode(self) -> bytes:
        """Header + body as one unsegmented message (control: the 8-byte message)."""
        if self.flags & FLAG_CONTROL:
            return encode_header(self.command, self.data, self.flags, self.version)
        return (
            encode_header(self.command, len(self.body), self.flags & ~FLAG_SEGMENT_MASK, self.version)
            + self.body
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frame):
            return NotImplemented
        return (
            self.version == other.version
            and self.flags == other.flags
            and self.command == other.command
            and self.body == other.body
            and self.data == other.data
            and self.segments == other.segments
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        kind = "ctrl" if self.flags & FLAG_CONTROL else "app"
        return (
            f"Frame({kind} cmd=0x{self.command:02x} flags=0x{self.flags:02x} v{self.version} "
            f"data={self.data} body={len(self.body)}B segments={self.segments})"
        )


def make_flags(*, be: bool, server: bool, control: bool = False, segment: int = 0) -> int:
    """Compose a flags byte; ``segment`` is one of the FLAG_SEGMENT_* values or 0."""
    return (
        (FLAG_BE if be else 0) | (FLAG_SERVER if server else 0) | (FLAG_CONTROL if control else 0) | segment
    )


def is_control(flags: int) -> bool:
    return bool(flags & FLAG_CONTROL)


def is_server(flags: int) -> bool:
    return bool(flags & FLAG_SERVER)


def is_be(flags: int) -> bool:
    return bool(flags & FLAG_BE)


def segment_of(flags: int) -> int:
    """0 (unsegmented), FLAG_SEGMENT_FIRST, FLAG_SEGMENT_MIDDLE or FLAG_SEGMENT_LAST."""
    return flags & FLAG_SEGMENT_MASK


def encode_header(command: int, size: int, flags: int, version: int = PVA_VERSION) -> bytes:
    """The 8-byte header; the size word follows the byte order bit in ``flags``."""
    return (_HDR_BE if flags & FLAG_BE else _HDR_LE).pack(MAGIC, version, flags, command, size)


def decode_header(buf, pos: int = 0) -> tuple[int, int, int, int]:
    """``(version, flags, command, size)`` of the header at ``pos``.

    Raises DecodeError for fewer than 8 bytes, a bad magic byte or version 0."""
    if len(buf) - pos < HEADER_SIZE:
        raise DecodeError(f"truncated header: {len(buf) - pos} bytes at offset {pos}")
    magic, version, flags, command, size = _HDR_LE_UNPACK(buf, pos)
    if magic != MAGIC:
        raise DecodeError(f"bad magic 0x{magic:02x} at offset {pos}")
    if version == 0:
        raise DecodeError(f"protocol version 0 at offset {pos}")
    if flags & FLAG_BE:
        size = _U32_BE_UNPACK(buf, pos + 4)[0]
    return version, flags, command, size


def encode_frame(command: int, body: bytes, *, be: bool, server: bool, version: int = PVA_VERSION) -> bytes:
    """Header + body of an unsegmented application message.  We never segment when sending:
    both C++ peers accept messages of any size (pva-protocol.md §1.5)."""
    flags = (FLAG_BE if be else 0) | (FLAG_SERVER if server else 0)
    return (_HDR_BE if be else _HDR_LE).pack(MAGIC, version, flags, command, len(body)) + body


def encode_control(code: int, data: int, *, be: bool, server: bool, version: int = PVA_VERSION) -> bytes:
    """An 8-byte control message.  Servers must set the server bit here too (pvxs checks it)."""
    flags = FLAG_CONTROL | (FLAG_BE if be else 0) | (FLAG_SERVER if server else 0)
    return (_HDR_BE if be else _HDR_LE).pack(MAGIC, version, flags, code, data)


_SET_BYTE_ORDER = {be: encode_control(CTRL_SET_BYTE_ORDER, 0, be=be, server=True) for be in (False, True)}


def set_byte_order(be: bool) -> bytes:
    """The SET_BYTE_ORDER message a server sends first on every TCP connection.

    Data word 0, as both C++ servers send (neither reads it)."""
    return _SET_BYTE_ORDER[be]


def split_datagram(data) -> list[Frame]:
    """Split one UDP datagram into its messages (e.g. ORIGIN_TAG followed by SEARCH).

    UDP never carries control messages or segments: pvxs ignores such datagrams, so they raise
    DecodeError here and the caller drops the whole datagram.  Bytes after the last message
    that do not form a whole message are an error too.  The frames decoded before an error
    are attached to the exception as ``frames``."""
    out: list[Frame] = []
    pos = 0
    n = len(data)
    try:
        while pos < n:
            version, flags, command, size = decode_header(data, pos)
            if flags & (FLAG_CONTROL | FLAG_SEGMENT_MASK):
                raise DecodeError(f"control or segmented message in a datagram (flags 0x{flags:02x})")
            end = pos + HEADER_SIZE + size
            if end > n:
                raise DecodeError(f"datagram truncated: message of {size} bytes at offset {pos}")
            out.append(Frame(version, flags, command, bytes(data[pos + HEADER_SIZE : end]), size))
            pos = end
    except DecodeError as exc:
        exc.frames = out  # type: ignore[attr-defined]
        raise
    return out


class MessageReader:
    """Incremental TCP framer: bytes in, whole messages out.

    ``feed(data)`` appends to an internal bytearray and returns every message completed by
    it, control messages included, in stream order.  Segments are buffered and returned as
    one :class:`Frame` after the last one.  The read offset moves over the buffer and the
    consumed prefix is dropped once per call (never per message), so draining N messages
    costs O(N) however they are chunked.

    ``expect_server``: None accepts either direction bit; True/False requires every message
    (control messages included) to have that bit, as pvxs does (a client only accepts server
    messages and vice versa).

    ``allow_empty_continuation``: pvAccessCPP tolerates a zero-length middle/last segment
    when no segmented message is open; pvxs does not.  Off by default (pvxs behaviour).

    ``max_message_size``: optional cap on one (reassembled) body, checked as soon as a header
    announces more; None means unlimited, like pvxs.

    A DecodeError leaves the reader failed: every later call raises again, because the stream
    can no longer be framed.  Frames completed in the same call before the bad bytes are
    attached to the exception as ``frames``; a caller wanting pvxs's process-then-disconnect
    order handles those, or uses :meth:`next_frame` one message at a time.
    """

    __slots__ = (
        "_buf",
        "_pos",
        "_expect_server",
        "_allow_empty_cont",
        "_max",
        "_seg_cmd",
        "_seg_parts",
        "_seg_size",
        "_error",
    )

    def __init__(
        self,
        *,
        expect_server: bool | None = None,
        allow_empty_continuation: bool = False,
        max_message_size: int | None = None,
    ) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._expect_server = expect_server
        self._allow_empty_cont = allow_empty_continuation
        self._max = max_message_size
        self._seg_cmd = -1  # command byte of the open segmented message; -1 = none open
        self._seg_parts: list[bytes] = []
        self._seg_size = 0
        self._error: DecodeError | None = None

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a returned message (partial header/body).
        Buffered segments of an unfinished segmented message are not counted."""
        return len(self._buf) - self._pos

    @property
    def in_segment(self) -> bool:
        """A segmented message has started and its last segment has not arrived."""
        return self._seg_cmd >= 0

    def feed(self, data=b"") -> list[Frame]:
        """Append ``data`` and return all messages now complete (possibly none)."""
        self.receive(data)
        out: list[Frame] = []
        try:
            self._drain(out, 0)
        except DecodeError as exc:
            exc.frames = out  # type: ignore[attr-defined]
            raise
        if self._pos:
            # drop what was consumed: once per call, never per message
            del self._buf[: self._pos]
            self._pos = 0
        return out

    def receive(self, data) -> None:
        """Append ``data`` without parsing (see :meth:`next_frame`)."""
        if self._error is not None:
            raise DecodeError(f"stream already failed: {self._error}")
        buf = self._buf
        if self._pos:
            # compact once per batch of input, never per message
            del buf[: self._pos]
            self._pos = 0
        if data:
            buf += data

    def next_frame(self) -> Frame | None:
        """The next complete message from bytes already received, or None."""
        if self._error is not None:
            raise DecodeError(f"stream already failed: {self._error}")
        out: list[Frame] = []
        self._drain(out, 1)
        return out[0] if out else None

    def _fail(self, msg: str) -> DecodeError:
        self._error = DecodeError(msg)
        return self._error

    def _drain(self, out: list[Frame], limit: int) -> None:
        """Parse messages into ``out`` (at most ``limit`` if non-zero)."""
        buf = self._buf
        n = len(buf)
        pos = self._pos
        expect_server = self._expect_server
        unpack = _HDR_LE_UNPACK
        with memoryview(buf) as mv:
            while n - pos >= HEADER_SIZE:
                magic, version, flags, command, size = unpack(buf, pos)
                if magic != MAGIC:
                    self._pos = pos
                    raise self._fail(f"bad magic 0x{magic:02x} at stream offset {pos}")
                if version == 0:
                    self._pos = pos
                    raise self._fail("protocol version 0")
                if expect_server is not None and bool(flags & FLAG_SERVER) is not expect_server:
                    self._pos = pos
                    raise self._fail(
                        f"direction bit {'set' if flags & FLAG_SERVER else 'clear'} on a message "
                        f"from the {'server' if expect_server else 'client'} (flags 0x{flags:02x})"
                    )
                if flags & FLAG_BE:
                    size = _U32_BE_UNPACK(buf, pos + 4)[0]
                if flags & FLAG_CONTROL:
                    pos += HEADER_SIZE
                    out.append(Frame(version, flags, command, b"", size))
                    if limit and len(out) >= limit:
                        break
                    continue

                seg = flags & FLAG_SEGMENT_MASK
                continuation = bool(seg & FLAG_SEGMENT_LAST)  # middle or last
                open_cmd = self._seg_cmd
                if continuation != (open_cmd >= 0) or (continuation and command != open_cmd):
                    if continuation and open_cmd < 0 and size == 0 and self._allow_empty_cont:
                        pos += HEADER_SIZE  # pvAccessCPP: "kind of valid", ignore it
                        continue
                    self._pos = pos
                    if continuation and open_cmd < 0:
                        raise self._fail(
                            f"continuation segment of command 0x{command:02x} without a first segment"
                        )
                    if not continuation:
                        raise self._fail(
                            f"message 0x{command:02x} (flags 0x{flags:02x}) while segmented 0x{open_cmd:02x} is open"
                        )
                    raise self._fail(f"segment command changed from 0x{open_cmd:02x} to 0x{command:02x}")
                if self._max is not None and self._seg_size + size > self._max:
                    self._pos = pos
                    raise self._fail(f"message of {self._seg_size + size} bytes exceeds limit {self._max}")

                end = pos + HEADER_SIZE + size
                if end > n:
                    break  # wait for the rest of the body
                body = bytes(mv[pos + HEADER_SIZE : end])
                pos = end

                if seg == 0:
                    out.append(Frame(version, flags, command, body, size))
                elif seg == FLAG_SEGMENT_FIRST:
                    self._seg_cmd = command
                    self._seg_parts = [body]
                    self._seg_size = size
                    continue
                else:
                    parts = self._seg_parts
                    parts.append(body)
                    self._seg_size += size
                    if seg == FLAG_SEGMENT_MIDDLE:
                        continue
                    full = b"".join(parts)
                    nseg = len(parts)
                    self._seg_cmd = -1
                    self._seg_parts = []
                    self._seg_size = 0
                    out.append(Frame(version, flags & ~FLAG_SEGMENT_MASK, command, full, len(full), nseg))
                if limit and len(out) >= limit:
                    break
        self._pos = pos
