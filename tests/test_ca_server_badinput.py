"""Bad Channel Access input, over raw sockets, while a well-behaved client keeps working.

Why this file exists: a CA server on a control-system network meets broken clients, port
scanners and fuzzers.  Each case sends one kind of bad input on its own TCP circuit (random
bytes, unknown commands, misaligned sizes, invalid DBR types, unknown SIDs, requests before
VERSION, oversize messages) or as UDP datagrams to the search port (random bytes, truncated
messages, searches without a leading VERSION).  The server answers as ca-protocol.md §2.3
and §10 say (RSRV's error policy) and closes at most the offending circuit: after every case
a subscription on another circuit still receives a fresh post, and a new circuit still
completes a handshake, a channel and a read.

The messages are built with capva's sans-I/O CA core (``capva.ca``), or byte by byte where
the core refuses to build them.
"""

from __future__ import annotations

import itertools
import random
import socket
import struct

import numpy as np
import pytest

from capva.ca.commands import (
    AccessRightsResponse,
    CreateChanRequest,
    CreateChanResponse,
    ErrorResponse,
    EventAddRequest,
    EventAddResponse,
    ReadNotifyRequest,
    ReadNotifyResponse,
    SearchRequest,
    SearchResponse,
    VersionRequest,
    VersionResponse,
    WriteNotifyRequest,
    WriteNotifyResponse,
    WriteRequest,
    decode_command,
)
from capva.ca.framing import encode_message, split_datagram
from capva.nt import NTScalar
from capva.server import Server
from capva.server.thread import SharedPV
from support.ca import RawCA, ca_ports, ca_tcp_port

pytestmark = pytest.mark.timeout(60)

T = 5.0
PV = "cabad:x"
DOUBLE, LONG, TIME_LONG = 6, 5, 19
ECA_NORMAL, ECA_TOLARGE, ECA_BADTYPE, ECA_INTERNAL, ECA_DEFUNCT, ECA_BADCHID = 1, 72, 114, 142, 278, 410


class Harness:
    def __init__(self, S, pv):
        self.S, self.pv = S, pv
        self.tcp = ca_tcp_port(S, PV)
        _, self.udp = ca_ports(S.conf())
        self.n = itertools.count(1)
        self.watch = RawCA(self.tcp)
        self.watch.handshake()
        self.sid, _, _ = self.watch.create(PV, cid=1)
        self.watch.send(EventAddRequest(LONG, 1, self.sid, 99))
        m, _ = self.watch.recv_until(lambda m: isinstance(m, EventAddResponse))
        assert m is not None

    def raw(self) -> RawCA:
        return RawCA(self.tcp)

    def check_healthy(self):
        """Everyone else is still served: the watching circuit gets a post, and a new
        circuit reads."""
        n = next(self.n) + 1000
        self.pv.post(n)
        m, _ = self.watch.recv_until(
            lambda m: isinstance(m, EventAddResponse) and m.values()[0].tolist() == [n], timeout=T
        )
        assert m is not None, "the watching circuit was closed"
        with self.raw() as r:
            r.handshake()
            sid, _, _ = r.create(PV, cid=5)
            assert r.read(sid, LONG, 1).values()[0].tolist() == [n]

    def close(self):
        self.watch.close()


@pytest.fixture(scope="module")
def h():
    pv = SharedPV(nt=NTScalar("i"), initial=0)

    @pv.put
    def handle(pv_, op):
        pv_.post(op.value())
        op.done()

    big = SharedPV(nt=NTScalar("ad"), initial=np.zeros(10_000))
    with Server(providers=[{PV: pv, PV + "big": big}], isolate=True) as S:
        H = Harness(S, pv)
        H.big_pv = big
        try:
            H.check_healthy()
            yield H
        finally:
            H.close()


def _open(h) -> tuple[RawCA, int]:
    r = h.raw()
    r.handshake()
    sid, _, _ = r.create(PV, cid=3)
    return r, sid


# --------------------------------------------------------------------------- TCP


