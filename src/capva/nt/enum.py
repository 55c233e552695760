"""NTEnum: an index into a list of choice strings (bi/bo/mbbi/mbbo records).

The helper is *stateful*: it remembers the last ``value.choices`` it saw (from ``wrap()`` or from an
``unwrap()`` of an update where the choices changed).  Monitor updates usually carry only the
index, and the cache lets ``unwrap()`` still name the choice and ``assign()`` accept a string::

    >>> E = NTEnum()
    >>> V = E.wrap(1, choices=['off', 'on'])
    >>> E.unwrap(V)
    ntenum(1, on)
    >>> E.assign(V, 'off'); V['value.index']
    0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..pva.types import intern_type
from .common import NTBase, PVValue, Type, Value, alarm, timeStamp
from .scalar import FieldSpec, _CreateBuild, _metaHelper, ntwrappercommon

__all__ = ["NTEnum", "ntenum"]


class ntenum(ntwrappercommon, int):
    """The index (an ``int``) with ``.choice`` (the choice string, or ``None`` if unknown) and the
    usual ``.severity``, ``.status``, ``.timestamp``, ``.raw_stamp``, ``.raw``.

    ``str()`` is the choice (or the index), ``repr()`` is ``ntenum(index, choice)``.
    """

    choice: str | None

    def _store(self, value: PVValue) -> ntenum:
        ntwrappercommon._store(self, value)
        self.choice = None
        return self

    def __str__(self) -> str:
        return self.choice or int.__str__(self)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({int(self):d}, {self.choice})"


class NTEnum(_CreateBuild, NTBase):
    """An enumeration: ``value`` is an ``enum_t {int index; string[] choices}``.

    :param extra: further ``(name, spec)`` fields appended at the end
    :param display: add a numeric ``display`` sub-structure (p4p's layout, with ``format``)
    :param control: add ``control``
    :param valueAlarm: add ``valueAlarm``

    ``NTEnum().create()`` is a fresh Value (aiopvxs style), ``.build()`` a
    :class:`capva.data.TypeDef`.
    """

    Value = Value

    @staticmethod
    def buildType(
        extra: Sequence[FieldSpec] = (),
        display: bool = False,
        control: bool = False,
        valueAlarm: bool = False,
    ) -> Type:
        """Build the ``epics:nt/NTEnum:1.0`` :class:`Type`."""
        F: list[FieldSpec] = [
            ("value", ("S", "enum_t", [("index", "i"), ("choices", "as")])),
            ("alarm", alarm),
            ("timeStamp", timeStamp),
        ]
        _metaHelper(F, "i", display=display, control=control, valueAlarm=valueAlarm)
        F.extend(extra)
        return Type(id="epics:nt/NTEnum:1.0", spec=F)

    def __init__(self, **kws: Any) -> None:
        self.type = intern_type(self.buildType(**kws))
        # the last choices seen, from wrap() or from unwrap() of an update that carried them
        self._choices: list[str] = []

    def wrap(self, value: Any, choices: Sequence[str] | None = None, **kws: Any) -> PVValue:
        """Pack a Python value into a new :class:`Value`.

        * a :class:`Value` is used as is, an augmented value gives back its ``.raw``;
        * a ``dict`` with ``index`` and/or ``choices`` keys fills the ``value`` sub-structure,
          any other ``dict`` initialises fields by name (``{'value.index': 1, 'alarm.status': 3}``);
        * an ``int`` is the index; a ``str`` is looked up in ``choices`` (or the cached choices),
          else parsed as an integer (``'0x2'`` works).

        Keywords as :meth:`NTScalar.wrap` (``timestamp=``, ``severity=``, ``message=``).
        """
        if isinstance(value, Value):
            pass
        elif isinstance(value, ntwrappercommon):
            kws.setdefault("timestamp", value.timestamp)
            value = value.raw
        elif isinstance(value, dict):
            if {"index", "choices"}.isdisjoint(value):
                value = self.Value(self.type, value)
            else:
                value = self.Value(self.type, {"value": value})
        else:
            V = self.type()
            if choices is not None:
                V["value.choices"] = choices
            self.assign(V, value)
            value = V

        self._choices = value["value.choices"] or self._choices
        return self._annotate(value, **kws)

    def unwrap(self, value: PVValue) -> ntenum:
        """Unpack a :class:`Value` into an :class:`ntenum`, naming the choice from the cache."""
        if value.changed("value.choices"):
            self._choices = value["value.choices"]

        idx = value["value.index"]
        ret = ntenum(idx)._store(value)
        # (p4p would name the last choice for a negative index; an invalid index has no name)
        if 0 <= idx < len(self._choices):
            ret.choice = self._choices[idx]
        return ret

    def assign(self, V: PVValue, py: Any) -> None:
        """Set ``V['value.index']`` from a choice string, an integer string or a number."""
        if isinstance(py, (bytes, str)):
            for i, C in enumerate(V["value.choices"] or self._choices):
                if py == C:
                    V["value.index"] = i
                    return
            py = int(py, 0)
        else:
            py = int(py)
        V["value.index"] = py
