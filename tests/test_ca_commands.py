"""Every CA command class: round trips (hypothesis), byte layouts checked against caproto,
the minor-version dependent reply helpers, and malformed payloads."""

from __future__ import annotations

import caproto as cap
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capva.ca import CADecodeError, dbr
from capva.ca import commands as C
from capva.ca.constants import (
    ACCESS_RIGHTS,
    BUILD,
    CREATE_CH_FAIL,
    DO_REPLY,
    EVENT_ADD,
    READ_BUILD,
    SIGNAL,
    SNAPSHOT,
)
from capva.ca.framing import Header, RawMessage, encode_message, needs_extended, split_datagram
from capva.ca.status import ECA_ALLOCMEM, ECA_BADTYPE, ECA_NORMAL, ECA_NOWTACCESS

H = bytes.fromhex
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
names = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), min_size=1, max_size=60
)
data = st.binary(max_size=64).map(lambda b: b + bytes(-len(b) & 7))  # padded DBR bytes
f32 = st.floats(width=32, allow_nan=False)

STRATEGIES: dict[type, st.SearchStrategy] = {
    C.VersionRequest: st.builds(C.VersionRequest, u16, u16, u32),
    C.VersionResponse: st.builds(C.VersionResponse, u16, u16, u32),
    C.SearchRequest: st.builds(C.SearchRequest, names, u32, u16, u16),
    C.SearchResponse: st.builds(C.SearchResponse, u16, u32, u32, st.none() | u16),
    C.NotFoundResponse: st.builds(C.NotFoundResponse, u32, u16, u16),
    C.EchoRequest: st.builds(C.EchoRequest, u16, u16, u32, u32, data),
    C.EchoResponse: st.builds(C.EchoResponse, u16, u16, u32, u32, data),
    C.ReadSyncRequest: st.builds(C.ReadSyncRequest, u16, u16, u32, u32),
    C.ReadSyncResponse: st.builds(C.ReadSyncResponse, u16, u16, u32, u32),
    C.EventsOffRequest: st.builds(C.EventsOffRequest),
    C.EventsOnRequest: st.builds(C.EventsOnRequest),
    C.Beacon: st.builds(C.Beacon, u16, u32, u32, u16),
    C.RepeaterRegisterRequest: st.builds(C.RepeaterRegisterRequest, u32),
    C.RepeaterConfirmResponse: st.builds(C.RepeaterConfirmResponse, u32),
    C.EventAddRequest: st.builds(C.EventAddRequest, u16, u32, u32, u32, u16, f32, f32, f32),
    C.EventAddResponse: st.builds(C.EventAddResponse, u16, u32, u32, u32, data.filter(bool)),
    C.EventCancelRequest: st.builds(C.EventCancelRequest, u16, u32, u32, u32),
    C.EventCancelResponse: st.builds(C.EventCancelResponse, u16, u32, u32, u32),
    C.ReadRequest: st.builds(C.ReadRequest, u16, u32, u32, u32),
    C.ReadResponse: st.builds(C.ReadResponse, u16, u32, u32, u32, data),
    C.ReadNotifyRequest: st.builds(C.ReadNotifyRequest, u16, u32, u32, u32),
    C.ReadNotifyResponse: st.builds(C.ReadNotifyResponse, u16, u32, u32, u32, data),
    C.WriteRequest: st.builds(C.WriteRequest, u16, u32, u32, u32, data),
    C.WriteNotifyRequest: st.builds(C.WriteNotifyRequest, u16, u32, u32, u32, data),
    C.WriteNotifyResponse: st.builds(C.WriteNotifyResponse, u16, u32, u32, u32),
    C.ErrorResponse: st.builds(
        C.ErrorResponse,
        st.builds(Header, u16, u32, u16, u32, u32, u32, st.booleans()).map(
            lambda h: h._replace(extended=h.extended or needs_extended(h.payload_size, h.data_count))
        ),
        u32,
        st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=80),
        u32,
    ),
    C.ClearChannelRequest: st.builds(C.ClearChannelRequest, u32, u32),
    C.ClearChannelResponse: st.builds(C.ClearChannelResponse, u32, u32),
    C.CreateChanRequest: st.builds(C.CreateChanRequest, names, u32, u32),
    C.CreateChanResponse: st.builds(C.CreateChanResponse, u16, u32, u32, u32),
    C.ClientNameRequest: st.builds(C.ClientNameRequest, names),
    C.HostNameRequest: st.builds(C.HostNameRequest, names),
    C.AccessRightsResponse: st.builds(C.AccessRightsResponse, u32, u32),
    C.CreateChFailResponse: st.builds(C.CreateChFailResponse, u32),
    C.ServerDisconnResponse: st.builds(C.ServerDisconnResponse, u32),
}


