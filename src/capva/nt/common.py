"""Pieces shared by every Normative Type helper: the ``alarm_t`` and ``time_t`` sub-structures,
the :class:`NTBase` helper base class and the timestamp normalisation used by ``wrap()``.

This is the one module of :mod:`capva.nt` that names the value model (``Type`` / ``Value``), so
that every other module takes it from here.  Like the rest of ``capva.nt`` it does no I/O: no
sockets, no threads, no environment, and it never reads the clock on its own (p4p's ``wrap()``
leaves ``timeStamp`` zero unless the caller passes ``timestamp=``; so do we).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..pva import Type, Value
from ..pva.types import intern_type

#: The Value class, under a name that the NT classes' ``Value`` class attribute (p4p's hook for
#: a Value subclass) does not shadow in annotations.
PVValue = Value

__all__ = ["Type", "Value", "PVValue", "timeStamp", "alarm", "NTBase", "TimestampLike", "normalize_timestamp"]

#: The ``time_t`` sub-structure: POSIX seconds (1970 epoch, not the EPICS 1990 epoch),
#: nanoseconds and a user tag.  The same layout p4p, pvxs and QSRV use.
timeStamp = Type(
    id="time_t",
    spec=[
        ("secondsPastEpoch", "l"),
        ("nanoseconds", "i"),
        ("userTag", "i"),
    ],
)

#: The ``alarm_t`` sub-structure.  ``severity``: 0 NO_ALARM, 1 MINOR, 2 MAJOR, 3 INVALID.
alarm = Type(
    id="alarm_t",
    spec=[
        ("severity", "i"),
        ("status", "i"),
        ("message", "s"),
    ],
)

#: Everything ``wrap(..., timestamp=...)`` accepts: a :class:`datetime`, POSIX seconds as a
#: number, or a ``(seconds, nanoseconds)`` pair.
TimestampLike = datetime | float | int | Sequence[int]


def normalize_timestamp(timestamp: TimestampLike) -> tuple[int, int]:
    """Turn any accepted timestamp form into ``(seconds, nanoseconds)``.

    The rules are p4p's, so that the same call stamps the same bits::

        >>> normalize_timestamp(1.5)
        (1, 500000000)
        >>> normalize_timestamp((10, 20))
        (10, 20)

    A naive :class:`datetime` is local time (``datetime.timestamp()`` semantics).  numpy
    numbers are accepted as well (p4p only takes the builtin ``int``/``float``).
    """
    if isinstance(timestamp, datetime):
        timestamp = timestamp.timestamp()
    if isinstance(timestamp, numbers.Real):
        sec, frac = divmod(float(timestamp), 1.0)
        return int(sec), int(frac * 1e9)
    try:
        if isinstance(timestamp, (str, bytes)):  # '12' would otherwise pass as (1, 2)
            raise TypeError
        sec, ns = timestamp[0], timestamp[1]  # type: ignore[index]
    except (TypeError, IndexError, KeyError):
        raise TypeError(
            f"timestamp must be a datetime, seconds as a number or a (seconds, nanoseconds) pair, not {timestamp!r}"
        ) from None
    return int(sec), int(ns)


class NTBase:
    """Base of the NT helper classes (``NTScalar``, ``NTEnum``, ``NTTable``, ``NTNDArray``...).

    A helper owns one :class:`Type` (``self.type``) and translates between plain Python objects
    and :class:`Value`: ``wrap()`` on the way out (``SharedPV.post(3.0)``), ``unwrap()`` on the way
    in (a client ``get()`` returning ``ntfloat``) and ``assign()`` for a client ``put()`` into an
    existing Value.  Subclasses provide ``buildType()``; ``__init__`` passes its arguments on::

        class NTPoint(NTBase):
            @staticmethod
            def buildType(extra=()):
                return Type([("x", "d"), ("y", "d"), *extra], id="my:Point:1.0")
    """

    type: Type

    @staticmethod
    def buildType(*args: Any, **kws: Any) -> Type:
        """Return the :class:`Type` this helper wraps into."""
        raise NotImplementedError("NT classes must provide buildType()")

    def __init__(self, *args: Any, **kws: Any) -> None:
        self.type = intern_type(self.buildType(*args, **kws))

    def wrap(self, *args: Any, **kws: Any) -> Value:
        """Build a :class:`Value` from a Python object (called by e.g. ``SharedPV.post()``).

        Subclasses take ``wrap(pyval, **kws)``; keywords are ``timestamp=``, ``severity=``,
        ``message=`` (see :meth:`_annotate`) plus their own.
        """
        raise NotImplementedError("NT classes must provide wrap()")

    def assign(self, V: Value, pyval: Any) -> None:
        """Update the existing Value ``V`` from a Python object (called by e.g. ``Context.put()``).

        The default replaces the whole content of ``V`` by ``self.wrap(pyval)``.  (p4p's
        default here is broken: it calls ``self.wrap(self.buildType(), pyval)``, which raises.)
        """
        V[None] = self.wrap(pyval)

    def unwrap(self, V: Value) -> Any:
        """Translate a :class:`Value` into a Python object (the reverse of ``wrap()``)."""
        raise NotImplementedError("NT classes must provide unwrap()")

    @staticmethod
    def _annotate(
        value: Value,
        timestamp: TimestampLike | None = None,
        severity: int | None = None,
        message: str | None = None,
    ) -> Value:
        """Store the optional alarm and time stamp of a ``wrap()`` call in ``value`` and return it.

        Only what is given is set (and so marked changed).  In particular no timestamp means
        ``timeStamp`` is left alone, exactly as p4p does: a server that wants "now" passes
        ``timestamp=time.time()``.
        """
        if severity is not None:
            value["alarm.severity"] = severity
        if message is not None:
            value["alarm.message"] = message
        if timestamp is not None:
            sec, ns = normalize_timestamp(timestamp)
            value["timeStamp"] = {"secondsPastEpoch": sec, "nanoseconds": ns}
        return value
