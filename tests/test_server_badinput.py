"""Bad input from the network, over raw sockets, while a well-behaved p4p client keeps working.

Why this file exists: a server on a control-system network meets broken clients, port
scanners and fuzzers.  Each case here sends one kind of malformed input (garbage, truncated
or absurdly sized headers, unknown commands, undefined type-cache ids, the wrong direction
bit, bogus segmentation, lying lengths) on its own TCP connection, or as UDP datagrams to the
search port.  The offending connection may be closed (or the message ignored, where the
protocol says so), but the server must keep serving everyone else: after every case a p4p
monitor still receives a fresh post, a p4p get still succeeds, and a new raw connection still
completes a handshake and a GET.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import socket
import struct
import time

import pytest

from support.server import RawPVA, client, load_impl, ports, serve

T = 5.0
PV = "bad:x"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def impl():
    return load_impl()


class Harness:
    def __init__(self, impl, S, C, pv):
        self.impl, self.S, self.C, self.pv = impl, S, C, pv
        self.tcp, self.udp = ports(S.conf())
        self.Q = queue.Queue()
        self.n = itertools.count(1)

    def raw(self):
        return RawPVA(self.tcp)

    def check_healthy(self):
        """Everyone else is still served: monitor, get, and a brand-new raw connection."""
        n = next(self.n)
        self.pv.post(n)
        deadline = time.monotonic() + T
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"monitor did not receive post {n}"
            try:
                V = self.Q.get(timeout=left)
            except queue.Empty:
                continue
            if not isinstance(V, Exception) and V == n:
                break
        assert self.C.get(PV, timeout=T) == n
        with self.raw() as r:
            r.handshake()
            sid = r.create_channel(PV)
            reply = r.get(sid)
            assert reply[5:6] == b"\xff", f"raw GET failed: {reply!r}"


@pytest.fixture(scope="module")
def h(impl):
    pv = impl.SharedPV(nt=impl.nt.NTScalar("i"), initial=0)
    with serve(impl, {PV: pv}) as S, client(S.conf()) as C:
        H = Harness(impl, S, C, pv)
        with C.monitor(PV, H.Q.put):
            H.check_healthy()
            yield H


def _rss() -> int:
    """Resident memory of this process (the server runs in it), in bytes; 0 if unknown."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _closed_or_ignored(r: RawPVA, timeout=T) -> str:
    """'closed' if the server dropped the connection, 'alive' if it still answers ECHO."""
    if r.closed_by_server(timeout=0.5):
        return "closed"
    return "alive" if r.echo_ok(timeout=timeout) else "closed"


# --------------------------------------------------------------------------- before validation


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"GET / HTTP/1.0\r\n\r\n", id="http"),
        pytest.param(b"\x00" * 64, id="zeros"),
        pytest.param(os.urandom(4096), id="random"),
        pytest.param(b"\xca\x00\x00\x01\x00\x00\x00\x00", id="version-0"),
    ],
)
def test_garbage_closes_connection(h, data):
    with h.raw() as r:
        with contextlib.suppress(OSError):
            r.send_raw(data)
        assert r.closed_by_server(T), "server kept a connection that sent garbage"
    h.check_healthy()


def test_truncated_header_then_eof(h):
    with h.raw() as r:
        r.send_raw(b"\xca\x02\x00")
        r.sock.shutdown(socket.SHUT_WR)
        assert r.closed_by_server(T)
    h.check_healthy()


def test_truncated_header_left_hanging(h):
    """Half a header and then silence: the server waits on that connection only."""
    with h.raw() as r:
        r.send_raw(b"\xca\x02\x00\x01\x10")
        h.check_healthy()
    h.check_healthy()


def test_truncated_body_left_hanging(h):
    with h.raw() as r:
        r.send_raw(RawPVA.message(0x01, b"\x00" * 4, size=100))  # says 100, sends 4
        h.check_healthy()
    h.check_healthy()


@pytest.mark.parametrize("size", [0x7FFFFFFF, 0xFFFFFFF0])
def test_absurd_size(h, size):
    """A header announcing ~2-4 GB: never allocate it; the connection may be closed."""
    before = _rss()
    with h.raw() as r:
        r.handshake()
        r.send_raw(RawPVA.message(0x0A, b"\x01\x02\x03\x04", size=size))
        with contextlib.suppress(OSError):  # the server may hang up at once
            r.send_raw(os.urandom(65536))
        h.check_healthy()
        assert _rss() - before < 256 << 20, "the announced size was allocated"
    h.check_healthy()


def test_byte_at_a_time_handshake_and_get(h):
    """A slow but correct client: every message split into single bytes."""
    with h.raw() as r:
        flags, cmd, _ = r.recv()
        assert flags & 0x01 and cmd == 2
        r.recv_cmd(0x01)
        body = struct.pack("<IHH", 0x10000, 0x7FFF, 0) + RawPVA.string("anonymous") + b"\xff"
        for b in RawPVA.message(0x01, body):
            r.send_raw(bytes([b]))
        assert r.recv_cmd(0x09)[:1] == b"\xff"
        msg = RawPVA.message(0x07, struct.pack("<HI", 1, 7) + RawPVA.string(PV))
        for b in msg:
            r.send_raw(bytes([b]))
        body = r.recv_cmd(0x07)
        sid = struct.unpack_from("<I", body, 4)[0]
        assert body[8:9] == b"\xff"
        assert r.get(sid)[5:6] == b"\xff"
    h.check_healthy()


