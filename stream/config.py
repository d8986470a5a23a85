"""One typed configuration for every promptcam process.

Loaded once at the entry point (``load_config``) from ``configs/default.yaml`` (or ``--config``),
then overridden from the command line with dotted keys, and passed down. Unknown keys and
out-of-range values are rejected with one readable line naming the key (``ConfigError``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from clients.events.config import EventsConfig
from clients.events.mqtt_config import MqttConfig
from clients.robots.foxglove_config import FoxgloveConfig
from engine.lifecycle.config import LifecycleConfig
from stream.errors import PromptcamError
from stream.wire import MAX_PROMPT_CHARS, check_endpoint, is_camera_name


def _configs_dir() -> Path:
    """The folder with ``default.yaml`` and the tiny-random model configs: installed as package
    data next to this module (``stream/_configs``, see pyproject.toml), or the source tree's
    top-level ``configs/``."""
    here = Path(__file__).resolve().parent
    installed, source = here / "_configs", here.parent / "configs"
    return installed if (installed / "default.yaml").is_file() else source


CONFIGS_DIR = _configs_dir()
DEFAULT_CONFIG_PATH = CONFIGS_DIR / "default.yaml"
# A camera's frames take 3 ZeroMQ sockets in the engine (SUB, its monitor's pair); ZeroMQ's
# default context holds 1023, and the engine's own sockets (tracks, annotated, control,
# detections and its monitor) need a few: 256 cameras leave room to spare.
SOCKETS_PER_CAMERA = 3
MAX_ENGINE_CAMERAS = 256
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
MAX_CONFIG_BYTES = 1 << 20  # a config file larger than this is refused unread
MAX_CONFIG_VALUES = 20_000  # values in a YAML document once its aliases are expanded
MAX_SHOWN_CHARS = 120  # characters of a user's value that an error line shows


def off_host(endpoint: str) -> bool:
    """True for a ``tcp://`` endpoint whose host is not a loopback address."""
    return endpoint.startswith("tcp://") and endpoint[6:].rsplit(":", 1)[0] not in LOOPBACK_HOSTS


class ConfigError(PromptcamError, ValueError):
    """A configuration value is wrong; the message is one line that names the key."""


