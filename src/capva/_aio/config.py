"""PVA network configuration from EPICS_PVA_* / EPICS_PVAS_* settings (pva-protocol.md §6.2).

Built from a mapping, never read at import time::

    cfg = ServerConfig.from_env(os.environ)                 # what a deployed IOC uses
    cfg = ServerConfig.from_env({}, conf={...}, useenv=False)
    cfg = ServerConfig.isolated()                           # tests: 127.0.0.1, random ports

Server settings read ``EPICS_PVAS_X`` first and fall back to ``EPICS_PVA_X`` as pvxs does.
``ServerConfig.conf()`` returns the effective keys in p4p's format, which a client
(``Context('pva', conf=S.conf(), useenv=False)``, p4p's or ours) uses to reach the server.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

_log = logging.getLogger("capva.config")

__all__ = ["ServerConfig", "CAServerConfig", "ClientConfig", "ConfigError", "parse_addr_list", "parse_bool"]


class ConfigError(RuntimeError):
    """An invalid EPICS_PVA* setting (p4p raises RuntimeError mentioning "invalid")."""


def parse_bool(text: str, default: bool) -> bool:
    t = text.strip().upper()
    if t in ("YES", "Y", "1", "TRUE", "ON"):
        return True
    if t in ("NO", "N", "0", "FALSE", "OFF"):
        return False
    return default


def _resolve(host: str) -> str:
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        return socket.gethostbyname(host)
    except (OSError, UnicodeError) as e:
        raise ConfigError(f"invalid address {host!r}: {e}") from None


def parse_addr_list(text: str, default_port: int, lenient: bool = False) -> list[tuple[str, int]]:
    """``"10.0.0.1 host:5076 1.2.3.4:99,ttl@iface"`` -> [(ip, port), ...] (ttl/iface ignored).

    ``lenient``: log and skip a bad entry instead of raising (clients do, like pvxs: one
    unresolvable host must not stop the others from working)."""
    if lenient:
        out = []
        for entry in text.split():
            try:
                out.extend(parse_addr_list(entry, default_port))
            except ConfigError as err:
                _log.warning("ignoring address list entry %r: %s", entry, err)
        return out
    out = []
    for entry in text.replace(",", " ,").split():
        if entry.startswith(","):
            continue  # a ",ttl" suffix split off above
        e = entry.split("@", 1)[0]
        if e.startswith("["):  # [ipv6]:port
            host, _, rest = e[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else default_port
        elif e.count(":") == 1:
            host, p = e.split(":")
            try:
                port = int(p)
            except ValueError:
                raise ConfigError(f"invalid port in address {entry!r}") from None
        else:
            host, port = e, default_port
        if not 0 <= port <= 65535:
            raise ConfigError(f"invalid port in address {entry!r}")
        out.append((_resolve(host), port))
    return out


def _fmt_addrs(addrs: list[tuple[str, int]], default_port: int) -> str:
    return " ".join(h if p == default_port else f"{h}:{p}" for h, p in addrs)


def _settings(
    environ: Mapping[str, str] | None, conf: Mapping[str, str] | None, useenv: bool, prefix: str, strict: bool
) -> dict[str, str]:
    """The EPICS_PVA* settings in force: ``conf`` wins over ``environ`` (read only if
    ``useenv``).  ``strict``: a ``conf`` key without ``prefix`` is an error, else ignored."""
    src: dict[str, str] = {}
    if useenv and environ:
        src.update({k: v for k, v in environ.items() if k.startswith(prefix)})
    for k, v in (conf or {}).items():
        if isinstance(k, str) and k.startswith(prefix):
            src[k] = str(v)
        elif strict:
            raise ConfigError(f"invalid configuration key {k!r} (expected {prefix}*)")
    return src


def _server_port(v: str | None, name: str, default: int) -> int:
    """A server's port setting: blank is ``default``, anything but 0..65535 an error."""
    if v is None or not v.strip():
        return default
    try:
        p = int(v)
    except ValueError:
        raise ConfigError(f"invalid {name}: {v!r}") from None
    if not 0 <= p <= 65535:
        raise ConfigError(f"invalid {name}: {v!r}")
    return p


