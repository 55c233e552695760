"""NTURI: the argument structure of a PVA RPC call (``epics:nt/NTURI:1.0``).

The caller names the channel in ``path`` and puts the arguments, typed, in ``query``.  Only the
arguments actually given are sent, so the Type is built per call::

    >>> U = NTURI([('a', 'd'), ('b', 'd')])
    >>> V = U.wrap('TST:rpc', (1.0, 2.0))
    >>> V.query.a, V.query.b
    (1.0, 2.0)
    >>> list(U.wrap('TST:rpc', kws={'b': 5.0}).query.keys())
    ['b']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..pva.types import intern_type
from .common import Type, Value
from .scalar import FieldSpec

__all__ = ["NTURI"]


class NTURI:
    """Builds NTURI Values for the declared ``(name, type code)`` arguments, in declared order.

    (Like p4p's, this is not an :class:`NTBase`: there is no unwrap.)
    """

    @staticmethod
    def buildType(args: Sequence[FieldSpec]) -> Type:
        """Build the NTURI :class:`Type` whose ``query`` holds exactly ``args``."""
        try:
            return Type(
                id="epics:nt/NTURI:1.0",
                spec=[
                    ("scheme", "s"),
                    ("authority", "s"),
                    ("path", "s"),
                    ("query", ("S", None, list(args))),
                ],
            )
        except Exception as e:
            raise ValueError(f"Unable to build NTURI compatible type from {args}") from e

    def __init__(self, args: Sequence[FieldSpec]) -> None:
        self._args = list(args)
        self.type = intern_type(self.buildType(args))

    def wrap(
        self,
        path: str,
        args: Sequence[Any] = (),
        kws: Mapping[str, Any] | None = None,
        scheme: str = "",
        authority: str = "",
    ) -> Value:
        """Build the Value for a call of ``path`` with positional ``args`` and keyword ``kws``.

        Positional arguments fill the declared arguments in order and win over ``kws``; keyword
        arguments that are ``None`` are left out.  ``query`` holds the given arguments only,
        in declared order.  An undeclared keyword is a :class:`ValueError`.
        """
        AV: dict[str, Any] = {}
        AV.update([A for A in (kws or {}).items() if A[1] is not None])
        AV.update([(N, V) for (N, _T), V in zip(self._args, args)])

        AT = [A for A in self._args if A[0] in AV]

        T = self.buildType(AT)
        try:
            return Value(T, {"scheme": scheme, "authority": authority, "path": path, "query": AV})
        except Exception as e:
            raise ValueError(f"Unable to initialize NTURI {AT} from {AV} using {self._args}") from e
