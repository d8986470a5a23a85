"""Video sources: the demo scene, image directories, video files (written with PyAV), and the
errors of bad input, both from ``open_source`` and through ``promptcam capture``."""

from __future__ import annotations

import functools
import http.server
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from stream.config import SourceConfig
from stream.demo import COLOURS, DEMO_PROMPT, DemoScene, GroundTruth
from stream.errors import EndOfStreamError, SourceConnectionError, SourceError
from stream.sources import DemoSource, FrameSource, ImageDirSource, open_source, redact_url
from tests.conftest import free_port


def _cfg(**kw: object) -> SourceConfig:
    return SourceConfig.model_validate({"realtime": False, **kw})


def _read_all(src: FrameSource, limit: int = 10_000) -> list[np.ndarray]:
    frames = []
    with pytest.raises(EndOfStreamError):
        for _ in range(limit):
            frames.append(src.read())
    return frames


def _check_frame(img: np.ndarray) -> None:
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.flags.c_contiguous


def write_video(path: Path, n: int, fps: int = 25, size: tuple[int, int] = (64, 48)) -> None:
    """An H.264 MP4 whose frame ``i`` is a flat grey of level ``20 * i``."""
    w, h = size
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(
                np.full((h, w, 3), (20 * i) % 256, np.uint8), format="bgr24"
            )
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


# --------------------------------------------------------------------------- demo


def test_demo_is_deterministic_and_random_access() -> None:
    a, b = DemoScene(320, 240, 4, seed=7), DemoScene(320, 240, 4, seed=7)
    for i in (0, 1, 50, 333):
        img_a, gt_a = a.render(i)
        img_b, gt_b = b.render(i)
        assert np.array_equal(img_a, img_b) and gt_a == gt_b
    other, _ = DemoScene(320, 240, 4, seed=8).render(50)
    assert not np.array_equal(other, a.render(50)[0])
    img, gt = a.render(10)
    _check_frame(img)
    assert img.shape == (240, 320, 3)
    assert all(isinstance(g, GroundTruth) and g.label in ("ball", "box") for g in gt)
    assert {o.label for o in a.objects} == {"ball", "box"}
    assert set(DEMO_PROMPT.replace(".", " ").split()) == {"ball", "box"}


def test_demo_objects_leave_enter_and_cross() -> None:
    scene = DemoScene(640, 480, 3, seed=0)
    n = 1500
    visible = {o.id: [False] * n for o in scene.objects}
    overlapped = False
    for i in range(n):
        gt = scene.ground_truth(i)
        for g in gt:
            x1, y1, x2, y2 = g.box
            assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480
            visible[g.id][i] = True
        for j, g in enumerate(gt):
            for h in gt[j + 1 :]:
                ix = min(g.box[2], h.box[2]) - max(g.box[0], h.box[0])
                iy = min(g.box[3], h.box[3]) - max(g.box[1], h.box[1])
                overlapped |= ix > 0 and iy > 0
    for oid, seen in visible.items():
        enters = sum(1 for i in range(1, n) if seen[i] and not seen[i - 1])
        leaves = sum(1 for i in range(1, n) if seen[i - 1] and not seen[i])
        assert enters >= 1 and leaves >= 1, f"object {oid} never left and came back"
    assert overlapped, "objects never crossed"


def test_demo_masks_are_exactly_the_pixels_drawn() -> None:
    """Before noise and blur, the pixels that differ from the (panned) background are exactly
    the union of the reported masks, each mask's pixels carry its object's colour, and every
    box is the tight box of its mask; the noisy frame has the same ground truth."""
    checked = occluded = 0
    for seed in (3, 11):
        scene = DemoScene(320, 240, 6, seed=seed)
        for i in range(0, 600, 37):
            clean = scene.render_frame(i, clean=True)
            changed = (clean.image != scene.background_at(i)).any(axis=2)
            assert np.array_equal(changed, clean.ids > 0), (seed, i)
            assert set(np.unique(clean.ids)) - {0} == {g.id for g in clean.truth}
            for g in clean.truth:
                mask = clean.mask(g.id)
                ys, xs = np.nonzero(mask)
                assert g.area == len(xs)
                assert g.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
                if g.area >= 200:  # a sliver may show only a box's dark frame
                    mean = clean.image[mask].astype(float).mean(axis=0)
                    nearest = min(
                        COLOURS, key=lambda c: float(np.abs(np.subtract(COLOURS[c], mean)).sum())
                    )
                    assert nearest == g.colour, (seed, i, g)
                full = next(o for o in scene.objects if o.id == g.id)
                x1, y1, x2, y2 = g.box
                inside = x1 > 0 and y1 > 0 and x2 < 320 and y2 < 240
                if inside and g.label == "box":
                    expected = round(2 * full.half[0]) * round(2 * full.half[1])
                    occluded += g.area < expected
                checked += 1
            noisy = scene.render_frame(i)
            assert noisy.truth == clean.truth and np.array_equal(noisy.ids, clean.ids)
            assert not np.array_equal(noisy.image, clean.image)
    assert checked >= 40 and occluded >= 1


