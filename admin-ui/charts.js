// phasegate admin page — per-minute charts and readiness cells.

import { fmtLocal, h, num, renderIfChanged, svg } from "./dom.js";

// ---------------------------------------------------------------- charts

/**
 * Requests (light area with a solid outline) vs would-be-rejected (dark bars) per
 * minute over the last 60 minutes. Shapes differ, not only colours.
 */
export function buildChart(series, large) {
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

export function chartLegend() {
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

export function setReadinessCell(td, route, readiness) {
  const { state, kids } = readinessContent(route, readiness);
  td.dataset.readiness = state;
  if (state === "not-evaluated") td.title = "In off mode the gateway asks for no client certificate, so nothing is evaluated or recorded; switch to audit to measure readiness.";
  else td.removeAttribute("title");
  renderIfChanged(td, { state, s: readiness && readiness.summary }, () => kids);
}
