"""Pictures of a sweep for the docs: its band view and its phase diagram, grabbed offscreen.

Usage::

    QT_QPA_PLATFORM=offscreen python tools/sweep_screenshots.py bands DIR STREAM OUT.png [--note TEXT]
    QT_QPA_PLATFORM=offscreen python tools/sweep_screenshots.py phase DIR SUMMARY OUT.png [--note TEXT]

``--note`` is added to the view's caption (say there how small the sweep was).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=("bands", "phase"))
    ap.add_argument("folder")
    ap.add_argument("name", help="a stream (bands) or a summary's name (phase)")
    ap.add_argument("out")
    ap.add_argument("--note", default="")
    ap.add_argument("--seeds", action="store_true", help="draw the individual seeds too")
    ap.add_argument("--size", default="1000x560")
    args = ap.parse_args(argv)

    import pyqtgraph as pg
    from PySide6 import QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    pg.setConfigOptions(antialias=True, background="w", foreground="k")
    from dynlab.ui.sweep import SweepPage

    page = SweepPage.open(args.folder)
    w, h = (int(x) for x in args.size.split("x"))
    if args.what == "bands":
        page.show_stream(args.name)
        page.bands.set_show_seeds(args.seeds)
        view = page.bands
    else:
        page.show_summary(args.name)
        view = page.phase
    caption = view.caption.text()
    view.caption.setText(f"{caption} {args.note}".strip())
    view.caption.setVisible(True)
    view.setParent(None)
    view.resize(w, h)
    view.show()
    for _ in range(5):
        app.processEvents()
    view.export_image(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
