"""The one exception every CA decoder raises on malformed input."""

from __future__ import annotations

from .._wire import WireError

__all__ = ["CADecodeError"]


class CADecodeError(WireError):
    """Bytes from the network that are not valid Channel Access.

    Raised for truncated headers or payloads, sizes that the input cannot back up, DBR type
    ids outside 0..38, negative or absurd element counts, strings that miss their NUL where
    the protocol requires one, and malformed fixed-size payloads (an EVENT_ADD request
    shorter than 16 bytes, an ERROR message shorter than the header it must embed, ...).

    It derives from :class:`ValueError` (through :class:`capva._wire.WireError`, like
    :class:`capva.pva.DecodeError`), so a transport catches exactly this one class, answers
    with an ERROR message or closes the circuit, and keeps serving every other peer::

        try:
            messages = reader.feed(data)
        except CADecodeError:
            transport.close()

    No decoder in :mod:`capva.ca` raises anything else on bad input, and none allocates more
    memory than the length of its input justifies before checking that length.
    """
