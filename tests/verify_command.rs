//! `phasegate verify`: every reason, both forms (with a config, and standalone), exit codes.

mod common;

use std::process::{Command, Output};

use common::{ClientKind, TestPki};
use phasegate::devpki::{LeafSpec, San};
use time::{Duration, OffsetDateTime};

fn verify(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phasegate"))
        .arg("verify")
        .args(args)
        .output()
        .unwrap()
}

/// Runs a standalone verification against the test PKI's root (+CRLs) and returns
/// (exit code, reason).
fn standalone(pki: &TestPki, cert_pem: &str, extra: &[&str]) -> (i32, serde_json::Value) {
    let cert = pki.write("candidate.pem", cert_pem);
    let root = pki.path("pki/root.pem");
    let root_crl = pki.path("pki/root.crl");
    let int_crl = pki.path("pki/intermediate.crl");
    let mut args = vec![
        "--trust-anchors",
        root.to_str().unwrap(),
        "--crl",
        root_crl.to_str().unwrap(),
        "--crl",
        int_crl.to_str().unwrap(),
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    args.push(cert.to_str().unwrap());
    let out = verify(&args);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), json)
}

fn chain(pki: &TestPki, kind: ClientKind) -> String {
    pki.client(kind).unwrap().chain_pem
}

#[test]
fn verify_gives_each_reason_for_the_certificate_that_earns_it() {
    let pki = TestPki::new();
    let allow = ["--allow-san", "uri:spiffe://test.example/ns/prod/sa/checkout"];
    let constrained = pki
        .root
        .constrained_intermediate("Constrained CA", &["allowed.test"])
        .unwrap();
    let outside = constrained
        .issue(&LeafSpec::client("spiffe://x/y").sans(vec![San::Dns("evil.example".into())]))
        .unwrap();
    let mut no_signature_use = LeafSpec::client(common::pki::GOOD_URI);
    no_signature_use.digital_signature = false;
    let mut ca_as_leaf = LeafSpec::client(common::pki::GOOD_URI);
    ca_as_leaf.is_ca = true;
    let good = chain(&pki, ClientKind::Good);
    let mut tampered = openssl::x509::X509::from_pem(good.as_bytes())
        .unwrap()
        .to_der()
        .unwrap();
    let last = tampered.len() - 3;
    tampered[last] ^= 0x55;
    let tampered = format!(
        "{}{}",
        String::from_utf8(openssl::x509::X509::from_der(&tampered).unwrap().to_pem().unwrap()).unwrap(),
        pki.intermediate.cert_pem
    );
    let too_long = format!("{}{}", good, pki.intermediate.cert_pem.repeat(8));

    let cases: Vec<(&str, String, Option<&str>)> = vec![
        ("good", good.clone(), None),
        (
            "untrusted",
            chain(&pki, ClientKind::UntrustedCa),
            Some("untrusted_issuer"),
        ),
        (
            "missing intermediate",
            chain(&pki, ClientKind::MissingIntermediate),
            Some("untrusted_issuer"),
        ),
        ("expired", chain(&pki, ClientKind::Expired), Some("expired")),
        (
            "not yet valid",
            chain(&pki, ClientKind::NotYetValid),
            Some("not_yet_valid"),
        ),
        ("revoked", chain(&pki, ClientKind::Revoked), Some("revoked")),
        (
            "server cert",
            chain(&pki, ClientKind::ServerAuthOnly),
            Some("eku_mismatch"),
        ),
        ("wildcard", chain(&pki, ClientKind::WildcardSan), Some("wildcard_san")),
        (
            "not allowed",
            chain(&pki, ClientKind::NotAllowed),
            Some("identity_not_allowed"),
        ),
        ("tampered", tampered, Some("bad_signature")),
        (
            "no digitalSignature",
            pki.issue(&no_signature_use).chain_pem,
            Some("key_usage"),
        ),
        (
            "CA as leaf",
            pki.issue(&ca_as_leaf).chain_pem,
            Some("basic_constraints"),
        ),
        (
            "name constraints",
            format!("{}{}", outside.cert_pem, constrained.cert_pem),
            Some("name_constraints"),
        ),
        ("chain too long", too_long, Some("chain_too_long")),
    ];
    for (name, pem, want) in cases {
        let extra: &[&str] = if name == "name constraints" { &[] } else { &allow };
        // the constrained intermediate has no CRL of its own; check it without CRLs
        let (code, json) = if name == "name constraints" {
            let cert = pki.write("nc.pem", &pem);
            let root = pki.path("pki/root.pem");
            let out = verify(&[
                "--trust-anchors",
                root.to_str().unwrap(),
                "--format",
                "json",
                cert.to_str().unwrap(),
            ]);
            (out.status.code().unwrap(), serde_json::from_slice(&out.stdout).unwrap())
        } else {
            standalone(&pki, &pem, extra)
        };
        match want {
            None => {
                assert_eq!((code, json["verdict"].as_str()), (0, Some("accept")), "{name}: {json}");
                assert_eq!(json["identity"], format!("uri:{}", common::pki::GOOD_URI));
            }
            Some(reason) => {
                assert_eq!(code, 1, "{name}: {json}");
                assert_eq!(json["verdict"], "reject", "{name}");
                assert_eq!(json["reason"], reason, "{name}: {json}");
                assert!(!json["detail"].as_str().unwrap().is_empty(), "{name}");
            }
        }
    }
}

