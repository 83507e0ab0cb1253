"""grpc's asyncio server behind the synchronous server's interface.

A service whose hot path is written as coroutines (consent's check) serves on grpc's asyncio
server: a call answered from memory then costs no thread switch, which is most of what a call
costs on the synchronous server. Its other handlers stay synchronous and run on the server's
thread pool. The event loop runs on a thread of its own, so the process around it (readiness
watcher, signal handling, tests starting servers in process) stays the same for every service.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from concurrent import futures
from typing import Any, TypeVar

import grpc

T = TypeVar("T")


class AsyncioServer:
    def __init__(self, thread_pool: futures.ThreadPoolExecutor, interceptors: Sequence[grpc.aio.ServerInterceptor],
                 options: Sequence[tuple[str, Any]]):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc-asyncio", daemon=True)
        self._thread.start()
        self._thread_pool = thread_pool

        async def create() -> grpc.aio.Server:
            return grpc.aio.server(migration_thread_pool=thread_pool, interceptors=interceptors, options=options)

        self.grpc = self._run(create())  # what handlers and reflection register with

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

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
            finally:
                stopped.set()
                self._loop.call_soon(self._loop.stop)
                self._thread_pool.shutdown(wait=False)

        asyncio.run_coroutine_threadsafe(stop_and_close(), self._loop)
        return stopped

    def wait_for_termination(self) -> None:
        self._thread.join()
