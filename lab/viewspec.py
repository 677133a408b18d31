"""What a preset asks one view to show (torch-free, Qt-free: views import it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ViewSpec:
    """One plot the preset asks for."""

    title: str
    streams: tuple[str, ...]
    kind: str = ""
    log_y: bool = False
    log_x: bool = False
    reference: str = ""
    caption: str = ""
    smooth: bool = False
