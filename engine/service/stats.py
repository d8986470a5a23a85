"""The engine process's figures as typed models that are also the wire form of control ``stats``.

``EngineStats.model_dump()`` (and ``model_dump_json()``) give the reply of ``{"cmd":"stats"}``:
v1's flat fields (sums over the cameras; with one camera, that camera's figures) followed by
the engine's own (uptime, control and detections counters, stage latencies, memory) and
``cameras`` (each camera's ``CameraProcessStats``, keyed by name). ``CameraEntry`` is one row
of the ``{"cmd":"cameras"}`` reply.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from engine.camera_stats import CameraStats
from engine.outputs import AnnotatedPublisher
from engine.service.feeds import CameraFeed, FeedState

# v1's flat fields of a several-camera engine: each the sum over its cameras (rounded to 0.01)
SUMMED = (
    "fps_in",
    "fps_out",
    "frames_in",
    "frames_out",
    "frames_skipped",
    "frames_stale",
    "frames_overrun",
    "frames_rejected",
    "frames_received",
    "frames_connection_drops",
    "annotated_published",
    "annotated_dropped",
    "frames_dropped",
    "objects",
    "suppressed",
)
PER_CAMERA_ONLY = ("frames", "state", "camera")  # not among a one-camera engine's flat fields


class _Figures(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CameraProcessStats(_Figures):
    """One camera as the engine process sees it (``stats`` → ``cameras.<name>``): its tracking
    figures (``engine.camera.CameraStats``), its transport and its rates. Field order is the
    wire order."""

    frames: str = Field(description="the endpoint its frames come from")
    groundings: int = Field(description="detector runs")
    grounding_errors: int = Field(description="detector runs that failed")
    grounding_skipped_small: int = Field(description="due groundings of frames too small")
    grounding_results_dropped: int = Field(description="detector results too late to use")
    objects_created: int = Field(description="objects that got an ID")
    objects_ended: int = Field(description="tracks ended")
    objects_dormant: int = Field(description="tracks put to sleep for re-identification")
    reidentified: int = Field(description="dormant or lost tracks re-prompted under their ID")
    reseeded: int = Field(description="tracks re-prompted from a detection")
    seed_failures: int = Field(description="prompts the segmenter refused")
    last_grounding_ms: float = Field(description="the last detector run's time")
    last_timings_ms: dict[str, float] = Field(description="the last frame's model stages")
    prompt: str = Field(description="the camera's text prompt")
    objects: int = Field(description="objects followed and published")
    suppressed: int = Field(description="objects removed by the user, followed silently")
    grounding_in_flight: bool = Field(description="a detector run is under way")
    next_id: int = Field(description="the ID the next object gets")
    ids_left: int | None = Field(description="IDs left in the leased blocks (None: not leased)")
    ids_exhausted: int = Field(description="objects not created for want of a leased ID")
    camera: str = Field(description="the camera's name")
    state: FeedState = Field(description="waiting (no frame yet), live or stalled")
    fps_in: float = Field(description="frames taken per second")
    fps_out: float = Field(description="tracks messages published per second")
    frames_in: int = Field(description="frames the receiver delivered")
    frames_out: int = Field(description="tracks messages published")
    frames_skipped: int = Field(description="frames replaced by a newer one while busy")
    frames_stale: int = Field(description="frames older than the staleness budget")
    frames_overrun: int = Field(description="shared-memory frames overwritten before read")
    frames_rejected: int = Field(description="malformed or undecodable frames")
    frames_received: int = Field(description="frame messages received")
    frames_rejected_by_reason: dict[str, int] = Field(description="frames_rejected by reason")
    frames_connection_drops: int = Field(description="connections dropped for oversize parts")
    annotated_published: int = Field(description="annotated frames published")
    annotated_dropped: int = Field(description="annotated frames replaced by a newer one")
    latency_ms: dict[str, float] = Field(description="the last frame's stage and path times")
    frames_dropped: int = Field(description="frames_skipped + frames_stale + frames_overrun")

    @classmethod
    def of(
        cls, feed: CameraFeed, tracking: CameraStats, annotated: AnnotatedPublisher | None
    ) -> CameraProcessStats:
        rx = feed.receiver.stats
        c = tracking.counters
        return cls(
            frames=feed.frames,
            groundings=c.groundings,
            grounding_errors=c.grounding_errors,
            grounding_skipped_small=c.grounding_skipped_small,
            grounding_results_dropped=c.grounding_results_dropped,
            objects_created=c.objects_created,
            objects_ended=c.objects_ended,
            objects_dormant=c.objects_dormant,
            reidentified=c.reidentified,
            reseeded=c.reseeded,
            seed_failures=c.seed_failures,
            last_grounding_ms=c.last_grounding_ms,
            last_timings_ms=dict(c.last_timings_ms),
            prompt=tracking.prompt,
            objects=tracking.objects,
            suppressed=tracking.suppressed,
            grounding_in_flight=tracking.grounding_in_flight,
            next_id=tracking.next_id,
            ids_left=tracking.ids_left,
            ids_exhausted=tracking.ids_exhausted,
            camera=feed.name,
            state=feed.state(),
            fps_in=round(feed.fps_in.rate(), 2),
            fps_out=round(feed.fps_out.rate(), 2),
            frames_in=rx.delivered,
            frames_out=feed.published,
            frames_skipped=rx.skipped,
            frames_stale=rx.stale,
            frames_overrun=rx.overrun,
            frames_rejected=rx.rejected_total + feed.undecodable,
            frames_received=rx.received,
            frames_rejected_by_reason={**rx.rejected, "undecodable": feed.undecodable},
            frames_connection_drops=rx.connection_drops,
            annotated_published=annotated.published.get(feed.name, 0) if annotated else 0,
            annotated_dropped=annotated.dropped.get(feed.name, 0) if annotated else 0,
            latency_ms={k: round(v, 2) for k, v in feed.latency_ms.items()},
            frames_dropped=rx.skipped + rx.stale + rx.overrun,
        )


class ControlCounters(_Figures):
    """The control and detections threads' figures (flat in the wire form)."""

    control_rejected_by_reason: dict[str, int] = Field(description="rejected requests by reason")
    control_pending: int = Field(description="commands queued or running now")
    control_pending_max: int = Field(description="the most commands ever pending")
    control_replies_dropped: int = Field(description="replies a client did not read")
    detections_dropped: int = Field(description="detections beyond the queue")
    detections_connection_drops: int = Field(description="detections connections dropped")
    busy_with: str | None = Field(description="a long step of the frame loop, if any")