# --------------------------------------------------------------------------- after validation


def test_unknown_commands_are_skipped(h):
    with h.raw() as r:
        r.handshake()
        for cmd in (0x13, 0x17, 0x42, 0x7F, 0xFE):
            r.send(cmd, b"\x01\x02\x03\x04\x05")
        r.send(0x05, b"\xff")  # AUTHNZ, ignored by pvxs
        assert _closed_or_ignored(r) == "alive", "unknown application commands must be skipped"
        sid = r.create_channel(PV)
        assert r.get(sid)[5:6] == b"\xff"
    h.check_healthy()


def test_unknown_control_message_is_ignored(h):
    with h.raw() as r:
        r.handshake()
        r.send_raw(RawPVA.message(0x03, flags=0x01, size=0x1234))  # ECHO_REQUEST control: ignore/answer
        r.send_raw(RawPVA.message(0x7F, flags=0x01, size=0))
        assert _closed_or_ignored(r) == "alive"
    h.check_healthy()


def test_wrong_direction_bit_closes(h):
    with h.raw() as r:
        r.handshake()
        r.send(0x02, b"ping", flags=0x40)  # a "server" message from a client
        assert r.closed_by_server(T)
    h.check_healthy()


def test_wrong_direction_bit_before_validation(h):
    with h.raw() as r:
        r.recv()
        r.recv_cmd(0x01)
        body = struct.pack("<IHH", 0x10000, 0x7FFF, 0) + RawPVA.string("anonymous") + b"\xff"
        r.send(0x01, body, flags=0x40)
        assert r.closed_by_server(T)
    h.check_healthy()


def test_undefined_type_cache_id_in_pvrequest(h):
    with h.raw() as r:
        r.handshake()
        sid = r.create_channel(PV)
        r.send(0x0A, struct.pack("<IIB", sid, 0x55, 0x08) + b"\xfe\x34\x12")  # 0xFE: cached id 0x1234
        if not r.closed_by_server(1.0):
            # not closed: then the INIT must have been refused, and the connection still works
            assert r.echo_ok(), "connection neither closed nor usable"
    h.check_healthy()


def test_undefined_type_cache_id_in_rpc_argument(h):
    with h.raw() as r:
        r.handshake()
        sid = r.create_channel(PV)
        r.send(0x14, struct.pack("<IIB", sid, 0x66, 0x08) + RawPVA.EMPTY_REQUEST)
        r.recv_cmd(0x14)  # INIT reply (may be an error: this PV has no rpc handler)
        r.send(0x14, struct.pack("<IIB", sid, 0x66, 0x00) + b"\xfe\x99\x00")
        if not r.closed_by_server(1.0):
            assert r.echo_ok()
    h.check_healthy()


def test_type_cache_define_then_use(h):
    """The legitimate form (what pvAccessCPP sends): 0xFD defines id 1, 0xFE uses it."""
    with h.raw() as r:
        r.handshake()
        sid = r.create_channel(PV)
        reply = r.get(sid, ioid=0x70, request=b"\xfd\x01\x00\x80\x00\x00")
        assert reply[5:6] == b"\xff"
        reply = r.get(sid, ioid=0x71, request=b"\xfe\x01\x00")
        assert reply[5:6] == b"\xff"
    h.check_healthy()


def test_segment_continuation_without_first(h):
    with h.raw() as r:
        r.handshake()
        r.send(0x0A, b"\x00" * 9, flags=0x20)  # "last segment" with no first
        if not r.closed_by_server(1.0):
            assert r.echo_ok()
    h.check_healthy()


def test_segments_with_different_commands(h):
    with h.raw() as r:
        r.handshake()
        r.send(0x0A, b"\x00" * 4, flags=0x10)  # first segment of a GET
        r.try_send(0x0B, b"\x00" * 5, flags=0x20)  # "last" segment of a PUT
        assert r.closed_by_server(T)
    h.check_healthy()


def test_lying_lengths_inside_bodies(h):
    with h.raw() as r:
        r.handshake()
        # CREATE_CHANNEL whose name claims 200 bytes but the body ends after 3
        r.send(0x07, struct.pack("<HI", 1, 9) + b"\xc8abc")
        # a GET on a channel that does not exist
        r.try_send(0x0A, struct.pack("<IIB", 0xDEAD, 1, 0x08) + RawPVA.EMPTY_REQUEST)
        # a Size with the 0xFE escape claiming 4 G elements
        r.try_send(0x07, struct.pack("<HI", 1, 10) + b"\xfe\xff\xff\xff\xffx")
        if not r.closed_by_server(1.0):
            assert r.echo_ok()
    h.check_healthy()


