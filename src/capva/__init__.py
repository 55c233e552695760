"""capva: pure-Python EPICS PVAccess and Channel Access.

The data model is p4p's: ``from capva import Value, Type`` replaces
``from p4p import Value, Type``.
"""

from .pva.types import Struct, StructArray, Type, Union, UnionArray
from .pva.value import Value

__all__ = ["Type", "Value", "Struct", "Union", "StructArray", "UnionArray", "__version__"]
__version__ = "0.1.0.dev0"
