//! Would-be-rejected clients, and certificates due for renewal, grouped by the team that
//! owns them: the list an operator sends before flipping a route (`phasegate notify-list`).

use serde::Serialize;

use crate::audit::{ClientRecord, Renewal};
use crate::policy::{owner_of, Owner};

#[derive(Serialize)]
pub struct OwnerGroup {
    pub team: Option<String>,
    pub contact: Option<String>,
    pub clients: Vec<ClientRecord>,
    pub renewals: Vec<RenewalView>,
}

/// A certificate due for renewal, with what its expiry means today.
#[derive(Serialize)]
pub struct RenewalView {
    #[serde(flatten)]
    pub renewal: Renewal,
    /// Whole days until expiry; negative once expired.
    pub days_left: i64,
    pub expired: bool,
}

impl RenewalView {
    pub fn new(renewal: Renewal, now: i64) -> Self {
        let not_after = renewal.certificate.not_after;
        RenewalView {
            renewal,
            days_left: (not_after - now).div_euclid(86_400),
            expired: not_after <= now,
        }
    }
}

/// Groups records and renewals by owner, teams in configuration order, unowned last.
pub fn group(owners: &[Owner], clients: Vec<ClientRecord>, renewals: Vec<RenewalView>) -> Vec<OwnerGroup> {
    let mut groups: Vec<OwnerGroup> = owners
        .iter()
        .map(|o| (Some(o.team.clone()), o.contact.clone()))
        .chain([(None, None)])
        .map(|(team, contact)| OwnerGroup {
            team,
            contact,
            clients: Vec::new(),
            renewals: Vec::new(),
        })
        .collect();
    let index = |uris: &[String], dns: &[String], addrs: &[std::net::IpAddr]| {
        owner_of(owners, uris, dns, addrs)
            .and_then(|o| owners.iter().position(|x| std::ptr::eq(x, o)))
            .unwrap_or(owners.len())
    };
    for c in clients {
        let (uris, dns) = c
            .certificate
            .as_ref()
            .map(|cert| (cert.uris.clone(), cert.dns.clone()))
            .unwrap_or_default();
        // a certificate names its holder; addresses only stand in when there is none
        let addrs = if c.certificate.is_none() { &c.sources[..] } else { &[] };
        groups[index(&uris, &dns, addrs)].clients.push(c);
    }
    for r in renewals {
        let cert = &r.renewal.certificate;
        groups[index(&cert.uris, &cert.dns, &[])].renewals.push(r);
    }
    groups.retain(|g| !g.clients.is_empty() || !g.renewals.is_empty());
    groups
}
