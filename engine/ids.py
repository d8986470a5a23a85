"""Object IDs: increasing per camera and never reused, within one engine run, across engine
restarts and across the engines of a fleet.

One camera's IDs come from an :class:`IdAllocator`: the current block ``[next, limit)`` and blocks
queued behind it. Blocks come from one of two places:

- **leases**: a fleet controller hands an engine disjoint blocks (control ``add_camera`` with
  ``first_id``/``id_limit``, then ``lease_ids``), having persisted its own high-water mark first
  (``clients.fleet.ids``). A camera with no leased ID left creates no track.
- **reservations**: a stand-alone engine reserves blocks of ``RESERVE_BLOCK`` IDs itself.
  :class:`IdReservations` records "camera C's IDs are reserved up to N" and has it persisted (in
  the engine state file, ``engine.state``) *before* any ID below N is handed out, so an engine
  killed at any moment restarts at N, above every ID it gave (the unused rest of the block is
  skipped, never reused). Without persistence (a test, an offline job) the same bookkeeping
  keeps a removed and re-added camera's numbering going within the run.

:func:`new_epoch` names one engine start; tracks headers carry it (``epoch``), so a consumer can
tell a restart (same IDs never come back, but tracks do start over) from a gap.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from stream.errors import PromptcamError, RequestError
from stream.wire import MAX_OBJECT_ID

log = logging.getLogger(__name__)

RESERVE_BLOCK = 100  # IDs reserved (and persisted) at a time by a stand-alone engine


def new_epoch() -> str:
    """An identifier of one engine start: its start time and 8 random hex digits."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(4)}"


class IdSpaceExhaustedError(PromptcamError):
    """No block of IDs is left below ``MAX_OBJECT_ID``."""


@dataclass(frozen=True)
class IdBlock:
    """IDs ``first`` .. ``limit - 1``."""

    first: int
    limit: int

    def __post_init__(self) -> None:
        if not 1 <= self.first < self.limit:
            raise ValueError(f"bad ID block [{self.first}, {self.limit})")

    def __len__(self) -> int:
        return self.limit - self.first

    def __contains__(self, item: object) -> bool:
        return isinstance(item, int) and self.first <= item < self.limit

    def as_list(self) -> list[int]:
        return [self.first, self.limit]


class IdLeaser:
    """Hands out consecutive, disjoint blocks of ``size`` IDs above ``next_free``: the fleet
    controller's source of leases (it persists ``peek().limit`` before it calls ``lease``, as
    :class:`IdReservations` persists ``upto`` before a reserved block is used)."""

    def __init__(self, size: int, next_free: int = 1) -> None:
        if size < 1 or next_free < 1:
            raise ValueError("block size and next_free must be >= 1")
        self.size = size
        self._next = next_free

    @property
    def next_free(self) -> int:
        """Every ID below this has been handed out (or abandoned)."""
        return self._next

    def peek(self) -> IdBlock:
        """The block :meth:`lease` would hand out next (persist ``peek().limit`` first)."""
        limit = min(self._next + self.size, MAX_OBJECT_ID + 1)
        if limit <= self._next:
            raise IdSpaceExhaustedError(f"no object IDs left below {MAX_OBJECT_ID}")
        return IdBlock(self._next, limit)

    def lease(self) -> IdBlock:
        block = self.peek()
        self._next = block.limit
        return block


class IdSource(Protocol):
    """Where an allocator without a leased block gets its blocks."""

    def floor(self) -> int:
        """The lowest ID the next reserved block may start at."""
        ...

    def reserve(self, wanted: int) -> IdBlock:
        """A block starting at or above ``wanted``, recorded (persisted) before it returns."""
        ...


