"""SharedPV.post's shortcuts give exactly what the general path gives.

Why: ``post()`` skips ``wrap()`` for a plain scalar and for an unwrapped one whose Value only
changes 'value' (the put handler idiom ``pv.post(op.value()); op.done()``), and
``ntwrappercommon._store`` reads alarm and time stamp from the storage directly.  Both are
hot paths (every put with completion, every unwrapped get or update); a subscriber must not
be able to tell them from the general path: same stored fields, same changed marks, same
time stamp rules.  No network here: a recording CA view sees each post's Value and mask.
"""

from __future__ import annotations

import time

import pytest

from capva.nt import NTScalar
from capva.pva import Type, Value
from capva.server.raw import _NOTSET, _plain_scalar
from capva.server.thread import SharedPV


class Recorder:
    """Stands in for a CA view: what ``post()`` tells its views (under the PV's lock)."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict, int]] = []

    def posted(self, V: Value, mask: int) -> None:
        self.posts.append((V.todict(), mask))


def _pv(code: str, initial, fast: bool) -> tuple[SharedPV, Recorder]:
    pv = SharedPV(nt=NTScalar(code), initial=initial)
    if not fast:
        pv._fast = None  # the general path: wrap(), merge, stamp
    rec = Recorder()
    pv._ca_views.append(rec)
    return pv, rec


def _without_time(d: dict) -> dict:
    d = dict(d)
    d.pop("timeStamp")
    return d


CASES = [("d", 0.0, 2.5), ("i", 0, -7), ("?", False, True), ("s", "", "on")]


@pytest.mark.parametrize("code,initial,x", CASES)
def test_unwrapped_put_value_posts_as_the_general_path(code, initial, x):
    T = NTScalar(code).type
    got = []
    for fast in (True, False):
        pv, rec = _pv(code, initial, fast)
        put = NTScalar.unwrap(T({"value": x}))  # what op.value() gives a handler
        if fast:  # the shortcut is taken
            assert _plain_scalar(put, pv._fast[0], pv._fast_type) is not _NOTSET
        t0 = time.time()
        pv.post(put)
        ((d, mask),) = rec.posts
        assert d["value"] == x
        stamp = d["timeStamp"]["secondsPastEpoch"] + d["timeStamp"]["nanoseconds"] * 1e-9
        assert t0 - 1 <= stamp <= time.time() + 1  # a zero stamp means "now", on both paths
        got.append((_without_time(d), mask))
    assert got[0] == got[1]


@pytest.mark.parametrize("code,initial,x", CASES)
def test_plain_scalar_posts_as_the_general_path(code, initial, x):
    got = []
    for fast in (True, False):
        pv, rec = _pv(code, initial, fast)
        pv.post(x)
        ((d, mask),) = rec.posts
        got.append((_without_time(d), mask))
    assert got[0] == got[1]


@pytest.mark.parametrize("marked", [True, False])
def test_unwrapped_value_with_a_time_stamp_keeps_it(marked):
    T = NTScalar("d").type
    V = T({"value": 1.5, "timeStamp.secondsPastEpoch": 1000, "timeStamp.nanoseconds": 7})
    if not marked:  # (a stamp that came with the Value, e.g. from a get, unmarked since)
        V.unmark()
        V.mark("value")
    got = NTScalar.unwrap(V)
    for fast in (True, False):
        pv, rec = _pv("d", 0.0, fast)
        pv.post(got)
        ((d, _),) = rec.posts
        assert d["value"] == 1.5
        assert (d["timeStamp"]["secondsPastEpoch"], d["timeStamp"]["nanoseconds"]) == (1000, 7)


def test_unwrapped_value_with_other_marked_fields_posts_them():
    T = NTScalar("d").type
    got = NTScalar.unwrap(T({"value": 1.5, "alarm.severity": 2, "alarm.message": "hot"}))
    results = []
    for fast in (True, False):
        pv, rec = _pv("d", 0.0, fast)
        assert _plain_scalar(got, 1, T) is _NOTSET
        pv.post(got)
        ((d, mask),) = rec.posts
        assert d["alarm"]["severity"] == 2 and d["alarm"]["message"] == "hot"
        results.append((_without_time(d), mask))
    assert results[0] == results[1]


def test_unwrapped_value_of_another_type_is_not_a_shortcut():
    other = NTScalar("d", display=True).type
    got = NTScalar.unwrap(other({"value": 1.5}))
    pv, _ = _pv("d", 0.0, True)
    assert _plain_scalar(got, pv._fast[0], pv._fast_type) is _NOTSET
    with pytest.raises(ValueError, match="types differ"):
        pv.post(got)


def test_a_later_change_to_the_unwrapped_raw_value_is_what_is_posted():
    T = NTScalar("d").type
    got = NTScalar.unwrap(T({"value": 1.5}))
    got.raw["value"] = 9.0  # wrap() posts .raw, not the float
    pv, rec = _pv("d", 0.0, True)
    pv.post(got)
    assert rec.posts[0][0]["value"] == 9.0


# ------------------------------------------------------------------- _store: alarm and time


def _expected(V: Value) -> tuple:
    return (
        V.get("alarm.severity", 0),
        V.get("alarm.status", 0),
        (V.get("timeStamp.secondsPastEpoch", 0), V.get("timeStamp.nanoseconds", 0)),
    )


@pytest.mark.parametrize(
    "T,init",
    [
        (
            NTScalar("d").type,
            {
                "value": 1.0,
                "alarm.severity": 2,
                "alarm.status": 3,
                "timeStamp.secondsPastEpoch": 10,
                "timeStamp.nanoseconds": 20,
            },
        ),
        (Type([("value", "d")]), {"value": 1.0}),  # neither alarm nor time stamp
        (
            Type([("value", "i"), ("alarm", ("S", None, [("severity", "i")]))]),
            {"value": 1, "alarm.severity": 1},
        ),
    ],
)
def test_unwrap_reads_alarm_and_time_stamp(T, init):
    V = T(init)
    u = NTScalar.unwrap(V)
    assert (u.severity, u.status, u.raw_stamp) == _expected(V)
    assert u.timestamp == u.raw_stamp[0] + u.raw_stamp[1] * 1e-9
    assert u.raw is V


def test_unwrap_of_a_sub_structure_reads_its_own_fields():
    inner = (
        "S",
        "epics:nt/NTScalar:1.0",
        [
            ("value", "d"),
            ("alarm", ("S", "alarm_t", [("severity", "i"), ("status", "i"), ("message", "s")])),
            (
                "timeStamp",
                ("S", "time_t", [("secondsPastEpoch", "l"), ("nanoseconds", "i"), ("userTag", "i")]),
            ),
        ],
    )
    T = Type([("pad", "i"), ("alarm", ("S", None, [("severity", "i")])), ("x", inner)])
    V = T(
        {"pad": 5, "alarm.severity": 1, "x.value": 2.0, "x.alarm.severity": 3, "x.timeStamp.nanoseconds": 4}
    )
    u = NTScalar.unwrap(V.x)
    assert (u.severity, u.status, u.raw_stamp) == (3, 0, (0, 4))


def test_unwrap_asks_the_value_for_a_field_that_is_not_an_integer():
    T = Type([("value", "d"), ("alarm", ("S", None, [("severity", ("S", None, [("x", "i")]))]))])
    V = T({"value": 1.0, "alarm.severity.x": 4})
    u = NTScalar.unwrap(V)
    assert isinstance(u.severity, Value) and u.severity.x == 4  # what V.get() gives


def test_an_unwrapped_class_made_by_hand_fails_as_before():
    from capva.nt.scalar import ntfloat

    pv, rec = _pv("d", 0.0, True)
    with pytest.raises(TypeError, match="must wrap to a Value"):
        pv.post(ntfloat(2.0))  # no Value behind it: nothing to post
    assert not rec.posts
