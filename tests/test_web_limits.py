"""Hostile clients against a real ``promptcam web`` process on loopback (stand-in engine on real
ZeroMQ sockets): malformed SDP, offers that never connect, too many viewers, held and partial
requests, aborted uploads, killed web processes, and hypothesis-generated HTTP input. The fuzz
test writes its figures to artifacts/web_faults.json and prints a summary line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from aiortc import RTCPeerConnection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clients.web.ice import restrict_ice_to_loopback, rtc_configuration
from clients.web.jobs import ROOT_PREFIX
from tests.conftest import wait_for
from tests.web_stack import ROOT, Stack, healthy, http, make_stack, post_json, start_web, stop

BAD_PT_SDP = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 300\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\n"
)


def _port(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


def _fds(pid: int) -> int:
    return psutil.Process(pid).num_fds()


def _web_stats(url: str) -> dict[str, Any]:
    status, body = http("GET", url + "api/stats")
    assert status == 200, body
    web: dict[str, Any] = body["web"]
    return web


def _offer_without_candidates() -> str:
    """A browser-like offer (aiortc) whose candidates are stripped: it can never connect."""

    async def make() -> str:
        restrict_ice_to_loopback()
        pc = RTCPeerConnection(configuration=rtc_configuration())
        try:
            pc.addTransceiver("video", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
            sdp: str = pc.localDescription.sdp
        finally:
            await pc.close()
        return "".join(ln + "\r\n" for ln in sdp.splitlines() if not ln.startswith("a=candidate"))

    return asyncio.run(make())


# --------------------------------------------------------------------------- viewers


def test_bad_sdp_is_400_and_leaks_no_viewer() -> None:
    with make_stack() as s:
        status, body = post_json(s.url + "offer", {"sdp": BAD_PT_SDP, "type": "offer"})
        assert status == 400 and "payload type '300'" in body["error"], body
        # passes the line checks, then aiortc's parser asserts on the connection line
        broken_c = BAD_PT_SDP.replace(" 300\r\n", " 96\r\n").replace(
            "IN IP4 0.0.0.0\r\na=mid", "x\r\na=mid"
        )
        status, body = post_json(s.url + "offer", {"sdp": broken_c, "type": "offer"})
        assert status == 400 and "malformed SDP" in body["error"], body
        web = _web_stats(s.url)
        assert web["viewers"] == 0 and not web["encoder_active"]
        metrics = http("GET", s.url + "metrics")[1].decode()
        assert 'status="500"' not in metrics and healthy(s.url)


def test_unconnected_offers_are_reclaimed_and_viewers_capped() -> None:
    sdp = _offer_without_candidates()
    with make_stack(extra_overrides={"web.max_viewers": 4, "web.connect_timeout_s": 2}) as s:
        assert healthy(s.url)
        fds0 = _fds(s.proc.pid)
        answers = [post_json(s.url + "offer", {"sdp": sdp, "type": "offer"}) for _ in range(10)]
        codes = [c for c, _ in answers]
        assert codes.count(200) == 4 and codes.count(503) == 6, codes
        assert "too many viewers" in next(b["error"] for c, b in answers if c == 503)
        assert _web_stats(s.url)["viewers"] == 4
        wait_for(
            lambda: (w := _web_stats(s.url))["viewers"] == 0 and not w["encoder_active"],
            timeout=15,
            interval=0.2,
            what="unconnected viewers closed after web.connect_timeout_s",
        )
        web = _web_stats(s.url)
        assert web["limited"] == {"viewers_refused": 6, "viewers_timed_out": 4}, web["limited"]
        wait_for(lambda: _fds(s.proc.pid) <= fds0 + 4, timeout=10, what="peer sockets closed")


# --------------------------------------------------------------------------- connections


def _raw(port: int, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(data)
    return sock


def _response_line(sock: socket.socket, timeout: float) -> bytes:
    """The first line the server sends, or b"" when it closes without answering."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    return data.split(b"\r\n", 1)[0]


