//! Where the fleet store is and how to reach it: a `postgresql://` URL (or libpq key/value
//! string), a password from a file or `PGPASSWORD` (never from logs: [`PgTarget`] displays
//! without it), and TLS through the project's OpenSSL, `sslmode=verify-full` included.

use std::fmt;
use std::path::Path;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use tokio_postgres::config::SslMode;

use crate::store::StoreError;

/// How strictly the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// No TLS (`sslmode=disable`).
    None,
    /// TLS without checking the certificate (`prefer`, `require`).
    Encrypt,
    /// The chain against `sslrootcert` (`verify-ca`).
    Ca,
    /// The chain and the host name (`verify-full`).
    Full,
}

/// A connection to the store, which its owner polls.
pub type PgConnection =
    tokio_postgres::Connection<tokio_postgres::Socket, postgres_openssl::TlsStream<tokio_postgres::Socket>>;

#[derive(Clone)]
pub struct PgTarget {
    config: tokio_postgres::Config,
    verify: Verify,
    root_cert: Option<std::path::PathBuf>,
    shown: String,
}

impl PgTarget {
    /// Parses `url`; `password_file` (or `$PGPASSWORD`) supplies a password the URL lacks.
    pub fn parse(url: &str, password_file: Option<&Path>) -> Result<PgTarget, StoreError> {
        let bad = |why: String| StoreError::Config(why);
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept = Vec::new();
        let mut verify = Verify::Encrypt;
        let mut mode_given = false;
        let mut root_cert = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                // tokio-postgres knows disable/prefer/require; the verifying modes are ours
                "sslmode" => {
                    mode_given = true;
                    verify = match value {
                        "disable" => Verify::None,
                        "allow" | "prefer" | "require" => Verify::Encrypt,
                        "verify-ca" => Verify::Ca,
                        "verify-full" => Verify::Full,
                        other => {
                            return Err(bad(format!(
                                "sslmode={other:?} is not a mode (expected disable, prefer, require, verify-ca or verify-full)"
                            )))
                        }
                    };
                }
                "sslrootcert" => root_cert = Some(std::path::PathBuf::from(value)),
                _ => kept.push(pair),
            }
        }
        let rebuilt = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut config: tokio_postgres::Config = rebuilt.parse().map_err(|e| {
            bad(format!(
                "the store URL does not parse: {e} (expected postgresql://user@host:port/db)"
            ))
        })?;
        if !mode_given && is_loopback(&config) {
            // a database on this machine is reached without TLS unless the URL asks for it
            verify = Verify::None;
        }
        config.ssl_mode(if verify == Verify::None {
            SslMode::Disable
        } else {
            SslMode::Require
        });
        if matches!(verify, Verify::Ca | Verify::Full) && root_cert.is_none() {
            return Err(bad(
                "sslmode verify-ca and verify-full need sslrootcert=PATH (the CA that issued the server's certificate)"
                    .to_string(),
            ));
        }
        if config.get_password().is_none() {
            if let Some(file) = password_file {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| bad(format!("cannot read the store password file {}: {e}", file.display())))?;
                config.password(text.trim_end_matches(['\n', '\r']));
            } else if let Ok(p) = std::env::var("PGPASSWORD") {
                config.password(p);
            }
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(2));
        }
        let shown = show(&config, verify);
        Ok(PgTarget {
            config,
            verify,
            root_cert,
            shown,
        })
    }

    fn tls(&self) -> Result<MakeTlsConnector, openssl::error::ErrorStack> {
        let mut b = SslConnector::builder(SslMethod::tls_client())?;
        match self.verify {
            Verify::None | Verify::Encrypt => b.set_verify(SslVerifyMode::NONE),
            Verify::Ca | Verify::Full => {
                if let Some(ca) = &self.root_cert {
                    b.set_ca_file(ca)?;
                }
                b.set_verify(SslVerifyMode::PEER);
            }
        }
        let mut connector = MakeTlsConnector::new(b.build());
        let full = self.verify == Verify::Full;
        connector.set_callback(move |config, _| {
            config.set_verify_hostname(full);
            Ok(())
        });
        Ok(connector)
    }

    pub async fn connect(&self) -> Result<(tokio_postgres::Client, PgConnection), StoreError> {
        let tls = self
            .tls()
            .map_err(|e| StoreError::Config(format!("TLS to the store: {e}")))?;
        self.config
            .connect(tls)
            .await
            .map_err(|e| StoreError::Unreachable(with_causes(&e)))
    }
}

/// An error and what caused it: "error performing TLS handshake" alone does not say that
/// the server's certificate did not verify.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !more.is_empty() && !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

fn is_loopback(config: &tokio_postgres::Config) -> bool {
    config.get_hosts().iter().all(|h| match h {
        tokio_postgres::config::Host::Tcp(name) => {
            name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        tokio_postgres::config::Host::Unix(_) => true,
    })
}

/// `postgresql://user@host:port/db` — never the password.
fn show(config: &tokio_postgres::Config, verify: Verify) -> String {
    let host = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect::<Vec<_>>()
        .join(",");
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("");
    let db = config.get_dbname().unwrap_or("");
    let tls = match verify {
        Verify::None => "",
        Verify::Encrypt => "?sslmode=require",
        Verify::Ca => "?sslmode=verify-ca",
        Verify::Full => "?sslmode=verify-full",
    };
    format!("postgresql://{user}@{host}:{port}/{db}{tls}")
}

impl fmt::Display for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgTarget({})", self.shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_verifying_modes_are_ours_and_the_password_is_never_shown() {
        let t = PgTarget::parse("postgresql://gw:s3cret@db.internal:5433/fleet?sslmode=require", None).unwrap();
        assert_eq!(t.to_string(), "postgresql://gw@db.internal:5433/fleet?sslmode=require");
        assert!(!format!("{t:?}").contains("s3cret"));
        let full = PgTarget::parse(
            "postgresql://gw@db.internal/fleet?sslmode=verify-full&sslrootcert=/etc/pg/ca.pem",
            None,
        )
        .unwrap();
        assert_eq!(full.verify, Verify::Full);
        assert!(PgTarget::parse("postgresql://gw@db/fleet?sslmode=verify-full", None)
            .err()
            .unwrap()
            .to_string()
            .contains("sslrootcert"));
        assert!(PgTarget::parse("postgresql://gw@db/fleet?sslmode=bogus", None).is_err());
        let local = PgTarget::parse("postgresql://gw@127.0.0.1:5432/fleet", None).unwrap();
        assert_eq!(local.verify, Verify::None, "loopback without sslmode: no TLS");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "from-file\n").unwrap();
        let t = PgTarget::parse("postgresql://gw@db/fleet", Some(&dir.path().join("pw"))).unwrap();
        assert_eq!(t.config.get_password(), Some(&b"from-file"[..]));
    }
}
