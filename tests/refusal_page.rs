//! Stage 3, for people: a browser that is refused reads a page — what happened in plain
//! words, where to go, in the operator's words — while programs keep the JSON answer and
//! gRPC clients their grpc-status. Real handshakes; the page also in headless Chromium.

mod common;

use common::browser::phone;
use common::client::Reply;
use common::{Client, ClientKind, ClientOptions, TestGateway, TestPki};

/// What Chromium sends for a page load.
const BROWSER_ACCEPT: &str =
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8";

const ROUTES: &str = r#"
routes:
  - name: portal
    match: { host: api.test, path_prefix: /portal }
    upstream: { address: "{backend}" }
    mtls: { mode: enforce, trust: internal }
    refusal_page:
      contact: "Service desk <desk@corp.example>, ext. 4400"
  - name: dead
    match: { host: api.test, path_prefix: /dead }
    upstream: { address: "127.0.0.1:1" }
"#;

/// The listener's words: every route on it inherits them, field by field.
fn with_listener_page(base: String) -> String {
    base.replacen(
        "    tls:\n",
        "    refusal_page:\n      help_url: \"https://help.corp.example/enrol?os=any&lang=en\"\n      message: \"Device certificates come from the IT portal.\"\n    tls:\n",
        1,
    )
}

async fn start() -> (TestPki, TestGateway) {
    let pki = TestPki::new();
    let gw = TestGateway::start_edited(&pki, ROUTES, with_listener_page).await;
    (pki, gw)
}

async fn ask(gw: &TestGateway, pki: &TestPki, cert: ClientKind, path: &str, headers: &[(&str, &str)]) -> Reply {
    let opts = ClientOptions::new(pki.root_pem(), "api.test").cert(pki.client(cert));
    let mut client = Client::connect(gw.addr, &opts).await.unwrap();
    client.request("api.test", path, headers).await.unwrap()
}

