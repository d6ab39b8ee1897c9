"""The modules a session decodes on, and the live KV cache following a switch between them.

A bundle's plans may decode on different devices (compiler/phases.py: `decode-DEVICE` plans
carry the whole program compiled for one other device). The session keeps every usable decode
module loaded and calls the current plan's; a KV cache (a conversation's row, the batching
engine's rows, the embeddings row) records the device it lives on, and the first device call
that finds it elsewhere moves it there (`KVCache.move_to`) under the lock that orders device
calls: a switch takes effect at the next call, a step boundary, and a generation in progress
continues token for token on the new device.

Copies per buffer on CPU (local-task) <-> Vulkan (lavapipe): the source is read through a
mapping (local-task memory is the process's; the session makes Vulkan caches host-visible and
mappable), and one host copy fills the new allocation (local-task: a heap buffer; Vulkan: a
host-visible buffer the device reads in place). No queue transfer, no staging copy. On a
discrete GPU the cache would belong in device-local memory and the move would be a queue
transfer each way; not built.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DecodeModule:
    """One loaded module with every entry point, on its device."""

    file: str
    device_name: str  # the profile device ("main": the bundle's main module)
    driver: str
    device: object  # the HAL device
    fns: dict  # entry point -> FunctionInvoker
    upload: object = None  # host array -> device array in host-visible memory (None: local devices import host arrays)


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
