"""The mailbox with asyncio: ``<prefix>amailbox`` has a coroutine put handler.

:class:`capva.server.asyncio.SharedPV` runs its handlers on an asyncio event loop (the one
running when the SharedPV is created), so a handler may be a coroutine and ``await`` I/O
without tying up a thread: here it pretends to write to a device (``asyncio.sleep(--delay)``)
before it posts the value and completes the put.  The client's put returns only after
``op.done()``, so it waits for the device too; other clients and PVs are served meanwhile.

Create the SharedPVs inside a coroutine (they need the running loop), and keep the loop
running for as long as the server serves::

    async def amain():
        pv = SharedPV(nt=NTScalar("d"), initial=0.0)

        @pv.put
        async def handle(pv, op):
            await device.write(op.value())
            pv.post(op.value())
            op.done()

        with Server(providers=[{"example:amailbox": pv}]):
            await asyncio.Event().wait()      # serve until cancelled

Run it, then (default ports)::

    python -m p4p.client.cli put example:amailbox=2.5
    python -m p4p.client.cli get example:amailbox
"""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from capva.nt import NTScalar
from capva.server.asyncio import SharedPV

from . import make_parser, print_banner, print_pvs, serving

if TYPE_CHECKING:
    from capva.server.raw import ServOpWrap  # what put handlers get: value() is unwrapped


def build(prefix: str, delay: float) -> dict[str, SharedPV]:
    """The PVs of this example; call with the event loop running."""
    pv = SharedPV(nt=NTScalar("d"), initial=0.0)

    @pv.put
    async def handle(pv: SharedPV, op: ServOpWrap) -> None:
        await asyncio.sleep(delay)  # stands for awaiting a device or a database
        pv.post(op.value())
        op.done()

    return {prefix + "amailbox": pv}


async def amain(args: argparse.Namespace, pvs: dict[str, str]) -> None:
    """Serve until ``args.duration`` passes or the task is cancelled (Ctrl+C does that)."""
    with serving([build(args.prefix, args.delay)], args.isolate) as S:
        print_banner("asyncio_mailbox", pvs, S.conf(), examples=[f"put {args.prefix}amailbox=2.5"])
        if args.duration is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(args.duration)


def main(argv: list[str] | None = None) -> int:
    """Serve the asyncio mailbox until Ctrl+C (or ``--duration``)."""
    P = make_parser("python -m capva.examples.asyncio_mailbox", __doc__)
    P.add_argument("--delay", type=float, default=0.1, help="simulated device write time, s (default 0.1)")
    args = P.parse_args(argv)
    pvs = {
        args.prefix + "amailbox": f"NTScalar double; put stores the value after {args.delay:g} s (asyncio)"
    }
    if args.list_pvs:
        print_pvs(pvs)
        return 0
    try:
        asyncio.run(amain(args, pvs))
    except KeyboardInterrupt:
        pass  # asyncio.run cancelled amain, which stopped the server, then re-raised
    print("asyncio_mailbox: stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
