"""Export a recording for the tools people already use, and hyperparameters as a preset.

* ``export_csv(recording, out_dir)``: one CSV per stream (a ``step`` column, then one
  column per label) plus ``events.csv``.
* ``export_tensorboard(recording, out_dir)``: TensorBoard event files (via
  ``tensorboardX``, the ``[export]`` extra): scalars as scalars, vectors as one tag per
  label (``stream/label``), histograms as TensorBoard histograms, events and the preset
  as text. Heatmap and point streams have no TensorBoard plot and are listed as skipped.
* ``preset_toml(...)`` / ``save_preset(...)``: the open preset with the hyperparameters
  the user steered to, as a TOML file ``dynlab run`` takes.

Qt-free; the CLI (``dynlab export``) and the app's *File → Export…* both call these.
Reads go through :class:`dynlab.recording.Recording` in step windows, so memory stays
bounded on long recordings.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from dynlab.frames import Stream
from dynlab.recording import Recording

#: Rows per stream read at once (a window of steps holding about this many rows).
WINDOW_ROWS = 20_000

Progress = Callable[[int, int], bool | None]


class ExportError(RuntimeError):
    """An export that cannot be done (missing package, unwritable folder); the message says why."""


def column_names(stream: Stream) -> list[str]:
    """Names of a stream's value columns, flattened in C order.

    scalar ``[name]``; vector its labels (else ``name[i]``); histogram ``left_i``,
    ``right_i``, ``weight_i``; heatmap ``row/col``; points ``label.x``, ``label.y`` (``.z``).
    """
    shape = tuple(stream.shape)
    if stream.kind == "scalar" or not shape:
        return [stream.name]
    if stream.kind == "vector":
        n = int(np.prod(shape))
        return list(stream.labels) if len(stream.labels) == n else [f"{stream.name}[{i}]" for i in range(n)]
    if stream.kind == "histogram" and len(shape) == 2:
        return [f"{part}_{i}" for part in ("left", "right", "weight") for i in range(shape[1])]
    if stream.kind == "heatmap" and len(shape) == 2:
        rows = list(stream.rows) if len(stream.rows) == shape[0] else [str(i) for i in range(shape[0])]
        cols = list(stream.cols) if len(stream.cols) == shape[1] else [str(j) for j in range(shape[1])]
        return [f"{r}/{c}" for r in rows for c in cols]
    if stream.kind == "points" and len(shape) == 2:
        labels = list(stream.labels) if len(stream.labels) == shape[0] else [str(i) for i in range(shape[0])]
        return [f"{lab}.{ax}" for lab in labels for ax in "xyz"[: shape[1]]]
    return [f"{stream.name}[{i}]" for i in range(int(np.prod(shape)))]


def safe_filename(name: str) -> str:
    """A stream name as a file name (anything but letters, digits, ``-_.`` becomes ``_``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or "stream"


def tensorboard_tag(name: str) -> str:
    """``name`` as TensorBoard accepts a tag (what tensorboardX would make of it: ``-/\\w.`` kept)."""
    return re.sub(r"[^-/\w.]", "_", name).lstrip("/") or "_"


def _windows(rec: Recording, name: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(steps, values)`` of one stream in step windows of about ``WINDOW_ROWS`` rows."""
    rng = rec.step_range(name)
    if rng is None:
        return
    first, last = rng
    rows = max(rec.rows(name), 1)
    width = max(1, int(np.ceil((last - first + 1) * WINDOW_ROWS / rows)))
    for start in range(first, last + 1, width):
        steps, values = rec.read(name, start, start + width)
        if len(steps):
            yield steps, values


def _open(path: str | Path) -> Recording:
    return Recording(path)


def _out_dir(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create the folder {out}: {exc}") from None
    return out


def export_csv(recording: str | Path, out_dir: str | Path, *, progress: Progress | None = None) -> list[Path]:
    """Write one CSV per stream of ``recording`` into ``out_dir``, and ``events.csv``.

    Parameters
    ----------
    recording
        A dynlab recording (HDF5).
    out_dir
        Created if missing; existing files of the same names are overwritten.
    progress
        Called as ``progress(rows_done, rows_total)``; returning False stops early.

    Returns
    -------
    The files written.
    """
    out = _out_dir(out_dir)
    written: list[Path] = []
    with _open(recording) as rec:
        streams = rec.streams
        total = sum(rec.rows(n) for n in streams) or 1
        done = 0
        for name, stream in streams.items():
            path = out / f"{safe_filename(name)}.csv"
            try:
                f = path.open("w", newline="", encoding="utf-8")
            except OSError as exc:
                raise ExportError(f"cannot write {path}: {exc}") from None
            with f:
                csv.writer(f).writerow(["step", *column_names(stream)])
                for steps, values in _windows(rec, name):
                    table = np.column_stack([steps.astype(np.float64), values.reshape(len(steps), -1)])
                    # %.17g round-trips every float64 exactly; steps print as integers.
                    np.savetxt(f, table, fmt=["%d"] + ["%.17g"] * (table.shape[1] - 1), delimiter=",")
                    done += len(steps)
                    if progress is not None and progress(done, total) is False:
                        return written + [path]
            written.append(path)
        path = out / "events.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["step", "time", "kind", "payload"])
            for e in rec.events():
                w.writerow([e.step, repr(e.time), e.kind, json.dumps(e.payload)])
        written.append(path)
    return written


def histogram_buckets(value: np.ndarray) -> dict[str, Any] | None:
    """A ``(3, B)`` histogram frame (left edges, right edges, weights) as TensorBoard's fields.

    TensorBoard buckets are given by their right edges (``bucket_limits``), each starting
    at the previous one's end; a gap between two bins becomes an empty bucket so no bin
    is stretched over it. Returns None for a frame without a finite bin.
    """
    left, right, weight = (np.asarray(r, dtype=np.float64) for r in value)
    ok = np.isfinite(left) & np.isfinite(right) & np.isfinite(weight)
    left, right, weight = left[ok], right[ok], weight[ok]
    if not len(left):
        return None
    limits: list[float] = []
    counts: list[float] = []
    for i in range(len(left)):
        if i and left[i] > right[i - 1]:
            limits.append(float(left[i]))
            counts.append(0.0)
        limits.append(float(right[i]))
        counts.append(float(weight[i]))
    centre = (left + right) / 2
    return {
        "min": float(left[0]),
        "max": float(right[-1]),
        "num": float(weight.sum()),
        "sum": float((weight * centre).sum()),
        "sum_squares": float((weight * centre**2).sum()),
        "bucket_limits": limits,
        "bucket_counts": counts,
    }


def export_tensorboard(
    recording: str | Path, out_dir: str | Path, *, progress: Progress | None = None
) -> dict[str, list[str]]:
    """Write ``recording`` as TensorBoard event files in ``out_dir`` (``tensorboard --logdir``).

    Returns ``{"tags": [...], "skipped": ["name (kind)", ...]}``: the tags as TensorBoard
    shows them (characters it does not allow in a tag become ``_``).
    """
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ExportError(
            "TensorBoard export needs tensorboardX: pip install 'dynlab-desktop[export]'"
        ) from None
    out = _out_dir(out_dir)
    tags: list[str] = []
    skipped: list[str] = []
    with _open(recording) as rec:
        streams = rec.streams
        attrs = rec.attrs
        total = sum(rec.rows(n) for n, s in streams.items() if s.kind in ("scalar", "vector", "histogram"))
        writer = SummaryWriter(logdir=str(out), flush_secs=30, max_queue=1000)
        # tensorboardX logs a warning per NaN scalar; a diverged run has thousands.
        x2num = logging.getLogger("tensorboardX.x2num")
        level = x2num.level
        x2num.setLevel(logging.ERROR)
        try:
            preset = str(attrs.get("preset", ""))
            if preset:
                # Markdown code block: TensorBoard's text tab shows the TOML as written.
                writer.add_text("preset", "```toml\n" + preset + "\n```", 0)
            done = 0
            for name, stream in streams.items():
                if stream.kind not in ("scalar", "vector", "histogram"):
                    skipped.append(f"{name} ({stream.kind})")
                    continue
                tag = tensorboard_tag(name)
                labels = [tensorboard_tag(f"{name}/{lab}") for lab in column_names(stream)]
                for steps, values in _windows(rec, name):
                    for step, value in zip(steps.tolist(), values):
                        if stream.kind == "scalar":
                            writer.add_scalar(tag, float(value), step)
                        elif stream.kind == "vector":
                            for label, v in zip(labels, np.ravel(value).tolist()):
                                writer.add_scalar(label, v, step)
                        else:
                            h = histogram_buckets(value)
                            if h is not None:
                                writer.add_histogram_raw(tag, global_step=step, **h)
                    done += len(steps)
                    if progress is not None and progress(done, total or 1) is False:
                        return {"tags": tags, "skipped": skipped}
                tags += labels if stream.kind == "vector" else [tag]
            for e in rec.events():
                if e.kind not in ("start", "end"):
                    writer.add_text("events", f"{e.kind}: {e.label}", e.step)
        finally:
            writer.close()
            x2num.setLevel(level)
    return {"tags": tags, "skipped": skipped}


def export_main(
    recording: str,
    *,
    csv_dir: str | None = None,
    tensorboard_dir: str | None = None,
    out: TextIO | None = None,
) -> int:
    """``dynlab export RUN.h5 --csv DIR --tensorboard DIR``: do the exports asked for and say what was written."""
    out = out or sys.stdout
    if csv_dir:
        files = export_csv(recording, csv_dir)
        print(f"wrote {len(files)} CSV files to {csv_dir}", file=out)
    if tensorboard_dir:
        result = export_tensorboard(recording, tensorboard_dir)
        print(
            f"wrote TensorBoard events for {len(result['tags'])} tags to {tensorboard_dir} "
            f"(view them: tensorboard --logdir {tensorboard_dir})",
            file=out,
        )
        if result["skipped"]:
            print(
                "skipped (no TensorBoard plot for these; use --csv): " + ", ".join(result["skipped"]),
                file=out,
            )
    return 0


# ---------------------------------------------------------------------- presets
def _plain(value: Any) -> Any:
    """numpy scalars to Python (tomli-w writes only plain types)."""
    return value.item() if isinstance(value, np.generic) else value


def preset_toml(
    preset_text: str,
    hyperparameters: Mapping[str, Any],
    *,
    title: str | None = None,
    seed: int | None = None,
    source: str = "",
) -> str:
    """The preset ``preset_text`` with ``hyperparameters`` (and optionally title, seed) replaced.

    The result is validated as a preset (format only; ``dynlab.presets.load`` checks it
    against the engine when it is opened). Comments of the original are not kept.
    """
    import tomli_w

    from dynlab import __version__
    from dynlab.presets import parse

    try:
        data = tomllib.loads(preset_text)
    except tomllib.TOMLDecodeError as exc:
        raise ExportError(f"the open preset is not valid TOML: {exc}") from None
    hp = dict(data.get("hyperparameters", {}))
    hp.update({k: _plain(v) for k, v in hyperparameters.items()})
    data["hyperparameters"] = hp
    if title:
        data["title"] = title
    if seed is not None:
        data.setdefault("run", {})["seed"] = int(seed)
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    origin = f" from {source}" if source else ""
    text = (
        f"# Saved by dynlab {__version__} on {stamp}{origin}.\n"
        "# Run it with `dynlab run THIS_FILE`, or open it in the app (File → Open preset file…).\n\n"
        + tomli_w.dumps(data, multiline_strings=True)
    )
    parse(text, name="saved", path="<saved preset>", check_engine=False)
    return text


def save_preset(
    path: str | Path, preset_text: str, hyperparameters: Mapping[str, Any], **kwargs: Any
) -> Path:
    """Write ``preset_toml(...)`` to ``path`` (``.toml`` added if missing); returns the path."""
    p = Path(path)
    if p.suffix != ".toml":
        p = p.with_suffix(p.suffix + ".toml") if p.suffix else p.with_suffix(".toml")
    text = preset_toml(preset_text, hyperparameters, **kwargs)
    try:
        p.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ExportError(f"cannot write {p}: {exc}") from None
    return p
