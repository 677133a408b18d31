"""Export (issue 17, items 12 and 13): CSV per stream, TensorBoard event files read back by
TensorBoard's own reader, ``dynlab export`` on the command line, and hyperparameters saved
as a preset that loads and validates.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from dynlab import presets
from dynlab.export import export_csv, export_tensorboard, histogram_buckets, preset_toml, save_preset
from dynlab.frames import Event, Frame, Stream
from dynlab.recording import Recorder, RecordingError

STREAMS = (
    Stream("loss", "scalar", units="nats"),
    Stream("norms", "vector", shape=(2,), labels=("sgd", "adam, beta")),
    Stream("spectrum", "histogram", shape=(3, 3)),
    Stream("err", "heatmap", shape=(2, 2), rows=("l1", "l2"), cols=("e", "r")),
)


def _spectrum(step: int) -> np.ndarray:
    # Three bins with a gap between the second and third: [0, 1) [1, 2) [3, 4).
    return np.array([[0.0, 1.0, 3.0], [1.0, 2.0, 4.0], [step, 2.0 * step, 0.5]])


@pytest.fixture
def recording(tmp_path):
    path = tmp_path / "run.h5"
    rec = Recorder(path, STREAMS, {"engine": "quadratic", "preset": 'title = "x"\n'}, flush_interval=1e9)
    rng = np.random.default_rng(0)
    truth = {"loss": [], "norms": [], "spectrum": []}
    for step in range(1, 41):
        loss = np.nan if step == 7 else float(rng.random()) * 1e-3
        data = {"loss": loss, "norms": rng.random(2), "err": rng.random((2, 2))}
        if step % 10 == 0:
            data["spectrum"] = _spectrum(step)
            truth["spectrum"].append((step, data["spectrum"]))
        truth["loss"].append((step, loss))
        truth["norms"].append((step, data["norms"]))
        rec.write(Frame.make(step, data))
        if step == 20:
            rec.event(Event(20, "set", {"name": "lr", "old": 0.1, "new": 0.05}))
    rec.close()
    return path, truth


def test_csv_one_file_per_stream_with_step_and_label_columns(recording, tmp_path):
    path, truth = recording
    files = export_csv(path, tmp_path / "csv")
    assert sorted(f.name for f in files) == ["err.csv", "events.csv", "loss.csv", "norms.csv", "spectrum.csv"]
    rows = list(csv.reader(open(tmp_path / "csv" / "norms.csv")))
    assert rows[0] == ["step", "sgd", "adam, beta"]  # a label with a comma is quoted, not split
    steps = [int(r[0]) for r in rows[1:]]
    assert steps == [s for s, _ in truth["norms"]]
    np.testing.assert_array_equal(
        np.array([[float(x) for x in r[1:]] for r in rows[1:]]), [v for _, v in truth["norms"]]
    )
    loss = list(csv.reader(open(tmp_path / "csv" / "loss.csv")))
    assert loss[0] == ["step", "loss"] and loss[7] == ["7", "nan"]
    assert [float(r[1]) for r in loss[1:] if r[0] != "7"] == [v for s, v in truth["loss"] if s != 7]
    spec = list(csv.reader(open(tmp_path / "csv" / "spectrum.csv")))
    assert spec[0][:2] == ["step", "left_0"] and spec[0][-1] == "weight_2" and len(spec) == 5
    assert list(csv.reader(open(tmp_path / "csv" / "err.csv")))[0] == ["step", "l1/e", "l1/r", "l2/e", "l2/r"]
    events = list(csv.reader(open(tmp_path / "csv" / "events.csv")))
    assert ["20", "set"] == events[1][:1] + events[1][2:3]
    assert json.loads(events[1][3]) == {"name": "lr", "old": 0.1, "new": 0.05}


def test_tensorboard_reader_reads_the_values_back_equal(recording, tmp_path):
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    path, truth = recording
    out = tmp_path / "tb"
    result = export_tensorboard(path, out)
    assert result["skipped"] == ["err (heatmap)"]
    # TensorBoard allows only -/\w. in tags: what it would change is changed here and reported.
    assert set(result["tags"]) == {"loss", "norms/sgd", "norms/adam__beta", "spectrum"}
    acc = ea_mod.EventAccumulator(str(out), size_guidance={ea_mod.SCALARS: 0, ea_mod.HISTOGRAMS: 0})
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"loss", "norms/sgd", "norms/adam__beta"}
    loss = acc.Scalars("loss")
    assert [e.step for e in loss] == [s for s, _ in truth["loss"]]
    # TensorBoard stores scalars as float32: equal after the same rounding, NaN kept.
    np.testing.assert_array_equal(
        np.array([e.value for e in loss], np.float32), np.array([v for _, v in truth["loss"]], np.float32)
    )
    adam = acc.Scalars("norms/adam__beta")
    np.testing.assert_array_equal(
        np.array([e.value for e in adam], np.float32), np.array([v[1] for _, v in truth["norms"]], np.float32)
    )
    hist = acc.Histograms("spectrum")
    assert [h.step for h in hist] == [10, 20, 30, 40]
    h = hist[1].histogram_value
    assert list(h.bucket_limit) == [1.0, 2.0, 3.0, 4.0]  # the gap [2, 3) is an empty bucket
    assert list(h.bucket) == [20.0, 40.0, 0.0, 0.5]
    assert (h.min, h.max, h.num) == (0.0, 4.0, 60.5)


def test_histogram_buckets_skip_non_finite_bins():
    assert histogram_buckets(np.full((3, 2), np.nan)) is None
    h = histogram_buckets(np.array([[0.0, 1.0], [1.0, 2.0], [1.0, 3.0]]))
    assert h["bucket_limits"] == [1.0, 2.0] and h["sum"] == pytest.approx(0.5 + 3 * 1.5)


def test_dynlab_export_command(recording, tmp_path, capsys):
    from dynlab.cli import main

    path, _ = recording
    assert (
        main(["export", str(path), "--csv", str(tmp_path / "c"), "--tensorboard", str(tmp_path / "t")]) == 0
    )
    out = capsys.readouterr().out
    assert "wrote 5 CSV files" in out and "tensorboard --logdir" in out and "err (heatmap)" in out
    assert any((tmp_path / "t").glob("events.out.tfevents.*"))
    assert main(["export", str(path)]) == 2
    assert "--csv DIR" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.h5"), "--csv", str(tmp_path / "c")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_bad_recording_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(RecordingError, match="not an HDF5 file"):
        export_csv(bad, tmp_path / "out")


def test_saved_hyperparameters_load_back_as_a_valid_preset(tmp_path):
    base = presets.load("quadratic")
    path = save_preset(
        tmp_path / "mine", base.text, {"lr": np.float64(0.15)}, title="Mine", seed=3, source="quadratic"
    )
    assert path.name == "mine.toml"
    loaded = presets.load(str(path))  # validated against the engine's spec
    assert loaded.hyperparameters["lr"] == 0.15 and loaded.title == "Mine" and loaded.seed == 3
    assert loaded.views == base.views and loaded.engine == base.engine and loaded.steps == base.steps
    assert path.read_text().startswith("# Saved by dynlab")
    # What the file says is checked when it is opened: an out-of-range value is refused there.
    bad = tmp_path / "bad.toml"
    bad.write_text(preset_toml(base.text, {"lr": -1.0}))
    with pytest.raises(presets.PresetError, match="lr"):
        presets.load(str(bad))
