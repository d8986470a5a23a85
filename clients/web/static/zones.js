// ZoneEditor: a camera's zones (polygons) and lines drawn over its live video (an SVG layer
// scaled to the picture), with the live count of each, and edited with the mouse: "Edit",
// then "New zone" (click the corners, click the first one or press Enter to close) or "New
// line" (click its two ends; the arrow points to its "in" side, "Flip" turns it), drag a corner
// or an end to move it, name the selected shape, Delete it, Save (PUT
// /api/cameras/<camera>/zones: kept in zones.json, which the events service reloads). Shapes
// are kept as fractions of the frame, so they follow the picture at any size.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const SHAPE_NAME_RE = /^[A-Za-z0-9_-]{1,64}$/;
const HANDLE_R = 7;       // CSS px: corner and end handles
const CLOSE_PX = 14;      // a click this close to the first corner closes the polygon
const ARROW_PX = 30;      // the "in" arrow of a line
const IN_SIDE_OFFSET = 0.08;  // fraction of the frame from a new line's middle to its "in" point

function svgEl(tag, attrs, parent) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function clamp01(v) { return Math.min(1, Math.max(0, v)); }
function round4(v) { return Math.round(v * 10000) / 10000; }

class ZoneEditor {
  constructor(view) {
    this.view = view;
    this.el = view.el;
    this.svg = view.el["zones-svg"];
    this.shapes = [];      // [{kind: "zone"|"line", name, points: [[fx, fy]...], inSide, extra}]
    this.counts = {};      // name -> number shown (zone: objects in it now; line: in / out)
    this.labelRects = [];  // the labels render() drew, [x, y, w, h]
    this.editing = false;
    this.drawing = null;   // {kind, points} while a new shape is clicked in
    this.selected = -1;    // index in shapes
    this.dragging = null;  // {shape, point}: a corner or line end being dragged
    this.dirty = false;
    this.loaded = false;
    ZoneEditor.made = (ZoneEditor.made || 0) + 1;
    this.markerId = "zone-arrow-" + ZoneEditor.made;  // one per view: ids are page-wide
    this.bind();
    new ResizeObserver(() => this.render()).observe(this.svg);
    view.el.video.addEventListener("resize", () => this.render());
    this.load();
  }

  bind() {
    const el = this.el;
    el["zone-edit"].addEventListener("click", () => this.setEditing(!this.editing));
    el["new-zone"].addEventListener("click", () => this.startDrawing("zone"));
    el["new-line"].addEventListener("click", () => this.startDrawing("line"));
    el["zones-save"].addEventListener("click", () => this.save());
    el["zones-cancel"].addEventListener("click", () => { this.setEditing(false); this.load(); });
    el["shape-delete"].addEventListener("click", () => this.deleteSelected());
    el["shape-flip"].addEventListener("click", () => this.flipSelected());
    el["shape-form"].addEventListener("submit", (ev) => ev.preventDefault());
    el["shape-name"].addEventListener("input", () => this.rename(el["shape-name"].value.trim()));
    this.svg.addEventListener("pointerdown", (ev) => this.down(ev));
    this.svg.addEventListener("pointermove", (ev) => this.move(ev));
    this.svg.addEventListener("pointerup", () => { this.dragging = null; });
    this.svg.addEventListener("pointercancel", () => { this.dragging = null; });
    this.view.root.addEventListener("keydown", (ev) => {
      if (!this.editing || /INPUT|SELECT|TEXTAREA/.test(ev.target.tagName)) return;
      if (ev.key === "Enter" && this.drawing) { ev.preventDefault(); this.finishDrawing(); }
      if (ev.key === "Escape" && this.drawing) { ev.stopPropagation(); this.drawing = null; this.hint(); this.render(); }
      if (ev.key === "Delete" && this.selected >= 0) { ev.stopPropagation(); this.deleteSelected(); }
    });
  }

  say(message, isError = false) {
    const s = this.el["zones-status"];
    s.classList.toggle("error", isError);
    text(s, message);
  }

  frameSize() {
    const [w, h] = this.view.overlay.frameSize();
    return w > 0 && h > 0 ? [w, h] : this.frame || [0, 0];
  }

