"""Watching a user's own training loop: ``dynlab.watch`` and the channel around it.

``session``
    :func:`~dynlab.watching.session.watch` and the session a script steps (torch).
``channel``, ``wire``
    The local, owner-only channel and its message format (torch-free, Qt-free).
``client``
    ``dynlab live``, ``dynlab set/pause/resume/stop`` (torch-free).
``attached``
    :class:`~dynlab.watching.attached.WatchedSource`: a running session as a
    :class:`~dynlab.source.Source` for the app (torch-free, Qt-free).

This package imports nothing heavy itself: the CLI and the app use its torch-free parts.
"""

from __future__ import annotations


class StopRequested(Exception):
    """Raised by ``lab.step()`` when the run was stopped (``dynlab stop``, the app, a divergence).

    Inside ``with dynlab.watch(...)`` the block ends cleanly (the exception is swallowed and
    the recording closes with status ``stopped``); outside a ``with`` block it reaches you.
    """