def test_held_and_partial_requests_never_starve_healthz(tmp_path: Path) -> None:
    log = tmp_path / "web.log"
    limits = {"web.max_connections": 32, "web.idle_timeout_s": 2, "web.request_timeout_s": 2}
    with make_stack(extra_overrides=limits, stderr=log) as s:
        port = _port(s.url)
        assert healthy(s.url)
        fds0 = _fds(s.proc.pid)
        held = [_raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n") for _ in range(300)]
        try:
            # an accept burst may hold more for a moment; then at most web.max_connections
            wait_for(
                lambda: _fds(s.proc.pid) <= fds0 + 32 + 4,
                timeout=5,
                what="open sockets within web.max_connections",
            )
            for _ in range(5):
                t0 = time.monotonic()
                assert healthy(s.url)
                assert time.monotonic() - t0 < 2.0
            # every held connection is closed: evicted, or after web.idle_timeout_s
            assert all(_response_line(c, 6) == b"" for c in held)
        finally:
            for c in held:
                c.close()

        # bodies that stop half-way keep their connections busy: at the limit, a new
        # connection is refused at once (a slow request not yet busy may be replaced: refill)
        head = b"POST /api/prompt HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        slow_request = head + b'Content-Length: 100\r\n\r\n{"prompt": '
        slow = [_raw(port, slow_request) for _ in range(32)]
        probe = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

        def refused() -> bool:
            sock = _raw(port, probe)
            try:
                line = _response_line(sock, 5)
            finally:
                sock.close()
            if line.startswith(b"HTTP/1.1 503"):
                return True
            slow.append(_raw(port, slow_request))
            return False

        try:
            wait_for(refused, timeout=10, interval=0.05, what="a connection refused, all busy")
            lines = [_response_line(c, 8) for c in slow]
            timed_out = sum(ln.startswith(b"HTTP/1.1 408") for ln in lines)
            assert timed_out >= 32 - 2 and timed_out + lines.count(b"") == len(lines), set(lines)
        finally:
            for c in slow:
                c.close()
        assert healthy(s.url)
        web = _web_stats(s.url)
        assert web["connections_evicted"] >= 300 - 32 and web["connections_refused"] >= 1
        assert web["limited"]["body_timeouts"] == timed_out
    assert log.stat().st_size < 20_000, f"{log.stat().st_size} bytes of log"


# --------------------------------------------------------------------------- files left behind


def _roots(pid: int) -> list[Path]:
    import tempfile

    return list(Path(tempfile.gettempdir()).glob(f"{ROOT_PREFIX}{pid}-*"))


def test_aborted_upload_and_killed_web_leave_nothing_behind() -> None:
    with make_stack(extra_overrides={"web.max_upload_mb": 100}) as s:
        (root,) = _roots(s.proc.pid)
        boundary = "b0undary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="video"; '
            f'filename="big.mp4"\r\nContent-Type: video/mp4\r\n\r\n'
        ).encode()
        sock = _raw(
            _port(s.url),
            b"POST /api/jobs HTTP/1.1\r\nHost: x\r\n"
            + f"Content-Type: multipart/form-data; boundary={boundary}\r\n".encode()
            + f"Content-Length: {50 * 2**20}\r\n\r\n".encode()
            + head,
        )
        chunk = b"\0" * 2**20
        for _ in range(12):
            sock.sendall(chunk)
        wait_for(
            lambda: any(p.stat().st_size > 2**20 for p in root.rglob("input.video")),
            what="the upload being written",
        )
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # reset mid-upload
        wait_for(
            lambda: sorted(p.name for p in root.iterdir()) == ["owner"],
            what="the aborted upload's directory removed",
        )
        assert _web_stats(s.url)["limited"].get("uploads_aborted") == 1

    proc, _url = start_web(
        {
            "bus.annotated": "tcp://127.0.0.1:1",
            "bus.tracks": "tcp://127.0.0.1:2",
            "bus.control": "tcp://127.0.0.1:3",
        }
    )
    (killed_root,) = _roots(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert killed_root.exists()
    proc2, _ = start_web(
        {
            "bus.annotated": "tcp://127.0.0.1:1",
            "bus.tracks": "tcp://127.0.0.1:2",
            "bus.control": "tcp://127.0.0.1:3",
        }
    )
    try:
        assert not killed_root.exists(), "a new web process removes a killed one's directory"
        assert len(_roots(proc2.pid)) == 1
    finally:
        stop(proc2)
    assert not _roots(proc2.pid), "a stopped web process removes its own directory"


# --------------------------------------------------------------------------- fuzzing


class Tally:
    """Hostile inputs tried, per kind: accepted (2xx), rejected (4xx, 503, or closed without an
    answer for raw bytes), crashed (any other 5xx, no answer to an HTTP request)."""

    def __init__(self) -> None:
        self.kinds: dict[str, dict[str, int]] = {}
        self.crashes: list[str] = []

    def count(self, kind: str, status: int | None, what: str, raw: bool = False) -> None:
        k = self.kinds.setdefault(kind, {"tried": 0, "accepted": 0, "rejected": 0, "crashed": 0})
        k["tried"] += 1
        if status is not None and 200 <= status < 300:
            k["accepted"] += 1
        elif (status is not None and (400 <= status < 500 or status == 503)) or (
            status is None and raw
        ):
            k["rejected"] += 1
        else:
            k["crashed"] += 1
            self.crashes.append(f"{kind}: {status} for {what[:200]!r}")

    def total(self, key: str) -> int:
        return sum(k[key] for k in self.kinds.values())


def _send(stack: Stack, method: str, path: str, body: bytes | None, ctype: str) -> int | None:
    try:
        return http(method, stack.url + path, body, {"Content-Type": ctype}, timeout=10)[0]
    except (OSError, ValueError):
        return None  # no answer (or not HTTP): counted as a crash by the caller


TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=80)
JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(TEXT, inner, max_size=5),
    max_leaves=12,
)
SDP_LINE = st.one_of(
    st.builds(
        lambda kind, port, proto, fmts: f"m={kind} {port} {proto} {' '.join(fmts)}",
        st.sampled_from(["video", "audio", "application", "x"]),
        st.integers(-5, 100_000),
        st.sampled_from(["UDP/TLS/RTP/SAVPF", "RTP/AVP", "UDP/DTLS/SCTP", "!!"]),
        st.lists(st.one_of(st.integers(-1, 400).map(str), st.text(max_size=4)), max_size=4),
    ),
    st.sampled_from(
        [
            "a=mid:0",
            "a=recvonly",
            "a=sendrecv",
            "c=IN IP4 127.0.0.1",
            "c=garbage",
            "a=rtpmap:96 H264/90000",
            "a=rtpmap:300 H264/90000",
            "a=fmtp:96 packetization-mode=1;profile-level-id=42e01f",
            "a=candidate:1 1 udp 1 127.0.0.2 9 typ host",
            "a=candidate:1 1",
            "a=ice-ufrag:abcd",
            "a=ice-pwd:abcdefghijklmnopqrstuvwx",
            "a=fingerprint:sha-256 00:11",
            "a=setup:actpass",
            "a=group:BUNDLE 0",
            "a=rtcp-fb:96 nack",
        ]
    ),
    TEXT,
)
SDP = st.builds(
    lambda lines, v0: ("v=0\r\n" if v0 else "") + "".join(ln + "\r\n" for ln in lines),
    st.lists(SDP_LINE, max_size=14),
    st.booleans(),
)
PATHS = st.sampled_from(
    [
        "api/objects/{}",
        "api/objects/{}/label",
        "api/jobs/{}",
        "api/jobs/{}/frames/{}.jpg",
        "api/jobs/{}/start",
        "api/jobs/{}/cancel",
        "api/snapshot/{}.png",
        "static/{}",
        "{}",
    ]
)