def test_every_command_class_has_a_strategy() -> None:
    classes = set(C.CLIENT_COMMANDS.values()) | set(C.SERVER_COMMANDS.values()) | {C.EventCancelResponse}
    assert classes == set(STRATEGIES)
    # one class per (code, sender) for all 24 codes in use
    assert len(C.CLIENT_COMMANDS) == 17 and len(C.SERVER_COMMANDS) == 17


@pytest.mark.parametrize("cls", list(STRATEGIES), ids=lambda c: c.__name__)
@settings(max_examples=40)
@given(st.data())
def test_round_trip(cls: type, d: st.DataObject) -> None:
    cmd = d.draw(STRATEGIES[cls])
    wire = cmd.encode()
    assert len(wire) % 8 == 0  # every message is padded
    assert b"".join(cmd.parts()) == wire
    (raw,) = split_datagram(wire)
    back = C.decode_command(raw, from_server=cls.FROM_SERVER)
    assert type(back) is cls
    assert back == cmd
    assert back.encode() == wire
    assert repr(back).startswith(cls.__name__ + "(")


@settings(max_examples=30)
@given(st.sampled_from([C.ReadNotifyResponse, C.EventAddResponse, C.WriteRequest]), st.booleans())
def test_extended_form_survives_round_trip(cls: type, force: bool) -> None:
    cmd = cls(dbr.DOUBLE, 2, 1, 2, bytes(16))
    cmd.extended = force
    wire = cmd.encode()
    assert len(wire) == 16 + (24 if force else 16)
    back = C.decode_command(split_datagram(wire)[0], from_server=cls.FROM_SERVER)
    assert back.extended is force and back.encode() == wire


# -- byte layouts against caproto's implementation ---------------------------------------------------------


