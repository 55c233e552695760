"""The acceptance rules of ca-protocol.md §2 and §10, as tables and validators."""

from __future__ import annotations

import pytest

from capva.ca import commands as C
from capva.ca import dbr
from capva.ca.constants import (
    BUILD,
    CREATE_CH_FAIL,
    ECHO,
    ERROR,
    EVENT_CANCEL,
    EVENTS_OFF,
    LAST_COMMAND,
    READ_BUILD,
    SIGNAL,
    SNAPSHOT,
)
from capva.ca.framing import RawMessage, encode_cstring, encode_message, split_datagram
from capva.ca.state import (
    ACCEPT,
    CLIENT_TCP_COMMANDS,
    CLIENT_UDP_COMMANDS,
    SERVER_TCP_COMMANDS,
    Action,
    ChannelEvent,
    ChannelState,
    ClientCircuit,
    ServerCircuit,
    Verdict,
    check_operation,
    next_channel_state,
    search_reply_datagram,
    server_datagram,
)
from capva.ca.status import (
    ECA_BADCOUNT,
    ECA_BADMASK,
    ECA_BADMONID,
    ECA_BADTYPE,
    ECA_DEFUNCT,
    ECA_INTERNAL,
    ECA_NORDACCESS,
    ECA_NOWTACCESS,
    ECA_TOLARGE,
)


def raw(cmd: C.Command) -> RawMessage:
    return split_datagram(cmd.encode())[0]


def versioned(minor: int = 13) -> ServerCircuit:
    c = ServerCircuit()
    assert c.receive(raw(C.VersionRequest(0, minor))) == ACCEPT
    return c


def test_tables_follow_the_code_table() -> None:
    obsolete = {SNAPSHOT, BUILD, READ_BUILD, SIGNAL}
    assert not obsolete & (CLIENT_TCP_COMMANDS | SERVER_TCP_COMMANDS)
    assert set(C.CLIENT_COMMANDS) - CLIENT_TCP_COMMANDS == {24}  # REPEATER_REGISTER is UDP only
    assert ERROR not in CLIENT_TCP_COMMANDS and EVENT_CANCEL not in SERVER_TCP_COMMANDS
    assert CLIENT_UDP_COMMANDS == {0, 6}


def test_version_must_come_first() -> None:
    c = ServerCircuit()
    v = c.receive(raw(C.CreateChanRequest("dval", 1)))
    assert v == Verdict(Action.ERROR, ECA_DEFUNCT, "CAS: Client version 0 too old")
    assert c.receive(raw(C.VersionRequest(5, 13))) == ACCEPT
    assert (c.client_minor, c.priority) == (13, 5)
    # later VERSIONs update silently, RSRV never answers them again
    assert c.receive(raw(C.VersionRequest(7, 12))).action is Action.IGNORE
    assert (c.client_minor, c.priority) == (12, 7)
    assert c.receive(raw(C.CreateChanRequest("dval", 1))) == ACCEPT


def test_version_limits() -> None:
    assert ServerCircuit().receive(raw(C.VersionRequest(100, 13))).action is Action.CLOSE
    c = ServerCircuit()
    v = c.receive(raw(C.VersionRequest(0, 3)))
    assert v.action is Action.ERROR and v.status == ECA_DEFUNCT and not c.versioned


@pytest.mark.parametrize(
    "code", [SNAPSHOT, BUILD, READ_BUILD, SIGNAL, ERROR, CREATE_CH_FAIL, LAST_COMMAND + 1, 0xFFFF]
)
def test_bad_codes_close(code: int) -> None:
    v = versioned().receive(split_datagram(encode_message(code))[0])
    assert v == Verdict(Action.ERROR_CLOSE, ECA_INTERNAL, "CAS: invalid (damaged?) request code from TCP")


def test_misaligned_message_closes() -> None:
    m = RawMessage(20, 5, 0, 0, 0, 0, b"root\0")
    v = versioned().receive(m)
    assert (v.action, v.status) == (Action.ERROR_CLOSE, ECA_INTERNAL) and "Missaligned" in v.text


