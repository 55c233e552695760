"""The aiopvxs API on capva: seed 004 (the aiopvxs README) run with its imports changed.

Why this file exists: capva promises that aiopvxs code ports by replacing ``aiopvxs`` with
``capva`` in the imports.  The README's three examples are the contract:

* the data example (``TypeDef``/``Member``/``TypeCodeEnum``, ``str(Value)``), whose printout
  must match the README's text (where the README built a sub-structure from a ``set`` the
  member order is arbitrary, so the exact comparison uses lists in the README's orders);
* the server example (``SharedPV()`` as a writable mailbox, ``pv.open(Value)``,
  ``with Server({...})``, ``Server.run()``), driven by p4p's (pvxs) client;
* the client example (``capva.client.asyncio.Context``), once that client exists.

It also covers the ``Value.as_*()`` conversions, ``NoConvert``, ``NTScalar(T.Int32A)`` and
that p4p's own semantics (read-only SharedPV without a handler, field access) are unchanged.
Servers bind 127.0.0.1 with random ports (``isolate=True``), never the default ports.
"""

from __future__ import annotations

import asyncio
import io
import threading

import numpy as np
import p4p.client.asyncio as p4p_aio
import pytest
from p4p.client.thread import Context as P4PContext
from p4p.client.thread import RemoteError as P4PRemoteError

import capva
from capva.data import Member as M
from capva.data import NoConvert, StoreType, TypeCode, TypeDef, Value
from capva.data import TypeCodeEnum as T
from capva.nt import NTEnum, NTScalar
from support.server import client_conf

pytestmark = pytest.mark.timeout(60)

TMO = 5.0  # seconds: bound on every single network wait

# the README's printouts, verbatim
SEED_PRINT_1 = """\
struct {
    string desc = ""
    bool flag = false
    int16_t number32 = 0
    int64_t[] array64 = {?}[]
    struct {
        bool flag = false
        int64_t[] array64 = {?}[]
        int16_t number32 = 0
    } substruct
}
"""

SEED_PRINT_2 = """\
struct {
    string desc = "some string"
    bool flag = true
    int16_t number32 = 999
    int64_t[] array64 = {?}[]
    struct {
        int16_t number32 = -888
        int64_t[] array64 = {5}[1, 2, 3, 4, 5]
        bool flag = false
    } substruct
}
"""


# --------------------------------------------------------------------------- TypeCode


def test_typecode_names_and_p4p_codes():
    expect = {
        "Bool": "?",
        "Int8": "b",
        "Int16": "h",
        "Int32": "i",
        "Int64": "l",
        "UInt8": "B",
        "UInt16": "H",
        "UInt32": "I",
        "UInt64": "L",
        "Float32": "f",
        "Float64": "d",
        "String": "s",
    }
    for name, code in expect.items():
        assert TypeCode[name].value == code
        assert TypeCode[name + "A"].value == "a" + code
        assert TypeCode[name + "A"].scalarOf() is TypeCode[name]
        assert TypeCode[name].arrayOf() is TypeCode[name + "A"]
    compound = {"Struct": "S", "Union": "U", "Any": "v", "StructA": "aS", "UnionA": "aU", "AnyA": "av"}
    for name, code in compound.items():
        assert TypeCode[name].value == code
    assert T is TypeCode
    # a str enum: usable wherever a p4p code is
    assert T.Int32A == "ai" and str(T.Int32A) == "ai" and f"{T.Float64}" == "d"
    assert capva.Type([("x", T.Int32), ("y", T.StringA)]).aspy()[2] == [("x", "i"), ("y", "as")]
    # pvxs's numbers (what goes on the wire)
    assert (T.Bool.pvxs_code, T.Int32.pvxs_code, T.Float64A.pvxs_code, T.Struct.pvxs_code) == (
        0x00,
        0x22,
        0x4B,
        0x80,
    )
    assert T.UInt16.is_unsigned() and not T.Int16.is_unsigned() and T.AnyA.is_array()


# --------------------------------------------------------------------------- the README's data example


def _seed_members(sub_children):
    y0 = M(T.String, "desc")
    y1 = M(T.Bool, "flag")
    y2 = M(T.Int16, "number32")
    y3 = M(T.Int64A, "array64")
    y4 = M(T.Struct, "substruct", sub_children(y1, y2, y3))
    return [y0, y1, y2, y3, y4]


