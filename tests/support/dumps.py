"""Parse the decoded capture dumps in shared/vectors/pva/.

Two layouts exist:

* capture dumps (``a2.txt``, ``b2.txt``, ``c.txt``, ``d.txt``, ``raw_le.txt``,
  ``raw_be.txt``)::

      === UDP ===                                       (section marker, capture dumps)
      ## comment                                        (raw_*.txt: what the probe did next)
      1795263554.45 127.0.0.1:41094 -> 127.0.0.1:15076  SEARCH v2 C->S BE len=45 :: seq=... names=[...]
      TCP C->S GET v2 C->S LE len=21 :: sid=... pvRequest type=struct {   ... } pvRequest={...}
         HEX: ca 02 80 03 ...

  A header ending in ``type=`` is followed by a multi-line type printout, then the HEX line.
  The HEX of very long messages is cut short (the 320000-byte segment in c.txt).

* ``vectors.txt``: ``### file | <header as above, from CMD on>`` then one hex line.

Annotation values are kept as raw text (``Record.ann``) and parsed on demand with
:func:`literal` (Python literals, plus ``nan``/``inf``), because the same text can mean a
string or a number depending on the key (``payload=1234`` is hex, ``addr=0000...`` is hex).
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Record",
    "parse_dump",
    "parse_vectors",
    "literal",
    "split_annotations",
    "format_type",
    "format_status",
    "format_addr",
    "flatten",
    "leaf_values",
    "whole_repr",
    "same",
]

_TS_HDR = re.compile(r"^(?P<ts>\d+\.\d+) (?P<src>\S+) -> (?P<dst>\S+)\s+(?P<rest>.*)$")
_RAW_HDR = re.compile(r"^(?P<transport>UDP|TCP) (?P<dir>C->S|S->C) (?P<rest>.*)$")
_VEC_HDR = re.compile(r"^### (?P<file>\S+) \| (?P<rest>.*)$")
_MSG = re.compile(
    r"^(?P<cmd>[A-Z_]+|0x[0-9a-f]+) v(?P<version>\d+) (?P<dir>C->S|S->C) (?P<order>LE|BE) len=(?P<len>\d+)"
    r"(?: SEG-(?P<seg>FIRST|MID|LAST))?(?: :: (?P<ann>.*))?$"
)
_CTRL = re.compile(
    r"^CTRL (?P<name>[A-Z_]+|0x[0-9a-f]+) \((?P<who>[SC])\) data=(?P<data>0x[0-9a-f]+) (?P<order>LE|BE)$"
)
_HEX_LINE = re.compile(r"^(?:[0-9a-f]{2})(?: [0-9a-f]{2})*\s*$")


@dataclass
class Record:
    """One message line of a dump (with its HEX)."""

    file: str
    line: int
    index: int
    transport: str  # "UDP" or "TCP"
    direction: str  # "C->S" or "S->C"
    command: str  # e.g. "SEARCH", or "SET_BYTE_ORDER" for control messages
    control: bool
    order: str  # "LE" / "BE"
    length: int  # body length (application) or data word (control)
    seg: str | None  # None, "FIRST", "MID", "LAST"
    version: int
    header: str  # the text after the address part, from the command on
    ann: dict[str, str] = field(default_factory=dict)
    hex: bytes = b""
    ts: float | None = None
    src: str | None = None  # "ip:port"
    dst: str | None = None
    comment: str = ""  # raw_*.txt: the "## ..." line before it

    @property
    def be(self) -> bool:
        return self.order == "BE"

    @property
    def server(self) -> bool:
        return self.direction == "S->C"

    @property
    def wire_size(self) -> int:
        """Bytes on the wire: header + body."""
        return 8 if self.control else 8 + self.length

    @property
    def truncated(self) -> bool:
        """The dump's HEX shows only a prefix of the message."""
        return len(self.hex) < self.wire_size

    def literal(self, key: str) -> Any:
        return literal(self.ann[key])