def test_oversize_keeps_circuit() -> None:
    m = RawMessage(4, 100000, 6, 12500, 0, 1, b"", True, True)
    v = versioned().receive(m)
    assert (v.action, v.status) == (Action.ERROR, ECA_TOLARGE)


def test_names() -> None:
    c = versioned()
    assert c.receive(raw(C.ClientNameRequest("root"))) == ACCEPT
    assert c.receive(raw(C.HostNameRequest("vm"))) == ACCEPT
    assert (c.user_name, c.host_name) == ("root", "vm")
    for bad in (b"", b"noterm!!", b"x" * 600 + b"\0"):
        m = split_datagram(encode_message(21, bad))[0]
        assert c.receive(m).action is Action.ERROR_CLOSE
    c.channel_created()
    v = c.receive(raw(C.HostNameRequest("other")))
    assert (v.action, v.status) == (Action.ERROR, ECA_INTERNAL) and c.host_name == "vm"
    c.channel_cleared()
    c.channel_cleared()
    assert c.channels == 0 and c.receive(raw(C.HostNameRequest("other"))) == ACCEPT


def test_encoded_name_limit_boundary() -> None:
    ok = split_datagram(encode_message(20, encode_cstring("u" * 500)))[0]
    assert ok.payload_size == 504 and versioned().receive(ok) == ACCEPT


# -- channel operations ---------------------------------------------------------------------------------


def test_unknown_sid() -> None:
    for cmd in (
        C.ReadNotifyRequest(6, 1, 99, 1),
        C.ClearChannelRequest(99, 1),
        C.WriteRequest(6, 1, 99, 1, bytes(8)),
    ):
        assert check_operation(cmd, sid_known=False) == Verdict(
            Action.ERROR_CLOSE, ECA_INTERNAL, "Bad Resource ID"
        )


def test_invalid_types() -> None:
    assert check_operation(C.ReadNotifyRequest(39, 1, 0, 1)).action is Action.CLOSE
    assert check_operation(C.EventAddRequest(0xFFFF, 1, 0, 1)).action is Action.CLOSE
    assert check_operation(C.ReadRequest(39, 1, 0, 1)).action is Action.CLOSE
    assert check_operation(C.WriteRequest(39, 1, 0, 1, bytes(8))) == Verdict(
        Action.ERROR, ECA_BADTYPE, "invalid DBR type 39 for a write"
    )
    v = check_operation(C.WriteNotifyRequest(dbr.TIME_DOUBLE, 1, 0, 1, bytes(24)))
    assert (v.action, v.status) == (Action.REPLY, ECA_BADTYPE)
    assert check_operation(C.WriteNotifyRequest(dbr.PUT_ACKS, 1, 0, 1, bytes(8))) == ACCEPT


def test_write_payload_must_hold_its_count() -> None:
    v = check_operation(C.WriteNotifyRequest(dbr.DOUBLE, 3, 0, 1, bytes(16)))
    assert (v.action, v.status) == (Action.REPLY, ECA_BADCOUNT)
    assert check_operation(C.WriteRequest(dbr.DOUBLE, 3, 0, 1, bytes(16))).status == ECA_BADCOUNT
    # libca's compact single string is fine
    assert check_operation(C.WriteRequest(dbr.STRING, 1, 0, 1, b"hi\0\0\0\0\0\0")) == ACCEPT


def test_access_rights() -> None:
    v = check_operation(C.ReadNotifyRequest(6, 1, 0, 1), readable=False)
    assert (v.action, v.status) == (Action.REPLY, ECA_NORDACCESS)
    assert check_operation(C.EventAddRequest(6, 1, 0, 1), readable=False).action is Action.REPLY
    assert check_operation(C.ReadRequest(6, 1, 0, 1), readable=False).action is Action.ERROR
    v = check_operation(C.WriteRequest(6, 1, 0, 1, bytes(8)), writable=False)
    assert (v.action, v.status) == (Action.ERROR, ECA_NOWTACCESS)
    v = check_operation(C.WriteNotifyRequest(6, 1, 0, 1, bytes(8)), writable=False)
    assert (v.action, v.status) == (Action.REPLY, ECA_NOWTACCESS)
    assert check_operation(C.ReadNotifyRequest(6, 1, 0, 1), writable=False) == ACCEPT


