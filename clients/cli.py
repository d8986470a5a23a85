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
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, TypeAlias, TypeVar

from clients.proctitle import TOKEN_ENV, hide_secrets

if __name__ == "__main__" or os.path.basename(sys.argv[0]) == "promptcam":
    hide_secrets()  # before the slow imports below: a token in argv shows in ps until then

from clients.bench import DEFAULT_PARTS, PARTS
from stream.config import Config, ConfigError, load_config, parse_override, shorten
from stream.errors import PromptcamError, PromptError, RequestError

log = logging.getLogger("promptcam")

# subcommand -> "module:function"; each function takes (Config, argparse.Namespace) -> int
COMMANDS: dict[str, str] = {
    "run": "clients.launcher:main",
    "capture": "stream.capture:main",
    "engine": "engine.service.main:main",
    "web": "clients.web.server:main",
    "track": "engine.offline:main",
    "subscribe": "clients.subscriber:main",
    "prompt": "clients.cli:prompt_main",
    "object": "clients.cli:object_main",
    "record": "clients.recorder:main",
    "bench": "clients.bench:main",
    "models": "clients.models:main",
    "eval": "clients.bench.evaluate:main",
    "scene": "stream.groundtruth:main",
    "train-demo": "engine.training.job:main",
    "fleet": "clients.fleet.cli:main",
    "events": "clients.events.service:main",
    "foxglove": "clients.robots.foxglove_server:main",
    "dds": "clients.robots.dds:main",
}


MAX_ERROR_CHARS = 1000  # an error line is cut to this length, whatever the input was


def error_line(prog: str, message: str) -> str:
    """The one line an expected failure prints: whitespace collapsed, length bounded."""
    return shorten(f"{prog}: error: {message}", MAX_ERROR_CHARS) + "\n"


# With a cameras mapping these flags would silently redefine every camera: refused.
Num = TypeVar("Num", int, float)
MAX_SECONDS = 365 * 86400.0  # the longest --duration / --timeout taken
SINGLE_CAMERA_FLAGS = {"run": ("source", "prompt"), "engine": ("prompt",), "capture": ("source",)}
# Commands that serve one camera: they run on that camera's view of the config (--camera).
ONE_CAMERA_COMMANDS = ("capture", "record")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(error_line(self.prog, message))
        sys.exit(2)


# The subparsers action of ``promptcam`` (and of ``promptcam object``): each subcommand's
# ``_NAME_parser`` adds its parser to it.
Subparsers: TypeAlias = "argparse._SubParsersAction[_Parser]"


def _ranged(
    convert: Callable[[str], Num], within: Callable[[Num], bool], kind: str, bounds: str
) -> Callable[[str], Num]:
    """An argparse type: ``convert`` the text (else "not KIND"), then ``within`` (else "must be
    BOUNDS")."""

    def check(text: str) -> Num:
        try:
            v = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {kind}: {text!r}") from None
        if not within(v):
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return v

    return check


# A duration or timeout: more than 0 and at most a year (a negative timeout would wait forever).
_seconds = _ranged(
    float,
    lambda v: 0 < v <= MAX_SECONDS,
    "a number of seconds",
    f"more than 0 and at most a year ({MAX_SECONDS:.0f} s)",
)
# A count of messages or frames: at least 1.
_count = _ranged(int, lambda v: v >= 1, "a whole number", "at least 1")


def _common(p: argparse.ArgumentParser, *, nested: bool = False) -> None:
    """The flags every subcommand takes. ``nested``: a verb's parser under a subcommand that
    takes them too (``promptcam object --config F reset`` and ``object reset --config F``): no
    defaults there, which would overwrite what was given before the verb."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if nested else value

    p.add_argument(
        "--config",
        metavar="FILE",
        default=default(None),
        help="YAML config (default: configs/default.yaml)",
    )
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=default([]),
        help="override any config key, e.g. engine.max_missed=10",
    )
    p.add_argument(
        "--camera", metavar="NAME", default=default(None), help="camera name (config: camera)"
    )
    p.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default=default(None),
        help="log level",
    )


def _models(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models")
    g.add_argument(
        "--models",
        metavar="PRESET",
        help="sam2.1-hiera-{tiny,small,base-plus,large}, demo or tiny-random (see: promptcam models)",
    )
    g.add_argument(
        "--sam2-checkpoint", metavar="FILE.pt", help="local SAM 2 checkpoint (Meta format)"
    )
    g.add_argument("--sam2-config", metavar="FILE.yaml", help="SAM 2 hydra YAML config on disk")
    g.add_argument(
        "--detector",
        metavar="PRESET_DIR_OR_HUB_ID",
        help="detector preset (see: promptcam models), local directory or Hugging Face Hub id",
    )
    g.add_argument(
        "--tracker",
        metavar="PRESET_DIR_OR_HUB_ID",
        help="transformers video tracker (Sam2Video, EdgeTamVideo, Sam3TrackerVideo): a tracker "
        "preset, a local directory or a hub id; overrides the preset's tracker",
    )
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], help="compute device")


def package_version() -> str:
    """The installed package's version (``pyproject.toml``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("promptcam")
    except PackageNotFoundError:
        return "(not installed: running from a source tree)"


