"""``promptcam bench``: runs the benchmark parts and prints one table.

Each part is a module in this package exposing ``run(cfg, args) -> list[BenchRow]``; rows are
plain dicts with ``part``, ``name``, ``value``, ``unit`` and an optional ``note`` (target,
machine, conditions). Benchmarks report numbers; tests assert behaviour, not speed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import platform
import time
from pathlib import Path

import psutil

from stream.config import Config
from stream.errors import PromptcamError

log = logging.getLogger(__name__)

BenchRow = dict[str, object]
# part -> what it measures (``promptcam bench --help`` lists these)
PARTS: dict[str, str] = {
    "transport": "1080p frames over ipc:// and tcp:// (frames/s, with and without shared memory), frame age",
    "engine": "streaming SAM 2 vs the official video predictor, 1/4/16 objects (ms/frame)",
    "offline": "the offline job (promptcam track) vs the official video predictor, 1/4/16 objects (ms/frame), and its per-stage times",
    "grounding": "one Grounding DINO detect at detector sizes 800 and 480 (ms)",
    "detectors": "every detector family's tiny-random detect, and detect_batch of 4 frames vs 4 calls (ms)",
    "loop": "the frame loop with and without re-grounding beside it (ms/frame)",
    "output": "web live view: CPU per viewer, capture-to-browser latency; ROS 2 mapping, MCAP write, DDS and Foxglove publish per frame at 1/4/16 objects (ms), recorder MB per minute (MP4, MCAP)",
    "soak": "memory and latency of capture + engine over a long run (--soak MINUTES)",
    "cameras": "one engine serving 1/2/4/8 cameras vs as many one-camera engines (frames/s, RSS)",
    "backends": "each tracker backend vs its reference's own streaming session, 1/4/16 objects (ms/frame, MB per 1,000 frames)",
    "quality": "tracking quality on held-out demo scenes: detector AP50, J&F with box prompts, HOTA/IDF1/ID switches/frames/s of promptcam and the reference Grounded SAM 2 strategy",
    "fleet": "a fleet on a local Ray instance: placement time per camera, recovery after engine kills (p50/max), 2 engines vs 1 (tracks/s)",
    "events": "events on held-out demo scenes: line-crossing and zone-entry precision/recall, duplicate alerts, latency; with --soak MINUTES the events service under 4 cameras (RSS, database, latency)",
}
DEFAULT_PARTS = ("transport", "engine", "grounding", "detectors", "loop", "output")


def row(part: str, name: str, value: float | int | str, unit: str = "", note: str = "") -> BenchRow:
    return {"part": part, "name": name, "value": value, "unit": unit, "note": note}


def openmp_policy() -> str:
    """The OpenMP wait policy of this process (promptcam sets PASSIVE unless the environment set
    one; ``GOMP_SPINCOUNT`` overrides the spin), for rows whose sides share one process."""
    spin = os.environ.get("GOMP_SPINCOUNT")
    return os.environ.get("OMP_WAIT_POLICY", "unset") + (f", GOMP_SPINCOUNT {spin}" if spin else "")


def machine() -> str:
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return f"{platform.machine()}, {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, {gpu}"


def format_table(rows: list[BenchRow]) -> str:
    def fmt(v: object) -> str:
        return f"{v:,.2f}" if isinstance(v, float) else str(v)

    cols = ["part", "name", "value", "unit", "note"]
    cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [
        max(len(c), *(len(x[i]) for x in cells)) if cells else len(c) for i, c in enumerate(cols)
    ]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for x in cells:
        lines.append(
            "  ".join(
                v.rjust(w) if i == 2 else v.ljust(w)
                for i, (v, w) in enumerate(zip(x, widths, strict=True))
            )
        )
    return "\n".join(lines)


def main(cfg: Config, args: argparse.Namespace) -> int:
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    events_soak = args.soak is not None and "events" in parts  # --parts events --soak: its own
    if (
        (args.soak is not None and not events_soak) or getattr(args, "churn", None) is not None
    ) and "soak" not in parts:
        parts.append("soak")
    for p in parts:
        if p not in PARTS:
            raise PromptcamError(f"unknown bench part '{p}' (known: {', '.join(PARTS)})")
    rows: list[BenchRow] = []
    started = time.time()
    for p in parts:
        module = importlib.import_module(f"clients.bench.{p}")
        log.info("bench part %s", p)
        part_rows: list[BenchRow] = module.run(cfg, args)
        rows.extend(part_rows)
        print(format_table(part_rows), flush=True)
        print(flush=True)
    print(f"machine: {machine()}; took {time.time() - started:.0f}s")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    return 0
