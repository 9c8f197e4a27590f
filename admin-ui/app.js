// phasegate admin page. Plain ES2020, no dependencies, CSP-clean: no inline code,
// no innerHTML with data, no style attributes. Every server-provided string goes
// through textContent (via the h() helper).
"use strict";

(() => {
  const POLL_MS = 2000;
  const TOKEN_KEY = "phasegate-admin-token";
  const MODES = ["off", "audit", "soft-fail", "enforce"];
  const STRICTNESS = { off: 0, audit: 1, "soft-fail": 2, enforce: 3 };
  const SVG_NS = "http://www.w3.org/2000/svg";
  const SORTS = [
    // [sort key, default order]
    ["client", "asc"], ["reason", "asc"], ["count", "desc"],
    ["first_seen", "desc"], ["last_seen", "desc"], ["not_after", "asc"],
  ];
  const DEFAULT_ORDER = Object.fromEntries(SORTS);

  // ---------------------------------------------------------------- helpers

  /** Creates an element. attrs: class, text, data-*, aria-*, any attribute; never style. */
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    appendKids(el, kids);
    return el;
  }

  function svg(tag, attrs, ...kids) {
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

  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const enc = encodeURIComponent;
  const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : 0);
  const fmtNum = (v) => num(v).toLocaleString("en-US");
  const pad = (n) => String(n).padStart(2, "0");

  function validUnix(t) {
    return typeof t === "number" && Number.isFinite(t) && Math.abs(t) < 1e11;
  }

  function isoUtc(t) {
    return new Date(t * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
  }

  function fmtLocal(t) {
    const d = new Date(t * 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function fmtClock(d) {
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  /** "just now", "42 s ago", "3 min ago", "5 h ago", "2 d ago", "in 4 d". */
  function ago(t) {
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
  function timeEl(t, opts = {}) {
    if (!validUnix(t)) return h("span", { class: "muted", text: "—" });
    const iso = isoUtc(t);
    const el = h("time", { datetime: iso, title: `${iso} (UTC)` }, fmtLocal(t));
    if (opts.rel === false) return el;
    return h("span", { class: "when" }, el, h("span", { class: "rel", text: ago(t) }));
  }

  function shortHash(hash) {
    return typeof hash === "string" && hash ? hash.slice(0, 12) : "—";
  }

  function modeBadge(mode, extraClass) {
    const m = MODES.includes(mode) ? mode : "unknown";
    return h("span", {
      class: `badge mode mode-${m}${extraClass ? " " + extraClass : ""}`,
      "data-mode": mode ?? "",
      text: mode ?? "unknown",
    });
  }

  const overrideKindText = {
    rollback: "rolled back",
    set_mode: "set by operator",
    auto_rollback: "auto rollback",
  };

  function hashForRoute(name) {
    return `#/route/${enc(name)}`;
  }

  function routeApi(name) {
    return `/api/routes/${enc(name)}`;
  }

  /** Updates an element's children only when `key` changed, so focus and selection survive polls. */
  const renderKeys = new WeakMap();
  function renderIfChanged(el, key, build) {
    const k = typeof key === "string" ? key : JSON.stringify(key);
    if (renderKeys.get(el) === k) return false;
    renderKeys.set(el, k);
    el.replaceChildren(...[build()].flat(Infinity).filter((x) => x !== null && x !== undefined && x !== false));
    return true;
  }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
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

  async function api(path, opts = {}) {
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

  function showTokenState() {
    const set = !!getToken();
    const el = $("#token-state");
    el.textContent = set ? "token set" : "no token";
    el.dataset.state = set ? "set" : "none";
    $("#forget-token").disabled = !set;
  }

  function saveToken() {
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

  function forgetToken() {
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) { /* ignore */ }
    $("#admin-token").value = "";
    showTokenState();
    showMessage("ok", "Admin token forgotten");
  }

  // ---------------------------------------------------------------- messages and status

  function showMessage(kind, title, detail) {
    const el = $("#message");
    el.className = `message ${kind}`;
    const parts = [h("strong", { text: title })];
    if (detail) parts.push(": ", h("span", { class: "message-detail", text: detail }));
    el.replaceChildren(h("span", { class: "message-text" }, parts));
    $("#dismiss-message").hidden = false;
  }

  function clearMessage() {
    const el = $("#message");
    el.className = "message";
    el.replaceChildren();
    $("#dismiss-message").hidden = true;
  }

  let lastSuccess = null;

  function markUpdated() {
    lastSuccess = new Date();
    const el = $("#updated");
    el.replaceChildren("updated ", h("time", { datetime: lastSuccess.toISOString(), title: lastSuccess.toISOString() }, fmtClock(lastSuccess)));
    setConnection(null);
  }

  function setConnection(err) {
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

  // ---------------------------------------------------------------- config banner (all views)

  function renderConfigAlert(cfg) {
    const el = $("#config-alert");
    const onConfig = current.name === "config";
    const err = cfg && cfg.last_error;
    const stateErr = cfg && cfg.state_error;
    const storeHealth = cfg && cfg.store && cfg.store.health;
    const storeDown = storeHealth && storeHealth.state === "unreachable" ? storeHealth : null;
    if (onConfig || (!err && !stateErr && !storeDown)) {
      el.hidden = true;
      renderIfChanged(el, "", () => []);
      return;
    }
    el.hidden = false;
    renderIfChanged(el, { err, stateErr, storeDown, tick: Math.floor(Date.now() / 10000) }, () => {
      const parts = [];
      if (storeDown) {
        parts.push(h("strong", { text: "Fleet store unreachable" }), ` ${ago(storeDown.since) || ""}: this instance serves with what it knows and shows its own clients only; changes made here reach the fleet when the store is back. `);
      }
      if (err) {
        const n = Array.isArray(err.problems) ? err.problems.length : 0;
        const when = ago(err.at);
        parts.push(h("strong", { text: "Last config reload failed" }), `${when ? " " + when : ""} (${n} problem${n === 1 ? "" : "s"}); the gateway keeps running generation ${cfg.generation ?? "?"}. `);
      }
      if (stateErr) parts.push(h("strong", { text: "Overrides not persisted: " }), stateErr, " ");
      parts.push(h("a", { href: "#/config", text: "Details" }));
      return parts;
    });
  }

  // ---------------------------------------------------------------- charts

  /**
   * Requests (light area with a solid outline) vs would-be-rejected (dark bars) per
   * minute over the last 60 minutes. Shapes differ, not only colours.
   */
  function buildChart(series, large) {
    const buckets = Array.isArray(series) ? series : [];
    const W = large ? 760 : 100;
    const H = large ? 150 : 32;
    const padL = large ? 40 : 0;
    const padB = large ? 20 : 0;
    const padT = large ? 8 : 1;
    const plotW = W - padL - (large ? 6 : 0);
    const plotH = H - padB - padT;
    const nowMin = Math.floor(Date.now() / 60000) * 60;
    const newest = buckets.reduce((m, b) => Math.max(m, num(b.minute)), 0);
    const end = Math.max(nowMin, newest);
    const start = end - 59 * 60;
    const req = new Array(60).fill(0);
    const wr = new Array(60).fill(0);
    const rej = new Array(60).fill(0);
    for (const b of buckets) {
      const i = Math.round((num(b.minute) - start) / 60);
      if (i < 0 || i > 59) continue;
      req[i] += num(b.requests);
      wr[i] += num(b.would_reject);
      rej[i] += num(b.rejected);
    }
    const totalReq = req.reduce((a, b) => a + b, 0);
    const totalWr = wr.reduce((a, b) => a + b, 0);
    const totalRej = rej.reduce((a, b) => a + b, 0);
    const max = Math.max(1, ...req, ...wr);
    const slot = plotW / 60;
    const r2 = (v) => Math.round(v * 100) / 100;
    const x = (i) => r2(padL + i * slot);
    const y = (v) => r2(padT + plotH - (v / max) * plotH);
    const label = totalReq === 0 && totalWr === 0
      ? "No requests in the last 60 minutes"
      : `Last 60 minutes, per minute: ${totalReq} requests (area), ${totalWr} would be rejected (bars)` +
        `${totalRej ? `, ${totalRej} actually rejected` : ""}; busiest minute ${Math.max(...req)} requests`;

    // Requests as a step area.
    let d = `M${x(0)},${y(0)}`;
    let line = "";
    for (let i = 0; i < 60; i++) {
      d += ` L${x(i)},${y(req[i])} L${x(i + 1)},${y(req[i])}`;
      line += `${i === 0 ? "M" : " L"}${x(i)},${y(req[i])} L${x(i + 1)},${y(req[i])}`;
    }
    d += ` L${x(60)},${y(0)} Z`;

    const kids = [svg("title", { text: label })];
    if (large) {
      // Grid and axis labels.
      for (const frac of [0, 0.5, 1]) {
        const v = Math.round(max * frac);
        kids.push(svg("line", { class: "grid", x1: padL, x2: W - 6, y1: y(v), y2: y(v) }));
        kids.push(svg("text", { class: "axis", x: padL - 6, y: y(v) + 4, "text-anchor": "end", text: String(v) }));
      }
      for (const [i, t] of [[0, "−60 min"], [30, "−30 min"], [59, "now"]]) {
        kids.push(svg("text", { class: "axis", x: x(i) + (i === 59 ? slot : 0), y: H - 5, "text-anchor": i === 0 ? "start" : i === 59 ? "end" : "middle", text: t }));
      }
    }
    kids.push(svg("path", { class: "req-area", d }));
    kids.push(svg("path", { class: "req-line", d: line, fill: "none" }));
    const barW = Math.max(1, slot * 0.7);
    for (let i = 0; i < 60; i++) {
      if (wr[i] <= 0) continue;
      const top = Math.min(y(wr[i]), padT + plotH - 1.5);
      const bar = svg("rect", {
        class: "wr-bar",
        x: (x(i) + (slot - barW) / 2).toFixed(2),
        y: top.toFixed(2),
        width: barW.toFixed(2),
        height: (padT + plotH - top).toFixed(2),
      });
      if (large) bar.append(svg("title", { text: `${fmtLocal(start + i * 60).slice(11, 16)}: ${req[i]} requests, ${wr[i]} would be rejected${rej[i] ? `, ${rej[i]} rejected` : ""}` }));
      kids.push(bar);
    }
    kids.push(svg("line", { class: "baseline", x1: padL, x2: padL + plotW, y1: padT + plotH, y2: padT + plotH }));
    return svg("svg", {
      class: large ? "chart chart-large" : "chart",
      viewBox: `0 0 ${W} ${H}`,
      width: large ? null : W,
      height: large ? null : H,
      role: "img",
      "aria-label": label,
      preserveAspectRatio: large ? "xMidYMid meet" : "none",
      focusable: "false",
    }, kids);
  }

  function chartLegend() {
    const area = svg("svg", { class: "legend-swatch", viewBox: "0 0 16 12", width: 16, height: 12, "aria-hidden": "true" },
      svg("path", { class: "req-area", d: "M0,12 L0,3 L16,3 L16,12 Z" }),
      svg("path", { class: "req-line", d: "M0,3 L16,3", fill: "none" }));
    const bar = svg("svg", { class: "legend-swatch", viewBox: "0 0 16 12", width: 16, height: 12, "aria-hidden": "true" },
      svg("rect", { class: "wr-bar", x: 5, y: 2, width: 6, height: 10 }));
    return h("ul", { class: "legend" },
      h("li", null, area, " requests per minute (area)"),
      h("li", null, bar, " would be rejected per minute (bars)"));
  }

  // ---------------------------------------------------------------- readiness

  function readinessState(route, readiness) {
    const rd = readiness || {};
    if (route && route.mode === "off") return "not-evaluated";
    if (num(rd.requests) === 0) return "no-data";
    if (num(rd.reject_ratio) === 0 && num(rd.would_reject) === 0) return "ready";
    return "not-ready";
  }

  const readinessLabel = {
    ready: "Ready",
    "no-data": "No traffic",
    "not-ready": "Not ready",
    "not-evaluated": "Not evaluated",
  };

  function readinessContent(route, readiness) {
    const state = readinessState(route, readiness);
    const summary = (readiness && readiness.summary) || "no readiness data";
    const kids = [h("span", { class: `cue cue-${state}`, text: readinessLabel[state] }), " ", h("span", { class: "readiness-summary", text: summary })];
    return { state, kids };
  }

  function setReadinessCell(td, route, readiness) {
    const { state, kids } = readinessContent(route, readiness);
    td.dataset.readiness = state;
    if (state === "not-evaluated") td.title = "In off mode the gateway asks for no client certificate, so nothing is evaluated or recorded; switch to audit to measure readiness.";
    else td.removeAttribute("title");
    renderIfChanged(td, { state, s: readiness && readiness.summary }, () => kids);
  }

  // ---------------------------------------------------------------- actions (shared by overview and detail)

  function buildActions(route) {
    const select = h("select", { "data-field": "target-mode", "aria-label": `Target mode for ${route.name}` },
      MODES.map((m) => h("option", { value: m, text: m })));
    select.value = MODES.includes(route.mode) ? route.mode : "audit";
    const setBtn = h("button", { type: "button", "data-action": "set-mode", text: "Set", "aria-label": `Set mode of ${route.name}` });
    const rollback = h("button", { type: "button", class: "danger", "data-action": "rollback", text: "Roll back", "aria-label": `Roll back ${route.name}` });
    const clear = h("button", { type: "button", class: "secondary", "data-action": "clear-override", text: "Clear override", "aria-label": `Clear override of ${route.name}` });
    return h("div", { class: "actions" },
      rollback,
      h("span", { class: "set-mode-group" }, select, setBtn),
      clear);
  }

  function updateActions(container, route) {
    const select = $('select[data-field="target-mode"]', container);
    if (select && !select.dataset.touched && document.activeElement !== select && MODES.includes(route.mode)) {
      select.value = route.mode;
    }
    const clear = $('button[data-action="clear-override"]', container);
    if (clear) {
      const has = !!route.override;
      clear.hidden = !has;
      clear.disabled = !has;
    }
    const rb = $('button[data-action="rollback"]', container);
    if (rb) {
      rb.title = route.rollback_target && route.rollback_target !== route.mode
        ? `Roll back ${route.name} from ${route.mode} to ${route.rollback_target}`
        : `Roll back ${route.name} from ${route.mode} to the previous looser mode`;
    }
  }

  // Latest route objects, for dialog texts.
  const knownRoutes = new Map();

  const pending = { action: null, route: null, mode: null, opener: null };

  function openConfirm(action, routeName, opener) {
    const route = knownRoutes.get(routeName) || { name: routeName };
    const dlg = $("#confirm");
    const title = $("#confirm-title");
    const text = $("#confirm-text");
    const detail = $("#confirm-detail");
    const warning = $("#confirm-warning");
    const reasonRow = $("#confirm-reason-row");
    const reason = $("#confirm-reason");
    const confirmBtn = $('#confirm button[data-action="confirm"]');
    const cur = route.mode || "its current mode";
    const yaml = route.yaml_mode;
    const rd = route.readiness || {};
    let target = null;
    warning.hidden = true;
    warning.textContent = "";
    reasonRow.hidden = false;
    reason.disabled = false;
    reason.value = "";

    const tighteningWarning = (to) => {
      if (!(to in STRICTNESS) || !(route.mode in STRICTNESS) || STRICTNESS[to] <= STRICTNESS[route.mode]) return;
      warning.hidden = false;
      warning.textContent = `This tightens ${routeName} from ${route.mode} to ${to}. ` +
        (num(rd.requests) > 0
          ? `Readiness (24 h): ${rd.summary}.`
          : "There is no traffic in the last 24 h to judge readiness.");
    };

    if (action === "rollback") {
      title.textContent = "Roll back route";
      const to = route.rollback_target;
      text.textContent = to && to !== route.mode
        ? `Roll back ${routeName} from ${cur} to ${to}?`
        : `Roll back ${routeName} from ${cur} to the previous looser mode?`;
      const how = route.mode === "off"
        ? "It already runs off, the loosest mode, so this only pins off as an override. "
        : route.mode === "audit"
          ? "The gateway returns to the mode before the route's last tightening; if none is known it stays audit, pinned as an override. "
          : "The gateway returns to the mode before the route's last tightening, or audit if none is known. ";
      detail.textContent = how + "It takes effect on the next request, without a reload, and stays until the override is cleared." +
        (yaml ? ` YAML says ${yaml}.` : "");
      confirmBtn.textContent = "Roll back";
      confirmBtn.className = "danger";
    } else if (action === "set-mode") {
      const container = opener && opener.closest("[data-route]");
      const select = container && $('select[data-field="target-mode"]', container);
      target = select ? select.value : null;
      if (!MODES.includes(target)) return;
      title.textContent = "Set route mode";
      text.textContent = `Set ${routeName} to ${target}?`;
      detail.textContent = `Currently ${cur}${yaml ? ` (YAML says ${yaml})` : ""}. ` +
        (target === route.mode ? `It already runs ${target}; this pins it as an override. ` : "") +
        "The override takes effect on the next request and stays until it is cleared.";
      tighteningWarning(target);
      confirmBtn.textContent = `Set ${target}`;
      confirmBtn.className = "primary";
    } else if (action === "clear-override") {
      title.textContent = "Clear override";
      text.textContent = `Clear the override on ${routeName}?`;
      detail.textContent = yaml
        ? `It goes from ${cur} back to the YAML mode, ${yaml}.`
        : "It goes back to the mode in the YAML.";
      if (yaml) tighteningWarning(yaml);
      // DELETE …/override takes no reason.
      reasonRow.hidden = true;
      reason.disabled = true;
      confirmBtn.textContent = "Clear override";
      confirmBtn.className = "primary";
    } else {
      return;
    }
    pending.action = action;
    pending.route = routeName;
    pending.mode = target;
    pending.opener = opener || null;
    confirmBtn.disabled = false;
    if (typeof dlg.showModal === "function") {
      if (!dlg.open) dlg.showModal();
    } else {
      dlg.setAttribute("open", "");
    }
    (reasonRow.hidden ? $('#confirm button[data-action="cancel"]') : reason).focus();
  }

  function closeConfirm() {
    const dlg = $("#confirm");
    if (dlg.open) {
      if (typeof dlg.close === "function") dlg.close();
      else dlg.removeAttribute("open");
    }
    const opener = pending.opener;
    pending.action = pending.route = pending.mode = pending.opener = null;
    if (opener && opener.isConnected && !opener.hidden) opener.focus();
  }

  async function runConfirmed() {
    const { action, route, mode } = pending;
    if (!action || !route) return closeConfirm();
    const reasonText = $("#confirm-reason").value.trim() || null;
    const confirmBtn = $('#confirm button[data-action="confirm"]');
    confirmBtn.disabled = true;
    let label;
    let request;
    if (action === "rollback") {
      label = `Roll back ${route}`;
      request = api(`${routeApi(route)}/rollback`, { method: "POST", auth: true, body: { reason: reasonText } });
    } else if (action === "set-mode") {
      label = `Set ${route} to ${mode}`;
      request = api(`${routeApi(route)}/mode`, { method: "POST", auth: true, body: { mode, reason: reasonText } });
    } else {
      label = `Clear override on ${route}`;
      request = api(`${routeApi(route)}/override`, { method: "DELETE", auth: true });
    }
    const opener = pending.opener;
    try {
      const { data } = await request;
      closeConfirm();
      const o = data || {};
      let text = `${o.route || route}: ${o.previous_mode ?? "?"} → ${o.mode ?? "?"}`;
      if (action === "clear-override") text += " (override cleared)";
      if (o.previous_mode && o.previous_mode === o.mode) text += " (mode unchanged)";
      let kind = "ok";
      let note = null;
      if (o.persist_error) {
        kind = "warn";
        note = `in force, but not persisted: ${o.persist_error}`;
      } else if (o.persisted === false && o.override) {
        note = "in force; not persisted (no state file), lost on restart";
      }
      showMessage(kind, text, note);
      if (action === "set-mode" && opener) {
        const select = $('select[data-field="target-mode"]', opener.closest("[data-route]") || document);
        if (select) delete select.dataset.touched;
      }
    } catch (e) {
      closeConfirm();
      showMessage("error", `${label} failed`, e instanceof ApiError ? e.display() : String(e));
    }
    refreshNow();
  }

  async function reloadConfig(btn) {
    btn.disabled = true;
    try {
      const { data } = await api("/api/config/reload", { method: "POST", auth: true, accept: [422] });
      const o = data || {};
      if (o.result === "applied") {
        const changes = Array.isArray(o.changes) ? o.changes : [];
        showMessage("ok", `Reload applied: generation ${o.generation}`,
          changes.length ? changes.map(describeChange).join("; ") : "no route changes");
      } else if (o.result === "unchanged") {
        showMessage("ok", `Reload: configuration unchanged (generation ${o.generation})`);
      } else if (o.result === "rejected") {
        const problems = Array.isArray(o.problems) ? o.problems : [];
        showMessage("error", `422 — reload rejected, still running generation ${o.generation}`,
          problems.map(formatProblem).join("; ") || "no details");
      } else {
        showMessage("ok", "Reload requested");
      }
    } catch (e) {
      showMessage("error", "Reload failed", e instanceof ApiError ? e.display() : String(e));
    } finally {
      btn.disabled = false;
    }
    refreshNow();
  }

  // ---------------------------------------------------------------- views

  /** Current view: {name: overview|route|config|certificates, route?} plus its DOM refs. */
  let current = { name: "overview", key: "overview" };

  function parseHash() {
    const raw = (location.hash || "").replace(/^#/, "");
    const parts = raw.split("/").filter(Boolean);
    if (parts[0] === "route" && parts.length >= 2) {
      let name;
      try {
        name = decodeURIComponent(parts.slice(1).join("/"));
      } catch (_) {
        name = parts.slice(1).join("/");
      }
      return { name: "route", route: name, key: `route:${name}` };
    }
    if (parts[0] === "config") return { name: "config", key: "config" };
    if (parts[0] === "certificates") return { name: "certificates", key: "certificates" };
    return { name: "overview", key: "overview" };
  }

  function navigate(initial) {
    const next = parseHash();
    if (!initial && next.key === current.key) return;
    current = next;
    const views = { overview: buildOverview, route: buildRouteDetail, config: buildConfig, certificates: buildCertificates };
    const main = $("#main");
    main.replaceChildren(views[current.name](current));
    for (const a of $$("[data-nav]")) {
      const active = a.dataset.nav === (current.name === "route" ? "routes" : current.name);
      if (active) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    document.title = `${current.name === "route" ? current.route : ({ overview: "Routes", config: "Config", certificates: "Certificates" })[current.name]} · phasegate admin`;
    if (!initial) {
      const heading = $("h1", main);
      if (heading) heading.focus({ preventScroll: false });
    }
    refreshNow();
  }

  function viewError(container, e) {
    const el = $(".view-error", container);
    if (!el) return;
    if (!e) {
      el.hidden = true;
      el.textContent = "";
      return;
    }
    el.hidden = false;
    el.textContent = e instanceof ApiError ? e.display() : String(e);
  }

  // ---- overview

  function buildOverview(view) {
    const thead = h("thead", null,
      h("tr", null,
        h("th", { scope: "col", rowspan: 2, text: "Route" }),
        h("th", { scope: "col", rowspan: 2, text: "Match" }),
        h("th", { scope: "colgroup", colspan: 3, class: "group", text: "Mode" }),
        h("th", { scope: "colgroup", colspan: 2, class: "group", text: "Last hour" }),
        h("th", { scope: "colgroup", colspan: 3, class: "group", text: "Last 24 h" }),
        h("th", { scope: "col", rowspan: 2, text: "Readiness (24 h)" }),
        h("th", { scope: "col", rowspan: 2, text: "Last 60 min" }),
        h("th", { scope: "col", rowspan: 2, text: "Actions" })),
      h("tr", null,
        h("th", { scope: "col", text: "YAML" }),
        h("th", { scope: "col", text: "Effective" }),
        h("th", { scope: "col", text: "Override" }),
        h("th", { scope: "col", class: "num", text: "Requests" }),
        h("th", { scope: "col", class: "num", text: "Would reject" }),
        h("th", { scope: "col", class: "num", text: "Requests" }),
        h("th", { scope: "col", class: "num", text: "Would reject" }),
        h("th", { scope: "col", class: "num", text: "Clients" })));
    const tbody = h("tbody");
    const table = h("table", { id: "routes", class: "data stack" },
      h("caption", null, "Routes and their mTLS mode. ",
        h("span", { class: "muted", text: "Would reject = requests that enforce mode would turn away; clients = distinct would-be-rejected clients." })),
      thead, tbody);
    view.tbody = tbody;
    view.rows = new Map();
    return h("section", { class: "view view-overview", "aria-labelledby": "overview-title" },
      h("div", { class: "view-head" },
        h("h1", { id: "overview-title", tabindex: "-1", text: "Routes" }),
        h("p", { id: "stats", class: "muted stats" })),
      h("p", { class: "view-error error-box", hidden: true, role: "alert" }),
      h("div", { class: "table-wrap" }, table),
      h("div", { class: "legend-row" }, h("span", { class: "muted", text: "Chart: " }), chartLegend()));
  }

  const CELL_LABELS = {
    name: "Route", match: "Match", "yaml-mode": "YAML mode", mode: "Effective mode", override: "Override",
    "requests-1h": "Requests 1 h", "would-reject-1h": "Would reject 1 h", "requests-24h": "Requests 24 h",
    "would-reject-24h": "Would reject 24 h", clients: "Clients 24 h", readiness: "Readiness", chart: "Last 60 min", actions: "Actions",
  };

  function matchText(r) {
    return `${r.host || "*"}${r.path_prefix || "/"}`;
  }

  function overrideContent(r, verbose) {
    const o = r.override;
    if (!o) return [h("span", { class: "muted", text: verbose ? "No override: running the YAML mode" : "—" })];
    const kids = [
      h("span", { class: "badge override", title: `override: ${overrideKindText[o.kind] || o.kind || "set"}`, text: verbose ? `override: ${overrideKindText[o.kind] || o.kind || "set"}` : "override" }),
    ];
    if (o.conflict) {
      kids.push(" ", h("span", { class: "badge conflict", title: "The YAML mode changed after this override was set; clear the override to apply the YAML", text: "⚠ conflict" }));
    }
    kids.push(h("span", { class: "override-summary block", text: o.summary || `running ${o.mode}` }));
    return kids;
  }

  function numCell(td, v, title) {
    td.dataset.value = String(num(v));
    td.textContent = fmtNum(v);
    if (title) td.title = title;
    else td.removeAttribute("title");
  }

  function pct(part, whole) {
    return whole > 0 ? `${((100 * part) / whole).toFixed(1)}% of ${fmtNum(whole)} requests` : null;
  }

  function renderOverview(view, routes, stats) {
    const list = Array.isArray(routes) ? routes : [];
    const { tbody, rows } = view;
    const seen = new Set();
    if (list.length === 0) {
      rows.clear();
      renderIfChanged(tbody, "empty", () => h("tr", { class: "empty" },
        h("td", { colspan: 13, text: "No routes configured. Add routes to the policy YAML and the gateway reloads it." })));
    } else {
      const empty = $("tr.empty", tbody);
      if (empty) {
        empty.remove();
        renderKeys.delete(tbody);
      }
    }
    list.forEach((r, index) => {
      if (!r || typeof r.name !== "string") return;
      knownRoutes.set(r.name, r);
      seen.add(r.name);
      let tr = rows.get(r.name);
      if (!tr) {
        tr = h("tr", { "data-route": r.name });
        for (const field of Object.keys(CELL_LABELS)) {
          const cell = field === "name" ? h("th", { scope: "row" }) : h("td");
          cell.dataset.field = field;
          cell.dataset.label = CELL_LABELS[field];
          if (/^(requests|would-reject|clients)/.test(field)) cell.classList.add("num");
          tr.append(cell);
        }
        $('[data-field="actions"]', tr).append(buildActions(r));
        rows.set(r.name, tr);
      }
      if (tbody.children[index] !== tr) tbody.insertBefore(tr, tbody.children[index] || null);
      fillRouteRow(tr, r);
    });
    for (const [name, tr] of rows) {
      if (!seen.has(name)) {
        tr.remove();
        rows.delete(name);
      }
    }
    const st = $("#stats");
    if (st && stats) {
      const hs = stats.handshakes || {};
      st.textContent = `TLS handshakes since this process started: ${fmtNum(hs.completed)} completed, ${fmtNum(hs.client_cert_requested)} asked for a client certificate, ${fmtNum(hs.client_cert_presented)} presented one` +
        (num(stats.recording_queue_dropped) ? ` · ${fmtNum(stats.recording_queue_dropped)} records dropped (queue full)` : "");
    }
  }

  function fillRouteRow(tr, r) {
    const cell = (f) => $(`[data-field="${f}"]`, tr);
    tr.dataset.mode = r.mode ?? "";
    tr.classList.toggle("has-override", !!r.override);
    tr.classList.toggle("has-conflict", !!(r.override && r.override.conflict));
    renderIfChanged(cell("name"), r.name, () => h("a", { href: hashForRoute(r.name), text: r.name }));
    renderIfChanged(cell("match"), matchText(r), () => [h("code", { class: "host", text: r.host || "*" }), h("code", { class: "prefix", text: r.path_prefix || "/" })]);
    renderIfChanged(cell("yaml-mode"), r.yaml_mode ?? "", () => modeBadge(r.yaml_mode));
    const modeCell = cell("mode");
    renderIfChanged(modeCell, [r.mode, !!r.override], () => [modeBadge(r.mode, r.override ? "overridden" : ""),
      r.override ? h("span", { class: "visually-hidden", text: " (override active)" }) : null]);
    const ov = cell("override");
    ov.dataset.active = r.override ? "true" : "false";
    ov.dataset.conflict = r.override && r.override.conflict ? "true" : "false";
    if (r.override && r.override.kind) ov.dataset.kind = r.override.kind;
    else delete ov.dataset.kind;
    renderIfChanged(ov, r.override || null, () => overrideContent(r, false));
    const lh = r.last_hour || {};
    const ld = r.last_day || {};
    numCell(cell("requests-1h"), lh.requests);
    numCell(cell("would-reject-1h"), lh.would_reject, pct(num(lh.would_reject), num(lh.requests)));
    numCell(cell("requests-24h"), ld.requests);
    numCell(cell("would-reject-24h"), ld.would_reject, pct(num(ld.would_reject), num(ld.requests)));
    numCell(cell("clients"), ld.clients);
    cell("would-reject-1h").classList.toggle("warn-num", num(lh.would_reject) > 0);
    cell("would-reject-24h").classList.toggle("warn-num", num(ld.would_reject) > 0);
    setReadinessCell(cell("readiness"), r, r.readiness);
    const minute = Math.floor(Date.now() / 60000);
    renderIfChanged(cell("chart"), { s: r.series, minute }, () => buildChart(r.series, false));
    updateActions(cell("actions"), r);
  }

  // ---- route detail

  function buildRouteDetail(view) {
    view.sort = view.sort || { sort: "count", order: "desc" };
    view.reason = "";
    view.instance = "";
    const name = view.route;
    const f = (field, tag = "span", attrs = {}) => h(tag, Object.assign({ "data-field": field }, attrs));
    const sortHeader = (key, label) => h("th", { scope: "col", "data-sort-key": key },
      h("button", { type: "button", class: "sort", "data-sort": key }, label, h("span", { class: "sort-ind", "aria-hidden": "true" })));
    const rejTable = h("table", { id: "rejections", class: "data" },
      h("caption", null, "Would-be-rejected clients: each client that enforce mode would turn away, with the reason ",
        h("span", { class: "muted", text: "(sorted by the server; click a column heading to sort)" })),
      h("thead", null, h("tr", null,
        sortHeader("client", "Client"),
        h("th", { scope: "col", text: "Issuer" }),
        sortHeader("reason", "Reason"),
        h("th", { scope: "col", text: "Detail" }),
        sortHeader("count", "Count"),
        sortHeader("first_seen", "First seen"),
        sortHeader("last_seen", "Last seen"),
        sortHeader("not_after", "Cert expires"),
        h("th", { scope: "col", text: "Sources" }))),
      h("tbody"));
    const section = h("section", { class: "view view-route", id: "route-detail", "data-route": name, "aria-labelledby": "route-title" },
      h("p", { class: "breadcrumb" }, h("a", { href: "#/", text: "← All routes" })),
      h("div", { class: "view-head" },
        h("h1", { id: "route-title", tabindex: "-1" }, h("span", { class: "muted small-caps", text: "Route " }), f("name", "span", { text: name })),
        f("match", "p", { class: "match-line" })),
      h("p", { class: "view-error error-box", hidden: true, role: "alert" }),
      h("div", { class: "cards" },
        h("section", { class: "card", "aria-labelledby": "mode-h" },
          h("h2", { id: "mode-h", text: "Mode" }),
          h("dl", { class: "kv" },
            h("dt", { text: "YAML" }), f("yaml-mode", "dd"),
            h("dt", { text: "Effective" }), f("mode", "dd")),
          f("override", "div", { class: "override-box" })),
        h("section", { class: "card", "aria-labelledby": "ready-h" },
          h("h2", { id: "ready-h", text: "Readiness" }),
          h("dl", { class: "kv" },
            h("dt", { text: "24 h" }), f("readiness", "dd"),
            h("dt", { text: "1 h" }), f("readiness-1h", "dd"),
            h("dt", { text: "7 d" }), f("readiness-7d", "dd"))),
        h("section", { class: "card", "aria-labelledby": "act-h" },
          h("h2", { id: "act-h", text: "Actions" }),
          f("actions", "div")),
        h("section", { class: "card", "aria-labelledby": "staging-h" },
          h("h2", { id: "staging-h", text: "Staging" }),
          f("staging", "div"))),
      h("div", { class: "detail-grid" },
      h("div", { class: "table-wrap" },
        h("table", { id: "windows", class: "data compact" },
          h("caption", { text: "Traffic by window" }),
          h("thead", null, h("tr", null,
            h("th", { scope: "col", text: "Window" }),
            h("th", { scope: "col", class: "num", text: "Requests" }),
            h("th", { scope: "col", class: "num", text: "Would reject" }),
            h("th", { scope: "col", class: "num", text: "Rejected" }),
            h("th", { scope: "col", class: "num", text: "Clients" }))),
          h("tbody", null,
            ["1h", "24h", "total"].map((w) => h("tr", { "data-window": w },
              h("th", { scope: "row", "data-field": "window-label", text: { "1h": "Last hour", "24h": "Last 24 h", total: "This process" }[w] }),
              h("td", { class: "num", "data-field": "requests" }),
              h("td", { class: "num", "data-field": "would-reject" }),
              h("td", { class: "num", "data-field": "rejected" }),
              h("td", { class: "num", "data-field": "clients" })))))),
      h("figure", { class: "chart-figure" },
        f("chart", "div", { class: "chart-box" }),
        h("figcaption", null, h("span", { text: "Requests and would-be-rejected requests per minute, last 60 minutes." }), chartLegend()))),
      h("section", { class: "rejections-section", "aria-labelledby": "rej-h" },
        h("h2", { id: "rej-h", text: "Would-be-rejected clients" }),
        h("div", { class: "toolbar" },
          h("label", { for: "reason-filter", text: "Reason" }),
          h("select", { id: "reason-filter" }, h("option", { value: "", text: "All" })),
          h("label", { for: "instance-filter", class: "fleet-only", hidden: true, text: "Seen by" }),
          h("select", { id: "instance-filter", class: "fleet-only", hidden: true }, h("option", { value: "", text: "Every instance" })),
          h("span", { class: "spacer" }),
          h("a", { id: "export-csv", class: "button-link", download: `${name}-rejections.csv`, href: "#", text: "Export CSV" }),
          h("a", { id: "export-json", class: "button-link", download: `${name}-rejections.json`, href: "#", text: "Export JSON" })),
        h("p", { id: "rejections-dropped", class: "notice", hidden: true }),
        h("div", { class: "table-wrap" }, rejTable),
        h("p", { id: "rejections-empty", class: "empty-state", hidden: true, text: "No would-be-rejected clients recorded" })),
      h("section", { id: "exempt-section", class: "exempt-section", "aria-labelledby": "exempt-h", hidden: true },
        h("h2", { id: "exempt-h", text: "Exempt clients" }),
        h("p", { class: "muted small", text: "Enforce would reject these for the reason shown, but an exemption (see Staging) lets them through: they do not count as would-be-rejected, and nobody needs telling until it ends." }),
        h("div", { class: "table-wrap" },
          h("table", { id: "exempt-clients", class: "data compact" },
            h("caption", { text: "Clients passed by an exemption, most requests first" }),
            h("thead", null, h("tr", null,
              ["Client", "Would be rejected for", "Requests", "First seen", "Last seen", "Sources"].map((t) => h("th", { scope: "col", text: t })))),
            h("tbody")))),
      h("section", { class: "owners-section", "aria-labelledby": "owners-h" },
        h("h2", { id: "owners-h", text: "By owner" }),
        h("p", { class: "muted small", text: "Whom to tell before enforcing: the clients above grouped by the owners: section of the policy (phasegate notify-list prints the same)." }),
        h("div", { id: "owners" })),
      h("section", { class: "renewals-section", "aria-labelledby": "renewals-h" },
        h("h2", { id: "renewals-h", text: "Certificates to renew" }),
        h("p", { class: "muted small", text: "Client certificates that verified on this route and expire soon, with whom to tell: once expired, a browser no longer offers them and their holder becomes an anonymous no_cert visit (phasegate notify-list prints the same)." }),
        h("div", { class: "table-wrap" },
          h("table", { id: "renewals", class: "data stack" },
            h("caption", { id: "renewals-caption", text: "Certificates to renew, soonest expiry first" }),
            h("thead", null, h("tr", null,
              ["Client", "Owner", "Expires", "Days left", "Last seen"].map((t) => h("th", { scope: "col", text: t })))),
            h("tbody")))),
      h("section", { id: "shadow-section", class: "shadow-section", "aria-labelledby": "shadow-h", hidden: true },
        h("h2", { id: "shadow-h", text: "Shadow policy" }),
        h("p", { id: "shadow-summary" }),
        h("div", { id: "shadow-tables" })));
    view.section = section;
    view.actionsBuilt = false;
    updateExportLinks(view);
    updateSortHeaders(view);
    return section;
  }

  /** The export links carry the filter; the page fetches all reasons (to list them) and filters locally. */
  function rejectionsQuery(view, format, withReason = true) {
    const p = new URLSearchParams();
    if (view.reason && withReason) p.set("reason", view.reason);
    if (view.instance) p.set("instance", view.instance);
    p.set("sort", view.sort.sort);
    p.set("order", view.sort.order);
    if (format) p.set("format", format);
    return `${routeApi(view.route)}/rejections?${p.toString()}`;
  }

  function updateExportLinks(view) {
    const csv = $("#export-csv", view.section);
    const json = $("#export-json", view.section);
    if (csv) csv.href = rejectionsQuery(view, "csv");
    if (json) json.href = rejectionsQuery(view, "json");
  }

  function updateSortHeaders(view) {
    for (const th of $$("th[data-sort-key]", view.section)) {
      const active = th.dataset.sortKey === view.sort.sort;
      const ind = $(".sort-ind", th);
      if (active) {
        th.setAttribute("aria-sort", view.sort.order === "asc" ? "ascending" : "descending");
        if (ind) ind.textContent = view.sort.order === "asc" ? " ▲" : " ▼";
      } else {
        th.removeAttribute("aria-sort");
        if (ind) ind.textContent = "";
      }
    }
  }

  function renderRouteDetail(view, route, rej, r1h, r7d) {
    const s = view.section;
    const cell = (f) => $(`[data-field="${f}"]`, s);
    knownRoutes.set(route.name, route);
    const matchLine = `${matchText(route)} → upstream ${route.upstream || "?"} · trust bundle ${route.trust || "none"}`;
    renderIfChanged(cell("match"), matchLine, () => [h("code", { text: matchText(route) }), ` → upstream ${route.upstream || "?"} · trust bundle ${route.trust || "none"}`]);
    renderIfChanged(cell("yaml-mode"), route.yaml_mode ?? "", () => modeBadge(route.yaml_mode));
    renderIfChanged(cell("mode"), [route.mode, !!route.override], () => modeBadge(route.mode, route.override ? "overridden" : ""));
    const ov = cell("override");
    ov.dataset.active = route.override ? "true" : "false";
    ov.dataset.conflict = route.override && route.override.conflict ? "true" : "false";
    renderIfChanged(ov, route.override || null, () => {
      const kids = overrideContent(route, true);
      if (route.override) {
        kids.push(h("p", { class: "small muted" }, "Set ", timeEl(route.override.since),
          route.override.reason ? ` · reason: ${route.override.reason}` : ""));
      }
      return kids;
    });
    setReadinessCell(cell("readiness"), route, route.readiness);
    setReadinessCell(cell("readiness-1h"), route, r1h);
    setReadinessCell(cell("readiness-7d"), route, r7d);
    const actions = cell("actions");
    if (!view.actionsBuilt) {
      actions.replaceChildren(buildActions(route));
      view.actionsBuilt = true;
    }
    updateActions(actions, route);
    renderIfChanged(cell("staging"), [route.enforce_percent, route.exemptions, route.auto_rollback], () => stagingContent(route));

    const windows = { "1h": route.last_hour || {}, "24h": route.last_day || {}, total: { requests: route.requests, would_reject: route.would_reject, rejected: route.rejected, clients: null } };
    // the 1 h and 24 h windows survive restarts (durable history); these counts do not
    const started = view.startedAt;
    const totalLabel = $('tr[data-window="total"] [data-field="window-label"]', s);
    renderIfChanged(totalLabel, started ?? null, () => validUnix(started)
      ? ["This process ", h("span", { class: "muted small block", text: `since it started, ${fmtLocal(started)}` })]
      : ["This process ", h("span", { class: "muted small block", text: "since it started" })]);
    for (const [w, v] of Object.entries(windows)) {
      const tr = $(`tr[data-window="${w}"]`, s);
      numCell($('[data-field="requests"]', tr), v.requests);
      numCell($('[data-field="would-reject"]', tr), v.would_reject, pct(num(v.would_reject), num(v.requests)));
      numCell($('[data-field="rejected"]', tr), v.rejected);
      const c = $('[data-field="clients"]', tr);
      if (v.clients === null || v.clients === undefined) {
        c.textContent = "—";
        c.dataset.value = "";
      } else numCell(c, v.clients);
    }
    const minute = Math.floor(Date.now() / 60000);
    renderIfChanged(cell("chart"), { s: route.series, minute }, () => buildChart(route.series, true));
    renderRejections(view, rej);
  }

  // Would-be-rejected clients by owning team.
  function renderOwners(view, owners) {
    const box = $("#owners", view.section);
    if (!box) return;
    // groups with only certificates to renew are shown below, with the renewals
    const groups = (owners && Array.isArray(owners.groups) ? owners.groups : []).filter((g) => (g.clients || []).length);
    renderIfChanged(box, groups, () => {
      if (!groups.length) return h("p", { class: "muted", text: "Nobody to tell: no would-be-rejected clients." });
      return h("ul", { class: "owner-groups" }, groups.map((g) =>
        h("li", { "data-team": g.team ?? "" },
          h("strong", { text: g.team ?? "unowned" }),
          g.contact ? h("span", { class: "muted", text: ` (${g.contact})` }) : null,
          h("ul", null, (g.clients || []).map((c) =>
            h("li", null, h("code", { text: c.client ?? "?" }), " ",
              h("span", { class: `badge reason reason-${c.reason}`, text: c.reason ?? "?" }),
              h("span", { class: "muted", text: ` ${fmtNum(c.count)} request(s)` })))))));
    });
  }

  // Certificates due for renewal, with their owner (from the same answer as the groups).
  function renderRenewals(view, owners) {
    const table = $("#renewals", view.section);
    if (!table) return;
    const groups = owners && Array.isArray(owners.groups) ? owners.groups : [];
    const days = Math.round(num(owners && owners.renewal_window_secs) / 86400) || 30;
    $("#renewals-caption", table).textContent = `Certificates that expire within ${days} days, soonest first`;
    const rows = groups.flatMap((g) => (g.renewals || []).map((r) => ({ g, r })))
      .sort((a, b) => num(a.r.certificate && a.r.certificate.not_after) - num(b.r.certificate && b.r.certificate.not_after));
    const td = (label, field, ...kids) => h("td", { "data-field": field, "data-label": label }, kids);
    renderIfChanged($("tbody", table), [rows, days, Math.floor(Date.now() / 10000)], () => rows.length ? rows.map(({ g, r }) =>
      h("tr", { "data-client": r.client ?? "", class: r.expired ? "is-expired" : "is-expiring" },
        h("th", { scope: "row", "data-field": "client", "data-label": "Client" }, h("code", { class: "client-id", text: r.client ?? "?" })),
        td("Owner", "owner", g.team ?? "unowned", g.contact ? h("span", { class: "muted", text: ` (${g.contact})` }) : null),
        td("Expires", "not-after", timeEl(r.certificate && r.certificate.not_after, { rel: false })),
        td("Days left", "days-left", daysLeftText(r),
          r.expired ? [" ", h("span", { class: "badge expired", text: "expired" })] : [" ", h("span", { class: "badge expiring", text: "renew" })]),
        td("Last seen", "last-seen", timeEl(r.last_seen))))
      : h("tr", { class: "empty" }, h("td", { colspan: 5, text: `No certificate seen on this route expires within ${days} days` })));
  }

  // The candidate policy's disagreements with the live one.
  function renderShadow(view, shadow) {
    const section = $("#shadow-section", view.section);
    if (!section) return;
    section.hidden = !shadow;
    if (!shadow) return;
    const summary = $("#shadow-summary", section);
    renderIfChanged(summary, [shadow.summary, shadow.trust], () => [
      `Candidate: trust bundle ${shadow.trust}`,
      Array.isArray(shadow.allow) && shadow.allow.length ? `, allow ${shadow.allow.join(", ")}` : ", any identity",
      ". ", h("strong", { text: shadow.summary ?? "" }), ` (24 h; newly passed: ${fmtNum(shadow.newly_passed)}).`,
    ]);
    const table = (id, caption, rows) => h("div", { class: "table-wrap" },
      h("table", { id, class: "data compact" },
        h("caption", { text: caption }),
        h("thead", null, h("tr", null, ["Client", "Reason", "Count", "Last seen"].map((t) => h("th", { scope: "col", text: t })))),
        h("tbody", null, rows.length ? rows.map((c) => h("tr", { "data-client": c.client ?? "" },
          h("th", { scope: "row" }, h("code", { text: c.client ?? "?" })),
          h("td", null, h("span", { class: `badge reason reason-${c.reason}`, text: c.reason ?? "?" })),
          h("td", { class: "num", text: fmtNum(c.count) }),
          h("td", null, timeEl(c.last_seen))))
          : h("tr", { class: "empty" }, h("td", { colspan: 4, class: "muted", text: "none" })))));
    const rejected = Array.isArray(shadow.newly_rejected_clients) ? shadow.newly_rejected_clients : [];
    const passed = Array.isArray(shadow.newly_passed_clients) ? shadow.newly_passed_clients : [];
    renderIfChanged($("#shadow-tables", section), [rejected, passed], () => [
      table("shadow-rejected", "Would be newly rejected (the live policy lets them through)", rejected),
      table("shadow-passed", "Would be newly let through (the live policy rejects them)", passed),
    ]);
  }

  // enforce_percent, dated exemptions and automatic rollback of a route.
  function stagingContent(route) {
    const items = [];
    if (route.enforce_percent !== null && route.enforce_percent !== undefined) {
      items.push(h("p", null, h("strong", { text: `${route.enforce_percent}%` }),
        " of clients are enforced (stable by identity); the rest are audited."));
    }
    const ar = route.auto_rollback;
    if (ar) {
      items.push(h("p", null, "Automatic rollback to audit above ",
        h("strong", { text: `${(num(ar.max_reject_ratio) * 100).toFixed(1)}%` }),
        ` rejected over ${ar.window_secs}s (at least ${fmtNum(ar.min_requests)} requests).`));
    }
    const ex = Array.isArray(route.exemptions) ? route.exemptions : [];
    if (ex.length) {
      items.push(h("ul", { class: "exemptions", "data-field": "exemptions" }, ex.map((e) =>
        h("li", { "data-exemption": e.client ?? "", "data-active": e.active ? "true" : "false" },
          h("code", { text: e.client ?? "?" }), " ",
          h("span", { class: e.active ? "badge" : "badge expired", text: e.active ? "exempt" : "expired" }),
          " ", h("span", { "data-field": "exemption-ends", text: e.ends ?? "" }),
          e.reason ? h("span", { class: "muted small block", text: e.reason }) : null))));
    }
    if (!items.length) items.push(h("p", { class: "muted", text: "No staging: the mode applies to every client." }));
    return items;
  }

  // Clients an exemption lets through, apart from those who would break.
  function renderExempt(view, route, exempt) {
    const section = $("#exempt-section", view.section);
    if (!section) return;
    const clients = exempt && Array.isArray(exempt.clients) ? exempt.clients : [];
    const hasExemptions = Array.isArray(route.exemptions) && route.exemptions.length > 0;
    section.hidden = !clients.length && !hasExemptions;
    const td = (field, ...kids) => h("td", { "data-field": field }, kids);
    renderIfChanged($("tbody", section), [clients, Math.floor(Date.now() / 10000)], () => clients.length ? clients.map((c) =>
      h("tr", { "data-client": c.client ?? "", "data-reason": c.reason ?? "" },
        h("th", { scope: "row", "data-field": "client" }, h("code", { class: "client-id", text: c.client ?? "?" })),
        td("reason", h("span", { class: `badge reason reason-${c.reason}`, text: c.reason ?? "?" })),
        h("td", { class: "num", "data-field": "count", text: fmtNum(c.count) }),
        td("first-seen", timeEl(c.first_seen)),
        td("last-seen", timeEl(c.last_seen)),
        td("sources", Array.isArray(c.sources) && c.sources.length ? c.sources.join(", ") : h("span", { class: "muted", text: "—" }))))
      : h("tr", { class: "empty" }, h("td", { colspan: 6, class: "muted", text: "No exempt clients recorded" })));
  }

  function renderRejections(view, rej) {
    const s = view.section;
    const all = rej && Array.isArray(rej.clients) ? rej.clients : [];
    // Reason filter: every code present, plus the selected one.
    const select = $("#reason-filter", s);
    const codes = Array.from(new Set(all.map((c) => c.reason).filter(Boolean))).sort();
    if (view.reason && !codes.includes(view.reason)) codes.push(view.reason);
    const counts = {};
    for (const c of all) counts[c.reason] = (counts[c.reason] || 0) + 1;
    if (document.activeElement !== select) {
      renderIfChanged(select, { codes, counts, total: all.length }, () => [
        h("option", { value: "", title: `${all.length} clients`, text: "All" }),
        codes.map((c) => h("option", { value: c, title: `${counts[c] || 0} clients`, text: c })),
      ]);
      select.value = view.reason;
    }
    // In a fleet every record says which instances saw it: offer them as a filter.
    const instances = Array.from(new Set(all.flatMap((c) => (Array.isArray(c.seen_by) ? c.seen_by : []).map((b) => b.instance)))).sort();
    const instSelect = $("#instance-filter", s);
    for (const el of s.querySelectorAll(".fleet-only")) el.hidden = instances.length === 0 && !view.instance;
    if (document.activeElement !== instSelect) {
      renderIfChanged(instSelect, { instances }, () => [
        h("option", { value: "", text: "Every instance" }),
        instances.map((i) => h("option", { value: i, text: i })),
      ]);
      instSelect.value = view.instance;
    }
    const byInstance = (c) => {
      if (!view.instance) return c;
      const mine = (Array.isArray(c.seen_by) ? c.seen_by : []).find((b) => b.instance === view.instance);
      return mine ? { ...c, count: mine.count, last_seen: mine.last_seen } : null;
    };
    const shown = (view.reason ? all.filter((c) => c.reason === view.reason) : all).map(byInstance).filter(Boolean);
    const tbody = $("#rejections tbody", s);
    const nowMin = Math.floor(Date.now() / 60000);
    renderIfChanged(tbody, { shown, nowMin, nowSec10: Math.floor(Date.now() / 10000) }, () => shown.map((c) => {
      const cert = c.certificate || null;
      const expired = cert && validUnix(cert.not_after) && cert.not_after * 1000 < Date.now();
      const td = (field, ...kids) => h("td", { "data-field": field }, kids);
      const notAfter = cert && validUnix(cert.not_after)
        ? [timeEl(cert.not_after, { rel: false }), expired ? [" ", h("span", { class: "badge expired", text: "expired" })] : h("span", { class: "rel", text: ago(cert.not_after) })]
        : [h("span", { class: "muted", text: "no certificate" })];
      const sources = Array.isArray(c.sources) ? c.sources : [];
      const tr = h("tr", { "data-client": c.client ?? "", "data-reason": c.reason ?? "" },
        h("th", { scope: "row", "data-field": "client" },
          h("code", { class: "client-id", text: c.client ?? "?" }),
          cert && cert.subject ? h("span", { class: "muted small block", text: cert.subject }) : null,
          c.grpc_method ? h("span", { class: "muted small block", "data-field": "grpc-method", text: `gRPC ${c.grpc_method}` }) : null),
        td("issuer", cert && cert.issuer ? cert.issuer : h("span", { class: "muted", text: "—" })),
        td("reason", h("span", { class: `badge reason reason-${c.reason}`, text: c.reason ?? "?" }),
          c.last_verdict ? h("span", { class: "muted small block", text: `last: ${c.last_verdict.replace(/_/g, " ")} in ${c.last_mode ?? "?"}` }) : null),
        td("detail", c.detail ? c.detail : h("span", { class: "muted", text: "—" })),
        td("count", fmtNum(c.count)),
        td("first-seen", timeEl(c.first_seen)),
        td("last-seen", timeEl(c.last_seen)),
        td("not-after", notAfter),
        td("sources", sources.length ? sources.join(", ") : h("span", { class: "muted", text: "—" })));
      $('[data-field="count"]', tr).classList.add("num");
      $('[data-field="count"]', tr).dataset.value = String(num(c.count));
      if (expired) {
        tr.classList.add("is-expired");
        $('[data-field="not-after"]', tr).classList.add("expired");
      }
      return tr;
    }));
    const emptyEl = $("#rejections-empty", s);
    emptyEl.hidden = shown.length !== 0;
    emptyEl.textContent = all.length === 0 || !view.reason
      ? "No would-be-rejected clients recorded"
      : `No would-be-rejected clients recorded with reason ${view.reason}`;
    $("#rejections", s).classList.toggle("is-empty", shown.length === 0);
    const dropped = $("#rejections-dropped", s);
    const nd = num(rej && rej.dropped);
    const nq = num(rej && rej.queue_dropped);
    if (nd || nq) {
      dropped.hidden = false;
      dropped.textContent = [
        nd ? `${fmtNum(nd)} clients were not recorded because the per-route limit was reached (dropped)` : null,
        nq ? `${fmtNum(nq)} records were lost because the recording queue was full` : null,
      ].filter(Boolean).join("; ") + " — the list is incomplete.";
    } else {
      dropped.hidden = true;
    }
  }

  // ---- config

  function buildConfig(view) {
    const section = h("section", { class: "view view-config", "aria-labelledby": "config-title" },
      h("div", { class: "view-head" },
        h("h1", { id: "config-title", tabindex: "-1", text: "Configuration" }),
        h("button", { type: "button", id: "reload", class: "primary", text: "Reload now" })),
      h("p", { class: "view-error error-box", hidden: true, role: "alert" }),
      h("div", { id: "config-error", class: "config-error" }),
      h("div", { id: "state-error", class: "error-box", hidden: true, role: "alert" }),
      h("div", { class: "cards" },
        h("section", { class: "card", "aria-labelledby": "running-h" },
          h("h2", { id: "running-h", text: "Running configuration" }),
          h("dl", { class: "kv" },
            h("dt", { text: "Generation" }), h("dd", { id: "config-generation" }),
            h("dt", { text: "Loaded" }), h("dd", { id: "config-loaded-at" }),
            h("dt", { text: "Content hash" }), h("dd", { id: "config-hash" }),
            h("dt", { text: "Reloads" }), h("dd", { id: "config-reloads" }),
            h("dt", { text: "Last attempt" }), h("dd", { id: "config-last-attempt" }))),
        h("section", { class: "card wide", "aria-labelledby": "files-h" },
          h("h2", { id: "files-h", text: "Policy files" }),
          h("ul", { id: "config-files", class: "files" }))),
      h("section", { "aria-labelledby": "fleet-h" },
        h("h2", { id: "fleet-h", text: "Fleet" }),
        h("p", { id: "fleet-summary" }),
        h("div", { class: "table-wrap" },
          h("table", { id: "fleet-instances", class: "data stack" },
            h("caption", { text: "Every gateway instance sharing the store, the policy each runs, and when each was last heard from" }),
            h("thead", null, h("tr", null,
              ["Instance", "Policy", "Generation", "Version", "Last heard"].map((t) => h("th", { scope: "col", text: t })))),
            h("tbody")))),
      h("section", { "aria-labelledby": "history-h" },
        h("h2", { id: "history-h", text: "History (newest first)" }),
        h("ol", { id: "history", class: "history" })));
    view.section = section;
    return section;
  }

  function renderFleet(view, fleet, cfg) {
    const s = view.section;
    const f = fleet || {};
    const health = f.health || {};
    const mine = cfg && cfg.content_hash;
    const instances = Array.isArray(f.instances) ? f.instances : [];
    const skew = instances.some((i) => i.content_hash !== mine);
    const summary = f.store === "local"
      ? "One instance: overrides and history live in this instance's state directory."
      : health.state === "unreachable"
        ? `Store ${f.store}: unreachable ${ago(health.since) || ""} (${health.error || "no answer"}); ${num(f.pending_overrides)} change(s) and ${fmtNum(f.spooled_rows)} audit row(s) wait for it.`
        : `Store ${f.store}: reachable; showing ${f.showing || "?"}. ${instances.length} instance(s)${skew ? ", not all running the same policy" : ", all running the same policy"}.`;
    $("#fleet-summary", s).textContent = summary;
    const tick = Math.floor(Date.now() / 10000);
    renderIfChanged($("#fleet-instances tbody", s), [instances, mine, tick], () => instances.length ? instances.map((i) => {
      const same = i.content_hash === mine;
      return h("tr", { "data-instance": i.id ?? "", class: i.silent ? "is-expired" : null },
        h("th", { scope: "row", "data-label": "Instance" }, h("code", { text: i.id ?? "?" }),
          i.id === f.instance ? h("span", { class: "muted small", text: " (this one)" }) : null),
        h("td", { "data-label": "Policy", "data-field": "policy" }, h("code", { title: i.content_hash || "", text: shortHash(i.content_hash) }),
          same ? null : [" ", h("span", { class: "badge expiring", text: "another policy" })]),
        h("td", { "data-label": "Generation", text: String(i.generation ?? "—") }),
        h("td", { "data-label": "Version", text: i.version || "—" }),
        h("td", { "data-label": "Last heard", "data-field": "last-seen" }, timeEl(i.last_seen),
          i.silent ? [" ", h("span", { class: "badge expired", text: "silent" })] : null));
    }) : h("tr", { class: "empty" }, h("td", { colspan: 5, text: "No instance has reported yet" })));
  }

  function formatProblem(p) {
    if (!p) return "";
    let s = `${p.file ?? "?"}`;
    if (num(p.line) > 0) s += `:${p.line}:${p.column ?? 0}`;
    if (p.path) s += ` ${p.path}`;
    s += `: ${p.message ?? ""}`;
    return s;
  }

  function describeChange(c) {
    if (!c) return "";
    switch (c.change) {
      case "added": return `${c.route}: added (${c.mode})`;
      case "removed": return `${c.route}: removed (was ${c.mode})`;
      case "mode_changed": return `${c.route}: ${c.from} → ${c.to}`;
      case "modified": return `${c.route}: ${Array.isArray(c.fields) && c.fields.length ? c.fields.join(", ") : "settings"} changed`;
      default: return `${c.route ?? "?"}: ${c.change ?? "changed"}`;
    }
  }

  const sourceText = { startup: "startup", file_change: "file change", sighup: "SIGHUP", api: "API (Reload now)" };

  function renderConfig(view, cfg, hist) {
    const s = view.section;
    const c = cfg || {};
    renderIfChanged($("#config-generation", s), String(c.generation ?? "—"), () => String(c.generation ?? "—"));
    renderIfChanged($("#config-loaded-at", s), [c.loaded_at, Math.floor(Date.now() / 10000)], () => timeEl(c.loaded_at));
    renderIfChanged($("#config-hash", s), c.content_hash ?? "", () => h("code", { title: c.content_hash || "", text: shortHash(c.content_hash) }));
    $("#config-reloads", s).textContent = `${fmtNum(c.reloads_ok)} applied, ${fmtNum(c.reloads_failed)} rejected since this process started`;
    const la = c.last_attempt;
    renderIfChanged($("#config-last-attempt", s), [la, Math.floor(Date.now() / 10000)], () => la
      ? [timeEl(la.at), ` via ${sourceText[la.source] || la.source}`]
      : h("span", { class: "muted", text: "—" }));
    const files = Array.isArray(c.files) ? c.files : [];
    renderIfChanged($("#config-files", s), files, () => files.length
      ? files.map((f) => h("li", null, h("code", { text: f })))
      : h("li", { class: "muted", text: "no files" }));

    const errBox = $("#config-error", s);
    const err = c.last_error;
    errBox.classList.toggle("has-error", !!err);
    if (err) {
      errBox.setAttribute("role", "alert");
    } else {
      errBox.removeAttribute("role");
    }
    renderIfChanged(errBox, [err || null, Math.floor(Date.now() / 10000)], () => {
      if (!err) return h("p", { class: "ok-text", text: "No reload errors" });
      const problems = Array.isArray(err.problems) ? err.problems : [];
      return [
        h("p", { class: "config-error-title" },
          h("strong", { text: "The last reload was rejected" }), " (", timeEl(err.at), `, via ${sourceText[err.source] || err.source || "?"}). `,
          `Still running generation ${c.generation ?? "?"}; fix the files and save, or press Reload now.`),
        h("ul", { class: "problems" }, problems.length
          ? problems.map((p) => h("li", { "data-problem": "" }, h("code", { text: formatProblem(p) })))
          : h("li", { text: "no details" })),
      ];
    });
    const stErr = $("#state-error", s);
    stErr.hidden = !c.state_error;
    stErr.textContent = c.state_error ? `Overrides could not be saved to the state file: ${c.state_error} (they are in force, but lost on restart)` : "";

    const gens = hist && Array.isArray(hist.generations) ? hist.generations : [];
    renderIfChanged($("#history", s), [gens, Math.floor(Date.now() / 10000)], () => gens.length ? gens.map((g) => {
      const changes = Array.isArray(g.changes) ? g.changes : [];
      const dropped = Array.isArray(g.dropped_overrides) ? g.dropped_overrides : [];
      const isCurrent = g.generation === c.generation;
      return h("li", { class: `generation${isCurrent ? " current" : ""}`, "data-generation": g.generation },
        h("div", { class: "generation-head" },
          h("strong", { text: `Generation ${g.generation}` }),
          isCurrent ? h("span", { class: "badge current-badge", text: "running" }) : null,
          h("span", { class: "sep", "aria-hidden": "true", text: "·" }), timeEl(g.at),
          h("span", { class: "sep", "aria-hidden": "true", text: "·" }), h("span", { "data-field": "source", text: sourceText[g.source] || g.source || "?" }),
          h("span", { class: "sep", "aria-hidden": "true", text: "·" }), h("code", { title: g.content_hash || "", text: shortHash(g.content_hash) })),
        changes.length
          ? h("ul", { class: "changes" }, changes.map((ch) => h("li", { class: `change change-${ch.change}`, "data-change": ch.change, "data-route": null },
            ch.change === "mode_changed"
              ? h("strong", null, `${ch.route}: `, modeBadge(ch.from), " → ", modeBadge(ch.to),
                STRICTNESS[ch.to] > STRICTNESS[ch.from] ? h("span", { class: "tighten", text: " (tightened)" }) : h("span", { class: "loosen", text: " (loosened)" }))
              : describeChange(ch))))
          : h("p", { class: "muted small", text: "no route changes" }),
        dropped.length ? h("p", { class: "notice small", text: `Overrides dropped (route removed): ${dropped.join(", ")}` }) : null);
    }) : h("li", { class: "muted", text: "No history yet" }));
  }

  // ---- certificates

  function buildCertificates(view) {
    const section = h("section", { class: "view view-certs", "aria-labelledby": "certs-title" },
      h("div", { class: "view-head" }, h("h1", { id: "certs-title", tabindex: "-1", text: "Certificates" })),
      h("p", { class: "view-error error-box", hidden: true, role: "alert" }),
      h("section", { "aria-labelledby": "client-certs-h" },
        h("h2", { id: "client-certs-h", text: "Client certificates expiring soon" }),
        h("div", { class: "table-wrap" },
          h("table", { id: "client-certs", class: "data stack" },
            h("caption", { id: "client-certs-caption", text: "Client certificates seen by the gateway that expire soon or already did, soonest first" }),
            h("thead", null, h("tr", null,
              ["Client", "Issuer", "Not after", "Days left", "Status", "Last seen"].map((t) => h("th", { scope: "col", text: t })))),
            h("tbody")))),
      h("section", { "aria-labelledby": "gw-certs-h" },
        h("h2", { id: "gw-certs-h", text: "Gateway certificates" }),
        h("div", { class: "table-wrap" },
          h("table", { id: "gateway-certs", class: "data stack" },
            h("caption", { text: "The gateway's own certificates and trust anchors, soonest expiry first" }),
            h("thead", null, h("tr", null,
              ["Kind", "Owner", "Certificate", "Not after", "Days left", "Source"].map((t) => h("th", { scope: "col", text: t })))),
            h("tbody")))),
      h("section", { "aria-labelledby": "bundles-h" },
        h("h2", { id: "bundles-h", text: "Trust bundles" }),
        h("div", { class: "table-wrap" },
          h("table", { id: "trust-bundles", class: "data stack" },
            h("caption", { text: "How each trust bundle verifies client chains: the strict X.509 profile, and the checks a bundle relaxes for a legacy PKI" }),
            h("thead", null, h("tr", null,
              ["Bundle", "Profile", "Anchors", "Intermediates", "Max intermediates", "Revocation"].map((t) => h("th", { scope: "col", text: t })))),
            h("tbody")))));
    view.section = section;
    return section;
  }

  function expiryClass(c, watchDays) {
    if (c.expired) return "expired";
    if (typeof c.days_left === "number" && c.days_left <= watchDays) return "expiring";
    return "";
  }

  function daysLeftText(c) {
    if (typeof c.days_left !== "number") return "—";
    if (c.expired) return `${c.days_left} (expired ${Math.abs(c.days_left)} d ago)`;
    return String(c.days_left);
  }

  function renderCertificates(view, data) {
    const s = view.section;
    const d = data || {};
    const watch = num(d.watch_days) || 30;
    const byExpiry = (a, b) => num(a.not_after) - num(b.not_after);
    const clients = (Array.isArray(d.clients) ? d.clients.slice() : []).sort(byExpiry);
    const gateway = (Array.isArray(d.gateway) ? d.gateway.slice() : []).sort(byExpiry);
    $("#client-certs-caption", s).textContent = `Client certificates seen by the gateway that expire within ${watch} days or already did, soonest first`;
    const tick = Math.floor(Date.now() / 10000);
    const labelled = (label, field, ...kids) => h("td", { "data-field": field, "data-label": label }, kids);
    renderIfChanged($("#client-certs tbody", s), [clients, tick], () => clients.length ? clients.map((c) => {
      const cls = expiryClass(c, watch);
      return h("tr", { "data-client": c.client ?? "", class: cls ? `is-${cls}` : null },
        h("th", { scope: "row", "data-field": "client", "data-label": "Client" }, h("code", { class: "client-id", text: c.client ?? "?" }),
          c.subject ? h("span", { class: "muted small block", text: c.subject }) : null),
        labelled("Issuer", "issuer", c.issuer || "—"),
        labelled("Not after", "not-after", timeEl(c.not_after, { rel: false })),
        labelled("Days left", "days-left", daysLeftText(c)),
        labelled("Status", "expired", c.expired
          ? h("span", { class: "badge expired", text: "expired" })
          : h("span", { class: "badge expiring", text: `expires ${ago(c.not_after)}` })),
        labelled("Last seen", "last-seen", timeEl(c.last_seen)));
    }) : h("tr", { class: "empty" }, h("td", { colspan: 6, text: `No client certificate seen expires within ${watch} days` })));
    renderIfChanged($("#gateway-certs tbody", s), [gateway, tick], () => gateway.length ? gateway.map((c) => {
      const cls = expiryClass(c, watch);
      return h("tr", { "data-kind": c.kind ?? "", class: cls ? `is-${cls}` : null },
        h("th", { scope: "row", "data-field": "kind", "data-label": "Kind", text: (c.kind || "?").replace(/_/g, " ") }),
        labelled("Owner", "owner", c.owner || "—"),
        labelled("Certificate", "certificate", c.certificate || "—"),
        labelled("Not after", "not-after", timeEl(c.not_after, { rel: false }),
          c.expired ? [" ", h("span", { class: "badge expired", text: "expired" })]
            : cls === "expiring" ? [" ", h("span", { class: "badge expiring", text: "expiring" })] : null),
        labelled("Days left", "days-left", daysLeftText(c)),
        labelled("Source", "source", c.source ? h("code", { class: "path", text: c.source }) : "—"));
    }) : h("tr", { class: "empty" }, h("td", { colspan: 6, text: "No gateway certificates" })));
    const bundles = Array.isArray(d.bundles) ? d.bundles : [];
    renderIfChanged($("#trust-bundles tbody", s), [bundles], () => bundles.length ? bundles.map((b) => {
      const relaxed = Array.isArray(b.relaxed) ? b.relaxed : [];
      return h("tr", { "data-bundle": b.name ?? "", class: relaxed.length ? "is-relaxed" : null },
        h("th", { scope: "row", "data-field": "bundle", "data-label": "Bundle" }, h("code", { text: b.name ?? "?" })),
        labelled("Profile", "profile", relaxed.length
          ? [h("span", { class: "badge expiring", text: "relaxed" }), " strict, except ", relaxed.map((c, i) => [i ? ", " : "", h("code", { text: c })])]
          : h("span", { class: "badge ok", text: "strict" })),
        labelled("Anchors", "anchors", String(num(b.anchors))),
        labelled("Intermediates", "intermediates", String(num(b.intermediates))),
        labelled("Max intermediates", "max-depth", String(num(b.max_chain_depth))),
        labelled("Revocation", "revocation", b.checks_revocation ? "CRLs, whole chain" : "not checked"));
    }) : h("tr", { class: "empty" }, h("td", { colspan: 6, text: "No trust bundles" })));
  }

  // ---------------------------------------------------------------- polling

  let timer = null;
  let inFlight = false;
  let again = false;

  function refreshNow() {
    if (inFlight) {
      again = true;
      return;
    }
    clearTimeout(timer);
    timer = null;
    refresh();
  }

  function schedule() {
    clearTimeout(timer);
    timer = null;
    if (!document.hidden) timer = setTimeout(refreshNow, POLL_MS);
  }

  async function refresh() {
    inFlight = true;
    const view = current;
    const stillCurrent = () => view === current;
    try {
      const cfgP = api("/api/config").then((r) => r.data).catch((e) => (e.unreachable ? Promise.reject(e) : null));
      if (view.name === "overview") {
        const [routes, stats, cfg] = await Promise.all([
          api("/api/routes").then((r) => r.data),
          api("/api/stats").then((r) => r.data).catch((e) => (e.unreachable ? Promise.reject(e) : null)),
          cfgP,
        ]);
        if (stillCurrent()) {
          renderOverview(view, routes, stats);
          renderConfigAlert(cfg);
          viewError(view.tbody.closest("section"), null);
        }
      } else if (view.name === "route") {
        const base = routeApi(view.route);
        const optional = (p) => p.then((r) => r.data).catch((e) => (e.unreachable ? Promise.reject(e) : null));
        const [route, rej, r1h, r7d, cfg, owners, shadow, exempt] = await Promise.all([
          api(base).then((r) => r.data),
          api(rejectionsQuery(view, null, false)).then((r) => r.data),
          optional(api(`${base}/readiness?window=1h`)),
          optional(api(`${base}/readiness?window=7d`)),
          cfgP,
          optional(api(`${base}/owners`)),
          optional(api(`${base}/shadow?window=24h`)),
          optional(api(`${base}/rejections?verdict=exempt`)),
        ]);
        if (stillCurrent()) {
          view.section.classList.remove("missing");
          if (cfg && validUnix(cfg.started_at)) view.startedAt = cfg.started_at;
          renderRouteDetail(view, route || {}, rej, r1h, r7d);
          renderExempt(view, route || {}, exempt);
          renderOwners(view, owners);
          renderRenewals(view, owners);
          renderShadow(view, shadow);
          renderConfigAlert(cfg);
          viewError(view.section, null);
        }
      } else if (view.name === "config") {
        const [cfg, hist, fleet] = await Promise.all([cfgP, api("/api/config/history").then((r) => r.data), api("/api/fleet").then((r) => r.data)]);
        if (stillCurrent()) {
          renderConfig(view, cfg, hist);
          renderFleet(view, fleet, cfg);
          renderConfigAlert(cfg);
          viewError(view.section, null);
        }
      } else if (view.name === "certificates") {
        const [certs, cfg] = await Promise.all([api("/api/certificates").then((r) => r.data), cfgP]);
        if (stillCurrent()) {
          renderCertificates(view, certs);
          renderConfigAlert(cfg);
          viewError(view.section, null);
        }
      }
      markUpdated();
    } catch (e) {
      const err = e instanceof ApiError ? e : new ApiError(0, String(e && e.message ? e.message : e), "client");
      if (err.unreachable) {
        setConnection(err);
      } else {
        setConnection(null);
        if (stillCurrent()) {
          const container = $("#main > section");
          if (view.name === "route" && err.status === 404 && view.section) {
            view.section.classList.add("missing");
            viewError(view.section, `No route named "${view.route}" in the running configuration (404). `);
          } else if (container) {
            viewError(container, err);
          }
        }
        if (err.reason === "client") console.error(e);
      }
    } finally {
      inFlight = false;
      if (again) {
        again = false;
        refreshNow();
      } else {
        schedule();
      }
    }
  }

  // ---------------------------------------------------------------- events

  function onClick(ev) {
    const t = ev.target instanceof Element ? ev.target : null;
    if (!t) return;
    const sortBtn = t.closest("button[data-sort]");
    if (sortBtn && current.name === "route" && current.section) {
      const key = sortBtn.dataset.sort;
      const view = current;
      if (view.sort.sort === key) view.sort.order = view.sort.order === "asc" ? "desc" : "asc";
      else view.sort = { sort: key, order: DEFAULT_ORDER[key] || "desc" };
      updateSortHeaders(view);
      updateExportLinks(view);
      refreshNow();
      return;
    }
    const btn = t.closest("button[data-action]");
    if (!btn || btn.disabled) return;
    const action = btn.dataset.action;
    if (action === "confirm") return void runConfirmed();
    if (action === "cancel") return void closeConfirm();
    if (action === "dismiss-message") return void clearMessage();
    if (action === "rollback" || action === "set-mode" || action === "clear-override") {
      const holder = btn.closest("[data-route]");
      if (!holder) return;
      openConfirm(action, holder.dataset.route, btn);
    }
  }

  function onChange(ev) {
    const t = ev.target;
    if (!(t instanceof Element)) return;
    if (t.matches('select[data-field="target-mode"]')) {
      t.dataset.touched = "1";
    } else if (t.id === "instance-filter" && current.name === "route") {
      current.instance = t.value;
      updateExportLinks(current);
      renderKeys.delete($("#rejections tbody", current.section));
      refreshNow();
    } else if (t.id === "reason-filter" && current.name === "route") {
      current.reason = t.value;
      updateExportLinks(current);
      renderKeys.delete($("#rejections tbody", current.section));
      refreshNow();
    }
  }

  function init() {
    document.addEventListener("click", onClick);
    document.addEventListener("change", onChange);
    $("#save-token").addEventListener("click", saveToken);
    $("#forget-token").addEventListener("click", forgetToken);
    $("#admin-token").addEventListener("keydown", (ev) => {
      if (ev.key === "Enter") {
        ev.preventDefault();
        saveToken();
      }
    });
    $("#confirm-reason").addEventListener("keydown", (ev) => {
      if (ev.key === "Enter") {
        ev.preventDefault();
        runConfirmed();
      }
    });
    const dlg = $("#confirm");
    // Escape: close through our own path so state is reset.
    dlg.addEventListener("cancel", (ev) => {
      ev.preventDefault();
      closeConfirm();
    });
    // Click on the backdrop does nothing: an explicit Cancel is required.
    document.addEventListener("click", (ev) => {
      const t = ev.target instanceof Element ? ev.target : null;
      if (t && t.id === "reload") reloadConfig(t);
    });
    window.addEventListener("hashchange", () => navigate(false));
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) {
        clearTimeout(timer);
        timer = null;
      } else {
        refreshNow();
      }
    });
    showTokenState();
    navigate(true);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
