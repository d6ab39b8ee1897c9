"""Load a bundle and generate text from it on an IREE HAL device.

The KV cache lives on the device (`KVCache`: per layer, [rows, Hkv, C, D]) and the compiled
functions update it in place: a request owns a row (slot); `prefill` and `decode` write their
new entries there and attend over the positions in use only. A bundle compiled with a
sliding-window cache (`--sparse-attention ...,ring`) has C = G + ring slots whatever the
context: the prompt goes in in chunks, and a conversation may run past C. With a prefix cache, `prefill`
first stores the KV of the longest cached prefix of the prompt into the row (`store_kv`)
and runs on the rest only. A small CPU model's short prefill calls run in the calling thread
(`Session._load_inline`). Device calls are serialized by one lock taken per call, so
several threads (and the batching engine) can share a session.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import warnings
import weakref
from pathlib import Path
from typing import Iterator

import numpy as np

from iree_glm.bundle.dtypes import numpy_dtype
from iree_glm.bundle.manifest import BATCHED_DECODE, VERIFY, Manifest, decode_name, read_manifest
from iree_glm.errors import BundleError, RequestError
from iree_glm.bundle.sparse_pattern import SparsePattern, parse_pattern
from iree_glm.bundle.tokenizer import TextTokenizer
from iree_glm.runtime.async_api import AsyncGeneration
from iree_glm.runtime.batching import DEFAULT_GATHER_MS, BatchEngine, SharedPrompt
from iree_glm.runtime.constrained import ConstraintFactory, Grammar
from iree_glm.runtime.drafts import BundleDraft, Draft, open_draft
from iree_glm.runtime.speculative import DEFAULT_DRAFT_TOKENS, SpeculativeDecoder
from iree_glm.runtime.decoders import DecodeModule, MoveStats
from iree_glm.runtime.devices import check_cpu, driver_available, hal_device, load_module, load_parameters, load_retrying
from iree_glm.runtime.stages import host_visible_upload
from iree_glm.bundle.kv_layout import STORE_KV, attended_keys
from iree_glm.runtime.kv_cache import KVCache, key_positions
from iree_glm.runtime.module_check import module_problem
from iree_glm.runtime.normalize import Normalizer, parse_normalize
from iree_glm.bundle.kv_layout import DEFAULT_BLOCK_SIZE
from iree_glm.runtime.plans import PlanFallbackWarning, PlanSet
from iree_glm.runtime.prefix_cache import PrefixCache, bundle_hash, budget_bytes
from iree_glm.runtime.request import GenerationResult, RequestState, StreamEvent
from iree_glm.runtime.sampling import Sampler, SamplingParams


__all__ = ["Session", "Generation", "GenerationResult", "StreamEvent"]


def sliding_window(manifest: Manifest) -> SparsePattern | None:
    """The bundle's block-sparse pattern if its KV cache is a sliding window (ring), else None."""
    text = manifest.options.sparse_attention
    pattern = parse_pattern(text, "manifest sparse_attention") if text else None
    return pattern if pattern is not None and pattern.ring else None


def chunk_size(requested: int | None, manifest: Manifest) -> int:
    """Tokens per prefill call: `requested` if given, else the bundle's profile `prefill_chunk`
    (recorded in its manifest), else 0 (the whole prompt in one call)."""
    chunk = requested if requested is not None else (manifest.options.prefill_chunk or 0)
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 0:
        raise RequestError(f"prefill_chunk must be 0 (whole prompt) or a positive number of tokens (got {chunk!r})")
    return chunk


def chunks(length: int, size: int) -> list[tuple[int, int]]:
    """[first, end) ranges covering `length` tokens in pieces of `size` (0: one piece).

    Chunked prefill bounds a call's activations and attention scores (chunk x keys in use
    instead of prompt x prompt) and keeps the matmuls at the row count they run fastest at;
    each chunk is an ordinary prefill that extends the cached prefix."""
    size = size or length
    return [(first, min(first + size, length)) for first in range(0, length, size)]


WAKE_ROW_BYTES = 64 << 20  # the largest KV row the load-time wake-up allocates (Session._wake_workers)
KV_KEEP_BYTES = 1 << 30  # default of Session.kv_keep_bytes
INLINE_TOKENS = 16  # prefill calls of at most this many tokens run in the calling thread (Session._load_inline)
INLINE_MAX_BYTES = 64 << 20  # ... for bundles with at most this many bytes of weights


