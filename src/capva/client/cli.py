"""Command line PVAccess client: ``capva get|put|monitor|info|call``.

Usage (``python -m capva.client.cli``, ``python -m capva`` and the ``capva`` console script are
the same program)::

    capva get TST:dbl TST:enum            # TST:dbl 2023-11-14 22:13:20.250  2.5
    capva put TST:dbl=3.5                 # or: capva put TST:dbl 3.5
    capva put TST:enum bb                 # enum choice by name (or index)
    capva put TST:rec value=1 alarm.severity=2
    capva monitor TST:dbl --count 3
    capva info TST:dbl                    # the Type, as a pvxs-style tree
    capva call TST:rpc a=1 b=hello        # RPC with NTURI string arguments (alias: rpc)

Options (accepted before or after the sub-command): ``-w/--timeout SECONDS`` (default 5; for
``monitor`` only when given: the total run time), ``-r/--request REQ`` (pvRequest),
``--json`` (one JSON object per PV or update), ``--raw`` (the whole structure, ``str(Value)``),
``--count N`` (``monitor``: exit after N updates of every PV), ``-p/--provider``, ``-v``
(tracebacks and log messages; ``-vv`` debug).

Output follows pvxs/pvAccessCPP: ``NAME <timestamp>  <value>`` for structures with a scalar,
array or enum ``value`` field (NTScalar, NTScalarArray, NTEnum), alarm severity appended when
not ``NO_ALARM``; other structures print the name and then the pvxs-style tree.  Timestamps are
local time; a zero timestamp prints ``<undefined>``.

Exit status: 0 on success (``monitor``: also on Ctrl+C), 1 when a PV failed (one line per PV on
stderr, ``NAME: cause``), 2 on a usage error.

The client is :class:`capva.client.thread.Context`, configured from ``EPICS_PVA_*``.  The
environment variable ``CAPVA_CLI_BACKEND=p4p`` makes the CLI use p4p's Context instead (for
comparing behaviour; see :func:`load_backend`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import queue
import re
import sys
import time
import types
from collections.abc import Callable, Sequence
from typing import Any

from ..pva.types import CNAMES

__all__ = ["main", "load_backend", "BACKEND_ENV", "UsageError"]

_log = logging.getLogger(__name__)

#: environment variable choosing the client implementation: ``capva`` (default) or ``p4p``
BACKEND_ENV = "CAPVA_CLI_BACKEND"

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_SEVERITY = {0: "NO_ALARM", 1: "MINOR", 2: "MAJOR", 3: "INVALID"}
_STATUS = {0: "NONE", 1: "DEVICE", 2: "DRIVER", 3: "RECORD", 4: "DB", 5: "CONF", 6: "UNDEFINED", 7: "CLIENT"}
_TYPE_NAMES = CNAMES  # p4p code -> pvxs C type name
_INT_CODES = frozenset("bBhHiIlL")
_FIELD_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class UsageError(Exception):
    """Bad command line (exit status 2)."""


# --------------------------------------------------------------------------- backend


def load_backend(name: str | None = None) -> types.SimpleNamespace:
    """The client implementation: ``Context``, the exception classes and ``NTURI``.

    ``name`` (default ``$CAPVA_CLI_BACKEND``, else ``capva``) is ``capva`` or ``p4p``.  Both have
    the same API (``capva.client.thread.Context`` copies ``p4p.client.thread.Context``).
    """
    name = (name or os.environ.get(BACKEND_ENV, "") or "capva").strip()
    if name == "p4p":
        from p4p.client import thread
        from p4p.nt import NTURI
    elif name == "capva":
        from capva.client import thread  # type: ignore[attr-defined,no-redef]
        from capva.nt import NTURI  # type: ignore[no-redef]
    else:
        raise UsageError(f"${BACKEND_ENV}={name!r}: expected 'capva' or 'p4p'")
    return types.SimpleNamespace(
        name=name,
        Context=thread.Context,
        RemoteError=thread.RemoteError,
        Disconnected=thread.Disconnected,
        Finished=thread.Finished,
        Cancelled=thread.Cancelled,
        NTURI=NTURI,
    )


def describe_error(err: BaseException, timeout: float | None, backend: types.SimpleNamespace) -> str:
    """The cause part of an error line (``NAME: <cause>``)."""
    if isinstance(err, TimeoutError):
        return f"timeout after {timeout} s" if timeout is not None else "timeout"
    if isinstance(err, backend.RemoteError):
        return f"remote error: {err}"
    if isinstance(err, backend.Finished):
        return "finished (the server ended the operation)"
    if isinstance(err, backend.Disconnected):
        return "disconnected"
    if isinstance(err, backend.Cancelled):
        return "cancelled"
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


# --------------------------------------------------------------------------- formatting


def _is_struct_type(T: Any) -> bool:
    return not isinstance(T, str)


def _field_type(V: Any, path: str) -> Any:
    """The Type (sub-structure) or type code string of field ``path`` of Value ``V``."""
    T: Any = V.type()
    for part in path.split("."):
        if isinstance(T, str) or not T.has(part):
            raise KeyError(path)
        T = T[part]
    return T


def _is_enum_type(T: Any) -> bool:
    if isinstance(T, str):
        return False
    try:
        return T.has("index") and T.has("choices")
    except Exception:
        return False


def _scalar_like(V: Any) -> str | None:
    """``"scalar"``, ``"enum"`` or None: how :func:`summarize` treats Value ``V``."""
    try:
        if not V.type().has("value"):
            return None
        T = V.type()["value"]
    except Exception:
        return None
    if isinstance(T, str):
        return None if T in ("v", "av") else "scalar"
    return "enum" if _is_enum_type(T) else None


def _timestamp(V: Any) -> float | None:
    """POSIX seconds of ``V.timeStamp``, None when absent or zero."""
    try:
        if not V.type().has("timeStamp"):
            return None
        sec = int(V["timeStamp.secondsPastEpoch"])
        ns = int(V["timeStamp.nanoseconds"])
    except Exception:
        return None
    if sec == 0 and ns == 0:
        return None
    return sec + ns * 1e-9


def format_timestamp(V: Any) -> str:
    """``YYYY-mm-dd HH:MM:SS.mmm`` (local time) of ``V.timeStamp``, or ``<undefined>``."""
    try:
        if not V.type().has("timeStamp"):
            return "<undefined>"
        sec = int(V["timeStamp.secondsPastEpoch"])
        ns = int(V["timeStamp.nanoseconds"])
    except Exception:
        return "<undefined>"
    if sec == 0 and ns == 0:
        return "<undefined>"
    try:
        base = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(sec))
    except (OverflowError, OSError, ValueError):
        return f"<{sec}.{ns:09d}>"
    return f"{base}.{ns // 1_000_000:03d}"


def format_scalar(x: Any, quote: bool = False) -> str:
    """One scalar: floats in shortest round-trip form, bools ``true``/``false``, strings raw
    (or JSON-quoted when ``quote``, as inside arrays)."""
    if isinstance(x, bytes):
        x = x.decode("utf-8", "replace")
    if isinstance(x, str):
        return json.dumps(x, ensure_ascii=False) if quote else x
    if isinstance(x, bool) or type(x).__name__ == "bool_":
        return "true" if x else "false"
    if hasattr(x, "dtype") and getattr(x, "shape", None) == ():
        x = x.item()
    if isinstance(x, float):
        return repr(x)
    return str(x)


def format_plain(x: Any) -> str:
    """A field value: scalars as :func:`format_scalar`, arrays as ``[1, 2, 3]``."""
    if x is None:
        return "[]"
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        x = x.tolist()
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(format_scalar(e, quote=True) for e in x) + "]"
    return format_scalar(x)


def to_jsonable(x: Any) -> Any:
    """``x`` (Value, numpy array or scalar, containers) as JSON-serialisable Python data.
    Non-finite floats become the strings ``"nan"``, ``"inf"``, ``"-inf"``."""
    if x is None or isinstance(x, (bool, int, str)):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else str(x)
    if isinstance(x, bytes):
        return x.decode("utf-8", "replace")
    if hasattr(x, "todict") and hasattr(x, "type"):  # a Value
        return to_jsonable(x.todict())
    if hasattr(x, "tolist"):  # numpy arrays and scalars
        return to_jsonable(x.tolist())
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(e) for e in x]
    return str(x)


def summarize(V: Any) -> dict[str, Any] | None:
    """The NT-style summary of a scalar-like Value (see :func:`_scalar_like`), else None.

    Keys: ``value`` (Python data; an enum gives the choice name), ``text`` (display form),
    ``timestamp`` (POSIX seconds or None), ``severity``, ``status``, ``message``, and for enums
    ``index`` and ``choices``.
    """
    kind = _scalar_like(V)
    if kind is None:
        return None
    out: dict[str, Any] = {}
    if kind == "enum":
        index = int(V["value.index"])
        choices = list(V["value.choices"] or [])
        choice = choices[index] if 0 <= index < len(choices) else None
        out["value"] = choice if choice is not None else index
        out["text"] = choice if choice is not None else f"<{index}>"
        out["index"] = index
        out["choices"] = choices
    else:
        raw = V["value"]
        out["value"] = raw
        out["text"] = format_plain(raw)
    out["timestamp"] = _timestamp(V)
    sev = stat = 0
    msg = ""
    if V.type().has("alarm"):
        try:
            sev = int(V["alarm.severity"])
            stat = int(V["alarm.status"])
            msg = str(V["alarm.message"]) if V.type()["alarm"].has("message") else ""
        except Exception:
            pass
    out.update(severity=sev, status=stat, message=msg)
    return out


def _alarm_suffix(s: dict[str, Any]) -> str:
    if not s["severity"] and not s["message"]:
        return ""
    parts = [_SEVERITY.get(s["severity"], str(s["severity"])), _STATUS.get(s["status"], str(s["status"]))]
    if s["message"]:
        parts.append(s["message"])
    return "  " + " ".join(parts)


def format_text(name: str | None, V: Any, raw: bool = False) -> str:
    """The text output for one Value (no trailing newline).

    Scalar-like: ``NAME <timestamp>  <value>[  SEVERITY STATUS message]`` (without ``NAME`` when
    ``name`` is None, e.g. RPC results: then the timestamp is left out too when undefined).
    Otherwise, or with ``raw``: ``NAME`` on a line of its own, then ``str(V)``.
    """
    s = None if raw else summarize(V)
    if s is None:
        tree = str(V).rstrip("\n")
        return tree if name is None else f"{name}\n{tree}"
    ts = format_timestamp(V)
    if name is None:
        head = "" if ts == "<undefined>" else f"{ts}  "
        return f"{head}{s['text']}{_alarm_suffix(s)}"
    return f"{name} {ts}  {s['text']}{_alarm_suffix(s)}"


def json_record(name: str, V: Any, raw: bool = False) -> dict[str, Any]:
    """The ``--json`` object for one Value: the :func:`summarize` keys (minus ``text``) for
    scalar-like Values, else (or with ``raw``) ``{"name", "value": V.todict()}``."""
    s = None if raw else summarize(V)
    if s is None:
        return {"name": name, "value": to_jsonable(V)}
    s.pop("text")
    return {"name": name, **{k: to_jsonable(v) for k, v in s.items()}}


def format_type(T: Any, indent: int = 0, member: str | None = None) -> list[str]:
    """A Type as pvxs-style tree lines (``struct "id" {`` ... ``} member``), without values."""
    spec = T.aspy() if hasattr(T, "aspy") else T
    return _type_lines(spec, indent, member)


def _type_lines(spec: Any, indent: int, member: str | None) -> list[str]:
    pad = "    " * indent
    tail = f" {member}" if member else ""
    if isinstance(spec, str):
        arr = spec.startswith("a") and len(spec) == 2
        code = spec[1:] if arr else spec
        return [f"{pad}{_TYPE_NAMES.get(code, code)}{'[]' if arr else ''}{tail}"]
    code, tid, members = spec
    kind = {"S": "struct", "U": "union", "aS": "struct[]", "aU": "union[]"}.get(code, code)
    head = f"{pad}{kind}"
    if tid and tid not in ("structure", "union"):
        head += f' "{tid}"'
    lines = [head + " {"]
    for mname, mspec in members:
        lines.extend(_type_lines(mspec, indent + 1, mname))
    lines.append(f"{pad}}}{tail}")
    return lines


# --------------------------------------------------------------------------- put values


def parse_put_args(args: Sequence[str]) -> list[tuple[str, list[tuple[str | None, str]]]]:
    """Split ``put`` arguments into ``[(pvname, [(field or None, text), ...]), ...]``.

    Forms: ``NAME=VALUE ...`` (several PVs; the text after the first ``=`` is the value),
    ``NAME VALUE`` and pvxs' ``NAME field=VALUE ...`` (field paths like ``alarm.severity``;
    :func:`build_put` takes a lone ``key=text`` whose key is no field as the value).
    A None field means "the value": the ``value`` field, or top-level fields for a JSON object.
    """
    if not args:
        raise UsageError("put: expected NAME=VALUE or NAME VALUE")
    first = args[0]
    if "=" not in first:
        rest = list(args[1:])
        if not rest:
            raise UsageError(f"put: expected a value after {first}")
        if len(rest) == 1:
            key, sep, text = rest[0].partition("=")
            if not sep or not _FIELD_PATH.match(key) or rest[0][:1] in ("{", "["):
                return [(first, [(None, rest[0])])]
            return [(first, [(key, text)])]
        out: list[tuple[str | None, str]] = []
        for a in rest:
            key, sep, text = a.partition("=")
            if not sep or not _FIELD_PATH.match(key):
                raise UsageError(f"put: expected field=VALUE, not {a!r}")
            out.append((key, text))
        return [(first, out)]
    pvs: list[tuple[str, list[tuple[str | None, str]]]] = []
    for a in args:
        name, sep, text = a.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"put: expected NAME=VALUE, not {a!r}")
        pvs.append((name.strip(), [(None, text)]))
    return pvs


def _parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def _parse_int(text: str) -> int:
    try:
        return int(text.strip(), 0)
    except ValueError:
        f = float(text)
        if not f.is_integer():
            raise
        return int(f)


def _parse_code(code: str, text: str) -> Any:
    """``text`` converted for a scalar field of type ``code``."""
    if code == "s":
        return text
    if code == "?":
        return _parse_bool(text)
    if code in _INT_CODES:
        return _parse_int(text)
    if code in ("f", "d"):
        return float(text)
    return json.loads(text)  # 'v' (any): a JSON value


def _split_array(text: str) -> list[str]:
    t = text.strip()
    if not t:
        return []
    if "," in t:
        return [e.strip() for e in t.split(",")]
    return t.split()


def convert_field(V: Any, field: str, text: str) -> dict[str, Any]:
    """``{field path: python value}`` assignments setting ``field`` of ``V`` from ``text``.

    JSON for text starting with ``{`` or ``[``; numbers, bools (true/false/1/0), strings by the
    field's type; enums by choice name or index; arrays also as ``1,2,3`` or ``"1 2 3"``.
    Raises ValueError with a message naming the field and type.
    """
    try:
        T = _field_type(V, field)
    except KeyError:
        raise ValueError(f"no field '{field}'") from None
    if _is_enum_type(T):
        choices = [str(c) for c in (V[f"{field}.choices"] or [])]
        if text in choices:
            return {f"{field}.index": choices.index(text)}
        try:
            return {f"{field}.index": _parse_int(text)}
        except ValueError:
            raise ValueError(f"{text!r} is not one of the choices {choices}") from None
    if _is_struct_type(T) or text[:1] in ("{", "["):
        try:
            data = json.loads(text)
        except ValueError:
            if _is_struct_type(T) or not text.lstrip().startswith("["):
                raise ValueError(f"cannot parse {text!r} as JSON for field '{field}'") from None
            data = None
        if data is not None or _is_struct_type(T):
            return {field: data}
    code = T
    tname = _TYPE_NAMES.get(code[1:] if len(code) == 2 and code[0] == "a" else code, code)
    try:
        if len(code) == 2 and code[0] == "a":
            return {field: [_parse_code(code[1], e) for e in _split_array(text)]}
        return {field: _parse_code(code, text)}
    except ValueError:
        arr = "[]" if len(code) == 2 and code[0] == "a" else ""
        raise ValueError(f"cannot convert {text!r} to {tname}{arr} for field '{field}'") from None


def build_put(V: Any, assignments: Sequence[tuple[str | None, str]]) -> dict[str, Any]:
    """All field assignments for one PV, from its current Value ``V`` (type and enum choices)."""
    out: dict[str, Any] = {}
    key = assignments[0][0] if len(assignments) == 1 else None
    if key is not None and V.type().has("value"):
        try:
            _field_type(V, key)
        except KeyError:  # ``NAME key=text`` with no field ``key``: the whole text is the value
            assignments = [(None, f"{key}={assignments[0][1]}")]
    for field, text in assignments:
        if field is None:
            if text[:1] == "{":
                try:
                    data = json.loads(text)
                except ValueError:
                    raise ValueError(f"cannot parse {text!r} as JSON") from None
                if not isinstance(data, dict):
                    raise ValueError(f"expected a JSON object, not {text!r}")
                out.update(data)
                continue
            if not V.type().has("value"):
                raise ValueError("no 'value' field: give field=VALUE or a JSON object")
            field = "value"
        out.update(convert_field(V, field, text))
    return out


# --------------------------------------------------------------------------- commands


class Cli:
    """One run of the CLI: parsed options, the backend and output helpers."""

    def __init__(self, args: argparse.Namespace, backend: types.SimpleNamespace) -> None:
        self.args = args
        self.backend = backend
        self.failed = False
        self.request()  # a malformed pvRequest is a usage error before anything runs

    # output
    def out(self, text: str) -> None:
        """One item on stdout, flushed (monitor output is read live through pipes)."""
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def emit(self, name: str, V: Any, **extra: Any) -> None:
        """One Value in the chosen format."""
        if self.args.json:
            self.out(json.dumps({**json_record(name, V, self.args.raw), **extra}, ensure_ascii=False))
        else:
            self.out(format_text(name, V, self.args.raw))

    def error(self, name: str, cause: str) -> None:
        """One error line ``NAME: cause`` on stderr; the exit status becomes 1."""
        self.failed = True
        sys.stderr.write(f"{name}: {cause}\n")
        sys.stderr.flush()

    def fail(self, name: str, err: BaseException, timeout: float | None = None) -> None:
        """:meth:`error` for an exception from the client."""
        if self.args.verbose and not isinstance(err, TimeoutError):
            _log.error("%s", name, exc_info=err)
        self.error(name, describe_error(err, timeout, self.backend))

    def request(self) -> str | None:
        """The pvRequest text or None; a malformed one is a usage error."""
        req = self.args.request or None
        if req is not None and not getattr(self, "_request_checked", False):
            try:
                self.backend.Context.makeRequest(req)
            except Exception as e:
                raise UsageError(f"bad pvRequest {req!r}: {e}") from None
            self._request_checked = True
        return req

    def context(self) -> Any:
        return self.backend.Context(self.args.provider, nt=False)

    # commands
    def cmd_get(self) -> None:
        names = self.args.names
        if not names:
            raise UsageError("get: expected at least one PV name")
        tmo = self.args.timeout
        with self.context() as ctxt:
            results = ctxt.get(names, [self.request()] * len(names), timeout=tmo, throw=False)
        for name, V in zip(names, results):
            if isinstance(V, BaseException):
                self.fail(name, V, tmo)
            else:
                self.emit(name, V)

    def cmd_info(self) -> None:
        names = self.args.names
        if not names:
            raise UsageError("info: expected at least one PV name")
        tmo = self.args.timeout
        with self.context() as ctxt:
            info = getattr(ctxt, "info", None)
            if callable(info):
                results: list[Any] = []
                for name in names:
                    try:
                        results.append(info(name, timeout=tmo))
                    except Exception as e:
                        results.append(e)
            else:  # p4p: no info(); the Type of a whole get
                results = ctxt.get(names, timeout=tmo, throw=False)
        for name, R in zip(names, results):
            if isinstance(R, BaseException):
                self.fail(name, R, tmo)
                continue
            T = R.type() if hasattr(R, "todict") else R
            if self.args.json:
                self.out(json.dumps({"name": name, "type": to_jsonable(T.aspy())}))
            else:
                self.out("\n".join([name, *format_type(T)]))

    def cmd_put(self) -> None:
        pvs = parse_put_args(self.args.names)
        names = [n for n, _ in pvs]
        tmo = self.args.timeout
        with self.context() as ctxt:
            # the current values: the types (conversions, enum choices) and the "Old :" line
            olds = ctxt.get(names, timeout=tmo, throw=False)
            todo: list[tuple[str, dict[str, Any], Any]] = []
            for (name, assignments), old in zip(pvs, olds):
                if isinstance(old, BaseException):
                    self.fail(name, old, tmo)
                    continue
                try:
                    todo.append((name, build_put(old, assignments), old))
                except ValueError as e:
                    self.error(name, str(e))
            if not todo:
                return
            req = self.request()
            results = ctxt.put(
                [n for n, _, _ in todo],
                [d for _, d, _ in todo],
                [req] * len(todo),
                timeout=tmo,
                throw=False,
                get=False,
            )
            done = []
            for (name, _, old), r in zip(todo, results):
                if isinstance(r, BaseException):
                    self.fail(name, r, tmo)
                else:
                    done.append((name, old))
            if not done:
                return
            news = ctxt.get([n for n, _ in done], timeout=tmo, throw=False)
        for (name, old), new in zip(done, news):
            if isinstance(new, BaseException):
                # the put itself succeeded: say so, but keep exit status 0
                cause = describe_error(new, tmo, self.backend)
                sys.stderr.write(f"{name}: put done, reading back failed: {cause}\n")
                continue
            if self.args.json:
                rec = json_record(name, new, self.args.raw)
                rec["old"] = json_record(name, old, self.args.raw)["value"]
                self.out(json.dumps(rec, ensure_ascii=False))
            else:
                self.out("Old : " + format_text(name, old, self.args.raw))
                self.out("New : " + format_text(name, new, self.args.raw))

    def cmd_call(self) -> None:
        if not self.args.names:
            raise UsageError("call: expected a PV name")
        name, *rest = self.args.names
        keys: list[str] = []
        kws: dict[str, str] = {}
        for a in rest:
            key, sep, text = a.partition("=")
            if not sep or not key:
                raise UsageError(f"call: expected name=value, not {a!r}")
            if key in kws:
                raise UsageError(f"call: duplicate argument {key!r}")
            keys.append(key)
            kws[key] = text
        uri = self.backend.NTURI([(k, "s") for k in keys]).wrap(name, kws=kws)
        tmo = self.args.timeout
        with self.context() as ctxt:
            R = ctxt.rpc(name, uri, request=self.request(), timeout=tmo, throw=False)
        if isinstance(R, BaseException):
            self.fail(name, R, tmo)
        elif self.args.json:
            self.out(json.dumps({"name": name, "value": None if R is None else to_jsonable(R)}))
        elif R is not None:
            self.out(format_text(None, R, self.args.raw))

    def cmd_monitor(self) -> None:
        names = self.args.names
        if not names:
            raise UsageError("monitor: expected at least one PV name")
        count = self.args.count
        duration = self.args.timeout if self.args.timeout_given else None
        events: queue.Queue = queue.Queue()
        updates = dict.fromkeys(names, 0)
        connected = dict.fromkeys(names, False)
        ever = dict.fromkeys(names, False)
        active = set(names)  # not finished / failed

        def finish(name: str) -> None:
            active.discard(name)

        with self.context() as ctxt:
            subs = []
            try:
                for name in names:

                    def cb(V: Any, name: str = name) -> None:
                        events.put((name, V))

                    subs.append(ctxt.monitor(name, cb, self.request(), notify_disconnect=True))
                deadline = None if duration is None else time.monotonic() + duration
                while active:
                    if count is not None and all(updates[n] >= count for n in active):
                        break
                    wait = 0.2
                    if deadline is not None:
                        wait = min(wait, deadline - time.monotonic())
                        if wait <= 0:
                            break
                    try:
                        name, V = events.get(timeout=wait)
                    except queue.Empty:
                        continue
                    if name not in active:
                        continue
                    self._monitor_event(name, V, updates, connected, ever, finish)
            except KeyboardInterrupt:
                pass  # Ctrl+C: a normal end of a monitor
            finally:
                for S in subs:
                    S.close()
        if duration is not None:
            for name in names:
                if name in active and not ever[name]:
                    self.error(name, f"no update within {duration} s")

    def _monitor_event(
        self,
        name: str,
        V: Any,
        updates: dict[str, int],
        connected: dict[str, bool],
        ever: dict[str, bool],
        finish: Callable[[str], None],
    ) -> None:
        """Print one monitor event (update, disconnect, reconnect, end, error)."""
        B = self.backend
        if isinstance(V, B.Finished):
            self._event(name, "finished")
            finish(name)
        elif isinstance(V, B.Disconnected):
            if connected[name]:
                self._event(name, "disconnected")
            connected[name] = False
        elif isinstance(V, B.Cancelled):
            finish(name)
        elif isinstance(V, BaseException):
            self.fail(name, V)
            finish(name)
        else:
            if not connected[name] and ever[name]:
                self._event(name, "reconnected")
            connected[name] = ever[name] = True
            updates[name] += 1
            self.emit(name, V)

    def _event(self, name: str, what: str) -> None:
        if self.args.json:
            self.out(json.dumps({"name": name, "event": what}))
        else:
            self.out(f"{name} *** {what}")


# --------------------------------------------------------------------------- arguments


def _add_common(P: argparse.ArgumentParser, suppress: bool) -> None:
    """The options valid anywhere on the line.  Sub-parsers get SUPPRESS defaults so an option
    given before the sub-command is not reset by the sub-parser."""

    def d(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    P.add_argument(
        "-w",
        "--timeout",
        type=float,
        default=d(None),
        metavar="SECONDS",
        help="operation timeout (default 5); monitor: total run time",
    )
    P.add_argument("-r", "--request", default=d(""), metavar="REQ", help="pvRequest, e.g. 'field(value)'")
    P.add_argument("-p", "--provider", default=d("pva"), help="client provider (default pva)")
    P.add_argument("--json", action="store_true", default=d(False), help="one JSON object per PV or update")
    P.add_argument("--raw", action="store_true", default=d(False), help="print the whole structure")
    P.add_argument(
        "--count", type=int, default=d(None), metavar="N", help="monitor: exit after N updates of every PV"
    )
    P.add_argument("-v", "--verbose", action="count", default=d(0), help="tracebacks and log messages")


_COMMANDS = {
    "get": ("cmd_get", "read PVs", "NAME"),
    "put": ("cmd_put", "write PVs: NAME=VALUE ..., NAME VALUE or NAME field=VALUE ...", "ARG"),
    "monitor": ("cmd_monitor", "subscribe and print updates until Ctrl+C", "NAME"),
    "info": ("cmd_info", "print the type of PVs", "NAME"),
    "call": ("cmd_call", "RPC: NAME [arg=value ...] (string arguments, NTURI)", "ARG"),
}


def make_parser() -> argparse.ArgumentParser:
    """The argument parser (sub-commands get, put, monitor, info, call/rpc)."""
    from capva import __version__

    P = argparse.ArgumentParser(
        prog="capva",
        description="PVAccess command line client (capva).  Options may come before or after the command.",
    )
    _add_common(P, suppress=False)
    P.add_argument("-V", "--version", action="version", version=f"capva {__version__}")
    SP = P.add_subparsers(dest="command", metavar="COMMAND")
    for cmd, (func, helptext, metavar) in _COMMANDS.items():
        aliases = ["rpc"] if cmd == "call" else []
        PP = SP.add_parser(cmd, help=helptext, description=helptext, aliases=aliases)
        _add_common(PP, suppress=True)
        PP.add_argument("names", nargs="*", metavar=metavar)
        PP.set_defaults(func=func)
    return P


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv``; options may be mixed with the positional arguments."""
    P = make_parser()
    args, extra = P.parse_known_args(list(argv))
    if getattr(args, "command", None) is None:
        P.print_usage(sys.stderr)
        raise UsageError("expected a command: get, put, monitor, info, call")
    for e in extra:  # positionals after an option (``get A -w 1 B``) come back as extras
        if e.startswith("-") and not _looks_negative(e):
            P.error(f"unrecognized arguments: {e}")
        args.names.append(e)
    args.timeout_given = args.timeout is not None
    if args.timeout is None:
        args.timeout = 5.0
    if args.timeout <= 0 or not math.isfinite(args.timeout):
        raise UsageError(f"bad timeout {args.timeout}")
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    return args


def _looks_negative(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (the console script exits with it)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    verbose = 0
    try:
        args = parse_args(argv)
        verbose = args.verbose
        logging.basicConfig(
            level=logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
        )
        backend = load_backend()
        cli = Cli(args, backend)
        getattr(cli, args.func)()
        return EXIT_FAIL if cli.failed else EXIT_OK
    except UsageError as e:
        sys.stderr.write(f"capva: {e}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("capva: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (``capva monitor X | head``): not an error
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_OK
    except Exception as e:
        if verbose:
            raise
        sys.stderr.write(f"capva: error: {type(e).__name__}: {e}\n")
        return EXIT_FAIL


def run() -> None:
    """Entry point for ``python -m``: :func:`main` then ``sys.exit``."""
    sys.exit(main())


if __name__ == "__main__":
    run()
