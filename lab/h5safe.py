"""Opening an HDF5 file that may be hostile, damaged, or still being written.

A recording is something people share, so the reader treats every file as untrusted:

* **Structure first.** The superblock is parsed by hand (a few bytes, no HDF5 call) so a
  truncated file is named as such, and the file-consistency flags tell whether a writer
  has it open (or had, and was killed).
* **Bounded opens.** A file whose writer is gone is read with one metadata read attempt:
  HDF5's SWMR reader otherwise retries a bad checksum about a hundred times per object,
  which turned one damaged file into a minutes-long hang.
* **Read from itself only.** External raw storage, external links, soft links, virtual
  datasets and filters that would load a plugin are refused before any data is read.
* **Bounded inflation.** A chunk may not exceed ``MAX_CHUNK_BYTES`` and a dataset may not
  declare more than ``MAX_INFLATE`` times the bytes it stores (gzip cannot do better
  than ~1032:1), so a small file cannot make a reader allocate gigabytes.

It also holds the writer's lock file (one writer per recording) and :func:`clear_flags`,
what ``h5clear`` does for a file whose writer was killed.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import struct
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from h5py import h5d, h5f, h5p

SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Superblock file-consistency flags (format spec, superblock v2/v3).
WRITE_ACCESS, SWMR_WRITE_ACCESS = 0x01, 0x04
#: Largest chunk a reader will inflate (a dynlab chunk is at most one wide row or 512 KiB).
MAX_CHUNK_BYTES = 64 << 20
#: Most logical bytes a dataset may declare per byte it stores.
MAX_INFLATE = 1100
#: Declarations this small are never refused (an empty, just-created dataset stores 0 bytes).
INFLATE_FLOOR = 1 << 20
#: Filters that HDF5 (or h5py) has built in; anything else would load a plugin (= run code).
SAFE_FILTERS = {
    1: "gzip",
    2: "shuffle",
    3: "fletcher32",
    4: "szip",
    5: "nbit",
    6: "scaleoffset",
    32000: "lzf",
}
#: A lock file younger than this whose content is not readable yet is being written.
_LOCK_WRITE_GRACE = 5.0


class RecordingError(RuntimeError):
    """A recording that cannot be written or read; the message says which file and why."""


def show(x: Any, limit: int = 60) -> str:
    """A value from a file, quoted and shortened for an error message (control characters escaped)."""
    text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- superblock
@dataclass(frozen=True)
class Superblock:
    """What the first bytes of an HDF5 file say about it."""

    offset: int  # where the superblock starts (after a user block)
    version: int
    flags: int  # file-consistency flags (v2/v3); 0 for older versions
    base: int
    eoa: int  # end of allocated space, relative to ``base``
    size: int  # the file's size on disk

    @property
    def open_for_write(self) -> bool:
        return bool(self.flags & (WRITE_ACCESS | SWMR_WRITE_ACCESS))

    @property
    def truncated(self) -> bool:
        return self.size < self.base + self.eoa


def read_superblock(path: str | Path) -> Superblock | None:
    """Parse the superblock of ``path``; ``None`` if there is no HDF5 signature where HDF5 looks."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        offset = 0
        while offset + 8 <= size:
            fh.seek(offset)
            head = fh.read(96)
            if head[:8] == SIGNATURE:
                return _parse_superblock(head, offset, size)
            offset = 512 if offset == 0 else offset * 2
    return None


def _parse_superblock(b: bytes, offset: int, size: int) -> Superblock | None:
    version = b[8] if len(b) > 8 else -1
    if version in (2, 3):
        o = b[9]
        if o not in (2, 4, 8) or len(b) < 12 + 4 * o + 4:
            return None
        base = int.from_bytes(b[12 : 12 + o], "little")
        eoa = int.from_bytes(b[12 + 2 * o : 12 + 3 * o], "little")
        return Superblock(offset, version, b[11], base, eoa, size)
    if version in (0, 1):
        o = b[13]
        start = 24 if version == 0 else 28
        if o not in (2, 4, 8) or len(b) < start + 3 * o:
            return None
        base = int.from_bytes(b[start : start + o], "little")
        eoa = int.from_bytes(b[start + 2 * o : start + 3 * o], "little")
        return Superblock(offset, version, 0, base, eoa, size)
    return None  # a version this code does not know: HDF5 itself will judge it


