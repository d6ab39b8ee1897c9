"""Drafts for speculative decoding: cheap guesses of the next tokens that the target checks.

`PromptLookup` needs no model: it continues the most recent earlier occurrence of the
context's last n-gram (code being edited, an agent's transcript repeat their context).
`BundleDraft` runs a smaller bundle with the same tokenizer (e.g. one `--prune` made from the
target) on its own one-row KV cache. A draft only proposes; runtime/speculative.py decides
what is kept, so a bad draft costs time, never output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from iree_glm.errors import BundleError, UserError
from iree_glm.runtime.sampling import Sampler, SamplingParams

PROMPT_LOOKUP = "prompt-lookup"


class Model(Protocol):
    """What drafts and verification need of a loaded bundle (runtime.Session is one)."""

    bundle: Path
    max_context: int
    exact_verify_rows: int  # rows of a verify call that are decode steps bit for bit (0: none)
    forced_tokens: bool  # whether verify calls check the tokens a request's grammar forces

    def new_cache(self, rows: int = 1): ...

    def run_prefill(self, ids: list[int], start: int, cache, slot: int = 0) -> np.ndarray: ...

    def decode(self, tokens: list[int], positions: list[int], cache, slots: list[int] | None = None) -> np.ndarray: ...

    def verify(self, ids: list[int], start: int, cache, slot: int = 0) -> np.ndarray: ...


@dataclass
class Proposal:
    """Draft tokens, and for a sampling draft the distribution each was drawn from (None: the
    draft is deterministic, each token had probability 1)."""

    tokens: list[int]
    probs: list[np.ndarray] | None = None


class DraftRun(Protocol):
    """A draft's state for one request."""

    def propose(self, context: list[int], k: int) -> Proposal:
        """Up to k tokens to follow `context` (prompt, generated tokens, the pending token)."""

    def accepted(self, context_length: int, kept: int) -> None:
        """The context's first `context_length` tokens and the `kept` tokens after them are
        final (the last proposal followed them, after any tokens the grammar forced)."""


class Draft(Protocol):
    name: str

    def start(self, sampling: SamplingParams) -> DraftRun: ...


class PromptLookup:
    """Propose the continuation of the latest earlier match of the context's last n tokens,
    trying n = max_ngram down to min_ngram.

    The continuation is an overlapping copy (as in LZ77): where it reaches the context's end
    it goes on with the tokens it has just proposed. A context that ends in a repeating stretch
    (a run, a loop of a few tokens, a list of like lines) gets k tokens of it, not one period."""

    name = PROMPT_LOOKUP

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1):
        if not 1 <= min_ngram <= max_ngram:
            raise UserError(f"prompt lookup: n-gram sizes need 1 <= min ({min_ngram}) <= max ({max_ngram})")
        self.max_ngram, self.min_ngram = max_ngram, min_ngram

    def start(self, sampling: SamplingParams) -> "PromptLookup":
        return self

    def propose(self, context: list[int], k: int) -> Proposal:
        ids = np.asarray(context, np.int64)
        size = ids.size
        for n in range(min(self.max_ngram, size - 1), self.min_ngram - 1, -1):
            # Starts i < size - n with ids[i:i+n] == the last n tokens.
            hits = np.ones(size - n, bool)
            for j in range(n):
                hits &= ids[j : size - n + j] == ids[size - n + j]
            starts = np.flatnonzero(hits)
            if starts.size:
                first = int(starts[-1]) + n
                return Proposal([int(t) for t in np.resize(ids[first : first + k], k)])
        return Proposal([])

    def accepted(self, context_length: int, kept: int) -> None:
        pass


