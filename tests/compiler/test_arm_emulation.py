"""Arm bundles cross-compiled here and run under qemu-aarch64 user emulation (docs/arm.md).

Each Arm profile's CPU lowering (data tiling, IREE's Arm ukernels, decomposed attention, integer
prompt matmuls) is compiled for a small model of unusual shape (head_dim 24, partial rotary, GQA)
in fp32, int8 and int4, run by an arm64 Python with the runtime's Session under `qemu-aarch64
-cpu <the profile's CPU>`, and compared with the same weight format compiled for and run on the
host: the same greedy tokens, logits within the bounds below. Quantized bundles verify draft
tokens exactly (the kernels' few-row forms, docs/speculative.md): a verify call's rows are the
decode steps' logits bit for bit, under emulation. Quantized bundles link our Arm
kernel sets (kernels/toolchain.py: dotprod on the Pi, i8mm on the phones), and every bundle's
attention calls our NEON flash-attention kernel (dense, and told the pattern of a block-sparse
build): the manifest says so and the compiled module's aarch64 executable holds the kernels'
symbols.

Needs qemu-user and the cache that tools/arm_sysroot.sh fills (an arm64 Python and the aarch64
iree-base-runtime 3.13.0 wheel); skips with the reason where either is missing.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from iree_glm.bundle.sparse_pattern import parse_pattern
from iree_glm.compiler.build import BuildOptions, build_bundle
from iree_glm.transforms.quantize import QuantSpec

from ..arm import REPO, arm_python, missing
from ..helpers import write_hf_checkpoint

PROBE = Path(__file__).with_name("greedy_probe.py")
# The profile's CPU as qemu 7.2 models it: it has no cortex-x4; `max` has the X4's dotprod, i8mm
# and bf16 (and SVE, which the Snapdragon bundles do not use).
QEMU_CPU = {"raspberry-pi-5": "cortex-a76", "snapdragon-8-gen3": "max"}
PROMPT = "1,17,33,250,9,101,7,64,3"
NEW_TOKENS = 6
# Largest |logit difference| Arm vs host (logits here are ~0.5-3 in size). fp32: reassociation
# only. int8, int4: both sides run our kernels' numbers (activations quantized the same way,
# exact integer sums; only the float order of the scaling differs).
LOGIT_BOUND = {"none": 1e-4, "int8": 1e-4, "int4": 1e-4}
# The kernel set whose objects each profile's quantized bundles link (the manifest's
# int4_kernel / int8_kernel.kernel_set): dotprod (`sdot`) on the Pi's Cortex-A76, i8mm (`smmla`
# prompt kernels over the dotprod code) on the phones.
KERNEL_SET = {"raspberry-pi-5": "aarch64_dotprod", "snapdragon-8-gen3": "aarch64_i8mm"}
# Symbols the compiled module must link per weight format: int8 decode matvec (int8 layers and the
# int8 head of int4 bundles), the prompts' row quantizations (plain and with their glue) and matrix kernel.
_PROMPT = ("quantize", "quantize_rms_norm", "quantize_silu_mul", "matmul")
# Rows of an Arm bundle's verify call that are one-row calls bit for bit (compiler/exact_rows.py:
# 4-row vector tiles on NEON, in verify's norms and RoPE's steps).
EXACT_ROWS = 3
LINKED = {
    "int8": {f"iree_glm_int8_{s}_workgroup" for s in ("matvec", *_PROMPT)},
    "int4": {"iree_glm_int8_matvec_workgroup", *(f"iree_glm_int4_{s}_workgroup" for s in ("matvec", *_PROMPT))},
}

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("arm-ckpt") / "glm4"
    write_hf_checkpoint("glm4_gqa", path)
    return path


@pytest.fixture(scope="module")
def bundles(checkpoint, tmp_path_factory):
    """Bundles built on first use, keyed by (profile, weight format, block-sparse pattern)."""
    built: dict[tuple[str, str, str | None], Path] = {}

    def get(profile: str, mode: str, sparse: str | None = None) -> Path:
        if (profile, mode, sparse) not in built:
            out = tmp_path_factory.mktemp("arm-bundles") / f"{profile}-{mode}{'-sparse' if sparse else ''}"
            # The host reference runs the AVX2 set: its int4 prompts sum int8 blocks as the Arm
            # sets do (the AMX set's run in bf16, a different rounding: docs/kernels.md).
            kernel_set = "x86_64_avx2" if profile == "host-cpu" else None
            build_bundle(checkpoint, out, BuildOptions(max_context=32, profile=profile, quant=QuantSpec(mode), kernel_set=kernel_set,
                                                       sparse_attention=parse_pattern(sparse) if sparse else None))
            built[profile, mode, sparse] = out
        return built[profile, mode, sparse]

    return get


def linked_kernels(vmfb: Path) -> set[str]:
    """Our kernel symbols in the module's aarch64 executables (their ELF symbol tables; IREE
    keeps them), asserting every embedded executable is aarch64 code."""
    data = vmfb.read_bytes()
    starts = [m.start() for m in re.finditer(rb"\x7fELF", data)]
    assert starts, f"{vmfb}: no embedded executable"
    for at in starts:
        assert int.from_bytes(data[at + 18:at + 20], "little") == 183, f"{vmfb}: an executable is not aarch64 (EM_AARCH64)"
    return {m.decode() for m in re.findall(rb"(iree_glm_\w+_workgroup)\x00", data[starts[0]:])}


def _probe_host(bundle: Path, out: Path) -> dict:
    subprocess.run([sys.executable, str(PROBE), str(bundle), str(out), PROMPT, str(NEW_TOKENS)], check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    return dict(np.load(out))


# A window of 4 keys and 2 global ones: the 9-token prompt and the greedy tokens cross both.
SPARSE = "local=4,global=2,block=4"
CASES = [(p, m, None) for p in ("raspberry-pi-5", "snapdragon-8-gen3") for m in ("none", "int8", "int4")]


@pytest.mark.parametrize("profile, mode, sparse", [*CASES, ("raspberry-pi-5", "none", SPARSE)])
def test_arm_bundle_matches_host_under_emulation(profile, mode, sparse, bundles, tmp_path):
    arm = bundles(profile, mode, sparse)
    manifest = json.loads((arm / "manifest.json").read_text())
    assert manifest["options"]["target_cpu"]["arch"] == "aarch64"
    assert "--iree-global-opt-data-tiling=true" in manifest["modules"][0]["flags"]
    attention = manifest["options"]["attention_kernel"]  # our NEON kernel (the i8mm set's is the dotprod set's)
    assert (attention["kernel"], attention["kernel_set"], attention["left_to_iree"]) == ("dotprod", "aarch64_dotprod", 0)
    assert attention["rewritten"] > 0
    assert attention.get("sparse") == (sparse.rsplit(",", 1)[0] if sparse else None)
    assert "iree_glm_attention_workgroup" in linked_kernels(arm / "model.vmfb")
    if mode != "none":  # our kernels: the manifest's choice and the symbols in the compiled module
        options = manifest["options"]
        assert (options["int8_kernel"]["kernel_set"], options["int8_kernel"]["decode"]) == (KERNEL_SET[profile], "matvec")
        if mode == "int8":
            assert options["int8_kernel"]["prefill"] == "matmul"
        else:
            assert options["int4_kernel"]["kernel_set"] == KERNEL_SET[profile]
        assert LINKED[mode] <= linked_kernels(arm / "model.vmfb")
    proc = arm_python(QEMU_CPU[profile], str(PROBE), str(arm), str(tmp_path / "arm.npz"), PROMPT, str(NEW_TOKENS))
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = dict(np.load(tmp_path / "arm.npz"))
    want = _probe_host(bundles("host-cpu", mode, sparse), tmp_path / "host.npz")
    assert got["tokens"].tolist() == want["tokens"].tolist()
    diff = float(np.abs(got["logits"] - want["logits"]).max())
    print(f"{profile} {mode}{' sparse' if sparse else ''}: max |logit diff| {diff:.2e}")
    assert diff <= LOGIT_BOUND[mode]
    if mode != "none" and not sparse:  # speculative decoding's check is exact on Arm too
        verify = next(e for e in manifest["entry_points"] if e["name"] == "verify")
        assert verify["exact_rows"] == EXACT_ROWS and int(got["exact_rows"]) == EXACT_ROWS
        assert {"iree_glm_attention_workgroup", f"iree_glm_{mode}_matvec_rows_workgroup"} <= linked_kernels(arm / "model.vmfb")
        rows = got["verify_logits"]
        assert rows.shape[0] == EXACT_ROWS
        assert np.array_equal(rows.view(np.uint32), got["logits"][1:1 + EXACT_ROWS].view(np.uint32)), \
            "a verify call's rows are not the decode steps' logits bit for bit"
        # Speculative decoding end to end on Arm: plain decoding's tokens, in fewer target calls.
        assert got["spec_tokens"].tolist() == got["tokens"].tolist() and int(got["spec_calls"]) < NEW_TOKENS - 1


@pytest.mark.parametrize("profile, cpu, feature", [("raspberry-pi-5", "cortex-a57", "dotprod"), ("snapdragon-8-gen3", "cortex-a76", "i8mm")])
def test_bundle_on_cpu_without_its_features_stops_with_one_line(profile, cpu, feature, bundles):
    """IREE 3.13 itself does not check: the Pi's `sdot` code died with SIGILL on a CPU without
    dotprod (docs/arm.md), as the phones' `smmla` code would without i8mm. The runtime reads the
    CPU's features from the kernel's hwcaps and refuses the bundle first."""
    proc = arm_python(cpu, "-m", "iree_glm.run", str(bundles(profile, "int8")), "--prompt-ids", PROMPT,
                      "--max-new-tokens", "2", "--no-verify")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and feature in lines[0], proc.stderr
