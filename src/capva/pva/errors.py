"""The one exception every PVA decoder raises on malformed input."""

from __future__ import annotations

from .._wire import WireError

__all__ = ["DecodeError"]


class DecodeError(WireError):
    """Bytes from the network that are not valid PVA: truncated messages, absurd sizes, bad
    type codes, introspection-cache keys never defined, nesting beyond
    :data:`capva.pva.codec.MAX_DEPTH` levels.

    It derives from :class:`ValueError` (through :class:`capva._wire.WireError`) so that a
    transport can catch exactly this one class, reply with an error or drop the connection,
    and keep serving every other peer.  No decoder raises anything else on bad input, and
    none allocates more than the input length justifies before checking it.
    """
