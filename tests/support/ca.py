"""Shared helpers for the Channel Access server interop suites (``tests/test_ca_server_*.py``).

Those suites drive capva's CA server with the reference CA clients: libca (the EPICS C
client, through pyepics) and caproto's threading client, plus raw sockets for bad input.

* :func:`ca_conf` / :func:`ca_env`: the ``EPICS_CA*`` settings a CA client of a server needs
  (exactly the ``EPICS_CA*`` keys of ``Server.conf()``, a private repeater port so no shared
  caRepeater cross-talks, and a large ``EPICS_CA_MAX_ARRAY_BYTES``);
* :class:`PyEpicsWorker`: libca reads its environment when its context is created, once per
  process, and its C teardown may crash at exit, so pyepics runs in a long-lived child
  process (this file run as a script).  It takes JSON commands on stdin and answers JSON on
  stdout; every wait in it is bounded, and the fixture kills it at teardown.  Reads and
  subscriptions use libca's ``ca_array_get_callback`` / ``ca_create_subscription`` with a
  callback of our own that copies the DBR bytes and decodes them with the layout table
  below (libca's host-order structures, all of DBR 0..38; pyepics itself only maps the
  plain, TIME and CTRL families);
* :class:`RawCA`: a raw TCP circuit built with capva's sans-I/O CA core, for the bad-input
  tests;
* :class:`SoftIOC`: a pythonSoftIOC (RSRV) subprocess, the reference CA server the
  comparisons use.

Everything binds 127.0.0.1, every process is stopped by its owner, every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = [
    "TYPES",
    "FAMILIES",
    "dbr_type",
    "ca_conf",
    "ca_env",
    "WorkerError",
    "PyEpicsWorker",
    "RawCA",
    "SoftIOC",
    "pyepics_worker",
    "wait_for",
]

# --------------------------------------------------------------------------- DBR codes

TYPES = ("STRING", "SHORT", "FLOAT", "ENUM", "CHAR", "LONG", "DOUBLE")
FAMILIES = ("", "STS", "TIME", "GR", "CTRL")
_FAMILY_BASE = {"": 0, "STS": 7, "TIME": 14, "GR": 21, "CTRL": 28}
PUT_ACKT, PUT_ACKS, STSACK_STRING, CLASS_NAME = 35, 36, 37, 38


def dbr_type(family: str, native: str | int) -> int:
    """The DBR code of ``family`` ('' plain, 'STS', 'TIME', 'GR', 'CTRL') for ``native``."""
    n = TYPES.index(native) if isinstance(native, str) else native
    return _FAMILY_BASE[family] + n


# --------------------------------------------------------------------------- settings


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ca_conf(*confs: dict, **extra: str) -> dict[str, str]:
    """CA client settings for the server(s) whose ``conf()`` are given: the ``EPICS_CA*``
    keys of the first (client keys only), the address lists of all of them joined, a private
    repeater port, and room for large arrays.  ``extra`` overrides."""
    out = {k: str(v) for k, v in confs[0].items() if k.startswith("EPICS_CA_")}
    addrs: list[str] = []
    for c in confs:
        for a in str(c.get("EPICS_CA_ADDR_LIST", "")).split():
            if a not in addrs:
                addrs.append(a)
    out["EPICS_CA_ADDR_LIST"] = " ".join(addrs)
    out["EPICS_CA_AUTO_ADDR_LIST"] = "NO"
    out["EPICS_CA_REPEATER_PORT"] = str(_free_port(socket.SOCK_DGRAM))
    out["EPICS_CA_MAX_ARRAY_BYTES"] = str(1 << 24)
    out.update(extra)
    return out


def ca_ports(conf: dict) -> tuple[int, int]:
    """(TCP port of a capva CA server, its UDP search port) from the server's ``conf()``."""
    udp = int(conf["EPICS_CA_SERVER_PORT"])
    host, _, tcp = conf["EPICS_CA_ADDR_LIST"].split()[0].partition(":")
    return int(tcp or udp), udp


