"""asyncio front end of the batching engine: `async for event in session.stream_async(...)`.

The engine thread hands events to the event loop with `call_soon_threadsafe`; nothing here
blocks the loop. Leaving the `async for` early (or `aclose()`), cancelling the consuming task
and a timeout all cancel the request in the engine, which frees its batch row before the
next step.
"""

from __future__ import annotations

import asyncio
import time

from iree_glm.runtime.batching import BatchEngine, Job, SharedPrompt
from iree_glm.runtime.request import GenerationResult, RequestState, StreamEvent


class AsyncGeneration:
    """An async iterator of `StreamEvent`s; `result` is set once it has ended.

    `timeout` (seconds, for the whole request) raises `TimeoutError` from the iteration."""

    def __init__(self, engine: BatchEngine, state: RequestState, timeout: float | None = None, shared: SharedPrompt | None = None):
        self.prompt_ids = state.ids
        self.result: GenerationResult | None = None
        self._engine = engine
        self._state = state
        self._shared = shared
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._queue: asyncio.Queue | None = None
        self._job: Job | None = None

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        put = self._queue.put_nowait
        self._job = self._engine.submit(self._state, lambda item: loop.call_soon_threadsafe(put, item), self._shared)

    def __aiter__(self) -> "AsyncGeneration":
        return self

    async def __anext__(self) -> StreamEvent:
        if self.result is not None:
            raise StopAsyncIteration
        if self._job is None:
            self._start()
        try:
            if self._deadline is None:
                item = await self._queue.get()
            else:
                item = await asyncio.wait_for(self._queue.get(), max(0.0, self._deadline - time.monotonic()))
        except BaseException:  # timeout or cancellation of the consumer
            self.cancel()
            raise
        if isinstance(item, StreamEvent):
            return item
        if isinstance(item, BaseException):
            raise item
        self.result = item
        raise StopAsyncIteration

    def cancel(self) -> None:
        """End the request early; its result (if awaited) has stop_reason 'cancelled'."""
        if self._job is not None and self.result is None:
            self._engine.cancel(self._job)

    async def aclose(self) -> None:
        self.cancel()

    async def collect(self) -> GenerationResult:
        """Run to the end and return the result."""
        async for _ in self:
            pass
        return self.result


class AsyncSession:
    """A session's asyncio interface (the same engine as `Session.stream_async`)."""

    def __init__(self, session):
        self.session = session

    def stream(self, prompt, max_new_tokens: int = 64, sampling=None, stop_ids=None, stop=(), timeout=None) -> AsyncGeneration:
        from iree_glm.runtime.sampling import SamplingParams

        return self.session.stream_async(prompt, max_new_tokens, sampling or SamplingParams(), stop_ids, stop, timeout=timeout)

    async def generate(self, prompt, max_new_tokens: int = 64, sampling=None, stop_ids=None, stop=(), timeout=None) -> GenerationResult:
        return await self.stream(prompt, max_new_tokens, sampling, stop_ids, stop, timeout).collect()
