"""Adaptive k's cost budget, on a simulated clock (no machine timing): a rejected draft pauses
after one round and probes at the rate its measured cost allows, a good draft is never held
back, and a draft bundle's round time includes its own steps and its catch-up; in the
batching engine, a request speculates beside others only where that raises throughput."""

import math
import time as real_time
from types import SimpleNamespace

import numpy as np
import pytest

from iree_glm.runtime import speculative
from iree_glm.runtime.drafts import BundleDraft, Proposal
from iree_glm.runtime.request import GenerationResult, RequestState
from iree_glm.runtime.sampling import Sampler, SamplingParams
from iree_glm.runtime.speculative import AdaptiveK, DraftedRequest

PLAIN = 1.0  # the simulated time of a plain decode step


def simulate(adapt: AdaptiveK, tokens: int, cost, kept) -> tuple[float, list[tuple[int, int]]]:
    """Drive `adapt` as DraftedRequest does for `tokens` tokens; a round of k draft tokens takes
    cost(k) and keeps kept(k). Returns (the time taken, [(tokens before the round, k)] of the
    speculative rounds)."""
    adapt.start_plain()
    clock, made, rounds = 0.0, 0, []
    while made < tokens:
        k = adapt.next()
        if k == 0:
            adapt.timed(0, PLAIN)
            clock, made = clock + PLAIN, made + 1
            continue
        rounds.append((made, k))
        seconds, n = cost(k), kept(k)
        adapt.timed(k, seconds)
        adapt.update(k, n)
        clock, made = clock + seconds, made + n + 1
    return clock, rounds


def test_rejected_draft_pauses_after_one_round_and_probes_at_the_budget_rate():
    # Each draft step costs X = 0.35 plain steps and a verify row 0.25 more (and 0.01 of fixed
    # work): a round of k costs 1.01 + 0.6 k and yields one token, so it loses 0.01 + 0.6 k.
    cost = lambda k: PLAIN + 0.01 + 0.6 * k  # noqa: E731
    adapt = AdaptiveK(8)
    clock, rounds = simulate(adapt, 512, cost, lambda k: 0)
    budget = adapt.budget
    # The first step is plain (the reference), the first round speculates at k = 4 ...
    assert rounds[0] == (1, 4)
    # ... and loses 2.41 steps: the next round waits until 2% of the tokens so far pay for it.
    assert rounds[1][0] == math.ceil(2.41 / budget)  # 121
    # Later probes are one draft token (k shrank to what was kept + 1), each losing 0.61 steps:
    # one per 0.61 / 0.02 = 30.5 tokens, or fewer where the acceptance rule's doubling pause is longer.
    assert all(k == 1 for _, k in rounds[1:])
    gaps = [b[0] - a[0] for a, b in zip(rounds[1:], rounds[2:])]
    assert gaps and all(g >= 30 for g in gaps)
    assert len(rounds) >= 5  # it keeps probing: a draft that turns good is found again
    # The bound of the rule: the time lost is at most budget x tokens plus the costliest round's loss.
    assert clock - 512 * PLAIN <= budget * 512 * PLAIN + cost(4) - PLAIN
    assert clock / (512 * PLAIN) < 1.03


def test_good_draft_keeps_its_gain():
    adapt = AdaptiveK(6)
    clock, rounds = simulate(adapt, 512, lambda k: PLAIN + 0.3 * k, lambda k: k)
    assert rounds[0][0] == 1 and adapt.plain_steps == 1  # the reference step, then speculation throughout
    # After the plain first step every step speculates, at the longest k.
    assert rounds[-1][1] == 6 and clock < 0.45 * 512 * PLAIN


def test_a_draft_that_turns_bad_uses_its_credit_then_pauses():
    # Good for 200 tokens (a saving), then always rejected: it may lose at most the budget of
    # what it has made plus its credit, and then pauses.
    adapt = AdaptiveK(6)
    state = {"made": 0}
    cost = lambda k: PLAIN + 0.6 * k  # noqa: E731

    def kept(k):
        good = state["made"] < 200
        state["made"] += (k + 1) if good else 1
        return k if good else 0

    clock, rounds = simulate(adapt, 800, cost, kept)
    late = [made for made, _ in rounds if made > 400]
    assert late and len(late) < 20
    assert clock < 800 * PLAIN


class Clock:
    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class FakeTarget:
    """Decode steps and verify calls on a clock; the target's token at position p is p % 50."""

    max_context = 4096
    exact_verify_rows = 7
    vocab = 64

    def __init__(self, clock: Clock, row_cost: float):
        self.clock, self.row_cost = clock, row_cost

    def _row(self, pos: int) -> np.ndarray:
        return np.eye(self.vocab)[pos % 50]

    def decode(self, tokens, positions, cache, slots=None):
        self.clock.now += PLAIN
        return np.stack([self._row(p + 1) for p in positions])

    def verify(self, ids, start, cache, slot=0):
        self.clock.now += PLAIN + self.row_cost * (len(ids) - 1)
        return np.stack([self._row(start + 1 + i) for i in range(len(ids))])


