"""calibrate --lowering: flag variants and the prefill chunk chosen by timing them here."""

import subprocess
import sys

from iree_glm.compiler.target import HOST_CPU_FLAGS, merge_flags
from iree_glm.tuning.lowering_choice import choose, host_kernel_sets
from iree_glm.planner.profile import load_profile

from ..helpers import HOST
from iree_glm.compiler.target import device_target


def test_overrides_replace_the_default_of_the_same_option(tmp_path):
    merged = merge_flags(HOST_CPU_FLAGS, ("--iree-llvmcpu-enable-ukernels=none", "--iree-opt-level=O2", "--new-flag"))
    assert [f for f in merged if "ukernels" in f] == ["--iree-llvmcpu-enable-ukernels=none"]
    assert "--iree-opt-level=O2" in merged and "--iree-opt-level=O3" not in merged and merged[-1] == "--new-flag"
    assert len(merged) == len(HOST_CPU_FLAGS) + 1
    path = tmp_path / "p.toml"
    path.write_text(HOST.replace('flags = ["@defaults"]', 'flags = ["@defaults", "--iree-global-opt-data-tiling=false"]'))
    flags = device_target(load_profile(path).host).flags
    assert [f for f in flags if "data-tiling" in f] == ["--iree-global-opt-data-tiling=false"]
    assert device_target(load_profile("host-cpu").host).flags == HOST_CPU_FLAGS


def test_choose_times_each_variant_and_chunk_and_keeps_the_fastest(glm4_checkpoint):
    variants = {"defaults": (), "no-ukernels": ("--iree-llvmcpu-enable-ukernels=none",)}
    choice = choose(glm4_checkpoint[0], layers=1, prompt_len=40, rounds=1, variants=variants, chunks=(0, 16))
    assert set(choice.variant_ms) == set(variants) and set(choice.chunk_ms) == {0, 16}
    assert all(t > 0 for t in [*choice.variant_ms.values(), *choice.chunk_ms.values()])
    assert choice.variant == min(choice.variant_ms, key=choice.variant_ms.get)
    assert choice.flags == variants[choice.variant]
    assert choice.prefill_chunk == min(choice.chunk_ms, key=choice.chunk_ms.get)
    assert choice.layers == 1 and "prefill of 40 tokens, 1 layers" in choice.summary()
    sets = host_kernel_sets()
    if len(sets) < 2:  # e.g. an AVX2-only CPU: nothing to choose, nothing timed
        assert choice.kernel_set == "best" and not choice.kernel_set_ms
    else:  # an AVX-512 VNNI CPU: its set and the AVX2 set, each timed on int8 + int4 prefill
        assert list(choice.kernel_set_ms) == sets and all(t > 0 for t in choice.kernel_set_ms.values())
        assert choice.kernel_set == min(choice.kernel_set_ms, key=choice.kernel_set_ms.get)
        assert "kernel sets (int8 + int4)" in choice.summary()


def test_the_written_profile_keeps_the_kernel_set(tmp_path):
    from iree_glm.tuning.calibrate import _device_toml
    from iree_glm.tuning.lowering_choice import LoweringChoice

    choice = LoweringChoice("defaults", (), 256, {"defaults": 1.0}, {256: 1.0}, 512, 2, "x86_64_avx2",
                            {"x86_64_avx512": 2.0, "x86_64_avx2": 1.5})
    m = {"peak_gflops": {"f32": 1.0}, "dtypes": ["f32"], "op_classes": ["matmul"], "notes": {}, "memory_bandwidth_gbs": 1.0,
         "call_overhead_us": 1.0, "fresh_memory_gbs": 1.0, "dispatch_overhead_us": 1.0}
    text = _device_toml("cpu", "cpu", "local-task", "llvm-cpu", m, 1.0, None, choice)
    assert 'kernel_set = "x86_64_avx2"' in text.splitlines()
    path = tmp_path / "p.toml"
    path.write_text(HOST.replace('flags = ["@defaults"]', 'flags = ["@defaults"]\nkernel_set = "x86_64_avx2"'))
    assert load_profile(path).host.kernel_set == "x86_64_avx2"


def test_bad_lowering_options_are_one_line_errors(tmp_path):
    for extra, message in ((["--lowering", "--lowering-layers", "0"], "--lowering-layers: 0 is below the minimum 1"),
                           (["--lowering", "--lowering-checkpoint", str(tmp_path)], "no config.json there"),
                           (["--lowering", "--driver", "vulkan"], "--lowering chooses llvm-cpu flags")):
        args = ["--driver", "local-task", "-o", str(tmp_path / "x.toml"), *extra]
        if "--driver" in extra:
            args = args[2:]
        r = subprocess.run([sys.executable, "-m", "iree_glm.profile", "calibrate", *args], capture_output=True, text=True, timeout=600)
        assert r.returncode == 2, r.stderr
        assert r.stderr.strip().splitlines()[-1].startswith("error:") and message in r.stderr, r.stderr
        assert not (tmp_path / "x.toml").exists()
