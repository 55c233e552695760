"""Clients listen for beacons on the broadcast port, which they share (SO_REUSEPORT) with
servers on the same host.  The kernel then hands each unicast SEARCH to one of those
sockets; a client socket that receives one must forward it to the local servers (ORIGIN_TAG
fan-out) or other clients' searches would vanish.  Here a wildcard-bound server and several
capva clients share one UDP port, and every client (capva's and p4p's) finds the PV at once."""

from __future__ import annotations

import socket
import time

import pytest
from p4p.client.thread import Context as P4PContext

from capva.client.thread import Context
from capva.nt import NTScalar
from capva.server import Server
from capva.server.thread import SharedPV


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(60)
def test_clients_sharing_the_broadcast_port_do_not_swallow_searches():
    port = _free_udp_port()
    conf = {
        "EPICS_PVAS_INTF_ADDR_LIST": "0.0.0.0",
        "EPICS_PVAS_BROADCAST_PORT": str(port),
        "EPICS_PVAS_SERVER_PORT": "0",
        "EPICS_PVAS_BEACON_ADDR_LIST": "127.0.0.1",
        "EPICS_PVAS_AUTO_BEACON_ADDR_LIST": "NO",
    }
    cconf = {
        "EPICS_PVA_ADDR_LIST": "127.0.0.1",
        "EPICS_PVA_AUTO_ADDR_LIST": "NO",
        "EPICS_PVA_BROADCAST_PORT": str(port),
    }
    pv = SharedPV(nt=NTScalar("d"), initial=1.5)
    with Server(providers=[{"shared:x": pv}], conf=conf, useenv=False, protocols=["pva"]):
        ctxs = [Context("pva", conf=cconf, useenv=False) for _ in range(3)]
        try:
            for c in ctxs:
                t0 = time.monotonic()
                assert c.get("shared:x", timeout=5) == 1.5
                assert time.monotonic() - t0 < 0.9, "found only after a search retry"
            for _ in range(3):
                with P4PContext("pva", conf=cconf, useenv=False) as p:
                    t0 = time.monotonic()
                    assert p.get("shared:x", timeout=5) == 1.5
                    assert time.monotonic() - t0 < 0.9, "p4p's search was swallowed by a capva client socket"
        finally:
            for c in ctxs:
                c.close()
