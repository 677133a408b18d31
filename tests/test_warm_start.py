"""A warm engine process (started ahead of Start) gives the frames a cold one gives."""

from __future__ import annotations

import numpy as np
import pytest

from dynlab import presets, runner
from dynlab.engines.spec import Event, Frame
from dynlab.runner import Run, prewarm
from dynlab.source import Ready


def _frames(run: Run) -> list[Frame]:
    items = []
    run.start()
    assert run.join(120), "the run ended"
    items.extend(run.drain())
    return [i for i in items if isinstance(i, Frame)]


def _preset():  # noqa: ANN202
    small = {"p": 23, "width": 64}
    return presets.load("grokking-modular").with_overrides(steps=40, device="cpu", hyperparameters=small)


@pytest.mark.slow  # two engine processes: ~12 s on 2 shared cores
def test_a_warm_process_gives_the_same_frames_as_a_cold_one():
    cold = _frames(Run(_preset(), host="process", torch_threads=1, display_queue=1 << 16))
    assert prewarm(1, display_queue=1 << 16)
    assert not prewarm(1, display_queue=1 << 16), "one waits per setting"
    run = Run(_preset(), host="process", torch_threads=1, display_queue=1 << 16)
    warm_proc = runner._WARM[(1, 1 << 16)][0]
    warm = _frames(run)
    assert run._proc is warm_proc, "the run adopted the warm process"
    assert (1, 1 << 16) not in runner._WARM
    assert run.state == "finished" and len(warm) == len(cold) == 40
    for a, b in zip(cold, warm, strict=True):
        assert a.step == b.step and set(a.data) == set(b.data)
        for k in a.data:
            if k != "probe_seconds":  # wall time
                np.testing.assert_array_equal(a.data[k], b.data[k], err_msg=k)


@pytest.mark.slow
def test_a_run_with_other_settings_spawns_its_own_and_leaves_the_warm_one():
    prewarm(1, display_queue=1 << 15)
    waiting = runner._WARM[(1, 1 << 15)][0]
    run = Run(_preset().with_overrides(steps=3), host="process", torch_threads=2, display_queue=1 << 15)
    frames = _frames(run)
    assert len(frames) == 3 and run._proc is not waiting
    assert runner._WARM[(1, 1 << 15)][0] is waiting and waiting.is_alive()
    # It leaves when told (its parent closing, here by hand): no orphan.
    _, commands, _ = runner._take_warm(1, 1 << 15)
    commands.put(("stop",))
    waiting.join(60)
    assert not waiting.is_alive()


def test_ready_and_events_come_from_a_warm_process_too():
    prewarm(1, display_queue=1 << 14)
    run = Run(_preset().with_overrides(steps=5), host="process", torch_threads=1, display_queue=1 << 14)
    run.start()
    assert run.join(120)
    items = run.drain()
    assert isinstance(items[0], Ready) and run.ready
    kinds = [i.kind for i in items if isinstance(i, Event)]
    assert kinds[0] == "start" and kinds[-1] == "end"
