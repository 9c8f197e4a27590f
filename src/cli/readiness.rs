//! `phasegate readiness`: the share of a route's requests enforce would have rejected over
//! a window, as a CI gate for the YAML change that flips the route.

use std::process::ExitCode;

use super::admin_client::{encode, get_json};

/// Exit 0 ready, 1 not ready (above `max`, or fewer than `min_requests`), 2 error.
pub fn run(route: &str, window: &str, max: Option<f64>, min_requests: u64, admin: &str, json: bool) -> ExitCode {
    if let Some(r) = max.filter(|r| !(0.0..=1.0).contains(r)) {
        eprintln!("phasegate readiness: --max-reject-ratio {r} is out of range (expected 0 to 1, e.g. 0.01)");
        return ExitCode::from(2);
    }
    let path = format!("/api/routes/{}/readiness?window={}", encode(route), encode(window));
    let v = match get_json(admin, &path) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("phasegate readiness: {e}");
            return ExitCode::from(2);
        }
    };
    let ratio = v["reject_ratio"].as_f64().unwrap_or(0.0);
    let requests = v["requests"].as_u64().unwrap_or(0);
    let verdict = match max {
        _ if requests < min_requests => Err(format!("only {requests} requests in the window (need {min_requests})")),
        Some(limit) if ratio > limit => Err(format!("reject ratio {ratio:.4} is above {limit}")),
        _ => Ok(()),
    };
    if json {
        let mut out = v.clone();
        out["ok"] = verdict.is_ok().into();
        println!("{out}");
    } else {
        println!("{route} ({window}): {}", v["summary"].as_str().unwrap_or(""));
        if let Err(why) = &verdict {
            println!("not ready: {why}");
        }
    }
    if verdict.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
