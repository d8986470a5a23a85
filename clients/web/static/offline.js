// Offline page: upload a video (a draft), draw boxes on its frames, say what to track, start;
// the job list shows every job with its progress, ETA, cancel and results.
"use strict";
document.getElementById("live-link").href = withToken("/");
const $ = (id) => document.getElementById(id);
const BOX_COLOR = "#4cfb12";

let draft = null;        // the job being prepared: {id, video: {width, height}, total, ...}
let boxes = [];          // [{box: [x1, y1, x2, y2], frame: n}]
let frame = 0;

const overlay = new BoxOverlay($("preview-img"), $("preview-overlay"), {
  frameSize: () => (draft ? [draft.video.width, draft.video.height] : [0, 0]),
  onBox: (box) => { boxes.push({ box, frame }); renderBoxes(); },
  onPoint: ([x, y]) => {
    const i = boxes.findIndex((b) => b.frame === frame && x >= b.box[0] && x <= b.box[2] && y >= b.box[1] && y <= b.box[3]);
    if (i >= 0) { boxes.splice(i, 1); renderBoxes(); }
  },
});
$("preview-img").addEventListener("load", () => overlay.redraw());

function say(el, message, isError = false) {
  el.classList.toggle("error", isError);
  text(el, message);
}

function upload(file) {
  // XMLHttpRequest, not fetch: it reports upload progress
  return new Promise((resolve, reject) => {
    const data = new FormData();
    data.append("draft", "1");
    data.append("video", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/jobs");
    if (promptcamToken) xhr.setRequestHeader("X-Promptcam-Token", promptcamToken);
    xhr.upload.onprogress = (ev) => {
      if (!ev.lengthComputable) return;
      $("upload-progress").value = ev.loaded / ev.total;
      text($("upload-status"), "uploading " + Math.round(100 * ev.loaded / ev.total) + " %");
    };
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new Error(body && body.error ? body.error : "upload failed (" + xhr.status + ")"));
    };
    xhr.onerror = () => reject(new Error("the upload was interrupted: is the server running?"));
    xhr.send(data);
  });
}

$("file").addEventListener("change", async () => {
  const file = $("file").files[0];
  if (!file) return;
  $("draft").hidden = true;
  $("upload-progress").hidden = false;
  $("upload-progress").value = 0;
  say($("upload-status"), "uploading…");
  try {
    openDraft(await upload(file));
    say($("upload-status"), "uploaded " + file.name);
  } catch (e) {
    say($("upload-status"), e.message, true);
  }
  $("upload-progress").hidden = true;
  refreshJobs();
});

// A new video starts with an empty prompt and no boxes: what the previous job tracked is in
// its row of the job list, never silently carried over to the next one.
function openDraft(job) {
  draft = job;
  boxes = [];
  $("prompt").value = "";
  const v = job.video;
  text($("draft-name"), job.name + " · " + v.width + "×" + v.height + (job.total ? " · " + job.total + " frames" : "") + (v.fps ? " · " + v.fps.toFixed(1) + " fps" : ""));
  const last = Math.max(0, (job.total || 1) - 1);
  $("frame-slider").max = last;
  $("frame-number").max = last;
  $("draft").hidden = false;
  say($("job-status"), "");
  showFrame(0);
  renderBoxes();
}

function showFrame(n) {
  if (!draft) return;
  const last = Number($("frame-slider").max);
  frame = Math.min(Math.max(0, Math.round(Number(n) || 0)), last);
  $("frame-slider").value = frame;
  $("frame-number").value = frame;
  const fps = draft.video.fps;
  text($("frame-info"), "frame " + frame + (fps ? " · " + (frame / fps).toFixed(2) + " s" : ""));
  $("preview-img").src = withToken("/api/jobs/" + draft.id + "/frames/" + frame + ".jpg");
  renderBoxes();
}

let sliderTimer = null;
$("frame-slider").addEventListener("input", () => {
  clearTimeout(sliderTimer);
  const n = $("frame-slider").value;
  sliderTimer = setTimeout(() => showFrame(n), 120);
});
$("frame-number").addEventListener("change", () => showFrame($("frame-number").value));

function renderBoxes() {
  overlay.setBoxes(boxes.filter((b) => b.frame === frame).map((b) => ({ box: b.box, color: BOX_COLOR, textColor: "#000", label: "box " + (boxes.indexOf(b) + 1) })));
  const list = $("boxes");
  list.replaceChildren(...boxes.map((b, i) => {
    const li = document.createElement("li");
    li.textContent = "box " + (i + 1) + ": " + b.box.join(",") + " @ frame " + b.frame;
    const go = document.createElement("button");
    go.type = "button";
    go.textContent = "show";
    go.addEventListener("click", () => showFrame(b.frame));
    const rm = document.createElement("button");
    rm.type = "button";
    rm.textContent = "✕";
    rm.title = "remove this box";
    rm.addEventListener("click", () => { boxes.splice(i, 1); renderBoxes(); });
    li.append(go, rm);
    return li;
  }));
}

$("start").addEventListener("click", async () => {
  if (!draft) return;
  const prompt = $("prompt").value.trim();
  if (!prompt && !boxes.length) {
    say($("job-status"), "Type what to track (for example 'person. car.') or draw at least one box on the frame.", true);
    return;
  }
  $("start").disabled = true;
  try {
    const job = await api("/api/jobs/" + draft.id + "/start", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ prompt, seed_with: $("seed").value, boxes }),
    });
    say($("job-status"), "started: " + job.name + (job.prompt ? " · " + job.prompt : ""));
    draft = null;
    $("prompt").value = "";
    $("draft").hidden = true;
    $("file").value = "";
  } catch (e) {
    say($("job-status"), e.message, true);
  }
  $("start").disabled = false;
  refreshJobs();
});

