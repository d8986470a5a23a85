"""Web server against a stand-in engine (real ZeroMQ sockets) and real aiortc viewers.

The server runs as a real ``promptcam web`` subprocess; ICE is restricted to loopback on both
sides (server: ``web.ice_loopback_only``; viewers here: the same aioice restriction), so no
packet leaves the host.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import av
import cv2
import numpy as np
import psutil
import pytest
from av.video.stream import VideoStream

from clients.web.probe import Viewer
from clients.web.synthetic import read_stamp
from clients.web.video import MAX_QUEUED, Encoded, LiveEncoder, ViewerTrack
from tests.conftest import tcp_endpoint, wait_for
from tests.web_stack import (
    ROOT,
    Stack,
    healthy,
    http,
    make_stack,
    post_json,
    start_web,
    stop,
)


@pytest.fixture
def stack() -> Iterator[Stack]:
    with make_stack() as st:
        yield st


# --------------------------------------------------------------------------- video


def test_peer_connection_counts_frames_and_measures_latency(stack: Stack) -> None:
    async def run() -> dict[str, Any]:
        viewer = Viewer(stack.url, t_capture_of=stack.engine.t_capture_of)
        try:
            await viewer.connect()
            answer = viewer.pc.remoteDescription.sdp
            await viewer.receive(seconds=10, frames=40)
        finally:
            await viewer.close()
        return viewer.result.summary() | {"stamps": viewer.result.stamps, "answer": answer}

    r = asyncio.run(run())
    codecs = {ln.split()[1].split("/")[0] for ln in r["answer"].splitlines() if "a=rtpmap:" in ln}
    assert "H264" in codecs and "VP8" not in codecs, f"only H.264 is negotiated: {codecs}"
    assert r["frames"] >= 40 and (r["width"], r["height"]) == (320, 240)
    stamps = r["stamps"]
    assert len(stamps) >= 30, "frames should carry readable capture stamps"
    assert stamps == sorted(stamps), "frames arrive in capture order (newest frame, no reordering)"
    assert 0 < r["latency_ms_p50"] < 1000
    status, metrics = http("GET", stack.url + "metrics")
    text = metrics.decode()
    assert status == 200
    for name in (
        "promptcam_web_viewers",
        "promptcam_web_frames_sent_total",
        "promptcam_web_annotated_frames_received_total",
        "promptcam_web_frame_latency_seconds_bucket",
        "promptcam_web_frames_encoded_total",
        "promptcam_web_keyframes_encoded_total",
        "promptcam_web_viewer_packets_dropped_total",
    ):
        assert name in text


def metric(url: str, name: str, camera: str = "cam0") -> float:
    """The value of series ``name`` of ``camera`` on ``/metrics``."""
    status, body = http("GET", url + "metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(f'{name}{{camera="{camera}"}} '):
            return float(line.split()[1])
    raise AssertionError(f"{name} of camera {camera} not in /metrics")


def test_one_encoder_is_shared_by_all_viewers(stack: Stack) -> None:
    """Three viewers: the web process encodes each source frame once, not once per viewer."""

    async def run() -> tuple[float, float, list[float]]:
        vs = [Viewer(stack.url) for _ in range(3)]
        try:
            await asyncio.gather(*(v.connect() for v in vs))
            await asyncio.gather(*(v.receive(seconds=2) for v in vs))  # warm up
            e0 = metric(stack.url, "promptcam_web_frames_encoded_total")
            a0 = metric(stack.url, "promptcam_web_annotated_frames_received_total")
            t0 = time.monotonic()
            await asyncio.gather(*(v.receive(seconds=4) for v in vs))
            e1 = metric(stack.url, "promptcam_web_frames_encoded_total")
            a1 = metric(stack.url, "promptcam_web_annotated_frames_received_total")
            return e1 - e0, a1 - a0, [v.result.fps(t0) for v in vs]
        finally:
            await asyncio.gather(*(v.close() for v in vs))

    encoded, offered, fps = asyncio.run(run())
    assert offered >= 50, f"the source offered {offered:.0f} frames in 4 s (20 fps)"
    assert 0.7 * offered <= encoded <= 1.3 * offered, (
        f"{encoded:.0f} frames encoded for {offered:.0f} offered with 3 viewers: not shared"
    )
    assert min(fps) > 12, f"viewer frame rates {fps}"
    stats = http("GET", stack.url + "api/stats")[1]["web"]
    assert stats["frames_encoded"] > 0 and stats["keyframes"] > 0


def test_viewer_that_falls_behind_waits_for_a_keyframe() -> None:
    """A viewer's queue is bounded; after an overflow it resumes at a keyframe only, and a new
    viewer starts at one."""

    def enc(i: int, key: bool) -> Encoded:
        # a bare packet stands in for the encoder's video packet (no stream attached)
        p = cast("av.Packet[VideoStream]", av.Packet(bytes([i])))
        p.pts = i
        return Encoded(p, key, 0)

    async def run() -> tuple[list[int], int, int]:
        dropped: list[int] = []
        encoder = LiveEncoder(None, 10)  # type: ignore[arg-type]  # never started
        v = ViewerTrack(encoder, lambda lat: None, dropped.append, lambda v: None)
        v.offer(enc(0, False))  # before the first keyframe: dropped
        v.offer(enc(1, True))
        got = [(await v.recv()).pts or 0]
        for i in range(2, 2 + MAX_QUEUED + 1):  # nobody reads: overflow on the last
            v.offer(enc(i, False))
        v.offer(enc(10, False))  # still waiting for a keyframe
        v.offer(enc(11, True))
        v.offer(enc(12, False))
        got += [(await v.recv()).pts or 0, (await v.recv()).pts or 0]
        v.stop()
        return got, v.dropped, sum(dropped)

    got, n_dropped, reported = asyncio.run(run())
    assert got == [1, 11, 12]
    assert n_dropped == reported == 1 + (MAX_QUEUED + 1) + 1


def _rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def test_three_viewers_one_stalls(stack: Stack) -> None:
    """Two viewers in this process, a third in its own process that we freeze (SIGSTOP): it
    neither reads nor answers. The others keep their frame rate; server memory stays flat."""
    stalled = subprocess.Popen(
        [sys.executable, "-m", "clients.web.probe", stack.url, "--seconds", "60"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert stalled.stdout is not None
        for _ in range(2):
            line = stalled.stdout.readline()
        assert "receiving" in line, line

        async def run() -> tuple[float, float, float, float, int, int]:
            a, b = Viewer(stack.url), Viewer(stack.url)
            try:
                await asyncio.gather(a.connect(), b.connect())
                assert http("GET", stack.url + "healthz")[1]["viewers"] == 3
                await asyncio.gather(a.receive(seconds=3), b.receive(seconds=3))  # warm up
                t1 = time.monotonic()
                await asyncio.gather(a.receive(seconds=3), b.receive(seconds=3))
                os.kill(stalled.pid, signal.SIGSTOP)
                rss0 = _rss(stack.proc.pid)
                t2 = time.monotonic()
                await asyncio.gather(a.receive(seconds=6), b.receive(seconds=6))
                rss1 = _rss(stack.proc.pid)
                before = (a.result.fps(t1, t2), b.result.fps(t1, t2))
                after = (a.result.fps(t2 + 0.5), b.result.fps(t2 + 0.5))
                return before[0], before[1], after[0], after[1], rss0, rss1
            finally:
                await asyncio.gather(a.close(), b.close())

        a0, b0, a1, b1, rss0, rss1 = asyncio.run(run())
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
        stalled.kill()
        stalled.wait(10)
    assert min(a0, b0) > 12, f"frame rate before the stall: {a0:.1f}, {b0:.1f} (source 20 fps)"
    assert a1 > 0.8 * a0 and b1 > 0.8 * b0, f"fps before {a0:.1f}/{b0:.1f}, after {a1:.1f}/{b1:.1f}"
    assert rss1 - rss0 < 30 * 2**20, f"server memory grew by {(rss1 - rss0) / 2**20:.1f} MiB"
    assert healthy(stack.url)


# --------------------------------------------------------------------------- control and lists


def test_prompt_changes_engine_and_object_list(stack: Stack) -> None:
    status, body = post_json(stack.url + "api/prompt", {"prompt": "person. forklift. dog."})
    assert status == 200 and body["ok"]
    assert stack.engine.prompt == "person. forklift. dog."

    def labels() -> list[str] | None:
        objs = http("GET", stack.url + "api/objects")[1]
        got = [o["label"] for o in objs["objects"]]
        return got if got == ["person", "forklift", "dog"] else None

    wait_for(labels, what="object list with the new labels")
    objs = http("GET", stack.url + "api/objects")[1]
    assert {"id", "label", "score", "confidence", "age", "state"} <= set(objs["objects"][0])
    assert 0.0 <= objs["objects"][0]["confidence"] <= 1.0
    status, stats = http("GET", stack.url + "api/stats")
    assert status == 200 and stats["engine"]["fps_in"] == 20 and "latency_ms_p50" in stats["web"]


def _objects(url: str) -> dict[int, dict[str, Any]]:
    return {o["id"]: o for o in http("GET", url + "api/objects")[1]["objects"]}


def test_objects_added_relabelled_removed_reset_and_snapshot(stack: Stack) -> None:
    url = stack.url
    wait_for(lambda: len(_objects(url)) == 2, what="the prompt's two objects")
    status, body = post_json(url + "api/objects", {"box": [10, 20, 60, 80], "label": "cup"})
    assert status == 201, body
    cup = body["id"]
    wait_for(lambda: _objects(url).get(cup, {}).get("label") == "cup", what="the drawn object")
    assert _objects(url)[cup]["box"] == [10, 20, 60, 80]

    status, body = post_json(url + f"api/objects/{cup}/label", {"label": "mug"})
    assert status == 200 and body["replaced"] == cup, body
    mug = body["id"]
    wait_for(lambda: mug in _objects(url) and cup not in _objects(url), what="the relabel")
    assert _objects(url)[mug]["label"] == "mug" and _objects(url)[mug]["box"] == [10, 20, 60, 80]

    status, body = http("DELETE", url + f"api/objects/{mug}")
    assert status == 200 and body["removed"] == mug
    wait_for(lambda: mug not in _objects(url), what="the removal")
    status, body = http("DELETE", url + f"api/objects/{mug}")
    assert status == 400 and f"no tracked object with id {mug}" in body["error"]
    for bad, words in [
        ({"box": [10, 20, 60, 80], "label": "\ud800"}, "not valid Unicode"),
        ({"box": [10, 20, 60, 80], "label": "a\nb"}, "control characters"),
        ({"box": [10, 20, 10, 80]}, "no area"),
        ({"box": [10, 20, "x", 80]}, "4 numbers"),
        ({"box": [500, 500, 600, 600]}, "engine refused the box"),
    ]:
        status, body = post_json(url + "api/objects", bad)
        assert status == 400 and words in body["error"], (bad, body)
    assert http("GET", url + "api/objects?camera=cam9")[0] == 404
    controls = [r for r in stack.engine.requests if r["cmd"] not in ("stats", "cameras")]
    assert controls and all(r.get("camera") == "cam0" for r in controls), "requests name it"

    # a snapshot: the newest annotated frame and the tracks message of that very frame
    status, snap = http("GET", url + "api/snapshot")
    assert status == 200 and snap["tracks"]["seq"] == snap["seq"], snap
    status, png = http("GET", url + snap["image"].lstrip("/"))
    assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (240, 320, 3) and read_stamp(image) == snap["seq"]

    status, body = http("POST", url + "api/reset", b"{}", {"Content-Type": "application/json"})
    assert status == 200
    wait_for(lambda: not _objects(url), what="no object after reset")

    state = http("GET", url + "api/state")[1]
    assert state["state"] == "live" and state["banner"] == "live", state
    assert state["prompt"] == stack.engine.prompt and state["frame_age_s"] < 2
    stack.engine.close()  # the engine stops answering: its banner says so
    wait_for(
        lambda: http("GET", url + "api/state")[1]["state"] == "engine_restarting",
        timeout=10,
        what="the engine-restarting banner",
    )


def test_engine_down_gives_clear_errors() -> None:
    overrides = {
        "bus.annotated": tcp_endpoint(),
        "bus.tracks": tcp_endpoint(),
        "bus.control": tcp_endpoint(),
    }
    proc, url = start_web(overrides)
    try:
        status, body = post_json(url + "api/prompt", {"prompt": "cat."})
        assert status == 503 and "no reply" in body["error"]
        status, body = http("GET", url + "api/stats")
        assert status == 200 and body["engine"] is None and body["engine_error"]
        status, body = http("GET", url + "healthz")
        assert body["last_annotated_age_s"] is None
    finally:
        stop(proc)


# --------------------------------------------------------------------------- bad input


def test_bad_requests_are_refused_and_server_keeps_serving(stack: Stack) -> None:
    url = stack.url
    status, body = post_json(url + "offer", {"sdp": "this is not sdp", "type": "offer"})
    assert status == 400 and "malformed SDP" in body["error"]
    assert healthy(url)
    broken = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:xx\r\n"
    status, body = post_json(url + "offer", {"sdp": broken, "type": "offer"})
    assert status == 400 and "SDP" in body["error"]
    assert healthy(url)
    status, body = http("POST", url + "offer", b"{nope", {"Content-Type": "application/json"})
    assert status == 400 and "JSON" in body["error"]
    status, body = post_json(url + "api/prompt", {"prompt": "x" * 100_000})
    assert status == 413 and "limit" in body["error"]
    assert healthy(url)
    status, body = http("GET", url + "api/jobs/doesnotexist")
    assert status == 404
    status, metrics = http("GET", url + "metrics")
    assert 'promptcam_web_request_errors_total{status="413"}' in metrics.decode()

    # and video still works after all that
    async def one_frame() -> int:
        v = Viewer(url)
        try:
            await v.connect()
            return (await v.receive(seconds=10, frames=3)).frames
        finally:
            await v.close()

    assert asyncio.run(one_frame()) >= 3


def _raw_get(url: str, target: str, header: bytes) -> int:
    """The status of a GET of ``target`` sent as raw bytes with one extra ``header`` line."""
    host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
    lines = [b"GET " + target.encode("latin-1") + b" HTTP/1.1", b"Host: " + host.encode()]
    lines += [header] if header else []
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"\r\n".join([*lines, b"Connection: close", b"", b""]))
        reply = b""
        while b"\r\n" not in reply:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    return int(reply.split(b" ", 2)[1])


def test_token_required_when_set() -> None:
    with make_stack(token="s3cret-token") as st:
        url = st.url
        assert http("GET", url)[0] == 401
        assert (
            http("GET", url + "api/objects", headers={"X-Promptcam-Token": "wrong-token"})[0] == 401
        )
        status, body = post_json(url + "offer", {"sdp": "v=0", "type": "offer"})
        assert status == 401 and "token" in body["error"]
        assert http("GET", url + "metrics")[0] == 401
        assert http("GET", url + "healthz")[0] == 200
        assert http("GET", url + "?token=s3cret-token")[0] == 200
        assert (
            http("GET", url + "api/objects", headers={"Authorization": "Bearer s3cret-token"})[0]
            == 200
        )
        assert (
            http("GET", url + "api/objects", headers={"X-Promptcam-Token": "s3cret-token"})[0]
            == 200
        )
        # a token that is not ASCII, as raw bytes (latin-1 or UTF-8): a wrong token, not a 500
        for raw in (
            b"Authorization: Bearer \xfc",
            b"Authorization: Bearer \xc3\xbc",
            b"X-Promptcam-Token: \xfc",
            b"X-Promptcam-Token: s3cret-token\xff",
            b"X-Promptcam-Token: \xc3\xbc",
        ):
            assert _raw_get(url, "/api/objects", raw) == 401, raw
        # (raw bytes in the request line: aiohttp refuses the URL itself)
        assert _raw_get(url, "/api/objects?token=\xfc\xc3\xbc", b"") in (400, 401)
        assert _raw_get(url, "/api/objects?token=%FC%C3%BC", b"") == 401
        assert http("GET", url + "api/objects?token=s3cret-token")[0] == 200  # still serving

        async def frames() -> int:
            v = Viewer(url, token="s3cret-token")
            try:
                await v.connect()
                return (await v.receive(seconds=10, frames=3)).frames
            finally:
                await v.close()

        assert asyncio.run(frames()) >= 3


# --------------------------------------------------------------------------- offline jobs


def make_video(path: Path, frames: int = 8, size: tuple[int, int] = (160, 120)) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height = size
        s.pix_fmt = "yuv420p"
        for i in range(frames):
            img = np.full((size[1], size[0], 3), 40, np.uint8)
            img[30:70, 10 + 8 * i : 50 + 8 * i] = (0, 0, 255)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def multipart(fields: dict[str, str], file_name: str, data: bytes) -> tuple[bytes, str]:
    boundary = "----promptcamtest"
    out = b""
    for k, v in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    out += f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="{file_name}"\r\nContent-Type: video/mp4\r\n\r\n'.encode()
    out += data + f"\r\n--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


@pytest.mark.slow
def test_offline_job_upload_run_and_download(tmp_path: Path) -> None:
    with make_stack(extra_overrides={"web.max_upload_mb": 1, "engine.detector_size": 128}) as st:
        url = st.url
        body, ctype = multipart(
            {"prompt": "ball.", "seed_with": "box"}, "bad.mp4", b"not a video at all" * 100
        )
        status, resp = http("POST", url + "api/jobs", body, {"Content-Type": ctype})
        assert status == 400 and "cannot be used" in resp["error"]
        body, ctype = multipart({"prompt": "ball."}, "big.mp4", b"\0" * (2 * 2**20))
        status, resp = http("POST", url + "api/jobs", body, {"Content-Type": ctype})
        assert status == 413
        assert healthy(url)

        video = make_video(tmp_path / "in.mp4", frames=4).read_bytes()
        body, ctype = multipart(
            {"prompt": "ball.", "seed_with": "mask", "boxes": "10,30,50,70@0"}, "in.mp4", video
        )
        status, job = http("POST", url + "api/jobs", body, {"Content-Type": ctype})
        assert status == 201 and job["state"] in ("queued", "running"), job

        # meanwhile, a draft: its frames shown, boxes checked in the page's words, queued, cancelled
        draft = _draft(url, video)
        assert draft["state"] == "draft" and draft["total"] == 4 and draft["name"] == "in.mp4"
        status, jpeg = http("GET", url + f"api/jobs/{draft['id']}/frames/3.jpg")
        assert status == 200
        frame = cv2.imdecode(np.frombuffer(jpeg, np.uint8), 1)
        assert frame is not None and frame.shape == (120, 160, 3)
        assert http("GET", url + f"api/jobs/{draft['id']}/frames/4.jpg")[0] == 404
        start = url + f"api/jobs/{draft['id']}/start"
        for bad, words in [
            ({"boxes": []}, "type what to track"),
            (
                {"boxes": [{"box": [200, 10, 260, 50], "frame": 0}]},
                "box 1 lies outside the 160×120 frame",
            ),
            (
                {"boxes": [{"box": [10, 10, 50, 50], "frame": 9}]},
                "frame 9 is past the end of the video (4 frames)",
            ),
            ({"prompt": "ball.", "seed_with": "paint"}, "seeding must be box, mask or points"),
        ]:
            status, body_ = post_json(start, bad)
            assert status == 400 and words in body_["error"] and "--" not in body_["error"], body_
        status, queued = post_json(start, {"boxes": [{"box": [10, 30, 50, 70], "frame": 2}]})
        assert status == 200 and queued["state"] == "queued", queued
        assert queued["boxes"] == [{"box": [10.0, 30.0, 50.0, 70.0], "frame": 2}]
        assert post_json(start, {"prompt": "ball."})[0] == 409
        status, cancelled = post_json(url + f"api/jobs/{draft['id']}/cancel", {})
        assert status == 200 and cancelled["state"] == "cancelled"

        final = wait_for(
            lambda: (
                (j := http("GET", url + f"api/jobs/{job['id']}")[1])["state"] in ("done", "failed")
                and j
            ),
            timeout=240,
            interval=0.2,
            what="offline job",
        )
        assert final["state"] == "done", final
        assert final["frames"] == 4 and final["progress"] == 1.0
        status, mp4 = http("GET", url + final["result"].lstrip("/"))
        assert status == 200
        out = tmp_path / "out.mp4"
        out.write_bytes(mp4)
        with av.open(str(out)) as c:
            assert c.streams.video[0].codec_context.name == "h264"
            assert sum(1 for _ in c.decode(video=0)) == 4
        status, tracks = http("GET", url + final["tracks"].lstrip("/") + "?download=1")
        assert status == 200 and len(tracks.decode().splitlines()) == 4
        listed = [j["id"] for j in http("GET", url + "api/jobs")[1]["jobs"]]
        assert listed == [draft["id"], job["id"]], "newest first"

        # a running job cancelled: its worker ends, its files go
        running = _draft(url, video)
        post_json(url + f"api/jobs/{running['id']}/start", {"prompt": "ball."})
        wait_for(
            lambda: http("GET", url + f"api/jobs/{running['id']}")[1]["state"] == "running",
            what="the job running",
        )
        workers = [
            c
            for c in psutil.Process(st.proc.pid).children()
            if "spawn_main" in " ".join(c.cmdline())
        ]
        assert len(workers) == 1, "the job's worker process"
        status, body_ = post_json(url + f"api/jobs/{running['id']}/cancel", {})
        assert status == 200
        wait_for(
            lambda: http("GET", url + f"api/jobs/{running['id']}")[1]["state"] == "cancelled",
            timeout=30,
            what="the running job cancelled",
        )
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
        assert http("GET", url + f"api/jobs/{running['id']}/frames/0.jpg")[0] == 404


def _draft(url: str, video: bytes) -> dict[str, Any]:
    body, ctype = multipart({"draft": "1"}, "in.mp4", video)
    status, job = http("POST", url + "api/jobs", body, {"Content-Type": ctype})
    assert status == 201 and isinstance(job, dict), job
    return job


def test_job_eta_from_the_rate_so_far(tmp_path: Path) -> None:
    from clients.web.jobs import Job, VideoInfo

    job = Job("j", tmp_path, tmp_path / "v", "", "box", [], VideoInfo(64, 48, 100, 25.0, "h264"))
    assert job.eta_s() is None  # queued
    job.state, job.started_at, job.done = "running", 1000.0, 0
    assert job.eta_s(now=1010.0) is None  # no frame done yet
    job.done = 25
    assert job.eta_s(now=1010.0) == pytest.approx(30.0)
