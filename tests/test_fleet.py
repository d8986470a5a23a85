"""A fleet on a real two-node Ray cluster, with its faults, inside a loopback-only namespace.

pytest re-executes this file under ``unshare -rnpf`` (tests/netns.py: only loopback, and a PID
namespace, so ``ray stop`` sees only this cluster and the kernel kills everything when the
session ends, whatever failed). In there ``session()``:

1. starts a GStreamer RTSP server and a Ray cluster with ``ray start``: a head (resource
   ``site_a``) and a second node (``site_b``), separate raylets on 127.0.0.1, no dashboard;
2. checks bad input: an unreachable address, a resource no node has (one-line errors, exit 2);
3. runs ``promptcam fleet`` (tiny-random, prompt '' with manual objects) with three cameras —
   demo, a looping file and the RTSP camera, whose capture must run on ``site_b`` — on two
   engines (one per node), subscribes to the gateway's tracks, and checks the fleet page;
4. faults, each timed from the fault to tracks again: SIGKILL of an engine actor's process
   x5, the controller killed, a drain, a camera added while an engine is down, the second node
   stopped (and a camera no engine can take then: pending) and started again;
5. checks that no object ID was reused anywhere, and that SIGTERM stops the fleet.

It prints one JSON object with the figures, which the tests below assert on; the figures also
go to ``artifacts/fleet_faults.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import netns  # noqa: E402
from tests.conftest import free_port  # noqa: E402

SESSION_TIMEOUT_S = 420
OBJECT_BOX = [10.0, 10.0, 70.0, 70.0]
KILLS = 5
SUBSCRIBE = [sys.executable, "-m", "clients.cli", "subscribe"]

# --------------------------------------------------------------------------- in the namespace


class Failed(Exception):
    """A step of the session did not happen in time."""


def wait(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


RAY_WORKER_PORTS = range(10002, 20000)  # ray start's default range for worker processes


def port() -> int:
    """A free loopback port outside Ray's worker-port range."""
    return next(p for p in iter(free_port, None) if p not in RAY_WORKER_PORTS)


def endpoint() -> str:
    return f"tcp://127.0.0.1:{port()}"


def ray_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "from ray.scripts.scripts import main; main()", *args]


class Cluster:
    """A head and a second node started with ``ray start``, each in its own process group."""

    def __init__(self, tmp: Path) -> None:
        self.port = port()
        self.address = f"127.0.0.1:{self.port}"
        self.tmp = tmp
        self.node_b: int | None = None  # process group of the second node's daemons
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}

    def _start(self, args: list[str], log: str) -> int:
        with open(self.tmp / log, "ab") as f:
            p = subprocess.Popen(
                ray_cmd("start", *args), stdout=f, stderr=f, env=self.env, start_new_session=True
            )
            if p.wait(120) != 0:
                raise Failed(f"ray start {args[0]} failed: {(self.tmp / log).read_text()[-2000:]}")
        return p.pid

    def start_head(self) -> None:
        self._start(
            [
                "--head",
                "--node-ip-address=127.0.0.1",
                f"--port={self.port}",
                "--include-dashboard=false",
                "--num-cpus=2",
                "--object-store-memory=80000000",
                '--resources={"site_a": 1}',
                f"--temp-dir={self.tmp / 'ray'}",
                "--disable-usage-stats",
            ],
            "head.log",
        )

    def start_node_b(self) -> None:
        self.node_b = self._start(
            [
                f"--address={self.address}",
                "--node-ip-address=127.0.0.1",
                "--num-cpus=2",
                "--object-store-memory=80000000",
                '--resources={"site_b": 1}',
                f"--temp-dir={self.tmp / 'ray_b'}",  # its own logs: one log monitor per file
                "--disable-usage-stats",
            ],
            "node_b.log",
        )

    def stop_node_b(self) -> None:
        assert self.node_b is not None
        os.killpg(self.node_b, signal.SIGTERM)
        self.node_b = None

    def stop(self) -> None:
        subprocess.run(ray_cmd("stop", "--force"), capture_output=True, env=self.env, timeout=60)


