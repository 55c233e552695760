"""Runnable examples of the capva PVAccess server, one module per idea.

Each example is a short, complete server written against the same API as p4p's
(``from capva.server import Server`` in place of ``from p4p.server import Server``)::

    python -m capva.examples.mailbox          # a PV that stores whatever is put to it
    python -m capva.examples.dynamicbox       # PVs created on demand (DynamicProvider)
    python -m capva.examples.rpcserver        # an RPC taking NTURI arguments
    python -m capva.examples.ntndarray        # an NTNDArray image updating at a bounded rate
    python -m capva.examples.ntenum           # an NTEnum accepting string or integer puts
    python -m capva.examples.lazycounter      # counts only while someone is connected
    python -m capva.examples.asyncio_mailbox  # the mailbox with a coroutine put handler

Every example accepts the same options:

``--prefix P``
    prepended to every PV name (default ``example:``).
``--list-pvs``
    print the PV names and exit without serving.
``--duration SECONDS``
    serve for that long, then stop cleanly (default: until Ctrl+C).
``--isolate``
    listen on 127.0.0.1 only, with random ports, instead of following ``EPICS_PVAS_*``.

At startup an example prints its PVs, one line ``conf: {...}`` (the JSON of
``Server.conf()``, which a client can pass as ``Context(conf=..., useenv=False)``), and the
exact p4p command line that reads its first PV.

Two quirks of p4p 4.3.0's CLI (not of the servers): ``put`` makes the put and then fails
with ``NameError: name 'izip' is not defined`` while printing; and ``rpc`` can print the
reply only with ``--raw`` (``python -m p4p.client.cli --raw rpc NAME a=1``).

This package holds the plumbing the examples share (argument parsing, the startup banner,
waiting for Ctrl+C or the deadline), so that each example module shows only the server code.
"""

from __future__ import annotations

import argparse
import json
import shlex
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

__all__ = [
    "DEFAULT_PREFIX",
    "EXAMPLES",
    "make_parser",
    "client_env",
    "cli_hint",
    "print_pvs",
    "print_banner",
    "serving",
    "wait",
    "run",
]

#: PV name prefix the examples use unless ``--prefix`` says otherwise
DEFAULT_PREFIX = "example:"

#: the example modules, for ``python -m capva.examples.<name>``
EXAMPLES = (
    "mailbox",
    "dynamicbox",
    "rpcserver",
    "ntndarray",
    "ntenum",
    "lazycounter",
    "asyncio_mailbox",
)


def make_parser(prog: str, doc: str | None, default_prefix: str = DEFAULT_PREFIX) -> argparse.ArgumentParser:
    """Build the argument parser with the options every example shares.

    ``doc`` is the example's module docstring; its first paragraph becomes the description.
    Examples add their own options to the returned parser::

        P = make_parser("python -m capva.examples.ntndarray", __doc__)
        P.add_argument("--rate", type=float, default=5.0)
    """
    description = (doc or "").strip().split("\n\n")[0]
    P = argparse.ArgumentParser(prog=prog, description=description)
    P.add_argument("--prefix", default=default_prefix, help=f"PV name prefix (default {default_prefix!r})")
    P.add_argument("--list-pvs", action="store_true", help="print the PV names and exit")
    P.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="serve for SECONDS then exit (default: until Ctrl+C)",
    )
    P.add_argument(
        "--isolate",
        action="store_true",
        help="listen on 127.0.0.1 with random ports instead of following EPICS_PVAS_*",
    )
    return P


def client_env(conf: Mapping[str, str]) -> dict[str, str]:
    """The client environment that reaches a server whose ``Server.conf()`` is ``conf``.

    Searches go straight to the server's UDP port on one of the addresses it listens on
    (loopback when it listens on every interface), so this works for ``--isolate`` servers
    with random ports as well as for servers on the default ports.
    """
    intf = (conf.get("EPICS_PVAS_INTF_ADDR_LIST") or "").split()
    host = next((a.split(":")[0] for a in intf if not a.startswith("0.0.0.0")), "127.0.0.1")
    port = conf.get("EPICS_PVAS_BROADCAST_PORT") or conf.get("EPICS_PVA_BROADCAST_PORT") or "5076"
    return {"EPICS_PVA_ADDR_LIST": f"{host}:{port}", "EPICS_PVA_AUTO_ADDR_LIST": "NO"}


def ca_hint(conf: Mapping[str, str], name: str) -> str:
    """The shell command that reads ``name`` with pyepics over CA from a server with ``conf``.

    >>> ca_hint({"EPICS_CA_SERVER_PORT": "5064"}, "demo:sine").split(" python")[0]
    'EPICS_CA_ADDR_LIST=127.0.0.1:5064 EPICS_CA_AUTO_ADDR_LIST=NO'
    """
    intf = (conf.get("EPICS_CAS_INTF_ADDR_LIST") or "").split()
    host = next((a for a in intf if a != "0.0.0.0"), "127.0.0.1")
    port = conf.get("EPICS_CA_SERVER_PORT", "5064")
    code = shlex.quote(f"import epics; print(epics.caget({json.dumps(name)}))")
    return f"EPICS_CA_ADDR_LIST={host}:{port} EPICS_CA_AUTO_ADDR_LIST=NO python -c {code}"


