"""NTScalar / NTScalarArray: one value (or one array) plus alarm, time stamp and optional meta-data.

``NTScalar('d').wrap(4.2)`` builds the Value a server posts; ``NTScalar.unwrap(V)`` gives the
client an *augmented* Python value: a real ``float`` (``int``, ``str``, ``numpy.ndarray``,
``list``) that also carries ``.severity``, ``.status``, ``.timestamp``, ``.raw_stamp`` and
``.raw``, so that ``get()`` results can be used directly in arithmetic and still be inspected::

    >>> v = NTScalar.unwrap(NTScalar('d').wrap(4.2, severity=1, timestamp=(10, 0)))
    >>> v + 1, v.severity, v.raw_stamp
    (5.2, 1, (10, 0))
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy

from ..pva.types import intern_type
from .common import NTBase, PVValue, Type, Value, alarm, timeStamp

__all__ = [
    "NTScalar",
    "ntwrappercommon",
    "ntfloat",
    "ntint",
    "ntbool",
    "ntstr",
    "ntnumericarray",
    "ntstringarray",
]

_W = TypeVar("_W", bound="ntwrappercommon")

#: A field spec as accepted by :class:`Type`: ``(name, code)`` or ``(name, ('S', id, [...]))``.
FieldSpec = tuple[str, Any]


_STORED = ("alarm.severity", "alarm.status", "timeStamp.secondsPastEpoch", "timeStamp.nanoseconds")


def _stamp_index(T: Type) -> tuple[int, ...] | None:
    """Where ``_store`` finds alarm severity/status and the time stamp in a Value of ``T``
    (-1: absent, read as 0); None when one of them is not an integer field (then it asks
    the Value, as any caller would)."""
    idx = T._cache.get("_ntstore", False)
    if idx is False:
        idx = []
        for path in _STORED:
            rel = T._paths.get(path)
            if rel is not None and T._nodes[rel].code not in _INT_CODES:
                idx = None
                break
            idx.append(-1 if rel is None else rel)
        idx = T._cache["_ntstore"] = None if idx is None else tuple(idx)
    return idx


_INT_CODES = frozenset("bBhHiIlL")


class ntwrappercommon:
    """Mixin of the augmented values returned by ``unwrap()``.

    Attributes (set by ``_store()``):

    * ``.severity`` - ``alarm.severity`` (0 when the Value has no alarm)
    * ``.status`` - ``alarm.status``
    * ``.timestamp`` - POSIX seconds as a float
    * ``.raw_stamp`` - ``(seconds, nanoseconds)``, exact
    * ``.raw`` - the complete underlying :class:`Value`

    ``str()`` prefixes the local time of the stamp, ``repr()`` is the plain value's.
    """

    raw: PVValue | None = None
    timestamp: float | None = None
    severity: int
    status: int
    raw_stamp: tuple[int, int]

    def _store(self: _W, value: PVValue) -> _W:
        if not isinstance(value, Value):
            raise TypeError(f"expected a Value, not {value!r}")
        self.raw = value
        idx = _stamp_index(value._T)
        if idx is None:
            sev, st = value.get("alarm.severity", 0), value.get("alarm.status", 0)
            S, NS = value.get("timeStamp.secondsPastEpoch", 0), value.get("timeStamp.nanoseconds", 0)
        else:  # (every unwrap of a get, a monitor update or a put: read the storage directly)
            vals, b = value._s.vals, value._b
            i, j, k, m = idx
            sev = vals[b + i] if i >= 0 else 0
            st = vals[b + j] if j >= 0 else 0
            S = vals[b + k] if k >= 0 else 0
            NS = vals[b + m] if m >= 0 else 0
        self.severity = sev
        self.status = st
        self.raw_stamp = S, NS
        self.timestamp = S + NS * 1e-9
        return self

    def __str__(self) -> str:
        return f"{time.ctime(self.timestamp)} {self.__repr__()}"

    tostr = __str__

    def as_dict(self) -> dict:
        """aiopvxs-style access to the whole structure behind the value (``.raw``), so
        code written for aiopvxs's client works on capva's unwrapped results too."""
        if self.raw is None:
            raise ValueError("no underlying Value")
        return self.raw.as_dict()


class ntfloat(ntwrappercommon, float):
    """A ``float`` carrying ``.severity``, ``.status``, ``.timestamp``, ``.raw_stamp``, ``.raw``."""


class ntint(ntwrappercommon, int):
    """An ``int`` carrying ``.severity``, ``.status``, ``.timestamp``, ``.raw_stamp``, ``.raw``."""


class ntbool(ntwrappercommon, int):
    """A boolean (an ``int`` 0/1, as ``bool`` can't be subclassed) carrying the NT attributes.

    ``repr()`` is ``true`` / ``false`` like p4p's.
    """

    def __new__(cls, value: object) -> ntbool:
        return int.__new__(cls, bool(value))

    def __repr__(self) -> str:
        return bool(self).__repr__().lower()


class ntstr(ntwrappercommon, str):
    """A ``str`` carrying ``.severity``, ``.status``, ``.timestamp``, ``.raw_stamp``, ``.raw``."""


class ntnumericarray(ntwrappercommon, numpy.ndarray):
    """A 1-d ``numpy.ndarray`` carrying the NT attributes.

    It shares memory with the array inside ``.raw`` (no copy on unwrap).
    """

    @classmethod
    def build(klass, val: numpy.ndarray) -> ntnumericarray:
        if len(val.shape) != 1:
            raise ValueError(f"NTScalarArray value must be 1-d, not shape {val.shape!r}")
        return klass(shape=val.shape, dtype=val.dtype, buffer=val.data, strides=val.strides)


class ntstringarray(ntwrappercommon, list):
    """A ``list`` of ``str`` carrying the NT attributes."""


#: element type code -> numpy dtype, for the empty arrays that Values report as None
_CODE2DTYPE = {
    "?": numpy.bool_,
    "b": numpy.int8,
    "B": numpy.uint8,
    "h": numpy.int16,
    "H": numpy.uint16,
    "i": numpy.int32,
    "I": numpy.uint32,
    "l": numpy.int64,
    "L": numpy.uint64,
    "f": numpy.float32,
    "d": numpy.float64,
}


def _empty_array(value: PVValue) -> numpy.ndarray | None:
    """An empty array of the dtype of ``value.value`` if that is a numeric array field, else None."""
    try:
        code = value.type()["value"]
    except (KeyError, TypeError, ValueError):
        return None
    if isinstance(code, str) and code[:1] == "a" and code[1:] in _CODE2DTYPE:
        return numpy.zeros(0, dtype=_CODE2DTYPE[code[1:]])
    return None


def _metaHelper(
    F: list[FieldSpec],
    valtype: str,
    display: bool = False,
    control: bool = False,
    valueAlarm: bool = False,
    form: bool = False,
) -> None:
    """Append the optional ``display`` / ``control`` / ``valueAlarm`` sub-structures to ``F``.

    The layouts are p4p's (pva-protocol.md §8.1): limits have the value's element type,
    ``form=True`` swaps the deprecated ``display.format`` string for ``precision`` + ``form``
    (an ``enum_t``), and non-numeric values (bool, string, union) only get
    ``display {description, units}``.
    """
    code = valtype[-1:]
    isnumeric = code not in "?su"
    if display and isnumeric:
        if form:
            fields: list[FieldSpec] = [
                ("limitLow", code),
                ("limitHigh", code),
                ("description", "s"),
                ("precision", "i"),
                ("form", ("S", "enum_t", [("index", "i"), ("choices", "as")])),
                ("units", "s"),
            ]
        else:
            fields = [
                ("limitLow", code),
                ("limitHigh", code),
                ("description", "s"),
                ("format", "s"),
                ("units", "s"),
            ]
        F.append(("display", ("S", None, fields)))
    elif display:
        F.append(("display", ("S", None, [("description", "s"), ("units", "s")])))
    if control and isnumeric:
        F.append(("control", ("S", None, [("limitLow", code), ("limitHigh", code), ("minStep", code)])))
    if valueAlarm and isnumeric:
        F.append(
            (
                "valueAlarm",
                (
                    "S",
                    None,
                    [
                        ("active", "?"),
                        ("lowAlarmLimit", code),
                        ("lowWarningLimit", code),
                        ("highWarningLimit", code),
                        ("highAlarmLimit", code),
                        ("lowAlarmSeverity", "i"),
                        ("lowWarningSeverity", "i"),
                        ("highWarningSeverity", "i"),
                        ("highAlarmSeverity", "i"),
                        ("hysteresis", "d"),
                    ],
                ),
            )
        )


def _plain_code(valtype: Any) -> Any:
    """A :class:`capva.data.TypeCode` (or any str-valued enum) as its p4p code string."""
    return valtype.value if isinstance(valtype, enum.Enum) else valtype


class _CreateBuild:
    """aiopvxs / pvxs spellings on NT helpers: ``NTScalar(T.Int32A).create()`` / ``.build()``."""

    type: Type

    def create(self) -> PVValue:
        """A new Value of this NT: every field at its default, none marked (pvxs ``create()``)."""
        return Value(self.type)

    def build(self) -> Any:
        """The type as a :class:`capva.data.TypeDef` (pvxs ``build()``); ``.type`` is the
        capva Type.  Usable as ``capva.server.SharedPV(nt=..., initial={...})``."""
        from ..data import TypeDef

        return TypeDef(self.type)


class NTScalar(_CreateBuild, NTBase):
    """A single scalar or a 1-d array of scalars, with alarm, time stamp and optional meta-data.

    The Type id is ``epics:nt/NTScalar:1.0``, or ``epics:nt/NTScalarArray:1.0`` when ``valtype``
    is an array code (``'ad'``, ``'as'``...)::

        >>> V = NTScalar('d', display=True).wrap(4.2, timestamp=time.time())
        >>> V['display.units'] = 'mm'
        >>> A = NTScalar.buildType('ai')                     # a Type, for Value(A, {...})
        >>> NTScalar.unwrap(NTScalar('as').wrap(['a', 'b']))  # an ntstringarray
        ['a', 'b']

    :param valtype: type code of ``value`` (``'d'``, ``'i'``, ``'s'``, ``'?'``, ``'ad'``...),
        or a :class:`capva.data.TypeCode` (``NTScalar(T.Int32A).create()``, aiopvxs style)
    :param extra: further ``(name, spec)`` fields appended at the end
    :param display: add ``display`` (limits, description, format, units)
    :param control: add ``control`` (limits, minStep); numeric values only
    :param valueAlarm: add ``valueAlarm`` (alarm/warning limits and severities); numeric only
    :param form: with ``display``, use ``precision`` + ``form`` instead of ``format``
    """

    Value = Value

    @staticmethod
    def buildType(
        valtype: str,
        extra: Sequence[FieldSpec] = (),
        display: bool = False,
        control: bool = False,
        valueAlarm: bool = False,
        form: bool = False,
    ) -> Type:
        """Build the :class:`Type` (see the class docstring for the parameters)."""
        valtype = _plain_code(valtype)
        isarray = valtype[:1] == "a"
        F: list[FieldSpec] = [
            ("value", valtype),
            ("alarm", alarm),
            ("timeStamp", timeStamp),
        ]
        _metaHelper(F, valtype, display=display, control=control, valueAlarm=valueAlarm, form=form)
        F.extend(extra)
        return Type(id="epics:nt/NTScalarArray:1.0" if isarray else "epics:nt/NTScalar:1.0", spec=F)

    def __init__(self, valtype: str = "d", **kws: Any) -> None:
        self.type = intern_type(self.buildType(valtype, **kws))

    def wrap(self, value: Any, **kws: Any) -> PVValue:
        """Pack a Python value into a new :class:`Value` of ``self.type``.

        * a :class:`Value` is used as is (only annotated);
        * an augmented value from ``unwrap()`` gives back its ``.raw``, keeping its time stamp
          unless ``timestamp=`` is given;
        * a ``dict`` initialises fields by name (``{'value': 1, 'display.units': 'V'}``);
        * anything else is assigned to ``value``.

        Keywords: ``timestamp=`` (datetime, POSIX seconds or ``(sec, ns)``), ``severity=``,
        ``message=``.  Without ``timestamp=`` the stamp stays 0, as in p4p.
        """
        if isinstance(value, Value):
            pass
        elif isinstance(value, ntwrappercommon):
            kws.setdefault("timestamp", value.timestamp)
            value = value.raw
        elif isinstance(value, dict):
            value = self.Value(self.type, value)
        else:
            value = self.Value(self.type, {"value": value})
        return self._annotate(value, **kws)

    #: Python type of ``Value.value`` -> constructor of the augmented type.
    typeMap: dict[type, Callable[[Any], ntwrappercommon]] = {
        bool: ntbool,
        int: ntint,
        float: ntfloat,
        str: ntstr,
        numpy.ndarray: ntnumericarray.build,
        list: ntstringarray,
    }

    @classmethod
    def unwrap(klass, value: PVValue) -> Any:
        """Unpack a :class:`Value` into an augmented Python value chosen by the type of ``value``.

        Raises :class:`ValueError` when the ``value`` field has no augmented type (e.g. a struct).
        """
        if not isinstance(value, Value):
            raise TypeError(f"NTScalar.unwrap() expects a Value, not {value!r}")
        V = value.value
        if V is None:
            # an empty numeric array reads back as None (p4p's unwrap then raises ValueError,
            # so a get() of an empty waveform fails there); give an empty array of the right dtype
            V = _empty_array(value)
        try:
            T = klass.typeMap[type(V)]
        except KeyError:
            raise ValueError(f"Can't unwrap value of type {type(V)}") from None
        try:
            return T(V)._store(value)
        except Exception as e:
            raise ValueError(f"Can't construct {T} around {value} ({type(value)}): {e}") from e

    def assign(self, V: PVValue, py: Any) -> None:
        """Store a Python value in ``V.value`` (a client ``put()``)."""
        V.value = py
