// Offline page: upload a video with a prompt, poll the job, then play and offer the downloads.
"use strict";
document.getElementById("live-link").href = withToken("/");
const form = document.getElementById("job-form");
const status = document.getElementById("job-status");
const bar = document.getElementById("progress");
const startButton = document.getElementById("start");

function showError(msg) {
  status.classList.add("error");
  text(status, msg);
  startButton.disabled = false;
}

async function poll(id) {
  let job;
  try {
    job = await api("/api/jobs/" + id);
  } catch (e) {
    showError(e.message);
    return;
  }
  bar.value = job.progress || 0;
  if (job.state === "failed") { showError("failed: " + job.error); return; }
  if (job.state !== "done") {
    text(status, job.state + (job.total ? ` — frame ${job.done} of ${job.total}` : ` — frame ${job.done}`));
    setTimeout(() => poll(id), 400);
    return;
  }
  text(status, `done: ${job.frames} frames, ${job.objects} objects`);
  startButton.disabled = false;
  const v = document.getElementById("result-video");
  v.src = withToken(job.result);
  document.getElementById("dl-video").href = withToken(job.result + "?download=1");
  document.getElementById("dl-tracks").href = withToken(job.tracks + "?download=1");
  document.getElementById("result").hidden = false;
  document.body.dataset.jobDone = id;
}

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  status.classList.remove("error");
  startButton.disabled = true;
  document.getElementById("result").hidden = true;
  bar.hidden = false;
  bar.value = 0;
  text(status, "uploading…");
  const data = new FormData(form);
  try {
    const job = await api("/api/jobs", { method: "POST", body: data });
    poll(job.id);
  } catch (e) {
    showError(e.message);
  }
});
