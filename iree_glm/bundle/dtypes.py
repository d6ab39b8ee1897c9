"""The dtypes a bundle computes in (f32, f16, bf16): our names, torch's and numpy's.
"""

from __future__ import annotations



# Our names (also IREE's element type names) -> torch dtype names. torch is imported lazily:
# the runtime only needs `numpy_dtype`.
DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


def numpy_dtype(name: str):
    """The numpy dtype of a bundle's KV cache (bf16 through ml_dtypes, which IREE's runtime maps)."""
    import numpy as np

    if name == "bf16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype({"f32": np.float32, "f16": np.float16}[name])
