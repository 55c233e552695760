"""capva's PVA client across server crashes and restarts, and searching by name server.

Why this file exists: a long-lived client outlives the servers it talks to.  When an IOC
dies, monitors must report it (``Disconnected`` with ``notify_disconnect=True``) and then
resume by themselves once the server is back on the same ports, and the next get must
succeed without any help from the caller.  Sites without UDP broadcast find servers through
``EPICS_PVA_NAME_SERVERS`` (search over TCP) instead, which must work with no address list
at all.  Both are checked against p4p's (pvxs) server and capva's own.

Servers that get killed run in subprocesses (:class:`support.client.ServerProcess`) on
fixed loopback ports picked free beforehand; the script reads EPICS_PVAS_* from its
environment, serves ``rc:gen`` (the generation number of this server process) and
``rc:box`` (a mailbox), prints READY and exits when its stdin closes.  The name-server
tests that need no restart use in-process servers with ``isolate=True``.
"""

from __future__ import annotations

import socket
import time

import p4p  # noqa: F401  (a required peer of the client suites)
import p4p.nt
import p4p.server
import p4p.server.thread
import pvaccess  # noqa: F401
import pytest

import capva.nt
import capva.server
import capva.server.thread
from capva.client import Disconnected
from support.client import FLAVOURS, ServerProcess, Updates, free_port, open_context, search_conf, server_env
from support.server import Mailbox

pytestmark = pytest.mark.timeout(60)

SERVERS = ("p4p", "capva")

SERVER_SCRIPT = r"""
import os, sys
pkg = os.environ["TEST_SERVER_PKG"]
if pkg == "p4p":
    from p4p.nt import NTScalar
    from p4p.server import Server
    from p4p.server.thread import SharedPV
else:
    from capva.nt import NTScalar
    from capva.server import Server
    from capva.server.thread import SharedPV

class Box:
    def put(self, pv, op):
        pv.post(op.value())
        op.done()

pvs = {
    "rc:gen": SharedPV(nt=NTScalar("i"), initial=int(os.environ["TEST_GENERATION"])),
    "rc:box": SharedPV(handler=Box(), nt=NTScalar("d"), initial=0.0),
}
with Server(providers=[pvs]) as S:  # configured from EPICS_PVAS_* in the environment
    print("CONF", S.conf(), flush=True)
    print("READY", flush=True)
    sys.stdin.read()
"""


class Restartable:
    """One server package on fixed ports; ``start(gen)``, ``kill()``, closed at the end."""

    def __init__(self, pkg: str) -> None:
        self.pkg = pkg
        self.tcp = free_port()
        self.udp = free_port(socket.SOCK_DGRAM)
        self.proc: ServerProcess | None = None

    def start(self, gen: int) -> None:
        env = server_env(self.tcp, self.udp, TEST_SERVER_PKG=self.pkg, TEST_GENERATION=str(gen))
        self.proc = ServerProcess(SERVER_SCRIPT, env)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stop()


@pytest.fixture(params=SERVERS)
def restartable(request):
    R = Restartable(request.param)
    try:
        R.start(1)
        yield R
    finally:
        R.close()


