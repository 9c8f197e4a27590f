//! The admin page end to end, in a real headless Chromium driven over WebDriver: operators
//! see who would be rejected and why, roll a route back with one click, see reload errors,
//! and are refused without the token. Screenshots go to target/screenshots/.
//!
//! Needs Debian's `chromium` and `chromium-driver` (installed by .ci/run).

mod common;

use std::time::Duration;

use common::browser::{browser, Driver};
use common::{Client, ClientOptions, TestGateway, TestPki, ADMIN_TOKEN};
use fantoccini::Locator;

const ROUTES: &str = r#"
routes:
  - name: orders
    match: { host: api.test, path_prefix: /orders }
    upstream: { address: "{backend}" }
    mtls: { mode: audit, trust: internal, allow: [{ uri_prefix: "spiffe://test.example/ns/prod/" }] }
  - name: payments
    match: { host: api.test, path_prefix: /payments }
    upstream: { address: "{backend}" }
    mtls: { mode: enforce, trust: internal }
  - name: staged
    match: { host: api.test, path_prefix: /staged }
    upstream: { address: "{backend}" }
    mtls:
      mode: enforce
      trust: internal
      enforce_percent: 25
      exempt: [{ cidr: 10.0.0.0/8, until: 2020-01-01, reason: "old VPN pool" }]
      auto_rollback: { max_reject_ratio: 0.05, window: 60s, min_requests: 50 }
"#;

impl Driver {
    async fn set_token(&self, token: &str) {
        let input = self.b().find(Locator::Id("admin-token")).await.unwrap();
        input.send_keys(token).await.unwrap();
        self.click("#save-token").await;
        self.text_of("#token-state", |t| t.contains("token set")).await;
    }
}