@pytest.fixture(scope="module")
def fuzz_stack() -> Iterator[Stack]:
    limits = {"web.max_viewers": 8, "web.connect_timeout_s": 2, "web.request_timeout_s": 3}
    with make_stack(extra_overrides=limits) as s:
        yield s


@pytest.mark.slow
def test_fuzzed_http_inputs_never_crash_the_server(fuzz_stack: Stack) -> None:
    s, tally = fuzz_stack, Tally()

    def examples(n: int) -> settings:
        return settings(
            max_examples=n,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        )

    @examples(150)
    @given(SDP, st.sampled_from(["offer", "answer", None]))
    def offers(sdp: str, kind: str | None) -> None:
        body = json.dumps({"sdp": sdp, "type": kind}).encode()
        tally.count("offer", _send(s, "POST", "offer", body, "application/json"), sdp)

    valid = _offer_without_candidates().splitlines()

    @examples(100)
    @given(st.lists(st.tuples(st.integers(0, len(valid)), SDP_LINE, st.booleans()), max_size=4))
    def mutated_offers(edits: list[tuple[int, str, bool]]) -> None:
        lines = list(valid)
        for at, line, replace in edits:  # a browser's offer with lines replaced or inserted
            if replace and at < len(lines):
                lines[at] = line
            else:
                lines.insert(at, line)
        sdp = "".join(ln + "\r\n" for ln in lines)
        body = json.dumps({"sdp": sdp, "type": "offer"}).encode()
        tally.count("offer", _send(s, "POST", "offer", body, "application/json"), sdp)

    @examples(200)
    @given(
        st.sampled_from(["api/prompt", "api/objects", "api/objects/1/label", "api/reset", "offer"]),
        st.one_of(
            JSON,
            st.fixed_dictionaries({"prompt": JSON}),
            st.fixed_dictionaries({"box": JSON, "label": JSON}),
            st.fixed_dictionaries({"box": st.lists(JSON_LEAF, max_size=6), "label": TEXT}),
        ),
    )
    def json_posts(path: str, value: Any) -> None:
        body = json.dumps(value).encode()
        tally.count("json", _send(s, "POST", path, body, "application/json"), f"{path} {body!r}")

    @examples(100)
    @given(
        st.sampled_from(["api/prompt", "api/objects", "offer", "api/jobs"]), st.binary(max_size=300)
    )
    def byte_posts(path: str, body: bytes) -> None:
        tally.count("bytes", _send(s, "POST", path, body, "application/json"), f"{path} {body!r}")

    @examples(150)
    @given(
        PATHS, st.lists(TEXT, min_size=2, max_size=2), st.sampled_from(["GET", "DELETE", "POST"])
    )
    def paths(template: str, parts: list[str], method: str) -> None:
        from urllib.parse import quote

        path = template.format(*(quote(p, safe="") for p in parts))
        tally.count("path", _send(s, method, path, b"{}", "application/json"), f"{method} {path}")

    @examples(60)
    @given(
        st.dictionaries(
            st.sampled_from(["prompt", "seed_with", "boxes", "draft", "other"]), TEXT, max_size=4
        ),
        st.binary(max_size=200),
    )
    def uploads(fields: dict[str, str], data: bytes) -> None:
        boundary = "fuzzb0undary"
        out = b""
        for k, v in fields.items():
            out += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n'.encode()
            out += v.encode("utf-8", "surrogatepass") + b"\r\n"
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="v.mp4"\r\n\r\n'.encode()
        out += data + f"\r\n--{boundary}--\r\n".encode()
        status = _send(s, "POST", "api/jobs", out, f"multipart/form-data; boundary={boundary}")
        tally.count("upload", status, repr(fields))

    @examples(100)
    @given(st.binary(min_size=1, max_size=400))
    def raw_bytes(data: bytes) -> None:
        try:
            sock = _raw(_port(s.url), data + b"\r\n\r\n")
        except TimeoutError:
            # Not accepted within 5 s: the server is at web.max_connections while the earlier
            # stages' connections close (a loaded host). It must answer /healthz again, then
            # take this input on a second try; a server that stays unreachable fails here.
            wait_for(lambda: healthy(s.url), timeout=30, what="the web server answering again")
            sock = _raw(_port(s.url), data + b"\r\n\r\n")
        try:  # blank lines leave the server waiting for a request line: web.request_timeout_s
            line = _response_line(sock, 15)  # (3 s) closes it; 15 s bounds a loaded host
        finally:
            sock.close()
        status = (
            int(line.split()[1]) if line.startswith(b"HTTP/1.") and len(line.split()) > 1 else None
        )
        tally.count("raw", status, repr(data), raw=True)

    for run in (offers, mutated_offers, json_posts, byte_posts, paths, uploads, raw_bytes):
        run()
        assert s.proc.poll() is None, f"the web process died during {run.__name__}"
    deadline = time.monotonic() + 20  # offers that were answered: closed after connect_timeout_s
    while (w := _web_stats(s.url))["viewers"] and time.monotonic() < deadline:
        time.sleep(0.2)
    leaked, encoding = w["viewers"], w["encoder_active"]
    alive = healthy(s.url)
    figures = {
        "date": time.strftime("%Y-%m-%d"),
        "server": "promptcam web (real process, loopback) + stand-in engine",
        "tried": tally.total("tried"),
        "accepted": tally.total("accepted"),
        "rejected": tally.total("rejected"),
        "crashed": tally.total("crashed"),
        "by_kind": tally.kinds,
        "crashes": tally.crashes[:20],
        "viewers_answered": w["limited"].get("viewers_timed_out", 0),
        "leaked_viewers": leaked,
        "encoder_left_running": encoding,
        "server_alive": alive,
    }
    out = ROOT / "artifacts" / "web_faults.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))
    print(
        f"\nweb faults: {figures['tried']} hostile HTTP inputs tried, {figures['rejected']} "
        f"rejected, {figures['accepted']} accepted, {figures['crashed']} crashed ({out})"
    )
    assert alive and figures["crashed"] == 0, tally.crashes[:5]
    assert leaked == 0 and not encoding, "a fuzzed offer left a viewer behind"
