"""dynlab: a desktop lab for live training dynamics.

The public API, for scripts and notebooks::

    import dynlab
    dynlab.__version__
    with dynlab.Recording("run.h5") as rec:      # read a recording (h5py, no Qt)
        steps, values = rec.read("train_loss")
    with dynlab.watch(model, optimizer, name="my-run") as lab:   # watch your own loop
        for x, y in loader:
            ...
            lab.step(loss=loss)

The app and the command line are ``dynlab`` (``dynlab.cli``); the Qt shell is
``dynlab.ui``, the engines ``dynlab.engines``, the views ``dynlab.views``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Recording", "RecordingError", "StopRequested", "__version__", "watch"]

if TYPE_CHECKING:
    from dynlab.recording import Recording, RecordingError
    from dynlab.watching import StopRequested
    from dynlab.watching.session import watch


def __getattr__(name: str) -> Any:
    # Imported on first use: `import dynlab` (every command, the app's start) stays free of h5py.
    if name in ("Recording", "RecordingError"):
        from dynlab import recording

        return getattr(recording, name)
    if name == "watch":
        from dynlab.watching.session import watch

        return watch
    if name == "StopRequested":
        from dynlab.watching import StopRequested

        return StopRequested
    raise AttributeError(f"module 'dynlab' has no attribute {name!r}")
