"""Channel Access protocol constants: command codes, version gates, ports, sizes, masks.

Everything here is plain data taken from ca-protocol.md (which cites caProto.h, db_access.h,
caeventmask.h and alarm.h of EPICS base 7.0.10).  Command codes are plain ``int`` constants
because they sit on the hot dispatch path; :data:`COMMAND_NAMES` gives their names::

    >>> COMMAND_NAMES[CREATE_CHAN]
    'CREATE_CHAN'
    >>> supports(MINOR_VERSION, "dynamic_count")
    True
"""

from __future__ import annotations

__all__ = [
    "VERSION",
    "EVENT_ADD",
    "EVENT_CANCEL",
    "READ",
    "WRITE",
    "SNAPSHOT",
    "SEARCH",
    "BUILD",
    "EVENTS_OFF",
    "EVENTS_ON",
    "READ_SYNC",
    "ERROR",
    "CLEAR_CHANNEL",
    "RSRV_IS_UP",
    "NOT_FOUND",
    "READ_NOTIFY",
    "READ_BUILD",
    "REPEATER_CONFIRM",
    "CREATE_CHAN",
    "WRITE_NOTIFY",
    "CLIENT_NAME",
    "HOST_NAME",
    "ACCESS_RIGHTS",
    "ECHO",
    "REPEATER_REGISTER",
    "SIGNAL",
    "CREATE_CH_FAIL",
    "SERVER_DISCONN",
    "COMMAND_NAMES",
    "LAST_COMMAND",
    "OBSOLETE_COMMANDS",
    "MAJOR_VERSION",
    "MINOR_VERSION",
    "MINIMUM_SUPPORTED_MINOR",
    "MINOR_GATES",
    "supports",
    "SERVER_PORT",
    "REPEATER_PORT",
    "HEADER_SIZE",
    "EXTENDED_HEADER_SIZE",
    "MESSAGE_ALIGN",
    "MAX_TCP",
    "MAX_UDP_SEND",
    "MAX_UDP_RECV",
    "ETHERNET_MAX_UDP",
    "MAX_ARRAY_BYTES_DEFAULT",
    "MAX_STRING_SIZE",
    "MAX_UNITS_SIZE",
    "MAX_ENUM_STRING_SIZE",
    "MAX_ENUM_STATES",
    "MAX_PV_NAME_SIZE",
    "MAX_CLIENT_NAME_SIZE",
    "DONT_REPLY",
    "DO_REPLY",
    "SEQUENCE_VALID",
    "ANY_ADDRESS",
    "PRIORITY_MIN",
    "PRIORITY_MAX",
    "PRIORITY_DEFAULT",
    "ACCESS_NONE",
    "ACCESS_READ",
    "ACCESS_WRITE",
    "ACCESS_READ_WRITE",
    "DBE_VALUE",
    "DBE_LOG",
    "DBE_ARCHIVE",
    "DBE_ALARM",
    "DBE_PROPERTY",
    "ALARM_SEVERITIES",
    "ALARM_STATUSES",
]

# -- command codes (§2.1) ------------------------------------------------------------------
VERSION = 0
EVENT_ADD = 1
EVENT_CANCEL = 2
READ = 3
WRITE = 4
SNAPSHOT = 5
SEARCH = 6
BUILD = 7
EVENTS_OFF = 8
EVENTS_ON = 9
READ_SYNC = 10
ERROR = 11
CLEAR_CHANNEL = 12
RSRV_IS_UP = 13
NOT_FOUND = 14
READ_NOTIFY = 15
READ_BUILD = 16
REPEATER_CONFIRM = 17
CREATE_CHAN = 18
WRITE_NOTIFY = 19
CLIENT_NAME = 20
HOST_NAME = 21
ACCESS_RIGHTS = 22
ECHO = 23
REPEATER_REGISTER = 24
SIGNAL = 25
CREATE_CH_FAIL = 26
SERVER_DISCONN = 27
#: highest defined code; RSRV treats anything above as "invalid (damaged?) request code"
LAST_COMMAND = SERVER_DISCONN

COMMAND_NAMES: dict[int, str] = {
    VERSION: "VERSION",
    EVENT_ADD: "EVENT_ADD",
    EVENT_CANCEL: "EVENT_CANCEL",
    READ: "READ",
    WRITE: "WRITE",
    SNAPSHOT: "SNAPSHOT",
    SEARCH: "SEARCH",
    BUILD: "BUILD",
    EVENTS_OFF: "EVENTS_OFF",
    EVENTS_ON: "EVENTS_ON",
    READ_SYNC: "READ_SYNC",
    ERROR: "ERROR",
    CLEAR_CHANNEL: "CLEAR_CHANNEL",
    RSRV_IS_UP: "RSRV_IS_UP",
    NOT_FOUND: "NOT_FOUND",
    READ_NOTIFY: "READ_NOTIFY",
    READ_BUILD: "READ_BUILD",
    REPEATER_CONFIRM: "REPEATER_CONFIRM",
    CREATE_CHAN: "CREATE_CHAN",
    WRITE_NOTIFY: "WRITE_NOTIFY",
    CLIENT_NAME: "CLIENT_NAME",
    HOST_NAME: "HOST_NAME",
    ACCESS_RIGHTS: "ACCESS_RIGHTS",
    ECHO: "ECHO",
    REPEATER_REGISTER: "REPEATER_REGISTER",
    SIGNAL: "SIGNAL",
    CREATE_CH_FAIL: "CREATE_CH_FAIL",
    SERVER_DISCONN: "SERVER_DISCONN",
}

