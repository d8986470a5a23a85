"""The evaluator against hand-computed tiny cases: J and F (DAVIS), IDF1 / ID switches / MOTA
(trackeval), AP50 (pycocotools), targets from prompt phrases, ignored regions, and
``promptcam eval`` on files."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clients.bench.davis import bound_pixels, boundary, f_measure, jaccard, sequence_jandf
from clients.bench.evaluate import (
    EvalError,
    FrameObjects,
    TrackSequence,
    ap50_many,
    evaluate,
    phrase_for,
    read_tracks,
    sequence_from_results,
)
from engine.pipeline import FrameResult, ObjectResult
from stream.wire import TrackedObject, TracksMessage, encode_mask

ROOT = Path(__file__).resolve().parent.parent
H, W = 40, 60


def _pixel(y: int, x: int, size: tuple[int, int] = (10, 10)) -> np.ndarray:
    m = np.zeros(size, bool)
    m[y, x] = True
    return m


def _square(x: int, y: int, side: int = 8) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y : y + side, x : x + side] = True
    return m


def test_jaccard_hand_cases() -> None:
    a = np.zeros((4, 4), bool)
    a[0:2, 0:2] = True  # 4 pixels
    b = np.zeros((4, 4), bool)
    b[0:2, 1:3] = True  # 4 pixels, 2 shared
    assert jaccard(a, b) == pytest.approx(2 / 6)
    assert jaccard(a, a) == 1.0
    empty = np.zeros((4, 4), bool)
    assert jaccard(empty, empty) == 1.0 and jaccard(a, empty) == 0.0


def test_boundary_is_davis_seg2bmap() -> None:
    # A single pixel at (4, 4): it differs from the pixels left of, above and up-left of it,
    # so its boundary is the 2x2 block ending at it.
    b = boundary(_pixel(4, 4))
    assert sorted(zip(*np.nonzero(b), strict=True)) == [(3, 3), (3, 4), (4, 3), (4, 4)]


def test_f_measure_hand_cases() -> None:
    # 10x10: ceil(0.008 * sqrt(200)) = 1 pixel tolerance (a plus-shaped disk).
    assert bound_pixels(10, 10) == 1
    assert bound_pixels(480, 640) == 7  # ceil(0.008 * 800 = 6.4)
    # Pixels at (4,4) and (4,6): boundaries {(3,3),(3,4),(4,3),(4,4)} and {(3,5),(3,6),(4,5),
    # (4,6)}; within 1 pixel of the other boundary are columns 5 and 4 only: P = R = 2/4.
    assert f_measure(_pixel(4, 6), _pixel(4, 4)) == pytest.approx(0.5)
    assert f_measure(_pixel(4, 4), _pixel(4, 4)) == 1.0
    empty = np.zeros((10, 10), bool)
    assert f_measure(empty, empty) == 1.0
    assert f_measure(empty, _pixel(4, 4)) == 0.0 and f_measure(_pixel(4, 4), empty) == 0.0
    # The neighbourhood crop changes nothing: the same shapes inside a large frame.
    big_a, big_b = np.zeros((480, 640), bool), np.zeros((480, 640), bool)
    big_a[100:140, 200:260] = True
    big_b[104:140, 203:262] = True
    assert f_measure(big_b, big_a) == pytest.approx(_f_full(big_b, big_a))


def _f_full(pred: np.ndarray, gt: np.ndarray) -> float:
    """F without the crop, by brute force distances (for the crop check above)."""
    r = bound_pixels(*gt.shape)
    pb, gb = np.argwhere(boundary(pred)), np.argwhere(boundary(gt))
    d = np.sqrt(((pb[:, None, :] - gb[None, :, :]) ** 2).sum(-1))
    p = float((d.min(axis=1) <= r).mean())
    rc = float((d.min(axis=0) <= r).mean())
    return 2 * p * rc / (p + rc)


def test_sequence_jandf_is_the_mean_over_objects() -> None:
    jf = sequence_jandf([[(1.0, 1.0), (0.5, 0.0)], [(0.0, 0.5)], []])
    assert jf.objects == 2
    assert jf.j == pytest.approx((0.75 + 0.0) / 2)
    assert jf.f == pytest.approx((0.5 + 0.5) / 2)
    assert jf.jf == pytest.approx((0.375 + 0.5) / 2)


# --------------------------------------------------------------------------- tracking


def _seq(frames: list[list[tuple[int, str, np.ndarray]]], prompt: str = "ball.") -> TrackSequence:
    out = {}
    for t, objs in enumerate(frames):
        results = [
            ObjectResult(i, lbl, 0.9, _box(m) if m.any() else (0.0, 0.0, 0.0, 0.0), m, 0, "tracked")
            for i, lbl, m in objs
        ]
        out[t] = FrameResult(t, t, W, H, prompt, results, {})
    return sequence_from_results(list(out.values()))


def _box(m: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(m)
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


def _two_objects() -> TrackSequence:
    a, b = _square(2, 2), _square(30, 20)
    return _seq([[(1, "red ball", a), (2, "blue ball", b)] for _ in range(4)])


def test_idf1_id_switch_and_mota_hand_case() -> None:
    """GT A, B on 4 frames. Track 1 follows A throughout; B is followed by track 2 on frames
    0-1 and by track 3 on frames 2-3. IDF1 = 2*6 / (2*6 + 2 + 2) = 0.75 (A-1 4 frames, B-2 or
    B-3 2 frames), one ID switch, MOTA = 1 - 1/8, every mask exact: J&F = 1 for both objects."""
    a, b = _square(2, 2), _square(30, 20)
    pred = _seq(
        [[(1, "ball", a), (2 if t < 2 else 3, "ball", b)] for t in range(4)], prompt="ball."
    )
    r = evaluate(pred, _two_objects())
    assert r.tracking["IDF1"] == pytest.approx(0.75)
    assert r.tracking["IDSW"] == 1
    assert r.tracking["MOTA"] == pytest.approx(1 - 1 / 8)
    assert r.tracking["gt_tracks"] == 2 and r.tracking["pred_tracks"] == 3
    # J&F over frames 1-3 (after each object's first frame): A gets track 1 (J = F = 1);
    # B gets track 3 (it covers B on 2 scored frames, track 2 on 1), so B scores 0 on frame 1
    # and 1 on frames 2-3: J = F = (1 + 2/3) / 2.
    assert r.jandf.objects == 2
    assert r.jandf.j == pytest.approx(5 / 6) and r.jandf.jf == pytest.approx(5 / 6)


def test_two_ids_on_one_object_share_and_longest_run() -> None:
    """GT A and B on 6 frames; track 1 on A throughout, track 2 on B. A second track is on A
    on frames 1-2 (half its mask on A, labels aside: a box on a ball is still a second ID) and
    on frames 4-5 (all of it): 4 of 12 target-frames doubled, the longest run 2 frames. A track
    with less than half its mask on A, or an empty mask (lost), is no second ID."""
    a, b = _square(2, 2), _square(30, 20)
    half_on_a = _square(6, 2)  # 8x8 at x 6..13: half of it on A (x 2..9)
    off_a = _square(7, 2)  # 3 of its 8 columns on A
    empty = np.zeros((H, W), bool)
    second = [half_on_a, half_on_a, off_a, empty, a, a]
    frames = [[(1, "ball", a), (2, "ball", b), (3, "box", m)] for m in second]
    gt = _seq([[(1, "red ball", a), (2, "blue ball", b)] for _ in range(6)])
    r = evaluate(_seq(frames, prompt="ball. box."), gt)
    assert r.tracking["two-ID share"] == pytest.approx(4 / 12)
    assert r.tracking["two-ID run"] == 2
    one = evaluate(_seq([[(1, "ball", a), (2, "ball", b)] for _ in range(6)]), gt)
    assert one.tracking["two-ID share"] == 0.0 and one.tracking["two-ID run"] == 0


def test_prompt_phrases_choose_targets_and_labels_must_match() -> None:
    assert phrase_for("red ball", ["red ball"]) == "red ball"
    assert phrase_for("red ball", ["balls"]) == "balls"
    assert phrase_for("blue ball", ["red ball", "box"]) is None
    a, b = _square(2, 2), _square(30, 20)
    # Prompt "red ball.": only A is a target; tracking B is a false positive.
    pred = _seq([[(1, "red ball", a), (2, "red ball", b)] for _ in range(4)], prompt="red ball.")
    r = evaluate(pred, _two_objects())
    assert r.tracking["gt_tracks"] == 1 and r.tracking["IDF1"] == pytest.approx(8 / 12)
    # A prediction with the wrong label matches nothing.
    wrong = _seq([[(1, "box", a)] for _ in range(4)], prompt="ball. box.")
    assert evaluate(wrong, _two_objects()).tracking["IDF1"] == 0.0


def test_small_objects_are_ignored_regions() -> None:
    tiny = np.zeros((H, W), bool)
    tiny[0:2, 0:2] = True  # 4 pixels, below min_visible_area (16)
    gt = _seq([[(1, "red ball", _square(2, 20)), (2, "red ball", tiny)]])
    pred = _seq([[(7, "ball", _square(2, 20)), (8, "ball", tiny)]])
    r = evaluate(pred, gt)
    assert r.tracking["gt_tracks"] == 1 and r.tracking["pred_tracks"] == 1
    assert r.tracking["IDF1"] == 1.0


def test_empty_mask_predictions_are_no_detections() -> None:
    """A lost track reported with an empty mask claims no pixels: no false positive."""
    a, b = _square(2, 2), _square(30, 20)
    empty = np.zeros((H, W), bool)
    plain = _seq([[(1, "ball", a), (2, "ball", b)] for _ in range(4)])
    with_lost = _seq([[(1, "ball", a), (2, "ball", b), (3, "ball", empty)] for _ in range(4)])
    r, r_lost = evaluate(plain, _two_objects()), evaluate(with_lost, _two_objects())
    assert r_lost.tracking == r.tracking and r_lost.tracking["HOTA"] == pytest.approx(1.0)
    # A non-empty mask on nothing still is one.
    stray = _seq(
        [[(1, "ball", a), (2, "ball", b), (3, "ball", _square(48, 2, 6))] for _ in range(4)]
    )
    assert evaluate(stray, _two_objects()).tracking["pred_tracks"] == 3


def test_ap50_hand_case() -> None:
    """2 balls; detections by score: hit, miss, hit. COCO's 101-point interpolated precision is
    1 up to recall 0.5 (51 points) and 2/3 above it (50 points)."""
    gt = _seq([[(1, "red ball", _square(2, 2)), (2, "red ball", _square(30, 20))]])
    dets = FrameObjects()
    for k, (x, y, score) in enumerate(((2, 2, 0.9), (45, 2, 0.8), (30, 20, 0.7))):
        m = _square(x, y)
        from pycocotools import mask as mask_utils

        dets.add(k, "ball", score, _box(m), mask_utils.encode(np.asfortranarray(m, np.uint8)))
    pred = TrackSequence(W, H, "ball.", {0: dets})
    ap = ap50_many([(pred, gt)], "ball. box.")
    assert ap["ball"] == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert math.isnan(ap["box"])


# --------------------------------------------------------------------------- files and CLI


def _write(path: Path, seq: TrackSequence) -> None:
    from pycocotools import mask as mask_utils

    with path.open("w") as f:
        for t, objs in sorted(seq.frames.items()):
            objects = [
                TrackedObject.model_construct(
                    id=objs.ids[i],
                    label=objs.labels[i],
                    score=objs.scores[i],
                    box=objs.boxes[i],
                    mask=encode_mask(mask_utils.decode(objs.rles[i]).astype(bool)),
                    age=0,
                    state="tracked",
                )
                for i in range(len(objs))
            ]
            f.write(
                TracksMessage.build("cam0", t, 0, W, H, seq.prompt, objects, 0).to_json() + "\n"
            )


def test_eval_cli_reads_files_and_rejects_bad_input(tmp_path: Path) -> None:
    a, b = _square(2, 2), _square(30, 20)
    pred = _seq([[(1, "ball", a), (2 if t < 2 else 3, "ball", b)] for t in range(4)])
    _write(tmp_path / "pred.jsonl", pred)
    _write(tmp_path / "gt.jsonl", _two_objects())
    assert read_tracks(tmp_path / "gt.jsonl").frames[3].ids == [1, 2]
    cmd = [sys.executable, "-m", "clients.cli", "eval", str(tmp_path / "pred.jsonl")]
    out = subprocess.run(
        [*cmd, str(tmp_path / "gt.jsonl"), "--json", str(tmp_path / "r.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "IDF1" in out.stdout
    figures = json.loads((tmp_path / "r.json").read_text())
    assert figures["IDF1"] == pytest.approx(0.75) and figures["IDSW"] == 1
    (tmp_path / "bad.jsonl").write_text('{"v":1,"camera":"cam0"}\n')
    bad = subprocess.run(
        [*cmd[:-1], str(tmp_path / "bad.jsonl"), str(tmp_path / "gt.jsonl")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "bad.jsonl:1" in bad.stderr
    with pytest.raises(EvalError, match="no prompt"):
        evaluate(_seq([[]], prompt=""), _two_objects())
