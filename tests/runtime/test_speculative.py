"""Speculative decoding: greedy output identical to plain decoding token for token (prompt
lookup and a pruned draft bundle; fp32, int8, int4; chunked prefill, context end, stop ids
and strings), the sampling rule keeps the target distribution, and bad drafts are refused."""

import json
import shutil

import numpy as np
import pytest

from iree_glm.bundle.manifest import MANIFEST, VERIFY, sha256_file
from iree_glm.cli.run import main as run_main
from iree_glm.compiler.build import BuildOptions, build_bundle
from iree_glm.errors import BundleError, UserError, run_cli
from iree_glm.runtime import SamplingParams, Session
from iree_glm.runtime.drafts import PromptLookup, Proposal
from iree_glm.runtime.sampling import Sampler
from iree_glm.runtime.speculative import AdaptiveK, accept_greedy, accept_sampled
from iree_glm.transforms.prune import parse_prune_spec
from iree_glm.transforms.quantize import QuantSpec

from ..helpers import run_in_threads

REPEAT = [11, 12, 13, 14, 15, 16, 17, 18] * 5 + [11, 12, 13]
PROMPTS = [
    REPEAT,
    [(i * 37) % 200 + 3 for i in range(40)],
    [5, 9, 5, 9, 5, 9, 5],
    [100 + (i % 7) * 3 for i in range(25)],
    [42],
]


@pytest.fixture(scope="module")
def plain(glm4_bundle):
    return Session.load(glm4_bundle, verify=False)


