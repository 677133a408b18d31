"""dynlab engines: training loops and measurement probes (torch, numpy, scipy; no Qt)."""

from dynlab.engines.spec import EngineSpec, Event, Frame, Param, SpecError, Stream

__all__ = ["EngineSpec", "Event", "Frame", "Param", "SpecError", "Stream"]
