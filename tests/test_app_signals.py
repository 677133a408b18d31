"""Killing the app politely (SIGTERM, Ctrl+C) stops its runs: no engine process outlives it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dynlab import presets
from dynlab.recording import Recording, RecordingError

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc (Linux)")


def _rows(folder: Path) -> int:
    try:
        with Recording(next(folder.glob("*.h5"))) as rec:
            return rec.rows("train_loss")
    except (StopIteration, OSError, KeyError, RecordingError):
        return 0


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(c) for c in text.split()]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_closes_the_app_its_engine_process_and_recording(tmp_path, wait_until, sig) -> None:
    rec = tmp_path / "rec"
    env = {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",
        "DYNLAB_RECORDINGS": str(rec),
        "DYNLAB_HOST": "process",
        "HOME": str(tmp_path),  # the app's settings land here, not in the real home
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
    long = tmp_path / "long.toml"  # outlives the test: the signal, not the end, stops it
    long.write_text(presets.load("quadratic").text.replace("steps = 2000", "steps = 100000000"))
    engines: list[int] = []
    app = subprocess.Popen(
        [sys.executable, "-m", "dynlab.cli", "open", str(long), "--start"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: app.poll() is not None or _rows(rec) > 10, timeout=120, interval=0.1)
        assert app.poll() is None, app.communicate()[1][-2000:]
        engines = _children(app.pid)
        assert engines, "the process host should run the engine in a child process"
        app.send_signal(sig)
        _, err = app.communicate(timeout=60)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait(30)
            for p in engines:
                if not _gone(p):
                    os.kill(p, signal.SIGKILL)
    # The conventional status of a process ended by a signal it handled: 128 + the signal.
    assert app.returncode == 128 + sig, err[-2000:]
    assert "leaked semaphore" not in err, err[-2000:]
    try:
        wait_until(lambda: all(_gone(p) for p in engines), timeout=30, interval=0.05)
    finally:  # a failure here must not leave an orphaned engine behind on the test machine
        for p in engines:
            if not _gone(p):
                os.kill(p, signal.SIGKILL)
    with Recording(next(rec.glob("*.h5"))) as r:
        assert r.attrs["status"] == "stopped"
        assert r.rows("train_loss") > 10
