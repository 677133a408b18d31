"""Hostile, damaged and contended recordings (issue 16): each test makes its own bad file.

A recording is shared like a document: replaying a colleague's file must not hang, crash,
eat the machine or read anything outside the file. Every fault here is injected into a
small file the test writes itself, then the reader, writer, CLI or app is shown to refuse
it (or repair it) with a clear message.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from dynlab import recording_reader
from dynlab.cli import main
from dynlab.frames import Event, Frame, Stream
from dynlab.recording import (
    Recorder,
    Recording,
    RecordingError,
    abort_open_recorders,
    finalise,
    needs_finalise,
)

ROOT = Path(__file__).resolve().parents[1]
STREAMS = (
    Stream("loss", "scalar", (), units="nats"),
    Stream("norms", "vector", (2,), labels=("a", "b")),
    Stream("grid", "heatmap", (2, 3), rows=("r0", "r1"), cols=("c0", "c1", "c2")),
)


def make(path, n=20, streams=STREAMS, events=(), meta=None, status="finished"):
    """A small, valid recording: ``n`` steps of every stream, then the given events."""
    rec = Recorder(
        path, streams, meta or {"engine": "test", "hyperparameters": {"lr": 0.1}}, flush_interval=1e9
    )
    for t in range(n):
        data = {s.name: np.full(s.shape, float(t)) for s in streams}
        rec.write(Frame.make(t, data))
    for ev in events:
        rec.event(ev)
    rec.close(status)
    return Path(path)


def refused(path, match):
    with pytest.raises(RecordingError, match=match):
        Recording(path).close()


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "dynlab.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# A writer killed mid-run (SIGKILL, so nothing is closed): what a crash leaves behind.
KILLED_WRITER = """
import os, sys
import numpy as np
from dynlab.frames import Frame, Stream, Event
from dynlab.recording import Recorder
streams = [Stream("loss", "scalar", ()), Stream("grid", "heatmap", (8, 8))]
rec = Recorder(sys.argv[1], streams, {"engine": "test"}, flush_interval=0.0)
for t in range(int(sys.argv[2])):
    rec.write(Frame.make(t, {"loss": float(t), "grid": np.full((8, 8), float(t))}))
    if t % 50 == 0:
        rec.event(Event(t, "info", {"message": "tick"}, 0.0))