def test_layouts_match_caproto() -> None:
    pairs = [
        (C.VersionRequest(0, 13), cap.VersionRequest(priority=0, version=13)),
        (C.SearchRequest("rpi:color", 0xE0DB), cap.SearchRequest(name="rpi:color", cid=0xE0DB, version=13)),
        (
            C.SearchResponse(5064, 7, 0x7F000001),
            cap.SearchResponse(port=5064, ip="127.0.0.1", cid=7, version=13),
        ),
        (C.NotFoundResponse(0x1235, 13), cap.NotFoundResponse(version=13, cid=0x1235)),
        (C.EchoRequest(), cap.EchoRequest()),
        (C.Beacon(5064, 42, 0x7F000001), cap.Beacon(13, 5064, 42, "127.0.0.1")),
        (C.RepeaterConfirmResponse(0x7F000001), cap.RepeaterConfirmResponse("127.0.0.1")),
        (C.RepeaterRegisterRequest(0x7F000001), cap.RepeaterRegisterRequest("127.0.0.1")),
        (
            C.EventAddRequest(dbr.TIME_DOUBLE, 0, 0, 3, mask=5),
            cap.EventAddRequest(
                data_type=20, data_count=0, sid=0, subscriptionid=3, low=0, high=0, to=0, mask=5
            ),
        ),
        (C.EventCancelRequest(20, 0, 0, 3), cap.EventCancelRequest(data_type=20, sid=0, subscriptionid=3)),
        (C.ReadNotifyRequest(34, 1, 0, 2), cap.ReadNotifyRequest(data_type=34, data_count=1, sid=0, ioid=2)),
        (C.EventsOffRequest(), cap.EventsOffRequest()),
        (C.EventsOnRequest(), cap.EventsOnRequest()),
        (C.ClearChannelRequest(0, 1), cap.ClearChannelRequest(sid=0, cid=1)),
        (C.ClearChannelResponse(0, 1), cap.ClearChannelResponse(sid=0, cid=1)),
        (C.CreateChanRequest("dval", 1), cap.CreateChanRequest(name="dval", cid=1, version=13)),
        (C.CreateChanResponse(6, 1, 1, 0), cap.CreateChanResponse(data_type=6, data_count=1, cid=1, sid=0)),
        (
            C.WriteNotifyResponse(6, 1, ECA_NORMAL, 4),
            cap.WriteNotifyResponse(data_type=6, data_count=1, status=1, ioid=4),
        ),
        (C.ClientNameRequest("root"), cap.ClientNameRequest("root")),
        (C.HostNameRequest("vm"), cap.HostNameRequest("vm")),
        (C.AccessRightsResponse(1, 3), cap.AccessRightsResponse(cid=1, access_rights=3)),
        (C.CreateChFailResponse(0x9D), cap.CreateChFailResponse(cid=0x9D)),
        (C.ServerDisconnResponse(0x9D), cap.ServerDisconnResponse(cid=0x9D)),
        (
            C.WriteNotifyRequest.from_values(dbr.DOUBLE, [4.0], sid=0, ioid=4),
            cap.WriteNotifyRequest(data=[4.0], data_type=6, data_count=1, sid=0, ioid=4),
        ),
        (
            C.WriteRequest.from_values(dbr.LONG, [1, 2, 3], sid=2, cid=1),
            cap.WriteRequest(data=[1, 2, 3], data_type=5, data_count=3, sid=2, ioid=1),
        ),
        (
            C.ReadNotifyResponse.from_values(dbr.DOUBLE, np.arange(3.0), ioid=9),
            cap.ReadNotifyResponse(data=np.arange(3.0), data_type=6, data_count=3, status=1, ioid=9),
        ),
    ]
    for ours, theirs in pairs:
        assert ours.encode() == bytes(theirs), type(ours).__name__


def test_error_response_matches_caproto() -> None:
    req = cap.WriteRequest(data=[1], data_type=5, data_count=1, sid=2, ioid=1)
    theirs = cap.ErrorResponse(original_request=req, cid=0x9E, status=376, error_message="ro")
    raw = split_datagram(bytes(req))[0]
    ours = C.ErrorResponse.for_request(raw, ECA_NOWTACCESS, "ro", cid=0x9E)
    assert ours.encode() == bytes(theirs)


# -- the dispatch rules -----------------------------------------------------------------------------------


def test_event_add_with_empty_payload_is_the_cancel_ack() -> None:
    raw = split_datagram(H("00010000001400000000000000000003"))[0]
    assert isinstance(C.decode_command(raw, from_server=True), C.EventCancelResponse)
    raw = split_datagram(H("00010008000600010000000100000003") + bytes(8))[0]
    assert isinstance(C.decode_command(raw, from_server=True), C.EventAddResponse)


@pytest.mark.parametrize("code", [SNAPSHOT, BUILD, READ_BUILD, SIGNAL, 28, 0xFFFF])
def test_obsolete_and_unknown_codes(code: int) -> None:
    wire = encode_message(code, b"abc", 1, 2, 3, 4)
    for from_server in (False, True):
        cmd = C.decode_command(split_datagram(wire)[0], from_server=from_server)
        assert isinstance(cmd, C.UnknownCommand)
        assert cmd.ID == code and cmd.encode() == wire


