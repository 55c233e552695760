"""ECA status codes, exactly as libca defines them (caerr.h, ``ca_message_text``).

A status value is ``(message number << 3) | severity``; only the low 16 bits travel (p1 of
READ_NOTIFY / WRITE_NOTIFY / EVENT_ADD replies, p2 of ERROR).  The texts are those libca
7.0.10 returns from ``ca_message()``, so a Python client prints what ``caget`` prints::

    >>> ECA_NOWTACCESS, hex(ECA_NOWTACCESS)
    (376, '0x178')
    >>> STATUS[ECA_NOWTACCESS].message
    'Write access denied'
    >>> eca_name(0x98), is_success(ECA_GETFAIL)
    ('ECA_GETFAIL', False)

``defunct`` marks codes caerr.h says current libca and RSRV no longer produce (RSRV still
sends ECA_DEFUNCT for requests before VERSION, so "defunct" is about the feature, not the
code's use).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "CA_K_WARNING",
    "CA_K_SUCCESS",
    "CA_K_ERROR",
    "CA_K_INFO",
    "CA_K_SEVERE",
    "CA_K_FATAL",
    "SEVERITY_NAMES",
    "ECAStatus",
    "STATUS",
    "STATUS_BY_NAME",
    "eca_value",
    "eca_name",
    "eca_message",
    "eca_severity",
    "eca_message_number",
    "is_success",
    "ECA_NORMAL",
    "ECA_MAXIOC",
    "ECA_UKNHOST",
    "ECA_UKNSERV",
    "ECA_SOCK",
    "ECA_CONN",
    "ECA_ALLOCMEM",
    "ECA_UKNCHAN",
    "ECA_UKNFIELD",
    "ECA_TOLARGE",
    "ECA_TIMEOUT",
    "ECA_NOSUPPORT",
    "ECA_STRTOBIG",
    "ECA_DISCONNCHID",
    "ECA_BADTYPE",
    "ECA_CHIDNOTFND",
    "ECA_CHIDRETRY",
    "ECA_INTERNAL",
    "ECA_DBLCLFAIL",
    "ECA_GETFAIL",
    "ECA_PUTFAIL",
    "ECA_ADDFAIL",
    "ECA_BADCOUNT",
    "ECA_BADSTR",
    "ECA_DISCONN",
    "ECA_DBLCHNL",
    "ECA_EVDISALLOW",
    "ECA_BUILDGET",
    "ECA_NEEDSFP",
    "ECA_OVEVFAIL",
    "ECA_BADMONID",
    "ECA_NEWADDR",
    "ECA_NEWCONN",
    "ECA_NOCACTX",
    "ECA_DEFUNCT",
    "ECA_EMPTYSTR",
    "ECA_NOREPEATER",
    "ECA_NOCHANMSG",
    "ECA_DLCKREST",
    "ECA_SERVBEHIND",
    "ECA_NOCAST",
    "ECA_BADMASK",
    "ECA_IODONE",
    "ECA_IOINPROGRESS",
    "ECA_BADSYNCGRP",
    "ECA_PUTCBINPROG",
    "ECA_NORDACCESS",
    "ECA_NOWTACCESS",
    "ECA_ANACHRONISM",
    "ECA_NOSEARCHADDR",
    "ECA_NOCONVERT",
    "ECA_BADCHID",
    "ECA_BADFUNCPTR",
    "ECA_ISATTACHED",
    "ECA_UNAVAILINSERV",
    "ECA_CHANDESTROY",
    "ECA_BADPRIORITY",
    "ECA_NOTTHREADED",
    "ECA_16KARRAYCLIENT",
    "ECA_CONNSEQTMO",
    "ECA_UNRESPTMO",
]

# severities (caerr.h CA_K_*)
CA_K_WARNING = 0  # unsuccessful
CA_K_SUCCESS = 1  # successful
CA_K_ERROR = 2  # failed, continue
CA_K_INFO = 3  # successful
CA_K_SEVERE = 4  # failed, quit
CA_K_FATAL = CA_K_ERROR | CA_K_SEVERE

SEVERITY_NAMES = {
    CA_K_WARNING: "WARNING",
    CA_K_SUCCESS: "SUCCESS",
    CA_K_ERROR: "ERROR",
    CA_K_INFO: "INFO",
    CA_K_SEVERE: "SEVERE",
    CA_K_FATAL: "FATAL",
}

_M_MSG_NO = 0xFFF8
_M_SEVERITY = 0x0007
_V_MSG_NO = 3

ECA_NORMAL = 1
ECA_MAXIOC = 10
ECA_UKNHOST = 18
ECA_UKNSERV = 26
ECA_SOCK = 34
ECA_CONN = 40
ECA_ALLOCMEM = 48
ECA_UKNCHAN = 56
ECA_UKNFIELD = 64
ECA_TOLARGE = 72
ECA_TIMEOUT = 80
ECA_NOSUPPORT = 88
ECA_STRTOBIG = 96
ECA_DISCONNCHID = 106
ECA_BADTYPE = 114
ECA_CHIDNOTFND = 123
ECA_CHIDRETRY = 131
ECA_INTERNAL = 142
ECA_DBLCLFAIL = 144
ECA_GETFAIL = 152
ECA_PUTFAIL = 160
ECA_ADDFAIL = 168
ECA_BADCOUNT = 176
ECA_BADSTR = 186
ECA_DISCONN = 192
ECA_DBLCHNL = 200
ECA_EVDISALLOW = 210
ECA_BUILDGET = 216
ECA_NEEDSFP = 224
ECA_OVEVFAIL = 232
ECA_BADMONID = 242
ECA_NEWADDR = 248
ECA_NEWCONN = 259
ECA_NOCACTX = 264
ECA_DEFUNCT = 278
ECA_EMPTYSTR = 280
ECA_NOREPEATER = 288
ECA_NOCHANMSG = 296
ECA_DLCKREST = 304
ECA_SERVBEHIND = 312
ECA_NOCAST = 320
ECA_BADMASK = 330
ECA_IODONE = 339
ECA_IOINPROGRESS = 347
ECA_BADSYNCGRP = 354
ECA_PUTCBINPROG = 362
ECA_NORDACCESS = 368
ECA_NOWTACCESS = 376
ECA_ANACHRONISM = 386
ECA_NOSEARCHADDR = 392
ECA_NOCONVERT = 400
ECA_BADCHID = 410
ECA_BADFUNCPTR = 418
ECA_ISATTACHED = 424
ECA_UNAVAILINSERV = 432
ECA_CHANDESTROY = 440
ECA_BADPRIORITY = 450
ECA_NOTTHREADED = 458
ECA_16KARRAYCLIENT = 464
ECA_CONNSEQTMO = 472
ECA_UNRESPTMO = 480


class ECAStatus(NamedTuple):
    """One ECA code: ``value`` is what goes on the wire."""

    name: str
    value: int
    message_number: int
    severity: int
    message: str
    defunct: bool

    @property
    def success(self) -> bool:
        """The severity's success bit (NORMAL, INFO codes)."""
        return bool(self.severity & CA_K_SUCCESS)


