"""A headless Python viewer of ``promptcam web``: connects over WebRTC like a browser, receives
the video, and reports frames, frame rate and (for stamped frames, see synthetic.py) latency
capture → decoded frame. Used by tests and ``promptcam bench``; also handy to check a server:

    python -m clients.web.probe http://127.0.0.1:8080/ --seconds 5

ICE is restricted to loopback when ``loopback_only`` (the default), like the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import av
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from clients.jsontypes import JsonObject
from clients.web.ice import restrict_ice_to_loopback, rtc_configuration
from clients.web.synthetic import read_stamp

log = logging.getLogger(__name__)


@dataclass
class ProbeResult:
    frames: int = 0
    width: int = 0
    height: int = 0
    first_frame_s: float | None = None
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each frame
    latencies_ms: list[float] = field(default_factory=list)
    stamps: list[int] = field(default_factory=list)

    def fps(self, since: float | None = None, until: float | None = None) -> float:
        ts = [
            t
            for t in self.arrivals
            if (since is None or t >= since) and (until is None or t <= until)
        ]
        return (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 1 and ts[-1] > ts[0] else 0.0

    def summary(self) -> JsonObject:
        lat = sorted(self.latencies_ms)
        return {
            "frames": self.frames,
            "width": self.width,
            "height": self.height,
            "fps": round(self.fps(), 2),
            "first_frame_s": self.first_frame_s,
            "latency_ms_p50": lat[len(lat) // 2] if lat else None,
            "latency_ms_p95": lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else None,
        }


class Viewer:
    """One WebRTC viewer of ``camera`` (None: the server's only camera). ``await connect()``,
    then ``await receive(seconds)``; ``close()``."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        t_capture_of: Callable[[int], int | None] | None = None,
        loopback_only: bool = True,
        camera: str | None = None,
    ) -> None:
        self.url = url.split("?")[0].rstrip("/")
        self.token = token
        self.camera = camera
        self.result = ProbeResult()
        self._t_capture_of = t_capture_of
        if loopback_only:
            restrict_ice_to_loopback()
        self.pc = RTCPeerConnection(configuration=rtc_configuration())
        self._track: MediaStreamTrack | None = None
        self.last_frame: av.VideoFrame | None = None  # the newest decoded frame
        self._got_track = asyncio.Event()
        self._t0 = time.monotonic()

    async def connect(self, timeout: float = 10.0) -> None:
        pc = self.pc
        pc.addTransceiver("video", direction="recvonly")

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._track = track
            self._got_track.set()

        await pc.setLocalDescription(await pc.createOffer())
        headers = {"X-Promptcam-Token": self.token} if self.token else {}
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{self.url}/offer",
                params={"camera": self.camera} if self.camera else None,
                json={"sdp": pc.localDescription.sdp, "type": pc.localDescription.type},
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp,
        ):
            body = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"offer refused: {resp.status} {body.get('error')}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
        await asyncio.wait_for(self._got_track.wait(), timeout)

    def _on_frame(self, frame: av.VideoFrame) -> None:
        now_ns = time.time_ns()
        self.last_frame = frame
        r = self.result
        r.frames += 1
        r.width, r.height = frame.width, frame.height
        t = time.monotonic()
        r.arrivals.append(t)
        if len(r.arrivals) > 100_000:
            del r.arrivals[:50_000]
        if r.first_frame_s is None:
            r.first_frame_s = round(t - self._t0, 3)
        if self._t_capture_of is not None:
            seq = read_stamp(frame.to_ndarray(format="gray"))
            t_cap = self._t_capture_of(seq) if seq is not None else None
            if seq is not None and t_cap is not None:
                r.stamps.append(seq)
                r.latencies_ms.append((now_ns - t_cap) / 1e6)

    async def receive(self, seconds: float | None = None, frames: int | None = None) -> ProbeResult:
        """Read frames for ``seconds`` or until ``frames`` more arrived (whichever first)."""
        deadline = None if seconds is None else time.monotonic() + seconds
        target = None if frames is None else self.result.frames + frames
        track = self._track
        if track is None:
            raise RuntimeError("receive before connect: the server sent no video track")
        while (deadline is None or time.monotonic() < deadline) and (
            target is None or self.result.frames < target
        ):
            remaining = None if deadline is None else max(0.01, deadline - time.monotonic())
            try:
                frame = await asyncio.wait_for(track.recv(), remaining)
            except asyncio.TimeoutError:
                break
            except MediaStreamError:
                break
            if isinstance(frame, av.VideoFrame):  # a video track sends video frames only
                self._on_frame(frame)
        return self.result

    async def close(self) -> None:
        await self.pc.close()


async def _main(url: str, seconds: float, token: str | None, camera: str | None) -> JsonObject:
    viewer = Viewer(url, token=token, camera=camera)
    try:
        await viewer.connect()
        print(json.dumps({"event": "connected"}), flush=True)
        await viewer.receive(frames=1)
        print(json.dumps({"event": "receiving"}), flush=True)
        await viewer.receive(seconds=seconds)
        return viewer.result.summary()
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await viewer.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m clients.web.probe", description=__doc__.splitlines()[0]
    )
    p.add_argument("url")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--token")
    p.add_argument("--camera", help="the camera to watch (a server showing several needs it)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        summary = asyncio.run(_main(a.url, a.seconds, a.token, a.camera))
    except (OSError, RuntimeError, asyncio.TimeoutError, aiohttp.ClientError) as e:
        sys.stderr.write(f"probe: error: {e or type(e).__name__}\n")
        return 1
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
