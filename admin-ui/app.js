// phasegate admin page. Plain ES2020 modules, no dependencies, CSP-clean: no inline code,
// no innerHTML with data, no style attributes. Every server-provided string goes
// through textContent (via the h() helper). This module: polling, events and start-up.

import { closeConfirm, openConfirm, reloadConfig, runConfirmed } from "./actions.js";
import { ApiError, api, clearMessage, forgetToken, markUpdated, saveToken, setConnection, showTokenState } from "./api.js";
import { renderCertificates } from "./certificates.js";
import { renderConfig, renderConfigAlert, renderFleet } from "./config.js";
import { $, DEFAULT_ORDER, POLL_MS, renderKeys, routeApi, validUnix } from "./dom.js";
import { renderOverview } from "./overview.js";
import { rejectionsQuery, renderExempt, renderOwners, renderRenewals, renderRouteDetail, renderShadow, updateExportLinks, updateSortHeaders } from "./route.js";
import { current, navigate, viewError } from "./router.js";

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

/** A GET's JSON body. */
const data = (path) => api(path).then((r) => r.data);
/** A GET whose failure leaves its part of the page empty (null), unless the API is unreachable. */
const optional = (path) => data(path).catch((e) => (e.unreachable ? Promise.reject(e) : null));

async function refresh() {
  inFlight = true;
  const view = current;
  const stillCurrent = () => view === current;
  try {
    const cfgP = optional("/api/config");
    if (view.name === "overview") {
      const [routes, stats, cfg] = await Promise.all([data("/api/routes"), optional("/api/stats"), cfgP]);
      if (stillCurrent()) {
        renderOverview(view, routes, stats);
        renderConfigAlert(cfg, view);
        viewError(view.tbody.closest("section"), null);
      }
    } else if (view.name === "route") {
      const base = routeApi(view.route);
      const [route, rej, r1h, r7d, cfg, owners, shadow, exempt] = await Promise.all([
        data(base),
        data(rejectionsQuery(view, null, false)),
        optional(`${base}/readiness?window=1h`),
        optional(`${base}/readiness?window=7d`),
        cfgP,
        optional(`${base}/owners`),
        optional(`${base}/shadow?window=24h`),
        optional(`${base}/rejections?verdict=exempt`),
      ]);
      if (stillCurrent()) {
        view.section.classList.remove("missing");
        if (cfg && validUnix(cfg.started_at)) view.startedAt = cfg.started_at;
        renderRouteDetail(view, route || {}, rej, r1h, r7d);
        renderExempt(view, route || {}, exempt);
        renderOwners(view, owners);
        renderRenewals(view, owners);
        renderShadow(view, shadow);
        renderConfigAlert(cfg, view);
        viewError(view.section, null);
      }
    } else if (view.name === "config") {
      const [cfg, hist, fleet] = await Promise.all([cfgP, data("/api/config/history"), data("/api/fleet")]);
      if (stillCurrent()) {
        renderConfig(view, cfg, hist);
        renderFleet(view, fleet, cfg);
        renderConfigAlert(cfg, view);
        viewError(view.section, null);
      }
    } else if (view.name === "certificates") {
      const [certs, cfg] = await Promise.all([data("/api/certificates"), cfgP]);
      if (stillCurrent()) {
        renderCertificates(view, certs);
        renderConfigAlert(cfg, view);
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
  if (t.id === "reload") return void reloadConfig(t).then(refreshNow);
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
  if (action === "confirm") return void runConfirmed().then((ran) => ran && refreshNow());
  if (action === "cancel") return void closeConfirm();
  if (action === "dismiss-message") return void clearMessage();
  if (action === "rollback" || action === "set-mode" || action === "clear-override") {
    const holder = btn.closest("[data-route]");
    if (!holder) return;
    openConfirm(action, holder.dataset.route, btn);
  }
}

/** The route page's filter selects and the view field each sets. */
const FILTER_FIELDS = new Map([["reason-filter", "reason"], ["instance-filter", "instance"]]);

function onChange(ev) {
  const t = ev.target;
  if (!(t instanceof Element)) return;
  const field = FILTER_FIELDS.get(t.id);
  if (t.matches('select[data-field="target-mode"]')) {
    t.dataset.touched = "1";
  } else if (field && current.name === "route") {
    current[field] = t.value;
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
      runConfirmed().then((ran) => ran && refreshNow());
    }
  });
  const dlg = $("#confirm");
  // Escape: close through our own path so state is reset.
  // Click on the backdrop does nothing: an explicit Cancel is required.
  dlg.addEventListener("cancel", (ev) => {
    ev.preventDefault();
    closeConfirm();
  });
  window.addEventListener("hashchange", () => {
    if (navigate(false)) refreshNow();
  });
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
  refreshNow();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
else init();
