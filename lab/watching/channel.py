"""The local channel between a watched script and its viewers (the CLI, the app).

Only the user who runs the script can open it:

* Each session has a Unix-domain socket in a private runtime directory
  (``$XDG_RUNTIME_DIR/dynlab``, else ``/tmp/dynlab-<uid>``), created mode 0700 and
  refused if another user owns it. The socket is mode 0600 and, on Linux, a peer with
  another user id is dropped at once (``SO_PEERCRED``). Where Unix sockets do not exist
  the channel listens on loopback TCP instead.
* Beside it a session file (mode 0600) holds the address and a random token; a peer must
  present the token in its first message or it is refused and disconnected.
* Messages are length-prefixed JSON with raw numpy bytes (:mod:`dynlab.watching.wire`);
  nothing received is unpickled.

The script never waits for a viewer: it appends to bounded in-memory queues, and one
server thread does all socket work. A viewer that reads too slowly misses display frames
(never events); recorded frames are written by the script itself and never dropped.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import selectors
import socket
import stat
import struct
import tempfile
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dynlab.watching.wire import Decoder, ProtocolError, encode

PROTOCOL = 1
#: Seconds the server thread sleeps between pumps of the display queue (sets the latency).
_TICK_S = 0.02
_IDLE_S = 2.0
_STATUS_EVERY_S = 0.25
_LOGIN_LIMIT = 64 << 10  # bytes a peer may send before it has shown the token
_LOGIN_TIMEOUT_S = 5.0
_SKIP_FRAMES_ABOVE = 8 << 20  # a viewer this far behind misses display frames
_DROP_CLIENT_ABOVE = 64 << 20
DISPLAY_QUEUE = 4096


class ChannelError(RuntimeError):
    """The channel cannot be used (unsafe runtime directory, refused connection, no answer)."""


class AccessDenied(ChannelError):
    """The session refused this connection (wrong or missing token)."""


def _uid() -> int | str:
    return os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")


def runtime_dir(create: bool = True) -> Path:
    """The private folder holding sessions' sockets and files (mode 0700, owned by this user)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        base = Path(xdg) / "dynlab"
    else:
        base = Path(tempfile.gettempdir()) / f"dynlab-{_uid()}"
    if create:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
    if base.exists():
        _check_private(base)
    return base


def _check_private(path: Path) -> None:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise ChannelError(f"{path} is not a plain directory; refusing to use it for the watch channel")
    if hasattr(os, "getuid"):
        if st.st_uid != os.getuid():
            raise ChannelError(f"{path} belongs to another user; refusing to use it for the watch channel")
        if st.st_mode & 0o077:
            os.chmod(path, 0o700)


@dataclass(frozen=True)
class SessionInfo:
    """What a session file says: where to connect and the token to show."""

    id: str
    name: str
    pid: int
    address: dict[str, Any]
    token: str
    script: str = ""
    recording: str = ""
    started: float = 0.0
    file: str = field(default="", compare=False)


def write_session_file(info: SessionInfo) -> Path:
    """Write ``info`` as ``<id>.json`` (created 0600, then renamed into place)."""
    folder = runtime_dir()
    path = folder / f"{info.id}.json"
    tmp = folder / f".{info.id}.json.tmp"
    data = {k: v for k, v in asdict(info).items() if k != "file"}
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def session_infos() -> list[SessionInfo]:
    """Every session whose process is alive (files of dead processes are removed)."""
    folder = runtime_dir(create=False)
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
                continue
            raw = json.loads(path.read_text(encoding="utf-8"))
            info = SessionInfo(
                **{k: raw[k] for k in SessionInfo.__dataclass_fields__ if k in raw}, file=str(path)
            )
        except (OSError, ValueError, TypeError):
            continue
        if not _alive(int(info.pid)):
            remove_session_files(info)
            continue
        out.append(info)
    return out


def remove_session_files(info: SessionInfo) -> None:
    for p in (info.file, info.address.get("unix")):
        if p:
            try:
                os.unlink(p)
            except OSError:
                pass


