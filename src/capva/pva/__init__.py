"""Sans-I/O PVAccess core: types, values, wire codec, pvRequest and messages.

Nothing here opens sockets, starts threads or reads the environment (design.md §1).
"""

from .errors import DecodeError
from .types import Type
from .value import Value

__all__ = ["DecodeError", "Type", "Value"]