def no_prompt_notice(args: argparse.Namespace) -> str | None:
    """``run``/``engine`` with an empty ``--prompt``: say what it means (no text prompt)."""
    text = getattr(args, "prompt", None)
    if args.command not in ("run", "engine") or text is None or text.strip():
        return None
    return (
        f"promptcam {args.command}: --prompt '' means no text prompt: no detector is loaded and "
        "only boxes added with add_object (the page, the control socket) are tracked, until a "
        "prompt is set"
    )


def _run_parser(sub: Subparsers) -> None:
    """``promptcam run``."""
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


def _capture_parser(sub: Subparsers) -> None:
    """``promptcam capture``."""
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


def _engine_parser(sub: Subparsers) -> None:
    """``promptcam engine``."""
    p = sub.add_parser("engine", help="engine process: frames in, tracks out")
    _common(p)
    _models(p)
    p.add_argument("--prompt", metavar="TEXT", help="text prompt")


def _web_parser(sub: Subparsers) -> None:
    """``promptcam web``."""
    p = sub.add_parser("web", help="WebRTC live view and control page")
    _common(p)
    _models(p)  # for the offline page's jobs
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8080)")
    p.add_argument("--token", help="access token (required off loopback)")


def _track_parser(sub: Subparsers) -> None:
    """``promptcam track``."""
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
        "--mcap", metavar="OUT.mcap", help="write tracks and masks as ROS 2 messages in MCAP"
    )
    p.add_argument(
        "--profile",
        choices=["ros2", "foxglove"],
        help="--mcap message profile (default ros2; foxglove: Foxglove schemas)",
    )
    p.add_argument(
        "--seed-with", choices=["box", "mask", "points"], help="how a detection starts a track"
    )
    p.add_argument("--max-frames", type=int, metavar="N", help="process at most N frames")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _subscribe_parser(sub: Subparsers) -> None:
    """``promptcam subscribe``."""
    p = sub.add_parser("subscribe", help="print tracks messages as JSON lines")
    _common(p)
    p.add_argument("--count", type=_count, metavar="N", help="exit after N messages")
    p.add_argument("--endpoint", help="tracks endpoint (default from config)")
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=None,
        metavar="S",
        help="exit 1 if nothing arrives for S seconds",
    )


def _events_parser(sub: Subparsers) -> None:
    """``promptcam events``."""
    p = sub.add_parser("events", help="zones, lines and object events from tracks (SQLite, ZeroMQ)")
    _common(p)
    p.add_argument("--tracks", metavar="ENDPOINT", help="tracks endpoint (config: bus.tracks)")
    p.add_argument("--events", metavar="ENDPOINT", help="events PUB endpoint (config: bus.events)")
    p.add_argument("--db", metavar="FILE", help="SQLite database (config: events.database)")


def _prompt_parser(sub: Subparsers) -> None:
    """``promptcam prompt``."""
    p = sub.add_parser("prompt", help="change the text prompt of a running engine")
    _common(p)
    p.add_argument("text", metavar="TEXT", help="new prompt, e.g. 'person. forklift.'")
    p.add_argument("--timeout", type=_seconds, default=5.0, metavar="S", help="reply timeout")


def _record_parser(sub: Subparsers) -> None:
    """``promptcam record``."""
    p = sub.add_parser("record", help="record annotated video (MP4) and tracks (JSONL)")
    _common(p)
    p.add_argument("--dir", metavar="DIR", help="output directory (config: record.directory)")
    p.add_argument("--duration", type=_seconds, metavar="S", help="stop after S seconds")
    p.add_argument(
        "--format",
        choices=["mp4", "mcap"],
        help="mp4: MP4 + JSONL; mcap: one MCAP file of ROS 2 messages (docs/robots.md); "
        "default: record.format (mp4)",
    )
    p.add_argument(
        "--profile",
        choices=["ros2", "foxglove"],
        help="MCAP message profile (default ros2; foxglove: Foxglove schemas; --format mcap)",
    )


