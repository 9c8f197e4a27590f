//! Envoy's `x-forwarded-client-cert` format, so existing backends understand the identity.

use http::HeaderValue;

use crate::policy::Identity;

/// `Hash=<sha256>;Subject="<subject>";URI=<uri>;DNS=<dns>…` for one certificate.
pub fn xfcc_value(id: &Identity) -> Option<HeaderValue> {
    let mut v = format!("Hash={};Subject={}", id.sha256, quoted(&id.subject));
    for uri in &id.uris {
        v.push_str(";URI=");
        v.push_str(&maybe_quoted(uri));
    }
    for dns in &id.dns {
        v.push_str(";DNS=");
        v.push_str(&maybe_quoted(dns));
    }
    // A SAN with bytes a header cannot carry makes the whole value unusable; the
    // verdict header still tells the backend what happened.
    HeaderValue::from_str(&v).ok()
}

fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn maybe_quoted(s: &str) -> String {
    if s.contains([',', ';', '=', '"']) {
        quoted(s)
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfcc_quotes_subject_and_special_characters() {
        let id = Identity {
            sha256: "ab".into(),
            subject: "CN=checkout, O=\"Corp\"".into(),
            uris: vec!["spiffe://corp/ns/prod/sa/checkout".into()],
            dns: vec!["checkout.prod.svc".into(), "a;b".into()],
            ..Identity::default()
        };
        assert_eq!(
            xfcc_value(&id).unwrap(),
            "Hash=ab;Subject=\"CN=checkout, O=\\\"Corp\\\"\";URI=spiffe://corp/ns/prod/sa/checkout;DNS=checkout.prod.svc;DNS=\"a;b\""
        );
    }
}
