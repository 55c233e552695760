"""Byte-level helpers shared by the protocol cores (no protocol knowledge beyond PVA's
variable-length Size, which CA never uses but costs nothing to share).

Everything here is sans-I/O: functions take a buffer and an offset and return the decoded
item with the next offset, or return ``bytes``.  Structs are precompiled once per layout and
byte order (design.md §4); callers pass ``be`` (big-endian) explicitly because PVA messages
carry their own byte order.

    >>> encode_size(300, False).hex()
    'fe2c010000'
    >>> decode_size(b'\\xfe\\x2c\\x01\\x00\\x00', 0, False)
    (300, 5)
"""

from __future__ import annotations

import struct

__all__ = [
    "WireError",
    "STRUCTS",
    "U8",
    "U16",
    "U32",
    "U64",
    "encode_size",
    "decode_size",
    "encode_string",
    "decode_string",
    "encode_bitset",
    "decode_bitset",
    "mask_from_bits",
    "bits_from_mask",
]


class WireError(ValueError):
    """Malformed or truncated bytes.  Protocol layers re-raise it as their own decode error
    (``capva.pva.DecodeError`` derives from it) so callers catch exactly one class."""


def _pair(fmt: str) -> tuple[struct.Struct, struct.Struct]:
    """(little-endian, big-endian) precompiled Structs for one layout."""
    return struct.Struct("<" + fmt), struct.Struct(">" + fmt)


#: precompiled (LE, BE) Structs indexed by struct format character
STRUCTS: dict[str, tuple[struct.Struct, struct.Struct]] = {c: _pair(c) for c in "?bBhHiIlLqQfd"}
U8 = STRUCTS["B"]
U16 = STRUCTS["H"]
U32 = STRUCTS["I"]
U64 = STRUCTS["Q"]

_U32_LE_PACK = U32[0].pack
_U32_BE_PACK = U32[1].pack
_U32_LE_UNPACK = U32[0].unpack_from
_U32_BE_UNPACK = U32[1].unpack_from

# the 254 one-byte encodings, prebuilt: Size is on every hot path
_SMALL = [bytes((i,)) for i in range(254)]


def encode_size(n: int, be: bool) -> bytes:
    """PVA Size: one byte below 254, else 0xFE + u32 (pva-protocol.md §2.1)."""
    if n < 254:
        if n < 0:
            raise ValueError(f"Size must not be negative: {n}")
        return _SMALL[n]
    if n > 0xFFFFFFFF:
        raise ValueError(f"Size {n} does not fit the PVA 32-bit Size")
    return b"\xfe" + (_U32_BE_PACK(n) if be else _U32_LE_PACK(n))


def _read_size(buf, pos: int, be: bool, null: int | None) -> tuple[int, int]:
    try:
        b = buf[pos]
    except IndexError:
        raise WireError(f"truncated: Size expected at offset {pos}") from None
    if b < 254:
        return b, pos + 1
    if b == 254:
        if pos + 5 > len(buf):
            raise WireError(f"truncated: 32-bit Size at offset {pos}")
        return (_U32_BE_UNPACK if be else _U32_LE_UNPACK)(buf, pos + 1)[0], pos + 5
    if null is None:
        raise WireError(f"null Size (0xFF) not allowed at offset {pos}")
    return null, pos + 1


def decode_size(buf, pos: int, be: bool) -> tuple[int, int]:
    """Decode a Size; 0xFF (null) is an error here.  See :func:`decode_size_or_null`."""
    return _read_size(buf, pos, be, None)


def decode_size_or_null(buf, pos: int, be: bool) -> tuple[int, int]:
    """Like :func:`decode_size` but 0xFF decodes as -1 (string null, empty union selector)."""
    return _read_size(buf, pos, be, -1)


def encode_string(s: str, be: bool) -> bytes:
    """PVA String: Size + UTF-8 bytes, no terminator."""
    if not s:
        return b"\x00"
    # surrogateescape: text decoded from invalid UTF-8 goes back out as the same bytes
    raw = s.encode("utf-8", "surrogateescape")
    n = len(raw)
    if n < 254:
        return _SMALL[n] + raw
    return encode_size(n, be) + raw


def decode_string(buf, pos: int, be: bool) -> tuple[str, int]:
    """Decode a String; a null Size (0xFF) reads as "" as pvxs does."""
    try:
        n = buf[pos]
    except IndexError:
        raise WireError(f"truncated: String expected at offset {pos}") from None
    if n < 254:
        pos += 1
    elif n == 255:
        return "", pos + 1
    else:
        n, pos = decode_size(buf, pos, be)
    end = pos + n
    if end > len(buf):
        raise WireError(f"truncated: String of {n} bytes at offset {pos}")
    try:
        return str(buf[pos:end], "utf-8"), end
    except UnicodeDecodeError:
        # peers are not obliged to send valid UTF-8; keep the bytes visible, never fail here
        return str(buf[pos:end], "utf-8", "surrogateescape"), end


def mask_from_bits(bits) -> int:
    """Set of bit numbers -> int mask."""
    m = 0
    for b in bits:
        m |= 1 << b
    return m


def bits_from_mask(mask: int) -> list[int]:
    """int mask -> ascending list of bit numbers."""
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


_BITSET_CACHE: dict[tuple[int, bool], bytes] = {}


def encode_bitset(mask: int, be: bool) -> bytes:
    """BitSet (§2.4): Size(nbytes), whole u64 words in message order, then trailing bytes LSB first.

    Encoding of a given mask is memoised (bounded) because monitors send the same few masks
    over and over."""
    key = (mask, be)
    out = _BITSET_CACHE.get(key)
    if out is not None:
        return out
    if mask < 0:
        raise ValueError("BitSet mask must not be negative")
    nbytes = (mask.bit_length() + 7) // 8
    raw = mask.to_bytes(nbytes, "little")
    if be and nbytes >= 8:
        nw = nbytes // 8
        raw = b"".join(raw[8 * w : 8 * w + 8][::-1] for w in range(nw)) + raw[8 * nw :]
    out = encode_size(nbytes, be) + raw
    if len(_BITSET_CACHE) > 4096:
        _BITSET_CACHE.clear()
    _BITSET_CACHE[key] = out
    return out


def decode_bitset(buf, pos: int, be: bool) -> tuple[int, int]:
    """Decode a BitSet into an int mask (bit i of the mask = field bit i)."""
    n, pos = decode_size(buf, pos, be)
    end = pos + n
    if end > len(buf):
        raise WireError(f"truncated: BitSet of {n} bytes at offset {pos}")
    raw = bytes(buf[pos:end])
    if be and n >= 8:
        nw = n // 8
        raw = b"".join(raw[8 * w : 8 * w + 8][::-1] for w in range(nw)) + raw[8 * nw :]
    return int.from_bytes(raw, "little"), end
