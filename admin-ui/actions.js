// phasegate admin page — rollback / mode actions and their confirmation dialog (overview and route page).

import { api, errorText, showMessage } from "./api.js";
import { describeChange, formatProblem } from "./config.js";
import { $, MODES, STRICTNESS, h, num, routeApi } from "./dom.js";

// ---------------------------------------------------------------- actions (shared by overview and detail)

export function buildActions(route) {
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

export function updateActions(container, route) {
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
export const knownRoutes = new Map();

const pending = { action: null, route: null, mode: null, opener: null };

export function openConfirm(action, routeName, opener) {
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

export function closeConfirm() {
  const dlg = $("#confirm");
  if (dlg.open) {
    if (typeof dlg.close === "function") dlg.close();
    else dlg.removeAttribute("open");
  }
  const opener = pending.opener;
  pending.action = pending.route = pending.mode = pending.opener = null;
  if (opener && opener.isConnected && !opener.hidden) opener.focus();
}

/** Runs the confirmed action; false when nothing was pending. The caller then refreshes. */
export async function runConfirmed() {
  const { action, route, mode } = pending;
  if (!action || !route) {
    closeConfirm();
    return false;
  }
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
    showMessage("error", `${label} failed`, errorText(e));
  }
  return true;
}

/** Asks for a reload and reports the outcome; the caller then refreshes. */
export async function reloadConfig(btn) {
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
    showMessage("error", "Reload failed", errorText(e));
  } finally {
    btn.disabled = false;
  }
}
