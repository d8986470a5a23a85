"""Annotated frames: masks, boxes, IDs and labels drawn with supervision's annotators.

``Renderer`` is configured once and then draws one frame per call. Each object gets the colour
of its track ID (``ColorLookup.TRACK``), so an object keeps its colour for as long as it is
tracked, whatever its position in the list. The input image is never modified. It is pure CPU
work; the engine calls it from its renderer thread, off the GPU loop, and the offline job and
the recorder use the same class so every output looks the same.

Masks and boxes are drawn by supervision's annotators; labels are placed here so that they stay
readable: above the box's top-left corner, or inside the box where that would leave the frame
(a box at the top edge), moved left at the right edge, and moved down (or up) past labels
already placed instead of covering them. The text is black or white, whichever contrasts more
with the label's colour (WCAG contrast ratio; at least 4.5:1 for every palette colour).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np
import supervision as sv

from stream.wire import encode_jpeg

log = logging.getLogger(__name__)


def relative_luminance(color: sv.Color) -> float:
    """WCAG 2 relative luminance of an sRGB colour, 0 (black) to 1 (white)."""

    def channel(v: int) -> float:
        c = v / 255.0
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(color.r) + 0.7152 * channel(color.g) + 0.0722 * channel(color.b)


def contrast_ratio(a: sv.Color, b: sv.Color) -> float:
    """WCAG 2 contrast ratio of two colours, 1 (none) to 21 (black on white)."""
    la, lb = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def readable_text_color(background: sv.Color) -> sv.Color:
    """Black or white, whichever contrasts more with ``background``."""
    black, white = sv.Color.BLACK, sv.Color.WHITE
    return (
        black if contrast_ratio(background, black) >= contrast_ratio(background, white) else white
    )


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


class Renderer:
    """Draw tracked objects onto BGR frames.

    ``draw`` takes parallel sequences (one entry per object) and returns a new image; a label
    reads ``#3 ball 0.87``. ``render_jpeg`` does the same and encodes the result.
    """

    def __init__(
        self,
        *,
        mask_opacity: float = 0.45,
        box_thickness: int = 2,
        text_scale: float = 0.5,
        text_padding: int = 4,
        draw_masks: bool = True,
        draw_boxes: bool = True,
        draw_labels: bool = True,
        jpeg_quality: int = 80,
        palette: sv.ColorPalette | None = None,
    ) -> None:
        if not 0.0 <= mask_opacity <= 1.0:
            raise ValueError(f"mask_opacity must be in [0, 1], got {mask_opacity}")
        self.palette = palette or sv.ColorPalette.DEFAULT
        self.text_scale = text_scale
        self.text_padding = text_padding
        self.jpeg_quality = jpeg_quality
        lookup = sv.ColorLookup.TRACK
        self._mask = (
            sv.MaskAnnotator(color=self.palette, opacity=mask_opacity, color_lookup=lookup)
            if draw_masks
            else None
        )
        self._box = (
            sv.BoxAnnotator(color=self.palette, thickness=box_thickness, color_lookup=lookup)
            if draw_boxes
            else None
        )
        self.draw_labels = draw_labels

    def color_of(self, track_id: int) -> tuple[int, int, int]:
        """The BGR colour used for ``track_id``."""
        return self.palette.by_idx(int(track_id)).as_bgr()

    def text_color_of(self, track_id: int) -> tuple[int, int, int]:
        """The BGR colour of the label text of ``track_id``."""
        return readable_text_color(self.palette.by_idx(int(track_id))).as_bgr()

    def label_size(self, text: str) -> tuple[int, int]:
        """Width and height in pixels of the label box of ``text`` (text plus padding, and room
        for what reaches below the baseline)."""
        (w, h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, self.text_scale, 1)
        return w + 2 * self.text_padding, h + 2 * self.text_padding + baseline // 2

    def label_boxes(
        self, texts: Sequence[str], boxes: np.ndarray, width: int, height: int
    ) -> list[tuple[int, int, int, int]]:
        """Where each label goes (x1, y1, x2, y2, end exclusive), in order: at the box's
        top-left corner, inside the frame, clear of the labels placed before it."""
        placed: list[tuple[int, int, int, int]] = []
        for text, (bx1, by1, _bx2, _by2) in zip(texts, np.asarray(boxes), strict=True):
            lw, lh = self.label_size(text)
            x = int(min(max(bx1, 0.0), max(0, width - lw)))
            y = int(by1) - lh
            if y < 0:  # no room above the box: inside it, at its top
                y = int(max(by1, 0.0))
            y = min(y, max(0, height - lh))
            for _ in range(len(placed)):
                hit = next((p for p in placed if _overlap((x, y, x + lw, y + lh), p)), None)
                if hit is None:
                    break
                if hit[3] + lh <= height:
                    y = hit[3]
                elif hit[1] - lh >= 0:
                    y = hit[1] - lh
                else:
                    break
            placed.append((x, y, x + lw, y + lh))
        return placed

    def _draw_labels(
        self, scene: np.ndarray, ids: np.ndarray, texts: list[str], boxes: np.ndarray
    ) -> None:
        h, w = scene.shape[:2]
        for tid, text, (x1, y1, x2, y2) in zip(
            ids, texts, self.label_boxes(texts, boxes, w, h), strict=True
        ):
            cv2.rectangle(scene, (x1, y1), (x2 - 1, y2 - 1), self.color_of(int(tid)), -1)
            (_, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, self.text_scale, 1)
            cv2.putText(
                scene,
                text,
                (x1 + self.text_padding, y1 + self.text_padding + th),
                cv2.FONT_HERSHEY_SIMPLEX,
                self.text_scale,
                self.text_color_of(int(tid)),
                1,
                cv2.LINE_AA,
            )

    @staticmethod
    def label_text(track_id: int, label: str, confidence: float) -> str:
        return f"#{track_id} {label} {confidence:.2f}"

    def draw(
        self,
        image_bgr: np.ndarray,
        ids: Sequence[int],
        labels: Sequence[str],
        scores: Sequence[float],
        boxes: np.ndarray,
        masks: np.ndarray | None = None,
    ) -> np.ndarray:
        """A copy of ``image_bgr`` (HxWx3 uint8) with the objects drawn.

        ``scores`` are shown as given: the engine passes 0-1 confidences (``confidence_of`` its
        object score logits). ``boxes`` is (N, 4) xyxy in pixels; ``masks`` is (N, H, W) bool or
        None.
        """
        n = len(ids)
        xyxy, mask_arr = _checked_inputs(image_bgr, n, labels, scores, boxes, masks)
        scene = np.ascontiguousarray(image_bgr).copy()
        if n == 0:
            return scene
        ids_arr = np.asarray(ids, dtype=int)
        det = sv.Detections(
            xyxy=xyxy,
            mask=mask_arr,
            confidence=np.asarray(scores, dtype=np.float32),
            class_id=np.zeros(n, dtype=int),
            tracker_id=ids_arr,
        )
        if self._mask is not None and mask_arr is not None:
            scene = self._mask.annotate(scene, det)
        if self._box is not None:
            scene = self._box.annotate(scene, det)
        if self.draw_labels:
            texts = [
                self.label_text(int(i), str(lab), float(s))
                for i, lab, s in zip(ids_arr, labels, scores, strict=True)
            ]
            scene = np.ascontiguousarray(scene)
            self._draw_labels(scene, ids_arr, texts, xyxy)
        return scene

    def render_jpeg(
        self,
        image_bgr: np.ndarray,
        ids: Sequence[int],
        labels: Sequence[str],
        scores: Sequence[float],
        boxes: np.ndarray,
        masks: np.ndarray | None = None,
        quality: int | None = None,
    ) -> bytes:
        """``draw`` then JPEG-encode (``quality`` defaults to the constructor's ``jpeg_quality``)."""
        out = self.draw(image_bgr, ids, labels, scores, boxes, masks)
        return encode_jpeg(out, self.jpeg_quality if quality is None else quality)


def _checked_inputs(
    image_bgr: np.ndarray,
    n: int,
    labels: Sequence[str],
    scores: Sequence[float],
    boxes: np.ndarray,
    masks: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``draw``'s inputs checked (``ValueError`` naming the first one that does not fit):
    the boxes as (n, 4) float32 and the masks as (n, H, W) bool (None: none, or no object)."""
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(
            f"expected an HxWx3 uint8 BGR image, got {image_bgr.shape} {image_bgr.dtype}"
        )
    if not (len(labels) == len(scores) == n):
        raise ValueError(
            f"ids, labels and scores must have one entry per object, got {n}, {len(labels)}, {len(scores)}"
        )
    xyxy = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) if n else np.zeros((0, 4), np.float32)
    if xyxy.shape[0] != n:
        raise ValueError(f"boxes must be ({n}, 4), got {np.asarray(boxes).shape}")
    h, w = image_bgr.shape[:2]
    mask_arr: np.ndarray | None = None
    if masks is not None and n:
        mask_arr = np.asarray(masks)
        if mask_arr.shape != (n, h, w):
            raise ValueError(f"masks must be ({n}, {h}, {w}), got {mask_arr.shape}")
        mask_arr = mask_arr.astype(bool, copy=False)
    return xyxy, mask_arr