def ca_tcp_port(server: Any, name: str, timeout: float = 5.0) -> int:
    """The TCP port a search for ``name`` answers with (the listener may differ from the
    UDP port); ``server`` is a :class:`capva.server.Server`."""
    from capva.ca.commands import SearchRequest, SearchResponse, VersionRequest, decode_command
    from capva.ca.framing import split_datagram

    _tcp, udp = ca_ports(server.conf())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        u.settimeout(timeout)
        u.sendto(VersionRequest.udp(1).encode() + SearchRequest(name, cid=77).encode(), ("127.0.0.1", udp))
        data, _ = u.recvfrom(65536)
    for raw in split_datagram(data):
        m = decode_command(raw, from_server=True)
        if isinstance(m, SearchResponse):
            return m.port
    raise AssertionError(f"no search reply: {data!r}")


def ca_env(conf: dict[str, str]) -> dict[str, str]:
    """A subprocess environment: this process's minus every EPICS_CA*/EPICS_PVA* setting,
    plus ``conf`` (from :func:`ca_conf`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EPICS_CA", "EPICS_PVA"))}
    env.update(conf)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_for(pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01, what: str = "") -> Any:
    """Poll ``pred`` until it is true (returned); AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        r = pred()
        if r:
            return r
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout} s: {what or pred}")
        time.sleep(interval)


# --------------------------------------------------------------------------- pyepics worker


class WorkerError(Exception):
    """A command the worker could not carry out (its message says why)."""


