"""NTNDArray: an N-d image or array plus dimensions and named attributes, as areaDetector sends.

The pixels travel flattened in a union (``value.ubyteValue``, ``value.floatValue``...) whose
member is chosen by the numpy dtype.  ``dimension[0]`` is the *fastest* axis (x), so it is the
*last* numpy axis: ``wrap()`` reverses ``shape`` and ``unwrap()`` reverses it back::

    >>> img = numpy.zeros((480, 640), dtype='u2')          # rows, columns
    >>> V = NTNDArray().wrap(img, attrib={'Gain': 2.5})
    >>> [d.size for d in V.dimension]                      # x first
    [640, 480]
    >>> a = NTNDArray.unwrap(V); a.shape, a.attrib['ColorMode'], a.attrib['Gain']
    ((480, 640), 0, 2.5)

``ColorMode`` attribute (as areaDetector's NDArray.cpp, listed in NDArray dimension order,
which is the reverse of numpy's ``shape``):

==== ======= =====================
code mode    NDArray dims
==== ======= =====================
0    Mono    [Nx, Ny]
1    Bayer   [Nx, Ny]
2    RGB1    [3, Nx, Ny]
3    RGB2    [Nx, 3, Ny]
4    RGB3    [Nx, Ny, 3]
==== ======= =====================

When not given, ``wrap()`` infers it: 2-d is Mono, 3-d is RGB1/2/3 by the first size-3
dimension counted from the fastest axis; a 3-d array with no size-3 dimension is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy

from ..pva.types import intern_type
from .common import NTBase, PVValue, Type, Value, alarm, timeStamp
from .scalar import FieldSpec, ntwrappercommon

__all__ = ["NTNDArray", "ntndarray", "translateNDAttribute"]


class ntndarray(ntwrappercommon, numpy.ndarray):
    """An N-d ``numpy.ndarray`` with ``.attrib`` (``{name: value}`` of the NTAttributes) and the
    usual ``.severity``, ``.status``, ``.timestamp``, ``.raw_stamp``, ``.raw``.

    Attribute values may be anything a variant field holds, including a :class:`Value`.
    When wrapping, an attribute that is an NTScalar-like :class:`Value` is unpacked: its
    ``value``, ``alarm`` and ``timeStamp`` go to the NTAttribute, the rest is dropped.
    """

    attrib: dict[str, Any]

    def __init__(self, *args: Any, **kws: Any) -> None:
        super().__init__()
        self.attrib = {}

    def _store(self, value: PVValue) -> ntndarray:
        ntwrappercommon._store(self, value)
        self.attrib = {}
        for elem in value.get("attribute", []):
            self.attrib[elem.name] = elem.value

        # fails if the advertised dimensions don't match the number of elements
        shape = [D.size for D in value.dimension]
        shape.reverse()
        # in-place reshape; no dimensions at all is treated as 1-d (a 0-d reshape is impossible)
        self.shape = tuple(shape) or (0,)
        return self


_ntndarray = ntndarray  # for annotations inside NTNDArray, whose ``ntndarray`` attribute shadows it

_VALUE_UNION: list[FieldSpec] = [
    ("booleanValue", "a?"),
    ("byteValue", "ab"),
    ("shortValue", "ah"),
    ("intValue", "ai"),
    ("longValue", "al"),
    ("ubyteValue", "aB"),
    ("ushortValue", "aH"),
    ("uintValue", "aI"),
    ("ulongValue", "aL"),
    ("floatValue", "af"),
    ("doubleValue", "ad"),
]

_NTNDARRAY_FIELDS: list[FieldSpec] = [
    ("value", ("U", None, _VALUE_UNION)),
    ("codec", ("S", "codec_t", [("name", "s"), ("parameters", "v")])),
    ("compressedSize", "l"),
    ("uncompressedSize", "l"),
    ("uniqueId", "i"),
    ("dataTimeStamp", timeStamp),
    ("alarm", alarm),
    ("timeStamp", timeStamp),
    (
        "dimension",
        (
            "aS",
            "dimension_t",
            [("size", "i"), ("offset", "i"), ("fullSize", "i"), ("binning", "i"), ("reverse", "?")],
        ),
    ),
    (
        "attribute",
        (
            "aS",
            "epics:nt/NTAttribute:1.0",
            [
                ("name", "s"),
                ("value", "v"),
                ("tags", "as"),
                ("descriptor", "s"),
                ("alarm", alarm),
                # p4p spells it timeStamp here (pvxs/areaDetector: timestamp); we emit what p4p does
                ("timeStamp", timeStamp),
                ("sourceType", "i"),
                ("source", "s"),
            ],
        ),
    ),
]

# numpy (kind, itemsize) -> union member, for dtypes whose .char is not in _code2u ('q', 'Q'...)
_KIND2U = {
    ("b", 1): "booleanValue",
    ("i", 1): "byteValue",
    ("i", 2): "shortValue",
    ("i", 4): "intValue",
    ("i", 8): "longValue",
    ("u", 1): "ubyteValue",
    ("u", 2): "ushortValue",
    ("u", 4): "uintValue",
    ("u", 8): "ulongValue",
    ("f", 4): "floatValue",
    ("f", 8): "doubleValue",
}


class NTNDArray(NTBase):
    """Helper for ``epics:nt/NTNDArray:1.0``; ``unwrap()`` gives an :class:`ntndarray`.

    :param extra: further ``(name, spec)`` fields appended at the end (p4p 4.3.0 fails on this)
    """

    Value = Value
    ntndarray = ntndarray

    #: numpy ``dtype.char`` -> ``value`` union member
    _code2u = {
        "?": "booleanValue",
        "b": "byteValue",
        "h": "shortValue",
        "i": "intValue",
        "l": "longValue",
        "B": "ubyteValue",
        "H": "ushortValue",
        "I": "uintValue",
        "L": "ulongValue",
        "f": "floatValue",
        "d": "doubleValue",
    }

    _default_type = Type(_NTNDARRAY_FIELDS, id="epics:nt/NTNDArray:1.0")

    @classmethod
    def buildType(klass, extra: Sequence[FieldSpec] = ()) -> Type:
        """Build the :class:`Type`; without ``extra`` this is one shared Type object."""
        if extra:
            return Type([*_NTNDARRAY_FIELDS, *extra], id="epics:nt/NTNDArray:1.0")
        return klass._default_type

    def __init__(self, **kws: Any) -> None:
        self.type = intern_type(self.buildType(**kws))

    @classmethod
    def _member(klass, dtype: numpy.dtype) -> str:
        try:
            return klass._code2u[dtype.char]
        except KeyError:
            pass
        try:
            return _KIND2U[(dtype.kind, dtype.itemsize)]
        except KeyError:
            raise ValueError(f"NTNDArray can't hold numpy dtype {dtype}") from None

    def wrap(self, value: Any, **kws: Any) -> PVValue:
        """Wrap an array (anything ``numpy.asarray`` takes) into a new :class:`Value`.

        ``attrib=`` (a dict) gives the attributes, unless ``value`` itself has ``.attrib``
        (an :class:`ntndarray`).  ``ColorMode`` is added when missing (see the module docstring).
        Sizes are the byte size of the data; ``uniqueId`` is 0.  Further keywords:
        ``timestamp=``, ``severity=``, ``message=``.
        """
        attrib = dict(getattr(value, "attrib", None) or kws.pop("attrib", None) or {})
        # drop an attrib= that lost to value.attrib, so that it doesn't reach _annotate()
        kws.pop("attrib", None)

        value = numpy.asarray(value)  # drops the augmented attributes
        dims = value.shape

        if "ColorMode" not in attrib:
            if value.ndim == 2:
                attrib["ColorMode"] = 0  # Mono
            elif value.ndim == 3:
                for idx, dim in enumerate(reversed(dims)):  # the fastest axis first
                    if dim == 3:  # the first size-3 axis is the colour; a later one is a thin ROI
                        attrib["ColorMode"] = 2 + idx  # 2 RGB1, 3 RGB2, 4 RGB3
                        break
                else:
                    raise ValueError(f"Unable to deduce color dimension from shape {dims!r}")

        dataSize = value.nbytes

        V = self.Value(
            self.type,
            {
                "value": (self._member(value.dtype), value.flatten()),
                "compressedSize": dataSize,
                "uncompressedSize": dataSize,
                "uniqueId": 0,
                "attribute": [translateNDAttribute(K, A) for K, A in attrib.items()],
                "dimension": [
                    {"size": N, "offset": 0, "fullSize": N, "binning": 1, "reverse": False}
                    for N in reversed(dims)
                ],
            },
        )
        return self._annotate(V, **kws)

    @classmethod
    def unwrap(klass, value: PVValue) -> _ntndarray:
        """Unwrap a Value into an :class:`ntndarray` shaped by ``dimension`` (no copy)."""
        V = value.value
        if V is None:
            # empty union: a zero-length byte array
            V = numpy.zeros((0,), dtype=numpy.uint8)
        return V.view(klass.ntndarray)._store(value)

    def assign(self, V: PVValue, py: Any) -> None:
        """Replace the content of ``V`` by ``self.wrap(py)``."""
        V[None] = self.wrap(py)


def translateNDAttribute(name: str, value: Any) -> dict[str, Any]:
    """Build the initialiser of one ``attribute[]`` element from a name and a value.

    An NT-like :class:`Value` (one with a ``value`` field) contributes its ``value`` and, if
    present, its ``alarm`` and ``timeStamp``; anything else becomes the variant ``value``.
    """
    if isinstance(value, Value) and "value" in value:
        V = {"name": name, "value": value["value"]}
        if "alarm" in value:
            V["alarm"] = value["alarm"]
        if "timeStamp" in value:
            V["timeStamp"] = value["timeStamp"]
        return V
    return {"name": name, "value": value}
