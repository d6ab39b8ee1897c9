"""Static speed estimates for Arm (docs/arm.md): llvm-mca cycles per block of 32 weights for the
inner loops in tools/arm_mca/*.s, and from them and each Arm profile's bandwidth the decode and
prefill tokens/s of a GLM-edge-1.5B-class shape. These are estimates from a scheduling model,
not measurements: no Arm device was used.

Usage: python tools/arm_mca.py [--llvm-mca llvm-mca-19]   (Debian: apt-get install llvm-19)
"""

from __future__ import annotations

import argparse
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent / "arm_mca"
CPUS = ("cortex-a76", "cortex-x4", "cortex-a720")


@dataclass(frozen=True)
class Loop:
    file: str
    what: str
    blocks: float  # (32-weight block, activation row) pairs one iteration computes
    i8mm: bool = False  # needs i8mm (not on cortex-a76)


LOOPS = (
    Loop("llama_q8_0_q8_0_dotprod.s", "llama.cpp Q8_0 x Q8_0, dotprod (vec_dot)", 1),
    Loop("llama_q4_0_q8_0_dotprod.s", "llama.cpp Q4_0 x Q8_0, dotprod (vec_dot)", 1),
    Loop("llama_q4_0_q8_0_i8mm.s", "llama.cpp Q4_0 x Q8_0, i8mm (vec_dot nrc=2)", 4, i8mm=True),
    Loop("ours_int8_matvec_dotprod.s", "ours: int8 decode matvec, aarch64_dotprod (sdot; not linked yet)", 16),
    Loop("iree_generic_int8_decode_f32.s", "ours on Arm today: int8 decode, IREE generic (f32)", 2),
    Loop("iree_mmt4d_s8s8s32_dotprod_8x8x4.s", "ours on Arm today: int8 prompt, IREE mmt4d dotprod 8x8x4", 8),
    Loop("iree_mmt4d_s8s8s32_i8mm_8x8x8.s", "ours on Arm today: int8 prompt, IREE mmt4d i8mm 8x8x8", 16, i8mm=True),
)


def cycles(mca: str, loop: Loop, cpu: str, iterations: int = 1000) -> float:
    """Steady-state cycles per iteration: llvm-mca's total cycles over many iterations (this
    includes loop-carried latency, unlike Block RThroughput alone)."""
    out = subprocess.run([mca, "-mtriple=aarch64", f"-mcpu={cpu}", "-mattr=+dotprod,+i8mm,+fullfp16",
                          f"-iterations={iterations}", str(HERE / loop.file)], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"Total Cycles:\s+(\d+)", out).group(1)) / iterations


@dataclass(frozen=True)
class Board:
    profile: str
    cores: tuple[tuple[str, int, float], ...]  # (llvm-mca CPU, count, GHz): the cores decode uses
    bandwidth_gbs: float  # the profile's memory_bandwidth_gbs


BOARDS = (
    Board("raspberry-pi-5", (("cortex-a76", 4, 2.4),), 10.0),
    Board("snapdragon-8-gen3", (("cortex-x4", 1, 3.3), ("cortex-a720", 5, 3.1)), 50.0),
    Board("dimensity-9300", (("cortex-x4", 1, 3.25), ("cortex-x4", 3, 2.85), ("cortex-a720", 4, 2.0)), 52.0),
)
# GLM-edge-1.5B-class shape (tools/pareto.py): 28 layers, hidden 2048, q 2048, k/v 512, FFN 6144;
# an int8 head of 59264 x 2048.
LAYER_WEIGHTS = 28 * (2048 * (2048 + 512 + 512 + 2048) + 3 * 2048 * 6144)
HEAD_WEIGHTS = 59264 * 2048
BYTES_PER_WEIGHT = {"int8": 1.0, "int4": 18 / 32}  # int8: + an f32 scale per row (negligible); int4: f16 scale per 32


def tokens_per_s(board: Board, cycles_per_block: dict[str, float], fmt: str, rows: int) -> tuple[float, float]:
    """(compute-bound, bandwidth-bound) tokens/s for `rows` tokens per call (1: decode). Weights
    are read once per call; every row multiplies every block."""
    blocks = (LAYER_WEIGHTS + HEAD_WEIGHTS) / 32 * rows
    blocks_per_s = sum(n * ghz * 1e9 / cycles_per_block[cpu] for cpu, n, ghz in board.cores)
    weight_bytes = LAYER_WEIGHTS * BYTES_PER_WEIGHT[fmt] + HEAD_WEIGHTS
    return blocks_per_s / blocks * rows, board.bandwidth_gbs * 1e9 / weight_bytes * rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llvm-mca", default="llvm-mca-19")
    args = ap.parse_args()
    per_block: dict[str, dict[str, float]] = {}
    print("| loop | " + " | ".join(f"{c} cycles/iter | per block-row" for c in CPUS) + " |")
    print("|---|" + "---|---|" * len(CPUS))
    for loop in LOOPS:
        row = []
        for cpu in CPUS:
            if loop.i8mm and cpu == "cortex-a76":
                row += ["-", "-"]
                continue
            c = cycles(args.llvm_mca, loop, cpu)
            per_block.setdefault(loop.file, {})[cpu] = c / loop.blocks
            row += [f"{c:.1f}", f"{c / loop.blocks:.2f}"]
        print(f"| {loop.what} | " + " | ".join(row) + " |")
    print()
    # Roofline: a token takes the longer of its compute time (the matmul loops on all cores) and
    # its memory time (every weight byte read once at the profile's bandwidth).
    print("| profile | format | decode tok/s: compute bound | bandwidth bound | estimate | compute time / memory time | prefill 128 rows: compute bound tok/s |")
    print("|---|---|---|---|---|---|---|")
    for board in BOARDS:
        mmt4d = "iree_mmt4d_s8s8s32_dotprod_8x8x4.s" if board.profile == "raspberry-pi-5" else "iree_mmt4d_s8s8s32_i8mm_8x8x8.s"
        for fmt, decode_loop, prompt_loop in (("int8", "iree_generic_int8_decode_f32.s", mmt4d),
                                              ("int8 (our dotprod matvec)", "ours_int8_matvec_dotprod.s", mmt4d),
                                              ("int8 (llama.cpp Q8_0 loop)", "llama_q8_0_q8_0_dotprod.s", "llama_q8_0_q8_0_dotprod.s"),
                                              ("int4 (llama.cpp Q4_0 loop)", "llama_q4_0_q8_0_dotprod.s", "llama_q4_0_q8_0_dotprod.s")):
            kind = fmt.split()[0]
            compute, bandwidth = tokens_per_s(board, per_block[decode_loop], kind, 1)
            prompt, _ = tokens_per_s(board, per_block[prompt_loop], kind, 128)
            est = min(compute, bandwidth)
            print(f"| {board.profile} | {fmt} | {compute:.1f} | {bandwidth:.1f} | {est:.1f} | {bandwidth / compute:.2f} | {prompt:.0f} |")


if __name__ == "__main__":
    main()
