// phasegate admin page — the certificates page: client and gateway certificates, trust bundles.

import { $, ago, dataTable, h, num, renderIfChanged, timeEl } from "./dom.js";

// ---- certificates

export function buildCertificates(view) {
  const section = h("section", { class: "view view-certs", "aria-labelledby": "certs-title" },
    h("div", { class: "view-head" }, h("h1", { id: "certs-title", tabindex: "-1", text: "Certificates" })),
    h("p", { class: "view-error error-box", hidden: true, role: "alert" }),
    h("section", { "aria-labelledby": "client-certs-h" },
      h("h2", { id: "client-certs-h", text: "Client certificates expiring soon" }),
      h("div", { class: "table-wrap" },
        dataTable({ id: "client-certs", class: "data stack" },
          { id: "client-certs-caption", text: "Client certificates seen by the gateway that expire soon or already did, soonest first" },
          ["Client", "Issuer", "Not after", "Days left", "Status", "Last seen"]))),
    h("section", { "aria-labelledby": "gw-certs-h" },
      h("h2", { id: "gw-certs-h", text: "Gateway certificates" }),
      h("div", { class: "table-wrap" },
        dataTable({ id: "gateway-certs", class: "data stack" },
          "The gateway's own certificates and trust anchors, soonest expiry first",
          ["Kind", "Owner", "Certificate", "Not after", "Days left", "Source"]))),
    h("section", { "aria-labelledby": "bundles-h" },
      h("h2", { id: "bundles-h", text: "Trust bundles" }),
      h("div", { class: "table-wrap" },
        dataTable({ id: "trust-bundles", class: "data stack" },
          "How each trust bundle verifies client chains: the strict X.509 profile, and the checks a bundle relaxes for a legacy PKI",
          ["Bundle", "Profile", "Anchors", "Intermediates", "Max intermediates", "Revocation"]))));
  view.section = section;
  return section;
}

function expiryClass(c, watchDays) {
  if (c.expired) return "expired";
  if (typeof c.days_left === "number" && c.days_left <= watchDays) return "expiring";
  return "";
}

export function daysLeftText(c) {
  if (typeof c.days_left !== "number") return "—";
  if (c.expired) return `${c.days_left} (expired ${Math.abs(c.days_left)} d ago)`;
  return String(c.days_left);
}

export function renderCertificates(view, data) {
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
