"""Static speed estimates for Arm (docs/arm.md): llvm-mca cycles per block of 32 weights for the
inner loops of our aarch64 kernels (compiled here from iree_glm/kernels/aarch64_*/ and cut out
of the compiler's assembly) and of llama.cpp's and IREE's loops (listings in tools/arm_mca/),
and from them and each Arm profile's memory bandwidth (planner/profiles/*.toml) the decode and
prefill tokens/s of a GLM-edge-1.5B-class shape, and what an exact verify call costs there.
These are estimates from a scheduling model, not measurements: no Arm device was used.

Usage: python tools/arm_mca.py [--llvm-mca llvm-mca-19] [--cc aarch64-linux-gnu-gcc] [--show-loops]
(Debian: apt-get install llvm-19 gcc-aarch64-linux-gnu)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
HERE = REPO / "tools" / "arm_mca"
KERNELS = REPO / "iree_glm" / "kernels"
PROFILES = REPO / "iree_glm" / "planner" / "profiles"
# neoverse-n1 is the Cortex-A76's server twin (the same core design): LLVM 19 has no A76 model
# of its own and schedules -mcpu=cortex-a76 with its Cortex-A57 model (see the printed models).
CPUS = ("cortex-a76", "neoverse-n1", "cortex-x4", "cortex-a720")
MACS = {"sdot": 16, "smmla": 32}  # multiply-adds per instruction: a block-row is 32 of them
FP32_MACS = {"fmla": 4}  # the attention loops' (f32): a "block-row" is then 32 f32 multiply-adds


@dataclass(frozen=True)
class Loop:
    key: str
    what: str
    file: str = ""  # a listing in tools/arm_mca/ (with `then` appended) ...
    then: str = ""
    blocks: float = 0  # ... and the (32-weight block, activation row) pairs one iteration computes
    source: str = ""  # or our kernel: its C file under iree_glm/kernels/, the function holding the loop
    function: str = ""  # (a static body such as int8_matvec, looked for in its entry point if GCC inlined it)
    i8mm: bool = False  # needs i8mm (not on cortex-a76 / neoverse-n1)
    fp32: bool = False  # counts f32 `fmla` (attention) instead of integer dot products
    tile_macs: int = 0  # of our loops, the one with exactly this many multiply-adds (0: the most)


DOTPROD_MARCH, I8MM_MARCH = "armv8.2-a+dotprod+fp16", "armv8.2-a+dotprod+fp16+i8mm"
LOOPS = (
    Loop("llama_q8_dot", "llama.cpp Q8_0 x Q8_0, dotprod (vec_dot)", file="llama_q8_0_q8_0_dotprod.s", blocks=1),
    Loop("llama_q8_mm", "llama.cpp Q8_0 x Q8_0, i8mm (vec_dot nrc=2)", file="llama_q8_0_q8_0_i8mm.s",
         then="llama_i8mm_2x2_block.s", blocks=4, i8mm=True),
    Loop("llama_q4_dot", "llama.cpp Q4_0 x Q8_0, dotprod (vec_dot)", file="llama_q4_0_q8_0_dotprod.s", blocks=1),
    Loop("llama_q4_mm", "llama.cpp Q4_0 x Q8_0, i8mm (vec_dot nrc=2)", file="llama_q4_0_q8_0_i8mm.s",
         then="llama_i8mm_2x2_block.s", blocks=4, i8mm=True),
    Loop("ours_int8_mv", "ours: int8 decode matvec, dotprod", source="aarch64_dotprod/int8.c", function="int8_matvec"),
    Loop("ours_int8_mm_dot", "ours: int8 prompt matmul, dotprod", source="aarch64_dotprod/int8.c", function="matmul_rows"),
    Loop("ours_int8_mm_i8mm", "ours: int8 prompt matmul, i8mm", source="aarch64_i8mm/int8.c", function="matmul_rows",
         i8mm=True),
    Loop("ours_int8_rows", "ours: int8 verify rows, dotprod (per row)", source="aarch64_dotprod/int8.c", function="int8_matvec_rows"),
    Loop("ours_int4_mv", "ours: int4 decode matvec, dotprod", source="aarch64_dotprod/int4.c", function="int4_matvec"),
    Loop("ours_int4_rows", "ours: int4 verify rows, dotprod (per row)", source="aarch64_dotprod/int4.c", function="int4_matvec_rows"),
    Loop("ours_int4_mm_dot", "ours: int4 prompt matmul, dotprod", source="aarch64_dotprod/int4.c", function="matmul_rows"),
    Loop("ours_int4_mm_i8mm", "ours: int4 prompt matmul, i8mm", source="aarch64_i8mm/int4.c", function="matmul_rows",
         i8mm=True),
    # Attention: the products of a 32-row tile (q^T and p^T in 8 vectors, 2 keys / output columns
    # a step, 16 `fmla`: the main path of prompts); IREE's decomposed attention does both
    # products (over every key, masked or not) as its f32 mmt4d.
    Loop("ours_attention", "ours: attention tile (2 keys x 32 rows), NEON", source="aarch64_dotprod/attention.c",
         function="iree_glm_attention_workgroup", fp32=True, tile_macs=64),
    Loop("iree_mmt4d_f32", "IREE mmt4d f32 (attention's QK^T and PV), 8x8x1", file="iree_mmt4d_f32_8x8x1.s", blocks=2),
    Loop("iree_generic", "IREE generic int8 decode (f32)", file="iree_generic_int8_decode_f32.s", blocks=2),
    Loop("iree_mmt4d_dot", "IREE mmt4d int8 prompt, dotprod 8x8x4", file="iree_mmt4d_s8s8s32_dotprod_8x8x4.s", blocks=8),
    Loop("iree_mmt4d_mm", "IREE mmt4d int8 prompt, i8mm 8x8x8", file="iree_mmt4d_s8s8s32_i8mm_8x8x8.s", blocks=16, i8mm=True),
)

BRANCH = re.compile(r"^\s*(?:b(?:\.\w+)?|b\w\w|cbn?z|tbn?z)\s+(?:[^,]+,\s*)*(\.L\w+)\s*$")


def inner_loop(asm: str, function: str, fp32: bool = False, tile_macs: int = 0) -> list[str]:
    """The instructions of `function`'s innermost loop (a label and a later branch back to it,
    holding no other loop) with the most sdot / smmla (`fp32`: fmla; `tile_macs`: the first with
    exactly that many multiply-adds): the kernel's hot loop."""
    lines = asm.splitlines()
    if f"{function}:" not in lines and function.startswith("int"):  # a body GCC inlined into its entry point
        function = f"iree_glm_{function}_workgroup"
    start = lines.index(f"{function}:")
    end = next(i for i in range(start, len(lines)) if lines[i].strip().startswith(".size") and function in lines[i])
    body = lines[start:end]
    labels = {line.strip()[:-1]: i for i, line in enumerate(body) if re.match(r"^\.L\w+:$", line.strip())}
    loops = [(labels[m.group(1)], j) for j, line in enumerate(body)
             if (m := BRANCH.match(line)) and m.group(1) in labels and labels[m.group(1)] < j]
    inner = [(a, b) for a, b in loops if not any(a <= c and d <= b and (c, d) != (a, b) for c, d in loops)]

    def instructions(a: int, b: int) -> list[str]:
        return [line for line in body[a:b + 1] if line.startswith("\t") and not line.strip().startswith(".")]

    bodies = [instructions(a, b) for a, b in inner]
    if tile_macs:
        return next(ins for ins in bodies if sum(macs(line, fp32) for line in ins) == tile_macs)
    return max(bodies, key=lambda ins: sum(macs(line, fp32) for line in ins))