def _seed_updates(val_container):
    val_container.desc = "some string"
    val_container["flag"] = True
    val_container.number32 = 999
    val_container["substruct.flag"] = False
    val_container.substruct.number32 = -888
    val_container.substruct["array64"] = [1, 2, 3, 4, 5]


def test_seed_data_example_with_a_set():
    """The README's code as written: the substructure's members come from a set."""
    val_container = TypeDef(T.Struct, _seed_members(lambda y1, y2, y3: set({y1, y2, y3}))).create()
    assert isinstance(val_container, Value) and isinstance(val_container, capva.Value)
    assert val_container.type()["substruct"].keys() != []
    assert set(val_container.type()["substruct"].keys()) == {"flag", "number32", "array64"}
    # same lines as the README's printout, the substructure's in set order
    assert sorted(str(val_container).splitlines()) == sorted(SEED_PRINT_1.splitlines())
    _seed_updates(val_container)
    assert sorted(str(val_container).splitlines()) == sorted(SEED_PRINT_2.splitlines())


def test_seed_data_example_printout_exact():
    """With lists in the orders the README's two printouts happen to show, print() matches
    the README character for character."""
    first = TypeDef(T.Struct, _seed_members(lambda y1, y2, y3: [y1, y3, y2])).create()
    assert str(first) == SEED_PRINT_1
    second = TypeDef(T.Struct, _seed_members(lambda y1, y2, y3: [y2, y3, y1])).create()
    _seed_updates(second)
    assert str(second) == SEED_PRINT_2
    assert second.as_dict() == {
        "desc": "some string",
        "flag": True,
        "number32": 999,
        "array64": [],
        "substruct": {"number32": -888, "array64": [1, 2, 3, 4, 5], "flag": False},
    }
    assert second.changedSet() == {"desc", "flag", "number32", "substruct.flag", "substruct.number32",
                                   "substruct.array64"}  # fmt: skip


def test_typedef_forms():
    members = [M(T.Float64, "x"), M(T.Struct, "pos", "point_t", [M(T.Int32, "a"), M(T.Int32, "b")])]
    anon = TypeDef(T.Struct, members)
    named = TypeDef(T.Struct, "my:thing/1.0", members)
    assert anon.type.id == "" and anon.create().getID() == "structure" and anon.create().id() == ""
    V = named.create()
    assert V.getID() == "my:thing/1.0" and V.id() == "my:thing/1.0"
    assert named.as_type() is named.type
    assert V.type()["pos"].getID() == "point_t"
    assert named.type == capva.Type(
        [("x", "d"), ("pos", ("S", "point_t", [("a", "i"), ("b", "i")]))], id="my:thing/1.0"
    )
    assert not V.changed() and V.x == 0.0
    # keyword forms and a union / arrays of structures
    U = TypeDef(
        T.Struct,
        [
            M(T.Union, "u", children=[M(T.Int32, "i"), M(T.String, "s")]),
            M(T.StructA, "rows", [M(T.String, "name")]),
            M(T.Any, "anything"),
            M(T.Struct, "empty"),
        ],
    ).create()
    U["u"] = ("s", "text")
    U["rows"] = [{"name": "a"}, {"name": "b"}]
    U["anything"] = 3
    assert U.as_dict() == {"u": "text", "rows": [{"name": "a"}, {"name": "b"}], "anything": 3, "empty": {}}
    assert U.as_string("u") == "text"
    # a leaf TypeDef is a type, not a Value (capva Values are structures)
    leaf = TypeDef(T.Int32)
    assert leaf.type.code == "i"
    with pytest.raises(TypeError, match="always a structure"):
        leaf.create()
    assert TypeDef(T.Struct, [leaf.as_member("n")]).create().type().aspy()[2] == [("n", "i")]
    # TypeDef of an existing Type
    assert TypeDef(NTScalar("d").type).create().type() == NTScalar("d").type
    assert "int16_t number32" in repr(TypeDef(T.Struct, _seed_members(lambda *m: list(m))))


def test_typedef_errors():
    with pytest.raises(TypeError, match="no members"):
        M(T.Int32, "x", [M(T.Int32, "y")])
    with pytest.raises(TypeError, match="Member"):
        TypeDef(T.Struct, ["not a member"])
    with pytest.raises(TypeError, match="type code"):
        M("nonsense", "x")
    with pytest.raises(TypeError, match="type id"):
        TypeDef(T.Int32, "an_id")