def test_subscriptions() -> None:
    v = check_operation(C.EventAddRequest(6, 1, 0, 1, mask=0))
    assert (v.action, v.status) == (Action.ERROR, ECA_BADMASK)
    v = check_operation(C.EventCancelRequest(6, 1, 0, 1), subscription_known=False)
    assert (v.action, v.status) == (Action.ERROR_CLOSE, ECA_BADMONID)
    assert check_operation(C.EventCancelRequest(6, 1, 0, 1)) == ACCEPT
    assert check_operation(C.EchoRequest()) == ACCEPT


def test_client_circuit() -> None:
    c = ClientCircuit()
    assert c.receive(raw(C.VersionResponse(13))) == ACCEPT and c.server_minor == 13
    for code in (EVENT_CANCEL, EVENTS_OFF, SNAPSHOT, 99):
        assert c.receive(split_datagram(encode_message(code))[0]).action is Action.CLOSE
    assert c.receive(split_datagram(encode_message(ECHO))[0]) == ACCEPT


# -- search datagrams ----------------------------------------------------------------------------------------


def test_server_datagram() -> None:
    dg = split_datagram(
        C.VersionRequest.udp(7).encode() + C.SearchRequest("a", 1).encode() + C.SearchRequest("b", 2).encode()
    )
    version, searches = server_datagram(dg)
    assert version == C.VersionRequest.udp(7) and [s.name for s in searches] == ["a", "b"]
    # no VERSION first: dropped
    assert server_datagram(split_datagram(C.SearchRequest("a", 1).encode())) == (None, [])
    assert server_datagram([]) == (None, [])
    # minor 0 (caproto-style VERSION with dcnt 0) is unsupported
    assert server_datagram(
        split_datagram(C.VersionRequest(0, 0).encode() + C.SearchRequest("a", 1).encode())
    ) == (
        None,
        [],
    )
    # an ECHO (or anything else) ends the datagram; searches before it stand
    dg = split_datagram(
        C.VersionRequest.udp(1).encode()
        + C.SearchRequest("a", 1).encode()
        + C.EchoRequest().encode()
        + C.SearchRequest("b", 2).encode()
    )
    assert [s.name for s in server_datagram(dg)[1]] == ["a"]
    # a later VERSION replaces the first; a bad one ends the datagram
    dg = split_datagram(
        C.VersionRequest.udp(1).encode()
        + C.VersionRequest.udp(2, 12).encode()
        + C.SearchRequest("a", 1).encode()
    )
    version, searches = server_datagram(dg)
    assert version is not None and version.sequence == 2 and len(searches) == 1
    dg = split_datagram(
        C.VersionRequest.udp(1).encode() + C.VersionRequest(0, 2).encode() + C.SearchRequest("a", 1).encode()
    )
    assert server_datagram(dg)[1] == []
    # a malformed SEARCH ends it too
    dg = split_datagram(C.VersionRequest.udp(1).encode() + encode_message(6, b"nonulher", 5, 13, 1, 1))
    assert server_datagram(dg)[1] == []


def test_search_reply_datagram() -> None:
    """Vector 2 of §9: VERSION(flag 1, 13, seq) + the reply, only for minor >= 11."""
    rep = [C.SearchResponse(15064, 1)]
    wire = search_reply_datagram(C.VersionRequest.udp(1), rep)
    assert wire.hex() == "000000000001000d0000000100000000000600083ad80000ffffffff00000001000d000000000000"
    old = search_reply_datagram(C.VersionRequest.udp(1, 10), rep)
    assert old == rep[0].encode()
    assert search_reply_datagram(C.VersionRequest.udp(1), []) == b""  # unknown names: nothing


# -- client channel states --------------------------------------------------------------------------------------


