"""Idle connections are closed after 4/3 x EPICS_PVA_CONN_TMO (pva-protocol.md §7), while a
client that keeps talking (ECHO, as p4p/pvxs clients do) stays connected."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from capva.nt import NTScalar
from capva.server import Server
from capva.server.thread import SharedPV

CONF = {
    "EPICS_PVAS_INTF_ADDR_LIST": "127.0.0.1",
    "EPICS_PVAS_SERVER_PORT": "0",
    "EPICS_PVAS_BROADCAST_PORT": "0",
    "EPICS_PVA_AUTO_ADDR_LIST": "NO",
    "EPICS_PVA_CONN_TMO": "1.5",  # effective timeout: 2 s (4/3 x 1.5)
}


def _read_until_closed(sock: socket.socket, deadline: float) -> bool:
    """True if the server closed the connection before ``deadline``."""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True
    return False


@pytest.mark.timeout(30)
def test_idle_connection_times_out_and_echo_keeps_it_alive():
    pv = SharedPV(nt=NTScalar("d"), initial=1.0)
    with Server(providers=[{"x": pv}], conf=CONF, useenv=False, protocols=["pva"]) as S:
        port = int(S.conf()["EPICS_PVAS_SERVER_PORT"])
        idle = socket.create_connection(("127.0.0.1", port))
        busy = socket.create_connection(("127.0.0.1", port))
        try:
            t0 = time.monotonic()
            echo = struct.pack("<BBBBI", 0xCA, 2, 0, 2, 0)  # client ECHO, empty body
            closed_busy = False
            while time.monotonic() - t0 < 3.5:
                busy.sendall(echo)
                busy.settimeout(0.4)
                try:
                    if busy.recv(65536) == b"":
                        closed_busy = True
                        break
                except TimeoutError:
                    pass
            assert not closed_busy, "a client that echoes must not be timed out"
            assert _read_until_closed(idle, t0 + 6.0), "an idle client must be dropped after ~2 s"
            assert time.monotonic() - t0 >= 1.9, "dropped before the timeout"
        finally:
            idle.close()
            busy.close()