class IdAllocator:
    """One camera's IDs (see the module docstring). ``first``/``limit``: a leased block (no
    ``source``), or ``first`` alone: the lowest ID, blocks then come from ``source`` (or, with
    none, IDs count up without bound)."""

    def __init__(
        self, first: int = 1, limit: int | None = None, source: IdSource | None = None
    ) -> None:
        if first < 1:
            raise ValueError(f"first_id must be >= 1, got {first}")
        if limit is not None and limit <= first:
            raise ValueError(f"id_limit {limit} must be above first_id {first}")
        if limit is not None and source is not None:
            raise ValueError("an allocator's IDs are leased or reserved, not both")
        self._next = first
        self._limit = limit  # leased: end of the current block; reserved: None until reserved
        self._source = source
        self._leased = limit is not None
        self._blocks: list[IdBlock] = []

    @property
    def leased(self) -> bool:
        return self._leased

    @property
    def limit(self) -> int | None:
        """The end of the current leased block (None: not leased)."""
        return self._limit if self._leased else None

    @property
    def next_id(self) -> int:
        """The ID the next object gets (if any is left)."""
        if self._leased or self._source is None:
            return self._next
        if self._limit is not None and self._next < self._limit:
            return self._next
        return max(self._next, self._source.floor())

    @property
    def ids_left(self) -> int | None:
        """IDs left in the current and the queued leased blocks (None: not leased)."""
        if not self._leased or self._limit is None:
            return None
        return max(0, self._limit - self._next) + sum(b.limit - b.first for b in self._blocks)

    def add_block(self, first: int, limit: int) -> None:
        """Queue the leased block ``[first, limit)``, used when the current one runs out; it must
        lie above every ID given so far and above the blocks already queued."""
        if not self._leased or self._limit is None:
            raise RequestError("this camera's IDs are not leased in blocks")
        floor = max(self._limit, self._next, *(b.limit for b in self._blocks))
        if first < floor or limit <= first:
            raise RequestError(
                f"ID block [{first}, {limit}) must be non-empty and start at or above {floor}"
            )
        self._blocks.append(IdBlock(first, limit))

    def take(self) -> int | None:
        """The next ID, moving to the next block when the current one is used up; None when no
        leased ID is left."""
        if self._leased:
            assert self._limit is not None
            if self._next >= self._limit:
                if not self._blocks:
                    return None
                b = self._blocks.pop(0)
                self._next, self._limit = b.first, b.limit
        elif self._source is not None and (self._limit is None or self._next >= self._limit):
            b = self._source.reserve(self._next)
            self._next, self._limit = b.first, b.limit
        tid = self._next
        self._next += 1
        return tid


class _CameraIds:
    """One camera's reservation inside :class:`IdReservations`."""

    def __init__(self, owner: IdReservations, camera: str) -> None:
        self._owner = owner
        self._camera = camera

    def floor(self) -> int:
        return self._owner.resume_at(self._camera)

    def reserve(self, wanted: int) -> IdBlock:
        return self._owner.reserve(self._camera, wanted)


class IdReservations:
    """Per camera, ``upto``: every ID it ever gave is below it (persisted with ``persist``
    before a block is handed out), and ``resume``: where its next block starts (an allocator
    that ends returns the unused rest of its block, so a re-added camera continues there)."""

    def __init__(self, block: int = RESERVE_BLOCK) -> None:
        if block < 1:
            raise ValueError("block must be >= 1")
        self.block = block
        self._upto: dict[str, int] = {}
        self._resume: dict[str, int] = {}
        self._persist: Callable[[], object] | None = None
        self.persist_failures = 0

    def attach(self, kept: Mapping[str, int], persist: Callable[[], bool] | None) -> None:
        """Carry on from ``kept`` (the reservations of an earlier engine run: every camera starts
        at or above its mark) and persist through ``persist`` from now on (it returns whether the
        reservations were written). What this run reserved before is persisted at once."""
        for camera, upto in kept.items():
            if upto > self._upto.get(camera, 1):
                self._upto[camera] = upto
                self._resume[camera] = max(upto, self._resume.get(camera, 1))
        had = bool(self._upto) and any(c not in kept for c in self._upto)
        self._persist = persist
        if had:
            self._write()

    def source(self, camera: str) -> IdSource:
        """The block source of an allocator for ``camera``."""
        return _CameraIds(self, camera)

    def allocator(self, camera: str, first: int = 1) -> IdAllocator:
        """An allocator for ``camera`` whose IDs start at or above ``first`` and above every ID
        the camera gave before."""
        return IdAllocator(max(first, 1), None, self.source(camera))

    def resume_at(self, camera: str) -> int:
        return self._resume.get(camera, 1)

    def release(self, camera: str, next_id: int) -> None:
        """The camera's allocator is gone; ``next_id`` is the lowest ID it did not give."""
        self._resume[camera] = max(1, next_id)

    def reserve(self, camera: str, wanted: int) -> IdBlock:
        first = max(wanted, self.resume_at(camera))
        upto = self._upto.get(camera, 1)
        if first < upto:  # the rest of a block reserved (and persisted) before
            block = IdBlock(first, upto)
        else:
            limit = min(first + self.block, MAX_OBJECT_ID + 1)
            if limit <= first:
                raise RequestError(f"camera {camera!r}: no object IDs left below {MAX_OBJECT_ID}")
            block = IdBlock(first, limit)
            self._upto[camera] = limit
            self._write()
        self._resume[camera] = block.limit
        return block

    def as_dict(self) -> dict[str, int]:
        """``upto`` of every camera (what the state file keeps)."""
        return dict(self._upto)

    def _write(self) -> None:
        if self._persist is None:
            return
        if not self._persist():
            # The IDs are handed out anyway (tracking goes on); every later save retries. Only
            # an engine killed before one succeeds could give these IDs again.
            self.persist_failures += 1
            if self.persist_failures <= 10 or self.persist_failures % 1000 == 0:
                log.error(
                    "could not persist the ID reservation (%d failures): IDs may be reused "
                    "if the engine restarts before the state file can be written",
                    self.persist_failures,
                )