@pytest.mark.parametrize("seed", range(6))
def test_random_bytes_tcp(h, seed):
    rng = random.Random(seed)
    with h.raw() as r:
        if seed % 2:
            r.handshake()
        r.send(bytes(rng.getrandbits(8) for _ in range(rng.choice([7, 64, 1000, 5000]))))
        r.closed(0.3)  # closed or not: the server must just survive it
    h.check_healthy()


def test_truncated_then_hangup(h):
    with h.raw() as r:
        r.handshake()
        r.send(ReadNotifyRequest(LONG, 1, 0, 1).encode()[:9])
    with h.raw() as r:
        r.handshake()
        r.send(encode_message(4, b"\0" * 64, LONG, 1, 0, 1)[:40])  # payload cut short
    h.check_healthy()


def test_huge_declared_payload(h):
    """An extended header announcing 2 GB: the server must not try to buffer it at once."""
    with h.raw() as r:
        r.handshake()
        r.send(struct.pack("!HHHHIIII", 4, 0xFFFF, DOUBLE, 0, 0, 1, 0x7FFFFFF8, 0x0FFFFFFF) + b"\0" * 4096)
        r.closed(0.3)
    h.check_healthy()


def test_request_before_version(h):
    """RSRV: ERROR ECA_DEFUNCT, circuit kept (§2.3 VERSION)."""
    with h.raw() as r:
        r.recv()  # the server's VERSION, sent at accept
        r.send(CreateChanRequest(PV, cid=1))
        m = r.recv()
        assert isinstance(m, ErrorResponse) and m.status == ECA_DEFUNCT, m
    h.check_healthy()


def test_unknown_command_closes(h):
    with h.raw() as r:
        r.handshake()
        r.send(encode_message(200, b"", 0, 0, 0, 0))
        assert r.closed(T), "circuit not closed after command 200"
        errs = [m for m in r.before_close if isinstance(m, ErrorResponse)]
        assert errs and errs[0].status == ECA_INTERNAL, r.before_close
    h.check_healthy()


def test_misaligned_closes(h):
    """A message whose size is not a multiple of 8: ERROR, then close (RSRV)."""
    with h.raw() as r:
        r.handshake()
        r.send(struct.pack("!HHHHII", 20, 5, 0, 0, 0, 0) + b"abcd\0")
        assert r.closed(T), "circuit not closed after a misaligned message"
        assert any(isinstance(m, ErrorResponse) for m in r.before_close), r.before_close
    h.check_healthy()


@pytest.mark.parametrize("dtype", [39, 99, 0xFFFF])
def test_read_invalid_type_closes_silently(h, dtype):
    r, sid = _open(h)
    with r:
        r.send(ReadNotifyRequest(dtype, 1, sid, 11))
        assert r.closed(T), "circuit not closed"
        assert not any(isinstance(m, (ErrorResponse, ReadNotifyResponse)) for m in r.before_close), (
            r.before_close
        )
    h.check_healthy()


@pytest.mark.parametrize("dtype", [39, 0xEFEF])
def test_event_add_invalid_type_closes_silently(h, dtype):
    r, sid = _open(h)
    with r:
        r.send(EventAddRequest(dtype, 1, sid, 12))
        assert r.closed(T), "circuit not closed"
        assert not any(isinstance(m, (ErrorResponse, EventAddResponse)) for m in r.before_close), (
            r.before_close
        )
    h.check_healthy()


def test_write_invalid_type_error_kept(h):
    """WRITE with an invalid DBR type: ERROR ECA_BADTYPE (p1 = CID), circuit kept (catvs)."""
    r, sid = _open(h)
    with r:
        r.send(encode_message(4, b"\0" * 8, 77, 1, sid, 3))
        m = r.recv()
        assert isinstance(m, ErrorResponse) and m.status == ECA_BADTYPE, m
        assert m.cid == 3
        assert r.read(sid, LONG, 1).status == ECA_NORMAL  # still served
    h.check_healthy()


