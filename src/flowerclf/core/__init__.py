"""The bottom layer: plain data and pure functions every other layer builds on.

Image decoding, the preprocessing spec, the model-package format, errors, metric names.
Needs only NumPy and Pillow, so the base install (the runtime) can use all of it.
"""
