//! Staged enforcement: a percentage of clients at a time, and dated exemptions.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use super::{AllowEntry, Identity};

/// A client that passes although it would be rejected, until a date.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exemption {
    pub who: ExemptClient,
    /// Unix seconds; the exemption applies before this instant only.
    pub until: i64,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExemptClient {
    /// A SAN (`uri:…`, `dns:…`); only an authentic certificate can claim it.
    Identity(AllowEntry),
    /// Source addresses, for legacy clients that cannot present a certificate yet.
    Cidr(IpNet),
}

impl fmt::Display for ExemptClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExemptClient::Identity(e) => write!(f, "{e}"),
            ExemptClient::Cidr(net) => write!(f, "cidr:{net}"),
        }
    }
}

impl Exemption {
    pub fn is_active(&self, now: i64) -> bool {
        now < self.until
    }

    /// `authentic` is the identity only when the certificate chains to the route's trust
    /// anchors (even if expired), so nobody can mint an exempt identity.
    pub fn covers(&self, authentic: Option<&Identity>, addr: Option<IpAddr>) -> bool {
        match &self.who {
            ExemptClient::Identity(entry) => authentic.is_some_and(|id| entry.matches(id)),
            ExemptClient::Cidr(net) => addr.is_some_and(|a| net.contains(&a)),
        }
    }
}

/// Which percentile a client falls in, stably across requests, restarts and instances:
/// FNV-1a over its key.
pub fn percentile(key: &[u8]) -> u8 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % 100) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_sticky_and_spread_evenly() {
        assert_eq!(percentile(b"uri:spiffe://corp/a"), percentile(b"uri:spiffe://corp/a"));
        let in_first_20 = (0..10_000)
            .filter(|i| percentile(format!("uri:spiffe://corp/ns/prod/sa/svc-{i}").as_bytes()) < 20)
            .count();
        assert!(
            (1_800..=2_200).contains(&in_first_20),
            "{in_first_20} of 10,000 in the first 20%"
        );
    }
}
