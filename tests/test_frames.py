"""The typed subscriber API for robot code (``clients.frames`` via ``clients.subscriber``)."""

from __future__ import annotations

import ast
import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

from clients.subscriber import Frame, TimeSync
from clients.web.synthetic import SyntheticEngine
from stream.config import load_config
from stream.wire import TracksMessage
from tests.conftest import tcp_endpoint
from tests.test_subscriber import H, W, random_masks, rle_object

ROOT = Path(__file__).resolve().parent.parent


def test_frame_is_typed_and_decodes_masks_only_when_read() -> None:
    masks = random_masks(np.random.default_rng(1), 3)
    objs = [rle_object(i + 7, masks[i], label=f"l{i}") for i in range(3)]
    objs[1] = objs[1].model_copy(update={"confidence": 0.25})
    msg = TracksMessage.build("cam3", 41, 1_700_000_000_000_000_123, W, H, "l0. l1.", objs, 5)
    frame = Frame.from_message(msg)
    assert (frame.camera, frame.seq, frame.stamp_ns) == ("cam3", 41, 1_700_000_000_000_000_123)
    assert (frame.width, frame.height) == (W, H)
    assert frame.ids.tolist() == [7, 8, 9] and frame.labels == ["l0", "l1", "l2"]
    assert frame.boxes.shape == (3, 4) and frame.boxes.dtype == np.float32
    assert frame.objects[1].confidence == 0.25  # the message's confidence
    assert frame.objects[0].confidence == pytest.approx(1 / (1 + np.exp(-0.9)))  # sigmoid(score)
    assert not any(o.mask_decoded for o in frame.objects)
    assert np.array_equal(frame.objects[2].mask, masks[2])
    assert [o.mask_decoded for o in frame.objects] == [False, False, True]
    assert np.array_equal(frame.masks(), masks) and frame.masks().dtype == bool


def test_time_sync_pairs_within_tolerance_bounds_its_buffers_and_counts_drops() -> None:
    sync: TimeSync[str] = TimeSync(["a", "b"], tolerance=10, max_buffer=3)
    assert sync.add("a", 100, "a100") == []
    assert sync.add("b", 105, "b105") == [{"a": "a100", "b": "b105"}]
    assert sync.add("a", 150, "a150") == [] and sync.add("b", 170, "b170") == []  # 20 apart
    assert sync.add("a", 172, "a172") == [{"a": "a172", "b": "b170"}]
    assert sync.stats.dropped == {"a": 1, "b": 0}  # a150 was passed over: never paired
    assert sync.add("b", 160, "late") == [] and sync.stats.dropped["b"] == 1  # older than a set
    for k in range(200, 260, 10):  # b is silent: a's buffer stays at 3, the rest dropped
        assert sync.add("a", k, f"a{k}") == []
    assert sync.pending() == {"a": 3, "b": 0} and sync.stats.dropped["a"] == 1 + 3
    assert sync.add("b", 251, "b251") == [{"a": "a250", "b": "b251"}]
    assert sync.stats.matched == 3 and sync.stats.dropped_total == 4 + 1 + 2
    assert sync.add("c", 1, "x") == [] and sync.stats.unknown == 1

    by_seq: TimeSync[int] = TimeSync(["tracks", "lidar"], tolerance=0)
    assert by_seq.add("lidar", 4, 40) == [] and by_seq.add("tracks", 5, 5) == []
    assert by_seq.add("lidar", 5, 50) == [{"tracks": 5, "lidar": 50}]
    with pytest.raises(ValueError):
        TimeSync(["a"], tolerance=1)


def test_the_python_subscriber_example_of_docs_robots_md_runs() -> None:
    text = (ROOT / "docs" / "robots.md").read_text()
    section = text[text.index("## Python subscriber API") :]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert code is not None and len(code.group(1).splitlines()) <= 12
    endpoint = tcp_endpoint()
    assert code.group(1).count("tcp://127.0.0.1:5551") == 1
    snippet = code.group(1).replace("tcp://127.0.0.1:5551", endpoint)
    cfg = load_config(
        None,
        {"bus.tracks": endpoint, "bus.annotated": tcp_endpoint(), "bus.control": tcp_endpoint()},
    )
    out = io.StringIO()
    namespace: dict[str, object] = {}
    with SyntheticEngine(cfg, fps=20, cameras=["cam0", "cam1"]), contextlib.redirect_stdout(out):
        exec(compile(snippet, "docs/robots.md", "exec"), namespace)
    sync = namespace["sync"]
    assert isinstance(sync, TimeSync)
    lines = out.getvalue().splitlines()
    assert lines[-1] == repr(sync.stats) and sync.stats.matched >= 12  # 40 frames, 2 cameras
    rows = [line.split(" ", 4) for line in lines[:-1]]
    assert len(rows) >= 12
    for left_seq, right_seq, obj_id, label, rest in rows:
        assert abs(int(left_seq) - int(right_seq)) <= 1 and int(obj_id) > 0 and label
        box_text, confidence, area = rest.rsplit(" ", 2)
        box = ast.literal_eval(box_text)
        assert 0 <= float(confidence) <= 1 and int(area) > 0
        assert len(box) == 4 and box[2] > box[0] and box[3] > box[1]