# --------------------------------------------------------------------------- NT helpers


def test_ntscalar_from_typecode_create_and_build():
    val = NTScalar(T.Int32A).create()
    assert val.type() == NTScalar("ai").type
    assert val.getID() == "epics:nt/NTScalarArray:1.0"
    assert not val.changed()
    val["value"] = [-1, -2, -3, -4, -5]
    val.alarm.message = "ints are negative"
    assert val.changedSet() == {"value", "alarm.message"}
    assert val.as_int_list() == [-1, -2, -3, -4, -5]
    assert val.value.dtype == np.int32
    # .build(): a TypeDef whose .type is the NT's Type
    td = NTScalar(T.Float64).build()
    assert isinstance(td, TypeDef) and td.type == NTScalar("d").type
    assert td.create().getID() == "epics:nt/NTScalar:1.0"
    # p4p spelling untouched
    assert NTScalar("d").wrap(1.5).value == 1.5
    assert NTScalar.buildType(T.String) == NTScalar.buildType("s")


def test_ntenum_create():
    E = NTEnum().create()
    assert E.getID() == "epics:nt/NTEnum:1.0" and not E.changed()
    E["value"] = {"index": 2, "choices": ["zero", "one", "two", "three"]}
    assert E.as_int() == 2 and E.as_string() == "two" and E.as_int("value.index") == 2
    assert E.as_string_list("value.choices") == ["zero", "one", "two", "three"]
    assert E.as_dict("value") == {"index": 2, "choices": ["zero", "one", "two", "three"]}
    assert NTEnum().build().type == NTEnum().type


# --------------------------------------------------------------------------- Value.as_*()


def _scalar(code, value):
    V = NTScalar(code).create()
    V["value"] = value
    return V


@pytest.mark.parametrize("code", [T.Int8, T.Int16, T.Int32, T.Int64, T.UInt8, T.UInt16, T.UInt32, T.UInt64])
def test_as_scalar_integers(code):
    V = _scalar(code, 7)
    assert (V.as_int(), V.as_float(), V.as_bool(), V.as_string()) == (7, 7.0, True, "7")
    assert V.as_int("value") == 7 and V.storageType("value") in (StoreType.Integer, StoreType.UInteger)
    assert _scalar(code, 0).as_bool() is False


def test_as_scalar_others():
    F = _scalar(T.Float64, 2.75)
    assert (F.as_int(), F.as_float(), F.as_string(), F.as_bool()) == (2, 2.75, "2.75", True)
    assert _scalar(T.Float64, 1 / 3).as_string() == "0.333333"  # pvxs prints 6 digits
    B = _scalar(T.Bool, True)
    assert (B.as_bool(), B.as_int(), B.as_string()) == (True, 1, "true")
    S = _scalar(T.String, "Hello, \U0001f44b")
    assert S.as_string() == "Hello, \U0001f44b"
    N = _scalar(T.String, "42")
    assert (N.as_int(), N.as_float()) == (42, 42.0)
    assert _scalar(T.String, "false").as_bool() is False
    assert F.storageType("value") is StoreType.Real and S.storageType("value") is StoreType.String
    assert B.storageType("value") is StoreType.Bool and F.storageType() is StoreType.Compound
    assert F.as_int("timeStamp.userTag") == 0 and F.as_string("alarm.message") == ""


def test_as_arrays():
    I32 = _scalar(T.Int32A, [1, 2, 3])
    assert I32.as_list() == [1, 2, 3] and I32.as_int_list() == [1, 2, 3]
    assert I32.as_float_list() == [1.0, 2.0, 3.0] and I32.as_string_list() == ["1", "2", "3"]
    A = I32.as_array()
    assert isinstance(A, np.ndarray) and A.dtype == np.int32 and A.tolist() == [1, 2, 3]
    assert I32.storageType("value") is StoreType.Array
    F = _scalar(T.Float32A, [0.5, 1.5])
    assert F.as_list() == [0.5, 1.5] and F.as_float_list() == [0.5, 1.5]
    with pytest.raises(TypeError):  # aiopvxs raises TypeError for a float array as ints
        F.as_int_list()
    S = _scalar(T.StringA, ["Hello, \U0001f44b", "from", "the", "python", "side"])
    assert S.as_list() == S.as_string_list() == ["Hello, \U0001f44b", "from", "the", "python", "side"]
    assert S.as_array().tolist() == S.as_list()
    # empty arrays are [] / an empty array of the right dtype (p4p's todict says None)
    E = NTScalar(T.Int64A).create()
    assert E.as_list() == [] and E.as_array().dtype == np.int64 and len(E.as_array()) == 0
    assert E.as_dict()["value"] == [] and E.todict()["value"] is None
    assert _scalar(T.BoolA, [True, False]).as_int_list() == [1, 0]


