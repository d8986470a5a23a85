// EventsPanel: a camera's events timeline (newest first, each with its snapshot thumbnail;
// clicking one opens the event's snapshot frame, and its mask), filtered by label and zone,
// and the live counts of its zones and lines (given to the ZoneEditor). Polls /api/events and
// /api/counts at a modest rate (slower for a grid tile, not at all for a small thumbnail).
"use strict";

const EVENTS_POLL_MS = { single: 3000, enlarged: 3000, tile: 6000, thumb: 0 };
const COUNTS_POLL_MS = { single: 2000, enlarged: 2000, tile: 4000, thumb: 0 };
const TIMELINE_LIMIT = { single: 24, enlarged: 24, tile: 8, thumb: 0 };

function timeOf(ns) {
  return new Date(ns / 1e6).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
}

function describeEvent(ev) {
  const parts = [];
  if (ev.entered_zones && ev.entered_zones.length) parts.push("in " + ev.entered_zones.join(", "));
  for (const c of ev.lines || []) parts.push(c.line + " " + c.direction);
  return parts.join(" · ");
}

class EventsPanel {
  constructor(view) {
    this.view = view;
    this.el = view.el;
    this.items = new Map();   // event id -> <li>
    this.labels = new Set();
    this.bind();
    this.pollEvents();
    this.pollCounts();
  }

  bind() {
    for (const role of ["ev-label", "ev-zone"]) this.el[role].addEventListener("change", () => this.refresh());
  }

  delay(table) { return table[this.view.mode] === undefined ? table.single : table[this.view.mode]; }

  // ------------------------------------------------------------------ filters

  setOptions(select, values) {
    const have = [...select.options].slice(1).map((o) => o.value);
    if (have.join("\n") === values.join("\n")) return;
    const keep = select.value;
    while (select.options.length > 1) select.remove(1);
    for (const v of values) select.add(new Option(v, v));
    select.value = values.includes(keep) ? keep : "";
  }

  setZones(names) { this.setOptions(this.el["ev-zone"], [...names].sort()); }

  setLabels() {
    const prompt = this.view.enginePrompt || "";
    for (const p of prompt.split(".")) if (p.trim()) this.labels.add(p.trim().toLowerCase());
    this.setOptions(this.el["ev-label"], [...this.labels].sort());
  }

  query() {
    const q = new URLSearchParams({ camera: this.view.camera, limit: String(this.delay(TIMELINE_LIMIT) || 1) });
    if (this.el["ev-label"].value) q.set("label", this.el["ev-label"].value);
    if (this.el["ev-zone"].value) q.set("zone", this.el["ev-zone"].value);
    return "/api/events?" + q.toString();
  }

  // ------------------------------------------------------------------ polling

  filters() { return this.el["ev-label"].value + "\n" + this.el["ev-zone"].value; }

  async refresh() {
    const filters = this.filters();
    try {
      const events = await api(this.query());
      if (filters !== this.filters()) return;  // a filter changed meanwhile: its answer comes
      this.render(events);
      text(this.el["events-status"], "");
    } catch (e) {
      text(this.el["events-status"], "events: " + e.message);
    }
  }

  async pollEvents() {
    if (!this.view.alive) return;
    if (this.delay(EVENTS_POLL_MS)) await this.refresh();
    setTimeout(() => this.pollEvents(), this.delay(EVENTS_POLL_MS) || 2000);
  }

  async pollCounts() {
    if (!this.view.alive) return;
    if (this.delay(COUNTS_POLL_MS)) {
      try {
        const r = await api("/api/counts?camera=" + encodeURIComponent(this.view.camera));
        if (this.view.zones) this.view.zones.setCounts(r.cameras[this.view.camera] || null);
      } catch (e) { /* the events poll says it */ }
    }
    setTimeout(() => this.pollCounts(), this.delay(COUNTS_POLL_MS) || 2000);
  }

  // ------------------------------------------------------------------ timeline

  render(events) {
    const ol = this.el.timeline;
    for (const ev of events) if (ev.label) this.labels.add(ev.label);
    this.setLabels();
    const seen = new Set();
    let before = ol.firstChild;
    for (const ev of events) {
      seen.add(ev.id);
      let li = this.items.get(ev.id);
      if (!li) {
        li = this.item(ev);
        this.items.set(ev.id, li);
      }
      this.update(li, ev);
      if (li !== before) ol.insertBefore(li, before);
      before = li.nextSibling;
    }
    for (const [id, li] of this.items) if (!seen.has(id)) { li.remove(); this.items.delete(id); }
    this.el["timeline-empty"].hidden = events.length > 0;
  }

  item(ev) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.className = "event";
    b.dataset.id = ev.id;
    if (ev.snapshot) {
      const img = document.createElement("img");
      img.loading = "lazy";
      img.alt = "";
      img.src = withToken(ev.snapshot);
      b.appendChild(img);
    } else {
      const none = document.createElement("span");
      none.className = "no-snapshot";
      none.textContent = "no snapshot";
      b.appendChild(none);
    }
    const cap = document.createElement("span");
    cap.className = "caption";
    cap.innerHTML = '<strong class="label"></strong> <span class="time"></span><span class="what"></span>';
    b.appendChild(cap);
    b.addEventListener("click", () => openEvent(this.view.camera, li.event));
    li.appendChild(b);
    return li;
  }

  update(li, ev) {
    li.event = ev;
    const b = li.firstChild;
    b.classList.toggle("active", ev.end_ns === null);
    setText(li.querySelector(".label"), "#" + ev.object_id + " " + ev.label);
    setText(li.querySelector(".time"), timeOf(ev.start_ns));
    setText(li.querySelector(".what"), [ev.end_ns === null ? "now" : "", describeEvent(ev)].filter(Boolean).join(" · "));
    b.setAttribute("aria-label", ev.label + " at " + timeOf(ev.start_ns) + (describeEvent(ev) ? ", " + describeEvent(ev) : "") + (ev.snapshot ? ": open its snapshot" : ""));
  }
}

// The event's snapshot frame in a dialog (Escape or Close closes it), with its mask on request.
function openEvent(camera, ev) {
  const dlg = document.getElementById("event-dialog");
  const img = dlg.querySelector("img");
  const mask = dlg.querySelector("[data-role=show-mask]");
  let showing = "snapshot";
  const show = () => {
    const url = showing === "mask" ? ev.mask : ev.snapshot;
    img.hidden = !url;
    if (url) img.src = withToken(url);
    img.alt = showing + " of event " + ev.id;
    text(mask, showing === "mask" ? "Show snapshot" : "Show mask");
  };
  mask.hidden = !ev.mask;
  mask.onclick = () => { showing = showing === "mask" ? "snapshot" : "mask"; show(); };
  text(dlg.querySelector("[data-role=dialog-title]"), camera + " · #" + ev.object_id + " " + ev.label);
  const lines = [timeOf(ev.start_ns) + (ev.end_ns === null ? " – now" : " – " + timeOf(ev.end_ns)), describeEvent(ev), "top confidence " + (ev.top_score || 0).toFixed(2)];
  text(dlg.querySelector("[data-role=dialog-text]"), lines.filter(Boolean).join(" · "));
  text(dlg.querySelector("[data-role=dialog-none]"), ev.snapshot ? "" : "this event has no snapshot");
  show();
  dlg.showModal();
}