def test_put_with_huge_array_count(h, impl):
    """A PUT to an array PV whose data claims 2**31 elements in a tiny body."""
    before = _rss()
    arr = impl.SharedPV(nt=impl.nt.NTScalar("ad"), initial=[1.0], handler=None)

    def put(pv, op):
        pv.post(op.value())
        op.done()

    arr.put(put)
    prov = impl.StaticProvider("huge-array")
    prov.add("bad:arr", arr)
    with serve(impl, prov) as S2:
        tcp2, _ = ports(S2.conf())
        with RawPVA(tcp2) as r:
            r.handshake()
            sid = r.create_channel("bad:arr")
            r.send(0x0B, struct.pack("<IIB", sid, 0x80, 0x08) + RawPVA.EMPTY_REQUEST)
            init = r.recv_cmd(0x0B)
            assert init[5:6] == b"\xff", init
            # bitset {1} (the value field), then Size 0xFE + u32 0x80000000, then 8 bytes
            r.send(
                0x0B,
                struct.pack("<IIB", sid, 0x80, 0x00) + b"\x01\x02" + b"\xfe\x00\x00\x00\x80" + b"\x00" * 8,
            )
            if not r.closed_by_server(1.0):
                assert r.echo_ok()
        assert arr.current()[0] == 1.0
    assert _rss() - before < 256 << 20, "the announced element count was allocated"
    h.check_healthy()


def test_connection_churn(h):
    """Many connections opened and dropped at every stage of the handshake."""
    for i in range(30):
        r = h.raw()
        try:
            if i % 3 >= 1:
                r.recv()
            if i % 3 == 2:
                r.recv_cmd(0x01)
        finally:
            r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
            r.close()
    h.check_healthy()


# --------------------------------------------------------------------------- UDP


def _search(names, flags=0x01, reply_port=0, seq=0x1234, order="<"):
    body = struct.pack(order + "IB3x", seq, flags)
    body += b"\x00" * 10 + b"\xff\xff" + b"\x00" * 4  # reply address: ::ffff:0.0.0.0 (use source)
    body += struct.pack(order + "H", reply_port)
    body += b"\x01" + RawPVA.string("tcp")
    body += struct.pack(order + "H", len(names))
    for i, n in enumerate(names):
        body += struct.pack(order + "I", 0x100 + i) + RawPVA.string(n)
    hdr = struct.pack(order + "BBBBI", 0xCA, 2, 0x80 if order == ">" else 0, 0x03, len(body))
    return hdr + body


def test_udp_search_raw_positive(h):
    """A well-formed raw search gets a SEARCH_RESPONSE naming our cid (checks the harness)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(T)
        my_port = s.getsockname()[1]
        for order in ("<", ">"):
            s.sendto(_search([PV], reply_port=my_port, order=order), ("127.0.0.1", h.udp))
            data, _ = s.recvfrom(65536)
            assert data[0] == 0xCA and data[3] == 0x04
            be = bool(data[2] & 0x80)
            cid = struct.unpack_from(">I" if be else "<I", data, len(data) - 4)[0]
            assert cid == 0x100


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xca", id="one-byte"),
        pytest.param(b"\xca\x02\x00\x03", id="truncated-header"),
        pytest.param(os.urandom(1400), id="random"),
        pytest.param(b"\xca\x02\x00\x03\xff\xff\xff\x7f" + b"\x00" * 20, id="size-beyond-datagram"),
        pytest.param(_search([PV])[:-5], id="truncated-search"),
        pytest.param(_search([PV])[:8] + _search([PV])[8:30] + b"\xff\xff", id="search-cut-at-count"),
        pytest.param(_search([])[:-2] + struct.pack("<H", 0xFFFF) + b"\x00" * 8, id="count-65535-short"),
        pytest.param(b"\xca\x02\x01\x03\x00\x00\x00\x00", id="control-flag"),
        pytest.param(b"\xca\x02\x40" + _search([PV])[3:], id="server-direction"),
        pytest.param(b"\xca\x02\x10" + _search([PV])[3:], id="segmented"),
        pytest.param(b"\xca\x02\x00\x7f\x04\x00\x00\x00abcd", id="unknown-command"),
        pytest.param(
            _search([PV])[:8] + _search([PV])[8:32] + b"\xfe\xff\xff\xff\xff", id="protocol-count-huge"
        ),
        pytest.param(_search([PV] * 300), id="many-names"),
    ],
)
def test_udp_garbage(h, payload):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(3):
            s.sendto(payload, ("127.0.0.1", h.udp))
    # a brand-new client must still find the PV by UDP search
    with client(h.S.conf()) as C2:
        assert C2.get(PV, timeout=T) is not None
    h.check_healthy()


def test_udp_flood_then_search(h):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(2000):
            s.sendto(os.urandom(64), ("127.0.0.1", h.udp))
    with client(h.S.conf()) as C2:
        assert C2.get(PV, timeout=T) is not None
    h.check_healthy()
