"""Video sources: webcam, network stream, video file, image directory and the demo scene.

``open_source(uri, cfg)`` picks the kind from the URI and returns a ``FrameSource`` whose
``read()`` gives HxWx3 uint8 BGR contiguous arrays (a new array per frame, so it may be sent
zero-copy). Failures are ``SourceError`` subclasses with one-line messages that never contain
credentials: ``SourceConnectionError`` for an unreachable or failing live source (capture
retries those), ``EndOfStreamError`` at the end of a finite source.
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import av
import av.container
import av.error
import cv2
import numpy as np

from stream.config import SourceConfig
from stream.demo import DemoScene
from stream.errors import EndOfStreamError, SourceConnectionError, SourceError

log = logging.getLogger(__name__)

NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEMO_DEFAULT_FPS = 15.0
IMAGE_DIR_DEFAULT_FPS = 10.0
# FFmpeg formats that "play" files which are not videos (tty renders any text file as ANSI art).
NOT_VIDEO_FORMATS = frozenset({"tty"})
_SECRET_PARAMS = re.compile(r"(pass|pwd|token|secret|key|auth|sig)", re.IGNORECASE)
_WEBCAM_RE = re.compile(r"^(-?\d+|/dev/video\d+)$")


def redact_url(url: str) -> str:
    """``url`` with any user:password and secret-looking query values replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//[^/@]*@", "//***@", url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "***" if _SECRET_PARAMS.search(k) else v) for k, v in pairs], safe="*"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class SourceTooLargeError(SourceError):
    """A source whose frames are larger than ``source.max_pixels``: refused before decoding
    (a few kilobytes of video can declare frames that take gigabytes). ``live``: a camera or
    stream, which capture keeps retrying (counted), rather than a file, which is an error."""

    def __init__(self, message: str, live: bool = False) -> None:
        super().__init__(message)
        self.live = live


def check_frame_size(width: int, height: int, max_pixels: int, live: bool = False) -> None:
    """``SourceTooLargeError`` when ``width`` x ``height`` is over ``max_pixels`` (0: unknown)."""
    if width > 0 and height > 0 and width * height > max_pixels:
        raise SourceTooLargeError(
            f"frames of {width}x{height} ({width * height / 1e6:.1f} Mpx) are over "
            f"source.max_pixels={max_pixels} ({max_pixels / 1e6:.1f} Mpx); refused before decoding",
            live,
        )


def image_size(path: Path) -> tuple[int, int] | None:
    """An image file's (width, height) from its header, without decoding it; None when the
    header cannot be read (the decoder then says what is wrong); ``SourceTooLargeError`` when
    it is too large for Pillow even to say."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return int(im.width), int(im.height)
    except Image.DecompressionBombError as e:  # over Pillow's own limit (178 Mpx)
        raise SourceTooLargeError(
            f"{str(e).split(',')[0]}: over source.max_pixels; refused before decoding"
        ) from None
    except Exception:  # any unreadable header: the decoder says what is wrong
        return None


def as_bgr(image: np.ndarray) -> np.ndarray:
    """An 8-bit grey, BGR or BGRA image (whichever) as a contiguous HxWx3 uint8 BGR array."""
    if image.dtype != np.uint8:
        raise SourceError(f"expected 8-bit frames, got {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image)
    raise SourceError(f"unsupported frame shape {image.shape}")


class Pacer:
    """Sleeps so that frames come out at their media time (real-time playback).

    ``wait(t)`` returns when ``t`` seconds of media time have passed since the first call (or
    the last ``reset``). A caller more than one second behind is re-anchored, not sped up.
    """

    def __init__(self) -> None:
        self._anchor: tuple[float, float] | None = None  # (monotonic, media time)

    def reset(self) -> None:
        self._anchor = None

    def wait(self, media_t: float) -> None:
        now = time.monotonic()
        if self._anchor is None:
            self._anchor = (now, media_t)
            return
        due = self._anchor[0] + (media_t - self._anchor[1])
        if due - now > 0:
            time.sleep(due - now)
        elif now - due > 1.0:
            self._anchor = (now, media_t)


class FrameSource(ABC):
    """A stream of BGR frames. ``live`` sources (cameras, network) may be reopened on failure."""

    live: bool = False
    fps: float | None = None

    @abstractmethod
    def read(self) -> np.ndarray:
        """The next frame (HxWx3 uint8 BGR, contiguous, a new array)."""

    @abstractmethod
    def describe(self) -> str:
        """A one-line description without credentials."""

    @abstractmethod
    def close(self) -> None:
        """Release the source; reading after close is an error."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- demo