class BundleDraft:
    """A smaller bundle (its own Session) that proposes by decoding ahead, greedily or with
    the request's sampling parameters.

    Its own cache holds at most the last `window` tokens it missed: the first proposal of a
    request, or one after speculation paused, restarts the draft on the context's last `window`
    tokens at its position 0 instead of feeding it everything since (RoPE scores depend on
    relative positions only, so the draft sees a shorter context, not a shifted one). Feeding it
    the whole prompt cost more than a useless draft may lose (docs/speculative.md); a draft that
    keeps up is never restarted."""

    WINDOW = 64

    def __init__(self, session: Model, window: int = WINDOW):
        self.session = session
        self.name = str(session.bundle)
        self.window = max(1, min(window, session.max_context // 2))

    def start(self, sampling: SamplingParams) -> "BundleDraftRun":
        return BundleDraftRun(self.session, Sampler(sampling), self.window)


class BundleDraftRun:
    def __init__(self, session: Model, sampler: Sampler, window: int):
        self.session = session
        self.sampler = sampler
        self.window = window
        self.cache = session.new_cache(1)
        self.offset = 0  # the context index at the draft cache's position 0
        self.pos = 0  # context tokens [offset, pos) are in the draft's cache
        self.written = 0  # context index past the positions the last proposal wrote

    def _logits(self, context: list[int], k: int) -> np.ndarray:
        """Feed the context's tokens the cache lacks (restarting on the last `window` where that
        is more, or where k more would not fit); the last one's logits."""
        if len(context) - self.pos > self.window or len(context) - self.offset + k > self.session.max_context:
            self.offset = self.pos = max(0, len(context) - self.window)
        new = context[self.pos :]
        at = self.pos - self.offset
        if len(new) == 1:
            logits = self.session.decode(new, [at], self.cache)[0]
        else:
            logits = self.session.run_prefill(new, at, self.cache)
        self.pos = len(context)
        return logits

    def propose(self, context: list[int], k: int) -> Proposal:
        k = min(k, self.session.max_context - self.window)
        if k <= 0:
            return Proposal([])
        logits = self._logits(context, k)
        tokens: list[int] = []
        probs: list[np.ndarray] = []
        sampling = self.sampler.params.temperature > 0
        while True:
            if sampling:
                q = self.sampler.distribution(logits)
                tokens.append(self.sampler.draw(q))
                probs.append(q)
            else:
                tokens.append(int(np.argmax(logits)))
            if len(tokens) == k:
                break
            logits = self.session.decode([tokens[-1]], [self.pos - self.offset + len(tokens) - 1], self.cache)[0]
        self.written = len(context) + k - 1
        return Proposal(tokens, probs if sampling else None)

    def accepted(self, context_length: int, kept: int) -> None:
        # Entries past the accepted tokens are stale; attention never reads past a query's position.
        self.pos = min(self.written, context_length + kept)


def check_same_tokenizer(target: Model, draft: Model) -> None:
    """A draft must speak the target's token ids: same vocabulary size and tokenizer file."""
    tm, dm = target.manifest, draft.manifest
    where = f"draft bundle {draft.bundle}"
    if dm.model.vocab_size != tm.model.vocab_size:
        raise BundleError(f"{where}: its vocabulary has {dm.model.vocab_size} tokens, the target's "
                          f"{tm.model.vocab_size}: a draft needs the target's tokenizer")
    t_hash = tm.files.get(tm.tokenizer) if tm.tokenizer else None
    d_hash = dm.files.get(dm.tokenizer) if dm.tokenizer else None
    if t_hash != d_hash:
        raise BundleError(f"{where}: its tokenizer differs from the target's ({target.bundle}): "
                          "a draft needs the target's tokenizer")


def open_draft(target: Model, draft, load) -> Draft:
    """`draft` as a Draft: "prompt-lookup", a bundle folder (opened with `load`), a Session or a
    Draft object."""
    if isinstance(draft, str) and draft == PROMPT_LOOKUP:
        return PromptLookup()
    if isinstance(draft, (str, Path)):
        path = Path(draft)
        if not path.is_dir():
            raise UserError(f"--draft: '{draft}' is neither '{PROMPT_LOOKUP}' nor a bundle folder")
        draft = load(path)
    if hasattr(draft, "manifest") and hasattr(draft, "decode"):
        check_same_tokenizer(target, draft)
        return BundleDraft(draft)
    if hasattr(draft, "start"):
        return draft
    raise UserError(f"draft: expected '{PROMPT_LOOKUP}', a bundle folder or a Session (got {type(draft).__name__})")
