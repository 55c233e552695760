"""Codec benchmark (issue 2): encode/decode of

  (a) one NTScalar double monitor update (value + timeStamp seconds/nanoseconds changed),
  (b) one 1,000,000-element float64 NTScalarArray value,

printed as µs per operation and MB/s, with the targets for this 2-core machine:
(a) encode <= 5 µs, decode <= 10 µs; (b) >= 2 GB/s each way.

Each figure is the best of several timeit repeats (the least-disturbed run), which is what a
codec benchmark should report on a shared machine.  Run: ``make bench`` or
``python benchmarks/bench_codec.py``.
"""

from __future__ import annotations

import sys
import timeit

import numpy as np

from capva import Value
from capva.nt import NTScalar
from capva.pva.codec import decode_partial, encode_partial


def best(fn, number: int, repeat: int = 7) -> float:
    """Seconds per call, best of ``repeat`` runs of ``number`` calls."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def scalar_update() -> dict[str, float]:
    T = NTScalar("d").type
    V = Value(T)
    V.unmark()
    V.value = 2.5
    V["timeStamp.secondsPastEpoch"] = 1700000000
    V["timeStamp.nanoseconds"] = 250000000
    wire = encode_partial(V, False)
    cache: dict = {}
    enc = best(lambda: encode_partial(V, False), 20000)

    def post_and_encode():
        # what a server does per update: assign the fields, encode, clear the marks
        V.value = 3.5
        V["timeStamp.secondsPastEpoch"] = 1700000001
        V["timeStamp.nanoseconds"] = 5
        b = encode_partial(V, False)
        V.unmark()
        return b

    enc_full = best(post_and_encode, 20000)
    dec = best(lambda: decode_partial(T, wire, 0, False, cache), 20000)
    return {
        "encode_us": enc * 1e6,
        "assign_encode_us": enc_full * 1e6,
        "decode_us": dec * 1e6,
        "bytes": len(wire),
    }


def big_array() -> dict[str, float]:
    T = NTScalar("ad").type
    V = Value(T, {"value": np.random.default_rng(1).random(1_000_000)})
    V.unmark()
    V.mark("value")
    wire = encode_partial(V, False)
    nbytes = 8_000_000
    enc = best(lambda: encode_partial(V, False), 20)
    dec_bytes = best(lambda: decode_partial(T, wire, 0, False, {}), 200)
    rx = bytearray(wire)  # a receive buffer: decode must copy out of it
    dec_copy = best(lambda: decode_partial(T, rx, 0, False, {}), 20)
    be = encode_partial(V, True)
    enc_be = best(lambda: encode_partial(V, True), 10)
    dec_be = best(lambda: decode_partial(T, be, 0, True, {}), 10)
    return {
        "encode_MBps": nbytes / enc / 1e6,
        "decode_bytes_MBps": nbytes / dec_bytes / 1e6,
        "decode_bytearray_MBps": nbytes / dec_copy / 1e6,
        "encode_be_MBps": nbytes / enc_be / 1e6,
        "decode_be_MBps": nbytes / dec_be / 1e6,
        "encode_ms": enc * 1e3,
        "decode_bytearray_ms": dec_copy * 1e3,
    }


def main() -> int:
    a = scalar_update()
    b = big_array()
    print("capva codec benchmark (best of 7 repeats)")
    print(f"(a) NTScalar double update, {a['bytes']} bytes on the wire")
    print(
        f"    encode              {a['encode_us']:7.2f} µs/op   target <= 5 µs   ({a['encode_us'] / 5:.2f} of target)"
    )
    print(
        f"    assign+encode+clear {a['assign_encode_us']:7.2f} µs/op   (informational: a server's whole post)"
    )
    print(
        f"    decode              {a['decode_us']:7.2f} µs/op   target <= 10 µs  ({a['decode_us'] / 10:.2f} of target)"
    )
    print("(b) NTScalarArray float64[1,000,000] value (8 MB)")
    print(
        f"    encode LE           {b['encode_MBps']:9.0f} MB/s  ({b['encode_ms']:.2f} ms)  target >= 2000 MB/s"
    )
    print(
        f"    decode LE bytearray {b['decode_bytearray_MBps']:9.0f} MB/s  ({b['decode_bytearray_ms']:.2f} ms)  target >= 2000 MB/s"
    )
    print(
        f"    decode LE bytes     {b['decode_bytes_MBps']:9.0f} MB/s  (zero-copy view of an immutable message)"
    )
    print(f"    encode BE (swap)    {b['encode_be_MBps']:9.0f} MB/s")
    print(f"    decode BE (swap)    {b['decode_be_MBps']:9.0f} MB/s")
    ok = (
        a["encode_us"] <= 5
        and a["decode_us"] <= 10
        and b["encode_MBps"] >= 2000
        and b["decode_bytearray_MBps"] >= 2000
    )
    print("targets:", "all met" if ok else "MISSED (see above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
