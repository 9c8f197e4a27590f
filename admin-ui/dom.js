// phasegate admin page — DOM building, formatting and small shared helpers.

export const POLL_MS = 2000;
export const TOKEN_KEY = "phasegate-admin-token";
export const MODES = ["off", "audit", "soft-fail", "enforce"];
export const STRICTNESS = { off: 0, audit: 1, "soft-fail": 2, enforce: 3 };
const SVG_NS = "http://www.w3.org/2000/svg";
const SORTS = [
  // [sort key, default order]
  ["client", "asc"], ["reason", "asc"], ["count", "desc"],
  ["first_seen", "desc"], ["last_seen", "desc"], ["not_after", "asc"],
];
export const DEFAULT_ORDER = Object.fromEntries(SORTS);

// ---------------------------------------------------------------- helpers

/** Creates an element. attrs: class, text, data-*, aria-*, any attribute; never style. */
export function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  appendKids(el, kids);
  return el;
}

export function svg(tag, attrs, ...kids) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  appendKids(el, kids);
  return el;
}

function setAttrs(el, attrs) {
  if (!attrs) return;
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") el.textContent = String(v);
    else if (k === "class") el.setAttribute("class", v);
    else if (k === "style") throw new Error("style attributes are not allowed by the CSP");
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

function appendKids(el, kids) {
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
const enc = encodeURIComponent;
export const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : 0);
export const fmtNum = (v) => num(v).toLocaleString("en-US");
const pad = (n) => String(n).padStart(2, "0");
/** The muted dash shown where a value is missing. */
export const dash = () => h("span", { class: "muted", text: "—" });

export function validUnix(t) {
  return typeof t === "number" && Number.isFinite(t) && Math.abs(t) < 1e11;
}

function isoUtc(t) {
  return new Date(t * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
}

export function fmtLocal(t) {
  const d = new Date(t * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtClock(d) {
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** "just now", "42 s ago", "3 min ago", "5 h ago", "2 d ago", "in 4 d". */
export function ago(t) {
  if (!validUnix(t)) return "";
  const diff = Math.round(Date.now() / 1000 - t);
  const abs = Math.abs(diff);
  let text;
  if (abs < 5) return "just now";
  if (abs < 60) text = `${abs} s`;
  else if (abs < 3600) text = `${Math.floor(abs / 60)} min`;
  else if (abs < 86400 * 2) text = `${Math.floor(abs / 3600)} h`;
  else text = `${Math.floor(abs / 86400)} d`;
  return diff >= 0 ? `${text} ago` : `in ${text}`;
}

/** <time> with local human time, UTC ISO in datetime and title; optional relative suffix. */
export function timeEl(t, opts = {}) {
  if (!validUnix(t)) return dash();
  const iso = isoUtc(t);
  const el = h("time", { datetime: iso, title: `${iso} (UTC)` }, fmtLocal(t));
  if (opts.rel === false) return el;
  return h("span", { class: "when" }, el, h("span", { class: "rel", text: ago(t) }));
}

export function shortHash(hash) {
  return typeof hash === "string" && hash ? hash.slice(0, 12) : "—";
}

export function modeBadge(mode, extraClass) {
  const m = MODES.includes(mode) ? mode : "unknown";
  return h("span", {
    class: `badge mode mode-${m}${extraClass ? " " + extraClass : ""}`,
    "data-mode": mode ?? "",
    text: mode ?? "unknown",
  });
}

export function reasonBadge(reason) {
  return h("span", { class: `badge reason reason-${reason}`, text: reason ?? "?" });
}

/** <table> with a caption (text, or its attrs), one header row of column names, and a body of `rows`. */
export function dataTable(attrs, caption, cols, ...rows) {
  return h("table", attrs,
    h("caption", typeof caption === "string" ? { text: caption } : caption),
    h("thead", null, h("tr", null, cols.map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", null, rows));
}

export const overrideKindText = {
  rollback: "rolled back",
  set_mode: "set by operator",
  auto_rollback: "auto rollback",
};

export function hashForRoute(name) {
  return `#/route/${enc(name)}`;
}

export function routeApi(name) {
  return `/api/routes/${enc(name)}`;
}

/** Updates an element's children only when `key` changed, so focus and selection survive polls. */
export const renderKeys = new WeakMap();
export function renderIfChanged(el, key, build) {
  const k = typeof key === "string" ? key : JSON.stringify(key);
  if (renderKeys.get(el) === k) return false;
  renderKeys.set(el, k);
  el.replaceChildren(...[build()].flat(Infinity).filter((x) => x !== null && x !== undefined && x !== false));
  return true;
}
