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

    /// The end as operators wrote it: `until: 2027-03-01` exempts that whole day (it ends at
    /// the next midnight, UTC), so it reads "through 2027-03-01 (UTC)"; an instant reads
    /// "until 2027-03-01 12:30:00 UTC".
    pub fn ends(&self) -> String {
        let Ok(end) = time::OffsetDateTime::from_unix_timestamp(self.until) else {
            return format!("until {}", self.until);
        };
        let date = time::macros::format_description!("[year]-[month]-[day]");
        if end.time() == time::Time::MIDNIGHT {
            if let Some(Ok(day)) = end.date().previous_day().map(|d| d.format(&date)) {
                return format!("through {day} (UTC)");
            }
        }
        let instant = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
        end.format(&instant)
            .map_or_else(|_| format!("until {}", self.until), |t| format!("until {t} UTC"))
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

    #[test]
    fn a_date_reads_as_the_last_day_covered_and_an_instant_as_itself() {
        let at = |text: &str| {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .unwrap()
                .unix_timestamp()
        };
        let exemption = |until| Exemption {
            who: ExemptClient::Cidr("10.0.0.0/8".parse().unwrap()),
            until,
            reason: String::new(),
        };
        // `until: 2027-03-01` ends when 2027-03-02 begins
        assert_eq!(exemption(at("2027-03-02T00:00:00Z")).ends(), "through 2027-03-01 (UTC)");
        assert_eq!(
            exemption(at("2027-03-01T12:30:00Z")).ends(),
            "until 2027-03-01 12:30:00 UTC"
        );
    }
}
