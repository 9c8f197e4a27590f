//! The refusal as a page a person can read: what happened in plain words, what to do next,
//! the operator's help link, contact and message, and the details a help desk asks for.
//! Small, self-contained (no scripts, no external resources) and every dynamic string
//! escaped.

use std::borrow::Cow;
use std::fmt::Write;

use super::respond::{Answer, Refusal};
use crate::policy::Reason;

/// Sent with the page: nothing may load or run, the inline style may apply.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const STYLE: &str = "\
:root{color-scheme:light dark;--fg:#1b1b1b;--bg:#fff;--muted:#555;--line:#d0d0d0;--link:#0b57d0}\
@media (prefers-color-scheme:dark){:root{--fg:#ececec;--bg:#161616;--muted:#b4b4b4;--line:#444;--link:#8ab4f8}}\
*{box-sizing:border-box}\
body{margin:0;background:var(--bg);color:var(--fg);font:1.0625rem/1.55 system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif;overflow-wrap:anywhere}\
main{max-width:40rem;margin:0 auto;padding:2rem 1.25rem 3rem}\
h1{font-size:1.6rem;line-height:1.25;margin:0 0 1rem}\
h2{font-size:1.05rem;margin:2rem 0 .5rem}\
a{color:var(--link)}\
.note{white-space:pre-line;border-left:4px solid var(--line);padding-left:.9rem}\
.help{padding-left:1.2rem}.help li{margin:.4rem 0}\
.url{display:block;color:var(--muted);font-size:.9rem}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem;margin:0;border-top:1px solid var(--line);padding-top:.75rem}\
dt{color:var(--muted)}dd{margin:0}\
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.95em}\
@media (max-width:26rem){dl{grid-template-columns:1fr}dd{margin-bottom:.5rem}}";

/// What the page says for one refusal: a heading, what happened, what to do.
struct Words {
    title: &'static str,
    what: &'static str,
    next: &'static str,
}

const RENEW: &str = "Renew or replace your device certificate, then close every browser window and try again.";

fn words(refusal: Refusal) -> Words {
    let w = |title, what, next| Words { title, what, next };
    match refusal {
        Refusal::Forbidden(reason) => match reason {
            // Browsers offer only certificates that are current and chain to a CA the gateway
            // names, so from a browser this covers all three.
            Reason::NoCert => w(
                "No valid device certificate",
                "Your browser did not present a valid device certificate for this site. That happens when this device is not enrolled, when its certificate has expired, or when the certificate was issued by another organisation: browsers do not offer those.",
                "Enrol this device, or renew its certificate, then close every browser window and try again.",
            ),
            Reason::UntrustedIssuer => w(
                "Certificate from an unknown issuer",
                "The certificate your device presented was not issued by an authority this site trusts, or part of its chain is missing.",
                "Use the device certificate your organisation issued for this site.",
            ),
            Reason::Expired => w(
                "Your certificate has expired",
                "The certificate your device presented is past its expiry date.",
                RENEW,
            ),
            Reason::NotYetValid => w(
                "Your certificate is not valid yet",
                "The certificate your device presented only becomes valid later.",
                "Check that this device's date and time are correct, or wait until the certificate becomes valid.",
            ),
            Reason::Revoked => w(
                "Your certificate has been revoked",
                "The issuer of the certificate your device presented has withdrawn it.",
                "Ask for a new device certificate.",
            ),
            Reason::CrlInvalid => w(
                "Your certificate could not be checked",
                "This site could not confirm that your certificate is still valid, because the list of withdrawn certificates it needs is missing or out of date. This is not a problem with your device.",
                "Tell the help desk; the site's operators need to fix this.",
            ),
            Reason::BadSignature => w(
                "Your certificate could not be verified",
                "A signature in the certificate your device presented does not verify; the certificate may be damaged.",
                "Ask for a new device certificate.",
            ),
            Reason::EkuMismatch => w(
                "This certificate is not for signing in",
                "The certificate your device presented is not meant to identify a user or device (it may be a server certificate).",
                "Choose your device certificate when the browser asks, or ask for one.",
            ),
            Reason::KeyUsage => w(
                "This certificate may not be used to sign in",
                "The certificate your device presented does not allow the use this site needs.",
                "Ask for a new device certificate.",
            ),
            Reason::BasicConstraints => w(
                "This certificate cannot be used here",
                "A certificate in the chain your device presented is used in a role it is not allowed to have.",
                "Ask for a new device certificate.",
            ),
            Reason::NameConstraints => w(
                "This certificate breaks its issuer's rules",
                "The certificate your device presented names something its issuer may not vouch for.",
                "Ask for a new device certificate.",
            ),
            Reason::WeakCrypto => w(
                "Your certificate uses weak cryptography",
                "The certificate your device presented, or its chain, uses a key or signature that is too weak to be trusted.",
                "Ask for a new device certificate.",
            ),
            Reason::ChainTooLong => w(
                "Your certificate chain is too long",
                "The certificate your device presented was issued through more intermediate authorities than this site accepts.",
                "Ask for a device certificate issued for this site.",
            ),
            Reason::IdentityNotAllowed => w(
                "Your certificate is valid, but not for this site",
                "Your device certificate was recognised, but the identity it names has no access to this site.",
                "Ask for access if you need it.",
            ),
            Reason::WildcardSan => w(
                "A wildcard certificate cannot sign you in",
                "The certificate your device presented names its holder only with a wildcard, which never identifies one user or device.",
                "Ask for a device certificate that names you or this device.",
            ),
            Reason::Malformed => w(
                "Your certificate could not be read",
                "The certificate your device presented is malformed or breaks the rules this site requires.",
                "Ask for a new device certificate.",
            ),
        },
        Refusal::NoRoute => w(
            "Page not found",
            "There is no site at this address.",
            "Check the address you typed or followed.",
        ),
        Refusal::Misdirected => w(
            "Wrong connection for this site",
            "Your browser reused a connection that was opened for another site.",
            "Reload the page.",
        ),
        Refusal::BadPath | Refusal::BadRequest(_) | Refusal::ClientError(_) => w(
            "The request could not be understood",
            "Your browser sent a request this site cannot read.",
            "Check the address, then try again.",
        ),
        Refusal::HeadersTooLarge => w(
            "The request is too large",
            "Your browser sent more request headers than this site accepts, often because of large cookies.",
            "Clear this site's cookies, then try again.",
        ),
        Refusal::UpstreamFailed | Refusal::NoHealthyUpstream => w(
            "The service is unavailable",
            "The gateway could not reach the service behind this site.",
            "Try again in a few minutes.",
        ),
        Refusal::UpstreamTimeout => w(
            "The service did not answer in time",
            "The service behind this site took too long to answer.",
            "Try again in a few minutes.",
        ),
    }
}

/// Text safe inside HTML elements and double- or single-quoted attributes.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn utc(at: i64) -> (String, String) {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(at) else {
        return (String::new(), String::new());
    };
    let machine = t
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let human = t
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
        ))
        .unwrap_or_default();
    (machine, human)
}