  // ------------------------------------------------------------------ loading, saving

  async load() {
    if (!this.view.alive) return;
    try {
      const r = await this.view.call("/api/cameras/" + encodeURIComponent(this.view.camera) + "/zones", "GET");
      if (r.frame) this.frame = r.frame;
      const [w, h] = this.frameSize();
      const needsFrame = [...Object.values(r.zones), ...Object.values(r.lines)].some((s) => s.units === "px");
      if (needsFrame && !(w > 0)) { setTimeout(() => this.load(), 1000); return; }  // size not known yet
      const frac = (s, p) => s.units === "px" ? [p[0] / w, p[1] / h] : [p[0], p[1]];
      const extra = (s, drop) => Object.fromEntries(Object.entries(s).filter(([k]) => !drop.includes(k)));
      this.shapes = [
        ...Object.entries(r.zones).map(([name, z]) => ({ kind: "zone", name, points: z.points.map((p) => frac(z, p)), extra: extra(z, ["points", "units"]) })),
        ...Object.entries(r.lines).map(([name, l]) => ({ kind: "line", name, points: l.points.map((p) => frac(l, p)), inSide: frac(l, l.in_side), extra: extra(l, ["points", "units", "in_side"]) })),
      ];
      this.selected = -1;
      this.dirty = false;
      this.loaded = true;
      this.renderList();
      this.render();
      if (this.view.events) this.view.events.setZones(this.zoneNames());
    } catch (e) {
      this.say(e.message + " (retrying)", true);
      setTimeout(() => this.load(), 3000);
    }
  }

  payload() {
    const out = { zones: {}, lines: {} };
    const pts = (ps) => ps.map(([x, y]) => [round4(x), round4(y)]);
    for (const s of this.shapes) {
      if (s.kind === "zone") out.zones[s.name] = Object.assign({}, s.extra, { points: pts(s.points), units: "fraction" });
      else out.lines[s.name] = Object.assign({}, s.extra, { points: pts(s.points), in_side: pts([s.inSide])[0], units: "fraction" });
    }
    return out;
  }

  async save() {
    const names = this.shapes.map((s) => s.kind + ":" + s.name);
    const bad = this.shapes.find((s) => !SHAPE_NAME_RE.test(s.name));
    if (bad) { this.say("name " + JSON.stringify(bad.name) + ": use 1-64 letters, digits, _ or -", true); return; }
    if (new Set(names).size !== names.length) { this.say("two shapes have the same name", true); return; }
    this.say("saving…");
    try {
      await this.view.call("/api/cameras/" + encodeURIComponent(this.view.camera) + "/zones", "PUT", this.payload());
      this.dirty = false;
      this.say("saved: " + this.shapes.length + (this.shapes.length === 1 ? " shape" : " shapes"));
      if (this.view.events) this.view.events.setZones(this.zoneNames());
      this.renderList();
    } catch (e) { this.say(e.message, true); }
  }

  zoneNames() { return this.shapes.filter((s) => s.kind === "zone").map((s) => s.name); }

  // counts from /api/counts for this camera (see EventsPanel)
  setCounts(cam) {
    const counts = {};
    for (const s of this.shapes) {
      if (s.kind === "zone") {
        const z = (cam && cam.zones && cam.zones[s.name]) || {};
        counts[s.name] = String(Object.values(z).reduce((a, b) => a + b, 0));
      } else {
        const l = (cam && cam.lines && cam.lines[s.name]) || {};
        const sum = (d) => Object.values(l[d] || {}).reduce((a, b) => a + b, 0);
        counts[s.name] = sum("in") + " in / " + sum("out") + " out";
      }
    }
    if (JSON.stringify(counts) === JSON.stringify(this.counts)) return;
    this.counts = counts;
    this.renderList();
    this.render();
  }

  // ------------------------------------------------------------------ editing

  setEditing(on) {
    this.editing = on;
    this.drawing = null;
    this.dragging = null;
    if (!on) this.selected = -1;
    this.el["zone-edit"].setAttribute("aria-pressed", String(on));
    text(this.el["zone-edit"], on ? "Done" : "Edit");
    this.el["zone-tools"].hidden = !on;
    this.svg.classList.toggle("editing", on);
    this.hint();
    this.renderList();
    this.render();
  }

