"""Parameter-archive size of each quantization against fp32, on a seeded random GLM-4 config.

Writes the `.irpa` a bundle would hold (the same steps as the build: load, fuse q/k/v,
quantize, write the archive) without compiling anything, so large configs take seconds.

    python tools/quant_size.py                       # tools/bench.py's 85m shapes, 32k vocabulary
    python tools/quant_size.py --config 330m --vocab 151552

Prints a Markdown table: archive bytes and the ratio to the fp32 archive.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (tools/bench.py: the seeded random configs)

ROWS = [  # label, QuantSpec fields (None: fp32)
    ("fp32", None),
    ("int8, fp32 embeddings", dict(mode="int8", embeddings="none")),
    ("int8 (default: int8 embeddings)", dict(mode="int8")),
    ("int4 g32, fp32 embeddings", dict(mode="int4", group_size=32, embeddings="none")),
    ("int4 g32 (default: int8 embeddings)", dict(mode="int4", group_size=32)),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="85m", choices=sorted(bench.CONFIGS))
    p.add_argument("--vocab", type=int, default=32768)
    args = p.parse_args()
    from iree_glm.bundle.model_config import ModelConfig
    from iree_glm.export.program import write_parameter_archive
    from iree_glm.frontend.checkpoint import random_model
    from iree_glm.transforms.quantize import QuantSpec, quantize_model

    shape = dict(bench.CONFIGS[args.config], vocab_size=args.vocab)
    cfg = ModelConfig(family="glm4", attention_bias=True, partial_rotary_factor=0.5, max_position_embeddings=4096, **shape)
    model = random_model(cfg, seed=0).fuse_qkv()
    params = sum(t.numel() for t in model.state_dict().values())
    print(f"{args.config} shapes, vocabulary {args.vocab}: {params / 1e6:.1f}M parameters, untied head\n")
    print("| weights | .irpa MB | of fp32 |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        fp32 = None
        for label, fields in ROWS:
            m = model if fields is None else quantize_model(copy.deepcopy(model), QuantSpec(**fields))
            path = Path(work) / "w.irpa"
            write_parameter_archive(m, path)
            size = path.stat().st_size
            fp32 = fp32 or size
            print(f"| {label} | {size / 1e6:.1f} | {size / fp32:.3f} |")
            path.unlink()


if __name__ == "__main__":
    main()
