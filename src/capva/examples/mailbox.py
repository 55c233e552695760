"""A "mailbox" PV: stores whatever a client puts and tells every subscriber.

This is the server from p4p's documentation with only the imports changed.  It shows the
three pieces every capva server has: a :class:`~capva.server.thread.SharedPV` holding the
value (here an ``NTScalar('d')``, a double with alarm and time stamp), a ``put`` handler that
decides what a client write does, and a :class:`~capva.server.Server` that maps names to PVs.

Run it::

    python -m capva.examples.mailbox              # serves example:mailbox on the default ports
    python -m capva.examples.mailbox --isolate    # 127.0.0.1 and random ports (see the banner)

and in another shell (when the server uses the default ports)::

    python -m p4p.client.cli get example:mailbox
    python -m p4p.client.cli put example:mailbox=4.5
    python -m p4p.client.cli monitor example:mailbox

The handler posts ``op.value()`` unchanged, so a client may change any field (for example
``alarm.severity``), not only ``value``.  To restrict that, look at ``op.value().raw.changedSet()``
and fail the operation with ``op.done(error="...")``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from capva.nt import NTScalar
from capva.server.thread import SharedPV

from . import make_parser, run

if TYPE_CHECKING:
    from capva.server.raw import ServOpWrap  # what put handlers get: value() is unwrapped


def build(prefix: str) -> dict[str, SharedPV]:
    """The ``{name: SharedPV}`` mapping this example serves (a dict is an implicit StaticProvider)."""
    pv = SharedPV(nt=NTScalar("d"), initial=0.0)  # an initial value also open()s the PV

    @pv.put
    def handle(pv: SharedPV, op: ServOpWrap) -> None:
        pv.post(op.value())  # store, and update subscribers
        op.done()  # the client's put completes only now

    return {prefix + "mailbox": pv}


def main(argv: list[str] | None = None) -> int:
    """Serve the mailbox until Ctrl+C (or ``--duration``); see the module docstring."""
    args = make_parser("python -m capva.examples.mailbox", __doc__).parse_args(argv)
    name = args.prefix + "mailbox"
    pvs = {name: "NTScalar double; put stores the value"}
    return run("mailbox", [build(args.prefix)], pvs, args, examples=[f"put {name}=4.5"])


if __name__ == "__main__":
    raise SystemExit(main())
