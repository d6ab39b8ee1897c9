"""The modules a session decodes on, and the live KV cache following a switch between them.

A bundle's plans may decode on different devices (compiler/phases.py: `decode-DEVICE` plans
carry the whole program compiled for one other device). The session keeps every usable decode
module loaded and calls the current plan's; a KV cache (a conversation's row, the batching
engine's rows, the embeddings row) records the device it lives on, and the first device call
that finds it elsewhere moves it there (`KVCache.move_to`) under the lock that orders device
calls: a switch takes effect at the next call, a step boundary, and a generation in progress
continues token for token on the new device.

A move copies only the positions each row has written (`KVCache.written`: a conversation's
length; the batching engine releases a row when its request ends), one host copy per buffer
and row from a mapping of the source (local-task memory is the process's; the session makes
Vulkan caches host-visible and mappable) into a mapping of a new allocation (`cache_memory`:
local-task: the device's own memory; Vulkan: host-visible memory the device reads in place).
The new allocation's other positions are zeroed just before a call reads them (`KVCache.use`),
so a switch after N tokens copies O(N) bytes. No queue transfer, no staging copy. A cache
leaving a local (CPU) device keeps its buffers there (`KVCache.kept`, within the session's
`kv_keep_bytes`): a new local-task buffer costs by its size, so the move back copies into the
kept buffers only the positions written meanwhile. On a discrete GPU the cache would belong in
device-local memory and the move would be a queue transfer each way; not built.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from iree_glm.runtime.kv_cache import mappable_memory


@dataclass
class DecodeModule:
    """One loaded module with every entry point, on its device."""

    file: str
    device_name: str  # the profile device ("main": the bundle's main module)
    driver: str
    device: object  # the HAL device
    fns: dict  # entry point -> FunctionInvoker
    upload: object = None  # host array -> device array in host-visible memory (None: local devices import host arrays)

    @property
    def cache_memory(self) -> tuple:
        """(memory type, usage) of a KV cache moved here, mappable so the next move reads it in place."""
        return mappable_memory(self.driver.startswith("local-"))

    @property
    def keeps_left_caches(self) -> bool:
        """Whether a KV cache moving away keeps its buffers here for a move back (within the
        session's `kv_keep_bytes`): a new local-task buffer costs by its size (a zeroed allocation,
        a memset where glibc reuses freed heap memory), a Vulkan one by the pages the move
        touches, so only local devices gain from keeping."""
        return self.driver.startswith("local-")


@dataclass
class MoveStats:
    """KV caches moved between decode devices (for reports and tools/phase_split_bench.py)."""

    history: list[tuple[str, str, int, float]] = field(default_factory=list)  # (from, to, bytes, seconds)

    @property
    def moves(self) -> int:
        return len(self.history)

    @property
    def seconds(self) -> float:
        return sum(h[3] for h in self.history)