def effective_timeout(conn_tmo: float) -> float:
    """pvxs's rule (§7): 4/3 x EPICS_PVA_CONN_TMO, at least 2 s; nonsense gives 40 s."""
    if not math.isfinite(conn_tmo) or conn_tmo <= 0:
        return 40.0
    return max(2.0, conn_tmo * 4.0 / 3.0)


@dataclass
class ServerConfig:
    """Effective PVA server settings (see module docstring)."""

    interfaces: list[str] = field(default_factory=lambda: ["0.0.0.0"])
    tcp_port: int = 5075
    udp_port: int = 5076
    beacon_addrs: list[tuple[str, int]] = field(default_factory=list)
    auto_beacon: bool = True
    ignore_addrs: list[tuple[str, int]] = field(default_factory=list)
    beacon_period: float = 15.0
    conn_tmo: float = 30.0

    @property
    def timeout(self) -> float:
        """Inactivity timeout: 4/3 x EPICS_PVA_CONN_TMO, at least 2 s (pvxs)."""
        return effective_timeout(self.conn_tmo)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        conf: Mapping[str, str] | None = None,
        useenv: bool = True,
    ) -> ServerConfig:
        """Settings from ``conf`` (wins) and, if ``useenv``, ``environ``."""
        src = _settings(environ, conf, useenv, "EPICS_PVA", strict=True)

        def pick(name: str) -> str | None:
            for k in ("EPICS_PVAS_" + name, "EPICS_PVA_" + name):
                if k in src:
                    return src[k]
            return None

        def port(name: str, default: int) -> int:
            return _server_port(pick(name), name, default)

        c = cls()
        c.tcp_port = port("SERVER_PORT", 5075)
        c.udp_port = port("BROADCAST_PORT", 5076)
        intf = src.get("EPICS_PVAS_INTF_ADDR_LIST")
        if intf is None:
            intf = src.get("EPICS_PVA_INTF_ADDR_LIST")
        if intf and intf.strip():
            c.interfaces = []
            for entry in intf.split():
                host = entry.split(":")[0] if entry.count(":") == 1 else entry.strip("[]")
                try:
                    ipaddress.ip_address(host)
                except ValueError:
                    raise ConfigError(
                        f"invalid interface address {entry!r} in EPICS_PVAS_INTF_ADDR_LIST"
                    ) from None
                c.interfaces.append(host)
        beacons = src.get("EPICS_PVAS_BEACON_ADDR_LIST")
        if beacons is None:
            beacons = src.get("EPICS_PVA_ADDR_LIST", "")
        c.beacon_addrs = parse_addr_list(beacons, c.udp_port)
        auto = src.get("EPICS_PVAS_AUTO_BEACON_ADDR_LIST")
        if auto is None:
            auto = src.get("EPICS_PVA_AUTO_ADDR_LIST", "YES")
        c.auto_beacon = parse_bool(auto, True)
        c.ignore_addrs = parse_addr_list(src.get("EPICS_PVAS_IGNORE_ADDR_LIST", ""), 0)
        bp = pick("BEACON_PERIOD")
        if bp:
            try:
                c.beacon_period = max(1.0, float(bp))
            except ValueError:
                raise ConfigError(f"invalid BEACON_PERIOD: {bp!r}") from None
        tmo = src.get("EPICS_PVA_CONN_TMO")
        if tmo:
            try:
                c.conn_tmo = float(tmo)
            except ValueError:
                raise ConfigError(f"invalid EPICS_PVA_CONN_TMO: {tmo!r}") from None
        return c

    @classmethod
    def isolated(cls) -> ServerConfig:
        """Loopback only, random TCP and UDP ports, no beacons beyond loopback: for tests."""
        return cls(interfaces=["127.0.0.1"], tcp_port=0, udp_port=0, beacon_addrs=[], auto_beacon=False)

    def with_ports(self, tcp_port: int, udp_port: int) -> ServerConfig:
        """A copy with the ports actually bound (what conf() reports)."""
        return replace(self, tcp_port=tcp_port, udp_port=udp_port)

    def conf(self) -> dict[str, str]:
        """p4p-style effective configuration, server and client keys, all strings."""
        intf = " ".join(self.interfaces)
        beacons = self.beacon_addrs or [(i, self.udp_port) for i in self.interfaces if i != "0.0.0.0"]
        blist = _fmt_addrs(beacons, self.udp_port)
        client_addrs = blist if beacons else ""
        auto = "YES" if self.auto_beacon else "NO"
        return {
            "EPICS_PVAS_AUTO_BEACON_ADDR_LIST": auto,
            "EPICS_PVAS_BEACON_ADDR_LIST": blist,
            "EPICS_PVAS_BROADCAST_PORT": str(self.udp_port),
            "EPICS_PVAS_IGNORE_ADDR_LIST": _fmt_addrs(self.ignore_addrs, 0),
            "EPICS_PVAS_INTF_ADDR_LIST": intf,
            "EPICS_PVAS_SERVER_PORT": str(self.tcp_port),
            "EPICS_PVA_ADDR_LIST": client_addrs,
            "EPICS_PVA_AUTO_ADDR_LIST": auto,
            "EPICS_PVA_BROADCAST_PORT": str(self.udp_port),
            "EPICS_PVA_CONN_TMO": "%g" % self.conn_tmo,  # noqa: UP031
            "EPICS_PVA_INTF_ADDR_LIST": intf,
            "EPICS_PVA_NAME_SERVERS": "",
            "EPICS_PVA_SERVER_PORT": str(self.tcp_port),
        }


