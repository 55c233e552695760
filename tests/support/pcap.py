"""A small pure-Python pcap reader: UDP datagrams and reassembled TCP streams.

Enough for the loopback captures in shared/vectors (classic pcap, any byte order, micro- or
nanosecond timestamps; link types Ethernet, BSD loopback, Linux cooked v1/v2 and raw IP;
IPv4 and IPv6 without extension headers).  It exists so the tests can check the decoded
dumps against the bytes that were actually on the wire, without tshark or scapy.

TCP is reassembled per direction from sequence numbers: retransmitted bytes are dropped,
out-of-order segments are held until the gap is filled.  Chunks are reported in capture
order, so interleaving the two directions of a connection (or several connections)
reproduces the conversation as it happened.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Endpoint", "Datagram", "TcpChunk", "Capture", "read_pcap"]

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229

_GLOBAL = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}

Endpoint = tuple[str, int]  # (ip text, port)


@dataclass(frozen=True)
class Datagram:
    """One UDP datagram."""

    ts: float
    src: Endpoint
    dst: Endpoint
    payload: bytes


@dataclass(frozen=True)
class TcpChunk:
    """In-order bytes of one TCP direction, as far as this packet completed them."""

    ts: float
    src: Endpoint
    dst: Endpoint
    data: bytes

    @property
    def key(self) -> tuple[Endpoint, Endpoint]:
        return (self.src, self.dst)


@dataclass
class _Flow:
    next_seq: int | None = None
    held: dict[int, bytes] = field(default_factory=dict)


@dataclass
class Capture:
    """Everything read from one file, in capture order."""

    linktype: int
    datagrams: list[Datagram]
    chunks: list[TcpChunk]

    def streams(self) -> dict[tuple[Endpoint, Endpoint], bytes]:
        """(src, dst) -> all bytes of that TCP direction, keys in order of first data."""
        parts: dict[tuple[Endpoint, Endpoint], list[bytes]] = {}
        for c in self.chunks:
            parts.setdefault(c.key, []).append(c.data)
        return {k: b"".join(v) for k, v in parts.items()}


def _packets(data: bytes) -> Iterator[tuple[int, float, bytes]]:
    try:
        order, scale = _GLOBAL[data[:4]]
    except KeyError:
        raise ValueError(f"not a classic pcap file (magic {data[:4].hex()})") from None
    (linktype,) = struct.unpack_from(order + "I", data, 20)
    linktype &= 0x0FFFFFFF  # upper bits: FCS info
    rec = struct.Struct(order + "IIII")
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, incl, _orig = rec.unpack_from(data, pos)
        pos += 16
        yield linktype, sec + frac * scale, data[pos : pos + incl]
        pos += incl


def _ip_payload(linktype: int, frame: bytes) -> bytes | None:
    """Strip the link header; return the IP packet or None for anything else."""
    if linktype == LINKTYPE_ETHERNET:
        off, (etype,) = 12, struct.unpack_from(">H", frame, 12)
        off = 14
        while etype in (0x8100, 0x88A8):  # VLAN tags
            (etype,) = struct.unpack_from(">H", frame, off + 2)
            off += 4
        return frame[off:] if etype in (0x0800, 0x86DD) else None
    if linktype == LINKTYPE_NULL:
        return frame[4:]
    if linktype == LINKTYPE_LINUX_SLL:
        (etype,) = struct.unpack_from(">H", frame, 14)
        return frame[16:] if etype in (0x0800, 0x86DD) else None
    if linktype == LINKTYPE_LINUX_SLL2:
        (etype,) = struct.unpack_from(">H", frame, 0)
        return frame[20:] if etype in (0x0800, 0x86DD) else None
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return frame
    raise ValueError(f"unsupported pcap link type {linktype}")


def _transport(ip: bytes) -> tuple[int, str, str, bytes] | None:
    """(protocol, src, dst, transport bytes) of an IPv4/IPv6 packet."""
    version = ip[0] >> 4
    if version == 4:
        ihl = (ip[0] & 0x0F) * 4
        (total,) = struct.unpack_from(">H", ip, 2)
        flags_frag = struct.unpack_from(">H", ip, 6)[0]
        if flags_frag & 0x1FFF or flags_frag & 0x2000:
            raise ValueError("fragmented IPv4 packet: not supported")
        proto = ip[9]
        src = str(ipaddress.IPv4Address(ip[12:16]))
        dst = str(ipaddress.IPv4Address(ip[16:20]))
        return proto, src, dst, ip[ihl:total]
    if version == 6:
        (plen,) = struct.unpack_from(">H", ip, 4)
        proto = ip[6]
        src = str(ipaddress.IPv6Address(ip[8:24]))
        dst = str(ipaddress.IPv6Address(ip[24:40]))
        return proto, src, dst, ip[40 : 40 + plen]
    return None


def read_pcap(path: str | Path) -> Capture:
    """Read a capture file into datagrams and reassembled TCP chunks."""
    data = Path(path).read_bytes()
    datagrams: list[Datagram] = []
    chunks: list[TcpChunk] = []
    flows: dict[tuple[Endpoint, Endpoint], _Flow] = {}
    linktype = -1
    for linktype, ts, frame in _packets(data):
        ip = _ip_payload(linktype, frame)
        if ip is None:
            continue
        t = _transport(ip)
        if t is None:
            continue
        proto, srcip, dstip, seg = t
        if proto == 17:
            sport, dport, ulen = struct.unpack_from(">HHH", seg, 0)
            datagrams.append(Datagram(ts, (srcip, sport), (dstip, dport), bytes(seg[8:ulen])))
        elif proto == 6:
            sport, dport, seq, _ack, off_flags = struct.unpack_from(">HHIIH", seg, 0)
            doff = (off_flags >> 12) * 4
            syn = bool(off_flags & 0x02)
            payload = bytes(seg[doff:])
            key = ((srcip, sport), (dstip, dport))
            flow = flows.setdefault(key, _Flow())
            if syn:
                flow.next_seq = (seq + 1) & 0xFFFFFFFF
                flow.held.clear()
                continue
            if not payload:
                continue
            if flow.next_seq is None:  # capture started mid-connection
                flow.next_seq = seq
            out = _reassemble(flow, seq, payload)
            if out:
                chunks.append(TcpChunk(ts, key[0], key[1], out))
    return Capture(linktype, datagrams, chunks)


def _reassemble(flow: _Flow, seq: int, payload: bytes) -> bytes:
    """Add one segment; return the bytes that became contiguous."""
    assert flow.next_seq is not None
    rel = (seq - flow.next_seq) & 0xFFFFFFFF
    if rel >= 0x80000000:  # starts before next_seq: (partly) retransmitted
        overlap = (flow.next_seq - seq) & 0xFFFFFFFF
        if overlap >= len(payload):
            return b""
        payload = payload[overlap:]
        seq = flow.next_seq
        rel = 0
    if rel:
        flow.held[seq] = payload  # hole before it: keep until filled
        return b""
    out = [payload]
    flow.next_seq = (seq + len(payload)) & 0xFFFFFFFF
    while flow.held:
        progressed = False
        for hseq in list(flow.held):
            hrel = (hseq - flow.next_seq) & 0xFFFFFFFF
            if hrel == 0 or hrel >= 0x80000000:
                data = flow.held.pop(hseq)
                skip = 0 if hrel == 0 else (flow.next_seq - hseq) & 0xFFFFFFFF
                if skip < len(data):
                    out.append(data[skip:])
                    flow.next_seq = (flow.next_seq + len(data) - skip) & 0xFFFFFFFF
                progressed = True
        if not progressed:
            break
    return b"".join(out)
