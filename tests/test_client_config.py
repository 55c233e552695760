"""Client configuration is forgiving as pvxs's is: a bad EPICS_PVA_ADDR_LIST entry or port is
logged and skipped, never fatal to the other entries; and pvRequest option fields that start
with an underscore are reachable as attributes (``R.record._options``), as in p4p."""

from __future__ import annotations

import logging

from capva._aio.config import ClientConfig
from capva.pva.pvrequest import parse_request


def test_bad_address_entries_are_skipped(caplog):
    with caplog.at_level(logging.WARNING, logger="capva.config"):
        c = ClientConfig.from_env(
            {
                "EPICS_PVA_ADDR_LIST": "nosuchhost.invalid 127.0.0.1:5099 not..valid..host",
                "EPICS_PVA_BROADCAST_PORT": "abc",
            }
        )
    assert c.addr_list == [("127.0.0.1", 5099)]
    assert c.udp_port == 5076
    assert sum("ignoring" in r.getMessage() for r in caplog.records) == 3


def test_name_servers_default_port_is_the_server_port():
    c = ClientConfig.from_env(
        {"EPICS_PVA_NAME_SERVERS": "127.0.0.1 127.0.0.2:7000", "EPICS_PVA_SERVER_PORT": "6000"}
    )
    assert c.name_servers == [("127.0.0.1", 6000), ("127.0.0.2", 7000)]


def test_underscore_fields_by_attribute():
    R = parse_request("record[process=true]field(value)")
    assert R.record._options.process == "true"
