"""Continuous batching: concurrent requests share decode steps.

One engine thread owns the device work of the requests submitted to it. A decode step for
N requests costs little more than one for a single request (decode streams the weights from
memory once either way), so the engine runs every active request in one call of the
smallest compiled `decode_b{N}` that holds them; requests join and leave between steps.

The batch KV cache [L, N, Hkv, C, D] stays on the device between steps, one row (slot) per
request; rows of requests that leave are left in place as padding. Only when requests join
(or the batch can shrink to a smaller compiled size) is it rebuilt on the host: the live rows
and each newcomer's prefilled cache are copied into a fresh array that the next step takes.
A lone request uses its prefill cache directly, with no copy.

When the engine goes from idle to busy it waits up to `gather_ms` (prefilling what arrives
meanwhile) so that requests arriving together start decoding together.
"""

from __future__ import annotations

import atexit
import queue
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from .request import RequestState, StreamEvent

if TYPE_CHECKING:
    from .session import Session

DEFAULT_GATHER_MS = 10.0


@dataclass(eq=False)
class Job:
    """A request inside the engine. `sink` gets each StreamEvent, then the GenerationResult
    (or the exception that ended it)."""

    state: RequestState
    sink: Callable[[object], None]
    cancelled: bool = False
    token: int = -1  # the next token to feed
    k: object = None  # prefill caches until the job is placed in the batch
    v: object = None
    decode_start: float = 0.0


@dataclass
class EngineStats:
    steps: int = 0
    rows_decoded: int = 0
    step_s: float = 0.0  # time in decode calls (device + logits to host)
    rebuilds: int = 0
    rebuild_s: float = 0.0
    batch_sizes: dict[int, int] = field(default_factory=dict)


