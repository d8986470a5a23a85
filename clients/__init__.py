"""promptcam's clients: CLI, launcher, web, subscriber, benchmarks."""

import stream  # noqa: F401  (sets the OpenMP wait policy before torch loads: stream/__init__.py)
