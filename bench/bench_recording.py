"""Recording cost: our Recorder vs raw h5py writes of the same arrays; replay seek time.

    python bench/bench_recording.py [--steps 20000]

Write: the same per-step arrays (3 scalars, a 5-vector, a 64x32 heatmap every 10 steps)
through ``lab.recording.Recorder`` and through a bare h5py loop that appends the same rows
in the same chunk sizes. Seek: random ``value_at`` on recordings of 10^4 and 10^6 steps.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import _common  # noqa: F401
import h5py
import numpy as np
from _common import table

from dynlab.frames import Frame, Stream
from dynlab.recording import Recorder, Recording

STREAMS = (
    Stream("loss", "scalar"),
    Stream("acc", "scalar"),
    Stream("norm", "scalar"),
    Stream("vec", "vector", (5,), labels=tuple("abcde")),
    Stream("heat", "heatmap", (64, 32), rows=tuple(map(str, range(64))), cols=tuple(map(str, range(32)))),
)


def frames(n: int) -> list[Frame]:
    rng = np.random.default_rng(0)
    out = []
    for t in range(n):
        d = {"loss": rng.random(), "acc": rng.random(), "norm": rng.random(), "vec": rng.random(5)}
        if t % 10 == 0:
            d["heat"] = rng.random((64, 32))
        out.append(Frame.make(t, d))
    return out


def ours(path: str, fs: list[Frame]) -> float:
    t0 = time.perf_counter()
    rec = Recorder(path, STREAMS, {"engine": "bench"}, flush_interval=1.0, overwrite=True)
    for f in fs:
        rec.write(f)
    rec.close("finished")
    return time.perf_counter() - t0


def raw(path: str, fs: list[Frame], interval: float = 1.0) -> float:
    """A bare h5py writer doing the same appends (buffered, chunked, same compression)."""
    t0 = time.perf_counter()
    with h5py.File(path, "w", libver="latest") as f:
        ds = {}
        for s in STREAMS:
            shape = s.shape
            row = int(np.prod(shape)) if shape else 1
            rows = max(1, min(4096, (1 << 16) // row))
            comp = {"compression": "gzip", "compression_opts": 1, "shuffle": True} if row >= 64 else {}
            ds[s.name] = (
                f.create_dataset(f"{s.name}/step", (0,), maxshape=(None,), dtype="i8", chunks=(rows,)),
                f.create_dataset(
                    f"{s.name}/value",
                    (0, *shape),
                    maxshape=(None, *shape),
                    dtype="f8",
                    chunks=(rows, *shape),
                    **comp,
                ),
            )
        f.swmr_mode = True
        buf = {s.name: [] for s in STREAMS}
        last = time.monotonic()

        def flush() -> None:
            for name, rows in buf.items():
                if rows:
                    st, va = ds[name]
                    n = st.shape[0]
                    st.resize((n + len(rows),))
                    va.resize((n + len(rows), *va.shape[1:]))
                    st[n:] = [r[0] for r in rows]
                    va[n:] = np.stack([r[1] for r in rows])
                    rows.clear()
            f.flush()

        for fr in fs:
            for k, v in fr.data.items():
                buf[k].append((fr.step, v))
            if time.monotonic() - last >= interval:
                flush()
                last = time.monotonic()
        flush()
    return time.perf_counter() - t0


def make_long(path: str, n: int) -> None:
    """A scalar+vector recording of n steps, written in big blocks (fast)."""
    rec = Recorder(path, STREAMS[:4], {"engine": "bench"}, flush_interval=1e9, overwrite=True)
    block = 50_000
    rng = np.random.default_rng(1)
    for start in range(0, n, block):
        m = min(block, n - start)
        for name, shape in (("loss", ()), ("acc", ()), ("norm", ()), ("vec", (5,))):
            rec._pending[name].extend(zip(range(start, start + m), rng.random((m, *shape))))
        rec.flush()
    rec.last_step = n - 1
    rec.close("finished")


def seek_ms(path: str, n: int, trials: int = 200) -> float:
    rng = np.random.default_rng(2)
    with Recording(path) as rec:
        t0 = time.perf_counter()
        for s in rng.integers(0, n, trials):
            for name in ("loss", "vec"):
                rec.value_at(name, int(s))
        return (time.perf_counter() - t0) / trials * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20000)
    args = ap.parse_args()
    fs = frames(args.steps)
    with tempfile.TemporaryDirectory() as d:
        a, b = os.path.join(d, "ours.h5"), os.path.join(d, "raw.h5")
        t_raw = min(raw(b, fs) for _ in range(2))
        t_ours = min(ours(a, fs) for _ in range(2))
        size = os.path.getsize(a)
        heat_raw = args.steps // 10 * 64 * 32 * 8
        table(
            "Recording write throughput",
            [
                ("raw h5py (same rows, chunks, compression)", args.steps / t_raw, 1.0, os.path.getsize(b)),
                ("lab Recorder", args.steps / t_ours, t_raw / t_ours, size),
            ],
            ("writer", "steps/s", "vs raw", "file bytes"),
        )
        print(
            f"\nbytes per step: {size / args.steps:.0f} (uncompressed heatmap rows would be {heat_raw / args.steps:.0f}/step alone)"
        )
        rows = []
        for n in (10_000, 1_000_000):
            p = os.path.join(d, f"long{n}.h5")
            make_long(p, n)
            rows.append((f"{n:,} steps", seek_ms(p, n), os.path.getsize(p) / n))
        table(
            "Replay seek (value_at of 2 streams at a random step)",
            rows,
            ("recording", "ms per seek", "bytes/step"),
        )
        print("\nGoals: writer >= 0.8 of raw h5py; seek <= 50 ms independent of length.")


if __name__ == "__main__":
    main()