class DemoSource(FrameSource):
    """The generated demo scene, paced at ``fps`` when ``realtime``."""

    def __init__(self, scene: DemoScene, realtime: bool = True) -> None:
        self.scene = scene
        self.fps = scene.fps
        self._realtime = realtime
        self._i = 0
        self._pacer = Pacer()

    def read(self) -> np.ndarray:
        if self._realtime:
            self._pacer.wait(self._i / self.scene.fps)
        img, _ = self.scene.render(self._i)
        self._i += 1
        return img

    def close(self) -> None:
        self._i = 0

    def describe(self) -> str:
        s = self.scene
        return f"demo scene {s.width}x{s.height}, {len(s.objects)} objects, seed {s.seed}, {s.fps:g} fps"


# --------------------------------------------------------------------------- image directory


class ImageDirSource(FrameSource):
    """Images of a directory in name order, at ``fps`` when ``realtime``; ``loop`` restarts."""

    def __init__(
        self,
        path: Path,
        fps: float,
        realtime: bool = True,
        loop: bool = False,
        max_pixels: int = SourceConfig.model_fields["max_pixels"].default,
    ) -> None:
        self.path = path
        self._max_pixels = max_pixels
        try:
            files = sorted(
                p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
            )
        except OSError as e:
            raise SourceError(f"cannot list image directory {path}: {e.strerror}") from None
        if not files:
            raise SourceError(
                f"image directory {path} holds no images ({', '.join(IMAGE_EXTENSIONS)})"
            )
        self.files = files
        self.fps = self._fps = fps
        self._realtime = realtime
        self._loop = loop
        self._i = 0
        self._n = 0
        self._decoded_this_pass = 0
        self._pacer = Pacer()

    def read(self) -> np.ndarray:
        while True:
            if self._i >= len(self.files):
                if not self._loop:
                    raise EndOfStreamError(f"end of image directory {self.path}")
                if self._decoded_this_pass == 0:
                    raise SourceError(f"no image in {self.path} can be decoded")
                self._i = 0
                self._decoded_this_pass = 0
            f = self.files[self._i]
            self._i += 1
            try:
                size = image_size(f)
                if size is not None:
                    check_frame_size(*size, self._max_pixels)
            except SourceTooLargeError as e:
                raise SourceTooLargeError(f"image {f}: {e}") from None
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                log.warning("skipping %s: not a readable image", f)
                continue
            self._decoded_this_pass += 1
            if self._realtime:
                self._pacer.wait(self._n / self._fps)
            self._n += 1
            return as_bgr(img)

    def close(self) -> None:
        self._i = len(self.files)
        self._loop = False

    def describe(self) -> str:
        return f"image directory {self.path} ({len(self.files)} images, {self._fps:g} fps)"


# --------------------------------------------------------------------------- PyAV (files, network)


def _av_reason(e: Exception) -> str:
    if isinstance(e, av.error.FFmpegError):
        return str(e.strerror or type(e).__name__).rstrip(".")
    return str(e) or type(e).__name__


