"""Faults during a run: a full disk, a dying engine process, a replay without the engine."""

from __future__ import annotations

import os
import signal

import h5py
import numpy as np
import pytest

from dynlab.frames import Event, Frame
from dynlab.recording import Recorder, Recording, RecordingError
from dynlab.runner import Run

FOREVER = 100_000_000  # steps: the run outlives the test


def _rows_on_disk(path) -> int:
    """Rows of train_loss a reader sees in the file now (0 before its first flush)."""
    try:
        with Recording(path) as rec:
            return rec.rows("train_loss")
    except (OSError, KeyError, RecordingError):
        return 0


def test_disk_full_pauses_reports_and_can_continue_unrecorded(
    tmp_path, failing_flush, make_preset, wait_until
):
    """A write error mid-run: the run pauses with a record_error, the user may continue."""
    failing_flush(3)
    run = Run(make_preset(steps=FOREVER), record=str(tmp_path / "full.h5"), flush_interval=0.05).start()
    got = []
    wait_until(
        lambda: (
            got.extend(run.drain()),
            any(isinstance(e, Event) and e.kind == "record_error" for e in got),
        )[1]
    )
    wait_until(lambda: (got.extend(run.drain()), run.state == "paused")[1])
    err = next(e for e in got if isinstance(e, Event) and e.kind == "record_error")
    assert "No space left on device" in err.payload["message"]
    s = run.step
    run.continue_unrecorded()
    wait_until(lambda: (got.extend(run.drain()), run.step > s + 20)[1])
    run.close()
    assert any(
        isinstance(e, Event) and e.kind == "info" and "without recording" in e.payload["message"] for e in got
    )


def test_killed_engine_process_marks_the_run_failed_and_the_file_readable(tmp_path, make_preset, wait_until):
    path = tmp_path / "k.h5"
    run = Run(make_preset(steps=FOREVER), record=str(path), host="process", flush_interval=0.1).start()
    wait_until(lambda: (run.drain(), run.step > 500)[1], timeout=120)
    # Rows reach the file at the next flush after step 500: wait until a reader sees them.
    wait_until(lambda: (run.drain(), _rows_on_disk(path) > 300)[1], interval=0.05)
    os.kill(run._proc.pid, signal.SIGKILL)
    got = []
    wait_until(lambda: (got.extend(run.drain()), run.state == "failed")[1])
    fail = [e for e in got if isinstance(e, Event) and e.kind == "failed"]
    assert fail and "engine process died" in fail[0].payload["message"]
    run.close()
    with Recording(path) as rec:
        steps, _ = rec.read("train_loss")
        assert len(steps) > 300 and np.all(np.diff(steps) == 1)


def test_replay_needs_only_the_data_not_the_engine(tmp_path, make_preset):
    """A recording from an engine this install lacks still replays (renamed engine)."""
    from dynlab.player import Player
    from dynlab.runner import run_headless

    path = tmp_path / "r.h5"
    run_headless(make_preset(steps=50), record=str(path))
    with h5py.File(path, "r+") as f:
        f.attrs["engine"] = "an-engine-from-the-future"
        f.attrs["preset"] = f.attrs["preset"].replace(
            'engine = "quadratic"', 'engine = "an-engine-from-the-future"'
        )
    p = Player(str(path))
    items = p.step_by(100)
    assert sum(isinstance(i, Frame) for i in items) == 50
    assert p.file.engine == "an-engine-from-the-future"
    p.close()


def test_recorder_refuses_an_unwritable_place(tmp_path):
    # A directory where the file should go fails for every user, root included.
    (tmp_path / "x.h5").mkdir()
    with pytest.raises(RecordingError, match="cannot create recording .*x.h5"):
        Recorder(tmp_path / "x.h5", (), {})


def test_open_recording_while_it_is_written(tmp_path, make_preset, wait_until):
    """SWMR: a reader sees rows appear while the writer keeps going."""
    path = tmp_path / "live.h5"
    run = Run(make_preset(steps=FOREVER), record=str(path), flush_interval=0.05).start()
    wait_until(lambda: (run.drain(), run.step > 200)[1])
    wait_until(lambda: (run.drain(), _rows_on_disk(path) > 0)[1], interval=0.05)  # first flush
    with Recording(path) as rec:
        n1 = rec.rows("train_loss")
        assert n1 > 0 and rec.attrs["status"] == "recording"
    wait_until(lambda: (run.drain(), run.step > n1 + 500)[1])
    wait_until(lambda: (run.drain(), _rows_on_disk(path) > n1)[1], interval=0.05)  # a later flush
    with Recording(path) as rec:
        assert rec.attrs["status"] == "recording"
    run.close()