os.kill(os.getpid(), 9)
"""


def killed_recording(path, steps=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path), str(steps)], env=env, timeout=120)
    assert out.returncode == -signal.SIGKILL
    return Path(path)


# ============================================================================ item 2: one writer
def test_a_second_writer_is_refused_while_the_first_keeps_writing(tmp_path, capsys):
    path = tmp_path / "same.h5"
    first = Recorder(path, STREAMS[:1], {"engine": "test"}, flush_interval=0.0)
    first.write(Frame.make(0, {"loss": 1.0}))
    with pytest.raises(RecordingError, match=r"is being written by another run \(pid \d+"):
        Recorder(path, STREAMS[:1], {"engine": "test"}, overwrite=True)
    # The CLI refuses too, before building anything, even with --overwrite.
    assert main(["run", "quadratic", "--steps", "5", "--record", str(path), "--overwrite", "--quiet"]) == 2
    assert "is being written by another run" in capsys.readouterr().err
    for t in range(1, 100):
        first.write(Frame.make(t, {"loss": float(t)}))
    first.close("finished")
    with Recording(path) as rec:
        steps, _ = rec.read("loss")
        assert steps.tolist() == list(range(100)) and rec.attrs["engine"] == "test"
    assert not Path(f"{path}.lock").exists()


def test_record_onto_an_existing_file_needs_overwrite_and_never_replaces_a_non_recording(tmp_path, capsys):
    path = tmp_path / "mine.h5"
    assert main(["run", "quadratic", "--steps", "30", "--record", str(path), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["run", "quadratic", "--steps", "5", "--record", str(path), "--quiet"]) == 2
    assert "the file exists (use --overwrite to replace it)" in capsys.readouterr().err
    with Recording(path) as rec:
        assert rec.rows("train_loss") == 30  # untouched
    assert main(["run", "quadratic", "--steps", "5", "--record", str(path), "--quiet", "--overwrite"]) == 0
    with Recording(path) as rec:
        assert rec.rows("train_loss") == 5
    preset = tmp_path / "mine.toml"
    preset.write_text('format_version = 1\nengine = "quadratic"\n')
    before = preset.read_text()
    capsys.readouterr()
    assert main(["run", "quadratic", "--steps", "5", "--record", str(preset), "--quiet", "--overwrite"]) == 2
    assert "is not a dynlab recording; refusing to replace it" in capsys.readouterr().err
    assert preset.read_text() == before


def test_a_stale_lock_left_by_a_killed_writer_is_taken_over(tmp_path):
    path = tmp_path / "stale.h5"
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    lock = Path(f"{path}.lock")
    import socket

    lock.write_text(json.dumps({"pid": int(gone.stdout), "host": socket.gethostname(), "token": "x"}))
    make(path, n=3)
    assert not lock.exists()
    # A lock file with garbage in it (a crash while writing it), old enough: also stale.
    lock.write_text("{not json")
    os.utime(lock, (time.time() - 60, time.time() - 60))
    Recorder(path, STREAMS, {"engine": "again"}, overwrite=True).close()
    with Recording(path) as rec:
        assert rec.attrs["engine"] == "again"


# ============================================================================ item 3: flush clock, abort
def test_the_flush_clock_writes_rows_when_no_new_frame_arrives(tmp_path):
    path = tmp_path / "clock.h5"
    rec = Recorder(path, STREAMS[:1], {"engine": "test"}, flush_interval=0.05)
    rec.start_clock()
    rec.write(Frame.make(0, {"loss": 0.0}))  # may flush at once: the interval ran since creation
    for t in range(1, 200):
        rec.write(Frame.make(t, {"loss": float(t)}))
    rec.event(Event(199, "info", {"message": "then the step hangs"}, 0.0))
    # No more writes: only the clock can put rows 1..199 and the event on disk.
    deadline = time.monotonic() + 30
    while True:
        with Recording(path) as r:
            if r.rows("loss") == 200 and r.event_count == 1:
                break
        assert time.monotonic() < deadline, "the clock never flushed"
        time.sleep(0.02)
    rec.close("stopped")
    assert rec._clock is not None and not rec._clock.is_alive()


def test_flush_if_due_follows_the_interval(tmp_path):
    rec = Recorder(tmp_path / "due.h5", STREAMS[:1], {"engine": "test"}, flush_interval=3600)
    rec.write(Frame.make(0, {"loss": 0.0}))
    assert rec.flush_if_due() is False
    rec.flush_interval = 0.0
    assert rec.flush_if_due() is True
    with Recording(tmp_path / "due.h5") as r:
        assert r.rows("loss") == 1
    rec.close()
    assert rec.flush_if_due() is False  # closed: nothing to do, no error


def test_abort_from_another_thread_closes_the_file_with_everything_pending(tmp_path):
    path = tmp_path / "abort.h5"
    rec = Recorder(path, STREAMS[:1], {"engine": "test"}, flush_interval=1e9)

    def worker():  # a run's thread: writes, then its engine step hangs (returns here)
        for t in range(50):
            rec.write(Frame.make(t, {"loss": float(t)}))
        rec.event(Event(49, "warning", {"message": "about to hang"}, 0.0))

    th = threading.Thread(target=worker)
    th.start()
    th.join()
    assert abort_open_recorders("interrupted") == [str(path)]
    with h5py.File(path, "r") as f:  # plain open: closed, not flagged as written
        assert f.attrs["status"] == "interrupted" and f.attrs["last_step"] == 49
        assert f["streams/loss/step"].shape == (50,) and f["events/kind"].shape == (1,)
    assert not Path(f"{path}.lock").exists()
    with pytest.raises(RecordingError, match="closed"):
        rec.write(Frame.make(50, {"loss": 0.0}))


# ============================================================================ item 17: batched events
def test_events_are_written_on_the_flush_clock_not_one_flush_each(tmp_path, monkeypatch):
    path = tmp_path / "sets.h5"
    flushes = {"n": 0}
    real = h5py.File.flush

    def counting(self):
        flushes["n"] += 1
        return real(self)

    monkeypatch.setattr(h5py.File, "flush", counting)
    rec = Recorder(path, STREAMS[:1], {"engine": "test"}, flush_interval=1e9)
    for i in range(20_000):
        rec.event(Event(i, "set", {"name": "lr", "old": i, "new": i + 1}, 0.0))
    assert flushes["n"] == 0  # 20,000 live changes, no file flush
    rec.close("stopped")
    with Recording(path) as r:
        assert r.event_count == 20_000
        assert r.events(19_999, None)[0].payload == {"name": "lr", "old": 19_999, "new": 20_000}


# ============================================================================ item 7: read from itself only
class FifoGuard:
    """A FIFO that records whether anyone opened it for reading (and never blocks them)."""

    def __init__(self, path):
        self.path = str(path)
        os.mkfifo(self.path)
        self.opened = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while True:
            fd = os.open(self.path, os.O_WRONLY)  # returns when a reader opens it
            if self._stop.is_set():
                os.close(fd)
                return
            self.opened += 1
            os.close(fd)  # the reader sees end of file at once

    def close(self):
        self._stop.set()
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)  # releases the blocked open
        self._thread.join(5)
        os.close(fd)


def test_external_raw_storage_is_refused_without_reading_it(tmp_path):
    secret = tmp_path / "passwd"
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 4)
    fifo = FifoGuard(tmp_path / "fifo")
    try:
        for target, name in ((secret, "file.h5"), (Path(fifo.path), "fifo.h5")):
            path = make(tmp_path / name)
            with h5py.File(path, "r+") as f:
                g = f["streams/loss"]
                del g["value"]
                g.create_dataset("value", shape=(20,), dtype="f8", external=[(str(target), 0, 160)])
            refused(path, r"stream 'loss'/value keeps its data in an external file .*read from itself only")
            assert main(["inspect", str(path)]) == 2
        # A FIFO given as the recording itself (or as the place to record to): refused unopened.
        refused(fifo.path, "not a regular file")
        assert (
            main(["run", "quadratic", "--steps", "5", "--record", fifo.path, "--overwrite", "--quiet"]) == 2
        )
        assert fifo.opened == 0
    finally:
        fifo.close()


def test_external_links_soft_links_and_virtual_datasets_are_refused(tmp_path):
    other = make(tmp_path / "other.h5")
    ext = make(tmp_path / "ext.h5")
    with h5py.File(ext, "r+") as f:
        f["streams/elsewhere"] = h5py.ExternalLink(str(other), "/streams/loss")
    refused(ext, r"stream 'elsewhere' is an external link to .*other.h5")
    root = make(tmp_path / "root.h5")
    with h5py.File(root, "r+") as f:
        del f["streams"]
        f["streams"] = h5py.ExternalLink(str(other), "/streams")
    refused(root, r"/streams is an external link")
    soft = make(tmp_path / "soft.h5")
    with h5py.File(soft, "r+") as f:
        f["streams/loss2"] = h5py.SoftLink("/streams/loss")
    refused(soft, r"stream 'loss2' is a soft link")
    vds = make(tmp_path / "vds.h5")
    with h5py.File(vds, "r+") as f:
        layout = h5py.VirtualLayout(shape=(20,), dtype="f8")
        layout[:] = h5py.VirtualSource(str(other), "streams/loss/value", shape=(20,))
        del f["streams/loss/value"]
        f["streams/loss"].create_virtual_dataset("value", layout)
    refused(vds, r"stream 'loss'/value is a virtual dataset")
    plugin = make(tmp_path / "plugin.h5")
    with h5py.File(plugin, "r+") as f:  # a filter HDF5 would look for in its plugin path (= run code)
        del f["streams/loss/value"]
        f["streams/loss"].create_dataset(
            "value", shape=(20,), chunks=(5,), dtype="f8", compression=32015, allow_unknown_filter=True
        )
    refused(plugin, r"stream 'loss'/value uses HDF5 filter 32015, which needs a plugin: refused")


# ============================================================================ item 8: bounded inflation
def test_a_declared_but_unwritten_shape_is_refused(tmp_path):
    path = make(tmp_path / "declared.h5")
    with h5py.File(path, "r+") as f:
        g = f["streams/grid"]
        del g["step"], g["value"]
        # 4e8 rows: 3.2 GB of steps and 19 GB of values declared, nothing stored.
        g.create_dataset("step", shape=(400_000_000,), maxshape=(None,), dtype="i8", chunks=(4096,))
        g.create_dataset(
            "value", shape=(400_000_000, 2, 3), maxshape=(None, 2, 3), dtype="f8", chunks=(4096, 2, 3)
        )
    assert path.stat().st_size < 1 << 20
    refused(path, r"stream 'grid'/step declares \(400000000,\) .* but stores 0 bytes")


def test_a_chunk_larger_than_a_reader_inflates_is_refused(tmp_path):
    path = make(tmp_path / "bomb.h5")
    with h5py.File(path, "r+") as f:
        g = f["streams/grid"]
        del g["value"]
        rows, cols = 3000, 3000  # one 72 MB chunk, a few kB compressed
        ds = g.create_dataset(
            "value",
            shape=(20, rows, cols),
            maxshape=(None, rows, cols),
            dtype="f8",
            chunks=(1, rows, cols),
            compression="gzip",
        )
        z = zlib.compressobj(1)
        blob = b"".join(z.compress(bytes(1 << 20)) for _ in range(rows * cols * 8 >> 20)) + z.flush()
        ds.id.write_direct_chunk((19, 0, 0), blob)  # the last row: what inspect reads
        g.attrs["rows"] = [str(i) for i in range(rows)]
    assert path.stat().st_size < 2 << 20
    refused(path, r"stream 'grid'/value: one chunk is 69 MiB, more than a reader inflates \(64 MiB\)")


def test_many_events_are_read_by_range_never_all_at_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(recording_reader, "MAX_EVENTS", 1000)
    evs = [Event(i, "info", {"message": f"m{i}"}, 0.0) for i in range(5000)]
    path = make(tmp_path / "events.h5", events=evs)
    with Recording(path) as r:
        assert r.event_count == 5000
        with pytest.raises(RecordingError, match=r"5,000 events, more than dynlab loads at once \(1,000\)"):
            r.events()
        assert [e.step for e in r.events(limit=3)] == [0, 1, 2]
        assert [e.payload["message"] for e in r.events(4000, 4003)] == ["m4000", "m4001", "m4002"]
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "events (5000):" in out and "... 4950 more" in out


# ============================================================================ item 9: thinned reads
def test_a_thinned_read_loads_only_the_rows_it_returns(tmp_path):
    path = tmp_path / "long.h5"
    n, width = 100_000, 64  # 51 MB of values
    rec = Recorder(path, (Stream("w", "vector", (width,)),), {"engine": "test"}, flush_interval=1e9)
    rec._pending["w"].extend((t, np.full(width, float(t))) for t in range(n))
    rec.last_step = n - 1
    rec.close("finished")
    with Recording(path) as r:
        tracemalloc.start()
        steps, values = r.read("w", max_rows=1000)
        frames = list(r.frames(10, None, max_rows=20_000, max_bytes=1 << 20))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert len(steps) <= 1001 and steps[0] == 0 and steps[-1] == n - 1
    assert np.all(np.diff(steps) > 0) and np.array_equal(values[:, 0], steps)
    # 1 MiB of values for the frames: 2,048 rows of 512 bytes, the last one exact.
    assert len(frames) <= 2049 and frames[-1].step == n - 1 and frames[0].step == 10
    assert peak < 8 << 20, f"thinned reads allocated {peak / 2**20:.1f} MiB (the stream is 51 MiB)"


# ============================================================================ item 10: terminal escapes
def test_inspect_escapes_control_characters_from_the_file(tmp_path, capsys):
    osc52 = "\x1b]52;c;cm0gLXJmIH4=\x07"
    path = make(
        tmp_path / "esc.h5",
        streams=(Stream("loss\x1b[2J", "vector", (1,), labels=("x\x9b31m",)),),
        events=[Event(3, "warn\x1b[31m", {"message": "bidi \u202e txt" + osc52}, 0.0)],
        meta={"engine": "e" + osc52, "preset_name": "p\x1b[2J", "hyperparameters": {"lr\x1b": "\x07"}},
    )
    with h5py.File(path, "r+") as f:
        f.attrs["status"] = "finished\x1b[8m"
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert not any(ord(c) < 32 and c != "\n" or 0x7F <= ord(c) < 0xA0 or c == "\u202e" for c in out)
    assert "e\\x1b]52;c;cm0gLXJmIH4=\\x07" in out and "p\\x1b[2J" in out and "finished\\x1b[8m" in out
    assert "loss\\x1b[2J" in out and "\\u202e" in out and "warn\\x1b[31m" in out
    assert main(["inspect", "--json", str(path)]) == 0
    assert "\x1b" not in capsys.readouterr().out
    odd = tmp_path / "name\x1b]0;pwned\x07.h5"
    assert main(["inspect", str(odd)]) == 2
    assert "\x1b" not in capsys.readouterr().err


# ============================================================================ item 11: damage fails fast
PROBE = """
import sys
from dynlab.recording import Recording, RecordingError
try:
    with Recording(sys.argv[1]) as r:
        for name in r.streams:
            r.read(name)
        r.events()
    print("READ")
