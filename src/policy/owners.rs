//! Who owns a client: the team to tell before a route starts rejecting it.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnerMatch {
    Uri(String),
    /// Ends with `/`.
    UriPrefix(String),
    Dns(String),
    Cidr(IpNet),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Owner {
    #[serde(skip)]
    pub matcher: OwnerMatch,
    pub team: String,
    pub contact: Option<String>,
}

impl Owner {
    fn matches(&self, uris: &[String], dns: &[String], addrs: &[IpAddr]) -> bool {
        match &self.matcher {
            OwnerMatch::Uri(u) => uris.iter().any(|x| x == u),
            OwnerMatch::UriPrefix(p) => uris.iter().any(|x| x.starts_with(p.as_str())),
            OwnerMatch::Dns(d) => dns.iter().any(|x| x.eq_ignore_ascii_case(d)),
            OwnerMatch::Cidr(net) => addrs.iter().any(|a| net.contains(a)),
        }
    }
}

/// The first owner whose match covers the client's SANs or source addresses.
pub fn owner_of<'a>(owners: &'a [Owner], uris: &[String], dns: &[String], addrs: &[IpAddr]) -> Option<&'a Owner> {
    owners.iter().find(|o| o.matches(uris, dns, addrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(m: OwnerMatch, team: &str) -> Owner {
        Owner {
            matcher: m,
            team: team.into(),
            contact: None,
        }
    }

    #[test]
    fn the_first_matching_owner_wins_and_addresses_match_by_cidr() {
        let owners = vec![
            owner(OwnerMatch::Uri("spiffe://corp/ns/payments/sa/batch".into()), "batch"),
            owner(OwnerMatch::UriPrefix("spiffe://corp/ns/payments/".into()), "payments"),
            owner(OwnerMatch::Cidr("10.1.0.0/16".parse().unwrap()), "legacy"),
        ];
        let t = |uris: &[&str], addrs: &[&str]| {
            let uris: Vec<String> = uris.iter().map(|s| s.to_string()).collect();
            let addrs: Vec<IpAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
            owner_of(&owners, &uris, &[], &addrs).map(|o| o.team.clone())
        };
        assert_eq!(
            t(&["spiffe://corp/ns/payments/sa/batch"], &[]).as_deref(),
            Some("batch")
        );
        assert_eq!(
            t(&["spiffe://corp/ns/payments/sa/api"], &[]).as_deref(),
            Some("payments")
        );
        assert_eq!(t(&[], &["10.1.2.3"]).as_deref(), Some("legacy"));
        assert_eq!(t(&["spiffe://corp/ns/other/sa/x"], &["192.168.0.1"]), None);
    }
}
