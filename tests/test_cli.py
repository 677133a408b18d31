"""The `dynlab` command: listing, headless runs, inspection, and errors as one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from dynlab.cli import main

ROOT = Path(__file__).resolve().parents[1]


def dynlab(*args, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "dynlab.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_presets_lists_titles(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "quadratic" in out and "Gradient descent on a quadratic" in out


def test_run_records_and_inspect_describes(tmp_path, capsys):
    path = tmp_path / "r.h5"
    assert (
        main(["run", "quadratic", "--steps", "40", "--record", str(path), "--set", "lr=0.05", "--quiet"]) == 0
    )
    out = capsys.readouterr().out
    assert "train_loss @ 39" in out
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "engine   quadratic" in out and "train_loss" in out and "steps 0..39" in out and "lr=0.05" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "nosuchpreset"], "no preset named 'nosuchpreset'"),
        (["run", "/nonexistent/x.toml"], "/nonexistent/x.toml: no such preset file"),
        (["run", "quadratic", "--set", "lrr=0.1"], "no hyperparameter 'lrr' (did you mean 'lr'?)"),
        (["run", "quadratic", "--set", "lr=abc"], "--set lr: lr: cannot read 'abc' as float"),
        (["run", "quadratic", "--set", "lr=99"], "lr = 99.0 is above its maximum 10.0"),
        (["run", "quadratic", "--set", "lr"], "--set 'lr': expected NAME=VALUE"),
        (["run", "quadratic", "--steps", "0"], "--steps must be at least 1"),
        (["inspect", "/nonexistent.h5"], "/nonexistent.h5: no such file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dynlab: error: ") and message in err
    assert "\n" not in err and "Traceback" not in err


def test_bad_recordings(tmp_path, capsys):
    text = tmp_path / "t.h5"
    text.write_text("hello")
    assert main(["inspect", str(text)]) == 2
    assert "not an HDF5 file" in capsys.readouterr().err
    other = tmp_path / "o.h5"
    with h5py.File(other, "w") as f:
        f["x"] = [1, 2]
    assert main(["inspect", str(other)]) == 2
    assert "not a dynlab recording" in capsys.readouterr().err
    good = tmp_path / "g.h5"
    assert main(["run", "quadratic", "--steps", "5", "--record", str(good), "--quiet"]) == 0
    with h5py.File(good, "r+") as f:
        f.attrs["format_version"] = 99
    assert main(["inspect", str(good)]) == 2
    assert "newer than this dynlab reads" in capsys.readouterr().err
    trunc = tmp_path / "tr.h5"
    assert main(["run", "quadratic", "--steps", "300", "--record", str(trunc), "--quiet"]) == 0
    data = trunc.read_bytes()
    trunc.write_bytes(data[: len(data) // 2])
    assert main(["inspect", str(trunc)]) == 2
    err = capsys.readouterr().err
    assert "truncated or corrupt" in err and "Traceback" not in err


def test_divergence_exits_nonzero_naming_the_step(capsys):
    assert main(["run", "quadratic", "--steps", "3000", "--set", "lr=0.5", "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "diverged at step" in err and "train_loss is not finite" in err


def test_debug_shows_traceback():
    out = dynlab("--debug", "run", "nosuchpreset")
    assert out.returncode != 0 and "Traceback" in out.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_sigterm_close_the_recording_cleanly(tmp_path, sig):
    path = tmp_path / "s.h5"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dynlab.cli",
            "run",
            "quadratic",
            "--steps",
            "100000000",
            "--record",
            str(path),
            "--quiet",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_rows(path, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "recording closed" in err
    with h5py.File(path, "r") as f:
        assert f.attrs["status"] == "stopped"
        assert f["streams/train_loss/step"].shape[0] > 0


def test_sigkill_loses_at_most_the_last_flush_interval(tmp_path):
    from dynlab.recording import Recording

    path = tmp_path / "k.h5"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dynlab.cli",
            "run",
            "quadratic",
            "--steps",
            "100000000",
            "--record",
            str(path),
            "--quiet",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for_rows(path, proc, rows=2000)
    proc.kill()
    proc.wait(30)
    with Recording(path) as rec:  # readable, status says it never closed
        assert rec.attrs["status"] == "recording"
        steps, values = rec.read("train_loss")
        assert len(steps) >= 2000 and list(steps[:5]) == [0, 1, 2, 3, 4]
    assert main(["inspect", str(path)]) == 0


def _wait_for_rows(path, proc, rows=1, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "dynlab exited early"
        if path.exists():
            try:
                with h5py.File(path, "r", libver="latest", swmr=True) as f:
                    if f["streams/train_loss/step"].shape[0] >= rows:
                        return
            except (OSError, KeyError):
                pass
        time.sleep(0.05)
    raise TimeoutError("no rows recorded")


def test_install_desktop_from_package_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert main(["install-desktop"]) == 0
    desktop = tmp_path / "applications" / "dynlab.desktop"
    text = desktop.read_text()
    assert "[Desktop Entry]" in text and "Exec=" in text and "@EXEC@" not in text and "Icon=dynlab" in text
    assert (tmp_path / "icons/hicolor/scalable/apps/dynlab.svg").read_text().lstrip().startswith("<")
    assert main(["install-desktop", "--uninstall"]) == 0
    assert not desktop.exists()


# ----------------------------------------------------------------------------- issue 16
# A step that never returns, injected into the real quadratic engine of a real `dynlab run`
# (both hosts) by a sitecustomize that wraps the engine module when it is first imported.
HANG_HOOK = """
import importlib.abc, importlib.util, os, sys, threading

