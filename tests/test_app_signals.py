"""Ctrl+C and SIGTERM close the app cleanly (issue 17, item 15): the run stops, the
recording is closed with its final status, and no semaphore leaks from the engine's process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

pytest.importorskip("pytestqt")

from dynlab.recording import Recording  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_closes_the_app_and_its_recording(tmp_path, signum):
    rec_dir = tmp_path / "rec"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", DYNLAB_RECORDINGS=str(rec_dir), DYNLAB_HOST="process")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")  # settings of this test only
    proc = subprocess.Popen(
        [sys.executable, "-m", "dynlab.ui.app", "--open", "quadratic", "--start"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The recording exists once the engine process runs; wait for it (no sleeps in the test's logic).
        deadline_polls = 1200
        while not list(rec_dir.glob("*.h5")) and proc.poll() is None and deadline_polls:
            deadline_polls -= 1
            try:
                proc.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                pass
        assert proc.poll() is None, proc.communicate()[1]
        assert list(rec_dir.glob("*.h5")), "the run never started"
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode in (0, 128 + signum), err
    assert "leaked semaphore" not in err and "Traceback" not in err, err
    (path,) = rec_dir.glob("*.h5")
    with Recording(path) as rec:
        assert rec.attrs["status"] != "recording"  # closed with its final status
