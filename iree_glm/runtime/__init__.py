"""The runtime apps embed: load a bundle, generate or stream tokens."""

from .sampling import SamplingParams
from .session import GenerationResult, Session, StreamEvent

__all__ = ["Session", "SamplingParams", "GenerationResult", "StreamEvent"]
