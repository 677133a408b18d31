"""Entry point of the frozen (PyInstaller) dynlab app.

The process host (``lab.runner``) starts engines in child processes with the "spawn"
context. In a frozen app a spawned child re-executes this very executable, so
``multiprocessing.freeze_support()`` must run first: it turns the child into the
worker instead of a second copy of the CLI/GUI.
"""

from __future__ import annotations

import multiprocessing
import sys


def main() -> int:
    multiprocessing.freeze_support()
    from dynlab.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
