"""``make demo`` / ``python -m capva.demo``: the data model at work.

Until the PVA server lands (issue 3) the demo builds the Normative Type values a demo IOC
would serve, changes them the way a device loop would, and shows what goes on the wire:
the pvxs-style printout, the changed fields, and the bytes of each monitor update decoded
back again.  It runs for a bounded number of updates and exits.
"""

from __future__ import annotations

import argparse
import math
import time

from . import Value
from .nt import NTEnum, NTScalar
from .pva.codec import decode_partial, encode_partial, encode_type, value_mask
from .pva.pvrequest import parse_request, request_mask


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m capva.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--updates", type=int, default=5, help="number of simulated updates (default 5)")
    p.add_argument("--period", type=float, default=0.2, help="seconds between updates (default 0.2)")
    args = p.parse_args(argv)

    nt = NTScalar("d", display=True, control=True, valueAlarm=True)
    V: Value = nt.wrap(0.0, timestamp=time.time())
    V["display.units"] = "mm"
    V["display.description"] = "demo:position"
    E: Value = NTEnum().wrap({"index": 0, "choices": ["Off", "On"]}, timestamp=time.time())

    print("demo:position, as pvxs would print it:\n")
    print(V)
    print(f"type descriptor on the wire: {len(encode_type(V.type(), False))} bytes")
    req = parse_request("field(value,timeStamp)")
    mask = request_mask(V.type(), req)
    print(f"pvRequest 'field(value,timeStamp)' selects bits {[i for i in range(64) if mask >> i & 1]}\n")

    for n in range(max(0, args.updates)):
        V.unmark()
        V.value = round(10 * math.sin(n / 3), 3)
        now = time.time()
        V["timeStamp.secondsPastEpoch"] = int(now)
        V["timeStamp.nanoseconds"] = int((now % 1) * 1e9)
        wire = encode_partial(V, False, mask=value_mask(V) & mask)
        back, _ = decode_partial(V.type(), wire, 0, False, {})
        print(
            f"update {n}: value={V.value:+.3f} changed={sorted(V.changedSet())} "
            f"wire={len(wire)} bytes -> decoded value={back.value:+.3f}"
        )
        E.value = n % 2
        time.sleep(args.period)
    print("\ndemo:switch:", repr(NTEnum().unwrap(E)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
