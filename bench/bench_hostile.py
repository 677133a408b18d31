"""Hostile and long recordings: what opening one costs, guarded (now) and unguarded (before).

Issue 16, items 8 and 9. Each case runs in a fresh process; its peak resident memory
during the operation (VmHWM after a reset, minus the RSS before it) and its wall time are
printed side by side with the same operation done the unguarded way (plain h5py reads,
or the reader's old read-everything-then-thin), so the ratio is measured in one run.

* ``long``: a grokking-like recording (13 streams; a 49x64 heatmap and a 49-vector every
  10 steps, scalars every step) of ``--steps`` steps (5*10^5 by default), opened and
  seeked to its end as the player does (thinned to 20,000 rows per stream).
* ``declared``: a 0.1 MB file whose heatmap declares 4*10^8 rows it never wrote.
* ``chunk``: a small file whose last row is one 256 MB gzip chunk; ``inspect`` reads that row.
* ``events``: 10^6 compressed events; ``inspect`` lists 50 of them.

    python bench/bench_hostile.py [--steps 500000] [--skip-unguarded]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib

import _common  # noqa: F401
import numpy as np
from _common import table

HERE = os.path.abspath(__file__)


def _status(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    return float("nan")


# ----------------------------------------------------------------------------- the files
def make_long(path: str, n: int) -> None:
    from dynlab.frames import Stream
    from dynlab.recording import Recorder

    streams = [Stream(f"s{i}", "scalar", ()) for i in range(8)] + [
        Stream("weight_norm", "vector", (3,)),
        Stream("frequency_power", "vector", (49,)),
        Stream("fourier_power", "heatmap", (49, 64)),
        Stream("key_frequencies", "vector", (5,)),
        Stream("probe_seconds", "vector", (3,)),
    ]
    rec = Recorder(path, streams, {"engine": "bench", "preset": ""}, flush_interval=1e9)
    block = 50_000
    pattern = np.round(np.sin(np.arange(49 * 64).reshape(49, 64) / 7.0), 2)
    for start in range(0, n, block):
        steps = np.arange(start, min(n, start + block))
        for i in range(8):
            rec._pending[f"s{i}"].extend(zip(steps.tolist(), np.exp(-steps / 1e5) + i))
        rec._pending["weight_norm"].extend((t, np.full(3, t / n)) for t in steps.tolist())
        rec._pending["probe_seconds"].extend((t, np.full(3, 0.01)) for t in steps.tolist())
        for t in steps[steps % 10 == 0].tolist():
            k = round(t / n, 2)  # few distinct values: compresses like a sparse spectrum
            rec._pending["frequency_power"].append((t, pattern[0, :49] * k))
            rec._pending["fourier_power"].append((t, pattern * k))
            rec._pending["key_frequencies"].append((t, np.arange(5.0)))
        rec.flush()
    rec.last_step = n - 1
    rec.close("finished")


def make_declared(path: str) -> None:
    import h5py

    make_long(path, 100)
    with h5py.File(path, "r+") as f:
        g = f["streams/fourier_power"]
        del g["step"], g["value"]
        n = 400_000_000
        g.create_dataset("step", shape=(n,), maxshape=(None,), dtype="i8", chunks=(4096,))
        g.create_dataset("value", shape=(n, 49, 64), maxshape=(None, 49, 64), dtype="f8", chunks=(20, 49, 64))


def make_chunk(path: str, mb: int = 256) -> None:
    import h5py

    make_long(path, 100)
    side = int(np.sqrt(mb * 2**20 / 8))
    with h5py.File(path, "r+") as f:
        g = f["streams/fourier_power"]
        del g["value"]
        for k in ("rows", "cols"):
            if k in g.attrs:
                del g.attrs[k]
        ds = g.create_dataset(
            "value", shape=(100, side, side), maxshape=(None, side, side), dtype="f8",
            chunks=(1, side, side), compression="gzip",
        )  # fmt: skip
        z = zlib.compressobj(9)
        blob = b"".join(z.compress(bytes(1 << 20)) for _ in range(side * side * 8 >> 20)) + z.flush()
        ds.id.write_direct_chunk((99, 0, 0), blob)


def make_events(path: str, n: int = 1_000_000) -> None:
    import h5py

    make_long(path, 100)
    with h5py.File(path, "r+") as f:
        e = f["events"]
        for key in ("step", "time", "kind", "payload"):
            dt = e[key].dtype
            del e[key]
            e.create_dataset(key, shape=(n,), maxshape=(None,), dtype=dt, chunks=(4096,), compression="gzip")
        e["step"][:] = np.arange(n)
        e["time"][:] = 0.0
        e["kind"][:] = ["set"] * n
        e["payload"][:] = [json.dumps({"name": "lr", "old": 0.1, "new": 0.2})] * n


# ----------------------------------------------------------------------------- the operations
def op_long_guarded(path: str) -> str:
    from dynlab.recording import Recording

    with Recording(path) as rec:
        last = rec.step_range()[1]
        frames = list(rec.frames(None, last + 1, max_rows=20_000))
    return f"{len(frames):,} frames"


def op_long_unguarded(path: str) -> str:
    """The reader before issue 16: every row of every stream read, then thinned (no byte budget)."""
    from dynlab.recording import Recording

    with Recording(path) as rec:
        read = rec._read

        def read_all_then_thin(name, start, stop, max_rows):  # noqa: ANN001, ANN202
            st, vals = read(name, start, stop, None)
            if max_rows is not None and len(st) > max_rows:
                keep = np.unique(np.linspace(0, len(st) - 1, max_rows).round().astype(np.int64))
                st, vals = st[keep], vals[keep]
            return st, vals

        rec._read = read_all_then_thin
        last = rec.step_range()[1]
        frames = list(rec.frames(None, last + 1, max_rows=20_000, max_bytes=1 << 62))
    return f"{len(frames):,} frames"


def op_refused(path: str) -> str:
    from dynlab.recording import Recording, RecordingError

    try:
        with Recording(path) as rec:
            rec.events(limit=50)
            return "opened"
    except RecordingError as exc:
        return "refused: " + str(exc).split(": ", 1)[1][:70]


def op_inspect(path: str) -> str:
    from dynlab.recording import Recording, RecordingError

    try:
        with Recording(path) as rec:
            evs = rec.events(limit=50)
            for name in rec.streams:
                rng = rec.step_range(name)
                if rng:
                    rec.read(name, rng[1], rng[1] + 1)
        return f"inspected ({len(evs)} of {rec.event_count:,} events)"
    except RecordingError as exc:
        return "refused: " + str(exc).split(": ", 1)[1][:70]


def op_plain_h5py_last_row(path: str) -> str:
    import h5py

    with h5py.File(path, "r") as f:
        v = f["streams/fourier_power/value"]
        row = v[v.shape[0] - 1]
    return f"read {row.nbytes / 2**20:.0f} MB row"


def op_plain_h5py_seek(path: str) -> str:
    """The old seek on the declared file: every declared step read (the issue's 4.4 GB)."""
    import h5py

    with h5py.File(path, "r") as f:
        st = f["streams/fourier_power/step"]
        n = st.shape[0]
        total = 0
        for i in range(0, n, 1 << 24):  # in blocks, so the bench itself survives
            total += st[i : i + (1 << 24)].size
    return f"read {total:,} declared steps"


def op_events_all(path: str) -> str:
    """The old reader: every event loaded and parsed."""
    import h5py

    with h5py.File(path, "r") as f:
        e = f["events"]
        n = e["step"].shape[0]
        out = [
            (int(s), k, json.loads(p))
            for s, k, p in zip(e["step"][:n], e["kind"][:n], e["payload"][:n])
        ]  # fmt: skip
    return f"loaded {len(out):,} events"


OPS = {
    "long_guarded": op_long_guarded,
    "long_unguarded": op_long_unguarded,
    "refused": op_refused,
    "inspect": op_inspect,
    "h5py_last_row": op_plain_h5py_last_row,
    "h5py_seek": op_plain_h5py_seek,
    "events_all": op_events_all,
}


def _play(path: str, cap: int) -> str:
    """Play at 32x with ticks that come a second late, 20 times; report the slowest tick."""
    from dynlab import player as player_mod

    player_mod.TICK_MAX_ROWS = cap
    p = player_mod.Player(path, duration=30.0)
    p.set_speed(32.0)
    p.seek(-1)
    p.play()
    clock, worst, delivered = p._clock, 0.0, 0
    for _ in range(20):
        clock += 1.0  # a slow tick: everything due in the last second at 32x
        t0 = time.perf_counter()
        delivered += len(p.advance(now=clock))
        worst = max(worst, time.perf_counter() - t0)
    p.close()
    return f"slowest tick {worst:.2f} s, {delivered:,} items"


def op_play_guarded(path: str) -> str:
    from dynlab.player import TICK_MAX_ROWS

    return _play(path, TICK_MAX_ROWS)


def op_play_unguarded(path: str) -> str:
    """The player before issue 16: every step due since the last tick, uncapped."""
    return _play(path, 1 << 62)


OPS.update(play_guarded=op_play_guarded, play_unguarded=op_play_unguarded)


def child(op: str, path: str) -> None:
    import h5py  # noqa: F401 - imports are not the operation's cost

    import dynlab.recording  # noqa: F401

    before = _status("VmRSS:")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the current RSS
    except OSError:
        pass
    t0 = time.perf_counter()
    result = OPS[op](path)
    dt = time.perf_counter() - t0
    print(json.dumps({"s": dt, "peak_mb": _status("VmHWM:") - before, "result": result}))


def measure(op: str, path: str, timeout: float = 600) -> dict:
    try:
        out = subprocess.run(
            [sys.executable, HERE, "--child", op, path], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"s": float("inf"), "peak_mb": float("nan"), "result": f"still running after {timeout:.0f} s"}
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        return {"s": float("nan"), "peak_mb": float("nan"), "result": f"failed: {last[:70]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=500_000)
    ap.add_argument("--skip-unguarded", action="store_true", help="measure only the guarded reader")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    d = tempfile.mkdtemp()
    files = {}
    for name, fn in (
        ("long", lambda p: make_long(p, args.steps)),
        ("declared", make_declared),
        ("chunk", make_chunk),
        ("events", make_events),
    ):
        p = os.path.join(d, f"{name}.h5")
        t0 = time.perf_counter()
        fn(p)
        files[name] = p
        print(
            f"{name}: {os.path.getsize(p) / 1e6:.1f} MB file, made in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
    cases = [
        (f"long ({args.steps:,} steps): open + seek to the end", "long", "long_guarded", "long_unguarded"),
        ("declared 4e8 rows, unwritten: open/seek", "declared", "refused", "h5py_seek"),
        ("one 256 MB chunk: inspect", "chunk", "inspect", "h5py_last_row"),
        ("10^6 events: inspect", "events", "inspect", "events_all"),
        (
            f"long ({args.steps:,} steps): play at 32x, 20 one-second-late ticks",
            "long",
            "play_guarded",
            "play_unguarded",
        ),
    ]
    rows = []
    for title, f, guarded, unguarded in cases:
        g = measure(guarded, files[f])
        u = {"s": float("nan"), "peak_mb": float("nan"), "result": "skipped"}
        if not args.skip_unguarded:
            u = measure(unguarded, files[f])
        rows.append((title, g["s"], g["peak_mb"], g["result"], u["s"], u["peak_mb"], u["result"]))
        print(f"  {title}: guarded {g}  unguarded {u}", flush=True)
    table(
        "Opening hostile and long recordings: guarded reader vs. unguarded reads (one process each)",
        rows,
        (
            "case",
            "guarded s",
            "guarded peak MB",
            "guarded result",
            "unguarded s",
            "unguarded peak MB",
            "unguarded",
        ),
    )
    for p in files.values():
        os.unlink(p)


if __name__ == "__main__":
    main()