def eca_value(message_number: int, severity: int) -> int:
    """Compose a status value the way caerr.h's ``DEFMSG`` does."""
    return ((message_number << _V_MSG_NO) & _M_MSG_NO) | (severity & _M_SEVERITY)


# (name, message number, severity, ca_message() text, defunct per caerr.h)
_TABLE = (
    ("ECA_NORMAL", 0, CA_K_SUCCESS, "Normal successful completion", False),
    ("ECA_MAXIOC", 1, CA_K_ERROR, "Maximum simultaneous IOC connections exceeded", True),
    ("ECA_UKNHOST", 2, CA_K_ERROR, "Unknown internet host", True),
    ("ECA_UKNSERV", 3, CA_K_ERROR, "Unknown internet service", True),
    ("ECA_SOCK", 4, CA_K_ERROR, "Unable to allocate a new socket", True),
    ("ECA_CONN", 5, CA_K_WARNING, "Unable to connect to internet host or service", True),
    ("ECA_ALLOCMEM", 6, CA_K_WARNING, "Unable to allocate additional dynamic memory", False),
    ("ECA_UKNCHAN", 7, CA_K_WARNING, "Unknown IO channel", True),
    ("ECA_UKNFIELD", 8, CA_K_WARNING, "Record field specified inappropriate for channel specified", True),
    (
        "ECA_TOLARGE",
        9,
        CA_K_WARNING,
        "The requested data transfer is greater than available memory or EPICS_CA_MAX_ARRAY_BYTES",
        False,
    ),
    ("ECA_TIMEOUT", 10, CA_K_WARNING, "User specified timeout on IO operation expired", False),
    (
        "ECA_NOSUPPORT",
        11,
        CA_K_WARNING,
        "Sorry, that feature is planned but not supported at this time",
        True,
    ),
    ("ECA_STRTOBIG", 12, CA_K_WARNING, "The supplied string is unusually large", True),
    (
        "ECA_DISCONNCHID",
        13,
        CA_K_ERROR,
        "The request was ignored because the specified channel is disconnected",
        True,
    ),
    ("ECA_BADTYPE", 14, CA_K_ERROR, "The data type specified is invalid", False),
    ("ECA_CHIDNOTFND", 15, CA_K_INFO, "Remote Channel not found", True),
    ("ECA_CHIDRETRY", 16, CA_K_INFO, "Unable to locate all user specified channels", True),
    ("ECA_INTERNAL", 17, CA_K_FATAL, "Channel Access Internal Failure", False),
    ("ECA_DBLCLFAIL", 18, CA_K_WARNING, "The requested local DB operation failed", True),
    ("ECA_GETFAIL", 19, CA_K_WARNING, "Channel read request failed", False),
    ("ECA_PUTFAIL", 20, CA_K_WARNING, "Channel write request failed", False),
    ("ECA_ADDFAIL", 21, CA_K_WARNING, "Channel subscription request failed", True),
    ("ECA_BADCOUNT", 22, CA_K_WARNING, "Invalid element count requested", False),
    ("ECA_BADSTR", 23, CA_K_ERROR, "Invalid string", False),
    ("ECA_DISCONN", 24, CA_K_WARNING, "Virtual circuit disconnect", False),
    ("ECA_DBLCHNL", 25, CA_K_WARNING, "Identical process variable names on multiple servers", False),
    (
        "ECA_EVDISALLOW",
        26,
        CA_K_ERROR,
        "Request inappropriate within subscription (monitor) update callback",
        False,
    ),
    (
        "ECA_BUILDGET",
        27,
        CA_K_WARNING,
        "Database value get for that channel failed during channel search",
        True,
    ),
    (
        "ECA_NEEDSFP",
        28,
        CA_K_WARNING,
        "Unable to initialize without the vxWorks VX_FP_TASK task option set",
        True,
    ),
    (
        "ECA_OVEVFAIL",
        29,
        CA_K_WARNING,
        "Event queue overflow has prevented first pass event after event add",
        True,
    ),
    ("ECA_BADMONID", 30, CA_K_ERROR, "Bad event subscription (monitor) identifier", False),
    ("ECA_NEWADDR", 31, CA_K_WARNING, "Remote channel has new network address", True),
    ("ECA_NEWCONN", 32, CA_K_INFO, "New or resumed network connection", True),
    ("ECA_NOCACTX", 33, CA_K_WARNING, "Specified task isn't a member of a CA context", True),
    ("ECA_DEFUNCT", 34, CA_K_FATAL, "Attempt to use defunct CA feature failed", True),
    ("ECA_EMPTYSTR", 35, CA_K_WARNING, "The supplied string is empty", True),
    (
        "ECA_NOREPEATER",
        36,
        CA_K_WARNING,
        "Unable to spawn the CA repeater thread- auto reconnect will fail",
        True,
    ),
    ("ECA_NOCHANMSG", 37, CA_K_WARNING, "No channel id match for search reply- search reply ignored", True),
    ("ECA_DLCKREST", 38, CA_K_WARNING, "Resetting dead connection- will try to reconnect", True),
    (
        "ECA_SERVBEHIND",
        39,
        CA_K_WARNING,
        "Server (IOC) has fallen behind or is not responding- still waiting",
        True,
    ),
    ("ECA_NOCAST", 40, CA_K_WARNING, "No internet interface with broadcast available", True),
    ("ECA_BADMASK", 41, CA_K_ERROR, "Invalid event selection mask", False),
    ("ECA_IODONE", 42, CA_K_INFO, "IO operations have completed", False),
    ("ECA_IOINPROGRESS", 43, CA_K_INFO, "IO operations are in progress", False),
    ("ECA_BADSYNCGRP", 44, CA_K_ERROR, "Invalid synchronous group identifier", False),
    ("ECA_PUTCBINPROG", 45, CA_K_ERROR, "Put callback timed out", False),
    ("ECA_NORDACCESS", 46, CA_K_WARNING, "Read access denied", False),
    ("ECA_NOWTACCESS", 47, CA_K_WARNING, "Write access denied", False),
    ("ECA_ANACHRONISM", 48, CA_K_ERROR, "Requested feature is no longer supported", False),
    ("ECA_NOSEARCHADDR", 49, CA_K_WARNING, "Empty PV search address list", False),
    (
        "ECA_NOCONVERT",
        50,
        CA_K_WARNING,
        "No reasonable data conversion between client and server types",
        False,
    ),
    ("ECA_BADCHID", 51, CA_K_ERROR, "Invalid channel identifier", False),
    ("ECA_BADFUNCPTR", 52, CA_K_ERROR, "Invalid function pointer", False),
    ("ECA_ISATTACHED", 53, CA_K_WARNING, "Thread is already attached to a client context", False),
    ("ECA_UNAVAILINSERV", 54, CA_K_WARNING, "Not supported by attached service", False),
    ("ECA_CHANDESTROY", 55, CA_K_WARNING, "User destroyed channel", False),
    ("ECA_BADPRIORITY", 56, CA_K_ERROR, "Invalid channel priority", False),
    (
        "ECA_NOTTHREADED",
        57,
        CA_K_ERROR,
        "Preemptive callback not enabled - additional threads may not join context",
        False,
    ),
    (
        "ECA_16KARRAYCLIENT",
        58,
        CA_K_WARNING,
        "Client's protocol revision does not support transfers exceeding 16k bytes",
        False,
    ),
    ("ECA_CONNSEQTMO", 59, CA_K_WARNING, "Virtual circuit connection sequence aborted", False),
    ("ECA_UNRESPTMO", 60, CA_K_WARNING, "Virtual circuit unresponsive", False),
)

