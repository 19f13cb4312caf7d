"""Defaults that the command line shows and the library uses: one definition each, importing nothing heavy."""

WEIGHTS_NAME = "digitscan.pt"
"""DigitNet's archive, shipped in weights/."""
LINES_NAME = "lines.pt"
"""The line reader's archive (lines.py), shipped beside it."""
RUN_BATCH = 256
"""Images scored per batch by `run`."""
FIT_EPOCHS = 5
FIT_BATCH = 128
FIT_LR = 3e-3
"""Peak learning rate of fit's one-cycle schedule."""
LINE_BATCH = 32
"""Lines per step of `fit --fields`, of similar widths."""
LINE_LR = 2e-3
"""Peak learning rate of `fit --fields`."""
CALIBRATION_RENDERS = 5000
"""Held-out digits rendered as scans to fit the confidence temperature on (`fit --calibrate`): all of
the holdout. With 2,000 the temperature chosen swung from 0.72 to 1.32 between seeds of one recipe."""
WATCH_STEADY = 3
"""Frames in a row a new reading must hold before `watch` prints it: a digit moved into view flickers."""
