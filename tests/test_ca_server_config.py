"""CA server settings (EPICS_CA*/EPICS_CAS*) and Server(protocols=...) wiring.

Why: a CA server that ignores EPICS_CAS_INTF_ADDR_LIST or beacons onto the wrong port is
invisible (or noisy) on a real network; the reading must be RSRV's (ca-protocol.md §4.5).
"""

from __future__ import annotations

import socket

import pytest

from capva._aio.config import CAServerConfig, ConfigError
from capva.nt import NTScalar
from capva.server import Server
from capva.server.thread import SharedPV

pytestmark = pytest.mark.timeout(60)


def test_defaults_are_rsrv_defaults() -> None:
    c = CAServerConfig.from_env({}, useenv=False)
    assert c.port == 5064 and c.beacon_port == 5065
    assert c.interfaces == ["0.0.0.0"]
    assert c.auto_beacon and c.beacon_addrs == []
    assert c.beacon_period == 15.0
    assert c.max_array_bytes is None  # EPICS_CA_AUTO_ARRAY_BYTES=YES


def test_cas_keys_win_over_ca_keys() -> None:
    env = {
        "EPICS_CA_SERVER_PORT": "6000",
        "EPICS_CAS_SERVER_PORT": "6100",
        "EPICS_CA_REPEATER_PORT": "6001",
        "EPICS_CAS_BEACON_PORT": "6101",
        "EPICS_CA_BEACON_PERIOD": "3",
        "EPICS_CAS_BEACON_PERIOD": "7.5",
    }
    c = CAServerConfig.from_env(env)
    assert (c.port, c.beacon_port, c.beacon_period) == (6100, 6101, 7.5)
    c = CAServerConfig.from_env({k: v for k, v in env.items() if not k.startswith("EPICS_CAS")})
    assert (c.port, c.beacon_port, c.beacon_period) == (6000, 6001, 3.0)


def test_conf_wins_and_useenv() -> None:
    env = {"EPICS_CA_SERVER_PORT": "6000"}
    assert CAServerConfig.from_env(env, {"EPICS_CA_SERVER_PORT": "6200"}).port == 6200
    assert CAServerConfig.from_env(env, {}, useenv=False).port == 5064


def test_lists_and_flags() -> None:
    c = CAServerConfig.from_env(
        {
            "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
            "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1 127.0.0.2:7000",
            "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "no",
            "EPICS_CAS_IGNORE_ADDR_LIST": "127.0.0.9",
            "EPICS_CA_AUTO_ARRAY_BYTES": "NO",
            "EPICS_CA_MAX_ARRAY_BYTES": "100000",
        }
    )
    assert c.interfaces == ["127.0.0.1"]
    assert c.beacon_addrs == [("127.0.0.1", 5065), ("127.0.0.2", 7000)]
    assert not c.auto_beacon
    assert c.ignore_addrs == [("127.0.0.9", 0)]
    assert c.max_array_bytes == 100000
    # RSRV never goes below its 16384-byte buffer
    small = CAServerConfig.from_env({"EPICS_CA_AUTO_ARRAY_BYTES": "NO", "EPICS_CA_MAX_ARRAY_BYTES": "10"})
    assert small.max_array_bytes == 16384


@pytest.mark.parametrize(
    "env",
    [
        {"EPICS_CA_SERVER_PORT": "http"},
        {"EPICS_CAS_SERVER_PORT": "70000"},
        {"EPICS_CAS_INTF_ADDR_LIST": "not-an-address"},
        {"EPICS_CAS_INTF_ADDR_LIST": "0.0.0.0 127.0.0.1"},
        {"EPICS_CAS_BEACON_PERIOD": "soon"},
    ],
)
def test_invalid_settings_raise(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        CAServerConfig.from_env(env)


def _free_udp_tcp_port() -> int:
    for _ in range(50):
        t = socket.socket()
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            u.close()
            t.close()
        return port
    raise RuntimeError("no free port")


def test_server_reports_both_protocols() -> None:
    pv = SharedPV(nt=NTScalar("d"), initial=1.0)
    with Server(providers=[{"cfg:x": pv}], isolate=True) as S:
        conf = S.conf()
        assert conf["EPICS_PVA_AUTO_ADDR_LIST"] == "NO"
        port = int(conf["EPICS_CA_SERVER_PORT"])
        assert port > 0 and conf["EPICS_CAS_SERVER_PORT"] == str(port)
        assert conf["EPICS_CA_ADDR_LIST"] == f"127.0.0.1:{port}"
        assert conf["EPICS_CA_AUTO_ADDR_LIST"] == "NO"
        assert conf["EPICS_CAS_INTF_ADDR_LIST"] == "127.0.0.1"
        assert "CA circuits=0" in S.tostr()


def test_protocols_selects() -> None:
    pv = SharedPV(nt=NTScalar("d"), initial=1.0)
    with Server(providers=[{"cfg:x": pv}], isolate=True, protocols=["ca"]) as S:
        conf = S.conf()
        assert "EPICS_CA_SERVER_PORT" in conf and "EPICS_PVAS_SERVER_PORT" not in conf
    with Server(providers=[{"cfg:x": pv}], isolate=True, protocols="pva") as S:
        conf = S.conf()
        assert "EPICS_CA_SERVER_PORT" not in conf and "EPICS_PVAS_SERVER_PORT" in conf
    with pytest.raises(ValueError):
        Server(providers=[{"cfg:x": pv}], isolate=True, protocols=["ftp"])
    with pytest.raises(ValueError):
        Server(providers=[{"cfg:x": pv}], isolate=True, protocols=[])


def test_conf_keys_reach_the_ca_server() -> None:
    port = _free_udp_tcp_port()
    pv = SharedPV(nt=NTScalar("d"), initial=1.0)
    conf = {
        "EPICS_PVAS_INTF_ADDR_LIST": "127.0.0.1",
        "EPICS_PVAS_SERVER_PORT": "0",
        "EPICS_PVAS_BROADCAST_PORT": "0",
        "EPICS_PVAS_AUTO_BEACON_ADDR_LIST": "NO",
        "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
        "EPICS_CA_SERVER_PORT": str(port),
        "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
    }
    with Server(providers=[{"cfg:x": pv}], conf=conf, useenv=False) as S:
        assert S.conf()["EPICS_CA_SERVER_PORT"] == str(port)
        assert S._ca is not None and S._ca.tcp_port == port  # the TCP port was free: RSRV takes it too


def test_bad_ca_conf_raises_before_binding() -> None:
    with pytest.raises(ConfigError):
        Server(providers=[], conf={"EPICS_CAS_INTF_ADDR_LIST": "bogus"}, useenv=False)
