"""Find and steer running watched scripts from the command line (torch-free, Qt-free).

    dynlab live [--json]                       the running sessions
    dynlab set NAME lr=0.01 [k=v ...] [--group N]
    dynlab pause NAME | resume NAME | stop NAME

``NAME`` is a session's name, ``NAME:PID`` when several share it, or a PID.
Every command is applied by the script at its next ``lab.step()``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dynlab.watching.channel import ChannelError, Connection, SessionInfo, session_infos

COMMANDS = ("live", "set", "pause", "resume", "stop")


def _cli_error(message: str) -> Exception:
    from dynlab.cli import CliError

    return CliError(message)


def sessions(timeout: float = 1.5) -> list[dict[str, Any]]:
    """Status of every running session (one short connection each).

    A session that does not answer is listed with state ``"not answering"``.
    """
    out = []
    for info in session_infos():
        row: dict[str, Any] = {
            "id": info.id,
            "name": info.name,
            "pid": info.pid,
            "recording": info.recording,
            "script": info.script,
        }
        try:
            conn = Connection(info, timeout=timeout)
        except ChannelError as exc:
            row.update(state="not answering", step=0, steps_per_second=0.0, message=str(exc))
        else:
            conn.close()
            row.update({k: v for k, v in conn.welcome.items() if k not in ("type", "protocol")})
        row["info"] = info
        out.append(row)
    return out


def find(target: str) -> SessionInfo:
    """The session called ``target`` (``NAME``, ``NAME:PID`` or ``PID``); a clear error otherwise."""
    infos = session_infos()
    name, _, pid = target.rpartition(":") if ":" in target else (target, "", "")
    if target.isdigit():
        hits = [i for i in infos if i.pid == int(target)] or [i for i in infos if i.name == target]
    elif pid.isdigit():
        hits = [i for i in infos if i.name == name and i.pid == int(pid)]
    else:
        hits = [i for i in infos if i.name == target]
    if not hits:
        running = ", ".join(sorted({f"{i.name} (pid {i.pid})" for i in infos})) or "none"
        raise _cli_error(f"no running session {target!r}; running sessions: {running}")
    if len(hits) > 1:
        pids = ", ".join(f"{i.name}:{i.pid}" for i in hits)
        raise _cli_error(f"{len(hits)} sessions are called {target!r}: name one as NAME:PID ({pids})")
    return hits[0]


def send(
    info: SessionInfo, cmd: str, *, by: str = "cli", timeout: float = 3.0, **fields: Any
) -> dict[str, Any]:
    """Send one command; return the session's reply (``ok``, ``message``)."""
    conn = Connection(info, timeout=timeout)
    try:
        return conn.request({"type": "command", "cmd": cmd, "by": by, **fields}, timeout=timeout)
    finally:
        conn.close()


# ---------------------------------------------------------------------------- the CLI
def add_parsers(sub: Any) -> None:
    """Add ``live``, ``set``, ``pause``, ``resume`` and ``stop`` to ``dynlab``'s sub-parsers."""
    lv = sub.add_parser("live", help="list the running watched scripts (dynlab.watch)")
    lv.add_argument("--json", action="store_true", help="machine-readable output")
    st = sub.add_parser("set", help="change a hyperparameter of a running watched script")
    st.add_argument("target", metavar="NAME", help="session name, NAME:PID or PID")
    st.add_argument(
        "assignments", nargs="+", metavar="KEY=VALUE", help="param_groups key and value, e.g. lr=0.01"
    )
    st.add_argument("--group", type=int, help="change one parameter group only (default: all)")
    for cmd, text in (
        ("pause", "hold a running watched script inside its next step()"),
        ("resume", "let a paused watched script go on"),
        ("stop", "end a running watched script cleanly (its recording closes as stopped)"),
    ):
        p = sub.add_parser(cmd, help=text)
        p.add_argument("target", metavar="NAME", help="session name, NAME:PID or PID")


def main(args: argparse.Namespace) -> int:
    """Run one of :data:`COMMANDS` (``dynlab.cli`` dispatches here)."""
    if args.command == "live":
        return _live(args)
    info = find(args.target)
    replies = []
    try:
        if args.command == "set":
            for item in args.assignments:
                key, eq, value = item.partition("=")
                if not eq or not key.strip():
                    raise _cli_error(f"{item!r}: expected KEY=VALUE, e.g. lr=0.01")
                replies.append(send(info, "set", name=key.strip(), value=value.strip(), group=args.group))
                if not replies[-1].get("ok"):
                    break
        else:
            replies.append(send(info, args.command))
    except ChannelError as exc:
        raise _cli_error(str(exc)) from None
    for r in replies:
        if not r.get("ok"):
            raise _cli_error(f"{info.name}: {r.get('message', 'refused')}")
        print(f"{info.name}: {r.get('message', 'ok')}")
    return 0


def _live(args: argparse.Namespace) -> int:
    rows = sessions()
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k != "info"} for r in rows], indent=2, default=str))
        return 0
    if not rows:
        print("no running sessions (a script shows here while it runs inside dynlab.watch(...))")
        return 0
    table = [("NAME", "PID", "STATE", "STEP", "STEPS/S", "RECORDING")]
    for r in rows:
        table.append(
            (
                str(r["name"]),
                str(r["pid"]),
                str(r.get("state", "?")),
                f"{int(r.get('step', 0)):,}",
                f"{float(r.get('steps_per_second', 0.0)):.1f}",
                str(r.get("recording") or "(not recorded)"),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    sys.stdout.flush()
    return 0