  hint() {
    const d = this.drawing;
    let msg = "New zone or New line, then click on the video. Drag a corner to move it; select a shape to name or delete it.";
    if (d && d.kind === "zone") msg = d.points.length < 3 ? "Click the zone's corners (" + d.points.length + " so far)." : "Click the first corner or press Enter to close the zone; Escape cancels.";
    if (d && d.kind === "line") msg = "Click the line's " + (d.points.length ? "other end." : "first end.");
    text(this.el["zone-hint"], msg);
  }

  uniqueName(kind) {
    for (let i = 1; ; i++) {
      const name = kind + i;
      if (!this.shapes.some((s) => s.name === name)) return name;
    }
  }

  startDrawing(kind) {
    if (!this.editing) this.setEditing(true);
    this.drawing = { kind, points: [] };
    this.selected = -1;
    this.hint();
    this.renderList();
    this.render();
    this.svg.focus();
  }

  finishDrawing() {
    const d = this.drawing;
    if (!d) return;
    if (d.kind === "zone" && d.points.length < 3) { this.say("a zone needs 3 corners or more", true); return; }
    const shape = { kind: d.kind, name: this.uniqueName(d.kind), points: d.points, extra: {} };
    if (d.kind === "line") shape.inSide = this.defaultInSide(d.points);
    this.shapes.push(shape);
    this.drawing = null;
    this.selected = this.shapes.length - 1;
    this.dirty = true;
    this.hint();
    this.renderList();
    this.render();
    this.el["shape-name"].focus();
    this.el["shape-name"].select();
    this.say("name it, then Save");
  }

  defaultInSide([[x1, y1], [x2, y2]]) {
    const mx = (x1 + x2) / 2, my = (y1 + y2) / 2, len = Math.hypot(x2 - x1, y2 - y1) || 1;
    return [clamp01(mx - (y2 - y1) / len * IN_SIDE_OFFSET), clamp01(my + (x2 - x1) / len * IN_SIDE_OFFSET)];
  }

  sideOf([[x1, y1], [x2, y2]], [x, y]) { return Math.sign((x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)); }

  flipped([[x1, y1], [x2, y2]], [x, y]) {
    return [clamp01(x1 + x2 - x), clamp01(y1 + y2 - y)];  // mirrored through the middle
  }

  flipSelected() {
    const s = this.shapes[this.selected];
    if (!s || s.kind !== "line") return;
    s.inSide = this.flipped(s.points, s.inSide);
    this.dirty = true;
    this.render();
  }

  deleteSelected() {
    if (this.selected < 0) return;
    const [gone] = this.shapes.splice(this.selected, 1);
    this.selected = -1;
    this.dirty = true;
    this.say(gone.kind + " " + gone.name + " deleted: Save to keep it so");
    this.renderList();
    this.render();
  }

  rename(name) {
    const s = this.shapes[this.selected];
    if (!s) return;
    s.name = name;
    this.dirty = true;
    this.el["shape-name"].setCustomValidity(SHAPE_NAME_RE.test(name) ? "" : "1-64 letters, digits, _ or -");
    this.renderList();
    this.render();
  }

  select(i) {
    this.selected = i;
    this.renderList();
    this.render();
  }

  // ------------------------------------------------------------------ pointer

  rect() { return this.view.overlay.contentRect(); }

  toFrac(ev) {
    const c = this.rect();
    if (!c) return null;
    const r = this.svg.getBoundingClientRect();
    return [clamp01((ev.clientX - r.left - c.x) / c.w), clamp01((ev.clientY - r.top - c.y) / c.h)];
  }

  toPx([fx, fy]) {
    const c = this.rect();
    return [c.x + fx * c.w, c.y + fy * c.h];
  }

