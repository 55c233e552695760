"""A channel's first plain read is answered from the PV's value alone, without the snapshot.

Why this file exists: the CA server computes a PV's full CA view (alarm, time stamp, limits,
units, precision) once per post and caches its encodings; but a plain DBR carries none of
that, and the first read of a channel is usually plain (caget, pyepics, an archiver or a
display connecting many channels).  So a plain, non-STRING read of a numeric PV that no read
has touched since the last post is encoded from the value alone (``_Circuit.first_read``).
These tests hold that shortcut to the general path: for every native type, every plain DBR
type and several counts, the first read after a post and the reads after it (snapshot, then
encode cache) carry the same bytes, the same count and the same status.
"""

from __future__ import annotations

import numpy as np
import pytest

from capva.ca.commands import ErrorResponse, ReadNotifyRequest, ReadNotifyResponse
from capva.nt import NTScalar
from capva.server import Server
from capva.server.thread import SharedPV
from support.ca import RawCA, ca_tcp_port

pytestmark = pytest.mark.timeout(60)

ECA_BADCOUNT = 176
#: PVA code, then values to post: (negative and out-of-range values exercise the conversions)
CASES = {
    "d": [1.5, -2.25e300, float("nan")],
    "f": [0.1, -3.5],
    "i": [7, -2_000_000_000],
    "h": [-5, 32000],
    "b": [-1, 100],
    "B": [255, 3],
    "H": [65535, 1],
    "I": [4_000_000_000, 0],
    "l": [-(2**40), 5],
    "ad": [np.array([1.0, -2.5, 3.25]), np.array([9.0])],
    "ai": [np.array([1, -2, 3, 4]), np.array([], dtype=np.int32)],
    "ah": [np.array([-1, 2], dtype=np.int16)],
}


@pytest.fixture(scope="module")
def served():
    pvs = {f"first:{code}": SharedPV(nt=NTScalar(code), initial=vals[0]) for code, vals in CASES.items()}
    with Server(providers=[pvs], isolate=True, protocols=["ca"]) as S:
        with RawCA(ca_tcp_port(S, "first:d")) as r:
            r.handshake()
            yield r, pvs


def _reply(r: RawCA, sid: int, dtype: int, count: int, ioid: int) -> tuple:
    r.send(ReadNotifyRequest(dtype, count, sid, ioid))
    m, _ = r.recv_until(lambda m: isinstance(m, (ReadNotifyResponse, ErrorResponse)))
    assert m is not None, "circuit closed"
    if isinstance(m, ErrorResponse):
        return ("error", m.status)
    assert m.ioid == ioid
    return (m.data_type, m.data_count, m.status, bytes(m.data))


@pytest.mark.parametrize("code", list(CASES))
def test_first_read_matches_general_path(served, code):
    r, pvs = served
    pv = pvs[f"first:{code}"]
    sid, native, native_count = r.create(f"first:{code}", cid=list(CASES).index(code) + 1)
    ioid = 0
    for value in CASES[code]:
        n = len(value) if isinstance(value, np.ndarray) else 1
        for dtype in range(1, 7):  # every plain type but STRING
            for count in sorted({0, 1, n, native_count, native_count + 1}):
                pv.post(value)  # a post without subscribers: the next read is a first read
                (view,) = pv._ca_registry.values()
                assert not view.peeked and view.last is None
                replies = []
                for _ in range(3):  # value alone, then the snapshot, then its encode cache
                    ioid += 1
                    replies.append(_reply(r, sid, dtype, count, ioid))
                if replies[0][0] != "error":
                    assert view.peeked, "the first read did not take the value-only path"
                assert replies[0] == replies[1] == replies[2], (value, dtype, count)
                if count > max(n, native_count):
                    assert replies[0] == ("error", ECA_BADCOUNT)
