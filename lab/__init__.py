"""dynlab's lab: presets, runner, recording, player and CLI (Qt only under ``lab.ui``)."""

__version__ = "0.1.0"


def __getattr__(name: str):  # noqa: ANN202 - lazy: ``import dynlab`` stays free of torch and Qt
    if name == "watch":
        from dynlab.watching.session import watch

        return watch
    if name == "StopRequested":
        from dynlab.watching import StopRequested

        return StopRequested
    raise AttributeError(f"module 'dynlab' has no attribute {name!r}")
