"""dynlab.watch: watching changes nothing, probes are right, the channel is private, the CLI steers."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

import dynlab
from dynlab import cli
from dynlab.engines.spec import SpecError
from dynlab.presets import parse
from dynlab.recording import Recording
from dynlab.source import Source
from dynlab.watching import channel, wire
from dynlab.watching.attached import WatchedSource
from dynlab.watching.channel import AccessDenied, ChannelError, Connection, session_infos

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "watch_digits.py"


@pytest.fixture(autouse=True)
def private_runtime(monkeypatch, tmp_path):
    """Sessions of this test live in their own short runtime folder (Unix socket paths are short)."""
    run = tempfile.mkdtemp(prefix="dlw", dir="/tmp")
    monkeypatch.setenv("XDG_RUNTIME_DIR", run)
    monkeypatch.setenv("DYNLAB_RECORDINGS", str(tmp_path / "recordings"))
    monkeypatch.delenv("DYNLAB_WATCH_TRANSPORT", raising=False)
    yield Path(run)
    shutil.rmtree(run, ignore_errors=True)


def wait_for(cond, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)  # polling another process: there is no signal to wait on
    raise AssertionError(f"timed out waiting for {what}")


# --------------------------------------------------------------------------- a user's model
def make_model(classes: int = 3) -> nn.Module:
    return nn.Sequential(
        nn.Linear(8, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Dropout(0.2),  # draws from the global RNG in train mode: probes must put it back
        nn.Linear(16, 12, bias=False),
        nn.LayerNorm(12),
        nn.ReLU(),
        nn.Linear(12, classes),
    )


def data(n: int = 96, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    return torch.randn(n, 8, generator=g), torch.arange(n) % classes


def train(steps: int, watch_kwargs: dict | None, record: Path | None = None):
    """Train the same way with or without watching; return everything that could differ."""
    torch.manual_seed(0)
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    crit = nn.CrossEntropyLoss()
    x, y = data()
    lab = None
    if watch_kwargs is not None:
        lab = dynlab.watch(model, opt, name="bitwise", record=record or False, loss_fn=crit, **watch_kwargs)
        lab.probe("noise", lambda: torch.randn(3).sum(), every=2)  # a user probe that draws random numbers
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (32,))  # the global RNG picks the batch
        out = model(x[idx])
        loss = crit(out, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if lab is not None:
            lab.step(loss=loss, accuracy=(out.argmax(1) == y[idx]).float().mean())
    if lab is not None:
        lab.close()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    momentum = [opt.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    return state, grads, momentum, torch.get_rng_state(), model.training


def test_watching_with_every_probe_changes_nothing_bit_for_bit(tmp_path):
    x, y = data()
    every = {
        "probe_batch": (x[:48], y[:48]),
        "probes": {
            "hessian_top": {"every": 1, "k": 2},
            "hessian_trace": {"every": 2, "samples": 4},
            "hessian_density": {"every": 3, "vectors": 1, "lanczos_steps": 6, "bins": 8},
            "neural_collapse": 2,
            "equivariance_error": 2,
        },
        "transforms": {"negate": (lambda t: -t, lambda t: t)},
    }
    bare = train(7, None)
    watched = train(7, every, record=tmp_path / "w.h5")
    for key in bare[0]:  # weights and BatchNorm running statistics (and num_batches_tracked)
        assert torch.equal(bare[0][key], watched[0][key]), key
    assert any("running_mean" in k for k in bare[0])
    assert all(torch.equal(a, b) for a, b in zip(bare[1], watched[1]))  # gradients
    assert all(torch.equal(a, b) for a, b in zip(bare[2], watched[2]))  # optimizer state
    assert torch.equal(bare[3], watched[3])  # the global RNG
    assert bare[4] and watched[4]  # the model's mode
    with Recording(tmp_path / "w.h5") as rec:  # ... and every probe did run
        rows = {n: rec.rows(n) for n in rec.streams}
        assert rows["hessian_top"] == 7 and rows["hessian_trace"] == 4 and rows["hessian_density"] == 3
        assert rows["neural_collapse"] == 4 and rows["equivariance_error"] == 4 and rows["noise"] == 4
        assert not [e for e in rec.events() if e.kind == "warning"]
        _, eq = rec.read("equivariance_error")
        assert np.all(eq > 0)  # the network is not odd: the negation is really measured


def test_hessian_top_matches_dense_eigendecomposition(tmp_path):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3)).double()
    x = torch.randn(24, 3, dtype=torch.float64)
    y = torch.arange(24) % 3
    crit = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    probes = {"hessian_top": {"every": 1, "k": 4, "tol": 1e-10}}
    dense_top = []
    with dynlab.watch(
        model, opt, record=tmp_path / "h.h5", loss_fn=crit, probe_batch=(x, y), probes=probes
    ) as lab:
        for _ in range(3):
            loss = crit(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            lab.step(loss=loss)
            # The dense Hessian of the same loss at the same weights (BatchNorm in train mode).
            names = [n for n, _ in model.named_parameters()]
            shapes = [p.shape for p in model.parameters()]
            flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
            buffers = {n: b.clone() for n, b in model.named_buffers()}

            def f(flat, names=names, shapes=shapes, buffers=buffers):
                parts = torch.split(flat, [int(np.prod(s)) for s in shapes])
                params = {n: t.view(s) for n, t, s in zip(names, parts, shapes)}
                return crit(functional_call(model, (params, buffers), (x,)), y)

            h = torch.autograd.functional.hessian(f, flat0)
            dense_top.append(np.sort(np.linalg.eigvalsh(h.numpy()))[::-1][:4])
    with Recording(tmp_path / "h.h5") as rec:
        _, top = rec.read("hessian_top")
    assert top.shape == (3, 4)
    np.testing.assert_allclose(top, np.array(dense_top), rtol=1e-6, atol=1e-9)
    assert dense_top[0][0] != pytest.approx(dense_top[-1][0], rel=1e-3)  # the model moved between steps


def test_default_streams_and_scale_invariant_weights(tmp_path):
    torch.manual_seed(0)
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = data()
    crit = nn.CrossEntropyLoss()
    with dynlab.watch(model, opt, record=tmp_path / "d.h5") as lab:
        for _ in range(5):
            before = [p.detach().clone() for p in model.parameters()]
            loss = crit(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            lab.step(loss=loss, by_name={"a": loss, "b": 2.0})
    with Recording(tmp_path / "d.h5") as rec:
        s = rec.streams
        assert rec.attrs["source"] == "watched script" and rec.attrs["status"] == "finished"
        assert json.loads(rec.attrs["hyperparameters"])["lr"] == 0.1
        assert rec.attrs["script"] and rec.attrs["optimizer"] == "SGD"
        # Linear -> BatchNorm: scale-invariant; Linear(bias=False) -> LayerNorm: also; the classifier: not.
        assert s["effective_step"].labels == ("0.weight", "4.weight")
        assert s["weight_norm"].labels == ("0.weight", "4.weight", "7.weight")
        assert s["by_name"].labels == ("a", "b")
        _, angle = rec.read("update_angle")
        _, wn = rec.read("weight_norm")
        _, eff = rec.read("effective_step")
        _, gn = rec.read("grad_norm")
    # The last update's angle, computed directly from the weights before and after it.
    w0, w1 = before[0].reshape(-1).double(), model[0].weight.detach().reshape(-1).double()
    direct = torch.acos(torch.clamp(w0 @ w1 / (w0.norm() * w1.norm()), -1, 1))
    assert angle[-1, 0] == pytest.approx(float(direct), rel=1e-3)
    assert wn[-1, 0] == pytest.approx(float(w1.norm()), rel=1e-6)
    assert eff[-1, 0] == pytest.approx(0.1 / float(w1.norm()) ** 2, rel=1e-5)
    total = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters()))
    assert gn[-1] == pytest.approx(float(total), rel=1e-5)


def test_user_events_layout_and_default_recording(tmp_path):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    views = [{"title": "Loss and accuracy", "streams": ["loss", "accuracy"], "log_y": True}]
    with dynlab.watch(model, opt, name="my run", views=views) as lab:  # record= defaults to the folder
        lab.declare("val_accuracy")
        for t in range(4):
            if t == 2:
                lab.event("lr drop", factor=0.1)
            lab.step(loss=1.0 / (t + 1), accuracy=0.5, val_accuracy=float(t))
    (path,) = (tmp_path / "recordings").glob("my run-*.h5")
    assert lab.recording == str(path)
    with Recording(path) as rec:
        (ev,) = [e for e in rec.events() if e.kind == "phase"]
        assert ev.step == 2 and ev.payload == {"name": "lr drop", "factor": 0.1}
        preset = parse(rec.preset_text, check_engine=False)  # what `dynlab replay` shows
        assert preset.title == "my run" and preset.views[0].streams == ("loss", "accuracy")
        assert preset.views[0].log_y and rec.rows("val_accuracy") == 4


def test_param_groups_are_live_knobs_one_group_or_all(tmp_path):
    model = make_model()
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    rest = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    opt = torch.optim.AdamW([{"params": decay}, {"params": rest, "weight_decay": 0.0}], lr=1e-3)
    with dynlab.watch(model, opt, record=tmp_path / "g.h5", serve=False) as lab:
        assert lab.command({"cmd": "set", "name": "betas[1]", "value": "0.99"}) == (
            True,
            "betas[1] = 0.99 (all groups) at the next step",
        )
        ok, _ = lab.command({"cmd": "set", "name": "weight_decay", "value": 0.05, "group": 1})
        assert ok
        assert lab.command({"cmd": "set", "name": "amsgrad", "value": True})[0] is False  # not a live knob
        assert "above its maximum" in lab.command({"cmd": "set", "name": "betas[0]", "value": 1.5})[1]
        assert (
            "group 7 does not exist" in lab.command({"cmd": "set", "name": "lr", "value": 1, "group": 7})[1]
        )
        _loop(lab, model, opt, 2)
    assert [g["betas"] for g in opt.param_groups] == [(0.9, 0.99), (0.9, 0.99)]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.05]
    with Recording(tmp_path / "g.h5") as rec:
        sets = [e.payload for e in rec.events() if e.kind == "set"]
        s = rec.streams
    assert sets[0] == {"name": "betas[1]", "old": 0.999, "new": 0.99}
    assert sets[1] == {"name": "weight_decay", "old": 0.0, "new": 0.05, "group": 1}
    assert s["lr"].kind == "vector" and s["lr"].labels == ("group 0", "group 1")


# --------------------------------------------------------------------------- errors
def test_unknown_probe_lists_the_available_ones():
    with pytest.raises(SpecError, match="unknown probe 'hessian_tpo'.*did you mean 'hessian_top'") as exc:
        dynlab.watch(make_model(), probes={"hessian_tpo": 10}, serve=False, record=False)
    for name in ("hessian_top", "hessian_trace", "hessian_density", "neural_collapse", "equivariance_error"):
        assert name in str(exc.value)


def test_expensive_probes_without_their_inputs_are_refused_at_watch_time():
    x, y = data()
    with pytest.raises(SpecError, match="hessian_top.*needs loss_fn"):
        dynlab.watch(make_model(), probe_batch=(x, y), probes={"hessian_top": 500}, serve=False, record=False)
    with pytest.raises(SpecError, match="neural_collapse.*needs probe_batch"):
        dynlab.watch(make_model(), probes={"neural_collapse": 500}, serve=False, record=False)
    with pytest.raises(SpecError, match="no sample of class"):
        dynlab.watch(
            make_model(classes=5), probe_batch=(x[:3], y[:3]), probes={"neural_collapse": 5}, record=False
        )
    with pytest.raises(SpecError, match="equivariance_error.*needs transforms"):
        dynlab.watch(make_model(), probe_batch=(x, y), probes={"equivariance_error": 5}, record=False)
    with pytest.raises(SpecError, match="cadence"):
        dynlab.watch(
            make_model(), loss_fn=nn.CrossEntropyLoss(), probe_batch=(x, y), probes={"hessian_top": 0}
        )
    with pytest.raises(SpecError, match="on_diverge"):
        dynlab.watch(make_model(), on_diverge="explode")


def _loop(lab, model, opt, steps, loss_at=None):
    x, y = data()
    crit = nn.CrossEntropyLoss()
    for t in range(steps):
        loss = crit(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        lab.step(loss=loss if loss_at is None or t != loss_at else torch.tensor(float("nan")))


def test_a_probe_that_raises_becomes_an_event_and_is_switched_off(tmp_path):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory in my probe")
        return 1.0

    with pytest.warns(UserWarning, match="probe flaky failed"):
        with dynlab.watch(model, opt, record=tmp_path / "p.h5") as lab:
            lab.probe("flaky", flaky, every=1)
            _loop(lab, model, opt, 6)
    assert len(calls) == 2 and lab.step_count == 6
    with Recording(tmp_path / "p.h5") as rec:
        assert rec.rows("flaky") == 1 and rec.rows("loss") == 6
        (warn,) = [e for e in rec.events() if e.kind == "warning"]
        assert (
            warn.step == 1 and warn.payload["name"] == "flaky" and "out of memory" in warn.payload["message"]
        )


def test_non_finite_loss_is_a_diverged_event(tmp_path):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with pytest.warns(UserWarning, match="on_diverge='warn'"):
        with dynlab.watch(model, opt, record=tmp_path / "warn.h5") as lab:
            _loop(lab, model, opt, 6, loss_at=2)
    assert lab.step_count == 6 and lab.state == "finished"
    with Recording(tmp_path / "warn.h5") as rec:
        (ev,) = [e for e in rec.events() if e.kind == "diverged"]
        assert ev.step == 2 and ev.payload["stream"] == "loss"

    with dynlab.watch(model, opt, record=tmp_path / "stop.h5", on_diverge="stop") as lab:
        _loop(lab, model, opt, 6, loss_at=2)
    assert lab.step_count == 3 and lab.state == "diverged"  # the with block ended cleanly
    with Recording(tmp_path / "stop.h5") as rec:
        assert rec.attrs["status"] == "diverged" and rec.rows("loss") == 3


def test_stop_outside_a_with_block_raises_stop_requested(tmp_path):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    lab = dynlab.watch(model, opt, record=tmp_path / "o.h5", on_diverge="stop")
    with pytest.raises(dynlab.StopRequested, match="diverged"):
        _loop(lab, model, opt, 6, loss_at=1)
    assert lab.state == "diverged"
    with Recording(tmp_path / "o.h5") as rec:
        assert rec.attrs["status"] == "diverged"


def test_stream_mistakes_are_clear():
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    lab = dynlab.watch(model, opt, record=False, serve=False)
    with pytest.raises(SpecError, match="'lr' is a stream dynlab measures itself"):
        lab.step(lr=0.1)
    lab.close()
    lab = dynlab.watch(model, opt, record=False, serve=False)
    lab.step(loss=1.0)
    with pytest.warns(UserWarning, match=r"lab.declare\('val_acc'\)"):
        lab.step(loss=1.0, val_acc=0.5)
    with pytest.raises(SpecError, match="before the first lab.step"):
        lab.declare("later")
    lab.close()
    with pytest.raises(SpecError, match="views\\[0\\].streams: no stream 'los'.*did you mean 'loss'"):
        with dynlab.watch(model, opt, record=False, views=[{"title": "L", "streams": ["los"]}]) as lab:
            lab.step(loss=1.0)


def test_a_stream_kind_is_checked_when_declared():
    lab = dynlab.watch(make_model(), record=False, serve=False)
    with pytest.raises(SpecError, match="unknown kind 'vectr' \\(did you mean 'vector'\\?\\)"):
        lab.declare("acc", kind="vectr")
    with pytest.raises(SpecError, match="stream 'p': unknown kind 'hist'"):
        lab.probe("p", lambda: 1.0, kind="hist")
    lab.declare("acc", kind="vector", labels=("a", "b"))
    lab.step(acc=[0.5, 0.25])
    lab.close()


class _PathLike(os.PathLike):
    """A path-like that is not a pathlib.Path (what some config libraries hand out)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __fspath__(self) -> str:
        return str(self.path)


