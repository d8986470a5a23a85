"""``promptcam fleet``: engines on every GPU of a Ray cluster, cameras placed on them and moved
when an engine or a host dies. Ray places, restarts and reaches the actors; ZeroMQ stays the
data plane.

What runs where (every actor named and detached in the Ray namespace ``promptcam-<fleet.name>``):

- ``controller`` (anywhere; ``controller.py``, its reconcilers in ``reconcilers/``): assignment,
  ID blocks, failure handling; its record lives in Ray's KV store (``store.py``);
- ``engine-<k>`` (one GPU each, or a CPU share; ``engine_actor.py``): an ``EngineProcess``;
- ``capture-<camera>`` (near its camera, by Ray resource; ``capture_actor.py``): a ``Capture``;
- ``gateway`` (on the node ``promptcam fleet`` runs on; ``gateway.py``): the relay of every
  camera's tracks and annotated frames, the control router and the fleet page.

Frames go capture → engine, tracks and annotated frames engine → gateway → subscribers, all over
ZeroMQ on the addresses Ray reports for the nodes, with CURVE keys from the controller
(``keys.py``) when the fleet spans hosts.
"""
