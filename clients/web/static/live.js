// Live page: one CameraView per camera the server shows (one today).
"use strict";
document.getElementById("offline-link").href = withToken("/offline");

async function startLivePage() {
  const container = document.getElementById("cameras");
  let cameras = [];
  for (;;) {
    try {
      cameras = (await api("/api/cameras")).cameras;
      break;
    } catch (e) {
      text(document.getElementById("page-error"), e.message + " (retrying)");
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
  text(document.getElementById("page-error"), "");
  window.promptcamViews = cameras.map((c) => new CameraView(container, c.camera));
}

startLivePage();
