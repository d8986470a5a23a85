// BoxOverlay: a canvas over a <video> or <img> showing a frame; maps pointer positions to
// pixels of that frame (the media is letterboxed: object-fit contain), reports a click as a
// point and a drag as a box, and draws boxes (selection, boxes being drawn) over the media.
"use strict";

class BoxOverlay {
  // options: frameSize() -> [w, h] in frame pixels (default: the media's own size),
  // onPoint([x, y]), onBox([x1, y1, x2, y2]), minDragPx (screen pixels before a drag counts)
  constructor(media, canvas, options = {}) {
    this.media = media;
    this.canvas = canvas;
    this.opts = Object.assign({ minDragPx: 6 }, options);
    this.boxes = [];   // [{box, color, label, selected, dashed}]
    this.drag = null;  // {x0, y0, x1, y1} in canvas pixels while dragging
    this.enabled = true;
    canvas.addEventListener("pointerdown", (ev) => this._down(ev));
    canvas.addEventListener("pointermove", (ev) => this._move(ev));
    canvas.addEventListener("pointerup", (ev) => this._up(ev));
    canvas.addEventListener("pointercancel", () => { this.drag = null; this.redraw(); });
    new ResizeObserver(() => this.redraw()).observe(media);
  }

  mediaSize() {
    const m = this.media;
    return m.tagName === "VIDEO" ? [m.videoWidth, m.videoHeight] : [m.naturalWidth, m.naturalHeight];
  }

  frameSize() {
    const given = this.opts.frameSize ? this.opts.frameSize() : null;
    return given && given[0] > 0 ? given : this.mediaSize();
  }

  // The displayed picture inside the media element, in CSS pixels of the canvas.
  contentRect() {
    const w = this.canvas.clientWidth, h = this.canvas.clientHeight;
    const [mw, mh] = this.mediaSize();
    if (!(mw > 0 && mh > 0 && w > 0 && h > 0)) return null;
    const scale = Math.min(w / mw, h / mh);
    return { x: (w - mw * scale) / 2, y: (h - mh * scale) / 2, w: mw * scale, h: mh * scale };
  }

  _local(ev) {
    const r = this.canvas.getBoundingClientRect();
    return [ev.clientX - r.left, ev.clientY - r.top];
  }

  toFrame([cx, cy]) {
    const c = this.contentRect();
    if (!c) return null;
    const [fw, fh] = this.frameSize();
    const x = Math.min(Math.max((cx - c.x) / c.w, 0), 1) * fw;
    const y = Math.min(Math.max((cy - c.y) / c.h, 0), 1) * fh;
    return [Math.round(x), Math.round(y)];
  }

  toCanvas([x1, y1, x2, y2]) {
    const c = this.contentRect();
    if (!c) return null;
    const [fw, fh] = this.frameSize();
    const sx = c.w / fw, sy = c.h / fh;
    return [c.x + x1 * sx, c.y + y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy];
  }

  _down(ev) {
    if (!this.enabled || ev.button !== 0) return;
    const [x, y] = this._local(ev);
    this.drag = { x0: x, y0: y, x1: x, y1: y, moved: false };
    this.canvas.setPointerCapture(ev.pointerId);
  }

  _move(ev) {
    if (!this.drag) return;
    const [x, y] = this._local(ev);
    this.drag.x1 = x;
    this.drag.y1 = y;
    if (Math.hypot(x - this.drag.x0, y - this.drag.y0) >= this.opts.minDragPx) this.drag.moved = true;
    this.redraw();
  }

  _up(ev) {
    const d = this.drag;
    this.drag = null;
    if (!d) return;
    const [x, y] = this._local(ev);
    d.x1 = x;
    d.y1 = y;
    this.redraw();
    if (!d.moved) {
      const p = this.toFrame([x, y]);
      if (p && this.opts.onPoint) this.opts.onPoint(p);
      return;
    }
    const a = this.toFrame([Math.min(d.x0, d.x1), Math.min(d.y0, d.y1)]);
    const b = this.toFrame([Math.max(d.x0, d.x1), Math.max(d.y0, d.y1)]);
    if (a && b && b[0] > a[0] && b[1] > a[1] && this.opts.onBox) this.opts.onBox([a[0], a[1], b[0], b[1]]);
  }

  setBoxes(boxes) {
    this.boxes = boxes;
    this.redraw();
  }

  redraw() {
    const cv = this.canvas, dpr = window.devicePixelRatio || 1;
    const w = Math.round(cv.clientWidth * dpr), h = Math.round(cv.clientHeight * dpr);
    if (cv.width !== w || cv.height !== h) { cv.width = w; cv.height = h; }
    const g = cv.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, cv.clientWidth, cv.clientHeight);
    for (const b of this.boxes) {
      const r = this.toCanvas(b.box);
      if (!r) continue;
      g.lineWidth = b.selected ? 3 : 2;
      g.setLineDash(b.dashed ? [6, 4] : []);
      if (b.selected) {  // a dark halo, then the colour: visible on any picture
        g.strokeStyle = "rgba(0,0,0,.85)";
        g.lineWidth = 6;
        g.strokeRect(r[0], r[1], r[2], r[3]);
        g.lineWidth = 3;
      }
      g.strokeStyle = b.color || "#fff";
      g.strokeRect(r[0], r[1], r[2], r[3]);
      if (b.label) {
        g.setLineDash([]);
        g.font = "600 12px system-ui, sans-serif";
        const tw = g.measureText(b.label).width + 8;
        const ty = r[1] >= 18 ? r[1] - 18 : r[1];  // inside the box at the top edge
        g.fillStyle = b.color || "#fff";
        g.fillRect(r[0], ty, tw, 18);
        g.fillStyle = b.textColor || "#000";
        g.fillText(b.label, r[0] + 4, ty + 13);
      }
    }
    const d = this.drag;
    if (d && d.moved) {
      g.setLineDash([6, 4]);
      g.lineWidth = 2;
      g.strokeStyle = "#fff";
      g.strokeRect(Math.min(d.x0, d.x1), Math.min(d.y0, d.y1), Math.abs(d.x1 - d.x0), Math.abs(d.y1 - d.y0));
    }
  }
}