def macs(line: str, fp32: bool = False) -> int:
    return (FP32_MACS if fp32 else MACS).get(line.split()[0], 0) if line.strip() else 0


def listing(loop: Loop, cc: str, folder: Path) -> tuple[Path, float]:
    """(the loop's assembly file, block-rows per iteration)."""
    if loop.file and not loop.then:
        return HERE / loop.file, loop.blocks
    if loop.file:
        out = folder / f"{loop.key}.s"
        out.write_text((HERE / loop.file).read_text() + (HERE / loop.then).read_text())
        return out, loop.blocks
    march = I8MM_MARCH if loop.i8mm else DOTPROD_MARCH
    asm = subprocess.run([cc, "-O3", f"-march={march}", "-std=c17", "-ffreestanding", "-fPIC", "-fno-stack-protector", "-S",
                          "-o", "-", str(KERNELS / loop.source)], capture_output=True, text=True, check=True).stdout
    body = inner_loop(asm, loop.function, loop.fp32, loop.tile_macs)
    out = folder / f"{loop.key}.s"
    out.write_text("\n".join(body) + "\n")
    return out, sum(macs(line, loop.fp32) for line in body) / 32


def mca(tool: str, path: Path, cpu: str, iterations: int = 1000) -> tuple[float, str]:
    """(steady-state cycles per iteration: total cycles over many iterations, which counts
    loop-carried latency, unlike Block RThroughput alone; the scheduling model's unit prefix)."""
    out = subprocess.run([tool, "-mtriple=aarch64", f"-mcpu={cpu}", "-mattr=+dotprod,+i8mm,+fullfp16", f"-iterations={iterations}",
                          str(path)], capture_output=True, text=True, check=True).stdout
    unit = re.search(r"\[[\d.]+\]\s+-\s+([A-Za-z0-9]+?)Unit", out)
    return int(re.search(r"Total Cycles:\s+(\d+)", out).group(1)) / iterations, unit.group(1) if unit else "?"