def literal(text: str) -> Any:
    """Parse a Python literal as the dumper printed it; ``nan``/``inf`` allowed."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    tree = ast.parse(text, mode="eval")

    class _Fix(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> Any:
            if node.id in ("nan", "inf"):
                return ast.copy_location(ast.Constant(float(node.id)), node)
            raise ValueError(f"not a literal: {node.id}")

    fixed = ast.fix_missing_locations(_Fix().visit(tree))
    value = ast.literal_eval(fixed)
    return value


_OPEN = {"(": ")", "[": "]", "{": "}"}
_KEY_AT = re.compile(r"(?:[A-Za-z_][\w]* )?[A-Za-z_][\w<>-]*=")


def split_annotations(text: str) -> dict[str, str]:
    """``a=1 b=[1, 2] pvRequest type=struct { ... } pvRequest={...}`` -> dict of raw values.

    A value runs to the next ``key=`` (optionally preceded by one label word, as in
    ``pvRequest type=``) found outside brackets and quotes.  Type printouts inline use
    braces, so they nest like the literals do."""
    out: dict[str, str] = {}
    pos = 0
    n = len(text)
    while pos < n:
        m = _KEY_AT.match(text, pos)
        if not m:
            raise ValueError(f"cannot parse annotation at {text[pos : pos + 40]!r}")
        key = text[m.start() : m.end() - 1]
        pos = m.end()
        start = pos
        depth = 0
        quote = ""
        while pos < n:
            c = text[pos]
            if quote:
                if c == "\\":
                    pos += 2
                    continue
                if c == quote:
                    quote = ""
            elif c in "'\"":
                quote = c
            elif c in _OPEN:
                depth += 1
            elif c in ")]}":
                depth -= 1
            elif c == " " and depth == 0 and _KEY_AT.match(text, pos + 1):
                break
            pos += 1
        out[key] = text[start:pos]
        pos += 1
    return out


def _make(file: str, line: int, index: int, rest: str, transport: str, **kw: Any) -> Record:
    m = _CTRL.match(rest)
    if m:
        return Record(
            file=file,
            line=line,
            index=index,
            transport=transport,
            direction="S->C" if m["who"] == "S" else "C->S",
            command=m["name"],
            control=True,
            order=m["order"],
            length=int(m["data"], 16),
            seg=None,
            version=0,
            header=rest,
            **kw,
        )
    m = _MSG.match(rest)
    if not m:
        raise ValueError(f"{file}:{line}: unrecognised message line {rest!r}")
    ann_text = m["ann"] or ""
    ann = split_annotations(ann_text) if ann_text and "DECODE ERROR" not in ann_text else {}
    if "DECODE ERROR" in ann_text:
        ann = {"<decode-error>": ann_text}
    return Record(
        file=file,
        line=line,
        index=index,
        transport=transport,
        direction=m["dir"],
        command=m["cmd"],
        control=False,
        order=m["order"],
        length=int(m["len"]),
        seg=m["seg"],
        version=int(m["version"]),
        header=rest,
        ann=ann,
        **kw,
    )


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.strip())


def parse_dump(path: str | Path) -> list[Record]:
    """All messages of a capture dump, in file order."""
    path = Path(path)
    lines = path.read_text().split("\n")
    records: list[Record] = []
    transport = ""
    comment = ""
    i = 0
    while i < len(lines):
        line = lines[i].rstrip("\n")
        i += 1
        if not line.strip():
            continue
        if line.startswith("=== ") and line.endswith(" ==="):
            transport = line[4:-4].strip()
            continue
        if line.startswith("## "):
            comment = line[3:]
            continue
        kw: dict[str, Any] = {}
        m = _TS_HDR.match(line)
        if m:
            rest = m["rest"]
            kw = {"ts": float(m["ts"]), "src": m["src"], "dst": m["dst"]}
            tr = transport
        else:
            m = _RAW_HDR.match(line)
            if not m:
                raise ValueError(f"{path.name}:{i}: unexpected line {line!r}")
            rest = m["rest"]
            tr = m["transport"]
        # a trailing "key=" announces a multi-line type printout
        block: list[str] = []
        while i < len(lines) and not lines[i].startswith("   HEX:"):
            block.append(lines[i])
            i += 1
        if i >= len(lines):
            raise ValueError(f"{path.name}: message without HEX line: {line!r}")
        hexline = lines[i]
        i += 1
        rec = _make(path.name, i - 1 - len(block), len(records), rest, tr, comment=comment, **kw)
        if block:
            last_key = list(rec.ann)[-1] if rec.ann else None
            if last_key is None or rec.ann[last_key] != "":
                raise ValueError(f"{path.name}: unexpected lines after {line!r}: {block[:2]!r}")
            rec.ann[last_key] = "\n".join(block)
        rec.hex = _hex(hexline.split("HEX:", 1)[1])
        records.append(rec)
        comment = ""
    return records


def parse_vectors(path: str | Path) -> list[Record]:
    """vectors.txt: ``### file | header`` + one hex line per entry."""
    path = Path(path)
    lines = path.read_text().split("\n")
    out: list[Record] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            continue
        m = _VEC_HDR.match(line)
        if not m:
            raise ValueError(f"{path.name}:{i}: unexpected line {line!r}")
        if i >= len(lines) or not _HEX_LINE.match(lines[i]):
            raise ValueError(f"{path.name}:{i}: entry without hex line")
        rec = _make(m["file"], i, len(out), m["rest"], "?")
        rec.hex = _hex(lines[i])
        i += 1
        out.append(rec)
    return out


# -- the dumper's notation, reproduced from decoded capva objects ----------------------------

