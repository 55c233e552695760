"""Every message of the CA captures in shared/vectors/ca, and the byte vectors of
ca-protocol.md §9, in both directions.

* the decoded dumps (``*.txt``) are checked against the bytes that were really on the wire
  (the ``.pcap`` files, read with tests/support/pcap.py);
* the stream of each TCP direction is framed by :class:`CAMessageReader` fed whole, byte
  by byte and in random chunks, and each UDP datagram by :func:`split_datagram`; every
  message must match the dump's header fields and payload;
* every message decodes to a typed command and re-encodes to exactly the same bytes;
* the payloads the doc decodes (DBR values, names, …) decode to those values.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import numpy as np
import pytest

from capva.ca import commands as C
from capva.ca import dbr
from capva.ca.constants import DBE_ALARM, DBE_VALUE, DONT_REPLY
from capva.ca.framing import CAMessageReader, RawMessage, split_datagram
from capva.ca.status import ECA_NORMAL, ECA_NOWTACCESS
from support import find_vectors
from support.pcap import read_pcap

VEC = find_vectors("ca")
SERVER_PORT = 15064
H = bytes.fromhex

_LINE = re.compile(
    r"^(?P<ts>\d+\.\d+) (?P<proto>UDP|TCP) (?P<src>\S+):(?P<sport>\d+) -> (?P<dst>\S+):(?P<dport>\d+)\s+(?P<rest>.*)$"
)
_MSG = re.compile(
    r"(?P<name>[A-Z_]+)\(cmd=(?P<cmd>\d+) size=(?P<size>\d+) dtype=(?P<dtype>\d+) dcnt=(?P<dcnt>\d+) "
    r"p1=0x(?P<p1>[0-9a-f]+) p2=0x(?P<p2>[0-9a-f]+)\) hdr=(?P<hdr>[0-9a-f]+) payload=(?P<payload>[0-9a-f]*)"
)


@dataclass
class DumpMsg:
    name: str
    cmd: int
    size: int
    dtype: int
    dcnt: int
    p1: int
    p2: int
    hdr: bytes
    payload: bytes

    @property
    def wire(self) -> bytes:
        return self.hdr + self.payload


@dataclass
class DumpEntry:
    proto: str
    src: tuple[str, int]
    dst: tuple[str, int]
    raw: bytes | None  # whole datagram (UDP)
    msgs: list[DumpMsg]


def _msg(m: re.Match) -> DumpMsg:
    return DumpMsg(
        m["name"],
        int(m["cmd"]),
        int(m["size"]),
        int(m["dtype"]),
        int(m["dcnt"]),
        int(m["p1"], 16),
        int(m["p2"], 16),
        H(m["hdr"]),
        H(m["payload"]),
    )


def parse_dump(name: str) -> list[DumpEntry]:
    out: list[DumpEntry] = []
    for line in (VEC / name).read_text().splitlines():
        if not line.strip():
            continue
        m = _LINE.match(line)
        if m:
            src, dst = (m["src"], int(m["sport"])), (m["dst"], int(m["dport"]))
            rest = m["rest"]
            if m["proto"] == "UDP":
                raw = H(re.search(r"raw=([0-9a-f]+)", rest)[1])  # type: ignore[index]
                assert int(re.search(r"len=(\d+)", rest)[1]) == len(raw)  # type: ignore[index]
                out.append(DumpEntry("UDP", src, dst, raw, []))
            else:
                mm = _MSG.search(rest)
                assert mm, line
                out.append(DumpEntry("TCP", src, dst, None, [_msg(mm)]))
            continue
        mm = _MSG.search(line)
        assert mm and out and out[-1].proto == "UDP", line
        out[-1].msgs.append(_msg(mm))
    return out


SESSION = parse_dump("libca_rsrv_session.txt")
BEACONS = parse_dump("rsrv_beacons.txt")
ALL = SESSION + BEACONS


def _from_server(e: DumpEntry) -> bool:
    return e.src[1] == SERVER_PORT or e.dst[1] == 15065


def _same(raw: RawMessage, d: DumpMsg) -> None:
    assert (raw.command, raw.payload_size, raw.data_type, raw.data_count, raw.parameter1, raw.parameter2) == (
        d.cmd,
        d.size,
        d.dtype,
        d.dcnt,
        d.p1,
        d.p2,
    )
    assert raw.payload == d.payload
    assert raw.name == d.name
    assert raw.encode() == d.wire


# -- the dumps are what the pcaps hold ------------------------------------------------------------


def test_dumps_are_complete() -> None:
    assert sum(len(e.msgs) for e in SESSION) == 30
    assert sum(len(e.msgs) for e in BEACONS) == 9
    names = {m.name for e in ALL for m in e.msgs}
    assert names >= {
        "VERSION",
        "SEARCH",
        "CLIENT_NAME",
        "HOST_NAME",
        "CREATE_CHAN",
        "ACCESS_RIGHTS",
        "READ_NOTIFY",
        "EVENT_ADD",
        "WRITE_NOTIFY",
        "EVENT_CANCEL",
        "CLEAR_CHANNEL",
        "RSRV_IS_UP",
    }


@pytest.mark.parametrize("name", ["libca_rsrv_session", "rsrv_beacons"])
def test_dump_matches_pcap(name: str) -> None:
    cap = read_pcap(VEC / f"{name}.pcap")
    dump = parse_dump(f"{name}.txt")
    udp = [e for e in dump if e.proto == "UDP"]
    assert sorted(d.payload for d in cap.datagrams) == sorted(e.raw for e in udp)  # type: ignore[type-var]
    streams = cap.streams()
    tcp: dict[tuple, bytes] = {}
    for e in dump:
        if e.proto == "TCP":
            tcp[(e.src, e.dst)] = tcp.get((e.src, e.dst), b"") + e.msgs[0].wire
    assert streams == tcp


# -- framing ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", [e for e in ALL if e.proto == "UDP"], ids=lambda e: e.msgs[0].name)
def test_udp_datagrams(entry: DumpEntry) -> None:
    assert entry.raw is not None
    msgs = split_datagram(entry.raw)
    assert len(msgs) == len(entry.msgs)
    for raw, d in zip(msgs, entry.msgs):
        _same(raw, d)
    assert b"".join(m.encode() for m in msgs) == entry.raw


def _tcp_directions() -> dict[tuple, list[DumpMsg]]:
    out: dict[tuple, list[DumpMsg]] = {}
    for e in SESSION:
        if e.proto == "TCP":
            out.setdefault((e.src, e.dst), []).append(e.msgs[0])
    return out


TCP = _tcp_directions()


def _chunkings(data: bytes) -> list[list[bytes]]:
    rng = random.Random(1234)
    out = [[data], [data[i : i + 1] for i in range(len(data))]]
    for _ in range(5):
        chunks, pos = [], 0
        while pos < len(data):
            n = rng.randint(1, 40)
            chunks.append(data[pos : pos + n])
            pos += n
        out.append(chunks)
    return out


@pytest.mark.parametrize("key", list(TCP), ids=lambda k: f"{k[0][1]}->{k[1][1]}")
def test_tcp_streams_any_chunking(key: tuple) -> None:
    expected = TCP[key]
    stream = b"".join(d.wire for d in expected)
    for chunks in _chunkings(stream):
        reader = CAMessageReader()
        got: list[RawMessage] = []
        for c in chunks:
            got += reader.feed(c)
        assert reader.pending == 0
        assert len(got) == len(expected)
        for raw, d in zip(got, expected):
            _same(raw, d)


@pytest.mark.parametrize("key", list(TCP), ids=lambda k: f"{k[0][1]}->{k[1][1]}")
def test_tcp_stream_with_trailing_partial(key: tuple) -> None:
    expected = TCP[key]
    stream = b"".join(d.wire for d in expected)
    tail = expected[0].wire[:11]  # a partial header of the next message
    reader = CAMessageReader()
    got = reader.feed(stream + tail)
    assert len(got) == len(expected) and reader.pending == len(tail)
    more = reader.feed(expected[0].wire[11:])
    assert [m.encode() for m in more] == [expected[0].wire]


# -- typed decode and exact re-encode -------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry,msg",
    [(e, m) for e in ALL for m in e.msgs],
    ids=lambda x: x.name if isinstance(x, DumpMsg) else "",
)
def test_every_message_decodes_and_reencodes(entry: DumpEntry, msg: DumpMsg) -> None:
    raw = split_datagram(msg.wire)[0]
    cmd = C.decode_command(raw, from_server=_from_server(entry))
    assert not isinstance(cmd, C.UnknownCommand)
    assert cmd.ID == msg.cmd
    assert cmd.encode() == msg.wire
    assert b"".join(cmd.parts()) == msg.wire
    # decoding the re-encoded bytes gives an equal command
    assert C.decode_command(split_datagram(cmd.encode())[0], from_server=_from_server(entry)) == cmd


def _typed(wire: str, from_server: bool) -> C.Command:
    return C.decode_command(split_datagram(H(wire))[0], from_server=from_server)


def test_session_semantics() -> None:
    """The decoded column of ca-protocol.md §9 for the session capture [C1]."""
    v = _typed("000000000001000d0000000100000000", False)
    assert v == C.VersionRequest.udp(1)
    s = _typed("000600080005000d00000001000000016476616c00000000", False)
    assert s == C.SearchRequest("dval", cid=1, version=13, reply=DONT_REPLY)
    r = _typed("000600083ad80000ffffffff00000001000d000000000000", True)
    assert isinstance(r, C.SearchResponse)
    assert (r.port, r.ip, r.cid, r.version, r.address) == (15064, 0xFFFFFFFF, 1, 13, None)
    assert _typed("000000000001000d0000000100000000", True) == C.VersionResponse.udp(1)
    assert _typed("00140008000000000000000000000000726f6f7400000000", False) == C.ClientNameRequest("root")
    assert _typed("00150008000000000000000000000000766d000000000000", False) == C.HostNameRequest("vm")
    assert _typed("0012000800000000000000010000000d6476616c00000000", False) == C.CreateChanRequest(
        "dval", cid=1, version=13
    )
    assert _typed("000000000000000d0000000000000000", True) == C.VersionResponse(13)
    assert _typed("00160000000000000000000100000003", True) == C.AccessRightsResponse(1, 3)
    assert _typed("00120000000600010000000100000000", True) == C.CreateChanResponse(dbr.DOUBLE, 1, 1, 0)
    assert _typed("000f0000001400000000000000000001", False) == C.ReadNotifyRequest(dbr.TIME_DOUBLE, 0, 0, 1)


def test_time_double_read_reply() -> None:
    rep = _typed("000f0018001400010000000100000001000000004562eeb308d62e2100000000400a000000000000", True)
    assert isinstance(rep, C.ReadNotifyResponse)
    assert (rep.data_type, rep.data_count, rep.status, rep.ioid) == (dbr.TIME_DOUBLE, 1, ECA_NORMAL, 1)
    values, meta = rep.values()
    assert values.tolist() == [3.25]
    assert meta is not None
    assert (meta.status, meta.severity, meta.seconds, meta.nanoseconds) == (0, 0, 1164111539, 148254241)
    assert meta.timestamp == pytest.approx(1795263539.148254241)
    again = C.ReadNotifyResponse.from_values(dbr.TIME_DOUBLE, values, meta, ioid=1)
    assert again.encode() == rep.encode()


def test_ctrl_double_read_reply() -> None:
    wire = (
        "000f0058002200010000000100000002"
        "000000000003eeb36d6d0000000000004059000000000000c0590000000000004054000000000000"
        "404e000000000000c04e000000000000c0540000000000004056800000000000c056800000000000"
        "400a000000000000"
    )
    rep = _typed(wire, True)
    assert isinstance(rep, C.ReadNotifyResponse)
    values, meta = rep.values()
    assert values.tolist() == [3.25]
    assert meta is not None
    assert (meta.status, meta.severity, meta.precision, meta.units) == (0, 0, 3, "mm")
    assert (meta.upper_disp_limit, meta.lower_disp_limit) == (100.0, -100.0)
    assert (meta.upper_alarm_limit, meta.upper_warning_limit) == (80.0, 60.0)
    assert (meta.lower_warning_limit, meta.lower_alarm_limit) == (-60.0, -80.0)
    assert (meta.upper_ctrl_limit, meta.lower_ctrl_limit) == (90.0, -90.0)
    # the decoded message re-encodes exactly (stale RISC_pad 0xeeb3 included) ...
    assert rep.encode() == H(wire)
    # ... and re-encoding from the values writes zeros there, as a new server should
    fresh = C.ReadNotifyResponse.from_values(dbr.CTRL_DOUBLE, values, meta, ioid=2).encode()
    assert fresh == H(wire.replace("0003eeb3", "00030000"))


def test_subscription_vectors() -> None:
    add = _typed("0001001000140000000000000000000300000000000000000000000000050000", False)
    assert add == C.EventAddRequest(dbr.TIME_DOUBLE, 0, 0, 3, mask=DBE_VALUE | DBE_ALARM)
    updates = [
        ("000000004562eeb308d62e2100000000400a000000000000", 3.25, 0, 0),
        ("000000004562eec4261c4d48000000004010000000000000", 4.0, 0, 0),
        ("000400014562eec50e5b9743000000004050400000000000", 65.0, 4, 1),
    ]
    for payload, value, status, severity in updates:
        u = _typed("00010018001400010000000100000003" + payload, True)
        assert isinstance(u, C.EventAddResponse)
        assert (u.status, u.subscription_id) == (ECA_NORMAL, 3)
        vals, meta = u.values()
        assert vals.tolist() == [value]
        assert meta is not None and (meta.status, meta.severity) == (status, severity)
    cancel = _typed("00020000001400000000000000000003", False)
    assert cancel == C.EventCancelRequest(dbr.TIME_DOUBLE, 0, 0, 3)
    ack = _typed("00010000001400000000000000000003", True)
    assert ack == C.EventCancelResponse(dbr.TIME_DOUBLE, 0, 0, 3)


def test_write_and_clear_vectors() -> None:
    w = _typed("001300080006000100000000000000044010000000000000", False)
    assert isinstance(w, C.WriteNotifyRequest)
    assert w.values()[0].tolist() == [4.0]
    built = C.WriteNotifyRequest.from_values(dbr.DOUBLE, [4.0], sid=0, ioid=4)
    assert built.encode() == w.encode()
    rep = _typed("00130000000600010000000100000004", True)
    assert rep == C.WriteNotifyResponse.for_request(built)
    assert _typed("000c0000000000000000000000000001", False) == C.ClearChannelRequest(0, 1)
    assert _typed("000c0000000000000000000000000001", True) == C.ClearChannelResponse(0, 1)


def test_beacon_vectors() -> None:
    ids = []
    for e in BEACONS:
        b = C.decode_command(split_datagram(e.raw or b"")[0], from_server=True)
        assert isinstance(b, C.Beacon)
        assert (b.version, b.server_port, b.address) == (13, 15064, 0)
        ids.append(b.beacon_id)
    # RSRV quirk: 0, 0, 1, 2, … (the counter moves only after the second send)
    assert ids == [0, 0, 1, 2, 3, 4, 5, 6, 7]


# -- the probe vectors [C2] and caproto's [P] from the §9 table ------------------------------------------


def test_tcp_search_reply_and_not_found() -> None:
    r = _typed("000600003ad80000ffffffff00001234", True)
    assert r == C.SearchResponse(15064, 0x1234, version=None)
    assert r.encode().hex() == "000600003ad80000ffffffff00001234"
    nf = _typed("000e0000000a000d0000123500001235", True)
    assert nf == C.NotFoundResponse(0x1235)
    req = C.SearchRequest("x", cid=0x1235, reply=10)
    assert C.NotFoundResponse.for_search(req).encode().hex() == "000e0000000a000d0000123500001235"


def test_create_ch_fail_and_error_vectors() -> None:
    assert _typed("001a0000000000000000009d00000000", True) == C.CreateChFailResponse(0x9D)
    err = _typed("000b0018000000000000009e0000017800040008000500010000000200000001726f00656d707473", True)
    assert isinstance(err, C.ErrorResponse)
    assert (err.cid, err.status, err.message) == (0x9E, ECA_NOWTACCESS, "ro")
    assert err.original == (4, 8, 5, 1, 2, 1, False)
    # RSRV leaked stale bytes after the NUL; we send zeros there
    assert err.encode().hex() == "000b0018000000000000009e0000017800040008000500010000000200000001" + (
        "726f000000000000"
    )
    wn = _typed("00130000000500010000017800000002", True)
    assert wn == C.WriteNotifyResponse(dbr.LONG, 1, ECA_NOWTACCESS, 2)


def test_extended_header_vector() -> None:
    payload = np.arange(10000, dtype=">f8").tobytes()
    wire = H("000fffff0006000000000001000007e20001388000002710") + payload
    reader = CAMessageReader()
    (raw,) = reader.feed(wire)
    assert raw.extended and (raw.payload_size, raw.data_count) == (80000, 10000)
    rep = C.decode_command(raw, from_server=True)
    assert isinstance(rep, C.ReadNotifyResponse) and rep.extended
    assert np.array_equal(rep.values()[0], np.arange(10000.0))
    assert rep.encode() == wire
    built = C.ReadNotifyResponse.from_values(dbr.DOUBLE, np.arange(10000.0), ioid=0x7E2)
    assert built.encode() == wire  # sizes >= 0xFFFF force the 24-byte header


def test_small_extended_header_is_kept() -> None:
    """RSRV sizes the header for the maximum count first: a small reply may come extended."""
    wire = H("000fffff0006000000000001000007dc000000500000000a") + bytes(80)
    raw = split_datagram(wire)[0]
    assert raw.extended and raw.payload_size == 80 and raw.data_count == 10
    cmd = C.decode_command(raw, from_server=True)
    assert cmd.extended and cmd.encode() == wire


def test_echo_and_read_sync_reflect() -> None:
    e = _typed("00170000000c00170000162e008adf38", False)
    assert isinstance(e, C.EchoRequest)
    assert e.reply().encode().hex() == "00170000000c00170000162e008adf38"
    rs = _typed("000a0000000300040000000500000006", False)
    assert isinstance(rs, C.ReadSyncRequest)
    assert rs.reply().encode().hex() == "000a0000000300040000000500000006"


def test_caproto_pcap_vectors() -> None:
    """[P]: caproto client and server (its VERSION has dtype 1, p1 1; padded strings)."""
    dg = split_datagram(
        H("000000000000000d0000000000000000000600100005000d0000e0db0000e0db7270693a636f6c6f7200000000000000")
    )
    v, s = (C.decode_command(m, from_server=False) for m in dg)
    assert v == C.VersionRequest(0, 13, 0)
    assert s == C.SearchRequest("rpi:color", 0xE0DB)
    rep = split_datagram(
        H("000000000001000d000000010000000000060008c4f50000ffffffff0000e0db000d000000000000")
    )
    assert [C.decode_command(m, from_server=True) for m in rep] == [
        C.VersionResponse(13, flag=1, sequence=1),
        C.SearchResponse(0xC4F5, 0xE0DB),
    ]
    s_rep = _typed("000f0028000000010000000100000000" + "303030303030".ljust(80, "0"), True)
    assert isinstance(s_rep, C.ReadNotifyResponse)
    assert s_rep.values()[0] == ["000000"]
