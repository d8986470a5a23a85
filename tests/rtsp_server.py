"""A GStreamer RTSP test server: ``/usr/bin/python3 tests/rtsp_server.py PORT [FPS [WxH]]``.

Serves ``rtsp://127.0.0.1:PORT/test``: live H.264 from an ``appsrc is-live=true`` pipeline fed
with generated frames (a moving bar whose brightness encodes the frame count). Prints
``READY rtsp://127.0.0.1:PORT/test`` on stdout once listening; exits 1 if the port cannot be bound.
Runs under the system interpreter (GObject introspection bindings); needs no numpy.
"""

from __future__ import annotations

import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

WIDTH, HEIGHT = 160, 120


def frame_bytes(n: int, width: int = WIDTH, height: int = HEIGHT) -> bytes:
    """A BGR frame: grey background with a vertical bar moving right by 4 px per frame."""
    x0 = (n * 4) % width
    row = bytearray(b"\x40" * (width * 3))
    for x in range(x0, min(width, x0 + 16)):
        row[x * 3 : x * 3 + 3] = bytes((n * 7 % 256, 200, 255))
    return bytes(row) * height


class Factory(GstRtspServer.RTSPMediaFactory):  # type: ignore[misc]  # gi's GStreamer classes are untyped (Any)
    def __init__(self, fps: int, width: int = WIDTH, height: int = HEIGHT) -> None:
        super().__init__()
        self.fps = fps
        self.size = (width, height)
        self.set_shared(True)
        self.set_launch(
            "( appsrc name=src is-live=true format=time do-timestamp=true "
            f"caps=video/x-raw,format=BGR,width={width},height={height},framerate={fps}/1 "
            "! videoconvert ! video/x-raw,format=I420 "
            "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 "
            "! rtph264pay name=pay0 pt=96 config-interval=1 )"
        )
        self.connect("media-configure", self._configure)

    def _configure(self, _factory: object, media: GstRtspServer.RTSPMedia) -> None:
        appsrc = media.get_element().get_child_by_name("src")
        state = {"n": 0}

        def push() -> bool:
            buf = Gst.Buffer.new_wrapped(frame_bytes(state["n"], *self.size))
            state["n"] += 1
            # Any result other than OK (flushing, EOS after the media is torn down) ends the feed.
            return bool(appsrc.emit("push-buffer", buf) == Gst.FlowReturn.OK)

        GLib.timeout_add(int(1000 / self.fps), push)


def main() -> int:
    if len(sys.argv) < 2:
        sys.stderr.write("usage: rtsp_server.py PORT [FPS]\n")
        return 2
    port = int(sys.argv[1])
    fps = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    width, height = (
        (int(v) for v in sys.argv[3].split("x")) if len(sys.argv) > 3 else (WIDTH, HEIGHT)
    )
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    server.get_mount_points().add_factory("/test", Factory(fps, width, height))
    if server.attach(None) == 0:
        sys.stderr.write(f"rtsp_server: cannot listen on 127.0.0.1:{port}\n")
        return 1
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    print(f"READY rtsp://127.0.0.1:{port}/test", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
