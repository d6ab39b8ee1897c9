"""The KV cache's layout as compiler and runtime both see it.

The compiled functions read the first n cache positions, n given by the length of their
`key_positions` input; `attended_keys` picks n for a step (every position in use, rounded up
to `KEY_GRANULARITY` so the compiled code sees tile-friendly sizes). `STORE_KV` writes given
entries into a row (the prefix cache restores blocks of `DEFAULT_BLOCK_SIZE` tokens with it).
"""

from __future__ import annotations



KEY_GRANULARITY = 32


STORE_KV = "store_kv"  # the bundle function that writes given K/V entries into a row (prefix cache)


def attended_keys(last_position: int, capacity: int) -> int:
    """How many cache positions a step whose latest token sits at `last_position` attends."""
    return min(capacity, -(-(last_position + 1) // KEY_GRANULARITY) * KEY_GRANULARITY)


DEFAULT_BLOCK_SIZE = 16


DEFAULT_BUDGET_BYTES = 512 << 20
