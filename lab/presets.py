"""Presets: one TOML file per experiment, validated against its engine's spec.

Errors name the file, the key and what was expected, e.g.
``presets/x.toml: hyperparameters.lrr: unknown hyperparameter (did you mean 'lr'?)``.
The format is documented in ``docs/presets.md``.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from dynlab.engines.spec import SpecError, suggest
from dynlab.sweepspec import SweepSpec, SweepSpecError, check_against_engine, parse_sweep
from dynlab.viewspec import VIEW_CHOICES, ViewSpec, toml_types

FORMAT_VERSION = 1
_TOP_KEYS = {
    "format_version": "integer",
    "engine": "engine name",
    "title": "string",
    "summary": "string",
    "paper": "string",
    "tags": "list of strings",
    "run": "table",
    "hyperparameters": "table",
    "probes": "table",
    "views": "array of tables",
    "sweep": "table",
}
_REQUIRED = ("format_version", "engine", "title", "summary", "paper")
_RUN_KEYS = {"steps": int, "seed": int, "device": str, "probe_budget": float}
_VIEW_KEYS = toml_types()


class PresetError(ValueError):
    """A preset that cannot be used; the message names file, key and expectation."""


@dataclass(frozen=True)
class Preset:
    """A validated preset; ``text`` is the file's exact TOML (stored in recordings)."""

    name: str
    path: str
    text: str
    engine: str
    title: str
    summary: str
    paper: str
    steps: int
    seed: int
    device: str
    hyperparameters: dict[str, Any]
    probes: dict[str, int]
    views: tuple[ViewSpec, ...]
    tags: tuple[str, ...] = field(default=())
    sweep: SweepSpec | None = None  # the [sweep] table (dynlab.sweepspec)
    #: Probes take at most this fraction of training time (their cadences stretch); None: fixed cadences.
    probe_budget: float | None = None

    def with_overrides(
        self,
        *,
        steps: int | None = None,
        seed: int | None = None,
        device: str | None = None,
        hyperparameters: dict[str, Any] | None = None,
    ) -> Preset:
        """A copy with CLI/UI overrides applied (hyperparameters re-validated)."""
        hp = dict(self.hyperparameters)
        if hyperparameters:
            from dynlab.engines.base import get_engine

            spec = get_engine(self.engine).spec
            for k, v in hyperparameters.items():
                hp[k] = spec.param(k).coerce(v, where=f"--set {k}", from_text=isinstance(v, str))
        changes: dict[str, Any] = {"hyperparameters": hp, "probes": dict(self.probes)}
        if steps is not None:
            changes["steps"] = int(steps)
        if seed is not None:
            changes["seed"] = int(seed)
        if device is not None:
            changes["device"] = device
        return dataclasses.replace(self, **changes)


def preset_dir() -> Path:
    """The folder holding the bundled presets (package data of ``presets``)."""
    return Path(str(resources.files("dynlab.builtin_presets")))


def list_presets() -> list[Path]:
    return sorted(preset_dir().glob("*.toml"))


