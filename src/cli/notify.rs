//! `phasegate notify-list`: per owner, the clients a route would break and why, and the
//! certificates to renew before they lock anyone out — the list an operator sends before
//! flipping the switch.

use serde_json::Value;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    Text,
    Csv,
    Json,
}

fn rfc3339(v: &Value) -> String {
    v.as_i64().map(crate::admin::rfc3339).unwrap_or_default()
}

/// "expires in 9 day(s)" / "expired 2 day(s) ago"
fn expiry(renewal: &Value) -> String {
    let days = renewal["days_left"].as_i64().unwrap_or(0);
    if renewal["expired"].as_bool().unwrap_or(false) {
        format!("expired {} day(s) ago", -days)
    } else {
        format!("expires in {days} day(s)")
    }
}

fn list<'a>(group: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    group[key].as_array().into_iter().flatten()
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
            "not_after",
        ]);
        for g in &groups {
            let (team, contact) = (
                g["team"].as_str().unwrap_or("(unowned)"),
                g["contact"].as_str().unwrap_or(""),
            );
            for c in list(g, "clients") {
                let _ = w.write_record([
                    team,
                    contact,
                    c["client"].as_str().unwrap_or(""),
                    c["certificate"]["issuer"].as_str().unwrap_or(""),
                    c["reason"].as_str().unwrap_or(""),
                    &c["count"].as_u64().unwrap_or(0).to_string(),
                    &rfc3339(&c["first_seen"]),
                    &rfc3339(&c["last_seen"]),
                    c["detail"].as_str().unwrap_or(""),
                    &rfc3339(&c["certificate"]["not_after"]),
                ]);
            }
            // not a reason code: a certificate that still passes, due for renewal
            for r in list(g, "renewals") {
                let _ = w.write_record([
                    team,
                    contact,
                    r["client"].as_str().unwrap_or(""),
                    r["certificate"]["issuer"].as_str().unwrap_or(""),
                    "renew",
                    "",
                    &rfc3339(&r["first_seen"]),
                    &rfc3339(&r["last_seen"]),
                    &expiry(r),
                    &rfc3339(&r["certificate"]["not_after"]),
                ]);
            }
        }
        return String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default();
    }
    let count = |key: &str| -> usize { groups.iter().map(|g| list(g, key).count()).sum() };
    let (total, renewals) = (count("clients"), count("renewals"));
    let mut out = if shadow {
        format!("{route}: {total} client(s) the shadow policy would newly reject\n")
    } else {
        format!("{route}: {total} client(s) enforce would reject\n")
    };
    if renewals > 0 {
        let window = answer["renewal_window_secs"]
            .as_i64()
            .map_or_else(|| "the renewal window".to_string(), crate::admin::short_duration);
        out.push_str(&format!(
            "{route}: {renewals} certificate(s) to renew, expiring within {window}\n"
        ));
    }
    for g in &groups {
        let team = match (g["team"].as_str(), g["contact"].as_str()) {
            (Some(team), Some(contact)) => format!("{team} ({contact})"),
            (Some(team), None) => team.to_string(),
            (None, _) => "unowned".to_string(),
        };
        out.push_str(&format!("\n{team}\n"));
        for c in list(g, "clients") {
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
        for r in list(g, "renewals") {
            out.push_str(&format!(
                "  {}  renew  {} ({}), last seen {}\n",
                r["client"].as_str().unwrap_or("?"),
                expiry(r),
                rfc3339(&r["certificate"]["not_after"]),
                rfc3339(&r["last_seen"]),
            ));
        }
    }
    if total == 0 {
        out.push_str("\nnobody would break\n");
    }
    out
}

/// `phasegate notify-list`: exit 0 with the list printed, 2 when the gateway says no or
/// cannot be reached.
pub fn run(route: &str, shadow: bool, format: ListFormat, admin: &str) -> std::process::ExitCode {
    let path = format!(
        "/api/routes/{}/owners?shadow={shadow}",
        super::admin_client::encode(route)
    );
    match super::admin_client::get_json(admin, &path) {
        Ok(v) => {
            match format {
                ListFormat::Json => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
                ListFormat::Csv => print!("{}", render(&v, true)),
                ListFormat::Text => print!("{}", render(&v, false)),
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("phasegate notify-list: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
