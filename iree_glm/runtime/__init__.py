"""The runtime apps embed: load a bundle, generate or stream tokens."""

from .request import GenerationResult, StreamEvent
from .sampling import SamplingParams
from .session import Session

__all__ = ["Session", "SamplingParams", "GenerationResult", "StreamEvent"]
