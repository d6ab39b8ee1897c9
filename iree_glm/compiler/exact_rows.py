"""How many rows a `verify` call may have with every row computed as a one-row call computes it.

IREE's llvm-cpu code for a dispatch with a dynamic dimension (the rows of a prefill or verify
call: norms, RoPE, elementwise steps) processes that dimension in tiles (`lowering_config`:
distribution and vector tile sizes) and runs other code for a full tile than for a partial one:
a full vector tile of rows is reduced as vectors across rows, a partial tile row by row, and
the two sum in different orders. A call with fewer rows than the smallest such tile runs only
the partial-tile code, which is what a one-row call runs, so each of its rows has a one-row
call's bits. The tiles depend on the target (8 rows with AVX-512 here, 4 with AVX2 only or
NEON), so they are read from the compiled module's configurations
(`--iree-hal-dump-executable-configurations-to`), not assumed.

Which dispatches count: verify's. The build exports `verify` as the module's first function
(export/program.py), and IREE names a dispatch that several functions share after the first of
them, so every dispatch verify runs is named after it; those named after prefill or embed are
theirs alone: the prompts' post-attention norms, fused into one dispatch that tiles rows by 4
on AVX2, do not bound verify, whose norms sum each row as a product of its own
(frontend/model.py's `RMSNorm.decode_form`), a reduction that tiles rows by 8 there: 7 rows
(NEON tiles verify's rows by 4: 3 rows). Where no dispatch is named after verify (the naming
this rests on changed), every function of a dynamic row count counts.
Within them, conservatively, every tile of a dynamic dimension (rows or attended keys) counts,
except in a dispatch whose every element type is an integer (the positions' i64 broadcasts):
integer results do not depend on the order they are computed in (they tile rows by 2 on
aarch64, whose 128-bit vectors hold two i64: counted, they left an Arm bundle no exact rows at
all). Decode functions (one static row: their dynamic dimension is the attended keys) and
`verify` share no row-wise code. Our kernels' dispatches (the matmuls, an exact verify's
attention) are not IREE's generated code and have no tiles here: their rows are one-row calls'
by construction, which their own tests check (tests/kernels: the few-row matmul kernels,
test_attention_rows.py).
"""

from __future__ import annotations

import re
from pathlib import Path

from iree_glm.bundle.manifest import VERIFY

CONFIGURATIONS_FLAG = "--iree-hal-dump-executable-configurations-to"
# At most this many rows (8 draft tokens and the pending one): a verify row costs ~0.1-0.6 of a
# decode step (docs/speculative.md), so longer drafts rarely pay.
MAX_ROWS = 9
# The export's name ends in the root op's loop ranges: ..._reduction_Dx1024_f32, D dynamic.
_EXPORT = re.compile(r"hal\.executable\.export public @(\w+)\$async_dispatch\S*_((?:\d+|D)(?:x(?:\d+|D))*)_([a-z]\w*)")
_INTEGER = re.compile(r"i\d+")  # an element type of the export's name (i64, i8): integer arithmetic
ROW_FUNCTIONS = ("prefill", VERIFY, "embed")  # the bundle's functions of a dynamic row count
_CONFIG = re.compile(r"lowering_config<([^>]*)>")
_TILES = re.compile(r"(\w+) = \[([\d, ]*)\]")


def smallest_dynamic_tile(folder: Path) -> int | None:
    """The smallest tile (> 1) of a dynamic dimension over verify's configured dispatches in
    `folder` (see the module's docstring for which count); None if none tiles a dynamic dimension
    by more than one."""
    dispatches = []
    for path in sorted(Path(folder).glob("configured_*.mlir")):
        text = path.read_text()
        export = _EXPORT.search(text)
        if export is not None and export.group(1) in ROW_FUNCTIONS and "D" in export.group(2).split("x"):
            dispatches.append((export, text))
    if any(export.group(1) == VERIFY for export, _ in dispatches):
        dispatches = [(export, text) for export, text in dispatches if export.group(1) == VERIFY]
    tiles = []
    for export, text in dispatches:
        if all(_INTEGER.fullmatch(t) for t in export.group(3).split("x")):
            continue  # exact whatever the tiles
        dims = export.group(2).split("x")
        for config in _CONFIG.findall(text):
            for _key, values in _TILES.findall(config):
                sizes = [int(v) for v in values.split(",") if v.strip()]
                # A list over the root op's loops: its dynamic ones; another op's (another rank):
                # all of them (conservative).
                picked = [s for s, d in zip(sizes, dims) if d == "D"] if len(sizes) == len(dims) else sizes
                tiles += [s for s in picked if s > 1]
    return min(tiles) if tiles else None


def exact_rows(folder: Path, cap: int) -> int | None:
    """Rows a verify call may have (at most `cap`), each bit for bit a one-row call; None: fewer than 2."""
    tile = smallest_dynamic_tile(folder)
    rows = cap if tile is None else min(cap, tile - 1)
    return rows if rows >= 2 else None