def test_write_notify_invalid_type_status_kept(h):
    """WRITE_NOTIFY with an invalid type: a reply with status ECA_BADTYPE, circuit kept
    (ca-protocol.md §10.5)."""
    r, sid = _open(h)
    with r:
        r.send(encode_message(19, b"\0" * 8, 77, 1, sid, 21))
        m = r.recv()
        assert isinstance(m, WriteNotifyResponse) and m.status == ECA_BADTYPE and m.ioid == 21, m
        assert r.read(sid, LONG, 1).status == ECA_NORMAL
    h.check_healthy()


@pytest.mark.parametrize(
    "msg",
    [
        ReadNotifyRequest(LONG, 1, 0xDEAD, 1),
        EventAddRequest(LONG, 1, 0xDEAD, 2),
        WriteNotifyRequest.from_values(LONG, [1], sid=0xDEAD, ioid=3),
        WriteRequest.from_values(LONG, [1], sid=0xDEAD, cid=4),
    ],
    ids=["read", "event_add", "write_notify", "write"],
)
def test_unknown_sid_error_and_close(h, msg):
    r, _sid = _open(h)
    with r:
        r.send(msg)
        assert r.closed(T), "circuit not closed after an unknown SID"
        errs = [m for m in r.before_close if isinstance(m, ErrorResponse)]
        assert errs and errs[0].status in (ECA_INTERNAL, ECA_BADCHID), r.before_close
        assert errs[0].cid == 0xFFFFFFFF
    h.check_healthy()


def test_good_requests_after_errors_on_same_circuit(h):
    """ERRORs that keep the circuit (WRITE bad type) do not disturb later replies."""
    r, sid = _open(h)
    with r:
        for i in range(5):
            r.send(encode_message(4, b"\0" * 8, 60 + i, 1, sid, 3))
        r.send(WriteNotifyRequest.from_values(LONG, [77], sid=sid, ioid=50))
        m, before = r.recv_until(lambda m: isinstance(m, WriteNotifyResponse))
        assert m is not None and m.status == ECA_NORMAL
        assert [x.status for x in before if isinstance(x, ErrorResponse)] == [ECA_BADTYPE] * 5
        assert r.read(sid, LONG, 1).values()[0].tolist() == [77]


def test_repeated_reads_follow_posts_and_errors(h):
    """Lone READ_NOTIFYs (the server answers a repeated one from its encode cache) always
    carry the current value, with or without a subscription on the same view; a bad count
    or an unknown SID after cached reads still gets the general path's answer."""
    r, sid = _open(h)
    with r:
        for i in range(3):
            n = next(h.n) + 5000
            h.pv.post(n)
            for _ in range(3):
                assert r.read(sid, LONG, 1, ioid=100 + i).values()[0].tolist() == [n]
        # a count beyond the channel's: ECA_BADCOUNT as an ERROR, circuit kept
        r.send(ReadNotifyRequest(LONG, 5, sid, 300))
        m, _ = r.recv_until(lambda m: isinstance(m, ErrorResponse))
        assert m is not None and m.status == 176
        assert r.read(sid, LONG, 1, ioid=301).values()[0].tolist() == [n]
        # an unknown SID: ERROR and close, whatever was cached before
        r.send(ReadNotifyRequest(LONG, 1, sid + 1000, 302))
        assert r.closed()
    h.check_healthy()


def test_long_batch_replies_in_order(h):
    """1000 reads in one write (the server sends the replies of such a long batch in several
    writes): every reply arrives, in request order."""
    r, sid = _open(h)
    with r:
        r.sock.sendall(b"".join(ReadNotifyRequest(LONG, 1, sid, 1000 + i).encode() for i in range(1000)))
        got = []
        while len(got) < 1000:
            m = r.recv()
            assert m is not None, f"circuit closed after {len(got)} replies"
            if isinstance(m, ReadNotifyResponse):
                got.append(m.ioid)
        assert got == list(range(1000, 2000))
    h.check_healthy()