# ---------------------------------------------------------------------------- client side
class Connection:
    """A logged-in, blocking connection to one session (the CLI and the app's reader use it)."""

    def __init__(self, info: SessionInfo, *, timeout: float = 3.0, token: str | None = None) -> None:
        self.info = info
        addr = info.address
        try:
            if "unix" in addr:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                sock.connect(addr["unix"])
            else:
                host, port = addr["tcp"]
                sock = socket.create_connection((host, int(port)), timeout=timeout)
        except OSError as exc:
            raise ChannelError(f"session {info.name!r} (pid {info.pid}) does not answer: {exc}") from None
        self.sock = sock
        self._decoder = Decoder()
        self._inbox: deque[dict[str, Any]] = deque()
        self.send({"type": "hello", "token": info.token if token is None else token, "protocol": PROTOCOL})
        welcome = self.recv(timeout)
        if welcome is None:
            self.close()
            raise ChannelError(f"session {info.name!r} (pid {info.pid}) did not answer the login")
        if welcome["type"] == "error":
            self.close()
            raise AccessDenied(str(welcome.get("message", "refused")))
        self.welcome = welcome

    def send(self, msg: dict[str, Any]) -> None:
        try:
            self.sock.sendall(encode(msg))
        except OSError as exc:
            raise ChannelError(f"session {self.info.name!r}: connection lost ({exc})") from None

    def recv(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next message, or ``None`` on timeout; raises ``ChannelError`` when the session is gone."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._inbox:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                return None
            except OSError as exc:
                raise ChannelError(f"session {self.info.name!r}: connection lost ({exc})") from None
            if not data:
                raise ChannelError(f"session {self.info.name!r} closed the connection")
            self._inbox.extend(self._decoder.feed(data))
        return self._inbox.popleft()

    def request(self, msg: dict[str, Any], *, timeout: float = 3.0) -> dict[str, Any]:
        """Send ``msg`` and return the reply of the same ``id`` (other messages are skipped)."""
        msg = dict(msg, id=secrets.token_hex(4))
        self.send(msg)
        deadline = time.monotonic() + timeout
        while True:
            reply = self.recv(max(0.0, deadline - time.monotonic()))
            if reply is None:
                raise ChannelError(
                    f"session {self.info.name!r} did not answer {msg['type']!r} in {timeout:g} s"
                )
            if reply.get("id") == msg["id"] or reply["type"] == "error":
                return reply

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------- server side
class Handler(Protocol):
    """What the server asks the session (all called on the server thread)."""

    def snapshot(self) -> dict[str, Any]: ...
    def ready(self) -> dict[str, Any] | None: ...
    def history_until(self) -> int: ...
    def command(self, msg: dict[str, Any]) -> tuple[bool, str]: ...


@dataclass
class _Client:
    sock: socket.socket
    decoder: Decoder
    deadline: float
    authed: bool = False
    subscribed: bool = False
    wants_ready: bool = False
    out: bytearray = field(default_factory=bytearray)
    closing: bool = False


class Server:
    """Serves one session on its own thread; the script only calls ``publish_*`` (never blocks)."""

    def __init__(self, handler: Handler, *, name: str, session_id: str, extra: dict[str, Any]) -> None:
        self.handler = handler
        self.token = secrets.token_hex(32)
        self.name, self.session_id = name, session_id
        self.subscribers = 0
        self.dropped_frames = 0
        self._frames: deque[tuple[int, dict[str, np.ndarray]]] = deque(maxlen=DISPLAY_QUEUE)
        self._events: deque[dict[str, Any]] = deque()
        self._clients: dict[socket.socket, _Client] = {}
        self._closing = threading.Event()
        self._sel = selectors.DefaultSelector()
        self._last_status = 0.0
        folder = runtime_dir()
        if hasattr(socket, "AF_UNIX") and os.environ.get("DYNLAB_WATCH_TRANSPORT", "unix") != "tcp":
            path = str(folder / f"{session_id}.sock")
            if len(path.encode()) > 100:
                raise ChannelError(
                    f"socket path {path} is too long for a Unix socket; set XDG_RUNTIME_DIR shorter"
                )
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old = os.umask(0o177)  # created 0600: no window where another user could connect
            try:
                listener.bind(path)
            finally:
                os.umask(old)
            os.chmod(path, 0o600)
            self.address: dict[str, Any] = {"unix": path}
        else:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind(("127.0.0.1", 0))
            self.address = {"tcp": ["127.0.0.1", listener.getsockname()[1]]}
        listener.listen(16)
        listener.setblocking(False)
        self._listener = listener
        self._sel.register(listener, selectors.EVENT_READ, None)
        # With nobody connected the thread sleeps in select(); close() wakes it through this pair.
        self._waker, waker_end = socket.socketpair()
        waker_end.setblocking(False)
        self._sel.register(waker_end, selectors.EVENT_READ, "wake")
        self.info = SessionInfo(
            id=session_id, name=name, pid=os.getpid(), address=self.address, token=self.token, **extra
        )
        self.info = SessionInfo(**{**asdict(self.info), "file": str(write_session_file(self.info))})
        self._thread = threading.Thread(target=self._run, name=f"dynlab-watch-{name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the script's side
    def publish_frame(self, step: int, data: dict[str, np.ndarray]) -> None:
        """Queue a display frame (dropped when nobody watches, or the oldest when the queue is full)."""
        if self.subscribers:
            if len(self._frames) == DISPLAY_QUEUE:
                self.dropped_frames += 1
            self._frames.append((step, data))

    def publish_event(self, event: dict[str, Any]) -> None:
        """Queue an event for the viewers (events are never dropped)."""
        if self.subscribers:
            self._events.append(event)

    def close(self, timeout: float = 2.0) -> None:
        """Send what is queued, say goodbye, remove the socket and the session file."""
        if self._closing.is_set():
            return
        self._closing.set()
        try:
            self._waker.send(b"x")
        except OSError:
            pass
        self._thread.join(timeout)
        remove_session_files(self.info)

    # ------------------------------------------------------------------ the server thread
    def _run(self) -> None:
        try:
            while not self._closing.is_set():
                # Pump at display rate while someone is connected; otherwise sleep until a
                # connection (or close) arrives: an unwatched script pays nothing for the thread.
                idle = _IDLE_S if not self._clients else _TICK_S
                for key, mask in self._sel.select(timeout=idle):
                    if key.data is None:
                        self._accept()
                        continue
                    if isinstance(key.data, str):  # the waker
                        continue
                    c: _Client = key.data
                    if mask & selectors.EVENT_READ:
                        self._read(c)
                    if mask & selectors.EVENT_WRITE and c.sock in self._clients:
                        self._write(c)
                self._pump()
                self._housekeeping()
            self._pump(final=True)
            self._drain_writes(deadline=time.monotonic() + 0.5)
        finally:
            for c in list(self._clients.values()):
                self._drop(c)
            for key in list(self._sel.get_map().values()):
                self._sel.unregister(key.fileobj)
                if isinstance(key.fileobj, socket.socket):  # all are: the listener and the waker's end
                    key.fileobj.close()
            self._waker.close()
            self._sel.close()

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except OSError:
            return
        if not _same_user(sock):
            sock.close()
            return
        sock.setblocking(False)
        c = _Client(sock, Decoder(limit=_LOGIN_LIMIT), time.monotonic() + _LOGIN_TIMEOUT_S)
        self._clients[sock] = c
        self._sel.register(sock, selectors.EVENT_READ, c)

    def _read(self, c: _Client) -> None:
        try:
            data = c.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(c)
            return
        try:
            msgs = c.decoder.feed(data)
        except ProtocolError as exc:
            self._refuse(c, f"protocol error: {exc}")
            return
        for msg in msgs:
            if c.sock not in self._clients or c.closing:
                return
            self._handle(c, msg)

    def _handle(self, c: _Client, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if not c.authed:
            token = msg.get("token")
            ok = (
                kind == "hello"
                and isinstance(token, str)
                and hmac.compare_digest(token.encode("utf-8", "replace"), self.token.encode())
            )
            if not ok:
                self._refuse(c, "refused: this connection did not present the session's token")
                return
            c.authed = True
            c.decoder.limit = Decoder().limit
            self._send(c, {"type": "welcome", "protocol": PROTOCOL, **self.handler.snapshot()})
            return
        reply: dict[str, Any] = {"type": "reply", "id": msg.get("id")}
        if kind == "status":
            reply.update(self.handler.snapshot(), type="status")
        elif kind == "subscribe":
            if not c.subscribed:
                c.subscribed = True
                self.subscribers += 1
                c.wants_ready = True
                self._offer_ready(c)
            reply.update(ok=True)
        elif kind == "command":
            try:
                ok, text = self.handler.command(msg)
            except Exception as exc:  # a bad command must never take the server down
                ok, text = False, f"{type(exc).__name__}: {exc}"
            reply.update(ok=ok, message=text)
        else:
            reply.update(ok=False, message=f"unknown request {kind!r}")
        self._send(c, reply)

    def _offer_ready(self, c: _Client) -> None:
        ready = self.handler.ready()
        if ready is not None:
            c.wants_ready = False
            # Everything recorded so far is on disk now: the viewer reads it from the file
            # and takes the live frames after it.
            self._send(c, {"type": "ready", **ready, "history_until": self.handler.history_until()})

    def _pump(self, final: bool = False) -> None:
        for c in list(self._clients.values()):
            if c.wants_ready:
                self._offer_ready(c)
        frames = [self._frames.popleft() for _ in range(len(self._frames))]
        events = [self._events.popleft() for _ in range(len(self._events))]
        watchers = [c for c in self._clients.values() if c.subscribed and not c.wants_ready]
        if not watchers:
            return
        batch = encode({"type": "frames", "streams": _columns(frames)}) if frames else b""
        evmsg = encode({"type": "events", "items": events}) if events else b""
        now = time.monotonic()
        status = b""
        if final or now - self._last_status >= _STATUS_EVERY_S:
            self._last_status = now
            status = encode({"type": "status", **self.handler.snapshot()})
        for c in watchers:
            if batch:
                if len(c.out) > _SKIP_FRAMES_ABOVE:
                    self.dropped_frames += len(frames)
                else:
                    self._queue(c, batch)
            for part in (evmsg, status):
                if part:
                    self._queue(c, part)

    def _housekeeping(self) -> None:
        now = time.monotonic()
        for c in list(self._clients.values()):
            if not c.authed and now > c.deadline:
                self._refuse(c, "refused: no login within the time allowed")
            elif len(c.out) > _DROP_CLIENT_ABOVE:
                self._drop(c)

    def _send(self, c: _Client, msg: dict[str, Any]) -> None:
        self._queue(c, encode(msg))

    def _queue(self, c: _Client, data: bytes) -> None:
        c.out.extend(data)
        self._write(c)

    def _write(self, c: _Client) -> None:
        if c.out:
            try:
                n = c.sock.send(c.out)
                del c.out[:n]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._drop(c)
                return
        if c.closing and not c.out:
            self._drop(c)
            return
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.out else 0)
        key = self._sel.get_key(c.sock)
        if key.events != want:
            self._sel.modify(c.sock, want, c)

    def _refuse(self, c: _Client, message: str) -> None:
        c.closing = True
        self._queue(c, encode({"type": "error", "message": message}))

    def _drop(self, c: _Client) -> None:
        if self._clients.pop(c.sock, None) is None:
            return
        if c.subscribed:
            self.subscribers -= 1
        try:
            self._sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    def _drain_writes(self, deadline: float) -> None:
        while time.monotonic() < deadline and any(c.out for c in self._clients.values()):
            for key, mask in self._sel.select(timeout=0.02):
                if key.data is not None and mask & selectors.EVENT_WRITE:
                    self._write(key.data)


def _same_user(sock: socket.socket) -> bool:
    """On Linux, refuse a Unix-socket peer running as another user (the 0700 folder already should)."""
    if sock.family != getattr(socket, "AF_UNIX", None) or not hasattr(socket, "SO_PEERCRED"):
        return True
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return False
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid == os.getuid()


def _columns(frames: list[tuple[int, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """Frames as one column per stream ({name: {steps, values}}): one array pair per tick."""
    cols: dict[str, tuple[list[int], list[np.ndarray]]] = {}
    for step, data in frames:
        for name, value in data.items():
            steps, values = cols.setdefault(name, ([], []))
            steps.append(step)
            values.append(value)
    out = {}
    for name, (steps, values) in cols.items():
        try:
            stacked = np.stack(values).astype(np.float64, copy=False)
        except ValueError:  # a shape changed mid-batch: send the newest only
            steps, stacked = steps[-1:], np.asarray(values[-1], dtype=np.float64)[None]
        out[name] = {"steps": np.asarray(steps, dtype=np.int64), "values": stacked}
    return out


def connect(info: SessionInfo, timeout: float = 3.0) -> Connection:
    """Log in to a session (raises :class:`AccessDenied` or :class:`ChannelError`)."""
    return Connection(info, timeout=timeout)
