"""`compile --fit-memory`: exact weight sizes, the choice under small memory caps, the refusal."""

from pathlib import Path

import pytest

from iree_glm.planner import fit_memory
from iree_glm.errors import run_cli
from iree_glm.cli.compile import main as compile_main
from iree_glm.frontend.default_model import CONFIG
from iree_glm.errors import UserError
from iree_glm.planner.profile import load_profile
from iree_glm.transforms.quantize import QuantSpec
from ..helpers import PROFILES

MiB = 2**20
# The default model's parameter bytes, as written by real builds (int4: f16 group scales, rows not padded).
WEIGHTS = {"none": 20997120, "int8": 5342208, "int4": 3924992}  # int8 embeddings with --quant (the default)


def _profile(tmp_path: Path, budget_bytes: float, prefix_cache_mb: float | None = 0) -> Path:
    """host-cpu with its memory cut to `budget_bytes` (no reserve, no prefix cache unless given)."""
    text = (PROFILES / "host-cpu.toml").read_text()
    policy = "memory_reserve_gb = 0.0" + (f"\nprefix_cache_mb = {prefix_cache_mb}" if prefix_cache_mb is not None else "")
    text = text.replace("memory_gb = 24.0", f"memory_gb = {budget_bytes / 1e9!r}").replace("memory_reserve_gb = 2.0", policy)
    path = tmp_path / f"small-{int(budget_bytes)}.toml"
    path.write_text(text)
    return path


def _need(mode: str, context: int, streams: int = 1, prefix: int = 0) -> int:
    """The documented estimate, written out independently of fit_memory.need: the prompt goes
    in calls of host-cpu's `prefill_chunk` tokens, each attending to every earlier position."""
    chunk = load_profile("host-cpu").policy.prefill_chunk
    kv = 2 * CONFIG.num_layers * CONFIG.num_kv_heads * CONFIG.head_dim * 4 * context
    act = fit_memory.ACTIVATION_FACTOR * 4 * (CONFIG.hidden_size + CONFIG.intermediate_size + CONFIG.vocab_size) * chunk
    calls = [4 * CONFIG.num_heads * min(chunk, context - first) * min(first + chunk, context) for first in range(0, context, chunk)]
    scores = fit_memory.SCORE_BUFFERS * calls[-1] + fit_memory.KEPT_SCORE_SHARE * sum(calls)
    runtime = fit_memory.RUNTIME_BASE_BYTES + fit_memory.KV_EXTRA_COPIES * kv + act + scores
    return int(WEIGHTS[mode] + kv * streams + runtime + prefix)


def test_weight_bytes_are_exact(glm4_checkpoint):
    from iree_glm.frontend.checkpoint import load_model, open_checkpoint
    from iree_glm.transforms.quantize import quantize_model, state_bytes

    ckpt = open_checkpoint(glm4_checkpoint[0])
    for spec in (QuantSpec("none"), QuantSpec("int8"), QuantSpec("int4", 32), QuantSpec("int4", 32, "none", "int8")):
        real = state_bytes(quantize_model(load_model(ckpt), spec).state_dict())
        assert fit_memory.weight_bytes(ckpt.config, spec) == real
    for mode, size in WEIGHTS.items():
        assert fit_memory.weight_bytes(CONFIG, QuantSpec(mode)) == size


def test_budget_is_memory_minus_reserve_plus_unshared_devices():
    p = load_profile("host-cpu")
    assert fit_memory.budget_bytes(p) == int((24.0 - 2.0) * 1e9)
    p = load_profile("host-cpu-vulkan")  # lavapipe shares the host's memory
    assert fit_memory.budget_bytes(p) == int((p.host.memory_gb - p.policy.memory_reserve_gb) * 1e9)


@pytest.mark.parametrize(
    "budget, want",
    [
        (_need("none", 1024) + 1, ("none", 1024)),  # everything fits: exact weights, full context
        (_need("none", 512) + 1, ("none", 512)),  # exact weights at a useful context beat int8 at 1024
        # fp32 fits nowhere >= 512: the next most exact, at the largest context that fits
        (_need("none", 512) - 1, ("int8", 1024 if _need("int8", 1024) < _need("none", 512) else 512)),
        (_need("int8", 512) - 1, ("int4", 512)),
    ],
)
def test_choice_under_small_memory(tmp_path, budget, want):
    c = fit_memory.choose(CONFIG, load_profile(_profile(tmp_path, budget)), 1024)
    assert (c.quant, c.context) == want
    assert c.need.total <= budget and c.need.total == _need(*want)
    assert c.report[-1].startswith(f"chose --quant {want[0]} --max-context {want[1]}")


