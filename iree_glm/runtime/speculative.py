"""Speculative decoding: a draft proposes k tokens, the target checks them in one call.

Decode reads every weight once per token, so it is bound by memory bandwidth; the bundle's
`verify` entry point runs the pending token and k draft tokens as one k+1-row call (about one
decode step's weight traffic) and returns every row's logits. Greedy: the longest prefix of
the draft equal to the target's argmax is kept, plus the target's own next token, so the
output is the plain decode's token for token. Sampling: each draft token d is kept with
probability min(1, p(d) / q(d)), a rejected one is replaced by a draw from max(0, p - q)
renormalised, and a fully accepted draft earns a draw from the last row; the tokens are then
distributed exactly as the target's (Leviathan et al. 2023, Chen et al. 2023).

Rejected tokens leave no trace: the call wrote their KV at positions past the accepted ones,
the request's position counter is set after the accepted tokens only, and the next call
writes over those positions before any query can attend to them (a query sees keys at
positions <= its own). The prefix cache only ever stores the prompt (Session.prefill).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from iree_glm.runtime.drafts import BundleDraft, Draft, Model, Proposal
from iree_glm.runtime.request import RequestState, StreamEvent
from iree_glm.runtime.sampling import Sampler

DEFAULT_DRAFT_TOKENS = 8


def moving_average(averages: dict[int, float], key: int, seconds: float) -> None:
    """Fold `seconds` into the moving average of call times kept under `key`."""
    old = averages.get(key)
    averages[key] = seconds if old is None else 0.8 * old + 0.2 * seconds


@dataclass
class AdaptiveK:
    """Draft length from the acceptance seen so far, and whether to speculate at all from what
    speculating has cost.

    k grows after a fully accepted draft and shrinks towards what was kept otherwise; after
    repeated misses, or where the measured time of a round with k draft tokens buys fewer
    tokens per second than plain decode steps at this acceptance (unless the timed rounds so
    far have paid: `paying`), speculation pauses (plain decode steps) for a pause that doubles
    on each further miss. In the batching engine a plain step's time is what a token costs in
    a step that every active request shares (runtime/batching.py).

    The cost budget: a round's measured time covers all of it (the draft's own steps, its
    catch-up on the tokens it has not seen, the verify call), and each round is booked against
    the plain steps its tokens would have taken: excess = round time - tokens x plain step, at
    the plain step's time when the round ran (in the batching engine that reference moves with
    the batch, and a past round keeps its price).
    Speculation waits while the summed excess is above `budget` x the time of plain steps for
    every token generated so far (T). A draft that pays runs a negative excess and is never
    held back; a useless one whose rounds cost c plain steps each (1 token) adds c - 1 per
    round, so after the first such round it waits until T >= (c - 1) / budget, and then probes
    once every (c - 1) / budget tokens (budget 0.02: a free rejected draft, c ~ 1.2, probes once
    in 10 tokens; a draft bundle's probe, c ~ 2.5 with its catch-up, once in 75). The time lost
    is then at most budget x T plus the one round that crossed the line: <= budget + (c_max -
    1) / T of plain decoding's time (2% + 3/64 = 6.7% at 64 tokens after a first round of 4
    plain steps, 2% + 3/512 = 2.6% at 512). The plain step's time is measured first: a timed
    request's first step is plain (`start_plain`)."""

    max_k: int
    k: int = 0
    rate: float = 0.5  # moving average of accepted / proposed; no evidence yet: a useless draft pauses after 3 misses, not 5
    pause: int = 0  # steps left without speculation
    backoff: int = 2
    seconds: dict[int, float] = field(default_factory=dict)  # moving average of a greedy round's time by draft length (0: plain)
    budget: float = 0.02  # the share of plain decoding's time speculation may lose
    spent: float = 0.0  # seconds of timed speculative rounds
    earned: int = 0  # tokens those rounds yielded
    lost: float = 0.0  # the summed excess of those rounds: seconds beyond plain steps for their tokens
    plain_steps: int = 0  # timed plain steps (one token each)
    round_s: float | None = None  # the last timed speculative round, booked by `update`

    def __post_init__(self) -> None:
        self.k = self.k or max(1, self.max_k // 2)

    def start_plain(self) -> None:
        """Take a plain step first, so the first round's cost can be judged against it."""
        self.pause = max(self.pause, 1)

    def next(self) -> int:
        if self.pause > 0:
            self.pause -= 1
            return 0
        return 0 if self.over_budget() else self.k

    def timed(self, proposed: int, seconds: float) -> None:
        """A round with `proposed` draft tokens (0: a plain decode step) took `seconds`."""
        moving_average(self.seconds, proposed, seconds)
        if proposed:
            self.round_s = seconds
        else:
            self.plain_steps += 1

    def over_budget(self) -> bool:
        plain = self.seconds.get(0)
        return plain is not None and self.lost > self.budget * plain * (self.earned + self.plain_steps)

    def speed(self, k: int) -> float:
        """Expected tokens per second of steps with k draft tokens: (1 - a^(k+1)) / (1 - a) tokens
        at acceptance a over the measured time of such a step (k must be measured)."""
        a = min(self.rate, 0.999)
        return (1 - a ** (k + 1)) / (1 - a) / self.seconds[k]

    def paying(self) -> bool:
        """Whether the timed rounds so far took less time than plain steps for their tokens: the
        measured record then outweighs `worth`'s estimate from the slowly moving acceptance."""
        return 0 in self.seconds and self.earned > 0 and self.lost < 0

    def worth(self, k: int) -> bool:
        """Whether steps of k draft tokens beat plain steps by the measured times (unmeasured: yes)."""
        return 0 not in self.seconds or k not in self.seconds or self.speed(k) >= self.speed(0)

    def update(self, proposed: int, accepted: int, yielded: int | None = None) -> None:
        """A round proposed `proposed` draft tokens, `accepted` were kept, and it yielded
        `yielded` tokens (default: those and the target's next one)."""
        if proposed == 0:
            return
        if self.round_s is not None:
            yielded = accepted + 1 if yielded is None else yielded
            if 0 in self.seconds:
                self.lost += self.round_s - yielded * self.seconds[0]
            self.spent, self.earned, self.round_s = self.spent + self.round_s, self.earned + yielded, None
        self.rate = 0.7 * self.rate + 0.3 * accepted / proposed
        if accepted == proposed:
            self.k = min(self.k + 1, self.max_k)
            self.backoff = 2
        else:
            self.k = max(1, min(self.k - 1, accepted + 1))
        if self.k in self.seconds:  # the fastest measured length, once this one is measured too
            self.k = max((k for k in self.seconds if 0 < k <= self.max_k), key=self.speed)
        if self.rate < 0.2 or not (self.worth(proposed) or self.paying()):
            self.pause, self.backoff = self.backoff, min(2 * self.backoff, 64)
            self.rate = 0.25  # probe again after the pause: one more miss pauses again, one hit resumes


# Greedy verification where verify's rows may differ from decode steps in the last bits: a row
# whose two best logits are closer than this fraction of its largest |logit| decides nothing and
# is left to a decode step (docs/speculative.md, "Exactness": what this does and does not ensure).
MARGIN = 2.0 ** -10


def decided(row: np.ndarray, margin: float) -> int | None:
    """The row's argmax, or None where its lead over the runner-up is within `margin` x the
    largest finite |value| (a grammar's mask puts -inf on the tokens it forbids)."""
    best = int(np.argmax(row))
    if margin > 0:
        top2 = np.partition(row, -2)[-2:]
        finite = row[np.isfinite(row)]
        if top2[1] - top2[0] <= margin * float(np.abs(finite).max() if finite.size else 0.0):
            return None
    return best


def accept_greedy(draft: list[int], logits: np.ndarray, margin: float = 0.0) -> tuple[list[int], bool]:
    """(The kept draft tokens plus the target's next token, True); logits [k+1, V]. With
    `margin`, a row too close to call ends the list there without the target's token: (the kept
    draft tokens before it, False), and that position takes a plain decode step."""
    out = []
    for i in range(len(draft) + 1):
        best = decided(logits[i], margin)
        if best is None:
            return out, False
        if i == len(draft) or best != draft[i]:
            return out + [best], True
        out.append(best)
    raise AssertionError("unreachable")


def accept_sampled(proposal: Proposal, logits: np.ndarray, sampler: Sampler, history: list[int] = ()) -> list[int]:
    """The rejection rule that keeps the target's distribution; logits [k+1, V]; `history`:
    the tokens generated before the call (the sampler's penalties count them, and the draft
    tokens before a row)."""
    out = []
    for i, token in enumerate(proposal.tokens):
        p = sampler.distribution(logits[i], [*history, *proposal.tokens[:i]])
        q_token = proposal.probs[i][token] if proposal.probs is not None else 1.0
        if sampler.rng.random() < min(1.0, p[token] / q_token):
            out.append(token)
            continue
        if proposal.probs is not None:
            residual = np.maximum(p - proposal.probs[i], 0.0)
        else:
            residual = p.copy()
            residual[token] = 0.0
        total = residual.sum()
        return out + [sampler.draw(residual / total if total > 0 else p)]
    return out + [sampler.draw(sampler.distribution(logits[len(proposal.tokens)], [*history, *proposal.tokens]))]


def checkable(state: RequestState, proposal: Proposal) -> tuple[Proposal, list[np.ndarray] | None]:
    """The part of a draft worth a verify call's rows, and the request's grammar masks for those
    rows (None without a grammar): the draft is cut before a stop id (no step after it is
    needed) and before the first token the grammar refuses (it could never be kept). Row i's
    mask is the grammar's after the draft tokens before it, as the step at that position
    would meet it (RequestState.pick)."""
    tokens = proposal.tokens
    tokens = tokens[: next((i for i, t in enumerate(tokens) if t in state.stop_ids), len(tokens))]
    masks = None
    if state.constraint is not None and tokens:
        masks = state.constraint.along(tokens)
        tokens = tokens[: len(masks) - 1]
    return Proposal(tokens, proposal.probs), masks


@dataclass
class Round:
    """One planned verify call: `checked` (the grammar's forced tokens first, `forced` of them)
    is what the call checks; `drafted`: whether the draft proposed tokens (it is told how many
    were kept)."""

    context_length: int
    drafted: bool
    checked: Proposal
    masks: list[np.ndarray] | None
    forced: int


class DraftedRequest:
    """One request's draft state and adaptive k. `step` is one target call (the one-at-a-time
    loop below); the batching engine calls its parts: `plan`, then `verify` for a round or, for
    a plain step, a shared batched decode call and `plain` with a token's cost in it.

    Tokens the request's grammar forces (a JSON key, its quotes; `Constraint.forced`) lead each
    call's draft, ahead of what the draft proposes after them; with no draft (`draft` None)
    they are the whole draft. They are checked like any draft token but stay out of the draft's
    acceptance, its adaptive k and its cost budget: they cost no draft work and are almost
    always kept."""

    def __init__(self, session: Model, draft: Draft | None, max_k: int, state: RequestState):
        self.session = session
        self.run = draft.start(state.sampler.params) if draft is not None else None
        exact = session.exact_verify_rows
        # A draft model's first round is the costly one (its catch-up on the prompt, k - 1 steps
        # of its own), and before it nothing says whether the draft agrees: one token.
        first = 1 if isinstance(draft, BundleDraft) else 0
        self.adapt = AdaptiveK(min(max_k, exact - 1) if exact else max_k, k=first)
        self.greedy = state.sampler.params.temperature == 0
        self.margin = MARGIN  # read here: tests set it
        if self.greedy:
            self.adapt.start_plain()
        self.undecided = False  # the last call left a position to a plain decode step
        self.plan_s = 0.0  # the time the last `plan` took (booked with the step it planned)
        state.speculative = draft is not None
        self.force = state.constraint is not None and session.forced_tokens
        if self.force:
            state.forced_tokens = 0

    def _timed(self, proposed: int, seconds: float) -> None:
        """Greedy requests only: their tokens do not depend on k, while a seeded sampled request's
        draws do (its k follows acceptance alone, so the same seed gives the same text)."""
        if self.greedy:
            self.adapt.timed(proposed, seconds)

    def plan(self, state: RequestState) -> Round | None:
        """This step's checked draft for `state` (forced tokens first), or None where the step is
        a plain decode step: adaptive k paused it, nothing was proposed, or the last call left a
        position undecided. Counts the proposed tokens, not the call."""
        start = time.perf_counter()
        # Where verify's rows are decode steps bit for bit, only calls of up to `exact` rows are
        # (a plan switch may change it); elsewhere rows differ from decode in the last bits and
        # a margin guards greedy verification.
        exact = self.session.exact_verify_rows
        room = min(state.max_new_tokens - len(state.generated) - 1, self.session.max_context - 1 - state.pos,
                   exact - 1 if exact else self.adapt.max_k)
        k = self.adapt.next()
        if self.undecided or (self.run is None and not exact):  # forced tokens alone: only where rows are exact
            room, self.undecided = 0, False
        context = state.ids + state.generated
        forced = state.constraint.forced()[:room] if self.force and room > 0 else []
        k = min(k, room - len(forced)) if self.run is not None else 0
        drafted = self.run.propose(context + forced, k) if k > 0 else Proposal([])
        proposal = _after_forced(forced, Proposal(drafted.tokens[: max(k, 0)], drafted.probs))
        checked, masks = checkable(state, proposal)
        state.drafted += len(proposal.tokens) - len(forced)  # a token cut by `checkable` counts as rejected
        if not checked.tokens and drafted.tokens:
            self.run.accepted(len(context), 0)
        self.plan_s = time.perf_counter() - start
        if not checked.tokens:
            return None
        return Round(len(context), bool(drafted.tokens), checked, masks, min(len(forced), len(checked.tokens)))

    def plain(self, seconds: float) -> None:
        """A plain decode step of this request (after `plan` gave None) took `seconds` (in the
        batching engine: a token's cost in a step that every active request shares), and the
        planning before it."""
        self._timed(0, self.plan_s + seconds)

    def verify(self, round: Round, state: RequestState, pending: int, cache, slot: int = 0,
               charged: float = 0.0) -> tuple[list[int], np.ndarray]:
        """Feed `pending` at `state.pos` with the round's draft tokens in one verify call and
        return the tokens it yields, the kept draft tokens and the target's next one, each judged
        as the request's own step would judge it (its grammar's mask: `checkable`; its bias and
        penalties over the tokens before it), with the raw logits of each (for its
        log-probability: `emit`). Counts the call. The round's time is booked with `charged`
        seconds more (the batching engine: what the round cost other requests)."""
        session, checked, start = self.session, round.checked, time.perf_counter()
        exact = session.exact_verify_rows
        state.target_calls += 1
        rows = session.verify([pending] + checked.tokens, state.pos, cache, slot)
        judged = rows if round.masks is None else np.where(np.stack(round.masks), rows, -np.inf)
        complete = True
        if self.greedy:
            scores = np.stack([state.sampler.scores(r, state.generated + checked.tokens[:i]) for i, r in enumerate(judged)])
            emitted, complete = accept_greedy(checked.tokens, scores, 0.0 if exact else self.margin)
        else:
            emitted = accept_sampled(checked, judged, state.sampler, state.generated)
        kept, yielded = len(emitted) - complete, len(emitted)
        n_forced = round.forced
        n_drafted = len(checked.tokens) - n_forced
        if n_drafted:  # rounds of forced tokens alone say nothing of the draft's cost
            self._timed(len(checked.tokens), self.plan_s + time.perf_counter() - start + charged)
        raw = rows[: len(emitted)]
        if not emitted:  # not even the pending token's successor is decided: decode it
            raw = session.decode([pending], [state.pos], cache, [slot])
            emitted = [state.pick(raw[0])]
            state.target_calls += 1
        elif not complete:  # the last kept token is pending; its successor is a decode step's
            self.undecided = True
        if round.drafted:
            self.run.accepted(round.context_length, kept)
        if n_drafted:
            self.adapt.update(n_drafted, max(0, kept - n_forced), yielded)
        state.draft_accepted += max(0, kept - n_forced)
        if state.forced_tokens is not None:
            state.forced_tokens += min(kept, n_forced)
        return emitted, raw

    def step(self, state: RequestState, pending: int, cache, slot: int = 0) -> tuple[list[int], np.ndarray]:
        """One target call for a request decoding alone: `verify` of the planned round, or a
        plain decode step of `pending`. Returns what `verify` does."""
        round = self.plan(state)
        if round is not None:
            return self.verify(round, state, pending, cache, slot)
        start = time.perf_counter()
        state.target_calls += 1
        logits = self.session.decode([pending], [state.pos], cache, [slot])
        self.plain(time.perf_counter() - start)
        return [state.pick(logits[0])], logits


def _after_forced(forced: list[int], drafted: Proposal) -> Proposal:
    """The grammar's forced tokens, then the draft's; a sampling draft's distributions get a
    one-hot row for each forced token (proposed with probability 1, like prompt lookup's)."""
    if not forced:
        return drafted
    probs = None
    if drafted.probs is not None and drafted.probs:
        one_hot = np.zeros((len(forced), drafted.probs[0].size), drafted.probs[0].dtype)
        one_hot[np.arange(len(forced)), forced] = 1.0
        probs = [*one_hot, *drafted.probs]
    return Proposal(forced + drafted.tokens, probs)


def emit(state: RequestState, tokens: list[int], logits: np.ndarray) -> Iterator[StreamEvent]:
    """Accept the tokens of one call in order, each at the position a plain decode loop would
    have (so stop ids, strings, max tokens and a full context end it alike) with its
    log-probability from its row of `logits`, if asked for; stops when the request ends.
    Afterwards `state.pos` counts the cached tokens; the last token is pending."""
    first = state.pos
    for i, token in enumerate(tokens):
        state.pos = first + i
        state.record_logprob(logits[i], token)
        yield state.accept(token)
        if state.done:
            return


class SpeculativeDecoder:
    """The one-request decode loop of a Session with a draft, or of a request whose grammar's
    forced tokens are checked (`draft` None)."""

    def __init__(self, session: Model, draft: Draft | None, max_k: int):
        self.session = session
        self.draft = draft
        self.max_k = max_k

    def run(self, state: RequestState) -> Iterator[StreamEvent]:
        session = self.session
        if state.done:
            return
        t = time.perf_counter()
        cache = session.new_cache(1)
        logits = session.prefill(state, cache)[None]
        emitted = [state.pick(logits[0])]
        state.prefill_s = time.perf_counter() - t
        t = time.perf_counter()
        drafted = DraftedRequest(session, self.draft, self.max_k, state)
        try:
            while True:
                yield from emit(state, emitted, logits)
                if state.done:
                    return
                emitted, logits = drafted.step(state, emitted[-1], cache)
                state.pos += 1
                state.decode_tokens += len(emitted)
        finally:
            state.decode_s = time.perf_counter() - t
