//! Parsing a client certificate into an [`Identity`], once per connection.

use std::net::IpAddr;

use openssl::x509::X509Ref;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::policy::{ExtendedKeyUsage, Identity, KeyUsage};

/// Reads the identity fields of a certificate. Any structural problem (a certificate
/// OpenSSL accepted but the strict parser does not, duplicate extensions, a SAN that is
/// not valid text) is an error: such a certificate is `malformed`.
pub fn parse_identity(cert: &X509Ref) -> Result<Identity, String> {
    let der = encode(cert)?;
    identity_of_der(&der, &openssl::sha::sha256(&der))
}

/// A certificate's DER encoding, or why it has none (then it is `malformed`).
pub(super) fn encode(cert: &X509Ref) -> Result<Vec<u8>, String> {
    cert.to_der().map_err(|e| format!("cannot encode certificate: {e}"))
}

/// [`parse_identity`] for a certificate whose encoding and SHA-256 the caller already has.
pub(super) fn identity_of_der(der: &[u8], sha256: &[u8; 32]) -> Result<Identity, String> {
    let (_, parsed) =
        X509Certificate::from_der(der).map_err(|e| format!("certificate does not parse as X.509: {e}"))?;

    let mut id = Identity {
        subject: parsed.subject().to_string(),
        issuer: parsed.issuer().to_string(),
        serial: hex(parsed.raw_serial()),
        sha256: hex(sha256),
        not_before: parsed.validity().not_before.timestamp(),
        not_after: parsed.validity().not_after.timestamp(),
        is_ca: parsed.is_ca(),
        ..Identity::default()
    };
    let ext = |e: x509_parser::error::X509Error| format!("bad extension: {e}");
    if let Some(san) = parsed.subject_alternative_name().map_err(ext)? {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => id.uris.push((*u).to_string()),
                GeneralName::DNSName(d) => id.dns.push(d.to_ascii_lowercase()),
                GeneralName::RFC822Name(e) => id.emails.push((*e).to_string()),
                GeneralName::IPAddress(bytes) => id.ips.push(ip_from_bytes(bytes)?),
                GeneralName::Invalid(_, _) => return Err("subject alternative name is not valid text".to_string()),
                _ => {}
            }
        }
    }
    if let Some(eku) = parsed.extended_key_usage().map_err(ext)? {
        id.eku = Some(ExtendedKeyUsage {
            client_auth: eku.value.client_auth,
            server_auth: eku.value.server_auth,
            any: eku.value.any,
        });
    }
    if let Some(ku) = parsed.key_usage().map_err(ext)? {
        id.key_usage = Some(KeyUsage {
            digital_signature: ku.value.digital_signature(),
            key_agreement: ku.value.key_agreement(),
            key_cert_sign: ku.value.key_cert_sign(),
        });
    }
    Ok(id)
}

fn ip_from_bytes(bytes: &[u8]) -> Result<IpAddr, String> {
    match bytes.len() {
        4 => Ok(IpAddr::from(<[u8; 4]>::try_from(bytes).expect("length checked"))),
        16 => Ok(IpAddr::from(<[u8; 16]>::try_from(bytes).expect("length checked"))),
        n => Err(format!("IP address SAN of {n} bytes (expected 4 or 16)")),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
