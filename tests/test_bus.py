"""Sockets: loopback-only binds, CURVE encryption between hosts, size bounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
import zmq.auth

from stream import bus as zbus
from stream.config import BusConfig, CurveConfig
from stream.receiver import LatestFrameReceiver
from stream.wire import FrameMessage
from tests.conftest import wait_for


def test_bind_refuses_non_loopback_unless_allowed(ctx: zmq.Context[Any]) -> None:
    with pytest.raises(zbus.BusError, match="not a loopback address"):
        zbus.bind(ctx, zmq.PUB, "tcp://0.0.0.0:5999", BusConfig())
    zbus.check_bind_allowed("tcp://0.0.0.0:5999", allow_remote=True)  # allowed when configured


def test_bind_port_in_use_is_one_line(ctx: zmq.Context[Any], endpoint: str) -> None:
    first = zbus.bind(ctx, zmq.PUB, endpoint)
    with pytest.raises(zbus.BusError, match="already in use"):
        zbus.bind(ctx, zmq.PUB, endpoint)
    first.close(0)


def test_curve_frames_reach_key_holders_only(
    ctx: zmq.Context[Any], endpoint: str, tmp_path: Path
) -> None:
    server_pub, server_sec = zmq.auth.create_certificates(tmp_path, "server")
    client_pub, client_sec = zmq.auth.create_certificates(tmp_path, "client")
    server = BusConfig(
        curve=CurveConfig(
            server_secret_key_file=Path(server_sec), server_public_key_file=Path(server_pub)
        )
    )
    client = BusConfig(
        curve=CurveConfig(
            server_public_key_file=Path(server_pub),
            client_secret_key_file=Path(client_sec),
            client_public_key_file=Path(client_pub),
        )
    )
    pub = zbus.bind(ctx, zmq.PUB, endpoint, server, curve=True)
    plain = zbus.connect(ctx, zmq.SUB, endpoint, subscribe=[b"frame."])  # no keys: gets nothing
    img = np.zeros((8, 8, 3), np.uint8)
    with LatestFrameReceiver(endpoint, "cam0", staleness_ms=None, bus=client, ctx=ctx) as rx:

        def send_and_get() -> FrameMessage | None:
            pub.send_multipart(FrameMessage.from_image("cam0", 1, img).to_parts(), copy=False)
            return rx.get(timeout=0.1)

        got = wait_for(send_and_get, what="frame over CURVE")
        assert got.width == 8
    assert plain.poll(300) == 0
    plain.close(0)
    pub.close(0)


def test_curve_missing_secret_key_is_a_clear_error(
    ctx: zmq.Context[Any], endpoint: str, tmp_path: Path
) -> None:
    server_pub, _ = zmq.auth.create_certificates(tmp_path, "server")
    bad = BusConfig(curve=CurveConfig(server_public_key_file=Path(server_pub)))
    with pytest.raises(zbus.BusError, match="server_secret_key_file"):
        zbus.bind(ctx, zmq.PUB, endpoint, bad, curve=True)
