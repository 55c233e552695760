"""PVA server UDP side: answer SEARCH, fan unicast searches out to local peers, send BEACONs.

This is the asyncio transport for discovery (pva-protocol.md §4.1, §4.4, §4.5, §4.19, §6).
It follows pvxs, the stricter of the two C++ servers, so that a capva server, a pvxs (p4p)
server and an IOC can share the UDP port on one host and all be found.

Sockets (IPv4 only), all on the one UDP port with SO_REUSEADDR and SO_REUSEPORT, because a
C++ server on the same host sets both and binding fails unless everyone does (§6.4):

* one socket per configured interface address (``0.0.0.0`` or a specific address);
* for specific, non-loopback addresses, one more bound to that interface's broadcast
  address: a socket bound to a unicast address never sees broadcasts (BSD socket rule), so
  without it broadcast searches would miss us;
* the local fan-out group 224.0.0.128, joined on the loopback interface.  With a wildcard
  socket the group's datagrams reach that socket (``IP_PKTINFO`` tells them apart); without
  one, a socket bound to the group address receives exactly those datagrams (Linux).

Unicast fan-out (§6.4): the kernel delivers a unicast datagram to only *one* of the sockets
sharing a port, so whoever receives a unicast SEARCH forwards it to 224.0.0.128 through
loopback, prefixed by ORIGIN_TAG(the address it arrived at), with the unicast flag cleared
and the reply address filled in, and does not answer it itself.  Every local server (us
included) gets that copy and answers the client directly.  "Unicast" is decided like pvxs
does, by the datagram's real destination (``IP_PKTINFO``: the header destination equals the
local address the kernel picked), not by the client's 0x80 hint; the hint is used only where
the destination is unknown (no ``IP_PKTINFO``).  Copies that came through the group are
answered but never forwarded again, and ORIGIN_TAG is accepted only on them.

Responses and beacons are big-endian like pvxs's (§1.3).  Malformed datagrams are dropped
with a rate-limited log line; nothing a peer sends can stop the responder.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

from ..pva.errors import DecodeError
from ..pva.framing import Frame, encode_frame, split_datagram
from ..pva.messages import (
    ANY_ADDR,
    ANY_ADDR_MAPPED,
    CMD_BEACON,
    CMD_ORIGIN_TAG,
    CMD_SEARCH,
    CMD_SEARCH_RESPONSE,
    SEARCH_UNICAST,
    Beacon,
    OriginTag,
    Search,
    SearchResponse,
    format_addr,
    parse_addr,
)
from .config import ServerConfig

__all__ = [
    "LOCAL_MCAST_GROUP",
    "PVAUdpServer",
    "Interface",
    "beacon_destinations",
    "ipv4_interfaces",
    "search_reply",
]

_log = logging.getLogger(__name__)

#: the loopback group through which unicast searches are fanned out to every local server
LOCAL_MCAST_GROUP = "224.0.0.128"

#: Linux value; Python < 3.12 lacks the constant.  Only used on Linux, where the layout of
#: ``struct in_pktinfo`` (int ifindex, in_addr spec_dst, in_addr addr) is known.
_IP_PKTINFO: int | None = getattr(socket, "IP_PKTINFO", 8) if sys.platform.startswith("linux") else None
_PKTINFO = struct.Struct("=i4s4s")
_ANC_SIZE = socket.CMSG_SPACE(_PKTINFO.size) if _IP_PKTINFO is not None else 0
#: pvxs receives into 64 KiB + 1; a bigger datagram cannot be a valid PVA datagram anyway
_RX_SIZE = 0x10000
#: datagrams handled per readiness callback before yielding back to the loop (pvxs: 16)
_RX_BATCH = 16
#: the beacon burst: this many intervals of ``beacon_period``, then the slow period
_FAST_BEACONS = 10
_SLOW_BEACON_PERIOD = 180.0

_ANY_ADDRS = (ANY_ADDR, ANY_ADDR_MAPPED)
_ROUTINE_TX_ERRORS = {errno.EINVAL, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EPERM, errno.EACCES}
_V4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"

LookupFn = Callable[[str], bool]


# -- rate-limited logging -------------------------------------------------------------------


class _RateLimitedLog:
    """At most one log record per ``key`` per ``interval`` seconds, with a count of the
    records suppressed in between: a noisy network must not flood the log."""

    def __init__(self, logger: logging.Logger, interval: float = 30.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, key: str, level: int, msg: str, *args: object) -> None:
        if not self._logger.isEnabledFor(level):
            return
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        n = self._suppressed.pop(key, 0)
        if n:
            msg += " (%d similar messages suppressed)"
            args = (*args, n)
        self._logger.log(level, msg, *args)


_rl_lookup = _RateLimitedLog(_log)


# -- the reply rule, shared with the TCP (name-server) path ---------------------------------


def _claims(lookup: LookupFn, name: str) -> bool:
    try:
        return bool(lookup(name))
    except Exception as e:  # user code: one bad provider must not stop searches
        _rl_lookup("lookup", logging.WARNING, "search lookup(%r) raised %s: %s", name, type(e).__name__, e)
        return False


def search_reply(
    msg: Search, guid: bytes, tcp_port: int, lookup: LookupFn, *, tcp: bool = False
) -> SearchResponse | None:
    """The SEARCH_RESPONSE our server owes ``msg``, or None when nothing is to be sent.

    pvxs rules (``server.cpp`` ``onSearch``, ``serverchan.cpp`` ``handle_SEARCH``):

    * names are looked up only if ``"tcp"`` is among the offered protocols, because over UDP
      a client that does not offer tcp could not connect to what we advertise; over TCP
      (``tcp=True``, name-server mode) the client is already connected, so the list is not
      checked;
    * one response lists every claimed cid (``found=1``);
    * nothing claimed and MustReply set (which includes the discovery ping: no names, no
      protocols) gives ``found=0`` with no cids; nothing claimed otherwise gives None.

    ``lookup`` is called once per distinct name; an exception from it counts as "not ours".
    The response says "any" address (the client uses the datagram's source or the TCP
    peer) and our TCP port.
    """
    found: list[int] = []
    if msg.channels and (tcp or "tcp" in msg.protocols):
        seen: dict[str, bool] = {}
        for cid, name in msg.channels:
            hit = seen.get(name)
            if hit is None:
                hit = seen[name] = _claims(lookup, name)
            if hit:
                found.append(cid)
    if found:
        return SearchResponse(guid, msg.seq, found, tcp_port, True)
    if msg.must_reply:
        return SearchResponse(guid, msg.seq, [], tcp_port, False)
    return None


# -- local interfaces -----------------------------------------------------------------------


class Interface(NamedTuple):
    """One IPv4 interface: its primary address, broadcast address (None without
    IFF_BROADCAST) and whether it is up / the loopback."""

    name: str
    ifindex: int
    addr: str
    bcast: str | None
    up: bool
    loopback: bool


_SIOCGIFFLAGS = 0x8913
_SIOCGIFADDR = 0x8915
_SIOCGIFBRDADDR = 0x8919
_IFF_UP = 0x1
_IFF_BROADCAST = 0x2
_IFF_LOOPBACK = 0x8


def ipv4_interfaces() -> list[Interface]:
    """The host's IPv4 interfaces with their primary address, via ``if_nameindex`` and the
    Linux ``SIOCGIF*`` ioctls (no extra dependency).  Empty where that is unavailable;
    callers then fall back (255.255.255.255 for beacons, loopback checks by address)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return []
    if not sys.platform.startswith("linux") or not hasattr(socket, "if_nameindex"):
        return []  # the ioctl numbers above are Linux's
    out: list[Interface] = []
    try:
        names = socket.if_nameindex()
    except OSError:  # pragma: no cover
        return []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for index, name in names:
            req = struct.pack("16s16x", name.encode()[:15])
            try:
                addr = socket.inet_ntoa(fcntl.ioctl(s.fileno(), _SIOCGIFADDR, req)[20:24])
            except OSError:
                continue  # no IPv4 address
            try:
                flags = struct.unpack_from("H", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, req), 16)[0]
            except OSError:  # pragma: no cover
                flags = 0
            bcast = None
            if flags & _IFF_BROADCAST:
                try:
                    bcast = socket.inet_ntoa(fcntl.ioctl(s.fileno(), _SIOCGIFBRDADDR, req)[20:24])
                except OSError:  # pragma: no cover
                    bcast = None
                if bcast == "0.0.0.0":
                    bcast = None
            out.append(
                Interface(name, index, addr, bcast, bool(flags & _IFF_UP), bool(flags & _IFF_LOOPBACK))
            )
    return out