@pytest.fixture(scope="module")
def pruned_bundle(glm4_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("draft") / "pruned"
    build_bundle(glm4_checkpoint[0], out, BuildOptions(max_context=128, prune=parse_prune_spec("heads=0.5,ffn=0.5")))
    return out


def _count_verify(session: Session) -> list[int]:
    calls = []
    verify = session.verify
    session.verify = lambda ids, start, cache, slot=0: calls.append(len(ids)) or verify(ids, start, cache, slot)
    return calls


def _same_tokens(plain: Session, spec: Session, prompts, max_new: int, **kw) -> list:
    results = []
    for prompt in prompts:
        want = plain.generate(prompt, max_new, **kw)
        got = spec.generate(prompt, max_new, **kw)
        assert got.generated_ids == want.generated_ids, prompt
        assert (got.stop_reason, got.text) == (want.stop_reason, want.text)
        results.append(got)
    return results


def test_manifest_records_the_verify_entry_point(plain):
    eps = {ep.name: ep for ep in plain.manifest.entry_points}
    assert eps[VERIFY].all_logits and eps[VERIFY].seq_len is None
    assert not eps["prefill"].all_logits and not eps["decode"].all_logits


def test_verify_rows_match_decode_steps(plain):
    """Row i of one verify call = the logits of decode steps fed the same tokens one by one."""
    prompt, extension = PROMPTS[1], [7, 8, 9, 10]
    cache = plain.new_cache()
    plain.run_prefill(prompt, 0, cache)
    rows = plain.verify(extension, len(prompt), cache)
    cache = plain.new_cache()
    plain.run_prefill(prompt, 0, cache)
    steps = [plain.decode([t], [len(prompt) + i], cache)[0] for i, t in enumerate(extension)]
    assert rows.shape == (4, plain.config.vocab_size)
    np.testing.assert_allclose(rows, np.stack(steps), atol=1e-4)


def test_prompt_lookup_greedy_identical(glm4_bundle, plain, monkeypatch):
    # Every step timed alike (the regime where reading the weights dominates), so that this
    # machine's load cannot pause speculation: this tests acceptance; the cost rule has its own tests.
    timed = AdaptiveK.timed
    monkeypatch.setattr(AdaptiveK, "timed", lambda self, proposed, seconds: timed(self, proposed, 1.0))
    spec = Session.load(glm4_bundle, verify=False, draft="prompt-lookup", draft_tokens=4)
    calls = _count_verify(spec)
    results = _same_tokens(plain, spec, PROMPTS, 40, stop_ids=())
    assert calls and max(calls) <= 5  # k + 1 rows per call
    drafted = [r for r in results if r.acceptance_rate]
    assert drafted, "prompt lookup never had a draft token accepted"
    for r in results:
        # (An fp32 verify row within the margin of a tie takes one more call, a decode step.)
        assert r.acceptance_rate is not None and r.tokens_per_target_call > 0.9
    assert max(r.tokens_per_target_call for r in results) > 1.5


def test_rejected_drafts_leave_no_trace(glm4_bundle, plain):
    """A draft that is always wrong writes KV entries past the accepted tokens on every call:
    the output must not change."""

    class Wrong:
        name = "wrong"

        def start(self, sampling):
            return self

        def propose(self, context, k):
            return Proposal([(context[-1] * 7 + i + 1) % 250 for i in range(k)])

        def accepted(self, context_length, kept):
            pass

    spec = Session.load(glm4_bundle, verify=False, draft=Wrong(), draft_tokens=6)
    calls = _count_verify(spec)
    results = _same_tokens(plain, spec, PROMPTS[:3], 30, stop_ids=())
    assert calls
    assert all(r.acceptance_rate < 0.5 for r in results)


def test_pruned_draft_greedy_identical(glm4_bundle, pruned_bundle, plain):
    spec = Session.load(glm4_bundle, verify=False, draft=pruned_bundle, draft_tokens=5)
    assert spec.draft.session.config.intermediate_size < spec.config.intermediate_size
    calls = _count_verify(spec)
    _same_tokens(plain, spec, PROMPTS, 30, stop_ids=())
    assert calls


def test_self_draft_accepts_everything(glm4_bundle, plain, monkeypatch):
    """The target as its own draft: every proposal is what the target would choose. (Its
    measured cost, a target-sized draft, would pause speculation, and a row within the margin
    would count its draft tokens as not kept: the acceptance rule alone is tested.)"""
    from iree_glm.runtime import speculative

    monkeypatch.setattr(speculative.AdaptiveK, "timed", lambda self, proposed, seconds: None)  # k by acceptance alone
    monkeypatch.setattr(speculative, "MARGIN", 0.0)
    spec = Session.load(glm4_bundle, verify=False, draft=glm4_bundle, draft_tokens=4)
    (r,) = _same_tokens(plain, spec, [PROMPTS[1]], 30, stop_ids=())
    assert r.acceptance_rate == 1.0 and r.tokens_per_target_call > 3


def test_chunk_boundaries_context_end_and_stops(glm4_bundle, plain):
    spec = Session.load(glm4_bundle, verify=False, draft="prompt-lookup", draft_tokens=8, prefill_chunk=16)
    chunked = Session.load(glm4_bundle, verify=False, prefill_chunk=16)
    _same_tokens(chunked, spec, PROMPTS[:2], 30, stop_ids=())
    long = (REPEAT * 3)[:110]  # the context (128) fills while drafts are being checked
    (r,) = _same_tokens(plain, spec, [long], 64, stop_ids=())
    assert r.stop_reason == "context_full"
    stop_id = plain.generate(PROMPTS[0], 30, stop_ids=()).generated_ids[9]
    (r,) = _same_tokens(plain, spec, [PROMPTS[0]], 30, stop_ids=(stop_id,))
    assert r.stop_reason == "eos"
    text = plain.generate(PROMPTS[1], 30, stop_ids=()).text
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    if stop.strip():
        (r,) = _same_tokens(plain, spec, [PROMPTS[1]], 30, stop_ids=(), stop=(stop,))
        assert r.stop_reason == "stop"
    (r,) = _same_tokens(plain, spec, [PROMPTS[0]], 1, stop_ids=())
    assert len(r.generated_ids) == 1


@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_quantized_greedy_identical(glm4_checkpoint, tmp_path_factory, quant):
    """int8 (the profile's i8 x i8 prompts, which verify must not use) and int4 bundles."""
    out = tmp_path_factory.mktemp("spec-" + quant) / "b"
    spec_q = QuantSpec(quant, group_size=32)
    build_bundle(glm4_checkpoint[0], out, BuildOptions(max_context=128, quant=spec_q, int8_activations="prefill"))
    plain_q = Session.load(out, verify=False)
    spec = Session.load(out, verify=False, draft="prompt-lookup", draft_tokens=6)
    calls = _count_verify(spec)
    _same_tokens(plain_q, spec, PROMPTS[:4], 30, stop_ids=())
    assert calls


def test_sampling_with_a_draft_runs(glm4_bundle):
    spec = Session.load(glm4_bundle, verify=False, draft="prompt-lookup")
    r = spec.generate(PROMPTS[0], 30, SamplingParams(temperature=0.8, top_k=40, seed=3), stop_ids=())
    assert len(r.generated_ids) == 30 and all(0 <= t < spec.config.vocab_size for t in r.generated_ids)
    again = spec.generate(PROMPTS[0], 30, SamplingParams(temperature=0.8, top_k=40, seed=3), stop_ids=())
    assert again.generated_ids == r.generated_ids  # seeded: reproducible


# -- the acceptance rules on a small vocabulary -------------------------------------------------

V = 5
P_ROWS = np.log(np.array([[0.1, 0.4, 0.2, 0.25, 0.05], [0.3, 0.1, 0.3, 0.2, 0.1], [0.2, 0.2, 0.2, 0.2, 0.2]]))
Q_ROWS = np.array([[0.5, 0.1, 0.1, 0.1, 0.2], [0.1, 0.1, 0.6, 0.1, 0.1]])


def _chi2_ok(counts: np.ndarray, probs: np.ndarray) -> bool:
    """Pearson's chi-square below the 0.999 quantile for 4 degrees of freedom (18.47)."""
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum()) < 18.47


