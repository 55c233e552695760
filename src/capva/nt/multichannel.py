"""NTMultiChannel: the values of several channels side by side (``epics:nt/NTMultiChannel:1.0``).

Only the Type is provided (as in p4p)::

    >>> T = NTMultiChannel.buildType('av')          # value is a variant[] : one per channel
    >>> V = T({'channelName': ['a', 'b'], 'isConnected': [True, False]})
"""

from __future__ import annotations

from collections.abc import Sequence

from .common import NTBase, Type, Value, alarm, timeStamp
from .scalar import FieldSpec

__all__ = ["NTMultiChannel"]


class NTMultiChannel(NTBase):
    """Describes a structure holding the equivalent of a number of NTScalar."""

    Value = Value

    @staticmethod
    def buildType(valtype: str, extra: Sequence[FieldSpec] = ()) -> Type:
        """Build the :class:`Type`; ``valtype`` must be an array code (``'av'``, ``'ad'``...).

        Raises :class:`ValueError` otherwise (p4p uses ``assert``, an ``AssertionError``).
        """
        if valtype[:1] != "a":
            raise ValueError(f"NTMultiChannel valtype must be an array, not {valtype!r}")
        return Type(
            id="epics:nt/NTMultiChannel:1.0",
            spec=[
                ("value", valtype),
                ("channelName", "as"),
                ("descriptor", "s"),
                ("alarm", alarm),
                ("timeStamp", timeStamp),
                ("severity", "ai"),
                ("status", "ai"),
                ("message", "as"),
                ("secondsPastEpoch", "al"),
                ("nanoseconds", "ai"),
                ("userTag", "ai"),
                ("isConnected", "a?"),
                *extra,
            ],
        )
