//! The operator's words on the page a person sees when the gateway refuses a browser:
//! plain text only (validated by `check`, escaped when rendered), never markup.

/// A `refusal_page:` block of a listener or a route; every field optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefusalPage {
    /// Where people enrol or renew a certificate: an absolute http(s) URL.
    pub help_url: Option<String>,
    /// Whom to ask (a help desk, an address, a phone number).
    pub contact: Option<String>,
    /// A short note from the operator.
    pub message: Option<String>,
}

/// The words a refusal shows: each field from the route, else from the listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageWords<'a> {
    pub help_url: Option<&'a str>,
    pub contact: Option<&'a str>,
    pub message: Option<&'a str>,
}

impl RefusalPage {
    /// Routes are not bound to listeners, so the two blocks meet per request.
    pub fn words<'a>(route: Option<&'a RefusalPage>, listener: Option<&'a RefusalPage>) -> PageWords<'a> {
        let pick = |f: fn(&RefusalPage) -> &Option<String>| {
            route
                .and_then(|r| f(r).as_deref())
                .or_else(|| listener.and_then(|l| f(l).as_deref()))
        };
        PageWords {
            help_url: pick(|p| &p.help_url),
            contact: pick(|p| &p.contact),
            message: pick(|p| &p.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_overrides_the_listener_field_by_field() {
        let listener = RefusalPage {
            help_url: Some("https://help.example/enrol".into()),
            contact: Some("IT desk".into()),
            message: None,
        };
        let route = RefusalPage {
            contact: Some("payroll team".into()),
            ..Default::default()
        };
        let w = RefusalPage::words(Some(&route), Some(&listener));
        assert_eq!(w.help_url, Some("https://help.example/enrol"));
        assert_eq!(w.contact, Some("payroll team"));
        assert_eq!(w.message, None);
        assert_eq!(RefusalPage::words(None, None), PageWords::default());
    }
}