class Session:
    """A loaded bundle. Thread-safe: device calls from several threads are serialized."""

    def __init__(
        self,
        bundle: Path,
        manifest: Manifest,
        driver: str | None = None,
        prefix_cache: bool = False,
        prefix_cache_dir: Path | None = None,
        prefix_cache_bytes: int | None = None,
        prefix_block_size: int = DEFAULT_BLOCK_SIZE,
        normalize: Normalizer | str | None = None,
        prefill_chunk: int | None = None,
        plan: str | None = None,
        allow_stand_in: bool = False,
    ):
        import iree.runtime as rt

        self.bundle = Path(bundle)
        self.manifest = manifest
        check_cpu(self.bundle, manifest)
        self.config = manifest.model
        self.max_context = manifest.max_context  # longest conversation (positions)
        self.sliding_window = sliding_window(manifest)
        self.cache_slots = manifest.options.kv_cache_slots  # KV positions per row
        self._exact_rows = next((ep.exact_rows or 0 for ep in manifest.entry_points if ep.name == VERIFY), 0)
        self.normalizer = normalize if isinstance(normalize, Normalizer) else parse_normalize(normalize, "normalize")
        self.prefill_chunk = chunk_size(prefill_chunk, manifest)
        self.cache_dtype = numpy_dtype(manifest.options.activation_dtype)  # the KV cache's element type
        self._lock = threading.Lock()
        module = manifest.modules[0]
        self.driver = driver or module.driver
        self._instance = rt.VmInstance()
        self._index = load_parameters(self.bundle / manifest.parameters)  # kept: the functions read the mmapped archive
        # The module decoding now (runtime/decoders.py): the main one, or a plan's own.
        self._main = load_retrying(lambda: self.load_decode_module(module.file, self.driver, "main"), str(self.bundle))
        self._decoder = self._main
        self._inline = self._load_inline(module.file)  # short prefill calls, single-threaded (or None)
        self.kv_moves = MoveStats()
        # The most bytes of KV buffers kept on the CPU while their caches decode elsewhere (0: keep none).
        self.kv_keep_bytes = KV_KEEP_BYTES
        self._kept_caches: weakref.WeakValueDictionary[int, KVCache] = weakref.WeakValueDictionary()
        self.tokenizer = TextTokenizer(self.bundle / manifest.tokenizer) if manifest.tokenizer else None
        cfg = self.config
        self.constraints = ConstraintFactory(
            self.bundle / manifest.tokenizer if manifest.tokenizer else None, cfg.vocab_size, tuple(cfg.eos_token_ids))
        self.prefix_cache: PrefixCache | None = None
        if (prefix_cache or prefix_cache_dir is not None) and self.sliding_window is not None:
            raise BundleError(f"{self.bundle}: the prefix cache needs a KV cache indexed by position; this bundle "
                              f"keeps a sliding window ({self.sliding_window}): run it without a prefix cache")
        if prefix_cache or prefix_cache_dir is not None:
            self.prefix_cache = PrefixCache(
                (cfg.num_layers, cfg.num_kv_heads, cfg.head_dim), bundle_hash(manifest.files),
                prefix_block_size, budget_bytes(prefix_cache_bytes, manifest), prefix_cache_dir,
            )
        self.draft: Draft | None = None  # speculative decoding (Session.load's draft)
        self.draft_tokens = DEFAULT_DRAFT_TOKENS
        # Check the tokens a request's grammar forces in the verify call of the step before them
        # (Session.load's forced_tokens; `checks_forced`).
        self.forced_tokens = True
        self.gather_ms = DEFAULT_GATHER_MS  # batching window of the engine (set before first use)
        self._engine: BatchEngine | None = None
        self._engine_lock = threading.Lock()
        self._embed_cache: KVCache | None = None
        self._embed_lock = threading.Lock()
        self._wake_workers()  # before a plan may make another module the decoding one: the cache is the main module's
        # The bundle's plans (runtime/plans.py): where prompts are prefilled; None: one plan.
        self.plans: PlanSet | None = PlanSet(self, allow_stand_in, plan) if manifest.options.plans else None
        if plan is not None and self.plans is None:
            raise BundleError(f"{self.bundle}: this bundle carries no plans to choose from (recompile it)")

    def _wake_workers(self) -> None:
        """Make one small device call at load, so that the first request's call is not the one
        that first starts IREE's task-executor workers (docs/benchmarks.md, "Restoring a
        persisted prefix"): `store_kv` of one position into a one-row cache, freed at once (the
        compiled function takes at least one row and one position; a request needs a row anyway).
        Skipped where a row is larger than `WAKE_ROW_BYTES`: a large model's row (hundreds of MiB
        at long context) would cost more memory at load than the first call's wake-up costs time."""
        cfg = self.config
        row_bytes = 2 * cfg.num_layers * cfg.num_kv_heads * self.cache_slots * cfg.head_dim * np.dtype(self.cache_dtype).itemsize
        if self.driver != "local-task" or row_bytes > WAKE_ROW_BYTES:  # local-task: the one driver here with a worker pool
            return
        kv = np.zeros((2, cfg.num_layers, cfg.num_kv_heads, 1, cfg.head_dim), self.cache_dtype)
        self._main.fns[STORE_KV](np.zeros(1, np.int64), np.zeros(1, np.int64), kv, *self.new_cache(1).buffers)

    def _load_inline(self, file: str) -> DecodeModule | None:
        """The main module once more, on `local-sync`, for prefill calls of at most INLINE_TOKENS
        tokens (a chat turn, the tokens after a restored prefix): it runs them in the calling
        thread, on the same KV buffers (local devices share the process's memory). IREE's task
        executor hands a call's ~170 dispatches between its threads; for a short call of a small
        model that costs about as much CPU as the call's work, and on a loaded machine each
        hand-off waits for a core (docs/benchmarks.md, "Short prompts"). Only for local-task
        bundles with at most INLINE_MAX_BYTES of weights: the second context keeps its own copy
        of the weights the compiler re-lays out at load, and a larger model's short call is long
        enough for the second thread to pay."""
        if self.driver != "local-task" or self.manifest.options.parameter_bytes > INLINE_MAX_BYTES:
            return None
        if not driver_available("local-sync"):
            return None
        return self.load_decode_module(file, "local-sync", "inline")

    def load_decode_module(self, file: str, driver: str, device_name: str) -> DecodeModule:
        """A module with every entry point on a device of `driver` (raises `DeviceLost` when the
        device is lost while its initializers upload the weights)."""
        import iree.runtime as rt

        try:
            device = hal_device(driver)
        except (ValueError, RuntimeError) as e:
            raise BundleError(f"{self.bundle}: HAL driver '{driver}' is not available here ({e})") from None
        provider = self._index.create_provider(scope=self.manifest.parameter_scope)
        main, context = load_module(self._instance, driver, device, provider, str(self.bundle / file))
        problem = module_problem(self.bundle, self.manifest, main, file, cache_layers=self.config.num_layers,
                                 logits=True, store_kv=True, sliding_window=self.sliding_window is not None)
        if problem:
            del main, context  # before raising: see devices.load_module
            raise BundleError(problem)
        names = [ep.name for ep in self.manifest.entry_points] + [STORE_KV]
        fns = {name: rt.FunctionInvoker(context, device, main.lookup_function(name)) for name in names}
        upload = None if driver.startswith("local-") else host_visible_upload(device)
        return DecodeModule(file, device_name, driver, device, fns, upload)

    @property
    def _device(self):
        return self._decoder.device

    @property
    def _fns(self) -> dict:
        return self._decoder.fns

    @_fns.setter
    def _fns(self, fns: dict) -> None:  # tests and tools wrap entry points
        self._decoder.fns = fns

    @property
    def exact_verify_rows(self) -> int:
        """Rows a verify call may check with each row bit for bit a one-row call (0: none); where
        set, one-row decode steps are one-row verify calls, so checked draft tokens are exactly
        what plain decoding would choose (docs/speculative.md, "Exactness"). The main module's
        only: the build derived it from that module's code, not from a plan's other device's."""
        return self._exact_rows if self._decoder is self._main else 0

    def _ready(self, cache: KVCache, slots: list[int], ends: list[int], keys: int, starts: list[int] | None = None) -> None:
        """Before a call that writes row slots[i] from position starts[i] (None: unknown) up to
        ends[i] - 1 and reads `keys` positions: move `cache` to the decode device if a plan switch
        left it elsewhere, and note what the call writes and reads (`KVCache.use`). Lock held."""
        if cache.device is not self._decoder.device and cache.device is not None:
            source = cache.device_name
            t = time.perf_counter()
            nbytes = cache.move_to(self._decoder.device, self._decoder.cache_memory, self._keeps(cache))
            self.kv_moves.history.append((source, self._decoder.device_name, nbytes, time.perf_counter() - t))
            cache.device_name = self._decoder.device_name
        cache.use(slots, ends, keys, starts if self.sliding_window is None else None)  # a ring's index is not its position

    def _keeps(self, cache: KVCache) -> bool:
        """Whether moving `cache` away keeps the buffers it leaves, for a move back that copies only
        what changed (`KVCache.move_to`): where the device it leaves allocates by size
        (`DecodeModule.keeps_left_caches`), and while every cache's kept buffers fit in
        `kv_keep_bytes` (keeping costs the whole cache's bytes there while it decodes elsewhere)."""
        modules = [self._main, *(self.plans.decoders.values() if self.plans is not None else ())]
        if not any(m.device is cache.device and m.keeps_left_caches for m in modules):
            return False
        if self._kept_total() - cache.kept_bytes + cache.nbytes > self.kv_keep_bytes:
            return False
        self._kept_caches[id(cache)] = cache
        return True

    def _kept_total(self) -> int:
        return sum(c.kept_bytes for c in list(self._kept_caches.values()))

    @property
    def kv_kept_bytes(self) -> int:
        """Bytes of KV buffers kept on a device their caches left (see `_keeps`)."""
        with self._lock:  # moves change them under it
            return self._kept_total()

    @classmethod
    def load(
        cls,
        bundle: str | Path,
        verify: bool = True,
        driver: str | None = None,
        prefix_cache: bool = False,
        prefix_cache_dir: str | Path | None = None,
        prefix_cache_bytes: int | None = None,
        prefix_block_size: int = DEFAULT_BLOCK_SIZE,
        normalize: Normalizer | str | None = None,
        prefill_chunk: int | None = None,
        draft=None,
        draft_tokens: int = DEFAULT_DRAFT_TOKENS,
        plan: str | None = None,
        allow_stand_in: bool = False,
        forced_tokens: bool = True,
    ) -> "Session":
        """Open a bundle folder; with `verify`, every file is checked against the manifest's hash.

        `prefix_cache` keeps the KV of prompt prefixes in memory for reuse; `prefix_cache_dir`
        also persists it there (implies `prefix_cache`), under a `prefix_cache_bytes` budget
        (default: the bundle's profile `prefix_cache_mb`, else 512 MiB). `normalize` (e.g.
        "whitespace,nfkc", see normalize.py) rewrites text prompts before tokenization, so
        prompts differing only in form share cached prefixes. `prefill_chunk` (tokens per
        prefill call, 0: the whole prompt at once) overrides the bundle's profile setting.
        `draft` turns on speculative decoding (runtime/speculative.py): "prompt-lookup", a
        draft bundle folder with the same tokenizer, a Session or a `drafts.Draft`; at most
        `draft_tokens` draft tokens are checked per target call. `plan` picks one of the bundle's
        plans (default: its first that can run here, see runtime/plans.py); `allow_stand_in` lets
        a plan's NPU stages run as CPU stand-ins. `forced_tokens`: a request with a grammar has
        the tokens it forces (a JSON key, its quotes) checked in the call of the step before
        them, with or without a draft (`checks_forced`)."""
        session = cls(
            Path(bundle), read_manifest(Path(bundle), verify=verify), driver, prefix_cache,
            Path(prefix_cache_dir) if prefix_cache_dir is not None else None, prefix_cache_bytes, prefix_block_size,
            normalize, prefill_chunk, plan, allow_stand_in,
        )
        if draft is not None:
            session._set_draft(draft, draft_tokens, verify)
        session.forced_tokens = bool(forced_tokens)
        return session

    def _set_draft(self, draft, draft_tokens: int, verify: bool = True) -> None:
        """Decode with `draft` (see `load`); the bundle needs the `verify` entry point."""
        if isinstance(draft_tokens, bool) or not isinstance(draft_tokens, int) or not 1 <= draft_tokens <= 64:
            raise RequestError(f"draft_tokens must be a number of tokens from 1 to 64 (got {draft_tokens!r})")
        if VERIFY not in self._fns:
            raise BundleError(f"{self.bundle}: this bundle has no '{VERIFY}' entry point, which speculative decoding "
                              "needs (bundles of a multi-device plan or a sliding-window cache have none; older "
                              "bundles: recompile)")
        self.draft = open_draft(self, draft, lambda path: Session.load(path, verify=verify, driver=self.driver))
        if isinstance(self.draft, BundleDraft) and self.draft.session.sliding_window is not None:
            raise BundleError(f"draft bundle {self.draft.session.bundle}: its KV cache is a sliding window; "
                              "a draft needs a cache indexed by position")
        self.draft_tokens = draft_tokens

    @property
    def decode_batch_sizes(self) -> list[int]:
        """Batch sizes this bundle has decode entry points for (1 is `decode`)."""
        sizes = [1] if "decode" in self._fns else []
        sizes += [int(n[len(BATCHED_DECODE):]) for n in self._fns if n.startswith(BATCHED_DECODE)]
        return sorted(sizes)

    # -- requests ---------------------------------------------------------------------------

    def encode(self, prompt: str) -> list[int]:
        if self.tokenizer is None:
            raise RequestError(f"{self.bundle}: this bundle has no tokenizer; pass token ids instead of text")
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError as e:  # a command line's undecodable bytes arrive as lone surrogates
            raise RequestError(f"the prompt text is not valid UTF-8 (at character {e.start})") from None
        # A text that cannot fit is refused before tokenizing it (seconds of CPU for megabytes);
        # the factor 2 leaves room for normalizers that shorten text.
        if len(prompt.encode("utf-8", "surrogatepass")) > 2 * self.tokenizer.max_token_bytes * self.max_context:
            raise RequestError(f"the prompt has {len(prompt)} characters, more than this bundle's context of "
                               f"{self.max_context} tokens can hold; recompile with a larger --max-context")
        ids = self.tokenizer.encode(self.normalizer(prompt) if self.normalizer else prompt)
        if prompt and not ids:  # e.g. a vocabulary without the text's characters and no unknown token
            raise RequestError(f"{self.tokenizer.path}: the tokenizer turns the prompt ({len(prompt)} characters) into no tokens")
        return ids

    def _check_ids(self, ids: list[int], max_new_tokens: int) -> None:
        if not ids:
            raise RequestError("the prompt is empty")
        bad = [i for i in ids if not 0 <= i < self.config.vocab_size]
        if bad:
            raise RequestError(f"token id {bad[0]} is outside the vocabulary (0..{self.config.vocab_size - 1})")
        if len(ids) >= self.max_context:
            raise RequestError(
                f"the prompt has {len(ids)} tokens; this bundle's context holds {self.max_context} "
                "(prompt plus at least one new token); recompile with a larger --max-context"
            )
        if max_new_tokens < 0:
            raise RequestError(f"max_new_tokens must be >= 0 (got {max_new_tokens})")

    def _prompt_ids(self, prompt: str | list[int]) -> list[int]:
        return self.encode(prompt) if isinstance(prompt, str) else [int(i) for i in prompt]

    def new_request(
        self,
        prompt: str | list[int],
        max_new_tokens: int = 64,
        sampling: SamplingParams = SamplingParams(),
        stop_ids: tuple[int, ...] | None = None,
        stop: tuple[str, ...] = (),
        *,
        grammar: Grammar | None = None,
        logprobs: int | None = None,
    ) -> RequestState:
        """Check a request and return its state. `stream`, `generate`, `stream_async` and
        `stream_async_many` take these same arguments.

        Generation ends at a stop id (default: the model's end-of-sequence ids), a stop string
        in `stop` (the text is cut before it), `max_new_tokens`, a full context, or when the
        text matches all of `grammar` (runtime/constrained.py: each step samples only tokens
        the grammar allows; its matcher is built here, on the caller's thread, as a large
        schema takes milliseconds). `logprobs` (0..20 alternatives per token) records each
        token's log-probability in the events and the result."""
        ids = self._prompt_ids(prompt)
        self._check_ids(ids, max_new_tokens)
        if isinstance(stop, str):
            stop = (stop,)
        if logprobs is not None and not (isinstance(logprobs, int) and 0 <= logprobs <= 20):
            raise RequestError(f"logprobs must be an integer in 0..20 (got {logprobs!r})")
        return RequestState(
            ids, max_new_tokens, Sampler(sampling, self.config.vocab_size),
            set(self.config.eos_token_ids if stop_ids is None else stop_ids),
            self.max_context, self.tokenizer, tuple(stop),
            constraint=self.constraints(grammar) if grammar is not None else None, top_logprobs=logprobs,
        )

    def stream(self, prompt: str | list[int], *args, **kwargs) -> "Generation":
        """Iterate over generated tokens as they come (arguments as `new_request`); `.result`
        holds the totals afterwards."""
        return Generation(self, self.new_request(prompt, *args, **kwargs))

    def generate(self, prompt: str | list[int], *args, **kwargs) -> GenerationResult:
        """Generate to the end and return ids, text and timings (arguments as `new_request`)."""
        gen = self.stream(prompt, *args, **kwargs)
        for _ in gen:
            pass
        return gen.result

    def stream_async(self, prompt: str | list[int], *args, timeout: float | None = None, **kwargs) -> AsyncGeneration:
        """`async for event in session.stream_async(...)` (arguments as `new_request`): served
        by the batching engine, so concurrent streams share batched decode steps. Leaving the
        loop early, cancelling the task or `timeout` (seconds, raises TimeoutError) cancels the
        request."""
        return AsyncGeneration(self.engine, self.new_request(prompt, *args, **kwargs), timeout)

    def stream_async_many(self, prompt: str | list[int], n: int, *args, timeout: float | None = None,
                          **kwargs) -> list[AsyncGeneration]:
        """`n` generations of one prompt (OpenAI's n; other arguments as `new_request`): the
        prompt is tokenized and prefilled once and its KV copied into the other rows. With a
        seed, generation i samples with seed + i, so they differ and each is reproducible."""
        if not (isinstance(n, int) and n >= 1):
            raise RequestError(f"n must be a positive integer (got {n!r})")
        ids = self._prompt_ids(prompt)
        first = self.new_request(ids, *args, **kwargs)
        states = [first]
        seed = first.sampler.params.seed
        for i in range(1, n):
            state = self.new_request(ids, *args, **kwargs)
            if seed is not None:
                state.sampler = Sampler(dataclasses.replace(state.sampler.params, seed=(seed + i) % 2**64), self.config.vocab_size)
            states.append(state)
        shared = SharedPrompt(n) if n > 1 else None
        return [AsyncGeneration(self.engine, state, timeout, shared) for state in states]

    @property
    def engine(self) -> BatchEngine:
        """The session's batching engine, started on first use."""
        with self._engine_lock:
            if self._engine is None:
                self._engine = BatchEngine(self, self.gather_ms)
            return self._engine

    def close(self) -> None:
        """Stop the batching engine (if started), which cancels what it still runs; wait until
        the prefix cache's folder holds what it stored."""
        with self._engine_lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()
        if self.prefix_cache is not None:
            self.prefix_cache.close()

    # -- device calls ------------------------------------------------------------------------

    def new_cache(self, rows: int = 1) -> KVCache:
        """A zeroed device KV cache with `rows` slots."""
        cfg = self.config
        d = self._decoder
        cache = KVCache.zeros(d.device, cfg.num_layers, rows, cfg.num_kv_heads, self.cache_slots, cfg.head_dim, self.cache_dtype,
                              d.upload)  # Vulkan: host-visible, so that a plan switch moves it by mapping
        cache.device_name = d.device_name
        return cache

    def _attended(self, last_position: int) -> np.ndarray:
        """The `key_positions` input of a step ending at `last_position` (a sliding-window
        cache reads its whole row and ignores it)."""
        if self.sliding_window is not None:
            return key_positions(self.cache_slots)
        return key_positions(attended_keys(last_position, self.max_context))

    def run_prefill(self, ids: list[int], start: int, cache: KVCache, slot: int = 0) -> np.ndarray:
        """`prefill` of `ids` at positions start.. of row `slot` (in place), in calls of at most
        `prefill_chunk` tokens (a sliding-window cache: at most `SparsePattern.chunk`), each
        extending what the previous ones wrote; last position's logits."""
        size = self.prefill_chunk if self.sliding_window is None else self.sliding_window.call_tokens(self.prefill_chunk)
        placement = self.plans.placement() if self.plans is not None else None
        if placement is not None:  # a phase-split plan: its own devices, then the KV hand-off
            return placement.run(self, chunks(len(ids), size), ids, start, cache, slot)
        for first, end in chunks(len(ids), size):
            logits = self._prefill_call(ids[first:end], start + first, cache, slot)
        return logits

    # -- plans -------------------------------------------------------------------------------

    def plan_set(self) -> PlanSet:
        """The bundle's plans (a RequestError for a bundle that carries one)."""
        if self.plans is None:
            raise RequestError(f"{self.bundle}: this bundle carries one plan (recompile it to get its plans)")
        return self.plans

    @property
    def plan(self) -> str | None:
        """The plan prompts are prefilled with (None: a bundle without plans)."""
        return self.plans.current if self.plans is not None else None

    def use_plan(self, name: str) -> str:
        """Switch plans, between requests or between decode steps: the next prefill runs on the
        new plan's devices; a generation in progress continues unchanged."""
        return self.plan_set().use(name)

    def set_power_budget(self, watts: float) -> str:
        """Switch to the fastest plan estimated to draw at most `watts` (none: the least-drawing
        one, with a warning line); returns its name."""
        plans = self.plan_set()
        name, note = plans.for_power_budget(watts)
        if note:
            warnings.warn(note, PlanFallbackWarning, stacklevel=2)
        return plans.use(name)

    def _prefill_call(self, ids: list[int], start: int, cache: KVCache, slot: int) -> np.ndarray:
        with self._lock:
            keys = self._attended(start + len(ids) - 1)
            self._ready(cache, [slot], [start + len(ids)], len(keys), [start])
            logits = self._prefill_function(len(ids), cache)(
                np.asarray([ids], np.int64), np.asarray([start], np.int64), np.asarray([slot], np.int64),
                keys, *cache.buffers,
            )
            # to_host() may map device memory that later calls reuse: keep an owned copy.
            return np.array(logits.to_host()[0])

    def _prefill_function(self, tokens: int, cache: KVCache):
        """The `prefill` that runs a call of `tokens` tokens on `cache`: the inline module's for a
        short call on the main module's cache (`_load_inline`), else the decoding module's."""
        inline = self._inline
        if inline is not None and tokens <= INLINE_TOKENS and self._decoder is self._main and cache.device is self._main.device:
            return inline.fns["prefill"]
        return self._fns["prefill"]

    def prefill(self, state: RequestState, cache: KVCache, slot: int = 0) -> np.ndarray:
        """Run the prompt into row `slot` of `cache` (after its longest cached prefix, if any);
        returns the last position's logits. Sets `state.pos`."""
        ids = state.ids
        start = 0
        pc = self.prefix_cache
        if pc is not None:
            blocks = pc.match(ids)
            if blocks:
                self._store_kv(cache, slot, pc.parts(blocks))
                start = len(blocks) * pc.block_size
        logits = self.run_prefill(ids[start:], start, cache, slot)
        first = pc.first_missing(ids) if pc is not None else None
        if first is not None:  # read back only the KV of the blocks not stored yet
            with self._lock:
                host = cache.read(slot, len(ids), first)
            pc.insert(ids, *host, start=first)
        state.cached_tokens = start
        state.pos = len(ids)
        return logits

    def verify(self, ids: list[int], start: int, cache: KVCache, slot: int = 0) -> np.ndarray:
        """`verify` of `ids` at positions start.. of row `slot` (in place, like prefill): every
        row's logits [len(ids), V], for checking draft tokens in one call."""
        with self._lock:
            keys = self._attended(start + len(ids) - 1)
            self._ready(cache, [slot], [start + len(ids)], len(keys), [start])
            logits = self._fns[VERIFY](
                np.asarray([ids], np.int64), np.asarray([start], np.int64), np.asarray([slot], np.int64),
                keys, *cache.buffers,
            )
            return np.array(logits.to_host()[0])

    def embed(self, prompt: str | list[int]) -> np.ndarray:
        """An embedding of the text: the mean over its tokens of the model's final-norm hidden
        states, L2-normalized (float32 [hidden_size]). Runs the bundle's `embed` entry point (a
        prefill that returns hidden states) in chunks, in a KV-cache row of its own."""
        if "embed" not in self._fns:
            raise RequestError(f"{self.bundle}: this bundle has no embeddings entry point (recompile it without --no-embeddings)")
        ids = self._prompt_ids(prompt)
        self._check_ids(ids, 0)
        with self._engine_lock:
            if self._embed_cache is None:
                self._embed_cache = self.new_cache(1)
        total = np.zeros(self.config.hidden_size, np.float64)
        with self._embed_lock:
            for first, end in chunks(len(ids), self.prefill_chunk):
                with self._lock:
                    keys = self._attended(end - 1)
                    self._ready(self._embed_cache, [0], [end], len(keys))
                    hidden = self._fns["embed"](
                        np.asarray([ids[first:end]], np.int64), np.asarray([first], np.int64), np.zeros(1, np.int64),
                        keys, *self._embed_cache.buffers,
                    )
                    total += np.asarray(hidden.to_host()[0], np.float64).sum(axis=0)
        mean = total / len(ids)
        return (mean / max(np.linalg.norm(mean), 1e-12)).astype(np.float32)

    def prompt_kv(self, cache: KVCache, slot: int, length: int) -> np.ndarray | None:
        """Row `slot`'s first `length` positions on the host, [2, L, Hkv, P, D], for `store_prompt`
        (None for a sliding-window cache, whose rows are not indexed by position)."""
        if self.sliding_window is not None:
            return None
        with self._lock:
            k, v = cache.read(slot, length)
        return np.stack([k[:, 0], v[:, 0]])

    def store_prompt(self, state: RequestState, cache: KVCache, slot: int, kv: np.ndarray) -> None:
        """Put a prompt's KV (from `prompt_kv`) into row `slot`, as if `state`'s prompt had been
        prefilled there."""
        self._store_kv(cache, slot, [kv])
        state.cached_tokens = len(state.ids)
        state.pos = len(state.ids)

    def _store_kv(self, cache: KVCache, slot: int, parts: list[np.ndarray]) -> None:
        """KV parts [2, L, Hkv, n_i, D], consecutive, into positions 0.. of row `slot`: host
        copies into the mapped buffers where the device's memory is the host's, else one call of
        the bundle's store_kv."""
        with self._lock:
            total = sum(p.shape[3] for p in parts)
            self._ready(cache, [slot], [total], total)
            if not cache.write(slot, parts):
                kv = np.concatenate(parts, axis=3).astype(self.cache_dtype, copy=False)  # [2, L, Hkv, P, D]
                self._fns[STORE_KV](np.asarray([slot], np.int64), np.zeros(1, np.int64), kv, *cache.buffers)

    def decode(self, tokens: list[int], positions: list[int], cache: KVCache, slots: list[int] | None = None) -> np.ndarray:
        """One decode step for a batch (its size must be compiled): token i at positions[i] of
        row slots[i] (default 0, 1, ...); returns host logits [B, V]. One row of a bundle with
        `exact_verify_rows` runs `verify` (same bits as the rows of a verify call)."""
        slots = list(range(len(tokens))) if slots is None else slots
        if len(tokens) == 1 and self.exact_verify_rows:
            return self.verify(tokens, positions[0], cache, slots[0])
        name = decode_name(len(tokens))
        with self._lock:
            keys = self._attended(max(positions))
            self._ready(cache, slots, [p + 1 for p in positions], len(keys), positions)
            logits = self._fns[name](
                np.asarray(tokens, np.int64)[:, None], np.asarray(positions, np.int64), np.asarray(slots, np.int64),
                keys, *cache.buffers,
            )
            return np.array(logits.to_host())

    # -- the one-at-a-time loop --------------------------------------------------------------

    @property
    def checks_forced(self) -> bool:
        """Whether requests with a grammar decode through verify calls even without a draft, to
        check the tokens it forces with the step before them: only where verify rows are decode
        steps bit for bit (`exact_verify_rows`), so the output stays plain decoding's."""
        return self.forced_tokens and self.exact_verify_rows >= 2

    def speculates(self, state: RequestState) -> bool:
        """Whether `state` takes speculative steps (when it runs alone): with the session's draft,
        or to check the tokens its grammar forces (`checks_forced`)."""
        return self.draft is not None or (state.constraint is not None and self.checks_forced)

    def _run(self, state: RequestState) -> Iterator[StreamEvent]:
        if self.speculates(state):
            yield from SpeculativeDecoder(self, self.draft, self.draft_tokens).run(state)
            return
        if state.done:
            return
        t = time.perf_counter()
        cache = self.new_cache(1)
        logits = self.prefill(state, cache)
        token = state.choose(logits)
        state.prefill_s = time.perf_counter() - t
        t = time.perf_counter()
        try:
            while True:
                event = state.accept(token)
                yield event
                if state.done:
                    break
                logits = self.decode([token], [state.pos], cache)
                token = state.choose(logits[0])
                state.pos += 1
                state.decode_tokens += 1
        finally:
            state.decode_s = time.perf_counter() - t


class Generation:
    """A running generation: iterate for `StreamEvent`s; `result` is set once it has ended."""

    def __init__(self, session: Session, state: RequestState):
        self.prompt_ids = state.ids
        self._state = state
        self._events = session._run(state)
        self.result: GenerationResult | None = None

    def __iter__(self) -> "Generation":
        return self

    def __next__(self) -> StreamEvent:
        try:
            return next(self._events)
        except StopIteration:
            self.result = self._state.result()
            raise
