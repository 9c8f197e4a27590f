//! `phasegate rollback`: one route back to a looser mode, or its override cleared.

use std::path::Path;
use std::process::ExitCode;

use super::admin_client::{api_error, encode, read_token, AdminClient};
use crate::policy::Mode;

/// What to ask of the route.
pub enum Change {
    Rollback { to: Option<Mode>, reason: Option<String> },
    Clear,
}

/// Exit 0 done, 1 refused by the gateway, 2 not reached (or no token file).
pub fn run(route: &str, change: Change, admin: &str, token_file: Option<&Path>) -> ExitCode {
    let clear = matches!(change, Change::Clear);
    let result = (|| -> Result<(u16, serde_json::Value), String> {
        let client = AdminClient::new(admin, read_token(token_file)?)?;
        let route = encode(route);
        match change {
            Change::Clear => client.call_blocking(http::Method::DELETE, &format!("/api/routes/{route}/override"), None),
            Change::Rollback { to, reason } => {
                let body = serde_json::json!({ "to": to, "reason": reason });
                client.call_blocking(http::Method::POST, &format!("/api/routes/{route}/rollback"), Some(body))
            }
        }
    })();
    match result {
        Ok((200, v)) => {
            let mode = v["mode"].as_str().unwrap_or("?");
            let previous = v["previous_mode"].as_str().unwrap_or("?");
            let yaml = v["yaml_mode"].as_str().unwrap_or("?");
            if clear {
                println!("{route}: override cleared; running {mode} as the YAML says (was {previous})");
            } else {
                println!(
                    "{route}: {previous} -> {mode} (YAML says {yaml}; the override stays until `{} rollback {route} --clear`)",
                    super::invocation::self_command()
                );
            }
            if v["persisted"] == false {
                eprintln!(
                    "warning: the override is in force but was not saved: {}",
                    v["persist_error"].as_str().unwrap_or("no state directory")
                );
            }
            // in a fleet: whether every instance applies it, or this one only for now
            match v["fleet"]["delivery"].as_str() {
                Some("fleet") => println!(
                    "fleet: in the fleet's log (version {}); every instance applies it",
                    v["fleet"]["version"]
                ),
                Some(_) => eprintln!(
                    "warning: {}",
                    v["fleet"]["message"]
                        .as_str()
                        .unwrap_or("applied on this instance only")
                ),
                None => {}
            }
            ExitCode::SUCCESS
        }
        Ok((status, v)) => {
            eprintln!("phasegate rollback: {}", api_error(status, &v));
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("phasegate rollback: {e}");
            ExitCode::from(2)
        }
    }
}
