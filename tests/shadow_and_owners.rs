//! Shadow policies rehearse the next trust change on live traffic without changing a
//! decision; owners say whom to tell.

mod common;

use std::process::Command;
use std::time::Duration;

use common::pki::{ClientCert, GOOD_URI, NOT_ALLOWED_URI, OTHER_PROD_URI};
use common::{ClientKind, ClientOptions, TestGateway, TestPki};
use phasegate::devpki::LeafSpec;

async fn get(gw: &TestGateway, pki: &TestPki, cert: Option<ClientCert>, path: &str) -> u16 {
    let opts = ClientOptions::new(pki.root_pem(), "api.test").cert(cert);
    common::client::get_once(gw.addr, &opts, "api.test", path).await.status
}

/// Polls the shadow view until it holds `n` records in total.
async fn shadow_view(gw: &TestGateway, route: &str, n: usize) -> serde_json::Value {
    let count = |v: &serde_json::Value| {
        v["newly_rejected_clients"].as_array().map_or(0, Vec::len)
            + v["newly_passed_clients"].as_array().map_or(0, Vec::len)
    };
    gw.admin_get_until(&format!("/api/routes/{route}/shadow?window=1h"), |v| count(v) >= n)
        .await
        .1
}

fn names(v: &serde_json::Value) -> Vec<String> {
    let mut n: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{} {}", c["client"].as_str().unwrap(), c["reason"].as_str().unwrap()))
        .collect();
    n.sort();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_on_another_bundle_classifies_clients_without_changing_live_decisions() {
    let pki = TestPki::new();
    // bundle "rotation": the new root, plus the old intermediate as an anchor of its own
    let base = |b: String| format!("{b}  rotation:\n    ca: ../pki/rotation.pem\n");
    pki.write(
        "pki/rotation.pem",
        &format!("{}{}", pki.untrusted.cert_pem, pki.intermediate.cert_pem),
    );
    let routes = r#"
routes:
  - name: payments
    match: { host: api.test }
    upstream: { address: "{backend}" }
    mtls: { mode: enforce, trust: internal, shadow: { trust: rotation } }
"#;
    let gw = TestGateway::start_edited(&pki, routes, base).await;
    // issued by the old root directly: trusted now, not after the rotation
    let old = pki
        .root
        .issue(&LeafSpec::client("spiffe://test.example/ns/prod/sa/old-only"))
        .unwrap();
    let old = ClientCert {
        chain_pem: old.cert_pem,
        key_pem: old.key_pem,
    };
    // issued by the new root: rejected now, trusted after
    let new = pki
        .untrusted
        .issue(&LeafSpec::client("spiffe://test.example/ns/prod/sa/new-only"))
        .unwrap();
    let new = ClientCert {
        chain_pem: new.cert_pem,
        key_pem: new.key_pem,
    };
    // issued by the old intermediate: trusted by both
    let both = pki.client(ClientKind::Good);

    assert_eq!(
        get(&gw, &pki, Some(old), "/").await,
        200,
        "live decisions are the live policy's"
    );
    assert_eq!(get(&gw, &pki, Some(new), "/").await, 403);
    assert_eq!(get(&gw, &pki, both, "/").await, 200);
    let v = shadow_view(&gw, "payments", 2).await;
    assert_eq!(
        names(&v["newly_rejected_clients"]),
        ["uri:spiffe://test.example/ns/prod/sa/old-only untrusted_issuer"]
    );
    assert_eq!(
        names(&v["newly_passed_clients"]),
        ["uri:spiffe://test.example/ns/prod/sa/new-only untrusted_issuer"]
    );
    assert_eq!(
        (
            v["requests"].as_u64(),
            v["newly_rejected"].as_u64(),
            v["newly_passed"].as_u64()
        ),
        (Some(3), Some(1), Some(1))
    );
    assert_eq!(
        v["summary"],
        "promoting the shadow policy would newly reject 33.3% of requests from 1 client"
    );
    let (_, route) = gw.admin_get("/api/routes/payments").await;
    assert_eq!(route["shadow"]["trust"], "rotation");
    assert_eq!(route["requests"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_list_tightening_in_shadow_lists_exactly_the_clients_it_would_cut() {
    let pki = TestPki::new();
    let routes = format!(
        r#"
routes:
  - name: orders
    match: {{ host: api.test }}
    upstream: {{ address: "{{backend}}" }}
    mtls:
      mode: enforce
      trust: internal
      allow: [{{ uri_prefix: "spiffe://test.example/ns/prod/" }}]
      shadow: {{ trust: internal, allow: [{{ uri: "{GOOD_URI}" }}] }}
"#
    );
    let gw = TestGateway::start(&pki, &routes).await;
    let billing = pki.issue(&LeafSpec::client(OTHER_PROD_URI));
    assert_eq!(get(&gw, &pki, pki.client(ClientKind::Good), "/").await, 200);
    assert_eq!(get(&gw, &pki, Some(billing), "/").await, 200);
    assert_eq!(get(&gw, &pki, pki.client(ClientKind::NotAllowed), "/").await, 403);
    let v = shadow_view(&gw, "orders", 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let v2 = gw.admin_get("/api/routes/orders/shadow?window=1h").await.1;
    assert_eq!(
        names(&v2["newly_rejected_clients"]),
        [format!("uri:{OTHER_PROD_URI} identity_not_allowed")],
        "{v}"
    );
    assert_eq!(v2["newly_passed_clients"].as_array().unwrap().len(), 0);
}

/// Timestamps vary from run to run; the golden file says `<time>`.
fn without_times(text: &str) -> String {
    let mut out = String::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let is_time = b.len() - i >= 20
            && b[i..i + 4].iter().all(u8::is_ascii_digit)
            && b[i + 4] == b'-'
            && b[i + 10] == b'T'
            && b[i + 19] == b'Z';
        if is_time {
            out.push_str("<time>");
            i += 20;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// `phasegate notify-list ROUTE ARGS` against the gateway's admin API; exit 0 expected.
fn notify_list(gw: &TestGateway, route: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_phasegate"))
        .args(["notify-list", route, "--admin", &format!("http://{}", gw.admin)])
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_group_the_clients_and_notify_list_prints_them_as_the_golden_file_says() {
    let pki = TestPki::new();
    let routes = format!(
        r##"
owners:
  - {{ match: {{ uri_prefix: "spiffe://test.example/ns/prod/" }}, team: payments, contact: "#payments-oncall" }}
  - {{ match: {{ cidr: 127.0.0.0/8 }}, team: legacy-hosts, contact: ops@test.example }}
routes:
  - name: orders
    match: {{ host: api.test }}
    upstream: {{ address: "{{backend}}" }}
    mtls:
      mode: audit
      trust: internal
      allow: [{{ uri: "{GOOD_URI}" }}]
"##
    );
    let gw = TestGateway::start(&pki, &routes).await;
    let billing = pki.issue(&LeafSpec::client(OTHER_PROD_URI));
    let intruder_from_elsewhere = {
        // an identity no owner claims, from an untrusted CA (so the address does not count)
        let c = pki.untrusted.issue(&LeafSpec::client(NOT_ALLOWED_URI)).unwrap();
        ClientCert {
            chain_pem: c.cert_pem,
            key_pem: c.key_pem,
        }
    };
    for _ in 0..3 {
        get(&gw, &pki, Some(billing.clone()), "/").await;
    }
    for _ in 0..2 {
        get(&gw, &pki, None, "/").await;
    }
    get(&gw, &pki, Some(intruder_from_elsewhere), "/").await;
    get(&gw, &pki, pki.client(ClientKind::Good), "/").await;
    let groups = owners_listing(&gw, "orders", 0, 3).await;
    let teams: Vec<&str> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["team"].as_str().unwrap_or("(unowned)"))
        .collect();
    assert_eq!(teams, ["payments", "legacy-hosts", "(unowned)"], "{groups}");

    let cli = |args: &[&str]| without_times(&notify_list(&gw, "orders", args));
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (args, golden) in [
        (&[][..], "notify-list.txt"),
        (&["--format", "csv"][..], "notify-list.csv"),
    ] {
        let got = cli(args);
        let path = fixtures.join(golden);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &got).unwrap();
        }
        assert_eq!(got, std::fs::read_to_string(&path).unwrap_or_default(), "{golden}");
    }
    let json: serde_json::Value = serde_json::from_str(&cli(&["--format", "json"])).unwrap();
    assert_eq!(json["groups"][0]["contact"], "#payments-oncall");
    // no shadow on this route: --shadow says so
    let out = Command::new(env!("CARGO_BIN_EXE_phasegate"))
        .args([
            "notify-list",
            "orders",
            "--shadow",
            "--admin",
            &format!("http://{}", gw.admin),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no shadow policy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_and_removes_a_shadow() {
    let pki = TestPki::new();
    let plain = "\nroutes:\n  - name: orders\n    match: { host: api.test }\n    upstream: { address: \"{backend}\" }\n    mtls: { mode: audit, trust: internal }\n";
    let gw = TestGateway::start(&pki, plain).await;
    let (status, _) = gw.admin_get("/api/routes/orders/shadow").await;
    assert_eq!(status, 404);
    let with_shadow = plain.replace("trust: internal }", "trust: internal, shadow: { trust: untrusted } }");
    let yaml = |r: &str| {
        format!(
            "{}{}",
            pki.base_yaml(gw.addr.port()),
            r.replace("{backend}", &gw.backend.to_string())
        )
    };
    pki.write("policies/gateway.yaml", &yaml(&with_shadow));
    gw.wait_for_generation(2).await;
    assert_eq!(get(&gw, &pki, pki.client(ClientKind::Good), "/").await, 200);
    let v = shadow_view(&gw, "orders", 1).await;
    assert_eq!(
        names(&v["newly_rejected_clients"]),
        [format!("uri:{GOOD_URI} untrusted_issuer")]
    );
    pki.write("policies/gateway.yaml", &yaml(plain));
    gw.wait_for_generation(3).await;
    assert_eq!(gw.admin_get("/api/routes/orders/shadow").await.0, 404);
    assert_eq!(
        gw.admin_get("/api/routes/orders").await.1["shadow"],
        serde_json::Value::Null
    );
}

/// A certificate of `lifetime_days` that expires in `days_left` days.
fn device(pki: &TestPki, uri: &str, lifetime_days: i64, days_left: i64) -> ClientCert {
    let now = time::OffsetDateTime::now_utc();
    let spec = LeafSpec::client(uri).valid(
        now - time::Duration::days(lifetime_days - days_left),
        now + time::Duration::days(days_left),
    );
    pki.issue(&spec)
}

/// The owners view once it lists `renewals` certificates to renew and `rejections` rejected
/// clients: both are recorded off the request path, so either may land after the other.
async fn owners_listing(gw: &TestGateway, route: &str, renewals: usize, rejections: usize) -> serde_json::Value {
    let count = |v: &serde_json::Value, list: &str| -> usize {
        v["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| g[list].as_array().map_or(0, Vec::len))
            .sum()
    };
    let listed = |v: &serde_json::Value| count(v, "renewals") >= renewals && count(v, "clients") >= rejections;
    gw.admin_get_until(&format!("/api/routes/{route}/owners"), listed)
        .await
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_inside_the_renewal_window_are_listed_with_their_owner_until_and_after_a_restart() {
    let pki = TestPki::new();
    let routes = r#"
owners:
  - { match: { uri_prefix: "spiffe://test.example/devices/" }, team: laptops, contact: it@test.example }
routes:
  - name: portal
    match: { host: api.test }
    upstream: { address: "{backend}" }
    mtls: { mode: enforce, trust: internal, renewal_window: 14d }
"#;
    let gw = TestGateway::start(&pki, routes).await;
    let due = device(&pki, "spiffe://test.example/devices/laptop-7", 365, 9);
    let unowned = device(&pki, "spiffe://test.example/ns/ops/sa/console", 365, 3);
    let later = device(&pki, "spiffe://test.example/devices/laptop-8", 365, 20);
    // a day-long certificate is always inside the window: machinery renews it, not people
    let short_lived = pki.issue(&LeafSpec::client("spiffe://test.example/devices/kiosk"));
    let foreign = {
        let now = time::OffsetDateTime::now_utc();
        let c = pki
            .untrusted
            .issue(
                &LeafSpec::client("spiffe://test.example/devices/laptop-9")
                    .valid(now - time::Duration::days(356), now + time::Duration::days(9)),
            )
            .unwrap();
        ClientCert {
            chain_pem: c.cert_pem,
            key_pem: c.key_pem,
        }
    };
    // several requests and connections: one entry
    let opts = ClientOptions::new(pki.root_pem(), "api.test").cert(Some(due.clone()));
    let mut keep_alive = common::Client::connect(gw.addr, &opts).await.unwrap();
    for _ in 0..3 {
        assert_eq!(keep_alive.get("api.test", "/").await.status, 200);
    }
    for cert in [due, unowned, later, short_lived] {
        assert_eq!(get(&gw, &pki, Some(cert), "/").await, 200);
    }
    assert_eq!(get(&gw, &pki, Some(foreign), "/").await, 403);

    let v = owners_listing(&gw, "portal", 2, 1).await;
    assert_eq!(v["renewal_window_secs"], 14 * 86_400);
    let renewals = |v: &serde_json::Value, team: &str| -> Vec<String> {
        v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["team"].as_str().unwrap_or("(unowned)") == team)
            .flat_map(|g| g["renewals"].as_array().unwrap().iter())
            .map(|r| r["client"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        renewals(&v, "laptops"),
        ["uri:spiffe://test.example/devices/laptop-7"],
        "{v}"
    );
    assert_eq!(
        renewals(&v, "(unowned)"),
        ["uri:spiffe://test.example/ns/ops/sa/console"],
        "{v}"
    );
    let laptop = &v["groups"][0]["renewals"][0];
    assert!((8..=9).contains(&laptop["days_left"].as_i64().unwrap()), "{laptop}");
    assert_eq!(laptop["expired"], false);
    assert_eq!(
        laptop["certificate"]["issuer"],
        "O=phasegate dev PKI, CN=Test Intermediate CA"
    );
    // the foreign certificate is a rejection, not a renewal
    let rejected = &v["groups"][0]["clients"][0];
    assert_eq!(
        (rejected["client"].as_str(), rejected["reason"].as_str()),
        (
            Some("uri:spiffe://test.example/devices/laptop-9"),
            Some("untrusted_issuer")
        ),
        "{v}"
    );

    let cli = |args: &[&str]| notify_list(&gw, "portal", args);
    let text = cli(&[]);
    assert!(
        text.starts_with(
            "portal: 1 client(s) enforce would reject\nportal: 2 certificate(s) to renew, expiring within 14d\n"
        ),
        "{text}"
    );
    let team = text.find("\nlaptops (it@test.example)\n").expect(&text);
    let line = text
        .find("\n  uri:spiffe://test.example/devices/laptop-7  renew  expires in ")
        .expect(&text);
    assert!(team < line && line < text.find("\nunowned\n").expect(&text), "{text}");
    assert!(!text.contains("laptop-8") && !text.contains("kiosk"), "{text}");
    let csv = cli(&["--format", "csv"]);
    let mut rows = csv::Reader::from_reader(csv.as_bytes());
    assert_eq!(rows.headers().unwrap().iter().next_back(), Some("not_after"));
    let renew: Vec<csv::StringRecord> = rows
        .records()
        .map(Result::unwrap)
        .filter(|r| &r[4] == "renew")
        .collect();
    assert_eq!(renew.len(), 2, "{csv}");
    assert_eq!(
        (&renew[0][0], &renew[0][1], &renew[0][2]),
        (
            "laptops",
            "it@test.example",
            "uri:spiffe://test.example/devices/laptop-7"
        )
    );
    assert!(renew[0][8].starts_with("expires in "), "{csv}");
    assert!(renew[0][9].ends_with('Z'), "{csv}");
    let json: serde_json::Value = serde_json::from_str(&cli(&["--format", "json"])).unwrap();
    assert_eq!(
        json["groups"][0]["renewals"][0]["client"],
        "uri:spiffe://test.example/devices/laptop-7"
    );

    // the list outlives a restart (written once a second)
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    gw.stop();
    let gw = TestGateway::start(&pki, routes).await;
    let v = gw.admin_get("/api/routes/portal/owners").await.1;
    assert_eq!(
        renewals(&v, "laptops"),
        ["uri:spiffe://test.example/devices/laptop-7"],
        "{v}"
    );
}
