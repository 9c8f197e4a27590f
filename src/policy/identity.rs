use std::net::IpAddr;

use serde::Serialize;

/// What a client certificate says about its holder, parsed once per connection. Plain data:
/// whether it can be believed is decided by chain verification, per trust bundle.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// URI SANs, e.g. SPIFFE IDs. The strongest form of identity.
    pub uris: Vec<String>,
    /// DNS SANs, lowercased.
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub emails: Vec<String>,
    /// RFC 4514 text of the subject; shown to operators, never used as identity.
    pub subject: String,
    pub issuer: String,
    /// Serial number as lowercase hex.
    pub serial: String,
    /// SHA-256 of the DER certificate, lowercase hex.
    pub sha256: String,
    /// Validity in Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// The extended key usage extension; `None` when absent (RFC 5280: any use).
    pub eku: Option<ExtendedKeyUsage>,
    /// The key usage extension; `None` when absent.
    pub key_usage: Option<KeyUsage>,
    /// basicConstraints cA=TRUE.
    pub is_ca: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExtendedKeyUsage {
    pub client_auth: bool,
    pub server_auth: bool,
    pub any: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KeyUsage {
    pub digital_signature: bool,
    pub key_agreement: bool,
    pub key_cert_sign: bool,
}

impl Identity {
    /// The name operators see for this client: the first URI SAN, else DNS, IP, email; a
    /// certificate without SANs is named by its fingerprint, never by its subject CN.
    pub fn display_name(&self) -> String {
        if let Some(u) = self.uris.first() {
            format!("uri:{u}")
        } else if let Some(d) = self.dns.first() {
            format!("dns:{d}")
        } else if let Some(ip) = self.ips.first() {
            format!("ip:{ip}")
        } else if let Some(e) = self.emails.first() {
            format!("email:{e}")
        } else {
            format!("sha256:{}", &self.sha256)
        }
    }

    /// Every SAN in `kind:value` form, the way allow entries and `--allow-san` spell them.
    pub fn sans(&self) -> impl Iterator<Item = String> + '_ {
        self.uris
            .iter()
            .map(|u| format!("uri:{u}"))
            .chain(self.dns.iter().map(|d| format!("dns:{d}")))
            .chain(self.ips.iter().map(|i| format!("ip:{i}")))
            .chain(self.emails.iter().map(|e| format!("email:{e}")))
    }

    pub fn has_wildcard_san(&self) -> bool {
        self.dns.iter().any(|d| d.contains('*')) || self.uris.iter().any(|u| u.contains('*'))
    }
}