def test_put_completions_between_big_updates(h):
    """Put completions written by the handler's thread (without waking the loop) while big
    monitor updates (80 kB, more than the kernel takes at once) are queued on the same
    circuit: every completion arrives once, with its ioid, and every update is whole."""
    import threading

    r, sid = _open(h)
    with r:
        bsid, _, _ = r.create(PV + "big", cid=4)
        r.send(EventAddRequest(DOUBLE, 0, bsid, 42))
        m, _ = r.recv_until(lambda m: isinstance(m, EventAddResponse) and m.subscription_id == 42)
        assert m is not None
        arrays = [np.full(10_000, float(k)) for k in range(1, 4)]
        stop = threading.Event()

        def poster():
            for k in range(300):
                if stop.is_set():
                    return
                h.big_pv.post(arrays[k % 3])

        t = threading.Thread(target=poster)
        t.start()
        try:
            ioids = list(range(500, 700))
            r.send(*(WriteNotifyRequest.from_values(LONG, [i], sid=sid, ioid=i) for i in ioids))
            done: list[int] = []
            updates = 0
            while len(done) < len(ioids):
                m = r.recv(timeout=T)
                assert m is not None, f"circuit closed after {len(done)} completions"
                if isinstance(m, WriteNotifyResponse):
                    assert m.status == ECA_NORMAL
                    done.append(m.ioid)
                elif isinstance(m, EventAddResponse) and m.subscription_id == 42:
                    v = m.values()[0]
                    assert len(v) == 10_000 and (v == v[0]).all() and v[0] in (0.0, 1.0, 2.0, 3.0)
                    updates += 1
            assert sorted(done) == ioids
        finally:
            stop.set()
            t.join(T)
    h.check_healthy()


# --------------------------------------------------------------------------- oversize


@pytest.fixture(scope="module")
def limited():
    """A server with EPICS_CA_AUTO_ARRAY_BYTES=NO and EPICS_CA_MAX_ARRAY_BYTES=20000."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        beacon = s.getsockname()[1]
    conf = {
        "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
        "EPICS_CA_SERVER_PORT": str(port),
        "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
        "EPICS_CAS_BEACON_ADDR_LIST": f"127.0.0.1:{beacon}",
        "EPICS_CA_AUTO_ARRAY_BYTES": "NO",
        "EPICS_CA_MAX_ARRAY_BYTES": "20000",
    }
    small = SharedPV(nt=NTScalar("ad"), initial=np.zeros(10))
    big = SharedPV(nt=NTScalar("ad"), initial=np.zeros(5000))

    @small.put
    def handle(pv_, op):
        pv_.post(op.value())
        op.done()

    with Server(providers=[{PV: small, PV + "big": big}], conf=conf, useenv=False, protocols=["ca"]) as S:
        yield S, ca_tcp_port(S, PV)


def test_oversize_request_tolarge(limited):
    """A 30000-byte WRITE_NOTIFY to a server limited to 20000: ERROR ECA_TOLARGE (not a
    write reply), bytes drained, circuit kept."""
    _S, port = limited
    with RawCA(port) as r:
        r.handshake()
        sid, _, _ = r.create(PV, cid=3)
        r.send(WriteNotifyRequest.from_values(DOUBLE, np.arange(3750.0), sid=sid, ioid=9))
        m = r.recv()
        assert isinstance(m, ErrorResponse) and m.status == ECA_TOLARGE, m
        assert m.original.command == 19
        # the circuit is still usable, and the payload was not taken for messages
        r.send(WriteNotifyRequest.from_values(DOUBLE, [1.0, 2.0], sid=sid, ioid=10))
        m = r.recv()
        assert isinstance(m, WriteNotifyResponse) and m.status == ECA_NORMAL and m.ioid == 10, m
        assert r.read(sid, DOUBLE, 0).values()[0].tolist() == [1.0, 2.0]


def test_oversize_reply_tolarge(limited):
    """A read whose reply (40000 bytes) is over the limit: ERROR ECA_TOLARGE, circuit kept."""
    _S, port = limited
    with RawCA(port) as r:
        r.handshake()
        sid, _, count = r.create(PV + "big", cid=4)
        assert count == 5000
        r.send(ReadNotifyRequest(DOUBLE, 0, sid, 12))
        m = r.recv()
        assert isinstance(m, ErrorResponse) and m.status == ECA_TOLARGE, m
        assert r.read(sid, DOUBLE, 100).values()[0].tolist() == [0.0] * 100


# --------------------------------------------------------------------------- UDP


def _udp(h) -> socket.socket:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    return u


def _replies(u: socket.socket, timeout: float) -> list:
    u.settimeout(timeout)
    out = []
    try:
        while True:
            data, _ = u.recvfrom(65536)
            out.append(data)
            u.settimeout(0.05)
    except TimeoutError:
        return out


def test_udp_search_without_version_ignored(h):
    with _udp(h) as u:
        u.sendto(SearchRequest(PV, cid=1).encode(), ("127.0.0.1", h.udp))
        assert _replies(u, 0.5) == []
        u.sendto(VersionRequest.udp(1).encode() + SearchRequest(PV, cid=2).encode(), ("127.0.0.1", h.udp))
        (data,) = _replies(u, T)
        msgs = [decode_command(m, from_server=True) for m in split_datagram(data)]
        assert isinstance(msgs[0], VersionResponse) and msgs[0].sequence == 1
        assert [m.cid for m in msgs if isinstance(m, SearchResponse)] == [2]


def test_searches_answered_during_channel_creation_once_each(h):
    """A circuit creating many channels answers waiting search datagrams as it goes (RSRV
    has a UDP thread of its own): every search still gets exactly one reply, whether the
    loop's reader or the circuit took the datagram, and every channel is created."""
    r = h.raw()
    with r, _udp(h) as u:
        r.handshake()
        n = 200
        for k in range(n):
            u.sendto(VersionRequest.udp(k).encode() + SearchRequest(PV, cid=k).encode(), ("127.0.0.1", h.udp))
        r.send(*(CreateChanRequest(PV, 1000 + i) for i in range(n)))
        created = 0
        while created < n:
            m = r.recv(timeout=T)
            assert m is not None
            created += isinstance(m, CreateChanResponse)
        got = []
        for data in _replies(u, T):
            got += [
                m.cid
                for m in map(lambda x: decode_command(x, from_server=True), split_datagram(data))
                if isinstance(m, SearchResponse)
            ]
        assert sorted(got) == list(range(n))
    h.check_healthy()