class FakeDraftModel:
    """A draft model on the same clock: `step` per decode step, `per_token` per token of a
    prefill; every proposal is wrong (token 63, never the target's)."""

    def __init__(self, clock: Clock, step: float, per_token: float, max_context: int = 4096):
        self.clock, self.step, self.per_token = clock, step, per_token
        self.max_context, self.bundle = max_context, "fake-draft"
        self.fed: list[tuple[int, int]] = []  # (position, tokens) per call

    def new_cache(self, rows=1):
        return None

    def decode(self, tokens, positions, cache, slots=None):
        self.clock.now += self.step
        self.fed.append((positions[0], 1))
        return np.eye(FakeTarget.vocab)[[63]]

    def run_prefill(self, ids, start, cache, slot=0):
        self.clock.now += self.per_token * len(ids)
        self.fed.append((start, len(ids)))
        return np.eye(FakeTarget.vocab)[63]


def test_round_time_prices_the_draft_steps_and_catch_up(monkeypatch):
    """Through DraftedRequest: a draft bundle whose every token is rejected is paused after one
    round, and the round's booked time holds the draft's catch-up on the prompt, not only the
    verify call; its probes restart it on the window."""
    clock = Clock()
    monkeypatch.setattr(speculative, "time", clock)
    target = FakeTarget(clock, row_cost=0.25)
    model = FakeDraftModel(clock, step=0.35, per_token=0.03)
    draft = BundleDraft(model, window=32)
    prompt = list(range(300))
    state = RequestState(prompt, 400, Sampler(SamplingParams()), set(), FakeTarget.max_context, generated=[300 % 50], pos=len(prompt))
    drafted = DraftedRequest(target, draft, 8, state)
    pending, rounds = state.generated[0], []
    start = clock.now
    while len(state.generated) < 300:
        before = (len(state.generated), state.drafted)
        emitted, _ = drafted.step(state, pending, cache=None)
        if state.drafted > before[1]:
            rounds.append((before[0], state.drafted - before[1]))
        state.generated += emitted
        state.pos += len(emitted)
        pending = emitted[-1]
    adapt = drafted.adapt
    # The first round proposes one token (a draft model's first round: nothing known yet): a
    # verify of 2 rows 1.25, the token from the draft's prefill of the prompt's last 32 tokens
    # 0.96: 2.21 plain steps for one token.
    assert rounds[0] == (2, 1)  # after the prefill's token and the plain reference step
    assert model.fed[0] == (0, 32)  # the window, at the draft's position 0, not the whole prompt
    first = 1.25 + 32 * 0.03
    assert adapt.spent >= first - 1e-9
    # The rule: no second round before 2% of the tokens pay for the first's loss.
    assert rounds[1][0] - 1 >= (first - PLAIN) / adapt.budget
    # A probe after a pause restarts the draft on the window again (not every token it missed).
    assert all(n <= 32 for _, n in model.fed)
    lost = clock.now - start - len(state.generated) * PLAIN
    assert lost <= adapt.budget * len(state.generated) + first - PLAIN + 1e-9
    assert state.draft_accepted == 0 and state.generated[:5] == [p % 50 for p in range(300, 305)]


def test_draft_bundle_keeps_up_without_restarting():
    """A draft whose tokens are kept is fed one or two tokens a round; a pause longer than the
    window restarts it on the window; a context past its own cache restarts it too."""
    clock = Clock()
    model = FakeDraftModel(clock, step=0.0, per_token=0.0, max_context=100)
    run = BundleDraft(model, window=16).start(SamplingParams())
    context = list(range(40))
    run.propose(context, 3)
    assert model.fed == [(0, 16), (16, 1), (17, 1)]  # the window, then two decode steps
    run.accepted(len(context), 3)
    model.fed.clear()
    context += [63, 63, 63, 7]
    run.propose(context, 2)
    assert model.fed[0] == (18, 2)  # the last draft token and the target's next one
    run.accepted(len(context), 0)
    model.fed.clear()
    context += list(range(30))  # a pause of 30 tokens: more than the window
    run.propose(context, 2)
    assert model.fed[0] == (0, 16)
    run.accepted(len(context), 0)
    model.fed.clear()
    for _ in range(12):  # gaps within the window, until the draft's 100 positions are used
        context += [1] * 8
        assert isinstance(run.propose(context, 2), Proposal)
        run.accepted(len(context), 0)
    assert model.fed.count((0, 16)) == 1 and all(at + n <= 100 for at, n in model.fed)


class FakeBatchTarget(FakeTarget):
    """FakeTarget as the batching engine's model: a shared decode call of n rows costs
    PLAIN + `batch_row` x (n - 1); `draft` proposes for every request."""

    bundle = "fake-target"
    decode_batch_sizes = [1, 2, 4]
    forced_tokens = False
    draft_tokens = 6

    def __init__(self, clock: Clock, row_cost: float, batch_row: float, draft):
        super().__init__(clock, row_cost)
        self.batch_row, self.draft = batch_row, draft

    def speculates(self, state) -> bool:
        return self.draft is not None

    def new_cache(self, rows=1):
        return SimpleNamespace(release=lambda slot: None)

    def prefill(self, state, cache, slot=0):
        state.pos = len(state.ids)
        return self._row(state.pos)

    def decode(self, tokens, positions, cache, slots=None):
        self.clock.now += self.batch_row * (len(tokens) - 1)
        return super().decode(tokens, positions, cache, slots)