@pytest.mark.parametrize("draft", ["deterministic", "sampled"])
def test_rejection_rule_keeps_the_target_distribution(draft):
    """First emitted token ~ p0; given the first draft token was kept, the second ~ p1. Fixed
    seed, 20000 trials, Pearson chi-square at the 0.1% level (a wrong rule, e.g. always
    keeping the draft token or not removing q from the residual, fails by far)."""
    sampler = Sampler(SamplingParams(temperature=1.0, seed=1234))
    rng = np.random.default_rng(99)
    p = np.exp(P_ROWS)
    first = np.zeros(V)
    second = np.zeros(V)
    trials = 20000
    for _ in range(trials):
        if draft == "deterministic":
            proposal = Proposal([3, 2])  # prompt lookup: probability 1
        else:
            proposal = Proposal([int(rng.choice(V, p=Q_ROWS[0])), int(rng.choice(V, p=Q_ROWS[1]))], [Q_ROWS[0], Q_ROWS[1]])
        out = accept_sampled(proposal, P_ROWS, sampler)
        first[out[0]] += 1
        if out[0] == proposal.tokens[0] and len(out) > 1:
            second[out[1]] += 1
    assert _chi2_ok(first, p[0])
    assert second.sum() > 1000 and _chi2_ok(second, p[1])
    # The check has power: keeping every draft token is far from p0.
    assert not _chi2_ok(np.bincount([3] * trials + list(range(V)), minlength=V).astype(float), p[0])


def test_greedy_rule_and_adaptive_k():
    logits = np.eye(6)[[2, 4, 1, 0]]  # argmax per row: 2, 4, 1, 0
    assert accept_greedy([2, 4, 1], logits) == ([2, 4, 1, 0], True)
    assert accept_greedy([2, 3, 1], logits) == ([2, 4], True)
    assert accept_greedy([5, 4, 1], logits) == ([2], True)
    # A near-tie (lead <= margin x max|row|) decides nothing: the kept tokens before it, no more.
    close = logits.copy()
    close[2, 3] = 1 - 1e-4
    assert accept_greedy([2, 4, 1], close) == ([2, 4, 1, 0], True)  # no margin: argmax alone
    assert accept_greedy([2, 4, 1], close, margin=2 ** -10) == ([2, 4], False)
    close[0, 5] = 1 - 1e-4
    assert accept_greedy([2, 4, 1], close, margin=2 ** -10) == ([], False)
    adapt = AdaptiveK(8)
    assert adapt.next() == 4
    adapt.update(4, 4)
    assert adapt.next() == 5
    adapt.update(5, 1)
    assert adapt.next() == 2
    for _ in range(6):
        adapt.update(adapt.k, 0)
    paused = [adapt.next() for _ in range(3)]
    assert 0 in paused  # misses pause speculation
    fresh = AdaptiveK(8)  # no evidence yet: three misses pause a useless draft
    for _ in range(3):
        assert fresh.next() > 0
        fresh.update(fresh.k, 0)
    assert fresh.pause > 0 and fresh.next() == 0
    while fresh.pause:
        fresh.next()
    probe = fresh.next()
    assert probe > 0
    fresh.update(probe, 0)  # a miss right after a pause pauses again, for twice as long
    assert fresh.pause == 4
    # Measured costs: a draft of 4 whose step takes 3 plain steps' time pays only above ~0.7 acceptance.
    costly = AdaptiveK(8, k=4, rate=1.0)
    costly.timed(0, 1.0)
    costly.timed(4, 3.0)
    costly.update(4, 3)  # acceptance 0.7 * 1 + 0.3 * 0.75 = 0.925: worth it
    assert costly.worth(4) and costly.pause == 0
    costly.update(4, 1)  # 0.925 * 0.7 + 0.3 * 0.25 = 0.72: 2.7 tokens in 3 steps' time: not,
    assert not costly.worth(4) and costly.pause == 0  # but the timed round paid (4 tokens in 3 steps' time)
    costly.timed(4, 3.0)
    costly.update(4, 1)  # the record: 6 tokens in 6 steps' time, no longer paying
    assert costly.pause > 0 and costly.next() == 0
    # Several lengths measured: k goes to the fastest at the current acceptance.
    fast = AdaptiveK(8, k=2, rate=0.9)
    for k, t in ((0, 1.0), (1, 1.05), (2, 1.6), (3, 2.4)):
        fast.timed(k, t)
    fast.update(2, 2)  # rate 0.93, would grow to 3: k = 1 yields 1.93 / 1.05, 2 yields 2.8 / 1.6, 3 yields 3.5 / 2.4
    assert fast.k == 1 and fast.next() == 1