def cli_hint(conf: Mapping[str, str], name: str, op: str = "get") -> str:
    """The shell command that runs p4p's CLI ``op`` on ``name`` (PV names and arguments) served with ``conf``.

    >>> cli_hint({"EPICS_PVAS_BROADCAST_PORT": "5076"}, "demo:sine")
    'EPICS_PVA_ADDR_LIST=127.0.0.1:5076 EPICS_PVA_AUTO_ADDR_LIST=NO python -m p4p.client.cli get demo:sine'
    """
    env = " ".join(f"{k}={v}" for k, v in client_env(conf).items())
    args = " ".join(shlex.quote(a) for a in name.split())
    if op == "rpc":
        op = "--raw rpc"  # p4p 4.3.0's CLI can print an RPC reply only as a raw Value
    return f"{env} python -m p4p.client.cli {op} {args}"


def _default_ports(conf: Mapping[str, str]) -> bool:
    """Whether a client with default settings on this host finds the server."""
    port = conf.get("EPICS_PVAS_BROADCAST_PORT") or conf.get("EPICS_PVA_BROADCAST_PORT") or "5076"
    intf = (conf.get("EPICS_PVAS_INTF_ADDR_LIST") or "0.0.0.0").split()
    return port == "5076" and any(a.startswith(("0.0.0.0", "127.")) for a in intf)


def print_pvs(pvs: Mapping[str, str]) -> None:
    """Print ``name  description`` lines, the output of ``--list-pvs``."""
    width = max((len(n) for n in pvs), default=0)
    for name, what in pvs.items():
        print(f"{name.ljust(width)}  {what}".rstrip(), flush=True)


def print_banner(
    title: str,
    pvs: Mapping[str, str],
    conf: Mapping[str, str],
    examples: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> None:
    """Print what is served and exactly how to read it with p4p's CLI.

    The ``conf: {...}`` line is one line of JSON so that scripts (and the tests) can parse it.
    ``examples`` are extra ``op name`` command tails (e.g. ``"put example:mailbox=4.5"``);
    ``notes`` are further lines printed at the end.
    """
    print(f"{title}: serving {len(pvs)} PV name(s)", flush=True)
    print_pvs(pvs)
    print("conf: " + json.dumps(dict(conf), sort_keys=True), flush=True)
    first = next(iter(pvs), None)
    if first is not None:
        print("Read with p4p's CLI from this host:")
        print("  " + cli_hint(conf, first.rstrip("*")))
        for tail in examples:
            op, _, rest = tail.partition(" ")
            print("  " + cli_hint(conf, rest, op))
        if _default_ports(conf):
            print(f"  (default ports: plain `python -m p4p.client.cli get {first.rstrip('*')}` also works)")
        if conf.get("EPICS_CA_SERVER_PORT"):
            print("Read over Channel Access (pyepics, caget) from this host:")
            print("  " + ca_hint(conf, first.rstrip("*")))
    for line in notes:
        print(line)
    print("Ctrl+C to stop.", flush=True)


def wait(duration: float | None, stop: threading.Event | None = None) -> None:
    """Block until ``duration`` seconds have passed, ``stop`` is set, or Ctrl+C.

    Ctrl+C is swallowed: stopping is the normal way out.  (``Event.wait`` is interruptible
    by signals in the main thread, so this does not delay Ctrl+C.)
    """
    ev = stop if stop is not None else threading.Event()
    try:
        ev.wait(duration)
    except KeyboardInterrupt:
        pass


@contextmanager
def serving(providers: list[Any], isolate: bool) -> Iterator[Any]:
    """Run a :class:`capva.server.Server` for ``providers`` for the duration of the block.

    ``isolate=True`` gives 127.0.0.1 with random ports; otherwise the server follows the
    ``EPICS_PVAS_*`` environment, exactly like ``Server(providers=...)``.
    """
    from capva.server import Server

    kws: dict[str, Any] = {"isolate": True} if isolate else {}
    with Server(providers=providers, **kws) as S:
        yield S


def run(
    title: str,
    providers: list[Any],
    pvs: Mapping[str, str],
    args: argparse.Namespace,
    examples: Sequence[str] = (),
    stop: threading.Event | None = None,
) -> int:
    """Serve ``providers`` as the options in ``args`` say; the body of most examples' ``main()``.

    ``pvs`` maps PV names to one-line descriptions (for ``--list-pvs`` and the banner).
    Returns the process exit status.
    """
    if args.list_pvs:
        print_pvs(pvs)
        return 0
    with serving(providers, args.isolate) as S:
        print_banner(title, pvs, S.conf(), examples)
        wait(args.duration, stop)
    print(f"{title}: stopped", flush=True)
    return 0
