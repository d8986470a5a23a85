"""The engine process's parts without models: the control dispatcher's table of typed
commands, the control server over a real loopback socket, and the stats model's wire form."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any, cast, get_args

import pytest
import zmq

from engine.camera import CameraTracker
from engine.camera_stats import CameraStats, EngineCounters
from engine.service import (
    ROUTES,
    CameraFeed,
    CameraProcessStats,
    ControlServer,
    EngineProcess,
    EngineStats,
)
from engine.service.commands import Reply
from engine.service.control import MAX_PENDING_COMMANDS
from engine.service.stats import SUMMED, ControlCounters, MemoryStats
from stream.config import BusConfig
from stream.errors import PromptError
from stream.receiver import LatestFrameReceiver
from stream.wire import ControlCommand
from tests.conftest import tcp_endpoint, wait_for


def test_every_control_command_has_one_route() -> None:
    assert set(ROUTES) == set(get_args(ControlCommand))
    at_once = {kind.__name__ for kind, route in ROUTES.items() if not route.on_loop}
    assert at_once == {"Stats", "Cameras"}  # answered on the control thread, never queued


class _Service:
    """The part of ``EngineProcess`` these requests reach: records the prompts, knows no
    camera but cam0."""

    def __init__(self) -> None:
        self.prompts: list[tuple[str | None, str]] = []

    def stats(self) -> Reply:
        return {"frames_out": 3}

    def camera_list(self) -> list[Reply]:
        return [{"camera": "cam0"}]

    def tracker(self, camera: str | None) -> CameraTracker:
        raise PromptError(f"unknown camera {camera!r} (cameras: cam0)")

    def set_prompt(self, camera: str | None, text: str) -> list[str]:
        self.prompts.append((camera, text))
        return [text.rstrip(".")]

    def lease_ids(self, name: str, first_id: int, id_limit: int) -> None:
        pass

    def remove_camera(self, name: str) -> None:
        pass


@pytest.fixture(scope="module")
def control() -> Iterator[tuple[ControlServer, _Service, zmq.Socket[bytes]]]:
    ctx: zmq.Context[Any] = zmq.Context()
    stop = threading.Event()
    service = _Service()
    endpoint = tcp_endpoint()
    server = ControlServer(ctx, BusConfig(control=endpoint), cast(EngineProcess, service), stop)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    client = ctx.socket(zmq.DEALER)  # no delimiter part: the peer's identity is the envelope
    client.linger = 0
    client.connect(endpoint)
    yield server, service, client
    stop.set()
    thread.join(5)
    server.close()
    client.close(0)
    ctx.destroy(linger=0)


def _ask(client: zmq.Socket[bytes], *parts: bytes) -> dict[str, Any]:
    client.send_multipart(list(parts))
    assert client.poll(5000), "no reply"
    reply: dict[str, Any] = json.loads(client.recv())
    return reply


def test_control_server_answers_bad_requests_with_one_line_errors(
    control: tuple[ControlServer, _Service, zmq.Socket[bytes]],
) -> None:
    server, _, client = control
    before = dict(server.rejected)
    assert _ask(client, b'{"cmd":"fly"}') == {
        "ok": False,
        "error": "unknown_cmd: unknown command 'fly'",
    }
    assert _ask(client, b"a", b"b") == {
        "ok": False,
        "error": "request must be one JSON part, got 2 parts",
    }
    bad = _ask(client, b'{"cmd":"add_object","box":[1,2]}')
    assert bad["ok"] is False and "box" in bad["error"] and "\n" not in bad["error"]
    got = {k: v - before.get(k, 0) for k, v in server.rejected.items()}
    assert got == {"unknown_cmd": 1, "bad_parts": 1, "bad_field": 1}


def test_control_server_runs_commands_on_the_loop_and_answers_stats_at_once(
    control: tuple[ControlServer, _Service, zmq.Socket[bytes]],
) -> None:
    server, service, client = control
    client.send(b'{"cmd":"set_prompt","prompt":"cup."}')
    wait_for(lambda: server.pending == 1, timeout=5, what="the command pending")
    # stats and cameras do not wait for the loop
    assert _ask(client, b'{"cmd":"stats"}') == {"ok": True, "stats": {"frames_out": 3}}
    assert _ask(client, b'{"cmd":"cameras"}') == {"ok": True, "cameras": [{"camera": "cam0"}]}
    refreshed: list[int] = []
    wait_for(lambda: server.run_queued(lambda: refreshed.append(1)), timeout=5, what="run")
    assert client.poll(5000)
    assert json.loads(client.recv()) == {"ok": True, "labels": ["cup"]}
    assert service.prompts == [(None, "cup.")] and refreshed == [1]
    # a handler's PromptcamError is the reply's error, counted as refused
    client.send(b'{"cmd":"remove_object","id":4,"camera":"cam9"}')
    wait_for(lambda: server.run_queued(lambda: None), timeout=5, what="the command run")
    assert client.poll(5000)
    error = "unknown camera 'cam9' (cameras: cam0)"
    assert json.loads(client.recv()) == {"ok": False, "error": error}
    assert server.run_queued(lambda: None) is False


def test_control_server_is_busy_beyond_its_pending_bound(
    control: tuple[ControlServer, _Service, zmq.Socket[bytes]],
) -> None:
    server, _, client = control
    for _ in range(MAX_PENDING_COMMANDS):
        client.send(b'{"cmd":"reset"}')
    wait_for(lambda: server.pending == MAX_PENDING_COMMANDS, timeout=10, what="all pending")
    busy = {"ok": False, "error": "engine busy: too many pending commands"}
    assert _ask(client, b'{"cmd":"reset"}') == busy
    assert _ask(client, b'{"cmd":"stats"}')["ok"] is True  # still reachable
    server.run_queued(lambda: None)
    replies: list[dict[str, Any]] = []

    def all_replies() -> bool:
        while client.poll(100):
            replies.append(json.loads(client.recv()))
        return len(replies) >= MAX_PENDING_COMMANDS

    wait_for(all_replies, timeout=10, what="a reply to every pending command")
    assert len(replies) == MAX_PENDING_COMMANDS
    assert all(r["ok"] is False and "unknown camera" in r["error"] for r in replies)


# ---------------------------------------------------------------------------- stats wire form


def _camera(name: str, k: int) -> CameraProcessStats:
    ctx: zmq.Context[Any] = zmq.Context.instance()
    rx = LatestFrameReceiver(f"tcp://127.0.0.1:{6000 + k}", name, ctx=ctx)  # never started
    rx.stats.received, rx.stats.delivered, rx.stats.skipped, rx.stats.stale = 9 * k, 8 * k, k, k
    rx.stats.rejected = {"bad_header": k}
    feed = CameraFeed(name, rx.endpoint, rx, published=2 * k, undecodable=1)
    counters = EngineCounters(frames=100, groundings=k, last_timings_ms={"encode_ms": 1.5})
    tracking = CameraStats(name, "cup.", k, False, counters, suppressed=1, ids_left=None)
    return CameraProcessStats.of(feed, tracking, None)


def _engine(*cams: CameraProcessStats) -> dict[str, Any]:
    counters = ControlCounters(
        control_rejected_by_reason={},
        control_pending=0,
        control_pending_max=2,
        control_replies_dropped=0,
        detections_dropped=0,
        detections_connection_drops=0,
        busy_with=None,
    )
    stats = EngineStats(
        uptime_s=1.5,
        cameras={c.camera: c for c in cams},
        control_rejected=0,
        detections_rejected=0,
        ground_batches=4,
        control=counters,
        latency_ms={"encode_ms": 1.5},
        memory=MemoryStats(rss_mb=100.0),
    )
    return stats.model_dump(mode="json")


def test_camera_wire_form_carries_every_tracking_figure() -> None:
    wire = _camera("cam0", 3).model_dump(mode="json")
    tracking = CameraStats("cam0", "", 0, False, EngineCounters()).as_dict()
    assert set(tracking) - set(wire) == set()  # a new tracking figure needs a stats field
    assert wire["frames"] == "tcp://127.0.0.1:6003"  # the endpoint, not the frame counter
    assert wire["state"] == "waiting" and wire["ids_left"] is None
    assert wire["frames_rejected"] == 4 and wire["frames_dropped"] == 6
    assert wire["frames_rejected_by_reason"] == {"bad_header": 3, "undecodable": 1}


def test_engine_wire_form_flat_fields_for_one_and_several_cameras() -> None:
    one = _engine(_camera("cam0", 1))
    assert one["camera"] == "cam0" and one["prompt"] == "cup." and one["frames_out"] == 2
    assert "frames" not in one and "state" not in one
    assert one["memory"] == {"rss_mb": 100.0} and one["busy_with"] is None
    assert one["cameras"]["cam0"]["camera"] == "cam0"
    two = _engine(_camera("a", 1), _camera("b", 2))
    assert set(SUMMED) <= set(two) and "camera" not in two and "prompt" not in two
    assert two["frames_out"] == 6 and two["frames_skipped"] == 3 and two["objects"] == 3
    assert two["frames_rejected_by_reason"] == {"bad_header": 3, "undecodable": 2}
    assert list(two)[-1] == "cameras" and list(two["cameras"]) == ["a", "b"]
    none = _engine()
    assert none["frames_out"] == 0 and none["cameras"] == {}
