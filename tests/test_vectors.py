"""Every PVA message in shared/vectors/pva, decoded and re-encoded.

Sources: the decoded dumps (a2/b2/c/d.txt from loopback captures a-d.pcap; raw_le/raw_be.txt
from a raw-socket probe in both byte orders) and the notable-message list vectors.txt.

For every message we check that

* the dump's HEX agrees with the pcap bytes (where there is a pcap; the pcap also supplies
  the bytes of messages whose HEX the dump cut short);
* the header agrees with the dump line (command, version, direction, byte order, length,
  segment bits);
* framing gives the same messages fed whole, one byte at a time, in odd chunks, and with a
  partial message left over;
* the body decodes (with :class:`ConnectionDecoder` following the conversation, so data
  messages use the op's type and pvAccessCPP's type cache is honoured) to what the dump's
  annotation says: ids, statuses, type printouts, pvRequests, bits and dotted-leaf values;
* the decoded message re-encodes to the identical bytes.  pvAccessCPP peers (the client in
  b, the server in c) are re-encoded through a :class:`SendTypeCache`, which reproduces their
  ``0xFD``/``0xFE`` registry use;
* the body decoder ignores trailing bytes (it reports where the message ended), except the
  messages whose layout is defined by the body length (``length_defined``), and every
  truncation of a body raises DecodeError and nothing else.

Known exact-bytes exceptions: the segmented 40000-double GET reply in c re-encodes as one
unsegmented message (same body; we never segment, pva-protocol.md §1.5).  Forms that no
capture contains but that cannot round-trip by design are pinned in
:func:`test_known_normalisations`.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from capva._wire import bits_from_mask
from capva.pva import messages as M
from capva.pva.codec import SendTypeCache, Status
from capva.pva.errors import DecodeError
from capva.pva.framing import (
    FLAG_BE,
    FLAG_SEGMENT_FIRST,
    FLAG_SEGMENT_LAST,
    FLAG_SEGMENT_MIDDLE,
    FLAG_SERVER,
    Frame,
    MessageReader,
    decode_header,
    split_datagram,
)
from support import find_vectors
from support.dumps import (
    Record,
    format_addr,
    format_status,
    format_type,
    leaf_values,
    literal,
    parse_dump,
    parse_vectors,
    same,
)
from support.pcap import Capture, read_pcap

HERE = Path(__file__).resolve().parent


VEC = find_vectors("pva")

#: capture dumps and the pcap each was decoded from
CAPTURES = {"a2.txt": "a.pcap", "b2.txt": "b.pcap", "c.txt": "c.pcap", "d.txt": "d.pcap"}
RAW = ("raw_le.txt", "raw_be.txt")
DUMPS = (*CAPTURES, *RAW)
#: directions (True = sent by the server) whose sender is pvAccessCPP, which caches types
CPP_SENDERS = {"b2.txt": (False,), "c.txt": (True,)}
#: appended to bodies to check that decoders leave trailing bytes alone
JUNK = b"\x07\xff\x00\xca"
_SEG_FLAGS = {None: 0, "FIRST": FLAG_SEGMENT_FIRST, "MID": FLAG_SEGMENT_MIDDLE, "LAST": FLAG_SEGMENT_LAST}


# -- loading -----------------------------------------------------------------------------


@dataclass
class Item:
    """A dump record with its complete bytes on the wire (header included)."""

    rec: Record
    wire: bytes


@functools.cache
def records(name: str) -> tuple[Record, ...]:
    assert VEC is not None
    return tuple(parse_dump(VEC / name))


@functools.cache
def capture(name: str) -> Capture:
    assert VEC is not None
    return read_pcap(VEC / name)


def _ep(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


@functools.cache
def items(name: str) -> tuple[Item, ...]:
    """Records paired with their full bytes: from the pcap for capture dumps (after checking
    the dump's HEX against it), from the HEX for the raw probe dumps."""
    recs = records(name)
    if name not in CAPTURES:
        assert not [r for r in recs if r.truncated], "raw dumps are never cut short"
        return tuple(Item(r, r.hex) for r in recs)
    cap = capture(CAPTURES[name])
    streams = cap.streams()
    offsets = dict.fromkeys(streams, 0)
    out: list[Item | None] = [None] * len(recs)

    for r in recs:
        if r.transport != "TCP":
            continue
        key = (_ep(r.src), _ep(r.dst))
        assert key in streams, f"{name}:{r.line}: no TCP data {key} in the pcap"
        off = offsets[key]
        chunk = streams[key][off : off + r.wire_size]
        assert len(chunk) == r.wire_size, f"{name}:{r.line}: pcap stream ends early"
        assert chunk.startswith(r.hex), f"{name}:{r.line}: dump HEX differs from the pcap bytes"
        offsets[key] = off + r.wire_size
        out[r.index] = Item(r, chunk)
    for key, off in offsets.items():
        assert off == len(streams[key]), (
            f"{name}: {len(streams[key]) - off} pcap bytes of {key} not in the dump"
        )

    used: set[int] = set()
    for group in _udp_groups(recs):
        src, dst = _ep(group[0].src), _ep(group[0].dst)
        want = [r.hex for r in group]
        total = sum(r.wire_size for r in group)
        for i, d in enumerate(cap.datagrams):
            if i in used or d.src != src or d.dst != dst or len(d.payload) != total:
                continue
            if abs(d.ts - group[0].ts) > 2e-6:
                continue
            pos = 0
            ok = True
            for r, h in zip(group, want):
                ok = ok and d.payload[pos : pos + r.wire_size].startswith(h)
                pos += r.wire_size
            if ok:
                used.add(i)
                pos = 0
                for r in group:
                    out[r.index] = Item(r, d.payload[pos : pos + r.wire_size])
                    pos += r.wire_size
                break
        else:
            raise AssertionError(f"{name}:{group[0].line}: datagram not found in {CAPTURES[name]}")
    assert all(i is not None for i in out)
    return tuple(out)  # type: ignore[arg-type]


def _udp_groups(recs: tuple[Record, ...]) -> list[list[Record]]:
    """Consecutive UDP records sent in one datagram (same timestamp and endpoints), e.g. an
    ORIGIN_TAG and the SEARCH it prefixes.  Probe dumps have no timestamps: one each."""
    groups: list[list[Record]] = []
    for r in recs:
        if r.transport != "UDP":
            continue
        if (
            groups
            and r.ts is not None
            and groups[-1][-1].index == r.index - 1
            and (groups[-1][-1].ts, groups[-1][-1].src, groups[-1][-1].dst) == (r.ts, r.src, r.dst)
        ):
            groups[-1].append(r)
        else:
            groups.append([r])
    return groups


# -- annotation checks -------------------------------------------------------------------


class _Checker:
    """Compare a decoded message with a record's annotations; collect mismatches."""

    def __init__(self, rec: Record) -> None:
        self.rec = rec
        self.ann = rec.ann
        self.used: set[str] = set()
        self.problems: list[str] = []

    def _get(self, key: str) -> str | None:
        if key not in self.ann:
            self.problems.append(f"annotation {key!r} missing")
            return None
        self.used.add(key)
        return self.ann[key]

    def raw(self, key: str, actual: str) -> None:
        want = self._get(key)
        if want is not None and want != actual:
            self.problems.append(f"{key}: dump {want!r} != decoded {actual!r}")

    def lit(self, key: str, actual: Any) -> None:
        want = self._get(key)
        if want is None:
            return
        value = literal(want) if want else ""
        if not same(value, actual):
            self.problems.append(f"{key}: dump {value!r} != decoded {actual!r}")

    def opt(self, key: str, actual: Any, raw: bool = False) -> None:
        if key in self.ann:
            (self.raw if raw else self.lit)(key, actual)

    def finish(self) -> list[str]:
        extra = set(self.ann) - self.used
        if extra:
            self.problems.append(f"annotations not checked: {sorted(extra)}")
        return [f"{self.rec.file}:{self.rec.line} {self.rec.command}: {p}" for p in self.problems]


def _partial(c: _Checker, msg: Any, bits_key: str = "bits") -> None:
    mask = msg.changed
    c.lit(bits_key, bits_from_mask(mask))
    c.lit("values", leaf_values(msg.value, mask))


def check_annotations(rec: Record, msg: Any) -> list[str]:
    """Everything the dump says about this message, compared with the decoded object."""
    c = _Checker(rec)
    if "<decode-error>" in rec.ann:  # the dumper could not decode it (segment pieces)
        c.used.add("<decode-error>")
        return c.finish()
    t = type(msg)
    if t is M.Beacon:
        c.raw("guid", msg.guid.hex())
        c.lit("flags", msg.flags)
        c.lit("seq", msg.seq)
        c.lit("change", msg.change)
        c.raw("addr", format_addr(msg.addr))
        c.lit("port", msg.port)
        c.lit("proto", msg.protocol)
        c.raw("serverStatus", "None" if msg.status is None else repr(msg.status.todict()))
    elif t is M.Search:
        c.raw("seq", f"0x{msg.seq:08x}")
        c.raw("flags", f"0x{msg.flags:02x}")
        c.raw("addr", format_addr(msg.addr))
        c.lit("port", msg.port)
        c.lit("protos", msg.protocols)
        c.lit("names", msg.channels)
    elif t is M.SearchResponse:
        c.raw("guid", msg.guid.hex())
        c.raw("seq", f"0x{msg.seq:08x}")
        c.raw("addr", format_addr(msg.addr))
        c.lit("port", msg.port)
        c.lit("proto", msg.protocol)
        c.lit("found", int(msg.found))
        c.lit("cids", msg.cids)
    elif t is M.OriginTag:
        c.raw("origin", format_addr(msg.addr))
    elif t is M.ServerValidation:
        c.lit("bufsize", msg.buffer_size)
        c.lit("regsize", msg.registry_size)
        c.lit("auth", msg.methods)
    elif t is M.ClientValidation:
        c.lit("bufsize", msg.buffer_size)
        c.lit("regsize", msg.registry_size)
        c.lit("qos", msg.qos)
        c.lit("method", msg.method)
        c.raw("authtype", format_type(None if msg.auth is None else msg.auth.type(), inline=True))
        if msg.auth is not None:
            c.lit("authdata", msg.auth.todict())
    elif t is M.ConnectionValidated:
        c.lit("status", format_status(msg.status))
    elif t is M.CreateChannelRequest:
        c.lit("chans", msg.channels)
    elif t is M.CreateChannelResponse:
        c.lit("cid", msg.cid)
        c.lit("sid", msg.sid)
        c.lit("status", format_status(msg.status))
    elif t is M.DestroyChannel:
        c.lit("sid", msg.sid)
        c.lit("cid", msg.cid)
    elif t in (M.DestroyRequest, M.CancelRequest):
        c.lit("sid", msg.sid)
        c.lit("ioid", msg.ioid)
    elif t is M.GetFieldRequest:
        c.lit("sid", msg.sid)
        c.lit("ioid", msg.ioid)
        c.lit("subfield", msg.subfield)
    elif t is M.GetFieldResponse:
        c.lit("ioid", msg.ioid)
        c.lit("status", format_status(msg.status))
        c.opt("type", format_type(msg.type), raw=True)
    elif t is M.LogMessage:
        c.lit("ioid", msg.ioid)
        c.lit("type", msg.mtype)
        c.lit("msg", msg.text)
    elif t is M.Echo:
        c.raw("payload", msg.payload.hex())
    elif isinstance(msg, M._OpRequest):
        c.lit("sid", msg.sid)
        c.lit("ioid", msg.ioid)
        c.raw("subcmd", f"0x{msg.subcmd:02x}")
        if msg.subcmd & M.SUB_INIT:
            pvr = msg.pvrequest
            c.raw("pvRequest type", format_type(None if pvr is None else pvr.type(), inline=True))
            if pvr is not None:
                c.lit("pvRequest", pvr.todict())
        if t is M.MonitorRequest:
            c.opt("nack", msg.nfree)
        elif t in (M.PutRequest, M.PutGetRequest) and msg.value is not None:
            _partial(c, msg)
        elif t is M.RpcRequest and not msg.subcmd & M.SUB_INIT:
            c.raw("arg type", format_type(None if msg.arg is None else msg.arg.type(), inline=True))
            if msg.arg is not None:
                c.lit("arg", msg.arg.todict())
    elif isinstance(msg, M._OpReply):
        c.lit("ioid", msg.ioid)
        c.raw("subcmd", f"0x{msg.subcmd:02x}")
        if msg.status is not None:
            c.lit("status", format_status(msg.status))
        elif "status" in rec.ann:
            c.problems.append("dump has a status, decoded message none")
        if t is M.MonitorReply:
            c.opt("type", format_type(msg.type), raw=True)
            if msg.value is not None:
                _partial(c, msg, "changed")
                c.lit("overrun", bits_from_mask(msg.overrun))
        elif t in (M.GetReply, M.PutReply):
            c.opt("type", format_type(msg.type), raw=True)
            if msg.value is not None:
                _partial(c, msg)
        elif t is M.RpcReply and msg.value is not None:
            c.raw("rtype", format_type(msg.value.type(), inline=True))
            c.lit("rvalue", msg.value.todict())
    else:
        c.problems.append(f"no check for {t.__name__}")
    return c.finish()


def check_header(rec: Record, wire: bytes) -> list[str]:
    """The 8-byte header against the dump line."""
    where = f"{rec.file}:{rec.line}"
    version, flags, command, size = decode_header(wire)
    bad = []
    if bool(flags & FLAG_BE) != rec.be:
        bad.append("byte order")
    if bool(flags & FLAG_SERVER) != rec.server:
        bad.append("direction bit")
    if rec.control:
        from capva.pva.framing import CONTROL_NAMES

        if not flags & 1 or CONTROL_NAMES.get(command) != rec.command or size != rec.length:
            bad.append("control message fields")
    else:
        if flags & 1 or M.COMMAND_NAMES.get(command, f"0x{command:02x}") != rec.command:
            bad.append("command")
        if version != rec.version or size != rec.length or len(wire) != 8 + size:
            bad.append("version/length")
        if flags & 0x30 != _SEG_FLAGS[rec.seg]:
            bad.append("segment bits")
    return [f"{where}: header {b}" for b in bad]


# -- running a whole conversation --------------------------------------------------------


@dataclass
class Outcome:
    """One decoded message (a reassembled segmented message counts once)."""

    item: Item
    frame: Frame
    msg: Any
    problems: list[str] = field(default_factory=list)


def _conn_key(rec: Record) -> Any:
    if rec.src is None:
        return "probe"
    return frozenset((rec.src, rec.dst))


def _dir_key(rec: Record) -> Any:
    return (_conn_key(rec), rec.server)


def _body_checks(dec_caches: dict, dec_types: dict, frame: Frame, msg: Any) -> list[str]:
    """Trailing bytes are ignored (or the layout is length-defined); every truncation of the
    body raises DecodeError and nothing else."""
    cls = type(msg)
    if cls is M.Unknown:
        return []
    bad = []
    be = frame.be
    body = frame.body
    optype = dec_types.get(getattr(msg, "ioid", None))
    if not cls.length_defined:
        m2, end = cls.decode_from(body + JUNK, 0, be, dict(dec_caches), optype)
        if end != len(body):
            bad.append(f"decode_from end {end} != body length {len(body)}")
        if m2.encode(be) != msg.encode(be):
            bad.append("trailing bytes changed the decoded message")
    if len(body) <= 600:
        for n in range(len(body)):
            try:
                cls.decode(body[:n], be, dict(dec_caches), optype)
            except DecodeError:
                continue
            except Exception as exc:  # noqa: BLE001 - the point is to catch anything else
                bad.append(f"truncated to {n} bytes raised {type(exc).__name__}: {exc}")
                break
            if not cls.length_defined:
                bad.append(f"truncated to {n} bytes decoded without error")
                break
    return bad


def _small_message_framing(frame: Frame) -> list[str]:
    """One message fed whole with a partial next header after it, and one byte at a time."""
    wire = frame.encode()
    bad = []
    rd = MessageReader()
    got = rd.feed(wire + b"\xca\x02")
    if len(got) != 1 or got[0].body != frame.body or rd.pending != 2:
        bad.append("whole + trailing partial header framed wrongly")
    if len(wire) <= 4096:
        rd = MessageReader()
        got = []
        for i in range(len(wire)):
            got += rd.feed(wire[i : i + 1])
        if len(got) != 1 or got[0].body != frame.body or rd.pending:
            bad.append("byte-at-a-time framed wrongly")
    return bad


@functools.cache
def run(name: str) -> tuple[Outcome, ...]:
    """Decode a dump's conversation in order, checking everything per message."""
    its = items(name)
    cpp = CPP_SENDERS.get(name, ())
    readers: dict[Any, MessageReader] = {}
    decoders: dict[Any, M.ConnectionDecoder] = {}
    tx: dict[Any, SendTypeCache | None] = {}
    outcomes: list[Outcome] = []
    done_udp: set[int] = set()
    groups = {g[0].index: g for g in _udp_groups(tuple(i.rec for i in its))}

    for it in its:
        r = it.rec
        if r.transport == "UDP":
            if r.index in done_udp:
                continue
            group = groups[r.index]
            payload = b"".join(its[g.index].wire for g in group)
            frames = split_datagram(payload)
            assert len(frames) == len(group), f"{name}:{r.line}: datagram split into {len(frames)}"
            for g, fr in zip(group, frames):
                done_udp.add(g.index)
                item = its[g.index]
                msg = M.decode_message(fr)
                o = Outcome(item, fr, msg, check_header(g, item.wire) + check_annotations(g, msg))
                enc = M.encode_message(msg, fr.be, server=fr.server, version=fr.version)
                if enc != item.wire:
                    o.problems.append(f"{name}:{g.line}: re-encoded {enc.hex()} != {item.wire.hex()}")
                o.problems += _body_checks({}, {}, fr, msg)
                outcomes.append(o)
            continue

        dkey = _dir_key(r)
        ckey = _conn_key(r)
        reader = readers.setdefault(dkey, MessageReader(expect_server=r.server))
        dec = decoders.setdefault(ckey, M.ConnectionDecoder())
        if dkey not in tx:
            tx[dkey] = SendTypeCache() if r.server in cpp else None
        frames = reader.feed(it.wire)
        problems = check_header(r, it.wire)
        if r.seg in ("FIRST", "MID"):
            assert not frames, f"{name}:{r.line}: a frame before the last segment"
            outcomes.append(Outcome(it, Frame(r.version, 0, 0, b"", 0), None, problems))
            continue
        assert len(frames) == 1, f"{name}:{r.line}: {len(frames)} frames from one message"
        fr = frames[0]
        if fr.control:
            outcomes.append(Outcome(it, fr, None, problems))
            continue
        caches_before = dict(dec.caches[fr.server])
        types_before = dict(dec.types)
        msg = dec.decode(fr)
        problems += check_annotations(r, msg)
        if isinstance(msg, M.Unknown):
            problems.append(f"{name}:{r.line}: not decoded ({msg.reason})")
        enc = M.encode_message(msg, fr.be, tx[dkey], server=fr.server, version=fr.version)
        if enc != fr.encode():
            problems.append(f"{name}:{r.line}: re-encoded {enc.hex()[:200]} != {fr.encode().hex()[:200]}")
        if fr.segments == 1 and fr.encode() != it.wire:
            problems.append(f"{name}:{r.line}: frame bytes differ from the wire")
        problems += [f"{name}:{r.line}: {p}" for p in _body_checks(caches_before, types_before, fr, msg)]
        problems += [f"{name}:{r.line}: {p}" for p in _small_message_framing(fr)]
        outcomes.append(Outcome(it, fr, msg, problems))
    for k, rd in readers.items():
        assert rd.pending == 0 and not rd.in_segment, f"{name}: bytes left in reader {k}"
    return tuple(outcomes)


# -- tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CAPTURES))
def test_pcap_matches_dump(name: str) -> None:
    """Every dump record is in the pcap byte for byte (checked while pairing them up)."""
    its = items(name)
    assert len(its) == len(records(name))
    assert all(it.wire.startswith(it.rec.hex) for it in its)


@pytest.mark.parametrize("name", DUMPS)
def test_dump_decodes_and_round_trips(name: str) -> None:
    outcomes = run(name)
    problems = [p for o in outcomes for p in o.problems]
    assert not problems, "\n".join(problems[:40])
    decoded = [o for o in outcomes if o.msg is not None]
    assert decoded, name


EXPECTED_COUNTS = {
    # records in the dump; messages decoded (segments count once, control messages not)
    "a2.txt": (90, 89),
    "b2.txt": (47, 46),
    "c.txt": (66, 63),
    "d.txt": (83, 82),
    "raw_le.txt": (63, 62),
    "raw_be.txt": (63, 62),
}


@pytest.mark.parametrize("name", DUMPS)
def test_message_counts(name: str) -> None:
    """Guards against silently skipping messages."""
    outcomes = run(name)
    n_decoded = sum(1 for o in outcomes if o.msg is not None)
    assert (len(records(name)), n_decoded) == EXPECTED_COUNTS[name]


def test_segmented_get_reply_in_c() -> None:
    """The 40000-double GET reply arrives in three segments (pva-protocol.md §1.5, V14) and
    decodes as one message: mask 0-9 (pvAccessCPP's redundant form), value[i] == i."""
    segs = [o for o in run("c.txt") if o.item.rec.seg]
    assert [o.item.rec.seg for o in segs] == ["FIRST", "MID", "LAST"]
    last = segs[-1]
    assert last.frame.segments == 3
    assert len(last.frame.body) == sum(o.item.rec.length for o in segs) == 14 + 320000 + 25
    msg = last.msg
    assert isinstance(msg, M.GetReply) and msg.status == Status.OK and msg.subcmd == 0
    assert msg.changed == 0x3FF
    value = msg.value["value"]
    assert len(value) == 40000
    assert np.array_equal(value, np.arange(40000, dtype=np.float64))
    assert not last.problems
    # re-encoded as one unsegmented message with the identical body
    assert M.encode_message(msg, False, SendTypeCache(), server=True)[8:] == last.frame.body


def test_pvaccesscpp_type_cache_hits_decoded() -> None:
    """c: the MONITOR INIT reply is only ``ff fe 01 00`` (cache hit), yet decodes to the
    full NTScalar type first sent in the GET INIT reply."""
    outs = [o for o in run("c.txt") if isinstance(o.msg, M.MonitorReply) and o.msg.subcmd == 8]
    assert outs and outs[0].frame.body.endswith(b"\xff\xfe\x01\x00")
    get_init = next(o for o in run("c.txt") if isinstance(o.msg, M.GetReply) and o.msg.subcmd == 8)
    assert outs[0].msg.type == get_init.msg.type


@pytest.mark.parametrize("name", list(CAPTURES))
@pytest.mark.parametrize("mode", ["whole", "bytes", "chunks"])
def test_pcap_streams_frame_identically(name: str, mode: str) -> None:
    """Each TCP direction of each pcap, fed whole, byte by byte or in random chunks, gives
    the same frames, and those are the dump's messages in order."""
    cap = capture(CAPTURES[name])
    for key, stream in cap.streams().items():
        server = key[0][1] == 15075
        rd = MessageReader(expect_server=server)
        frames: list[Frame] = []
        if mode == "whole":
            frames = rd.feed(stream)
        elif mode == "bytes":
            for i in range(len(stream)):
                frames += rd.feed(stream[i : i + 1])
        else:
            rng = random.Random(len(stream))
            pos = 0
            while pos < len(stream):
                n = rng.choice((1, 2, 3, 7, 8, 9, 13, 100, 1000, 70000))
                frames += rd.feed(stream[pos : pos + n])
                pos += n
        assert rd.pending == 0 and not rd.in_segment
        src, dst = (f"{h}:{p}" for h, p in key)
        want = [
            o.frame
            for o in run(name)
            if (o.msg is not None or o.frame.control) and (o.item.rec.src, o.item.rec.dst) == (src, dst)
        ]
        assert frames == want


@pytest.mark.parametrize("pcap", sorted(CAPTURES.values()))
def test_every_pva_datagram_in_pcap(pcap: str) -> None:
    """All PVA datagrams in the capture, including traffic the dumps left out (searches on
    other ports, other servers' beacons), decode and re-encode byte for byte."""
    n = 0
    for d in capture(pcap).datagrams:
        if not d.payload.startswith(b"\xca"):
            continue
        frames = split_datagram(d.payload)
        out = b""
        for fr in frames:
            msg = M.decode_message(fr)
            assert not isinstance(msg, M.Unknown), (pcap, fr)
            out += M.encode_message(msg, fr.be, server=fr.server, version=fr.version)
            n += 1
        assert out == d.payload
    assert n


def test_vectors_txt() -> None:
    """Every entry of vectors.txt is a message of the dump it names (same annotation, same
    bytes), so it was decoded and checked there; the entries that need no conversation
    state also decode on their own."""
    assert VEC is not None
    vectors = parse_vectors(VEC / "vectors.txt")
    assert len(vectors) == 45
    for v in vectors:
        outs = [
            o
            for o in run(v.file)
            if o.item.rec.header.startswith(v.header) and o.item.wire == v.hex and not o.item.rec.seg
        ] + [
            o
            for o in run(v.file)
            if o.item.rec.seg and o.item.rec.header == v.header and o.item.wire == v.hex
        ]
        assert outs, f"vectors.txt entry {v.header[:80]!r} not found in {v.file}"
        assert not outs[0].problems
        if v.control or v.seg:
            continue
        fr = MessageReader().feed(v.hex)[0]
        cls = M.message_class(fr.command, fr.server)
        try:
            msg = cls.decode(fr.body, fr.be, {})
        except DecodeError:
            # needs state: the op's type or a cache entry from an earlier message
            assert outs[0].msg is not None
            continue
        assert msg.encode(fr.be) == outs[0].msg.encode(fr.be)


def _pairs() -> list[tuple[Outcome, Outcome]]:
    le = run("raw_le.txt")
    be = run("raw_be.txt")
    assert len(le) == len(be)
    return list(zip(le, be))


def test_byte_orders_raw_probe() -> None:
    """raw_le and raw_be are the same probe run with the client in each byte order against
    the same pvxs server (which answers little-endian on TCP, big-endian on UDP).

    Every client message pairs up with its twin: same annotations (only the client's UDP
    port differs), and the little-endian decode re-encoded big-endian gives exactly the
    big-endian bytes.  Server messages pair up where the server's state was the same (the
    second run sees the values the first one put, and two replies swap places)."""
    n_client = n_server = 0
    for a, b in _pairs():
        ra, rb = a.item.rec, b.item.rec
        assert (ra.direction, ra.transport, ra.comment) == (rb.direction, rb.transport, rb.comment)
        if a.msg is None:
            continue
        if not ra.server:
            assert ra.command == rb.command
            assert (ra.order, rb.order) == ("LE", "BE")
            assert {k: v for k, v in ra.ann.items() if k != "port"} == {
                k: v for k, v in rb.ann.items() if k != "port"
            }
            twin = type(a.msg).decode(a.msg.encode(False), False, {}, _optype_of(a))
            if isinstance(twin, M.Search):
                twin.port = b.msg.port
            enc = M.encode_message(twin, True, server=False, version=rb.version)
            assert enc == b.item.wire, (ra.line, enc.hex(), b.item.wire.hex())
            n_client += 1
        elif ra.ann == rb.ann:
            assert a.item.wire == b.item.wire, ra.line
            n_server += 1
    assert (n_client, n_server) == (30, 27)


def _optype_of(o: Outcome) -> Any:
    """The op type a data message was decoded with (from its value)."""
    v = getattr(o.msg, "value", None)
    return None if v is None or not hasattr(v, "type") else v.type()


def test_byte_orders_all_messages_both_ways() -> None:
    """Every decoded message of every dump re-encodes in the other byte order and decodes
    back to the same content (types and values are byte-order independent)."""
    for name in DUMPS:
        dec = {False: {}, True: {}}
        types: dict[int, Any] = {}
        for o in run(name):
            msg = o.msg
            if msg is None or isinstance(msg, M.Unknown):
                continue
            for be in (False, True):
                body = msg.encode(be)
                cls = type(msg)
                ioid = getattr(msg, "ioid", None)
                if isinstance(msg, (M.GetReply, M.PutReply, M.MonitorReply)) and msg.subcmd & M.SUB_INIT:
                    types[ioid] = msg.type
                m2 = cls.decode(body, be, dec[be], types.get(ioid))
                assert m2.encode(not be) == msg.encode(not be), (name, o.item.rec.line)


def test_known_normalisations() -> None:
    """Forms that decode fine but cannot re-encode identically, by design (none of them
    occurs in the captures):

    * a null String (``ff``) reads as "" and is written ``00`` (pvAccessJava can send it);
    * a Status with type OK and empty strings (``00 00 00``) is written as the ``ff``
      shortcut both C++ peers use;
    * a BitSet with extra zero bytes is written in the shortest form;
    * a search's three reserved bytes are written as zeros.
    """
    # CONNECTION_VALIDATION S->C with a null method name
    body = bytes.fromhex("00000100ff7f02ff0263 61".replace(" ", ""))
    msg = M.ServerValidation.decode(body, False)
    assert msg.methods == ["", "ca"]
    assert msg.encode(False) == bytes.fromhex("00000100ff7f0200026361")
    # explicit OK status
    assert M.ConnectionValidated.decode(b"\x00\x00\x00", False).encode(False) == b"\xff"
    # non-minimal BitSet in a GET reply (value bit only, padded to 2 bytes)
    T = next(o.msg.type for o in run("a2.txt") if isinstance(o.msg, M.GetReply) and o.msg.subcmd == 8)
    padded = bytes.fromhex("0020001000ff") + b"\x02\x02\x00" + bytes(8)
    msg = M.GetReply.decode(padded, False, {}, T)
    assert msg.changed == 0x2
    assert msg.encode(False) == bytes.fromhex("0020001000ff") + b"\x01\x02" + bytes(8)
    # reserved bytes of SEARCH
    s = bytes.fromhex("66696e6480aabbcc") + bytes(16) + b"\xa0\x86\x01\x03tcp\x00\x00"
    assert M.Search.decode(s, True).encode(True) == s[:5] + bytes(3) + s[8:]


# -- commands and forms no capture contains ----------------------------------------------


def _nt_type() -> Any:
    from capva import Type

    return Type(
        [("value", "d"), ("alarm", ("S", "alarm_t", [("severity", "i"), ("status", "i"), ("message", "s")]))],
        id="epics:nt/NTScalar:1.0",
    )


def _req(fields: dict | None = None) -> Any:
    from capva import Type, Value

    return Value(Type([("field", ("S", None, []))]), fields or {})


def _roundtrip(msg: Any, optype: Any = None, be: bool = False) -> Any:
    """Encode, decode, compare; return the decoded copy."""
    body = msg.encode(be)
    back = type(msg).decode(body, be, {}, optype)
    assert back.encode(be) == body
    assert back == msg, (back, msg)
    return back


@pytest.mark.parametrize("be", [False, True])
def test_put_get_array_process_cancel(be: bool) -> None:
    """PUT_GET, ARRAY and PROCESS (pvAccessCPP only) and CANCEL_REQUEST: every subcommand
    form round-trips in both byte orders."""
    from capva import Type, Value

    T = _nt_type()
    G = Type([("value", "d")])
    put = Value(T, {"value": 2.5})
    got = Value(G, {"value": 3.5})
    for msg, optype in [
        (M.PutGetRequest(1, 2, 0x08, _req()), None),
        (M.PutGetRequest(1, 2, 0x00, value=put), (T, G)),
        (M.PutGetRequest(1, 2, 0x40), (T, G)),
        (M.PutGetRequest(1, 2, 0x80), (T, G)),
        (M.PutGetReply(2, 0x08, put_type=T, get_type=G), None),
        (M.PutGetReply(2, 0x00, value=got), (T, G)),
        (M.PutGetReply(2, 0x40, value=got), (T, G)),
        (M.PutGetReply(2, 0x80, value=put), (T, G)),
        (M.PutGetReply(2, 0x00, Status.error("nope")), (T, G)),
        (M.ArrayRequest(1, 3, 0x08, _req()), None),
        (M.ArrayRequest(1, 3, 0x40, offset=2, count=300, stride=1), None),
        (M.ArrayRequest(1, 3, 0x80, length=1000), None),
        (M.ArrayRequest(1, 3, 0x04), None),
        (M.ArrayRequest(1, 3, 0x00, offset=1, stride=2, array=(_ad(), np.arange(3.0))), _ad()),
        (M.ArrayReply(3, 0x08, type=_ad()), None),
        (M.ArrayReply(3, 0x40, array=(_ad(), np.arange(300.0))), _ad()),
        (M.ArrayReply(3, 0x04, length=12345), None),
        (M.ArrayReply(3, 0x80), None),
        (M.ProcessRequest(1, 4, 0x08, None), None),
        (M.ProcessRequest(1, 4, 0x10), None),
        (M.ProcessReply(4, 0x08), None),
        (M.ProcessReply(4, 0x00, Status(1, "warn", "")), None),
        (M.CancelRequest(1, 5), None),
        (M.LogMessage(5, 3, "fatal"), None),
        (M.DestroyChannel(7, 8), None),
    ]:
        _roundtrip(msg, optype, be)


def _ad() -> Any:
    from capva.pva.types import leaf

    return leaf("ad")


def test_monitor_reply_forms() -> None:
    """End of stream (``10`` + Status, pvAccessCPP), end of stream carrying a last update
    (the pvxs client reads one if bytes remain), notify-only (empty) and failed INIT."""
    from capva import Value

    T = _nt_type()
    V = Value(T, {"value": 1.0})
    end = M.MonitorReply(9, 0x10)
    assert end.encode(False) == bytes.fromhex("0900000010ff")
    assert _roundtrip(end, T).value is None
    last = _roundtrip(M.MonitorReply(9, 0x10, value=V, overrun=0b10), T)
    assert last.changed == 0b10 and last.overrun == 0b10
    empty = M.MonitorReply.decode(bytes.fromhex("0900000000"), False, {}, T)
    assert empty.value is None and empty.status is None
    failed = M.MonitorReply.decode(bytes.fromhex("0900000008020378797a00"), False, {})
    assert failed.status == Status(2, "xyz", "") and failed.type is None


def test_connection_decoder_op_lifetime() -> None:
    """Types are learned from INIT replies and forgotten on destroy; data for an unknown
    ioid comes back as Unknown (with the reason), not as an error."""
    from capva import Value

    T = _nt_type()
    dec = M.ConnectionDecoder()

    def frame(msg: Any) -> Frame:
        server = msg.server if msg.server is not None else False
        (fr,) = MessageReader().feed(M.encode_message(msg, False, server=server))
        return fr

    dec.decode(frame(M.GetRequest(1, 10, 0x08, _req())))
    dec.decode(frame(M.GetReply(10, 0x08, type=T)))
    assert dec.types == {10: T}
    data = M.GetReply(10, 0x00, value=Value(T, {"value": 4.0}))
    assert dec.decode(frame(data)).value["value"] == 4.0
    dec.decode(frame(M.DestroyRequest(1, 10)))
    assert dec.types == {}
    stale = dec.decode(frame(data))
    assert isinstance(stale, M.Unknown) and "10" in stale.reason
    assert M.encode_message(stale, False) == M.encode_message(data, False)

    # failed INIT, exec-and-destroy, MONITOR 10 from either side, DESTROY_CHANNEL
    dec.decode(frame(M.PutReply(11, 0x08, Status.error("no"))))
    assert 11 not in dec.types
    dec.decode(frame(M.GetRequest(1, 12, 0x08, _req())))
    dec.decode(frame(M.GetReply(12, 0x08, type=T)))
    dec.decode(frame(M.GetReply(12, 0x50, value=Value(T, {"value": 1.0}))))
    assert 12 not in dec.types
    dec.decode(frame(M.MonitorReply(13, 0x08, type=T)))
    dec.decode(frame(M.MonitorRequest(1, 13, 0x10)))
    assert 13 not in dec.types
    dec.decode(frame(M.MonitorRequest(2, 14, 0x08, _req())))
    dec.decode(frame(M.MonitorReply(14, 0x08, type=T)))
    dec.decode(frame(M.DestroyChannel(2, 99)))
    assert dec.types == {}


def test_unknown_command_passthrough() -> None:
    fr = MessageReader().feed(bytes.fromhex("ca02401303000000616263"))[0]
    msg = M.decode_message(fr)
    assert isinstance(msg, M.Unknown) and msg.command == 0x13 and msg.body == b"abc"
    assert M.encode_message(msg, False) == bytes.fromhex("ca02401303000000616263")
    assert isinstance(M.ConnectionDecoder().decode(fr), M.Unknown)


def test_addresses() -> None:
    assert M.parse_addr("127.0.0.1") == bytes(10) + b"\xff\xff\x7f\x00\x00\x01"
    assert M.format_addr(M.parse_addr("10.1.2.3")) == "10.1.2.3"
    assert M.format_addr(M.ANY_ADDR_MAPPED) == "0.0.0.0"
    assert M.format_addr(M.ANY_ADDR) == "::"
    assert M.format_addr(M.parse_addr("fe80::1")) == "fe80::1"


def test_encode_message_direction() -> None:
    """Direction comes from the class; ECHO and DESTROY_CHANNEL go both ways and need it."""
    assert M.encode_message(M.ConnectionValidated(), True) == bytes.fromhex("ca02c00900000001ff")
    assert M.encode_message(M.Echo(b"hi"), False, server=True)[2] == 0x40
    with pytest.raises(ValueError):
        M.encode_message(M.Echo(b""), False)


def test_mutated_bodies_raise_only_decode_error() -> None:
    """Deterministic fuzz: every vector body with a few bytes overwritten (by the values
    that matter most: 00, ff, fe, fd, 80, random) decodes or raises DecodeError, nothing
    else.  A network peer must not be able to raise anything a transport does not catch."""
    rng = random.Random(2024)
    unexpected: dict[str, str] = {}
    for name in DUMPS:
        types: dict[Any, Any] = {}
        for o in run(name):
            msg = o.msg
            if msg is None or isinstance(msg, M.Unknown):
                continue
            cls = type(msg)
            ioid = getattr(msg, "ioid", None)
            if isinstance(msg, (M.GetReply, M.PutReply, M.MonitorReply)) and msg.subcmd & M.SUB_INIT:
                types[ioid] = msg.type
            body = msg.encode(o.frame.be)
            if not body or len(body) > 2000:
                continue
            for _ in range(40):
                b = bytearray(body)
                for _ in range(rng.choice((1, 1, 2, 3))):
                    b[rng.randrange(len(b))] = rng.choice((0, 0xFF, 0xFE, 0xFD, 0x80, rng.randrange(256)))
                try:
                    cls.decode(bytes(b), o.frame.be, {}, types.get(ioid))
                except DecodeError:
                    pass
                except Exception as exc:  # noqa: BLE001
                    unexpected.setdefault(f"{type(exc).__name__}: {exc}", bytes(b).hex())
    assert not unexpected, unexpected