@pytest.mark.parametrize("code", [ACCESS_RIGHTS, CREATE_CH_FAIL])
def test_server_commands_from_a_client_are_unknown(code: int) -> None:
    cmd = C.decode_command(split_datagram(encode_message(code, b"", 0, 0, 1, 3))[0], from_server=False)
    assert isinstance(cmd, C.UnknownCommand)


def test_reflection() -> None:
    e = C.EchoRequest(1, 2, 3, 4, b"12345678")
    assert e.reply() == C.EchoResponse(1, 2, 3, 4, b"12345678")
    assert C.EchoResponse().reply() == C.EchoRequest()
    assert C.ReadSyncResponse(1, 2, 3, 4).reply() == C.ReadSyncRequest(1, 2, 3, 4)


def test_data_commands_values() -> None:
    meta = dbr.Metadata(status=3, severity=2, seconds=5, nanoseconds=6)
    up = C.EventAddResponse.from_values(dbr.TIME_LONG, [1, 2, 3], meta, subscription_id=7)
    assert (up.data_count, up.status, up.subscription_id) == (3, ECA_NORMAL, 7)
    vals, m = up.values()
    assert vals.tolist() == [1, 2, 3] and m == dbr.Metadata(status=3, severity=2, seconds=5, nanoseconds=6)
    fixed = C.EventAddResponse.from_values(dbr.LONG, [1], subscription_id=7, count=3)
    assert fixed.data_count == 3 and fixed.values()[0].tolist() == [1, 0, 0]
    rd = C.ReadResponse.from_values(dbr.STRING, ["42"], cid=1, ioid=2, compact=True)
    assert rd.data_count == 1 and rd.encode().hex() == "0003000800000001000000010000000234320000" + "00000000"
    assert rd.values()[0] == ["42"]
    w = C.WriteRequest.from_values(dbr.STRING, ["hello"], sid=1, cid=2, compact=True)
    assert w.data == b"hello\0" and w.encode()[16:] == b"hello\0\0\0"
    wn = C.WriteNotifyRequest.from_values(dbr.STRING, ["a", "b"], sid=1, ioid=2)
    assert wn.data_count == 2 and wn.values()[0] == ["a", "b"]


def test_search_response_address() -> None:
    assert C.SearchResponse(5064, 1, C.ipv4_to_int("10.0.0.2")).address == "10.0.0.2"
    assert C.int_to_ipv4(0x7F000001) == "127.0.0.1"


# -- replies that depend on the client minor version --------------------------------------------------------


def test_create_chan_replies_by_minor() -> None:
    new = C.create_chan_replies(13, cid=1, sid=0, native_type=6, count=1, access_rights=3)
    assert b"".join(c.encode() for c in new).hex() == (
        "0016000000000000000000010000000300120000000600010000000100000000"
    )
    big = C.create_chan_replies(13, 1, 0, 6, 100000, 3)[-1]
    assert isinstance(big, C.CreateChanResponse) and big.data_count == 100000
    assert len(big.encode()) == 24  # count >= 0xFFFF needs the extended header
    old = C.create_chan_replies(8, 1, 0, 6, 100000, 3)[-1]
    assert isinstance(old, C.CreateChanResponse) and old.data_count == 0xFFFE and len(old.encode()) == 16
    ancient = C.create_chan_replies(1, 1, 0, 6, 10, 3)
    assert len(ancient) == 1 and ancient[0] == C.CreateChanResponse(0, 0, 1, 0)