class MemoryStats(_Figures):
    """Memory of the engine process (``memory`` on the wire; no CUDA figure without CUDA)."""

    rss_mb: float = Field(description="resident set size")
    cuda_allocated_mb: float | None = Field(default=None, description="CUDA memory allocated")


class EngineStats(_Figures):
    """The whole engine process (control ``stats``); its dump is the wire form."""

    uptime_s: float = Field(description="seconds since the process started")
    cameras: dict[str, CameraProcessStats] = Field(description="each served camera")
    control_rejected: int = Field(description="control requests rejected")
    detections_rejected: int = Field(description="detections messages rejected")
    ground_batches: int = Field(description="batched detector calls over cameras")
    control: ControlCounters = Field(description="control and detections threads' figures")
    latency_ms: dict[str, float] = Field(description="the last frame's time per stage")
    memory: MemoryStats = Field(description="memory now")

    @model_serializer(mode="wrap")
    def _wire(self, nested: SerializerFunctionWrapHandler) -> dict[str, object]:
        d = nested(self)
        cams: list[dict[str, object]] = list(d["cameras"].values())
        flat = _flat_camera_fields(cams)
        memory = {k: v for k, v in d["memory"].items() if v is not None}
        return {
            **flat,
            "uptime_s": d["uptime_s"],
            "control_rejected": d["control_rejected"],
            "detections_rejected": d["detections_rejected"],
            "ground_batches": d["ground_batches"],
            **d["control"],
            "latency_ms": d["latency_ms"],
            "memory": memory,
            "cameras": d["cameras"],
        }

    def camera_list(self) -> list[CameraEntry]:
        return [CameraEntry.of(c) for c in self.cameras.values()]


def _flat_camera_fields(cams: list[dict[str, object]]) -> dict[str, object]:
    """v1's flat fields: one camera's own (its name last), or the sums over several."""
    if len(cams) == 1:
        flat = {k: v for k, v in cams[0].items() if k not in PER_CAMERA_ONLY}
        flat["camera"] = cams[0]["camera"]
        return flat
    sums: dict[str, object] = {k: round(sum(_number(c[k]) for c in cams), 2) for k in SUMMED}
    by_reason: dict[str, int] = {}
    for c in cams:
        for reason, n in _counts(c["frames_rejected_by_reason"]).items():
            by_reason[reason] = by_reason.get(reason, 0) + n
    sums["frames_rejected_by_reason"] = by_reason
    return sums


def _number(v: object) -> float:
    assert isinstance(v, int | float)
    return v


def _counts(v: object) -> dict[str, int]:
    assert isinstance(v, dict)
    return v


class CameraEntry(_Figures):
    """One camera in the control ``cameras`` reply."""

    camera: str = Field(description="the camera's name")
    state: FeedState = Field(description="waiting (no frame yet), live or stalled")
    fps: float = Field(description="tracks messages published per second")
    objects: int = Field(description="objects followed and published")
    prompt: str = Field(description="the camera's text prompt")
    frames: str = Field(description="the endpoint its frames come from")

    @classmethod
    def of(cls, c: CameraProcessStats) -> CameraEntry:
        return cls(
            camera=c.camera,
            state=c.state,
            fps=c.fps_out,
            objects=c.objects,
            prompt=c.prompt,
            frames=c.frames,
        )