@dataclass
class ClientConfig:
    """Effective PVA client settings (pva-protocol.md §6.2): search destinations, name
    servers, ports and the connection timeout.  Clients read only ``EPICS_PVA_*``."""

    addr_list: list[tuple[str, int]] = field(default_factory=list)
    auto_addr: bool = True
    name_servers: list[tuple[str, int]] = field(default_factory=list)
    udp_port: int = 5076
    tcp_port: int = 5075
    conn_tmo: float = 30.0
    interfaces: list[str] = field(default_factory=lambda: ["0.0.0.0"])

    @property
    def timeout(self) -> float:
        return effective_timeout(self.conn_tmo)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        conf: Mapping[str, str] | None = None,
        useenv: bool = True,
    ) -> ClientConfig:
        # a client ignores server keys: Context(conf=S.conf()) passes EPICS_PVAS_* too
        src = _settings(environ, conf, useenv, "EPICS_PVA_", strict=False)
        c = cls()

        def port(name: str, default: int) -> int:
            v = src.get(name, "").strip()
            if not v:
                return default
            try:
                p = int(v)
            except ValueError:
                _log.warning("ignoring invalid %s=%r; using %d", name, v, default)
                return default
            return p if 0 < p <= 65535 else default  # 0 is meaningless for a client (pvxs ignores it)

        c.udp_port = port("EPICS_PVA_BROADCAST_PORT", 5076)
        c.tcp_port = port("EPICS_PVA_SERVER_PORT", 5075)
        c.addr_list = parse_addr_list(src.get("EPICS_PVA_ADDR_LIST", ""), c.udp_port, lenient=True)
        c.auto_addr = parse_bool(src.get("EPICS_PVA_AUTO_ADDR_LIST", "YES"), True)
        c.name_servers = parse_addr_list(src.get("EPICS_PVA_NAME_SERVERS", ""), c.tcp_port, lenient=True)
        intf = src.get("EPICS_PVA_INTF_ADDR_LIST", "").split()
        if intf:
            c.interfaces = intf
        tmo = src.get("EPICS_PVA_CONN_TMO")
        if tmo:
            try:
                c.conn_tmo = float(tmo)
            except ValueError:
                raise ConfigError(f"invalid EPICS_PVA_CONN_TMO: {tmo!r}") from None
        return c

    def conf(self) -> dict[str, str]:
        return {
            "EPICS_PVA_ADDR_LIST": _fmt_addrs(self.addr_list, self.udp_port),
            "EPICS_PVA_AUTO_ADDR_LIST": "YES" if self.auto_addr else "NO",
            "EPICS_PVA_BROADCAST_PORT": str(self.udp_port),
            "EPICS_PVA_CONN_TMO": "%g" % self.conn_tmo,  # noqa: UP031
            "EPICS_PVA_INTF_ADDR_LIST": " ".join(self.interfaces),
            "EPICS_PVA_NAME_SERVERS": _fmt_addrs(self.name_servers, self.tcp_port),
            "EPICS_PVA_SERVER_PORT": str(self.tcp_port),
        }