class _AvDecoder:
    """One open PyAV container and its first video stream, decoded to BGR frames."""

    def __init__(
        self, container: av.container.InputContainer, max_pixels: int, live: bool = False
    ) -> None:
        self.container = container
        self._max_pixels = max_pixels
        self._live = live
        if container.format.name in NOT_VIDEO_FORMATS:
            container.close()
            raise SourceError(f"not a video (FFmpeg reads it as '{container.format.name}')")
        if not container.streams.video:
            container.close()
            raise SourceError("no video stream")
        self.stream = container.streams.video[0]
        try:  # the size the stream declares, known before any frame is decoded
            cc = self.stream.codec_context
            check_frame_size(cc.width, cc.height, max_pixels, live)
        except SourceTooLargeError:
            container.close()
            raise
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps: float | None = float(rate) if rate else None
        self._frames: Iterator[av.VideoFrame] = container.decode(self.stream)

    def next(self) -> tuple[np.ndarray, float | None]:
        """The next frame and its media time in seconds; ``StopIteration`` at the end."""
        frame = next(self._frames)
        # a stream may change size on the way (a new H.264 SPS): checked before converting
        check_frame_size(frame.width, frame.height, self._max_pixels, self._live)
        return frame.to_ndarray(format="bgr24"), frame.time

    def close(self) -> None:
        self.container.close()


class VideoFileSource(FrameSource):
    """A video file decoded with PyAV, paced at its own timestamps when ``realtime``."""

    def __init__(
        self,
        path: Path,
        realtime: bool = True,
        loop: bool = False,
        max_pixels: int = SourceConfig.model_fields["max_pixels"].default,
    ) -> None:
        self.path = path
        self._max_pixels = max_pixels
        self._realtime = realtime
        self._loop = loop
        self._pacer = Pacer()
        self._offset = 0.0  # media time of the start of the current pass
        self._last_t = 0.0
        self._frames_this_pass = 0
        self._dec = self._open()
        self.fps = self._dec.fps

    def _open(self) -> _AvDecoder:
        try:
            return _AvDecoder(av.open(str(self.path), metadata_errors="ignore"), self._max_pixels)
        except SourceTooLargeError as e:
            raise SourceTooLargeError(f"video file {self.path}: {e}") from None
        except SourceError as e:
            raise SourceError(f"cannot read video file {self.path}: {e}") from None
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
            raise SourceError(
                f"cannot read video file {self.path}: {_av_reason(e)} (not a video or corrupt)"
            ) from None

    def read(self) -> np.ndarray:
        while True:
            try:
                img, t = self._dec.next()
            except StopIteration:
                self._restart()
                continue
            except SourceTooLargeError as e:
                raise SourceTooLargeError(f"video file {self.path}: {e}") from None
            except av.error.FFmpegError as e:
                raise SourceError(
                    f"cannot decode video file {self.path}: {_av_reason(e)}"
                ) from None
            self._frames_this_pass += 1
            if t is None:
                t = self._last_t + 1.0 / (self.fps or 25.0)
            self._last_t = t
            if self._realtime:
                self._pacer.wait(self._offset + t)
            return as_bgr(img)

    def _restart(self) -> None:
        if not self._loop:
            raise EndOfStreamError(f"end of video file {self.path}")
        if self._frames_this_pass == 0:
            raise SourceError(f"video file {self.path} has no decodable frames")
        self._dec.close()
        self._offset += self._last_t + 1.0 / (self.fps or 25.0)
        self._last_t = 0.0
        self._frames_this_pass = 0
        self._dec = self._open()

    def close(self) -> None:
        self._dec.close()

    def describe(self) -> str:
        fps = f"{self.fps:g} fps" if self.fps else "unknown fps"
        return f"video file {self.path} ({fps})"


