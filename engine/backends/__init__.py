"""Segmenter backends besides the ``sam2`` package's (``engine.segmenter``): transformers' video
models (``transformers_video``: SAM 2.1, EdgeTAM, SAM 3 tracker) with their loading
(``video_models``), and the SAM 3 concept detector (``sam3_concept``)."""
