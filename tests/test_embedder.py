"""Appearance from the model: SAM 2's object pointer as the embedder's vector, on a backend's
real outputs (tiny-random and the demo preset), and the bounded gallery."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from engine.lifecycle.embedder import Gallery, ObjectPointerEmbedder, unit
from engine.models.sam2 import load_sam2
from engine.segmenters.sam2 import StreamingSegmenter
from stream.config import ModelsConfig
from stream.demo import DemoScene

FRAMES = 8


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run(preset: str) -> tuple[int, list[dict[int, np.ndarray]]]:
    """Two demo objects prompted with their true boxes on frame 0, followed ``FRAMES`` frames
    (320x240): each frame's embedder vector per object."""
    loaded = load_sam2(ModelsConfig.model_validate({"preset": preset, "device": "cpu"}))
    seg = StreamingSegmenter(loaded)
    scene = DemoScene(320, 240, 2, seed=3)
    embedder = ObjectPointerEmbedder()
    out: list[dict[int, np.ndarray]] = []
    for i in range(FRAMES):
        frame = scene.render_frame(i)
        idx = seg.add_frame(frame.image)
        if i == 0:
            for gt in frame.truth:
                seg.add_prompt(gt.id, idx, box=np.asarray(gt.box, np.float32))
        vecs = {}
        for oid, o in seg.track(idx).items():
            assert o.embedding is not None and o.embedding.shape == (loaded.model.hidden_dim,)
            v = embedder.embed(o, frame.image)
            if v is not None:
                vecs[oid] = v
        out.append(vecs)
    return loaded.model.hidden_dim, out


@pytest.mark.parametrize("preset", ["tiny-random", "demo"])
def test_object_pointer_vectors_from_a_real_backend(preset: str) -> None:
    dim, frames = _run(preset)
    assert all(len(f) == 2 for f in frames[1:]), [list(f) for f in frames]
    for f in frames:
        for v in f.values():
            assert v.shape == (dim,) and np.isfinite(v).all()
            assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
    a, b = sorted(frames[-1])
    assert not np.allclose(frames[-1][a], frames[-1][b])  # two objects, two vectors
    if preset == "demo":  # trained weights: an object's own gallery is the closer
        own, other = Gallery(16), Gallery(16)
        for f in frames[:-1]:
            own.add(f.get(a))
            other.add(f.get(b))
        sim_own, sim_other = own.similarity(frames[-1][a]), other.similarity(frames[-1][a])
        assert sim_own is not None and sim_other is not None and sim_own > sim_other


def test_gallery_is_bounded_and_compares_by_cosine() -> None:
    g = Gallery(3)
    assert g.similarity(unit(np.ones(4))) is None
    for k in range(5):
        g.add(unit(np.eye(4)[k % 4]))
    assert len(g) == 3  # the oldest two left
    assert g.similarity(unit(np.eye(4)[0])) == pytest.approx(1.0)  # the 5th was e0
    assert g.similarity(unit(np.eye(4)[1])) == pytest.approx(0.0)  # e1 left the gallery
    assert unit(np.zeros(4)) is None
