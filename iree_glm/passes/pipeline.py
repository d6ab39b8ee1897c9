"""Our passes on the input-phase IR, in the order a build runs them.

A build compiles in two phases (`iree-compile --compile-to=input`, our passes, then
`--compile-from=input`). The passes run on one parsed module, in this order:

1. `DequantMatmulPass` (dequant_matmul.py): each quantized matmul becomes one fused loop, a call
   of our int4 / int8 kernels, or an integer matmul; its row quantizations may compute their
   input themselves (quantize_glue.py).
2. `AttentionKernelPass` (attention_kernel.py): attention ops call our flash-attention kernel.

(Block-sparse attention, sparse_attention.py, rewrites the torch-dialect module before this.)
Each pass returns what it did; `run_file` collects the results by pass name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from iree_glm.passes import mlir_file


class InputPass(Protocol):
    name: ClassVar[str]

    def run(self, module: Any, work: Path) -> Any:
        """Rewrite `module` in place; `work` is a folder that lives until IREE has linked the
        module (kernel objects go there). Returns what the pass did."""


@dataclass
class PassPipeline:
    passes: list[InputPass] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.passes)

    def run_file(self, src: Path, dst: Path) -> dict[str, Any]:
        """Parse `src`, run every pass in order, verify and write `dst`; the passes' results by name."""
        results: dict[str, Any] = {}

        def run_all(module) -> None:
            for p in self.passes:
                results[p.name] = p.run(module, Path(dst).parent)

        mlir_file.rewrite(src, dst, run_all)
        return results