#[test]
fn verify_reports_a_stale_crl_as_crl_invalid() {
    let pki = TestPki::new();
    let now = OffsetDateTime::now_utc();
    pki.write(
        "pki/intermediate.crl",
        &pki.intermediate
            .crl_between(&[], now - Duration::days(2), now - Duration::days(1))
            .unwrap(),
    );
    let (code, json) = standalone(&pki, &chain(&pki, ClientKind::Good), &[]);
    assert_eq!((code, json["reason"].as_str()), (1, Some("crl_invalid")), "{json}");
}

#[test]
fn verify_at_a_past_time_accepts_a_certificate_that_was_valid_then() {
    let pki = TestPki::new();
    let now = OffsetDateTime::now_utc();
    let spec = LeafSpec::client(common::pki::GOOD_URI).valid(now - Duration::days(10), now - Duration::days(5));
    let pem = pki.issue(&spec).chain_pem;
    let cert = pki.write("old.pem", &pem);
    let root = pki.path("pki/root.pem");
    let at = (now - Duration::days(7))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let then = verify(&[
        "--trust-anchors",
        root.to_str().unwrap(),
        "--at",
        &at,
        cert.to_str().unwrap(),
    ]);
    assert_eq!(then.status.code(), Some(0), "{}", String::from_utf8_lossy(&then.stdout));
    assert!(String::from_utf8_lossy(&then.stdout).starts_with("accept: uri:"));
    let today = verify(&["--trust-anchors", root.to_str().unwrap(), cert.to_str().unwrap()]);
    assert_eq!(today.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&today.stdout).starts_with("reject: expired:"));
}

#[test]
fn verify_with_a_config_decides_as_the_route_would() {
    let pki = TestPki::new();
    pki.write(
        "policies/gateway.yaml",
        &format!(
            "{}routes:\n  - name: payments\n    match: {{ host: api.test }}\n    upstream: {{ address: \"127.0.0.1:1\" }}\n    mtls: {{ mode: audit, trust: internal, allow: [{{ uri_prefix: \"spiffe://test.example/ns/prod/\" }}] }}\n",
            pki.base_yaml(18443)
        ),
    );
    let dir = pki.policies();
    for (kind, code, reason) in [
        (ClientKind::Good, 0, None),
        (ClientKind::NotAllowed, 1, Some("identity_not_allowed")),
        (ClientKind::Revoked, 1, Some("revoked")),
        (ClientKind::MissingIntermediate, 1, Some("untrusted_issuer")),
    ] {
        let cert = pki.write("c.pem", &chain(&pki, kind));
        let out = verify(&[
            "--config",
            dir.to_str().unwrap(),
            "--route",
            "payments",
            "--format",
            "json",
            cert.to_str().unwrap(),
        ]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(code), "{kind:?}: {json}");
        assert_eq!(json["reason"].as_str(), reason, "{kind:?}");
    }
}

#[test]
fn verify_usage_errors_exit_2_with_a_message() {
    let pki = TestPki::new();
    let cert = pki.write("c.pem", &chain(&pki, ClientKind::Good));
    let cases: Vec<Vec<String>> = vec![
        vec![cert.display().to_string()],
        vec![
            "--trust-anchors".into(),
            "/nonexistent.pem".into(),
            cert.display().to_string(),
        ],
        vec![
            "--trust-anchors".into(),
            pki.path("pki/root.pem").display().to_string(),
            "--at".into(),
            "yesterday".into(),
            cert.display().to_string(),
        ],
        vec![
            "--trust-anchors".into(),
            pki.path("pki/root.pem").display().to_string(),
            "--allow-san".into(),
            "cn:foo".into(),
            cert.display().to_string(),
        ],
        vec![
            "--trust-anchors".into(),
            pki.path("pki/root.pem").display().to_string(),
            pki.path("pki/root.crl").display().to_string(),
        ],
        vec![
            "--config".into(),
            pki.policies().display().to_string(),
            "--route".into(),
            "x".into(),
            cert.display().to_string(),
        ],
    ];
    for args in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_phasegate"))
            .arg("verify")
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
}
