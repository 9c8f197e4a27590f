//! `phasegate demo`: a throwaway PKI, the example policies of `policies/` (embedded in the
//! binary) and an echo backend — everything the README's first command needs.

pub mod backend;

use std::path::{Path, PathBuf};

use time::{Duration, OffsetDateTime};

use crate::devpki::{CertificateAuthority, LeafSpec, San, Usage};

/// The example policies, as committed in `policies/`.
pub const POLICIES: [(&str, &str); 3] = [
    ("00-listeners.yaml", include_str!("../../policies/00-listeners.yaml")),
    ("10-trust.yaml", include_str!("../../policies/10-trust.yaml")),
    ("20-routes.yaml", include_str!("../../policies/20-routes.yaml")),
];

pub const BACKEND_ADDR: &str = "127.0.0.1:8081";
pub const GATEWAY_URL: &str = "https://localhost:8443";

/// What `prepare` wrote.
pub struct DemoLayout {
    pub dir: PathBuf,
    pub policies: PathBuf,
    pub root: PathBuf,
    /// Client certificates by name: (cert, key).
    pub clients: Vec<(&'static str, PathBuf, PathBuf)>,
    /// A fresh admin token, also written to `admin-token`.
    pub admin_token: String,
}

/// Writes a dev PKI (root, intermediate, CRLs, the gateway's certificate, client
/// certificates of several kinds) and the example policies under `dir`.
pub fn prepare(dir: &Path) -> Result<DemoLayout, String> {
    let e = |e: rcgen::Error| format!("cannot generate the dev PKI: {e}");
    let write = |rel: &str, text: &str| -> Result<PathBuf, String> {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|err| format!("cannot create {}: {err}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|err| format!("cannot write {}: {err}", path.display()))?;
        Ok(path)
    };
    let root = CertificateAuthority::root("phasegate demo root CA").map_err(e)?;
    let intermediate = root.intermediate("phasegate demo intermediate CA").map_err(e)?;
    let in_a_week = OffsetDateTime::now_utc() + Duration::days(7);
    let root_path = write("pki/root.pem", &root.cert_pem)?;
    write("pki/intermediate.pem", &intermediate.cert_pem)?;
    write("pki/root.crl", &root.crl(&[], in_a_week).map_err(e)?)?;

    let mut server = LeafSpec::server(&["localhost"]);
    server.sans.push(San::Ip("127.0.0.1".parse().expect("literal")));
    let gateway = intermediate.issue(&server).map_err(e)?;
    write(
        "certs/gateway.crt",
        &format!("{}{}", gateway.cert_pem, intermediate.cert_pem),
    )?;
    write("certs/gateway.key", &gateway.key_pem)?;

    let now = OffsetDateTime::now_utc();
    let kinds: [(&'static str, LeafSpec); 5] = [
        (
            "checkout",
            LeafSpec::client("spiffe://demo.example/ns/prod/sa/checkout"),
        ),
        (
            "reporting",
            LeafSpec::client("spiffe://demo.example/ns/prod/sa/reporting"),
        ),
        ("intruder", LeafSpec::client("spiffe://demo.example/ns/dev/sa/intruder")),
        (
            "expired",
            LeafSpec::client("spiffe://demo.example/ns/prod/sa/batch")
                .valid(now - Duration::days(30), now - Duration::days(1)),
        ),
        (
            "server-cert",
            LeafSpec::client("spiffe://demo.example/ns/prod/sa/web").usage(Usage::Server),
        ),
    ];
    let mut clients = Vec::new();
    for (name, spec) in kinds {
        let issued = intermediate.issue(&spec).map_err(e)?;
        let cert = write(
            &format!("clients/{name}.crt"),
            &format!("{}{}", issued.cert_pem, intermediate.cert_pem),
        )?;
        let key = write(&format!("clients/{name}.key"), &issued.key_pem)?;
        clients.push((name, cert, key));
    }
    let revoked_client = intermediate
        .issue(&LeafSpec::client("spiffe://demo.example/ns/prod/sa/retired"))
        .map_err(e)?;
    let cert = write(
        "clients/revoked.crt",
        &format!("{}{}", revoked_client.cert_pem, intermediate.cert_pem),
    )?;
    let key = write("clients/revoked.key", &revoked_client.key_pem)?;
    clients.push(("revoked", cert, key));
    write(
        "pki/intermediate.crl",
        &intermediate.crl(&[&revoked_client], in_a_week).map_err(e)?,
    )?;

    for (name, text) in POLICIES {
        write(&format!("policies/{name}"), text)?;
    }
    let mut secret = [0u8; 16];
    openssl::rand::rand_bytes(&mut secret).map_err(|err| format!("cannot make an admin token: {err}"))?;
    let admin_token = crate::tls::hex(&secret);
    write("admin-token", &admin_token)?;
    Ok(DemoLayout {
        admin_token,
        dir: dir.to_path_buf(),
        policies: dir.join("policies"),
        root: root_path,
        clients,
    })
}

/// The walkthrough printed once the demo runs; `exe` is how the user's shell reaches this
/// binary ([`crate::cli::invocation::self_command`]), so every command works as shown.
pub fn instructions(layout: &DemoLayout, admin: &str, exe: &str) -> String {
    let d = layout.dir.display();
    let curl = |path: &str, client: Option<&str>| match client {
        Some(c) => format!(
            "curl --cacert {d}/pki/root.pem --cert {d}/clients/{c}.crt --key {d}/clients/{c}.key {GATEWAY_URL}{path}"
        ),
        None => format!("curl --cacert {d}/pki/root.pem {GATEWAY_URL}{path}"),
    };
    format!(
        "phasegate demo is running.
  files:    {d}   (the README's $DEMO)
  policies: {policies}   (edit a mode and save: it reloads)
  admin:    http://{admin}/

Audit mode — nobody is blocked; would-be rejections are recorded with a reason:
  {a1}
  {a2}
  curl -s http://{admin}/api/routes/orders-audit/rejections

Soft-fail — no certificate passes as unauthenticated, a bad one is rejected:
  {s1}
  {s2}

Enforce — only allowed identities pass:
  {e1}
  {e2}
  {e3}
  {e4}

Off — nothing asked, nothing evaluated:
  {o1}

Roll a route back (effective on the next request, no reload), and clear the override:
  export PHASEGATE_ADMIN=http://{admin} PHASEGATE_ADMIN_TOKEN=$(cat {d}/admin-token)
  {exe} rollback payments-enforce --reason \"checkout broke\"
  {exe} rollback payments-enforce --clear

How ready the audit route is for enforce, and whom to tell first:
  {exe} readiness orders-audit
  {exe} notify-list orders-audit

Check the policies after an edit (a bad change is refused anyway; the last good one keeps serving):
  {exe} check {policies}

Other client certificates to try: {others}
Press Ctrl-C to stop.",
        policies = layout.policies.display(),
        a1 = curl("/audit", None),
        a2 = curl("/audit", Some("intruder")),
        s1 = curl("/soft-fail", None),
        s2 = curl("/soft-fail", Some("expired")),
        e1 = curl("/enforce", Some("checkout")),
        e2 = curl("/enforce", None),
        e3 = curl("/enforce", Some("reporting")),
        e4 = curl("/enforce", Some("revoked")),
        o1 = curl("/off", None),
        others = layout.clients.iter().map(|c| c.0).collect::<Vec<_>>().join(", "),
    )
}