class NetworkSource(FrameSource):
    """An RTSP or HTTP stream through PyAV/FFmpeg, RTSP over TCP, with socket timeouts.

    A read that gets no frame for ``read_timeout_s`` raises ``SourceConnectionError`` (stall),
    as does the server closing the stream.
    """

    live = True

    def __init__(
        self,
        url: str,
        open_timeout_s: float,
        read_timeout_s: float,
        max_pixels: int = SourceConfig.model_fields["max_pixels"].default,
    ) -> None:
        self.url = url
        self.read_timeout_s = read_timeout_s
        scheme = urlsplit(url).scheme.lower()
        options = {"timeout": str(int(read_timeout_s * 1e6))}  # socket I/O timeout, microseconds
        if scheme in ("rtsp", "rtsps"):
            options.update({"rtsp_transport": "tcp", "fflags": "nobuffer", "flags": "low_delay"})
        else:
            options.update({"reconnect": "0"})
        # Probe half a second of stream, not FFmpeg's default five, so opening is quick.
        options.update({"analyzeduration": "500000", "probesize": "1000000"})
        try:
            container = av.open(
                url,
                options=options,
                timeout=(open_timeout_s, read_timeout_s),
                metadata_errors="ignore",
            )
        except av.error.ExitError:
            raise SourceConnectionError(
                f"cannot open {redact_url(url)}: no answer within {open_timeout_s:g}s"
            ) from None
        except (av.error.FFmpegError, OSError) as e:
            raise SourceConnectionError(f"cannot open {redact_url(url)}: {_av_reason(e)}") from None
        try:
            self._dec = _AvDecoder(container, max_pixels, live=True)
        except SourceTooLargeError as e:
            raise SourceTooLargeError(f"{redact_url(url)}: {e}", live=True) from None
        except SourceError as e:
            raise SourceError(f"cannot read {redact_url(url)}: {e}") from None
        self.fps = self._dec.fps

    def read(self) -> np.ndarray:
        deadline = time.monotonic() + self.read_timeout_s
        while True:
            try:
                img, _ = self._dec.next()
                return as_bgr(img)
            except SourceTooLargeError as e:
                raise SourceTooLargeError(f"{redact_url(self.url)}: {e}", live=True) from None
            except StopIteration:
                raise SourceConnectionError(f"stream {redact_url(self.url)} ended") from None
            except av.error.ExitError:  # PyAV's read timeout interrupted FFmpeg
                raise SourceConnectionError(
                    f"no data from {redact_url(self.url)} for {self.read_timeout_s:g}s"
                ) from None
            except av.error.EOFError:
                raise SourceConnectionError(
                    f"stream {redact_url(self.url)} closed by the server"
                ) from None
            except av.error.InvalidDataError:
                # A damaged packet: keep decoding, but not past the read timeout.
                if time.monotonic() > deadline:
                    raise SourceConnectionError(
                        f"no decodable frame from {redact_url(self.url)} for {self.read_timeout_s:g}s"
                    ) from None
            except (av.error.FFmpegError, OSError) as e:
                raise SourceConnectionError(
                    f"reading {redact_url(self.url)} failed: {_av_reason(e)}"
                ) from None

    def close(self) -> None:
        self._dec.close()

    def describe(self) -> str:
        return f"network stream {redact_url(self.url)}"


# --------------------------------------------------------------------------- webcam


def webcam_path(device: str) -> str:
    """The device node of a webcam index ``N`` or ``/dev/videoN``; ``SourceError`` when the
    index is negative or the node does not exist."""
    if device.startswith("-"):
        raise SourceError(f"bad webcam index {device}: must be 0 or more")
    path = device if device.startswith("/dev/") else f"/dev/video{int(device)}"
    if not os.path.exists(path):
        raise SourceError(f"no webcam {device}: {path} does not exist")
    return path


