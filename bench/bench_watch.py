"""What ``dynlab.watch`` costs a user's loop: default probes per step, expensive probes per call.

Part 1, the watched loop against the bare loop on the same script: the training loop of
``examples/watch_digits.py`` (a BatchNorm MLP on sklearn's digits, batch 64, a DataLoader)
and a small BatchNorm CNN on 32x32 images (a heavier step). Bare and watched blocks
alternate (ABAB...) so that load on the machine hits both alike; the table gives steps/s
(median over blocks), the ratio watched/bare (goal >= 0.95) in wall time and in CPU time
of the whole process (robust to other jobs on a shared machine), and the extra CPU time
per step.
"watched" records to HDF5 and serves the live channel with nobody attached;
"watched + viewer" has a viewer in another process subscribed to every frame.

Part 2, each expensive probe's cost per call on the digits model (probe batch: the 297
held-out digits), in seconds and in training steps.

    python bench/bench_watch.py [--seconds 3] [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import _common  # noqa: F401  (puts the repo on sys.path)
from _common import cores, table

VIEWER = """
import sys, time
from dynlab.watching.attached import WatchedSource
from dynlab.watching.channel import session_infos
deadline = time.monotonic() + 30
while not [i for i in session_infos() if i.name == sys.argv[1]] and time.monotonic() < deadline:
    time.sleep(0.05)
src = WatchedSource([i for i in session_infos() if i.name == sys.argv[1]][0])
print("attached", flush=True)
while not src.state.ended and time.monotonic() < deadline + 600:
    src.drain()
    time.sleep(1 / 30)  # the app's display rate
src.close()
"""


def digits_problem():
    import torch
    from sklearn.datasets import load_digits
    from torch import nn

    torch.manual_seed(0)
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    y = torch.tensor(d.target)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x[:1500], y[:1500]), batch_size=64, shuffle=True
    )
    model = nn.Sequential(
        nn.Linear(64, 128), nn.BatchNorm1d(128), nn.ReLU(),
        nn.Linear(128, 64), nn.BatchNorm1d(64), nn.ReLU(),
        nn.Linear(64, 10),
    )  # fmt: skip
    return model, loader, (x[1500:], y[1500:])


def cnn_problem():
    import torch
    from torch import nn

    torch.manual_seed(0)
    x = torch.randn(1024, 3, 32, 32)
    y = torch.randint(0, 10, (1024,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True)
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 10),
    )  # fmt: skip
    return model, loader, (x[:256], y[:256])


def run_block(problem, seconds: float, watched: bool, name: str, record_dir: str) -> tuple[float, float]:
    """Steps per second of the training loop for ``seconds`` (after a short warm-up), in wall
    time and in CPU time of this process (all its threads: the server's and the flushes' too)."""
    import torch

    import dynlab

    model, loader, _ = problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    crit = torch.nn.CrossEntropyLoss()
    lab = (
        dynlab.watch(model, opt, name=name, record=os.path.join(record_dir, f"{name}.h5"))
        if watched
        else None
    )
    n, t0, c0, warm = 0, 0.0, 0.0, 10
    try:
        while True:
            for xb, yb in loader:
                out = model(xb)
                loss = crit(out, yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if lab is not None:
                    lab.step(loss=loss, accuracy=(out.argmax(1) == yb).float().mean())
                n += 1
                if n == warm:
                    t0, c0 = time.perf_counter(), time.process_time()
                elif n > warm and time.perf_counter() - t0 >= seconds:
                    k = n - warm
                    return k / (time.perf_counter() - t0), k / (time.process_time() - c0)
    finally:
        if lab is not None:
            lab.close()


def overhead(problem, label: str, seconds: float, rounds: int, viewer: bool, record_dir: str) -> tuple:
    name = f"bench-{label.split()[0]}-{'v' if viewer else 'n'}"
    proc = None
    if viewer:
        proc = subprocess.Popen([sys.executable, "-c", VIEWER, name], stdout=subprocess.PIPE, text=True)
    bare, watched = [], []
    try:
        for _ in range(rounds):
            bare.append(run_block(problem, seconds, False, name, record_dir))
            watched.append(run_block(problem, seconds, True, name, record_dir))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    med = statistics.median
    wall = med(w[0] / b[0] for w, b in zip(watched, bare))
    cpu_b, cpu_w = med(b[1] for b in bare), med(w[1] for w in watched)
    what = f"{label}, watched" + (" + viewer" if viewer else "")
    return (
        what,
        med(b[0] for b in bare),
        med(w[0] for w in watched),
        wall,
        cpu_w / cpu_b,
        (1 / cpu_w - 1 / cpu_b) * 1e6,
    )


def probe_costs(repeats: int) -> list[tuple]:
    import torch

    from dynlab.engines.watch.probes import ProbeContext, make_probe

    model, loader, batch = digits_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    crit = torch.nn.CrossEntropyLoss()
    for _ in range(3):  # train a little so the probes see a non-trivial model
        for xb, yb in loader:
            opt.zero_grad()
            crit(model(xb), yb).backward()
            opt.step()
    # The time of one training step of the same loop, the unit of the last column.
    t0, n = time.perf_counter(), 0
    for xb, yb in loader:
        opt.zero_grad()
        crit(model(xb), yb).backward()
        opt.step()
        n += 1
    step_s = (time.perf_counter() - t0) / n
    ctx = ProbeContext(model, crit, batch, transforms={"negate": (lambda t: -t, lambda t: t)})
    specs = {
        "hessian_top": {"every": 1, "k": 5},
        "hessian_trace": {"every": 1, "samples": 50},
        "hessian_density": {"every": 1, "vectors": 3, "lanczos_steps": 40},
        "neural_collapse": 1,
        "equivariance_error": 1,
    }
    rows = []
    for name, spec in specs.items():
        probe = make_probe(name, spec, ctx)
        times = []
        for _ in range(repeats):
            ctx.new_step()  # each call builds its own Hessian graph, as when it runs alone
            t0 = time.perf_counter()
            probe.measure()
            times.append(time.perf_counter() - t0)
        best = min(times)
        rows.append(
            (
                name,
                str(spec if isinstance(spec, int) else {k: v for k, v in spec.items() if k != "every"}),
                best,
                best / step_s,
            )
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0, help="length of one timed block")
    ap.add_argument("--rounds", type=int, default=5, help="bare/watched block pairs per row")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--no-viewer", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="dlb"))
    print(f"cores: {cores()}, torch threads: {args.threads}, torch {torch.__version__}")
    rows = []
    with tempfile.TemporaryDirectory() as rec:
        for label, problem in (("digits MLP", digits_problem), ("32x32 BN-CNN", cnn_problem)):
            rows.append(overhead(problem, label, args.seconds, args.rounds, False, rec))
            if not args.no_viewer:
                rows.append(overhead(problem, label, args.seconds, args.rounds, True, rec))
    table(
        "Watched loop (default probes, recording, live channel) vs the bare loop",
        rows,
        ("loop", "bare steps/s", "watched steps/s", "ratio (wall)", "ratio (CPU time)", "extra CPU µs/step"),
    )
    table(
        "Expensive probes, cost per call (digits model, 297-sample probe batch, best of 3)",
        probe_costs(3),
        ("probe", "options", "seconds", "training steps"),
    )


if __name__ == "__main__":
    main()
