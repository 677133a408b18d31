"""What a preset asks one view to show (torch-free, Qt-free: views import it).

This module is the one source for the view kinds and a ``[[views]]`` table's keys:
the preset loader derives its schema from :class:`ViewSpec`'s fields, and the views
registry checks its kinds against :data:`VIEW_KINDS`.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

#: Every value ``ViewSpec.kind`` may take (besides "" = chosen from the first stream's kind).
VIEW_KINDS: tuple[str, ...] = ("lines", "histogram", "waterfall", "heatmap", "points", "vector-heatmap")
#: Every value ``ViewSpec.sort_cols`` may take (besides "" = the stream's own column order).
SORT_ORDERS: tuple[str, ...] = ("argmax",)
#: Keys whose value must be one of a few words (besides ""), for the preset loader's checks.
VIEW_CHOICES: dict[str, tuple[str, ...]] = {"kind": VIEW_KINDS, "sort_cols": SORT_ORDERS}


@dataclass(frozen=True)
class ViewSpec:
    """One plot the preset asks for.

    ``sort_cols = "argmax"`` (heatmaps) orders the columns by the row that holds each
    column's maximum, re-sorted at every step shown: neurons grouped by their dominant
    frequency, say, so structure that a fixed order scatters reads as a staircase.
    """

    title: str
    streams: tuple[str, ...]
    kind: str = ""
    log_y: bool = False
    log_x: bool = False
    reference: str = ""
    caption: str = ""
    smooth: bool = False
    sort_cols: str = ""


def toml_types() -> dict[str, type]:
    """The TOML value type of each ``[[views]]`` key: ViewSpec's fields, tuples read as arrays."""
    hints = typing.get_type_hints(ViewSpec)
    out: dict[str, type] = {}
    for f in dataclasses.fields(ViewSpec):
        hint = hints[f.name]
        out[f.name] = list if typing.get_origin(hint) is tuple else hint
    return out