def test_noconvert():
    assert issubclass(NoConvert, TypeError) and issubclass(NoConvert, ValueError)
    assert capva.data.NoConvert is capva.pva.value.NoConvert
    cases = [
        (_scalar(T.String, "not a number"), "as_int"),
        (_scalar(T.String, "not a number"), "as_float"),
        (_scalar(T.String, "maybe"), "as_bool"),
        (_scalar(T.Int32, 1), "as_list"),
        (_scalar(T.Int32, 1), "as_array"),
        (_scalar(T.Int32A, [1]), "as_int"),
        (_scalar(T.Int32A, [1]), "as_string"),
        (_scalar(T.StringA, ["x"]), "as_float_list"),
        (_scalar(T.Float64, float("nan")), "as_int"),
    ]
    for V, meth in cases:
        with pytest.raises(NoConvert):
            getattr(V, meth)()
    plain = TypeDef(T.Struct, [M(T.Int32, "x")]).create()
    with pytest.raises(NoConvert, match="no 'value'"):
        plain.as_int()
    with pytest.raises(NoConvert):
        plain.as_dict("x")
    U = TypeDef(T.Struct, [M(T.Union, "u", [M(T.Int32, "i")])]).create()
    with pytest.raises(NoConvert, match="holds nothing"):
        U.as_int("u")
    with pytest.raises(KeyError):
        plain.as_int("missing")


def test_as_dict_matches_todict_shape():
    V = NTScalar("ad", display=True).wrap([1.5, 2.5], timestamp=(10, 20))
    d = V.as_dict()
    assert d["value"] == [1.5, 2.5] and isinstance(d["value"], list)
    assert d["timeStamp"] == {"secondsPastEpoch": 10, "nanoseconds": 20, "userTag": 0}
    td = V.todict()
    assert d.keys() == td.keys() and d["display"] == td["display"] and d["alarm"] == td["alarm"]
    assert V.as_dict("timeStamp") == td["timeStamp"]


def test_assign_cloneempty_id():
    E = NTEnum().create()
    r = E.assign({"value.index": 1})
    assert r is E and E.as_int() == 1 and E.changedSet() == {"value.index"}
    other = NTEnum().create()
    other.assign(E)
    assert other["value.index"] == 1 and other.changedSet() == {"value.index"}
    C = E.cloneEmpty()
    assert C.type() == E.type() and not C.changed() and C["value.index"] == 0
    assert E.id() == "epics:nt/NTEnum:1.0"
    assert Value.as_dict(E) == E.as_dict()


def test_fields_win_over_the_new_methods():
    """p4p-style field access keeps its meaning: a field named like an aiopvxs method is
    still the field (``Value.id(V)`` reaches the method)."""
    V = capva.Type([("id", "i"), ("assign", "s"), ("as_dict", "d")], id="x_t")({"id": 5, "assign": "a"})
    assert V.id == 5 and V.assign == "a" and V.as_dict == 0.0
    assert Value.id(V) == "x_t"
    assert Value.as_dict(V) == {"id": 5, "assign": "a", "as_dict": 0.0}
    V.id = 6  # assignment untouched
    assert V["id"] == 6


# --------------------------------------------------------------------------- the README's server example


def _seed_server_pv():
    """The README's server example, module part, verbatim (imports changed)."""
    from capva.server import SharedPV

    # create Value
    val = NTScalar(T.Int32A).create()
    val["value"] = [-1, -2, -3, -4, -5]
    val.alarm.message = "ints are negative"
    # create SharedPV with Value
    pv_int32 = SharedPV()
    pv_int32.open(val)
    return pv_int32


