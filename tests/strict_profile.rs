//! The strict verdict: a matrix of certificate chains, one per family of defect plus the good
//! shapes, each run through `phasegate verify`, a real handshake on an enforcing and an
//! auditing route, and — differentially — Debian's `openssl verify -x509_strict -purpose
//! sslclient`. Where OpenSSL rejects, phasegate must reject; where phasegate alone rejects,
//! the case names the extra check that decided.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::chains::{Chain, Key, Spec};
use common::pki::ClientCert;
use common::{ClientOptions, TestGateway, TestPki};
use openssl::hash::MessageDigest;

struct Case {
    name: &'static str,
    chain: Chain,
    /// The reason phasegate gives; `None` for a pass.
    reason: Option<&'static str>,
    /// OpenSSL's strict CLI accepts this chain; the phasegate check that rejects it.
    extra: Option<&'static str>,
    relax: &'static [&'static str],
    max_depth: Option<u32>,
    /// `check` refuses this anchor in a trust bundle outright (it is not a CA), so only
    /// `verify --trust-anchors` meets the chain.
    anchor_refused_by_check: bool,
}

impl Case {
    fn new(name: &'static str, chain: Chain, reason: Option<&'static str>) -> Case {
        Case {
            name,
            chain,
            reason,
            extra: None,
            relax: &[],
            max_depth: None,
            anchor_refused_by_check: false,
        }
    }

    fn extra(mut self, check: &'static str) -> Case {
        self.extra = Some(check);
        self
    }

    fn relax(mut self, checks: &'static [&'static str]) -> Case {
        self.relax = checks;
        self
    }

    fn max_depth(mut self, depth: u32) -> Case {
        self.max_depth = Some(depth);
        self
    }
}

const URI: &str = "spiffe://matrix.example/ns/prod/sa/checkout";

fn root() -> Spec {
    Spec::root("Matrix Root")
}

fn int(n: &str) -> Spec {
    Spec::intermediate(n)
}

fn leaf() -> Spec {
    Spec::leaf(URI)
}

