"""ECA status codes: values, severities and texts exactly as libca defines them.

Checked against caerr.h (installed by epicscorelibs), libca's ``ca_message()`` (ctypes),
and the complete list in ca-protocol.md §5.5."""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pytest

from capva.ca import status as S

# ca-protocol.md §5.5, "Complete list" ("d" marks defunct codes there)
DOC_LIST = (
    "NORMAL=1; MAXIOC=10 d; UKNHOST=18 d; UKNSERV=26 d; SOCK=34 d; CONN=40 d; ALLOCMEM=48; UKNCHAN=56 d; "
    "UKNFIELD=64 d; TOLARGE=72; TIMEOUT=80; NOSUPPORT=88 d; STRTOBIG=96 d; DISCONNCHID=106 d; BADTYPE=114; "
    "CHIDNOTFND=123 d; CHIDRETRY=131 d; INTERNAL=142; DBLCLFAIL=144 d; GETFAIL=152; PUTFAIL=160; "
    "ADDFAIL=168 d; BADCOUNT=176; BADSTR=186; DISCONN=192; DBLCHNL=200; EVDISALLOW=210; BUILDGET=216 d; "
    "NEEDSFP=224 d; OVEVFAIL=232 d; BADMONID=242; NEWADDR=248 d; NEWCONN=259 d; NOCACTX=264 d; "
    "DEFUNCT=278 d; EMPTYSTR=280 d; NOREPEATER=288 d; NOCHANMSG=296 d; DLCKREST=304 d; SERVBEHIND=312 d; "
    "NOCAST=320 d; BADMASK=330; IODONE=339; IOINPROGRESS=347; BADSYNCGRP=354; PUTCBINPROG=362; "
    "NORDACCESS=368; NOWTACCESS=376; ANACHRONISM=386; NOSEARCHADDR=392; NOCONVERT=400; BADCHID=410; "
    "BADFUNCPTR=418; ISATTACHED=424; UNAVAILINSERV=432; CHANDESTROY=440; BADPRIORITY=450; NOTTHREADED=458; "
    "16KARRAYCLIENT=464; CONNSEQTMO=472; UNRESPTMO=480"
)


def _doc() -> dict[str, tuple[int, bool]]:
    out = {}
    for item in DOC_LIST.split("; "):
        name, rest = item.split("=")
        value, _, d = rest.partition(" ")
        out["ECA_" + name] = (int(value), d == "d")
    return out


def test_table_equals_doc_list() -> None:
    doc = _doc()
    assert len(S.STATUS) == len(doc) == 61
    for name, (value, defunct) in doc.items():
        st = S.STATUS_BY_NAME[name]
        assert st.value == value == getattr(S, name)
        assert st.defunct is defunct
        assert S.STATUS[value] is st


def test_server_codes_of_the_doc_table() -> None:
    assert (S.ECA_NORMAL, S.ECA_ALLOCMEM, S.ECA_TOLARGE, S.ECA_BADTYPE, S.ECA_INTERNAL) == (
        1,
        48,
        72,
        114,
        142,
    )
    assert (S.ECA_GETFAIL, S.ECA_PUTFAIL, S.ECA_BADCOUNT, S.ECA_BADSTR, S.ECA_BADMONID) == (
        152,
        160,
        176,
        186,
        242,
    )
    assert (S.ECA_DEFUNCT, S.ECA_BADMASK, S.ECA_PUTCBINPROG, S.ECA_NORDACCESS) == (278, 330, 362, 368)
    assert (S.ECA_NOWTACCESS, S.ECA_NOCONVERT, S.ECA_BADCHID, S.ECA_UNAVAILINSERV) == (376, 400, 410, 432)
    assert S.ECA_16KARRAYCLIENT == 464


def _epics_dir() -> Path:
    try:
        import epicscorelibs.path
    except ImportError:  # pragma: no cover
        pytest.fail(
            "epicscorelibs (installed with the p4p test extra) is required for the libCom/libca cross-checks"
        )
    return Path(epicscorelibs.path.lib_path).parent


def test_table_equals_caerr_h() -> None:
    src = (_epics_dir() / "include" / "caerr.h").read_text()
    sev = {"CA_K_INFO": 3, "CA_K_ERROR": 2, "CA_K_SUCCESS": 1, "CA_K_WARNING": 0, "CA_K_FATAL": 6}
    found = re.findall(r"#define (ECA_\w+)\s+DEFMSG\((\w+),\s*(\d+)\)", src)
    assert len(found) == 61
    for name, severity, number in found:
        st = S.STATUS_BY_NAME[name]
        assert (st.message_number, st.severity) == (int(number), sev[severity])
        assert st.value == S.eca_value(int(number), sev[severity])


def test_messages_equal_libca() -> None:
    path = _epics_dir() / "lib" / "libca.so"
    if not path.exists():  # pragma: no cover
        pytest.fail("libca.so not found in epicscorelibs")
    lib = ctypes.CDLL(str(path))
    lib.ca_message.restype = ctypes.c_char_p
    lib.ca_message.argtypes = [ctypes.c_long]
    for st in S.STATUS.values():
        assert lib.ca_message(st.value).decode("latin-1") == st.message


def test_helpers() -> None:
    assert S.eca_name(0x178) == "ECA_NOWTACCESS" and S.eca_message(0x178) == "Write access denied"
    assert S.eca_name(0x10178) == "ECA_NOWTACCESS"  # only the low 16 bits matter
    assert S.eca_name(7) == "ECA_0x0007" and "unknown" in S.eca_message(7)
    assert S.eca_severity(S.ECA_INTERNAL) == S.CA_K_FATAL and S.SEVERITY_NAMES[6] == "FATAL"
    assert S.eca_message_number(S.ECA_UNRESPTMO) == 60
    assert S.is_success(S.ECA_NORMAL) and S.is_success(S.ECA_IODONE) and not S.is_success(S.ECA_GETFAIL)
    assert S.STATUS[S.ECA_NORMAL].success and not S.STATUS[S.ECA_PUTFAIL].success
