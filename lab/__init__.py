"""dynlab's lab: presets, runner, recording, player and CLI (Qt only under ``lab.ui``)."""

__version__ = "0.1.0"