/// The whole page. `reason` and `status` are the same codes the JSON answer carries.
pub fn render(refusal: Refusal, reason: &str, answer: &Answer<'_>) -> String {
    let Words { title, what, next } = words(refusal);
    let page = &answer.page;
    let certificate = matches!(refusal, Refusal::Forbidden(_));
    let mut out = String::with_capacity(4096);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"robots\" content=\"noindex\">\n<title>{title}</title>\n<style>{STYLE}</style>\n</head>\n\
         <body>\n<main>\n<h1>{title}</h1>\n<p>{what}</p>\n<p>{next}</p>\n"
    );
    let message = page
        .message
        .unwrap_or("If you think you should have access, contact your help desk and give them the details below.");
    let _ = writeln!(out, "<p class=\"note\">{}</p>", escape(message));
    if page.help_url.is_some() || page.contact.is_some() {
        out.push_str("<ul class=\"help\">\n");
        // validated by `check` as an absolute http(s) URL; escaped all the same
        if let Some(url) = page
            .help_url
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        {
            let label = if certificate {
                "How to enrol a device or renew its certificate"
            } else {
                "Where to get help"
            };
            let url = escape(url);
            let _ = writeln!(
                out,
                "<li><a href=\"{url}\">{label}</a><span class=\"url\">{url}</span></li>"
            );
        }
        if let Some(contact) = page.contact {
            let _ = writeln!(out, "<li>Contact: {}</li>", escape(contact));
        }
        out.push_str("</ul>\n");
    }
    let (machine, human) = utc(answer.at);
    let _ = write!(
        out,
        "<section aria-labelledby=\"details\">\n<h2 id=\"details\">Details for the help desk</h2>\n<dl>\n\
         <dt>Reason</dt><dd><code>{reason}</code></dd>\n\
         <dt>Route</dt><dd>{route}</dd>\n\
         <dt>Request ID</dt><dd><code>{id}</code></dd>\n\
         <dt>Time</dt><dd><time datetime=\"{machine}\">{human}</time></dd>\n\
         <dt>Status</dt><dd>{status}</dd>\n</dl>\n</section>\n</main>\n</body>\n</html>\n",
        reason = escape(reason),
        route = escape(answer.route.unwrap_or("none")),
        id = escape(answer.request_id),
        status = refusal.status(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PageWords;

    #[test]
    fn escape_turns_markup_quotes_and_ampersands_into_text() {
        assert_eq!(
            escape("<script>alert('x')</script>"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"
        );
        assert_eq!(escape(r#"a "b" & c"#), "a &quot;b&quot; &amp; c");
        assert_eq!(escape("&amp;"), "&amp;amp;");
        assert!(matches!(escape("plain text, ü"), Cow::Borrowed(_)));
    }

    #[test]
    fn every_dynamic_string_on_the_page_is_escaped() {
        let evil = "<script>alert(1)</script>\"'&";
        let answer = Answer {
            route: Some(evil),
            request_id: evil,
            page: PageWords {
                help_url: Some("https://help.example/enrol?a=1&b=\"2\""),
                contact: Some(evil),
                message: Some(evil),
            },
            at: 1_767_225_600,
        };
        let page = render(Refusal::Forbidden(Reason::NoCert), "no_cert", &answer);
        assert!(!page.contains("<script"), "{page}");
        assert_eq!(
            page.matches("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;")
                .count(),
            4
        );
        assert!(page.contains("href=\"https://help.example/enrol?a=1&amp;b=&quot;2&quot;\""));
        assert!(page.contains("<time datetime=\"2026-01-01T00:00:00Z\">2026-01-01 00:00:00 UTC</time>"));
        assert!(page.contains("not enrolled, when its certificate has expired, or when the certificate was issued by another organisation"));
    }

    #[test]
    fn a_help_url_that_is_not_http_never_becomes_a_link() {
        let answer = Answer {
            route: None,
            request_id: "id",
            page: PageWords {
                help_url: Some("javascript:alert(1)"),
                ..Default::default()
            },
            at: 0,
        };
        let page = render(Refusal::NoRoute, "no_route", &answer);
        assert!(!page.contains("javascript"), "{page}");
        assert!(page.contains("<h1>Page not found</h1>"));
    }

    #[test]
    fn every_reason_has_its_own_plain_words() {
        let mut titles: Vec<&str> = Reason::ALL
            .iter()
            .map(|r| words(Refusal::Forbidden(*r)).title)
            .collect();
        titles.sort_unstable();
        titles.dedup();
        assert_eq!(titles.len(), Reason::ALL.len());
    }
}
