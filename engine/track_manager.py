"""Track manager (the default lifecycle, code in ``engine/lifecycle/``): which objects exist, under which IDs, and what to do when the detector looks again.

Pure logic (numpy + scipy, no torch); the engine owns the models and applies what this module
decides. Two inputs drive it:

* ``on_frame(seq, observations)``: after SAM 2 propagated frame ``seq``, one :class:`Observation`
  (mask box or ``None``, object score logit, mean colour inside the mask) per tracked object. A
  frame whose score is below ``score_threshold`` or whose mask is empty is a *miss*; after
  ``max_missed`` consecutive misses the track goes *dormant* (``TrackEvent(kind="dormant")``:
  the engine frees its memory and publishes nothing for it, the manager keeps its last box,
  velocity and colour); a dormant track not re-identified within ``reid_frames`` frames ends
  (``kind="ended"``, reason ``"dormant"``). With ``reid_frames`` 0 it ends at once (reason
  ``"missed"``). With ``mask_iou`` given, two tracks whose masks overlap by ``merge_iou`` on
  ``DUPLICATE_FRAMES`` (5) frames in a row are one object: the younger goes dormant (reason
  ``"duplicate"``; it may have drifted onto the other's object while its own is hidden);
  for two labels, the one the last re-grounding did not find under its label goes, if the
  other was found (one object under two names: the detector's latest name wins). With
  ``mask_contained`` given, the smaller mask ``duplicate_contained`` inside the larger counts as
  coinciding too; a frame overlapping ``duplicate_hold_iou`` holds the run. From the run's
  ``duplicate_hide_frames``-th frame on, the track it would retire is ``hidden`` (not
  published) on each further coinciding frame.
  With ``drift_colour`` above 0, a track whose mask's mean colour stays more than that (L1 over
  b, g, r in [0, 1]) from its *anchor* colour on ``DRIFT_FRAMES`` (3) frames in a row has slid
  onto another object: it goes dormant (reason ``"drifted"``; ``"ended"`` when ``reid_frames``
  is 0). The anchor is the mask colour on the first frame after the track was prompted, and its
  smoothed colour whenever a detection confirms it; the off-colour frames do not move its box,
  velocity or colour, so re-identification looks for it where and as it was. Each off-colour
  frame before the last is reported (``kind="off_colour"``: the engine does not publish the
  track on it) and takes no part in the duplicate rule.
  A track with ``jump_after_hits`` good frames whose mask's box overlaps neither its last good
  box nor its predicted one has left its object for another in one frame: a miss
  (``kind="jumped"``, then ``"lost"``; the engine publishes no mask for it on that frame), its
  box and motion unchanged, and no part in the duplicate rule on that frame; off-colour too,
  it counts toward the drift. So is, where ``bleed_ratio`` is above 0 (off by default), a mask
  whose box side is over that many times the track's smoothed side (it bled past its object).
* ``on_detections(seq, detections, tracks_at_seq)``: a grounding result computed on frame ``seq``
  (possibly several frames ago: grounding runs beside propagation), matched against the tracks'
  boxes *of that frame*. Returns a :class:`Plan` for the engine to apply:

  - ``new``: unmatched detections become tracks with fresh IDs (box prompt on frame ``seq``),
    highest score first, while fewer than ``max_objects`` tracks are live;
  - ``reseed``: a matched track whose box at ``seq`` has drifted (IoU with its detection below
    ``drift_iou``, or no box at all because it was lost) is re-prompted from the detection;
  - ``dormant``: tracks not re-detected for ``max_unseen`` consecutive re-groundings (``ended``
    instead when ``reid_frames`` is 0);
  - ``merged``: the younger of two same-label tracks whose boxes (and masks, when the engine
    passes ``mask_iou``) at ``seq`` overlap at least ``merge_iou`` on ``MERGE_AFTER`` (2) consecutive re-groundings while not both were
    re-detected (the older, lower ID is kept; two objects crossing are not merged).

Re-identification. Detections left over by the IoU assignment are matched (Hungarian again) to
tracks of their label: a live one whose box on ``seq`` lies inside the detection (its mask
shrank away from its object), or a lost or dormant one with no box on ``seq`` near the centre
the track's motion predicts (its last box moved by its velocity; within ``reid_distance`` box sides, the gate
widening with the time since its last good box), of a similar size and, where both are known,
of a similar colour. Then, by look alone (an object that left the view and came in elsewhere):
a left-over detection and a lost or dormant track of its label and size whose detections had
its colour (``REID_LOOK_COLOUR``), each the other's only such candidate. Such a track is
re-prompted (``reseed``) under its own ID: it never ended, so IDs are still never reused.

Matching rules. Detections are first de-duplicated per label (greedy NMS at ``DUPLICATE_IOU``
= 0.5, or ``merge_iou`` if lower: Grounding DINO does no NMS). Assignment is one-to-one, by IoU, with the Hungarian algorithm
(``scipy.optimize.linear_sum_assignment``); a pair counts only if its IoU is at least
``iou_threshold`` and detection and track have the same label (a track keeps its label for
life; a synonym phrase makes a separate track). A track absent from ``tracks_at_seq`` (created
after ``seq``, or not reported) and a lost track with no box at ``seq`` are matched on their last
known box; such a track is never penalised for a re-grounding older than its creation. An
unmatched detection that overlaps a live same-label track by that same IoU or more is a duplicate,
not a new object (so a second object hidden behind a first of the same label gets its own track
only once they overlap less); one that overlaps a live track of another label by
``CROSS_LABEL_DUPLICATE_IOU`` (0.7) is that object under another name (a half-hidden box taken
for a ball), not a new object either.

States (CONTRACT.md): ``new`` on the first frame a track is observed, then ``tracked`` while its
score is at or above ``score_threshold``, ``lost`` while below but not yet dormant. Dormant
tracks are not live: :meth:`tracks` and ``len`` leave them out, ``in`` finds them, and they take
no ``max_objects`` place. ``age`` is frames
since the track's first frame (its detection frame, or the first observed frame of a manual
track). IDs come from an ``engine.ids.IdAllocator`` (``ids``; default: from 1, or ``first_id``):
they increase and are never reused (not even after :meth:`reset`, nor across engine restarts when
the allocator's reservations are persisted). ID blocks (a fleet leases them so that IDs are unique
across engines): with ``id_limit`` set, IDs stay below it; blocks added with :meth:`add_id_block`
are used in turn when one runs out; with none left, no track is created (a detection is skipped
and counted in ``ids_exhausted``, a manual object is refused), so an ID outside the leased blocks
is never given.

Manual tracks (``add_manual``, control ``add_object``) are not ended by ``max_unseen`` or by a
prompt change (their label need not be a prompt phrase), never go dormant and are left out of
the per-frame duplicate rule (two objects the user named stay two); they end by ``max_missed``,
``remove`` or ``reset``.

Removal (control ``remove_object``, :meth:`remove`) means "stop following this one". A manual
track ends (the user added it; removing it is ending it). A track the detector found is
*suppressed* instead of ended: had it ended, the next re-grounding would find its object again
and start a new track on it. A suppressed track lives on under the same rules as any other (it
is followed by the segmenter, takes its ``max_objects`` place, matches detections, goes lost,
dormant, is re-identified, is merged), so the detections that fall on its object are absorbed
and no new track is born there; it is only left out of :meth:`tracks` (not published, not
drawn). The suppression lasts as long as the track: it ends with it (the object left the view:
``max_missed``, ``max_unseen``, dormant past ``reid_frames``), on a prompt change
(:meth:`set_labels` ends every suppressed track: the next grounding finds the object again under
a new ID) and on :meth:`reset`.
"""

