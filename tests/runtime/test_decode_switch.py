"""Plans that decode on different devices, switched mid-generation: the live KV cache moves.

One bundle is built from a test profile whose lavapipe is declared call-heavy but frugal (3 W
against the CPU's 10 W): the planner decodes on the CPU and carries a `decode-lavapipe` plan
(the whole program on lavapipe) for a tight power budget. Switching between them between decode
steps must keep the CPU-only bundle's greedy tokens, alone, with the prefix cache, and in the
batching engine. lavapipe is slow and flaky under load, so one session serves every test.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from iree_glm.bundle.manifest import read_manifest
from iree_glm.errors import RequestError
from iree_glm.planner.report import plans_report
from iree_glm.runtime.devices import driver_available
from iree_glm.runtime.session import KV_KEEP_BYTES

from ..helpers import declared_lavapipe_bundle, greedy_reference

PROMPT = [5, 17, 99, 3, 42, 7, 11, 200, 3, 57]
OTHER = [11, 200, 3, 57, 91, 4, 8, 150] * 4
NEW = 10

pytestmark = pytest.mark.skipif(not driver_available("vulkan"), reason="no Vulkan device (lavapipe) on this machine")


@pytest.fixture(scope="module")
def switch_bundle(glm4_checkpoint, tmp_path_factory) -> Path:
    return declared_lavapipe_bundle(glm4_checkpoint[0], tmp_path_factory, "decode-switch-test", 3.0, slow_cpu=False)


@pytest.fixture(scope="module")
def reference(glm4_bundle) -> dict:
    return greedy_reference(glm4_bundle, (PROMPT, OTHER), NEW)


@pytest.fixture(scope="module")
def session(switch_bundle):
    from iree_glm.runtime import Session

    s = Session.load(switch_bundle, prefix_cache=True)
    yield s
    s.close()


def test_the_bundle_carries_a_plan_decoding_on_lavapipe(switch_bundle):
    m = read_manifest(switch_bundle)
    one, low = m.options.plans
    assert (one.name, low.name) == ("one-placement", "decode-lavapipe")
    assert one.decode_module is None and low.decode_module == "decode-lavapipe.vmfb" and low.decode_device == "lavapipe"
    assert {mod.file: mod.driver for mod in m.modules} == {"model.vmfb": "local-task", "decode-lavapipe.vmfb": "vulkan"}
    assert low.power_w < one.power_w and low.decode_ms > one.decode_ms  # the power-saving plan
    assert "draws less" in low.reasons[0]
    text = plans_report(m.options.plans)
    assert "decode-lavapipe: prefill on the decode placement" in text and "decode on lavapipe (decode-lavapipe.vmfb" in text


def _switching(session, prompt: list[int], at: dict[int, str], kept: list[int] | None = None) -> tuple[list[int], int]:
    """Greedy tokens of `prompt`, switching plans after the token counts in `at`; and the
    prompt tokens the prefix cache restored. `kept` gets `session.kv_kept_bytes` at each token."""
    gen, ids = session.stream(prompt, max_new_tokens=NEW), []
    for event in gen:
        ids.append(event.token_id)
        if kept is not None:
            kept.append(session.kv_kept_bytes)
        if len(ids) in at:
            session.use_plan(at[len(ids)])
    return ids, gen.result.cached_tokens


def test_switching_decode_device_mid_generation_keeps_the_tokens(session, reference):
    session.use_plan("one-placement")
    moves, kept, before = session.kv_moves.moves, [], session.kv_kept_bytes
    assert _switching(session, PROMPT, {3: "decode-lavapipe", 6: "one-placement"}, kept)[0] == reference[tuple(PROMPT)]
    history = session.kv_moves.history[moves:]
    assert [(a, b) for a, b, _, _ in history] == [("main", "lavapipe"), ("lavapipe", "main")]
    # O(positions) bytes: there, the prompt and the tokens decoded before the switch (the step of
    # the fourth token is at position 12); back, only the positions lavapipe wrote (12, 13, 14)
    # into the CPU buffers kept meanwhile: not the row's 128 positions either way
    assert [n for _, _, n, _ in history] == [12 * _per_position(session), 3 * _per_position(session)]
    # the kept CPU row costs its whole 128 positions while lavapipe decodes (tokens 4-6), nothing after
    row = session.cache_slots * _per_position(session)
    assert [k - before for k in kept] == [0] * 3 + [row] * 3 + [0] * (len(kept) - 6)
    # prefilled on the CPU, decoded on lavapipe; then on lavapipe from its prefix (restored from
    # the prefix cache into a lavapipe row), back to the CPU after four tokens
    assert _switching(session, OTHER, {1: "decode-lavapipe"})[0] == reference[tuple(OTHER)]
    ids, cached = _switching(session, OTHER, {4: "one-placement"})
    assert ids == reference[tuple(OTHER)] and cached >= 16


def test_cpu_lavapipe_cpu_lavapipe_keeps_the_tokens_and_moves_what_changed(session, reference):
    """Four legs of one conversation: each move to lavapipe copies every position in use (its
    buffers are not kept: new Vulkan memory costs by the pages touched), each move back to the
    CPU only the positions lavapipe wrote since (steps at 11, 12, then 15, 16)."""
    session.use_plan("one-placement")
    moves = session.kv_moves.moves
    at = {2: "decode-lavapipe", 4: "one-placement", 6: "decode-lavapipe", 8: "one-placement"}
    assert _switching(session, PROMPT, at)[0] == reference[tuple(PROMPT)]
    history = session.kv_moves.history[moves:]
    assert [(a, b) for a, b, _, _ in history] == [("main", "lavapipe"), ("lavapipe", "main")] * 2
    assert [n // _per_position(session) for _, _, n, _ in history] == [11, 2, 15, 2]


def test_without_room_to_keep_the_cpu_buffers_a_move_back_copies_every_position(session, reference):
    """`kv_keep_bytes` bounds what the session keeps: a cache larger than what is left of it is
    not kept (nothing accounted), and the move back copies every position in use."""
    session.use_plan("one-placement")
    moves, kept, before = session.kv_moves.moves, [], session.kv_kept_bytes
    session.kv_keep_bytes = before + session.cache_slots * _per_position(session) - 1  # one row does not fit
    try:
        assert _switching(session, PROMPT, {3: "decode-lavapipe", 6: "one-placement"}, kept)[0] == reference[tuple(PROMPT)]
    finally:
        session.kv_keep_bytes = KV_KEEP_BYTES
    assert [n // _per_position(session) for _, _, n, _ in session.kv_moves.history[moves:]] == [12, 15]
    assert set(kept) == {before}


def test_batching_engine_moves_its_rows_at_a_step_boundary(session, reference):
    """A decodes on the CPU; after its second token the plan switches: the engine's cache moves to
    lavapipe at its next step, B is prefilled there, both keep the CPU bundle's tokens."""
    async def run() -> tuple[list[int], list[int]]:
        a_ids, b_task = [], None
        async for event in session.stream_async(OTHER, max_new_tokens=NEW):
            a_ids.append(event.token_id)
            if len(a_ids) == 2:
                session.use_plan("decode-lavapipe")
                b_task = asyncio.ensure_future(_collect(session.stream_async(PROMPT, max_new_tokens=NEW)))
        return a_ids, await b_task

    session.use_plan("one-placement")
    moves = session.kv_moves.moves
    try:
        a, b = asyncio.run(run())
    finally:
        session.use_plan("one-placement")
    assert a == reference[tuple(OTHER)] and b == reference[tuple(PROMPT)]
    assert ("main", "lavapipe") in [(x, y) for x, y, _, _ in session.kv_moves.history[moves:]]


