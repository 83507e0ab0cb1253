"""grpc's asyncio server behind the synchronous server's interface.

A service whose hot path is written as coroutines (consent's check) serves on grpc's asyncio
server: a call answered from memory then costs no thread switch, which is most of what a call
costs on the synchronous server. Its other handlers stay synchronous and run on the server's
thread pool. The event loop runs on a thread of its own, so the process around it (readiness
watcher, signal handling, tests starting servers in process) stays the same for every service.

Handlers are wrapped (the interceptor's bookkeeping) as they are registered rather than through
grpc's asyncio interceptors, which await an interception coroutine on every call.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from concurrent import futures
from typing import Any, TypeVar

import grpc

T = TypeVar("T")
Wrap = Callable[[Any, str], Any]  # (method handler, "/service/Method") -> the handler to serve


class _WrappedGeneric(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler, wrap: Wrap):
        self._inner, self._wrap = inner, wrap

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        return self._wrap(self._inner.service(handler_call_details), handler_call_details.method)


class AsyncioServer:
    def __init__(self, thread_pool: futures.ThreadPoolExecutor, wrap: Wrap, options: Sequence[tuple[str, Any]],
                 *, on_stop: Callable[[], Awaitable[None]] | None = None):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="grpc-asyncio", daemon=True)
        self._thread.start()
        self._thread_pool = thread_pool
        self._wrap = wrap
        self._on_stop = on_stop

        async def create() -> grpc.aio.Server:
            return grpc.aio.server(migration_thread_pool=thread_pool, options=options)

        # Reflection registers here directly: it must see grpc's own server class.
        self.grpc = self._run(create())

    def _serve(self) -> None:
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self.grpc.add_generic_rpc_handlers([_WrappedGeneric(h, self._wrap) for h in handlers])

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.grpc.add_registered_method_handlers(
            service, {name: self._wrap(h, f"/{service}/{name}") for name, h in handlers.items()})

    def add_insecure_port(self, address: str) -> int:
        return self.grpc.add_insecure_port(address)

    def add_secure_port(self, address: str, credentials: grpc.ServerCredentials) -> int:
        return self.grpc.add_secure_port(address, credentials)

    def start(self) -> None:
        self._run(self.grpc.start())

    def stop(self, grace: float | None) -> threading.Event:
        """Like the synchronous server's stop: returns an event set once the server has stopped
        (calls still running after `grace` are cancelled); the event loop then ends too."""
        stopped = threading.Event()

        async def stop_and_close() -> None:
            try:
                await self.grpc.stop(grace)
                # What the calls left behind (a shared head look, say) ends before what it uses closes.
                leftovers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
                for task in leftovers:
                    task.cancel()
                await asyncio.gather(*leftovers, return_exceptions=True)
                if self._on_stop is not None:
                    await self._on_stop()
            finally:
                stopped.set()
                self._loop.call_soon(self._loop.stop)
                self._thread_pool.shutdown(wait=False)

        asyncio.run_coroutine_threadsafe(stop_and_close(), self._loop)
        return stopped

    def wait_for_termination(self) -> None:
        self._thread.join()
