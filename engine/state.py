"""The engine's runtime state, kept in a file so that a restarted engine carries on.

What a user changed at run time — each camera's text prompt (``set_prompt``, from ``promptcam
prompt`` or the web page) and manual objects (``add_object``) with their latest boxes — is
written to ``engine.state_file`` (``promptcam run`` puts it in its private run directory): at
once after a control command, and at most once a second while manual objects move. An engine
that starts with such a file tracks each configured camera's kept prompt instead of the
configured one and re-seeds each manual object from its last box on the camera's first frame,
and logs that it did. Objects found by the detector are not kept: re-grounding finds them
again. The file is JSON ``{"v":1,"cameras":{NAME:{"prompt":str,"objects":[{"id","label","box"}]}}}``,
written atomically, mode 0600; a malformed one is logged and ignored.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.track_manager import TrackInfo
from stream.wire import Finite, Label, Prompt

log = logging.getLogger(__name__)

STATE_VERSION = 1
MAX_STATE_BYTES = 1 << 20


class _ObjectModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    id: Annotated[int, Field(ge=0)]
    label: Label
    box: Annotated[list[Finite], Field(min_length=4, max_length=4)]


class _CameraModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    prompt: Prompt
    objects: Annotated[list[_ObjectModel], Field(max_length=256)]


class _StateModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    v: int
    cameras: Annotated[
        dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")], _CameraModel],
        Field(max_length=1024),
    ]


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
    """Reads and writes every camera's ``EngineState`` at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, EngineState]:
        """The states kept there by camera; empty when there is no file or it is malformed
        (logged)."""
        try:
            raw = self.path.read_bytes()[: MAX_STATE_BYTES + 1]
        except FileNotFoundError:
            return {}
        except OSError as e:
            log.warning("cannot read engine state %s: %s", self.path, e.strerror)
            return {}
        try:
            if len(raw) > MAX_STATE_BYTES:
                raise ValueError(f"over {MAX_STATE_BYTES} bytes")
            m = _StateModel.model_validate_json(raw)
            if m.v != STATE_VERSION:
                raise ValueError(f"version {m.v}, expected {STATE_VERSION}")
        except (ValueError, ValidationError) as e:
            log.warning("ignoring malformed engine state %s: %s", self.path, str(e)[:200])
            return {}
        return {
            name: EngineState(
                c.prompt,
                tuple(
                    ManualObject(o.id, o.label, (o.box[0], o.box[1], o.box[2], o.box[3]))
                    for o in c.objects
                ),
            )
            for name, c in m.cameras.items()
        }

    def save(self, states: Mapping[str, EngineState]) -> None:
        """Replace the file atomically (mode 0600); a write error is logged, not raised."""
        doc = {
            "v": STATE_VERSION,
            "cameras": {
                name: {
                    "prompt": st.prompt,
                    "objects": [
                        {"id": o.id, "label": o.label, "box": list(o.box)} for o in st.objects
                    ],
                }
                for name, st in states.items()
            },
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f)
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning("cannot write engine state %s: %s", self.path, e.strerror)