class YamlSyntaxError(ConfigError):
    """A text is not valid YAML (``--set`` then takes it as a plain string)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceConfig(_Model):
    uri: str = Field(
        "demo",
        description="Video source: webcam index or /dev/videoN, rtsp(s)/http(s) URL, file, image directory, or 'demo'.",
    )
    loop: bool = Field(False, description="Restart a video file or image directory at its end.")
    realtime: bool = Field(
        True,
        description="Pace files and image directories at their frame rate instead of as fast as they decode.",
    )
    fps: float | None = Field(
        None,
        gt=0,
        le=240,
        description="Frame rate for image directories and the demo scene (files and cameras use their own).",
    )
    width: int = Field(
        640,
        ge=32,
        le=7680,
        description="Frame width of the demo scene (and requested webcam width).",
    )
    height: int = Field(
        480,
        ge=32,
        le=4320,
        description="Frame height of the demo scene (and requested webcam height).",
    )
    max_pixels: int = Field(
        4096 * 2160,
        ge=64 * 64,
        le=7680 * 4320,
        description="Largest frame (width x height) a file, image, stream or webcam may declare, "
        "checked before decoding: a larger one is refused (a small file can declare frames that "
        "take gigabytes to decode). Default 4096x2160 (DCI 4K; UHD 3840x2160 either way up); "
        "at most 7680x4320, the largest frame the bus carries.",
    )
    demo_objects: int = Field(
        6, ge=0, le=32, description="Number of moving objects in the demo scene."
    )
    seed: int = Field(
        10,
        ge=0,
        description="Random seed of the demo scene (10 with 6 objects: two look-alike red balls, a green ball, red, purple and yellow boxes).",
    )
    open_timeout_s: float = Field(
        5.0, gt=0, le=120, description="Timeout for opening a network source."
    )
    read_timeout_s: float = Field(
        10.0,
        gt=0,
        le=120,
        description="Socket read timeout for network sources (longer than stall_timeout_s, so a stall is detected as one).",
    )
    stall_timeout_s: float = Field(
        5.0,
        gt=0,
        le=600,
        description="No frame for this long counts as a stall and forces a reconnect.",
    )
    reconnect_initial_s: float = Field(
        0.5, gt=0, le=60, description="First reconnect delay; doubles per failure (with jitter)."
    )
    reconnect_max_s: float = Field(
        10.0, gt=0, le=600, description="Upper bound of the reconnect delay."
    )
    encoding: Literal["bgr8", "jpeg"] = Field(
        "bgr8", description="Frame encoding on the frames topic."
    )
    jpeg_quality: int = Field(90, ge=10, le=100, description="JPEG quality when encoding is jpeg.")


class CurveConfig(_Model):
    server_secret_key_file: Path | None = Field(
        None, description="CURVE secret key of the binding side (zmq.auth format)."
    )
    server_public_key_file: Path | None = Field(
        None, description="CURVE public key of the binding side, given to connecting sides."
    )
    client_secret_key_file: Path | None = Field(
        None, description="CURVE secret key of a connecting side."
    )
    client_public_key_file: Path | None = Field(
        None, description="CURVE public key of a connecting side."
    )

    @property
    def enabled(self) -> bool:
        return self.server_public_key_file is not None


class BusConfig(_Model):
    frames: str = Field(
        "tcp://127.0.0.1:5550", description="Frames PUB endpoint (capture binds, engine connects)."
    )
    tracks: str = Field("tcp://127.0.0.1:5551", description="Tracks PUB endpoint (engine binds).")
    annotated: str = Field(
        "tcp://127.0.0.1:5552", description="Annotated-frames PUB endpoint (engine binds)."
    )
    control: str = Field("tcp://127.0.0.1:5553", description="Control REP endpoint (engine binds).")
    detections: str | None = Field(
        None,
        description="Optional external detections SUB endpoint (engine connects), e.g. tcp://127.0.0.1:5554.",
    )
    events: str = Field(
        "tcp://127.0.0.1:5555", description="Events PUB endpoint (promptcam events binds)."
    )
    allow_remote: bool = Field(False, description="Allow binding non-loopback addresses.")
    curve: CurveConfig = Field(
        default_factory=CurveConfig,
        description="Optional CURVE encryption for frames/tracks across hosts.",
    )
    staleness_ms: float = Field(
        1000.0,
        gt=0,
        le=60000,
        description="A received frame older than this is skipped and counted as stale.",
    )
    max_payload_mb: float = Field(
        96.0,
        gt=0,
        le=1024,
        description="Largest accepted frame (a bgr8 payload, or what a JPEG decodes to), in MiB; "
        "the default takes the largest source.width x source.height (7680x4320, 94.9 MiB).",
    )
    sndhwm: int = Field(4, ge=1, le=10000, description="Send high-water mark of frame publishers.")
    frames_shm: bool = Field(
        False,
        description="Put bgr8 frame payloads in a shared-memory ring (/dev/shm) and send only a reference over ZeroMQ: no kernel copies, for capture and engine on one host (frames endpoint ipc://, inproc:// or loopback tcp). Receivers must be promptcam's.",
    )
    shm_slots: int = Field(
        8,
        ge=2,
        le=256,
        description="Frames the shared-memory ring holds; a receiver holding a frame longer than this many frames sees it counted as overrun.",
    )

    @field_validator("frames", "tracks", "annotated", "control", "detections", "events")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        return v if v is None else check_endpoint(v)

    @model_validator(mode="after")
    def _shm_same_host(self) -> BusConfig:
        if self.frames_shm and off_host(self.frames):
            raise ValueError(
                f"frames_shm needs capture and engine on one host, but frames is {self.frames}"
            )
        return self


class ModelsConfig(_Model):
    preset: str = Field(
        "sam2.1-hiera-tiny",
        description="Model preset (engine/presets.py): sam2.1-hiera-{tiny,small,base-plus,large} "
        "(sam2 package), sam2.1-hiera-tiny-hf, edgetam, sam3-tracker, sam3 (transformers; Hugging "
        "Face Hub), demo (trained on the demo scenes, shipped), or tiny-random, "
        "sam2.1-hf-tiny-random, sam3-tracker-tiny-random, sam3-tiny-random (random weights, offline).",
    )
    sam2_checkpoint: Path | None = Field(
        None,
        description="Local SAM 2 checkpoint (Meta format, dict with key 'model'); overrides the preset's SAM 2.",
    )
    sam2_config: Path | None = Field(
        None, description="SAM 2 hydra YAML config on disk, paired with sam2_checkpoint."
    )
    detector: str | None = Field(
        None,
        description="Detector preset (promptcam models), local directory or Hugging Face Hub id, "
        "any supported family; overrides the preset's detector.",
    )
    tracker: str | None = Field(
        None,
        description="transformers video tracker: a tracker preset (engine/presets.py "
        "TRACKER_PRESETS), a local directory or a Hugging Face Hub id of a Sam2Video, "
        "EdgeTamVideo or Sam3TrackerVideo model; overrides the preset's tracker.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Compute device.")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA, float32 on CPU."
    )
    compile: bool = Field(False, description="torch.compile the SAM 2 hot modules (CUDA).")
    preprocess: Literal["auto", "pil", "device"] = Field(
        "auto",
        description="Frame resize: pil (bit-exact with the official SAM 2 loader, on the CPU), "
        "device (antialiased bicubic on the model's device, within 1 grey level of pil on "
        "natural images); auto: device on CUDA, pil on CPU.",
    )
    image_size: int | None = Field(
        None, ge=64, le=2048, description="Override the SAM 2 input size (multiple of 32)."
    )

    @field_validator("image_size")
    @classmethod
    def _mult32(cls, v: int | None) -> int | None:
        if v is not None and v % 32:
            raise ValueError("must be a multiple of 32")
        return v


class EngineConfig(_Model):
    prompt: str = Field(
        "ball. box.",
        max_length=MAX_PROMPT_CHARS,
        description="Text prompt: phrases separated by '.' (at most 1000 characters, as on the web page).",
    )
    reground_every_frames: int = Field(
        30, ge=0, le=100000, description="Re-ground every N processed frames (0: off)."
    )
    reground_every_s: float | None = Field(
        None, gt=0, le=3600, description="Re-ground at least every N seconds (None: off)."
    )
    box_threshold: float = Field(
        0.35,
        ge=0,
        le=1,
        description="Detector score threshold for a box (each family's meaning: engine/detectors/).",
    )
    text_threshold: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Grounding DINO / MM-Grounding-DINO phrase score threshold (other families: unused).",
    )
    detector_size: int | None = Field(
        None,
        ge=64,
        le=2048,
        description="Shortest edge of the image given to Grounding DINO / MM-Grounding-DINO "
        "(None: the detector's own, its processor's shortest edge: 800 for Grounding DINO, 240 "
        "for the demo model; other families use their checkpoint's input size).",
    )
    iou_threshold: float = Field(
        0.3, gt=0, le=1, description="IoU at or above which a detection matches a track."
    )
    drift_iou: float = Field(
        0.5,
        gt=0,
        le=1,
        description="A matched track whose mask box IoU with its detection is below this is re-seeded.",
    )
    merge_iou: float = Field(
        0.8, gt=0, le=1, description="Two tracks whose masks overlap at least this much are merged."
    )
    score_threshold: float = Field(
        0.0, ge=-100, le=100, description="Object score logit below which a track counts as missed."
    )
    max_missed: int = Field(
        30, ge=1, le=100000, description="Consecutive missed frames after which a track ends."
    )
    max_unseen: int = Field(
        3,
        ge=1,
        le=10000,
        description="Re-groundings without re-detection after which a track ends.",
    )
    reid_frames: int = Field(
        150,
        ge=0,
        le=100000,
        description="Frames a track that missed max_missed frames, or was not re-detected for "
        "max_unseen re-groundings, stays dormant (its memory freed, nothing published) and can "
        "be re-identified under its own ID by a detection; then it ends (0: it ends at once).",
    )
    reid_distance: float = Field(
        1.5,
        ge=0,
        le=100,
        description="Re-identification gate: a detection of a lost or dormant track's label "
        "within this many box sides of where the track's motion puts it re-prompts that track "
        "(0: off, a lost track is matched by box IoU alone).",
    )
    drift_colour: float = Field(
        0.45,
        ge=0,
        le=3,
        description="A track whose mask's mean colour (b, g, r in [0, 1], L1) stays this far "
        "from its colour when last confirmed by a detection, on 3 frames in a row, has slid onto "
        "another object: it goes dormant for re-identification (0: off).",
    )
    max_objects: int = Field(32, ge=1, le=256, description="Most objects tracked at once.")
    max_cameras: int = Field(
        MAX_ENGINE_CAMERAS,
        ge=1,
        le=MAX_ENGINE_CAMERAS,
        description="Most cameras one engine serves (configured plus added with add_camera); "
        f"at most {MAX_ENGINE_CAMERAS}: each camera takes {SOCKETS_PER_CAMERA} of the 1023 "
        "ZeroMQ sockets an engine has (beyond ~340 cameras it could not start). A camera more "
        "is refused: a config error at start, an error reply to add_camera.",
    )
    seed_with: Literal["box", "mask", "points"] = Field(
        "box", description="How a detection starts a track."
    )
    annotate: bool = Field(True, description="Publish annotated JPEG frames.")
    jpeg_quality: int = Field(80, ge=10, le=100, description="Annotated JPEG quality.")
    stats_every_s: float = Field(2.0, gt=0, le=3600, description="Log a stats line this often.")
    state_file: Path | None = Field(
        None,
        description="Where the engine keeps its runtime state (prompt, manual objects) so that a restarted engine carries on; `promptcam run` puts it in its run directory. None: not kept.",
    )
    lifecycle: LifecycleConfig = Field(
        default_factory=LifecycleConfig,
        description="The track lifecycle's further thresholds and its profile ('general' or "
        "'demo'); docs/lifecycle.md.",
    )


class WebConfig(_Model):
    host: str = Field("127.0.0.1", description="HTTP bind address.")
    port: int = Field(8080, ge=0, le=65535, description="HTTP port (0: any free port).")
    token: str | None = Field(
        None, min_length=8, description="Access token; required when host is not loopback."
    )
    camera: str | None = Field(
        None,
        description="Show this camera only (default: every camera the engine serves, followed at runtime).",
    )
    max_upload_mb: float = Field(
        200.0, gt=0, le=10000, description="Largest accepted video upload."
    )
    max_body_kb: float = Field(
        64.0, gt=0, le=10240, description="Largest accepted non-upload request body."
    )
    video_fps: float = Field(
        30.0, gt=0, le=120, description="Most frames per second sent to a viewer."
    )
    ice_loopback_only: bool = Field(
        True, description="Offer only loopback ICE candidates (tests, single-host use)."
    )
    max_viewers: int = Field(
        8,
        ge=1,
        le=256,
        description="Most WebRTC viewers of one camera at once (they share its encoder; a page showing every camera takes one of each); an offer beyond gets 503.",
    )
    connect_timeout_s: float = Field(
        20.0,
        ge=1,
        le=300,
        description="A viewer whose WebRTC connection is not up this long after its offer (no usable ICE candidates, a client gone) is closed and its slot freed.",
    )
    max_connections: int = Field(
        256,
        ge=8,
        le=65536,
        description="Most open HTTP connections (kept below the process's file limit); at the limit a new connection replaces the longest-idle one, or gets 503 when every one is busy.",
    )
    idle_timeout_s: float = Field(
        15.0,
        ge=1,
        le=3600,
        description="An HTTP connection without a complete request for this long is closed (idle keep-alive and partial request headers alike).",
    )
    request_timeout_s: float = Field(
        30.0,
        ge=1,
        le=3600,
        description="Longest wait for a request body (uploads: for each next chunk); beyond, 408.",
    )

    @model_validator(mode="after")
    def _token(self) -> WebConfig:
        if self.host not in LOOPBACK_HOSTS and not self.token:
            raise ValueError("web.host is not loopback, so web.token must be set")
        return self


class RecordConfig(_Model):
    directory: Path = Field(Path("recordings"), description="Where recordings are written.")
    rotate_mb: float | None = Field(
        512.0, gt=0, description="Start a new file after this many megabytes."
    )
    rotate_s: float | None = Field(
        3600.0, gt=0, description="Start a new file after this many seconds."
    )
    fps: float = Field(15.0, gt=0, le=120, description="Frame rate written into MP4 files.")
    retry_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="While files cannot be written (a full disk), check this often whether they can again.",
    )
    min_free_mb: float = Field(
        16.0,
        ge=0,
        le=1e6,
        description="After a full disk, resume writing once its filesystem has this much free space.",
    )
    enabled: bool = Field(
        False,
        description="`promptcam run` starts a recorder child per camera (`promptcam record`), restarted like the others.",
    )
    format: Literal["mp4", "mcap"] = Field(
        "mp4",
        description="What the recorder writes: mp4 (MP4 + tracks JSONL) or mcap (ROS 2 messages, docs/robots.md); `promptcam record --format` overrides it.",
    )
    profile: Literal["ros2", "foxglove"] = Field(
        "ros2",
        description="MCAP message profile (format mcap): ROS 2 messages or Foxglove schemas; `--profile` overrides it.",
    )


class DdsConfig(_Model):
    """``promptcam dds``: the ROS 2 mapping published on DDS (Cyclone DDS), docs/robots.md."""

    enabled: bool = Field(
        False, description="`promptcam run` starts a `dds` child publishing every camera."
    )
    domain_id: int = Field(
        0, ge=0, le=232, description="DDS domain, as ROS_DOMAIN_ID on the ROS 2 side."
    )
    interface: str | None = Field(
        "lo",
        pattern=r"^[A-Za-z0-9_.:%-]{1,64}$",
        description="The only network interface (name or address) Cyclone DDS uses; the ROS 2 side must use it too (CYCLONEDDS_URI). None: Cyclone's own choice, or CYCLONEDDS_URI.",
    )
    masks: bool = Field(True, description="Publish the label image on /promptcam/<camera>/masks.")
    image: bool = Field(
        True, description="Publish the annotated JPEG on /promptcam/<camera>/image."
    )
    max_cameras: int = Field(
        64,
        ge=1,
        le=1024,
        description="Cameras published at most (three writers each); messages of further cameras are rejected and counted.",
    )


class RunConfig(_Model):
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


RESOURCE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


class FleetConfig(_Model):
    """``promptcam fleet``: engines as Ray actors, cameras placed on them (clients/fleet)."""

    name: str = Field(
        "default",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Fleet name; its actors live in the Ray namespace 'promptcam-NAME', so several fleets can share a cluster.",
    )
    engines: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Engine actors; None: one per GPU of the cluster (1 on a CPU-only cluster).",
    )
    engine_gpus: float | None = Field(
        None,
        ge=0,
        le=16,
        description="GPUs per engine actor (Ray num_gpus); None: 1 when the cluster has GPUs, else 0.",
    )
    engine_cpus: float = Field(
        1.0, gt=0, le=1024, description="CPU share per engine actor (Ray num_cpus)."
    )
    engine_resources: list[str] = Field(
        default_factory=list,
        max_length=1024,
        description="Ray custom resource the k-th engine needs (a node label set with ray start --resources); engines past the list go anywhere.",
    )
    capture_cpus: float = Field(
        0.25, gt=0, le=64, description="CPU share per capture actor (Ray num_cpus)."
    )
    capture_resources: dict[str, str] = Field(
        default_factory=dict,
        description="camera -> Ray custom resource of the nodes near it: its capture actor runs only there.",
    )
    max_cameras_per_engine: int = Field(
        8,
        ge=1,
        le=MAX_ENGINE_CAMERAS,
        description="Most cameras one engine serves (an engine refuses more than its "
        "engine.max_cameras).",
    )
    max_objects_per_engine: int = Field(
        256,
        ge=1,
        le=100000,
        description="Most objects one engine tracks: each camera reserves its engine.max_objects.",
    )
    id_block: int = Field(
        1_000_000,
        ge=4,
        le=2**40,
        description="Object IDs leased per placement of a camera (and per renewal at half use); IDs are never reused in the fleet.",
    )
    reseed_objects: bool = Field(
        True,
        description="A camera moved to another engine starts with its last known objects as box prompts (new IDs), while its text prompt re-grounds.",
    )
    curve: Literal["auto", "on", "off"] = Field(
        "auto",
        description="CURVE on the fleet's ZeroMQ links (frames, tracks, annotated): auto = on when the cluster has more than one node or a node address that is not loopback.",
    )
    check_every_s: float = Field(
        0.5, gt=0, le=60, description="How often the controller checks engines and captures."
    )
    engine_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="An engine actor that does not answer for this long is counted as down and restarted.",
    )
    status_every_s: float = Field(
        5.0, gt=0, le=3600, description="`promptcam fleet` prints a status line this often."
    )
    local_cpus: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="CPUs of the local Ray instance started when no --address is given (None: all).",
    )
    connect_timeout_s: float = Field(
        5.0,
        gt=0,
        le=600,
        description="`promptcam fleet ... --address`: give up joining the Ray cluster after this long (one line, exit 2), instead of Ray's own retries (over 40 s on an address that is not a Ray cluster).",
    )

    @field_validator("engine_resources")
    @classmethod
    def _resources(cls, v: list[str]) -> list[str]:
        for r in v:
            if not RESOURCE_RE.match(r):
                raise ValueError(f"bad Ray resource name {r[:80]!r}")
        return v

    @field_validator("capture_resources")
    @classmethod
    def _capture_resources(cls, v: dict[str, str]) -> dict[str, str]:
        for cam, r in v.items():
            if not RESOURCE_RE.match(r):
                raise ValueError(f"camera {cam[:64]!r}: bad Ray resource name {r[:80]!r}")
        return v


# Engine keys a camera of a ``cameras:`` mapping may override (the rest are engine-wide: one
# detector and one model serve every camera).
PER_CAMERA_ENGINE_KEYS = (
    "prompt",
    "reground_every_frames",
    "reground_every_s",
    "iou_threshold",
    "drift_iou",
    "merge_iou",
    "score_threshold",
    "max_missed",
    "max_unseen",
    "reid_frames",
    "reid_distance",
    "drift_colour",
    "max_objects",
    "seed_with",
)
CAMERA_PORT_STRIDE = 10  # tcp frames port of the k-th camera: bus.frames port + 10 k


class CameraConfig(_Model):
    """One camera of a ``cameras:`` mapping (Frigate style): what differs from the top-level
    ``source`` and ``engine`` sections."""

    source: str | dict[str, Any] | None = Field(
        None,
        description="The camera's source: a URI (as --source), or source keys that override the top-level source section.",
    )
    prompt: str | None = Field(
        None,
        max_length=MAX_PROMPT_CHARS,
        description="Text prompt of this camera (default: engine.prompt; at most 1000 characters).",
    )
    fps: float | None = Field(
        None, gt=0, le=240, description="Frame rate of this camera's demo scene or image directory."
    )
    frames: str | None = Field(
        None,
        description="Frames endpoint this camera's capture binds (default: bus.frames for the first camera; the k-th gets the tcp port + 10 k, or the ipc path + '-NAME').",
    )
    engine: dict[str, Any] = Field(
        default_factory=dict,
        description="Per-camera overrides of engine keys: "
        + ", ".join(PER_CAMERA_ENGINE_KEYS)
        + ".",
    )


@dataclass(frozen=True)
class CameraSettings:
    """One camera, resolved: its source, its engine settings and its frames endpoint."""

    name: str
    source: SourceConfig
    engine: EngineConfig
    frames: str


class Config(_Model):
    camera: str = Field(
        "cam0",
        description="Camera name, used in topics; with a cameras mapping, the camera a one-camera command (capture, prompt, subscribe, record, object) addresses.",
    )
    cameras: dict[str, CameraConfig] = Field(
        default_factory=dict,
        description="Several cameras served by one engine: name -> {source, prompt, fps, frames, engine}. Empty: one camera, named by 'camera', from the source and engine sections.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )
    source: SourceConfig = Field(default_factory=SourceConfig)
    bus: BusConfig = Field(default_factory=BusConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    record: RecordConfig = Field(default_factory=RecordConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    foxglove: FoxgloveConfig = Field(
        default_factory=FoxgloveConfig,
        description="Live Foxglove WebSocket (`promptcam foxglove`; docs/robots.md).",
    )
    dds: DdsConfig = Field(default_factory=DdsConfig)

    @field_validator("camera")
    @classmethod
    def _camera(cls, v: str) -> str:
        if not is_camera_name(v):
            raise ValueError("expected 1-64 letters, digits, '_' or '-'")
        return v

    @model_validator(mode="after")
    def _cameras_resolve(self) -> Config:
        n, limit = len(self.cameras), self.engine.max_cameras
        if n > limit:
            raise ConfigError(
                f"cameras: {n} configured, over engine.max_cameras={limit} (one engine serves "
                f"at most {MAX_ENGINE_CAMERAS}; run a fleet or several engines for more)"
            )
        settings = self.camera_settings()  # every camera's settings are checked at load time
        for cam in self.fleet.capture_resources:
            if cam not in settings:
                raise ConfigError(
                    f"fleet.capture_resources names camera {cam[:64]!r}, which is not configured "
                    f"(cameras: {', '.join(settings)})"
                )
        self._check_events(settings)
        return self

    def _check_events(self, settings: dict[str, CameraSettings]) -> None:
        """Zones and lines against their camera: a known camera, labels of its prompt, pixel
        points inside the demo scene's frame (the one frame size known before frames arrive)."""
        from stream.prompts import normalize_prompt

        for name in self.events.cameras:
            if name not in settings:
                raise ConfigError(
                    f"events.cameras names camera {name[:64]!r}, which is not configured "
                    f"(cameras: {', '.join(settings)})"
                )
            cam = settings[name]
            prompt = cam.engine.prompt
            labels = normalize_prompt(prompt) if prompt.strip() else None
            demo = cam.source.uri == "demo"
            size = (cam.source.width, cam.source.height) if demo else None
            try:
                self.events.check_camera(name, labels, size)
            except ValueError as e:
                raise ConfigError(str(e)) from None

    def check_frame_size(self) -> None:
        """``ConfigError`` when frames of ``source.width`` x ``source.height`` (the demo scene, the
        size requested from a webcam) of any camera would exceed ``bus.max_payload_mb``:
        receivers would refuse every frame, so say so before anything starts."""
        limit = self.bus.max_payload_mb * 2**20
        for name, cam in self.camera_settings().items():
            s = cam.source
            nbytes = s.width * s.height * 3
            if nbytes > limit:
                need = -(-nbytes // 2**20)
                where = f"camera {name}: " if self.cameras else ""
                raise ConfigError(
                    f"{where}source.width x source.height = {s.width}x{s.height} makes "
                    f"{nbytes / 2**20:.1f} MiB frames, over bus.max_payload_mb="
                    f"{self.bus.max_payload_mb:g}; set bus.max_payload_mb={need} or more"
                )

    def camera_settings(self) -> dict[str, CameraSettings]:
        """Every camera, resolved (in config order); raises ``ConfigError`` naming the camera and
        key of a bad override."""
        if not self.cameras:
            return {
                self.camera: CameraSettings(self.camera, self.source, self.engine, self.bus.frames)
            }
        out: dict[str, CameraSettings] = {}
        used: dict[str, str] = {}
        for index, (name, cam) in enumerate(self.cameras.items()):
            if not is_camera_name(name):
                raise ConfigError(
                    f"camera name {name[:80]!r}: expected 1-64 letters, digits, '_' or '-'"
                )
            settings = self._resolve_camera(index, name, cam)
            other = used.get(settings.frames)
            if other is not None:
                raise ConfigError(
                    f"cameras {other!r} and {name!r} both use frames endpoint {settings.frames}"
                )
            used[settings.frames] = name
            out[name] = settings
        return out

    def selected_camera(self) -> str | None:
        """The camera a one-camera command addresses: ``camera``, when it is one of the cameras
        (or there is no mapping); None when a mapping does not name it."""
        if not self.cameras or self.camera in self.cameras:
            return self.camera
        return None

    def for_camera(self, name: str | None = None) -> Config:
        """The one-camera view of camera ``name`` (default: the selected camera): its source,
        engine settings and frames endpoint in the top-level sections, no mapping. What a
        one-camera process (capture, record) runs on."""
        settings = self.camera_settings()
        name = name if name is not None else self.selected_camera()
        if name is None or name not in settings:
            known = ", ".join(settings)
            what = "choose one with --camera" if name is None else f"no camera {name!r}"
            raise ConfigError(f"the config defines cameras {known}: {what}")
        cam = settings[name]
        tree = self.model_dump(mode="json")
        tree.update(
            camera=name,
            cameras={},
            source=cam.source.model_dump(mode="json"),
            engine=cam.engine.model_dump(mode="json"),
        )
        tree["bus"]["frames"] = cam.frames
        tree["fleet"]["capture_resources"] = {}  # placement of a fleet: no meaning for one camera
        return Config.model_validate(tree)

    def _resolve_camera(self, index: int, name: str, cam: CameraConfig) -> CameraSettings:
        source: dict[str, Any] = self.source.model_dump()
        if isinstance(cam.source, str):
            source["uri"] = cam.source
        elif cam.source is not None:
            source.update(cam.source)
        if cam.fps is not None:
            source["fps"] = cam.fps
        engine: dict[str, Any] = self.engine.model_dump()
        for key, value in cam.engine.items():
            if key not in PER_CAMERA_ENGINE_KEYS:
                where = "unknown engine key" if key not in engine else "engine-wide key"
                raise ConfigError(
                    f"cameras.{name}.engine.{str(key)[:64]}: {where}; a camera may set "
                    + ", ".join(PER_CAMERA_ENGINE_KEYS)
                )
            engine[key] = value
        if cam.prompt is not None:
            engine["prompt"] = cam.prompt
        try:
            src = SourceConfig.model_validate(source)
        except ValidationError as e:
            raise ConfigError(_first_error(e, f"cameras.{name}.source.")) from None
        try:
            eng = EngineConfig.model_validate(engine)
        except ValidationError as e:
            raise ConfigError(_first_error(e, f"cameras.{name}.engine.")) from None
        frames = cam.frames or camera_frames_endpoint(self.bus.frames, index, name)
        try:
            BusConfig._endpoint(frames)
        except ValueError as e:
            raise ConfigError(f"bad config value for 'cameras.{name}.frames': {e}") from None
        return CameraSettings(name, src, eng, frames)


def camera_frames_endpoint(base: str, index: int, name: str) -> str:
    """The frames endpoint of the ``index``-th camera when the config names none: ``base`` for
    the first; then the tcp port + ``CAMERA_PORT_STRIDE * index``, or the ipc/inproc path with
    ``-NAME`` appended."""
    if index == 0:
        return base
    if base.startswith("tcp://"):
        host, port = base[6:].rsplit(":", 1)
        derived = int(port) + CAMERA_PORT_STRIDE * index
        if derived > 65535:
            raise ConfigError(
                f"camera {name!r}: no frames port left after {base} (set cameras.{name}.frames)"
            )
        return f"tcp://{host}:{derived}"
    return f"{base}-{name}"


def _first_error(exc: ValidationError, prefix: str = "") -> str:
    err = exc.errors()[0]
    msg = err["msg"].removeprefix("Value error, ")
    if not err["loc"] and not prefix:
        return msg  # a whole-config check: its message names the keys
    key = prefix + ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown config key '{shorten(key)}'"
    return f"bad config value for '{shorten(key)}': {msg} (got {shorten(repr(err.get('input')))})"


def shorten(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters: what an error shows of user input."""
    line = " ".join(text.split())
    return line if len(line) <= limit else f"{line[: limit - 3]}..."


def _yaml_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """How many values ``root`` stands for once every alias is expanded, counted on the node
    graph without expanding it (so an alias bomb costs its size, not its expansion); more
    than ``limit`` (or a cycle: an alias inside its own anchor) gives ``limit + 1``."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            total = 1 + sum(sizes[id(c)] for c in _yaml_children(node))
            sizes[key] = min(total, limit + 1)
            on_path.discard(key)
            continue
        if key in sizes:
            continue
        if key in on_path:
            return limit + 1
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _yaml_children(node) if id(c) not in sizes)
    return sizes[id(root)]


def load_yaml(text: str, what: str, loader_class: type[yaml.SafeLoader] = yaml.SafeLoader) -> Any:
    """``yaml.safe_load`` bounded to ``MAX_CONFIG_VALUES`` values after alias expansion and to
    the parser's nesting depth; anything else is a one-line ``ConfigError`` about ``what``."""
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, MAX_CONFIG_VALUES) > MAX_CONFIG_VALUES:
            raise ConfigError(
                f"{what} expands to more than {MAX_CONFIG_VALUES:,} values (YAML aliases?); refused"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise YamlSyntaxError(f"{what} is not valid YAML: {shorten(str(e))}") from None
    except RecursionError:
        raise ConfigError(f"{what} is nested too deeply to be a config") from None
    finally:
        loader.dispose()


def _read_config_text(p: Path) -> str:
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {p} is larger than {MAX_CONFIG_BYTES // 2**10} KiB; refused"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file {p} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})"
        ) from None


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key '{dotted}': '{p}' is not a section")
        node = child
    node[parts[-1]] = value


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key that appears twice in one mapping (a second camera of
    the same name would silently replace the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {str(key)[:64]!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML config (default ``configs/default.yaml``) and apply dotted-key overrides."""
    tree: dict[str, Any] = {}
    p = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    if path is not None or p.exists():
        loaded = load_yaml(_read_config_text(p), f"config file {p}", _UniqueKeyLoader)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at top level")
        tree = loaded or {}
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, key, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_first_error(e)) from None


def parse_override(item: str) -> tuple[str, Any]:
    """Parse ``key.sub=value`` (value read as YAML) from ``--set``."""
    if "=" not in item:
        raise ConfigError(f"--set expects KEY=VALUE, got '{item}'")
    key, raw = item.split("=", 1)
    try:
        value = load_yaml(raw, f"--set {shorten(key)}") if raw else ""
    except YamlSyntaxError:
        value = raw  # not YAML: the text itself
    return key.strip(), value
