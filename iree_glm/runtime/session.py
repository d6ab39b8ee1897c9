"""Load a bundle and generate text from it on an IREE HAL device.

The KV cache stays on the device between calls: `prefill` and `decode` take the cache and
return the updated one, and the session passes the returned device buffers straight back.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..bundle import Manifest, read_manifest
from ..config import ModelConfig
from ..errors import BundleError, RequestError
from ..tokenizer import StreamDecoder, TextTokenizer
from .sampling import Sampler, SamplingParams


@dataclass
class GenerationResult:
    prompt_ids: list[int]
    generated_ids: list[int]
    text: str
    prefill_ms: float
    decode_tok_s: float
    stop_reason: str  # "eos", "max_new_tokens" or "context_full"

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class StreamEvent:
    """One generated token as it arrives."""

    token_id: int
    text: str


@dataclass
class _Timing:
    prefill_s: float = 0.0
    decode_s: float = 0.0
    decode_tokens: int = 0
    stop_reason: str = ""
    generated: list[int] = field(default_factory=list)


class Session:
    """A loaded bundle. Thread-safe: one generation runs at a time per session."""

    def __init__(self, bundle: Path, manifest: Manifest, driver: str | None = None):
        import iree.runtime as rt

        self.bundle = Path(bundle)
        self.manifest = manifest
        self.config = ModelConfig.from_dict(manifest.model)
        self.max_context = manifest.max_context
        self._lock = threading.Lock()
        module = manifest.modules[0]
        self.driver = driver or module.driver
        try:
            self._device = rt.get_device(self.driver)
        except (ValueError, RuntimeError) as e:
            raise BundleError(f"{self.bundle}: HAL driver '{self.driver}' is not available here ({e})") from None
        self._instance = rt.VmInstance()
        index = rt.ParameterIndex()
        index.load(str(self.bundle / manifest.parameters))
        params = rt.create_io_parameters_module(self._instance, index.create_provider(scope=manifest.parameter_scope))
        hal = rt.create_hal_module(self._instance, self._device)
        main = rt.VmModule.mmap(self._instance, str(self.bundle / module.file))
        self._context = rt.VmContext(self._instance, modules=[hal, params, main])
        self._fns = {
            ep["name"]: rt.FunctionInvoker(self._context, self._device, main.lookup_function(ep["name"]))
            for ep in manifest.entry_points
        }
        self._index = index  # keeps the mmapped archive alive
        self.tokenizer = TextTokenizer(self.bundle / manifest.tokenizer) if manifest.tokenizer else None
        cfg = self.config
        self._cache_shape = (cfg.num_layers, 1, cfg.num_kv_heads, self.max_context, cfg.head_dim)
        self._zero_cache = np.zeros(self._cache_shape, np.float32)

    @classmethod
    def load(cls, bundle: str | Path, verify: bool = True, driver: str | None = None) -> "Session":
        """Open a bundle folder; with `verify`, every file is checked against the manifest's hash."""
        return cls(Path(bundle), read_manifest(Path(bundle), verify=verify), driver)

    # -- requests ---------------------------------------------------------------------------

    def encode(self, prompt: str) -> list[int]:
        if self.tokenizer is None:
            raise RequestError(f"{self.bundle}: this bundle has no tokenizer; pass token ids instead of text")
        return self.tokenizer.encode(prompt)

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

    def stream(
        self,
        prompt: str | list[int],
        max_new_tokens: int = 64,
        sampling: SamplingParams = SamplingParams(),
        stop_ids: tuple[int, ...] | None = None,
    ) -> "Generation":
        """Iterate over generated tokens as they come; `.result` holds the totals afterwards."""
        ids = self._prompt_ids(prompt)
        self._check_ids(ids, max_new_tokens)
        return Generation(self, ids, max_new_tokens, Sampler(sampling), stop_ids)

    def generate(
        self,
        prompt: str | list[int],
        max_new_tokens: int = 64,
        sampling: SamplingParams = SamplingParams(),
        stop_ids: tuple[int, ...] | None = None,
    ) -> GenerationResult:
        """Generate to the end and return ids, text and timings."""
        gen = self.stream(prompt, max_new_tokens, sampling, stop_ids)
        for _ in gen:
            pass
        return gen.result

    # -- the loop ---------------------------------------------------------------------------

    def _run(self, ids, max_new_tokens, sampler, stop_ids, timing: _Timing) -> Iterator[StreamEvent]:
        stops = set(self.config.eos_token_ids if stop_ids is None else stop_ids)
        decoder = StreamDecoder(self.tokenizer) if self.tokenizer else None
        with self._lock:
            if max_new_tokens == 0:
                timing.stop_reason = "max_new_tokens"
                return
            t = time.perf_counter()
            logits, k, v = self._fns["prefill"](
                np.asarray([ids], np.int64), np.zeros(1, np.int64), self._zero_cache, self._zero_cache
            )
            token = sampler(logits.to_host()[0])
            timing.prefill_s = time.perf_counter() - t
            pos = len(ids)
            decode = self._fns["decode"]
            t = time.perf_counter()
            while True:
                timing.generated.append(token)
                yield StreamEvent(token, decoder.push(token) if decoder else "")
                if token in stops:
                    timing.stop_reason = "eos"
                    break
                if len(timing.generated) >= max_new_tokens:
                    timing.stop_reason = "max_new_tokens"
                    break
                if pos >= self.max_context:
                    timing.stop_reason = "context_full"
                    break
                logits, k, v = decode(np.asarray([[token]], np.int64), np.asarray([pos], np.int64), k, v)
                token = sampler(logits.to_host()[0])
                pos += 1
                timing.decode_tokens += 1
            timing.decode_s = time.perf_counter() - t


class Generation:
    """A running generation: iterate for `StreamEvent`s; `result` is set once it has ended."""

    def __init__(self, session: Session, ids: list[int], max_new_tokens: int, sampler: Sampler, stop_ids):
        self.prompt_ids = ids
        self._timing = _Timing()
        self._events = session._run(ids, max_new_tokens, sampler, stop_ids, self._timing)
        self._pieces: list[str] = []
        self.result: GenerationResult | None = None

    def __iter__(self) -> "Generation":
        return self

    def __next__(self) -> StreamEvent:
        try:
            event = next(self._events)
        except StopIteration:
            self._finish()
            raise
        self._pieces.append(event.text)
        return event

    def _finish(self) -> None:
        t = self._timing
        self.result = GenerationResult(
            prompt_ids=self.prompt_ids,
            generated_ids=t.generated,
            text="".join(self._pieces),
            prefill_ms=t.prefill_s * 1e3,
            decode_tok_s=t.decode_tokens / t.decode_s if t.decode_s > 0 else 0.0,
            stop_reason=t.stop_reason,
        )
