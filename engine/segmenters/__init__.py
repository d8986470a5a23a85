"""The streaming segmenter backends, on the seams of ``engine.core.protocols``: one shared
session (``session``), Meta's ``sam2`` package (``sam2``, its memory in ``sam2_memory``) and
transformers' video trackers: SAM 2.1, EdgeTAM, SAM 3 tracker (``transformers``, its memory in
``transformers_memory``; loading in ``engine.models.video``). Import the backend module
you need: each pulls in its own model package."""
