// BoxOverlay: a canvas over a <video> or <img> showing a frame; maps pointer positions to
// pixels of that frame (the media is letterboxed: object-fit contain), reports a click as a
// point and a drag as a box, and draws boxes (selection, boxes being drawn) over the media.
"use strict";

// The annotated video's own labels (engine/render.py: text_scale 0.5) are as tall as a 16 px
// font in frame pixels. Shown smaller than MIN_LABEL_PX CSS px (a grid tile, a phone, a frame
// larger than its view), they cannot be read: the overlay then draws the labels of the boxes
// marked whenSmall at LABEL_FONT_PX, over the video's own (at the same corner, larger).
const VIDEO_LABEL_FONT_PX = 16;
const MIN_LABEL_PX = 12;
const LABEL_FONT_PX = 13;
const LABEL_HEIGHT_PX = 18;

class BoxOverlay {
  // options: frameSize() -> [w, h] in frame pixels (default: the media's own size),
  // onPoint([x, y]), onBox([x1, y1, x2, y2]), minDragPx (screen pixels before a drag counts)
  constructor(media, canvas, options = {}) {
    this.media = media;
    this.canvas = canvas;
    this.opts = Object.assign({ minDragPx: 6 }, options);
    this.boxes = [];   // [{box, color, textColor, label, selected, dashed, labelOnly, whenSmall}]
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

  // CSS pixels per frame pixel of the picture shown (null before it has a size)
  scale() {
    const c = this.contentRect();
    const [fw] = this.frameSize();
    return c && fw > 0 ? c.w / fw : null;
  }

  // true when the video's own labels show smaller than MIN_LABEL_PX
  videoLabelsSmall() {
    const s = this.scale();
    return s !== null && VIDEO_LABEL_FONT_PX * s < MIN_LABEL_PX;
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
    const small = this.videoLabelsSmall();
    // label rectangles drawn, [x, y, w, h]; first those that labels must keep off (the zones')
    const placed = this.opts.avoid ? this.opts.avoid().map((r) => r.slice()) : [];
    for (const b of this.boxes) {
      if (b.whenSmall && !small) continue;
      const r = this.toCanvas(b.box);
      if (!r) continue;
      if (b.labelOnly) { this._label(g, b, r, placed, cv.clientHeight); continue; }
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
      if (b.label) this._label(g, b, r, placed, cv.clientHeight);
    }
    this.labelsDrawn = placed.length;
    const d = this.drag;
    if (d && d.moved) {
      g.setLineDash([6, 4]);
      g.lineWidth = 2;
      g.strokeStyle = "#fff";
      g.strokeRect(Math.min(d.x0, d.x1), Math.min(d.y0, d.y1), Math.abs(d.x1 - d.x0), Math.abs(d.y1 - d.y0));
    }
  }

  // A label at the box's top-left corner, above it (inside it at the top edge), moved down past
  // the labels already drawn instead of covering them, as the renderer places the video's own.
  _label(g, b, r, placed, height) {
    g.setLineDash([]);
    g.font = "600 " + LABEL_FONT_PX + "px system-ui, sans-serif";
    const w = g.measureText(b.label).width + 8, h = LABEL_HEIGHT_PX;
    const x = Math.max(0, Math.min(r[0], this.canvas.clientWidth - w));
    let y = r[1] >= h ? r[1] - h : r[1];
    for (let i = 0; i < placed.length; i++) {
      const hit = placed.find((p) => x < p[0] + p[2] && p[0] < x + w && y < p[1] + p[3] && p[1] < y + h);
      if (!hit) break;
      if (hit[1] + hit[3] + h <= height) y = hit[1] + hit[3];
      else break;
    }
    placed.push([x, y, w, h]);
    g.fillStyle = b.color || "#fff";
    g.fillRect(x, y, w, h);
    g.fillStyle = b.textColor || "#000";
    g.fillText(b.label, x + 4, y + 13);
  }
}