def _get_eventually(C, name: str, timeout: float) -> object:
    """Bounded polling for a server that is coming back: short gets until one succeeds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return C.get(name, timeout=1.0)
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_server_restart(restartable, flavour):
    R = restartable
    with open_context(flavour, search_conf(R.udp)) as C:
        upd = Updates()
        sub = C.monitor("rc:gen", upd, notify_disconnect=True)
        try:
            assert isinstance(upd.next(), Disconnected)
            assert upd.next(timeout=10) == 1
            assert C.get("rc:gen") == 1
            C.put("rc:box", 1.5)
            assert C.get("rc:box") == 1.5

            R.kill()
            gone = upd.next(timeout=20)
            assert isinstance(gone, Disconnected), gone
            with pytest.raises(TimeoutError):
                C.get("rc:gen", timeout=0.5)

            R.start(2)
            back = upd.until(lambda v: not isinstance(v, Exception), timeout=40)
            assert back[-1] == 2, back
            assert all(isinstance(v, Disconnected) for v in back[:-1]), back
            assert C.get("rc:gen", timeout=10) == 2
            assert C.get("rc:box") == 0.0  # a fresh server
            C.put("rc:box", 2.5)
            assert upd.drain() == []  # one Disconnected per outage, no repeats
        finally:
            sub.close()


def test_get_only_client_after_restart(restartable):
    """No monitor keeping the channel busy: a cached channel reconnects for the next get."""
    R = restartable
    with open_context("thread", search_conf(R.udp)) as C:
        assert C.get("rc:gen") == 1
        R.kill()
        R.start(2)
        assert _get_eventually(C, "rc:gen", 40) == 2


# --------------------------------------------------------------------------- name servers


def name_server_conf(tcp: int) -> dict[str, str]:
    """Search only over TCP: no UDP address list, no broadcast; the broadcast port is one
    nothing listens on, so a UDP search could not succeed by accident."""
    return {
        "EPICS_PVA_NAME_SERVERS": f"127.0.0.1:{tcp}",
        "EPICS_PVA_ADDR_LIST": "",
        "EPICS_PVA_AUTO_ADDR_LIST": "NO",
        "EPICS_PVA_BROADCAST_PORT": str(free_port(socket.SOCK_DGRAM)),
    }


def _in_process_server(pkg: str):
    srv = p4p.server if pkg == "p4p" else capva.server
    thread = p4p.server.thread if pkg == "p4p" else capva.server.thread
    nt = p4p.nt if pkg == "p4p" else capva.nt
    box = Mailbox()
    pvs = {
        "ns:x": thread.SharedPV(handler=box, nt=nt.NTScalar("d"), initial=4.5),
        "ns:e": thread.SharedPV(nt=nt.NTEnum(), initial={"index": 1, "choices": ["a", "b"]}),
    }
    return srv.Server(providers=[pvs], isolate=True), pvs, box


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("pkg", SERVERS)
def test_name_server_search(pkg, flavour):
    S, pvs, box = _in_process_server(pkg)
    try:
        tcp = int(S.conf().get("EPICS_PVAS_SERVER_PORT") or S.conf()["EPICS_PVA_SERVER_PORT"])
        with open_context(flavour, name_server_conf(tcp)) as C:
            assert C.get(["ns:x", "ns:e"]) == [4.5, 1]
            C.put("ns:x", 5.5)
            box.ops.get(timeout=5)
            upd = Updates()
            with C.monitor("ns:x", upd):
                assert upd.next() == 5.5
                pvs["ns:x"].post(6.5)
                assert upd.next() == 6.5
            with pytest.raises(TimeoutError):
                C.get("ns:nosuch", timeout=0.5)
    finally:
        S.stop()


@pytest.mark.parametrize("pkg", SERVERS)
def test_name_server_restart(pkg):
    """The name-server connection itself is lost and re-established: searches resume."""
    R = Restartable(pkg)
    try:
        R.start(1)
        with open_context("thread", name_server_conf(R.tcp)) as C:
            upd = Updates()
            with C.monitor("rc:gen", upd, notify_disconnect=True):
                assert isinstance(upd.next(), Disconnected)
                assert upd.next(timeout=10) == 1
                R.kill()
                assert isinstance(upd.next(timeout=20), Disconnected)
                R.start(2)
                back = upd.until(lambda v: not isinstance(v, Exception), timeout=40)
                assert back[-1] == 2
            assert _get_eventually(C, "rc:gen", 20) == 2
    finally:
        R.close()


@pytest.mark.parametrize("pkg", SERVERS)
def test_client_before_server(pkg):
    """A monitor and a get started while no server exists yet: both complete once the
    server comes up (searches go on, and the new server's beacon hurries them)."""
    R = Restartable(pkg)
    try:
        with open_context("thread", search_conf(R.udp)) as C:
            upd = Updates()
            with C.monitor("rc:gen", upd):
                with pytest.raises(TimeoutError):
                    C.get("rc:gen", timeout=1.5)
                R.start(7)
                assert upd.next(timeout=30) == 7  # no Disconnected: notify_disconnect=False
                assert C.get("rc:gen", timeout=10) == 7
                R.kill()
                R.start(8)
                assert upd.next(timeout=40) == 8  # again no Disconnected in between
                assert upd.drain() == []
    finally:
        R.close()