def _foxglove_parser(sub: Subparsers) -> None:
    """``promptcam foxglove``."""
    p = sub.add_parser("foxglove", help="every camera live in Foxglove (a Foxglove WebSocket)")
    _common(p)
    p.add_argument("--host", dest="foxglove_host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", dest="foxglove_port", type=int, help="port (default 8765; 0: any)")
    p.add_argument(
        "--allow-unauthenticated",
        dest="foxglove_allow_unauthenticated",
        action="store_true",
        default=None,
        help="allow a non-loopback --host (the server cannot check a token)",
    )


def _dds_parser(sub: Subparsers) -> None:
    """``promptcam dds``."""
    p = sub.add_parser("dds", help="publish tracks as ROS 2 messages on DDS (no ROS 2 needed)")
    _common(p)
    p.add_argument("--duration", type=_seconds, metavar="S", help="stop after S seconds")


def _fleet_parser(sub: Subparsers) -> None:
    """``promptcam fleet``."""
    p = sub.add_parser("fleet", help="engines as Ray actors, cameras placed on them (and verbs)")
    _common(p)
    _models(p)
    from clients.fleet.cli import add_arguments as fleet_arguments

    fleet_arguments(p)


def _bench_parser(sub: Subparsers) -> None:
    """``promptcam bench``."""
    p = sub.add_parser(
        "bench",
        help=f"benchmarks: {', '.join(PARTS)}",
        epilog="parts:\n" + "\n".join(f"  {k:<10} {v}" for k, v in PARTS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(p)
    _models(p)
    p.add_argument("--json", metavar="FILE", help="also write results as JSON")
    p.add_argument(
        "--parts",
        default=",".join(DEFAULT_PARTS),
        metavar="PART,...",
        help=f"comma-separated parts to run (default {','.join(DEFAULT_PARTS)}; see below)",
    )
    p.add_argument("--soak", type=float, metavar="MINUTES", help="long-run memory/latency soak")
    p.add_argument(
        "--churn",
        type=int,
        metavar="CYCLES",
        help="soak: add and remove 4 cameras CYCLES times, engine RSS before and after",
    )
    p.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    p.add_argument(
        "--conditions",
        metavar="NAME,...",
        help="quality: camera conditions (clean, dusk, white-balance, shadow, jpeg30, shake, "
        "drop3, backdrop) and live (promptcam run at real time); default all",
    )
    p.add_argument(
        "--seeds",
        metavar="SEED,LOW-HIGH",
        help="quality and events: demo scene seeds (quality: default 0-3, the tuning seeds, "
        "e.g. 100-111 held out; events: default 20-23, held out, 24-35 the tuning seeds)",
    )


def _models_parser(sub: Subparsers) -> None:
    """``promptcam models``."""
    p = sub.add_parser("models", help="list model and detector presets, and what is cached")
    _common(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="print JSON instead of a table")
    g.add_argument(
        "--fetch",
        metavar="PRESET",
        help="download what a model, tracker or detector preset loads into the Hugging Face "
        "cache (HF_HOME), for copying to a machine without network",
    )
    p.add_argument(
        "--families",
        action="store_true",
        help="list the model families of the registry (engine/models/registry.py): kind, the "
        "model types each reads and the presets it serves",
    )


def _eval_parser(sub: Subparsers) -> None:
    """``promptcam eval``."""
    p = sub.add_parser("eval", help="tracking quality of tracks JSONL against ground truth")
    _common(p)
    p.add_argument("pred", metavar="PRED", help="predicted tracks JSONL (promptcam track --tracks)")
    p.add_argument("gt", metavar="GT", help="ground-truth tracks JSONL (promptcam scene --gt)")
    p.add_argument("--prompt", metavar="TEXT", help="phrases to score (default: PRED's prompt)")
    p.add_argument("--no-labels", action="store_true", help="ignore labels (box-prompted runs)")
    p.add_argument("--gt-ids", metavar="ID,ID", help="score only these ground-truth objects")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")


def _scene_parser(sub: Subparsers) -> None:
    """``promptcam scene``."""
    p = sub.add_parser("scene", help="write a seeded demo scene as video and its ground truth")
    _common(p)
    p.add_argument("--out", required=True, metavar="DIR_OR.mp4", help="PNG directory or MP4")
    p.add_argument("--gt", required=True, metavar="GT.jsonl", help="ground-truth tracks JSONL")
    p.add_argument("--frames", type=int, default=150, metavar="N", help="frames (default 150)")
    p.add_argument("--start", type=int, default=0, metavar="I", help="first scene frame")
    p.add_argument("--seed", type=int, help="scene seed (config: source.seed)")
    p.add_argument("--objects", type=int, help="objects (config: source.demo_objects)")
    p.add_argument("--fps", type=float, help="frame rate written (config: source.fps)")


def _train_demo_parser(sub: Subparsers) -> None:
    """``promptcam train-demo``."""
    p = sub.add_parser("train-demo", help="train the demo preset's models on generated scenes")
    _common(p)
    p.add_argument(
        "--out", metavar="DIR", help="where the weights go (default: configs/demo, the preset)"
    )
    p.add_argument("--budget", choices=["full", "tiny"], help="training length (default full)")
    p.add_argument("--seed", type=int, help="training seed (default 0)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default 2)")
    p.add_argument("--only", choices=["sam2", "detector"], help="train one of the two models only")
    p.add_argument(
        "--from-stage",
        type=int,
        metavar="K",
        help="go on from the shipped weights with the budget's stages K.. (a stopped run goes on"
        " from its checkpoint in --out)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="promptcam", description="Track anything you can describe, live.")
    parser.add_argument("--version", action="version", version=f"promptcam {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for add in SUBCOMMAND_PARSERS:
        add(sub)
    return parser


def _object_parser(sub: Subparsers) -> None:
    """``promptcam object add X1,Y1,X2,Y2 [--label L] | remove ID | reset`` (control commands)."""
    p = sub.add_parser("object", help="add, remove or reset tracked objects of a running engine")
    _common(p)
    verbs = p.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    verbs.required = True
    v = verbs.add_parser("add", help="track the object in a box of the newest frame")
    v.add_argument("box", metavar="X1,Y1,X2,Y2", help="box in pixels of the frame")
    v.add_argument("--label", default="object", help="label of the new object (default: object)")
    v = verbs.add_parser("remove", help="stop tracking an object")
    v.add_argument("id", metavar="ID", type=int, help="object id, as in tracks messages")
    v = verbs.add_parser("reset", help="end every track")
    for v in (verbs.choices["add"], verbs.choices["remove"], verbs.choices["reset"]):
        _common(v, nested=True)
        v.add_argument("--timeout", type=float, default=5.0, metavar="S", help="reply timeout")


# The subcommands in the order ``promptcam --help`` lists them; each adds its parser.
SUBCOMMAND_PARSERS: tuple[Callable[[Subparsers], None], ...] = (
    _run_parser,
    _capture_parser,
    _engine_parser,
    _web_parser,
    _track_parser,
    _subscribe_parser,
    _events_parser,
    _prompt_parser,
    _object_parser,
    _record_parser,
    _foxglove_parser,
    _dds_parser,
    _fleet_parser,
    _bench_parser,
    _models_parser,
    _eval_parser,
    _scene_parser,
    _train_demo_parser,
)


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
    "tracker": "models.tracker",
    "device": "models.device",
    "seed_with": "engine.seed_with",
    "host": "web.host",
    "token": "web.token",
    "dir": "record.directory",
    "objects": "source.demo_objects",
    "foxglove_host": "foxglove.host",
    "foxglove_port": "foxglove.port",
    "foxglove_allow_unauthenticated": "foxglove.allow_unauthenticated",
}


def config_from_args(args: argparse.Namespace) -> Config:
    overrides: dict[str, object] = {}
    for attr, key in _FLAG_KEYS.items():
        val = getattr(args, attr, None)
        if val is not None:
            overrides[key] = val
    if getattr(args, "port", None) is not None:
        overrides["web.port"] = args.port
    if "web.token" not in overrides and os.environ.get(TOKEN_ENV):
        overrides["web.token"] = os.environ[TOKEN_ENV]  # no secret on the command line
    for item in getattr(args, "set", []) or []:
        k, v = parse_override(item)
        overrides[k] = v
    cfg = load_config(args.config, overrides)
    if cfg.cameras and args.command in SINGLE_CAMERA_FLAGS:
        given = [
            f"--{f}"
            for f in SINGLE_CAMERA_FLAGS[args.command]
            if getattr(args, f, None) is not None
        ]
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

    text = args.text if args.text.strip() else ""  # blank: clear the prompt
    request: dict[str, object] = {"cmd": "set_prompt", "prompt": text}
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


def object_request(args: argparse.Namespace) -> dict[str, object]:
    """The control request of ``promptcam object VERB``; ``"camera"`` only when ``--camera``
    was given (an engine of one camera needs none)."""
    req: dict[str, object]
    if args.verb == "add":
        if "@" in args.box:
            raise PromptError(
                f"a live box has no @FRAME (it applies to the newest frame): '{args.box}'"
            )
        try:
            from stream.boxes import parse_box

            box, _ = parse_box(args.box)
        except PromptError:
            raise PromptError(
                f"the box must be X1,Y1,X2,Y2 in pixels with X2>X1 and Y2>Y1, got '{args.box}'"
            ) from None
        from stream.wire import MAX_LABEL_CHARS  # the engine's own bound

        label = args.label.strip()
        if not label or len(label) > MAX_LABEL_CHARS or not label.isprintable():
            raise PromptError(
                f"--label must be 1 to {MAX_LABEL_CHARS} printable characters, got {args.label[:80]!r}"
            )
        req = {"cmd": "add_object", "box": list(box), "label": label}
    elif args.verb == "remove":
        if args.id < 1:
            raise RequestError(f"object ids are >= 1, got {args.id}")
        req = {"cmd": "remove_object", "id": args.id}
    else:
        req = {"cmd": "reset"}
    if args.camera is not None:
        req["camera"] = args.camera
    return req


def object_main(cfg: Config, args: argparse.Namespace) -> int:
    """``promptcam object add|remove|reset``: one control request, its reply printed as JSON."""
    from stream import bus

    req = object_request(args)
    if not 0 < args.timeout <= 3600:
        raise RequestError(f"--timeout must be in (0, 3600] seconds, got {args.timeout:g}")
    reply = bus.request(cfg.bus.control, req, int(args.timeout * 1000), cfg.bus)
    if not reply.get("ok"):
        raise RequestError(f"engine refused {req['cmd']}: {reply.get('error', 'unknown error')}")
    print(json.dumps(reply))
    return 0


# Output flags of each command, checked before the command starts (stream/preflight.py).
# (scene --out may be a PNG directory, record --dir is one: not files, not checked here.)
OUTPUT_FLAGS: dict[str, tuple[str, ...]] = {
    "track": ("out", "tracks", "mcap"),
    "eval": ("json",),
    "bench": ("json",),
    "scene": ("gt",),
}
# Commands whose text prompt the engine would parse: checked with the engine's rule first.
PROMPT_COMMANDS = ("run", "engine", "track")


def boxes_only(args: argparse.Namespace) -> bool:
    """``track --box ...`` without ``--prompt`` or ``--set engine.prompt=``: the job tracks the
    boxes only and ignores the config's prompt (``engine.offline.main``)."""
    return bool(
        getattr(args, "box", None)
        and not args.prompt
        and not any(s.startswith("engine.prompt=") for s in args.set)
    )


def preflight(cfg: Config, args: argparse.Namespace) -> None:
    """What can be checked before anything starts (no model, no network, no child): the
    source, the text prompt and the output paths. A failure is the command's one-line error,
    printed before a URL, a status line or a model load."""
    from stream.preflight import check_outputs
    from stream.prompts import normalize_prompt
    from stream.sources import check_source

    command = args.command
    if command in ("run", "capture") and not cfg.cameras:
        check_source(cfg.source.uri, cfg.source)  # a camera of a mapping fails on its own
    elif command == "track":
        check_source(args.video, cfg.source)
    if command in PROMPT_COMMANDS and not boxes_only(args):
        for cam in cfg.camera_settings().values():
            if cam.engine.prompt.strip():
                normalize_prompt(cam.engine.prompt)
    elif command == "prompt" and args.text.strip():  # "" clears it, as set_prompt "" does
        normalize_prompt(args.text)
    flags = OUTPUT_FLAGS.get(command, ())
    outputs = [(f"--{f}", Path(v)) for f in flags if (v := getattr(args, f, None))]
    inputs = [
        Path(getattr(args, a))
        for a in ("video", "pred", "gt")
        if getattr(args, a, None) and f"--{a}" not in dict(outputs)  # scene writes its --gt
    ]
    check_outputs(outputs, inputs)


def _resolve(target: str) -> Callable[[Config, argparse.Namespace], int]:
    module, _, func = target.partition(":")
    fn: Callable[[Config, argparse.Namespace], int] = getattr(importlib.import_module(module), func)
    return fn


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "prompt", None) is not None and not args.prompt.strip():
            args.prompt = ""
        cfg = config_from_args(args)
        setup_logging(cfg.log_level)
        preflight(cfg, args)
        if notice := no_prompt_notice(args):
            print(notice, file=sys.stderr, flush=True)
        code = _resolve(COMMANDS[args.command])(cfg, args)
    except (PromptcamError, ConfigError) as e:
        sys.stderr.write(error_line(f"promptcam {args.command}", str(e)))
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code)


if __name__ == "__main__":
    main()