def test_prompt_lookup_proposes_the_latest_match():
    lookup = PromptLookup(max_ngram=3)
    assert lookup.propose([1, 2, 3, 9, 1, 2, 3, 7, 8, 1, 2, 3], 3).tokens == [7, 8, 1]
    assert lookup.propose([1, 2, 3, 4], 3).tokens == []
    # Where the continuation reaches the context's end it copies what it proposed: a repeating
    # tail gets k tokens (a run, a two-token loop, a block that repeats), not one period.
    assert lookup.propose([5, 6, 5], 4).tokens == [6, 5, 6, 5]
    assert lookup.propose([9, 4, 4, 4], 5).tokens == [4, 4, 4, 4, 4]
    assert lookup.propose([1, 2, 3, 9, 1, 2, 3], 6).tokens == [9, 1, 2, 3, 9, 1]
    assert lookup.propose([1, 2, 3, 9, 1, 2, 3], 0).tokens == []


# -- refusals -----------------------------------------------------------------------------------

def _copy_bundle(src, dst, edit):
    shutil.copytree(src, dst)
    manifest = json.loads((dst / MANIFEST).read_text())
    edit(dst, manifest)
    (dst / MANIFEST).write_text(json.dumps(manifest))
    return dst


def test_draft_with_another_tokenizer_is_refused(glm4_bundle, tmp_path):
    def retokenize(folder, manifest):
        tok = folder / manifest["tokenizer"]
        data = json.loads(tok.read_text())
        data["added_tokens"] = list(data.get("added_tokens") or []) + [
            {"id": 0, "content": "<other>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}]
        tok.write_text(json.dumps(data))
        manifest["files"][manifest["tokenizer"]] = sha256_file(tok)

    other = _copy_bundle(glm4_bundle, tmp_path / "other", retokenize)
    with pytest.raises(BundleError, match="tokenizer differs from the target's") as e:
        Session.load(glm4_bundle, verify=False, draft=other)
    assert "\n" not in str(e.value)


def test_bundle_without_verify_says_so(glm4_bundle, tmp_path):
    def drop(folder, manifest):
        manifest["entry_points"] = [ep for ep in manifest["entry_points"] if ep["name"] != VERIFY]

    old = _copy_bundle(glm4_bundle, tmp_path / "old", drop)
    with pytest.raises(BundleError, match="no 'verify' entry point"):
        Session.load(old, verify=False, draft="prompt-lookup")
    with pytest.raises(UserError, match="neither 'prompt-lookup' nor a bundle folder"):
        Session.load(glm4_bundle, verify=False, draft="prompt_lookup")


def test_run_cli_draft(glm4_bundle, capsys):
    ids = ",".join(map(str, PROMPTS[0]))
    assert run_cli(run_main, [str(glm4_bundle), "--prompt-ids", ids, "--max-new-tokens", "20", "--json"]) == 0
    want = json.loads(capsys.readouterr().out)
    assert want["acceptance_rate"] is None
    assert run_cli(run_main, [str(glm4_bundle), "--prompt-ids", ids, "--max-new-tokens", "20", "--json",
                              "--draft", "prompt-lookup", "--draft-tokens", "4"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["generated_ids"] == want["generated_ids"]
    assert 0 <= got["acceptance_rate"] <= 1 and got["tokens_per_target_call"] >= 1
    assert run_cli(run_main, [str(glm4_bundle), "--prompt-ids", ids, "--draft-tokens", "4"]) == 2
    assert capsys.readouterr().err.strip() == "error: --draft-tokens is only used with --draft"
    assert run_cli(run_main, [str(glm4_bundle), "--prompt-ids", ids, "--draft", "prompt-lookup", "--draft-tokens", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --draft-tokens must be from 1 to 64 (got 0)"


def test_batching_engine_with_a_draft(batched_bundle, monkeypatch):
    """Alone or beside other requests, a request whose draft has tokens checks them in verify
    calls of its own while the rest share batched steps; every request's tokens equal
    one-at-a-time plain decoding."""

    from iree_glm.runtime.batching import BatchEngine

    # Every round timed alike: this machine's load must not pause speculation (the cost rule has its own tests).
    timed = AdaptiveK.timed
    monkeypatch.setattr(AdaptiveK, "timed", lambda self, proposed, seconds: timed(self, proposed, 1.0))

    plain_b = Session.load(batched_bundle, verify=False)
    spec = Session.load(batched_bundle, verify=False, draft="prompt-lookup", draft_tokens=6)
    want = [plain_b.generate(p, 24, stop_ids=()).generated_ids for p in PROMPTS[:4]]
    engine = BatchEngine(spec, gather_ms=0)
    alone = list(engine.run(spec.new_request(PROMPTS[0], 24, stop_ids=())))
    assert [e.token_id for e in alone] == want[0]
    assert engine.stats.steps < 23  # drafts were accepted: fewer target calls than tokens
    engine.close()

    def collect(i):
        events = engine.run(spec.new_request(PROMPTS[i], 24, stop_ids=()))
        tokens = []
        while True:
            try:
                tokens.append(next(events).token_id)
            except StopIteration as end:
                return tokens, end.value

    engine = BatchEngine(spec, gather_ms=2000)  # the four start together
    got = run_in_threads(collect, 4)
    engine.close()
    assert [tokens for tokens, _ in got] == want
    repeat = got[0][1]  # decoded beside three others, yet in fewer calls than tokens
    assert repeat.draft_accepted > 0 and repeat.target_calls < 23
    assert engine.stats.verify_calls > 0 and engine.stats.batch_sizes.get(4, 0) > 0


def test_serve_cli_draft_options_are_checked(glm4_bundle, tmp_path, capsys):
    from iree_glm.cli.serve import main as serve_main

    assert run_cli(serve_main, [str(glm4_bundle), "--port", "0", "--draft-tokens", "4"]) == 2
    assert capsys.readouterr().err.strip() == "error: --draft-tokens is only used with --draft"
    assert run_cli(serve_main, [str(glm4_bundle), "--port", "0", "--no-verify", "--draft", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip().endswith("is neither 'prompt-lookup' nor a bundle folder")


@pytest.fixture(scope="module")
def near_tie_bundle(tmp_path_factory):
    """The tiny GLM-4 (fp32) whose head makes two tokens the best by far, their logits apart by
    ~1e-8 of their size: below the arithmetic's rounding, so the margin must leave them to decode."""

    import torch

    from ..helpers import byte_level_tokenizer_json, make_hf_model

    model = make_hf_model("glm4_gqa", seed=5)
    with torch.no_grad():
        w = model.lm_head.weight
        w[20] = w[20] * 6
        w[21] = w[20] + torch.randn_like(w[20]) * 2e-8 * w[20].abs().mean()
    path = tmp_path_factory.mktemp("ckpt") / "near-tie"
    model.save_pretrained(path)
    (path / "tokenizer.json").write_text(byte_level_tokenizer_json())
    out = tmp_path_factory.mktemp("bundles") / "near-tie"
    build_bundle(path, out, BuildOptions(max_context=128))
    return out


def test_near_ties_stay_identical(near_tie_bundle, monkeypatch):
    """Greedy output stays the plain decode's where the best two logits nearly tie: such rows
    are found (speculative.MARGIN) and left to a decode step."""
    from iree_glm.runtime import speculative

    monkeypatch.setattr(speculative.AdaptiveK, "timed", lambda self, proposed, seconds: None)  # a self-draft: never worth its time
    undecided = []
    real = speculative.decided
    monkeypatch.setattr(speculative, "decided", lambda row, margin: undecided.append(1) if real(row, margin) is None else real(row, margin))
    plain = Session.load(near_tie_bundle, verify=False)
    spec = Session.load(near_tie_bundle, verify=False, draft=near_tie_bundle, draft_tokens=6)  # a self-draft: proposes decode's own tokens
    prompts = [PROMPTS[1], PROMPTS[3], REPEAT]
    wants = [plain.generate(p, 24, stop_ids=()).generated_ids for p in prompts]
    assert {t for w in wants for t in w} & {20, 21}  # the near-tied pair is what decode emits
    for prompt, want in zip(prompts, wants):
        assert spec.generate(prompt, 24, stop_ids=()).generated_ids == want
    assert undecided  # the near-tied rows went to decode steps
