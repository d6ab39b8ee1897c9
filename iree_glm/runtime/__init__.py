"""The runtime apps embed: load a bundle, generate or stream tokens."""

from iree_glm.runtime.request import GenerationResult, StreamEvent
from iree_glm.runtime.sampling import SamplingParams
from iree_glm.runtime.session import Session

__all__ = ["Session", "SamplingParams", "GenerationResult", "StreamEvent"]
