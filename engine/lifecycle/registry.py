"""Control and queries of the lifecycle (a mixin of ``TrackManager``): manual tracks,
removal, prompt change, reset; what is published; ID allocation (``engine.ids``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from engine.core.types import Box
from engine.ids import IdAllocator
from engine.lifecycle.config import Thresholds
from engine.lifecycle.geometry import as_box
from engine.lifecycle.states import TrackState
from engine.lifecycle.track import PublishedState, Removal, Track, TrackInfo, TrackStore
from stream.errors import PromptError, RequestError

log = logging.getLogger("engine.track_manager")


class Registry(TrackStore):
    """The tracks by ID: control requests and queries; see engine/track_manager.py."""

    _th: Thresholds
    _ids: IdAllocator
    _last_seq: int | None
    ids_exhausted: int

    # ------------------------------------------------------------------ control

    def add_manual(self, label: str, box: Sequence[float], seq: int | None = None) -> int:
        """Start a manual track (control ``add_object``); returns its new ID.

        ``seq``: the frame the box is given on (default: its first observed frame)."""
        if not label.strip():
            raise PromptError("an object label must not be empty")
        if self._live() >= self._th.max_objects:
            raise RequestError(
                f"cannot add an object: max_objects={self._th.max_objects} are tracked"
            )
        tid = self._ids.take()
        if tid is None:
            self.ids_exhausted += 1
            raise RequestError(
                f"cannot add an object: the IDs leased to this camera are used up (below {self._ids.limit})"
            )
        return self._create(tid, label.strip(), as_box(box), manual=True, first_seq=seq).id

    def remove(self, track_id: int) -> Removal:
        """Control ``remove_object``: a manual track ends, one the detector found is suppressed
        (see the module docstring). An unknown ID, or one removed already, is a
        :class:`PromptError` (it is not a tracked object any more)."""
        t = self._tracks.get(track_id)
        if t is None or t.suppressed:
            raise RequestError(f"no tracked object with id {track_id}")
        if t.manual:
            self._end(t)
            return Removal.ENDED
        t.suppressed = True
        log.info("track %d (%s) removed: suppressed while it stays in view", t.id, t.label)
        return Removal.SUPPRESSED

    def end(self, track_id: int) -> None:
        """End one track at once, whatever it is (its seeding failed); an unknown ID is a
        :class:`PromptError`."""
        if track_id not in self._tracks:
            raise RequestError(f"no tracked object with id {track_id}")
        self._end(self._tracks[track_id])

    def set_labels(self, labels: Iterable[str]) -> list[int]:
        """Prompt change: end (and return) the non-manual tracks whose label is not in
        ``labels``, and every suppressed track (a new prompt lifts the suppressions)."""
        allowed = set(labels)
        gone = [
            tid
            for tid, t in self._tracks.items()
            if not t.manual and (t.label not in allowed or t.suppressed)
        ]
        for tid in gone:
            self._end(self._tracks[tid])
        return sorted(gone)

    def reset(self) -> list[int]:
        """End every track; returns their IDs. IDs are still never reused afterwards."""
        gone = sorted(self._tracks)
        for tid in gone:
            self._end(self._tracks[tid])
        return gone

    # ------------------------------------------------------------------ queries

    def tracks(self) -> list[TrackInfo]:
        """Live tracks to publish, by ID, as of the latest frame (dormant, suppressed and those on
        probation are left out)."""
        return [
            self._info(t)
            for _, t in sorted(self._tracks.items())
            if not t.dormant and not t.suppressed and not self._on_probation(t)
        ]

    def _on_probation(self, t: Track) -> bool:
        """A detector-found track not yet confirmed, with ``probation_frames`` above 1 (at 1 a
        track is published from its detection on, as before probation existed)."""
        probation = self._th.life.probation_frames > 1
        return probation and not t.manual and t.state is TrackState.TENTATIVE

    def suppressed_ids(self) -> list[int]:
        """Tracks removed by the user but followed until their object leaves, by ID (live or
        dormant)."""
        return sorted(t.id for t in self._tracks.values() if t.suppressed)

    def state(self, track_id: int) -> TrackState:
        """A track's lifecycle state (``ENDED`` for an ID not in the manager)."""
        t = self._tracks.get(track_id)
        return TrackState.ENDED if t is None else t.state

    def dormant_ids(self) -> list[int]:
        """Tracks kept for re-identification (memory freed, not published), by ID."""
        return sorted(t.id for t in self._tracks.values() if t.dormant)

    def _live(self) -> int:
        return sum(1 for t in self._tracks.values() if not t.dormant)

    def __contains__(self, track_id: object) -> bool:
        return track_id in self._tracks

    def __len__(self) -> int:
        """Live tracks, suppressed ones included (dormant ones not counted; ``in`` finds them)."""
        return self._live()

    @property
    def next_id(self) -> int:
        return self._ids.next_id

    @property
    def ids_left(self) -> int | None:
        """IDs still available in the current and the queued blocks (None: not leased)."""
        return self._ids.ids_left

    @property
    def id_allocator(self) -> IdAllocator:
        return self._ids

    def add_id_block(self, first: int, limit: int) -> None:
        """Queue the leased block ``[first, limit)`` (``IdAllocator.add_block``)."""
        self._ids.add_block(first, limit)

    def _info(self, t: Track) -> TrackInfo:
        first = t.observed <= 1 or (t.confirmed_seq is not None and t.confirmed_seq == t.last_seq)
        state: PublishedState = "new" if first else ("lost" if t.lost else "tracked")
        ref = t.last_seq if t.last_seq is not None else self._last_seq
        age = 0 if t.first_seq is None or ref is None else max(0, ref - t.first_seq)
        return TrackInfo(
            t.id, t.label, state, age, t.score, None if t.lost else t.last_box, t.manual
        )

    def _create(self, tid: int, label: str, box: Box, manual: bool, first_seq: int | None) -> Track:
        t = Track(tid, label, manual, first_seq, box)
        self._tracks[t.id] = t
        return t