class WebcamSource(FrameSource):
    """A V4L2 camera through OpenCV: an index ``N`` or a ``/dev/videoN`` path."""

    live = True

    def __init__(
        self,
        device: str,
        width: int,
        height: int,
        max_pixels: int = SourceConfig.model_fields["max_pixels"].default,
    ) -> None:
        path = webcam_path(device)
        self.device = path
        self._cap = cv2.VideoCapture(path, cv2.CAP_V4L2)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceConnectionError(
                f"cannot open webcam {path} (busy, no permission or not a capture device)"
            )
        self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        try:
            check_frame_size(
                int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                max_pixels,
                live=True,
            )
        except SourceTooLargeError as e:
            self._cap.release()
            raise SourceTooLargeError(f"webcam {path}: {e}", live=True) from None
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 else None

    def read(self) -> np.ndarray:
        ok, img = self._cap.read()
        if not ok or img is None:
            raise SourceConnectionError(f"webcam {self.device} stopped delivering frames")
        return as_bgr(img)

    def close(self) -> None:
        self._cap.release()

    def describe(self) -> str:
        return f"webcam {self.device}"


# --------------------------------------------------------------------------- factory


def _check_url(uri: str) -> str:
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as e:
        raise SourceError(f"malformed URL {redact_url(uri)}: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in NETWORK_SCHEMES:
        raise SourceError(
            f"unsupported URL scheme '{scheme}' in {redact_url(uri)} (use {', '.join(NETWORK_SCHEMES)})"
        )
    if any(c.isspace() for c in uri):
        raise SourceError(f"malformed URL {redact_url(uri)}: contains whitespace")
    if not parts.hostname:
        raise SourceError(f"malformed URL {redact_url(uri)}: no host")
    if port == 0:
        raise SourceError(f"malformed URL {redact_url(uri)}: port 0")
    return scheme


def open_source(uri: str, cfg: SourceConfig) -> FrameSource:
    """Open ``uri`` (webcam index or /dev/videoN, URL, video file, image directory or ``demo``)."""
    uri = uri.strip()
    if not uri:
        raise SourceError("empty source")
    if uri == "demo":
        scene = DemoScene(
            cfg.width, cfg.height, cfg.demo_objects, cfg.seed, cfg.fps or DEMO_DEFAULT_FPS
        )
        return DemoSource(scene, cfg.realtime)
    if _WEBCAM_RE.match(uri):
        return WebcamSource(uri, cfg.width, cfg.height, cfg.max_pixels)
    if "://" in uri:
        if uri.lower().startswith("file://"):
            return _open_path(Path(urlsplit(uri).path), cfg)
        _check_url(uri)
        return NetworkSource(uri, cfg.open_timeout_s, cfg.read_timeout_s, cfg.max_pixels)
    return _open_path(Path(uri).expanduser(), cfg)


def check_source(uri: str, cfg: SourceConfig) -> None:
    """Refuse, with ``open_source``'s one-line ``SourceError``, a source that cannot work,
    before anything starts: an empty one, a webcam index or device path of the wrong form or
    whose device node is missing, a malformed or unsupported URL (syntax only: network streams
    are not contacted), a missing path, an image directory without images, a file FFmpeg cannot
    read as a video (its header is probed; no frame is decoded)."""
    uri = uri.strip()
    if not uri:
        raise SourceError("empty source")
    if uri == "demo":
        return
    if _WEBCAM_RE.match(uri):
        webcam_path(uri)
        return
    if "://" in uri and not uri.lower().startswith("file://"):
        _check_url(uri)
        return
    probe = cfg.model_copy(update={"realtime": False, "loop": False})
    open_source(uri, probe).close()


def _open_path(path: Path, cfg: SourceConfig) -> FrameSource:
    if path.is_dir():
        return ImageDirSource(
            path, cfg.fps or IMAGE_DIR_DEFAULT_FPS, cfg.realtime, cfg.loop, cfg.max_pixels
        )
    if path.is_file():
        return VideoFileSource(path, cfg.realtime, cfg.loop, cfg.max_pixels)
    if path.exists():
        raise SourceError(f"{path} is neither a file nor a directory")
    raise SourceError(f"no such file or directory: {path}")