fn header<'a>(reply: &'a Reply, name: &str) -> &'a str {
    reply.headers.get(name).map_or("", |v| v.to_str().unwrap_or(""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_without_a_device_certificate_reads_a_page_and_programs_keep_json() {
    let (pki, gw) = start().await;
    let page = ask(&gw, &pki, ClientKind::NoCert, "/portal", &[("accept", BROWSER_ACCEPT)]).await;
    assert_eq!(page.status, 403);
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&page, "cache-control"), "no-store");
    assert!(header(&page, "content-security-policy").starts_with("default-src 'none'; style-src 'unsafe-inline'"));
    assert_eq!(header(&page, "vary"), "accept");
    let body = &page.body;
    for expected in [
        "<html lang=\"en\">",
        "<title>No valid device certificate</title>",
        "<h1>No valid device certificate</h1>",
        "not enrolled, when its certificate has expired, or when the certificate was issued by another organisation",
        // the listener's link and message, the route's contact, all escaped
        "<a href=\"https://help.corp.example/enrol?os=any&amp;lang=en\">How to enrol a device or renew its certificate</a>",
        "Device certificates come from the IT portal.",
        "Contact: Service desk &lt;desk@corp.example&gt;, ext. 4400",
        "<dt>Reason</dt><dd><code>no_cert</code></dd>",
        "<dt>Route</dt><dd>portal</dd>",
        "<dt>Request ID</dt><dd><code>test-",
        "<dt>Status</dt><dd>403</dd>",
    ] {
        assert!(body.contains(expected), "missing {expected:?} in\n{body}");
    }
    assert!(!body.contains("<script") && !body.contains("http-equiv"), "{body}");

    for accept in [
        None,
        Some("*/*"),
        Some("application/json"),
        Some("application/json, text/html"),
    ] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        let json = ask(&gw, &pki, ClientKind::NoCert, "/portal", &headers).await;
        assert_eq!(json.status, 403, "{accept:?}");
        assert_eq!(header(&json, "content-type"), "application/json", "{accept:?}");
        let v = json.json();
        assert_eq!(
            (v["error"].as_str(), v["reason"].as_str(), v["route"].as_str()),
            (Some("client certificate required"), Some("no_cert"), Some("portal"))
        );
    }
    // a good device still gets through, whatever it accepts
    let pass = ask(&gw, &pki, ClientKind::Good, "/portal", &[("accept", BROWSER_ACCEPT)]).await;
    assert_eq!(pass.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_certificate_reason_reads_in_its_own_words() {
    let (pki, gw) = start().await;
    for (kind, title) in [
        (ClientKind::Expired, "Your certificate has expired"),
        (ClientKind::Revoked, "Your certificate has been revoked"),
        (ClientKind::ServerAuthOnly, "This certificate is not for signing in"),
        (ClientKind::UntrustedCa, "Certificate from an unknown issuer"),
    ] {
        let page = ask(&gw, &pki, kind, "/portal", &[("accept", BROWSER_ACCEPT)]).await;
        assert_eq!(page.status, 403, "{kind:?}");
        assert!(
            page.body.contains(&format!("<h1>{title}</h1>")),
            "{kind:?}: {}",
            page.body
        );
        let code = format!("<code>{}</code>", kind.reason().unwrap());
        assert!(page.body.contains(&code), "{kind:?}: {}", page.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_a_route_and_from_a_dead_backend_carry_the_listeners_words() {
    let (pki, gw) = start().await;
    let html = [("accept", BROWSER_ACCEPT)];
    let none = ask(&gw, &pki, ClientKind::NoCert, "/nowhere", &html).await;
    assert_eq!(none.status, 404);
    assert!(none.body.contains("<h1>Page not found</h1>"), "{}", none.body);
    assert!(none.body.contains("<dt>Route</dt><dd>none</dd>"), "{}", none.body);
    assert!(
        none.body
            .contains("href=\"https://help.corp.example/enrol?os=any&amp;lang=en\">Where to get help</a>"),
        "{}",
        none.body
    );
    assert!(
        !none.body.contains("Service desk"),
        "the route's contact is not the listener's"
    );
    let dead = ask(&gw, &pki, ClientKind::NoCert, "/dead", &html).await;
    assert_eq!(dead.status, 502);
    assert!(
        dead.body.contains("<h1>The service is unavailable</h1>"),
        "{}",
        dead.body
    );
    assert!(dead.body.contains("<dt>Route</dt><dd>dead</dd>"), "{}", dead.body);
    assert_eq!(header(&dead, "content-type"), "text/html; charset=utf-8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_gets_a_grpc_status_even_if_it_accepts_html() {
    let (pki, gw) = start().await;
    let reply = ask(
        &gw,
        &pki,
        ClientKind::NoCert,
        "/portal/pkg.Svc/Call",
        &[("content-type", "application/grpc"), ("accept", "text/html")],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(header(&reply, "grpc-status"), "16");
    assert!(reply.body.is_empty(), "{}", reply.body);
}

/// What the employee sees: Chromium without a device certificate, at phone width, on a
/// route whose name and message carry markup that must stay text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_the_page_reads_at_phone_width_and_markup_stays_text() {
    let pki = TestPki::new();
    let routes = r#"
routes:
  - name: "devices<script>document.title='owned'</script>"
    match: { host: api.test, path_prefix: /devices }
    upstream: { address: "{backend}" }
    mtls: { mode: enforce, trust: internal }
    refusal_page:
      help_url: "https://help.corp.example/enrol/a-very-long-path-that-has-to-wrap-on-a-phone-screen?device=laptop&os=linux"
      contact: "IT desk \"Helpline\" & friends"
      message: |
        Enrol at the <script>alert('IT')</script> desk.
        Bring your laptop.
"#;
    let gw = TestGateway::start(&pki, routes).await;
    let flags = [
        "--ignore-certificate-errors".to_string(),
        "--host-resolver-rules=MAP api.test 127.0.0.1".to_string(),
    ];
    let d = phone(375, 740, &flags).await;
    d.b()
        .goto(&format!("https://api.test:{}/devices", gw.addr.port()))
        .await
        .unwrap();
    let h1 = d.text_of("main h1", |t| !t.is_empty()).await;
    assert_eq!(h1, "No valid device certificate");
    let b = d.b();
    let js = |script: &'static str| async move { b.execute(script, vec![]).await.unwrap() };
    assert_eq!(js("return document.title").await, "No valid device certificate");
    assert_eq!(js("return document.documentElement.lang").await, "en");
    assert_eq!(js("return document.querySelectorAll('script').length").await, 0);
    let note = d.text_of(".note", |t| !t.is_empty()).await;
    assert_eq!(
        note,
        "Enrol at the <script>alert('IT')</script> desk.\nBring your laptop."
    );
    let route = d.text_of("dl dd:nth-of-type(2)", |t| !t.is_empty()).await;
    assert_eq!(route, "devices<script>document.title='owned'</script>");
    let contact = d.text_of(".help li:nth-of-type(2)", |t| !t.is_empty()).await;
    assert_eq!(contact, "Contact: IT desk \"Helpline\" & friends");
    let href = js("return document.querySelector('.help a').href").await;
    assert_eq!(
        href,
        "https://help.corp.example/enrol/a-very-long-path-that-has-to-wrap-on-a-phone-screen?device=laptop&os=linux"
    );
    let width = js("return window.innerWidth").await;
    assert!(width.as_i64().unwrap() <= 400, "not a phone viewport: {width}px");
    let overflow = js("return document.documentElement.scrollWidth - window.innerWidth").await;
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "the page overflows a phone by {overflow}px"
    );
    let font = js("return parseFloat(getComputedStyle(document.querySelector('main p')).fontSize)").await;
    assert!(font.as_f64().unwrap() >= 16.0, "text too small on a phone: {font}px");
    assert_eq!(
        js("return document.querySelectorAll('main h2, main dl').length").await,
        2
    );
    d.screenshot("refusal-page-phone").await;
    d.close().await;
}
