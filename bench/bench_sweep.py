"""Sweeps and the Ray host: parallel speed-up, and what hosting one run on Ray costs.

1. A sweep of 8 trials on an embedded Ray with one CPU slot per core: 2 trials at a time
   against 1 at a time on the same cores (wall-time ratio; 2.0 is perfect on 2 cores).
   The trials are the grokking engine at p = 59, width 256 (a few ms per epoch), so the
   engines' work dominates; the machine's load average is printed beside the result.
2. The cost of one short run (start to recording closed) in each host: in a thread (the
   engine's own time), a child process, a Ray actor; the overhead is the difference.
   Also the per-trial cost inside a sweep, where Ray reuses its worker processes.

    python bench/bench_sweep.py [--trials 8] [--steps 4000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (puts the repo on sys.path)
from _common import cores, table


def sweep_wall(preset, trials: int, steps: int, parallel: int) -> float:  # noqa: ANN001
    from dynlab.sweep import run_sweep

    lrs = [round(1e-3 * (1 + 0.1 * i), 6) for i in range(trials)]
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        m = run_sweep(preset, {"lr": lrs}, [0], Path(d) / "s", steps=steps, max_parallel=parallel)
        wall = time.perf_counter() - t0
    assert all(t.status == "finished" for t in m.trials), [t.error for t in m.trials]
    return wall


def one_run(preset, host: str, folder: str) -> float:  # noqa: ANN001
    from dynlab.runner import Run

    run = Run(preset, host=host, record=f"{folder}/{host}-{time.monotonic_ns()}.h5", torch_threads=1)
    t0 = time.perf_counter()
    run.start()
    while run.alive:
        run.drain()
        time.sleep(0.002)
    run.drain()
    wall = time.perf_counter() - t0
    run.close()
    assert run.state == "finished", run.message
    return wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--steps", type=int, default=400, help="epochs of each sweep trial")
    ap.add_argument("--run-steps", type=int, default=200, help="steps of the short run (part 2)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sweep-repeats", type=int, default=2, help="sweeps of each kind (median taken)")
    args = ap.parse_args()

    from dynlab import presets
    from dynlab.ray_host import connect

    t0 = time.perf_counter()
    ray = connect()
    start_s = time.perf_counter() - t0
    grok = presets.load("grokking-modular").with_overrides(hyperparameters={"p": 59, "width": 256})
    print(
        f"{cores()} cores; embedded Ray started in {start_s:.1f} s with {ray.cluster_resources()['CPU']:.0f} CPU slots"
    )

    sweep_wall(grok, 2, 10, 2)  # warm-up: both worker processes started, torch imported
    load0 = os.getloadavg()[0]
    walls: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.sweep_repeats):  # interleaved, so a change in the machine's load hits both
        for k in (1, 2):
            walls[k].append(sweep_wall(grok, args.trials, args.steps, k))
    one, two = statistics.median(walls[1]), statistics.median(walls[2])
    table(
        f"Sweep of {args.trials} trials (grokking p=59 width 256, {args.steps} epochs each), same {cores()} cores"
        f" (load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after)",
        [("1 at a time", one, 1.0), ("2 in parallel", two, one / two)],  # medians
        ("max parallel", "wall (s)", "speed-up"),
    )

    short = presets.load("quadratic").with_overrides(steps=args.run_steps)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        walls = {h: [one_run(short, h, d) for _ in range(args.repeats)] for h in ("thread", "process", "ray")}
        per_trial = sweep_wall(short, args.repeats * 2, args.run_steps, 1) / (args.repeats * 2)
    base = statistics.median(walls["thread"])
    for host in ("thread", "process", "ray"):
        med = statistics.median(walls[host])
        rows.append((host, med, med - base))
    rows.append(("ray, one trial of a sweep (worker reused)", per_trial, per_trial - base))
    table(
        f"One run of {args.run_steps} steps, start to recording closed (median of {args.repeats})",
        rows,
        ("host", "wall (s)", "overhead vs thread (s)"),
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
