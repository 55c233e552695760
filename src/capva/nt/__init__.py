"""Normative Types (NT) on top of :mod:`capva.pva`, API-compatible with :mod:`p4p.nt`.

Port p4p code by changing the import: ``from capva.nt import NTScalar, NTEnum, NTTable``.

* :class:`NTScalar` - one scalar or array with alarm, time stamp, display/control/valueAlarm
* :class:`NTEnum` - an index into choice strings
* :class:`NTTable` - named columns; wrap from rows (or columns), unwrap to rows
* :class:`NTNDArray` - N-d images with dimensions and attributes (areaDetector)
* :class:`NTURI` - RPC call arguments
* :class:`NTMultiChannel` - the Type only
* ``timeStamp``, ``alarm`` - the common sub-structure Types
* :func:`defaultNT`, :class:`ClientUnwrapper`, :func:`buildNT` - client-side unwrapping by id

``unwrap()`` returns augmented Python values (``ntfloat``, ``ntint``, ``ntbool``, ``ntstr``,
``ntnumericarray``, ``ntstringarray``, ``ntenum``, ``ntndarray``) that carry ``.severity``,
``.status``, ``.timestamp``, ``.raw_stamp`` and ``.raw``.

This package is sans-I/O: it never touches sockets, threads, the environment or the clock.
"""

from .common import NTBase as NTBase
from .common import Type as Type
from .common import Value as Value
from .common import alarm as alarm
from .common import timeStamp as timeStamp
from .enum import NTEnum
from .enum import ntenum as ntenum
from .multichannel import NTMultiChannel
from .ndarray import NTNDArray
from .ndarray import ntndarray as ntndarray
from .scalar import NTScalar
from .scalar import ntbool as ntbool
from .scalar import ntfloat as ntfloat
from .scalar import ntint as ntint
from .scalar import ntnumericarray as ntnumericarray
from .scalar import ntstr as ntstr
from .scalar import ntstringarray as ntstringarray
from .scalar import ntwrappercommon as ntwrappercommon
from .table import NTTable
from .unwrapper import ClientUnwrapper as ClientUnwrapper
from .unwrapper import UnwrapOnly as UnwrapOnly
from .unwrapper import buildNT as buildNT
from .unwrapper import defaultNT
from .uri import NTURI as NTURI

# the same star-export as p4p.nt; the other names above (imported ``as`` themselves, i.e.
# re-exported) are importable by name, as from p4p.nt
__all__ = [
    "NTScalar",
    "NTEnum",
    "NTMultiChannel",
    "NTTable",
    "NTNDArray",
    "defaultNT",
]
