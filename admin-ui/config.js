// phasegate admin page — the configuration page, the fleet, and the banner every view shows for config and store trouble.

import { $, STRICTNESS, ago, dash, dataTable, fmtNum, h, modeBadge, num, renderIfChanged, shortHash, timeEl } from "./dom.js";

// ---------------------------------------------------------------- config banner (all views)

/** The banner above every view; `view` is the view shown (the config page shows all this itself). */
export function renderConfigAlert(cfg, view) {
  const el = $("#config-alert");
  const onConfig = view.name === "config";
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

// ---- config

export function buildConfig(view) {
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
        dataTable({ id: "fleet-instances", class: "data stack" },
          "Every gateway instance sharing the store, the policy each runs, and when each was last heard from",
          ["Instance", "Policy", "Generation", "Version", "Last heard"]))),
    h("section", { "aria-labelledby": "history-h" },
      h("h2", { id: "history-h", text: "History (newest first)" }),
      h("ol", { id: "history", class: "history" })));
  view.section = section;
  return section;
}

export function renderFleet(view, fleet, cfg) {
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

export function formatProblem(p) {
  if (!p) return "";
  let s = `${p.file ?? "?"}`;
  if (num(p.line) > 0) s += `:${p.line}:${p.column ?? 0}`;
  if (p.path) s += ` ${p.path}`;
  s += `: ${p.message ?? ""}`;
  return s;
}

export function describeChange(c) {
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

export function renderConfig(view, cfg, hist) {
  const s = view.section;
  const c = cfg || {};
  renderIfChanged($("#config-generation", s), String(c.generation ?? "—"), () => String(c.generation ?? "—"));
  renderIfChanged($("#config-loaded-at", s), [c.loaded_at, Math.floor(Date.now() / 10000)], () => timeEl(c.loaded_at));
  renderIfChanged($("#config-hash", s), c.content_hash ?? "", () => h("code", { title: c.content_hash || "", text: shortHash(c.content_hash) }));
  $("#config-reloads", s).textContent = `${fmtNum(c.reloads_ok)} applied, ${fmtNum(c.reloads_failed)} rejected since this process started`;
  const la = c.last_attempt;
  renderIfChanged($("#config-last-attempt", s), [la, Math.floor(Date.now() / 10000)], () => la
    ? [timeEl(la.at), ` via ${sourceText[la.source] || la.source}`]
    : dash());
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
