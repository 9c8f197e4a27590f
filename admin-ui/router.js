// phasegate admin page — which view is shown: the URL hash, building views, view errors.

import { errorText } from "./api.js";
import { buildCertificates } from "./certificates.js";
import { buildConfig } from "./config.js";
import { $, $$ } from "./dom.js";
import { buildOverview } from "./overview.js";
import { buildRouteDetail } from "./route.js";

// ---------------------------------------------------------------- views

/** Current view: {name: overview|route|config|certificates, route?} plus its DOM refs. */
export let current = { name: "overview", key: "overview" };

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

/** Shows the view the hash names; false when it already is shown. The caller then refreshes. */
export function navigate(initial) {
  const next = parseHash();
  if (!initial && next.key === current.key) return false;
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
  return true;
}

export function viewError(container, e) {
  const el = $(".view-error", container);
  if (!el) return;
  if (!e) {
    el.hidden = true;
    el.textContent = "";
    return;
  }
  el.hidden = false;
  el.textContent = errorText(e);
}
