"""dynlab engines: training loops and measurement probes (torch, numpy, scipy; no Qt)."""

from engines.spec import EngineSpec, Event, Frame, Param, SpecError, Stream

__all__ = ["EngineSpec", "Event", "Frame", "Param", "SpecError", "Stream"]
