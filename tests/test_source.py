"""The Source protocol: live runs and replays behind one interface; the worker's clock and pace;
hung engines, orphaned engine processes and bounded replay ticks (issue 16 items 1, 3, 4, 16)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import h5py
import numpy as np
import pytest

from dynlab import presets
from dynlab.engines.base import Engine
from dynlab.engines.spec import EngineSpec, Frame, Param, Stream
from dynlab.player import TICK_MAX_ROWS, Player
from dynlab.recording import Recorder, Recording
from dynlab.runner import Run, run_headless
from dynlab.source import Control, Ready, RunState, Source, UnsupportedControl

RELEASE = threading.Event()


class HangAfter(Engine):
    """Makes ``ok`` steps, then blocks inside ``train_step`` until the test releases it."""

    spec = EngineSpec(
        name="test-hang-after",
        title="hangs",
        description="a step that never returns (test)",
        paper="",
        params=(Param("ok", "int", 50, low=0, high=10**9),),
        streams=(Stream("train_loss", "scalar"),),
    )

    def setup(self) -> None:
        pass

    def train_step(self, step: int):  # noqa: ANN201
        if step >= self.params["ok"]:
            RELEASE.wait(60)
        return {"train_loss": 1.0 / (step + 1)}


def wait_until(cond, timeout=30.0):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.005)


def quad(**kw):  # noqa: ANN003, ANN201
    return presets.load("quadratic").with_overrides(**kw)


def test_run_and_player_are_sources_and_hand_over_ready_first(tmp_path):
    path = str(tmp_path / "q.h5")
    run = Run(quad(steps=30), record=path).start()
    assert isinstance(run, Source)
    items: list = []
    wait_until(lambda: (items.extend(run.drain()), run.state.ended)[1])
    assert isinstance(items[0], Ready) and {s.name for s in items[0].streams} >= {"train_loss"}
    assert sum(isinstance(i, Ready) for i in items) == 1
    assert run.state is RunState.FINISHED and run.total_steps == 30
    assert Control.SET in run.controls and Control.SEEK not in run.controls
    with pytest.raises(UnsupportedControl):
        run.seek(3)
    run.close()

    player = Player(path)
    assert isinstance(player, Source)
    assert Control.SEEK in player.controls and Control.SET not in player.controls
    first = player.drain()
    assert isinstance(first[0], Ready) and set(first[0].streams) == set(items[0].streams)
    assert player.params["lr"] == pytest.approx(0.1)
    with pytest.raises(UnsupportedControl):
        player.set("lr", 0.2)
    player.single_step(5)
    stepped = [i for i in player.drain() if isinstance(i, Frame)]
    assert [f.step for f in stepped] == [0, 1, 2, 3, 4]
    player.close()


def test_run_state_enum_spells_the_old_strings():
    assert RunState.PAUSED == "paused" and RunState("diverged") is RunState.DIVERGED
    assert RunState.FINISHED.ended and not RunState.DIVERGED.ended and RunState.DIVERGED.waiting


def test_pace_holds_steps_per_second_and_until_stopped_runs_past_the_preset():
    run = Run(quad(steps=5), until_stopped=True, pace=40.0).start()
    wait_until(lambda: (run.drain(), run.step >= 10)[1])
    t0, s0 = time.monotonic(), run.step
    wait_until(lambda: (run.drain(), run.step >= s0 + 20)[1])
    rate = (run.step - s0) / (time.monotonic() - t0)
    assert run.step > 5, "until_stopped ignores the preset's step count"
    assert rate < 60.0, f"pace 40 steps/s not held ({rate:.1f})"
    run.set_pace(0)  # back to full speed
    s1 = run.step
    wait_until(lambda: (run.drain(), run.step > s1 + 500)[1])
    assert run.close().stopped
    assert run.state is RunState.STOPPED


def test_hung_step_rows_reach_disk_and_close_reports_it(tmp_path):
    """Issue 16 items 3 and 16: rows are flushed on the writer's clock; close() says what it could not stop."""
    RELEASE.clear()
    path = str(tmp_path / "hang.h5")
    preset = quad(steps=1000)
    preset = dataclasses.replace(preset, engine="test-hang-after", hyperparameters={"ok": 40})
    run = Run(preset, record=path, flush_interval=0.2).start()
    got: list = []
    wait_until(lambda: (got.extend(run.drain()), sum(isinstance(i, Frame) for i in got) == 40)[1])
    # The step hangs: nothing new arrives, yet the 40 rows are flushed within an interval.
    wait_until(lambda: _rows_on_disk(path) == 40, timeout=10)
    try:
        report = run.close(timeout=0.5)
        assert not report.stopped and report.recording_closed
        assert "did not return" in report.message
        with h5py.File(path, "r") as f:  # closed: plain HDF5 opens it, status says interrupted
            assert f.attrs["status"] == "interrupted"
            assert f["streams/train_loss/step"].shape == (40,)
    finally:
        RELEASE.set()
        run._thread.join(10)


def _rows_on_disk(path: str) -> int:
    try:
        with Recording(path) as rec:
            return rec.rows("train_loss")
    except Exception:
        return -1


def test_engine_process_ends_when_its_parent_is_killed(tmp_path):
    """Issue 16 item 4: SIGKILL of the parent leaves no engine process behind, and the file is closed."""
    path = tmp_path / "orphan.h5"
    pidfile = tmp_path / "child.pid"
    script = textwrap.dedent(
        f"""
        import time
        from dynlab import presets
        from dynlab.runner import Run
        run = Run(presets.load("quadratic").with_overrides(steps=10**9), record={str(path)!r},
                  host="process", flush_interval=0.2).start()
        while run.step < 200:
            run.drain(); time.sleep(0.01)
        open({str(pidfile)!r}, "w").write(str(run._proc.pid))
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "", timeout=120)
        child = int(pidfile.read_text())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        wait_until(lambda: not _alive(child), timeout=20)
    finally:
        if parent.poll() is None:
            parent.kill()
    size = path.stat().st_size
    with h5py.File(path, "r") as f:  # closed cleanly: no SWMR flags left, status stamped
        assert f.attrs["status"] in ("stopped", "interrupted")
        assert f["streams/train_loss/step"].shape[0] >= 200
    assert path.stat().st_size == size, "the file kept growing after the parent died"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_player_tick_costs_a_bounded_amount_at_any_length(tmp_path):
    """Issue 16 item 1: a slow tick does not make the next one deliver everything due since."""
    path = str(tmp_path / "long.h5")
    n = 200_000
    rec = Recorder(path, (Stream("train_loss", "scalar"),), {"engine": "x"}, flush_interval=1e9)
    for s in range(n):
        rec.write(Frame(s, {"train_loss": np.asarray(float(s))}))
    rec.close()
    p = Player(path, duration=1.0)  # the whole recording in one second at speed 1
    p.seek(-1)
    p.play()
    t0 = p._clock
    out = p.advance(now=t0 + 0.9)  # a tick that came 0.9 s late: 180,000 steps due
    frames = [i for i in out if isinstance(i, Frame)]
    assert len(frames) <= TICK_MAX_ROWS + 1
    assert frames[-1].step == p.cursor >= 170_000, "the cursor still moves at the requested speed"
    steps = [f.step for f in frames]
    assert steps == sorted(steps)
    p.close()


def test_run_headless_hands_no_ready_items():
    _, items = run_headless(quad(steps=5))
    assert not any(isinstance(i, Ready) for i in items)
