// CameraView: one camera's view on the live page (video, camera banner, prompt box, object
// list with per-object control, numbers). Every request names its camera (?camera=NAME), so a
// page can hold one view per camera; the live page makes one per camera the server lists, and
// sets each one's mode: "single" (the only camera), "tile" (one of the grid), "enlarged" (the
// camera shown large) or "thumb" (a small live picture beside the enlarged one). Each view has
// its own WebRTC peer connection, so cameras come and go without touching the others.
"use strict";

// supervision's ColorPalette.DEFAULT, indexed by track id as the renderer does
const PALETTE = ["#a351fb", "#ff4040", "#ffa1a0", "#ff7633", "#ffb633", "#d1d435", "#4cfb12",
  "#94cf1a", "#40de8a", "#1b9640", "#00d6c1", "#2e9caa", "#00c4ff", "#364797", "#6675ff",
  "#0019ef", "#863aff", "#530087", "#cd3aff", "#ff97ca", "#ff39c9"];

function colorOf(id) { return PALETTE[id % PALETTE.length]; }

// black or white, whichever contrasts more (WCAG), as the renderer picks its label text
function textColorOf(hex) {
  const lin = (v) => { const c = v / 255; return c <= 0.04045 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
  const n = parseInt(hex.slice(1), 16);
  const l = 0.2126 * lin(n >> 16) + 0.7152 * lin((n >> 8) & 255) + 0.0722 * lin(n & 255);
  return (l + 0.05) / 0.05 >= 1.05 / (l + 0.05) ? "#000" : "#fff";
}

function fmt(v, unit, digits = 1) {
  return v === null || v === undefined ? "–" : (typeof v === "number" ? v.toFixed(digits) : v) + (unit || "");
}

// How often a view asks for its objects and numbers, by mode (ms): a grid of many cameras
// asks less often than the one camera being worked with (the objects often enough that the
// labels the overlay draws on a small picture follow their objects).
const POLL_MS = { single: [300, 1000], enlarged: [300, 1000], tile: [400, 1500], thumb: [700, 2000] };
// After the page sends a prompt, answers that still give the one before are the engine's state
// before the change (it shows in the next frame or stats poll): ignored this long.
const PROMPT_SETTLE_MS = 5000;

class CameraView {
  // page: {enlarge(camera|null), isActive(view), touch(view)}
  constructor(container, camera, page = null) {
    this.camera = camera;
    this.page = page;
    this.mode = "single";
    this.alive = true;
    this.awaiting = null;         // {id, until}: an object just added, not listed yet
    const node = document.getElementById("camera-view").content.firstElementChild.cloneNode(true);
    node.dataset.camera = camera;
    node.dataset.mode = this.mode;
    container.appendChild(node);
    this.root = node;
    this.el = {};
    for (const e of node.querySelectorAll("[data-role]")) this.el[e.dataset.role] = e;
    text(this.el.name, camera);
    this.rows = new Map();        // object id -> <tr>, kept and updated in place
    this.objects = [];            // newest object list
    this.frame = [0, 0];          // frame size of the newest tracks
    this.selected = null;         // selected object id
    this.promptEdited = false;    // the box holds an edit not sent (see showPrompt)
    this.enginePrompt = null;     // the engine's prompt, as last reported
    this.sentPrompt = null;       // {prompt, until}: a prompt this page sent, not reported yet
    this.state = null;
    this.pc = null;
    this.overlay = new BoxOverlay(this.el.video, this.el.overlay, {
      frameSize: () => this.frame,
      onPoint: (p) => this.select(this.hit(p)),
      onBox: (box) => this.addObject(box),
      avoid: () => (this.zones && this.zones.labelRects) || [],  // zone and line labels
    });
    this.bind();
    this.zones = new ZoneEditor(this);     // zones.js: zones and lines over the video
    this.events = new EventsPanel(this);   // events_panel.js: timeline, filters, counts
    this.startVideo();
    this.pollObjects();
    this.pollStats();
  }

  // The view's mode on the page (see the top of this file).
  setMode(mode) {
    if (mode === this.mode) return;
    const was = this.mode;
    this.mode = mode;
    this.root.dataset.mode = mode;
    const enlarge = this.el.enlarge;
    enlarge.hidden = mode === "single";
    text(enlarge, mode === "enlarged" ? "All cameras" : "Enlarge");
    enlarge.title = mode === "enlarged" ? "back to the grid of cameras" : "this camera large, the others small";
    this.overlay.enabled = mode !== "thumb";
    this.el.overlay.title = mode === "thumb" ? "show this camera large" : "click an object to select it; drag to add one";
    const numbers = this.root.querySelector("details");
    if (mode === "tile") numbers.open = false;
    else if (was === "tile" || was === "single") numbers.open = true;
  }

  // The view is gone (its camera is no longer served): stop polling, close the connection.
  destroy() {
    this.alive = false;
    if (this.pc) { this.pc.close(); this.pc = null; }
    document.removeEventListener("keydown", this.onKey);
    document.removeEventListener("fullscreenchange", this.onFullscreen);
    this.root.remove();
  }

  pollDelay(which) { return (POLL_MS[this.mode] || POLL_MS.single)[which]; }
  url(path) { return path + (path.includes("?") ? "&" : "?") + "camera=" + encodeURIComponent(this.camera); }

  say(message, isError = false) {
    this.el.note.classList.toggle("error", isError);
    text(this.el.note, message);
  }

  async call(path, method, body) {
    const options = { method };
    if (body !== undefined) {
      options.headers = { "Content-Type": "application/json" };
      options.body = JSON.stringify(body);
    }
    return api(this.url(path), options);
  }

  bind() {
    const el = this.el;
    el["prompt-form"].addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const prompt = el.prompt.value;
      el["prompt-status"].classList.remove("error");
      text(el["prompt-status"], "sending…");
      try {
        const r = await this.call("/api/prompt", "POST", { prompt });
        this.promptEdited = false;
        this.sentPrompt = { prompt: r.prompt, until: Date.now() + PROMPT_SETTLE_MS };
        text(el["prompt-status"], trackingLine(r.prompt));
      } catch (e) {
        el["prompt-status"].classList.add("error");
        text(el["prompt-status"], e.message);
      }
    });
    el.prompt.addEventListener("input", () => { this.promptEdited = true; });
    el.reset.addEventListener("click", async () => {
      try { await this.call("/api/reset", "POST", {}); this.select(null); this.say("all tracks ended"); } catch (e) { this.say(e.message, true); }
    });
    el.remove.addEventListener("click", () => this.removeSelected());
    el["relabel-form"].addEventListener("submit", (ev) => { ev.preventDefault(); this.relabelSelected(); });
    el.snapshot.addEventListener("click", () => this.snapshot());
    el.fullscreen.addEventListener("click", () => this.toggleFullscreen());
    el.enlarge.addEventListener("click", () => {
      if (this.page) this.page.enlarge(this.mode === "enlarged" ? null : this.camera);
    });
    el.stage.addEventListener("click", () => {
      if (this.mode === "thumb" && this.page) this.page.enlarge(this.camera);
    });
    // keys go to the view last used (the only one, or the enlarged one, by default)
    this.root.addEventListener("pointerdown", () => { if (this.page) this.page.touch(this); });
    this.root.addEventListener("focusin", () => { if (this.page) this.page.touch(this); });
    this.onKey = (ev) => {
      const here = this.root.contains(ev.target);
      if (!here && (ev.target !== document.body || (this.page && !this.page.isActive(this)))) return;
      if (ev.key === "Delete" && this.selected !== null && !/INPUT|SELECT/.test(ev.target.tagName)) this.removeSelected();
      if (ev.key === "Escape") this.select(null);
    };
    this.onFullscreen = () => {
      this.root.classList.toggle("is-fullscreen", document.fullscreenElement === el.view);
      this.overlay.redraw();
    };
    document.addEventListener("keydown", this.onKey);
    document.addEventListener("fullscreenchange", this.onFullscreen);
  }

  // ------------------------------------------------------------------ video

  async startVideo() {
    if (this.pc) { this.pc.close(); this.pc = null; }
    if (!this.alive) return;
    const conn = new RTCPeerConnection({ iceServers: [] });
    this.pc = conn;
    conn.addTransceiver("video", { direction: "recvonly" });
    conn.ontrack = (ev) => { this.el.video.srcObject = ev.streams[0] || new MediaStream([ev.track]); };
    conn.onconnectionstatechange = () => {
      this.videoState = conn.connectionState;
      this.renderStatusLine();
      if (conn === this.pc && this.alive && (conn.connectionState === "failed" || conn.connectionState === "closed")) {
        setTimeout(() => { if (conn === this.pc) this.startVideo(); }, 2000);
      }
    };
    try {
      await conn.setLocalDescription(await conn.createOffer());
      await waitForIceGathering(conn);
      const answer = await this.call("/offer", "POST", { sdp: conn.localDescription.sdp, type: conn.localDescription.type });
      await conn.setRemoteDescription(answer);
    } catch (e) {
      if (conn !== this.pc) return;  // replaced or destroyed meanwhile
      this.videoState = e.message + " (retrying)";
      this.renderStatusLine();
      setTimeout(() => { if (conn === this.pc) this.startVideo(); }, 2000);
    }
  }

  toggleFullscreen() {
    if (document.fullscreenElement) document.exitFullscreen();
    else this.el.view.requestFullscreen().catch((e) => this.say("fullscreen: " + e.message, true));
  }

  // ------------------------------------------------------------------ objects

  async pollObjects() {
    if (!this.alive) return;
    try { this.renderObjects(await this.call("/api/objects", "GET")); } catch (e) { /* the stats poll shows it */ }
    setTimeout(() => this.pollObjects(), this.pollDelay(0));
  }

  renderObjects(data) {
    this.objects = data.objects;
    if (data.width) this.frame = [data.width, data.height];
    const tbody = this.el.objects;
    const seen = new Set();
    let before = null;
    const sorted = [...data.objects].sort((a, b) => a.id - b.id);
    for (let i = sorted.length - 1; i >= 0; i--) {  // from the end, so each row goes before the next
      const o = sorted[i];
      seen.add(o.id);
      let tr = this.rows.get(o.id);
      if (!tr) {
        tr = document.createElement("tr");
        tr.dataset.id = o.id;
        tr.tabIndex = 0;
        tr.innerHTML = '<td><span class="swatch"></span><span class="oid"></span></td><td class="label"></td><td class="num"></td><td class="num"></td><td class="state"></td>';
        tr.querySelector(".swatch").style.background = colorOf(o.id);
        tr.querySelector(".oid").textContent = "#" + o.id;
        tr.addEventListener("click", () => this.select(o.id));
        this.rows.set(o.id, tr);
      }
      const cells = tr.children;
      setText(cells[1], o.label);
      setText(cells[2], o.confidence.toFixed(2));
      setText(cells[3], String(o.age));
      setText(cells[4], o.state);
      if (tr.nextSibling !== before || tr.parentNode !== tbody) tbody.insertBefore(tr, before);
      before = tr;
    }
    for (const [id, tr] of this.rows) {
      if (!seen.has(id)) { tr.remove(); this.rows.delete(id); }
    }
    const waiting = this.awaiting && this.awaiting.id === this.selected && Date.now() < this.awaiting.until;
    if (this.selected !== null && seen.has(this.selected) && waiting) {
      this.awaiting = null;
      this.select(this.selected);
    } else if (this.selected !== null && !seen.has(this.selected) && data.seq !== null && !waiting) {
      this.say("object #" + this.selected + " is no longer tracked");
      this.select(null);
    }
    text(this.el.count, "(" + data.objects.length + ")");
    this.renderSelection();
  }

  // select an object the engine has just created, once it shows in the list
  expect(id) {
    this.selected = id;
    this.awaiting = { id, until: Date.now() + 5000 };
  }

  // the object under a click: the smallest box there; a click where several overlap goes to
  // the next of them after the one selected, so each can be reached
  hit([x, y]) {
    const under = this.objects
      .filter((o) => x >= o.box[0] && x <= o.box[2] && y >= o.box[1] && y <= o.box[3])
      .map((o) => ({ id: o.id, area: (o.box[2] - o.box[0]) * (o.box[3] - o.box[1]) }))
      .sort((a, b) => a.area - b.area || a.id - b.id);
    if (!under.length) return null;
    const at = under.findIndex((o) => o.id === this.selected);
    return under[(at + 1) % under.length].id;
  }

  select(id) {
    this.selected = id;
    for (const [rid, tr] of this.rows) tr.classList.toggle("selected", rid === id);
    if (id !== null) {
      const tr = this.rows.get(id);
      if (tr) tr.scrollIntoView({ block: "nearest" });
      const o = this.objects.find((x) => x.id === id);
      this.el["relabel-input"].value = o ? o.label : "";
    }
    this.renderSelection();
  }

  // The selection, and the overlay: the selected object's box, and every object's label where
  // the video's own labels are too small to read (BoxOverlay draws those only then)
  renderSelection() {
    const o = this.selected === null ? null : this.objects.find((x) => x.id === this.selected);
    this.el.selection.hidden = !o;
    if (o) text(this.el["selected-name"], "#" + o.id + " " + o.label);
    const boxes = this.objects.filter((x) => x !== o).map((x) => ({
      box: x.box, color: colorOf(x.id), textColor: textColorOf(colorOf(x.id)),
      label: "#" + x.id + " " + x.label + " " + x.confidence.toFixed(2), labelOnly: true, whenSmall: true,
    }));
    if (o) boxes.push({ box: o.box, color: colorOf(o.id), textColor: textColorOf(colorOf(o.id)), selected: true, label: "#" + o.id + " " + o.label + " selected" });
    this.overlay.setBoxes(boxes);
  }

  async addObject(box) {
    const label = this.el["new-label"].value.trim() || "object";
    try {
      const r = await this.call("/api/objects", "POST", { box, label });
      this.say("added #" + r.id + " " + r.label);
      this.expect(r.id);
    } catch (e) {
      this.say(e.message, true);
    }
  }

  async removeSelected() {
    const id = this.selected;
    if (id === null) return;
    try {
      await this.call("/api/objects/" + id, "DELETE");
      this.say("removed #" + id);
      this.select(null);
    } catch (e) { this.say(e.message, true); }
  }

  async relabelSelected() {
    const id = this.selected;
    if (id === null) return;
    try {
      const r = await this.call("/api/objects/" + id + "/label", "POST", { label: this.el["relabel-input"].value });
      this.say("#" + id + " is now #" + r.id + " " + r.label);
      this.expect(r.id);
    } catch (e) { this.say(e.message, true); }
  }

  // The engine's prompt (from the state polls): the box and "tracking: ..." follow it, whoever
  // changed it (this page, another one, the CLI, an engine restart), except that the box is not
  // overwritten while the user types in it (focused and edited); an edit not sent is kept until
  // the engine's prompt changes.
  showPrompt(prompt) {
    const sent = this.sentPrompt;
    if (sent && prompt !== sent.prompt && Date.now() < sent.until) return;  // from before ours
    this.sentPrompt = null;
    const input = this.el.prompt;
    const typing = this.promptEdited && document.activeElement === input;
    const changed = prompt !== this.enginePrompt;
    this.enginePrompt = prompt;
    if (!typing && (changed || !this.promptEdited)) {
      this.promptEdited = false;
      if (input.value !== prompt) input.value = prompt;
    }
    const status = this.el["prompt-status"];
    if (changed || status.textContent === "") {
      status.classList.remove("error");
      text(status, trackingLine(prompt));
    }
    text(this.el["s-prompt"], prompt);
  }

  // ------------------------------------------------------------------ snapshot

  async snapshot() {
    try {
      const snap = await this.call("/api/snapshot", "GET");
      const base = "promptcam-" + snap.camera + "-" + snap.seq;
      download(withToken(snap.image), base + ".png");
      const blob = new Blob([JSON.stringify(snap.tracks, null, 1)], { type: "application/json" });
      const href = URL.createObjectURL(blob);
      download(href, base + ".json");
      setTimeout(() => URL.revokeObjectURL(href), 60000);
      this.say("snapshot of frame " + snap.seq + ": " + base + ".png and .json");
    } catch (e) { this.say(e.message, true); }
  }

  // ------------------------------------------------------------------ state and numbers

  async pollStats() {
    if (!this.alive) return;
    try {
      this.renderStats(await this.call("/api/stats", "GET"));
    } catch (e) {
      this.state = { state: "engine_restarting", banner: "web server not answering", frame_age_s: null, waiting_for: "waiting for the web server: it does not answer" };
      this.renderBanner();
      text(this.el["stats-error"], e.message);
    }
    setTimeout(() => this.pollStats(), this.pollDelay(1));
  }

  renderBanner() {
    const s = this.state;
    const b = this.el.banner;
    b.dataset.state = s.state;
    const age = s.frame_age_s === null || s.frame_age_s === undefined ? "" : " · " + fmt(s.frame_age_s, " s");
    text(b, s.banner + (s.state === "live" ? age : ""));
    this.root.dataset.state = s.state;
    const stale = s.state !== "live" && s.state !== "starting";
    this.el["objects-box"].classList.toggle("stale", stale);
    // what the view waits for, over the picture (covering the video's placeholder before the
    // first picture, which says the same smaller)
    const note = this.el["stage-note"];
    note.hidden = !s.waiting_for;
    note.classList.toggle("cover", s.frame_age_s === null || s.frame_age_s === undefined);
    text(note, s.waiting_for || "");
    text(this.el["stale-note"], stale ? "camera not live: objects as of the last frame" + (s.frame_age_s ? ", " + fmt(s.frame_age_s, " s") + " ago" : "") : "");
    if (s.prompt !== null && s.prompt !== undefined) this.showPrompt(s.prompt);
    this.renderStatusLine();
  }

  renderStatusLine() {
    const s = this.state;
    const parts = ["video: " + (this.videoState || "connecting")];
    if (s) {
      parts.push("camera: " + s.banner);
      if (s.frame_age_s !== null && s.frame_age_s !== undefined) parts.push("frame age " + fmt(s.frame_age_s, " s"));
      if (s.last_error && s.state !== "live") parts.push(s.last_error);
    }
    text(this.el.status, parts.join(" · "));
  }

  renderStats(s) {
    const w = s.web, e = s.engine || {}, el = this.el;
    this.state = s.state;
    this.renderBanner();
    text(el["s-engine-fps"], fmt(e.fps_in) + " / " + fmt(e.fps_out));
    const dropped = e.frames_dropped !== undefined ? e.frames_dropped : e.dropped;
    text(el["s-dropped"], (dropped === undefined ? "–" : dropped) + " engine, " + w.frames_skipped + " web");
    text(el["s-latency"], fmt(w.latency_ms_p50, " ms") + " (p95 " + fmt(w.latency_ms_p95, " ms") + ")");
    text(el["s-tracks-latency"], fmt(w.tracks_latency_ms, " ms"));
    text(el["s-video-fps"], fmt(w.annotated_fps_in) + " / " + fmt(w.video_fps_out));
    text(el["s-viewers"], w.viewers);
    // a normal start (models loading) is not an error
    const quiet = s.state.state === "starting";
    text(el["stats-error"], s.engine_error && !quiet ? "engine: " + s.engine_error : "");
  }
}

function trackingLine(prompt) { return prompt ? "tracking: " + prompt : "no prompt: drawn boxes only"; }

function setText(el, value) { if (el.textContent !== value) el.textContent = value; }

function download(href, name) {
  const a = document.createElement("a");
  a.href = href;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
}

async function waitForIceGathering(conn) {
  if (conn.iceGatheringState === "complete") return;
  await new Promise((resolve) => {
    const done = () => { if (conn.iceGatheringState === "complete") { conn.removeEventListener("icegatheringstatechange", done); resolve(); } };
    conn.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 3000);
  });
}
