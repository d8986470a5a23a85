"""``promptcam fleet``: run a fleet on a Ray cluster, and the verbs that talk to a running one.

``promptcam fleet [run] --config site.yaml [--address HOST:PORT]`` joins the cluster (or starts a
local one-node instance without ``--address``), checks it has what the fleet section asks for,
removes actors left over by an earlier run of the same fleet, starts the controller and prints
a status line every ``fleet.status_every_s`` until Ctrl-C/SIGTERM (or ``--duration``), which
stop every actor of the fleet. The verbs (``--address`` default ``auto``: the cluster ``ray
start`` started on this host) ask the fleet's controller: ``status [--json]``, ``drain ENGINE``,
``undrain ENGINE``, ``add-camera NAME --source SRC [--prompt P] [--fps F] [--resource R]
[--max-objects N]``, ``remove-camera NAME``, ``stop``.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TypeVar

from clients.fleet.calls import ControllerHandle, Remote, controller_face, get_actor, kill
from clients.fleet.cluster import Connection, FleetError, connect, namespace
from clients.fleet.messages import CameraReply, DrainReply, FleetStatus
from stream.config import Config

log = logging.getLogger(__name__)
T = TypeVar("T")

ACTIONS = ("run", "status", "drain", "undrain", "add-camera", "remove-camera", "stop")
CALL_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 60.0  # stop: every actor's stop(), then kills


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", default="run", choices=ACTIONS, help="what to do")
    p.add_argument("target", nargs="?", help="ENGINE (drain, undrain) or CAMERA (add/remove)")
    p.add_argument("--address", help="Ray cluster address HOST:PORT (run: none starts a local one)")
    p.add_argument("--json", action="store_true", help="status: print the status as JSON")
    p.add_argument("--duration", type=float, metavar="S", help="run: stop after S seconds")
    p.add_argument("--source", dest="cam_source", metavar="SRC", help="add-camera: its source")
    p.add_argument("--prompt", dest="cam_prompt", metavar="TEXT", help="add-camera: its prompt")
    p.add_argument("--fps", dest="cam_fps", type=float, help="add-camera: demo/image-dir rate")
    p.add_argument("--resource", help="add-camera: Ray resource its capture needs")
    p.add_argument("--max-objects", type=int, help="add-camera: its engine.max_objects")


def main(cfg: Config, args: argparse.Namespace) -> int:
    if args.action == "run":
        return run(cfg, args.address, args.duration)
    if args.action in ("drain", "undrain", "add-camera", "remove-camera") and not args.target:
        what = "ENGINE" if "drain" in args.action else "CAMERA"
        raise FleetError(f"fleet {args.action} needs {what}")
    connect(args.address or "auto", cfg, log_to_driver=False)
    controller = _controller(cfg)
    if args.action == "status":
        st = _call(controller.status)
        print(json.dumps(st, indent=2) if args.json else format_status(st))
        return 0
    if args.action == "stop":
        stopped = _call(controller.shutdown, timeout=SHUTDOWN_TIMEOUT_S)
        kill(controller, no_restart=True)
        print(f"fleet {cfg.fleet.name} stopped ({stopped['actors']} actors)")
        return 0
    reply: DrainReply | CameraReply
    if args.action in ("drain", "undrain"):
        reply = _call(controller.drain, args.target, args.action == "drain")
    elif args.action == "add-camera":
        if not args.cam_source:
            raise FleetError("fleet add-camera needs --source SRC")
        spec: dict[str, object] = {"source": args.cam_source}
        if args.cam_prompt is not None:
            spec["prompt"] = args.cam_prompt
        if args.cam_fps is not None:
            spec["fps"] = args.cam_fps
        if args.max_objects is not None:
            spec["engine"] = {"max_objects": args.max_objects}
        reply = _call(controller.add_camera, args.target, spec, args.resource)
    else:
        reply = _call(controller.remove_camera, args.target)
    if not reply.get("ok"):
        raise FleetError(str(reply.get("error", "refused")))
    print(json.dumps(reply))
    return 0


def _controller(cfg: Config) -> ControllerHandle:
    from clients.fleet.controller import CONTROLLER

    try:
        return controller_face(get_actor(CONTROLLER, namespace(cfg)))
    except ValueError:
        raise FleetError(
            f"no fleet named {cfg.fleet.name!r} runs on this cluster (start it with promptcam fleet)"
        ) from None


def _call(method: Remote[T], *args: object, timeout: float = CALL_TIMEOUT_S) -> T:
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    try:
        return ray.get(method.remote(*args), timeout=timeout)
    except GetTimeoutError:
        raise FleetError(f"the fleet's controller did not answer within {timeout:g}s") from None
    except RayActorError as e:
        raise FleetError(
            f"the fleet's controller is not available ({e.__class__.__name__}); retry"
        ) from None


# --------------------------------------------------------------------------- run


def run(cfg: Config, address: str | None, duration: float | None) -> int:
    if duration is not None and duration <= 0:
        raise FleetError(f"--duration must be > 0 seconds, got {duration}")
    conn = connect(address, cfg, log_to_driver=True)  # first: it decides how Ray is imported
    import ray

    from clients.fleet.driver import shutdown, start_fleet

    controller, fleet_cfg = start_fleet(cfg, conn)
    stop = _StopRequest()
    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        _watch(fleet_cfg, controller, stop, duration, conn)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        shutdown(controller)
        ray.shutdown()
    return 0


class _StopRequest:
    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: stopping the fleet", signal.Signals(signum).name)
        self.event.set()


def _watch(
    cfg: Config,
    controller: ControllerHandle,
    stop: _StopRequest,
    duration: float | None,
    conn: Connection,
) -> None:
    import ray

    started = time.monotonic()
    announced = False
    next_status = started
    while not stop.event.wait(0.2):
        now = time.monotonic()
        if duration is not None and now - started >= duration:
            log.info("duration of %.0fs reached: stopping the fleet", duration)
            return
        if now < next_status and announced:
            continue
        try:
            st = ray.get(controller.status.remote(), timeout=5.0)
        except Exception as e:  # restarting controller: Ray brings it back
            log.info("controller status unavailable: %s", e.__class__.__name__)
            next_status = now + 1.0
            continue
        gw = st.get("gateway")
        if not announced and gw:
            print(
                f"promptcam fleet {cfg.fleet.name}: page {gw['page']}  tracks {gw['tracks']}  "
                f"control {gw['control']}  (Ray {conn.address}; Ctrl-C stops)",
                flush=True,
            )
            announced = True
        if now >= next_status:
            print(status_line(st, now - started), flush=True)
            next_status = now + cfg.fleet.status_every_s


# --------------------------------------------------------------------------- formatting


def _dur(s: float) -> str:
    m, sec = divmod(int(s), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


def status_line(st: FleetStatus, uptime_s: float) -> str:
    engines = st["engines"]
    cams = st["cameras"]
    up = sum(e["state"] in ("up", "draining") for e in engines)
    live = sum(c["state"] == "live" for c in cams)
    pending = sum(c["state"] == "pending" for c in cams)
    fps = sum(c["fps"] for c in cams)
    f = st["figures"]

    def secs(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}s"

    return (
        f"engines {up}/{len(engines)} up | cameras {live}/{len(cams)} live, {pending} pending | "
        f"{fps:.1f} fps | faults {f['faults']}, recoveries {f['recoveries']} "
        f"(p50 {secs(f['recovery_p50_s'])}, max {secs(f['recovery_max_s'])}) | "
        f"restarts engine {sum(e['restarts'] for e in engines)} "
        f"controller {f['controller_restarts']} | up {_dur(uptime_s)}"
    )


def _table(head: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)
    ]
    fmt: Callable[[list[str]], str] = lambda r: "  ".join(  # noqa: E731
        v.ljust(w) for v, w in zip(r, widths, strict=True)
    )
    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)])


def format_status(st: FleetStatus) -> str:
    """``promptcam fleet status``: cameras, engines, nodes, figures."""
    cams = [
        [
            c["camera"],
            c["state"] + (f" ({c['error']})" if c["error"] and c["state"] != "live" else ""),
            c["engine"] or "-",
            f"{c['fps']:.1f}",
            str(c["objects"]),
            "-" if c["ids"] is None else f"{c['ids'][0]}..{c['ids'][1] - 1}",
            str(c["placements"]),
            c["resource"] or "-",
        ]
        for c in st["cameras"]
    ]
    engines = [
        [
            e["name"],
            e["state"] + (f" ({e['error']})" if e["error"] and e["state"] != "up" else ""),
            e["node_ip"] or "-",
            str(e["pid"] or "-"),
            ", ".join(e["cameras"]) or "-",
            f"{e['fps']:.1f}",
            str(e["restarts"]),
        ]
        for e in st["engines"]
    ]
    nodes = [
        [
            n["node_id"][:12],
            n["ip"],
            "alive" if n["alive"] else "dead",
            ", ".join(n["labels"]) or "-",
        ]
        for n in st["nodes"]
    ]
    f = st["figures"]
    gw = st["gateway"]
    return "\n\n".join(
        [
            f"fleet {st['fleet']} (Ray namespace {st['namespace']}); gateway: "
            + (
                f"page {gw['page']}, tracks {gw['tracks']}, control {gw['control']}"
                if gw is not None
                else "starting"
            ),
            _table(
                ["camera", "state", "engine", "fps", "objects", "ids", "placements", "resource"],
                cams,
            ),
            _table(["engine", "state", "node", "pid", "cameras", "fps", "restarts"], engines),
            _table(["node", "address", "state", "resources"], nodes),
            f"faults {f['faults']}, recoveries {f['recoveries']}, recovery p50 "
            f"{f['recovery_p50_s']} s, max {f['recovery_max_s']} s, controller restarts "
            f"{f['controller_restarts']}, next free ID {f['ids_next_free']}",
        ]
    )