#: codes no current peer sends; RSRV answers them with ERROR ECA_INTERNAL and a disconnect
OBSOLETE_COMMANDS = frozenset({SNAPSHOT, BUILD, READ_BUILD, SIGNAL})

# -- versions and their feature gates (§2.2) -------------------------------------------------
MAJOR_VERSION = 4
#: the minor version we announce (CA_MINOR_PROTOCOL_REVISION)
MINOR_VERSION = 13
#: RSRV ignores peers older than this (CA_MINIMUM_SUPPORTED_VERSION)
MINIMUM_SUPPORTED_MINOR = 4

#: feature -> the lowest peer minor version that has it (ca-protocol.md §2.2)
MINOR_GATES: dict[str, int] = {
    "client_host_name": 1,  # CLIENT_NAME / HOST_NAME
    "notify_status": 1,  # status in READ_NOTIFY / WRITE_NOTIFY replies
    "search_reply_minor": 1,  # u16 server minor appended to UDP search replies
    "access_rights": 2,  # ACCESS_RIGHTS messages
    "create_chan_type": 2,  # CREATE_CHAN reply carries native type and count
    "echo": 3,  # ECHO (READ_SYNC before)
    "create_chan_name": 4,  # CREATE_CHAN carries the name, SEARCH dcnt the minor
    "search_reply_port": 5,  # search reply dtype = server TCP port
    "create_ch_fail": 6,  # CREATE_CH_FAIL (ERROR before)
    "server_disconn": 7,  # SERVER_DISCONN (PCAS casStrmClient::disconnectChan gates on CA_V47)
    "search_reply_ip": 8,  # search reply p1 = server IPv4 (0xFFFFFFFF: use sender)
    "extended_header": 9,  # 24-byte headers / large arrays; priority in VERSION
    "beacon_counter": 10,  # beacon sequence counter
    "udp_sequence": 11,  # UDP VERSION sequence number echoed by the server
    "tcp_search": 12,  # SEARCH over TCP, NOT_FOUND for DO_REPLY
    "dynamic_count": 13,  # element count 0 = current length
}


def supports(minor: int, feature: str) -> bool:
    """Does a peer announcing ``minor`` have ``feature`` (a key of :data:`MINOR_GATES`)?

    >>> supports(8, "extended_header")
    False
    """
    return minor >= MINOR_GATES[feature]


# -- ports (§4.1) ----------------------------------------------------------------------------
SERVER_PORT = 5064
REPEATER_PORT = 5065

# -- sizes (§1) --------------------------------------------------------------------------------
HEADER_SIZE = 16
EXTENDED_HEADER_SIZE = 24
#: every payload is zero-padded to a multiple of this (CA_MESSAGE_ALIGN)
MESSAGE_ALIGN = 8
#: largest message before minor 9
MAX_TCP = 16384
#: libca's outgoing search datagram buffer
MAX_UDP_SEND = 1024
MAX_UDP_RECV = 0xFFFF + 16
ETHERNET_MAX_UDP = 1472
MAX_ARRAY_BYTES_DEFAULT = 16384

MAX_STRING_SIZE = 40
MAX_UNITS_SIZE = 8
MAX_ENUM_STRING_SIZE = 26
MAX_ENUM_STATES = 16
#: RSRV's ``unreasonablePVNameSize``: longer names are rejected
MAX_PV_NAME_SIZE = 500
#: longest CLIENT_NAME / HOST_NAME payload RSRV accepts
MAX_CLIENT_NAME_SIZE = 512

# -- borrowed header fields -----------------------------------------------------------------
#: SEARCH dtype: reply only when found (what libca sends over UDP)
DONT_REPLY = 5
#: SEARCH dtype: reply NOT_FOUND over TCP when the name is unknown
DO_REPLY = 10
#: VERSION dtype over UDP: p1 holds a valid search sequence number
SEQUENCE_VALID = 1
#: search reply p1 meaning "connect to the address the reply came from"
ANY_ADDRESS = 0xFFFFFFFF

PRIORITY_MIN = 0
PRIORITY_MAX = 99
PRIORITY_DEFAULT = 0

# -- access rights (ACCESS_RIGHTS p2, §5.4) ----------------------------------------------------
ACCESS_NONE = 0
ACCESS_READ = 1
ACCESS_WRITE = 2
ACCESS_READ_WRITE = 3

# -- subscription event mask (§5.1) -------------------------------------------------------------
DBE_VALUE = 1
DBE_LOG = 2
DBE_ARCHIVE = DBE_LOG
DBE_ALARM = 4
DBE_PROPERTY = 8

# -- alarms (§7, menuAlarmSevr / menuAlarmStat) ---------------------------------------------------
ALARM_SEVERITIES: tuple[str, ...] = ("NO_ALARM", "MINOR", "MAJOR", "INVALID")
ALARM_STATUSES: tuple[str, ...] = (
    "NO_ALARM",
    "READ",
    "WRITE",
    "HIHI",
    "HIGH",
    "LOLO",
    "LOW",
    "STATE",
    "COS",
    "COMM",
    "TIMEOUT",
    "HWLIMIT",
    "CALC",
    "SCAN",
    "LINK",
    "SOFT",
    "BAD_SUB",
    "UDF",
    "DISABLE",
    "SIMM",
    "READ_ACCESS",
    "WRITE_ACCESS",
)