def _is_loopback(ip: str) -> bool:
    return ip.startswith("127.")


def _is_multicast(ip: str) -> bool:
    try:
        return 224 <= int(ip.split(".", 1)[0]) <= 239
    except ValueError:
        return False


def _is_ipv4(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).version == 4
    except ValueError:
        return False


def beacon_destinations(
    config: ServerConfig, udp_port: int, interfaces: Iterable[Interface] | None = None
) -> list[tuple[str, int]]:
    """Where beacons go: ``config.beacon_addrs`` (port 0 there means our UDP port, as when
    the list was parsed before a random port was bound) and, with ``auto_beacon``, per bound
    interface (pvxs ``Config::expand``):

    * ``0.0.0.0``: the broadcast address of every up, non-loopback interface, or
      255.255.255.255 if none is known;
    * a loopback address: that address itself (loopback has no broadcast);
    * another address: the broadcast address of the interface that has it.

    Order is kept and duplicates dropped.
    """
    out: list[tuple[str, int]] = []

    def add(ip: str, port: int) -> None:
        d = (ip, port or udp_port)
        if d not in out:
            out.append(d)

    for ip, port in config.beacon_addrs:
        add(ip, port)
    if config.auto_beacon:
        ifaces = list(ipv4_interfaces() if interfaces is None else interfaces)
        for host in config.interfaces:
            if not _is_ipv4(host) or _is_multicast(host):
                continue
            if host == "0.0.0.0":
                bcasts = [i.bcast for i in ifaces if i.bcast and i.up and not i.loopback]
                for b in bcasts or ["255.255.255.255"]:
                    add(b, udp_port)
            elif _is_loopback(host):
                add(host, udp_port)
            else:
                for i in ifaces:
                    if i.addr == host and i.bcast:
                        add(i.bcast, udp_port)
    return out


