"""The frame contract as the lab and the views see it (re-exported, torch-free)."""

from dynlab.engines.spec import STREAM_KINDS, Event, Frame, Param, SpecError, Stream, StreamKind

__all__ = ["STREAM_KINDS", "Event", "Frame", "Param", "SpecError", "Stream", "StreamKind"]
