"""The Qt shell of dynlab: main window, gallery, run controls, parameters, timeline, export."""
