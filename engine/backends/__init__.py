"""Loading of transformers' video trackers (``video_models``: SAM 2.1, EdgeTAM, SAM 3 tracker);
their streaming kernel is ``engine.segmenters.transformers``. SAM 3 concept mode's detector is
``engine/detectors/sam3.py``."""
