//! `phasegate notify-list`: per owner, the clients a route would break and why — the list
//! an operator sends before flipping the switch.

use serde_json::Value;

fn rfc3339(v: &Value) -> String {
    v.as_i64().map(crate::admin::rfc3339).unwrap_or_default()
}

/// Renders the answer of `GET /api/routes/{name}/owners` as text or CSV.
pub fn render(answer: &Value, csv: bool) -> String {
    let route = answer["route"].as_str().unwrap_or("?");
    let shadow = answer["view"] == "shadow";
    let groups = answer["groups"].as_array().cloned().unwrap_or_default();
    if csv {
        let mut w = csv::Writer::from_writer(Vec::new());
        let _ = w.write_record([
            "team",
            "contact",
            "client",
            "issuer",
            "reason",
            "count",
            "first_seen",
            "last_seen",
            "detail",
        ]);
        for g in &groups {
            for c in g["clients"].as_array().into_iter().flatten() {
                let _ = w.write_record([
                    g["team"].as_str().unwrap_or("(unowned)"),
                    g["contact"].as_str().unwrap_or(""),
                    c["client"].as_str().unwrap_or(""),
                    c["certificate"]["issuer"].as_str().unwrap_or(""),
                    c["reason"].as_str().unwrap_or(""),
                    &c["count"].as_u64().unwrap_or(0).to_string(),
                    &rfc3339(&c["first_seen"]),
                    &rfc3339(&c["last_seen"]),
                    c["detail"].as_str().unwrap_or(""),
                ]);
            }
        }
        return String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default();
    }
    let total: usize = groups.iter().map(|g| g["clients"].as_array().map_or(0, Vec::len)).sum();
    let mut out = if shadow {
        format!("{route}: {total} client(s) the shadow policy would newly reject\n")
    } else {
        format!("{route}: {total} client(s) enforce would reject\n")
    };
    for g in &groups {
        let team = match (g["team"].as_str(), g["contact"].as_str()) {
            (Some(team), Some(contact)) => format!("{team} ({contact})"),
            (Some(team), None) => team.to_string(),
            (None, _) => "unowned".to_string(),
        };
        out.push_str(&format!("\n{team}\n"));
        for c in g["clients"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  {}  {}  {} request(s), {} .. {}\n",
                c["client"].as_str().unwrap_or("?"),
                c["reason"].as_str().unwrap_or("?"),
                c["count"].as_u64().unwrap_or(0),
                rfc3339(&c["first_seen"]),
                rfc3339(&c["last_seen"]),
            ));
            if let Some(detail) = c["detail"].as_str() {
                out.push_str(&format!("    {detail}\n"));
            }
        }
    }
    if total == 0 {
        out.push_str("\nnobody would break\n");
    }
    out
}
