"""Object IDs unique across the fleet: disjoint blocks leased by the controller.

Every placement of a camera on an engine gets a fresh block ``[first, limit)`` of IDs (engine
``add_camera`` with ``first_id``/``id_limit``), and a further block when half of the current one
is used (``lease_ids``). The controller writes the new high-water mark to Ray's KV store *before*
it hands a block out, so a block is never handed out twice, not even across a controller restart;
a block held by an engine that died is abandoned, never re-leased. IDs stay exact in JSON
(below 2**53).
"""

from __future__ import annotations

from engine.ids import IdBlock, IdLeaser, IdSpaceExhaustedError

__all__ = ["IdBlock", "IdLeaser", "IdSpaceExhaustedError"]  # one ID mechanism: engine/ids.py
