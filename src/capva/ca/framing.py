"""CA framing, sans-I/O: 16/24-byte headers, padding, a TCP stream reader, a datagram splitter.

Every CA message is a 16-byte big-endian header ``command, payload_size, data_type,
data_count, p1, p2`` followed by ``payload_size`` bytes (ca-protocol.md §1.1).  When
``payload_size == 0xFFFF`` **and** ``data_count == 0`` two u32 follow (the real size and
count): the 24-byte extended header of minor ≥ 9 (§1.2).  Payloads are zero-padded to a
multiple of 8 and ``payload_size`` includes the padding (§1.3).

This module knows nothing about what the fields mean; :mod:`capva.ca.commands` does.

    >>> reader = CAMessageReader()
    >>> msgs = reader.feed(bytes.fromhex("000000000000000d0000000000000000"))
    >>> msgs[0].command, msgs[0].data_count
    (0, 13)
    >>> encode_header(0, 0, 0, 13, 0, 0).hex()
    '000000000000000d0000000000000000'
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .constants import COMMAND_NAMES, EXTENDED_HEADER_SIZE, HEADER_SIZE, MAX_TCP
from .errors import CADecodeError

__all__ = [
    "Header",
    "RawMessage",
    "CAMessageReader",
    "split_datagram",
    "decode_header",
    "encode_header",
    "encode_message",
    "message_parts",
    "needs_extended",
    "padded_size",
    "pad",
    "encode_cstring",
    "decode_cstring",
    "max_message_size_for",
]

_HDR = struct.Struct(">HHHHII")
_EXT = struct.Struct(">II")
_HDR_EXT = struct.Struct(">HHHHIIII")
_HDR_UNPACK = _HDR.unpack_from
_EXT_UNPACK = _EXT.unpack_from
_HDR_PACK = _HDR.pack
_HDR_EXT_PACK = _HDR_EXT.pack

_PADS = [b"\x00" * i for i in range(8)]


def padded_size(n: int) -> int:
    """``n`` rounded up to the next multiple of 8 (``CA_MESSAGE_ALIGN``)."""
    return (n + 7) & ~7


def pad(data: bytes) -> bytes:
    """``data`` zero-padded to a multiple of 8 bytes."""
    return data + _PADS[-len(data) & 7]


def encode_cstring(text: str | bytes) -> bytes:
    """A NUL-terminated string padded to 8, as PV names and client/host names travel.

    A string whose length is already a multiple of 8 gets 8 more bytes for its NUL (§1.3).
    Text is UTF-8; ``surrogateescape`` lets names decoded from non-UTF-8 bytes go back out
    unchanged.

    >>> encode_cstring("dval").hex()
    '6476616c00000000'
    >>> len(encode_cstring("12345678"))
    16
    """
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
    raw += b"\x00"
    return raw + _PADS[-len(raw) & 7]


def decode_cstring(payload: bytes | bytearray | memoryview, *, require_nul: bool = True) -> str:
    """The text before the first NUL of ``payload`` (pad bytes after it are ignored).

    ``require_nul``: a payload without a NUL raises :class:`CADecodeError` (RSRV rejects
    such names); when False the whole payload is the text (diagnostic strings).
    """
    raw = bytes(payload)
    end = raw.find(b"\x00")
    if end < 0:
        if require_nul:
            raise CADecodeError(f"string of {len(raw)} bytes without its NUL terminator")
        end = len(raw)
    return raw[:end].decode("utf-8", "surrogateescape")


def needs_extended(payload_size: int, data_count: int) -> bool:
    """Must this message use the 24-byte header?

    RSRV and libca switch when the (aligned) size **or** the count reaches 0xFFFF: both
    tests are ``>=``, so a plain header never carries 0xFFFF in either field (catvs reads
    either as the extended marker) (§1.2).
    """
    return payload_size >= 0xFFFF or data_count >= 0xFFFF


def max_message_size_for(max_array_bytes: int) -> int:
    """RSRV's largest accepted message with ``EPICS_CA_AUTO_ARRAY_BYTES=NO`` (§1.4)."""
    return max(MAX_TCP, max_array_bytes + HEADER_SIZE + 8)


