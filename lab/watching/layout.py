"""Views for a watched script, and the preset text its recording carries (torch-free, Qt-free).

A script may pass its own layout, ``watch(views=[{"title": ..., "streams": [...]}, ...])``
or the path of a TOML file with ``[[views]]`` tables (the preset format), and the app uses
it when attaching; otherwise every stream gets its own view. The recording stores the
layout as the ``preset`` attribute, so ``dynlab replay`` shows the same views.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dynlab.engines.spec import SpecError, Stream, suggest
from dynlab.presets import PresetError, parse
from dynlab.viewspec import ViewSpec

ENGINE = "watched-script"
_VIEW_KEYS = ("title", "streams", "kind", "log_y", "log_x", "reference", "caption", "smooth")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v), ensure_ascii=False)  # a JSON string is a TOML basic string


def preset_text(name: str, script: str, views: Iterable[Mapping[str, Any]] = ()) -> str:
    """Preset TOML for a watched script: a title, where it came from, and its views."""
    lines = [
        "format_version = 1",
        f"engine = {_toml_value(ENGINE)}",
        f"title = {_toml_value(name)}",
        f"summary = {_toml_value(f'Your own training script, watched by dynlab: {script}')}",
        f"paper = {_toml_value(f'watched script {Path(script).name}')}",
    ]
    for v in views:
        lines.append("\n[[views]]")
        lines += [f"{k} = {_toml_value(v[k])}" for k in _VIEW_KEYS if k in v]
    return "\n".join(lines) + "\n"


def parse_views(
    views: Sequence[Mapping[str, Any]] | str | os.PathLike[str] | None, where: str = "views"
) -> list[dict[str, Any]]:
    """Validate a layout (dicts, or a TOML file with ``[[views]]``); return it as plain dicts.

    Errors name the view and the key, as for a preset.
    """
    if views is None:
        return []
    items: object = views
    if isinstance(views, (str, os.PathLike)):
        where = os.fspath(views)
        try:
            data = tomllib.loads(Path(views).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SpecError(f"{where}: cannot read the view layout: {exc}") from None
        items = data.get("views", [])
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise SpecError(f"{where}: the layout must be a list of views, got {type(items).__name__}")
    for i, v in enumerate(items):
        if not isinstance(v, Mapping):
            raise SpecError(f"{where}[{i}]: a view must be a table (dict), got {type(v).__name__}")
    raw = [dict(v) for v in items]
    for i, v in enumerate(raw):
        bad = [k for k in v if k not in _VIEW_KEYS]
        if bad:
            raise SpecError(
                f"{where}[{i}].{bad[0]}: unknown key{suggest(bad[0], list(_VIEW_KEYS))}; expected one of {', '.join(_VIEW_KEYS)}"
            )
        if isinstance(v.get("streams"), (list, tuple)):
            v["streams"] = list(v["streams"])
    try:
        parse(preset_text("check", "check", raw), path=where, check_engine=False)
    except PresetError as exc:
        raise SpecError(str(exc)) from None
    return raw


def view_specs(views: Iterable[Mapping[str, Any]]) -> tuple[ViewSpec, ...]:
    """ViewSpecs of a validated layout."""
    return tuple(
        ViewSpec(
            title=str(v.get("title", ", ".join(v["streams"]))),
            streams=tuple(v["streams"]),
            **{k: v[k] for k in ("kind", "log_y", "log_x", "reference", "caption", "smooth") if k in v},
        )
        for v in views
    )


def check_streams(views: Iterable[Mapping[str, Any]], streams: Iterable[Stream]) -> None:
    """Raise ``SpecError`` if a view names a stream the script does not emit."""
    names = sorted(s.name for s in streams)
    for i, v in enumerate(views):
        for s in v["streams"]:
            if s not in names:
                raise SpecError(
                    f"views[{i}].streams: no stream {s!r}{suggest(s, names)}; the streams are {', '.join(names)}"
                )
