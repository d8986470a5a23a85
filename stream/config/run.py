"""The ``run`` section: how ``promptcam run`` supervises its children (restart backoff, start
timeouts, the progress watchdog, the status file). One class, ``RunConfig``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from stream.config.base import ConfigModel


class RunConfig(ConfigModel):
    restart_initial_s: float = Field(
        1.0, gt=0, le=60, description="First restart delay of a child that exited."
    )
    restart_max_s: float = Field(
        30.0, gt=0, le=600, description="Upper bound of the restart delay."
    )
    status_every_s: float = Field(
        5.0, gt=0, le=3600, description="Print a one-line status this often."
    )
    stop_timeout_s: float = Field(
        5.0, gt=0, le=60, description="Grace period before children are killed on stop."
    )
    stable_after_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="A child that ran this long before exiting is restarted after restart_initial_s again (backoff reset).",
    )
    max_start_failures: int = Field(
        5,
        ge=1,
        le=1000,
        description="Give up (exit non-zero) when a child fails this many times in a row before becoming ready.",
    )
    watchdog_s: float | None = Field(
        5.0,
        gt=0,
        le=3600,
        description="Progress watchdog: a ready child that stops answering (or is stopped) for this long, or an engine that publishes nothing while frames flow for this long (or 4x its last frame time, whichever is longer), is killed and restarted. None: off.",
    )
    capture_start_timeout_s: float | None = Field(
        60.0,
        gt=0,
        le=3600,
        description="A capture child that has not published its first status this long after it started (stopped, stuck opening something) is killed and restarted with backoff like one that crashed; a camera that is away does not count (capture reports 'waiting'). None: no limit.",
    )
    engine_start_timeout_s: float | None = Field(
        300.0,
        gt=0,
        le=3600,
        description="An engine child that has not answered 'stats' this long after it started is killed and restarted with backoff like one that crashed. Loading models is the slow part (the demo preset: 43 s on a 2-core CPU at load 11; a Hub preset loads more): leave margin. None: no limit.",
    )
    web_start_timeout_s: float | None = Field(
        60.0,
        gt=0,
        le=3600,
        description="A web child that has not answered /healthz this long after it started is killed and restarted with backoff like one that crashed. None: no limit.",
    )
    status_file: Path | None = Field(
        None,
        description="JSON status written by `promptcam run` every second (children, pids, restarts, last capture/engine stats); the web reads it for /metrics. None: a file in the run's temporary directory.",
    )
