"""PVA clients: :mod:`capva.client.thread` and :mod:`capva.client.asyncio` (p4p's API)."""

from .._aio.pva_client import Cancelled, Disconnected, Finished, RemoteError

__all__ = ["RemoteError", "Disconnected", "Finished", "Cancelled"]
