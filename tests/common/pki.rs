use std::path::{Path, PathBuf};

use phasegate::devpki::{CertificateAuthority, Issued, LeafSpec, San, Usage};
use time::{Duration, OffsetDateTime};

/// Server names the test server certificate covers.
pub const SERVER_HOSTS: [&str; 4] = ["api.test", "other.test", "open.test", "strict.test"];
pub const GOOD_URI: &str = "spiffe://test.example/ns/prod/sa/checkout";
pub const OTHER_PROD_URI: &str = "spiffe://test.example/ns/prod/sa/billing";
pub const NOT_ALLOWED_URI: &str = "spiffe://test.example/ns/dev/sa/intruder";

/// Every kind of client certificate a rollout meets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    NoCert,
    Good,
    Expired,
    NotYetValid,
    UntrustedCa,
    MissingIntermediate,
    ServerAuthOnly,
    WildcardSan,
    NotAllowed,
    Revoked,
}

impl ClientKind {
    pub const ALL: [ClientKind; 10] = [
        ClientKind::NoCert,
        ClientKind::Good,
        ClientKind::Expired,
        ClientKind::NotYetValid,
        ClientKind::UntrustedCa,
        ClientKind::MissingIntermediate,
        ClientKind::ServerAuthOnly,
        ClientKind::WildcardSan,
        ClientKind::NotAllowed,
        ClientKind::Revoked,
    ];

    /// The reason code enforce gives this client; `None` for a pass.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            ClientKind::NoCert => Some("no_cert"),
            ClientKind::Good => None,
            ClientKind::Expired => Some("expired"),
            ClientKind::NotYetValid => Some("not_yet_valid"),
            ClientKind::UntrustedCa | ClientKind::MissingIntermediate => Some("untrusted_issuer"),
            ClientKind::ServerAuthOnly => Some("eku_mismatch"),
            ClientKind::WildcardSan => Some("wildcard_san"),
            ClientKind::NotAllowed => Some("identity_not_allowed"),
            ClientKind::Revoked => Some("revoked"),
        }
    }
}

/// A client certificate: PEM chain (leaf first) and key.
#[derive(Clone, Debug)]
pub struct ClientCert {
    pub chain_pem: String,
    pub key_pem: String,
}

/// A root, an intermediate, an unrelated root, a server certificate and CRLs, written to
/// a temporary directory that also holds the policy files.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub root: CertificateAuthority,
    pub intermediate: CertificateAuthority,
    pub untrusted: CertificateAuthority,
    revoked: Issued,
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = CertificateAuthority::root("Test Root CA").unwrap();
        let intermediate = root.intermediate("Test Intermediate CA").unwrap();
        let untrusted = CertificateAuthority::root("Unknown Root CA").unwrap();
        let revoked = intermediate.issue(&LeafSpec::client(OTHER_PROD_URI)).unwrap();
        let pki = TestPki {
            dir,
            root,
            intermediate,
            untrusted,
            revoked,
        };
        pki.write("pki/root.pem", &pki.root.cert_pem);
        pki.write("pki/intermediate.pem", &pki.intermediate.cert_pem);
        pki.write("pki/untrusted-root.pem", &pki.untrusted.cert_pem);
        let later = OffsetDateTime::now_utc() + Duration::days(7);
        pki.write("pki/root.crl", &pki.root.crl(&[], later).unwrap());
        pki.write(
            "pki/intermediate.crl",
            &pki.intermediate.crl(&[&pki.revoked], later).unwrap(),
        );
        let server = pki.intermediate.issue(&LeafSpec::server(&SERVER_HOSTS)).unwrap();
        pki.write(
            "certs/server.crt",
            &format!("{}{}", server.cert_pem, pki.intermediate.cert_pem),
        );
        pki.write("certs/server.key", &server.key_pem);
        pki
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    pub fn root_pem(&self) -> &str {
        &self.root.cert_pem
    }

    /// A certificate signed by the intermediate, sent with the intermediate.
    pub fn issue(&self, spec: &LeafSpec) -> ClientCert {
        let c = self.intermediate.issue(spec).unwrap();
        ClientCert {
            chain_pem: format!("{}{}", c.cert_pem, self.intermediate.cert_pem),
            key_pem: c.key_pem,
        }
    }

    pub fn client(&self, kind: ClientKind) -> Option<ClientCert> {
        let now = OffsetDateTime::now_utc();
        let spec = LeafSpec::client(GOOD_URI);
        Some(match kind {
            ClientKind::NoCert => return None,
            ClientKind::Good => self.issue(&spec),
            ClientKind::Expired => self.issue(&spec.valid(now - Duration::days(10), now - Duration::days(1))),
            ClientKind::NotYetValid => self.issue(&spec.valid(now + Duration::days(1), now + Duration::days(10))),
            ClientKind::UntrustedCa => {
                let c = self.untrusted.issue(&spec).unwrap();
                ClientCert {
                    chain_pem: c.cert_pem,
                    key_pem: c.key_pem,
                }
            }
            ClientKind::MissingIntermediate => {
                let c = self.intermediate.issue(&spec).unwrap();
                ClientCert {
                    chain_pem: c.cert_pem,
                    key_pem: c.key_pem,
                }
            }
            ClientKind::ServerAuthOnly => self.issue(&spec.usage(Usage::Server)),
            ClientKind::WildcardSan => self.issue(&spec.sans(vec![San::Dns("*.prod.svc".into())])),
            ClientKind::NotAllowed => self.issue(&LeafSpec::client(NOT_ALLOWED_URI)),
            ClientKind::Revoked => ClientCert {
                chain_pem: format!("{}{}", self.revoked.cert_pem, self.intermediate.cert_pem),
                key_pem: self.revoked.key_pem.clone(),
            },
        })
    }

    /// Policy directory inside the temp dir.
    pub fn policies(&self) -> PathBuf {
        self.path("policies")
    }

    /// The listener and trust bundle every test config starts with.
    pub fn base_yaml(&self, port: u16) -> String {
        format!(
            r#"listeners:
  - name: edge
    address: 127.0.0.1:{port}
    tls:
      certificates:
        - hosts: [{hosts}]
          cert: ../certs/server.crt
          key: ../certs/server.key
trust_bundles:
  internal:
    ca: ../pki/root.pem
    crl: [../pki/root.crl, ../pki/intermediate.crl]
  untrusted:
    ca: ../pki/untrusted-root.pem
"#,
            hosts = SERVER_HOSTS.join(", ")
        )
    }
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}