@dataclass(frozen=True)
class Board:
    profile: str
    cores: tuple[tuple[str, int, float], ...]  # (llvm-mca CPU, count, GHz): the cores decode uses
    i8mm: bool

    def bandwidth_gbs(self) -> float:
        """The profile's CPU memory_bandwidth_gbs."""
        data = tomllib.loads((PROFILES / f"{self.profile}.toml").read_text())
        return next(d["memory_bandwidth_gbs"] for d in data["devices"] if d.get("kind") == "cpu")


BOARDS = (
    Board("raspberry-pi-5", (("cortex-a76", 4, 2.4),), i8mm=False),
    Board("snapdragon-8-gen3", (("cortex-x4", 1, 3.3), ("cortex-a720", 5, 3.1)), i8mm=True),
    Board("dimensity-9300", (("cortex-x4", 1, 3.25), ("cortex-x4", 3, 2.85), ("cortex-a720", 4, 2.0)), i8mm=True),
)
# GLM-edge-1.5B-class shape (tools/pareto.py): 28 layers, hidden 2048, q 2048, k/v 512, FFN 6144;
# an int8 head of 59264 x 2048.
LAYER_WEIGHTS = 28 * (2048 * (2048 + 512 + 512 + 2048) + 3 * 2048 * 6144)
HEAD_WEIGHTS = 59264 * 2048
BYTES_PER_WEIGHT = {"int8": 1.0, "int4": 18 / 32}  # int8: + an f32 scale per row (negligible); int4: + f16 scale per group of 32


def tokens_per_s(board: Board, cycles_per_block: dict[str, float], fmt: str, rows: int) -> tuple[float, float]:
    """(compute-bound, bandwidth-bound) tokens/s for `rows` tokens per call (1: decode). Weights
    are read once per call; every row multiplies every block."""
    blocks = (LAYER_WEIGHTS + HEAD_WEIGHTS) / 32 * rows
    blocks_per_s = sum(n * ghz * 1e9 / cycles_per_block[cpu] for cpu, n, ghz in board.cores)
    weight_bytes = LAYER_WEIGHTS * BYTES_PER_WEIGHT[fmt] + HEAD_WEIGHTS
    return blocks_per_s / blocks * rows, board.bandwidth_gbs() * 1e9 / weight_bytes * rows


def verify_cost(board: Board, per_block: dict[str, dict[str, float]], fmt: str, rows: int) -> float:
    """An exact verify call of `rows` rows in decode steps (roofline, as tokens_per_s): the weights
    read once; the decode loop's compute for the first row and the few-row kernel's per-row loop
    (weights regrouped / unpacked once, outside it) for each further row."""
    decode_tok_s, bandwidth_tok_s = tokens_per_s(board, per_block[f"ours_{fmt}_mv"], fmt, 1)
    row_tok_s, _ = tokens_per_s(board, per_block[f"ours_{fmt}_rows"], fmt, 1)
    memory, decode = 1 / bandwidth_tok_s, 1 / decode_tok_s  # seconds per call
    return max(memory, decode + (rows - 1) / row_tok_s) / max(memory, decode)


