"""The engine's runtime state, kept in a file so that a restarted engine carries on.

What a user changed at run time — each camera's text prompt (``set_prompt``, from ``promptcam
prompt`` or the web page) and manual objects (``add_object``) with their latest boxes — is
written to ``engine.state_file`` (``promptcam run`` puts it in its private run directory): at
once after a control command, and at most once a second while manual objects move. So are the
object ID reservations (``engine.ids``): each camera's "IDs reserved up to N", written before
any ID below N is handed out, so a restarted engine never gives an ID again. An engine that
starts with such a file tracks each configured camera's kept prompt instead of the configured
one, re-seeds each manual object from its last box on the camera's first frame (until then the
objects stay in the file), starts each camera's IDs at its reservation, and logs that it did.
Objects found by the detector are not kept: re-grounding finds them again.

The file is JSON ``{"v":1,"cameras":{NAME:{"prompt":str,"objects":[{"id","label","box"}]}},
"ids":{NAME:int}}`` (``ids`` may be missing: older files), written atomically (a temporary file
that is removed on any failure, e.g. a full disk), mode 0600, never larger than
``MAX_STATE_BYTES``: the reader's limit is the writer's (beyond it, the writer leaves manual
objects out, then prompts, and logs what). The reader reads at most that many bytes (plus one),
refuses at once a path that is not a regular file (a FIFO, a directory), ignores a malformed
file (logged), and a camera entry that fails validation fails alone (logged). One engine at a
time uses a state file: :meth:`StateFile.lock` takes ``<file>.lock`` for the engine's life.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import heapq
import json
import logging
import os
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.track_manager import TrackInfo
from stream.errors import PromptcamError
from stream.wire import MAX_OBJECT_ID, Finite, Label, Prompt, is_camera_name

log = logging.getLogger(__name__)

STATE_VERSION = 1
MAX_STATE_BYTES = 1 << 20  # the reader refuses more; the writer never writes more
MAX_STATE_CAMERAS = 1024
MAX_STATE_OBJECTS = 256  # per camera
MAX_ID_CAMERAS = 4096  # cameras whose ID reservation is kept (served ones first)
LOCK_WAIT_S = 1.0  # a second engine waits this long for the lock, then gives up


class StateInUseError(PromptcamError):
    """Another engine holds the state file's lock."""


class _ObjectModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    id: Annotated[int, Field(ge=0)]
    label: Label
    box: Annotated[list[Finite], Field(min_length=4, max_length=4)]


class _CameraModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    prompt: Prompt
    objects: Annotated[list[_ObjectModel], Field(max_length=MAX_STATE_OBJECTS)]