def test_channel_states() -> None:
    s = ChannelState.SEARCHING
    for event, expect in (
        (ChannelEvent.SEARCH_REPLY, ChannelState.CREATING),
        (ChannelEvent.CREATE_FAILED, ChannelState.SEARCHING),
        (ChannelEvent.SEARCH_REPLY, ChannelState.CREATING),
        (ChannelEvent.CREATED, ChannelState.CONNECTED),
        (ChannelEvent.SERVER_DISCONN, ChannelState.SEARCHING),
        (ChannelEvent.SEARCH_REPLY, ChannelState.CREATING),
        (ChannelEvent.CREATED, ChannelState.CONNECTED),
        (ChannelEvent.CLEAR, ChannelState.CLEARING),
        (ChannelEvent.CLEARED, ChannelState.CLOSED),
    ):
        nxt = next_channel_state(s, event)
        assert nxt is expect
        s = nxt
    assert next_channel_state(ChannelState.CREATING, ChannelEvent.SEARCH_REPLY) is None


def test_unreasonable_names_are_not_searched() -> None:
    dg = split_datagram(
        C.VersionRequest.udp(1).encode()
        + C.SearchRequest("x" * 501, 1).encode()
        + C.SearchRequest("ok", 2).encode()
    )
    assert [s.name for s in server_datagram(dg)[1]] == ["ok"]


# -- the plain search datagram fast path -------------------------------------------------------


def _general(data: bytes, port: int, found) -> tuple[object, bytes]:
    """The general reading of a search datagram and the reply to it."""
    from capva.ca.constants import ANY_ADDRESS, MINOR_VERSION
    from capva.ca.errors import CADecodeError
    from capva.ca.state import search_reply_datagram, server_datagram

    try:
        msgs = split_datagram(data)
    except CADecodeError:
        return None, b""
    version, searches = server_datagram(msgs)
    if version is None or not searches:
        return None, b""
    reading = (version.version, version.sequence, [(s.name, s.cid) for s in searches])
    replies = [C.SearchResponse(port, s.cid, ANY_ADDRESS, MINOR_VERSION) for s in searches if found(s.name)]
    return reading, search_reply_datagram(version, replies)


def _plain_cases():
    import random

    rnd = random.Random(5)
    names = ["a", "bench:many:00001", "x" * 39, "é:ü", "y" * 40, "z" * 500, "q" * 501, ""]
    for minor in (3, 4, 10, 11, 13):
        for k in range(0, 5):
            picked = [rnd.choice(names) for _ in range(k)]
            yield C.VersionRequest.udp(rnd.randrange(1 << 32), minor).encode() + b"".join(
                C.SearchRequest(n, cid=rnd.randrange(1 << 32), version=minor).encode() for n in picked if n
            )
    base = C.VersionRequest.udp(7).encode() + C.SearchRequest("ok", cid=3).encode()
    yield base
    yield base[:-1]  # truncated
    yield base + b"\0" * 8  # trailing junk
    yield base + C.EchoRequest().encode() if hasattr(C, "EchoRequest") else base
    yield base[16:]  # no VERSION
    yield base[:16] + base[:16] + base[16:]  # two VERSIONs
    unterminated = bytearray(base)
    unterminated[-8:] = b"abcdefgh"
    yield bytes(unterminated)
    for _ in range(200):
        b = bytearray(base * rnd.randrange(1, 4))
        for _ in range(rnd.randrange(1, 4)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        yield bytes(b)


@pytest.mark.parametrize("data", list(_plain_cases()))
def test_plain_search_datagram_agrees_with_general_path(data):
    """Whenever the fast reading accepts a datagram, it reads it as split_datagram +
    server_datagram do, and its reply has the same bytes; otherwise it declines."""
    from capva.ca.state import plain_search_datagram, plain_search_reply

    def found(name: str) -> bool:
        return len(name) % 2 == 0

    plain = plain_search_datagram(data)
    if plain is None:
        return
    reading, reply = _general(data, 5064, found)
    assert plain == reading
    minor, seq, names = plain
    assert plain_search_reply(minor, seq, 5064, [cid for n, cid in names if found(n)]) == reply


def test_plain_search_datagram_takes_what_libca_sends():
    from capva.ca.state import plain_search_datagram

    data = C.VersionRequest.udp(9, 13).encode() + b"".join(
        C.SearchRequest(f"bench:many:{i:05d}", cid=i, version=13).encode() for i in range(25)
    )
    got = plain_search_datagram(data)
    assert got == (13, 9, [(f"bench:many:{i:05d}", i) for i in range(25)])