class Watcher(threading.Thread):
    """Subscribes to the gateway's tracks: per camera (t_publish_ns, received, [(id, age)])."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(name="watcher", daemon=True)
        import zmq

        from stream import bus as zbus

        self.ctx: Any = zmq.Context()
        self.sock = zbus.connect(self.ctx, zmq.SUB, endpoint, subscribe=[b"tracks."])
        self.msgs: dict[str, list[tuple[int, float, list[tuple[int, int]]]]] = defaultdict(list)
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def run(self) -> None:
        from stream import bus as zbus
        from stream.wire import TracksMessage

        while not self.stop.is_set():
            parts = zbus.recv_multipart_timeout(self.sock, 100, copy=True)
            if parts is None:
                continue
            h = TracksMessage.from_parts(parts).header
            with self.lock:
                self.msgs[h.camera].append(
                    (h.t_publish_ns, time.time(), [(o.id, o.age) for o in h.objects])
                )
        self.sock.close(0)
        self.ctx.destroy(0)

    def count(self, camera: str) -> int:
        with self.lock:
            return len(self.msgs[camera])

    def first_after(self, camera: str, t: float, with_objects: bool = False) -> float | None:
        """Receive time of the first message of ``camera`` published after wall time ``t``."""
        ns = int(t * 1e9)
        with self.lock:
            for pub, recv, objs in self.msgs[camera]:
                if pub > ns and (objs or not with_objects):
                    return recv
        return None

    def max_gap(self, camera: str, t0: float, t1: float) -> float:
        with self.lock:
            ts = [recv for _, recv, _ in self.msgs[camera] if t0 <= recv <= t1]
        return max((b - a for a, b in itertools.pairwise(ts)), default=float("inf"))

    def ids_reused(self) -> dict[str, Any]:
        """IDs seen under two cameras, or whose age went back (a reuse would restart it)."""
        owner: dict[int, str] = {}
        last_age: dict[int, int] = {}
        across, restarted = set(), set()
        with self.lock:
            for cam, msgs in self.msgs.items():
                for _, _, objs in sorted(msgs):
                    for oid, age in objs:
                        if owner.setdefault(oid, cam) != cam:
                            across.add(oid)
                        if age < last_age.get(oid, -1):
                            restarted.add(oid)
                        last_age[oid] = age
        return {
            "ids_seen": len(owner),
            "across_cameras": sorted(across),
            "age_restarted": sorted(restarted),
            "max_id": max(owner, default=0),
        }


class Fleet:
    """``promptcam fleet`` and its verbs, as a user runs them."""

    def __init__(self, site: Path, address: str, tmp: Path) -> None:
        self.site, self.address, self.tmp = site, address, tmp
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "clients.cli", "fleet", *args, "--config", str(self.site)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
        )

    def verb(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cli(*args, "--address", self.address)

    def status(self) -> dict[str, Any] | None:
        """The controller's status, asked directly (cheaper to poll than ``fleet status``)."""
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, logging_level=logging.ERROR, log_to_driver=False)
        try:
            controller = ray.get_actor("controller", namespace="promptcam-default")
            reply: Any = ray.get(controller.status.remote(), timeout=5)
        except Exception:  # not started yet, or restarting
            return None
        return dict(reply)

    def start(self) -> None:
        log = open(self.tmp / "fleet.log", "ab")  # noqa: SIM115  # closed with the process
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "clients.cli",
                "fleet",
                "--config",
                str(self.site),
                "--address",
                self.address,
            ],
            cwd=ROOT,
            stdout=log,
            stderr=log,
            env=self.env,
            start_new_session=True,
        )


def camera_of(st: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in st["cameras"] if c["camera"] == name)


def engine_of(st: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in st["engines"] if e["name"] == name)