except RecordingError as exc:
    print("REFUSED", exc)
"""


def _probe(path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # A hang is the bug: a regression fails here on the timeout instead of blocking the suite.
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_damaged_recording_of_a_killed_writer_fails_fast(tmp_path):
    path = killed_recording(tmp_path / "killed.h5", steps=400)
    data = bytearray(path.read_bytes())
    hits = 0
    for sig in (b"EADB", b"EAIB"):  # chunk-index blocks: a bad checksum made SWMR readers retry for minutes
        at = data.find(sig)
        while at >= 0:
            data[at + 6 : at + 10] = b"\xff\xff\xff\xff"
            hits += 1
            at = data.find(sig, at + 4)
    assert hits
    bad = tmp_path / "bad.h5"
    bad.write_bytes(bytes(data))
    out = _probe(bad)
    assert out.startswith("REFUSED") and "truncated or corrupt" in out
    half = tmp_path / "half.h5"
    half.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    out = _probe(half)
    assert out.startswith("REFUSED") and "truncated or corrupt" in out and "superblock says" in out


# ============================================================================ item 12: finalise
def test_finalise_makes_a_killed_recording_readable_by_every_hdf5_tool(tmp_path, capsys):
    path = killed_recording(tmp_path / "killed.h5", steps=300)
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(path, "r")  # what h5dump and friends see
    with Recording(path) as r:  # dynlab reads it, and says it can be finalised
        assert r.needs_finalise and r.status == "recording" and r.rows("loss") >= 299
    assert needs_finalise(path)
    assert main(["inspect", str(path)]) == 0
    assert "inspect --repair" in capsys.readouterr().out
    assert main(["inspect", "--repair", str(path)]) == 0
    captured = capsys.readouterr()
    assert "cleared the HDF5 write flags" in captured.err and "status interrupted" in captured.out
    with h5py.File(path, "r") as f:
        assert f.attrs["status"] == "interrupted" and f.attrs["last_step"] >= 298
        n = f["streams/loss/step"].shape[0]
        assert f["streams/loss/step"][:].tolist() == list(range(n))
    assert not needs_finalise(path)
    assert "already final" in finalise(path)


def test_finalise_refuses_while_the_writer_lives(tmp_path):
    path = tmp_path / "live.h5"
    rec = Recorder(path, STREAMS[:1], {"engine": "test"}, flush_interval=0.0)
    rec.write(Frame.make(0, {"loss": 0.0}))
    assert not needs_finalise(path)
    with pytest.raises(RecordingError, match="being written by another run"):
        finalise(path)
    with Recording(path) as r:
        assert r.writer_alive and not r.needs_finalise
    rec.close()


def test_a_writer_killed_before_it_streamed_is_named_and_finalised(tmp_path):
    path = tmp_path / "early.h5"
    with h5py.File(path, "w", libver="latest") as f:
        f.attrs["format_version"] = 1
        f.attrs["status"] = "recording"
        f.create_group("streams")
    data = bytearray(path.read_bytes())  # as if killed while open for writing, before SWMR
    data[11] = 0x01
    end = 12 + 4 * data[9]
    from dynlab.h5safe import lookup3

    data[end : end + 4] = lookup3(bytes(data[:end])).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    refused(path, r"its writer was killed before it started streaming; `dynlab inspect --repair")
    assert "status set to interrupted" in finalise(path)
    with Recording(path) as r:
        assert r.status == "interrupted"


# ============================================================================ item 13: malformed fields
def _set_attr(obj, key, value):
    obj.attrs[key] = value


def _bad_lengths(f):
    f["streams/loss/step"].resize((10,))


def _two_d_step(f):
    g = f["streams/loss"]
    del g["step"]
    g.create_dataset("step", data=np.arange(40).reshape(20, 2))


def _string_values(f):
    g = f["streams/loss"]
    del g["value"]
    g.create_dataset("value", data=np.array([str(i) for i in range(20)], dtype=h5py.string_dtype()))


def _list_payload(f):
    e = f["events"]
    for k, v in (("step", 1), ("time", 0.0), ("kind", "info"), ("payload", "[1, 2]")):
        e[k].resize((1,))
        e[k][0] = v


MALFORMED = [
    (_bad_lengths, r"stream 'loss': step has 10 rows but value has 20"),
    (
        lambda f: _set_attr(f, "format_version", np.array([1, 2])),
        r"format_version is array\(\[1, 2\]\), expected one",
    ),
    (lambda f: _set_attr(f, "format_version", "abc"), r"format_version is 'abc', expected one integer"),
    (lambda f: _set_attr(f["streams/norms"], "labels", "ab"), r"stream 'norms': attribute 'labels' is 'ab'"),
    (_two_d_step, r"stream 'loss'/step has shape \(20, 2\), expected one dimension"),
    (
        lambda f: _set_attr(f, "hyperparameters", "[1, 2]"),
        r"hyperparameters is '\[1, 2\]', expected a JSON object",
    ),
    (_string_values, r"stream 'loss'/value holds text, expected numbers"),
    (
        lambda f: _set_attr(f["streams/loss"], "kind", "sound"),
        r"stream 'loss': kind is 'sound', expected one of",
    ),
    (_list_payload, r"event 0: payload is \[1, 2\], expected a JSON object"),
]


@pytest.mark.parametrize("inject, message", MALFORMED)
def test_malformed_fields_give_clear_errors(tmp_path, capsys, inject, message):
    from dynlab.player import Player

    path = make(tmp_path / "bad.h5")
    with h5py.File(path, "r+") as f:
        inject(f)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dynlab: error: ") and "internal error" not in err, err
    import re

    assert re.search(message, err), err
    with pytest.raises(RecordingError, match=message):
        Player(str(path)).close()  # what the app's open_replay calls (it shows RecordingError in a dialog)


# ============================================================================ item 14: step order
def test_steps_out_of_order_or_repeated_are_refused_and_repair_sorts_them(tmp_path, capsys):
    rev = make(tmp_path / "reversed.h5")
    with h5py.File(rev, "r+") as f:
        f["streams/loss/step"][:] = np.arange(20)[::-1]
    refused(rev, r"stream 'loss': steps are out of order \(row 1: step 18 after 19\); refused.*--repair")
    dup = make(tmp_path / "dup.h5")
    with h5py.File(dup, "r+") as f:
        st = f["streams/loss/step"]
        steps = st[:]
        steps[5] = 4  # row 5 repeats step 4
        st[:] = steps
    refused(dup, r"stream 'loss': steps are repeated \(row 5: step 4 after 4\)")
    assert main(["inspect", str(dup)]) == 2
    assert "--repair" in capsys.readouterr().err
    assert main(["inspect", "--repair", str(dup)]) == 0
    assert "sorted stream 'loss' by step (1 repeated rows dropped)" in capsys.readouterr().err
    with Recording(dup) as r:
        steps, values = r.read("loss")
        assert steps.tolist() == [s for s in range(20) if s != 5]
        assert float(values[4]) == 5.0  # the last row written for step 4 won
    assert "sorted stream 'loss'" in finalise(rev)
    with Recording(rev) as r:
        steps, values = r.read("loss")
        assert steps.tolist() == list(range(20)) and values.tolist() == list(range(19, -1, -1))


# ============================================================================ item 15: arguments first
def test_bad_arguments_and_record_paths_fail_before_anything_is_built(tmp_path, capsys, monkeypatch):
    import dynlab.engines.base as base

    def no_engine(*a, **k):
        raise AssertionError("an engine was looked up before the arguments were checked")

    monkeypatch.setattr(base, "get_engine", no_engine)
    folder = tmp_path / "dir.h5"
    folder.mkdir()
    cases = [
        (["--steps", "99999999999999999999"], "--steps must be at least 1 and at most 9223372036854775807"),
        (["--seed", "99999999999999999999"], "--seed must be between 0 and"),
        (
            ["--record", str(tmp_path / "nodir/sub/x.h5")],
            "folder " + str(tmp_path / "nodir/sub") + " does not exist",
        ),
        (["--record", str(folder)], "it is a directory"),
        (["--overwrite"], "--overwrite needs --record FILE"),
    ]
    for extra, message in cases:
        assert main(["run", "quadratic", "--quiet", *extra]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and "engine failed" not in captured.err
        assert "recorded to" not in captured.out
    assert not (tmp_path / "nodir").exists()


def test_recorded_to_is_said_only_of_a_file_that_was_written(tmp_path, capsys, monkeypatch):
    import dynlab.worker as worker

    def full_disk(path, *a, **k):
        raise RecordingError(f"cannot create recording {path}: [Errno 28] No space left on device")

    monkeypatch.setattr(worker, "Recorder", full_disk)
    path = tmp_path / "never.h5"
    assert main(["run", "quadratic", "--steps", "5", "--record", str(path), "--quiet"]) != 0
    captured = capsys.readouterr()
    assert "recorded to" not in captured.out
    assert f"recording {path} was not written" in captured.err


# ============================================================================ items 5, 6: the app
def _magenta_pixels(widget) -> int:
    from PySide6 import QtGui

    img = widget.grab().toImage().convertToFormat(QtGui.QImage.Format.Format_RGB32)
    arr = np.frombuffer(img.constBits(), np.uint8).reshape(img.height(), img.bytesPerLine() // 4, 4)
    return int(((arr[..., 2] == 255) & (arr[..., 1] == 0) & (arr[..., 0] == 255)).sum())


def test_replay_shows_text_from_the_file_as_plain_text_and_loads_nothing(qtbot, tmp_path, monkeypatch):
    """Items 5 and 6: HTML in names and messages is shown literally; braces do not break markers."""
    pytest.importorskip("pytestqt")
    from PySide6 import QtCore, QtGui, QtWidgets

    from dynlab.ui.main_window import MainWindow

    png = tmp_path / "m.png"
    img = QtGui.QImage(24, 24, QtGui.QImage.Format.Format_RGB32)
    img.fill(QtGui.QColor(255, 0, 255))
    assert img.save(str(png))
    tag = f'<img src="{png}">'
    streams = (
        Stream("loss", "scalar", (), units=tag),
        Stream("norms", "vector", (2,), labels=(tag, "b" + tag)),
        Stream("grid", "heatmap", (2, 3), rows=(tag, "r1"), cols=("c0", tag, "c2")),
    )
    braces = "H5Dread failed: bad heap index {12345, 0}"
    events = [Event(5, "warning", {"message": tag}, 0.0), Event(9, "warning", {"message": braces}, 0.0)]
    path = make(
        tmp_path / "hostile.h5", streams=streams, events=events, meta={"engine": "test", "preset": ""}
    )
    monkeypatch.setenv("DYNLAB_RECORDINGS", str(tmp_path / "rec"))
    settings = QtCore.QSettings(str(tmp_path / "s.ini"), QtCore.QSettings.Format.IniFormat)
    win = MainWindow(host="thread", settings=settings)
    qtbot.addWidget(win)
    win.resize(1400, 900)
    win.show()
    assert win.open_replay(str(path))
    ws = win.workspace
    qtbot.waitUntil(lambda: len(ws.views) == 3)
    assert _magenta_pixels(win) == 0
    markers = [ln for v in ws.views for ln in getattr(v, "_event_lines", [])]
    assert markers, "no event markers drawn"
    for line in markers:  # the {...} message reached pyqtgraph's label formatting unharmed
        line.label.valueChanged()
    texts = {ln.label.toPlainText() for ln in markers}
    assert f"warning: {braces}" in texts and f"warning: {tag}" in texts
    for line in markers:
        QtWidgets.QToolTip.showText(QtCore.QPoint(20, 20), line.toolTip(), win)
        tips = [
            w for w in QtWidgets.QApplication.topLevelWidgets() if w.inherits("QTipLabel") and w.isVisible()
        ]
        assert tips and all(_magenta_pixels(t) == 0 for t in tips)
        doc = QtGui.QTextDocument()
        doc.setHtml(line.toolTip())
        assert doc.toPlainText().endswith(line.label.toPlainText())  # shown literally
        QtWidgets.QToolTip.hideText()
    heat = next(v for v in ws.views if type(v).__name__ == "HeatmapView")
    heat.hover.setText(heat.value_at(0, 1))
    assert heat.hover.textFormat() == QtCore.Qt.TextFormat.PlainText and tag in heat.hover.text()
    assert _magenta_pixels(heat) == 0
    ws.seek(0)
    ws.seek(19)
    assert win.isVisible() and _magenta_pixels(win) == 0
    win.close()


def test_a_malformed_recording_opens_a_dialog_and_the_app_stays_up(qtbot, tmp_path, monkeypatch):
    pytest.importorskip("pytestqt")
    from PySide6 import QtCore

    from dynlab.ui.main_window import MainWindow

    path = make(tmp_path / "bad.h5")
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = "<b>abc</b>"
    monkeypatch.setenv("DYNLAB_RECORDINGS", str(tmp_path / "rec"))
    settings = QtCore.QSettings(str(tmp_path / "s.ini"), QtCore.QSettings.Format.IniFormat)
    win = MainWindow(host="thread", settings=settings)
    qtbot.addWidget(win)
    win.show()
    assert not win.open_replay(str(path))
    box = win._last_box
    assert box.textFormat() == QtCore.Qt.TextFormat.PlainText
    assert "format_version is '<b>abc</b>', expected one integer" in box.text()
    assert win.isVisible()
    box.close()
    win.close()