class Header(NamedTuple):
    """The six header fields, plus whether they travelled in the 24-byte form.

    ``extended=True`` forces the 24-byte form when encoding; sizes or counts ≥ 0xFFFF use
    it anyway, so a decoded header's ``extended`` always tells the form it came in.
    ERROR messages embed a copy of the failing request's header; this is that copy too.
    """

    command: int
    payload_size: int
    data_type: int
    data_count: int
    parameter1: int
    parameter2: int
    extended: bool = False

    def encode(self) -> bytes:
        """16 bytes, or 24 when ``extended`` or when the sizes need it."""
        return encode_header(
            self.command,
            self.payload_size,
            self.data_type,
            self.data_count,
            self.parameter1,
            self.parameter2,
            extended=self.extended,
        )


def encode_header(
    command: int,
    payload_size: int,
    data_type: int,
    data_count: int,
    parameter1: int,
    parameter2: int,
    *,
    extended: bool = False,
) -> bytes:
    """Pack a header; the 24-byte form when ``extended`` or when :func:`needs_extended`.

    ``extended=True`` reproduces RSRV's habit of sending extended headers for small
    payloads.  Out-of-range fields raise ValueError (a bug of the caller, not bad input).

    >>> encode_header(15, 80000, 6, 10000, 1, 0x7E2).hex()
    '000fffff0006000000000001000007e20001388000002710'
    """
    try:
        if extended or payload_size >= 0xFFFF or data_count >= 0xFFFF:
            return _HDR_EXT_PACK(
                command, 0xFFFF, data_type, 0, parameter1, parameter2, payload_size, data_count
            )
        return _HDR_PACK(command, payload_size, data_type, data_count, parameter1, parameter2)
    except struct.error as exc:
        raise ValueError(
            f"CA header field out of range (cmd={command} size={payload_size} type={data_type} "
            f"count={data_count} p1={parameter1} p2={parameter2}): {exc}"
        ) from None


def message_parts(
    command: int,
    payload: bytes,
    data_type: int = 0,
    data_count: int = 0,
    parameter1: int = 0,
    parameter2: int = 0,
    *,
    extended: bool = False,
) -> list[bytes]:
    """``[header, payload, padding]`` for ``transport.writelines`` (no copy of a big payload).

    The padding entry is omitted when the payload is already aligned.
    """
    n = len(payload)
    padding = _PADS[-n & 7]
    hdr = encode_header(
        command, n + len(padding), data_type, data_count, parameter1, parameter2, extended=extended
    )
    if not n:
        return [hdr]
    return [hdr, payload, padding] if padding else [hdr, payload]


def encode_message(
    command: int,
    payload: bytes = b"",
    data_type: int = 0,
    data_count: int = 0,
    parameter1: int = 0,
    parameter2: int = 0,
    *,
    extended: bool = False,
) -> bytes:
    """Header + payload zero-padded to 8, as one bytes object.

    >>> encode_message(20, b"root\\x00").hex()
    '00140008000000000000000000000000726f6f7400000000'
    """
    if not payload:
        return encode_header(command, 0, data_type, data_count, parameter1, parameter2, extended=extended)
    n = len(payload)
    padding = _PADS[-n & 7]
    return (
        encode_header(
            command, n + len(padding), data_type, data_count, parameter1, parameter2, extended=extended
        )
        + payload
        + padding
    )


def decode_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[Header, int]:
    """``(Header, header length)`` of the header at ``pos``.

    Raises :class:`CADecodeError` when fewer than 16 (or, with the extended markers, 24)
    bytes are available.
    """
    avail = len(buf) - pos
    if avail < HEADER_SIZE:
        raise CADecodeError(f"truncated CA header: {max(avail, 0)} of 16 bytes at offset {pos}")
    cmd, size, dtype, dcnt, p1, p2 = _HDR_UNPACK(buf, pos)
    if size == 0xFFFF and dcnt == 0:
        if avail < EXTENDED_HEADER_SIZE:
            raise CADecodeError(f"truncated extended CA header: {avail} of 24 bytes at offset {pos}")
        size, dcnt = _EXT_UNPACK(buf, pos + HEADER_SIZE)
        return Header(cmd, size, dtype, dcnt, p1, p2, True), EXTENDED_HEADER_SIZE
    return Header(cmd, size, dtype, dcnt, p1, p2, False), HEADER_SIZE


