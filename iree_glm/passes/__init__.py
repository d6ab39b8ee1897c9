"""iree_glm's own MLIR rewrites, applied between IREE's input phase and the rest of lowering.

Installed as `iree_glm.passes` (see pyproject.toml), so they work from a wheel too.
"""