def test_seed_server_example_with_p4p_client():
    from capva.server import Server

    pv_int32 = _seed_server_pv()
    out = io.StringIO()

    async def main(started):
        try:
            # run PVAccess server (isolate=True: loopback, random ports)
            with Server({"test:pv:int32": pv_int32}, isolate=True) as srv:
                print("Starting server", srv, file=out)
                started.set_result(srv.conf())
                while True:
                    await asyncio.sleep(1)
        except asyncio.CancelledError:
            print("Stopping server", file=out)

    async def test():
        started = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(main(started))
        conf = await asyncio.wait_for(started, TMO)
        with p4p_aio.Context("pva", conf=client_conf(conf), useenv=False, nt=False) as ctx:
            V = await asyncio.wait_for(ctx.get("test:pv:int32"), TMO)
            assert V["value"].tolist() == [-1, -2, -3, -4, -5]
            assert V["alarm.message"] == "ints are negative"
            assert V["timeStamp.secondsPastEpoch"] > 0  # open() stamped it
            # the mailbox: a put is stored
            new_value = {"value": [1, 2, 3, 4, 5], "alarm.message": "ints are positive"}
            await asyncio.wait_for(ctx.put("test:pv:int32", new_value), TMO)
            V = await asyncio.wait_for(ctx.get("test:pv:int32"), TMO)
            assert V["value"].tolist() == [1, 2, 3, 4, 5]
            assert V["alarm.message"] == "ints are positive"
        task.cancel()
        await task

    asyncio.run(asyncio.wait_for(test(), 30))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Starting server <capva.server.Server pva port ")
    assert lines[1:] == ["Stopping server"]
    cur = pv_int32.current()
    assert cur.as_int_list() == [1, 2, 3, 4, 5] and cur.as_string("alarm.message") == "ints are positive"


def test_server_run_and_interrupt():
    """The README's alternative: ``srv = Server({...}); srv.run()`` serves until interrupted."""
    from capva.server import Server

    pv_int32 = _seed_server_pv()
    srv = Server({"test:pv:int32": pv_int32}, isolate=True)
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    with P4PContext("pva", conf=client_conf(srv.conf()), useenv=False, nt=False) as C:
        assert C.get("test:pv:int32", timeout=TMO)["value"].tolist() == [-1, -2, -3, -4, -5]
    srv.interrupt()
    t.join(TMO)
    assert not t.is_alive()
    assert repr(srv) == "<capva.server.Server stopped>"


def test_onput_callback_and_typedef_nt():
    """aiopvxs 0.5's spelling: ``SharedPV(nt=NTScalar(T).build(), initial={...})`` and
    ``pv.onPut(callback)`` with ``callback(pv, op, value)``; plus ``onRPC``."""
    from capva.server import ExecOp, Server, SharedPV

    seen = []

    def callback(pv, op, value):
        assert isinstance(op, ExecOp) and isinstance(value, Value)
        seen.append((value.as_int_list(), value.changedSet(), op.name()))
        if min(value["value"]) < 0:
            op.error("no negative numbers")
            return
        pv.post(value)
        op.reply()

    pv_int32 = SharedPV(
        nt=NTScalar(T.Int32A).build(),
        initial={"value": [0, -1, -2, -3, -4, -5], "alarm.message": "ints are negative"},
    )
    assert pv_int32.onPut(callback) is callback

    rpc = SharedPV(nt=TypeDef(T.Struct, [M(T.Int32, "x")]).type, initial={"x": 1})

    @rpc.onRPC
    def answer(pv, op, value):
        op.reply(TypeDef(T.Struct, [M(T.Int32, "y")]).create().assign({"y": value["x"] * 2}))

    with Server({"test:pv:int32": pv_int32, "test:rpc": rpc}, isolate=True) as srv:
        with P4PContext("pva", conf=client_conf(srv.conf()), useenv=False, nt=False) as C:
            assert C.get("test:pv:int32", timeout=TMO)["value"].tolist() == [0, -1, -2, -3, -4, -5]
            C.put("test:pv:int32", {"value": [7, 8]}, timeout=TMO)
            assert C.get("test:pv:int32", timeout=TMO)["value"].tolist() == [7, 8]
            with pytest.raises(P4PRemoteError, match="no negative numbers"):
                C.put("test:pv:int32", {"value": [-7]}, timeout=TMO)
            assert C.get("test:pv:int32", timeout=TMO)["value"].tolist() == [7, 8]
            from p4p import Type as CType
            from p4p import Value as CValue

            R = C.rpc("test:rpc", CValue(CType([("x", "i")]), {"x": 21}), timeout=TMO)
            assert R["y"] == 42
            # the default mailbox also takes puts on a TypeDef-typed PV
            C.put("test:rpc", {"x": 5}, timeout=TMO)
            assert C.get("test:rpc", timeout=TMO)["x"] == 5
    assert [s[0] for s in seen] == [[7, 8], [-7]]
    assert seen[0][1] == {"value"} and seen[0][2] == "test:pv:int32"