def clear_flags(path: str | Path) -> bool:
    """Clear the superblock's write/SWMR flags of a file whose writer is gone (``h5clear -s -i``).

    The end-of-allocation address is raised to the file's size as well, so metadata that
    the killed writer had already placed past its last recorded end stays addressable.
    Returns ``False`` if there was nothing to clear.
    """
    sb = read_superblock(path)
    if sb is None or sb.version not in (2, 3):
        raise RecordingError(f"{path}: no HDF5 v2/v3 superblock to finalise")
    if not sb.open_for_write:
        return False
    with open(path, "r+b") as fh:
        fh.seek(sb.offset)
        head = bytearray(fh.read(96))
        o = head[9]
        end = 12 + 4 * o
        head[11] = 0
        eoa = max(sb.eoa, sb.size - sb.base)
        head[12 + 2 * o : 12 + 3 * o] = eoa.to_bytes(o, "little")
        head[end : end + 4] = struct.pack("<I", lookup3(bytes(head[:end])))
        fh.seek(sb.offset)
        fh.write(head[: end + 4])
        fh.flush()
        os.fsync(fh.fileno())
    return True


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & 0xFFFFFFFF


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``: the checksum HDF5 puts on its metadata."""
    m = 0xFFFFFFFF
    n = len(data)
    a = b = c = (0xDEADBEEF + n + initval) & m
    i = 0
    while n > 12:
        x, y, z = struct.unpack_from("<III", data, i)
        a, b, c = (a + x) & m, (b + y) & m, (c + z) & m
        a = (a - c) & m ^ _rot(c, 4)
        c = (c + b) & m
        b = (b - a) & m ^ _rot(a, 6)
        a = (a + c) & m
        c = (c - b) & m ^ _rot(b, 8)
        b = (b + a) & m
        a = (a - c) & m ^ _rot(c, 16)
        c = (c + b) & m
        b = (b - a) & m ^ _rot(a, 19)
        a = (a + c) & m
        c = (c - b) & m ^ _rot(b, 4)
        b = (b + a) & m
        i += 12
        n -= 12
    if n == 0:
        return c
    x, y, z = struct.unpack("<III", data[i:] + b"\0" * (12 - n))
    a, b, c = (a + x) & m, (b + y) & m, (c + z) & m
    c = (c ^ b) - _rot(b, 14) & m
    a = (a ^ c) - _rot(c, 11) & m
    b = (b ^ a) - _rot(a, 25) & m
    c = (c ^ b) - _rot(b, 16) & m
    a = (a ^ c) - _rot(c, 4) & m
    b = (b ^ a) - _rot(a, 14) & m
    c = (c ^ b) - _rot(b, 24) & m
    return c


# ----------------------------------------------------------------------------- writer lock
def lock_path(path: str | Path) -> Path:
    """The lock file beside a recording: ``run.h5`` -> ``run.h5.lock``."""
    return Path(f"{path}.lock")


def _proc_start(pid: int) -> str:
    """The kernel's start time of ``pid`` (Linux), so a reused pid is not taken for the writer."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def lock_holder(path: str | Path) -> dict[str, Any] | None:
    """Who holds the lock of ``path`` (its JSON), or ``None``: no lock file, or a stale one."""
    lp = lock_path(path)
    try:
        text = lp.read_text()
        age = time.time() - lp.stat().st_mtime
    except OSError:
        return None
    try:
        info = json.loads(text)
        pid = int(info["pid"])
    except (ValueError, KeyError, TypeError):
        # A lock being written right now, or garbage left by a crash.
        return {"pid": None, "host": "", "token": ""} if age < _LOCK_WRITE_GRACE else None
    if info.get("host") != socket.gethostname():
        return info  # another machine's process: cannot tell, so assume it is alive
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    if info.get("start") and _proc_start(pid) and info["start"] != _proc_start(pid):
        return None  # the pid was reused by another process
    return info


def describe_holder(info: dict[str, Any]) -> str:
    if info.get("pid") is None:
        return "another process (its lock file is being written)"
    return f"pid {info.get('pid')} on {info.get('host')!s} since {info.get('since', '?')}"


