"""pvRequest: the field selection and options a client sends with every operation INIT
(pva-protocol.md §9).

Text requests use p4p/pvxs grammar and produce exactly the structure p4p's
``Context.makeRequest`` builds (fields in order of appearance, options as strings, sorted)::

    >>> R = parse_request("field(value,alarm)record[queueSize=4,pipeline=true]")
    >>> R.todict()
    {'field': {'value': {}, 'alarm': {}}, 'record': {'_options': {'pipeline': 'true', 'queueSize': '4'}}}
    >>> request_options(R)['queueSize'], option_int(request_options(R), 'queueSize', 0)
    ('4', 4)

Servers turn a received request into a field mask for the PV's type with
:func:`request_mask` (pvxs ``request2mask`` rules) and read options with
:func:`request_options` plus the tolerant :func:`option_bool` / :func:`option_int`, because
option values arrive as strings from text parsers and typed from programmatic builders.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from .types import Type
from .value import Value

__all__ = [
    "RequestError",
    "parse_request",
    "build_request",
    "request_mask",
    "request_options",
    "option_bool",
    "option_int",
    "DEFAULT_REQUEST",
]


class RequestError(ValueError):
    """A pvRequest text that does not parse, or a request that selects no field."""


_TOKEN = re.compile(r"\s*(?:([\[\],()=])|([A-Za-z0-9_.]+))")


def _lex(s: str) -> list[tuple[str, str]]:
    out = []
    pos = 0
    n = len(s)
    while pos < n:
        if s[pos] == " ":
            pos += 1
            continue
        m = _TOKEN.match(s, pos)
        if m is None:
            raise RequestError(f"invalid character near: {s[pos:]!r}")
        if m.group(1):
            out.append((m.group(1), m.group(1)))
        else:
            w = m.group(2)
            out.append(({"field": "field", "record": "record"}.get(w, "name"), w))
        pos = m.end()
    return out


class _Tree:
    __slots__ = ("children",)

    def __init__(self) -> None:
        self.children: dict[str, _Tree] = {}

    def add(self, path: str) -> None:
        cur = self
        for part in path.split("."):
            if not part:
                continue
            cur = cur.children.setdefault(part, _Tree())

    def spec(self) -> list:
        return [(k, ("S", None, v.spec())) for k, v in self.children.items()]


def _parse(text: str) -> tuple[_Tree, dict[str, Any]]:
    fields = _Tree()
    options: dict[str, Any] = {}
    toks = _lex(text)
    i = 0
    n = len(toks)

    def expect(kind: str, what: str) -> None:
        nonlocal i
        if i >= n or toks[i][0] != kind:
            near = toks[i][1] if i < n else "end of request"
            raise RequestError(f"expected {what} near {near!r} in {text!r}")
        i += 1

    while i < n:
        kind, val = toks[i]
        if kind == "field":
            i += 1
            expect("(", "field(")
            while i < n and toks[i][0] in ("name", ","):
                if toks[i][0] == "name":
                    fields.add(toks[i][1])
                i += 1
            expect(")", "field(...)")
        elif kind == "record":
            i += 1
            expect("[", "record[")
            while i < n and toks[i][0] != "]":
                if toks[i][0] == ",":
                    i += 1
                    continue
                if (
                    i + 2 >= n + 0
                    or toks[i][0] != "name"
                    or toks[i + 1][0] != "="
                    or toks[i + 2][0] != "name"
                ):
                    raise RequestError(f"expected key=value in record[...] of {text!r}")
                options[toks[i][1]] = toks[i + 2][1]
                i += 3
            expect("]", "record[...]")
        elif kind == "name":
            fields.add(val)
            i += 1
        else:
            raise RequestError(f"expected field(...), record[...] or a name, not {val!r}, in {text!r}")
    return fields, options


def _opt_code(v: Any) -> str:
    if isinstance(v, bool):
        return "?"
    if isinstance(v, int):
        return "l"
    if isinstance(v, float):
        return "d"
    return "s"


def build_request(fields: Iterable[str] | None = None, options: Mapping[str, Any] | None = None) -> Value:
    """Programmatic pvRequest.  Options keep their Python type (bool/int/float/str), as
    pvxs's builder does; pass strings to mimic a text request."""
    tree = _Tree()
    for f in fields or ():
        tree.add(f)
    return _build(tree, dict(options or {}))


