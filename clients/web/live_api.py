"""Routes of the live page: the cameras, and for each camera its prompt, objects (list, add,
remove, relabel, reset), state, stats and snapshots. Every per-camera route takes
``?camera=NAME`` (a camera the server does not show is 404; it may be left out when the server
shows one camera, and is required, 400, when it shows several); control requests name that
camera (v1.1), ``stats`` figures are that camera's.

- ``GET /api/cameras``: every camera shown, in order, with its banner (the page follows it);
- ``GET /api/state``: one camera's banner (``camera_state.py``);
- ``POST /api/prompt`` ``{"prompt"}``; ``GET /api/objects``; ``POST /api/objects``
  ``{"box":[x1,y1,x2,y2],"label"}`` (``add_object``); ``DELETE /api/objects/{id}``
  (``remove_object``); ``POST /api/objects/{id}/label`` ``{"label"}``; ``POST /api/reset``;
- ``GET /api/stats``; ``GET /api/snapshot`` (the newest annotated frame and its tracks
  message, same ``seq``) and ``GET /api/snapshot/{seq}.png``.

Relabelling: the contract has no relabel command, so the object is re-seeded from its current
box with the new label (``add_object``) and the old one removed: it gets a new ID.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from clients.jsontypes import JsonObject
from clients.web.channels import CameraChannel
from clients.web.context import (
    MAX_LABEL_CHARS,
    MAX_PROMPT_CHARS,
    STATE,
    WebState,
    box_of,
    camera_of,
    clean_text,
    control,
    control_ok,
    read_json,
)
from clients.web.limits import describe_limits
from stream.errors import PromptcamError
from stream.wire import TrackedObject, confidence_of


def _object_dict(o: TrackedObject) -> JsonObject:
    return {
        "id": o.id,
        "label": o.label,
        "score": round(o.score, 3),
        "confidence": round(
            o.confidence if o.confidence is not None else confidence_of(o.score), 3
        ),
        "age": o.age,
        "state": o.state,
        "box": o.box,
    }


async def api_cameras(request: web.Request) -> web.Response:
    st = request.app[STATE]
    cameras = []
    for ch in st.channels:
        status = ch.monitor.status()
        cameras.append(
            {
                "camera": ch.name,
                "state": status.state,
                "banner": status.banner,
                "prompt": status.prompt,
                "frame_age_s": status.frame_age_s,
                "viewers": len(ch.pcs),
            }
        )
    return web.json_response({"ok": True, "cameras": cameras})


async def api_state(request: web.Request) -> web.Response:
    ch = camera_of(request)
    return web.json_response({"ok": True, **ch.monitor.status().as_dict(), "viewers": len(ch.pcs)})


async def api_prompt(request: web.Request) -> web.Response:
    st = request.app[STATE]
    ch = camera_of(request)
    given = (await read_json(request)).get("prompt")
    if not isinstance(given, str) or len(given) > MAX_PROMPT_CHARS:
        raise web.HTTPBadRequest(
            text=f'expected {{"prompt": "<text, up to {MAX_PROMPT_CHARS} characters>"}}'
        )
    prompt = clean_text(given, "the prompt", MAX_PROMPT_CHARS, allow_empty=True)
    reply = await control_ok(st, {"cmd": "set_prompt", "prompt": prompt}, ch.name, "the prompt")
    return web.json_response({"ok": True, "prompt": prompt, "labels": reply.get("labels")})


async def api_objects(request: web.Request) -> web.Response:
    ch = camera_of(request)
    msg, _, age = ch.tracks.latest()
    if msg is None:
        return web.json_response(
            {"ok": True, "camera": ch.name, "seq": None, "prompt": None, "objects": []}
        )
    h = msg.header
    return web.json_response(
        {
            "ok": True,
            "camera": ch.name,
            "seq": h.seq,
            "prompt": h.prompt,
            "width": h.width,
            "height": h.height,
            "t_capture_ns": h.t_capture_ns,
            "received_age_s": round(age, 3),
            "latency_ms": round((time.time_ns() - h.t_capture_ns) / 1e6, 1),
            "objects": [_object_dict(o) for o in h.objects],
        }
    )


def _label_of(body: JsonObject, default: str | None = None) -> str:
    if "label" not in body and default is not None:
        return default
    return clean_text(body.get("label"), "the label", MAX_LABEL_CHARS)


async def api_add_object(request: web.Request) -> web.Response:
    st = request.app[STATE]
    ch = camera_of(request)
    body = await read_json(request)
    box = box_of(body.get("box"))
    label = _label_of(body, "object")
    reply = await control_ok(
        st, {"cmd": "add_object", "box": box, "label": label}, ch.name, "the box"
    )
    return web.json_response({"ok": True, "id": reply.get("id"), "label": label}, status=201)


def _object_id(request: web.Request) -> int:
    raw = request.match_info["object_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise web.HTTPNotFound(text=f"no object {raw[:32]!r}: object ids are whole numbers")
    return int(raw)


async def api_remove_object(request: web.Request) -> web.Response:
    st = request.app[STATE]
    ch = camera_of(request)
    tid = _object_id(request)
    await control_ok(st, {"cmd": "remove_object", "id": tid}, ch.name, f"removing object #{tid}")
    return web.json_response({"ok": True, "removed": tid})


async def api_relabel_object(request: web.Request) -> web.Response:
    st = request.app[STATE]
    ch = camera_of(request)
    tid = _object_id(request)
    label = _label_of(await read_json(request))
    msg, _, _ = ch.tracks.latest()
    current = next((o for o in (msg.header.objects if msg else []) if o.id == tid), None)
    if current is None:
        raise web.HTTPNotFound(text=f"object #{tid} is not tracked any more")
    added = await control_ok(
        st,
        {"cmd": "add_object", "box": list(current.box), "label": label},
        ch.name,
        "the new label",
    )
    await control_ok(st, {"cmd": "remove_object", "id": tid}, ch.name, f"removing object #{tid}")
    return web.json_response({"ok": True, "id": added.get("id"), "replaced": tid, "label": label})


async def api_reset(request: web.Request) -> web.Response:
    st = request.app[STATE]
    ch = camera_of(request)
    await control_ok(st, {"cmd": "reset"}, ch.name, "the reset")
    return web.json_response({"ok": True})


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def _engine_stats(st: WebState, ch: CameraChannel) -> tuple[JsonObject | None, str | None]:
    cached = ch.monitor.engine_stats()
    if cached is not None:
        return cached, None
    try:
        reply = await control(st, {"cmd": "stats"}, None, 1000)
    except web.HTTPServiceUnavailable as e:
        return None, e.text
    stats = reply.get("stats")
    if reply.get("ok") and isinstance(stats, dict):
        return stats, None
    return None, str(reply.get("error"))


async def api_stats(request: web.Request) -> web.Response:
    st = request.app[STATE]
    ch = camera_of(request)
    m, counts = st.metrics, ch.counts
    lat = list(counts.latencies)
    enc = ch.hub.encoder
    web_stats: JsonObject = {
        "camera": ch.name,
        "viewers": len(ch.pcs),
        "max_viewers": st.cfg.web.max_viewers,
        "viewers_total": st.channels.viewers(),
        "cameras": len(st.channels),
        "annotated_fps_in": round(ch.rate_in.rate(counts.annotated), 2),
        "tracks_fps_in": round(ch.rate_tracks.rate(counts.tracks), 2),
        "video_fps_out": round(
            ch.rate_out.rate(counts.frames_sent) / max(1, len(ch.hub.viewers)), 2
        ),
        "frames_sent": counts.frames_sent,
        "annotated_received": counts.annotated,
        "frames_encoded": enc.encoded,
        "encoder_active": enc.active,
        "keyframes": enc.keyframes,
        "frames_skipped": enc.skipped,
        "viewer_packets_dropped": sorted((v.dropped for v in ch.hub.viewers), reverse=True),
        "rejected": st.annotated.rejected_total + st.tracks.rejected_total,
        "latency_ms_p50": None if not lat else round(1e3 * (_percentile(lat, 0.5) or 0), 1),
        "latency_ms_p95": None if not lat else round(1e3 * (_percentile(lat, 0.95) or 0), 1),
        "limited": dict(m.limited_n),
    }
    if st.guard is not None:
        web_stats |= describe_limits(st.guard, st.cfg.web.idle_timeout_s)
    msg, _, _ = ch.tracks.latest()
    if msg is not None:
        web_stats["tracks_latency_ms"] = round(
            (msg.header.t_publish_ns - msg.header.t_capture_ns) / 1e6, 1
        )
    engine, engine_error = await _engine_stats(st, ch)
    engine = ch.monitor.camera_stats(engine)
    state = ch.monitor.status()
    return web.json_response(
        {
            "ok": True,
            "web": web_stats,
            "engine": engine,
            "engine_error": engine_error,
            "state": state.as_dict(),
        }
    )


async def api_snapshot(request: web.Request) -> web.Response:
    ch = camera_of(request)
    snap = ch.history.take()
    if snap is None:
        raise web.HTTPNotFound(text="no frame to snapshot yet: the engine has sent none")
    return web.json_response(
        {
            "ok": True,
            "camera": ch.name,
            "seq": snap.seq,
            "t_capture_ns": snap.frame.t_capture_ns,
            "image": f"/api/snapshot/{snap.seq}.png?camera={ch.name}",
            "tracks": snap.tracks.header.model_dump(mode="json"),
        }
    )


async def api_snapshot_png(request: web.Request) -> web.Response:
    ch = camera_of(request)
    camera = ch.name
    raw = request.match_info["seq"]
    snap = ch.history.get(int(raw)) if raw.isdigit() and len(raw) < 19 else None
    if snap is None:
        raise web.HTTPNotFound(text="no such snapshot (only the newest few are kept)")
    try:
        png = await asyncio.get_running_loop().run_in_executor(None, snap.png)
    except (ValueError, PromptcamError) as e:
        raise web.HTTPInternalServerError(text=f"snapshot not encoded: {e}") from None
    return web.Response(
        body=png,
        content_type="image/png",
        headers={
            "Content-Disposition": f'attachment; filename="promptcam-{camera}-{snap.seq}.png"'
        },
    )


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/cameras", api_cameras)
    r.add_get("/api/state", api_state)
    r.add_post("/api/prompt", api_prompt)
    r.add_get("/api/objects", api_objects)
    r.add_post("/api/objects", api_add_object)
    r.add_delete("/api/objects/{object_id}", api_remove_object)
    r.add_post("/api/objects/{object_id}/label", api_relabel_object)
    r.add_post("/api/reset", api_reset)
    r.add_get("/api/stats", api_stats)
    r.add_get("/api/snapshot", api_snapshot)
    r.add_get("/api/snapshot/{seq}.png", api_snapshot_png)
