"""Continuous batching: concurrent requests share decode steps.

One engine thread owns the device work of the requests submitted to it. A decode step for
N requests costs little more than one for a single request (decode streams the weights from
memory once either way), so the engine runs every active request in one call of the
smallest compiled `decode_b{N}` that holds them; requests join and leave between steps.

The engine owns one device KV cache with a row (slot) per request it can hold plus a
scratch row. A request is prefilled straight into a free slot and decoded there; a step
passes the slots of the rows it decodes, so joining and leaving copy nothing. Rows that pad a
step up to a compiled size write into the scratch row (at distinct positions) and are ignored.

With a draft (Session.load's `draft`), or with a grammar whose forced tokens the session
checks (`Session.speculates`), a request takes speculative steps (runtime/speculative.py):
at each step where its draft has tokens to check it runs a `verify` call of its own row, and
otherwise it joins the shared decode call. Its adaptive draft length and cost budget judge
its rounds against what a token costs when every active request shares the step (the measured
time of that step over its rows), and each round is charged its share of what the
speculating requests cost the rest (their smaller shared step makes fewer tokens per second),
so a request speculates while speculating raises the engine's throughput.

When the engine goes from idle to busy it waits up to `gather_ms` (prefilling what arrives
meanwhile) so that requests arriving together start decoding together.

Requests of one prompt (OpenAI's n > 1) share a `SharedPrompt`: the first one admitted
prefills it, the others copy its KV into their rows (`store_kv`) and sample their first token
from its logits. A request with a grammar masks its row's logits before sampling
(RequestState.choose), so constrained and free requests decode in the same batch.
"""

from __future__ import annotations

import atexit
import queue
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

from iree_glm.runtime.request import RequestState, StreamEvent
from iree_glm.runtime.speculative import DraftedRequest, Round, emit, moving_average


DEFAULT_GATHER_MS = 10.0


class BatchModel(Protocol):
    """What the engine needs of a loaded bundle (runtime.Session is one)."""

    bundle: Path
    decode_batch_sizes: list[int]
    draft: object | None  # a drafts.Draft: a request running alone speculates
    draft_tokens: int

    def speculates(self, state: RequestState) -> bool: ...

    def new_cache(self, rows: int): ...

    def prefill(self, state: RequestState, cache, slot: int): ...

    def decode(self, tokens, positions, cache, slots): ...

    def prompt_kv(self, cache, slot: int, length: int): ...

    def store_prompt(self, state: RequestState, cache, slot: int, kv) -> None: ...


@dataclass(eq=False)
class SharedPrompt:
    """The prefill of one prompt shared by `waiting` requests: host KV and last logits, kept
    until the last of them is admitted."""

    waiting: int
    kv: object = None
    logits: object = None


@dataclass(eq=False)
class Job:
    """A request inside the engine. `sink` gets each StreamEvent, then the GenerationResult
    (or the exception that ended it)."""

    state: RequestState
    sink: Callable[[object], None]
    shared: SharedPrompt | None = None
    cancelled: bool = False
    token: int = -1  # the next token to feed
    slot: int | None = None  # its row of the engine's KV cache
    decode_start: float = 0.0
    drafted: DraftedRequest | None = None  # speculative decoding state (with a draft or checked forced tokens)


@dataclass
class EngineStats:
    steps: int = 0  # target calls: shared decode steps and verify calls
    verify_calls: int = 0
    rows_decoded: int = 0  # requests' rows in them (a verify call counts one)
    step_s: float = 0.0  # time in decode calls (device + logits to host)
    batch_sizes: dict[int, int] = field(default_factory=dict)


