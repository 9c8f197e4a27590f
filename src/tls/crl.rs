//! CRL files: every CRL of a PEM bundle (the usual way to publish a chain's CRLs), or one
//! DER CRL, each with the line it starts on for messages.

use openssl::x509::X509Crl;

const BEGIN: &str = "-----BEGIN X509 CRL-----";
const END: &str = "-----END X509 CRL-----";

/// One CRL of a file.
pub struct CrlEntry {
    pub crl: X509Crl,
    /// 1-based line of its PEM block; 0 for a DER file.
    pub line: usize,
}

/// Reads every CRL in `bytes`: all PEM `X509 CRL` blocks in order, or the file as one DER
/// CRL. A block that does not parse is an error naming its line; a file without any CRL too.
/// Errors read after the file's name: `"crls.pem" is not a valid CRL…`.
pub fn read_crls(bytes: &[u8]) -> Result<Vec<CrlEntry>, String> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return der(bytes);
    };
    if !text.contains(BEGIN) {
        return der(bytes);
    }
    let mut entries = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(start) = rest.find(BEGIN) {
        let line = text[..offset + start].matches('\n').count() + 1;
        let Some(len) = rest[start..].find(END) else {
            return Err(format!("has a CRL at line {line} without its {END:?} line"));
        };
        let end = start + len + END.len();
        let crl = X509Crl::from_pem(&rest.as_bytes()[start..end]).map_err(|e| {
            format!(
                "has a CRL at line {line} that does not parse (OpenSSL: {})",
                first_reason(&e)
            )
        })?;
        entries.push(CrlEntry { crl, line });
        offset += end;
        rest = &rest[end..];
    }
    Ok(entries)
}

fn der(bytes: &[u8]) -> Result<Vec<CrlEntry>, String> {
    X509Crl::from_der(bytes)
        .map(|crl| vec![CrlEntry { crl, line: 0 }])
        .map_err(|e| format!("is not a valid CRL, PEM or DER (OpenSSL: {})", first_reason(&e)))
}

fn first_reason(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .first()
        .and_then(|e| e.reason().map(str::to_string))
        .unwrap_or_else(|| "unreadable".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devpki::CertificateAuthority;

    #[test]
    fn every_crl_of_a_bundle_loads_with_its_line() {
        let root = CertificateAuthority::root("crl bundle root").unwrap();
        let int = root.intermediate("crl bundle intermediate").unwrap();
        let later = time::OffsetDateTime::now_utc() + time::Duration::days(1);
        let (a, b) = (root.crl(&[], later).unwrap(), int.crl(&[], later).unwrap());
        let bundle = format!("# published CRLs\n{a}{b}");
        let crls = read_crls(bundle.as_bytes()).unwrap();
        assert_eq!(crls.len(), 2);
        assert_eq!(crls[0].line, 2);
        assert_eq!(crls[1].line, 2 + a.lines().count());
        let der = crls[1].crl.to_der().unwrap();
        assert_eq!(read_crls(&der).unwrap().len(), 1);
        let broken = format!("{a}-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n");
        let e = read_crls(broken.as_bytes()).err().unwrap();
        assert!(e.contains(&format!("line {}", a.lines().count() + 1)), "{e}");
        assert!(read_crls(b"junk").is_err());
    }
}