# -- the server -----------------------------------------------------------------------------

# endpoint kinds
_IFACE = "iface"  # bound to a specific unicast address: everything it gets is unicast to us
_ANY = "any"  # bound to 0.0.0.0: unicast, broadcast and (joined) group traffic; IP_PKTINFO
_BCAST = "bcast"  # bound to an interface broadcast address
_GROUP = "group"  # bound to 224.0.0.128: forwarded copies only
_MCAST = "mcast"  # bound to a multicast group named in the interface list

# how a datagram reached us
_DIRECT = 0  # broadcast/multicast: answer it
_UNICAST = 1  # unicast to a local address: forward it to the group
_FORWARDED = 2  # a copy through the loopback group: answer it, never forward


class _Endpoint:
    """One bound socket and what it is for."""

    __slots__ = ("sock", "kind", "addr", "reply_sock")

    def __init__(self, sock: socket.socket, kind: str, addr: str) -> None:
        self.sock = sock
        self.kind = kind
        self.addr = addr
        #: the socket replies go out of (a broadcast/group socket replies through a
        #: unicast-bound one so that the source address is a real interface address)
        self.reply_sock = sock

    def __repr__(self) -> str:
        return f"<{self.kind} {self.addr}>"


def _new_socket(host: str, port: int, *, reuse_before_bind: bool = True) -> socket.socket:
    """A non-blocking UDP socket bound to ``(host, port)`` with the port-sharing options.

    With ``reuse_before_bind=False`` (used to pick a random port) the sharing options are
    set only after binding: Linux lets ``bind(port 0)`` hand out a port already held by
    another SO_REUSEADDR socket, so the first bind must be exclusive; setting the options
    afterwards still lets later servers join the port."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setblocking(False)
        if reuse_before_bind:
            _set_reuse(s)
        if _IP_PKTINFO is not None:
            s.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
        s.bind((host, port))
        if not reuse_before_bind:
            _set_reuse(s)
    except BaseException:
        s.close()
        raise
    return s


def _set_reuse(s: socket.socket) -> None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        except OSError:  # pragma: no cover - kernels without it
            pass


def _setup_group_tx(s: socket.socket) -> None:
    """Send multicast through loopback only, with loop-back on (forwards must reach the
    other local servers and ourselves, and never leave the host)."""
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)


def _join(s: socket.socket, group: str, iface: str) -> None:
    mreq = socket.inet_aton(group) + socket.inet_aton(iface)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)


class PVAUdpServer:
    """UDP search responder and beacon sender of one PVA server (see module docstring).

    ``lookup(name) -> bool`` says whether this server has a PV; it is called in the loop,
    once per distinct name per datagram, and an exception from it means "no".  ``guid`` is
    the server's 12-byte GUID (beacons and responses carry it).

    Usage (the TCP server owns it)::

        udp = PVAUdpServer(config, guid, lookup)
        udp_port = await udp.start(tcp_port)
        udp.poke()          # PV set changed: next beacon has a new change count
        await udp.close()
    """

    #: a poke sends a beacon after this delay (coalescing a burst of PV additions) ...
    POKE_DELAY = 0.05
    #: ... but poke-triggered beacons are at least this far apart
    POKE_MIN_INTERVAL = 1.0

    def __init__(
        self,
        config: ServerConfig,
        guid: bytes,
        lookup: LookupFn,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if len(guid) != 12:
            raise ValueError(f"GUID must be 12 bytes, not {len(guid)}")
        self._config = config
        self._guid = bytes(guid)
        self._lookup = lookup
        self._loop = loop
        self._port = 0
        self._tcp_port = 0
        self._endpoints: list[_Endpoint] = []
        self._by_addr: dict[str, _Endpoint] = {}  # unicast-bound endpoints by address
        self._wildcard: _Endpoint | None = None
        self._group_tx: socket.socket | None = None  # sends the fan-out copies
        self._beacon_sock: socket.socket | None = None
        self._beacon_dests: list[tuple[str, int]] = []
        self._lo_indices: set[int] = set()
        self._ignore_any: set[str] = set()
        self._ignore_exact: set[tuple[str, int]] = set()
        self._started = False
        self._closed = False
        # beacons
        self._lock = threading.Lock()
        self._change = 0
        self._seq = 0
        self._beacons_sent = 0
        self._beacon_handle: asyncio.TimerHandle | None = None
        self._poke_handle: asyncio.TimerHandle | None = None
        self._last_poke_beacon = -1e9
        self._rl = _RateLimitedLog(_log)

    # -- public ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound UDP port (0 before :meth:`start`)."""
        return self._port

    @property
    def change_count(self) -> int:
        """The beacon change counter (incremented by :meth:`poke`, wraps at 16 bits)."""
        return self._change

    @property
    def fanout(self) -> bool:
        """True when unicast searches are forwarded through the loopback group.  False if
        the group could not be set up; unicast searches are then answered directly."""
        return self._group_tx is not None

    @property
    def beacon_destinations(self) -> list[tuple[str, int]]:
        """Where beacons are sent (computed at start)."""
        return list(self._beacon_dests)

    async def start(self, tcp_port: int) -> int:
        """Bind, send the first beacon and schedule the rest; returns the UDP port.

        Fails (OSError, nothing left open) if an interface socket cannot be bound; a group
        or broadcast socket that cannot be set up only costs that feature (logged)."""
        if self._started:
            raise RuntimeError("PVAUdpServer already started")
        self._started = True
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._tcp_port = tcp_port
        try:
            self._bind()
        except BaseException:
            self._close_sockets()
            self._closed = True
            raise
        for ip, port in self._config.ignore_addrs:
            if port == 0:
                self._ignore_any.add(ip)
            else:
                self._ignore_exact.add((ip, port))
        loop = self._loop
        for ep in self._endpoints:
            loop.add_reader(ep.sock.fileno(), self._on_readable, ep)
        self._beacon_tick()
        return self._port

    def poke(self) -> None:
        """The PV set changed: bump the beacon change count and send a beacon soon.

        Safe to call from any thread, before start and after close (then only counts)."""
        with self._lock:
            self._change = (self._change + 1) & 0xFFFF
        loop = self._loop
        if loop is None or not self._started or self._closed:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._schedule_poke()
        else:
            try:
                loop.call_soon_threadsafe(self._schedule_poke)
            except RuntimeError:  # loop closed
                pass

    async def close(self) -> None:
        """Stop beacons and close every socket.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        for h in (self._beacon_handle, self._poke_handle):
            if h is not None:
                h.cancel()
        self._beacon_handle = self._poke_handle = None
        loop = self._loop
        if loop is not None and not loop.is_closed():
            for ep in self._endpoints:
                try:
                    loop.remove_reader(ep.sock.fileno())
                except (ValueError, OSError):  # pragma: no cover - already closed fd
                    pass
        self._close_sockets()

    # -- setup ----------------------------------------------------------------------------

    def _bind(self) -> None:
        cfg = self._config
        port = cfg.udp_port
        hosts: list[str] = []
        for h in cfg.interfaces:
            if not _is_ipv4(h):
                _log.warning("UDP: skipping non-IPv4 interface address %r (IPv4 only)", h)
            elif h not in hosts:
                hosts.append(h)
        if not hosts:
            raise OSError(f"no usable IPv4 interface address in {cfg.interfaces!r}")

        # unicast / wildcard sockets first: the first one fixes a random port
        for h in hosts:
            if _is_multicast(h):
                continue
            s = _new_socket(h, port, reuse_before_bind=port != 0)
            port = s.getsockname()[1]
            ep = _Endpoint(s, _ANY if h == "0.0.0.0" else _IFACE, h)
            self._endpoints.append(ep)
            if ep.kind == _ANY:
                self._wildcard = ep
            else:
                self._by_addr[h] = ep
        if port == 0:  # only multicast entries: a random port for them
            probe = _new_socket("0.0.0.0", 0, reuse_before_bind=False)
            port = probe.getsockname()[1]
            probe.close()
        self._port = port
        first_unicast = self._wildcard or next(iter(self._by_addr.values()), None)

        ifaces = ipv4_interfaces()
        self._lo_indices = {i.ifindex for i in ifaces if i.loopback}

        # multicast groups named as "interfaces": join on the default interface
        for h in hosts:
            if not _is_multicast(h) or h == LOCAL_MCAST_GROUP:
                continue
            try:
                s = _new_socket(h, port)
                _join(s, h, "0.0.0.0")
            except OSError as e:
                _log.warning("UDP: cannot listen on multicast group %s:%d: %s", h, port, e)
                continue
            ep = _Endpoint(s, _MCAST, h)
            if first_unicast is not None:
                ep.reply_sock = first_unicast.sock
            self._endpoints.append(ep)

        # broadcasts: a wildcard socket gets them; a specific address needs its own socket
        if self._wildcard is None:
            seen: set[str] = set()
            for h, ep in list(self._by_addr.items()):
                for i in ifaces:
                    if i.addr == h and i.bcast and not i.loopback and i.bcast not in seen:
                        seen.add(i.bcast)
                        try:
                            s = _new_socket(i.bcast, port)
                        except OSError as e:
                            _log.warning("UDP: cannot listen for broadcasts on %s:%d: %s", i.bcast, port, e)
                            continue
                        b = _Endpoint(s, _BCAST, i.bcast)
                        b.reply_sock = ep.sock
                        self._endpoints.append(b)

        # the local fan-out group
        try:
            if self._wildcard is not None:
                s = self._wildcard.sock
                _join(s, LOCAL_MCAST_GROUP, "127.0.0.1")
                _setup_group_tx(s)
                self._group_tx = s
            else:
                s = _new_socket(LOCAL_MCAST_GROUP, port)
                try:
                    _join(s, LOCAL_MCAST_GROUP, "127.0.0.1")
                    _setup_group_tx(s)
                except BaseException:
                    s.close()
                    raise
                g = _Endpoint(s, _GROUP, LOCAL_MCAST_GROUP)
                if first_unicast is not None:
                    g.reply_sock = first_unicast.sock
                self._endpoints.append(g)
                self._group_tx = s
        except OSError as e:
            _log.warning(
                "UDP: cannot join %s on loopback (%s): unicast searches are answered directly "
                "and other servers sharing port %d will not see them",
                LOCAL_MCAST_GROUP,
                e,
                port,
            )
            self._group_tx = None

        # beacons go out of their own socket: broadcast allowed, no effect on the shared port
        self._beacon_dests = beacon_destinations(cfg, port, ifaces)
        if self._beacon_dests:
            bs = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            bs.setblocking(False)
            bs.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            self._beacon_sock = bs

    def _close_sockets(self) -> None:
        for ep in self._endpoints:
            ep.sock.close()
        self._endpoints.clear()
        self._by_addr.clear()
        self._wildcard = None
        self._group_tx = None
        if self._beacon_sock is not None:
            self._beacon_sock.close()
            self._beacon_sock = None

    # -- receive --------------------------------------------------------------------------

    def _on_readable(self, ep: _Endpoint) -> None:
        sock = ep.sock
        for _ in range(_RX_BATCH):  # bounded: let other work run between batches
            try:
                data, anc, flags, src = sock.recvmsg(_RX_SIZE, _ANC_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                # e.g. ICMP port unreachable reported on the socket: nothing to do
                self._rl("rx", logging.DEBUG, "UDP receive error on %r: %s", ep, e)
                return
            if flags & getattr(socket, "MSG_TRUNC", 0):
                self._rl("malformed", logging.WARNING, "UDP: dropped oversized datagram from %s", src)
                continue
            dst = spec = None
            ifindex = -1
            for level, ctype, cdata in anc:
                if level == socket.IPPROTO_IP and ctype == _IP_PKTINFO and len(cdata) >= _PKTINFO.size:
                    ifindex, spec_b, dst_b = _PKTINFO.unpack_from(cdata)
                    spec, dst = socket.inet_ntoa(spec_b), socket.inet_ntoa(dst_b)
            try:
                self._handle(ep, data, src[0], src[1], dst, spec, ifindex)
            except Exception:  # a bug here must not stop the responder
                _log.exception("UDP: unexpected error handling a datagram from %s", src)

    def _malformed(self, src: str, what: object) -> None:
        self._rl("malformed", logging.WARNING, "UDP: dropped malformed datagram from %s: %s", src, what)

    def _handle(
        self,
        ep: _Endpoint,
        data: bytes,
        src_ip: str,
        src_port: int,
        dst: str | None,
        spec: str | None,
        ifindex: int,
    ) -> None:
        if _is_multicast(src_ip):
            return  # forged: never amplify towards a group (pvxs)
        try:
            frames = split_datagram(data)
        except DecodeError as e:
            self._malformed(f"{src_ip}:{src_port}", e)
            frames = getattr(e, "frames", [])  # the whole messages before the bad bytes
        if not frames:
            return

        # how did it get here?
        origin_ip = "0.0.0.0"
        kind = ep.kind
        if kind == _IFACE:
            how = _UNICAST
            origin_ip = ep.addr
        elif kind == _GROUP:
            how = _FORWARDED if self._from_loopback(src_ip, ifindex) else _DIRECT
        elif kind == _ANY:
            if dst is None:  # no IP_PKTINFO: go by the looks of it
                if frames[0].command == CMD_ORIGIN_TAG and _is_loopback(src_ip):
                    how = _FORWARDED
                elif any(
                    f.command == CMD_SEARCH and len(f.body) > 4 and f.body[4] & SEARCH_UNICAST for f in frames
                ):
                    how = _UNICAST
                else:
                    how = _DIRECT
            elif dst == LOCAL_MCAST_GROUP:
                how = _FORWARDED if self._from_loopback(src_ip, ifindex) else _DIRECT
            elif _is_multicast(dst) or dst != spec:
                how = _DIRECT  # multicast, or broadcast (the kernel's reply address differs)
            else:
                how = _UNICAST
                origin_ip = dst
        else:
            how = _DIRECT

        if how == _FORWARDED:
            self._handle_forwarded(frames, src_ip)
            return
        if self._ignored(src_ip, src_port):
            return
        if any(f.command == CMD_ORIGIN_TAG for f in frames):
            # ORIGIN_TAG is trusted only on loopback group copies: drop, do not answer
            self._rl(
                "origin",
                logging.DEBUG,
                "UDP: ignoring ORIGIN_TAG from %s:%d (not via loopback group)",
                src_ip,
                src_port,
            )
            return
        if how == _UNICAST and self._group_tx is not None:
            self._forward(frames, src_ip, origin_ip)
            return
        memo = self._memo()
        for f in frames:
            if f.command != CMD_SEARCH:
                continue  # beacons (ours included), responses, anything else: not for us
            msg = self._decode_search(f, src_ip)
            if msg is None:
                continue
            if msg.addr in _ANY_ADDRS:
                reply_ip = src_ip
            elif msg.addr[:12] == _V4_MAPPED_PREFIX:
                reply_ip = format_addr(msg.addr)
            else:
                continue  # IPv6 reply address: we are IPv4 only
            if reply_ip != src_ip and self._ignored(reply_ip, msg.port):
                continue  # an ignored client does not get in through a reply address either
            self._reply(msg, reply_ip, memo, ep.reply_sock)

    def _from_loopback(self, src_ip: str, ifindex: int) -> bool:
        """A group datagram looped back on this host (not injected from the network)."""
        if ifindex >= 0 and self._lo_indices:
            return ifindex in self._lo_indices
        return _is_loopback(src_ip)

    def _handle_forwarded(self, frames: list[Frame], src_ip: str) -> None:
        origin = ANY_ADDR
        rest = frames
        if frames[0].command == CMD_ORIGIN_TAG:
            try:
                origin = OriginTag.decode(frames[0].body, frames[0].be).addr
            except DecodeError as e:
                self._malformed(src_ip, e)
                return
            rest = frames[1:]
        if not self._accept_origin(origin):
            return  # arrived at an address we do not serve: other servers answer it
        reply_sock = self._reply_sock_for(origin)
        memo = self._memo()
        for f in rest:
            if f.command == CMD_ORIGIN_TAG:
                self._malformed(src_ip, "second ORIGIN_TAG in one datagram")
                return
            if f.command != CMD_SEARCH:
                continue
            msg = self._decode_search(f, src_ip)
            if msg is None:
                continue
            if msg.addr in _ANY_ADDRS:
                # "reply to the sender" would be the forwarder: pvxs refuses these too
                self._rl("fwd-any", logging.DEBUG, "UDP: forwarded SEARCH without reply address ignored")
                continue
            if msg.addr[:12] != _V4_MAPPED_PREFIX:
                continue
            reply_ip = format_addr(msg.addr)
            # the ignore list applies to the original client, not the local forwarder
            if self._ignored(reply_ip, msg.port):
                continue
            self._reply(msg, reply_ip, memo, reply_sock)

    def _accept_origin(self, origin: bytes) -> bool:
        if origin in _ANY_ADDRS or self._wildcard is not None:
            return True
        if origin[:12] != _V4_MAPPED_PREFIX:
            return False
        return format_addr(origin) in self._by_addr

    def _reply_sock_for(self, origin: bytes) -> socket.socket | None:
        if origin[:12] == _V4_MAPPED_PREFIX:
            ep = self._by_addr.get(format_addr(origin))
            if ep is not None:
                return ep.sock
        if self._wildcard is not None:
            return self._wildcard.sock
        first = next(iter(self._by_addr.values()), None)
        return first.sock if first is not None else self._group_tx

    def _ignored(self, ip: str, port: int) -> bool:
        return ip in self._ignore_any or (ip, port) in self._ignore_exact

    def _memo(self) -> LookupFn:
        """``lookup`` with a per-datagram cache: user code runs once per distinct name."""
        cache: dict[str, bool] = {}
        lookup = self._lookup

        def memo(name: str) -> bool:
            hit = cache.get(name)
            if hit is None:
                hit = cache[name] = _claims(lookup, name)
            return hit

        return memo

    def _decode_search(self, f: Frame, src_ip: str) -> Search | None:
        try:
            return Search.decode(f.body, f.be)
        except DecodeError as e:
            self._malformed(src_ip, e)
            return None

    # -- send -----------------------------------------------------------------------------

    def _reply(self, msg: Search, reply_ip: str, lookup: LookupFn, sock: socket.socket | None) -> None:
        resp = search_reply(msg, self._guid, self._tcp_port, lookup)
        if resp is None or sock is None:
            return
        if msg.port == 0:
            self._rl("port0", logging.DEBUG, "UDP: SEARCH from %s with reply port 0 ignored", reply_ip)
            return
        data = encode_frame(CMD_SEARCH_RESPONSE, resp.encode(True), be=True, server=True)
        self._sendto(sock, data, (reply_ip, msg.port))

    def _forward(self, frames: list[Frame], src_ip: str, origin_ip: str) -> None:
        """ORIGIN_TAG + each SEARCH (unicast bit cleared, reply address filled in) to the
        loopback group, as one datagram (pvxs/pvAccessCPP layout, §6.4)."""
        parts = [encode_frame(CMD_ORIGIN_TAG, parse_addr(origin_ip), be=True, server=False)]
        for f in frames:
            if f.command != CMD_SEARCH:
                continue
            msg = self._decode_search(f, src_ip)  # validate before amplifying it
            if msg is None:
                continue
            body = bytearray(f.body)
            body[4] &= ~SEARCH_UNICAST & 0xFF
            if msg.addr in _ANY_ADDRS:
                body[8:24] = parse_addr(src_ip)
            parts.append(Frame(f.version, f.flags, f.command, bytes(body), len(body)).encode())
        if len(parts) > 1 and self._group_tx is not None:
            self._sendto(self._group_tx, b"".join(parts), (LOCAL_MCAST_GROUP, self._port))

    def _sendto(self, sock: socket.socket, data: bytes, dest: tuple[str, int]) -> None:
        try:
            sock.sendto(data, dest)
        except (BlockingIOError, InterruptedError):
            self._rl("tx-full", logging.DEBUG, "UDP: send buffer full, dropped datagram to %s", dest)
        except OSError as e:
            # unreachable/not-permitted are routine (a loopback-bound server asked to answer
            # a remote client, a firewall); anything else deserves a warning
            level = logging.DEBUG if e.errno in _ROUTINE_TX_ERRORS else logging.WARNING
            self._rl(f"tx{level}", level, "UDP: send to %s:%d failed: %s", dest[0], dest[1], e)

    # -- beacons --------------------------------------------------------------------------

    def _beacon_bytes(self) -> bytes:
        with self._lock:
            seq = self._seq
            self._seq = (seq + 1) & 0xFF
            change = self._change
        b = Beacon(self._guid, seq, change, ANY_ADDR_MAPPED, self._tcp_port, "tcp", None)
        return encode_frame(CMD_BEACON, b.encode(True), be=True, server=True)

    def _send_beacon(self) -> None:
        sock = self._beacon_sock
        if sock is None or self._closed:
            return
        data = self._beacon_bytes()
        for dest in self._beacon_dests:
            self._sendto(sock, data, dest)

    def _beacon_tick(self) -> None:
        """Send one beacon and schedule the next: ``beacon_period`` for the first
        ``_FAST_BEACONS`` intervals, then max(180 s, period) (pvxs, pvAccessCPP)."""
        self._beacon_handle = None
        if self._closed or self._loop is None:
            return
        self._send_beacon()
        self._beacons_sent += 1
        period = self._config.beacon_period
        if not period or period <= 0:
            period = 15.0
        if self._beacons_sent > _FAST_BEACONS:
            period = max(_SLOW_BEACON_PERIOD, period)
        self._beacon_handle = self._loop.call_later(period, self._beacon_tick)

    def _schedule_poke(self) -> None:
        if self._closed or self._poke_handle is not None or self._loop is None:
            return
        loop = self._loop
        delay = max(self.POKE_DELAY, self._last_poke_beacon + self.POKE_MIN_INTERVAL - loop.time())
        self._poke_handle = loop.call_later(delay, self._poke_beacon)

    def _poke_beacon(self) -> None:
        self._poke_handle = None
        if self._closed or self._loop is None:
            return
        self._last_poke_beacon = self._loop.time()
        self._send_beacon()