# Prompt lookup's target calls per token (docs/speculative.md: 330M int4, verify calls of at most
# 3 rows, measured on x86): what an Arm bundle's exact verify (3 rows) makes of them.
TOKENS_PER_CALL = (("code under edit", 1.97), ("agent transcript", 2.33))
VERIFY_ROWS = 3  # an Arm bundle's exact rows (compiler/exact_rows.py; tests/compiler/test_arm_emulation.py)


def engines(board: Board) -> list[tuple[str, str, str, str]]:
    """(engine, format, decode loop, prompt loop) rows of the roofline table for a board."""
    mm = "mm" if board.i8mm else "dot"
    i8mm = "_i8mm" if board.i8mm else "_dot"
    return [
        ("ours", "int8", "ours_int8_mv", f"ours_int8_mm{i8mm}"),
        ("llama.cpp", "int8", "llama_q8_dot", f"llama_q8_{mm}"),
        ("IREE generic + mmt4d", "int8", "iree_generic", f"iree_mmt4d_{mm}"),
        ("ours", "int4", "ours_int4_mv", f"ours_int4_mm{i8mm}"),
        ("llama.cpp", "int4", "llama_q4_dot", f"llama_q4_{mm}"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llvm-mca", default="llvm-mca-19")
    ap.add_argument("--cc", default="aarch64-linux-gnu-gcc")
    ap.add_argument("--show-loops", action="store_true", help="print our kernels' extracted inner loops")
    args = ap.parse_args()
    per_block: dict[str, dict[str, float]] = {}
    models: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        print("| loop | " + " | ".join(f"{c} cycles/iter | per block-row" for c in CPUS) + " |")
        print("|---|" + "---|---|" * len(CPUS))
        for loop in LOOPS:
            path, blocks = listing(loop, args.cc, Path(tmp))
            if args.show_loops and loop.source:
                print(f"--- {loop.key} ({blocks:g} block-rows per iteration)\n{path.read_text()}")
            row = []
            for cpu in CPUS:
                if loop.i8mm and cpu in ("cortex-a76", "neoverse-n1"):
                    row += ["-", "-"]
                    continue
                c, models[cpu] = mca(args.llvm_mca, path, cpu)
                per_block.setdefault(loop.key, {})[cpu] = c / blocks
                row += [f"{c:.1f}", f"{c / blocks:.2f}"]
            print(f"| {loop.what} | " + " | ".join(row) + " |")
    print("\nllvm-mca scheduling models: " + ", ".join(f"-mcpu={c}: {m}" for c, m in models.items()) + "\n")
    # Roofline: a token takes the longer of its compute time (the matmul loops on all cores) and
    # its memory time (every weight byte read once at the profile's bandwidth).
    print("| profile | engine | format | decode tok/s: compute bound | bandwidth bound | estimate | % of bandwidth bound"
          " | compute / memory time | prefill 128 rows: compute-bound tok/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for board in BOARDS:
        for engine, fmt, decode_loop, prompt_loop in engines(board):
            compute, bandwidth = tokens_per_s(board, per_block[decode_loop], fmt, 1)
            prompt, _ = tokens_per_s(board, per_block[prompt_loop], fmt, 128)
            est = min(compute, bandwidth)
            print(f"| {board.profile} | {engine} | {fmt} | {compute:.1f} | {bandwidth:.1f} | {est:.1f} | {100 * est / bandwidth:.0f}%"
                  f" | {bandwidth / compute:.2f} | {prompt:.0f} |")
    # Speculative decoding: a verify call of up to VERIFY_ROWS rows against a decode step, and the
    # decode speed-up prompt lookup's measured tokens per call would give at that cost.
    print("\n| profile | format | verify call, 2 rows: decode steps | 3 rows | "
          + " | ".join(f"prompt lookup, {what} ({t} tokens / call): speed-up" for what, t in TOKENS_PER_CALL) + " |")
    print("|---|---|---|---|" + "---|" * len(TOKENS_PER_CALL))
    for board in BOARDS:
        for fmt in ("int8", "int4"):
            costs = [verify_cost(board, per_block, fmt, r) for r in (2, VERIFY_ROWS)]
            print(f"| {board.profile} | {fmt} | {costs[0]:.2f} | {costs[1]:.2f} | "
                  + " | ".join(f"{t / costs[1]:.2f}x" for _, t in TOKENS_PER_CALL) + " |")


if __name__ == "__main__":
    main()
