//! The admin page: static assets from `admin-ui/`, embedded in the binary.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("../../admin-ui/index.html");
const STYLE: &str = include_str!("../../admin-ui/style.css");
/// The page script, one ES module per subject; `app.js` imports the rest.
const MODULES: [(&str, &str); 10] = [
    ("/app.js", include_str!("../../admin-ui/app.js")),
    ("/dom.js", include_str!("../../admin-ui/dom.js")),
    ("/api.js", include_str!("../../admin-ui/api.js")),
    ("/router.js", include_str!("../../admin-ui/router.js")),
    ("/actions.js", include_str!("../../admin-ui/actions.js")),
    ("/charts.js", include_str!("../../admin-ui/charts.js")),
    ("/overview.js", include_str!("../../admin-ui/overview.js")),
    ("/route.js", include_str!("../../admin-ui/route.js")),
    ("/config.js", include_str!("../../admin-ui/config.js")),
    ("/certificates.js", include_str!("../../admin-ui/certificates.js")),
];

/// Strict headers: no inline scripts, nothing from elsewhere, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }));
    for (path, body) in MODULES {
        router = router.route(
            path,
            get(move || async move { asset("text/javascript; charset=utf-8", body) }),
        );
    }
    router
}
