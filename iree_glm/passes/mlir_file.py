"""The MLIR files the passes rewrite between compiler phases: read, rewrite, verify, write."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")


def rewrite(src: Path, dst: Path, rewrite_module: Callable[..., T]) -> T:
    """Parse `src` (text or bytecode), apply `rewrite_module(module)`, verify the result and
    write `dst` (bytecode if it ends in .mlirbc, text otherwise); returns what the rewrite did."""
    from iree.compiler import ir

    with ir.Context():
        module = ir.Module.parse(Path(src).read_bytes())
        result = rewrite_module(module)
        module.operation.verify()
        if Path(dst).suffix == ".mlirbc":
            with open(dst, "wb") as f:
                module.operation.write_bytecode(f)
        else:
            Path(dst).write_text(str(module))
    return result
