"""One frame of an uploaded video, for the offline page's preview (boxes are drawn on it).

Frame ``n`` is the ``n``-th decoded frame, as the offline job counts them (``--box …@n``).
For a constant frame rate it is found by seeking to the keyframe before ``n / fps`` and
decoding forward, each frame's index taken from its timestamp; frames near the start, streams
without a rate and frames without timestamps are decoded from the start.
"""

from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np

log = logging.getLogger(__name__)

DECODE_FROM_START_BELOW = 48  # frames: cheaper than a seek


class PreviewError(ValueError):
    """The frame cannot be shown; the message is for the page."""


def _from_start(container: av.container.InputContainer, index: int) -> np.ndarray:
    for i, frame in enumerate(container.decode(video=0)):
        if i == index:
            return frame.to_ndarray(format="bgr24")
    raise PreviewError(f"frame {index} is past the end of the video")


def read_frame(path: Path, index: int) -> np.ndarray:
    """Frame ``index`` of the video at ``path`` as BGR."""
    if index < 0:
        raise PreviewError("frame numbers start at 0")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise PreviewError("the file has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate
            if index < DECODE_FROM_START_BELOW or not rate or stream.time_base is None:
                return _from_start(container, index)
            tb = float(stream.time_base)
            start = stream.start_time or 0
            fps = float(rate)
            container.seek(start + int(index / fps / tb), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is None:
                    break
                at = round((frame.pts - start) * tb * fps)
                if at >= index:
                    if at == index:
                        return frame.to_ndarray(format="bgr24")
                    break  # timestamps off the rate's grid: count instead
        with av.open(str(path)) as container:
            log.debug("frame %d of %s: counted from the start", index, path.name)
            return _from_start(container, index)
    except av.FFmpegError as e:
        raise PreviewError(
            f"the video cannot be read here ({e.strerror or type(e).__name__})"
        ) from None
