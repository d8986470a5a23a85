// Live page: one CameraView per camera the server shows, following its camera list (cameras
// added or removed at runtime appear and go). One camera: its view alone, as a single page.
// Several: a grid of views; "Enlarge" shows one large with the others as small live pictures
// (the URL's #camera=NAME, so Back returns to the grid), "All cameras" or Escape goes back.
"use strict";
document.getElementById("offline-link").href = withToken("/offline");

const CAMERAS_POLL_MS = 2000;

class LivePage {
  constructor() {
    this.container = document.getElementById("cameras");
    this.views = new Map();   // camera -> CameraView, in the server's order
    this.enlarged = null;     // the camera shown large (several cameras only)
    this.active = null;       // the view last used: keyboard shortcuts go to it
    this.readHash();
    window.addEventListener("hashchange", () => { this.readHash(); this.layout(); });
    document.getElementById("all-cameras").addEventListener("click", () => this.enlarge(null));
    document.addEventListener("keydown", (ev) => {
      // registered before the views': a selection is cleared by them first, then Escape leaves
      const view = this.enlarged && this.views.get(this.enlarged);
      if (ev.key === "Escape" && view && view.selected === null && !/INPUT|SELECT/.test(ev.target.tagName)) this.enlarge(null);
    });
  }

  readHash() {
    const m = /(?:^#|&)camera=([^&]*)/.exec(location.hash);
    this.enlarged = m ? decodeURIComponent(m[1]) : null;
  }

  enlarge(camera) {
    if (camera) location.hash = "camera=" + encodeURIComponent(camera);
    else history.pushState(null, "", location.pathname + location.search);
    this.readHash();
    this.layout();
  }

  isActive(view) {
    if (this.views.size === 1) return true;
    if (this.enlarged) return view.camera === this.enlarged;
    return this.active === view;
  }

  touch(view) { this.active = view; }

  async follow() {
    const error = document.getElementById("page-error");
    for (;;) {
      try {
        const r = await api("/api/cameras");
        text(error, "");
        this.sync(r.cameras.map((c) => c.camera));
      } catch (e) {
        text(error, e.message + " (retrying)");
      }
      await new Promise((r) => setTimeout(r, CAMERAS_POLL_MS));
    }
  }

  sync(cameras) {
    for (const [name, view] of this.views) {
      if (!cameras.includes(name)) {
        view.destroy();
        this.views.delete(name);
        if (this.active === view) this.active = null;
      }
    }
    const ordered = new Map();
    for (const name of cameras) {
      ordered.set(name, this.views.get(name) || new CameraView(this.container, name, this));
    }
    this.views = ordered;
    // the server's order (appendChild only where it differs: a moved <video> may stall)
    let i = 0;
    for (const view of this.views.values()) {
      if (this.container.children[i] !== view.root) this.container.insertBefore(view.root, this.container.children[i] || null);
      i++;
    }
    this.layout();
  }

  layout() {
    const n = this.views.size;
    const enlarged = n > 1 && this.views.has(this.enlarged) ? this.enlarged : null;
    const c = this.container;
    c.classList.toggle("one", n === 1);
    c.classList.toggle("grid", n > 1);
    c.classList.toggle("has-enlarged", enlarged !== null);
    for (const view of this.views.values()) {
      view.setMode(n <= 1 ? "single" : enlarged === null ? "tile" : view.camera === enlarged ? "enlarged" : "thumb");
    }
    document.getElementById("no-cameras").hidden = n > 0;
    document.getElementById("all-cameras").hidden = enlarged === null;
    text(document.getElementById("camera-count"), n > 1 ? n + " cameras" : "");
    document.title = "promptcam — live" + (enlarged ? " · " + enlarged : "");
  }
}

window.promptcamPage = new LivePage();
window.promptcamPage.follow();