class WriterLock:
    """One writer per recording: ``<file>.lock`` created with O_EXCL, holding the writer's pid.

    A lock whose process is gone (killed writer) is stale and is taken over. The lock is
    advisory and works beside SWMR, which gives up HDF5's own file lock once streaming.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = lock_path(path)
        self.token = uuid.uuid4().hex
        self.held = False

    @classmethod
    def acquire(cls, path: str | Path) -> WriterLock:
        """Take the lock of ``path`` or raise ``RecordingError`` naming who holds it."""
        lock = cls(path)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "start": _proc_start(os.getpid()),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "token": lock.token,
        }
        for _ in range(5):
            try:
                fd = os.open(lock.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = lock_holder(path)
                if holder is not None:
                    raise RecordingError(
                        f"{path} is being written by another run ({describe_holder(holder)}); "
                        f"if that run is gone, delete {lock.path}"
                    ) from None
                lock._remove_stale()
                continue
            except OSError as exc:
                raise RecordingError(f"cannot create recording {path}: {exc.strerror or exc}") from None
            with os.fdopen(fd, "w") as fh:
                json.dump(info, fh)
            lock.held = True
            return lock
        raise RecordingError(f"{path}: could not take its lock {lock.path} (another run keeps taking it)")

    def _remove_stale(self) -> None:
        # Move it aside first: only one of two racing takers wins the rename.
        aside = self.path.with_name(f"{self.path.name}.stale-{self.token}")
        try:
            os.rename(self.path, aside)
        except OSError:
            return
        try:
            os.unlink(aside)
        except OSError:
            pass

    def release(self) -> None:
        """Remove the lock file if it is still ours."""
        if not self.held:
            return
        self.held = False
        try:
            if json.loads(self.path.read_text()).get("token") == self.token:
                os.unlink(self.path)
        except (OSError, ValueError):
            pass


# ----------------------------------------------------------------------------- bounded open
def _libhdf5() -> Any:
    """The libhdf5 that h5py itself uses (same process-wide state), or ``None``."""
    import glob

    cands: list[str] = []
    try:
        with open("/proc/self/maps") as fh:  # Linux: exactly the loaded copy
            cands += [ln.split()[-1] for ln in fh if "libhdf5" in ln and "_hl" not in ln]
    except OSError:
        pass
    root = Path(h5py.__file__).parent
    for pat in ("../h5py.libs/libhdf5-*", ".dylibs/libhdf5.*", "libhdf5*"):
        cands += [p for p in glob.glob(str(root / pat)) if "_hl" not in p]
    for c in dict.fromkeys(cands):
        if c.startswith("/") or os.path.exists(c):
            try:
                lib = ctypes.CDLL(c)
                fn = lib.H5Pset_metadata_read_attempts
            except (OSError, AttributeError):
                continue
            fn.argtypes, fn.restype = [ctypes.c_int64, ctypes.c_uint], ctypes.c_int
            return fn
    return None


_SET_ATTEMPTS: Any = False  # resolved on first use


def _fapl(attempts: int | None, locking: bool) -> h5p.PropFAID:
    global _SET_ATTEMPTS
    fapl = h5p.create(h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5f.LIBVER_EARLIEST, h5f.LIBVER_LATEST)
    if not locking:
        fapl.set_file_locking(False, True)
    if attempts is not None:
        if _SET_ATTEMPTS is False:
            _SET_ATTEMPTS = _libhdf5()
        if _SET_ATTEMPTS is not None:
            _SET_ATTEMPTS(fapl.id, attempts)
    return fapl


def open_readonly(path: str, *, writer_alive: bool) -> tuple[h5py.File, Superblock | None]:
    """Open ``path`` for reading, failing fast on damage; returns the file and its superblock.

    A file with no writer flags is opened plainly (no SWMR retries at all). A file still
    flagged as open for writing is opened as a SWMR reader: with HDF5's usual retries while
    its writer lives (a torn read heals on retry), with a single attempt once the writer is
    gone (a bad checksum then is damage, and retrying it only hangs).
    """
    sb = read_superblock(path)
    if sb is not None and sb.truncated and not writer_alive:
        raise RecordingError(
            f"{path}: truncated or corrupt: the file has {sb.size:,} bytes but its superblock says "
            f"{sb.base + sb.eoa:,} (cut short?)"
        )
    try:
        if sb is not None and sb.open_for_write:
            if not sb.flags & SWMR_WRITE_ACCESS:
                raise RecordingError(
                    f"{path}: "
                    + (
                        "is being created and is not readable yet; try again in a moment"
                        if writer_alive
                        else "its writer was killed before it started streaming; "
                        f"`dynlab inspect --repair {path}` finalises it"
                    )
                )
            fapl = _fapl(None if writer_alive else 1, locking=writer_alive)
            fid = h5f.open(os.fsencode(path), h5f.ACC_RDONLY | h5f.ACC_SWMR_READ, fapl=fapl)
        else:
            fid = h5f.open(os.fsencode(path), h5f.ACC_RDONLY, fapl=_fapl(None, locking=False))
    except RecordingError:
        raise
    except (OSError, RuntimeError, ValueError) as exc:
        raise RecordingError(f"{path}: cannot open: truncated or corrupt HDF5 file ({exc})") from None
    return h5py.File(fid), sb


# ----------------------------------------------------------------------------- what a reader touches
def hard_child(group: h5py.Group, name: str, where: str) -> Any:
    """``group[name]`` if it is a hard link into this file; refuse external and soft links."""
    link = group.get(name, getlink=True)
    if link is None:
        return None
    if isinstance(link, h5py.ExternalLink):
        raise RecordingError(
            f"{where} is an external link to {show(link.filename, 200)}: a recording is read from itself only"
        )
    if isinstance(link, h5py.SoftLink):
        raise RecordingError(f"{where} is a soft link to {show(link.path)}: a dynlab recording has none")
    return group[name]


def check_dataset(ds: Any, where: str, dtype_kinds: str) -> None:
    """Refuse a dataset that would read outside the file, run a plugin, or inflate without bound."""
    if not isinstance(ds, h5py.Dataset):
        raise RecordingError(f"{where} is not a dataset")
    dcpl = ds.id.get_create_plist()
    layout = dcpl.get_layout()
    if layout == h5d.VIRTUAL:
        raise RecordingError(f"{where} is a virtual dataset (data from other files): refused")
    if dcpl.get_external_count():
        name = dcpl.get_external(0)[0]
        raise RecordingError(
            f"{where} keeps its data in an external file {show(name, 200)}: a recording is read from itself only"
        )
    for i in range(dcpl.get_nfilters()):
        code = dcpl.get_filter(i)[0]
        if code not in SAFE_FILTERS:
            raise RecordingError(f"{where} uses HDF5 filter {code}, which needs a plugin: refused")
    dt = ds.dtype
    if dtype_kinds == "str":
        if h5py.check_string_dtype(dt) is None:
            raise RecordingError(f"{where} holds {dt}, expected text")
    elif dt.kind not in dtype_kinds:
        what = {"iu": "integers", "iufb": "numbers", "f": "floats", "fiu": "numbers"}.get(
            dtype_kinds, dtype_kinds
        )
        raise RecordingError(f"{where} holds {_dtype_name(dt)}, expected {what}")
    item = max(1, dt.itemsize)
    if layout == h5d.CHUNKED:
        chunk = int(np.prod(dcpl.get_chunk(), dtype=np.float64)) * item
        if chunk > MAX_CHUNK_BYTES:
            raise RecordingError(
                f"{where}: one chunk is {chunk / 2**20:,.0f} MiB, more than a reader inflates "
                f"({MAX_CHUNK_BYTES >> 20} MiB)"
            )
    logical = float(np.prod(ds.shape, dtype=np.float64)) * item
    if logical > INFLATE_FLOOR:
        stored = ds.id.get_storage_size()
        if logical > MAX_INFLATE * stored:
            raise RecordingError(
                f"{where} declares {ds.shape} ({logical / 2**20:,.0f} MiB) but stores {stored:,} bytes: "
                "refused (declared but unwritten, or inflates beyond any real compression)"
            )


def _dtype_name(dt: np.dtype) -> str:
    if h5py.check_string_dtype(dt) is not None or dt.kind in "SUO":
        return "text"
    return str(dt)
