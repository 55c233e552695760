"""PVA clients.

* p4p's API: :mod:`capva.client.thread` and :mod:`capva.client.asyncio` (values unwrapped
  through the NT helpers by default).
* aiopvxs's API: ``from capva.client import Context`` (what ``from aiopvxs.client import
  Context`` becomes) - the asyncio Context returning plain :class:`~capva.Value` structures
  (``nt=False`` by default), whose operations are awaitable futures::

      client_ctx = Context()
      await client_ctx.put("test:pv:int32", {'value': [1, 2, 3]})
      print((await client_ctx.get("test:pv:int32")).as_dict())
"""

from typing import Any

from .._aio.pva_client import Cancelled, Disconnected, Finished, RemoteError
from . import asyncio as _aioctx

__all__ = ["Context", "RemoteError", "Disconnected", "Finished", "Cancelled"]


class Context(_aioctx.Context):
    """aiopvxs-flavoured asyncio Context: like :class:`capva.client.asyncio.Context` but
    returning raw Values unless ``nt=`` is given."""

    def __init__(
        self,
        provider: str = "pva",
        conf: Any = None,
        useenv: bool = True,
        nt: Any = False,
        unwrap: Any = None,
    ):
        super().__init__(provider, conf=conf, useenv=useenv, nt=nt, unwrap=unwrap)
