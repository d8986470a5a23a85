"""Segmenter backends besides the ``sam2`` package's (``engine.segmenter``): transformers' video
models (``transformers_video``: SAM 2.1, EdgeTAM, SAM 3 tracker) with their loading
(``engine.models.video``). SAM 3 concept mode's detector is ``engine/detectors/sam3.py``."""