def write_site(tmp: Path, rtsp_url: str, video: Path) -> tuple[Path, dict[str, str]]:
    ep = {"tracks": endpoint(), "annotated": endpoint(), "control": endpoint()}
    web = port()
    site = tmp / "site.yaml"
    site.write_text(
        f"""
log_level: INFO
source: {{width: 160, height: 120, stall_timeout_s: 3, open_timeout_s: 3, read_timeout_s: 5,
          reconnect_initial_s: 0.2, reconnect_max_s: 1}}
bus: {{tracks: '{ep["tracks"]}', annotated: '{ep["annotated"]}', control: '{ep["control"]}'}}
models: {{preset: tiny-random, device: cpu}}
engine: {{prompt: '', max_objects: 4, max_missed: 100000, reground_every_frames: 0}}
web: {{port: {web}}}
cameras:
  demo: {{source: demo, fps: 5}}
  file: {{source: {{uri: '{video}', loop: true}}}}
  rtsp: {{source: '{rtsp_url}'}}
fleet:
  engines: 2
  engine_cpus: 0.5
  capture_cpus: 0.1
  engine_resources: [site_a, site_b]
  capture_resources: {{rtsp: site_b}}
  max_cameras_per_engine: 4
  max_objects_per_engine: 16
  id_block: 8
  check_every_s: 0.25
  status_every_s: 2
"""
    )
    ep["page"] = f"http://127.0.0.1:{web}/"
    return site, ep


def add_object(control: str, camera: str) -> int:
    from stream import bus as zbus

    reply = zbus.request(
        control, {"cmd": "add_object", "camera": camera, "box": OBJECT_BOX, "label": "thing"}
    )
    if not reply.get("ok"):
        raise Failed(f"add_object on {camera} refused: {reply}")
    return int(reply["id"])


def renew_ids(fleet: Fleet, control: str, camera: str) -> dict[str, Any]:
    """Use up half of ``camera``'s ID block: the controller leases the next one ahead, and the
    camera's objects go on from it when the first runs out (never an exhausted camera)."""
    from stream import bus as zbus

    st = fleet.status()
    assert st is not None
    first = camera_of(st, camera)["ids"]
    ids = [add_object(control, camera) for _ in range(3)]  # max_objects is 4: free them again
    for oid in ids:
        zbus.request(control, {"cmd": "remove_object", "camera": camera, "id": oid})
    ids.append(add_object(control, camera))  # 5 of the block of 8 used: under half is left
    zbus.request(control, {"cmd": "remove_object", "camera": camera, "id": ids[-1]})
    st = wait(
        lambda: (s := fleet.status()) and camera_of(s, camera)["ids"] != first and s,
        30,
        "the next ID block leased",
    )
    second = camera_of(st, camera)["ids"]
    more = []
    for _ in range(4):  # 3 left in the first block, then the second one
        more.append(add_object(control, camera))
        zbus.request(control, {"cmd": "remove_object", "camera": camera, "id": more[-1]})
    return {"first": first, "second": second, "ids": ids + more}


def plain_subscriber(endpoint: str, seconds: float = 3.0) -> int:
    """Messages a subscriber without the fleet's CURVE keys gets from an engine (ZAP: none)."""
    import zmq

    from stream import bus as zbus

    ctx: Any = zmq.Context()
    sock = zbus.connect(ctx, zmq.SUB, endpoint, subscribe=[b""])
    got, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        got += zbus.recv_multipart_timeout(sock, 100) is not None
    sock.close(0)
    ctx.destroy(0)
    return got


def gateway_control(control: str) -> dict[str, Any]:
    """The gateway's control socket as a v1.1 client sees it."""
    from stream import bus as zbus

    cams = zbus.request(control, {"cmd": "cameras"})
    return {
        "cameras": sorted((c["camera"], c["engine"] is not None) for c in cams["cameras"]),
        "no_camera": zbus.request(control, {"cmd": "reset"}),
        "unknown": zbus.request(control, {"cmd": "reset", "camera": "nope"}),
        "add_camera": zbus.request(
            control, {"cmd": "add_camera", "camera": "x", "frames": "tcp://127.0.0.1:1"}
        ),
        "stats": sorted(zbus.request(control, {"cmd": "stats"})["stats"]["cameras"]),
        "malformed": zbus.request(control, {"cmd": "set_prompt"}),
    }