def test_a_layout_from_any_path_like_and_its_mistakes(tmp_path):
    f = tmp_path / "views.toml"
    f.write_text('[[views]]\ntitle = "L"\nstreams = ["loss"]\n')
    with dynlab.watch(make_model(), record=False, serve=False, views=_PathLike(f)) as lab:
        lab.step(loss=1.0)
    assert lab._views == [{"title": "L", "streams": ["loss"]}]
    f.write_text('views = "loss"\n')
    with pytest.raises(SpecError, match="views.toml: the layout must be a list of views, got str"):
        dynlab.watch(make_model(), record=False, serve=False, views=f)
    with pytest.raises(SpecError, match=r"views\[1\]: a view must be a table \(dict\), got list"):
        dynlab.watch(make_model(), record=False, serve=False, views=[{"streams": ["loss"]}, ["loss"]])


def test_a_weight_without_a_gradient_is_nan_and_the_total_is_over_the_others(tmp_path):
    class WithSpare(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = make_model()
            self.spare = nn.Linear(4, 4)  # not used by forward: its grad stays None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    torch.manual_seed(0)
    model = WithSpare()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = data()
    with dynlab.watch(model, opt, record=tmp_path / "s.h5", serve=False) as lab:
        for _ in range(2):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            lab.step(loss=loss)
    with Recording(tmp_path / "s.h5") as rec:
        labels = rec.streams["grad_norm_layer"].labels
        _, layer = rec.read("grad_norm_layer")
        _, total = rec.read("grad_norm")
    assert model.spare.weight.grad is None and "spare.weight" in labels
    for name, value in zip(labels, layer[-1]):
        g = model.get_parameter(name).grad
        assert np.isnan(value) if g is None else value == pytest.approx(float(g.norm()), rel=1e-5)
    present = [p.grad.double() for p in model.parameters() if p.grad is not None]
    assert total[-1] == pytest.approx(float(torch.sqrt(sum((g**2).sum() for g in present))), rel=1e-5)


def test_device_of_the_model_is_kept():
    model = make_model()
    with dynlab.watch(model, record=False, serve=False) as lab:
        lab.step(loss=1.0)
    assert lab.device == str(next(model.parameters()).device)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_model_stays_on_cuda():
    model = make_model().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = (t.cuda() for t in data())
    crit = nn.CrossEntropyLoss()
    with dynlab.watch(
        model, opt, record=False, loss_fn=crit, probe_batch=(x, y), probes={"hessian_top": 1}
    ) as lab:
        loss = crit(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        lab.step(loss=loss)
    assert lab.device.startswith("cuda") and all(p.is_cuda for p in model.parameters())


# --------------------------------------------------------------------------- the channel
def _session(tmp_path, **kw):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    lab = dynlab.watch(model, opt, name="private", record=tmp_path / "s.h5", **kw)
    return lab, model, opt


def test_files_that_grant_access_are_owner_only(tmp_path, private_runtime):
    lab, *_ = _session(tmp_path)
    try:
        (info,) = session_infos()
        folder = channel.runtime_dir()
        assert folder.parent == private_runtime
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(info.file).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(info.address["unix"]).st_mode) == 0o600
        assert info.token in Path(info.file).read_text()
    finally:
        lab.close()
    assert session_infos() == [] and not list(folder.iterdir())  # nothing left behind


def test_a_runtime_folder_of_another_user_is_refused(private_runtime):
    if os.geteuid() != 0:
        pytest.skip("needs root to give the folder away")
    folder = private_runtime / "dynlab"
    folder.mkdir(mode=0o700)
    os.chown(folder, 4242, 4242)
    with pytest.raises(ChannelError, match="belongs to another user"):
        channel.runtime_dir()
    with pytest.warns(UserWarning, match="no live channel"):  # the script trains on, unserved
        lab = dynlab.watch(make_model(), record=False)
    lab.close()


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_a_connection_without_the_token_is_refused(tmp_path, monkeypatch, transport):
    monkeypatch.setenv("DYNLAB_WATCH_TRANSPORT", transport)
    lab, model, opt = _session(tmp_path)
    try:
        (info,) = session_infos()
        assert ("unix" in info.address) == (transport == "unix")
        with pytest.raises(AccessDenied, match="did not present the session's token"):
            Connection(info, token="0" * 64)
        # A peer that skips the login and asks to stop is refused and disconnected ...
        sock = _raw(info)
        sock.sendall(wire.encode({"type": "command", "cmd": "stop"}))
        assert _read_all(sock)[0]["type"] == "error"
        # ... and one that sends a pickle is refused without anything being unpickled.
        sock = _raw(info)
        sock.sendall(b"\x00\x00\x00\x10\x00\x00\x00\x00" + b"\x80\x04\x95" + b"\x00" * 13)
        assert _read_all(sock)[0]["message"].startswith("protocol error")
        _loop(lab, model, opt, 2)
        assert lab.state == "running" and lab.step_count == 2  # nothing of that reached the run
        ok = Connection(info)  # the right token still works
        assert ok.request({"type": "status"})["step"] == 2
        ok.close()
    finally:
        lab.close()


def _raw(info):
    if "unix" in info.address:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(info.address["unix"])
    else:
        s = socket.create_connection(tuple(info.address["tcp"]))
    s.settimeout(5)
    return s


def _read_all(sock):
    dec, out = wire.Decoder(), []
    while True:
        data = sock.recv(65536)
        if not data:
            return out
        out += dec.feed(data)


def test_wire_refuses_object_arrays_and_oversized_messages():
    msg = wire.encode({"type": "frames", "a": np.arange(3.0)})
    (back,) = wire.Decoder().feed(msg)
    np.testing.assert_array_equal(back["a"], [0.0, 1.0, 2.0])
    evil = json.dumps({"type": "x", "a": {"__nd__": ["|O8", [1], 0]}}).encode()
    with pytest.raises(wire.ProtocolError, match="not a plain number type"):
        wire.Decoder().feed(len(evil).to_bytes(4, "big") + (8).to_bytes(4, "big") + evil + b"\x00" * 8)
    with pytest.raises(wire.ProtocolError, match="over the limit"):
        wire.Decoder(limit=100).feed(b"\x00\x00\x10\x00\x00\x00\x00\x00")


def test_watched_source_gets_history_then_live_frames_and_steers(tmp_path):
    """Attach mid-run (in-process loop on a thread): history from the file, live after it, no duplicate."""
    lab, model, opt = _session(tmp_path)
    go, done = threading.Event(), threading.Event()

    def loop():
        try:
            while not done.is_set():
                _loop(lab, model, opt, 1)
                if lab.step_count == 20:
                    go.set()
        except dynlab.StopRequested:
            pass
        finally:
            done.set()

    t = threading.Thread(target=loop, name="user-loop")
    t.start()
    try:
        go.wait(60)
        (info,) = session_infos()
        src = WatchedSource(info)
        assert isinstance(src, Source)
        assert {s.name for s in src.streams} >= {"loss", "weight_norm", "update_angle"}
        assert "lr" in src.param_specs and src.params["lr"] == 0.05
        src.set("lr", 0.01)
        with pytest.raises(SpecError, match="did you mean 'lr'"):
            src.set("lrr", 1.0)
        items = []
        wait_for(
            lambda: items.extend(src.drain()) or any(getattr(i, "kind", "") == "set" for i in items),
            30,
            "set",
        )
        src.stop()
        wait_for(lambda: items.extend(src.drain()) or src.state.ended, 30, "the end")
        items.extend(src.drain())
    finally:
        done.set()
        t.join(30)
        src.close()
        lab.close()
    steps = [i.step for i in items if hasattr(i, "data") and "loss" in i.data]
    assert steps[0] == 0 and steps == sorted(set(steps))  # from the start, each step once
    assert steps == list(range(len(steps)))
    kinds = [i.kind for i in items if hasattr(i, "kind")]
    assert kinds.count("start") == 1 and "stop" in kinds and kinds[-1] == "end"
    (ev,) = [i for i in items if getattr(i, "kind", "") == "set"]
    assert ev.payload["old"] == 0.05 and ev.payload["new"] == 0.01 and ev.payload["by"] == "app"
    assert src.state == "stopped" and opt.param_groups[0]["lr"] == 0.01


# --------------------------------------------------------------------------- a real script, steered by the CLI
def start_example(tmp_path, *extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    rec = tmp_path / "digits.h5"
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--epochs", "100000", "--record", str(rec), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, rec


def live(name="digits"):
    rows = [
        r for r in __import__("dynlab.watching.client", fromlist=["sessions"]).sessions() if r["name"] == name
    ]
    return rows[0] if rows else None


def test_cli_steers_a_real_script(tmp_path, capsys):
    proc, rec = start_example(tmp_path)
    try:
        wait_for(lambda: (r := live()) and r["step"] > 5, 120, "the script's first steps")
        assert cli.main(["set", "digits", "lr=0.02"]) == 0
        assert "lr = 0.02" in capsys.readouterr().out
        wait_for(lambda: live()["params"]["lr"] == 0.02, 30, "the change applied")
        assert cli.main(["set", "digits", "lrr=1"]) == 2
        assert "did you mean 'lr'" in capsys.readouterr().err
        assert cli.main(["pause", "digits"]) == 0
        wait_for(lambda: live()["state"] == "paused", 30, "paused")
        held = live()["step"]
        time.sleep(0.5)  # the script must not move while paused
        assert live()["step"] == held
        out = subprocess.run(
            [sys.executable, "-m", "dynlab.cli", "live"], capture_output=True, text=True, timeout=60
        )
        assert "digits" in out.stdout and str(proc.pid) in out.stdout and "paused" in out.stdout
        assert cli.main(["resume", "digits"]) == 0
        wait_for(lambda: live()["step"] > held + 3, 30, "running again")
        assert cli.main(["stop", "digits"]) == 0
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "finished: stopped" in stdout  # the with block ended cleanly, the script went on
    assert cli.main(["pause", "digits"]) == 2  # gone
    with Recording(rec) as r:
        assert r.attrs["status"] == "stopped" and r.attrs["source"] == "watched script"
        assert r.attrs["script"] == str(EXAMPLE)
        events = r.events()
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-2:] == ["stop", "end"]
    assert kinds.count("pause") == 1 and kinds.count("resume") == 1
    (s,) = [e for e in events if e.kind == "set"]
    assert s.payload == {"name": "lr", "old": 0.05, "new": 0.02, "by": "cli"}


def test_import_dynlab_stays_light():
    code = (
        "import sys, dynlab; dynlab.StopRequested; import dynlab.watching.client, dynlab.watching.attached; "
        "heavy = [m for m in ('torch', 'PySide6', 'h5py') if m in sys.modules]; print(heavy); "
        "assert callable(dynlab.watch) and 'torch' in sys.modules"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"  # until dynlab.watch itself is asked for
