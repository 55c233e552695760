"""PVA UDP side of the server: search replies, unicast fan-out, beacons (capva._aio.udp).

Everything runs on loopback with random ports and is closed at the end of each test.  No
test sleeps to synchronise: replies are awaited with timeouts, and "no reply" is proven by
ordering instead.  Datagrams that one socket receives are handled in order, and a loopback
``sendto`` puts the datagram in the receiver's queue before it returns.  So when the answer
to a later probe has arrived, any answer to an earlier datagram would already be waiting.

The interop tests drive the responder with p4p's pvxs client.  Two of them use a p4p
server for the TCP side, so they do not depend on capva's TCP server.  The last two go
through ``capva.server.Server`` end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import pytest

from capva._aio.config import ServerConfig
from capva._aio.udp import (
    LOCAL_MCAST_GROUP,
    Interface,
    PVAUdpServer,
    beacon_destinations,
    ipv4_interfaces,
    search_reply,
)
from capva.pva.framing import encode_frame, encode_header, split_datagram
from capva.pva.messages import (
    ANY_ADDR,
    ANY_ADDR_MAPPED,
    CMD_BEACON,
    CMD_ORIGIN_TAG,
    CMD_SEARCH,
    CMD_SEARCH_RESPONSE,
    SEARCH_MUST_REPLY,
    SEARCH_UNICAST,
    Beacon,
    OriginTag,
    Search,
    SearchResponse,
    parse_addr,
)

TIMEOUT = 5.0
GUID_A = b"capva-test-A"
GUID_B = b"capva-test-B"
TCP_PORT = 15075  # advertised only; nothing connects to it in the pure UDP tests
LO = "127.0.0.1"
LO_MAPPED = parse_addr(LO)


def run(coro: Any) -> Any:
    """Run one async test body with an overall bound."""
    return asyncio.run(asyncio.wait_for(coro, 60))


# -- helpers --------------------------------------------------------------------------------


class Names:
    """``lookup`` for the server: a fixed set of names; records every call."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self.names = set(names)
        self.calls: list[str] = []

    def __call__(self, name: str) -> bool:
        self.calls.append(name)
        return name in self.names


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Peer:
    """A UDP socket read through the running loop (add_reader, so Python 3.10 works too)."""

    def __init__(self, sock: socket.socket | None = None, host: str = LO) -> None:
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((host, 0))
        sock.setblocking(False)
        self.sock = sock
        self.port = sock.getsockname()[1]

    def send(self, data: bytes, dest: tuple[str, int]) -> None:
        self.sock.sendto(data, dest)

    async def recv(self, timeout: float = TIMEOUT) -> tuple[bytes, tuple[str, int]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                return self.sock.recvfrom(0x10000)
            except BlockingIOError:
                pass
            fut: asyncio.Future[None] = loop.create_future()
            loop.add_reader(self.sock.fileno(), _wake, fut)
            try:
                await asyncio.wait_for(fut, max(0.0, deadline - loop.time()))
            finally:
                loop.remove_reader(self.sock.fileno())

    async def response(self, timeout: float = TIMEOUT) -> SearchResponse:
        """The next datagram, which must be one big-endian SEARCH_RESPONSE."""
        data, _ = await self.recv(timeout)
        frames = split_datagram(data)
        assert len(frames) == 1, frames
        f = frames[0]
        assert f.command == CMD_SEARCH_RESPONSE
        assert data[2] == 0xC0, f"flags 0x{data[2]:02x}: want big-endian + server"
        return SearchResponse.decode(f.body, f.be)

    def pending(self) -> list[bytes]:
        """Datagrams already queued, without waiting."""
        out = []
        while True:
            try:
                out.append(self.sock.recvfrom(0x10000)[0])
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def peers(n: int = 1, host: str = LO) -> Iterator[list[Peer]]:
    ps = [Peer(host=host) for _ in range(n)]
    try:
        yield ps
    finally:
        for p in ps:
            p.close()


def group_sniffer(port: int) -> Peer:
    """A socket that sees every datagram sent to the loopback fan-out group on ``port``."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((LOCAL_MCAST_GROUP, port))
    s.setsockopt(
        socket.IPPROTO_IP,
        socket.IP_ADD_MEMBERSHIP,
        socket.inet_aton(LOCAL_MCAST_GROUP) + socket.inet_aton(LO),
    )
    return Peer(s)


def group_sender() -> Peer:
    """A socket that sends to the group through loopback, as a local peer server would."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(LO))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    s.bind((LO, 0))
    return Peer(s)


def search(
    channels: Iterable[tuple[int, str]],
    reply_port: int,
    *,
    seq: int = 1,
    flags: int = 0,
    addr: bytes = ANY_ADDR,
    protocols: Iterable[str] = ("tcp",),
    be: bool = True,
) -> bytes:
    """One SEARCH message, header included."""
    msg = Search(seq, list(channels), reply_port, addr, list(protocols), flags)
    return encode_frame(CMD_SEARCH, msg.encode(be), be=be, server=False)


def origin_tag(addr: str | bytes = LO) -> bytes:
    a = parse_addr(addr) if isinstance(addr, str) else addr
    return encode_frame(CMD_ORIGIN_TAG, OriginTag(a).encode(True), be=True, server=False)


@contextlib.asynccontextmanager
async def udp_server(
    names: Iterable[str] | Names = (),
    *,
    guid: bytes = GUID_A,
    tcp_port: int = TCP_PORT,
    **cfg: Any,
) -> AsyncIterator[tuple[PVAUdpServer, Names]]:
    """A started responder on 127.0.0.1 (random port unless ``udp_port`` is given)."""
    config = ServerConfig.isolated()
    for k, v in cfg.items():
        assert hasattr(config, k), k
        setattr(config, k, v)
    lookup = names if isinstance(names, Names) else Names(names)
    srv = PVAUdpServer(config, guid, lookup)
    await srv.start(tcp_port)
    try:
        yield srv, lookup
    finally:
        await srv.close()


def dest(srv: PVAUdpServer) -> tuple[str, int]:
    return (LO, srv.port)


# -- search ---------------------------------------------------------------------------------


def test_search_hit_lists_claimed_cids() -> None:
    async def body() -> None:
        async with udp_server({"pv:a", "pv:b"}) as (srv, _):
            assert srv.port > 0 and srv.fanout
            with peers() as (p,):
                chans = [(1, "pv:a"), (2, "nope"), (3, "pv:b")]
                p.send(search(chans, p.port, seq=0x66696E64, flags=SEARCH_UNICAST), dest(srv))
                r = await p.response()
                assert r.found and r.cids == [1, 3]
                assert r.seq == 0x66696E64
                assert r.guid == GUID_A
                assert r.port == TCP_PORT
                assert r.addr == ANY_ADDR_MAPPED
                assert r.protocol == "tcp"

    run(body())


def test_search_miss_is_silent_and_must_reply_answers_negative() -> None:
    async def body() -> None:
        async with udp_server({"pv:a"}) as (srv, _):
            with peers() as (p,):
                p.send(search([(4, "nope")], p.port, seq=8), dest(srv))
                p.send(search([(5, "nope")], p.port, seq=9, flags=SEARCH_MUST_REPLY), dest(srv))
                r = await p.response()
                assert r.seq == 9, "the plain miss got an answer"
                assert not r.found and r.cids == []
                assert p.pending() == []

    run(body())


def test_discovery_ping() -> None:
    async def body() -> None:
        async with udp_server({"pv:a"}) as (srv, names):
            with peers() as (p,):
                # count 0, no protocols, no MustReply: nothing; with MustReply (pvxlist): found=0
                p.send(search([], p.port, seq=1, protocols=()), dest(srv))
                p.send(search([], p.port, seq=2, protocols=(), flags=SEARCH_MUST_REPLY), dest(srv))
                r = await p.response()
                assert (r.seq, r.found, r.cids, r.guid) == (2, False, [], GUID_A)
                assert p.pending() == []
                assert names.calls == []

    run(body())


def test_protocol_rule() -> None:
    """Names are looked up only when "tcp" is offered (pvxs)."""

    async def body() -> None:
        async with udp_server({"pv:a"}) as (srv, names):
            with peers() as (p,):
                p.send(search([(1, "pv:a")], p.port, seq=1, protocols=("tls",)), dest(srv))
                p.send(search([(1, "pv:a")], p.port, seq=2, protocols=()), dest(srv))
                flags = SEARCH_MUST_REPLY
                p.send(search([(1, "pv:a")], p.port, seq=3, protocols=("tls",), flags=flags), dest(srv))
                p.send(search([(1, "pv:a")], p.port, seq=4, protocols=("tls", "tcp")), dest(srv))
                r3 = await p.response()
                assert (r3.seq, r3.found, r3.cids) == (3, False, [])
                r4 = await p.response()
                assert (r4.seq, r4.found, r4.cids) == (4, True, [1])
                assert names.calls == ["pv:a"]

    run(body())


def test_reply_goes_to_reply_port_and_address() -> None:
    async def body() -> None:
        async with udp_server({"pv:a"}) as (srv, _):
            with peers(3) as (a, b, c):
                # replyPort names b; the datagram comes from a
                a.send(search([(1, "pv:a")], b.port, seq=1), dest(srv))
                r = await b.response()
                assert r.seq == 1 and r.cids == [1]
                # an explicit replyAddr is honoured as well
                a.send(search([(2, "pv:a")], c.port, seq=2, addr=LO_MAPPED), dest(srv))
                r = await c.response()
                assert r.seq == 2 and r.cids == [2]
                assert a.pending() == []
                assert b.pending() == []

    run(body())


def test_reply_is_big_endian_for_little_endian_search() -> None:
    async def body() -> None:
        async with udp_server({"pv:a"}) as (srv, _):
            with peers() as (p,):
                p.send(search([(0x01020304, "pv:a")], p.port, seq=0x0A0B0C0D, be=False), dest(srv))
                data, _ = await p.recv()
                assert data[:4] == bytes([0xCA, 2, 0xC0, CMD_SEARCH_RESPONSE])
                (size,) = struct.unpack_from(">I", data, 4)
                assert size == len(data) - 8
                r = SearchResponse.decode(data[8:], True)
                assert r.seq == 0x0A0B0C0D and r.cids == [0x01020304]

    run(body())


def test_several_names_and_messages_in_one_datagram() -> None:
    async def body() -> None:
        async with udp_server({"pv:a", "pv:b"}) as (srv, names):
            with peers() as (p,):
                chans = [(i, f"miss:{i}") for i in range(50)] + [(100, "pv:a"), (101, "pv:b")]
                dgram = search(chans, p.port, seq=1) + search(
                    [(7, "pv:a"), (8, "pv:a"), (9, "miss:0")], p.port, seq=2, be=False
                )
                p.send(dgram, dest(srv))
                got = {r.seq: r.cids for r in [await p.response(), await p.response()]}
                assert got == {1: [100, 101], 2: [7, 8]}
                # user lookup ran once per distinct name in the datagram
                assert sorted(names.calls) == sorted({n for _, n in chans})

    run(body())


def test_ignore_list() -> None:
    async def body() -> None:
        with peers(2) as (bad, good), peers(1, host="127.0.0.2") as (other,):
            ignore = [(LO, bad.port), ("127.0.0.2", 0)]
            async with udp_server({"pv:a"}, ignore_addrs=ignore) as (srv, _):
                bad.send(search([(1, "pv:a")], bad.port, seq=1, flags=SEARCH_MUST_REPLY), dest(srv))
                other.send(search([(1, "pv:a")], other.port, seq=2, flags=SEARCH_MUST_REPLY), dest(srv))
                # a client hiding behind an explicit reply address is still ignored
                good.send(search([(1, "pv:a")], other.port, seq=3, addr=parse_addr("127.0.0.2")), dest(srv))
                good.send(search([(1, "pv:a")], good.port, seq=4), dest(srv))
                r = await good.response()
                assert r.seq == 4
                assert bad.pending() == []
                assert other.pending() == []

    run(body())


BAD_DATAGRAMS = [
    b"",
    b"\xca",
    b"\xca\x02\x00\x03",  # truncated header
    b"\x00" * 8,  # wrong magic
    b"\xcb\x02\x00\x03\x00\x00\x00\x00",
    b"\xca\x00\x00\x03\x00\x00\x00\x00",  # version 0
    b"\xca\x02\x80\x03\xff\xff\xff\xff" + b"\x00" * 40,  # absurd size
    b"\xca\x02\x01\x02\x00\x00\x00\x00",  # control message
    encode_header(CMD_SEARCH, 4, 0x90) + b"abcd",  # segmented
    encode_frame(CMD_SEARCH, b"\x00" * 10, be=True, server=False),  # truncated SEARCH body
    # count 65535 with no names behind it
    encode_frame(
        CMD_SEARCH, bytes(8) + ANY_ADDR + b"\x13\x88" + b"\x01\x03tcp" + b"\xff\xff", be=True, server=False
    ),
    # absurd protocol count
    encode_frame(
        CMD_SEARCH, bytes(8) + ANY_ADDR + b"\x13\x88" + b"\xfe\x7f\xff\xff\xff", be=True, server=False
    ),
    # name that is not UTF-8
    encode_frame(
        CMD_SEARCH,
        bytes(8) + ANY_ADDR + b"\x13\x88" + b"\x01\x03tcp" + b"\x00\x01" + b"\x00\x00\x00\x01\x02\xff\xfe",
        be=True,
        server=False,
    ),
    encode_frame(CMD_SEARCH_RESPONSE, b"\x01", be=True, server=True),
    encode_frame(CMD_BEACON, b"\x01\x02", be=True, server=True),
    encode_frame(0x7F, b"unknown command", be=True, server=False),
    bytes(range(256)) * 4,
]


def test_bad_datagrams_do_not_stop_the_responder(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with udp_server({"pv:a"}) as (srv, _):
            with peers() as (p,), contextlib.closing(group_sender()) as g:
                for d in BAD_DATAGRAMS:
                    p.send(d, dest(srv))
                    g.send(d, (LOCAL_MCAST_GROUP, srv.port))
                    g.send(origin_tag() + d, (LOCAL_MCAST_GROUP, srv.port))
                g.send(
                    encode_frame(CMD_ORIGIN_TAG, b"\x00" * 5, be=True, server=False),
                    (LOCAL_MCAST_GROUP, srv.port),
                )
                twice = origin_tag() + origin_tag() + search([(1, "pv:a")], p.port, addr=LO_MAPPED, flags=1)
                g.send(twice, (LOCAL_MCAST_GROUP, srv.port))
                # a good message after a truncated one in the same datagram is still served
                good = search([(1, "pv:a")], p.port, seq=42)
                p.send(good + good[:-3], dest(srv))
                r = await p.response()
                assert r.seq == 42 and r.cids == [1]
                p.send(search([(2, "pv:a")], p.port, seq=43), dest(srv))
                assert (await p.response()).seq == 43

    with caplog.at_level(logging.DEBUG, logger="capva._aio.udp"):
        run(body())
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert any("malformed" in r.getMessage() for r in caplog.records)


# -- fan-out --------------------------------------------------------------------------------


def test_unicast_search_is_forwarded_through_the_group() -> None:
    async def body() -> None:
        async with udp_server({"pv:a"}) as (srv, _):
            with peers() as (p,), contextlib.closing(group_sniffer(srv.port)) as sniff:
                orig = search([(0x12345678, "pv:a")], p.port, seq=0x66696E64, flags=SEARCH_UNICAST | 1)
                p.send(orig, dest(srv))
                r = await p.response()
                assert r.cids == [0x12345678]
                assert p.pending() == [], "answered more than once"
                fwd = sniff.pending()
                assert len(fwd) == 1
                # pvxs layout (pva-protocol.md §6.4): BE ORIGIN_TAG naming the receiving address
                assert fwd[0][:24] == bytes.fromhex("ca028016 00000010") + LO_MAPPED
                inner = split_datagram(fwd[0][24:])
                assert len(inner) == 1 and inner[0].command == CMD_SEARCH
                want = bytearray(orig)
                want[8 + 4] = 0x01  # unicast bit cleared
                want[8 + 8 : 8 + 24] = LO_MAPPED  # reply address filled in
                assert fwd[0][24:] == bytes(want)

    run(body())


def test_forwarded_copies_are_answered_never_reforwarded() -> None:
    async def body() -> None:
        async with udp_server({"pv:a"}) as (srv, _):
            grp = (LOCAL_MCAST_GROUP, srv.port)
            with (
                peers() as (p,),
                contextlib.closing(group_sniffer(srv.port)) as sniff,
                contextlib.closing(group_sender()) as g,
            ):
                # ignored: reply address "any" (that would be the forwarder), and an origin
                # address this server (bound to 127.0.0.1 only) does not serve
                g.send(origin_tag() + search([(1, "pv:a")], p.port, seq=1), grp)
                g.send(origin_tag("10.1.2.3") + search([(1, "pv:a")], p.port, seq=2, addr=LO_MAPPED), grp)
                # answered: tagged with our address, tagged "any", untagged with a reply
                # address (even with the unicast bit still set: never forwarded again)
                g.send(origin_tag() + search([(1, "pv:a")], p.port, seq=3, addr=LO_MAPPED), grp)
                g.send(origin_tag(ANY_ADDR) + search([(1, "pv:a")], p.port, seq=4, addr=LO_MAPPED), grp)
                flags = SEARCH_UNICAST
                g.send(search([(1, "pv:a")], p.port, seq=5, addr=LO_MAPPED, flags=flags), grp)
                seqs = [(await p.response()).seq for _ in range(3)]
                assert seqs == [3, 4, 5]
                assert len(sniff.pending()) == 5, "a forwarded copy was forwarded again"

    run(body())


def test_origin_tag_is_only_trusted_via_the_group() -> None:
    async def body() -> None:
        async with udp_server({"pv:a"}) as (srv, _):
            with peers() as (p,):
                spoof = origin_tag() + search([(1, "pv:a")], p.port, seq=1, addr=LO_MAPPED, flags=1)
                p.send(spoof, dest(srv))
                p.send(search([(1, "pv:a")], p.port, seq=2, flags=1), dest(srv))
                assert (await p.response()).seq == 2

    run(body())


async def _collect(p: Peer, n: int) -> dict[bytes, SearchResponse]:
    out: dict[bytes, SearchResponse] = {}
    for _ in range(n):
        r = await p.response()
        assert r.guid not in out, "duplicate answer"
        out[r.guid] = r
    return out


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_two_servers_share_the_port(host: str) -> None:
    """Unicast reaches one socket of the two; the fan-out lets both answer.  Many client
    sockets so that the kernel's reuseport hash picks each server some of the time."""

    async def body() -> None:
        async with udp_server({"a:pv"}, guid=GUID_A, interfaces=[host]) as (a, _):
            async with udp_server({"b:pv"}, guid=GUID_B, udp_port=a.port, interfaces=[host]) as (b, _):
                assert a.port == b.port
                with peers(12) as ps:
                    for i, p in enumerate(ps):
                        chans = [(1, "a:pv"), (2, "b:pv")]
                        p.send(search(chans, p.port, seq=i, flags=SEARCH_UNICAST), dest(a))
                        got = await _collect(p, 2)
                        assert got[GUID_A].cids == [1] and got[GUID_B].cids == [2]
                        # MustReply, nobody has it: both say so
                        p.send(search([(3, "x")], p.port, seq=100 + i, flags=SEARCH_UNICAST | 1), dest(a))
                        got = await _collect(p, 2)
                        assert not got[GUID_A].found and not got[GUID_B].found
                        assert p.pending() == []

    run(body())


def test_wildcard_bind_answers_broadcast_directly() -> None:
    """With a 0.0.0.0 socket, IP_PKTINFO tells a broadcast (answer) from a unicast
    (forward).  127.255.255.255 is loopback's own broadcast address: it never leaves lo."""

    async def body() -> None:
        async with udp_server({"pv:a"}, interfaces=["0.0.0.0"]) as (srv, _):
            with peers() as (p,), contextlib.closing(group_sniffer(srv.port)) as sniff:
                p.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                p.send(search([(1, "pv:a")], p.port, seq=1), ("127.255.255.255", srv.port))
                assert (await p.response()).seq == 1
                assert sniff.pending() == [], "a broadcast search was forwarded"
                p.send(search([(1, "pv:a")], p.port, seq=2, flags=SEARCH_UNICAST), (LO, srv.port))
                assert (await p.response()).seq == 2
                fwd = sniff.pending()
                assert len(fwd) == 1 and fwd[0][8:24] == LO_MAPPED

    run(body())


# -- beacons --------------------------------------------------------------------------------


def _beacon(data: bytes) -> Beacon:
    frames = split_datagram(data)
    assert len(frames) == 1 and frames[0].command == CMD_BEACON
    assert data[2] == 0xC0
    return Beacon.decode(frames[0].body, frames[0].be)


def test_beacons_and_poke() -> None:
    async def body() -> None:
        with peers() as (listener,):
            cfg = ServerConfig.isolated()
            cfg.beacon_addrs = [(LO, listener.port)]
            cfg.beacon_period = 60.0
            srv = PVAUdpServer(cfg, GUID_A, Names())
            srv.poke()  # before start: counted, carried by the first beacon
            srv.POKE_MIN_INTERVAL = 0.0
            await srv.start(TCP_PORT)
            try:
                assert srv.beacon_destinations == [(LO, listener.port)]
                b = _beacon((await listener.recv())[0])
                assert b.guid == GUID_A and b.port == TCP_PORT and b.protocol == "tcp"
                assert (b.seq, b.change, b.flags) == (0, 1, 0)
                assert b.addr == ANY_ADDR_MAPPED and b.status is None
                srv.poke()
                b = _beacon((await listener.recv())[0])
                assert (b.seq, b.change) == (1, 2)
                srv.poke()
                srv.poke()  # coalesced into one beacon
                b = _beacon((await listener.recv())[0])
                assert (b.seq, b.change) == (2, 4)
                assert srv.change_count == 4
            finally:
                await srv.close()
            assert listener.pending() == []

    run(body())


def test_beacon_period_and_sequence_wrap() -> None:
    async def body() -> None:
        with peers() as (listener,):
            cfg = {"beacon_addrs": [(LO, listener.port)], "beacon_period": 0.001}
            async with udp_server(**cfg) as (srv, _):
                srv._seq = 254
                seqs = [_beacon((await listener.recv())[0]).seq for _ in range(4)]
            # the first one went out at start, before the test moved seq
            assert seqs[1:] == [254, 255, 0]

    run(body())


def test_poke_from_another_thread() -> None:
    async def body() -> None:
        with peers() as (listener,):
            cfg = {"beacon_addrs": [(LO, listener.port)], "beacon_period": 60.0}
            async with udp_server(**cfg) as (srv, _):
                assert _beacon((await listener.recv())[0]).change == 0
                await asyncio.to_thread(srv.poke)
                assert _beacon((await listener.recv())[0]).change == 1

    run(body())


def test_beacon_destinations() -> None:
    ifaces = [
        Interface("lo", 1, "127.0.0.1", None, True, True),
        Interface("eth0", 2, "192.0.2.2", "192.0.2.255", True, False),
        Interface("eth1", 3, "198.51.100.7", "198.51.100.255", False, False),  # down
        Interface("eth2", 4, "203.0.113.9", "203.0.113.255", True, False),
    ]

    def dests(interfaces: list[str], auto: bool = True, addrs: Any = ()) -> list[tuple[str, int]]:
        cfg = ServerConfig(interfaces=interfaces, auto_beacon=auto, beacon_addrs=list(addrs))
        return beacon_destinations(cfg, 5999, ifaces)

    assert dests(["0.0.0.0"]) == [("192.0.2.255", 5999), ("203.0.113.255", 5999)]
    assert dests(["127.0.0.1"]) == [("127.0.0.1", 5999)]
    assert dests(["192.0.2.2", "127.0.0.1"]) == [("192.0.2.255", 5999), ("127.0.0.1", 5999)]
    assert dests(["0.0.0.0"], auto=False) == []
    # explicit list first; port 0 (parsed before a random port was bound) means ours
    assert dests(["127.0.0.1"], addrs=[("10.0.0.1", 0), ("127.0.0.1", 5999)]) == [
        ("10.0.0.1", 5999),
        ("127.0.0.1", 5999),
    ]
    cfg = ServerConfig(interfaces=["0.0.0.0"])
    assert beacon_destinations(cfg, 5999, []) == [("255.255.255.255", 5999)]


def test_ipv4_interfaces_has_loopback() -> None:
    lo = [i for i in ipv4_interfaces() if i.loopback]
    assert lo and lo[0].addr.startswith("127.")


# -- search_reply (shared with the TCP name-server path) ------------------------------------


def test_search_reply_rules() -> None:
    names = Names({"a", "b"})
    msg = Search(5, [(1, "a"), (2, "x"), (3, "a"), (4, "b")], 0, protocols=["tcp"])
    r = search_reply(msg, GUID_A, 1234, names)
    assert r is not None and (r.found, r.cids, r.port, r.seq) == (True, [1, 3, 4], 1234, 5)
    assert names.calls == ["a", "x", "b"]  # once per distinct name
    assert search_reply(Search(5, [(2, "x")], 0), GUID_A, 1234, names) is None
    neg = search_reply(Search(5, [(2, "x")], 0, flags=SEARCH_MUST_REPLY), GUID_A, 1234, names)
    assert neg is not None and (neg.found, neg.cids) == (False, [])
    # over TCP the protocol list is not checked (the client is already connected)
    tls_only = Search(6, [(1, "a")], 0, protocols=["tls"])
    assert search_reply(tls_only, GUID_A, 1234, names) is None
    r = search_reply(tls_only, GUID_A, 1234, names, tcp=True)
    assert r is not None and r.cids == [1]


def test_search_reply_lookup_errors_mean_no() -> None:
    def lookup(name: str) -> bool:
        if name == "boom":
            raise RuntimeError("provider bug")
        return True

    msg = Search(1, [(1, "boom"), (2, "ok")], 0)
    r = search_reply(msg, GUID_A, 1, lookup)
    assert r is not None and r.cids == [2]


def test_lookup_error_does_not_stop_udp() -> None:
    def lookup(name: str) -> bool:
        if name == "boom":
            raise ValueError("nope")
        return name == "ok"

    async def body() -> None:
        async with udp_server(Names()) as (srv, _):
            srv._lookup = lookup
            with peers() as (p,):
                p.send(search([(1, "boom"), (2, "ok")], p.port, seq=1), dest(srv))
                assert (await p.response()).cids == [2]

    run(body())


# -- lifecycle ------------------------------------------------------------------------------


def test_close_releases_everything_and_is_idempotent() -> None:
    async def body() -> None:
        srv = PVAUdpServer(ServerConfig.isolated(), GUID_A, Names())
        assert srv.port == 0
        port = await srv.start(TCP_PORT)
        assert port == srv.port != 0
        with pytest.raises(RuntimeError):
            await srv.start(TCP_PORT)
        await srv.close()
        await srv.close()
        srv.poke()  # harmless after close
        # nothing of ours holds the port any more: exclusive binds succeed
        for host in (LO, LOCAL_MCAST_GROUP):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((host, port))

    run(body())


def test_bind_failure_leaves_nothing_open() -> None:
    async def body() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hog:
            hog.bind((LO, 0))  # no SO_REUSEADDR: nobody can share this port
            cfg = ServerConfig.isolated()
            cfg.udp_port = hog.getsockname()[1]
            srv = PVAUdpServer(cfg, GUID_A, Names())
            with pytest.raises(OSError):
                await srv.start(TCP_PORT)
            await srv.close()

    run(body())


# -- interop with p4p (pvxs) ----------------------------------------------------------------


def _p4p_context(conf: dict[str, str]) -> Any:
    ctx_mod = pytest.importorskip("p4p.client.thread")
    return ctx_mod.Context("pva", conf=conf, useenv=False)


def client_conf(udp_port: int) -> dict[str, str]:
    return {
        "EPICS_PVA_ADDR_LIST": f"{LO}:{udp_port}",
        "EPICS_PVA_AUTO_ADDR_LIST": "NO",
        "EPICS_PVA_BROADCAST_PORT": str(udp_port),
        "EPICS_PVA_INTF_ADDR_LIST": LO,
        "EPICS_PVA_NAME_SERVERS": "",
    }


@contextlib.contextmanager
def p4p_server(pvs: dict[str, float], conf: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    """A p4p server with NTScalar doubles; yields its effective conf."""
    pytest.importorskip("p4p")
    from p4p.nt import NTScalar
    from p4p.server import Server
    from p4p.server.thread import SharedPV

    shared = {n: SharedPV(nt=NTScalar("d"), initial=v) for n, v in pvs.items()}
    if conf is None:
        srv = Server(providers=[shared], isolate=True)
    else:
        srv = Server(providers=[shared], conf=conf, useenv=False)
    try:
        yield srv.conf()
    finally:
        srv.stop()


def p4p_get(udp_port: int, *names: str) -> list[float]:
    ctx = _p4p_context(client_conf(udp_port))
    try:
        return [float(ctx.get(n, timeout=TIMEOUT)) for n in names]
    finally:
        ctx.close()


def test_p4p_client_resolves_through_our_responder() -> None:
    """pvxs's client searches our UDP port, gets our (BE) response and connects to the TCP
    port we advertise: here a p4p server's, so this needs nothing of capva's TCP side."""

    async def body() -> None:
        with p4p_server({"interop:x": 2.5}) as conf:
            tcp = int(conf["EPICS_PVAS_SERVER_PORT"])
            async with udp_server({"interop:x"}, tcp_port=tcp) as (srv, names):
                assert await asyncio.to_thread(p4p_get, srv.port, "interop:x") == [2.5]
                assert "interop:x" in names.calls

    run(body())


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_p4p_server_and_ours_share_the_port(host: str) -> None:
    """A p4p server and our responder on one UDP port: the pvxs client, searching by
    unicast, finds the PVs of both (whoever gets the datagram forwards it)."""

    async def body() -> None:
        with p4p_server({"share:ours": 1.25}) as backend:  # TCP side for our name
            tcp = int(backend["EPICS_PVAS_SERVER_PORT"])
            async with udp_server({"share:ours"}, tcp_port=tcp, interfaces=[host]) as (srv, _):
                with p4p_server({"share:theirs": 3.5}, conf=_shared_port_conf(srv.port)) as conf:
                    assert conf["EPICS_PVAS_BROADCAST_PORT"] == str(srv.port)
                    for _ in range(3):  # fresh clients: new source ports, other hash choices
                        got = await asyncio.to_thread(p4p_get, srv.port, "share:ours", "share:theirs")
                        assert got == [1.25, 3.5]

    run(body())


def _shared_port_conf(udp_port: int) -> dict[str, str]:
    """A p4p server on 127.0.0.1 sharing ``udp_port``, beacons to loopback only."""
    return {
        "EPICS_PVAS_INTF_ADDR_LIST": LO,
        "EPICS_PVAS_BROADCAST_PORT": str(udp_port),
        "EPICS_PVAS_SERVER_PORT": "0",
        "EPICS_PVAS_BEACON_ADDR_LIST": LO,
        "EPICS_PVAS_AUTO_BEACON_ADDR_LIST": "NO",
        "EPICS_PVA_ADDR_LIST": LO,
        "EPICS_PVA_AUTO_ADDR_LIST": "NO",
    }


def test_two_capva_responders_and_a_p4p_server_share_the_port() -> None:
    """The brief's target topology: every one of three servers on one port answers a
    unicast search (pvxs may answer a forwarded search twice: duplicates are tolerated)."""

    async def body() -> None:
        async with udp_server({"three:a"}, guid=GUID_A) as (a, _):
            async with udp_server({"three:b"}, guid=GUID_B, udp_port=a.port) as (b, _):
                with p4p_server({"three:p4p": 1.0}, conf=_shared_port_conf(a.port)), peers(4) as ps:
                    for i, p in enumerate(ps):
                        chans = [(1, "three:a"), (2, "three:b"), (3, "three:p4p")]
                        p.send(search(chans, p.port, seq=i, flags=SEARCH_UNICAST), dest(a))
                        got: dict[bytes, list[int]] = {}
                        for _ in range(10):  # bounded: three answers plus pvxs duplicates
                            r = await p.response()
                            assert got.setdefault(r.guid, r.cids) == r.cids
                            if len(got) == 3:
                                break
                        assert got.pop(GUID_A) == [1] and got.pop(GUID_B) == [2]
                        assert list(got.values()) == [[3]]

    run(body())


def test_forward_is_byte_identical_to_pvxs_and_pvxs_forwards_are_answered() -> None:
    """Which socket the kernel hands a unicast datagram to is not under the test's control,
    so the pvxs -> capva direction is checked by capture and replay: the same unicast SEARCH
    sent to a p4p server alone and to our responder alone is forwarded with the same bytes,
    and pvxs's forward, replayed into the group, is answered by us."""

    async def body() -> None:
        with peers() as (p,):
            orig = search([(0x0BADF00D, "ours:only")], p.port, seq=0x66696E64, flags=SEARCH_UNICAST)
            with p4p_server({"theirs:only": 1.0}, conf=_shared_port_conf(0)) as conf:
                port = int(conf["EPICS_PVAS_BROADCAST_PORT"])
                with contextlib.closing(group_sniffer(port)) as sniff:
                    p.send(orig, (LO, port))
                    theirs, src = await sniff.recv()
                    assert src[0] == LO
            async with udp_server({"ours:only"}) as (srv, _):
                with contextlib.closing(group_sniffer(srv.port)) as sniff:
                    p.send(orig, dest(srv))
                    ours, _ = await sniff.recv()
                    assert (await p.response()).cids == [0x0BADF00D]
                assert ours == theirs
                with contextlib.closing(group_sender()) as g:
                    g.send(theirs, (LOCAL_MCAST_GROUP, srv.port))
                    r = await p.response()
                    assert r.cids == [0x0BADF00D] and r.guid == GUID_A

    run(body())


def _capva_server_api() -> Any:
    server = pytest.importorskip("capva.server")
    if not hasattr(server, "Server"):
        pytest.skip("capva.server.Server not written yet")
    return server


def test_p4p_client_gets_from_capva_server() -> None:
    """End to end: capva.server.Server (TCP + this UDP responder) and a p4p client."""
    server = _capva_server_api()
    from capva.nt import NTScalar
    from capva.server.thread import SharedPV

    pv = SharedPV(nt=NTScalar("d"), initial=4.25)
    srv = server.Server(providers=[{"capva:udp:x": pv}], isolate=True)
    try:
        conf = srv.conf()
        ctx = _p4p_context(conf)
        try:
            assert float(ctx.get("capva:udp:x", timeout=TIMEOUT)) == 4.25
        finally:
            ctx.close()
    finally:
        srv.stop()


def test_p4p_and_capva_servers_share_the_udp_port() -> None:
    server = _capva_server_api()
    from capva.nt import NTScalar
    from capva.server.thread import SharedPV

    pv = SharedPV(nt=NTScalar("d"), initial=6.5)
    ours = server.Server(
        providers=[{"capva:share:ours": pv}], conf=_shared_port_conf(0), useenv=False, protocols=["pva"]
    )
    try:
        port = int(ours.conf()["EPICS_PVAS_BROADCAST_PORT"])
        with p4p_server({"capva:share:theirs": 7.5}, conf=_shared_port_conf(port)):
            for _ in range(3):
                assert p4p_get(port, "capva:share:ours", "capva:share:theirs") == [6.5, 7.5]
    finally:
        ours.stop()
