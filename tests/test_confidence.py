"""CONTRACT v1.2 scores: every tracked object carries ``confidence`` in [0, 1] (the sigmoid of the
object score logit in ``score``, which stays as it was); the annotated video shows confidences;
a receiver still accepts an older message without it and rejects one out of range."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from engine.core.types import FrameResult, ObjectResult
from engine.outputs import render_result, to_tracks_message
from engine.render import Renderer
from stream.wire import TracksMessage, WireError, confidence_of


def _result(scores: list[float]) -> FrameResult:
    objects = []
    for i, s in enumerate(scores):
        mask = np.zeros((48, 64), bool)
        mask[10:20, 5 + 10 * i : 12 + 10 * i] = True
        box = (5.0 + 10 * i, 10.0, 12.0 + 10 * i, 20.0)
        objects.append(ObjectResult(i + 1, "ball", s, box, mask, 3, "tracked"))
    return FrameResult(7, 123, 64, 48, "ball.", objects, {})


def _recording(shown: list[list[str]]) -> type[Renderer]:
    """A renderer that records the label texts it draws into ``shown``."""

    class Recording(Renderer):
        def _draw_labels(
            self, scene: np.ndarray, ids: np.ndarray, texts: list[str], boxes: np.ndarray
        ) -> None:
            shown.append(texts)

    return Recording


def test_confidence_is_the_sigmoid_of_the_logit() -> None:
    assert confidence_of(0.0) == 0.5
    assert confidence_of(4.35) == pytest.approx(1 / (1 + math.exp(-4.35)))
    assert confidence_of(-0.48) < 0.5 < confidence_of(5.06) < 1.0
    assert confidence_of(1e9) == pytest.approx(1.0) and confidence_of(-1e9) == pytest.approx(0.0)


def test_tracks_message_carries_score_and_confidence_and_round_trips() -> None:
    msg = to_tracks_message("cam0", _result([4.35, -0.48]))
    back = TracksMessage.from_parts(msg.to_parts())
    objs = back.header.objects
    assert [o.score for o in objs] == [4.35, -0.48]
    assert [o.confidence for o in objs] == [
        round(confidence_of(4.35), 4),
        round(confidence_of(-0.48), 4),
    ]
    assert all(o.confidence is not None and 0.0 <= o.confidence <= 1.0 for o in objs)


def test_older_message_without_confidence_is_accepted_and_bad_one_rejected() -> None:
    parts = to_tracks_message("cam0", _result([2.0])).to_parts()
    header = json.loads(parts[1])
    del header["objects"][0]["confidence"]
    old = TracksMessage.from_parts([parts[0], json.dumps(header).encode()])
    assert old.header.objects[0].confidence is None and old.header.objects[0].score == 2.0
    header["objects"][0]["confidence"] = 4.35  # a logit where a confidence belongs
    with pytest.raises(WireError):
        TracksMessage.from_parts([parts[0], json.dumps(header).encode()])


def test_annotated_video_shows_the_confidence() -> None:
    shown: list[list[str]] = []
    Recording = _recording(shown)
    image = np.zeros((48, 64, 3), np.uint8)
    render_result(Recording(), image, _result([4.35, -0.48]))
    assert shown == [["#1 ball 0.99", "#2 ball 0.38"]]


def test_a_lost_track_is_a_grey_outline_without_a_label() -> None:
    shown: list[list[str]] = []
    Recording = _recording(shown)
    r = _result([4.35, 3.0])
    lost = r.objects[1]
    r.objects[1] = ObjectResult(
        lost.id, lost.label, lost.score, lost.box, np.zeros_like(lost.mask), lost.age, "lost"
    )
    out = render_result(Recording(), np.zeros((48, 64, 3), np.uint8), r)
    assert shown == [["#1 ball 0.99"]]
    x1, y1, x2, y2 = (int(v) for v in lost.box)
    edge = out[y1, x1 + 2]
    assert edge[0] == edge[1] == edge[2] and edge[0] > 60  # a grey outline (antialiased)
    assert not out[y1 + 2 : y2 - 1, x1 + 2 : x2 - 1].any()  # nothing filled inside