def test_create_chan_failure_by_minor() -> None:
    req = C.CreateChanRequest("nope", cid=0x9D, version=13)
    assert C.create_chan_failure(13, req) == C.CreateChFailResponse(0x9D)
    raw = split_datagram(req.encode())[0]
    old = C.create_chan_failure(5, raw, "not found")
    assert isinstance(old, C.ErrorResponse)
    assert (old.cid, old.status, old.message) == (0x9D, ECA_ALLOCMEM, "not found")
    assert old.original == raw.header
    old2 = C.create_chan_failure(5, C.CreateChanRequest("nope", cid=0x9D, version=5))
    assert isinstance(old2, C.ErrorResponse) and old2.original == Header(18, 8, 0, 0, 0x9D, 5)


def test_error_embeds_extended_header_only_for_new_clients() -> None:
    raw = RawMessage(4, 80000, 6, 10000, 1, 2, b"", True)
    new = C.ErrorResponse.for_request(raw, ECA_BADTYPE, "bad")
    assert new.original.extended and len(new.encode()) == 16 + 24 + 8
    back = C.decode_command(split_datagram(new.encode())[0], from_server=True)
    assert back == new
    old = C.ErrorResponse.for_request(raw, ECA_BADTYPE, "bad", client_minor=8)
    assert not old.original.extended and old.original.payload_size == 0xFFFE


def test_write_notify_bad_type_reply_echoes_request() -> None:
    req = C.WriteNotifyRequest(0xEFEF, 1, 0, 5, bytes(8))
    assert C.WriteNotifyResponse.for_request(req, ECA_BADTYPE) == C.WriteNotifyResponse(
        0xEFEF, 1, ECA_BADTYPE, 5
    )


# -- malformed payloads -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wire,from_server",
    [
        (encode_message(EVENT_ADD, bytes(8), 20, 0, 0, 3), False),  # EVENT_ADD request shorter than 16
        (encode_message(6, b"no nul!!", 5, 13, 1, 1), False),  # SEARCH name without NUL
        (encode_message(6, b"", 5, 13, 1, 1), False),  # SEARCH without a name
        (encode_message(18, b"dvalxxxx", 0, 0, 1, 13), False),  # CREATE_CHAN name without NUL
        (encode_message(20, b"", 0, 0, 0, 0), False),  # empty CLIENT_NAME: RSRV disconnects
        (encode_message(21, b"vmvmvmvm", 0, 0, 0, 0), False),  # HOST_NAME without NUL
        (encode_message(11, bytes(8), 0, 0, 1, 2), True),  # ERROR shorter than its header copy
        (encode_message(11, H("000fffff000600000000000100000001"), 0, 0, 1, 2), True),  # cut extended copy
        (H("00060001000000000000000000000001") + b"\x00", True),  # search reply with 1-byte payload
    ],
)
def test_malformed_payloads(wire: bytes, from_server: bool) -> None:
    raw = split_datagram(wire)[0]
    with pytest.raises(CADecodeError):
        C.decode_command(raw, from_server=from_server)


def test_empty_create_chan_name_decodes_as_empty() -> None:
    """RSRV silently ignores a CREATE_CHAN with payload <= 1 byte; the server must see it."""
    for payload in (b"", b"\0"):
        raw = RawMessage(18, len(payload), 0, 0, 1, 13, payload)
        assert C.decode_command(raw, from_server=False) == C.CreateChanRequest("", 1, 13)


def test_not_found_default_reply_flag() -> None:
    assert C.NotFoundResponse(1).reply == DO_REPLY


def test_error_cid_rule() -> None:
    """p1 of an ERROR: the channel's CID for SID requests, the request p1 for SEARCH."""
    sids = {0: 0x9E}
    write = split_datagram(C.WriteRequest.from_values(dbr.LONG, [1], sid=0, cid=0x9E).encode())[0]
    assert C.error_cid(write, sids) == 0x9E
    assert C.error_cid(write.header._replace(parameter1=5), sids) == 0xFFFFFFFF
    search = split_datagram(C.SearchRequest("x", 0x1234).encode())[0]
    assert C.error_cid(search, sids) == 0x1234
    assert C.error_cid(split_datagram(C.ClientNameRequest("u").encode())[0], sids) == 0xFFFFFFFF