class _StateModel(BaseModel):
    """The file's outline; each camera entry and reservation is checked on its own."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    v: int
    cameras: Annotated[dict[str, object], Field(max_length=MAX_STATE_CAMERAS)]
    ids: Annotated[dict[str, object], Field(max_length=MAX_ID_CAMERAS)] = {}


@dataclass(frozen=True)
class ManualObject:
    """A manual object as last seen: its id in the engine run that wrote it, label and box."""

    id: int
    label: str
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class EngineState:
    prompt: str
    objects: tuple[ManualObject, ...] = ()

    def describe(self) -> str:
        what = f"prompt {self.prompt!r}" if self.prompt else "no text prompt"
        return f"{what} and {len(self.objects)} manual object(s)"


@dataclass(frozen=True)
class KeptState:
    """What a state file holds: every camera's state, and each camera's ID reservation."""

    cameras: dict[str, EngineState] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)


def snapshot(prompt: str, tracks: Sequence[TrackInfo], previous: EngineState | None) -> EngineState:
    """The state to keep now: ``prompt`` and the live manual tracks, each with its current box
    (a lost one keeps the box it had when last written)."""
    before: Mapping[int, ManualObject] = {o.id: o for o in previous.objects} if previous else {}
    objects = []
    for t in tracks:
        if not t.manual:
            continue
        if t.box is not None:
            box = (float(t.box[0]), float(t.box[1]), float(t.box[2]), float(t.box[3]))
        elif t.id in before:
            box = before[t.id].box
        else:
            continue
        objects.append(ManualObject(t.id, t.label, box))
    return EngineState(prompt, tuple(objects))


class StateFile:
    """Reads and writes every camera's ``EngineState`` and ID reservation at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_fd: int | None = None
        self._left_out = ""  # what the last write left out (logged when it changes)
        self._synced_ids: dict[str, int] = {}  # the reservations last written with fsync

    # ------------------------------------------------------------------ lock

    def lock(self, wait_s: float = LOCK_WAIT_S) -> None:
        """Take ``<file>.lock`` (held until :meth:`unlock` or the process ends); another engine
        holding it past ``wait_s`` is a :class:`StateInUseError`. A lock file that cannot be
        made is logged, and the engine goes on without it."""
        if self._lock_fd is not None:
            return
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            log.warning("cannot lock engine state %s: %s", self.path, e.strerror)
            return
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    log.warning("cannot lock engine state %s: %s", self.path, e.strerror)
                    return
                if time.monotonic() >= deadline:
                    holder = _read_small(fd).decode(errors="replace").strip()[:20] or "?"
                    os.close(fd)
                    raise StateInUseError(
                        f"engine state file {self.path} is in use by another engine (pid {holder})"
                    ) from None
                time.sleep(0.05)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------------ read

    def load(self) -> KeptState:
        """What is kept there; empty when there is no file, it is not a regular file or it is
        malformed (logged). A camera entry or reservation that is malformed is left out alone
        (logged)."""
        raw = self._read()
        if raw is None:
            return KeptState()
        try:
            if len(raw) > MAX_STATE_BYTES:
                raise ValueError(f"over {MAX_STATE_BYTES} bytes")
            m = _StateModel.model_validate_json(raw)
            if m.v != STATE_VERSION:
                raise ValueError(f"version {m.v}, expected {STATE_VERSION}")
        except (ValueError, ValidationError) as e:
            log.warning("ignoring malformed engine state %s: %s", self.path, str(e)[:200])
            return KeptState()
        cameras: dict[str, EngineState] = {}
        for name, entry in m.cameras.items():
            try:
                if not is_camera_name(name):
                    raise ValueError("not a camera name")
                c = _CameraModel.model_validate(entry)
            except (ValueError, ValidationError) as e:
                log.warning(
                    "engine state %s: camera %r left out: %s", self.path, name[:80], str(e)[:200]
                )
                continue
            cameras[name] = EngineState(
                c.prompt,
                tuple(
                    ManualObject(o.id, o.label, (o.box[0], o.box[1], o.box[2], o.box[3]))
                    for o in c.objects
                ),
            )
        ids: dict[str, int] = {}
        for name, upto in m.ids.items():
            if is_camera_name(name) and type(upto) is int and 1 <= upto <= MAX_OBJECT_ID + 1:
                ids[name] = upto
            else:
                log.warning("engine state %s: ID reservation of %r left out", self.path, name[:80])
        return KeptState(cameras, ids)

    def _read(self) -> bytes | None:
        """At most ``MAX_STATE_BYTES + 1`` bytes of the file; None when there is none or it is
        not a regular file (refused without blocking: a FIFO, a device)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as e:
            log.warning("cannot read engine state %s: %s", self.path, e.strerror)
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                log.warning("ignoring engine state %s: not a regular file", self.path)
                return None
            return _read_small(fd, MAX_STATE_BYTES + 1)
        except OSError as e:
            log.warning("cannot read engine state %s: %s", self.path, e.strerror)
            return None
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ write

    def save(self, states: Mapping[str, EngineState], ids: Mapping[str, int] | None = None) -> bool:
        """Replace the file atomically (mode 0600) with what fits in ``MAX_STATE_BYTES``;
        whether it was written (a write error is logged, not raised; the temporary file is
        removed). A write that changes the ID reservations is synced to the disk first (a
        power cut cannot lose one); the others (moving boxes) are not, to keep the frame loop
        fast."""
        ids = dict(ids or {})
        sync = ids != self._synced_ids
        raw = self._encode(states, ids)
        if raw is None:
            return False
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = -1
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            if sync:
                os.fsync(fd)
            os.close(fd)
            fd = -1
            os.replace(tmp, self.path)
            if sync:
                self._synced_ids = ids
            return True
        except OSError as e:
            log.warning("cannot write engine state %s: %s", self.path, e.strerror)
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return False

    def _encode(self, states: Mapping[str, EngineState], ids: Mapping[str, int]) -> bytes | None:
        """The file's bytes within ``MAX_STATE_BYTES``: manual objects are left out (the newest
        of the camera with the most first), then prompts (the longest first); logged."""
        served = list(states)[:MAX_STATE_CAMERAS]
        kept_ids = sorted(ids.items(), key=lambda kv: (kv[0] not in states, -kv[1]))
        objects = {name: list(states[name].objects)[:MAX_STATE_OBJECTS] for name in served}
        prompts = {name: states[name].prompt for name in served}
        dropped_objects: dict[str, int] = {}
        dropped_prompts: list[str] = []

        def encode() -> bytes:
            doc = {
                "v": STATE_VERSION,
                "cameras": {
                    name: {
                        "prompt": prompts[name],
                        "objects": [
                            {"id": o.id, "label": o.label, "box": list(o.box)}
                            for o in objects[name]
                        ],
                    }
                    for name in served
                },
                "ids": dict(kept_ids[:MAX_ID_CAMERAS]),
            }
            return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()

        try:
            raw = encode()
            excess = len(raw) - MAX_STATE_BYTES
            if excess > 0:  # the newest objects of the cameras with the most go first
                heap = [(-len(objs), name) for name, objs in objects.items() if objs]
                heapq.heapify(heap)
                while excess > 0 and heap:
                    _, name = heapq.heappop(heap)
                    o = objects[name].pop()
                    excess -= len(_dumps(o)) + 1
                    dropped_objects[name] = dropped_objects.get(name, 0) + 1
                    if objects[name]:
                        heapq.heappush(heap, (-len(objects[name]), name))
                raw = encode()
            for name in sorted(served, key=lambda n: -len(prompts[n].encode())):
                if len(raw) <= MAX_STATE_BYTES:
                    break
                if prompts[name]:
                    prompts[name] = ""
                    dropped_prompts.append(name)
                    objects[name] = []
                    raw = encode()
        except (TypeError, ValueError) as e:
            log.warning("cannot encode engine state %s: %s", self.path, e)
            return None
        self._report_left_out(dropped_objects, dropped_prompts, len(served) < len(states))
        if len(raw) > MAX_STATE_BYTES:  # only ID reservations left: cannot happen in practice
            log.error("engine state %s not written: over %d bytes", self.path, MAX_STATE_BYTES)
            return None
        return raw

    def _report_left_out(
        self, objects: Mapping[str, int], prompts: Sequence[str], cameras: bool
    ) -> None:
        parts = [f"{n} manual object(s) of camera {c}" for c, n in sorted(objects.items())]
        parts += [f"the prompt of camera {c}" for c in prompts]
        if cameras:
            parts.append(f"cameras beyond {MAX_STATE_CAMERAS}")
        what = ", ".join(parts)
        if what != self._left_out:
            self._left_out = what
            if what:
                log.warning(
                    "engine state %s is bounded to %d bytes: left out %s",
                    self.path,
                    MAX_STATE_BYTES,
                    what[:1000],
                )


def _dumps(o: ManualObject) -> str:
    return json.dumps(
        {"id": o.id, "label": o.label, "box": list(o.box)},
        ensure_ascii=False,
        separators=(",", ":"),
    )


def _read_small(fd: int, limit: int = 64) -> bytes:
    """Up to ``limit`` bytes of ``fd`` from its start."""
    chunks: list[bytes] = []
    got = 0
    while got < limit:
        chunk = os.pread(fd, min(limit - got, 1 << 16), got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)
