"""An RPC PV: ``<prefix>add`` takes NTURI arguments ``a`` and ``b`` and returns their sum.

PVAccess RPC sends one structure and gets one back.  By convention the argument is an
``epics:nt/NTURI:1.0`` whose ``query`` sub-structure holds the named arguments, and the reply
is a Normative Type, here an ``NTScalar('d')``.  A SharedPV gets RPCs through its ``rpc``
handler, which (unlike ``put``) sees the raw argument :class:`~capva.Value` and must reply
with a Value: ``op.done(NTScalar('d').wrap(...))``, or fail with ``op.done(error="...")``.

The PV also holds a value, so ``get`` works too: the result of the last call.

Run it, then from Python::

    from p4p.client.thread import Context
    from p4p.nt import NTURI

    with Context("pva") as ctxt:
        uri = NTURI([("a", "d"), ("b", "d")]).wrap("example:add", kws={"a": 1.5, "b": 2})
        print(ctxt.rpc("example:add", uri))       # 3.5

or from the shell (the CLI sends every argument as a string, which the server converts;
p4p 4.3.0's CLI needs ``--raw`` to print the reply)::

    python -m p4p.client.cli --raw rpc example:add a=1.5 b=2
    python -m p4p.client.cli get example:add        # the last result
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from capva.nt import NTScalar
from capva.server.thread import SharedPV

from . import make_parser, run

if TYPE_CHECKING:
    from capva import Value
    from capva.server import ServerOperation

_result = NTScalar("d")


def _arg(query: Value, name: str) -> float:
    """Argument ``name`` of an NTURI ``query`` as a float; ``ValueError`` says what is wrong."""
    if name not in query:
        raise ValueError(f"missing argument {name!r}: call with query {{a: number, b: number}}")
    try:
        return float(query[name])  # a number, or the string the p4p CLI sends
    except (TypeError, ValueError):
        raise ValueError(f"argument {name!r} is not a number: {query[name]!r}") from None


def build(prefix: str) -> dict[str, SharedPV]:
    """The PVs of this example: ``<prefix>add``."""
    pv = SharedPV(nt=_result, initial=math.nan)  # nan: nothing added yet

    @pv.rpc
    def add(pv: SharedPV, op: ServerOperation) -> None:
        arg = op.value()  # rpc handlers see the raw argument Value, never unwrapped
        try:
            if arg is None:
                raise ValueError("no argument: call with query {a: number, b: number}")
            # an NTURI carries the arguments in .query; also accept a bare {a, b} structure
            query = arg["query"] if "query" in arg else arg
            total = _arg(query, "a") + _arg(query, "b")
        except ValueError as e:
            op.done(error=str(e))  # the client gets a RemoteError with this text
            return
        now = time.time()
        pv.post(total, timestamp=now)  # remember the last result, for get and monitor
        op.done(_result.wrap(total, timestamp=now))  # an RPC reply is a Value: wrap it

    return {prefix + "add": pv}


def main(argv: list[str] | None = None) -> int:
    """Serve the RPC until Ctrl+C (or ``--duration``)."""
    args = make_parser("python -m capva.examples.rpcserver", __doc__).parse_args(argv)
    name = args.prefix + "add"
    pvs = {name: "RPC NTURI query a, b -> NTScalar double a+b; get: last result"}
    return run("rpcserver", [build(args.prefix)], pvs, args, examples=[f"rpc {name} a=1.5 b=2"])


if __name__ == "__main__":
    raise SystemExit(main())