@pytest.mark.parametrize("seed", range(5))
def test_udp_random_bytes_ignored(h, seed):
    rng = random.Random(seed)
    with _udp(h) as u:
        for _ in range(20):
            n = rng.choice([1, 8, 15, 16, 17, 40, 300, 1400])
            u.sendto(bytes(rng.getrandbits(8) for _ in range(n)), ("127.0.0.1", h.udp))
        # truncated: VERSION then a SEARCH whose payload is cut short
        good = VersionRequest.udp(5).encode() + SearchRequest(PV, cid=5).encode()
        u.sendto(good[:-4], ("127.0.0.1", h.udp))
        # an unknown command after VERSION, then a search: nothing answered after it
        u.sendto(VersionRequest.udp(6).encode() + encode_message(23, b"", 0, 0, 0, 0), ("127.0.0.1", h.udp))
        _replies(u, 0.2)
        u.sendto(VersionRequest.udp(7).encode() + SearchRequest(PV, cid=7).encode(), ("127.0.0.1", h.udp))
        data = _replies(u, T)
        cids = [
            m.cid
            for d in data
            for m in (decode_command(x, from_server=True) for x in split_datagram(d))
            if isinstance(m, SearchResponse)
        ]
        assert 7 in cids, data
    h.check_healthy()


def test_access_rights_before_create(h):
    """Sanity of the raw client itself: ACCESS_RIGHTS precedes CREATE_CHAN (catvs)."""
    with h.raw() as r:
        r.handshake()
        r.send(CreateChanRequest(PV, cid=9))
        first = r.recv()
        assert isinstance(first, AccessRightsResponse) and first.cid == 9
