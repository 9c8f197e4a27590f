//! `refusal_page` of a listener or a route: the operator's words for refused browsers.
//! Plain text and one link, nothing that could become markup or reach internals.

use super::{At, Compiler};
use crate::config::raw::RawRefusalPage;
use crate::policy::RefusalPage;

const MAX_URL: usize = 2048;
const MAX_CONTACT: usize = 200;
const MAX_MESSAGE: usize = 1000;

impl Compiler<'_> {
    /// `None` when the block has problems (each reported with its path).
    pub(super) fn refusal_page(
        &mut self,
        file: usize,
        base: &str,
        raw: Option<&RawRefusalPage>,
    ) -> Option<RefusalPage> {
        let Some(raw) = raw else {
            return Some(RefusalPage::default());
        };
        let before = self.problems.len();
        let mut check = |key: &str, value: &Option<String>, problem: &dyn Fn(&str) -> Option<String>| {
            let value = value.as_deref()?;
            match problem(value) {
                None => Some(value.trim_end().to_string()),
                Some(message) => {
                    let path = format!("{base}.{key}");
                    self.error(&At { file, path: &path }, message);
                    None
                }
            }
        };
        let help_url = check("help_url", &raw.help_url, &help_url_problem);
        let contact = check("contact", &raw.contact, &|t| text_problem(t, MAX_CONTACT, false));
        let message = check("message", &raw.message, &|t| text_problem(t, MAX_MESSAGE, true));
        (self.problems.len() == before).then_some(RefusalPage {
            help_url,
            contact,
            message,
        })
    }
}

/// An absolute http(s) URL of RFC 3986 characters, without credentials.
fn help_url_problem(url: &str) -> Option<String> {
    let expected = "expected e.g. https://help.example/enrol";
    if url.len() > MAX_URL {
        return Some(format!(
            "the URL is {} characters long (expected at most {MAX_URL})",
            url.len()
        ));
    }
    let rfc3986 = |c: char| c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c);
    let parsed = url
        .chars()
        .all(rfc3986)
        .then(|| url.parse::<http::Uri>().ok())
        .flatten();
    let Some(uri) = parsed else {
        return Some(format!("{url:?} is not a URL ({expected})"));
    };
    match (uri.scheme_str(), uri.authority()) {
        (Some("https" | "http"), Some(authority)) if authority.as_str().contains('@') => Some(format!(
            "{url:?} carries a user name or password (expected a link anyone may see)"
        )),
        (Some("https" | "http"), Some(_)) => None,
        _ => Some(format!("{url:?} is not an absolute http(s) URL ({expected})")),
    }
}

/// Plain text: not blank, not too long, no control or bidirectional-override characters
/// (line breaks only where `multiline`).
fn text_problem(text: &str, max: usize, multiline: bool) -> Option<String> {
    if text.trim().is_empty() {
        return Some(format!(
            "{text:?} is empty (expected a short text, or leave the key out for the built-in text)"
        ));
    }
    let len = text.trim_end().chars().count();
    if len > max {
        return Some(format!("the text is {len} characters long (expected at most {max})"));
    }
    let bidi = |c: char| matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if text
        .trim_end()
        .chars()
        .any(|c| (c.is_control() && !(multiline && c == '\n')) || bidi(c))
    {
        let lines = if multiline {
            ", line breaks allowed"
        } else {
            " on one line"
        };
        return Some(format!(
            "{text:?} contains a control or bidirectional-override character (expected plain text{lines})"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_urls_must_be_absolute_http_links_without_credentials() {
        assert_eq!(help_url_problem("https://help.example/enrol?os=mac#steps"), None);
        assert_eq!(help_url_problem("http://intranet.example/certs"), None);
        for bad in [
            "javascript:alert(1)",
            "/enrol",
            "help.example/enrol",
            "ftp://help.example/",
            "https://help.example/\"><script>",
            "https://help.example/a b",
            "https://",
            "https://user:secret@help.example/",
        ] {
            assert!(help_url_problem(bad).is_some(), "{bad} accepted");
        }
    }

    #[test]
    fn texts_are_plain_and_short() {
        assert_eq!(text_problem("IT desk, ext. 4400 <it@corp.example>", 200, false), None);
        assert_eq!(text_problem("Line one\nline two\n", 200, true), None);
        assert!(text_problem("Line one\nline two", 200, false).is_some());
        assert!(text_problem("bell\u{7}", 200, true).is_some());
        assert!(text_problem("evil\u{202e}txt.exe", 200, true).is_some());
        assert!(text_problem("   ", 200, true).is_some());
        assert!(text_problem(&"x".repeat(201), 200, true).is_some());
    }
}
