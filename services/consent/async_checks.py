"""Consent checks for coroutines on grpc's asyncio server.

A check of the present needs one fresh look at the ledger head, then only memory, for every
subject checked recently: such a check is answered on the event loop itself, with no thread
switch — the head look is awaited over the graph's asyncio connection. Anything that needs the
store or identity (events appended since the last look, a subject not in memory) runs on a
thread as before.

The head look keeps `FreshRead`'s promise for coroutines: each check waits for a look that
began after the check arrived. At most one look runs at a time; checks arriving meanwhile share
the next one, which begins when the running one ends — so under load one round trip serves
many checks.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from services.common.protos import SubjectRef
from services.consent.domain import policy
from services.consent.service import ConsentService

T = TypeVar("T")
Answer = tuple[policy.Decision, str | None]


class SharedFreshCall:
    """`await call()`, shared by the coroutines of one event loop, never begun before the
    coroutine awaiting it arrived. Each caller waits on a future of its own, so a cancelled caller
    cancels nothing the others wait for, and the shared call runs as a task of its own."""

    def __init__(self, call: Callable[[], Awaitable[T]]):
        self._call = call
        self._running = False
        self._sharing: list[asyncio.Future[Any]] = []  # the callers of the call under way
        self._next: list[asyncio.Future[Any]] = []  # callers that arrived while it runs
        self._task: asyncio.Task[Any] | None = None

    async def __call__(self) -> Any:
        loop = asyncio.get_running_loop()
        mine = loop.create_future()
        if self._running:
            self._next.append(mine)
        else:
            self._sharing = [mine]
            self._begin(loop)
        return await mine

    def _begin(self, loop: asyncio.AbstractEventLoop) -> None:
        self._running = True
        # Held: the loop keeps only a weak reference. A context of its own: the read is shared,
        # so no one caller's trace or identity belongs on it.
        self._task = loop.create_task(self._call(), context=contextvars.Context())
        self._task.add_done_callback(lambda done: self._ended(loop, done))

    def _ended(self, loop: asyncio.AbstractEventLoop, done: asyncio.Future[Any]) -> None:
        error = asyncio.CancelledError() if done.cancelled() else done.exception()
        for caller in self._sharing:
            if caller.done():  # cancelled
                continue
            if error is not None:
                caller.set_exception(_own_copy(error))
            else:
                caller.set_result(done.result())
        self._sharing, self._next = [c for c in self._next if not c.done()], []
        self._running = False
        if self._sharing:  # nobody waiting (all cancelled, say at shutdown): no read
            self._begin(loop)


def _own_copy(error: BaseException) -> BaseException:
    """`error` for one of the callers sharing a failed call: every caller raises it, and an
    exception raised by many coroutines would gather all their frames in one traceback (and be
    handled by all of them at once). The copy keeps the type, message and attributes (so the same
    status), and has the shared call's error as its cause; one that cannot be rebuilt is shared."""
    try:
        twin = copy.copy(error)
    except Exception:
        return error
    if type(twin) is not type(error) or twin.args != error.args:
        return error
    twin.__cause__ = error
    return twin


async def on_thread(call: Callable[..., T], *args: Any) -> T:
    """`call(*args)` on the loop's thread pool, with this coroutine's context (caller, trace)."""
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(context.run, call, *args))


class AsyncChecks:
    def __init__(self, service: ConsentService):
        self.service = service
        self._sync = SharedFreshCall(lambda: service.events.sync_async(on_thread))

    async def check(self, subject: SubjectRef, purpose_id: str, channel: str | None, at_ms: int | None
                    ) -> Answer:
        """`ConsentService.check`, from memory on the event loop when it can be."""
        if at_ms is not None:  # the past is read from the ledger
            return await on_thread(self.service.check, subject, purpose_id, channel, at_ms)
        generation = await self._sync()
        answer = self.service.check_from_memory(subject, purpose_id, channel, generation)
        if answer is None:
            answer = await on_thread(functools.partial(self.service.check, generation=generation),
                                     subject, purpose_id, channel)
        return answer
