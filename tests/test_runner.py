"""Runner and recording: live sets, pause/step, replay exactness, failures, divergence."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from dynlab.engines.quadratic import Quadratic
from dynlab.engines.spec import EngineSpec, Event, Frame, Param
from dynlab.recording import Recording
from dynlab.runner import Run, run_headless


class Faulty(Quadratic):
    """The quadratic engine, raising at a chosen step or on a chosen live edit."""

    spec = EngineSpec(
        name="test-faulty",
        title="faulty",
        description="raises",
        paper="-",
        params=Quadratic.spec.params
        + (
            Param("fail_at", "int", 10**9, low=0, high=10**9),
            Param("poison", "float", 0.0, low=0, high=10, live=True),
        ),
        streams=Quadratic.spec.streams,
    )

    def train_step(self, step):
        if step == self.params["fail_at"]:
            raise RuntimeError(f"boom at step {step}")
        return super().train_step(step)

    def on_set(self, name, new, old):
        if name == "poison" and new > 5:
            raise ValueError("poison too strong")


def test_headless_run_records_every_step_and_replays_exactly(tmp_path, make_preset):
    path = tmp_path / "r.h5"
    run, items = run_headless(make_preset(steps=150), record=str(path))
    assert run.state == "finished"
    live = [it for it in items if isinstance(it, Frame)]
    assert [f.step for f in live] == list(range(150))
    with Recording(path) as rec:
        replayed = list(rec.frames())
        assert rec.attrs["status"] == "finished"
        assert rec.attrs["engine"] == "quadratic" and rec.attrs["seed"] == 3
        assert "lr = 0.1" in rec.preset_text
    assert len(replayed) == len(live)
    for a, b in zip(live, replayed):
        assert a.step == b.step and set(a.data) == set(b.data)
        for k in a.data:
            np.testing.assert_array_equal(a.data[k], b.data[k])


def test_same_seed_same_numbers_different_seed_different(tmp_path, make_preset):
    def final(seed):
        _, items = run_headless(make_preset(steps=20).with_overrides(seed=seed))
        return [f for f in items if isinstance(f, Frame)][-1].data["train_loss"]

    assert final(1) == final(1)
    assert final(1) != final(2)


def test_live_set_applies_at_next_step_and_is_recorded(tmp_path, make_preset, wait_until):
    path = tmp_path / "r.h5"
    run = Run(make_preset(steps=100), record=str(path), start_paused=True).start()
    got: list = []
    run.single_step(5)
    wait_until(lambda: (got.extend(run.drain()), sum(isinstance(i, Frame) for i in got) == 5)[1])
    run.set("lr", 0.15)
    run.single_step(3)
    wait_until(lambda: (got.extend(run.drain()), sum(isinstance(i, Frame) for i in got) == 8)[1])
    run.close()
    got.extend(run.drain())
    frames = [i for i in got if isinstance(i, Frame)]
    thr = [float(f.data["stability_threshold"]) for f in frames]
    assert thr[:5] == [20.0] * 5 and thr[5:] == pytest.approx([2 / 0.15] * 3)
    sets = [e for e in got if isinstance(e, Event) and e.kind == "set"]
    assert len(sets) == 1 and sets[0].step == 5
    assert sets[0].payload == {"name": "lr", "old": 0.1, "new": 0.15}
    with Recording(path) as rec:
        ev = [e for e in rec.events() if e.kind == "set"]
        assert ev and ev[0].step == 5 and ev[0].payload["new"] == 0.15
        assert rec.attrs["status"] == "stopped"


def test_set_validation_errors_are_clear(make_preset):
    run = Run(make_preset(steps=5), start_paused=True).start()
    try:
        with pytest.raises(ValueError, match="lr = 20.0 is above its maximum 10.0"):
            run.set("lr", 20.0)
        with pytest.raises(ValueError, match="dim cannot be changed while running"):
            run.set("dim", 3)
        with pytest.raises(ValueError, match="no hyperparameter 'lrr' \\(did you mean 'lr'\\?\\)"):
            run.set("lrr", 0.1)
    finally:
        run.close()


def test_pause_resume_stop(tmp_path, make_preset, wait_until):
    run = Run(make_preset(steps=10**7)).start()
    wait_until(lambda: (run.drain(), run.step > 10)[1])
    run.pause()
    wait_until(lambda: (run.drain(), run.state == "paused")[1])
    s = run.step
    run.drain()
    assert run.step == s  # paused: no progress
    run.resume()
    wait_until(lambda: (run.drain(), run.step > s + 10)[1])
    run.close()
    assert run.state == "stopped"


def test_engine_that_raises_fails_cleanly_and_recording_stays_readable(tmp_path, make_preset):
    path = tmp_path / "f.h5"
    run, items = run_headless(make_preset("test-faulty", steps=50, hp="fail_at = 20"), record=str(path))
    assert run.state == "failed"
    failed = [e for e in items if isinstance(e, Event) and e.kind == "failed"]
    assert failed and "boom at step 20" in failed[0].payload["message"]
    assert "Traceback" in failed[0].payload["traceback"]
    with Recording(path) as rec:
        assert rec.attrs["status"] == "failed"
        steps, _ = rec.read("train_loss")
        assert list(steps) == list(range(20))
        assert any(e.kind == "failed" for e in rec.events())


def test_live_edit_that_makes_engine_raise_is_rolled_back_and_run_continues(make_preset, wait_until):
    run = Run(make_preset("test-faulty", steps=10**7), start_paused=True).start()
    got = []
    run.set("poison", 7.0)
    run.single_step(2)
    wait_until(lambda: (got.extend(run.drain()), sum(isinstance(i, Frame) for i in got) == 2)[1])
    run.close()
    refused = [e for e in got if isinstance(e, Event) and e.kind == "refused"]
    assert refused and "poison too strong" in refused[0].payload["message"]
    assert run.params.get("poison", 0.0) == 0.0


def test_divergence_is_caught_at_once_and_recorded(tmp_path, make_preset):
    path = tmp_path / "d.h5"
    run, items = run_headless(make_preset(steps=5000, hp="lr = 0.5"), record=str(path))
    assert run.state == "diverged"
    ev = [e for e in items if isinstance(e, Event) and e.kind == "diverged"]
    assert len(ev) == 1
    frames = [f for f in items if isinstance(f, Frame)]
    assert all(np.isfinite(f.data["train_loss"]) for f in frames)
    assert ev[0].step == frames[-1].step + 1  # caught at the first non-finite loss
    with Recording(path) as rec:
        assert rec.attrs["status"] == "diverged"
        assert [e.step for e in rec.events() if e.kind == "diverged"] == [ev[0].step]


def test_divergence_pauses_when_asked(make_preset, wait_until):
    run = Run(make_preset(steps=5000, hp="lr = 0.5"), on_diverge="pause").start()
    wait_until(lambda: (run.drain(), run.state == "diverged")[1])
    assert run.alive  # waiting for the user, not dead
    run.close()


def test_unwritable_recording_reports_clearly(tmp_path, make_preset):
    bad = tmp_path / "no-such-dir" / "r.h5"
    run, items = run_headless(make_preset(steps=5), record=str(bad))
    assert run.state == "failed"
    msg = [e for e in items if isinstance(e, Event) and e.kind == "failed"][0].payload["message"]
    assert "cannot create recording" in msg and "no-such-dir" in msg


def test_recording_is_self_describing_with_plain_h5py(tmp_path, make_preset):
    path = tmp_path / "r.h5"
    run_headless(make_preset(steps=30), record=str(path))
    with h5py.File(path, "r") as f:
        for key in ("format_version", "engine", "preset", "seed", "device", "dynlab_version", "started_at"):
            assert key in f.attrs, key
        g = f["streams/mode_factor"]
        assert g.attrs["kind"] == "vector"
        assert [x.decode() if isinstance(x, bytes) else x for x in g.attrs["labels"]] == [
            "stiff",
            "middle",
            "flat",
        ]
        assert g["value"].shape == (30, 3) and g["step"][-1] == 29
        assert g.attrs["description"]
        kinds = [k.decode() for k in f["events/kind"][:]]
        assert kinds[0] == "start" and kinds[-1] == "end"


def test_read_by_step_range_and_value_at(tmp_path, make_preset):
    path = tmp_path / "r.h5"
    run_headless(make_preset(steps=100), record=str(path))
    with Recording(path) as rec:
        steps, vals = rec.read("train_loss", 10, 20)
        assert list(steps) == list(range(10, 20)) and vals.shape == (10,)
        assert rec.value_at("train_loss", 55)[0] == 55
        assert rec.value_at("train_loss", 10**6)[0] == 99
        assert rec.step_range() == (0, 99)


@pytest.mark.slow
def test_process_host_matches_thread_host(tmp_path, make_preset):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    run_headless(make_preset(steps=50), record=str(a))
    run, _ = run_headless(make_preset(steps=50), record=str(b), host="process")
    assert run.state == "finished"
    with Recording(a) as ra, Recording(b) as rb:
        for fa, fb in zip(ra.frames(), rb.frames(), strict=True):
            for k in fa.data:
                np.testing.assert_array_equal(fa.data[k], fb.data[k])


def test_player_pushes_the_same_frames_and_events(tmp_path, make_preset, wait_until):
    from dynlab.player import Player

    path = tmp_path / "p.h5"
    run = Run(make_preset(steps=60), record=str(path), start_paused=True).start()
    live = []
    run.single_step(30)
    wait_until(lambda: (live.extend(run.drain()), sum(isinstance(i, Frame) for i in live) == 30)[1])
    run.set("lr", 0.05)
    run.resume()
    run.join(30)
    live.extend(run.drain())
    player = Player(str(path))
    replay = player.step_by(1000)
    lf = [i for i in live if isinstance(i, Frame)]
    rf = [i for i in replay if isinstance(i, Frame)]
    assert [f.step for f in lf] == [f.step for f in rf]
    for a, b in zip(lf, rf):
        np.testing.assert_array_equal(a.data["train_loss"], b.data["train_loss"])
    kinds = [e.kind for e in replay if isinstance(e, Event)]
    assert "set" in kinds and kinds[0] == "start" and kinds[-1] == "end"
    assert player.next_event_step(0) == 30
    back = player.seek(10)
    assert [f.step for f in back if isinstance(f, Frame)] == list(range(11))
    player.play()
    t0 = player._clock
    got = player.advance(t0 + 1.0)
    assert got and all(f.step > 10 for f in got if isinstance(f, Frame))
    player.close()


def test_seek_into_a_long_recording_thins_history_but_keeps_the_cursor_frame(tmp_path):
    from dynlab.player import Player
    from dynlab.recording import Recorder

    path = tmp_path / "long.h5"
    streams = (Quadratic.spec.streams[0],)
    rec = Recorder(path, streams, {"engine": "quadratic"}, flush_interval=1e9)
    n = 100_000
    rec._pending["train_loss"].extend(zip(range(n), np.arange(n, dtype=float)))
    rec.last_step = n - 1
    rec.close("finished")
    p = Player(str(path))
    frames = [f for f in p.seek(77_777) if isinstance(f, Frame)]
    assert len(frames) <= 20_001
    assert frames[-1].step == 77_777 and float(frames[-1].data["train_loss"]) == 77_777.0
    assert frames[0].step == 0
    exact = [f for f in p.step_by(5) if isinstance(f, Frame)]
    assert [f.step for f in exact] == [77_778, 77_779, 77_780, 77_781, 77_782]
    p.close()
