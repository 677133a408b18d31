"""Shared fixtures: condition waits, a small preset, one torch thread, a failing disk, and the
leak guard that fails a test which leaves a thread running or a window open."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

PRESET_TEMPLATE = """
format_version = 1
engine = "{engine}"
title = "t"
summary = "s"
paper = "p"
[run]
steps = {steps}
seed = {seed}
device = "cpu"
[hyperparameters]
{hp}
"""

# Names of threads a test may leave behind: ones a library starts on first use and keeps
# for the life of the process by design. None is needed today (a process-host run closes
# its queues, so multiprocessing's QueueFeederThread ends with the run); add a name here
# only with the reason it cannot be stopped from a test.
ALLOWED_THREADS: tuple[str, ...] = ()
# Seconds a test's new threads get, all together, to finish after it: a worker told to stop
# may still be in its last step on a busy 2-core machine.
THREAD_GRACE_S = 10.0


def _wait_until(cond: Callable[[], object], timeout: float = 60.0, interval: float = 0.002) -> None:
    """Poll ``cond`` until it is true (Qt-free code; Qt tests use ``qtbot.waitUntil``).

    Polls every ``interval`` seconds (2 ms: it returns as soon as the condition holds, never
    after a fixed sleep; a condition that opens a file deserves a longer interval).
    """
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(interval)


@pytest.fixture
def wait_until() -> Callable[..., None]:
    """``wait_until(cond, timeout=60.0, interval=0.002)``: wait for a condition on threads without Qt."""
    return _wait_until


@pytest.fixture
def make_preset() -> Callable[..., object]:
    """``make_preset(engine="quadratic", steps=200, hp="lr = 0.1", seed=3)``: a parsed preset."""
    from dynlab.presets import parse

    def make(engine: str = "quadratic", steps: int = 200, hp: str = "lr = 0.1", seed: int = 3) -> object:
        text = PRESET_TEMPLATE.format(engine=engine, steps=steps, seed=seed, hp=hp)
        return parse(text, path=f"{engine}.toml", name=engine)

    return make


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """The CI box has 2 cores shared with other tests; keep torch from oversubscribing."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def failing_flush(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """``failing_flush(n)``: the recorder's ``n``-th flush fails as on a full disk."""
    from dynlab.recording import Recorder, RecordingError

    def arm(n: int) -> None:
        real = Recorder.flush
        calls = {"n": 0}

        def flaky(self: Recorder) -> None:
            calls["n"] += 1
            if calls["n"] == n:
                raise RecordingError(f"writing {self.path} failed: [Errno 28] No space left on device")
            return real(self)

        monkeypatch.setattr(Recorder, "flush", flaky)

    return arm


def _visible_windows() -> dict[int, object]:
    """Visible top-level widgets, by id; empty (and Qt not imported) for Qt-free tests."""
    widgets = sys.modules.get("PySide6.QtWidgets")
    app = widgets.QApplication.instance() if widgets else None
    if app is None:
        return {}
    return {id(w): w for w in app.topLevelWidgets() if w.isVisible()}


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    """Fail a test that leaves a thread running or a top-level window open (napari-style).

    Autouse fixtures are set up first and torn down last, so this runs after pytest-qt has
    closed the widgets registered with ``qtbot.addWidget``.
    """
    threads_before = set(threading.enumerate())
    windows_before = set(_visible_windows())
    yield
    new = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    deadline = time.monotonic() + THREAD_GRACE_S
    for t in new:
        t.join(max(0.0, deadline - time.monotonic()))
    leaked = [t.name for t in new if t.is_alive() and not t.name.startswith(ALLOWED_THREADS)]
    windows = {k: w for k, w in _visible_windows().items() if k not in windows_before}
    for w in windows.values():  # close them, so the next test starts clean
        w.close()
    assert not leaked, f"test left threads running: {leaked}"
    assert not windows, f"test left windows open: {[type(w).__name__ for w in windows.values()]}"
