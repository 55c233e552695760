"""Mailbox PVs created on demand: a DynamicProvider claims every name under a prefix.

A :class:`~capva.server.StaticProvider` (or a plain dict) serves a list of names fixed in
advance.  A :class:`~capva.server.DynamicProvider` instead asks a handler object about each
name a client searches for:

``testChannel(name)``
    ``True`` claims the name; ``False`` disclaims it *for good* (the provider caches the
    negative answer, so a busy network full of searches for names nobody serves costs one
    call each); :attr:`DynamicProvider.NotYet` disclaims it *for now*, without caching, so the
    next search asks again.
``makeChannel(name, peer)``
    returns the :class:`~capva.server.thread.SharedPV` that the client's channel will use.

Here every name ``<prefix>box:<anything>`` is a mailbox (an ``NTScalar('d')``) made on first
use and kept, so its value survives reconnects.  At most ``--max`` boxes exist; a search for a
new box when all are taken answers ``NotYet`` (not ``False``): deleting a box with the RPC
``<prefix>boxdel`` frees room, and a client still searching then finds its box.  Names
outside the prefix answer ``False``.  A StaticProvider in the same server serves the RPC and
``<prefix>boxes``, the list of existing boxes.

Run it, then in another shell (default ports)::

    python -m p4p.client.cli put example:box:anything=1.5    # creates the box
    python -m p4p.client.cli get example:box:anything example:boxes
    python -m p4p.client.cli --raw rpc example:boxdel name=example:box:anything
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from capva.nt import NTScalar
from capva.server import DynamicProvider, StaticProvider
from capva.server.thread import SharedPV

from . import make_parser, run

if TYPE_CHECKING:
    from capva.server import ServerOperation
    from capva.server.raw import ServOpWrap  # what put handlers get: value() is unwrapped


class MailboxHandler:
    """The SharedPV handler of one box: store what is put (see :mod:`.mailbox`)."""

    def put(self, pv: SharedPV, op: ServOpWrap) -> None:
        pv.post(op.value())
        op.done()


class BoxMaker:
    """The DynamicProvider handler: a box for any name under ``prefix``, at most ``limit`` boxes.

    ``testChannel`` and ``makeChannel`` run on the server's threads, concurrently with the
    RPC handler, hence the lock.
    """

    def __init__(self, prefix: str, limit: int, boxes_pv: SharedPV) -> None:
        self.prefix = prefix
        self.limit = limit
        self._boxes_pv = boxes_pv
        self._lock = threading.Lock()
        self._boxes: dict[str, SharedPV] = {}

    def testChannel(self, name: str) -> bool | bytes:
        """Claim ``<prefix><something>``; ``NotYet`` while full, since room may be made later."""
        if not name.startswith(self.prefix) or name == self.prefix:
            return False  # never ours: let the provider cache the "no"
        with self._lock:
            if name in self._boxes or len(self._boxes) < self.limit:
                return True
        return DynamicProvider.NotYet  # full right now: ask me again next time

    def makeChannel(self, name: str, peer: str) -> SharedPV | None:
        """Return the box for ``name``, creating it on first use (``None`` refuses the channel).

        Check the name again: a server may offer every provider a channel that some other
        provider claimed in the search (p4p does), so this is not only called after ``True``.
        """
        if not name.startswith(self.prefix) or name == self.prefix:
            return None
        with self._lock:
            pv = self._boxes.get(name)
            if pv is None:
                if len(self._boxes) >= self.limit:
                    return None  # filled up between testChannel() and now
                pv = self._boxes[name] = SharedPV(nt=NTScalar("d"), initial=0.0, handler=MailboxHandler())
            names = sorted(self._boxes)
        self._boxes_pv.post(names)
        return pv

    def delete(self, name: str) -> bool:
        """Forget box ``name``, disconnecting its clients; ``False`` if there is no such box."""
        with self._lock:
            pv = self._boxes.pop(name, None)
            names = sorted(self._boxes)
        if pv is None:
            return False
        pv.close()
        self._boxes_pv.post(names)
        return True


def build(prefix: str, limit: int) -> tuple[StaticProvider, DynamicProvider, BoxMaker]:
    """Both providers of this example, and the handler (for direct use in tests)."""
    boxes = SharedPV(nt=NTScalar("as"), initial=[])
    maker = BoxMaker(prefix + "box:", limit, boxes)

    deleter = SharedPV(nt=NTScalar("s"), initial="RPC with query name=<box name>")

    @deleter.rpc
    def delete(pv: SharedPV, op: ServerOperation) -> None:
        arg = op.value()  # rpc handlers see the raw argument Value
        query = arg.get("query") if arg is not None else None
        name = query.get("name") if query is not None else None
        if not name:
            op.done(error="usage: rpc with query name=<box name>")
        elif maker.delete(str(name)):
            op.done(NTScalar("s").wrap(f"deleted {name}", timestamp=time.time()))
        else:
            op.done(error=f"no box {name}")

    static = StaticProvider("dynamicbox-static")
    static.add(prefix + "boxes", boxes)
    static.add(prefix + "boxdel", deleter)
    return static, DynamicProvider("dynamicbox", maker), maker


def main(argv: list[str] | None = None) -> int:
    """Serve on-demand mailboxes until Ctrl+C (or ``--duration``)."""
    P = make_parser("python -m capva.examples.dynamicbox", __doc__)
    P.add_argument("--max", type=int, default=100, help="most boxes that may exist at once (default 100)")
    args = P.parse_args(argv)
    pvs = {
        args.prefix + "boxes": "NTScalar string[]: the boxes that exist",
        args.prefix + "box:*": "any name here is an NTScalar double mailbox, made on first use",
        args.prefix + "boxdel": "RPC name=<box>: delete a box",
    }
    box = args.prefix + "box:anything"
    static, dynamic, _ = build(args.prefix, args.max)
    return run(
        "dynamicbox",
        [(static, 0), (dynamic, 1)],  # (provider, order): lower orders are asked first
        pvs,
        args,
        examples=[f"put {box}=1.5", f"get {args.prefix}boxes", f"rpc {args.prefix}boxdel name={box}"],
    )


if __name__ == "__main__":
    raise SystemExit(main())
