"""promptcam's GPU engine: models, segmenter, tracking, the engine process."""

import stream  # noqa: F401  (sets the OpenMP wait policy before torch loads: stream/__init__.py)