fn matrix() -> Vec<Case> {
    let c = Chain::build;
    let sha1 = || MessageDigest::sha1();
    vec![
        // ---- the good shapes
        Case::new("leaf only, issued by the root", c(&root(), &[], &leaf()), None),
        Case::new(
            "leaf and intermediate, URI SAN only",
            c(&root(), &[int("I")], &leaf()),
            None,
        ),
        Case::new("two intermediates", c(&root(), &[int("I1"), int("I2")], &leaf()), None),
        Case::new(
            "DNS SAN only",
            c(
                &root(),
                &[int("I")],
                &leaf().with(|s| s.san = Some("DNS:billing.prod.svc".into())),
            ),
            None,
        ),
        Case::new(
            "IP SAN",
            c(
                &root(),
                &[int("I")],
                &leaf().with(|s| s.san = Some("IP:10.1.2.3".into())),
            ),
            None,
        ),
        Case::new(
            "no EKU at all",
            c(&root(), &[int("I")], &leaf().with(|s| s.extended_key_usage = None)),
            None,
        ),
        Case::new(
            "RSA 2048 everywhere",
            c(
                &root().with(|s| s.key = Key::Rsa(2048)),
                &[int("I").with(|s| s.key = Key::Rsa(2048))],
                &leaf().with(|s| s.key = Key::Rsa(2048)),
            ),
            None,
        ),
        // ---- purpose of every CA
        Case::new(
            "intermediate restricted to serverAuth",
            c(
                &root(),
                &[int("I").with(|s| s.extended_key_usage = Some("serverAuth".into()))],
                &leaf(),
            ),
            Some("eku_mismatch"),
        ),
        Case::new(
            "intermediate restricted to serverAuth, bundle relaxing everything relaxable",
            c(
                &root(),
                &[int("I").with(|s| s.extended_key_usage = Some("serverAuth".into()))],
                &leaf(),
            ),
            Some("eku_mismatch"),
        )
        .relax(&[
            "key_identifiers",
            "critical_basic_constraints",
            "empty_subject",
            "key_usage_profile",
            "dns_name_syntax",
            "crl_number",
        ]),
        Case::new(
            "leaf restricted to serverAuth",
            c(
                &root(),
                &[int("I")],
                &leaf().with(|s| s.extended_key_usage = Some("serverAuth".into())),
            ),
            Some("eku_mismatch"),
        ),
        // ---- the RFC 5280 profile
        Case::new(
            "leaf without authorityKeyIdentifier",
            c(&root(), &[int("I")], &leaf().with(|s| s.authority_key_id = false)),
            Some("malformed"),
        ),
        Case::new(
            "leaf without authorityKeyIdentifier, bundle relaxing key_identifiers",
            c(&root(), &[int("I")], &leaf().with(|s| s.authority_key_id = false)),
            None,
        )
        .relax(&["key_identifiers"]),
        Case::new(
            "intermediate without authorityKeyIdentifier",
            c(&root(), &[int("I").with(|s| s.authority_key_id = false)], &leaf()),
            Some("malformed"),
        ),
        Case::new(
            "CA without subjectKeyIdentifier",
            c(&root(), &[int("I").with(|s| s.subject_key_id = false)], &leaf()),
            Some("malformed"),
        ),
        Case {
            anchor_refused_by_check: true,
            ..Case::new(
                "root without basicConstraints",
                c(&root().with(|s| s.basic_constraints = None), &[int("I")], &leaf()),
                Some("basic_constraints"),
            )
        },
        Case::new(
            "root with a non-critical basicConstraints",
            c(
                &root().with(|s| s.basic_constraints = Some("CA:TRUE".into())),
                &[int("I")],
                &leaf(),
            ),
            Some("basic_constraints"),
        ),
        Case::new(
            "leaf with keyUsage keyCertSign",
            c(
                &root(),
                &[int("I")],
                &leaf().with(|s| s.key_usage = Some("critical,digitalSignature,keyCertSign".into())),
            ),
            Some("key_usage"),
        ),
        Case::new(
            "leaf with an empty subject and a non-critical SAN",
            c(&root(), &[int("I")], &leaf().with(|s| s.cn = None)),
            Some("malformed"),
        ),
        Case::new(
            "CA with an empty subject",
            c(&root(), &[int("I").with(|s| s.cn = None)], &leaf()),
            Some("malformed"),
        ),
        // ---- key and signature strength
        Case::new(
            "P-192 intermediate",
            c(&root(), &[int("I").with(|s| s.key = Key::P192)], &leaf()),
            Some("weak_crypto"),
        )
        .extra("weak_crypto: security level 2 (112 bits); OpenSSL's CLI checks none by default"),
        Case::new(
            "RSA 1024 root",
            c(&root().with(|s| s.key = Key::Rsa(1024)), &[int("I")], &leaf()),
            Some("weak_crypto"),
        )
        .extra("weak_crypto: security level 2 (112 bits); OpenSSL's CLI checks none by default"),
        Case::new(
            "RSA 1024 leaf",
            c(&root(), &[int("I")], &leaf().with(|s| s.key = Key::Rsa(1024))),
            Some("weak_crypto"),
        )
        .extra("weak_crypto: security level 2 (112 bits); OpenSSL's CLI checks none by default"),
        Case::new(
            "leaf signed with SHA-1",
            c(&root(), &[int("I")], &leaf().with(|s| s.digest = sha1)),
            Some("weak_crypto"),
        )
        .extra("weak_crypto: security level 2 refuses SHA-1 signatures"),
        Case::new(
            "intermediate signed with SHA-1",
            c(&root(), &[int("I").with(|s| s.digest = sha1)], &leaf()),
            Some("weak_crypto"),
        )
        .extra("weak_crypto: security level 2 refuses SHA-1 signatures"),
        Case::new(
            "DSA trust anchor",
            c(&root().with(|s| s.key = Key::Dsa2048), &[int("I")], &leaf()),
            Some("weak_crypto"),
        )
        .extra("weak_crypto: phasegate refuses DSA keys (FIPS 186-5)"),
        // ---- what even strict OpenSSL lets through
        Case::new(
            "name constraints in an end-entity certificate",
            c(
                &root(),
                &[int("I")],
                &leaf().with(|s| {
                    s.extra
                        .push(("nameConstraints".into(), "critical,permitted;DNS:.example".into()))
                }),
            ),
            Some("name_constraints"),
        )
        .extra("name_constraints: only CAs may carry them"),
        Case::new(
            "intermediate with an iPAddress constraint whose mask is not a prefix",
            c(
                &root(),
                &[int("I").with(|s| {
                    s.extra.push((
                        "nameConstraints".into(),
                        "critical,DER:30:0e:a0:0c:30:0a:87:08:0a:00:00:00:ff:00:ff:00".into(),
                    ))
                })],
                &leaf(),
            ),
            Some("name_constraints"),
        )
        .extra("name_constraints: malformed constraint"),
        Case::new(
            "dNSName SAN with an underscore",
            c(
                &root(),
                &[int("I")],
                &leaf().with(|s| s.san = Some("DNS:_billing.prod.svc".into())),
            ),
            Some("malformed"),
        )
        .extra("dns_name_syntax: a dNSName must be a host name"),
        Case::new(
            "dNSName SAN with an underscore, bundle relaxing dns_name_syntax",
            c(
                &root(),
                &[int("I")],
                &leaf().with(|s| s.san = Some("DNS:_billing.prod.svc".into())),
            ),
            None,
        )
        .relax(&["dns_name_syntax"]),
        Case::new(
            "authorityInfoAccess location that is not a URI",
            c(
                &root(),
                &[int("I")],
                &leaf().with(|s| {
                    s.extra
                        .push(("authorityInfoAccess".into(), "caIssuers;DNS:ca.example".into()))
                }),
            ),
            Some("malformed"),
        )
        .extra("malformed authorityInfoAccess"),
        Case::new(
            "unknown critical extension",
            c(
                &root(),
                &[int("I")],
                &leaf().with(|s| {
                    s.extra
                        .push(("1.3.6.1.4.1.99999.1".into(), "critical,DER:05:00".into()))
                }),
            ),
            Some("malformed"),
        ),
        Case::new(
            "critical certificatePolicies with an unknown qualifier",
            c(
                &root(),
                &[int("I")],
                &leaf().with(|s| {
                    s.extra.push((
                        "certificatePolicies".into(),
                        "critical,DER:30:19:30:17:06:04:55:1d:20:00:30:0f:30:0d:06:09:2b:06:01:04:01:86:8d:1f:02:05:00"
                            .into(),
                    ))
                }),
            ),
            Some("malformed"),
        )
        .extra("critical certificatePolicies with an unknown policy qualifier"),
        // ---- depth, counted as OpenSSL's verify_depth counts
        Case::new("max depth 0, leaf issued by the anchor", c(&root(), &[], &leaf()), None).max_depth(0),
        Case::new(
            "max depth 0, one intermediate",
            c(&root(), &[int("I")], &leaf()),
            Some("chain_too_long"),
        )
        .max_depth(0),
        Case::new(
            "max depth 1, two intermediates",
            c(&root(), &[int("I1"), int("I2")], &leaf()),
            Some("chain_too_long"),
        )
        .max_depth(1),
        Case::new("max depth 1, one intermediate", c(&root(), &[int("I")], &leaf()), None).max_depth(1),
    ]
}