class FixedDraft:
    """A draft that is always right (the target's tokens) or always wrong (token 63)."""

    name = "fixed"

    def __init__(self, right: bool):
        self.right = right

    def start(self, sampling):
        right = self.right
        return SimpleNamespace(
            propose=lambda context, k: Proposal([(len(context) + i) % 50 if right else 63 for i in range(k)]),
            accepted=lambda length, kept: None)


def engine_time(monkeypatch, batch_row: float, draft, requests: int = 4, tokens: int = 200) -> tuple[float, list[GenerationResult]]:
    """The clock time `requests` requests of `tokens` tokens started together take in the
    batching engine, and their results (their tokens are the target's, whatever the draft)."""
    from iree_glm.runtime import batching

    clock = Clock()
    monkeypatch.setattr(speculative, "time", clock)
    monkeypatch.setattr(batching, "time", clock)
    target = FakeBatchTarget(clock, row_cost=0.25, batch_row=batch_row, draft=draft)
    engine = batching.BatchEngine(target, gather_ms=0)
    states = [RequestState([1, 2, 3 + i], tokens, Sampler(SamplingParams()), set(), 4096) for i in range(requests)]
    sinks = [[] for _ in states]
    engine._cond.acquire()  # all submitted before the engine looks
    for state, sink in zip(states, sinks):
        engine.submit(state, sink.append)
    engine._cond.release()
    deadline = real_time.monotonic() + 60
    while not all(sink and isinstance(sink[-1], (GenerationResult, Exception)) for sink in sinks):
        assert real_time.monotonic() < deadline, "the engine did not finish the requests"
        real_time.sleep(0.01)
    engine.close()
    results = [sink[-1] for sink in sinks]
    for result in results:
        assert isinstance(result, GenerationResult), result
        assert result.generated_ids == [p % 50 for p in range(3, 3 + tokens)]
    return clock.now, results


def test_in_a_batch_a_draft_speculates_only_where_it_raises_throughput(monkeypatch):
    """Four requests in the batching engine, on a simulated clock. A request's rounds are
    judged against what a token costs in a step that all four share: a draft that is always
    right speculates where a round's 7 tokens cost less than that (a 4-row step of 1.9, 0.475 a
    token) and pauses where batching is cheaper (a step of 1.15); an always-wrong draft costs
    at most the budget."""
    plain, _ = engine_time(monkeypatch, 0.3, None)
    assert plain == pytest.approx(199 * 1.9)  # the prefill's token, then 199 shared steps of 4 rows
    good, results = engine_time(monkeypatch, 0.3, FixedDraft(right=True))
    assert all(r.draft_accepted > 150 for r in results)
    # Rounds of 6 draft tokens: 2.5 per 7 tokens per request (10 per step of 28), after the
    # plain reference step and the first rounds (k = 3).
    assert good < 0.8 * plain

    cheap, _ = engine_time(monkeypatch, 0.05, None)
    assert cheap == pytest.approx(199 * 1.15)
    held, results = engine_time(monkeypatch, 0.05, FixedDraft(right=True))
    assert held <= 1.05 * cheap  # rounds would cost 2.5 per 7 tokens, shares 7 x 0.29 = 2.0: paused
    assert all(r.target_calls > 100 for r in results)  # mostly plain steps

    wasted, results = engine_time(monkeypatch, 0.3, FixedDraft(right=False))
    assert all(r.draft_accepted == 0 for r in results)
    assert wasted <= 1.05 * plain


def test_forced_rounds_beside_others_run_where_their_tokens_cost_less():
    """A round of a grammar's forced tokens alone (no adaptive k judges it) runs beside other
    requests only where its verify call's measured time beats its tokens' cost in a step that
    every request shares; alone, or with draft tokens, or before its length is timed, it runs."""
    from iree_glm.runtime import batching

    engine = batching.BatchEngine(FakeBatchTarget(Clock(), row_cost=0.25, batch_row=0.3, draft=None), gather_ms=0)

    def forced(n):
        return speculative.Round(10, False, Proposal([7] * n), None, n)

    assert engine._pays(forced(2), 4)  # nothing timed yet: tried
    engine._shared_s[4], engine._verify_s[3], engine._verify_s[5] = 1.9, 1.5, 2.0
    assert not engine._pays(forced(2), 4)  # 3 tokens for 1.5 against 3 x 1.9 / 4 = 1.425
    assert engine._pays(forced(4), 4)  # 5 tokens for 2.0 against 2.375
    assert engine._pays(forced(2), 1)  # alone
    assert engine._pays(speculative.Round(10, True, Proposal([7, 8]), None, 1), 4)  # a draft token: adaptive k's call
    engine.close()