$("discard").addEventListener("click", async () => {
  if (!draft) return;
  try { await api("/api/jobs/" + draft.id + "/cancel", { method: "POST" }); } catch (e) { /* gone already */ }
  draft = null;
  $("draft").hidden = true;
  $("file").value = "";
  refreshJobs();
});

function eta(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  return s >= 60 ? Math.floor(s / 60) + " min " + (s % 60) + " s" : s + " s";
}

const jobRows = new Map();

function jobRow(job) {
  let tr = jobRows.get(job.id);
  if (!tr) {
    tr = document.createElement("tr");
    tr.dataset.id = job.id;
    tr.innerHTML = '<td class="what"><span class="name"></span><span class="prompt muted"></span></td><td class="started"></td><td class="state"></td><td class="frames"><progress max="1" value="0"></progress> <span class="pct"></span></td><td class="eta"></td><td class="actions"></td>';
    jobRows.set(job.id, tr);
  }
  tr.querySelector(".name").textContent = job.name;
  const nBoxes = (job.boxes || []).length;
  const boxesText = nBoxes ? nBoxes + (nBoxes === 1 ? " box" : " boxes") : "";
  tr.querySelector(".prompt").textContent = job.prompt
    ? job.prompt + (boxesText ? " + " + boxesText : "")
    : (boxesText || "no prompt") + " (no prompt)";
  const when = job.started || job.submitted || job.created;
  tr.querySelector(".started").textContent = clock(when);
  tr.querySelector(".started").title = new Date(when * 1000).toLocaleString();
  const state = job.state === "failed" ? "failed: " + job.error : job.state;
  tr.querySelector(".state").textContent = state;
  tr.querySelector(".state").classList.toggle("error", job.state === "failed");
  tr.querySelector("progress").value = job.progress || 0;
  tr.querySelector(".pct").textContent = job.total ? job.done + " / " + job.total : String(job.done);
  tr.querySelector(".eta").textContent = job.state === "running" ? eta(job.eta_s) : "";
  const actions = tr.querySelector(".actions");
  const key = job.state;
  if (actions.dataset.key !== key) {
    actions.dataset.key = key;
    actions.replaceChildren();
    if (job.state === "queued" || job.state === "running") {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "small secondary cancel";
      b.textContent = "Cancel";
      b.addEventListener("click", async () => {
        try { await api("/api/jobs/" + job.id + "/cancel", { method: "POST" }); } catch (e) { say($("jobs-status"), e.message, true); }
        refreshJobs();
      });
      actions.append(b);
    } else if (job.state === "done") {
      const play = document.createElement("button");
      play.type = "button";
      play.className = "small play";
      play.textContent = "Play";
      play.addEventListener("click", () => showResult(job));
      const mp4 = document.createElement("a");
      mp4.href = withToken(job.result + "?download=1");
      mp4.textContent = "MP4";
      const jsonl = document.createElement("a");
      jsonl.href = withToken(job.tracks + "?download=1");
      jsonl.textContent = "JSONL";
      actions.append(play, mp4, jsonl);
    }
  }
  return tr;
}

// a time of day (seconds since the epoch) as the browser's locale shows it; with the date when
// it is not today
function clock(t) {
  const d = new Date(t * 1000);
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  return d.toDateString() === new Date().toDateString() ? time : d.toLocaleDateString() + " " + time;
}

function showResult(job) {
  const plural = (n, word) => n + " " + word + (n === 1 ? "" : "s");
  text($("result-name"), job.name + " · " + plural(job.frames, "frame") + ", " + plural(job.objects, "object"));
  $("result-video").src = withToken(job.result);
  $("dl-video").href = withToken(job.result + "?download=1");
  $("dl-tracks").href = withToken(job.tracks + "?download=1");
  $("result").hidden = false;
  document.body.dataset.jobDone = job.id;
}

const seenDone = new Set();
let loadedOnce = false;

async function refreshJobs() {
  let jobs;
  try {
    jobs = (await api("/api/jobs")).jobs.filter((j) => j.state !== "draft");
    say($("jobs-status"), jobs.length ? "" : "no jobs yet");
  } catch (e) {
    say($("jobs-status"), e.message, true);
    return;
  }
  // rows are kept and moved only when their order changes (a click on one is never lost)
  const tbody = $("jobs");
  let before = null;
  for (const tr of jobs.map(jobRow).reverse()) {
    if (tr.parentNode !== tbody || tr.nextSibling !== before) tbody.insertBefore(tr, before);
    before = tr;
  }
  for (const [id, tr] of [...jobRows]) {
    if (!jobs.some((j) => j.id === id)) { tr.remove(); jobRows.delete(id); }
  }
  const fresh = jobs.filter((j) => j.state === "done" && !seenDone.has(j.id));
  for (const j of fresh) seenDone.add(j.id);
  if (fresh.length && loadedOnce) showResult(fresh[0]);  // a job that has just finished
  loadedOnce = true;
}

async function pollJobs() {
  await refreshJobs();
  setTimeout(pollJobs, 700);
}

pollJobs();
