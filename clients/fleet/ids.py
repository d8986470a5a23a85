"""Object IDs unique across the fleet: disjoint blocks leased by the controller.

Every placement of a camera on an engine gets a fresh block ``[first, limit)`` of IDs (engine
``add_camera`` with ``first_id``/``id_limit``), and a further block when half of the current one
is used (``lease_ids``). The controller writes the new high-water mark to Ray's KV store *before*
it hands a block out, so a block is never handed out twice, not even across a controller restart;
a block held by an engine that died is abandoned, never re-leased. IDs stay exact in JSON
(below 2**53).
"""

from __future__ import annotations

from dataclasses import dataclass

from stream.errors import PromptcamError
from stream.wire import MAX_OBJECT_ID


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
    """Hands out consecutive, disjoint blocks of ``size`` IDs above ``next_free``."""

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