_TYPE_NAMES = {
    "?": "bool",
    "b": "int8",
    "B": "uint8",
    "h": "int16",
    "H": "uint16",
    "i": "int32",
    "I": "uint32",
    "l": "int64",
    "L": "uint64",
    "f": "float32",
    "d": "float64",
    "s": "string",
    "v": "any",
}


def type_name(T: Any) -> str:
    """Name of a non-compound type as the dumper prints it: ``float64``, ``string[]``."""
    code = T.code
    if len(code) == 2 and code[0] == "a":
        return _TYPE_NAMES[code[1]] + "[]"
    return _TYPE_NAMES[code]


def _type_lines(T: Any, name: str, depth: int, out: list[str]) -> None:
    ind = "  " * depth
    suffix = f" {name}" if name else ""
    code = T.code
    if code in ("S", "U", "aS", "aU"):
        node = T.elem if code in ("aS", "aU") else T
        kw = {"S": "struct", "U": "union", "aS": "struct[]", "aU": "union[]"}[code]
        head = kw + (f' "{node.id}"' if node.id else "")
        out.append(f"{ind}{head} {{")
        for n, child in node.members:
            _type_lines(child, n, depth + 1, out)
        out.append(f"{ind}}}{suffix}")
    else:
        out.append(f"{ind}{type_name(T)}{suffix}")


def format_type(T: Any, inline: bool = False) -> str:
    """A Type the way the dumps print it: multi-line after ``type=`` headers, or joined
    with single spaces when inline (``pvRequest type=struct {   struct {   } field }``)."""
    if T is None:
        return "None"
    lines: list[str] = []
    _type_lines(T, "", 0, lines)
    return " ".join(lines) if inline else "\n".join(lines)


def format_status(st: Any) -> tuple:
    """``('OK',)`` for plain success (``ff``), else ``(name, message, trace)``."""
    if st.code == 0 and not st.message and not st.trace:
        return ("OK",)
    return (("OK", "WARNING", "ERROR", "FATAL")[st.code], st.message, st.trace)


def format_addr(addr: bytes) -> str:
    """IPv4-mapped -> dotted quad; anything else (e.g. all zeros) -> 32 hex digits."""
    if addr[:12] == bytes(10) + b"\xff\xff":
        return ".".join(str(b) for b in addr[12:])
    return addr.hex()


def flatten(T: Any) -> list[tuple[str, Any, int]]:
    """Depth-first pre-order ``(path, Type, span)`` of a structure; index = PVA bit number."""
    out: list[tuple[str, Any, int]] = []

    def walk(t: Any, path: str) -> None:
        i = len(out)
        out.append((path, t, 1))
        if t.code == "S":
            for n, c in t.members:
                walk(c, f"{path}.{n}" if path else n)
        out[i] = (path, t, len(out) - i)

    walk(T, "")
    return out


def _stored(V: Any, path: str) -> Any:
    """The stored form of a union/any field: ``(selector, value)`` / ``(Type, value)``.

    p4p's public API returns only the selected member's value, so the tests read capva's
    storage here to see *which* member (or which type) the wire carried."""
    return V._s.vals[V._b + V._T._paths[path]]


def _plain(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    return x


def whole_repr(V: Any, T: Any = None, path: str = "") -> Any:
    """The dumper's ``'<whole>'`` notation: structs as dicts, unions as ``{'->member': v}``,
    any as ``('any', typename, v)``."""
    T = V.type() if T is None else T
    out = {}
    for n, child in T.members:
        p = f"{path}.{n}" if path else n
        code = child.code
        if code == "S":
            out[n] = whole_repr(V, child, p)
        elif code == "U":
            sv = _stored(V, p)
            out[n] = None if sv is None else {"->" + child.members[sv[0]][0]: _plain(sv[1])}
        elif code == "v":
            sv = _stored(V, p)
            out[n] = None if sv is None else ("any", type_name(sv[0]), _plain(sv[1]))
        else:
            out[n] = _plain(V[p])
    return out


def leaf_values(V: Any, mask: int) -> dict[str, Any]:
    """The dumper's ``values={...}``: dotted leaf -> value for every leaf under a set bit
    (a set parent covers its children; bit 0 prints as ``'<whole>'``)."""
    flat = flatten(V.type())
    out: dict[str, Any] = {}
    i = 0
    while i < len(flat):
        path, t, span = flat[i]
        if not mask >> i & 1:
            i += 1
            continue
        if i == 0:
            out["<whole>"] = whole_repr(V)
        elif t.code == "S":
            for p, lt, _ in flat[i : i + span]:
                if lt.code != "S":
                    out[p] = _plain(V[p])
        else:
            out[path] = _plain(V[path])
        i += span
    return out


def same(a: Any, b: Any) -> bool:
    """Deep equality where nan equals nan (the dumps print ``nan`` limits)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return bool(a == b)