@dataclass
class CAServerConfig:
    """Effective Channel Access server settings (ca-protocol.md §4.5), RSRV's reading.

    * port: ``EPICS_CAS_SERVER_PORT``, else ``EPICS_CA_SERVER_PORT`` (5064): the UDP search
      port, and the TCP port when it is free (else an ephemeral one, advertised in replies);
    * interfaces: ``EPICS_CAS_INTF_ADDR_LIST`` (default 0.0.0.0);
    * beacons: ``EPICS_CAS_BEACON_ADDR_LIST`` plus, with ``EPICS_CAS_AUTO_BEACON_ADDR_LIST``
      (YES), the broadcast address of each interface; to ``EPICS_CAS_BEACON_PORT``, else
      ``EPICS_CA_REPEATER_PORT`` (5065); every ``EPICS_CAS_BEACON_PERIOD`` (else
      ``EPICS_CA_BEACON_PERIOD``, 15 s) at most;
    * ``EPICS_CAS_IGNORE_ADDR_LIST``: sources whose searches are dropped;
    * ``EPICS_CA_AUTO_ARRAY_BYTES`` (YES: no limit) / ``EPICS_CA_MAX_ARRAY_BYTES`` (16384):
      the largest array a message may carry when AUTO is NO.

    ``tcp_port`` is 0 until the server has bound it.
    """

    interfaces: list[str] = field(default_factory=lambda: ["0.0.0.0"])
    port: int = 5064
    tcp_port: int = 0
    beacon_addrs: list[tuple[str, int]] = field(default_factory=list)
    auto_beacon: bool = True
    beacon_period: float = 15.0
    beacon_port: int = 5065
    ignore_addrs: list[tuple[str, int]] = field(default_factory=list)
    max_array_bytes: int | None = None

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        conf: Mapping[str, str] | None = None,
        useenv: bool = True,
    ) -> CAServerConfig:
        """Settings from ``conf`` (wins) and, if ``useenv``, ``environ`` (EPICS_CA*/EPICS_CAS* keys)."""
        src = _settings(environ, conf, useenv, "EPICS_CA", strict=False)

        def pick(*names: str) -> str | None:
            for k in names:
                v = src.get(k)
                if v is not None and v.strip():
                    return v.strip()
            return None

        def port(*names: str, default: int) -> int:
            return _server_port(pick(*names), names[0], default)

        def seconds(*names: str, default: float) -> float:
            v = pick(*names)
            if v is None:
                return default
            try:
                x = float(v)
            except ValueError:
                raise ConfigError(f"invalid {names[0]}: {v!r}") from None
            return x if math.isfinite(x) and x > 0 else default

        c = cls()
        c.port = port("EPICS_CAS_SERVER_PORT", "EPICS_CA_SERVER_PORT", default=5064)
        c.beacon_port = port("EPICS_CAS_BEACON_PORT", "EPICS_CA_REPEATER_PORT", default=5065)
        intf = pick("EPICS_CAS_INTF_ADDR_LIST")
        if intf:
            c.interfaces = []
            for entry in intf.split():
                host = entry.split(":")[0]
                try:
                    ipaddress.IPv4Address(host)
                except ValueError:
                    raise ConfigError(
                        f"invalid interface address {entry!r} in EPICS_CAS_INTF_ADDR_LIST"
                    ) from None
                c.interfaces.append(host)
            if "0.0.0.0" in c.interfaces and len(c.interfaces) > 1:
                raise ConfigError("EPICS_CAS_INTF_ADDR_LIST: 0.0.0.0 cannot be mixed with other addresses")
        c.beacon_addrs = parse_addr_list(src.get("EPICS_CAS_BEACON_ADDR_LIST", ""), c.beacon_port)
        c.auto_beacon = parse_bool(src.get("EPICS_CAS_AUTO_BEACON_ADDR_LIST", "YES"), True)
        c.beacon_period = seconds("EPICS_CAS_BEACON_PERIOD", "EPICS_CA_BEACON_PERIOD", default=15.0)
        c.ignore_addrs = parse_addr_list(src.get("EPICS_CAS_IGNORE_ADDR_LIST", ""), 0)
        if not parse_bool(src.get("EPICS_CA_AUTO_ARRAY_BYTES", "YES"), True):
            v = pick("EPICS_CA_MAX_ARRAY_BYTES")
            try:
                c.max_array_bytes = max(16384, int(v)) if v is not None else 16384
            except ValueError:
                raise ConfigError(f"invalid EPICS_CA_MAX_ARRAY_BYTES: {v!r}") from None
        return c

    @classmethod
    def isolated(cls) -> CAServerConfig:
        """Loopback only, a random port, no beacons, a private repeater port: for tests."""
        return cls(interfaces=["127.0.0.1"], port=0, beacon_addrs=[], auto_beacon=False, beacon_port=0)

    def with_ports(self, tcp_port: int, udp_port: int) -> CAServerConfig:
        return replace(self, tcp_port=tcp_port, port=udp_port)

    def conf(self) -> dict[str, str]:
        """The effective server keys, plus the client keys that reach this server:
        ``epics.ca`` / caproto / libca with these as their environment find our PVs."""
        intf = " ".join(self.interfaces)
        specific = [i for i in self.interfaces if i != "0.0.0.0"]
        client_addrs = _fmt_addrs([(i, self.port) for i in specific], 5064)
        return {
            "EPICS_CAS_SERVER_PORT": str(self.port),
            "EPICS_CAS_INTF_ADDR_LIST": intf,
            "EPICS_CAS_BEACON_ADDR_LIST": _fmt_addrs(self.beacon_addrs, self.beacon_port),
            "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "YES" if self.auto_beacon else "NO",
            "EPICS_CAS_BEACON_PERIOD": "%g" % self.beacon_period,  # noqa: UP031
            "EPICS_CAS_BEACON_PORT": str(self.beacon_port),
            "EPICS_CAS_IGNORE_ADDR_LIST": _fmt_addrs(self.ignore_addrs, 0),
            "EPICS_CA_SERVER_PORT": str(self.port),
            "EPICS_CA_REPEATER_PORT": str(self.beacon_port),
            "EPICS_CA_ADDR_LIST": client_addrs,
            "EPICS_CA_AUTO_ADDR_LIST": "NO" if specific else "YES",
            "EPICS_CA_AUTO_ARRAY_BYTES": "YES" if self.max_array_bytes is None else "NO",
            "EPICS_CA_MAX_ARRAY_BYTES": str(self.max_array_bytes or 16384),
        }
