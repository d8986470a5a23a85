"""The engine's core: the protocols its parts meet on (``protocols``: segmenter kernel and
session, detector), the value types they exchange (``types``), and the checking of frames and
prompts every segmenter backend shares (``prompts``). It imports no model backend."""

from engine.core.prompts import check_frame, mask_box, mask_prompt, point_prompt, validate_box
from engine.core.protocols import Detector, DetectorPrompt, SegmenterKernel, SegmenterSession
from engine.core.types import (
    Box,
    FrameInput,
    FrameResult,
    ObjectResult,
    ObjectStateSize,
    PreparedFrame,
    SegmentOutput,
    SegmentPrompt,
    StateSize,
)

__all__ = [
    "Box",
    "Detector",
    "DetectorPrompt",
    "FrameInput",
    "FrameResult",
    "ObjectResult",
    "ObjectStateSize",
    "PreparedFrame",
    "SegmentOutput",
    "SegmentPrompt",
    "SegmenterKernel",
    "SegmenterSession",
    "StateSize",
    "check_frame",
    "mask_box",
    "mask_prompt",
    "point_prompt",
    "validate_box",
]
