"""The offline page's preview: frame n of an upload is the n-th decoded frame, as the job counts."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from clients.web.preview import DECODE_FROM_START_BELOW, PreviewError, read_frame
from clients.web.synthetic import read_stamp, stamp

FRAMES = 120


@pytest.fixture(scope="module")
def stamped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An H.264 file with B-frames (libx264 defaults) whose frame i carries i as a barcode."""
    path = tmp_path_factory.mktemp("preview") / "stamped.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height = 320, 96
        s.pix_fmt = "yuv420p"
        for i in range(FRAMES):
            img = np.full((96, 320, 3), 60, np.uint8)
            stamp(img, i)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


@pytest.mark.parametrize(
    "n", [0, 7, DECODE_FROM_START_BELOW - 1, DECODE_FROM_START_BELOW, 61, 100, FRAMES - 1]
)
def test_frame_n_is_the_nth_decoded_frame(stamped: Path, n: int) -> None:
    image = read_frame(stamped, n)
    assert image.shape == (96, 320, 3) and read_stamp(image) == n


def test_frames_past_the_end_or_negative_are_refused(stamped: Path, tmp_path: Path) -> None:
    with pytest.raises(PreviewError, match="past the end"):
        read_frame(stamped, FRAMES)
    with pytest.raises(PreviewError, match="start at 0"):
        read_frame(stamped, -1)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 50)
    with pytest.raises(PreviewError, match="cannot be read"):
        read_frame(bad, 0)