from __future__ import annotations

from engine.core.types import Box
from engine.lifecycle.config import LifecycleConfig
from engine.lifecycle.geometry import Colour, as_box, iou_matrix
from engine.lifecycle.manager import TrackManager
from engine.lifecycle.states import EndReason, TrackState
from engine.lifecycle.track import (
    DetectionsLike,
    Match,
    NewTrack,
    Observation,
    Plan,
    PublishedState,
    Removal,
    Reseed,
    TrackEvent,
    TrackInfo,
)

_DEFAULTS = LifecycleConfig(profile="demo")  # the former module constants (engine.lifecycle now)
DUPLICATE_IOU = _DEFAULTS.duplicate_iou
CROSS_LABEL_DUPLICATE_IOU = _DEFAULTS.cross_label_duplicate_iou
REID_SIZE_RATIO = _DEFAULTS.reid_size_ratio
REID_LOOK_COLOUR = _DEFAULTS.reid_look_colour
MERGE_AFTER = _DEFAULTS.merge_after
DUPLICATE_FRAMES = _DEFAULTS.duplicate_frames
DRIFT_FRAMES = _DEFAULTS.drift_frames

__all__ = [
    "Box",
    "Colour",
    "DetectionsLike",
    "EndReason",
    "Match",
    "NewTrack",
    "Observation",
    "Plan",
    "PublishedState",
    "Removal",
    "Reseed",
    "TrackEvent",
    "TrackInfo",
    "TrackManager",
    "TrackState",
    "as_box",
    "iou_matrix",
]