class BatchEngine:
    def __init__(self, session: "Session", gather_ms: float = DEFAULT_GATHER_MS, max_batch: int | None = None):
        self.session = session
        self.sizes = [n for n in session.decode_batch_sizes if max_batch is None or n <= max_batch]
        if not self.sizes or self.sizes[0] != 1:
            raise ValueError(f"{session.bundle}: no `decode` entry point for batch size 1")
        self.gather_s = gather_ms / 1e3
        self.stats = EngineStats()
        self._cond = threading.Condition()
        self._pending: deque[Job] = deque()
        self._slots: list[Job | None] = []
        self._k = self._v = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="iree_glm-batching", daemon=True)
        self._thread.start()
        ref = weakref.ref(self)
        atexit.register(lambda: (engine := ref()) is not None and engine.close())  # no thread left at exit

    # -- client side ------------------------------------------------------------------------

    def submit(self, state: RequestState, sink: Callable[[object], None]) -> Job:
        job = Job(state, sink)
        with self._cond:
            if self._closed:
                raise RuntimeError("the batching engine is closed")
            self._pending.append(job)
            self._cond.notify()
        return job

    def cancel(self, job: Job) -> None:
        """Ask the engine to end `job` before its next step (it then gets a 'cancelled' result)."""
        job.cancelled = True
        with self._cond:
            self._cond.notify()

    def run(self, state: RequestState) -> Iterator[StreamEvent]:
        """Blocking iterator over one request's events (for threads); closing it cancels the request.
        Returns the GenerationResult as the generator's return value."""
        q: queue.SimpleQueue = queue.SimpleQueue()
        job = self.submit(state, q.put)
        try:
            while True:
                item = q.get()
                if isinstance(item, StreamEvent):
                    yield item
                elif isinstance(item, BaseException):
                    raise item
                else:
                    return item
        finally:
            if not state.done:
                self.cancel(job)

    def close(self) -> None:
        """Stop the engine thread; requests still pending or running end as 'cancelled'."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    @property
    def active(self) -> int:
        return sum(j is not None for j in self._slots)

    # -- engine thread ----------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._closed and not self._pending and not self.active:
                        self._cond.wait()
                    if self._closed:
                        break
                    idle = not self.active
                deadline = time.perf_counter() + (self.gather_s if idle else 0.0)
                joiners = self._admit(deadline)
                self._drop_cancelled()
                try:
                    self._place(joiners)
                    if self.active:
                        self._step()
                except Exception as e:  # a device error ends the requests it touched, not the engine
                    for job in [j for j in self._slots if j is not None] + joiners:
                        self._finish(job, e)
                    self._slots, self._k, self._v = [], None, None
        finally:
            with self._cond:
                self._closed = True
                left = list(self._pending) + [j for j in self._slots if j is not None]
                self._pending.clear()
            for job in left:
                job.state.cancel()
                self._finish(job)

    def _admit(self, deadline: float) -> list[Job]:
        """Prefill pending requests while there is room, until the queue is empty and `deadline` passed."""
        joiners: list[Job] = []
        room = self.sizes[-1] - self.active
        while len(joiners) < room:
            with self._cond:
                if not self._pending:
                    wait = deadline - time.perf_counter()
                    if wait <= 0 or self._closed:
                        break
                    self._cond.wait(wait)
                    continue
                job = self._pending.popleft()
            if job.cancelled:
                job.state.cancel()
                self._finish(job)
                continue
            try:
                self._prefill(job)
            except Exception as e:
                self._finish(job, e)
                continue
            if job.state.done:
                self._finish(job)
            else:
                joiners.append(job)
        return joiners

    def _prefill(self, job: Job) -> None:
        state = job.state
        if state.done:  # max_new_tokens == 0
            return
        t = time.perf_counter()
        logits, job.k, job.v = self.session.prefill(state)
        job.token = state.sampler(logits)
        state.prefill_s = time.perf_counter() - t
        job.decode_start = time.perf_counter()
        self._emit(job, state.accept(job.token))

    def _drop_cancelled(self) -> None:
        for i, job in enumerate(self._slots):
            if job is not None and job.cancelled:
                job.state.cancel()
                self._finish(job)
                self._slots[i] = None

    def _place(self, joiners: list[Job]) -> None:
        """Give each joiner a batch row; rebuild the batch cache when the rows change."""
        keep = [j for j in self._slots if j is not None]
        n = len(keep) + len(joiners)
        if n == 0:
            self._slots, self._k, self._v = [], None, None
            return
        size = next(s for s in self.sizes if s >= n)
        if not joiners and size == len(self._slots):
            return
        if size == 1 and joiners:  # a lone request keeps its own prefill cache: no copy
            job = joiners[0]
            self._slots, self._k, self._v = [job], job.k, job.v
            job.k = job.v = None
            return
        t = time.perf_counter()
        shape = list(self.session._cache_shape)
        shape[1] = size
        k, v = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        if keep:
            old_k, old_v = _host(self._k), _host(self._v)
            rows = [self._slots.index(j) for j in keep]
            k[:, : len(keep)] = old_k[:, rows]
            v[:, : len(keep)] = old_v[:, rows]
        for i, job in enumerate(joiners, start=len(keep)):
            k[:, i] = _host(job.k)[:, 0]
            v[:, i] = _host(job.v)[:, 0]
            job.k = job.v = None
        self._slots = keep + joiners + [None] * (size - n)
        self._k, self._v = k, v
        self.stats.rebuilds += 1
        self.stats.rebuild_s += time.perf_counter() - t

    def _step(self) -> None:
        rows = self._slots
        tokens = [j.token if j is not None else 0 for j in rows]
        positions = [j.state.pos if j is not None else 0 for j in rows]
        t = time.perf_counter()
        logits, self._k, self._v = self.session.decode(tokens, positions, self._k, self._v)
        self.stats.step_s += time.perf_counter() - t
        self.stats.steps += 1
        self.stats.rows_decoded += self.active
        self.stats.batch_sizes[len(rows)] = self.stats.batch_sizes.get(len(rows), 0) + 1
        for i, job in enumerate(rows):
            if job is None:
                continue
            state = job.state
            state.pos += 1
            state.decode_tokens += 1
            job.token = state.sampler(logits[i])
            self._emit(job, state.accept(job.token))
            if state.done:
                self._finish(job)
                rows[i] = None

    def _emit(self, job: Job, item: object) -> None:
        try:
            job.sink(item)
        except Exception:  # the consumer is gone (e.g. its event loop closed): stop the request
            job.cancelled = True

    def _finish(self, job: Job, error: Exception | None = None) -> None:
        state = job.state
        if job.decode_start:
            state.decode_s = time.perf_counter() - job.decode_start
        job.k = job.v = None
        self._emit(job, error if error is not None else state.result())


def _host(x) -> np.ndarray:
    return x if isinstance(x, np.ndarray) else x.to_host()
