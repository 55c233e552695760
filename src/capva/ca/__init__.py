"""Sans-I/O Channel Access core: headers, commands, DBR types and conversions, state rules.

Nothing here opens sockets, starts threads or reads the environment (design.md §1): the
functions take bytes (and the facts a server knows about its PVs) and return messages,
bytes and verdicts.  The layers, bottom up:

* :mod:`~capva.ca.framing` — 16/24-byte headers, padding, :class:`CAMessageReader`
  (TCP) and :func:`split_datagram` (UDP);
* :mod:`~capva.ca.commands` — one small class per command and sender, with
  :func:`decode_command`;
* :mod:`~capva.ca.dbr` — the DBR layouts of type ids 0..38, :class:`Metadata`,
  ``encode``/``decode``, EPICS-epoch helpers;
* :mod:`~capva.ca.convert` — RSRV's conversions between native and requested types,
  element-count rules, whole read replies and writes;
* :mod:`~capva.ca.status` — ECA codes as libca defines them;
* :mod:`~capva.ca.state` — what each side accepts in which state, as data;
* :mod:`~capva.ca.constants` — command codes, version gates, ports, sizes, masks.

Malformed input raises :class:`CADecodeError` and nothing else.

    >>> from capva.ca import CAMessageReader, decode_command
    >>> [decode_command(m, from_server=True) for m in CAMessageReader().feed(
    ...     bytes.fromhex("00160000000000000000000100000003"))]
    [AccessRightsResponse(cid=1, access_rights=3)]
"""

from .commands import Command, decode_command
from .dbr import DBR, ChannelType, Metadata
from .errors import CADecodeError
from .framing import CAMessageReader, RawMessage, split_datagram
from .state import Action, ServerCircuit, Verdict

__all__ = [
    "CADecodeError",
    "CAMessageReader",
    "RawMessage",
    "split_datagram",
    "Command",
    "decode_command",
    "DBR",
    "ChannelType",
    "Metadata",
    "Action",
    "Verdict",
    "ServerCircuit",
]