/// Files of one case: the anchor, the chain the client presents, its intermediates alone.
struct CaseFiles {
    root: PathBuf,
    presented: PathBuf,
    intermediates: Option<PathBuf>,
    leaf: PathBuf,
}

fn write_case(pki: &TestPki, i: usize, case: &Case) -> CaseFiles {
    let dir = format!("matrix/{i}");
    let intermediates = (!case.chain.intermediates.is_empty())
        .then(|| pki.write(&format!("{dir}/intermediates.pem"), &case.chain.intermediates_pem()));
    CaseFiles {
        root: pki.write(&format!("{dir}/root.pem"), &case.chain.root.pem()),
        presented: pki.write(&format!("{dir}/presented.pem"), &case.chain.presented_pem()),
        intermediates,
        leaf: pki.write(&format!("{dir}/leaf.pem"), &case.chain.leaf.pem()),
    }
}

/// `phasegate verify` on the presented chain: (exit code, JSON report).
fn phasegate_verify(case: &Case, files: &CaseFiles) -> (i32, serde_json::Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_phasegate"));
    cmd.args(["verify", "--format", "json", "--trust-anchors"])
        .arg(&files.root);
    if let Some(depth) = case.max_depth {
        cmd.args(["--max-depth", &depth.to_string()]);
    }
    for check in case.relax {
        cmd.args(["--relax", check]);
    }
    let out = cmd.arg(&files.presented).output().unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "{}: stdout {} stderr {}",
            case.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

/// Debian's `openssl verify -x509_strict -purpose sslclient`: (accepted, what it printed).
fn openssl_verify(case: &Case, files: &CaseFiles) -> (bool, String) {
    let mut cmd = Command::new("openssl");
    cmd.args(["verify", "-x509_strict", "-purpose", "sslclient", "-CAfile"])
        .arg(&files.root);
    if let Some(ints) = &files.intermediates {
        cmd.arg("-untrusted").arg(ints);
    }
    if let Some(depth) = case.max_depth {
        cmd.args(["-verify_depth", &depth.to_string()]);
    }
    let out = cmd
        .arg(&files.leaf)
        .output()
        .expect("the openssl CLI (Debian package openssl; .ci/run installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text.trim().replace('\n', " | "))
}

/// What `phasegate check` says of a bundle anchored at `root`.
fn refused_as_anchor(pki: &TestPki, root: &std::path::Path) -> String {
    let dir = pki.path("refused-anchor");
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = pki
        .base_yaml(1)
        .replace("../certs/", &format!("{}/certs/", pki.dir.path().display()))
        .replace("../pki/", &format!("{}/pki/", pki.dir.path().display()))
        + &format!("  legacy:\n    ca: {}\n", root.display());
    std::fs::write(dir.join("p.yaml"), yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_phasegate"))
        .arg("check")
        .arg(&dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn matrix_config(cases: &[Case]) -> (String, String) {
    let mut bundles = String::from("  # the matrix\n");
    let mut routes = String::from("routes:\n");
    for (i, case) in cases.iter().enumerate() {
        if case.anchor_refused_by_check {
            continue;
        }
        bundles.push_str(&format!("  m{i}:\n    ca: ../matrix/{i}/root.pem\n"));
        if let Some(depth) = case.max_depth {
            bundles.push_str(&format!("    max_chain_depth: {depth}\n"));
        }
        if !case.relax.is_empty() {
            bundles.push_str(&format!("    relax: [{}]\n", case.relax.join(", ")));
        }
        for mode in ["enforce", "audit"] {
            routes.push_str(&format!(
                "  - name: m{i}-{mode}\n    match: {{ host: api.test, path_prefix: /m{i}/{mode} }}\n    upstream: {{ address: \"{{backend}}\" }}\n    mtls: {{ mode: {mode}, trust: m{i} }}\n"
            ));
        }
    }
    (bundles, routes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chain_gets_the_same_verdict_from_verify_enforce_and_audit_and_never_a_weaker_one_than_openssl() {
    let pki = TestPki::new();
    let cases = matrix();
    let files: Vec<CaseFiles> = cases.iter().enumerate().map(|(i, c)| write_case(&pki, i, c)).collect();
    let (bundles, routes) = matrix_config(&cases);
    let gw = TestGateway::start_edited(&pki, &routes, |base| {
        base.replace("trust_bundles:\n", &format!("trust_bundles:\n{bundles}"))
    })
    .await;
    let mut failures = Vec::new();
    let mut extras = Vec::new();
    for (i, (case, files)) in cases.iter().zip(&files).enumerate() {
        let name = case.name;
        // phasegate verify
        let (code, report) = phasegate_verify(case, files);
        let got = report["reason"].as_str();
        if got != case.reason || code != if case.reason.is_some() { 1 } else { 0 } {
            failures.push(format!(
                "{name}: verify said {code} {report}, expected {:?}",
                case.reason
            ));
        }
        // the differential: OpenSSL rejects ⇒ phasegate rejects (unless the bundle relaxes
        // the check on purpose); phasegate alone rejects ⇒ the case names the extra check
        let (openssl_ok, openssl_said) = openssl_verify(case, files);
        match (openssl_ok, case.reason, case.extra) {
            (false, None, _) if case.relax.is_empty() => failures.push(format!(
                "{name}: OpenSSL rejects ({openssl_said}) but phasegate accepts"
            )),
            (true, Some(_), None) => failures.push(format!(
                "{name}: phasegate rejects, OpenSSL accepts ({openssl_said}), and no extra check is named"
            )),
            (false, Some(_), Some(extra)) => failures.push(format!(
                "{name}: names the extra check {extra:?}, but OpenSSL rejects too ({openssl_said})"
            )),
            (true, Some(reason), Some(extra)) => extras.push(format!("{name}: {reason} by {extra}")),
            _ => {}
        }
        if case.anchor_refused_by_check {
            let refused = refused_as_anchor(&pki, &files.root);
            if !refused.contains("is not a CA certificate") {
                failures.push(format!("{name}: check accepted the anchor: {refused}"));
            }
            continue;
        }
        // a real handshake on an enforcing and an auditing route
        let mut opts = ClientOptions::new(pki.root_pem(), "api.test").cert(Some(ClientCert {
            chain_pem: case.chain.presented_pem(),
            key_pem: case.chain.leaf.key_pem(),
        }));
        // the client's own OpenSSL would refuse to send weak keys; the gateway must judge them
        opts.security_level = Some(0);
        let enforce = common::client::get_once(gw.addr, &opts, "api.test", &format!("/m{i}/enforce/x")).await;
        let enforced = match enforce.status {
            200 => None,
            _ => enforce.json()["reason"].as_str().map(str::to_string),
        };
        if enforced.as_deref() != case.reason {
            failures.push(format!("{name}: enforce gave {} {}", enforce.status, enforce.body));
        }
        let audit = common::client::get_once(gw.addr, &opts, "api.test", &format!("/m{i}/audit/x")).await;
        let verdict = (audit.status == 200)
            .then(|| audit.upstream_header("x-mtls-verdict"))
            .flatten();
        let want = match case.reason {
            None => "pass".to_string(),
            Some(r) => format!("would-reject; reason={r}"),
        };
        if verdict.as_deref() != Some(want.as_str()) {
            failures.push(format!(
                "{name}: audit gave {} {verdict:?}, expected {want}",
                audit.status
            ));
        }
    }
    // audit recorded each would-be rejection with its precise reason and detail
    for (i, case) in cases.iter().enumerate() {
        let Some(reason) = case.reason.filter(|_| !case.anchor_refused_by_check) else {
            continue;
        };
        let mut found = None;
        for _ in 0..100 {
            let (_, body) = gw.admin_get(&format!("/api/routes/m{i}-audit/rejections")).await;
            found = body["clients"].as_array().and_then(|c| c.first().cloned());
            if found.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        match found {
            Some(c) if c["reason"] == reason && c["detail"].as_str().is_some_and(|d| !d.is_empty()) => {}
            other => failures.push(format!("{}: audit recorded {other:?}, expected {reason}", case.name)),
        }
    }
    println!(
        "checks phasegate adds to OpenSSL's strict profile:\n  {}",
        extras.join("\n  ")
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The chain and CRLs of the CRL tests: root → intermediate → {good, revoked}.
struct CrlPki {
    root: common::chains::Made,
    int: common::chains::Made,
    good: common::chains::Made,
    revoked: common::chains::Made,
}

impl CrlPki {
    fn new() -> CrlPki {
        let root = common::chains::make(&root(), None);
        let int = common::chains::make(&int("CRL Intermediate"), Some(&root));
        let good = common::chains::make(&leaf(), Some(&int));
        let revoked = common::chains::make(&Spec::leaf("spiffe://matrix.example/ns/prod/sa/revoked"), Some(&int));
        CrlPki {
            root,
            int,
            good,
            revoked,
        }
    }

    fn client(&self, leaf: &common::chains::Made) -> Option<ClientCert> {
        Some(ClientCert {
            chain_pem: format!("{}{}", leaf.pem(), self.int.pem()),
            key_pem: leaf.key_pem(),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_bundle_file_loads_every_crl_and_a_numberless_crl_fails_strictly_unless_relaxed() {
    use common::chains::{crl, crl_pem, numberless_crl_pem};
    let pki = TestPki::new();
    let p = CrlPki::new();
    pki.write("crl/root.pem", &p.root.pem());
    // one file holding both CRLs of the chain: the usual way to publish them
    let bundle = format!(
        "{}{}",
        crl_pem(&crl(&p.root, &[], true, 7)),
        crl_pem(&crl(&p.int, &[&p.revoked], true, 7))
    );
    let bundle_path = pki.write("crl/chain-crls.pem", &bundle);
    let numberless = format!(
        "{}{}",
        crl_pem(&crl(&p.root, &[], true, 7)),
        numberless_crl_pem(&p.int, &pki.path("crl/openssl-ca"))
    );
    let numberless_path = pki.write("crl/numberless.pem", &numberless);
    let bundles = "  bundled:\n    ca: ../crl/root.pem\n    crl: [../crl/chain-crls.pem]\n  numberless:\n    ca: ../crl/root.pem\n    crl: [../crl/numberless.pem]\n  numberless-relaxed:\n    ca: ../crl/root.pem\n    crl: [../crl/numberless.pem]\n    relax: [crl_number]\n";
    let mut routes = String::from("routes:\n");
    for name in ["bundled", "numberless", "numberless-relaxed"] {
        routes.push_str(&format!(
            "  - name: {name}\n    match: {{ host: api.test, path_prefix: /{name} }}\n    upstream: {{ address: \"{{backend}}\" }}\n    mtls: {{ mode: enforce, trust: {name} }}\n"
        ));
    }
    let gw = TestGateway::start_edited(&pki, &routes, |base| {
        base.replace("trust_bundles:\n", &format!("trust_bundles:\n{bundles}"))
    })
    .await;
    let get = |who: &common::chains::Made, path: &'static str| {
        let opts = ClientOptions::new(pki.root_pem(), "api.test").cert(p.client(who));
        let addr = gw.addr;
        async move {
            let reply = common::client::get_once(addr, &opts, "api.test", path).await;
            let reason = (reply.status != 200).then(|| reply.json()["reason"].as_str().unwrap_or("").to_string());
            (reply.status, reason, reply.body)
        }
    };
    assert_eq!(
        get(&p.good, "/bundled").await.0,
        200,
        "both CRLs of the file are loaded"
    );
    assert_eq!(get(&p.revoked, "/bundled").await.1.as_deref(), Some("revoked"));
    let (status, reason, body) = get(&p.good, "/numberless").await;
    assert_eq!((status, reason.as_deref()), (403, Some("crl_invalid")), "{body}");
    // relaxing the CRL number keeps everything else of revocation checking
    assert_eq!(get(&p.good, "/numberless-relaxed").await.0, 200);

    // `phasegate verify --crl FILE` loads every CRL of the file too
    let presented = pki.write("crl/revoked-chain.pem", &p.client(&p.revoked).unwrap().chain_pem);
    let good = pki.write("crl/good-chain.pem", &p.client(&p.good).unwrap().chain_pem);
    let verify = |chain: &PathBuf, crls: &PathBuf, extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_phasegate"))
            .args(["verify", "--format", "json", "--trust-anchors"])
            .arg(pki.path("crl/root.pem"))
            .arg("--crl")
            .arg(crls)
            .args(extra)
            .arg(chain)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["reason"].as_str().map(str::to_string)
    };
    assert_eq!(verify(&good, &bundle_path, &[]), None);
    assert_eq!(verify(&presented, &bundle_path, &[]).as_deref(), Some("revoked"));
    assert_eq!(verify(&good, &numberless_path, &[]).as_deref(), Some("crl_invalid"));
    assert_eq!(verify(&good, &numberless_path, &["--relax", "crl_number"]), None);
    // the numberless CRL is phasegate's own check: strict OpenSSL accepts it
    pki.write("crl/int.pem", &p.int.pem());
    pki.write("crl/good-leaf.pem", &p.good.pem());
    let out = Command::new("openssl")
        .args([
            "verify",
            "-x509_strict",
            "-purpose",
            "sslclient",
            "-crl_check_all",
            "-CAfile",
        ])
        .arg(pki.path("crl/root.pem"))
        .arg("-untrusted")
        .arg(pki.path("crl/int.pem"))
        .arg("-CRLfile")
        .arg(&numberless_path)
        .arg(pki.path("crl/good-leaf.pem"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn check_warns_about_a_stray_a_stale_and_a_missing_crl_with_file_and_line() {
    use common::chains::{crl, crl_pem, make};
    let pki = TestPki::new();
    let p = CrlPki::new();
    let stranger = make(&Spec::root("Unrelated Root"), None);
    pki.write("crl/root.pem", &p.root.pem());
    pki.write("crl/intermediates.pem", &p.int.pem());
    let root_crl = crl_pem(&crl(&p.root, &[], true, 7));
    let file = format!("{root_crl}{}", crl_pem(&crl(&stranger, &[], true, 7)));
    pki.write("crl/with-stray.pem", &file);
    pki.write("crl/stale.pem", &crl_pem(&crl(&p.root, &[], true, -1)));
    let dir = pki.path("crl-policies");
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = pki
        .base_yaml(1)
        .replace("../certs/", &format!("{}/certs/", pki.dir.path().display()))
        .replace("../pki/", &format!("{}/pki/", pki.dir.path().display()))
        + "  chain:\n    ca: ../crl/root.pem\n    intermediates: ../crl/intermediates.pem\n    crl: [../crl/with-stray.pem]\n  stale:\n    ca: ../crl/root.pem\n    crl: [../crl/stale.pem]\n";
    std::fs::write(dir.join("p.yaml"), &yaml).unwrap();
    let check = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_phasegate"))
            .arg("check")
            .args(extra)
            .arg(&dir)
            .output()
            .unwrap()
    };
    let out = check(&[]);
    let text = String::from_utf8_lossy(&out.stdout).replace(dir.to_str().unwrap(), "$DIR");
    assert_eq!(out.status.code(), Some(0), "warnings do not fail check: {text}");
    let line_of = |key: &str| yaml.lines().position(|l| l.trim_start().starts_with(key)).unwrap() + 1;
    let stray_line = root_crl.lines().count() + 1;
    let wants = [
        format!(
            "warning: $DIR/p.yaml:{}:",
            line_of("crl: [../crl/with-stray.pem]")
        ),
        format!("trust_bundles.chain.crl[0]: CRL at \"../crl/with-stray.pem\" line {stray_line} (issuer O=phasegate chain matrix,CN=Unrelated Root) matches no CA of the bundle"),
        "trust_bundles.chain.crl: CA O=phasegate chain matrix,CN=CRL Intermediate has no CRL in this bundle".to_string(),
        format!("warning: $DIR/p.yaml:{}:", line_of("crl: [../crl/stale.pem]")),
        "trust_bundles.stale.crl[0]: CRL at \"../crl/stale.pem\" line 1 (issuer O=phasegate chain matrix,CN=Matrix Root) is past its nextUpdate".to_string(),
        "warning(s)".to_string(),
    ];
    for want in wants {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
    assert_eq!(check(&["--deny-warnings"]).status.code(), Some(1));
}
