"""Soak bench (``promptcam bench --soak MINUTES``): memory and latency over a long run.

Runs real ``promptcam capture`` (demo source) and ``promptcam engine`` child processes on
random loopback ports, supervised like ``promptcam run`` does. Reads ``tracks.<camera>`` and
measures, per message, the end-to-end latency (arrival here minus ``t_capture_ns``), and
samples the engine's RSS (psutil) every ``sample_every_s``. After a warm-up (the first
``warmup_fraction`` of messages) the rest is cut into ``windows`` equal-count windows;
the report gives the first and last window and least-squares slopes per hour. Flat memory
and latency mean: no growth with stream length.

The same measurement backs the compressed long-run test (thousands of frames, tiny-random,
fast demo), which asserts the last window is within tolerance of the first.

Camera churn (``--churn CYCLES``, instead of the stream soak): one demo capture per churn
camera and an engine; 4 cameras added to the engine over its control socket, tracked until each
published a few tracks messages, removed again, CYCLES times after 2 warm-up cycles. The
engine's RSS is sampled 1 s after each cycle's removals; the start is the median over the
first 5 cycles after warm-up, the end over the last 5 (one sample swings by ~15 %: frames in
flight, the grounding worker); the table and JSON give both, the growth (target: under 15 %)
and the peak.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypedDict

import psutil
import zmq

from clients.bench import BenchRow, row
from clients.launcher import ChildSpec, Supervisor, child_argv, write_child_config
from stream import bus as zbus
from stream.bus import free_loopback_endpoint
from stream.config import Config, RunConfig, load_config
from stream.errors import PromptcamError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SoakPlan:
    """How long and how fast. The run ends at ``frames`` processed frames or ``duration_s``,
    whichever comes first (at least one must be set)."""

    frames: int | None = None
    duration_s: float | None = None
    fps: float = 30.0
    width: int = 320
    height: int = 240
    warmup_fraction: float = 0.15
    windows: int = 6
    sample_every_s: float = 1.0
    start_timeout_s: float = 300.0


@dataclass(frozen=True)
class Window:
    frames: int
    seconds: float
    fps: float
    latency_ms_p50: float
    latency_ms_p95: float
    rss_mb: float


class SoakSummary(TypedDict):
    """A soak's figures (``SoakResult.summary()``): the rows of ``bench --parts soak``."""

    frames_processed: int
    seconds: float
    engine_fps: float
    rss_mb_first_window: float
    rss_mb_last_window: float
    rss_slope_mb_per_h: float
    latency_ms_p50_first_window: float
    latency_ms_p50_last_window: float
    latency_ms_p95_first_window: float
    latency_ms_p95_last_window: float
    latency_slope_ms_per_h: float
    engine_restarts: int
    frames_dropped_by_engine: int | None
    windows: list[dict[str, object]]


@dataclass
class SoakResult:
    frames_processed: int = 0
    seconds: float = 0.0
    windows: list[Window] = field(default_factory=list)
    rss_slope_mb_per_h: float = 0.0
    latency_slope_ms_per_h: float = 0.0
    engine_restarts: int = 0
    engine_stats: dict[str, object] = field(default_factory=dict)

    def summary(self) -> SoakSummary:
        first, last = self.windows[0], self.windows[-1]
        dropped = self.engine_stats.get("frames_dropped")
        return {
            "frames_processed": self.frames_processed,
            "seconds": round(self.seconds, 1),
            "engine_fps": round(self.frames_processed / self.seconds, 2) if self.seconds else 0.0,
            "rss_mb_first_window": round(first.rss_mb, 1),
            "rss_mb_last_window": round(last.rss_mb, 1),
            "rss_slope_mb_per_h": round(self.rss_slope_mb_per_h, 2),
            "latency_ms_p50_first_window": round(first.latency_ms_p50, 2),
            "latency_ms_p50_last_window": round(last.latency_ms_p50, 2),
            "latency_ms_p95_first_window": round(first.latency_ms_p95, 2),
            "latency_ms_p95_last_window": round(last.latency_ms_p95, 2),
            "latency_slope_ms_per_h": round(self.latency_slope_ms_per_h, 2),
            "engine_restarts": self.engine_restarts,
            "frames_dropped_by_engine": dropped if isinstance(dropped, int) else None,
            "windows": [asdict(w) for w in self.windows],
        }