class RawMessage:
    """One framed message: the header fields and the payload bytes (padding included).

    ``extended`` records that the header came in the 24-byte form, so that re-encoding
    (and the header copy inside an ERROR reply) reproduces it.  ``oversize`` is set by a
    :class:`CAMessageReader` with a size limit: the payload was discarded and ``payload``
    is empty; the server answers ERROR ECA_TOLARGE and keeps the circuit (§1.4).
    """

    __slots__ = (
        "command",
        "payload_size",
        "data_type",
        "data_count",
        "parameter1",
        "parameter2",
        "payload",
        "extended",
        "oversize",
    )

    def __init__(
        self,
        command: int,
        payload_size: int,
        data_type: int,
        data_count: int,
        parameter1: int,
        parameter2: int,
        payload: bytes = b"",
        extended: bool = False,
        oversize: bool = False,
    ) -> None:
        self.command = command
        self.payload_size = payload_size
        self.data_type = data_type
        self.data_count = data_count
        self.parameter1 = parameter1
        self.parameter2 = parameter2
        self.payload = payload
        self.extended = extended
        self.oversize = oversize

    @property
    def header(self) -> Header:
        return Header(
            self.command,
            self.payload_size,
            self.data_type,
            self.data_count,
            self.parameter1,
            self.parameter2,
            self.extended,
        )

    @property
    def aligned(self) -> bool:
        """payload_size is a multiple of 8 (RSRV rejects TCP messages that are not)."""
        return not self.payload_size & 7

    @property
    def name(self) -> str:
        return COMMAND_NAMES.get(self.command, f"0x{self.command:04x}")

    def encode(self) -> bytes:
        """The message exactly as framed (header form kept, payload as received)."""
        return (
            encode_header(
                self.command,
                self.payload_size,
                self.data_type,
                self.data_count,
                self.parameter1,
                self.parameter2,
                extended=self.extended,
            )
            + self.payload
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RawMessage):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in RawMessage.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        ext = " ext" if self.extended else ""
        big = " OVERSIZE" if self.oversize else ""
        return (
            f"RawMessage({self.name} size={self.payload_size} type={self.data_type} "
            f"count={self.data_count} p1=0x{self.parameter1:x} p2=0x{self.parameter2:x}{ext}{big})"
        )


def split_datagram(data: bytes | bytearray | memoryview) -> list[RawMessage]:
    """Split one UDP datagram into its messages (VERSION, then SEARCHes, ...).

    An empty datagram gives ``[]`` (libca registers with the repeater that way, §4.4).
    Bytes after the last whole message raise :class:`CADecodeError`; the messages decoded
    before them are attached to the exception as ``messages``, because RSRV processes a
    datagram up to the point where it stops making sense.

    >>> [m.name for m in split_datagram(bytes.fromhex(
    ...     "000000000001000d0000000100000000000600080005000d00000001000000016476616c00000000"))]
    ['VERSION', 'SEARCH']
    """
    out: list[RawMessage] = []
    pos = 0
    n = len(data)
    try:
        while pos < n:
            hdr, hlen = decode_header(data, pos)
            end = pos + hlen + hdr.payload_size
            if end > n:
                raise CADecodeError(
                    f"datagram truncated: {hdr.payload_size}-byte payload of command {hdr.command} "
                    f"at offset {pos} but only {n - pos - hlen} bytes left"
                )
            out.append(
                RawMessage(
                    hdr.command,
                    hdr.payload_size,
                    hdr.data_type,
                    hdr.data_count,
                    hdr.parameter1,
                    hdr.parameter2,
                    bytes(data[pos + hlen : end]),
                    hdr.extended,
                )
            )
            pos = end
    except CADecodeError as exc:
        exc.messages = out  # type: ignore[attr-defined]
        raise
    return out


