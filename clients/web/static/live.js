// Live page: WebRTC video (receive only), prompt box, object list and stats, all polled.
"use strict";
const video = document.getElementById("video");
const videoStatus = document.getElementById("video-status");
document.getElementById("offline-link").href = withToken("/offline");

// Palette of supervision's ColorPalette.DEFAULT, indexed by track id as the renderer does.
const PALETTE = ["#a351fb", "#ff4040", "#ffa1a0", "#ff7633", "#ffb633", "#d1d435", "#4cfb12",
  "#94cf1a", "#40de8a", "#1b9640", "#00d6c1", "#2e9caa", "#00c4ff", "#364797", "#6675ff",
  "#0019ef", "#863aff", "#530087", "#cd3aff", "#ff97ca", "#ff39c9"];

let pc = null;

async function waitForIceGathering(conn) {
  if (conn.iceGatheringState === "complete") return;
  await new Promise((resolve) => {
    const done = () => { if (conn.iceGatheringState === "complete") { conn.removeEventListener("icegatheringstatechange", done); resolve(); } };
    conn.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 3000);
  });
}

async function startVideo() {
  if (pc) { pc.close(); pc = null; }
  const conn = new RTCPeerConnection({ iceServers: [] });
  pc = conn;
  conn.addTransceiver("video", { direction: "recvonly" });
  conn.ontrack = (ev) => { video.srcObject = ev.streams[0] || new MediaStream([ev.track]); };
  conn.onconnectionstatechange = () => {
    text(videoStatus, "video: " + conn.connectionState);
    if (conn === pc && (conn.connectionState === "failed" || conn.connectionState === "closed")) {
      setTimeout(startVideo, 2000);
    }
  };
  try {
    await conn.setLocalDescription(await conn.createOffer());
    await waitForIceGathering(conn);
    const answer = await api("/offer", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: conn.localDescription.sdp, type: conn.localDescription.type }),
    });
    await conn.setRemoteDescription(answer);
  } catch (e) {
    text(videoStatus, "video: " + e.message + " (retrying)");
    setTimeout(startVideo, 2000);
  }
}

document.getElementById("prompt-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const status = document.getElementById("prompt-status");
  const prompt = document.getElementById("prompt").value;
  status.classList.remove("error");
  text(status, "sending…");
  try {
    await api("/api/prompt", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ prompt }) });
    text(status, "tracking: " + prompt);
  } catch (e) {
    status.classList.add("error");
    text(status, e.message);
  }
});

function renderObjects(data) {
  const tbody = document.getElementById("objects");
  const rows = data.objects.map((o) => {
    const tr = document.createElement("tr");
    tr.dataset.id = o.id;
    const sw = `<span class="swatch" style="background:${PALETTE[o.id % PALETTE.length]}"></span>`;
    tr.innerHTML = `<td>${sw}#${o.id}</td><td></td><td>${o.score.toFixed(2)}</td><td>${o.age}</td>`;
    tr.children[1].textContent = o.label;
    return tr;
  });
  tbody.replaceChildren(...rows);
  text(document.getElementById("objects-count"), "(" + data.objects.length + ")");
  text(document.getElementById("s-prompt"), data.prompt);
}

async function pollObjects() {
  try { renderObjects(await api("/api/objects")); } catch (e) { /* shown by the stats poll */ }
  setTimeout(pollObjects, 300);
}

function fmt(v, unit) { return v === null || v === undefined ? "–" : (typeof v === "number" ? v.toFixed(1) : v) + (unit || ""); }

async function pollStats() {
  const err = document.getElementById("stats-error");
  try {
    const s = await api("/api/stats");
    const w = s.web, e = s.engine || {};
    text(document.getElementById("s-engine-fps"), fmt(e.fps_in) + " / " + fmt(e.fps_out));
    const dropped = e.frames_dropped !== undefined ? e.frames_dropped : e.dropped;
    text(document.getElementById("s-dropped"), (dropped === undefined ? "–" : dropped) + " engine, " + w.frames_skipped + " web");
    text(document.getElementById("s-latency"), fmt(w.latency_ms_p50, " ms") + " (p95 " + fmt(w.latency_ms_p95, " ms") + ")");
    text(document.getElementById("s-tracks-latency"), fmt(w.tracks_latency_ms, " ms"));
    text(document.getElementById("s-video-fps"), fmt(w.annotated_fps_in) + " / " + fmt(w.video_fps_out));
    text(document.getElementById("s-viewers"), w.viewers);
    text(err, s.engine_error ? "engine: " + s.engine_error : "");
  } catch (e) {
    text(err, e.message);
  }
  setTimeout(pollStats, 1000);
}

startVideo();
pollObjects();
pollStats();
