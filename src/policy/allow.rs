use std::fmt;
use std::net::IpAddr;

use super::{Identity, Reason};

/// One identity a route accepts. Matching is exact (DNS and email ignore ASCII case);
/// wildcard SANs in a certificate never match anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowEntry {
    Uri(String),
    /// Matches URI SANs that start with this text; validated to end in `/` so that
    /// `…/ns/prod/` cannot match `…/ns/production`.
    UriPrefix(String),
    Dns(String),
    Ip(IpAddr),
    Email(String),
}

impl AllowEntry {
    pub fn matches(&self, id: &Identity) -> bool {
        // a wildcard SAN never matches; looked for only in a SAN that would
        let precise = |s: &String| !s.contains('*');
        match self {
            AllowEntry::Uri(want) => id.uris.iter().any(|u| u == want && precise(u)),
            AllowEntry::UriPrefix(p) => id.uris.iter().any(|u| u.starts_with(p.as_str()) && precise(u)),
            AllowEntry::Dns(want) => id.dns.iter().any(|d| d.eq_ignore_ascii_case(want) && precise(d)),
            AllowEntry::Ip(want) => id.ips.contains(want),
            AllowEntry::Email(want) => id.emails.iter().any(|e| e.eq_ignore_ascii_case(want)),
        }
    }

    /// Parses the `kind:value` form used by `phasegate verify --allow-san`.
    pub fn parse_san(text: &str) -> Result<AllowEntry, String> {
        let (kind, value) = text
            .split_once(':')
            .ok_or_else(|| format!("{text:?} is not kind:value (expected uri:V, dns:V, ip:V or email:V)"))?;
        match kind {
            "uri" => Ok(AllowEntry::Uri(value.to_string())),
            "dns" => Ok(AllowEntry::Dns(value.to_ascii_lowercase())),
            "ip" => value
                .parse()
                .map(AllowEntry::Ip)
                .map_err(|_| format!("{value:?} is not an IP address")),
            "email" => Ok(AllowEntry::Email(value.to_string())),
            _ => Err(format!("{kind:?} is not a SAN kind (expected uri, dns, ip or email)")),
        }
    }
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowEntry::Uri(v) => write!(f, "uri:{v}"),
            AllowEntry::UriPrefix(v) => write!(f, "uri_prefix:{v}"),
            AllowEntry::Dns(v) => write!(f, "dns:{v}"),
            AllowEntry::Ip(v) => write!(f, "ip:{v}"),
            AllowEntry::Email(v) => write!(f, "email:{v}"),
        }
    }
}

/// The identities a route accepts; empty means any certificate that verifies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList(pub Vec<AllowEntry>);

impl AllowList {
    pub fn check(&self, id: &Identity) -> Result<(), Reason> {
        if self.0.is_empty() || self.0.iter().any(|e| e.matches(id)) {
            return Ok(());
        }
        if id.has_wildcard_san() {
            Err(Reason::WildcardSan)
        } else {
            Err(Reason::IdentityNotAllowed)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(uris: &[&str], dns: &[&str]) -> Identity {
        Identity {
            uris: uris.iter().map(|s| s.to_string()).collect(),
            dns: dns.iter().map(|s| s.to_string()).collect(),
            ..Identity::default()
        }
    }

    #[test]
    fn empty_allow_list_accepts_any_verified_identity() {
        assert_eq!(AllowList::default().check(&id(&[], &[])), Ok(()));
    }

    #[test]
    fn uri_prefix_matches_only_below_the_prefix() {
        let list = AllowList(vec![AllowEntry::UriPrefix("spiffe://corp/ns/prod/".into())]);
        assert_eq!(list.check(&id(&["spiffe://corp/ns/prod/sa/a"], &[])), Ok(()));
        assert_eq!(
            list.check(&id(&["spiffe://corp/ns/production/sa/a"], &[])),
            Err(Reason::IdentityNotAllowed)
        );
    }

    #[test]
    fn wildcard_san_never_satisfies_an_allow_entry() {
        let list = AllowList(vec![AllowEntry::Dns("billing.prod.svc".into())]);
        assert_eq!(list.check(&id(&[], &["*.prod.svc"])), Err(Reason::WildcardSan));
        let list = AllowList(vec![AllowEntry::Dns("*.prod.svc".into())]);
        assert_eq!(list.check(&id(&[], &["*.prod.svc"])), Err(Reason::WildcardSan));
        let list = AllowList(vec![AllowEntry::Uri("spiffe://corp/*".into())]);
        assert_eq!(list.check(&id(&["spiffe://corp/*"], &[])), Err(Reason::WildcardSan));
        let list = AllowList(vec![AllowEntry::UriPrefix("spiffe://corp/".into())]);
        assert_eq!(list.check(&id(&["spiffe://corp/*"], &[])), Err(Reason::WildcardSan));
        // a precise SAN beside a wildcard one still matches
        let list = AllowList(vec![AllowEntry::Dns("billing.prod.svc".into())]);
        assert_eq!(list.check(&id(&[], &["*.prod.svc", "billing.prod.svc"])), Ok(()));
    }

    #[test]
    fn dns_matching_ignores_case() {
        let list = AllowList(vec![AllowEntry::Dns("billing.prod.svc".into())]);
        assert_eq!(list.check(&id(&[], &["Billing.Prod.Svc"])), Ok(()));
    }

    #[test]
    fn san_flags_parse_with_clear_errors() {
        assert_eq!(
            AllowEntry::parse_san("dns:A.example"),
            Ok(AllowEntry::Dns("a.example".into()))
        );
        assert!(AllowEntry::parse_san("ip:nope").unwrap_err().contains("not an IP"));
        assert!(AllowEntry::parse_san("cn:x").unwrap_err().contains("not a SAN kind"));
    }
}
