"""Rules shared by the thread and asyncio Contexts: how a put value becomes a builder, how
results are unwrapped (p4p's ``nt=`` / ``unwrap=``), and the pvRequest of process=/wait=."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from ..nt.unwrapper import ClientUnwrapper, buildNT
from ..pva.pvrequest import parse_request
from ..pva.value import Value


def nt_map(nt: Any, unwrap: Any) -> dict | None:
    """p4p's rule: nt=None -> the default NT helpers, nt=False -> no unwrapping, a dict ->
    added to the defaults; ``unwrap=`` (legacy {id: fn}) -> only those functions."""
    m = buildNT(nt, unwrap).nt
    return dict(m) if m else None


class Unwrappers:
    """One stateful ClientUnwrapper per PV name (NTEnum caches its choices per channel)."""

    def __init__(self, ntmap: dict | None):
        self.ntmap = ntmap
        self._by_name: dict[str, ClientUnwrapper] = {}

    def get(self, name: str) -> ClientUnwrapper | None:
        if self.ntmap is None:
            return None
        u = self._by_name.get(name)
        if u is None:
            u = self._by_name[name] = ClientUnwrapper(self.ntmap)
        return u

    def unwrap(self, name: str, V: Any) -> Any:
        u = self.get(name)
        if u is None or not isinstance(V, Value):
            return V
        return u.unwrap(V)


def make_builder(value: Any, unwrapper: ClientUnwrapper | None) -> Callable[[Value], Any]:
    """How p4p turns a put argument into changes to the PV's current Value."""
    if isinstance(value, (bytes, str)) and value[:1] in ("{", b"{"):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError(f"Unable to interpret {value!r} as json") from None
    if callable(value) and not isinstance(value, Value):
        return value
    if isinstance(value, Value):

        def from_value(V: Value) -> None:
            V[None] = value

        return from_value
    if isinstance(value, Mapping):

        def from_dict(V: Value) -> None:
            for k, v in value.items():
                V[k] = v

        return from_dict

    def assign(V: Value) -> None:
        if unwrapper is not None:
            unwrapper.assign(V, value)
        else:
            V.value = value

    return assign


def put_request(request: Any, process: str | None, wait: bool | None) -> Any:
    if request and (process or wait is not None):
        raise ValueError("request= is mutually exclusive to process= or wait=")
    if process or wait is not None:
        return f"field()record[block={'true' if wait else 'false'},process={process or 'passive'}]"
    return request


def request_value(request: Any) -> Value:
    return parse_request(request)


def monitor_options(request: Value) -> tuple[bool, int]:
    from ..pva.pvrequest import option_bool, option_int, request_options

    opts = request_options(request)
    return option_bool(opts, "pipeline", False), max(2, option_int(opts, "queueSize", 4))
