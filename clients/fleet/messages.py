"""The values the fleet's actors hand each other over Ray calls, and the fleet status.

Plain dicts on the wire (Ray pickles them; ``promptcam fleet status --json`` and the fleet page
print them as JSON), typed here so that each key is named once: what an actor's ``info`` and
``report``/``status`` return, the replies of engine commands, the relay's view of a camera, and
the status the controller assembles (:class:`FleetStatus`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NotRequired, TypedDict

# A config tree as ``Config.model_dump(mode="json")`` gives it (validated again where read).
ConfigTree = Mapping[str, object]


class ActorInfo(TypedDict):
    """Where an actor runs (``node.Whereabouts``); ``incarnation`` changes with every start."""

    node_id: str
    node_ip: str
    pid: int
    incarnation: str


class EngineInfo(ActorInfo):
    name: str
    tracks: str
    annotated: str
    control: str


class CaptureInfo(ActorInfo):
    camera: str


class GatewayInfo(ActorInfo):
    tracks: str
    annotated: str
    control: str
    page: str


class CameraReport(TypedDict):
    """One camera as its engine reports it (``EngineActor.report``)."""

    state: str  # the engine's camera state: waiting | live | stalled
    fps: float
    objects: int
    frames_out: int
    next_id: int | None
    ids_left: int | None
    ids_exhausted: int
    frames: str


class EngineReport(TypedDict):
    incarnation: str
    cameras: dict[str, CameraReport]
    fps_in: float
    fps_out: float
    rss_mb: float | None
    t: float


class CaptureStatus(TypedDict):
    """``CaptureActor.status``: where its frames are, its state and counters."""

    incarnation: str
    frames: str
    state: str
    error: str
    stats: dict[str, object]


class Reply(TypedDict):
    """The answer of a command to an actor (``place``, ``unplace``, ``lease``)."""

    ok: bool
    error: NotRequired[str]


class RelayObject(TypedDict):
    id: int
    label: str
    box: list[float]


class RelayCamera(TypedDict):
    """What the gateway's relay has seen of one camera (``Relay.snapshot``)."""

    tracks: int
    annotated: int
    dropped: int
    tracks_age_s: float | None
    objects: list[RelayObject]


class NodeStatus(TypedDict):
    node_id: str
    ip: str
    alive: bool
    cpus: float
    gpus: float
    labels: list[str]


class EngineStatus(TypedDict):
    name: str
    state: str
    error: str
    node_id: str | None
    node_ip: str | None
    pid: int | None
    tracks: str | None
    resource: str | None
    cameras: list[str]
    fps: float
    rss_mb: float | None
    restarts: int


class CameraStatus(TypedDict):
    camera: str
    state: str
    error: str
    engine: str | None
    moving_to: str | None
    frames: str | None
    capture: str | None
    capture_fps: object
    resource: str | None
    fps: float
    objects: int
    prompt: str
    ids: list[int] | None
    next_id: int | None
    placements: int


class FleetCamera(TypedDict):
    """A camera in the gateway's ``cameras`` reply."""

    camera: str
    state: str
    fps: float
    objects: int
    prompt: str
    engine: str | None


class ControllerInfo(TypedDict):
    pid: int
    node_id: str
    node_ip: str
    starts: int


class Figures(TypedDict):
    faults: int
    recoveries: int
    recovery_s: list[float]
    recovery_p50_s: float | None
    recovery_max_s: float | None
    controller_restarts: int
    ids_next_free: int


class FleetStatus(TypedDict):
    """``promptcam fleet status --json`` and the fleet page's ``/api/status``."""

    fleet: str
    namespace: str
    curve: bool
    t: float
    controller: ControllerInfo
    gateway: GatewayInfo | None
    engines: list[EngineStatus]
    cameras: list[CameraStatus]
    nodes: list[NodeStatus]
    figures: Figures
    events: list[dict[str, object]]
    stale: NotRequired[bool]  # set by the gateway: the last status of a restarting controller


class CameraReply(TypedDict):
    ok: bool
    error: NotRequired[str]
    camera: NotRequired[str]
    state: NotRequired[str]


class DrainReply(TypedDict):
    ok: bool
    error: NotRequired[str]
    engine: NotRequired[str]
    cameras: NotRequired[list[str]]


class ShutdownReply(TypedDict):
    ok: bool
    actors: int
    stopped_cleanly: int


def section(tree: ConfigTree, key: str) -> dict[str, object]:
    """A copy of the mapping at ``tree[key]`` (empty when it is absent or not a mapping)."""
    sub = tree.get(key)
    return {str(k): v for k, v in sub.items()} if isinstance(sub, Mapping) else {}