def session(out: Path) -> dict[str, Any]:
    from tests.test_capture import RtspServer
    from tests.test_sources import write_video

    r: dict[str, Any] = {"faults": [], "step": "setup"}
    # Ray's token authentication, as the README recommends: one secret for every Ray process.
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    tmp = Path(tempfile.mkdtemp(prefix="promptcam-fleet-test-"))
    cluster = Cluster(tmp)
    rtsp = RtspServer(port())
    fleet: Fleet | None = None
    watcher: Watcher | None = None
    t_session = time.monotonic()
    try:
        rtsp.start()
        video = tmp / "clip.mp4"
        write_video(video, 60, fps=10, size=(160, 120))
        t0 = time.monotonic()
        cluster.start_head()
        cluster.start_node_b()
        r["cluster_start_s"] = round(time.monotonic() - t0, 1)
        site, ep = write_site(tmp, rtsp.url, video)
        fleet = Fleet(site, cluster.address, tmp)

        r["step"] = "bad input"

        r.setdefault("at_s", {})["bad input"] = round(time.monotonic() - t_session, 1)
        t0 = time.monotonic()
        p = fleet.cli("--address", f"127.0.0.1:{port()}", timeout=60)
        r["unreachable"] = {
            "rc": p.returncode,
            "stderr": p.stderr.strip(),
            "s": time.monotonic() - t0,
        }
        p = fleet.cli(
            "--address", cluster.address, "--set", "fleet.engine_resources=[site_a, site_z]"
        )
        r["missing_resource"] = {"rc": p.returncode, "stderr": p.stderr.strip()[-400:]}

        r["step"] = "start"

        r.setdefault("at_s", {})["start"] = round(time.monotonic() - t_session, 1)
        t0 = time.monotonic()
        fleet.start()

        def all_live() -> dict[str, Any] | None:
            st = fleet.status() if fleet else None
            ok = st is not None and all(c["state"] == "live" for c in st["cameras"])
            up = st is not None and all(e["state"] in ("up", "draining") for e in st["engines"])
            return st if ok and up else None

        st = wait(all_live, 180, "3 cameras live on 2 engines", interval=1.0)
        r["start_s"] = round(time.monotonic() - t0, 1)
        r["placement"] = {c["camera"]: c["engine"] for c in st["cameras"]}
        r["nodes"] = [(n["ip"], n["alive"], n["labels"]) for n in st["nodes"]]
        head_node = next(n["node_id"] for n in st["nodes"] if "site_a" in n["labels"])
        r["controller_on_head_at_start"] = st["controller"]["node_id"] == head_node
        r["engine_nodes"] = {e["name"]: e["node_ip"] for e in st["engines"]}
        watcher = Watcher(ep["tracks"])
        watcher.start()
        cams = ["demo", "file", "rtsp"]
        wait(lambda: all(watcher.count(c) > 0 for c in cams), 30, "tracks of every camera")
        r["first_ids"] = {c: add_object(ep["control"], c) for c in cams}
        wait(
            lambda: all(watcher.first_after(c, time.time() - 5, with_objects=True) for c in cams),
            30,
            "tracks with the manual objects",
        )

        r["step"] = "ID renewal"
        r.setdefault("at_s", {})["ID renewal"] = round(time.monotonic() - t_session, 1)
        r["renewal"] = renew_ids(fleet, ep["control"], "demo")

        r["step"] = "page"

        r.setdefault("at_s", {})["page"] = round(time.monotonic() - t_session, 1)
        with urllib.request.urlopen(ep["page"], timeout=10) as resp:
            r["page_has_grid"] = b'id="grid"' in resp.read()
        with urllib.request.urlopen(ep["page"] + "api/status", timeout=10) as resp:
            r["page_cameras"] = sorted(c["camera"] for c in json.loads(resp.read())["cameras"])
        jpeg = wait(lambda: _get(ep["page"] + "snapshot/demo.jpg"), 20, "a snapshot of demo")
        r["snapshot_is_jpeg"] = jpeg[:2] == b"\xff\xd8"
        sub = subprocess.run(
            [
                *SUBSCRIBE,
                "--config",
                str(site),
                "--camera",
                "file",
                "--count",
                "2",
                "--timeout",
                "20",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        r["subscribe_lines"] = [json.loads(ln)["camera"] for ln in sub.stdout.splitlines()]
        r["gateway_control"] = gateway_control(ep["control"])
        r["curve"] = st["curve"]
        r["plain_subscriber_got"] = plain_subscriber(engine_of(st, "engine-0")["tracks"])
        text = fleet.verb("status")
        r["status_text_ok"] = all(
            w in text.stdout for w in ("engine-0", "engine-1", "demo", "file", "rtsp", "alive")
        )

        r["step"] = "engine kills"

        r.setdefault("at_s", {})["engine kills"] = round(time.monotonic() - t_session, 1)
        for k in range(KILLS):
            st = wait(all_live, 120, f"every camera live before kill {k + 1}", interval=0.5)
            victim = max(st["engines"], key=lambda e: (len(e["cameras"]), e["name"]))
            moved = list(victim["cameras"])
            t_kill = time.time()
            os.kill(victim["pid"], signal.SIGKILL)
            fault: dict[str, Any] = {
                "kind": "engine SIGKILL",
                "engine": victim["name"],
                "cameras": moved,
            }
            for cam in moved:
                t_tracks = wait(partial(watcher.first_after, cam, t_kill), 60, f"{cam} after kill")
                t_objs = wait(
                    partial(watcher.first_after, cam, t_kill, True), 60, f"{cam} objects again"
                )
                fault.setdefault("tracks_again_s", {})[cam] = round(t_tracks - t_kill, 2)
                fault.setdefault("objects_again_s", {})[cam] = round(t_objs - t_kill, 2)
            st = wait(all_live, 120, "the killed engine back", interval=0.5)
            fault["restarted"] = engine_of(st, victim["name"])["pid"] != victim["pid"]
            fault["placement"] = {c["camera"]: c["engine"] for c in st["cameras"]}
            r["faults"].append(fault)

        r["step"] = "controller kill"

        r.setdefault("at_s", {})["controller kill"] = round(time.monotonic() - t_session, 1)
        st = wait(all_live, 60, "every camera live before the controller kill", interval=0.5)
        before = {c["camera"]: (c["engine"], c["placements"]) for c in st["cameras"]}
        counts = {c: watcher.count(c) for c in cams}
        t_kill = time.time()
        os.kill(st["controller"]["pid"], signal.SIGKILL)
        st2 = wait(
            lambda: (s := fleet.status()) and s["controller"]["starts"] == 2 and s,
            60,
            "the controller back",
            interval=0.5,
        )
        back_s = time.time() - t_kill
        st2 = wait(all_live, 30, "every camera live after the controller restart", interval=0.5)
        after = {c["camera"]: (c["engine"], c["placements"]) for c in st2["cameras"]}
        r["faults"].append(
            {
                "kind": "controller SIGKILL",
                "back_s": round(back_s, 2),
                "assignment_kept": before == after,
                "tracks_during": {c: watcher.count(c) - counts[c] for c in cams},
            }
        )

        r["step"] = "drain"

        r.setdefault("at_s", {})["drain"] = round(time.monotonic() - t_session, 1)
        victim = max(st2["engines"], key=lambda e: len(e["cameras"]))
        moved = list(victim["cameras"])
        t_drain = time.time()
        p = fleet.verb("drain", victim["name"])
        if p.returncode != 0:
            raise Failed(f"drain failed: {p.stderr}")
        st = wait(
            lambda: (s := all_live()) and not engine_of(s, victim["name"])["cameras"] and s,
            60,
            "the drained engine empty",
            interval=0.5,
        )
        t_done = time.time()
        r["drain"] = {
            "engine": victim["name"],
            "moved": moved,
            "took_s": round(t_done - t_drain, 2),
            "max_gap_s": {c: round(watcher.max_gap(c, t_drain, t_done), 2) for c in moved},
            "placement": {c["camera"]: c["engine"] for c in st["cameras"]},
        }
        fleet.verb("undrain", victim["name"])

        r["step"] = "camera added while an engine is down"

        r.setdefault("at_s", {})["camera added while an engine is down"] = round(
            time.monotonic() - t_session, 1
        )
        st = wait(all_live, 60, "every camera live before the add", interval=0.5)
        victim = next(e for e in st["engines"] if e["cameras"])
        t_kill = time.time()
        os.kill(victim["pid"], signal.SIGKILL)
        p = fleet.verb("add-camera", "cam4", "--source", "demo", "--fps", "5")
        if p.returncode != 0:
            raise Failed(f"add-camera failed: {p.stderr}")
        t_cam4 = wait(lambda: watcher.first_after("cam4", t_kill), 90, "cam4 tracks")
        st = wait(all_live, 120, "every camera live after the add", interval=0.5)
        r["faults"].append(
            {
                "kind": "camera added while an engine is down",
                "engine": victim["name"],
                "cam4_tracks_s": round(t_cam4 - t_kill, 2),
                "cam4_engine": camera_of(st, "cam4")["engine"],
                "moved_tracks_again_s": {
                    c: round((watcher.first_after(c, t_kill) or 0) - t_kill, 2)
                    for c in victim["cameras"]
                },
            }
        )
        cams.append("cam4")

        r["step"] = "node stopped"

        r.setdefault("at_s", {})["node stopped"] = round(time.monotonic() - t_session, 1)
        st = wait(all_live, 60, "every camera live before the node stop", interval=0.5)
        on_b = engine_of(st, "engine-1")["cameras"]
        t_stop = time.time()
        cluster.stop_node_b()
        moved = [c for c in on_b if c != "rtsp"]
        node_fault: dict[str, Any] = {"kind": "second node stopped", "cameras_on_it": on_b}
        for cam in moved:
            t = wait(partial(watcher.first_after, cam, t_stop), 60, f"{cam} after node stop")
            node_fault.setdefault("tracks_again_s", {})[cam] = round(t - t_stop, 2)
        st = wait(
            lambda: (
                (s := fleet.status())
                and camera_of(s, "rtsp")["state"] == "pending"
                and "site_b" in camera_of(s, "rtsp")["error"]
                and engine_of(s, "engine-1")["state"] == "pending"
                and s
            ),
            60,
            "rtsp and engine-1 pending for want of site_b",
            interval=0.5,
        )
        node_fault["rtsp_state"] = [camera_of(st, "rtsp")["state"], camera_of(st, "rtsp")["error"]]
        node_fault["engine1_state"] = [
            engine_of(st, "engine-1")["state"],
            engine_of(st, "engine-1")["error"],
        ]
        p = fleet.verb("add-camera", "big", "--source", "demo", "--fps", "5", "--max-objects", "8")
        st = wait(
            lambda: (s := fleet.status()) and camera_of(s, "big")["state"] == "pending" and s,
            30,
            "big pending",
            interval=0.5,
        )
        node_fault["over_capacity"] = [camera_of(st, "big")["state"], camera_of(st, "big")["error"]]

        r["step"] = "node back"

        r.setdefault("at_s", {})["node back"] = round(time.monotonic() - t_session, 1)
        t_back = time.time()
        cluster.start_node_b()
        st = wait(all_live, 180, "rtsp and big live after the node is back", interval=1.0)
        node_fault["back_s"] = round(time.time() - t_back, 2)
        node_fault["rtsp_tracks_again_s"] = round(
            (watcher.first_after("rtsp", t_back) or 0) - t_stop, 2
        )
        node_fault["placement"] = {c["camera"]: c["engine"] for c in st["cameras"]}
        r["faults"].append(node_fault)
        r["figures"] = st["figures"]

        r["step"] = "ids"

        r.setdefault("at_s", {})["ids"] = round(time.monotonic() - t_session, 1)
        seen = {c: watcher.count(c) for c in cams}
        wait(lambda: all(watcher.count(c) > seen[c] for c in cams), 30, "tracks of every camera")
        r["ids"] = watcher.ids_reused()
        r["ids"]["next_free"] = st["figures"]["ids_next_free"]

        r["step"] = "sigterm"

        r.setdefault("at_s", {})["sigterm"] = round(time.monotonic() - t_session, 1)
        pids = [e["pid"] for e in st["engines"] if e["pid"]]
        assert fleet.proc is not None
        t0 = time.monotonic()
        fleet.proc.send_signal(signal.SIGTERM)
        r["sigterm_rc"] = fleet.proc.wait(90)
        r["sigterm_s"] = round(time.monotonic() - t0, 1)
        r["engines_gone"] = wait(
            lambda: all(not _alive(p) for p in pids), 30, "engine processes gone"
        )
        r["fleet_gone"] = fleet.verb("status").returncode == 2
        r["controller_node_is_head"] = st["controller"]["node_id"] == head_node
        r["step"] = "done"
        r.setdefault("at_s", {})["done"] = round(time.monotonic() - t_session, 1)
    except Exception as e:
        r["error"] = f"{e.__class__.__name__}: {e}"
        if fleet is not None:
            log = tmp / "fleet.log"
            r["fleet_log"] = log.read_text(errors="replace")[-6000:] if log.exists() else ""
    finally:
        r["session_s"] = round(time.monotonic() - t_session, 1)
        if watcher is not None:
            watcher.stop.set()
        if fleet is not None and fleet.proc is not None and fleet.proc.poll() is None:
            os.killpg(fleet.proc.pid, signal.SIGKILL)
        cluster.stop()
        rtsp.stop()
    return r


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            data: bytes = resp.read()
            return data
    except OSError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --------------------------------------------------------------------------- the tests


def _skip_reason() -> str | None:
    try:
        import ray  # noqa: F401
    except ImportError:
        return "ray is not installed (pip install 'promptcam[fleet]')"
    from tests.test_capture import _gst_available

    if not _gst_available():
        return "the GStreamer RTSP server is not available"
    return netns.unavailable_reason()


@pytest.fixture(scope="module")
def run() -> Iterator[dict[str, Any]]:
    reason = _skip_reason()
    if reason:
        pytest.skip(f"fleet test needs Ray, GStreamer and a loopback-only namespace: {reason}")
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.run(
            netns.isolated_command([sys.executable, str(Path(__file__).resolve()), "--out", out]),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=SESSION_TIMEOUT_S,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"fleet session printed no result:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    _write_figures(result)
    assert "error" not in result, (
        f"fleet session failed at {result['step']}: {result['error']}\n{result.get('fleet_log', '')}"
    )
    yield result


def _write_figures(r: dict[str, Any]) -> None:
    kills = [f for f in r["faults"] if f["kind"] == "engine SIGKILL"]
    times = [t for f in kills for t in f.get("objects_again_s", {}).values()]
    recovered = sum(len(f.get("objects_again_s", {})) for f in kills)
    figures = {
        "faults": len(r["faults"]),
        "engine_kills": len(kills),
        "cameras_recovered_after_kills": recovered,
        "time_to_tracks_again_s": [t for f in kills for t in f.get("tracks_again_s", {}).values()],
        "time_to_objects_again_s": times,
        "recovery_p50_s": statistics.median(times) if times else float("nan"),
        "recovery_max_s": max(times) if times else None,
        "ids_reused": len(r.get("ids", {}).get("across_cameras", []))
        + len(r.get("ids", {}).get("age_restarted", [])),
        "session": r,
    }
    (ROOT / "artifacts").mkdir(exist_ok=True)
    (ROOT / "artifacts" / "fleet_faults.json").write_text(json.dumps(figures, indent=2))
    print(
        f"\nfleet faults: {figures['faults']} faults ({len(kills)} engine kills), "
        f"{recovered} camera recoveries, objects again p50 {figures['recovery_p50_s']:.2f} s "
        f"max {figures['recovery_max_s']} s, IDs reused {figures['ids_reused']}, "
        f"session {r.get('session_s')} s"
    )


@pytest.mark.slow
def test_bad_input_is_one_line_and_fast(run: dict[str, Any]) -> None:
    u = run["unreachable"]
    assert u["rc"] == 2 and u["s"] < 30
    assert u["stderr"].count("\n") == 0 and "cannot reach the Ray cluster" in u["stderr"]
    m = run["missing_resource"]
    assert m["rc"] == 2 and "site_z" in m["stderr"] and "Traceback" not in m["stderr"]


@pytest.mark.slow
def test_three_cameras_on_two_engines_on_two_nodes(run: dict[str, Any]) -> None:
    assert sorted(run["placement"]) == ["demo", "file", "rtsp"]
    assert set(run["placement"].values()) == {"engine-0", "engine-1"}
    assert [ip for ip, alive, _ in run["nodes"]] == ["127.0.0.1", "127.0.0.1"]
    assert sorted(lbl for _, _, labels in run["nodes"] for lbl in labels) == ["site_a", "site_b"]
    assert run["page_has_grid"] and run["snapshot_is_jpeg"]
    assert run["page_cameras"] == ["demo", "file", "rtsp"]
    assert run["subscribe_lines"] == ["file", "file"]
    assert run["status_text_ok"]
    n = run["renewal"]
    (a, b), (c, d) = n["first"], n["second"]
    assert c >= b and d - c == 8  # a later, disjoint block
    assert n["ids"] == [*range(a + 1, b), c]
    assert run["curve"] and run["plain_subscriber_got"] == 0  # two nodes: CURVE on every link
    g = run["gateway_control"]
    assert g["cameras"] == [["demo", True], ["file", True], ["rtsp", True]]
    assert not g["no_camera"]["ok"] and "demo, file, rtsp" in g["no_camera"]["error"]
    assert not g["unknown"]["ok"] and "unknown camera" in g["unknown"]["error"]
    assert not g["add_camera"]["ok"] and "fleet add-camera" in g["add_camera"]["error"]
    assert g["stats"] == ["demo", "file", "rtsp"] and not g["malformed"]["ok"]


@pytest.mark.slow
def test_engine_kills_replace_cameras_on_the_survivor(run: dict[str, Any]) -> None:
    kills = [f for f in run["faults"] if f["kind"] == "engine SIGKILL"]
    assert len(kills) == KILLS
    for f in kills:
        assert f["cameras"] and f["restarted"]
        for cam in f["cameras"]:
            assert f["placement"][cam] != f["engine"] or f["objects_again_s"][cam] > 0
            assert f["objects_again_s"][cam] < 60


@pytest.mark.slow
def test_controller_restart_keeps_the_assignment(run: dict[str, Any]) -> None:
    f = next(f for f in run["faults"] if f["kind"] == "controller SIGKILL")
    assert f["assignment_kept"]
    assert all(n > 0 for n in f["tracks_during"].values())  # the data plane went on


@pytest.mark.slow
def test_drain_moves_cameras_first(run: dict[str, Any]) -> None:
    d = run["drain"]
    assert d["moved"] and all(d["placement"][c] != d["engine"] for c in d["moved"])
    assert all(gap < 5 for gap in d["max_gap_s"].values())  # no outage: moved before removed


@pytest.mark.slow
def test_camera_added_while_an_engine_is_down(run: dict[str, Any]) -> None:
    f = next(f for f in run["faults"] if f["kind"] == "camera added while an engine is down")
    assert f["cam4_engine"] in ("engine-0", "engine-1") and f["cam4_tracks_s"] < 90


@pytest.mark.slow
def test_node_loss_pending_states_and_return(run: dict[str, Any]) -> None:
    f = next(f for f in run["faults"] if f["kind"] == "second node stopped")
    assert f["rtsp_state"][0] == "pending" and "site_b" in f["rtsp_state"][1]
    assert f["engine1_state"][0] == "pending" and "site_b" in f["engine1_state"][1]
    assert f["over_capacity"][0] == "pending" and "over capacity" in f["over_capacity"][1]
    assert all(t < 60 for t in f.get("tracks_again_s", {}).values())
    assert f["placement"]["big"] == "engine-1"  # the only engine with room for it


@pytest.mark.slow
def test_ids_never_reused_and_sigterm_stops(run: dict[str, Any]) -> None:
    ids = run["ids"]
    assert ids["ids_seen"] > KILLS and ids["across_cameras"] == [] and ids["age_restarted"] == []
    assert ids["max_id"] < ids["next_free"]
    assert run["sigterm_rc"] == 0 and run["engines_gone"] and run["fleet_gone"]


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    res = session(Path(a.out))
    print(json.dumps(res), flush=True)
