"""Training overhead: the grokking recipe in a bare PyTorch loop vs inside the lab.

Rows (epochs/s and ratio to the bare loop with the same torch threads):
  bare loop; lab headless (thread host) with probes off / at their default cadence,
  recording on; lab headless in a child process; and, with the app open and drawing
  the preset's views at 30 Hz, the engine in a thread vs in a child process.

    python bench/bench_hosts.py [--seconds 15] [--no-app]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import _common  # noqa: F401  (puts the repo on sys.path)
from _common import cores, rate, table


def bare_loop(threads: int, seconds: float, device: str = "cpu") -> float:
    """The same model and optimizer as the `grokking` engine, nothing else."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    p, h = 97, 512
    pairs = torch.randperm(p * p)
    n = int(round(0.3 * p * p))
    a, b = (pairs[:n] // p).to(device), (pairs[:n] % p).to(device)
    y = (a + b) % p
    w_in = (
        torch.nn.Linear(2 * p, h, bias=False).weight.detach().T.contiguous().to(device).requires_grad_(True)
    )
    w_out = torch.nn.Linear(h, p, bias=False).weight.detach().to(device).requires_grad_(True)
    opt = torch.optim.Adam([w_in, w_out], lr=1e-3, weight_decay=1e-4)

    def step() -> None:
        z = w_in.index_select(0, a) + w_in.index_select(0, b + p)
        loss = F.cross_entropy(z.square() @ w_out.T, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device != "cpu":
            # The lab reads its streams every step (one device->host copy); match it.
            loss.item()

    return rate(step, seconds=seconds)


def lab_headless(host: str, probes_off: bool, seconds: float, threads: int, device: str = "cpu") -> float:
    from dynlab import presets
    from dynlab.runner import Run

    preset = presets.load("grokking-modular").with_overrides(steps=10**7, device=device)
    if probes_off:
        preset = _no_probes(preset)
    with tempfile.TemporaryDirectory() as d:
        run = Run(preset, record=os.path.join(d, "r.h5"), host=host, torch_threads=threads).start()
        rate_ = _measure(run, seconds)
        run.close()
    return rate_


def _no_probes(preset):  # noqa: ANN001, ANN202
    from dataclasses import replace

    return replace(preset, probes={k: 10**9 for k in ("test", "fourier", "energy")})


def _measure(run, seconds: float, pump=None) -> float:  # noqa: ANN001
    """Steps/s over ``seconds``, starting 2 s after the first frames (warm-up excluded)."""
    wait = pump or (lambda ms: time.sleep(ms / 1000))
    deadline = time.monotonic() + 120
    while run.step < 5 and time.monotonic() < deadline:
        run.drain()
        wait(10)
    t_end = time.monotonic() + 2
    while time.monotonic() < t_end:
        run.drain()
        wait(10)
    s0, t0 = run.step, time.monotonic()
    while time.monotonic() - t0 < seconds:
        run.drain()
        wait(10)
    run.drain()
    return (run.step - s0) / (time.monotonic() - t0)


def lab_with_app(host: str, seconds: float) -> tuple[float, float]:
    """The preset open in the real window, drawing; returns (epochs/s, redraws/s)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtCore, QtWidgets

    from dynlab import presets
    from dynlab.ui.workspace import Workspace

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    ws = Workspace(host=host)
    ws.resize(1500, 950)
    ws.show()
    ws.controls.record.setChecked(True)
    os.environ["DYNLAB_RECORDINGS"] = tempfile.mkdtemp()
    ws.open_preset(
        presets.load("grokking-modular", check_engine=False).with_overrides(steps=10**7, device="cpu"),
        start=True,
    )

    def pump(ms: int) -> None:
        loop = QtCore.QEventLoop()
        QtCore.QTimer.singleShot(ms, loop.quit)
        loop.exec()

    run = ws.steerable()[0]
    t0, ticks0 = time.monotonic(), ws.ticks
    r = _measure(run, seconds, pump=pump)
    redraws = (ws.ticks - ticks0) / (time.monotonic() - t0)
    ws.close_sources()
    ws.close()
    app.processEvents()
    return r, redraws


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--no-app", action="store_true")
    args = ap.parse_args()
    n = cores()
    print(f"cores: {n}; grokking-modular (p=97, width 512, full batch); {args.seconds:.0f} s per row")
    bare_all = bare_loop(n, args.seconds)
    bare_less = bare_loop(max(1, n - 1), args.seconds) if n > 1 else bare_all
    rows = [("bare loop", n, bare_all, 1.0)]
    if n > 1:
        rows.append(("bare loop", n - 1, bare_less, bare_less / bare_all))
    for host, off in (("thread", True), ("thread", False), ("process", True), ("process", False)):
        r = lab_headless(host, off, args.seconds, n)
        rows.append(
            (
                f"lab headless, {host} host, probes {'off' if off else 'default'}, recording",
                n,
                r,
                r / bare_all,
            )
        )
    if not args.no_app:
        for host in ("thread", "process"):
            r, redraws = lab_with_app(host, args.seconds)
            threads = n if host == "thread" else max(1, n - 1)
            rows.append((f"app drawing ({redraws:.0f} redraws/s), {host} host", threads, r, r / bare_all))
    table(
        "Training overhead (epochs/s)",
        rows,
        ("how the engine runs", "torch threads", "epochs/s", "vs bare (all cores)"),
    )
    print("\nGoal: >= 0.95 of bare with probes off, headless and with the app drawing.")
    import torch

    if not torch.cuda.is_available():
        print("No GPU found: GPU rows skipped.")
        return
    name = torch.cuda.get_device_name(0)
    bare_gpu = bare_loop(n, args.seconds, "cuda")
    gpu_rows = [("bare loop", name, bare_gpu, 1.0)]
    for host, off in (("thread", True), ("thread", False), ("process", True)):
        r = lab_headless(host, off, args.seconds, n, device="cuda")
        gpu_rows.append(
            (
                f"lab headless, {host} host, probes {'off' if off else 'default'}, recording",
                name,
                r,
                r / bare_gpu,
            )
        )
    table(
        "Training overhead on CUDA (epochs/s)",
        gpu_rows,
        ("how the engine runs", "device", "epochs/s", "vs bare"),
    )


if __name__ == "__main__":
    main()
