//! Files the YAML names: certificates, keys, CRLs, read once per compile and hashed into the
//! content hash.

use std::path::{Path, PathBuf};

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use super::{first_error, At, Compiler};
use crate::tls::{read_crls, CrlEntry};

impl Compiler<'_> {
    pub(super) fn resolve(&self, at: &At, path: &Path) -> PathBuf {
        let base = self.sources[at.file].path.parent().unwrap_or(Path::new("."));
        base.join(path)
    }

    pub(super) fn read(&mut self, at: &At, path: &Path) -> Option<Vec<u8>> {
        let full = self.resolve(at, path);
        let result = self
            .files
            .entry(full.clone())
            .or_insert_with(|| std::fs::read(&full).map_err(|e| e.to_string()))
            .clone();
        match result {
            Ok(bytes) => {
                self.hash.update(full.as_os_str().as_encoded_bytes());
                self.hash.update(&bytes);
                Some(bytes)
            }
            Err(e) => {
                self.error(at, format!("cannot read {:?}: {e}", path.display().to_string()));
                None
            }
        }
    }

    pub(super) fn certificates(&mut self, at: &At, path: &Path) -> Option<Vec<X509>> {
        let bytes = self.read(at, path)?;
        match X509::stack_from_pem(&bytes) {
            Ok(certs) if !certs.is_empty() => Some(certs),
            Ok(_) => {
                self.error(
                    at,
                    format!(
                        "{:?} holds no certificate (expected PEM CERTIFICATE blocks)",
                        path.display().to_string()
                    ),
                );
                None
            }
            Err(e) => {
                self.error(
                    at,
                    format!(
                        "{:?} is not a valid PEM certificate file (OpenSSL: {})",
                        path.display().to_string(),
                        first_error(&e)
                    ),
                );
                None
            }
        }
    }

    pub(super) fn private_key(&mut self, at: &At, path: &Path) -> Option<PKey<Private>> {
        let bytes = self.read(at, path)?;
        match PKey::private_key_from_pem(&bytes) {
            Ok(key) => Some(key),
            Err(e) => {
                self.error(
                    at,
                    format!(
                        "{:?} is not a valid PEM private key (OpenSSL: {})",
                        path.display().to_string(),
                        first_error(&e)
                    ),
                );
                None
            }
        }
    }

    /// Every CRL in the file (a PEM bundle or one DER CRL); `None` after reporting why not.
    pub(super) fn crl_file(&mut self, at: &At, path: &Path) -> Option<Vec<CrlEntry>> {
        let bytes = self.read(at, path)?;
        match read_crls(&bytes) {
            Ok(entries) => Some(entries),
            Err(e) => {
                self.error(at, format!("{:?} {e}", path.display().to_string()));
                None
            }
        }
    }

    /// Certificates that must all be CAs (trust anchors, intermediates).
    pub(super) fn ca_certificates(&mut self, at: &At, path: &Path) -> Option<Vec<X509>> {
        let certs = self.certificates(at, path)?;
        let mut ok = true;
        for (i, cert) in certs.iter().enumerate() {
            let is_ca = crate::tls::parse_identity(cert).map(|id| id.is_ca).unwrap_or(false);
            if !is_ca {
                ok = false;
                self.error(
                    at,
                    format!(
                        "certificate {} in {:?} ({}) is not a CA certificate (expected basicConstraints cA=TRUE)",
                        i + 1,
                        path.display().to_string(),
                        crate::tls::describe(cert)
                    ),
                );
            }
        }
        ok.then_some(certs)
    }
}
