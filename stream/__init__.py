"""promptcam's capture side and wire types.

Importing any promptcam package (``stream``, ``engine``, ``clients``) sets the OpenMP wait
policy of the process to ``PASSIVE`` unless the environment already sets one, before torch
loads OpenMP: with the default (active spinning), an engine whose torch threads share the cores
with capture, web or other processes collapsed up to 20x (``bench --parts cameras``: one engine
with 2 threads at 1.2 frames/s against 26.7 with passive waiting, on the same loaded host).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