def find(name_or_path: str) -> Path:
    """Resolve a preset name (``effective-step-size``) or a path to a TOML file."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise PresetError(f"{name_or_path}: no such preset file")
        return p
    candidate = preset_dir() / f"{name_or_path}.toml"
    if candidate.is_file():
        return candidate
    names = [q.stem for q in list_presets()]
    raise PresetError(
        f"no preset named {name_or_path!r}{suggest(name_or_path, names)}; `dynlab presets` lists them"
    )


def load(name_or_path: str, *, check_engine: bool = True) -> Preset:
    """Read and validate a preset. ``check_engine=False`` skips the (torch-importing) spec check."""
    path = find(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PresetError(f"{path}: cannot read: {exc}") from None
    return parse(text, name=path.stem, path=str(path), check_engine=check_engine)


def parse(text: str, *, name: str = "<preset>", path: str = "<preset>", check_engine: bool = True) -> Preset:
    """Validate preset TOML text; see module docstring for the error format."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PresetError(f"{path}: not valid TOML: {exc}") from None

    def err(key: str, msg: str) -> PresetError:
        return PresetError(f"{path}: {key}: {msg}")

    for key in data:
        if key not in _TOP_KEYS:
            raise err(
                key, f"unknown key{suggest(key, list(_TOP_KEYS))}; expected one of {', '.join(_TOP_KEYS)}"
            )
    for key in _REQUIRED:
        if key not in data:
            raise err(key, f"missing (expected {_TOP_KEYS[key]})")
    version = data["format_version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise err("format_version", f"expected an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise err(
            "format_version",
            f"{version} is newer than this dynlab understands ({FORMAT_VERSION}); upgrade dynlab",
        )
    for key in ("engine", "title", "summary", "paper"):
        if not isinstance(data[key], str) or not data[key].strip():
            raise err(key, f"expected a non-empty string, got {data[key]!r}")
    tags = data.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise err("tags", "expected a list of strings")

    run = _table(data, "run", err)
    for key, value in run.items():
        if key not in _RUN_KEYS:
            raise err(
                f"run.{key}",
                f"unknown key{suggest(key, list(_RUN_KEYS))}; expected one of {', '.join(_RUN_KEYS)}",
            )
        if not isinstance(value, _RUN_KEYS[key]) or isinstance(value, bool):
            raise err(f"run.{key}", f"expected {_RUN_KEYS[key].__name__}, got {value!r}")
    steps = run.get("steps", 1000)
    if steps < 1:
        raise err("run.steps", f"expected at least 1, got {steps}")
    seed = run.get("seed", 0)
    if seed < 0:
        raise err("run.seed", f"expected a non-negative integer, got {seed}")
    device = run.get("device", "auto")
    if device not in ("auto", "cpu", "mps") and not device.startswith("cuda"):
        raise err("run.device", f"expected auto, cpu, cuda, cuda:N or mps, got {device!r}")
    probe_budget = run.get("probe_budget")
    if probe_budget is not None and not 0.0 < probe_budget < 1.0:
        raise err(
            "run.probe_budget",
            f"expected the fraction of training time probes may take, in (0, 1) (0.1 = 10 %), got {probe_budget!r}",
        )

    hp = _table(data, "hyperparameters", err)
    probes = _table(data, "probes", err)
    for key, value in probes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise err(f"probes.{key}", f"expected a cadence in steps (integer >= 1), got {value!r}")

    views_raw = data.get("views", [])
    if not isinstance(views_raw, list):
        raise err("views", "expected an array of tables ([[views]])")
    views = []
    for i, v in enumerate(views_raw):
        where = f"views[{i}]"
        if not isinstance(v, dict):
            raise err(where, "expected a table")
        for key, value in v.items():
            if key not in _VIEW_KEYS:
                raise err(
                    f"{where}.{key}",
                    f"unknown key{suggest(key, list(_VIEW_KEYS))}; expected one of {', '.join(_VIEW_KEYS)}",
                )
            if not isinstance(value, _VIEW_KEYS[key]):
                raise err(f"{where}.{key}", f"expected {_VIEW_KEYS[key].__name__}, got {value!r}")
        if "streams" not in v or not v["streams"] or not all(isinstance(s, str) for s in v["streams"]):
            raise err(f"{where}.streams", "expected a non-empty list of stream names")
        for key, allowed in VIEW_CHOICES.items():
            if v.get(key, "") and v[key] not in allowed:
                raise err(f"{where}.{key}", f"expected one of {', '.join(allowed)}, got {v[key]!r}")
        fields: dict[str, Any] = {k: tuple(val) if _VIEW_KEYS[k] is list else val for k, val in v.items()}
        fields.setdefault("title", ", ".join(v["streams"]))
        views.append(ViewSpec(**fields))

    preset = Preset(
        name=name,
        path=path,
        text=text,
        engine=data["engine"],
        title=data["title"],
        summary=" ".join(data["summary"].split()),
        paper=data["paper"],
        steps=steps,
        seed=seed,
        device=device,
        hyperparameters=dict(hp),
        probes=dict(probes),
        views=tuple(views),
        tags=tuple(tags),
        sweep=parse_sweep(data["sweep"], err) if "sweep" in data else None,
        probe_budget=probe_budget,
    )
    if check_engine:
        validate_against_engine(preset)
    return preset


def validate_against_engine(preset: Preset) -> dict[str, Any]:
    """Check engine name, hyperparameters, probes and view streams; return full params."""
    from dynlab.engines.base import get_engine

    path = preset.path
    try:
        cls = get_engine(preset.engine)
    except SpecError as exc:
        raise PresetError(f"{path}: engine: {exc}") from None
    spec = cls.spec
    names = spec.param_names()
    for key, value in preset.hyperparameters.items():
        if key not in names:
            raise PresetError(
                f"{path}: hyperparameters.{key}: unknown hyperparameter of engine {spec.name!r}"
                f"{suggest(key, names)}; expected one of {', '.join(names)}"
            )
        try:
            spec.param(key).coerce(value)
        except SpecError as exc:
            raise PresetError(f"{path}: hyperparameters.{exc}") from None
    for key in preset.probes:
        if key not in spec.probes:
            raise PresetError(
                f"{path}: probes.{key}: engine {spec.name!r} has no such probe{suggest(key, list(spec.probes))}; "
                f"expected one of {', '.join(spec.probes) or '(none)'}"
            )
    try:
        engine = cls(preset.hyperparameters, seed=preset.seed, device="cpu", probes=preset.probes)
    except SpecError as exc:
        raise PresetError(f"{path}: {exc}") from None
    streams = {s.name for s in engine.streams}
    for i, v in enumerate(preset.views):
        for s in (*v.streams, *([v.reference] if v.reference else [])):
            if s not in streams:
                raise PresetError(
                    f"{path}: views[{i}].streams: engine {spec.name!r} has no stream {s!r}"
                    f"{suggest(s, sorted(streams))}"
                )
    if preset.sweep is not None:
        try:
            check_against_engine(preset.sweep, spec, streams, path)
        except SweepSpecError as exc:
            raise PresetError(str(exc)) from None
    return engine.params


def _table(data: dict[str, Any], key: str, err: Any) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise err(key, "expected a table")
    return value