class BatchEngine:
    def __init__(self, session: BatchModel, gather_ms: float = DEFAULT_GATHER_MS, max_batch: int | None = None):
        self.session = session
        self.sizes = [n for n in session.decode_batch_sizes if max_batch is None or n <= max_batch]
        if not self.sizes or self.sizes[0] != 1:
            raise ValueError(f"{session.bundle}: no `decode` entry point for batch size 1")
        self.gather_s = gather_ms / 1e3
        self.stats = EngineStats()
        self._shared_s: dict[int, float] = {}  # moving averages of a shared step's time by compiled size
        self._verify_s: dict[int, float] = {}  # ... and of a verify call's time by rows
        self._cond = threading.Condition()
        self._pending: deque[Job] = deque()
        self._active: list[Job] = []
        self._cache = session.new_cache(self.sizes[-1] + 1)
        self._scratch = self.sizes[-1]  # the row padding rows write into
        self._free = list(range(self.sizes[-1]))
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="iree_glm-batching", daemon=True)
        self._thread.start()
        ref = weakref.ref(self)
        atexit.register(lambda: (engine := ref()) is not None and engine.close())  # no thread left at exit

    # -- client side ------------------------------------------------------------------------

    def submit(self, state: RequestState, sink: Callable[[object], None], shared: SharedPrompt | None = None) -> Job:
        job = Job(state, sink, shared)
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
        return len(self._active)

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
                self._active += self._admit(deadline)
                self._drop_cancelled()
                try:
                    if self.active:
                        self._step()
                except Exception as e:  # a device error ends the requests it touched, not the engine
                    for job in list(self._active):
                        self._finish(job, e)
        finally:
            with self._cond:
                self._closed = True
                left = list(self._pending) + self._active
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
        job.slot = self._free.pop()
        shared = job.shared
        if shared is not None and shared.logits is not None:
            self.session.store_prompt(state, self._cache, job.slot, shared.kv)
            logits = shared.logits
        else:
            logits = self.session.prefill(state, self._cache, job.slot)
            if shared is not None and shared.waiting > 1:
                shared.kv = self.session.prompt_kv(self._cache, job.slot, len(state.ids))
                shared.logits = logits if shared.kv is not None else None
        if shared is not None:
            shared.waiting -= 1
            if shared.waiting <= 0:
                shared.kv = shared.logits = None
        job.token = state.choose(logits)
        state.prefill_s = time.perf_counter() - t
        job.decode_start = time.perf_counter()
        self._emit(job, state.accept(job.token))

    def _drop_cancelled(self) -> None:
        for job in [j for j in self._active if j.cancelled]:
            job.state.cancel()
            self._finish(job)

    def _step(self) -> None:
        """One step of every active request: the requests that do not speculate this step share
        one decode call, then each request whose draft has tokens to check this step checks them
        in a verify call of its own."""
        rounds, shared, everyone = [], [], len(self._active)
        for job in list(self._active):
            try:
                round = self._plan(job)
            except Exception as e:  # e.g. its grammar at a dead end: ends this request only
                self._finish(job, e)
                continue
            if round is None or not self._pays(round, everyone):
                shared.append(job)
            else:
                rounds.append((job, round))
        lost = self._shared_step(shared, everyone) if shared else 0.0
        for job, round in rounds:
            try:
                self._verify(job, round, lost / len(rounds))
            except Exception as e:
                self._finish(job, e)

    def _plan(self, job: Job) -> Round | None:
        """The request's draft tokens to check this step (None: a plain step)."""
        if not self.session.speculates(job.state):
            return None
        if job.drafted is None:
            job.drafted = DraftedRequest(self.session, self.session.draft, self.session.draft_tokens, job.state)
        return job.drafted.plan(job.state)

    def _pays(self, round: Round, everyone: int) -> bool:
        """Whether a round of forced tokens alone (no draft tokens: no adaptive k judges it) is
        worth a verify call beside other requests: its tokens must cost less than in a step that
        everyone shares. A call of its length not yet timed is tried."""
        rows = len(round.checked.tokens) + 1
        full = self._shared_s.get(self._size(everyone))
        if everyone == 1 or round.forced < rows - 1 or full is None or rows not in self._verify_s:
            return True
        return self._verify_s[rows] < rows * full / everyone

    def _shared_step(self, rows: list[Job], everyone: int) -> float:
        """One decode call of the smallest compiled size that holds `rows`, of `everyone` active.
        Returns what the call cost beyond its rows' share of a step that everyone takes (a
        smaller step makes fewer tokens per second): the speculating requests' rounds pay it."""
        size = self._size(len(rows))
        pad = size - len(rows)
        tokens = [j.token for j in rows] + [0] * pad
        positions = [j.state.pos for j in rows] + list(range(pad))
        slots = [j.slot for j in rows] + [self._scratch] * pad
        t = time.perf_counter()
        logits = self.session.decode(tokens, positions, self._cache, slots)
        seconds = time.perf_counter() - t
        self._count(seconds, len(rows), size)
        moving_average(self._shared_s, size, seconds)
        # What a token costs when every active request takes this step: the reference that a
        # speculating request's rounds must beat to raise the engine's throughput.
        plain = self._shared_s.get(self._size(everyone), seconds * everyone / len(rows)) / everyone
        for i, job in enumerate(rows):
            state = job.state
            if job.drafted is not None:
                job.drafted.plain(plain)
            state.pos += 1
            state.decode_tokens += 1
            state.target_calls += 1
            try:
                job.token = state.choose(logits[i])
                event = state.accept(job.token)
            except Exception as e:  # e.g. a grammar at a dead end: ends this request only
                self._finish(job, e)
                continue
            self._emit(job, event)
            if state.done:
                self._finish(job)
        return max(0.0, seconds - plain * len(rows))

    def _verify(self, job: Job, round: Round, lost: float) -> None:
        """The request's verify call; its round is booked `lost` seconds more (its share of what
        the speculating requests cost the shared step)."""
        state = job.state
        t = time.perf_counter()
        tokens, logits = job.drafted.verify(round, state, job.token, self._cache, job.slot, lost)
        seconds = time.perf_counter() - t
        self._count(seconds, 1, 1)
        moving_average(self._verify_s, len(round.checked.tokens) + 1, seconds)
        self.stats.verify_calls += 1
        state.pos += 1
        state.decode_tokens += len(tokens)
        for event in emit(state, tokens, logits):
            self._emit(job, event)
        job.token = tokens[-1]
        if state.done:
            self._finish(job)

    def _size(self, rows: int) -> int:
        return next(s for s in self.sizes if s >= rows)

    def _count(self, seconds: float, rows: int, size: int) -> None:
        self.stats.step_s += seconds
        self.stats.steps += 1
        self.stats.rows_decoded += rows
        self.stats.batch_sizes[size] = self.stats.batch_sizes.get(size, 0) + 1

    def _emit(self, job: Job, item: object) -> None:
        try:
            job.sink(item)
        except Exception:  # the consumer is gone (e.g. its event loop closed): stop the request
            job.cancelled = True

    def _finish(self, job: Job, error: Exception | None = None) -> None:
        state = job.state
        if job.decode_start:
            state.decode_s = time.perf_counter() - job.decode_start
        if job in self._active:
            self._active.remove(job)
        if job.slot is not None:
            self._cache.release(job.slot)  # a plan switch copies only the rows in use
            self._free.append(job.slot)
            job.slot = None
        self._emit(job, error if error is not None else state.result())