def test_p4p_flavours_stay_read_only():
    """Only ``capva.server.SharedPV`` is a mailbox; p4p's flavours still refuse puts without
    a handler, and providers still take them."""
    from capva.server import Server, SharedPV
    from capva.server import raw as raw_mod
    from capva.server import thread as thread_mod

    assert issubclass(SharedPV, raw_mod.SharedPV) and SharedPV is not raw_mod.SharedPV
    ro = thread_mod.SharedPV(nt=NTScalar("d"), initial=1.0)
    ro_raw = raw_mod.SharedPV(nt=NTScalar("d"), initial=1.0)
    box = SharedPV(nt=NTScalar("d"), initial=1.0)  # p4p-style nt= works too
    with Server({"ro": ro, "raw": ro_raw, "box": box}, isolate=True) as srv:
        with P4PContext("pva", conf=client_conf(srv.conf()), useenv=False) as C:
            for name in ("ro", "raw"):
                with pytest.raises(P4PRemoteError, match="Put not supported"):
                    C.put(name, 2.0, timeout=TMO)
            C.put("box", 2.5, timeout=TMO)
            assert C.get("box", timeout=TMO) == 2.5
            assert box.current() == 2.5  # an ntfloat: nt= unwraps as in p4p
    # post() of a dict once the PV has a type
    pv = _seed_server_pv()
    pv.post({"value": [9]})
    assert pv.current().as_list() == [9]


# --------------------------------------------------------------------------- the README's client example


async def _seed_client_main(client_ctx, out):
    """The README's client example's ``main()``, verbatim but for ``print(file=out)``."""
    # put new value
    new_value = {
        "value": [1, 2, 3, 4, 5],
        "alarm.message": "ints are positive",
    }
    await client_ctx.put("test:pv:int32", new_value)

    # get new value
    pv_int32 = await client_ctx.get("test:pv:int32")

    # print it
    print("----------- full pvxs.Value structure -----------", file=out)
    print(pv_int32, file=out)
    print("------ outer-most fields within pvxs.Value ------", file=out)
    # or iterate over outer-most members of received value
    for field, contents in pv_int32.as_dict().items():
        print(f"{field} is {contents}", file=out)


def test_seed_client_example():
    """The README's client against the README's server, both capva.  Needs
    ``capva.client.asyncio`` (skipped until it exists)."""
    from capva.client import Context as AioContext  # aiopvxs.client.Context -> capva.client.Context
    from capva.server import Server

    pv_int32 = _seed_server_pv()
    out = io.StringIO()

    with Server({"test:pv:int32": pv_int32}, isolate=True) as srv:
        # instantiate new client Context - before any loop runs, as in the README
        # the seed's `Context()`; conf only to reach the isolated server
        client_ctx = AioContext(conf=client_conf(srv.conf()), useenv=False)

        async def test():
            try:
                await asyncio.wait_for(_seed_client_main(client_ctx, out), 10)
                # operations are awaitables usable with asyncio.wait_for (README's second snippet)
                put_op = client_ctx.put("test:pv:int32", {"value": [1, 2, 3, 4, 5]})
                assert isinstance(put_op, asyncio.Future)
                await asyncio.wait_for(put_op, timeout=3.0)
                assert put_op.done()
            finally:
                await client_ctx.close()

        asyncio.run(asyncio.wait_for(test(), 30))
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0] == "----------- full pvxs.Value structure -----------"
    assert 'struct "epics:nt/NTScalarArray:1.0" {' in lines
    assert "    int32_t[] value = {5}[1, 2, 3, 4, 5]" in lines
    assert '        string message = "ints are positive"' in lines
    assert "------ outer-most fields within pvxs.Value ------" in lines
    assert "value is [1, 2, 3, 4, 5]" in lines
    assert "alarm is {'severity': 0, 'status': 0, 'message': 'ints are positive'}" in lines
    assert any(line.startswith("timeStamp is {'secondsPastEpoch': ") for line in lines)
