"""What-if branches (issue 21): checkpoints in the recording, restore, determinism for every engine."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from dynlab import branch, checkpoint, presets
from dynlab.engines import state
from dynlab.engines.base import registry
from dynlab.recording import Recording
from dynlab.runner import Run, run_headless

# Engines whose default set-up is heavy on CPU run fewer steps; every engine is covered.
_STEPS = {
    "generalization-dynamics": 2,
    "locality-sample-complexity": 2,
    "edge-of-stability": 2,
    "hessian-outliers": 2,
}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in _STEPS else n for n in sorted(registry())]
)
def test_restored_engine_reproduces_its_frames_exactly(name):
    """Capture after k steps, restore into a fresh engine with another seed: the next frames are equal."""
    torch.set_num_threads(1)
    n = _STEPS.get(name, 3)
    cls = registry()[name]
    a = cls({}, seed=3)
    for _ in range(n):
        a.step()
    arrays, meta = state.capture(a)
    meta = json.loads(state.to_json_text(meta))  # through JSON, as stored
    after_a = [a.step() for _ in range(n)]
    b = cls({}, seed=99)
    b.start()
    state.restore(b, arrays, meta)
    after_b = [b.step() for _ in range(n)]
    for fa, fb in zip(after_a, after_b, strict=True):
        assert fa.step == fb.step
        for key in fa.data:
            if key == "probe_seconds":  # wall time, never reproducible
                continue
            assert np.array_equal(fa.data[key], fb.data[key], equal_nan=True), (name, fa.step, key)


def _parent(tmp_path, steps=60, every=10, sets=None):
    """A recorded quadratic run; ``sets`` maps a step to a live edit applied exactly there."""
    path = str(tmp_path / "parent.h5")
    preset = presets.load("quadratic").with_overrides(steps=steps)
    run = Run(preset, record=path, checkpoint_every=every, start_paused=bool(sets))
    run.start()
    for at, (name, value) in sorted((sets or {}).items()):
        run.single_step(at - run.step)
        _wait(lambda at=at: (run.drain(), run.step == at and run.state == "paused")[1])
        run.set(name, value)
    if sets:
        run.resume()
    while run.alive:
        run.drain()
    run.drain()
    return path


def _wait(cond, timeout=30.0):
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.002)


def _losses(path):
    with Recording(path) as rec:
        steps, vals = rec.read("train_loss")
    return steps, vals


def test_unchanged_branch_equals_parent_and_a_changed_one_differs_only_after(tmp_path):
    parent = _parent(tmp_path)
    with h5py.File(parent, "r") as f:
        assert [c.step for c in checkpoint.index(f)] == [0, 10, 20, 30, 40, 50, 60]
    ps, pv = _losses(parent)
    preset, start = branch.prepare(parent, 25)
    assert start.checkpoint_step == 20
    same = str(tmp_path / "same.h5")
    run_headless(preset, record=same, run_kwargs={"branch": start})
    bs, bv = _losses(same)
    assert bs[0] == 25 and bs[-1] == ps[-1]
    assert np.array_equal(bv, pv[25:]), "an unchanged branch reproduces its parent exactly"
    with h5py.File(same, "r") as f:
        assert f.attrs["parent_recording"] == parent and int(f.attrs["parent_step"]) == 25
    # A changed knob: equal before the branch step (not recorded), different after it.
    preset, start = branch.prepare(parent, 25)
    changed = str(tmp_path / "changed.h5")
    preset = preset.with_overrides()
    run_headless(preset, record=changed, run_kwargs={"branch": start}, commands={0: [("set", "lr", 0.05)]})
    cs, cv = _losses(changed)
    assert cs[0] == 25 and not np.allclose(cv[1:], pv[26:])


def test_parent_edits_before_the_branch_step_are_replayed(tmp_path):
    parent = _parent(tmp_path, sets={15: ("lr", 0.05)})
    with Recording(parent) as rec:
        set_step = next(e.step for e in rec.events() if e.kind == "set")
    ps, pv = _losses(parent)
    at = set_step + 7
    preset, start = branch.prepare(parent, at)
    assert [e[1:] for e in start.edits] == [("lr", 0.05)]
    out = str(tmp_path / "b.h5")
    run_headless(preset, record=out, run_kwargs={"branch": start})
    _, bv = _losses(out)
    assert np.array_equal(bv, pv[at:])


def test_branch_without_checkpoints_reruns_from_zero_and_says_so(tmp_path):
    parent = _parent(tmp_path, every=0)
    with h5py.File(parent, "r") as f:
        assert checkpoint.index(f) == []
    ps, pv = _losses(parent)
    preset, start = branch.prepare(parent, 33)
    assert start.checkpoint_step is None
    out = str(tmp_path / "b.h5")
    _, items = run_headless(preset, record=out, run_kwargs={"branch": start})
    assert any(
        getattr(i, "kind", "") == "info" and "re-running" in i.payload.get("message", "") for i in items
    )
    _, bv = _losses(out)
    assert np.array_equal(bv, pv[33:])


def test_tampered_checkpoint_is_refused_before_anything_runs_and_parent_untouched(tmp_path, monkeypatch):
    parent = _parent(tmp_path)
    with h5py.File(parent, "r+") as f:
        data = f["checkpoints/data"]
        off = int(f["checkpoints/offset"][2])
        data[off + 3] = (int(data[off + 3]) + 1) % 256
    before = open(parent, "rb").read()
    built = []
    monkeypatch.setattr(registry()["quadratic"], "setup", lambda self: built.append(1))
    with pytest.raises(branch.BranchError, match="checksum"):
        branch.prepare(parent, 25)
    assert not built, "nothing from the file was run"
    assert open(parent, "rb").read() == before


def test_branch_errors_are_clear(tmp_path):
    parent = _parent(tmp_path)
    with pytest.raises(branch.BranchError, match="outside the parent"):
        branch.prepare(parent, 10_000)
    with h5py.File(parent, "r+") as f:
        f.attrs["engine"] = "no-such-engine"
    with pytest.raises(branch.BranchError, match="no-such-engine"):
        branch.prepare(parent, 5)
    with h5py.File(parent, "r+") as f:
        f.attrs["engine"] = "quadratic"
        f.attrs["format_version"] = 99
    with pytest.raises(branch.BranchError, match="format"):
        branch.prepare(parent, 5)


def test_checkpoint_holds_no_pickle_only_numeric_arrays(tmp_path):
    parent = _parent(tmp_path)
    with h5py.File(parent, "r") as f:
        assert f["checkpoints/data"].dtype == np.uint8
        idx = json.loads(f["checkpoints/index"][0])
        assert all(d in ("<f8", "<f4", "<i8", "|u1", "<u4", "|b1") for d, *_ in idx["arrays"].values())


def test_cli_branch_records_from_the_step_with_the_edit_and_refuses_bad_calls(tmp_path, capsys):
    from dynlab.cli import main

    parent = _parent(tmp_path)
    out = tmp_path / "b.h5"
    assert (
        main(["run", "--from", parent, "--at", "40", "--set", "lr=0.05", "--record", str(out), "--quiet"])
        == 0
    )
    assert "from the checkpoint at step 40" in capsys.readouterr().err
    with Recording(str(out)) as rec:
        assert rec.step_range("train_loss") == (40, 59)
        sets = [e for e in rec.events() if e.kind == "set"]
        assert [(e.step, e.payload["new"]) for e in sets] == [(40, 0.05)]
    assert main(["run", "--from", parent, "--at", "40", "--set", "dim=3"]) == 2
    assert "not a live hyperparameter" in capsys.readouterr().err
    assert main(["run", "--from", parent, "--at", "40", "--record", parent, "--overwrite"]) == 2
    assert "never modifies its parent" in capsys.readouterr().err
    assert main(["run", "quadratic", "--at", "3"]) == 2
