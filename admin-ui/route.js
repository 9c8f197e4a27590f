// phasegate admin page — the route page: figures, rejections, owners, renewals, shadow, exemptions.

import { buildActions, knownRoutes, updateActions } from "./actions.js";
import { daysLeftText } from "./certificates.js";
import { buildChart, chartLegend, setReadinessCell } from "./charts.js";
import { $, $$, ago, dash, dataTable, fmtLocal, fmtNum, h, modeBadge, num, reasonBadge, renderIfChanged, routeApi, timeEl, validUnix } from "./dom.js";
import { matchText, numCell, overrideContent, pct } from "./overview.js";

// ---- route detail

export function buildRouteDetail(view) {
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
        dataTable({ id: "exempt-clients", class: "data compact" },
          "Clients passed by an exemption, most requests first",
          ["Client", "Would be rejected for", "Requests", "First seen", "Last seen", "Sources"]))),
    h("section", { class: "owners-section", "aria-labelledby": "owners-h" },
      h("h2", { id: "owners-h", text: "By owner" }),
      h("p", { class: "muted small", text: "Whom to tell before enforcing: the clients above grouped by the owners: section of the policy (phasegate notify-list prints the same)." }),
      h("div", { id: "owners" })),
    h("section", { class: "renewals-section", "aria-labelledby": "renewals-h" },
      h("h2", { id: "renewals-h", text: "Certificates to renew" }),
      h("p", { class: "muted small", text: "Client certificates that verified on this route and expire soon, with whom to tell: once expired, a browser no longer offers them and their holder becomes an anonymous no_cert visit (phasegate notify-list prints the same)." }),
      h("div", { class: "table-wrap" },
        dataTable({ id: "renewals", class: "data stack" },
          { id: "renewals-caption", text: "Certificates to renew, soonest expiry first" },
          ["Client", "Owner", "Expires", "Days left", "Last seen"]))),
    h("section", { id: "shadow-section", class: "shadow-section", "aria-labelledby": "shadow-h", hidden: true },
      h("h2", { id: "shadow-h", text: "Shadow policy" }),
      h("p", { id: "shadow-summary" }),
      h("div", { id: "shadow-tables" })));
  view.section = section;
  updateExportLinks(view);
  updateSortHeaders(view);
  return section;
}

/** The export links carry the filter; the page fetches all reasons (to list them) and filters locally. */
export function rejectionsQuery(view, format, withReason = true) {
  const p = new URLSearchParams();
  if (view.reason && withReason) p.set("reason", view.reason);
  if (view.instance) p.set("instance", view.instance);
  p.set("sort", view.sort.sort);
  p.set("order", view.sort.order);
  if (format) p.set("format", format);
  return `${routeApi(view.route)}/rejections?${p.toString()}`;
}

export function updateExportLinks(view) {
  const csv = $("#export-csv", view.section);
  const json = $("#export-json", view.section);
  if (csv) csv.href = rejectionsQuery(view, "csv");
  if (json) json.href = rejectionsQuery(view, "json");
}

export function updateSortHeaders(view) {
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

export function renderRouteDetail(view, route, rej, r1h, r7d) {
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
  if (!actions.hasChildNodes()) actions.replaceChildren(buildActions(route));
  updateActions(actions, route);
  renderIfChanged(cell("staging"), [route.enforce_percent, route.exemptions, route.auto_rollback], () => stagingContent(route));

  const windows = { "1h": route.last_hour || {}, "24h": route.last_day || {}, total: { requests: route.requests, would_reject: route.would_reject, rejected: route.rejected, clients: null } };
  // the 1 h and 24 h windows survive restarts (durable history); these counts do not
  const started = view.startedAt;
  const totalLabel = $('tr[data-window="total"] [data-field="window-label"]', s);
  renderIfChanged(totalLabel, started ?? null, () => ["This process ",
    h("span", { class: "muted small block", text: validUnix(started) ? `since it started, ${fmtLocal(started)}` : "since it started" })]);
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
export function renderOwners(view, owners) {
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
            reasonBadge(c.reason),
            h("span", { class: "muted", text: ` ${fmtNum(c.count)} request(s)` })))))));
  });
}

// Certificates due for renewal, with their owner (from the same answer as the groups).
export function renderRenewals(view, owners) {
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
export function renderShadow(view, shadow) {
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
    dataTable({ id, class: "data compact" }, caption, ["Client", "Reason", "Count", "Last seen"],
      rows.length ? rows.map((c) => h("tr", { "data-client": c.client ?? "" },
        h("th", { scope: "row" }, h("code", { text: c.client ?? "?" })),
        h("td", null, reasonBadge(c.reason)),
        h("td", { class: "num", text: fmtNum(c.count) }),
        h("td", null, timeEl(c.last_seen))))
        : h("tr", { class: "empty" }, h("td", { colspan: 4, class: "muted", text: "none" }))));
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
export function renderExempt(view, route, exempt) {
  const section = $("#exempt-section", view.section);
  if (!section) return;
  const clients = exempt && Array.isArray(exempt.clients) ? exempt.clients : [];
  const hasExemptions = Array.isArray(route.exemptions) && route.exemptions.length > 0;
  section.hidden = !clients.length && !hasExemptions;
  const td = (field, ...kids) => h("td", { "data-field": field }, kids);
  renderIfChanged($("tbody", section), [clients, Math.floor(Date.now() / 10000)], () => clients.length ? clients.map((c) =>
    h("tr", { "data-client": c.client ?? "", "data-reason": c.reason ?? "" },
      h("th", { scope: "row", "data-field": "client" }, h("code", { class: "client-id", text: c.client ?? "?" })),
      td("reason", reasonBadge(c.reason)),
      h("td", { class: "num", "data-field": "count", text: fmtNum(c.count) }),
      td("first-seen", timeEl(c.first_seen)),
      td("last-seen", timeEl(c.last_seen)),
      td("sources", Array.isArray(c.sources) && c.sources.length ? c.sources.join(", ") : dash())))
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
  for (const el of $$(".fleet-only", s)) el.hidden = instances.length === 0 && !view.instance;
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
      td("issuer", cert && cert.issuer ? cert.issuer : dash()),
      td("reason", reasonBadge(c.reason),
        c.last_verdict ? h("span", { class: "muted small block", text: `last: ${c.last_verdict.replace(/_/g, " ")} in ${c.last_mode ?? "?"}` }) : null),
      td("detail", c.detail ? c.detail : dash()),
      td("count", fmtNum(c.count)),
      td("first-seen", timeEl(c.first_seen)),
      td("last-seen", timeEl(c.last_seen)),
      td("not-after", notAfter),
      td("sources", sources.length ? sources.join(", ") : dash()));
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