AT = int(os.environ["DYNLAB_TEST_HANG_AT"])


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "dynlab.engines.quadratic":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            step = module.Quadratic.train_step

            def train_step(self, t):
                if t >= AT:
                    threading.Event().wait()  # hung: never returns
                return step(self, t)

            module.Quadratic.train_step = train_step

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _Hook())
"""


def _hung_run(tmp_path, host, hang_at=5):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HANG_HOOK)
    path = tmp_path / "hung.h5"
    env = {**os.environ, "PYTHONPATH": f"{hook}{os.pathsep}{ROOT}", "DYNLAB_TEST_HANG_AT": str(hang_at)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dynlab.cli", "run", "quadratic", "--steps", "100000", "--record", str(path)]
        + ["--quiet", "--host", host],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, path


@pytest.mark.parametrize("host", ["thread", "process"])
@pytest.mark.parametrize("how", ["second-ctrl-c", "sigterm"])
def test_a_hung_engine_step_ends_on_a_second_ctrl_c_or_sigterm_with_the_file_closed(tmp_path, host, how):
    """Issue 16 item 3: the run ends within seconds, the file is final and readable by plain h5py."""
    proc, path = _hung_run(tmp_path, host)
    try:
        deadline = time.monotonic() + 120
        while not path.exists():  # the recorder exists once the engine is built
            assert proc.poll() is None and time.monotonic() < deadline, "dynlab did not start"
            time.sleep(0.05)
        time.sleep(2.0)  # five quick steps later the engine is stuck at step 5
        if how == "second-ctrl-c":
            proc.send_signal(signal.SIGINT)
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)  # TERM_GRACE (3 s) + closing, far below this
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "ended by force" in err
    with h5py.File(path, "r") as f:  # a plain (non-SWMR) open: no writer flags left
        assert f.attrs["status"] == "interrupted"
        n = f["streams/train_loss/step"].shape[0]
        assert f["streams/train_loss/value"].shape[0] == n
    assert not Path(f"{path}.lock").exists()
    if host == "thread":
        # The 5 rows the worker held when it hung are written by the forced close.
        assert n == 5
        assert f"recorded to {path} (interrupted)" in out


def test_replay_of_a_bad_file_is_one_line_without_opening_the_app(tmp_path, capsys, monkeypatch):
    import dynlab.cli as cli

    monkeypatch.setattr(cli, "gui_main", lambda argv: pytest.fail("the app was started"))
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f.attrs["format_version"] = "\x1b[2Jabc"
        f.create_group("streams")
    assert main(["replay", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "format_version is '\\x1b[2Jabc', expected one integer" in err and "\x1b" not in err
