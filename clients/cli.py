"""The ``promptcam`` command: one entry point, one subcommand per process or job.

Loads the configuration once (``--config``, then flags, then ``--set key=value``), configures
logging, and hands the ``Config`` to the subcommand's module. Expected failures
(``PromptcamError``) end in one line on stderr and exit status 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from stream.config import Config, ConfigError, load_config, parse_override
from stream.errors import PromptcamError, PromptError

log = logging.getLogger("promptcam")

# subcommand -> "module:function"; each function takes (Config, argparse.Namespace) -> int
COMMANDS: dict[str, str] = {
    "run": "clients.launcher:main",
    "capture": "stream.capture:main",
    "engine": "engine.process:main",
    "web": "clients.web.server:main",
    "track": "engine.offline:main",
    "subscribe": "clients.subscriber:main",
    "prompt": "clients.cli:prompt_main",
    "record": "clients.recorder:main",
    "bench": "clients.bench:main",
    "fleet": "clients.fleet.cli:main",
}


# With a cameras mapping these flags would silently redefine every camera: refused.
SINGLE_CAMERA_FLAGS = {"run": ("source", "prompt"), "engine": ("prompt",), "capture": ("source",)}
# Commands that serve one camera: they run on that camera's view of the config (--camera).
ONE_CAMERA_COMMANDS = ("capture", "record")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def parse_box(text: str) -> tuple[tuple[float, float, float, float], int]:
    """``X1,Y1,X2,Y2[@FRAME]`` -> ((x1, y1, x2, y2), frame)."""
    coords, _, frame = text.partition("@")
    try:
        vals = [float(v) for v in coords.split(",")]
        idx = int(frame) if frame else 0
    except ValueError:
        raise PromptError(f"--box expects X1,Y1,X2,Y2[@FRAME] with numbers, got '{text}'") from None
    if len(vals) != 4:
        raise PromptError(f"--box expects 4 coordinates, got {len(vals)} in '{text}'")
    if idx < 0:
        raise PromptError(f"--box frame must be >= 0, got {idx}")
    x1, y1, x2, y2 = vals
    if not (x2 > x1 and y2 > y1):
        raise PromptError(f"--box {text} has zero or negative area (need X2>X1 and Y2>Y1)")
    return (x1, y1, x2, y2), idx


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML config (default: configs/default.yaml)")
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override any config key, e.g. engine.max_missed=10",
    )
    p.add_argument("--camera", metavar="NAME", help="camera name (config: camera)")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level")


def _models(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models")
    g.add_argument(
        "--models",
        metavar="PRESET",
        help="sam2.1-hiera-{tiny,small,base-plus,large} or tiny-random",
    )
    g.add_argument(
        "--sam2-checkpoint", metavar="FILE.pt", help="local SAM 2 checkpoint (Meta format)"
    )
    g.add_argument("--sam2-config", metavar="FILE.yaml", help="SAM 2 hydra YAML config on disk")
    g.add_argument(
        "--detector", metavar="PATH_OR_HUB_ID", help="Grounding DINO directory or hub id"
    )
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], help="compute device")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="promptcam", description="Track anything you can describe, live.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("run", help="start capture, engine and web, supervised")
    _common(p)
    _models(p)
    p.add_argument(
        "--source",
        metavar="SRC",
        help="webcam index, /dev/videoN, URL, file, image dir or demo (default demo)",
    )
    p.add_argument("--prompt", metavar="TEXT", help="text prompt")
    p.add_argument("--port", type=int, help="web port")
    p.add_argument(
        "--duration", type=float, metavar="S", help="stop after S seconds (for scripted runs)"
    )

    p = sub.add_parser("capture", help="capture process: publish frames")
    _common(p)
    p.add_argument(
        "--source",
        metavar="SRC",
        help="webcam index, /dev/videoN, URL, file, image dir or demo (default: the config's "
        "source, or with a cameras mapping the --camera's)",
    )
    p.add_argument(
        "--loop", action="store_true", default=None, help="loop files and image directories"
    )
    p.add_argument("--fps", type=float, help="frame rate for image directories and demo")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")

    p = sub.add_parser("engine", help="engine process: frames in, tracks out")
    _common(p)
    _models(p)
    p.add_argument("--prompt", metavar="TEXT", help="text prompt")

    p = sub.add_parser("web", help="WebRTC live view and control page")
    _common(p)
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8080)")
    p.add_argument("--token", help="access token (required off loopback)")

    p = sub.add_parser("track", help="offline job over every frame of a video file")
    _common(p)
    _models(p)
    p.add_argument("video", metavar="VIDEO", help="video file or image directory")
    p.add_argument("--prompt", metavar="TEXT", help="text prompt")
    p.add_argument(
        "--box",
        action="append",
        default=[],
        metavar="X1,Y1,X2,Y2[@FRAME]",
        help="manual box prompt (repeatable)",
    )
    p.add_argument("--out", metavar="OUT.mp4", help="write the annotated video")
    p.add_argument("--tracks", metavar="OUT.jsonl", help="write tracks, one JSON line per frame")
    p.add_argument(
        "--seed-with", choices=["box", "mask", "points"], help="how a detection starts a track"
    )
    p.add_argument("--max-frames", type=int, metavar="N", help="process at most N frames")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("subscribe", help="print tracks messages as JSON lines")
    _common(p)
    p.add_argument("--count", type=int, metavar="N", help="exit after N messages")
    p.add_argument("--endpoint", help="tracks endpoint (default from config)")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="exit 1 if nothing arrives for S seconds",
    )

    p = sub.add_parser("prompt", help="change the text prompt of a running engine")
    _common(p)
    p.add_argument("text", metavar="TEXT", help="new prompt, e.g. 'person. forklift.'")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S", help="reply timeout")

    p = sub.add_parser("record", help="record annotated video (MP4) and tracks (JSONL)")
    _common(p)
    p.add_argument("--dir", metavar="DIR", help="output directory (config: record.directory)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")

    p = sub.add_parser("fleet", help="engines as Ray actors, cameras placed on them (and verbs)")
    _common(p)
    _models(p)
    from clients.fleet.cli import add_arguments as fleet_arguments

    fleet_arguments(p)

    p = sub.add_parser("bench", help="benchmarks: transport, engine, grounding, output, soak")
    _common(p)
    _models(p)
    p.add_argument("--json", metavar="FILE", help="also write results as JSON")
    p.add_argument(
        "--parts",
        default="transport,engine,grounding,loop,output",
        help="comma-separated parts to run",
    )
    p.add_argument("--soak", type=float, metavar="MINUTES", help="long-run memory/latency soak")
    p.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    return parser


_FLAG_KEYS = {
    "camera": "camera",
    "log_level": "log_level",
    "source": "source.uri",
    "loop": "source.loop",
    "fps": "source.fps",
    "prompt": "engine.prompt",
    "models": "models.preset",
    "sam2_checkpoint": "models.sam2_checkpoint",
    "sam2_config": "models.sam2_config",
    "detector": "models.detector",
    "device": "models.device",
    "seed_with": "engine.seed_with",
    "host": "web.host",
    "token": "web.token",
    "dir": "record.directory",
}


def config_from_args(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {}
    for attr, key in _FLAG_KEYS.items():
        val = getattr(args, attr, None)
        if val is not None:
            overrides[key] = val
    if getattr(args, "port", None) is not None:
        overrides["web.port"] = args.port
    for item in getattr(args, "set", []) or []:
        k, v = parse_override(item)
        overrides[k] = v
    cfg = load_config(args.config, overrides)
    if cfg.cameras and args.command in SINGLE_CAMERA_FLAGS:
        given = [f"--{f}" for f in SINGLE_CAMERA_FLAGS[args.command] if getattr(args, f, None)]
        if given:
            raise ConfigError(
                f"{'/'.join(given)} define(s) one camera, but the config defines cameras "
                f"{', '.join(cfg.cameras)}: set source and prompt per camera in the config"
            )
    if args.command in ONE_CAMERA_COMMANDS:
        cfg = cfg.for_camera()
    return cfg


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def prompt_main(cfg: Config, args: argparse.Namespace) -> int:
    from stream import bus

    request: dict[str, Any] = {"cmd": "set_prompt", "prompt": args.text}
    if args.camera is not None:
        request["camera"] = args.camera
    reply = bus.request(
        cfg.bus.control,
        request,
        int(args.timeout * 1000),
        cfg.bus,
    )
    if not reply.get("ok"):
        raise PromptError(f"engine refused the prompt: {reply.get('error', 'unknown error')}")
    print(json.dumps(reply))
    return 0


def _resolve(target: str) -> Callable[[Config, argparse.Namespace], int]:
    module, _, func = target.partition(":")
    fn: Callable[[Config, argparse.Namespace], int] = getattr(importlib.import_module(module), func)
    return fn


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
        setup_logging(cfg.log_level)
        code = _resolve(COMMANDS[args.command])(cfg, args)
    except (PromptcamError, ConfigError) as e:
        sys.stderr.write(f"promptcam {args.command}: error: {e}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code)


if __name__ == "__main__":
    main()
