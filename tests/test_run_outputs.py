"""The optional outputs of ``promptcam run``: a recorder per camera (``record.enabled``,
``record.format: mcap``) and the ``dds`` child (``dds.enabled``), as real launcher children
against a synthetic engine on the bus."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

from clients.launcher import Supervisor, child_specs, output_specs, write_child_config
from clients.recorder import READY_LINE as RECORD_READY
from clients.robots import ros2
from clients.robots.dds import READY_LINE as DDS_READY
from clients.web.synthetic import SyntheticEngine
from stream.config import load_config
from tests.conftest import tcp_endpoint, wait_for
from tests.test_robots import read_mcap


def test_run_records_mcap_per_camera_rotating_and_publishes_dds(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    cfg = load_config(
        None,
        {
            "bus.annotated": tcp_endpoint(),
            "bus.tracks": tcp_endpoint(),
            "bus.control": tcp_endpoint(),
            "cameras": {"cam0": {}, "cam1": {}},
            "record.enabled": True,
            "record.format": "mcap",
            "record.rotate_s": 1.0,
            "record.directory": str(rec),
            "dds.enabled": True,
            "dds.domain_id": 200 + os.getpid() % 30,
            "run.watchdog_s": 0.5,
        },
    )
    specs = output_specs(cfg, write_child_config(cfg, tmp_path))
    assert [s.name for s in specs] == ["dds", "record:cam0", "record:cam1"]
    assert [s.name for s in child_specs(cfg, tmp_path / "c.yaml")][-3:] == [s.name for s in specs]
    out = io.StringIO()
    # Every watched child would be "wedged": these have no status to poll and are not watched.
    sup = Supervisor(
        specs, cfg.run, is_ready=lambda _n, _t: False, output=out, watchdog=lambda *_: "wedged"
    )
    with SyntheticEngine(cfg, fps=15, cameras=["cam0", "cam1"]):
        try:
            sup.start()

            def ready() -> bool:
                sup.poll()
                return all(c.ready for c in sup.children.values())

            wait_for(ready, timeout=40, interval=0.05, what="the output children ready")
            ready_at = time.monotonic()

            def rotated() -> bool:  # two files a camera, each at least a second old
                sup.poll()
                return all(len(list(rec.glob(f"{c}-*.mcap"))) >= 2 for c in ("cam0", "cam1"))

            wait_for(rotated, timeout=30, interval=0.05, what="rotated MCAP files of both cameras")
            while time.monotonic() - ready_at < 1.0:  # > the watchdog's 0.5 s
                sup.poll()
                time.sleep(0.05)
            assert all(c.restarts == c.watchdog_restarts == 0 for c in sup.children.values())
        finally:
            sup.stop()
    log = out.getvalue()
    assert DDS_READY in log and log.count(RECORD_READY) == 2
    assert "[dds] promptcam dds: published" in log  # its counts, printed on SIGTERM
    for cam in ("cam0", "cam1"):
        files = sorted(rec.glob(f"{cam}-*.mcap"))
        assert len(files) >= 2 and not list(rec.glob("*.mp4"))
        stamps = []
        for f in files:  # every file complete (summary and footer), CDR that rosbags re-encodes
            topics = read_mcap(f)
            stamps += [t for t, _, _ in topics.get(ros2.topic(cam, "detections"), [])]
            assert set(topics) <= {ros2.topic(cam, k) for k in ("detections", "masks", "image")}
        assert len(stamps) >= 10 and stamps == sorted(stamps)
