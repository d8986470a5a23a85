"""The GPU check: everything a lent GPU should measure, in one run of at most ``--budget-s``.

``python -m clients.bench.gpu_check [--rehearse] [--out DIR]`` (what ``.ci/gpu-check`` runs)
runs each step in a child process of its own, bounded in time; a step that fails or runs out of
time is recorded (status, seconds, the end of its output) and the next one runs. Steps, by
priority (those left when the budget runs out are recorded as ``not run``):

- ``env``: versions, the device, and a bf16 matrix product's TFLOP/s (the card's real ceiling);
- ``pytest_gpu``: ``pytest -m gpu tests/test_gpu.py`` (bf16 streaming vs the official predictor
  in bf16, compile on/off, device preprocessing vs PIL, grounding on its own CUDA stream);
- ``engine_hiera_t`` … ``engine_hiera_l``: ``clients.bench.engine``'s case (streaming vs the
  official predictor, 1/4/16 objects, memory-attention TFLOP/s against the bf16 peak) for the
  SAM 2.1 architectures with random weights at 1024 px, bf16; ``engine_compiled``: Hiera-T
  with ``models.compile``;
- ``loop``: ``clients.bench.loop``'s frame loop with and without re-grounding beside it
  (Hiera-T 1024 px, the Grounding DINO tiny architecture with random weights);
- ``latency``: a real ``promptcam engine`` process fed frames at 30 fps over the frame bus as
  capture sends them; capture time to tracks arrival, p50/p99;
- ``cameras``: one engine with 4 cameras of 4 objects each against 4 one-camera engines run in
  turn, aggregate frames/s.

``--rehearse`` runs every step on the CPU at tiny sizes (tiny-random, 128 px, 2-3 frames, the
gpu tests with ``PROMPTCAM_GPU_DEVICE=cpu``) in under 3 minutes, giving the same JSON shape, so
that the GPU's time goes to measuring only. Output: ``DIR/gpu_check.json`` (every step with its
figures) and ``DIR/gpu_check.log`` (all steps' output).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, TypedDict

from clients.bench import BenchRow, machine, row

if TYPE_CHECKING:
    import numpy as np

    from engine.models.sam2 import LoadedSam2
    from stream.config import Config

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent.parent
BUDGET_S = 450.0  # the whole run: .ci/gpu-check must end within 8 minutes, installs included
FAULT = "PROMPTCAM_GPU_CHECK_FAULT"
REHEARSE_BUDGET_S = 360.0  # measured 202 s at load 7 on 2 cores (85 s of CPU)


@dataclass(frozen=True)
class Step:
    name: str
    timeout_s: float  # on the GPU
    rehearse_timeout_s: float
    run: Callable[[Ctx], list[BenchRow]]


@dataclass(frozen=True)
class Ctx:
    """What a step child knows: CPU rehearsal or the GPU, and its scratch folder."""

    rehearse: bool
    workdir: Path

    @property
    def device(self) -> str:
        return "cpu" if self.rehearse else "cuda"

    def sam2(self, arch: str = "hiera-t", **models: object) -> LoadedSam2:
        """Hiera ``arch`` at 1024 px with random weights on CUDA; tiny-random at 128 px on the CPU
        in the rehearsal. bf16 autocast on both."""
        from clients.bench.engine import random_sam2
        from engine.models.sam2 import load_sam2
        from stream.config import ModelsConfig

        if self.rehearse:
            fields = {"preset": "tiny-random", "device": "cpu", "image_size": 128}
            return load_sam2(ModelsConfig.model_validate({**fields, "dtype": "bfloat16", **models}))
        return random_sam2(self.workdir, arch, 1024, "cuda", dtype="bfloat16", **models)

    @property
    def frame_size(self) -> tuple[int, int]:
        return (240, 320) if self.rehearse else (720, 1280)


# ---------------------------------------------------------------- steps


def _no_sync() -> None:
    """The CPU has nothing to wait for (``torch.cuda.synchronize`` on CUDA)."""


def step_env(ctx: Ctx) -> list[BenchRow]:
    import torch

    n = 256 if ctx.rehearse else 8192
    device = torch.device(ctx.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device visible to torch")
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else _no_sync
    sync()
    reps = 3 if ctx.rehearse else 10
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    seconds = (time.perf_counter() - t0) / reps
    versions = {}
    for name in ("torch", "sam2", "transformers", "pydantic", "zmq", "supervision"):
        module = __import__(name)
        versions[name] = str(getattr(module, "__version__", "?"))
    note = ", ".join(f"{k} {v}" for k, v in versions.items())
    log.info("env: %s; %s", machine(), note)
    return [
        row(
            "env", f"bf16 matmul {n}^3 on {device.type}", 2 * n**3 / seconds / 1e12, "TFLOP/s", note
        ),
        row("env", "cuda devices", torch.cuda.device_count(), "", machine()),
    ]


def step_pytest_gpu(ctx: Ctx) -> list[BenchRow]:
    import xml.etree.ElementTree as ET

    report = ctx.workdir / "pytest_gpu.xml"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if ctx.rehearse:
        env["PROMPTCAM_GPU_DEVICE"] = "cpu"
    argv = [sys.executable, "-m", "pytest", "-m", "gpu", "tests/test_gpu.py", "-q", "-s"]
    # --timeout: one slow test (a long compile) fails alone; the report still comes
    argv += ["-p", "no:cacheprovider", f"--junitxml={report}", "--durations=0", "--timeout=100"]
    proc = subprocess.run(argv, cwd=ROOT, env=env, check=False)
    if not report.exists():
        raise RuntimeError(f"pytest exited {proc.returncode} without a report")
    rows = []
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for case in ET.parse(report).getroot().iter("testcase"):
        kids = {child.tag for child in case}
        outcome = (
            "failed"
            if kids & {"failure", "error"}
            else "skipped"
            if "skipped" in kids
            else "passed"
        )
        counts[outcome] += 1
        name = case.get("name", "?")
        rows.append(row("pytest_gpu", f"{name}: {outcome}", float(case.get("time", 0)), "s"))
    rows += [row("pytest_gpu", f"tests {k}", v, "") for k, v in counts.items()]
    if proc.returncode != 0 or counts["passed"] == 0:
        raise StepFailed(rows, f"pytest -m gpu exited {proc.returncode}: {counts}")
    return rows


def _engine_step(arch: str, compiled: bool = False) -> Callable[[Ctx], list[BenchRow]]:
    def run(ctx: Ctx) -> list[BenchRow]:
        import torch

        from clients.bench.engine import Case, bench_case

        loaded = ctx.sam2(arch, compile=compiled)
        label = "tiny-random 128px" if ctx.rehearse else f"{arch} 1024px"
        device = "cpu" if ctx.rehearse else torch.cuda.get_device_name(0)
        name = f"{label} {device} bf16{' compiled' if compiled else ''}"
        h, w = ctx.frame_size
        objects = (1, 4) if ctx.rehearse else ((1, 16) if compiled else (1, 4, 16))
        case = Case(name, loaded, 3 if ctx.rehearse else 12, objects, h, w, repeats=1)
        return bench_case(case, ctx.workdir)

    return run


def step_loop(ctx: Ctx) -> list[BenchRow]:
    import statistics

    import torch

    from clients.bench import grounding, loop
    from engine.detectors.grounding_dino import GroundingDinoDetector
    from engine.grounder import Grounder
    from stream.config import load_config

    cfg = load_config(None, {"models.device": ctx.device, "models.dtype": "bfloat16"})
    loaded = ctx.sam2()
    model, processor = grounding._tiny_random() if ctx.rehearse else grounding._tiny_architecture()
    engine_cfg = cfg.engine.model_copy(update={"detector_size": 480, "box_threshold": 1.0})
    detector = GroundingDinoDetector(
        model, processor, engine_cfg, torch.device(ctx.device), "bfloat16"
    )
    grounder = Grounder(detector, "ball. box.")
    frames = 3 if ctx.rehearse else 60
    # alternate the phases (A B A B) as the loop part does; A B in the rehearsal
    phases = (False, True) if ctx.rehearse else (False, True, False, True)
    runs = [loop._frame_times(loaded, grounder, cfg, frames, reground=r) for r in phases]
    base = statistics.fmean(t for t, _ in runs[0::2])
    busy = statistics.fmean(t for t, _ in runs[1::2])
    done = sum(g for _, g in runs[1::2])
    note = f"2 objects, 640x480, {frames} frames x 2 per phase"
    return [
        row("loop", "frame loop, no grounding", base, "ms/frame", note),
        row("loop", "frame loop, grounding beside it", busy, "ms/frame", f"{done} groundings"),
        row("loop", "slowdown while re-grounding", (busy / base - 1) * 100, "%", "target < 10 %"),
    ]


def step_latency(ctx: Ctx) -> list[BenchRow]:
    """A real engine process (``clients.launcher`` child, as ``promptcam run`` starts it) fed
    frames at 30 fps over the frame bus, as ``promptcam capture`` sends them (a BGR message
    stamped with its capture time); capture time to the arrival of its tracks, p50 and p99.
    GPU: random Hiera-T 1024 px with the shipped demo detector on 1280x720 demo frames (the
    demo's objects are found and tracked); rehearsal: tiny-random, no detections kept."""
    from clients.bench.soak import _percentile
    from stream.demo import DemoScene

    h, w = ctx.frame_size
    fps, seconds = 30.0, (3.0 if ctx.rehearse else 20.0)
    cfg = _latency_config(ctx, seconds, fps)
    scene = DemoScene(w, h, 4, seed=0)
    images = [scene.render(i)[0] for i in range(60)]
    start_s = 120.0 if not ctx.rehearse else 60.0
    msgs = _feed_engine(cfg, ctx.workdir, images, fps, seconds, start_s)
    sent = int(seconds * fps)
    warm = msgs[len(msgs) // 10 :]  # the first 10 %: allocator and kernel warm-up
    lat = [m for _, m in warm]
    if not lat:
        raise RuntimeError("no tracks while frames were sent")
    note = f"{w}x{h} at {fps:.0f} fps for {seconds:.0f} s; {len(msgs)} of {sent} frames tracked"
    return [
        row("latency", "capture -> tracks p50", _percentile(lat, 0.5), "ms", note),
        row("latency", "capture -> tracks p99", _percentile(lat, 0.99), "ms", "target < 50"),
        row("latency", "frames tracked / sent", len(msgs) / max(1, sent), "", "latest frame wins"),
    ]


def _latency_config(ctx: Ctx, seconds: float, fps: float) -> Config:
    """The latency step's run config: tiny-random in the rehearsal, random Hiera-T 1024 px with
    the demo detector on the GPU."""
    from clients.bench.engine import random_sam2
    from clients.bench.soak import SoakPlan, soak_config
    from stream.config import load_config

    overrides: dict[str, object] = {"models.device": ctx.device, "models.dtype": "bfloat16"}
    if ctx.rehearse:
        overrides |= {"models.preset": "tiny-random", "models.image_size": 128}
        overrides |= {"engine.box_threshold": 1.0, "engine.detector_size": 240}
    else:
        random_sam2(ctx.workdir, "hiera-t", 1024, "cpu")  # writes the checkpoint
        overrides |= {"models.preset": "demo", "models.image_size": 1024}
        overrides |= {"models.sam2_checkpoint": str(ctx.workdir / "hiera_t_random.pt")}
        overrides |= {"models.sam2_config": _arch_config("hiera-t")}
    return soak_config(load_config(None, overrides), SoakPlan(duration_s=seconds, fps=fps))


def _feed_engine(
    cfg: Config, workdir: Path, images: list[np.ndarray], fps: float, seconds: float, start_s: float
) -> list[tuple[float, float]]:
    """Start an engine child on ``cfg``; send a frame a second until its first tracks (within
    ``start_s``: it loads its models), then ``fps`` frames/s for ``seconds``. The (arrival,
    latency ms) of every tracks message of that second phase."""
    import zmq

    from clients.bench.soak import _recv
    from clients.launcher import ChildSpec, Supervisor, child_argv, write_child_config
    from stream import bus as zbus
    from stream.config import RunConfig
    from stream.wire import FrameMessage

    path = write_child_config(cfg, workdir)
    zctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pub = zbus.bind(zctx, zmq.PUB, cfg.bus.frames, cfg.bus, sndhwm=cfg.bus.sndhwm, curve=True)
    topic = [f"tracks.{cfg.camera}".encode()]
    sub = zbus.connect(zctx, zmq.SUB, cfg.bus.tracks, cfg.bus, subscribe=topic, curve=True)
    msgs: list[tuple[float, float]] = []
    sup = Supervisor([ChildSpec("engine", child_argv("engine", path))], RunConfig())
    seq = 0

    def send() -> None:
        nonlocal seq
        msg = FrameMessage.from_image(cfg.camera, seq, images[seq % len(images)], time.time_ns())
        pub.send_multipart(msg.to_parts(), copy=False)
        seq += 1

    try:
        sup.start()
        deadline = time.monotonic() + start_s
        while not msgs:  # the engine loads its models: a frame a second until tracks come
            if time.monotonic() > deadline:
                raise RuntimeError("no tracks from the engine within the start deadline")
            sup.poll()
            send()
            _recv(sub, msgs, 1000)
        msgs.clear()
        start = time.monotonic()
        next_at = start
        while time.monotonic() - start < seconds:
            now = time.monotonic()
            if now >= next_at:
                send()
                next_at += 1.0 / fps
            _recv(sub, msgs, max(1, int((next_at - time.monotonic()) * 1e3)))
    finally:
        sup.stop()
        pub.close(0)
        sub.close(0)
        zctx.term()
    return msgs


def _arch_config(arch: str) -> str:
    import sam2

    from clients.bench.engine import ARCHITECTURES

    return str(Path(sam2.__file__).resolve().parent / "configs/sam2.1" / ARCHITECTURES[arch])


def step_cameras(ctx: Ctx) -> list[BenchRow]:
    """One engine with 4 cameras of 4 manually prompted objects each (one image-encoder call
    and one propagation per tick) against 4 one-camera engines run in turn on the same frames
    (what separate engines get from one GPU at best); aggregate processed frames/s."""
    import torch

    from engine.pipeline import FrameInput, MultiCameraEngine, TrackingEngine
    from engine.segmenters.sam2 import Sam2Kernel, StreamingSegmenter
    from stream.config import EngineConfig
    from stream.demo import DemoScene

    loaded = ctx.sam2()
    h, w = ctx.frame_size
    seconds = 1.5 if ctx.rehearse else 12.0
    cams = [f"cam{k}" for k in range(4)]
    frames = {
        c: [DemoScene(w, h, 4, seed=k).render(i)[0] for i in range(30)] for k, c in enumerate(cams)
    }
    boxes = [(w * (0.05 + 0.24 * j), h * 0.3, w * (0.2 + 0.24 * j), h * 0.6) for j in range(4)]
    manual = {c: [(b, "object") for b in boxes] for c in cams}
    cfg = EngineConfig(prompt="", reground_every_frames=0)
    sync: Callable[[], None] = torch.cuda.synchronize if loaded.device.type == "cuda" else _no_sync

    def timed(step: Callable[[int], object]) -> int:
        for i in range(5):  # warm-up, memory banks filling
            step(i)
        sync()
        i, t0 = 5, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            step(i)
            i += 1
        sync()
        return i - 5

    multi = MultiCameraEngine(Sam2Kernel(loaded), None, background_grounding=False)
    for c in cams:
        multi.add_camera(c, cfg)
    ticks = timed(
        lambda i: multi.tick(
            {c: FrameInput(i, i, frames[c][i % 30]) for c in cams}, manual if i == 0 else None
        )
    )
    one_fps = 4 * ticks / seconds
    solos = {
        c: TrackingEngine(cfg, StreamingSegmenter(loaded), None, background_grounding=False)
        for c in cams
    }

    def in_turn(i: int) -> None:
        for c, engine in solos.items():
            engine.process(FrameInput(i, i, frames[c][i % 30]), manual[c] if i == 0 else ())

    solo_fps = 4 * timed(in_turn) / seconds
    note = f"4 cameras x 4 objects, {w}x{h}, {seconds:.0f} s each"
    return [
        row("cameras", "4 cameras, one engine: aggregate", one_fps, "frames/s", note),
        row("cameras", "4 cameras, 4 engines in turn: aggregate", solo_fps, "frames/s"),
        row("cameras", "one engine / engines in turn", one_fps / solo_fps, "x", "target >= 1"),
    ]


class StepFailed(Exception):
    """A step that measured something but failed (its rows are kept)."""

    def __init__(self, rows: list[BenchRow], message: str) -> None:
        super().__init__(message)
        self.rows = rows


STEPS: tuple[Step, ...] = (
    Step("env", 60, 45, step_env),
    Step("pytest_gpu", 170, 120, step_pytest_gpu),
    Step("engine_hiera_t", 70, 60, _engine_step("hiera-t")),
    Step("loop", 60, 60, step_loop),
    Step("latency", 60, 60, step_latency),
    Step("cameras", 60, 60, step_cameras),
    Step("engine_hiera_s", 60, 60, _engine_step("hiera-s")),
    Step("engine_hiera_b+", 60, 60, _engine_step("hiera-b+")),
    Step("engine_hiera_l", 75, 60, _engine_step("hiera-l")),
    Step("engine_compiled", 150, 60, _engine_step("hiera-t", compiled=True)),
)


# ---------------------------------------------------------------- running


def figures(rows: list[BenchRow]) -> dict[str, float]:
    """Numeric rows as ``{"name [unit]": value}``."""
    return {
        f"{r['name']} [{r['unit']}]" if r["unit"] else str(r["name"]): float(r["value"])
        for r in rows
        if isinstance(r["value"], int | float)
    }


def run_child(name: str, rehearse: bool, workdir: Path, result: Path) -> int:
    """Run one step here (a child of the check) and write its rows to ``result``."""
    step = next(s for s in STEPS if s.name == name)
    started = time.perf_counter()
    out: dict[str, object] = {"name": name, "status": "ok", "rows": [], "error": ""}
    # Planted faults for tests/test_gpu_check.py: FAULT="step=raise,other=hang".
    fault = dict(f.split("=", 1) for f in os.environ.get(FAULT, "").split(",") if "=" in f)
    try:
        if fault.get(name) == "hang":
            time.sleep(3600)
        if fault.get(name) == "raise":
            raise RuntimeError(f"planted fault in step {name}")
        out["rows"] = step.run(Ctx(rehearse, workdir))
    except StepFailed as e:
        out.update(status="failed", rows=e.rows, error=str(e))
    except Exception as e:  # recorded, and the check goes on with the next step
        log.exception("step %s failed", name)
        out.update(status="failed", error=f"{type(e).__name__}: {e}".splitlines()[0])
    out["seconds"] = round(time.perf_counter() - started, 2)
    result.write_text(json.dumps(out, indent=1))
    return 0 if out["status"] == "ok" else 1


class StepReport(TypedDict, total=False):
    """One step of ``gpu_check.json``."""

    name: str
    timeout_s: float
    seconds: float
    status: str  # ok, failed, timeout, not run
    error: str
    rows: list[BenchRow]
    figures: dict[str, float]


class CheckReport(TypedDict, total=False):
    """``gpu_check.json``: every step, and whether all were ok."""

    rehearse: bool
    device: str
    machine: str
    budget_s: float
    steps: list[StepReport]
    seconds: float
    ok: bool


def run_check(
    rehearse: bool, out_dir: Path, budget_s: float, only: list[str] | None
) -> CheckReport:
    """Every step in a child process of its own, in order, within ``budget_s`` in all."""
    out_dir.mkdir(parents=True, exist_ok=True)
    logfile = out_dir / "gpu_check.log"
    steps: list[StepReport] = []
    report: CheckReport = {
        "rehearse": rehearse,
        "device": "cpu" if rehearse else "cuda",
        "machine": machine(),
        "budget_s": budget_s,
        "steps": steps,
    }
    started = time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": _pythonpath()}
    with (
        tempfile.TemporaryDirectory(prefix="promptcam-gpu-check-") as tmp,
        logfile.open("w") as log_out,
    ):
        for step in STEPS:
            if only and step.name not in only:
                continue
            left = budget_s - (time.monotonic() - started)
            timeout = min(step.rehearse_timeout_s if rehearse else step.timeout_s, left)
            entry: StepReport = {"name": step.name, "timeout_s": round(timeout, 1)}
            steps.append(entry)
            if timeout < 10:
                entry["status"] = "not run"
                entry["error"] = f"budget spent ({left:.0f} s left)"
                entry["figures"] = {}
                continue
            _run_step(step, entry, rehearse, timeout, Path(tmp), log_out, env)
            _write(report, out_dir, started)
    _write(report, out_dir, started)
    return report


def _run_step(
    step: Step,
    entry: StepReport,
    rehearse: bool,
    timeout: float,
    tmp: Path,
    log_out: IO[str],
    env: dict[str, str],
) -> None:
    """One step in a child process of its own (its own process group, ended on a timeout);
    its outcome, rows and figures into ``entry``."""
    workdir = tmp / step.name.replace("+", "p")
    workdir.mkdir()
    result = workdir / "result.json"
    argv = [sys.executable, "-m", "clients.bench.gpu_check", "--step", step.name]
    argv += ["--workdir", str(workdir), "--result", str(result)]
    argv += ["--rehearse"] if rehearse else []
    log_out.write(f"\n===== step {step.name} (timeout {timeout:.0f} s)\n")
    log_out.flush()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=log_out, stderr=subprocess.STDOUT, start_new_session=True
    )
    rc: int | None
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        rc = None
    entry["seconds"] = round(time.monotonic() - t0, 2)
    if result.exists():
        got = json.loads(result.read_text())
        entry["status"], entry["error"], entry["rows"] = got["status"], got["error"], got["rows"]
    else:
        entry["status"] = "timeout" if rc is None else "failed"
        entry["error"] = "timed out" if rc is None else f"exited {rc} without a result"
        entry["rows"] = []
    entry["figures"] = figures(entry["rows"])
    print(
        f"{step.name}: {entry['status']} in {entry['seconds']:.0f} s {entry['error']}",
        flush=True,
    )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Ends a timed-out step and whatever it started (it leads a process group of its own)."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def _pythonpath() -> str:
    parts = [str(ROOT), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    return os.pathsep.join(dict.fromkeys(parts))


def _write(report: CheckReport, out_dir: Path, started: float) -> None:
    report["seconds"] = round(time.monotonic() - started, 1)
    report["ok"] = all(s["status"] == "ok" for s in report["steps"])
    (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m clients.bench.gpu_check", description=__doc__.split("\n")[0]
    )
    p.add_argument("--rehearse", action="store_true", help="every step on the CPU at tiny sizes")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "artifacts/gpu-check")))
    p.add_argument("--budget-s", type=float, default=None, help="seconds for all steps")
    p.add_argument("--steps", default="", help="comma-separated subset of steps (default: all)")
    p.add_argument("--step", help=argparse.SUPPRESS)  # child: run this one step
    p.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if a.step:
        if a.workdir is None or a.result is None:
            p.error("--step needs --workdir and --result")
        return run_child(a.step, a.rehearse, a.workdir, a.result)
    only = [s.strip() for s in a.steps.split(",") if s.strip()] or None
    unknown = [s for s in only or [] if s not in {st.name for st in STEPS}]
    if unknown:
        p.error(f"unknown steps {unknown} (known: {', '.join(s.name for s in STEPS)})")
    budget = (
        a.budget_s if a.budget_s is not None else (REHEARSE_BUDGET_S if a.rehearse else BUDGET_S)
    )
    report = run_check(a.rehearse, a.out, budget, only)
    print(
        f"gpu check: {'ok' if report['ok'] else 'NOT ok'} in {report['seconds']:.0f} s -> {a.out}/gpu_check.json"
    )
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
