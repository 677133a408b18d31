"""Ray: engines hosted by Ray actors, and sweeps, on a real two-node cluster on this machine.

One module-scoped cluster (``ray.cluster_utils.Cluster``: a head and a worker node, one CPU
each, loopback only) serves every Ray test and is shut down at the end; the teardown checks
that no Ray process is left behind. The node-loss test removes the worker node, so it runs
after the others that need both nodes. Every test that needs the cluster is marked slow
(starting it takes ~20 s on 2 cores); the rest run in a few seconds.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
import pytest

# A loopback-only cluster needs Ray's single-machine mode, chosen before Ray is imported
# (see dynlab.ray_host.import_ray).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from dynlab import presets  # noqa: E402
from dynlab.cli import main  # noqa: E402
from dynlab.engines.spec import Event, Frame  # noqa: E402
from dynlab.recording import Recording  # noqa: E402
from dynlab.runner import Run  # noqa: E402
from dynlab.sweep import Manifest, SweepError, Trial, _collect, parse_grid, run_sweep  # noqa: E402
from dynlab.sweep_view import Sweep  # noqa: E402
from dynlab.sweepspec import SweepSpecError, parse_seeds  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRIAL_KEYS = {"params", "seed", "recording", "status", "node"}


# ---------------------------------------------------------------------- no cluster needed
def test_seeds_parse_ranges_and_lists():
    assert parse_seeds("0-4") == (0, 1, 2, 3, 4)
    assert parse_seeds("0,3,7") == (0, 3, 7)
    assert parse_seeds([2, 5]) == (2, 5)
    for bad in ("4-0", "a-b", "1,1", "-3", ""):
        with pytest.raises(SweepSpecError):
            parse_seeds(bad)


def test_grid_values_are_checked_against_the_engine():
    preset = presets.load("quadratic")
    assert parse_grid(["lr=0.05,0.1", "dim=4,8"], preset) == {"lr": [0.05, 0.1], "dim": [4, 8]}
    with pytest.raises(ValueError, match="lrr"):
        parse_grid(["lrr=0.1"], preset)
    with pytest.raises(ValueError, match="lr"):
        parse_grid(["lr=-1"], preset)
    with pytest.raises(SweepError, match="NAME=V1"):
        parse_grid(["lr"], preset)


def test_preset_sweep_table_is_validated(tmp_path):
    text = (ROOT / "presets" / "quadratic.toml").read_text()
    good = (
        text
        + '\n[sweep]\nseeds = "0-1"\n[sweep.grid]\nlr = [0.1, 0.3]\n[[sweep.summaries]]\nname = "divergence"\nevent = "diverged"\n'
    )
    p = presets.parse(good, path="q.toml")
    assert p.sweep.grid == {"lr": (0.1, 0.3)} and p.sweep.seeds == (0, 1)
    assert p.sweep.summaries[0].event_kind == "diverged"
    assert p.with_overrides(seed=3).sweep == p.sweep
    for edit, expected in (
        ("lrr = [0.1]", "sweep.grid.lrr: unknown hyperparameter"),
        ('lr = ["x"]', "sweep.grid.lr"),
    ):
        bad = text + f"\n[sweep]\n[sweep.grid]\n{edit}\n"
        with pytest.raises(presets.PresetError, match=expected):
            presets.parse(bad, path="q.toml")
    both = text + '\n[sweep]\n[[sweep.summaries]]\nname = "x"\nstream = "train_loss"\nevent = "diverged"\n'
    with pytest.raises(presets.PresetError, match=r"sweep.summaries\[0\]: expected exactly one"):
        presets.parse(both, path="q.toml")
    nostream = text + '\n[sweep]\n[[sweep.summaries]]\nname = "x"\nstream = "sharpnes"\n'
    with pytest.raises(presets.PresetError, match="did you mean 'sharpness'"):
        presets.parse(nostream, path="q.toml")


def test_sweep_presets_declare_their_phase_diagrams():
    grok = presets.load("grokking-scaling").sweep
    assert list(grok.grid) == ["train_fraction", "weight_decay"]
    epoch = grok.summaries[0]
    assert (epoch.event, epoch.never, epoch.boundary) == (
        "phase:generalisation",
        "never",
        "critical_fraction",
    )
    eos = presets.load("edge-of-stability-sweep").sweep
    assert list(eos.grid) == ["lr"] and eos.summaries[0].reference == "stability_threshold"


def test_a_ray_run_not_yet_started_drains_nothing():
    run = Run(presets.load("quadratic"), host="ray")
    assert run.drain() == [] and not run.alive  # a UI timer may drain before start()
    assert run.close().stopped


def test_host_ray_without_ray_says_how_to_install(tmp_path):
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'ray':
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
from dynlab.cli import main
a = main(['run', 'quadratic', '--steps', '5', '--host', 'ray', '--quiet'])
b = main(['sweep', 'quadratic', '--grid', 'lr=0.1,0.2', '--out', 'sw', '--quiet'])
sys.exit(10 * a + b)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 22, out.stderr
    assert out.stderr.count("pip install 'dynlab-desktop[ray]'") == 2


def test_app_host_choice_offers_ray_and_remembers_it(qtbot, tmp_path, monkeypatch):
    from PySide6 import QtCore

    from dynlab.ui.main_window import MainWindow

    monkeypatch.delenv("DYNLAB_HOST", raising=False)
    settings = QtCore.QSettings(str(tmp_path / "settings.ini"), QtCore.QSettings.Format.IniFormat)
    win = MainWindow(host="process", settings=settings)
    qtbot.addWidget(win)
    menu = next(a.menu() for a in win.menuBar().actions() if a.text() == "&Run")
    hosts = next(a.menu() for a in menu.actions() if a.text() == "Engine &host")
    choices = {a.data(): a for a in hosts.actions()}
    assert set(choices) == {"thread", "process", "ray"} and choices["process"].isChecked()
    choices["ray"].trigger()
    assert win.workspace.host == "ray" and settings.value("run/host") == "ray"
    again = MainWindow(settings=settings)
    qtbot.addWidget(again)
    assert again.workspace.host == "ray"


def test_band_view_fills_one_sd_around_the_mean(qtbot):
    from PySide6 import QtCore

    from dynlab.sweep_view import Band
    from dynlab.views.band import BandView

    steps = np.arange(100)
    seeds = (("seed 0", steps, np.full(100, 1.0)), ("seed 1", steps, np.full(100, 3.0)))
    band = Band("lr=0.1", steps, np.full(100, 2.0), np.full(100, np.sqrt(2.0)), np.full(100, 2), seeds)
    view = BandView()
    qtbot.addWidget(view)
    view.resize(500, 400)
    view.set_bands([band], y_label="loss")
    view.item.setRange(xRange=(0, 99), yRange=(-2, 6), padding=0)
    view.show()
    qtbot.waitExposed(view)
    image = view.plot.grab().toImage()
    vb = view.item.getViewBox()

    def pixel(x: float, y: float) -> str:
        p = view.plot.mapFromScene(vb.mapViewToScene(QtCore.QPointF(x, y)))
        return image.pixelColor(p.x(), p.y()).name()

    assert pixel(50, 2.0 + 0.7) == pixel(50, 2.0 - 0.7) != "#ffffff"  # inside mean ± 1 s.d.
    assert pixel(50, 2.0 + 2.5) == pixel(50, 2.0 - 2.5) == "#ffffff"  # outside the band
    assert not any(c.isVisible() for c in view._seed_curves)


# ---------------------------------------------------------------------- the cluster
def _ray_children() -> list[str]:
    """Ray's processes among this process's descendants (raylets, GCS, agents, workers)."""
    import psutil

    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
            if p.status() != psutil.STATUS_ZOMBIE and "ray" in cmd.lower():
                out.append(cmd[:100])
        except psutil.Error:
            pass
    return out


@pytest.fixture(scope="module")
def cluster():
    """A head and a worker node (1 CPU each) on loopback; shut down and checked for leftovers."""
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1"},
    )
    c.worker = c.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    ray.init(address=c.address, log_to_driver=False, logging_level=logging.WARNING)
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()
    deadline = time.monotonic() + 30
    while _ray_children() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _ray_children(), f"Ray processes left behind: {_ray_children()}"


def _node_ids() -> set[str]:
    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


def _collect_run(run: Run) -> list[Frame | Event]:
    run.start()
    items = []
    while run.alive:
        items += [i for i in run.drain() if isinstance(i, (Frame, Event))]
        time.sleep(0.005)
    items += [i for i in run.drain() if isinstance(i, (Frame, Event))]
    run.close()
    return items


def _same_frames(a: list, b: list) -> None:
    fa, fb = [i for i in a if isinstance(i, Frame)], [i for i in b if isinstance(i, Frame)]
    assert len(fa) == len(fb) > 0
    for x, y in zip(fa, fb):
        assert x.step == y.step and set(x.data) == set(y.data)
        for k in set(x.data) - {"probe_seconds"}:  # the probes' wall time differs between any two runs
            np.testing.assert_array_equal(x.data[k], y.data[k], err_msg=f"{k} at step {x.step}")
    ea = [(e.step, e.kind) for e in a if isinstance(e, Event)]
    eb = [(e.step, e.kind) for e in b if isinstance(e, Event)]
    assert ea == eb


def _same_recordings(p: Path, q: Path) -> None:
    """Two recordings of the same run hold the same rows, events and run metadata."""
    with Recording(p) as a, Recording(q) as b:
        assert a.streams.keys() == b.streams.keys()
        for name in a.streams:
            sa, va = a.read(name)
            sb, vb = b.read(name)
            np.testing.assert_array_equal(sa, sb)
            if name != "probe_seconds":
                np.testing.assert_array_equal(va, vb, err_msg=name)
        assert [(e.step, e.kind, e.payload) for e in a.events()] == [
            (e.step, e.kind, e.payload) for e in b.events()
        ]
        for key in (
            "engine",
            "engine_version",
            "preset",
            "preset_name",
            "seed",
            "device",
            "hyperparameters",
            "status",
            "last_step",
            "steps_planned",
        ):
            assert a.attrs[key] == b.attrs[key], key


@pytest.mark.slow
def test_ray_hosted_run_equals_thread_hosted(cluster, tmp_path):
    for name, overrides in (
        ("quadratic", {"steps": 300}),
        ("grokking-modular", {"steps": 40, "hyperparameters": {"p": 23, "width": 64, "train_fraction": 0.5}}),
    ):
        preset = presets.load(name).with_overrides(seed=3, **overrides)
        on_ray = Run(preset, host="ray", record=str(tmp_path / f"{name}-ray.h5"), torch_threads=1)
        assert type(on_ray).__name__ == "RayRun"
        ray_items = _collect_run(on_ray)
        assert on_ray.node in _node_ids() and on_ray.state == "finished"
        thread_items = _collect_run(
            Run(preset, host="thread", record=str(tmp_path / f"{name}-thread.h5"), torch_threads=1)
        )
        _same_frames(ray_items, thread_items)
        _same_recordings(tmp_path / f"{name}-ray.h5", tmp_path / f"{name}-thread.h5")


@pytest.mark.slow
def test_ray_run_takes_pause_step_set_and_stop(cluster, tmp_path):
    preset = presets.load("quadratic").with_overrides(steps=10**6)
    run = Run(preset, host="ray", record=str(tmp_path / "steered.h5"), start_paused=True)
    run.start()
    items = []

    def until(cond):
        deadline = time.monotonic() + 60
        while not cond():
            items.extend(run.drain())
            assert time.monotonic() < deadline, f"timed out in state {run.state} at step {run.step}"
            time.sleep(0.01)

    until(lambda: run.ready and run.state == "paused")
    run.single_step(5)
    until(lambda: run.step == 5)
    assert run.set("lr", 0.05) == 0.05
    run.resume()
    until(lambda: run.step > 50)
    run.stop()
    until(lambda: not run.alive)
    run.close()
    sets = [i for i in items if isinstance(i, Event) and i.kind == "set"]
    assert sets and sets[0].step == 5 and sets[0].payload["new"] == 0.05
    with Recording(tmp_path / "steered.h5") as rec:
        assert rec.attrs["status"] == "stopped"
        steps, _ = rec.read("train_loss")
        assert steps[0] == 0 and np.all(np.diff(steps) == 1) and steps[-1] >= 50
        # (the "info" event says how often checkpoints are taken)
        assert [e.kind for e in rec.events() if e.kind != "info"][:3] == ["start", "set", "resume"]
        assert [c["step"] for c in _checkpoint_steps(rec)][:1] == [0], (
            "the actor's checkpoints reach the file"
        )


def _checkpoint_steps(rec: Recording) -> list[dict]:
    from dynlab import checkpoint

    return [{"step": c.step} for c in checkpoint.index(rec._f)]


@pytest.mark.slow
def test_gpu_is_asked_for_only_when_the_cluster_has_one(cluster):
    from dynlab.ray_host import RayUnavailable, wants_gpu

    assert ray.cluster_resources().get("GPU", 0) == 0  # this test cluster is CPU-only
    assert not wants_gpu("cpu") and not wants_gpu("auto")
    with pytest.raises(RayUnavailable, match="asks for a GPU, but the Ray cluster has none"):
        wants_gpu("cuda")
    # A run that asks for CUDA fails with that reason, as an event, and the caller goes on.
    run = Run(presets.load("quadratic").with_overrides(device="cuda"), host="ray")
    run.start()
    items = run.drain()
    assert not run.alive and run.state == "failed" and "has none" in run.message
    assert [i.kind for i in items if isinstance(i, Event)] == ["failed"]
    run.close()


@pytest.mark.slow
def test_cli_run_on_ray_records_on_the_users_side(cluster, tmp_path):
    out = tmp_path / "r.h5"
    assert main(["run", "quadratic", "--steps", "30", "--host", "ray", "--record", str(out), "--quiet"]) == 0
    with Recording(out) as rec:
        assert rec.rows("train_loss") == 30 and rec.attrs["status"] == "finished"


@pytest.fixture(scope="module")
def swept(cluster, tmp_path_factory):
    """A 1-D sweep of the quadratic preset: lr × seeds 0-1, two trials at a time."""
    folder = tmp_path_factory.mktemp("sweep") / "lr"
    preset = presets.load("quadratic")
    manifest = run_sweep(preset, {"lr": [0.05, 0.1]}, [0, 1], folder, steps=150, max_parallel=2)
    return folder, manifest


@pytest.mark.slow
def test_sweep_trials_land_on_both_nodes(swept):
    folder, manifest = swept
    data = json.loads((folder / "sweep.json").read_text())
    assert {"preset", "grid", "seeds", "trials"} <= set(data)
    assert data["preset"] == "quadratic" and data["grid"] == {"lr": [0.05, 0.1]} and data["seeds"] == [0, 1]
    assert all(TRIAL_KEYS <= set(t) for t in data["trials"])
    assert all(t["status"] == "finished" and not Path(t["recording"]).is_absolute() for t in data["trials"])
    assert {t["node"] for t in data["trials"]} == _node_ids()  # both nodes ran trials
    for t in data["trials"]:
        with Recording(folder / t["recording"]) as rec:
            assert rec.rows("train_loss") == 150 and rec.attrs["seed"] == t["seed"]


@pytest.mark.slow
def test_trial_recording_equals_dynlab_run_alone(swept, tmp_path):
    folder, manifest = swept
    trial = next(t for t in manifest.trials if t.seed == 1 and t.params == {"lr": 0.1})
    alone = tmp_path / "alone.h5"
    argv = [
        "run",
        "quadratic",
        "--seed",
        "1",
        "--set",
        "lr=0.1",
        "--steps",
        "150",
        "--record",
        str(alone),
        "--quiet",
    ]
    assert main(argv) == 0
    _same_recordings(folder / trial.recording, alone)


@pytest.mark.slow
def test_sweep_reader_bands_and_line_phase(swept, qtbot, tmp_path):
    folder, _ = swept
    sweep = Sweep(folder)
    bands = sweep.bands("train_loss")
    assert [b.label for b in bands] == ["lr=0.05", "lr=0.1"]
    per_seed = [v for _, _, v in bands[1].seeds]
    np.testing.assert_allclose(bands[1].mean, np.mean(per_seed, axis=0))
    np.testing.assert_allclose(bands[1].sd, np.std(per_seed, axis=0, ddof=1))
    assert np.all(bands[1].n == 2)
    summary = sweep.final_value_summary("train_loss")
    ph = sweep.phase(summary)
    assert ph.x_name == "lr" and ph.y_name == "" and list(ph.total) == [2, 2]
    finals = [sweep.value(t, summary) for t in sweep.trials({"lr": 0.1})]
    assert ph.mean[1] == pytest.approx(np.mean(finals))

    from dynlab.ui.sweep import SweepPage

    page = SweepPage(Sweep(folder))
    qtbot.addWidget(page)
    page.show_stream("train_loss")
    assert len(page.bands.bands) == 2
    page.bands.set_show_seeds(True)
    assert all(c.isVisible() for c in page.bands._seed_curves)

    # `dynlab open DIR` (and File -> Open sweep...) on a sweep folder shows this page.
    from PySide6 import QtCore

    from dynlab.ui.main_window import MainWindow

    settings = QtCore.QSettings(str(tmp_path / "settings.ini"), QtCore.QSettings.Format.IniFormat)
    win = MainWindow(host="thread", settings=settings)
    qtbot.addWidget(win)
    assert win.open_preset(str(folder))
    assert win.pages.currentWidget() is win.sweep_page
    assert win.sweep_page.summary_box.count() >= 1
    assert not win.open_sweep(str(tmp_path))  # not a sweep: a dialog, and the app stays up


@pytest.mark.slow
def test_event_summary_heatmap_says_never(cluster, tmp_path, qtbot):
    """lr 0.3 diverges on the quadratic when λ_max = 10 (2/λ = 0.2), never when λ_max = 5."""
    folder = tmp_path / "div"
    preset = presets.load("quadratic")
    grid = {"lr": [0.1, 0.3], "lambda_max": [5.0, 10.0]}
    manifest = run_sweep(preset, grid, [0], folder, steps=700, max_parallel=2)
    status = {(t.params["lr"], t.params["lambda_max"]): t.status for t in manifest.trials}
    assert status == {
        (0.1, 5.0): "finished",
        (0.1, 10.0): "finished",
        (0.3, 5.0): "finished",
        (0.3, 10.0): "diverged",
    }
    from dynlab.sweepspec import Summary

    divergence = Summary(name="step of divergence", event="diverged", never="stable")
    ph = Sweep(folder).phase(divergence)
    assert ph.mean.shape == (2, 2) and ph.fired.tolist() == [[0, 0], [0, 1]]
    assert 0 < ph.mean[1, 1] < 700

    from dynlab.views.phase import PhaseView

    view = PhaseView()
    qtbot.addWidget(view)
    view.set_grid(
        "lr",
        ph.xs,
        "lambda_max",
        ph.ys,
        ph.mean,
        ph.sd,
        ph.fired,
        ph.total,
        value_label="step",
        never="stable",
    )
    assert view.cell_text[(0, 0)] == "stable" and view.cell_text[(1, 1)] == f"{ph.mean[1, 1]:.0f}"


@pytest.mark.slow
def test_ctrl_c_keeps_what_finished_and_resume_runs_only_the_rest(cluster, tmp_path):
    folder = tmp_path / "cut"
    preset = presets.load("quadratic")
    grid = {"lr": [0.02, 0.05, 0.1, 0.15]}

    def interrupt_after_first(manifest, _started):
        if manifest.counts()["finished"] >= 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(preset, grid, [0], folder, steps=150, max_parallel=1, progress=interrupt_after_first)
    cut = Manifest.load(folder)
    kept = {
        t.recording: (folder / t.recording).stat().st_mtime_ns for t in cut.trials if t.status == "finished"
    }
    assert len(kept) >= 1 and all(t.status in ("finished", "cancelled", "pending") for t in cut.trials)
    assert [t.status for t in cut.trials].count("cancelled") == 1  # the one in flight
    assert not list(folder.glob(".*.part"))

    with pytest.raises(SweepError, match="--resume"):
        run_sweep(preset, grid, [0], folder, steps=150)
    with pytest.raises(SweepError, match="grid"):
        run_sweep(preset, {"lr": [0.3]}, [0], folder, steps=150, resume=True)

    # Through the CLI: the grid and seeds come from the folder's manifest.
    assert main(["sweep", "quadratic", "--steps", "150", "--out", str(folder), "--resume", "--quiet"]) == 0
    done = Manifest.load(folder)
    assert all(t.status == "finished" for t in done.trials)
    assert {
        t.recording: (folder / t.recording).stat().st_mtime_ns for t in done.trials if t.recording in kept
    } == kept
    assert all(t.attempts == 1 for t in done.trials)


@pytest.mark.slow
def test_a_trial_that_raises_is_retried_once_then_failed(cluster, tmp_path):
    @ray.remote(num_cpus=1, max_retries=0)
    def raises():
        raise RuntimeError("engine exploded")

    trial, todo = Trial({"lr": 0.1}, 0, "t.h5", status="running", attempts=1), deque()
    _collect(ray, raises.remote(), trial, None, tmp_path, todo)
    assert trial.status == "pending" and list(todo) == [trial]
    trial.attempts = 2
    _collect(ray, raises.remote(), trial, None, tmp_path, todo)
    assert trial.status == "failed" and "engine exploded" in trial.error


@pytest.mark.slow
def test_losing_a_node_mid_sweep_retries_its_trials_on_the_other(cluster, tmp_path):
    """Runs last: it removes the cluster's worker node while both nodes run a trial."""
    folder = tmp_path / "lost"
    preset = presets.load("quadratic")
    head = cluster.head_node.node_id
    state = {"removed": False, "busy_since": None}

    def remove_worker_when_busy(manifest, _started):
        if state["removed"]:
            return
        if ray.available_resources().get("CPU", 0) > 0:  # a trial is not leased yet
            state["busy_since"] = None
            return
        state["busy_since"] = state["busy_since"] or time.monotonic()
        if time.monotonic() - state["busy_since"] > 1.0:
            cluster.remove_node(cluster.worker)
            state["removed"] = True

    manifest = run_sweep(
        preset,
        {"lr": [0.05, 0.1, 0.15]},
        [0],
        folder,
        steps=15000,
        max_parallel=2,
        progress=remove_worker_when_busy,
    )
    assert state["removed"]
    assert all(t.status == "finished" for t in manifest.trials), [
        (t.status, t.error) for t in manifest.trials
    ]
    assert all(t.node == head for t in manifest.trials)
    assert max(t.attempts for t in manifest.trials) == 2  # the trial on the lost node ran again
    for t in manifest.trials:
        with Recording(folder / t.recording) as rec:
            assert rec.rows("train_loss") == 15000 and rec.attrs["status"] == "finished"


@pytest.mark.slow
def test_copy_of_sweep_folder_is_still_a_sweep(swept, tmp_path):
    folder, _ = swept
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert len(Sweep(copy).trials()) == 4
