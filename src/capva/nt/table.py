"""NTTable: named columns of equal length, each an array of one scalar type.

On the wire a table is stored by column (``value.<col>`` arrays).  Python code usually thinks in
rows, so ``wrap()`` takes a list of row dicts and ``unwrap()`` returns one ``OrderedDict`` per row::

    >>> T = NTTable([('A', 'i'), ('B', 's')])
    >>> V = T.wrap([{'A': 1, 'B': 'one'}, {'A': 2, 'B': 'two'}])
    >>> V.value.A, V.value.B, V.labels
    (array([1, 2], dtype=int32), ['one', 'two'], ['A', 'B'])
    >>> rows = NTTable.unwrap(V)
    >>> list(rows[1].items())          # numeric cells are numpy scalars, as in p4p
    [('A', np.int32(2)), ('B', 'two')]

``wrap()`` also takes the columns directly, as a mapping ``{'A': [1, 2], 'B': ['one', 'two']}``
(p4p raises ``TypeError`` for that input).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..pva.types import intern_type
from .common import NTBase, PVValue, Type, Value, alarm, timeStamp
from .scalar import FieldSpec

__all__ = ["NTTable"]


class NTTable(NTBase):
    """A table helper for the given ``(name, scalar type code)`` columns.

    Column codes are scalar (``'i'``, not ``'ai'``); each column is stored as an array of it.
    ``labels`` holds the column names in order.

    :param columns: ``[(name, code), ...]``
    :param extra: further ``(name, spec)`` fields appended at the end
    """

    Value = Value

    @staticmethod
    def buildType(columns: Sequence[FieldSpec] = (), extra: Sequence[FieldSpec] = ()) -> Type:
        """Build an ``epics:nt/NTTable:1.0`` :class:`Type` from *array* column specs.

        Unlike the constructor, this takes the column types as stored: ``[('A', 'ai')]``.
        """
        return Type(
            id="epics:nt/NTTable:1.0",
            spec=[
                ("labels", "as"),
                ("value", ("S", None, list(columns))),
                ("descriptor", "s"),
                ("alarm", alarm),
                ("timeStamp", timeStamp),
                *extra,
            ],
        )

    def __init__(self, columns: Sequence[FieldSpec] = (), extra: Sequence[FieldSpec] = ()) -> None:
        self.labels: list[str] = []
        C: list[FieldSpec] = []
        for col, code in columns:
            if code[0] == "a":
                raise ValueError("NTTable column types may not be array")
            C.append((col, "a" + code))
            self.labels.append(col)
        self.type = intern_type(self.buildType(C, extra=extra))

    def wrap(self, values: Iterable[Any] | Mapping[str, Any] | PVValue, **kws: Any) -> PVValue:
        """Pack rows (an iterable of dicts) or columns (a mapping of sequences) into a Value.

        A column absent from every row (or from the mapping) is left out (not marked).
        Keywords: ``timestamp=``, ``severity=``, ``message=``.  A :class:`Value` is returned
        annotated with them (p4p returns it untouched and silently drops the keywords).
        """
        if isinstance(values, Value):
            return self._annotate(values, **kws)
        cols: dict[str, Any]
        if isinstance(values, Mapping):
            unknown = set(values) - set(self.labels)
            if unknown:
                raise KeyError(f"NTTable has no column(s) {sorted(unknown)}; columns are {self.labels}")
            cols = {L: values[L] for L in self.labels if L in values}
        else:
            rows: dict[str, list[Any]] = {L: [] for L in self.labels}
            row: Any
            for row in values:
                for L in self.labels:
                    try:
                        rows[L].append(row[L])
                    except (IndexError, KeyError):
                        pass
            # allow omitted (empty) columns
            cols = {L: V for L, V in rows.items() if len(V)}
        value = self.Value(self.type, {"labels": self.labels, "value": cols})
        return self._annotate(value, **kws)

    @staticmethod
    def unwrap(value: PVValue) -> list[OrderedDict[str, Any]]:
        """Turn the columns of an NTTable Value into a list of rows (``OrderedDict`` per row).

        Rows stop at the shortest column.
        """
        lbl: list[str] = []
        cols: list[Any] = []
        for cname, cval in value.value.items():
            lbl.append(cname)
            cols.append(cval)
        return [OrderedDict(zip(lbl, rval)) for rval in zip(*cols)]