#: wire value -> :class:`ECAStatus`
STATUS: dict[int, ECAStatus] = {}
#: "ECA_..." -> :class:`ECAStatus`
STATUS_BY_NAME: dict[str, ECAStatus] = {}
for _name, _num, _sev, _msg, _defunct in _TABLE:
    _st = ECAStatus(_name, eca_value(_num, _sev), _num, _sev, _msg, _defunct)
    STATUS[_st.value] = _st
    STATUS_BY_NAME[_name] = _st
del _name, _num, _sev, _msg, _defunct, _st


def eca_name(value: int) -> str:
    """``"ECA_..."`` for a wire value; unknown values give ``"ECA_0x...."``."""
    st = STATUS.get(value & 0xFFFF)
    return st.name if st is not None else f"ECA_0x{value:04x}"


def eca_message(value: int) -> str:
    """The libca text for a wire value (what ``ca_message()`` returns)."""
    st = STATUS.get(value & 0xFFFF)
    return st.message if st is not None else f"unknown CA status 0x{value:x}"


def eca_severity(value: int) -> int:
    """The severity bits (CA_K_*) of a status value."""
    return value & _M_SEVERITY


def eca_message_number(value: int) -> int:
    """The message number (index into libca's text table) of a status value."""
    return (value & _M_MSG_NO) >> _V_MSG_NO


def is_success(value: int) -> bool:
    """libca's ``CA_EXTRACT_SUCCESS``: true for NORMAL and INFO-severity codes."""
    return bool(value & CA_K_SUCCESS)