def test_demo_ground_truth_jsonl_round_trips(tmp_path: Path) -> None:
    from stream.groundtruth import export_scene
    from stream.wire import TracksMessage

    scene = DemoScene(160, 120, 4, seed=5)
    export_scene(scene, 6, tmp_path / "frames", tmp_path / "gt.jsonl", start=100)
    lines = (tmp_path / "gt.jsonl").read_text().splitlines()
    assert len(lines) == 6 and len(list((tmp_path / "frames").glob("*.png"))) == 6
    for seq, line in enumerate(lines):
        h = TracksMessage.from_json(line).header
        frame = scene.render_frame(100 + seq)
        assert h.seq == seq and (h.width, h.height) == (160, 120)
        assert [o.id for o in h.objects] == [g.id for g in frame.truth]
        for o, g in zip(h.objects, frame.truth, strict=True):
            assert o.label == f"{g.colour} {g.label}" and o.box == list(g.box)
            assert np.array_equal(o.decode_mask(), frame.mask(g.id))
        png = cv2.imread(str(tmp_path / "frames" / f"{seq:06d}.png"))
        assert png is not None and np.array_equal(png, frame.image)


def test_demo_scenes_have_look_alikes_and_every_colour() -> None:
    colours, twins = set(), 0
    for seed in range(40):
        objs = DemoScene(320, 240, 6, seed=seed).objects
        colours |= {o.colour for o in objs}
        twins += sum(
            1
            for k, o in enumerate(objs)
            if any(
                p.label == o.label and p.colour == o.colour and p.half == o.half for p in objs[:k]
            )
        )
    assert colours == set(COLOURS) and twins >= 10


def test_demo_source_through_open_source() -> None:
    src = open_source("demo", _cfg(width=160, height=120, demo_objects=2, seed=1))
    assert isinstance(src, DemoSource) and src.fps == 15.0
    first = src.read()
    _check_frame(first)
    assert first.shape == (120, 160, 3)
    assert np.array_equal(first, DemoScene(160, 120, 2, seed=1).render(0)[0])
    assert "demo" in src.describe()
    src.close()


# --------------------------------------------------------------------------- image directories


def test_image_directory_sorted_by_name_and_loops(tmp_path: Path) -> None:
    levels = {"b.png": 20, "a.png": 10, "c.jpg": 30, "d.bmp": 40}
    for name, v in levels.items():
        cv2.imwrite(str(tmp_path / name), np.full((24, 32, 3), v, np.uint8))
    cv2.imwrite(str(tmp_path / "e.png"), np.full((10, 12), 50, np.uint8))  # grey, other size
    (tmp_path / "notes.txt").write_text("not an image")
    src = open_source(str(tmp_path), _cfg())
    assert isinstance(src, ImageDirSource) and src.fps == 10.0
    frames = _read_all(src)
    assert [int(f[0, 0, 0]) for f in frames] == [10, 20, 30, 40, 50]
    assert frames[-1].shape == (10, 12, 3)
    for f in frames:
        _check_frame(f)
    looped = open_source(str(tmp_path), _cfg(loop=True, fps=5))
    assert looped.fps == 5
    assert [int(looped.read()[0, 0, 0]) for _ in range(7)] == [10, 20, 30, 40, 50, 10, 20]


