"""An NTEnum PV: ``<prefix>enum`` selects one of a fixed list of choices, by name or number.

An NTEnum's ``value`` is a structure ``{index, choices}``: the PV stores an integer and
publishes the strings it stands for.  A client may write either form:

* p4p's client maps a string to its index itself (``ctxt.put(name, "Red")`` fetches the
  choices first), so the server receives an index either way;
* the server checks the index, refuses writes to ``choices`` (the list is fixed here), and
  posts the new index, which monitors receive with its timestamp.

Run it, then (default ports)::

    python -m p4p.client.cli get example:enum
    python -m p4p.client.cli put example:enum=Green      # by name
    python -m p4p.client.cli put example:enum=2          # by index
    python -m p4p.client.cli put example:enum=9          # refused by the server: no choice 9
    python -m p4p.client.cli put example:enum=Purple     # refused by the client: not a choice

From Python ``ctxt.get("example:enum")`` returns an ``ntenum``: an ``int`` whose ``.choice``
is the string.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from capva.nt import NTEnum
from capva.server.thread import SharedPV

from . import make_parser, run

if TYPE_CHECKING:
    from capva.server.raw import ServOpWrap  # what put handlers get: value() is unwrapped

#: the default choices
COLOURS = ("Red", "Green", "Blue", "Cyan", "Magenta", "Yellow")


class EnumHandler:
    """Put handler: accept a valid index, refuse anything else with a message the client sees."""

    def __init__(self, choices: Sequence[str]) -> None:
        self.choices = list(choices)

    def put(self, pv: SharedPV, op: ServOpWrap) -> None:
        V = op.value().raw  # the put Value: only the fields the client set are marked changed
        if V.changed("value.choices"):
            op.done(error="choices are read-only")
            return
        if not V.changed("value.index"):
            op.done()  # nothing to do (e.g. a put of the alarm only: not accepted, not an error)
            return
        index = V["value.index"]
        if not 0 <= index < len(self.choices):
            op.done(error=f"index {index} out of range: choose one of {self.choices}")
            return
        pv.post({"value.index": index}, timestamp=time.time())
        op.done()


def build(prefix: str, choices: Sequence[str] = COLOURS) -> dict[str, SharedPV]:
    """The PVs of this example: ``<prefix>enum``, initially the first choice."""
    pv = SharedPV(
        nt=NTEnum(),
        initial={"index": 0, "choices": list(choices)},
        handler=EnumHandler(choices),
    )
    return {prefix + "enum": pv}


def main(argv: list[str] | None = None) -> int:
    """Serve the enum until Ctrl+C (or ``--duration``)."""
    P = make_parser("python -m capva.examples.ntenum", __doc__)
    P.add_argument(
        "--choices", default=",".join(COLOURS), help=f"comma-separated choices (default {','.join(COLOURS)})"
    )
    args = P.parse_args(argv)
    choices = [c.strip() for c in args.choices.split(",") if c.strip()]
    name = args.prefix + "enum"
    pvs = {name: f"NTEnum, choices {choices}; put a name or an index"}
    return run("ntenum", [build(args.prefix, choices)], pvs, args, examples=[f"put {name}={choices[-1]}"])


if __name__ == "__main__":
    raise SystemExit(main())