  down(ev) {
    if (!this.editing || ev.button !== 0) return;
    const p = this.toFrac(ev);
    if (!p) return;
    ev.preventDefault();
    const t = ev.target.dataset || {};
    const d = this.drawing;
    if (d) {
      if (d.kind === "zone" && d.points.length >= 3) {
        const [fx, fy] = this.toPx(d.points[0]), [cx, cy] = this.toPx(p);
        if (Math.hypot(fx - cx, fy - cy) <= CLOSE_PX) { this.finishDrawing(); return; }
      }
      d.points.push(p);
      if (d.kind === "line" && d.points.length === 2) { this.finishDrawing(); return; }
      this.hint();
      this.render();
      return;
    }
    if (t.handle !== undefined) {
      this.selected = Number(t.shape);
      this.dragging = { shape: Number(t.shape), point: Number(t.handle) };
      this.svg.setPointerCapture(ev.pointerId);
      this.renderList();
      this.render();
      return;
    }
    this.select(t.shape !== undefined ? Number(t.shape) : -1);
  }

  move(ev) {
    const g = this.dragging;
    if (!g) return;
    const p = this.toFrac(ev);
    const s = this.shapes[g.shape];
    if (!p || !s) return;
    if (s.kind === "line") {
      // the "in" side stays on the same side of the moved line (Flip turns it)
      const before = this.sideOf(s.points, s.inSide);
      s.points[g.point] = p;
      s.inSide = this.defaultInSide(s.points);
      if (this.sideOf(s.points, s.inSide) !== before) s.inSide = this.flipped(s.points, s.inSide);
    } else s.points[g.point] = p;
    this.dirty = true;
    this.render();
  }

  // ------------------------------------------------------------------ drawing

  renderList() {
    const ul = this.el.shapes;
    ul.textContent = "";
    this.shapes.forEach((s, i) => {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.className = "shape" + (i === this.selected ? " selected" : "");
      b.dataset.kind = s.kind;
      b.setAttribute("aria-pressed", String(i === this.selected));
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = s.name;
      const kind = document.createElement("span");
      kind.className = "muted";
      kind.textContent = s.kind;
      const count = document.createElement("span");
      count.className = "count";
      count.dataset.role = "count-" + s.name;
      count.textContent = this.counts[s.name] !== undefined ? this.counts[s.name] : "";
      count.title = s.kind === "zone" ? "objects in the zone now" : "crossings in / out";
      b.append(name, kind, count);
      b.addEventListener("click", () => { if (!this.editing) this.setEditing(true); this.select(i); });
      li.appendChild(b);
      ul.appendChild(li);
    });
    const empty = this.el["shapes-empty"];
    empty.hidden = this.shapes.length > 0;
    const s = this.shapes[this.selected];
    this.el["shape-form"].hidden = !(this.editing && s);
    if (s) {
      if (document.activeElement !== this.el["shape-name"]) this.el["shape-name"].value = s.name;
      this.el["shape-flip"].hidden = s.kind !== "line";
    }
    this.el["zones-save"].disabled = !this.dirty;
  }