def _build(tree: _Tree, options: dict[str, Any]) -> Value:
    spec: list = [("field", ("S", None, tree.spec()))]
    if options:
        keys = sorted(options)
        spec.append(
            ("record", ("S", None, [("_options", ("S", None, [(k, _opt_code(options[k])) for k in keys]))]))
        )
    V = Value(Type(spec))
    for k, v in options.items():
        V["record._options." + k] = v
    return V


#: the request p4p and pvxs send when none is given: ``struct { struct {} field }``
DEFAULT_REQUEST = "field()"


def parse_request(request: str | Value | Mapping | None = None) -> Value:
    """p4p-compatible ``makeRequest``: text (or None for the default) -> pvRequest Value.
    A Value is returned as is; a dict ``{'field': [...], 'record': {...}}`` is also accepted."""
    if request is None:
        request = DEFAULT_REQUEST
    if isinstance(request, Value):
        return request
    if isinstance(request, Mapping):
        return build_request(request.get("field"), request.get("record"))
    if not isinstance(request, str):
        raise TypeError(f"pvRequest must be a str, Value or None, not {type(request).__name__}")
    tree, options = _parse(request)
    return _build(tree, options)


def _walk_options(V: Any) -> dict[str, Any]:
    if V is None or not isinstance(V, Value) or "record._options" not in V.type()._paths:
        return {}
    opts = V["record._options"]
    if not isinstance(opts, Value):
        return {}
    return {k: opts[k] for k in opts.keys() if not isinstance(opts[k], Value)}


def request_options(pvRequest: Value | None) -> dict[str, Any]:
    """``record._options`` as a flat dict (values as sent: strings or typed)."""
    return _walk_options(pvRequest)


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


def option_bool(opts: Mapping[str, Any], key: str, default: bool) -> bool:
    """Read a boolean option sent typed or as ``"true"``/``"false"``/``"1"``/``"0"``;
    an unparseable value gives ``default`` (pvxs warns and carries on)."""
    v = opts.get(key)
    if v is None:
        return default
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return bool(v)
    s = str(v).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    return default


def option_int(opts: Mapping[str, Any], key: str, default: int) -> int:
    """Read an integer option sent typed or as a decimal string; unparseable -> ``default``."""
    v = opts.get(key)
    if v is None or isinstance(v, bool):
        return default
    if isinstance(v, (int, float)):
        return int(v)
    try:
        return int(str(v).strip(), 0)
    except ValueError:
        return default


def request_mask(T: Type, pvRequest: Value | None) -> int:
    """Field mask (bit numbers of T, bit 0 = root) selected by a pvRequest (pvxs
    ``request2mask``): a missing or empty ``field`` selects everything; a named structure
    with no sub-selection selects its whole subtree; unknown names are ignored; a request
    that names fields but matches none raises :class:`RequestError`."""
    n = T._span[0]
    full = (1 << n) - 1
    if pvRequest is None or "field" not in pvRequest.type()._paths:
        return full
    ftype = pvRequest.type("field")
    if ftype.code != "S" or not ftype.members:
        return full
    mask = 1

    def walk(req: Type, prefix: str) -> None:
        nonlocal mask
        for name, sub in req.members:
            path = prefix + name
            idx = T._paths.get(path)
            if idx is None:
                continue
            if sub.code == "S" and sub.members and T._nodes[idx].code == "S":
                walk(sub, path + ".")
            else:
                mask |= ((1 << T._span[idx]) - 1) << idx

    walk(ftype, "")
    if mask == 1:
        raise RequestError("pvRequest must select at least one field")
    return mask
