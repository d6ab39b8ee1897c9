"""Check `compile --fit-memory`'s estimate against the peak memory a bundle really uses.

For each bundle, a child process (one per measurement, nothing else loaded: no torch) loads a
session and records its peak resident set (VmHWM) after loading, and after prefilling a
prompt that fills the context and decoding 8 tokens. Prints the measured peaks beside
`iree_glm.fit_memory`'s estimate (weights + one KV cache + working set, no prefix cache); the
estimate should be at or above the measurement.

    python -m iree_glm.compile -o bundles/default
    python -m iree_glm.compile -o bundles/default-4k --max-context 4096
    python -m iree_glm.compile -o bundles/default-4k-sparse --max-context 4096 --sparse-attention local=256,global=16,block=64
    python tools/fit_memory_check.py bundles/default bundles/default-4k bundles/default-4k-sparse
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MiB = 2**20


def _peak() -> int:
    """Peak RSS of this process image (VmHWM: unlike ru_maxrss, not inherited from the forking parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def measure(bundle: Path, prompt_tokens: int) -> dict:
    """In this process: peak RSS after load, and after a prompt of `prompt_tokens` (0: none)."""
    import numpy as np

    from iree_glm.runtime import Session

    s = Session.load(bundle, verify=False)
    loaded = _peak()
    if prompt_tokens:
        ids = [int(i) for i in np.random.default_rng(0).integers(1, s.config.vocab_size, prompt_tokens)]
        s.generate(ids, 8, stop_ids=())
    return {"loaded": loaded, "peak": _peak()}


def in_child(bundle: Path, prompt_tokens: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(bundle), str(prompt_tokens)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundles", nargs="*", type=Path)
    p.add_argument("--child", nargs=2, metavar=("BUNDLE", "TOKENS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(Path(args.child[0]), int(args.child[1]))))
        return 0
    from iree_glm.planner import fit_memory
    from iree_glm.bundle.manifest import read_manifest
    from iree_glm.bundle.sparse_pattern import parse_pattern

    print("| bundle | context | weights MiB | KV MiB | peak RSS loaded MiB | peak RSS full-context prefill MiB | estimate MiB | estimate / measured |")
    print("|---|---|---|---|---|---|---|---|")
    for bundle in args.bundles:
        m = read_manifest(bundle, verify=False)
        cfg = m.model
        idle = in_child(bundle, 0)
        full = in_child(bundle, m.max_context - 9)
        weights = (bundle / m.parameters).stat().st_size
        sparse = parse_pattern(m.options.sparse_attention) if m.options.sparse_attention else None
        chunk = m.options.prefill_chunk or 0  # what the session prefills in
        chunk = sparse.call_tokens(chunk) if sparse is not None else chunk
        est = fit_memory.need(cfg, weights, m.max_context, 1, 0, fit_memory.attended_keys(sparse),
                              sparse.ring_slots if sparse is not None and sparse.ring else None, chunk)
        print(f"| {bundle.name} | {m.max_context} | {weights / MiB:.1f} | {est.kv_cache / MiB:.1f} | {idle['loaded'] / MiB:.0f} "
              f"| {full['peak'] / MiB:.0f} | {est.total / MiB:.0f} | {est.total / full['peak']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