  render() {
    const svg = this.svg;
    const w = svg.clientWidth, h = svg.clientHeight;
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.textContent = "";
    this.labelRects = [];  // [x, y, w, h] of every label drawn: object labels keep off them
    const c = this.rect();
    if (!c) return;
    const pts = (ps) => ps.map((p) => this.toPx(p).map((v) => v.toFixed(1)).join(",")).join(" ");
    this.shapes.forEach((s, i) => {
      const sel = i === this.selected;
      const g = svgEl("g", { class: "shape " + s.kind + (sel ? " selected" : "") }, svg);
      if (s.kind === "zone") {
        svgEl("polygon", { points: pts(s.points), "data-shape": i }, g);
        const cx = s.points.reduce((a, p) => a + p[0], 0) / s.points.length;
        const cy = s.points.reduce((a, p) => a + p[1], 0) / s.points.length;
        this.label(g, this.toPx([cx, cy]), s.name + (this.counts[s.name] !== undefined ? " · " + this.counts[s.name] : ""), i);
      } else {
        const [a, b] = s.points.map((p) => this.toPx(p));
        svgEl("line", { x1: a[0], y1: a[1], x2: b[0], y2: b[1], class: "hit", "data-shape": i }, g);
        svgEl("line", { x1: a[0], y1: a[1], x2: b[0], y2: b[1], "data-shape": i }, g);
        // an arrow from the middle towards the "in" side, the name and counts on the other side
        const m = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2], q = this.toPx(s.inSide);
        const len = Math.hypot(q[0] - m[0], q[1] - m[1]) || 1;
        const u = [(q[0] - m[0]) / len, (q[1] - m[1]) / len];
        const tip = [m[0] + u[0] * ARROW_PX, m[1] + u[1] * ARROW_PX];
        svgEl("line", { x1: m[0], y1: m[1], x2: tip[0], y2: tip[1], class: "arrow", "marker-end": "url(#" + this.markerId + ")" }, g);
        const side = Math.abs(u[0]) < 0.3 ? 0 : Math.sign(u[0]);  // in to the left (-1), right (1)
        const anchors = ["end", "middle", "start"];
        this.label(g, [tip[0] + u[0] * 8, tip[1] + u[1] * 12], "in", i, anchors[side + 1]).classList.add("in");
        const count = this.counts[s.name] !== undefined ? " · " + this.counts[s.name] : "";
        // the name on the "out" side, at the first place along the line that overlaps no label
        // drawn so far (the arrow's "in" among them): the middle, then towards either end
        const spots = [0.5, 0.3, 0.7, 0.15, 0.85].map((t) => [a[0] + (b[0] - a[0]) * t - u[0] * 12, a[1] + (b[1] - a[1]) * t - u[1] * 16]);
        this.label(g, spots, s.name + count, i, anchors[1 - side]);
      }
      if (this.editing) {
        s.points.forEach((p, j) => {
          const [x, y] = this.toPx(p);
          svgEl("circle", { cx: x, cy: y, r: HANDLE_R, class: "handle", "data-shape": i, "data-handle": j }, g);
        });
      }
    });
    const d = this.drawing;
    if (d && d.points.length) {
      const g = svgEl("g", { class: "shape drawing" }, svg);
      svgEl("polyline", { points: pts(d.points) }, g);
      d.points.forEach((p, j) => {
        const [x, y] = this.toPx(p);
        svgEl("circle", { cx: x, cy: y, r: j === 0 && d.kind === "zone" ? CLOSE_PX * 0.7 : HANDLE_R - 2, class: "handle" + (j === 0 ? " first" : "") }, g);
      });
    }
    const defs = svgEl("defs", {}, svg);
    const marker = svgEl("marker", { id: this.markerId, viewBox: "0 0 10 10", refX: 5, refY: 5, markerWidth: 5, markerHeight: 5, orient: "auto-start-reverse" }, defs);
    svgEl("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }, marker);
  }

  // a text at (x, y), moved inside the picture when it would stick out of it; given several
  // places ([[x, y], ...]), the first where it overlaps no label drawn before (else the first)
  label(g, at, value, i, anchor = "middle") {
    const spots = Array.isArray(at[0]) ? at : [at];
    const t = svgEl("text", { "text-anchor": anchor, "dominant-baseline": "middle", "data-shape": i }, g);
    t.textContent = value;
    const w = this.svg.clientWidth, h = this.svg.clientHeight;
    let chosen = null;
    for (const [x, y] of spots) {
      t.setAttribute("x", x);
      t.setAttribute("y", y);
      const b = t.getBBox();
      const dx = b.x < 2 ? 2 - b.x : b.x + b.width > w - 2 ? w - 2 - b.x - b.width : 0;
      const dy = b.y < 2 ? 2 - b.y : b.y + b.height > h - 2 ? h - 2 - b.y - b.height : 0;
      const r = [b.x + dx, b.y + dy, b.width, b.height];
      const free = !this.labelRects.some((p) => r[0] < p[0] + p[2] && p[0] < r[0] + r[2] && r[1] < p[1] + p[3] && p[1] < r[1] + r[3]);
      if (chosen === null || free) chosen = { x: x + dx, y: y + dy, r };
      if (free) break;
    }
    t.setAttribute("x", chosen.x);
    t.setAttribute("y", chosen.y);
    this.labelRects.push(chosen.r);
    return t;
  }
}
