//! Hostile files: any policy document gets diagnostics (never a panic), and any mutation
//! of a certificate gets a reason (never a panic).

use std::path::PathBuf;

use phasegate::config::{compile, SourceFile};
use phasegate::devpki::{CertificateAuthority, LeafSpec};
use phasegate::tls::{PeerCertificate, RequiredEku, TrustAnchors, VerifyOptions};
use proptest::prelude::*;

/// Policy-shaped YAML: real keys and plausible values, nested at random, so the
/// validator (not just the YAML parser) sees most inputs.
fn policy_yaml() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "listeners",
        "trust_bundles",
        "routes",
        "name",
        "address",
        "tls",
        "certificates",
        "hosts",
        "cert",
        "key",
        "ca",
        "intermediates",
        "crl",
        "match",
        "host",
        "path_prefix",
        "upstream",
        "sni",
        "client_cert",
        "client_key",
        "mtls",
        "mode",
        "trust",
        "allow",
        "uri",
        "uri_prefix",
        "dns",
        "ip",
        "email",
        "enforce_percent",
        "exempt",
        "identity",
        "cidr",
        "until",
        "reason",
        "auto_rollback",
        "max_reject_ratio",
        "window",
        "min_requests",
        "crl_stale",
        "handshake_timeout",
        "max_chain_depth",
        "colour",
    ]);
    let scalar = prop_oneof![
        prop::sample::select(vec![
            "audit",
            "enforce",
            "soft-fail",
            "off",
            "fail-open",
            "internal",
            "127.0.0.1:8443",
            "0.0.0.0:99999",
            "spiffe://corp/ns/prod/",
            "*.svc",
            "10.0.0.0/8",
            "2027-01-31",
            "60s",
            "-1",
            "101",
            "0.5",
            "~",
            "[]",
            "{}",
            "/payments",
            "../x.pem",
            "\"\"",
            "'\\u0000'",
            "!!binary aGk=",
            "&a x",
            "*a",
        ])
        .prop_map(str::to_string),
        "[ -~]{0,12}",
    ];
    let leaf = (key.clone(), scalar).prop_map(|(k, v)| format!("{k}: {v}"));
    leaf.prop_recursive(4, 48, 6, move |inner| {
        (key.clone(), prop::collection::vec(inner, 1..5), any::<bool>()).prop_map(|(k, children, as_list)| {
            let body: Vec<String> = children
                .iter()
                .map(|c| {
                    let indented = c.replace('\n', "\n    ");
                    if as_list {
                        format!("  - {indented}")
                    } else {
                        format!("  {}", c.replace('\n', "\n  "))
                    }
                })
                .collect();
            format!("{k}:\n{}", body.join("\n"))
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn any_policy_document_gets_diagnostics_never_a_panic(doc in policy_yaml()) {
        let source = SourceFile::new(PathBuf::from("/nonexistent/policy.yaml"), doc);
        if let Err(d) = compile(&[source]) {
            prop_assert!(!d.0.is_empty());
            for problem in &d.0 {
                prop_assert!(!problem.message.is_empty());
            }
        }
    }

    #[test]
    fn any_text_at_all_gets_diagnostics_never_a_panic(doc in "\\PC{0,400}") {
        let _ = compile(&[SourceFile::new(PathBuf::from("/nonexistent/p.yaml"), doc)]);
    }
}

struct Material {
    anchors: TrustAnchors,
    leaf_der: Vec<u8>,
    intermediate_der: Vec<u8>,
}

fn material() -> &'static Material {
    static M: std::sync::OnceLock<Material> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        let root = CertificateAuthority::root("root").unwrap();
        let intermediate = root.intermediate("intermediate").unwrap();
        let leaf = intermediate
            .issue(&LeafSpec::client("spiffe://t/ns/prod/sa/a"))
            .unwrap();
        let pem = |p: &str| openssl::x509::X509::from_pem(p.as_bytes()).unwrap();
        let anchors = TrustAnchors::new(vec![pem(&root.cert_pem)], vec![], &[], VerifyOptions::default()).unwrap();
        Material {
            anchors,
            leaf_der: pem(&leaf.cert_pem).to_der().unwrap(),
            intermediate_der: pem(&intermediate.cert_pem).to_der().unwrap(),
        }
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, u8),
}

fn mutate(mut der: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        match *m {
            Mutation::Flip(i, x) if !der.is_empty() => {
                let n = der.len();
                der[i % n] ^= x.max(1)
            }
            Mutation::Truncate(i) => der.truncate(i % (der.len() + 1)),
            Mutation::Insert(i, b) => {
                let n = der.len();
                der.insert(i % (n + 1), b)
            }
            _ => {}
        }
    }
    der
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, x)| Mutation::Flip(i, x)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn any_mutated_certificate_gets_a_reason_never_a_panic(
        leaf_mutations in prop::collection::vec(mutation(), 1..4),
        chain_mutations in prop::collection::vec(mutation(), 0..3),
    ) {
        let m = material();
        let leaf = mutate(m.leaf_der.clone(), &leaf_mutations);
        let intermediate = mutate(m.intermediate_der.clone(), &chain_mutations);
        // what OpenSSL refuses to parse never reaches the verifier (the handshake fails)
        if let Ok(leaf) = openssl::x509::X509::from_der(&leaf) {
            let chain = openssl::x509::X509::from_der(&intermediate).into_iter().collect();
            let peer = PeerCertificate::new(leaf, chain);
            match m.anchors.verify(&peer, RequiredEku::ClientAuth) {
                Ok(_) => prop_assert!(peer.identity.is_ok()),
                Err(f) => prop_assert!(!f.detail.is_empty()),
            }
        }
        // and arbitrary bytes as a PEM file are an error message, not a crash
        let _ = PeerCertificate::from_pem(&leaf);
    }
}