class CAMessageReader:
    """Incremental TCP framer: bytes in, :class:`RawMessage` out.

    ``feed(data)`` appends to an internal bytearray and returns every message that is now
    complete, in stream order.  A read offset walks the buffer and the consumed prefix is
    dropped once per call, never per message, so draining N messages costs O(N) however
    the bytes were chunked.  It works fed whole, byte by byte, or with a partial message
    left over (kept for the next call).

    ``max_message_size`` (header + payload bytes; see :func:`max_message_size_for` for
    ``EPICS_CA_MAX_ARRAY_BYTES``): a longer message is reported as soon as its header is
    complete, as a :class:`RawMessage` with ``oversize=True`` and an empty payload; its
    payload bytes are then dropped as they arrive, never buffered.  That is RSRV's
    behaviour: ERROR ECA_TOLARGE, bytes drained, circuit kept.  None (the default) means no
    limit, like ``EPICS_CA_AUTO_ARRAY_BYTES=YES``.

    CA headers carry no magic number, so the framer itself finds nothing malformed: what a
    message means, and whether its sender may send it, is for
    :mod:`capva.ca.commands` and :mod:`capva.ca.state`.

        >>> r = CAMessageReader()
        >>> r.feed(bytes.fromhex("0017000000000000"))
        []
        >>> r.feed(bytes.fromhex("0000000000000000"))
        [RawMessage(ECHO size=0 type=0 count=0 p1=0x0 p2=0x0)]
    """

    __slots__ = ("_buf", "_pos", "_max", "_skip")

    def __init__(self, *, max_message_size: int | None = None) -> None:
        if max_message_size is not None and max_message_size < EXTENDED_HEADER_SIZE:
            raise ValueError(f"max_message_size must be at least {EXTENDED_HEADER_SIZE}")
        self._buf = bytearray()
        self._pos = 0
        self._max = max_message_size
        self._skip = 0  # payload bytes of an oversize message still to drop

    @property
    def pending(self) -> int:
        """Bytes received that are not yet part of a returned message."""
        return len(self._buf) - self._pos

    @property
    def skipping(self) -> int:
        """Payload bytes of an oversize message still to be discarded."""
        return self._skip

    def feed(self, data: bytes | bytearray | memoryview = b"") -> list[RawMessage]:
        """Append ``data``; return all messages now complete (possibly none)."""
        buf = self._buf
        if self._pos:
            del buf[: self._pos]
            self._pos = 0
        if self._skip and data:
            take = min(self._skip, len(data))
            self._skip -= take
            data = memoryview(data)[take:]
        if data:
            buf += data
        out: list[RawMessage] = []
        self._drain(out)
        if self._pos:
            # drop what was consumed: once per call, never per message
            del buf[: self._pos]
            self._pos = 0
        return out

    def _drain(self, out: list[RawMessage]) -> None:
        buf = self._buf
        n = len(buf)
        pos = self._pos
        limit = self._max
        unpack = _HDR_UNPACK
        append = out.append
        # slices of a memoryview copy once; bytearray slices would copy twice
        with memoryview(buf) as mv:
            while n - pos >= HEADER_SIZE and not self._skip:
                cmd, size, dtype, dcnt, p1, p2 = unpack(buf, pos)
                if size == 0xFFFF and dcnt == 0:
                    if n - pos < EXTENDED_HEADER_SIZE:
                        break
                    size, dcnt = _EXT_UNPACK(buf, pos + HEADER_SIZE)
                    hlen = EXTENDED_HEADER_SIZE
                    ext = True
                else:
                    hlen = HEADER_SIZE
                    ext = False
                end = pos + hlen + size
                if limit is not None and hlen + size > limit:
                    # report at once, then drop the payload as it arrives (never buffer it)
                    append(RawMessage(cmd, size, dtype, dcnt, p1, p2, b"", ext, True))
                    start = pos + hlen
                    take = min(n - start, size)
                    pos = start + take
                    self._skip = size - take
                    continue
                if end > n:
                    break  # wait for the rest of the payload
                append(RawMessage(cmd, size, dtype, dcnt, p1, p2, bytes(mv[pos + hlen : end]), ext))
                pos = end
        self._pos = pos