def test_image_directory_without_images(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(SourceError, match="holds no images"):
        open_source(str(tmp_path), _cfg())
    (tmp_path / "broken.png").write_bytes(b"not a png")
    src = open_source(str(tmp_path), _cfg(loop=True))
    with pytest.raises(SourceError, match="can be decoded"):
        src.read()


# --------------------------------------------------------------------------- video files


def test_video_file_frame_count_and_content(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path, 12)
    src = open_source(str(path), _cfg())
    assert src.fps == pytest.approx(25.0)
    frames = _read_all(src)
    assert len(frames) == 12
    levels = [int(f.mean()) for f in frames]
    assert all(abs(lv - 20 * i) <= 4 for i, lv in enumerate(levels)), levels
    for f in frames:
        _check_frame(f)
        assert f.shape == (48, 64, 3)
    with pytest.raises(EndOfStreamError):
        src.read()
    src.close()


def test_video_file_loop(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path, 5)
    src = open_source(str(path), _cfg(loop=True))
    levels = [int(src.read().mean()) for _ in range(12)]
    assert [round(lv / 20) for lv in levels] == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    src.close()


def test_video_file_realtime_pacing(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path, 10, fps=25)
    src = open_source(str(path), _cfg(realtime=True))
    t0 = time.monotonic()
    assert len(_read_all(src)) == 10
    # Nine frame intervals of 40 ms must have passed: frames come at their media time.
    assert time.monotonic() - t0 >= 0.3


def test_http_stream(tmp_path: Path) -> None:
    """A network source over HTTP (a file served on loopback): frames, then the stream ends."""
    write_video(tmp_path / "clip.mp4", 6)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="http-test-server", daemon=True)
    thread.start()
    try:
        url = f"http://user:pw-xyz@127.0.0.1:{server.server_address[1]}/clip.mp4"
        src = open_source(url, _cfg(open_timeout_s=5, read_timeout_s=5))
        assert src.live and "pw-xyz" not in src.describe()
        frames = [src.read() for _ in range(6)]
        assert [round(f.mean() / 20) for f in frames] == [0, 1, 2, 3, 4, 5]
        with pytest.raises(SourceConnectionError, match="ended"):
            src.read()
        src.close()
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- errors


def test_redact_url() -> None:
    assert redact_url("rtsp://admin:s3cret@10.0.0.5:554/live") == "rtsp://***@10.0.0.5:554/live"
    assert "abc123" not in redact_url("https://cam.local/v.m3u8?token=abc123&res=hd")
    assert redact_url("https://cam.local/v.m3u8?token=abc123&res=hd").endswith("res=hd")
    assert redact_url("rtsp://127.0.0.1:8554/test") == "rtsp://127.0.0.1:8554/test"
    assert "pw" not in redact_url("http://u:pw@[::1")  # unparsable, still redacted


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        ("/no/such/video.mp4", "no such file"),
        ("-1", "bad webcam index"),
        ("7", "no webcam 7"),
        ("/dev/video9", "no webcam /dev/video9"),
        ("rtsp://", "malformed URL"),
        ("rtsp://cam:99999/x", "malformed URL"),
        ("http://a b/x", "malformed URL"),
        ("ftp://cam/x", "unsupported URL scheme"),
        ("", "empty source"),
    ],
)
def test_bad_sources(uri: str, match: str) -> None:
    with pytest.raises(SourceError, match=match) as e:
        open_source(uri, _cfg())
    assert "\n" not in str(e.value)


def test_corrupt_and_non_video_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    text = tmp_path / "notes.txt"
    text.write_text("hello\n" * 100)
    for p in (bad, text):
        with pytest.raises(SourceError, match="cannot read video file") as e:
            open_source(str(p), _cfg())
        assert "\n" not in str(e.value)


def test_unreachable_url_is_a_connection_error_without_credentials() -> None:
    url = f"rtsp://user:hunter2@127.0.0.1:{free_port()}/x"
    t0 = time.monotonic()
    with pytest.raises(SourceConnectionError) as e:
        open_source(url, _cfg(open_timeout_s=3))
    assert time.monotonic() - t0 < 10
    assert "hunter2" not in str(e.value) and "127.0.0.1" in str(e.value)


@pytest.mark.parametrize(
    "uri",
    ["/no/such/video.mp4", "CORRUPT", "5", "rtsp://"],
)
def test_capture_cli_bad_source_one_line_error(uri: str, tmp_path: Path) -> None:
    if uri == "CORRUPT":
        uri = str(tmp_path / "bad.mp4")
        Path(uri).write_bytes(b"garbage" * 500)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "clients.cli",
            "capture",
            "--source",
            uri,
            "--set",
            f"bus.frames=tcp://127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("promptcam capture: error: ")
    assert "Traceback" not in proc.stderr