class PyEpicsWorker:
    """pyepics/libca in a child process with ``env``; :meth:`call` sends one command.

    Commands (keyword arguments of :meth:`call`, see ``_Worker`` below):

    * ``connect(names, timeout)`` → ``{name: info}``; ``info(name)`` → host, count, type,
      read, write, state;
    * ``get(name, type=None, count=None)`` → ``{status, type, count, value, meta...}``
      (``type`` None = native; ``count`` None = 0 = "current length");
    * ``put(name, value, type=None, notify=False, timeout)`` → ``{status}`` (the put
      callback's ECA status when ``notify``), ``exceptions(n, timeout)`` → libca exception
      events (ERROR messages for plain puts);
    * ``monitor(name, type=None, count=0, mask=5)`` → subscription id; ``events(sub, n,
      timeout)`` → its updates (at least ``n``, or what came within ``timeout``), removed
      from the queue; ``unmonitor(sub)``;
    * ``conn_events(name, n, timeout)``: connection callbacks (``True``/``False``);
    * ``pv_get(name, **kws)`` / ``pv_put(name, value, **kws)``: pyepics' own high level
      ``epics.PV`` calls (``as_string``, ``count``, ``wait``...);
    * ``clear(name)``.
    """

    def __init__(self, env: dict[str, str], timeout: float = 30.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._q: queue.Queue = queue.Queue()
        self._err: list[str] = []
        self._n = 0
        self._out = threading.Thread(target=self._read, daemon=True, name="pyepics-worker-out")
        self._out.start()
        self._errt = threading.Thread(target=self._read_err, daemon=True, name="pyepics-worker-err")
        self._errt.start()
        try:
            self.call("ping", timeout=timeout)
        except BaseException:
            self.close()
            raise

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith("{"):
                self._q.put(json.loads(line))
        self._q.put(None)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._err.append(line.rstrip("\n"))

    def stderr(self) -> str:
        return "\n".join(self._err[-40:])

    def call(self, op: str, timeout: float = 20.0, **kws: Any) -> Any:
        """Run ``op`` in the worker; its result, or WorkerError.  The worker bounds its own
        waits by the ``timeout`` it is given; this side waits a little longer."""
        self._n += 1
        req = dict(kws, op=op, id=self._n, timeout=timeout)
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
        except OSError as exc:
            raise AssertionError(f"pyepics worker gone ({exc}); stderr:\n{self.stderr()}") from None
        deadline = time.monotonic() + timeout + 10.0
        while True:
            left = deadline - time.monotonic()
            try:
                rep = self._q.get(timeout=max(0.0, left))
            except queue.Empty:
                raise AssertionError(f"pyepics worker: no answer to {op} within {timeout + 10} s") from None
            if rep is None:
                raise AssertionError(f"pyepics worker exited ({self.proc.poll()}); stderr:\n{self.stderr()}")
            if rep.get("id") != self._n:
                continue  # a late answer to an earlier command that timed out
            if rep.get("ok"):
                return rep.get("result")
            raise WorkerError(rep.get("error"))

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._out.join(5)
        self._errt.join(5)
        for f in (self.proc.stdout, self.proc.stderr, self.proc.stdin):
            with contextlib.suppress(Exception):
                f.close()

    def __enter__(self) -> PyEpicsWorker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# The DBR layouts of libca's host-order structures (ca-protocol.md §3.2): for each type,
# the metadata fields as (name, struct code, offset).  Value offsets and sizes come from
# libca's own dbr_value_offset / dbr_value_size tables.
_LIMITS = (
    "upper_disp_limit",
    "lower_disp_limit",
    "upper_alarm_limit",
    "upper_warning_limit",
    "lower_warning_limit",
    "lower_alarm_limit",
    "upper_ctrl_limit",
    "lower_ctrl_limit",
)
_VALUE_CODE = {0: "40s", 1: "h", 2: "f", 3: "H", 4: "B", 5: "i", 6: "d"}


def _layout(t: int) -> list[tuple[str, str, int]]:
    sts = [("status", "h", 0), ("severity", "h", 2)]
    if t <= 6 or t in (PUT_ACKT, PUT_ACKS, CLASS_NAME):
        return []
    if t <= 13 or t in (21, 28):
        return sts
    if t <= 20:
        return sts + [("secs", "I", 4), ("nsec", "I", 8)]
    if t == STSACK_STRING:
        return [("status", "H", 0), ("severity", "H", 2), ("ackt", "H", 4), ("acks", "H", 6)]
    ctrl = t >= 28
    base = t - (28 if ctrl else 21)
    nlim = 8 if ctrl else 6
    if base == 3:  # ENUM
        return sts + [("no_str", "h", 4)] + [(f"str{i}", "26s", 6 + 26 * i) for i in range(16)]
    code, size, first, extra = {
        1: ("h", 2, 12, []),
        2: ("f", 4, 16, [("precision", "h", 4)]),
        4: ("B", 1, 12, []),
        5: ("i", 4, 12, []),
        6: ("d", 8, 16, [("precision", "h", 4)]),
    }[base]
    units_at = 8 if base in (2, 6) else 4
    lims = [(_LIMITS[i], code, first + size * i) for i in range(nlim)]
    return sts + extra + [("units", "8s", units_at)] + lims


class _Worker:
    """The child side: pyepics' libca context, created with this process's environment."""

    def __init__(self) -> None:
        import ctypes

        from epics import ca, dbr

        self.ctypes = ctypes
        self.ca = ca
        self.dbr = dbr
        ca.PREEMPTIVE_CALLBACK = True
        self.libca = ca.initialize_libca()
        lib = self.libca
        self.value_offset = (ctypes.c_ushort * 39).in_dll(lib, "dbr_value_offset")
        self.value_size = (ctypes.c_ushort * 39).in_dll(lib, "dbr_value_size")
        self.lock = threading.Condition()
        self.chids: dict[str, Any] = {}
        self.conn: dict[str, list] = {}
        self.pvs: dict[str, Any] = {}
        self.results: dict[int, dict] = {}
        self.subs: dict[int, dict] = {}
        self.exc: list[dict] = []
        self.keep: dict[int, Any] = {}
        self.n = 0

        args_t = dbr.event_handler_args
        self.ev_cb = ctypes.CFUNCTYPE(None, args_t)(self._on_event)

        class exception_args(ctypes.Structure):
            _fields_ = [
                ("usr", ctypes.c_void_p),
                ("chid", ctypes.c_void_p),
                ("type", ctypes.c_long),
                ("count", ctypes.c_long),
                ("addr", ctypes.c_void_p),
                ("stat", ctypes.c_long),
                ("op", ctypes.c_long),
                ("ctx", ctypes.c_char_p),
                ("pFile", ctypes.c_char_p),
                ("lineNo", ctypes.c_uint),
            ]

        self.exc_cb = ctypes.CFUNCTYPE(None, exception_args)(self._on_exception)
        lib.ca_add_exception_event(self.exc_cb, None)

    # ---------------------------------------------------------------- callbacks (libca threads)

    def _decode(self, t: int, count: int, raw: int) -> dict:
        import struct

        ctypes = self.ctypes
        off = self.value_offset[t]
        vsz = self.value_size[t]
        data = ctypes.string_at(raw, off + vsz * count) if raw else b""
        out: dict[str, Any] = {}
        for name, code, at in _layout(t):
            (v,) = struct.unpack_from("=" + code, data, at)
            if isinstance(v, bytes):
                v = v.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            out[name] = v
        if "no_str" in out:
            out["enum_strs"] = [out.pop(f"str{i}") for i in range(16)][: max(0, out["no_str"])]
        if t in (PUT_ACKT, PUT_ACKS):
            base = 3
        elif t in (STSACK_STRING, CLASS_NAME):
            base = 0
        else:
            base = t % 7
        code = _VALUE_CODE[base]
        vals = []
        for i in range(count):
            (v,) = struct.unpack_from("=" + code, data, off + vsz * i)
            if isinstance(v, bytes):
                v = v.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            vals.append(v)
        out["value"] = vals
        return out

    def _on_event(self, args: Any) -> None:
        key = args.usr
        try:
            if args.status == 1:
                d = self._decode(args.type, args.count, args.raw_dbr)
            else:
                d = {}
        except Exception as exc:  # pragma: no cover - reported to the test
            d = {"decode_error": repr(exc)}
        d.update(eca=args.status, type=args.type, count=args.count)
        with self.lock:
            if key in self.subs:
                self.subs[key]["events"].append(d)
            else:
                self.results[key] = d
            self.lock.notify_all()

    def _on_exception(self, args: Any) -> None:
        d = {
            "stat": args.stat,
            "op": args.op,
            "type": args.type,
            "count": args.count,
            "ctx": (args.ctx or b"").decode("utf-8", "replace"),
        }
        with self.lock:
            self.exc.append(d)
            self.lock.notify_all()

    def _on_conn(self, pvname: str | None = None, conn: bool | None = None, **kw: Any) -> None:
        with self.lock:
            self.conn.setdefault(pvname or "", []).append(bool(conn))
            self.lock.notify_all()

    def _wait(self, pred: Callable[[], Any], timeout: float) -> Any:
        with self.lock:
            self.lock.wait_for(pred, timeout)
            return pred()

    # ---------------------------------------------------------------- commands

    def op_ping(self, **kw: Any) -> str:
        return "pong"

    def _chid(self, name: str) -> Any:
        try:
            return self.chids[name]
        except KeyError:
            raise RuntimeError(f"{name}: not connected by this worker (call connect first)") from None

    def _info(self, name: str) -> dict:
        ca = self.ca
        chid = self.chids[name]
        ok = ca.isConnected(chid)
        d: dict[str, Any] = {"connected": bool(ok), "state": ca.state(chid)}
        if ok:
            d.update(
                host=ca.host_name(chid),
                count=ca.element_count(chid),
                type=ca.field_type(chid),
                read=bool(ca.read_access(chid)),
                write=bool(ca.write_access(chid)),
            )
        return d

    def op_connect(self, names: list[str], timeout: float, **kw: Any) -> dict:
        ca = self.ca
        for n in names:
            if n not in self.chids:
                self.conn.setdefault(n, [])
                self.chids[n] = ca.create_channel(n, connect=False, auto_cb=False, callback=self._on_conn)
        ca.flush_io()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(ca.isConnected(self.chids[n]) for n in names):
                break
            time.sleep(0.01)
        return {n: self._info(n) for n in names}

    def op_info(self, name: str, **kw: Any) -> dict:
        return self._info(name)

    def op_clear(self, name: str, **kw: Any) -> None:
        chid = self.chids.pop(name)
        self.ca.clear_channel(chid)
        self.ca.flush_io()

    def op_conn_events(self, name: str, n: int = 1, timeout: float = 10.0, **kw: Any) -> list:
        return list(self._wait(lambda: len(self.conn.get(name, [])) >= n and self.conn[name], timeout) or [])

    def _type(self, chid: Any, t: int | None) -> int:
        return self.ca.field_type(chid) if t is None else int(t)

    def op_get(
        self, name: str, type: int | None = None, count: int | None = None, timeout: float = 10.0, **kw: Any
    ):
        chid = self._chid(name)
        t = self._type(chid, type)
        self.n += 1
        key = self.n
        usr = self.ctypes.py_object(key)
        self.keep[key] = usr
        try:
            st = self.libca.ca_array_get_callback(t, int(count or 0), chid, self.ev_cb, usr)
            if st != 1:
                return {"request_status": st, "message": self.ca.message(st)}
            self.libca.ca_flush_io()
            res = self._wait(lambda: key in self.results, timeout)
            if not res:
                raise TimeoutError(f"get {name} type {t}: no reply within {timeout} s")
            with self.lock:
                return self.results.pop(key)
        finally:
            self.keep.pop(key, None)

    def _buffer(self, t: int, value: Any) -> tuple[Any, int]:
        import struct

        vals = value if isinstance(value, list) else [value]
        base = t % 7 if t < 35 else 3
        code = _VALUE_CODE[base]
        if base == 0:
            packed = b"".join(struct.pack("=40s", str(v).encode("utf-8", "surrogateescape")) for v in vals)
        else:
            packed = struct.pack("=" + code * len(vals), *vals)
        buf = self.ctypes.create_string_buffer(packed, max(len(packed), 1))
        return buf, len(vals)

    def op_put(
        self,
        name: str,
        value: Any,
        type: int | None = None,
        notify: bool = False,
        timeout: float = 10.0,
        **kw: Any,
    ) -> dict:
        chid = self._chid(name)
        t = self._type(chid, type)
        buf, n = self._buffer(t, value)
        if not notify:
            st = self.libca.ca_array_put(t, n, chid, buf)
            self.libca.ca_flush_io()
            return {"status": st}
        self.n += 1
        key = self.n
        usr = self.ctypes.py_object(key)
        self.keep[key] = usr
        try:
            st = self.libca.ca_array_put_callback(t, n, chid, buf, self.ev_cb, usr)
            if st != 1:
                return {"request_status": st, "message": self.ca.message(st)}
            self.libca.ca_flush_io()
            res = self._wait(lambda: key in self.results, timeout)
            if not res:
                raise TimeoutError(f"put {name}: no completion within {timeout} s")
            with self.lock:
                r = self.results.pop(key)
            return {"status": r["eca"], "message": self.ca.message(r["eca"])}
        finally:
            self.keep.pop(key, None)

    def op_put_start(self, name: str, value: Any, type: int | None = None, **kw: Any) -> int:
        """A put with completion callback, not waited for: its key for ``put_result``."""
        chid = self._chid(name)
        t = self._type(chid, type)
        buf, n = self._buffer(t, value)
        self.n += 1
        key = self.n
        usr = self.ctypes.py_object(key)
        self.keep[key] = (usr, buf)
        st = self.libca.ca_array_put_callback(t, n, chid, buf, self.ev_cb, usr)
        if st != 1:
            raise RuntimeError(f"ca_array_put_callback: {self.ca.message(st)}")
        self.libca.ca_flush_io()
        return key

    def op_put_result(self, key: int, timeout: float = 10.0, **kw: Any) -> int | None:
        """The ECA status of the put ``key`` once completed, or None if still pending after
        ``timeout``."""
        if not self._wait(lambda: key in self.results, timeout):
            return None
        with self.lock:
            self.keep.pop(key, None)
            return self.results.pop(key)["eca"]

    def op_get_many(
        self, names: list[str], type: int | None = None, timeout: float = 10.0, **kw: Any
    ) -> list:
        """Reads of all ``names`` at once (count 0); their results in order."""
        keys = []
        for name in names:
            chid = self._chid(name)
            self.n += 1
            usr = self.ctypes.py_object(self.n)
            self.keep[self.n] = usr
            st = self.libca.ca_array_get_callback(self._type(chid, type), 0, chid, self.ev_cb, usr)
            if st != 1:
                raise RuntimeError(f"{name}: {self.ca.message(st)}")
            keys.append(self.n)
        self.libca.ca_flush_io()
        self._wait(lambda: all(k in self.results for k in keys), timeout)
        with self.lock:
            out = [self.results.pop(k, None) for k in keys]
        for k in keys:
            self.keep.pop(k, None)
        return out

    def op_exceptions(self, n: int = 1, timeout: float = 5.0, **kw: Any) -> list:
        self._wait(lambda: len(self.exc) >= n, timeout)
        with self.lock:
            out, self.exc[:] = list(self.exc), []
        return out

    def op_monitor(self, name: str, type: int | None = None, count: int = 0, mask: int = 5, **kw: Any) -> int:
        chid = self._chid(name)
        t = self._type(chid, type)
        self.n += 1
        key = self.n
        usr = self.ctypes.py_object(key)
        evid = self.ctypes.c_void_p()
        with self.lock:
            self.subs[key] = {"events": [], "usr": usr, "evid": evid}
        st = self.libca.ca_create_subscription(
            t, int(count), chid, int(mask), self.ev_cb, usr, self.ctypes.byref(evid)
        )
        if st != 1:
            raise RuntimeError(f"ca_create_subscription: {self.ca.message(st)}")
        self.libca.ca_flush_io()
        return key

    def op_events(self, sub: int, n: int = 1, timeout: float = 10.0, **kw: Any) -> list:
        self._wait(lambda: len(self.subs[sub]["events"]) >= n, timeout)
        with self.lock:
            ev = self.subs[sub]["events"]
            out, ev[:] = list(ev), []
        return out

    def op_unmonitor(self, sub: int, **kw: Any) -> None:
        s = self.subs[sub]
        self.libca.ca_clear_subscription(s["evid"])
        self.libca.ca_flush_io()
        with self.lock:
            self.subs.pop(sub)

    def _pv(self, name: str, timeout: float) -> Any:
        import epics

        if name not in self.pvs:
            pv = epics.PV(name, auto_monitor=False)
            self.pvs[name] = pv
        pv = self.pvs[name]
        if not pv.wait_for_connection(timeout=timeout):
            raise TimeoutError(f"epics.PV({name!r}) not connected within {timeout} s")
        return pv

    def op_pv_get(self, name: str, timeout: float = 10.0, **kws: Any) -> Any:
        pv = self._pv(name, timeout)
        v = pv.get(timeout=timeout, **kws)
        if hasattr(v, "tolist"):
            v = v.tolist()
        if isinstance(v, bytes):
            v = v.decode("utf-8", "surrogateescape")
        return v

    def op_pv_info(self, name: str, timeout: float = 10.0, **kws: Any) -> dict:
        pv = self._pv(name, timeout)
        pv.get_ctrlvars(timeout=timeout)
        pv.get_timevars(timeout=timeout)
        return {
            "type": pv.type,
            "count": pv.count,
            "nelm": pv.nelm,
            "units": pv.units,
            "precision": pv.precision,
            "enum_strs": list(pv.enum_strs) if pv.enum_strs else None,
            "severity": pv.severity,
            "status": pv.status,
            "timestamp": pv.timestamp,
            "write_access": pv.write_access,
            "upper_ctrl_limit": pv.upper_ctrl_limit,
            "lower_ctrl_limit": pv.lower_ctrl_limit,
        }

    def op_pv_put(self, name: str, value: Any, timeout: float = 10.0, **kws: Any) -> Any:
        pv = self._pv(name, timeout)
        done = threading.Event()
        if kws.pop("use_callback", False):
            kws["callback"] = lambda **k: done.set()
        r = pv.put(value, timeout=timeout, **kws)
        if "callback" in kws:
            done.wait(timeout)
            return {"result": r, "callback": done.is_set()}
        return r

    def serve(self) -> None:
        for line in sys.stdin:
            if not line.strip():
                continue
            req = json.loads(line)
            rid = req.pop("id")
            op = req.pop("op")
            try:
                res = getattr(self, "op_" + op)(**req)
                rep = {"id": rid, "ok": True, "result": res}
            except Exception as exc:
                rep = {"id": rid, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(json.dumps(rep) + "\n")
            sys.stdout.flush()


# --------------------------------------------------------------------------- raw circuits


class RawCA:
    """A raw CA TCP circuit to 127.0.0.1:``port`` (capva's sans-I/O core builds and parses
    the messages).  ``recv()`` returns the next decoded message, or None when the server
    closed the circuit; ``closed()`` tells whether it did within a timeout."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        from capva.ca.framing import CAMessageReader

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self.reader = CAMessageReader()
        self.pending: list = []
        self.eof = False

    def send(self, *msgs: Any) -> None:
        self.sock.sendall(b"".join(m if isinstance(m, (bytes, bytearray)) else m.encode() for m in msgs))

    def recv(self, timeout: float | None = None) -> Any:
        """The next message from the server (a capva.ca.commands object), None at EOF;
        TimeoutError when nothing comes within ``timeout``."""
        from capva.ca.commands import decode_command

        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.pending:
            if self.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from the server")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError("no message from the server") from None
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
                continue
            self.pending.extend(self.reader.feed(data))
        return decode_command(self.pending.pop(0), from_server=True)

    def recv_until(self, pred: Callable[[Any], Any], timeout: float | None = None) -> tuple[Any, list]:
        """Messages up to the first for which ``pred`` is true: (that one, the ones before)."""
        seen = []
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            m = self.recv(max(0.0, deadline - time.monotonic()))
            if m is None or pred(m):
                return m, seen
            seen.append(m)

    def closed(self, timeout: float = 5.0) -> bool:
        """True if the server closes the circuit within ``timeout`` (messages before the
        close are kept in ``self.before_close``)."""
        self.before_close = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                m = self.recv(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return False
            if m is None:
                return True
            self.before_close.append(m)

    def handshake(self, client: str = "tester", host: str = "localhost") -> Any:
        from capva.ca.commands import ClientNameRequest, HostNameRequest, VersionRequest, VersionResponse

        self.send(VersionRequest(0, 13), ClientNameRequest(client), HostNameRequest(host))
        m = self.recv()
        assert isinstance(m, VersionResponse), m
        return m

    def create(self, name: str, cid: int = 1) -> tuple[int, int, int]:
        """CREATE_CHAN; (sid, native type, native count)."""
        from capva.ca.commands import AccessRightsResponse, CreateChanRequest, CreateChanResponse

        self.send(CreateChanRequest(name, cid))
        m, before = self.recv_until(lambda m: isinstance(m, CreateChanResponse) and m.cid == cid)
        assert m is not None, f"circuit closed: {before}"
        assert any(isinstance(b, AccessRightsResponse) for b in before), before
        return m.sid, m.data_type, m.data_count

    def read(self, sid: int, dtype: int, count: int = 0, ioid: int = 7) -> Any:
        from capva.ca.commands import ReadNotifyRequest, ReadNotifyResponse

        self.send(ReadNotifyRequest(dtype, count, sid, ioid))
        m, before = self.recv_until(lambda m: isinstance(m, ReadNotifyResponse) and m.ioid == ioid)
        assert m is not None, f"circuit closed: {before}"
        return m

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> RawCA:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --------------------------------------------------------------------------- reference IOC


class SoftIOC:
    """A pythonSoftIOC (RSRV for CA) subprocess serving ``records`` (Python source of
    ``builder`` calls, one per line, each ``NAME = builder.xxx("NAME", ...)``), on
    127.0.0.1 with free ports; :attr:`conf` holds the ``EPICS_CA*`` keys a client needs.
    Stdin commands: ``set NAME JSON``; it exits when stdin closes."""

    SCRIPT = r"""
import json, os, sys
from softioc import softioc, builder, asyncio_dispatcher
dispatcher = asyncio_dispatcher.AsyncioDispatcher()
builder.SetDeviceName(os.environ["TEST_IOC_PREFIX"])
recs = {}
exec(os.environ["TEST_IOC_RECORDS"], {"builder": builder, "recs": recs})
builder.LoadDatabase()
softioc.iocInit(dispatcher)
print("READY", flush=True)
for line in sys.stdin:
    cmd, name, value = line.split(" ", 2)
    if cmd == "set":
        recs[name].set(json.loads(value))
        print("DONE", name, flush=True)
softioc.epicsExit(0)
"""

    def __init__(self, records: str, prefix: str) -> None:
        """``prefix`` without the colon; record NAME is served as ``prefix:NAME``."""
        from support.client import ServerProcess

        ca_port = _free_port(socket.SOCK_STREAM)
        pva_tcp, pva_udp = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EPICS_CA", "EPICS_PVA"))}
        env.update(
            TEST_IOC_PREFIX=prefix,
            TEST_IOC_RECORDS=records,
            EPICS_PVAS_INTF_ADDR_LIST="127.0.0.1",
            EPICS_PVAS_SERVER_PORT=str(pva_tcp),
            EPICS_PVAS_BROADCAST_PORT=str(pva_udp),
            EPICS_PVAS_AUTO_BEACON_ADDR_LIST="NO",
            EPICS_PVAS_BEACON_ADDR_LIST=f"127.0.0.1:{pva_udp}",
            EPICS_CAS_INTF_ADDR_LIST="127.0.0.1",
            EPICS_CA_SERVER_PORT=str(ca_port),
            EPICS_CAS_AUTO_BEACON_ADDR_LIST="NO",
            EPICS_CAS_BEACON_ADDR_LIST="127.0.0.1",
            EPICS_CA_AUTO_ADDR_LIST="NO",
            EPICS_CA_ADDR_LIST="127.0.0.1",
            PYTHONUNBUFFERED="1",
        )
        self.proc = ServerProcess(self.SCRIPT, env, ready_timeout=60)
        self.prefix = prefix + ":"
        self.conf = {
            "EPICS_CA_ADDR_LIST": f"127.0.0.1:{ca_port}",
            "EPICS_CA_AUTO_ADDR_LIST": "NO",
            "EPICS_CA_SERVER_PORT": str(ca_port),
        }

    def set(self, name: str, value: Any) -> None:
        self.proc.send(f"set {name} {json.dumps(value)}")
        self.proc.expect(lambda line: line == f"DONE {name}")

    def stop(self) -> None:
        self.proc.stop()


@contextlib.contextmanager
def pyepics_worker(conf: dict[str, str]) -> Iterator[PyEpicsWorker]:
    """A :class:`PyEpicsWorker` with the CA client settings ``conf``, closed afterwards."""
    W = PyEpicsWorker(ca_env(conf))
    try:
        yield W
    finally:
        W.close()


if __name__ == "__main__":
    _Worker().serve()
