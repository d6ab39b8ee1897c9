"""--activation-dtype: f16 / bf16 bundles run, store half the bytes, and stay within a stated
logit error of the f32 model (README "Prefill" states the same errors)."""

import json

import numpy as np
import pytest
import torch

from iree_glm.transforms import activation_dtype
from iree_glm.cli import compile as compile_cli
from iree_glm.compiler.build import BuildOptions, build_bundle
from iree_glm.frontend.checkpoint import load_model, open_checkpoint
from iree_glm.errors import run_cli
from iree_glm.planner.profile import ProfileError, load_profile
from iree_glm.runtime import Session

# Max |logit - f32 logit| allowed on the tiny test model (logit std ~0.66). Measured: f16
# ~0.003, bf16 ~0.016 (11 vs 8 bits of mantissa), so a wrong-dtype path cannot pass.
TOLERANCE = {"f16": 0.02, "bf16": 0.1}
PROMPT = list(range(3, 40))


def _f32_logits(checkpoint) -> torch.Tensor:
    model = load_model(open_checkpoint(checkpoint))
    with torch.no_grad():
        logits, _, _ = model.all_logits(torch.tensor([PROMPT]), torch.zeros(1, dtype=torch.long), *model.empty_cache(1, 64))
    return logits[0, -1]


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_converted_model_keeps_names_and_f32_where_needed(glm4_checkpoint, dtype):
    path = glm4_checkpoint[0]
    ref = _f32_logits(path)
    model = activation_dtype.convert(load_model(open_checkpoint(path)), dtype)
    assert set(model.state_dict()) == set(load_model(open_checkpoint(path)).state_dict())  # archive and export agree
    assert model.model.layers[0].mlp.down_proj.weight.dtype == activation_dtype.check(dtype)
    assert model.model.rotary.inv_freq.dtype == torch.float32
    k, v = model.empty_cache(1, 64, activation_dtype.check(dtype))
    caches = [c for i in range(model.cfg.num_layers) for c in (k[i], v[i])]
    zero = torch.zeros(1, dtype=torch.long)
    with torch.no_grad():
        logits = model(torch.tensor([PROMPT]), zero, zero, torch.arange(64), *caches)
    assert logits.dtype == torch.float32 and k.dtype == activation_dtype.check(dtype) and k.any()
    err = (logits[0] - ref).abs().max().item()
    assert 1e-5 < err < TOLERANCE[dtype], err  # rounded, but within the stated error


@pytest.fixture(scope="module", params=["f16", "bf16"])
def narrow_bundle(request, glm4_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / f"glm4-{request.param}"
    build_bundle(glm4_checkpoint[0], out, BuildOptions(max_context=64, activation_dtype=request.param))
    return request.param, out


def test_bundle_runs_in_the_dtype_within_tolerance(narrow_bundle, glm4_checkpoint, glm4_bundle):
    dtype, bundle = narrow_bundle
    options = json.loads((bundle / "manifest.json").read_text())["options"]
    assert options["activation_dtype"] == dtype
    # Weights stored in the dtype: half of the f32 bundle's archive.
    assert (bundle / "weights.irpa").stat().st_size < 0.6 * (glm4_bundle / "weights.irpa").stat().st_size
    session = Session.load(bundle, verify=False, prefill_chunk=16)
    cache = session.new_cache()
    logits = session.run_prefill(PROMPT, 0, cache)
    ref = _f32_logits(glm4_checkpoint[0]).numpy()
    err = np.abs(logits - ref).max()
    assert logits.dtype == np.float32 and 1e-5 < err < TOLERANCE[dtype], err
    assert logits.argmax() == ref.argmax()
    assert cache.read(0, 8)[0].dtype == session.cache_dtype and session.cache_dtype.itemsize == 2
    whole = Session.load(bundle, verify=False, prefill_chunk=0)
    assert session.generate(PROMPT, 6, stop_ids=()).generated_ids == whole.generate(PROMPT, 6, stop_ids=()).generated_ids
    cached = Session.load(bundle, verify=False, prefix_cache=True)  # prefix-cache blocks go back in the cache's dtype
    cached.generate(PROMPT, 2, stop_ids=())
    again = cached.generate(PROMPT, 6, stop_ids=())
    assert again.cached_tokens > 0 and again.generated_ids == whole.generate(PROMPT, 6, stop_ids=()).generated_ids


def test_unknown_dtype_is_one_line_error(glm4_checkpoint, tmp_path, capsys):
    code = run_cli(compile_cli.main, [str(glm4_checkpoint[0]), "-o", str(tmp_path / "b"), "--activation-dtype", "f8"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "--activation-dtype" in errors[0] and "f8" in errors[0]
    assert not (tmp_path / "b").exists()


def test_profile_key_is_checked(tmp_path):
    from ..helpers import HOST

    assert load_profile("host-cpu").host.activation_dtype == "f32"
    path = tmp_path / "p.toml"
    assert 'activation_dtype = "f32"' in HOST
    path.write_text(HOST.replace('activation_dtype = "f32"', 'activation_dtype = "f8"'))
    with pytest.raises(ProfileError, match=r"devices\[0\].activation_dtype: 'f8' is not one of f32, f16, bf16"):
        load_profile(path)