async fn anonymous_get(gw: &TestGateway, pki: &TestPki, path: &str) -> u16 {
    common::client::get_once(
        gw.addr,
        &ClientOptions::new(pki.root_pem(), "api.test"),
        "api.test",
        path,
    )
    .await
    .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_less_clients_of_an_audit_route_appear_with_reason_no_cert() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    let d = browser(1280, 900).await;
    d.b()
        .goto(&format!("http://{}/#/route/orders", gw.admin))
        .await
        .unwrap();
    d.text_of("#rejections-empty", |t| {
        t.contains("No would-be-rejected clients recorded")
    })
    .await;
    for _ in 0..3 {
        assert_eq!(anonymous_get(&gw, &pki, "/orders").await, 200);
    }
    // the page updates on its own, without a reload
    let reason = d
        .text_of("#rejections tr[data-reason='no_cert'] [data-field='reason']", |t| {
            !t.is_empty()
        })
        .await;
    assert!(reason.contains("no_cert"), "{reason}");
    let count = d
        .text_of("#rejections tr[data-reason='no_cert'] [data-field='count']", |t| {
            t.trim() == "3"
        })
        .await;
    assert_eq!(count.trim(), "3");
    let client = d
        .text_of("#rejections tr[data-reason='no_cert'] [data-field='client']", |t| {
            !t.is_empty()
        })
        .await;
    assert!(client.contains("127.0.0.1"), "{client}");
    let readiness = d
        .text_of("[data-field='readiness']", |t| t.contains("would reject"))
        .await;
    assert!(readiness.contains("100.0% of requests from 1 client"), "{readiness}");
    let csv = d
        .b()
        .find(Locator::Id("export-csv"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    assert!(csv.contains("format=csv"), "{csv}");
    d.screenshot("route-detail-no-cert").await;
    d.b().goto(&format!("http://{}/#/", gw.admin)).await.unwrap();
    d.text_of("tr[data-route='orders'] [data-field='would-reject-1h']", |t| {
        t.trim() == "3"
    })
    .await;
    d.screenshot("overview-desktop").await;
    d.b()
        .goto(&format!("http://{}/#/route/staged", gw.admin))
        .await
        .unwrap();
    let staging = d.text_of("[data-field='staging']", |t| t.contains("25%")).await;
    assert!(staging.contains("Automatic rollback to audit above 5.0%"), "{staging}");
    let exemption = d.text_of("[data-exemption='cidr:10.0.0.0/8']", |t| !t.is_empty()).await;
    assert!(
        exemption.contains("expired") && exemption.contains("old VPN pool"),
        "{exemption}"
    );
    d.screenshot("route-detail-staging").await;
    d.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicking_roll_back_on_an_enforce_route_lets_the_next_request_pass() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    let mut client = Client::connect(gw.addr, &ClientOptions::new(pki.root_pem(), "api.test"))
        .await
        .unwrap();
    assert_eq!(client.get("api.test", "/payments").await.status, 403);
    let d = browser(1280, 900).await;
    d.b().goto(&format!("http://{}/#/", gw.admin)).await.unwrap();
    d.set_token(ADMIN_TOKEN).await;
    d.click("tr[data-route='payments'] button[data-action='rollback']")
        .await;
    let text = d.text_of("#confirm-text", |t| t.contains("payments")).await;
    assert_eq!(text, "Roll back payments from enforce to audit?");
    d.b()
        .find(Locator::Id("confirm-reason"))
        .await
        .unwrap()
        .send_keys("checkout 403s")
        .await
        .unwrap();
    d.screenshot("rollback-confirm").await;
    d.click("#confirm button[data-action='confirm']").await;
    let message = d.text_of("#message", |t| t.contains("→")).await;
    assert!(message.contains("payments: enforce → audit"), "{message}");
    // the very next request on the same keep-alive connection passes
    assert_eq!(client.get("api.test", "/payments").await.status, 200);
    let summary = d
        .text_of("tr[data-route='payments'] [data-field='override']", |t| {
            t.contains("rolled back")
        })
        .await;
    assert!(summary.contains("YAML says enforce; running audit since"), "{summary}");
    assert!(summary.contains("checkout 403s"), "{summary}");
    d.screenshot("overview-after-rollback").await;
    // clear the override again with the button that appeared
    d.click("tr[data-route='payments'] button[data-action='clear-override']")
        .await;
    d.click("#confirm button[data-action='confirm']").await;
    d.text_of("tr[data-route='payments'] [data-field='mode']", |t| {
        t.contains("enforce")
    })
    .await;
    assert_eq!(client.get("api.test", "/payments").await.status, 403);
    d.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_yaml_shows_its_error_with_file_and_line_on_the_config_page() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    let d = browser(1280, 900).await;
    d.b().goto(&format!("http://{}/#/config", gw.admin)).await.unwrap();
    d.text_of("#config-error", |t| t.contains("No reload errors")).await;
    let broken = format!(
        "{}{}",
        pki.base_yaml(gw.addr.port()),
        ROUTES
            .replace("{backend}", &gw.backend.to_string())
            .replace("mode: enforce", "mode: enforced")
    );
    pki.write("policies/gateway.yaml", &broken);
    let line = broken.lines().position(|l| l.contains("mode: enforced")).unwrap() + 1;
    let error = d.text_of("#config-error", |t| t.contains("enforced")).await;
    let file = pki.path("policies/gateway.yaml");
    assert!(error.contains(&format!("{}:{line}:", file.display())), "{error}");
    assert!(
        error.contains("routes[1].mtls.mode: unknown variant `enforced`"),
        "{error}"
    );
    assert_eq!(d.text_of("#config-generation", |t| !t.is_empty()).await.trim(), "1");
    d.screenshot("config-error").await;
    // the gateway still serves the last good configuration
    assert_eq!(anonymous_get(&gw, &pki, "/payments").await, 403);
    d.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_without_the_token_is_refused() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    let d = browser(1280, 900).await;
    d.b().goto(&format!("http://{}/#/", gw.admin)).await.unwrap();
    d.text_of("#token-state", |t| t.contains("no token")).await;
    d.click("tr[data-route='payments'] button[data-action='rollback']")
        .await;
    d.click("#confirm button[data-action='confirm']").await;
    let message = d.text_of("#message", |t| t.contains("401")).await;
    assert!(message.contains("missing bearer token"), "{message}");
    d.screenshot("refused-without-token").await;
    // a wrong token is refused too, and nothing changed
    d.set_token("not-the-token").await;
    d.click("tr[data-route='payments'] button[data-action='rollback']")
        .await;
    d.click("#confirm button[data-action='confirm']").await;
    d.text_of("#message", |t| t.contains("wrong admin token")).await;
    assert_eq!(anonymous_get(&gw, &pki, "/payments").await, 403);
    d.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_fits_a_phone_screen() {
    let pki = TestPki::new();
    let gw = TestGateway::start(&pki, ROUTES).await;
    assert_eq!(anonymous_get(&gw, &pki, "/orders").await, 200);
    let d = browser(390, 844).await;
    for (view, name) in [
        ("#/", "overview"),
        ("#/route/orders", "route"),
        ("#/config", "config"),
        ("#/certificates", "certificates"),
    ] {
        d.b().goto(&format!("http://{}/{view}", gw.admin)).await.unwrap();
        d.text_of("main", |t| !t.is_empty()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let overflow = d
            .b()
            .execute(
                "return document.documentElement.scrollWidth - window.innerWidth",
                vec![],
            )
            .await
            .unwrap();
        assert!(
            overflow.as_i64().unwrap() <= 0,
            "{view} overflows the viewport by {overflow}px"
        );
        d.screenshot(&format!("phone-{name}")).await;
    }
    d.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_page_shows_shadow_disagreements_and_owners() {
    let pki = TestPki::new();
    let routes = r##"
owners:
  - { match: { cidr: 127.0.0.0/8 }, team: legacy-hosts, contact: "#legacy" }
routes:
  - name: orders
    match: { host: api.test }
    upstream: { address: "{backend}" }
    mtls: { mode: audit, trust: internal, shadow: { trust: untrusted } }
"##;
    let gw = TestGateway::start(&pki, routes).await;
    let good = ClientOptions::new(pki.root_pem(), "api.test").cert(pki.client(common::ClientKind::Good));
    assert_eq!(
        common::client::get_once(gw.addr, &good, "api.test", "/").await.status,
        200
    );
    assert_eq!(anonymous_get(&gw, &pki, "/").await, 200);
    let d = browser(1280, 900).await;
    d.b()
        .goto(&format!("http://{}/#/route/orders", gw.admin))
        .await
        .unwrap();
    let summary = d.text_of("#shadow-summary", |t| t.contains("newly reject")).await;
    assert!(summary.contains("Candidate: trust bundle untrusted"), "{summary}");
    let row = d
        .text_of(
            &format!("#shadow-rejected tr[data-client='uri:{}']", common::pki::GOOD_URI),
            |t| !t.is_empty(),
        )
        .await;
    assert!(row.contains("untrusted_issuer"), "{row}");
    let owners = d
        .text_of("#owners [data-team='legacy-hosts']", |t| t.contains("addr:127.0.0.1"))
        .await;
    assert!(owners.contains("#legacy") && owners.contains("no_cert"), "{owners}");
    d.screenshot("route-detail-shadow-owners").await;
    d.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificates_page_says_which_bundles_relax_the_strict_profile() {
    let pki = TestPki::new();
    let gw = TestGateway::start_edited(&pki, ROUTES, |base| {
        base.replace(
            "    ca: ../pki/untrusted-root.pem\n",
            "    ca: ../pki/untrusted-root.pem\n    relax: [key_identifiers, dns_name_syntax]\n",
        )
    })
    .await;
    let d = browser(1280, 900).await;
    d.b()
        .goto(&format!("http://{}/#/certificates", gw.admin))
        .await
        .unwrap();
    let relaxed = d
        .text_of("#trust-bundles tr[data-bundle='untrusted']", |t| t.contains("relaxed"))
        .await;
    assert!(
        relaxed.contains("key_identifiers") && relaxed.contains("dns_name_syntax"),
        "{relaxed}"
    );
    let strict = d
        .text_of("#trust-bundles tr[data-bundle='internal']", |t| !t.is_empty())
        .await;
    assert!(
        strict.contains("strict") && !strict.contains("relaxed") && strict.contains("CRLs"),
        "{strict}"
    );
    d.screenshot("certificates-trust-bundles").await;
    d.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_page_lists_certificates_to_renew_with_their_owner() {
    let pki = TestPki::new();
    let routes = r##"
owners:
  - { match: { uri_prefix: "spiffe://test.example/devices/" }, team: laptops, contact: "#it-desk" }
routes:
  - name: portal
    match: { host: api.test }
    upstream: { address: "{backend}" }
    mtls: { mode: enforce, trust: internal, renewal_window: 21d }
"##;
    let gw = TestGateway::start(&pki, routes).await;
    let now = time::OffsetDateTime::now_utc();
    let laptop = pki.issue(
        &phasegate::devpki::LeafSpec::client("spiffe://test.example/devices/laptop-7")
            .valid(now - time::Duration::days(355), now + time::Duration::days(10)),
    );
    let opts = ClientOptions::new(pki.root_pem(), "api.test").cert(Some(laptop));
    assert_eq!(
        common::client::get_once(gw.addr, &opts, "api.test", "/").await.status,
        200
    );
    let d = browser(1280, 900).await;
    d.b()
        .goto(&format!("http://{}/#/route/portal", gw.admin))
        .await
        .unwrap();
    let row = d
        .text_of(
            "#renewals tr[data-client='uri:spiffe://test.example/devices/laptop-7']",
            |t| t.contains("laptops"),
        )
        .await;
    assert!(row.contains("#it-desk") && row.contains("renew"), "{row}");
    let days = d.text_of("#renewals [data-field='days-left']", |t| !t.is_empty()).await;
    assert!(days.starts_with('9') || days.starts_with("10"), "{days}");
    // nobody would be rejected: the owner appears with the renewal, not among the rejected
    let owners = d.text_of("#owners", |t| t.contains("Nobody to tell")).await;
    assert!(!owners.contains("laptops"), "{owners}");
    let caption = d.text_of("#renewals-caption", |t| t.contains("21 days")).await;
    assert_eq!(caption, "Certificates that expire within 21 days, soonest first");
    d.b()
        .execute("document.getElementById('renewals-h').scrollIntoView()", vec![])
        .await
        .unwrap();
    d.screenshot("route-detail-renewals").await;
    d.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exempt_clients_are_listed_apart_from_those_who_would_break() {
    let pki = TestPki::new();
    let routes = r#"
routes:
  - name: legacy
    match: { host: api.test, path_prefix: /legacy }
    upstream: { address: "{backend}" }
    mtls:
      mode: audit
      trust: internal
      exempt: [{ cidr: 127.0.0.0/8, until: 2999-03-01, reason: "batch hosts" }]
"#;
    let gw = TestGateway::start(&pki, routes).await;
    assert_eq!(anonymous_get(&gw, &pki, "/legacy").await, 200);
    let d = browser(1280, 900).await;
    d.b()
        .goto(&format!("http://{}/#/route/legacy", gw.admin))
        .await
        .unwrap();
    let exempt = d
        .text_of("#exempt-clients tr[data-client='addr:127.0.0.1']", |t| {
            t.contains("no_cert")
        })
        .await;
    assert!(exempt.contains("no_cert"), "{exempt}");
    d.text_of("#rejections-empty", |t| {
        t.contains("No would-be-rejected clients recorded")
    })
    .await;
    let readiness = d
        .text_of("[data-field='readiness']", |t| t.contains("would reject"))
        .await;
    assert!(readiness.contains("0.0% of requests from 0 clients"), "{readiness}");
    // `until: 2999-03-01` covers that whole day
    let ends = d
        .text_of(
            "[data-exemption='cidr:127.0.0.0/8'] [data-field='exemption-ends']",
            |t| !t.is_empty(),
        )
        .await;
    assert_eq!(ends, "through 2999-03-01 (UTC)");
    // the counts that a restart resets say so
    let label = d
        .text_of("tr[data-window='total'] [data-field='window-label']", |t| {
            t.contains("since it started,")
        })
        .await;
    assert!(label.starts_with("This process"), "{label}");
    d.screenshot("route-detail-exempt").await;
    d.b().goto(&format!("http://{}/#/", gw.admin)).await.unwrap();
    let clients = d
        .text_of("tr[data-route='legacy'] [data-field='clients']", |t| {
            !t.trim().is_empty()
        })
        .await;
    assert_eq!(clients.trim(), "0", "the overview's Clients column");
    d.close().await;
}
