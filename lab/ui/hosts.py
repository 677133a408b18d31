"""The app's host choice: where new runs' engines run (thread, child process, Ray) and which Ray cluster.

Both are remembered in the settings. The Ray address goes to ``RAY_ADDRESS`` for this process
(``dynlab.ray_host.connect`` reads it); empty means an embedded local Ray, started on demand.
"""

from __future__ import annotations

import os
from typing import Any

from PySide6 import QtGui, QtWidgets

from dynlab.runner import HOSTS

HOST_TEXT = {
    "thread": "In a thread of the app",
    "process": "In a child process",
    "ray": "On Ray (cluster or local)",
}


def add_host_menu(window: Any, menu: QtWidgets.QMenu) -> QtWidgets.QMenu:
    """Add *Engine host* (thread / process / ray) and *Ray cluster address…* to ``menu``."""
    settings = window.settings
    saved = str(settings.value("run/host", "") or "")
    if saved in HOSTS and not os.environ.get("DYNLAB_HOST"):
        window.workspace.host = saved
    address = str(settings.value("ray/address", "") or "")
    if address and not os.environ.get("RAY_ADDRESS"):
        os.environ["RAY_ADDRESS"] = address
    sub = menu.addMenu("Engine &host")
    group = QtGui.QActionGroup(sub)
    for host in HOSTS:
        action = sub.addAction(HOST_TEXT.get(host, host))
        action.setCheckable(True)
        action.setChecked(window.workspace.host == host)
        action.setData(host)
        group.addAction(action)

    def chosen(action: QtGui.QAction) -> None:
        window.workspace.host = action.data()
        settings.setValue("run/host", action.data())

    group.triggered.connect(chosen)
    menu.addAction("Ray cluster &address…", lambda: ask_ray_address(window))
    return sub


def ask_ray_address(window: Any) -> None:
    """Ask for a Ray cluster address (HOST:PORT; empty for a local Ray) and remember it."""
    current = os.environ.get("RAY_ADDRESS", "")
    text, ok = QtWidgets.QInputDialog.getText(
        window,
        "Ray cluster",
        "Address (HOST:PORT, or empty for a local Ray started on demand).\n"
        "Used when Ray is next started: restart dynlab if a Ray run has already begun.",
        text=current,
    )
    if not ok:
        return
    text = text.strip()
    window.settings.setValue("ray/address", text)
    if text:
        os.environ["RAY_ADDRESS"] = text
    else:
        os.environ.pop("RAY_ADDRESS", None)
