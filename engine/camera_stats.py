"""One camera's tracking figures: the counters the camera tracker keeps and the stats it reports
(the engine process adds transport and rates)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class EngineCounters:
    frames: int = 0
    groundings: int = 0
    grounding_errors: int = 0
    grounding_skipped_small: int = 0  # due groundings of frames under MIN_DETECT_SIDE a side
    grounding_results_dropped: int = 0
    objects_created: int = 0
    objects_ended: int = 0
    objects_dormant: int = 0  # tracks put to sleep (memory freed) for re-identification
    reidentified: int = 0  # dormant or lost tracks re-prompted from a detection under their ID
    reseeded: int = 0
    seed_failures: int = 0
    last_grounding_ms: float = 0.0
    last_timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CameraStats:
    """One camera's tracking figures (the engine process adds transport and rates)."""

    camera: str
    prompt: str
    objects: int  # objects followed and published (suppressed ones not counted)
    grounding_in_flight: bool
    counters: EngineCounters
    suppressed: int = 0  # objects removed by the user, followed silently until they leave
    next_id: int = 1  # the ID the next object gets
    ids_left: int | None = None  # in the leased ID blocks (None: not leased)
    ids_exhausted: int = 0  # objects not created because no leased ID was left

    def as_dict(self) -> dict[str, object]:
        """The flat form of the control ``stats`` reply (counters at top level)."""
        return {
            **asdict(self.counters),
            "prompt": self.prompt,
            "objects": self.objects,
            "suppressed": self.suppressed,
            "grounding_in_flight": self.grounding_in_flight,
            "next_id": self.next_id,
            "ids_left": self.ids_left,
            "ids_exhausted": self.ids_exhausted,
        }
