// Shared helpers: the access token (taken from ?token= once) goes with every request.
"use strict";
const promptcamToken = new URLSearchParams(location.search).get("token");

function withToken(url) {
  if (!promptcamToken) return url;
  return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(promptcamToken);
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (promptcamToken) headers["X-Promptcam-Token"] = promptcamToken;
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  if (!resp.ok) {
    const msg = body && body.error ? body.error : resp.status + " " + resp.statusText;
    throw new Error(msg);
  }
  return body;
}

function text(el, value) { el.textContent = value === null || value === undefined ? "–" : String(value); }
