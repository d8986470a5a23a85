"""The fleet's parts that need no Ray cluster: ID blocks (leaser, track manager, engine control),
placement by capacity, the controller's record, CURVE keys with ZAP, the relay's routing, the
fleet config section and fast one-line errors. The cluster itself: tests/test_fleet.py."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from supervision import Detections

from clients.fleet.cluster import FleetError, check_reachable
from clients.fleet.ids import IdBlock, IdLeaser, IdSpaceExhaustedError
from clients.fleet.keys import FleetKeys, KeyFiles
from clients.fleet.placement import Capacity, EngineLoad, Pending, Placed, choose_engine
from clients.fleet.relay import Relay
from clients.fleet.store import CameraRecord, FleetRecord
from engine.track_manager import TrackManager
from stream import bus as zbus
from stream.config import BusConfig, ConfigError, EngineConfig, load_config
from stream.errors import RequestError
from stream.wire import MAX_OBJECT_ID, LeaseIds, WireError, parse_control
from tests.conftest import free_port, tcp_endpoint, wait_for

ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------- ID blocks


def test_leaser_hands_out_disjoint_consecutive_blocks_from_its_high_water_mark() -> None:
    leaser = IdLeaser(100, next_free=501)
    a, b = leaser.lease(), leaser.lease()
    assert (a.first, a.limit, b.first, b.limit) == (501, 601, 601, 701)
    assert len(a) == 100 and 600 in a and 601 not in a and leaser.next_free == 701
    assert leaser.peek() == IdBlock(701, 801) and leaser.next_free == 701  # peek leases nothing
    restarted = IdLeaser(100, next_free=leaser.next_free)  # from the persisted mark
    assert restarted.lease().first == 701
    near_end = IdLeaser(100, next_free=MAX_OBJECT_ID - 10)
    assert near_end.lease().limit == MAX_OBJECT_ID + 1  # the last block is cut short
    with pytest.raises(IdSpaceExhaustedError):
        near_end.lease()
    with pytest.raises(ValueError):
        IdBlock(5, 5)


def _detections(boxes: list[list[float]]) -> Detections:
    return Detections(
        xyxy=np.array(boxes, dtype=float),
        confidence=np.ones(len(boxes)),
        data={"label": np.array(["ball"] * len(boxes))},
    )


def test_track_manager_stays_in_its_blocks_and_counts_what_it_could_not_create() -> None:
    cfg = EngineConfig(prompt="ball.", max_objects=32)
    m = TrackManager(cfg, first_id=10, id_limit=12)
    assert m.ids_left == 2
    assert [m.add_manual("a", (0, 0, 10, 10)), m.add_manual("b", (20, 20, 30, 30))] == [10, 11]
    with pytest.raises(RequestError, match="used up"):
        m.add_manual("c", (40, 40, 50, 50))
    plan = m.on_detections(0, _detections([[60, 60, 70, 70], [80, 80, 90, 90]]), {})
    assert list(plan.new) == [] and m.ids_exhausted == 3 and m.ids_left == 0
    m.add_id_block(100, 103)
    assert m.ids_left == 3
    plan = m.on_detections(1, _detections([[60, 60, 70, 70], [80, 80, 90, 90]]), {})
    assert sorted(t.id for t in plan.new) == [100, 101]
    m.add_id_block(200, 210)  # queued behind the rest of the current block
    assert m.add_manual("d", (100, 100, 110, 110)) == 102
    assert m.add_manual("e", (120, 120, 130, 130)) == 200 and m.ids_left == 9
    for bad in ((150, 160), (300, 300)):  # below what was handed out / empty
        with pytest.raises(RequestError, match="ID block"):
            m.add_id_block(*bad)
    with pytest.raises(RequestError, match="not leased"):
        TrackManager(cfg).add_id_block(1, 10)
    with pytest.raises(ValueError, match="id_limit"):
        TrackManager(cfg, first_id=5, id_limit=5)


def test_control_add_camera_and_lease_ids_fields() -> None:
    req = parse_control(
        b'{"cmd":"add_camera","camera":"a","frames":"tcp://127.0.0.1:9","first_id":7,"id_limit":9}'
    )
    assert (req.first_id, req.id_limit) == (7, 9)  # type: ignore[union-attr]
    req = parse_control(b'{"cmd":"lease_ids","camera":"a","first_id":20,"id_limit":30}')
    assert isinstance(req, LeaseIds) and (req.first_id, req.id_limit) == (20, 30)
    bad = [
        b'{"cmd":"add_camera","camera":"a","frames":"tcp://h:1","first_id":9,"id_limit":9}',
        b'{"cmd":"add_camera","camera":"a","frames":"tcp://h:1","first_id":0}',
        b'{"cmd":"lease_ids","camera":"a","first_id":5}',
        b'{"cmd":"lease_ids","first_id":5,"id_limit":6}',
        f'{{"cmd":"lease_ids","camera":"a","first_id":1,"id_limit":{2**60}}}'.encode(),
    ]
    for raw in bad:
        with pytest.raises(WireError):
            parse_control(raw)


@pytest.fixture(scope="module")
def loaded() -> Any:
    from engine.models.sam2 import load_sam2
    from stream.config import ModelsConfig

    return load_sam2(ModelsConfig(preset="tiny-random", device="cpu"))


def test_engine_process_serves_leased_ids_over_control(
    loaded: Any, tmp_path: Path, ctx: zmq.Context[Any]
) -> None:
    from engine.pipeline import MultiCameraEngine
    from engine.segmenters.sam2 import Sam2Kernel
    from engine.service import EngineProcess
    from stream.demo import DemoScene
    from stream.wire import FrameMessage

    site = tmp_path / "site.yaml"
    site.write_text(
        f"bus: {{tracks: '{tcp_endpoint()}', annotated: '{tcp_endpoint()}', "
        f"control: '{tcp_endpoint()}', staleness_ms: 5000}}\n"
        "models: {preset: tiny-random, device: cpu}\nengine: {prompt: ''}\n"
    )
    cfg = load_config(site)
    multi = MultiCameraEngine(Sam2Kernel(loaded), None, background_grounding=True)
    proc = EngineProcess(cfg, multi, ctx=ctx, serve_configured=False)
    assert proc.cameras == []  # a fleet engine starts empty
    loop = threading.Thread(target=proc.run, daemon=True)
    loop.start()
    frames = tcp_endpoint()
    pub = zbus.bind(ctx, zmq.PUB, frames)
    scene = DemoScene(160, 120, 1, seed=3)
    sent = [0]

    def control(req: dict[str, Any]) -> dict[str, Any]:
        return zbus.request(cfg.bus.control, req, 10_000)

    def frames_out() -> int:
        img = scene.render(sent[0])[0]
        pub.send_multipart(FrameMessage.from_image("cam", sent[0], img).to_parts())
        sent[0] += 1
        return int(control({"cmd": "stats"})["stats"]["cameras"]["cam"]["frames_out"])

    try:
        add = {"cmd": "add_camera", "camera": "cam", "frames": frames}
        assert control({**add, "first_id": 1000, "id_limit": 1002})["ok"] is True
        wait_for(lambda: frames_out() > 0, 30, what="a processed frame")
        box = {"cmd": "add_object", "camera": "cam", "box": [10, 10, 60, 60]}
        assert [control(box)["id"], control(box)["id"]] == [1000, 1001]
        r = control(box)
        assert r["ok"] is False and "used up" in r["error"]

        def ids() -> tuple[int, int, int]:
            st = control({"cmd": "stats"})["stats"]["cameras"]["cam"]
            return st["next_id"], st["ids_left"], st["ids_exhausted"]

        wait_for(lambda: ids() == (1002, 0, 1), 10, what="the ID figures in stats")
        lease = {"cmd": "lease_ids", "camera": "cam"}
        assert control({**lease, "first_id": 5000, "id_limit": 5010})["ok"] is True
        r = control({**lease, "first_id": 10, "id_limit": 20})
        assert r["ok"] is False and "ID block" in r["error"]
        assert control(box)["id"] == 5000
        r = control({**add, "camera": "other", "first_id": 3, "id_limit": 2})
        assert r["ok"] is False and "id_limit" in r["error"]
        # v1.1 add_camera without a block still works: IDs from 1
        other = tcp_endpoint()
        assert control({"cmd": "add_camera", "camera": "plain", "frames": other})["ok"] is True
        assert control({"cmd": "cameras"})["cameras"][1]["camera"] == "plain"
    finally:
        proc.stop.set()
        loop.join(10)
        pub.close(0)
    assert not loop.is_alive()


# --------------------------------------------------------------------------- placement


CAP = Capacity(max_cameras=2, max_objects=10)


def _load(name: str, cameras: int = 0, objects: int = 0, **kw: bool) -> EngineLoad:
    return EngineLoad(name, kw.get("up", True), kw.get("accepting", True), cameras, objects)


def test_placement_takes_the_least_loaded_engine_that_has_room() -> None:
    loads = [_load("e0", 1, 4), _load("e1", 0, 0), _load("e2", 0, 0, up=False)]
    assert choose_engine(loads, 4, CAP) == Placed("e1")
    assert choose_engine([_load("e0", 1, 2), _load("e1", 1, 1)], 4, CAP) == Placed("e1")
    assert choose_engine(loads, 4, CAP, exclude=["e1"]) == Placed("e0")
    assert choose_engine([_load("e0", 1, 8), _load("e1", 1, 2)], 4, CAP) == Placed("e1")


def test_placement_says_why_a_camera_cannot_be_placed() -> None:
    def reason(loads: list[EngineLoad], reserve: int = 4) -> str:
        out = choose_engine(loads, reserve, CAP)
        assert isinstance(out, Pending)
        return out.reason

    assert reason([_load("e0", up=False)]) == "no engine is up"
    assert "draining" in reason([_load("e0", accepting=False)])
    full = reason([_load("e0", 2, 8), _load("e1", 1, 8), _load("e2", up=False)])
    assert full.startswith("over capacity") and "e0 serves 2/2 cameras" in full
    assert "8/10 objects" in full and "down: e2" in full
    assert "fleet.max_objects_per_engine" in reason([_load("e0")], reserve=11)


# --------------------------------------------------------------------------- record and keys


def test_fleet_record_round_trips_and_refuses_other_versions() -> None:
    rec = FleetRecord(config={"fleet": {"name": "x"}}, next_free=3001, keys={"a": "b"})
    rec.cameras["yard"] = CameraRecord(
        resource="site_b", engine="engine-1", blocks=[[1, 1001]], prompt="ball.", placements=2
    )
    back = FleetRecord.from_json(rec.to_json())
    assert back == rec
    with pytest.raises(ValueError):
        FleetRecord.from_json(json.dumps({"v": 99}).encode())


def test_fleet_keys_admit_only_fleet_members() -> None:
    keys = FleetKeys.generate()
    assert FleetKeys.from_dict(json.loads(json.dumps(keys.as_dict()))) == keys
    files, stranger = KeyFiles(keys), KeyFiles(FleetKeys.generate())
    server_ctx: zmq.Context[Any] = zmq.Context()
    client_ctx: zmq.Context[Any] = zmq.Context()
    auth = files.authenticator(server_ctx)
    ep = tcp_endpoint()
    pub = zbus.bind(server_ctx, zmq.PUB, ep, BusConfig(curve=files.curve_config()), curve=True)
    member_bus = BusConfig(curve=files.curve_config())
    # a stranger who knows the server's public key but holds another client key
    foreign = {**stranger.curve_config(), "server_public_key_file": str(files.server_public)}
    subs = {
        "member": zbus.connect(client_ctx, zmq.SUB, ep, member_bus, [b""], curve=True),
        "stranger": zbus.connect(
            client_ctx, zmq.SUB, ep, BusConfig(curve=foreign), [b""], curve=True
        ),
        "plain": zbus.connect(client_ctx, zmq.SUB, ep, BusConfig(), [b""]),
    }
    got = dict.fromkeys(subs, 0)

    def pump() -> bool:
        pub.send(b"frame")
        for name, s in subs.items():
            while s.poll(0):
                s.recv()
                got[name] += 1
        return got["member"] >= 20

    try:
        wait_for(pump, 20, interval=0.02, what="the member receiving")
        assert got["stranger"] == 0 and got["plain"] == 0
    finally:
        for s in subs.values():
            s.close(0)
        pub.close(0)
        auth.stop()
        server_ctx.destroy(0)
        client_ctx.destroy(0)
        files.close()
        stranger.close()
    assert not files.dir.exists()


# --------------------------------------------------------------------------- relay


def _tracks(camera: str, seq: int, oid: int) -> list[bytes]:
    header = {
        "v": 1,
        "camera": camera,
        "seq": seq,
        "t_capture_ns": time.time_ns(),
        "t_publish_ns": time.time_ns(),
        "width": 64,
        "height": 48,
        "prompt": "",
        "objects": [
            {
                "id": oid,
                "label": "thing",
                "score": 1.0,
                "box": [1.0, 2.0, 30.0, 40.0],
                "mask": {"size": [48, 64], "counts": "0"},
                "age": seq,
                "state": "tracked",
            }
        ],
    }
    return [f"tracks.{camera}".encode(), json.dumps(header).encode()]


@pytest.fixture
def relay(ctx: zmq.Context[Any]) -> Iterator[tuple[Relay, BusConfig]]:
    down = BusConfig(tracks=tcp_endpoint(), annotated=tcp_endpoint())
    r = Relay(ctx, BusConfig(), down).start()
    yield r, down
    r.close()


def test_relay_takes_each_camera_only_from_the_engine_that_serves_it(
    relay: tuple[Relay, BusConfig], ctx: zmq.Context[Any]
) -> None:
    r, down = relay
    engines = {n: (tcp_endpoint(), tcp_endpoint()) for n in ("e0", "e1")}
    pubs = {n: zbus.bind(ctx, zmq.PUB, t) for n, (t, _) in engines.items()}
    annotated = [zbus.bind(ctx, zmq.PUB, a) for _, a in engines.values()]
    sub = zbus.connect(ctx, zmq.SUB, down.tracks, subscribe=[b"tracks."])
    got: list[tuple[str, int]] = []
    r.set_routes({"yard": "e0"}, engines)

    def pump(oid_e0: int, oid_e1: int) -> int:
        pubs["e0"].send_multipart(_tracks("yard", 1, oid_e0))
        pubs["e1"].send_multipart(_tracks("yard", 1, oid_e1))  # e.g. a drain in progress
        while (parts := zbus.recv_multipart_timeout(sub, 20, copy=True)) is not None:
            h = json.loads(parts[1])
            got.append((h["camera"], h["objects"][0]["id"]))
        return len(got)

    try:
        wait_for(lambda: pump(1, 1001) >= 5, 20, what="relayed tracks")
        assert {oid for _, oid in got} == {1}  # never e1's messages of a camera e0 serves
        assert r.last_objects("yard") == [{"id": 1, "label": "thing", "box": [1, 2, 30, 40]}]
        r.set_routes({"yard": "e1"}, engines)  # the switch
        wait_for(lambda: pump(1, 1001) and got[-1][1] == 1001, 20, what="tracks from e1")
        n = len(got)
        wait_for(lambda: pump(1, 1001) >= n + 5, 20, what="more from e1")
        assert {oid for _, oid in got[n:]} == {1001}
        snap = r.snapshot()["yard"]
        age_s = snap["tracks_age_s"]
        assert snap["tracks"] >= 10 and snap["dropped"] >= 10 and age_s is not None and age_s < 5
    finally:
        for s in [*pubs.values(), *annotated, sub]:
            s.close(0)


# --------------------------------------------------------------------------- config and errors


def test_fleet_config_errors_are_one_line(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    bad = {
        "cameras: {a: {}}\nfleet: {capture_resources: {b: site_b}}\n": "names camera 'b'",
        "fleet: {engine_resources: ['bad name']}\n": "bad Ray resource name",
        "fleet: {engines: 0}\n": "fleet.engines",
        "fleet: {id_block: 1}\n": "fleet.id_block",
        "fleet: {curve: maybe}\n": "fleet.curve",
        "fleet: {nodes: 3}\n": "unknown config key 'fleet.nodes'",
    }
    for text, expected in bad.items():
        site.write_text(text)
        with pytest.raises(ConfigError) as e:
            load_config(site)
        assert expected in str(e.value) and "\n" not in str(e.value), text
    site.write_text("cameras: {a: {}, b: {}}\nfleet: {capture_resources: {b: site_b}}\n")
    one = load_config(site).for_camera("b")  # a camera's own view: no fleet placement
    assert one.camera == "b" and one.fleet.capture_resources == {}


def test_unreachable_cluster_is_a_fast_one_line_error() -> None:
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(FleetError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        check_reachable(f"127.0.0.1:{port}")
    assert time.monotonic() - t0 < 5
    with pytest.raises(FleetError, match="expected HOST:PORT"):
        check_reachable("nowhere")
    for argv in (
        ["fleet", "status", "--address", f"127.0.0.1:{port}"],
        ["fleet", "--address", f"127.0.0.1:{port}", "--duration", "5"],
        ["fleet", "drain"],
    ):
        p = subprocess.run(
            [sys.executable, "-m", "clients.cli", *argv],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 2 and p.stderr.count("\n") == 1, (argv, p.stderr)
        assert p.stderr.startswith("promptcam fleet: error: ") and "Traceback" not in p.stderr


def test_address_that_is_no_ray_cluster_gives_up_in_time_with_one_line() -> None:
    """Something listens on the address but it is no Ray cluster: Ray's retries went on for
    over 40 s printing warnings; fleet.connect_timeout_s bounds it, in one line, exit 2."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        for argv in (
            ["fleet", "status", "--address", address],
            ["fleet", "remove-camera", "x", "--address", address],
        ):
            t0 = time.monotonic()
            p = subprocess.run(
                [sys.executable, "-m", "clients.cli", *argv, "--set", "fleet.connect_timeout_s=2"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            took = time.monotonic() - t0
            assert p.returncode == 2 and p.stderr.count("\n") == 1, (argv, p.stderr)
            assert p.stderr.startswith(
                f"promptcam fleet: error: no Ray cluster answered at {address} within 2s"
            ), p.stderr
            assert took < 20, took  # importing Ray, then 2 s (it was > 40 s)


def test_ray_output_is_summarised_in_one_line() -> None:
    from clients.fleet.cluster import summarise_ray_output

    text = "".join(
        f"[2026-12-06 04:43:00,056 W 3969 3969] rpc_client.h:153: Failed to connect {k}\n"
        for k in range(20)
    )
    assert summarise_ray_output(text) == "20 lines from Ray, first: Failed to connect 0"
    assert summarise_ray_output("\n \n") == ""
