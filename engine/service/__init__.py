"""The engine process (``promptcam engine``): every configured camera through one model.

Reads: ``frame.<camera>`` of each camera (one latest-frame receiver per camera: a slow engine
skips frames, counted per camera; ``feeds``), the ``control`` socket (a ROUTER: REQ and DEALER
clients alike; ``control``, dispatching by the table of typed commands in ``commands``), and
optionally ``detections.<camera>`` from an external detector (``detections``).
Publishes: ``tracks.<camera>`` (one message per processed frame of a camera, never dropped) and
``annotated.<camera>`` (newest result per camera only; older ones dropped and counted), every
camera on the same two sockets.
Drops: frames that arrive while a tick is processed (``skipped``) or older than the staleness
budget (``stale``); malformed frames, detections and control requests (rejected, counted,
answered with an error where there is someone to answer); detections beyond a queue of
``DETECTIONS_QUEUE`` (counted).

The frame loop (``loop``) owns the models; control requests reach it through a bounded command
queue and run between ticks. No input ends a reading thread; a thread that ends anyway stops
the process (``stream.threads``), which then exits non-zero. Each camera's runtime state
(prompt, manual objects) is kept in ``engine.state_file`` and restored at start (``persist``).
The figures are typed models that are also the wire form of ``stats`` (``stats``). The entry
point is ``engine.service.main:main``.
"""

from engine.service.commands import ROUTES, Route
from engine.service.control import ControlServer, split_envelope
from engine.service.feeds import CameraFeed, CameraFeeds, FeedState, RateMeter
from engine.service.loop import EngineProcess
from engine.service.stats import CameraEntry, CameraProcessStats, EngineStats

__all__ = [
    "ROUTES",
    "CameraEntry",
    "CameraFeed",
    "CameraFeeds",
    "CameraProcessStats",
    "ControlServer",
    "EngineProcess",
    "EngineStats",
    "FeedState",
    "RateMeter",
    "Route",
    "split_envelope",
]