def test_a_switch_moves_only_the_positions_in_use_of_two_live_rows(session, reference, monkeypatch):
    """Two requests of different lengths decode together in the batching engine; between its
    batched steps the plan switches to lavapipe and back: each move copies the positions the
    rows have written (exactly: the sum of the rows' lengths), and both keep the CPU bundle's
    greedy tokens."""
    plain, switches, written, moved, kept = session.decode, {2: "decode-lavapipe", 4: "one-placement"}, [], [], []
    calls = 0

    def decode(tokens, positions, cache, slots=None):
        nonlocal calls
        calls += len(tokens) == 2  # a step of both rows
        if len(tokens) != 2 or calls not in switches:
            return plain(tokens, positions, cache, slots)
        session.use_plan(switches[calls])
        written.append(cache.written.copy())
        before = session.kv_moves.moves
        logits = plain(tokens, positions, cache, slots)
        moved.extend(session.kv_moves.history[before:])
        kept.append((session.kv_kept_bytes, cache.kept_bytes, cache.nbytes))
        return logits

    async def run() -> list[list[int]]:
        return await asyncio.gather(_collect(session.stream_async(OTHER, max_new_tokens=NEW)),
                                    _collect(session.stream_async(PROMPT, max_new_tokens=NEW)))

    session.use_plan("one-placement")
    monkeypatch.setattr(session, "decode", decode)
    try:
        a, b = asyncio.run(run())
    finally:
        session.use_plan("one-placement")
    assert a == reference[tuple(OTHER)] and b == reference[tuple(PROMPT)]
    assert [(x, y) for x, y, _, _ in moved] == [("main", "lavapipe"), ("lavapipe", "main")]
    # there: every position the two rows have written; back: the two batched steps lavapipe ran
    # (calls 2 and 3), one position per row each, into the CPU buffers kept meanwhile
    there, back = (n // _per_position(session) for _, _, n, _ in moved)
    live = len(OTHER) + len(PROMPT)
    assert there == int(written[0].sum()) and live <= there < live + 2 * NEW
    assert back == 2 * 2 and int((written[1] - written[0]).sum()) == 4
    # the engine's whole cache (two rows and the padding row) is kept on the CPU while lavapipe
    # decodes, and freed by the move back
    (kept_there, cache_kept, cache_bytes), (_, kept_back, _) = kept
    assert cache_kept == cache_bytes == 3 * session.cache_slots * _per_position(session) and kept_there >= cache_bytes
    assert kept_back == 0


def _per_position(session) -> int:
    """KV bytes of one position of one row: every layer's k and v (f32)."""
    cfg = session.config
    return 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * 4


async def _collect(gen) -> list[int]:
    return [event.token_id async for event in gen]


def test_a_power_budget_picks_the_decode_device(session):
    assert session.set_power_budget(100.0) == "one-placement"
    assert session.set_power_budget(6.0) == "decode-lavapipe"
    listing = {p["name"]: p for p in session.plan_set().describe()}
    assert listing["decode-lavapipe"]["decode_on"] == "lavapipe" and listing["decode-lavapipe"]["current"]
    session.use_plan("one-placement")


def test_a_session_loaded_on_the_lavapipe_plan_decodes_there(switch_bundle, reference):
    from iree_glm.runtime import Session

    s = Session.load(switch_bundle, plan="decode-lavapipe")  # the load-time wake-up call stays on the CPU module
    try:
        assert s.generate(PROMPT, max_new_tokens=NEW).generated_ids == reference[tuple(PROMPT)]
    finally:
        s.close()


def test_missing_vulkan_leaves_the_cpu_plan_in_one_line(switch_bundle, reference, monkeypatch):
    from iree_glm.runtime import Session
    from iree_glm.runtime import plans

    monkeypatch.setattr(plans, "driver_available", lambda driver: driver != "vulkan")
    s = Session.load(switch_bundle)  # the default plan needs only the CPU: no warning
    assert s.plan == "one-placement" and s.generate(PROMPT, max_new_tokens=NEW).generated_ids == reference[tuple(PROMPT)]
    with pytest.raises(RequestError, match=r"plan 'decode-lavapipe' cannot run here: .*decodes on 'lavapipe', whose HAL "
                                           r"driver 'vulkan' is not available here"):
        s.use_plan("decode-lavapipe")



@pytest.fixture(scope="module")
def int8_bundle(glm4_checkpoint, tmp_path_factory) -> Path:
    # decode batch 1 only: an int8 decode_b2 does not compile for lavapipe (docs/phases.md)
    return declared_lavapipe_bundle(glm4_checkpoint[0], tmp_path_factory, "decode-switch-int8", 3.0, slow_cpu=False,
                                    quant="int8", decode_batch_sizes=(1,))


def test_int8_weights_switch_to_lavapipe_and_back_keeping_the_cpu_tokens(int8_bundle):
    """The decode-lavapipe module of an int8 bundle quantizes x per block of 32 in the graph, as
    the CPU's int8 decode kernel does, so its decode step computes the CPU's (a generic int8 x
    fp32 module is ~3e-2 apart), and CPU -> lavapipe -> CPU mid-generation gives the CPU-only
    greedy tokens."""
    import numpy as np

    from iree_glm.runtime import Session

    m = read_manifest(int8_bundle)
    assert m.options.quant.mode == "int8" and [p.name for p in m.options.plans] == ["one-placement", "decode-lavapipe"]
    s = Session.load(int8_bundle)
    try:
        cache = s.new_cache()
        logits = s.run_prefill(PROMPT, 0, cache)
        token, apart = int(np.argmax(logits)), []
        for pos in range(len(PROMPT), len(PROMPT) + 4):  # each step on both modules, same KV
            s.use_plan("one-placement")
            cpu = s.decode([token], [pos], cache)[0]
            s.use_plan("decode-lavapipe")
            apart.append(float(np.abs(s.decode([token], [pos], cache)[0] - cpu).max()))
            token = int(np.argmax(cpu))
        assert max(apart) < 1e-3, apart
        s.use_plan("one-placement")
        for prompt in (PROMPT, OTHER):
            cpu_only = s.generate(prompt, max_new_tokens=NEW).generated_ids  # the main (CPU) module throughout
            assert _switching(s, prompt, {2: "decode-lavapipe", 6: "one-placement"})[0] == cpu_only
    finally:
        s.close()