def slope_per_hour(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, in value per hour (0 for < 2 points)."""
    if len(points) < 2:
        return 0.0
    mx = statistics.fmean(p[0] for p in points)
    my = statistics.fmean(p[1] for p in points)
    var = sum((x - mx) ** 2 for x, _ in points)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / var * 3600.0


def _percentile(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def soak_config(base: Config, plan: SoakPlan) -> Config:
    """``base`` with the demo source at the plan's rate and size and every socket on a fresh
    loopback port (so a soak never collides with a running ``promptcam run``)."""
    tree = base.model_dump(mode="json")
    tree["source"].update(
        {
            "uri": "demo",
            "fps": plan.fps,
            "width": plan.width,
            "height": plan.height,
            "realtime": True,
        }
    )
    tree["bus"].update(
        {k: free_loopback_endpoint() for k in ("frames", "tracks", "annotated", "control")}
    )
    tree["bus"]["detections"] = None
    return Config.model_validate(tree)


def measure(plan: SoakPlan, base: Config | None = None) -> SoakResult:
    """Run capture + engine per ``plan`` and measure; ``base`` gives models and engine settings
    (default: ``tiny-random`` on CPU)."""
    if plan.frames is None and plan.duration_s is None:
        raise PromptcamError("a soak needs a frame count or a duration")
    if base is None:
        base = load_config(None, {"models.preset": "tiny-random", "models.device": "cpu"})
    cfg = soak_config(base, plan)
    with tempfile.TemporaryDirectory(prefix="promptcam-soak-") as tmp:
        path = write_child_config(cfg, Path(tmp))
        specs = [ChildSpec(n, child_argv(n, path)) for n in ("capture", "engine")]
        run = RunConfig.model_validate({"max_start_failures": 1})
        with (Path(tmp) / "children.log").open("w") as out:
            sup = Supervisor(specs, run, output=out)
            try:
                sup.start()
                return _measure(cfg, plan, sup, Path(tmp) / "children.log")
            finally:
                sup.stop()


def _measure(cfg: Config, plan: SoakPlan, sup: Supervisor, logfile: Path) -> SoakResult:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = zbus.connect(
        ctx,
        zmq.SUB,
        cfg.bus.tracks,
        cfg.bus,
        subscribe=[f"tracks.{cfg.camera}".encode()],
        curve=True,
    )
    msgs: list[tuple[float, float]] = []  # (monotonic arrival, latency ms)
    rss: list[tuple[float, float]] = []  # (monotonic, MB)
    try:
        deadline = time.monotonic() + plan.start_timeout_s
        while not msgs:
            sup.poll()
            if time.monotonic() > deadline:
                tail = logfile.read_text(errors="replace")[-2000:]
                raise PromptcamError(
                    f"no tracks within {plan.start_timeout_s:.0f}s of starting the soak; children said: {tail}"
                )
            _recv(sub, msgs, 200)
        started = time.monotonic()
        next_sample = started
        engine_pid = sup.pids()["engine"]
        proc = psutil.Process(engine_pid)
        while True:
            now = time.monotonic()
            if plan.frames is not None and len(msgs) >= plan.frames:
                break
            if plan.duration_s is not None and now - started >= plan.duration_s:
                break
            if now >= next_sample:
                next_sample = now + plan.sample_every_s
                sup.poll()
                if sup.pids().get("engine") != engine_pid:
                    raise PromptcamError("the engine exited during the soak; see its log")
                rss.append((now, proc.memory_info().rss / 2**20))
            _recv(sub, msgs, 50)
        ended = time.monotonic()
        stats = zbus.request(cfg.bus.control, {"cmd": "stats"}, 5000, cfg.bus).get("stats", {})
    finally:
        sub.close(0)
        ctx.term()
    result = summarise(msgs, rss, plan, started, ended)
    result.engine_restarts = sup.children["engine"].restarts
    result.engine_stats = stats if isinstance(stats, dict) else {}
    return result


def _recv(sub: zmq.Socket[bytes], msgs: list[tuple[float, float]], timeout_ms: int) -> None:
    if not sub.poll(timeout_ms, zmq.POLLIN):
        return
    while True:
        try:
            parts = sub.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        arrival_ns = time.time_ns()
        header = json.loads(parts[1])
        msgs.append((time.monotonic(), (arrival_ns - int(header["t_capture_ns"])) / 1e6))


def summarise(
    msgs: Sequence[tuple[float, float]],
    rss: Sequence[tuple[float, float]],
    plan: SoakPlan,
    started: float,
    ended: float,
) -> SoakResult:
    """Cut the post-warm-up messages into equal-count windows; RSS per window is the median
    of the samples taken during it (the nearest sample when none was)."""
    skip = int(len(msgs) * plan.warmup_fraction)
    steady = list(msgs[skip:])
    n = max(1, min(plan.windows, len(steady) // 10))
    if len(steady) < 2 or not rss:
        raise PromptcamError(
            f"too few frames for a soak report ({len(msgs)} tracks messages, {len(rss)} memory samples)"
        )
    size = len(steady) // n
    windows = []
    for k in range(n):
        chunk = steady[k * size : (k + 1) * size if k < n - 1 else len(steady)]
        t0, t1 = chunk[0][0], chunk[-1][0]
        inside = [m for t, m in rss if t0 <= t <= t1] or [
            min(rss, key=lambda s: abs(s[0] - (t0 + t1) / 2))[1]
        ]
        lat = [m for _, m in chunk]
        windows.append(
            Window(
                frames=len(chunk),
                seconds=round(t1 - t0, 3),
                fps=round((len(chunk) - 1) / (t1 - t0), 2) if t1 > t0 else 0.0,
                latency_ms_p50=round(statistics.median(lat), 2),
                latency_ms_p95=round(_percentile(lat, 0.95), 2),
                rss_mb=round(statistics.median(inside), 1),
            )
        )
    t_steady = steady[0][0]
    return SoakResult(
        frames_processed=len(msgs),
        seconds=ended - started,
        windows=windows,
        rss_slope_mb_per_h=slope_per_hour([(t - started, m) for t, m in rss if t >= t_steady]),
        latency_slope_ms_per_h=slope_per_hour([(t - started, m) for t, m in steady]),
    )


def run(cfg: Config, args: argparse.Namespace) -> list[BenchRow]:
    churn = getattr(args, "churn", None)
    if churn is not None:
        return _run_churn(cfg, churn)
    minutes = args.soak if args.soak is not None else (0.5 if args.quick else 5.0)
    if minutes <= 0:
        raise PromptcamError(f"--soak must be > 0 minutes, got {minutes}")
    fps = cfg.source.fps or 30.0
    plan = SoakPlan(
        duration_s=minutes * 60.0,
        fps=fps,
        width=cfg.source.width,
        height=cfg.source.height,
        sample_every_s=max(1.0, minutes * 60.0 / 600),
    )
    log.info(
        "soak: %.1f min, demo at %.0f fps %dx%d, models %s",
        minutes,
        fps,
        plan.width,
        plan.height,
        cfg.models.preset,
    )
    r = measure(plan, cfg)
    note = f"{cfg.models.preset}, demo {fps:.0f} fps {plan.width}x{plan.height}, {minutes:g} min"
    return soak_rows(r.summary(), note)


def _run_churn(cfg: Config, churn: int) -> list[BenchRow]:
    if churn < 1:
        raise PromptcamError(f"--churn must be >= 1 cycles, got {churn}")
    churn_plan = ChurnPlan(cycles=churn)
    log.info(
        "soak: camera churn, %d x %d cameras, models %s",
        churn,
        churn_plan.cameras,
        cfg.models.preset,
    )
    cr = measure_churn(churn_plan, cfg)
    return churn_rows(
        cr,
        f"{cfg.models.preset}, demo {churn_plan.fps:g} fps {churn_plan.width}x{churn_plan.height}",
    )


FLAT = "after warm-up; ~0 means flat"


def soak_rows(s: SoakSummary, note: str) -> list[BenchRow]:
    """The rows of a soak's ``SoakResult.summary()``."""
    dropped = s["frames_dropped_by_engine"]
    return [
        row("soak", "frames processed", s["frames_processed"], "frames", note),
        row("soak", "engine fps", s["engine_fps"], "fps"),
        row("soak", "engine RSS, first window", s["rss_mb_first_window"], "MB"),
        row("soak", "engine RSS, last window", s["rss_mb_last_window"], "MB"),
        row("soak", "engine RSS slope", s["rss_slope_mb_per_h"], "MB/h", FLAT),
        row(
            "soak",
            "latency p50, first window",
            s["latency_ms_p50_first_window"],
            "ms",
            "capture -> subscriber",
        ),
        row("soak", "latency p50, last window", s["latency_ms_p50_last_window"], "ms"),
        row("soak", "latency p95, first window", s["latency_ms_p95_first_window"], "ms"),
        row("soak", "latency p95, last window", s["latency_ms_p95_last_window"], "ms"),
        row("soak", "latency slope", s["latency_slope_ms_per_h"], "ms/h", FLAT),
        row(
            "soak",
            "frames dropped by engine",
            dropped if dropped is not None else "-",
            "frames",
            "latest frame wins",
        ),
        row("soak", "engine restarts", s["engine_restarts"], ""),
    ]


# --------------------------------------------------------------------------- camera churn


@dataclass(frozen=True)
class ChurnPlan:
    """``promptcam bench --soak MINUTES --churn CYCLES``: ``cameras`` cameras added to a running
    engine and removed again, ``cycles`` times after ``warmup_cycles``; each added camera must
    publish ``tracks_per_camera`` tracks messages (so it really tracked) before it is removed."""

    cycles: int = 50
    cameras: int = 4
    warmup_cycles: int = 2
    tracks_per_camera: int = 3
    fps: float = 5.0
    width: int = 160
    height: int = 120
    cycle_timeout_s: float = 120.0
    start_timeout_s: float = 300.0
    settle_s: float = 1.0  # after the removals, before the RSS sample


CHURN_SPAN = 5  # start and end RSS: medians over this many cycles (one sample swings ~15 %)


@dataclass
class ChurnResult:
    cycles: int = 0
    cameras: int = 0
    rss_start_mb: float = 0.0  # median RSS after the first cycles' removals (after warm-up)
    rss_end_mb: float = 0.0  # median RSS after the last cycles' removals
    rss_peak_mb: float = 0.0  # highest sample, cameras added
    rss_after_cycle_mb: list[float] = field(default_factory=list)
    seconds: float = 0.0
    engine_restarts: int = 0

    @property
    def growth_pct(self) -> float:
        return 100.0 * (self.rss_end_mb - self.rss_start_mb) / max(self.rss_start_mb, 1e-9)


def measure_churn(plan: ChurnPlan, base: Config | None = None) -> ChurnResult:
    """A demo capture per churn camera and one engine (serving the base camera), then the
    cycles over the engine's control socket, the engine's RSS sampled after each cycle."""
    if plan.cycles < 1 or plan.cameras < 1:
        raise PromptcamError("a churn needs at least one cycle and one camera")
    if base is None:
        base = load_config(None, {"models.preset": "tiny-random", "models.device": "cpu"})
    soak = SoakPlan(duration_s=1.0, fps=plan.fps, width=plan.width, height=plan.height)
    cfg = soak_config(base, soak)
    names = [f"churn{k}" for k in range(plan.cameras)]
    with tempfile.TemporaryDirectory(prefix="promptcam-churn-") as tmp:
        engine_path = write_child_config(cfg, Path(tmp))
        specs = [ChildSpec("engine", child_argv("engine", engine_path))]
        frames: dict[str, str] = {}
        for name in names:
            tree = cfg.model_dump(mode="json")
            tree["camera"] = name
            tree["bus"]["frames"] = frames[name] = free_loopback_endpoint()
            (Path(tmp) / name).mkdir()
            path = write_child_config(Config.model_validate(tree), Path(tmp) / name)
            specs.append(ChildSpec(f"capture:{name}", child_argv("capture", path)))
        run = RunConfig.model_validate({"max_start_failures": 1})
        with (Path(tmp) / "children.log").open("w") as out:
            sup = Supervisor(specs, run, output=out)
            try:
                sup.start()
                return _churn(cfg, plan, sup, frames, Path(tmp) / "children.log")
            finally:
                sup.stop()


def _control(cfg: Config, request: dict[str, object]) -> None:
    reply = zbus.request(cfg.bus.control, request, 30_000, cfg.bus)
    if not reply.get("ok"):
        raise PromptcamError(f"engine refused {request['cmd']}: {reply.get('error')}")


def _engine_answers(cfg: Config) -> bool:
    try:
        return bool(zbus.request(cfg.bus.control, {"cmd": "stats"}, 1000, cfg.bus).get("ok"))
    except zbus.BusError:
        return False


class _ChurnWatch:
    """The tracks of the churned cameras, counted per camera, and bounded waits on them that
    keep the supervisor polled."""

    def __init__(self, cfg: Config, sup: Supervisor, logfile: Path) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sub = zbus.connect(
            self.ctx, zmq.SUB, cfg.bus.tracks, cfg.bus, subscribe=[b"tracks."], curve=True
        )
        self.sup, self.logfile = sup, logfile
        self.counts: dict[str, int] = {}

    def drain(self, timeout_ms: int) -> None:
        if not self.sub.poll(timeout_ms, zmq.POLLIN):
            return
        while True:
            try:
                parts = self.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            cam = bytes(parts[0]).decode(errors="replace").partition(".")[2]
            self.counts[cam] = self.counts.get(cam, 0) + 1

    def wait(self, cond: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not cond():
            self.sup.poll()
            if time.monotonic() > deadline:
                tail = self.logfile.read_text(errors="replace")[-2000:]
                raise PromptcamError(f"churn: {what} within {timeout_s:.0f}s; children: {tail}")
            self.drain(100)

    def close(self) -> None:
        self.sub.close(0)
        self.ctx.term()


def _churn(
    cfg: Config, plan: ChurnPlan, sup: Supervisor, frames: dict[str, str], logfile: Path
) -> ChurnResult:
    watch = _ChurnWatch(cfg, sup, logfile)
    counts = watch.counts
    try:
        watch.wait(lambda: _engine_answers(cfg), plan.start_timeout_s, "the engine did not answer")
        engine_pid = sup.pids()["engine"]
        proc = psutil.Process(engine_pid)
        result = ChurnResult(cameras=plan.cameras)
        started = time.monotonic()
        for cycle in range(plan.warmup_cycles + plan.cycles):
            before = {n: counts.get(n, 0) for n in frames}
            for name, endpoint in frames.items():
                _control(cfg, {"cmd": "add_camera", "camera": name, "frames": endpoint})

            def tracked(b: dict[str, int] = before) -> bool:
                return all(counts.get(n, 0) - b[n] >= plan.tracks_per_camera for n in frames)

            watch.wait(
                tracked,
                plan.cycle_timeout_s,
                f"cycle {cycle + 1}: the added cameras published no tracks",
            )
            result.rss_peak_mb = max(result.rss_peak_mb, proc.memory_info().rss / 2**20)
            for name in frames:
                _control(cfg, {"cmd": "remove_camera", "camera": name})
            settle = time.monotonic() + plan.settle_s
            while time.monotonic() < settle:
                watch.drain(50)
            if sup.pids().get("engine") != engine_pid:
                raise PromptcamError("the engine exited during the churn; see its log")
            rss = proc.memory_info().rss / 2**20
            if cycle >= plan.warmup_cycles:
                result.rss_after_cycle_mb.append(round(rss, 1))
            log.info("churn cycle %d: engine RSS %.0f MB", cycle + 1, rss)
        _finish_churn(result, plan, sup, started)
        return result
    finally:
        watch.close()


def _finish_churn(result: ChurnResult, plan: ChurnPlan, sup: Supervisor, started: float) -> None:
    """Start and end RSS: medians of the first and last ``CHURN_SPAN`` cycles' RSS."""
    result.cycles = plan.cycles
    after = result.rss_after_cycle_mb
    k = max(1, min(CHURN_SPAN, len(after) // 2))
    result.rss_start_mb = statistics.median(after[:k])
    result.rss_end_mb = statistics.median(after[-k:])
    result.seconds = time.monotonic() - started
    result.engine_restarts = sup.children["engine"].restarts


def churn_rows(r: ChurnResult, note: str) -> list[BenchRow]:
    return [
        row("soak", "churn cycles", r.cycles, "cycles", f"{r.cameras} cameras added and removed"),
        row("soak", "churn engine RSS, start", round(r.rss_start_mb, 1), "MB", "after warm-up"),
        row("soak", "churn engine RSS, end", round(r.rss_end_mb, 1), "MB", note),
        row("soak", "churn engine RSS growth", round(r.growth_pct, 1), "%", "target < 15 %"),
        row("soak", "churn engine RSS, peak", round(r.rss_peak_mb, 1), "MB", "cameras added"),
        row("soak", "churn seconds", round(r.seconds, 1), "s"),
        row("soak", "churn engine restarts", r.engine_restarts, ""),
    ]
