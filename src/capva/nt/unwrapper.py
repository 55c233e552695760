"""Client-side choice of the NT helper for each received Value, by its Type id.

A client ``Context`` keeps one :class:`ClientUnwrapper` per channel: ``unwrap()`` looks at the
Value's id (``epics:nt/NTScalar:1.0``...) and uses that helper's ``unwrap``/``assign``/``wrap``,
re-choosing only when the id changes.  Unknown ids pass through untouched::

    >>> U = buildNT()                               # the defaultNT() helpers
    >>> U.unwrap(NTScalar('d').wrap(1.5))           # -> ntfloat
    1.5
    >>> raw = buildNT(nt=False)                     # no unwrapping at all (``nt=False`` in p4p)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .common import Value
from .enum import NTEnum
from .ndarray import NTNDArray
from .scalar import NTScalar

__all__ = ["ClientUnwrapper", "UnwrapOnly", "buildNT", "defaultNT"]

_default_nt: dict[str, Callable[[], Any]] = {
    "epics:nt/NTScalar:1.0": NTScalar,
    "epics:nt/NTScalarArray:1.0": NTScalar,
    "epics:nt/NTEnum:1.0": NTEnum,
    "epics:nt/NTNDArray:1.0": NTNDArray,
}


def defaultNT() -> dict[str, Callable[[], Any]]:
    """Return a copy of the default ``{type id: helper class}`` mapping.

    Clients accept ``nt=`` to extend or replace it, e.g. ``{**defaultNT(), 'my:id:1.0': MyNT}``.
    """
    return _default_nt.copy()


def _identity(x: Any, **kws: Any) -> Any:
    return x


class UnwrapOnly:
    """Adapts a legacy ``unwrap={id: function}`` entry to the helper interface."""

    def __init__(self, unwrap: Callable[[Value], Any]) -> None:
        self.unwrap = unwrap

    def __call__(self) -> UnwrapOnly:
        return self  # stateless: one instance serves every channel

    def wrap(self, V: Any) -> Any:
        return V

    def assign(self, V: Value, value: Any) -> None:
        # (missing in p4p, where choosing an UnwrapOnly then fails on put)
        V.value = value


def buildNT(
    nt: Mapping[str, Callable[[], Any]] | bool | None = None,
    unwrap: Mapping[str, Callable[[Value], Any]] | bool | None = None,
) -> ClientUnwrapper:
    """Build the :class:`ClientUnwrapper` for a client's ``nt=`` / legacy ``unwrap=`` arguments.

    ``nt=False`` or ``unwrap=False`` disables unwrapping; ``unwrap={id: fn}`` (legacy) uses only
    those functions; otherwise ``nt`` entries are added to (and override) :func:`defaultNT`.
    """
    if unwrap is False or nt is False:
        return ClientUnwrapper({})

    ret: dict[str, Callable[[], Any]]
    if unwrap is not None and unwrap is not True:
        ret = {ID: UnwrapOnly(fn) for ID, fn in unwrap.items()}
    else:
        ret = dict(_default_nt)
        if nt is not None and nt is not True:
            ret.update(nt)
    return ClientUnwrapper(ret)


class ClientUnwrapper:
    """Per-channel dispatcher to the NT helper matching the id of the Values seen.

    A helper is instantiated (``nt[id]()``) each time the id changes, so stateful helpers like
    :class:`NTEnum` keep their choice cache per channel.  (Unlike p4p, an unknown id is
    remembered too, so that a later change back to a known id picks its helper again.)
    """

    def __init__(self, nt: Mapping[str, Callable[[], Any]] | None = None) -> None:
        self.nt = nt
        self.id: str | None = None
        self._wrap: Callable[..., Any] = _identity
        self._unwrap: Callable[[Value], Any] = _identity
        self._assign: Callable[[Value, Any], None] = self._default_assign

    def wrap(self, val: Any, **kws: Any) -> Any:
        """Pack an arbitrary Python object into a Value (identity until a known id was seen)."""
        return self._wrap(val, **kws)

    def unwrap(self, val: Value) -> Any:
        """Unpack a Value as the matching helper's Python type (or return it unchanged)."""
        if val.getID() != self.id:
            self._update(val)
        return self._unwrap(val)

    def assign(self, V: Value, value: Any) -> None:
        """Update ``V`` from a Python object the way the matching helper does."""
        if V.getID() != self.id:
            self._update(V)
        self._assign(V, value)

    def _update(self, val: Value) -> None:
        ID = val.getID()
        factory = (self.nt or {}).get(ID)
        if factory is not None:
            helper = factory()
            self._wrap, self._unwrap = helper.wrap, helper.unwrap
            self._assign = helper.assign
        else:
            self._wrap = self._unwrap = _identity
            self._assign = self._default_assign
        self.id = ID

    def _default_assign(self, V: Value, value: Any) -> None:
        V.value = value  # assume NTScalar-like

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.nt!r})"

    __str__ = __repr__
