//! Would-be-rejected clients grouped by the team that owns them: the list an operator
//! sends before flipping a route (`phasegate notify-list`).

use serde::Serialize;

use crate::audit::ClientRecord;
use crate::policy::{owner_of, Owner};

#[derive(Serialize)]
pub struct OwnerGroup {
    pub team: Option<String>,
    pub contact: Option<String>,
    pub clients: Vec<ClientRecord>,
}

/// Groups records by owner, teams in configuration order, unowned clients last.
pub fn group(owners: &[Owner], clients: Vec<ClientRecord>) -> Vec<OwnerGroup> {
    let mut groups: Vec<OwnerGroup> = owners
        .iter()
        .map(|o| OwnerGroup {
            team: Some(o.team.clone()),
            contact: o.contact.clone(),
            clients: Vec::new(),
        })
        .collect();
    let mut unowned = Vec::new();
    for c in clients {
        let (uris, dns) = c
            .certificate
            .as_ref()
            .map(|cert| (cert.uris.clone(), cert.dns.clone()))
            .unwrap_or_default();
        // a certificate names its holder; addresses only stand in when there is none
        let addrs = if c.certificate.is_none() { &c.sources[..] } else { &[] };
        match owner_of(owners, &uris, &dns, addrs) {
            Some(o) => {
                if let Some(g) = owners.iter().position(|x| std::ptr::eq(x, o)) {
                    groups[g].clients.push(c);
                }
            }
            None => unowned.push(c),
        }
    }
    groups.retain(|g| !g.clients.is_empty());
    if !unowned.is_empty() {
        groups.push(OwnerGroup {
            team: None,
            contact: None,
            clients: unowned,
        });
    }
    groups
}
