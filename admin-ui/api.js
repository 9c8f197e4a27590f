// phasegate admin page — the admin API client, the admin token, and the page's status line.

import { $, POLL_MS, TOKEN_KEY, fmtClock, h } from "./dom.js";

// ---------------------------------------------------------------- API

export class ApiError extends Error {
  constructor(status, message, reason, body) {
    super(message);
    this.status = status;
    this.reason = reason;
    this.body = body;
  }
  /** "401 — missing bearer token (…)", or the network failure. */
  display() {
    return this.status ? `${this.status} — ${this.message}` : this.message;
  }
  get unreachable() {
    return this.status === 0 || this.status === 502 || this.status === 503 || this.status === 504;
  }
}

/** What to show the operator for a failed call. */
export function errorText(e) {
  return e instanceof ApiError ? e.display() : String(e);
}

export async function api(path, opts = {}) {
  const headers = { Accept: "application/json" };
  if (opts.auth) {
    const token = getToken();
    if (token) headers.Authorization = `Bearer ${token}`;
  }
  let body;
  if (opts.body !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(opts.body);
  }
  let res;
  try {
    res = await fetch(path, {
      method: opts.method || "GET",
      headers,
      body,
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
    });
  } catch (e) {
    throw new ApiError(0, `network error: ${e && e.message ? e.message : e}`, "network");
  }
  const text = await res.text().catch(() => "");
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch (_) {
      data = null;
    }
  }
  if (!res.ok && !(opts.accept && opts.accept.includes(res.status))) {
    const message = (data && typeof data.error === "string" && data.error)
      || text.trim().slice(0, 300)
      || res.statusText
      || "request failed";
    throw new ApiError(res.status, message, data && data.reason, data);
  }
  return { status: res.status, data };
}

// ---------------------------------------------------------------- token

function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch (_) {
    return "";
  }
}

export function showTokenState() {
  const set = !!getToken();
  const el = $("#token-state");
  el.textContent = set ? "token set" : "no token";
  el.dataset.state = set ? "set" : "none";
  $("#forget-token").disabled = !set;
}

export function saveToken() {
  const input = $("#admin-token");
  const value = input.value.trim();
  if (!value) {
    showMessage("error", "No token entered", "paste the admin token into the box first");
    input.focus();
    return;
  }
  try {
    sessionStorage.setItem(TOKEN_KEY, value);
  } catch (e) {
    showMessage("error", "Could not store the token", String(e));
    return;
  }
  input.value = "";
  showTokenState();
  showMessage("ok", "Admin token set for this browser tab");
}

export function forgetToken() {
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch (_) { /* ignore */ }
  $("#admin-token").value = "";
  showTokenState();
  showMessage("ok", "Admin token forgotten");
}

// ---------------------------------------------------------------- messages and status

export function showMessage(kind, title, detail) {
  const el = $("#message");
  el.className = `message ${kind}`;
  const parts = [h("strong", { text: title })];
  if (detail) parts.push(": ", h("span", { class: "message-detail", text: detail }));
  el.replaceChildren(h("span", { class: "message-text" }, parts));
  $("#dismiss-message").hidden = false;
}

export function clearMessage() {
  const el = $("#message");
  el.className = "message";
  el.replaceChildren();
  $("#dismiss-message").hidden = true;
}

let lastSuccess = null;

export function markUpdated() {
  lastSuccess = new Date();
  const el = $("#updated");
  el.replaceChildren("updated ", h("time", { datetime: lastSuccess.toISOString(), title: lastSuccess.toISOString() }, fmtClock(lastSuccess)));
  setConnection(null);
}

export function setConnection(err) {
  const el = $("#connection-notice");
  if (!err) {
    if (!el.hidden) el.hidden = true;
    document.body.classList.remove("offline");
    return;
  }
  const since = lastSuccess ? ` — showing data from ${fmtClock(lastSuccess)}` : "";
  el.textContent = `Admin API unreachable (${err.display()}); retrying every ${POLL_MS / 1000} s${since}`;
  el.hidden = false;
  document.body.classList.add("offline");
}
