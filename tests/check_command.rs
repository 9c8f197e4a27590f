//! `phasegate check`: every kind of bad input gets a clear diagnostic with file, line and
//! YAML path (golden files in tests/fixtures/invalid/), and the example policies pass.

mod common;

use std::path::Path;
use std::process::Command;

use common::TestPki;
use phasegate::devpki::LeafSpec;

fn phasegate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_phasegate"))
}

/// A PKI plus the odd files the invalid fixtures point at.
fn fixture_pki() -> TestPki {
    let pki = TestPki::new();
    let other = pki
        .intermediate
        .issue(&LeafSpec::client("spiffe://test.example/x"))
        .unwrap();
    pki.write("certs/wrong.key", &other.key_pem);
    pki.write("certs/client-leaf.pem", &other.cert_pem);
    pki.write(
        "certs/garbage.pem",
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    );
    pki
}

#[test]
fn check_reports_every_invalid_fixture_exactly_as_its_golden_file_says() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    let base = std::fs::read_to_string(fixtures.join("_base.yaml")).unwrap();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut names: Vec<_> = std::fs::read_dir(&fixtures)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml") && !p.file_name().unwrap().to_str().unwrap().starts_with('_')
        })
        .collect();
    names.sort();
    assert!(names.len() >= 10, "fixtures missing");
    let mut mismatches = Vec::new();
    for fixture in names {
        let name = fixture.file_stem().unwrap().to_str().unwrap().to_string();
        let pki = fixture_pki();
        pki.write("policies/00-base.yaml", &base);
        pki.write(
            &format!("policies/{name}.yaml"),
            &std::fs::read_to_string(&fixture).unwrap(),
        );
        let out = phasegate().arg("check").arg(pki.policies()).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}: check must fail");
        assert!(
            out.stderr.is_empty(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout)
            .unwrap()
            .replace(pki.dir.path().to_str().unwrap(), "$DIR");
        let golden = fixtures.join(format!("{name}.expected"));
        if update {
            std::fs::write(&golden, &text).unwrap();
        } else {
            let want = std::fs::read_to_string(&golden).unwrap_or_default();
            if want != text {
                mismatches.push(format!("--- {name}: expected\n{want}--- got\n{text}"));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// `phasegate check` on the example policies, laid out as the demo writes them.
fn check_the_example_policies() -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let layout = phasegate::demo::prepare(dir.path()).unwrap();
    phasegate().arg("check").arg(&layout.policies).output().unwrap()
}

#[test]
fn check_accepts_the_example_policies() {
    let out = check_the_example_policies();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.starts_with("ok: 4 routes, 1 listeners, 1 trust bundles"),
        "{stdout}"
    );
    // and the committed files are the ones the binary embeds
    for (name, text) in phasegate::demo::POLICIES {
        let committed =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies").join(name)).unwrap();
        assert_eq!(committed, text, "{name}");
    }
}

/// `main` hands OpenSSL's allocations to mimalloc before anything allocates; were that too
/// late (something in startup touching OpenSSL first), the binary says so on stderr.
#[test]
fn the_binary_moves_openssl_onto_mimalloc_before_openssl_allocates() {
    let out = check_the_example_policies();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("OpenSSL had already allocated"), "{stderr}");
}

#[test]
fn check_json_lists_problems_with_their_positions() {
    let pki = fixture_pki();
    pki.write(
        "policies/00-base.yaml",
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid/_base.yaml"))
            .unwrap(),
    );
    pki.write("policies/routes.yaml", "routes:\n  - name: a\n    match: { host: api.test }\n    upstream: { address: \"127.0.0.1:1\" }\n    mtls: { mode: audit, trust: nope }\n");
    let out = phasegate()
        .args(["check", "--format", "json"])
        .arg(pki.policies())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let p = &v["problems"][0];
    assert_eq!(p["line"], 5);
    assert_eq!(p["path"], "routes[0].mtls.trust");
    assert!(
        p["message"].as_str().unwrap().contains("unknown trust bundle \"nope\""),
        "{p}"
    );
}

#[test]
fn a_missing_or_empty_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = phasegate().arg("check").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no policy files (expected *.yaml)"));
    let out = phasegate()
        .arg("check")
        .arg(dir.path().join("absent"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cannot read policy directory"));
}
