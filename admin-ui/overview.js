// phasegate admin page — the routes overview.

import { buildActions, knownRoutes, updateActions } from "./actions.js";
import { buildChart, chartLegend, setReadinessCell } from "./charts.js";
import { $, fmtNum, h, hashForRoute, modeBadge, num, overrideKindText, renderIfChanged, renderKeys } from "./dom.js";

// ---- overview

export function buildOverview(view) {
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

export function matchText(r) {
  return `${r.host || "*"}${r.path_prefix || "/"}`;
}

export function overrideContent(r, verbose) {
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

export function numCell(td, v, title) {
  td.dataset.value = String(num(v));
  td.textContent = fmtNum(v);
  if (title) td.title = title;
  else td.removeAttribute("title");
}

export function pct(part, whole) {
  return whole > 0 ? `${((100 * part) / whole).toFixed(1)}% of ${fmtNum(whole)} requests` : null;
}

export function renderOverview(view, routes, stats) {
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
