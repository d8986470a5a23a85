"""The ``Lifecycle`` protocol: what the camera tracker (``engine.camera.CameraTracker``) asks of
a track lifecycle, and the factory it receives one from. ``TrackManager`` is the default; another
lifecycle (a ByteTrack-style one, SAM 3's) plugs in by implementing this protocol and being
passed as ``CameraTracker(..., lifecycle_factory=...)``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from engine.ids import IdAllocator
from engine.lifecycle.geometry import Colour
from engine.lifecycle.states import TrackState
from engine.lifecycle.track import DetectionsLike, Observation, Plan, Removal, TrackEvent, TrackInfo
from stream.config import EngineConfig


class Lifecycle(Protocol):
    """Track IDs, labels and states for one camera (``TrackManager`` documents each rule)."""

    ids_exhausted: int

    def on_frame(
        self,
        seq: int,
        observations: Mapping[int, Observation],
        mask_iou: Callable[[int, int], float] | None = None,
        mask_contained: Callable[[int, int], float] | None = None,
    ) -> list[TrackEvent]: ...

    def on_detections(
        self,
        seq: int,
        detections: DetectionsLike,
        tracks_at_seq: Mapping[int, Observation],
        mask_iou: Callable[[int, int], float] | None = None,
        colours: Sequence[Colour | None] | None = None,
    ) -> Plan: ...

    def add_manual(self, label: str, box: Sequence[float], seq: int | None = None) -> int: ...

    def remove(self, track_id: int) -> Removal: ...

    def end(self, track_id: int) -> None: ...

    def set_labels(self, labels: Iterable[str]) -> list[int]: ...

    def reset(self) -> list[int]: ...

    def tracks(self) -> list[TrackInfo]: ...

    def suppressed_ids(self) -> list[int]: ...

    def dormant_ids(self) -> list[int]: ...

    def state(self, track_id: int) -> TrackState: ...

    def __contains__(self, track_id: object) -> bool: ...

    def __len__(self) -> int: ...

    @property
    def next_id(self) -> int: ...

    @property
    def ids_left(self) -> int | None: ...

    @property
    def id_allocator(self) -> IdAllocator: ...

    def add_id_block(self, first: int, limit: int) -> None: ...


class LifecycleFactory(Protocol):
    """Makes one camera's lifecycle."""

    def __call__(
        self,
        cfg: EngineConfig,
        *,
        first_id: int = 1,
        id_limit: int | None = None,
        ids: IdAllocator | None = None,
    ) -> Lifecycle: ...


def default_lifecycle(
    cfg: EngineConfig,
    *,
    first_id: int = 1,
    id_limit: int | None = None,
    ids: IdAllocator | None = None,
) -> Lifecycle:
    """The default lifecycle: ``TrackManager`` with ``cfg.lifecycle``'s profile."""
    from engine.lifecycle.manager import TrackManager

    return TrackManager(cfg, first_id=first_id, id_limit=id_limit, ids=ids)