def test_streams_prefix_cache_and_fixed_quant_count(tmp_path):
    budget = _need("none", 1024) + 1
    assert fit_memory.choose(CONFIG, load_profile(_profile(tmp_path, budget)), 1024, streams=1).context == 1024
    c = fit_memory.choose(CONFIG, load_profile(_profile(tmp_path, budget)), 1024, streams=8)
    assert (c.quant, c.context) == ("none", 512)  # eight KV caches no longer fit at 1024
    c = fit_memory.choose(CONFIG, load_profile(_profile(tmp_path, budget, 16)), 1024)
    assert c.need.prefix_cache == 16 * MiB and c.context == 512
    c = fit_memory.choose(CONFIG, load_profile(_profile(tmp_path, budget + 512 * MiB, None)), 1024)
    assert c.need.prefix_cache == 512 * MiB and c.context == 1024  # unset: the runtime's default budget
    c = fit_memory.choose(CONFIG, load_profile(_profile(tmp_path, budget)), 1024, quant_modes=("int4",))
    assert (c.quant, c.context) == ("int4", 1024)
    c = fit_memory.choose(CONFIG, load_profile(_profile(tmp_path, _need("none", 300) + 1)), 300)
    assert (c.quant, c.context) == ("none", 300)  # a target below the useful minimum is the floor


def test_nothing_fits_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"--fit-memory: nothing fits .*small-.*\.toml's \d+ MiB .* int4 g32 at context 512, needs \d+ MiB"):
        fit_memory.choose(CONFIG, load_profile(_profile(tmp_path, _need("int4", 512) - 1)), 1024)


def test_cli_refuses_with_one_line_and_writes_nothing(tmp_path, capsys):
    profile = _profile(tmp_path, 50e6)
    out = tmp_path / "b"
    assert run_cli(compile_main, ["-o", str(out), "--profile", str(profile), "--fit-memory"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --fit-memory: nothing fits") and not out.exists()
    assert run_cli(compile_main, ["-o", str(out), "--min-context", "64"]) == 2
    assert capsys.readouterr().err.strip() == "error: --min-context is only used with --fit-memory"
    assert run_cli(compile_main, ["-o", str(out), "--fit-memory", "--quant", "int3"]) == 2
    assert "error: --quant: unknown mode 'int3'" in capsys.readouterr().err


def test_the_estimate_follows_the_other_quant_options(tmp_path):
    spec = QuantSpec("none", 32, "int8", "none")  # fp32 embeddings
    c = fit_memory.choose(CONFIG, load_profile("host-cpu"), 1024, ("int8",), spec)
    assert c.need.weights == fit_memory.weight_bytes(CONFIG, QuantSpec("int8", 32, "int8", "none")) > WEIGHTS["int8"]


def test_sliding_window_cache_is_counted_at_its_slots():
    """A ring cache of 336 slots costs the same KV memory at any context; the rest of the
    estimate is unchanged (the same prefill calls)."""
    full, ring = (fit_memory.need(CONFIG, WEIGHTS["none"], 4096, 2, 0, None, slots) for slots in (None, 336))
    assert full.kv_cache == 2 * 2 * CONFIG.num_layers * CONFIG.num_kv_heads * CONFIG.head_dim * 4 * 4096
    assert ring.kv_cache * 4096 == full.kv_cache * 336
    assert fit_memory.need(CONFIG, WEIGHTS["none"], 16384, 2, 0, None, 336).kv_cache == ring.kv_cache
    assert ring.working_set == full.working_set and ring.weights == full.weights


def test_the_prefill_chunk_sizes_the_working_set(tmp_path):
    """Prompts go in calls of the profile's `prefill_chunk`: smaller calls, smaller score buffers
    (peak RSS at 4k, tools/fit_memory_check.py: 295 / 434 / 1428 MiB for 256 / 1024 / whole)."""
    ws = [fit_memory.working_set_bytes(CONFIG, 4096, None, chunk) for chunk in (256, 1024, None)]
    assert ws[0] < ws[1] < ws[2]
    whole = _profile(tmp_path, 99e9)  # its own file
    whole.write_text(whole.read_text().replace("prefill_chunk = 256", "prefill_chunk = 0"))
    for profile, chunk in ((_profile(tmp_path, 100e9), 256), (whole, None)):
        c = fit_memory.choose(CONFIG, load_profile(profile), 4096)
        assert c.need.working_set == fit_memory.working_set_bytes(CONFIG, 4096, None, chunk)
