//! A throwaway PKI for the demo and the tests: root and intermediate CAs, server and
//! client certificates of every kind a rollout meets, and CRLs. Not for production keys.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, NameConstraints,
    RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

pub type Result<T> = std::result::Result<T, rcgen::Error>;

/// A CA that can issue certificates and CRLs.
pub struct CertificateAuthority {
    params: CertificateParams,
    key: KeyPair,
    /// PEM of this CA's certificate.
    pub cert_pem: String,
}

/// A certificate with its private key, in PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub serial: Vec<u8>,
}

#[derive(Clone, Debug)]
pub enum San {
    Uri(String),
    Dns(String),
    Ip(IpAddr),
    Email(String),
}

/// What the extended key usage extension says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    Client,
    Server,
    ServerAndClient,
    /// No EKU extension at all.
    Unrestricted,
}

/// How to make a leaf certificate. Start from [`LeafSpec::client`] or
/// [`LeafSpec::server`] and change what the case needs.
#[derive(Clone, Debug)]
pub struct LeafSpec {
    pub common_name: String,
    pub sans: Vec<San>,
    pub usage: Usage,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// `false` leaves out digitalSignature, which TLS client authentication needs.
    pub digital_signature: bool,
    pub is_ca: bool,
}

impl LeafSpec {
    /// A client certificate valid from an hour ago for a day, with one URI SAN.
    pub fn client(uri: &str) -> Self {
        let now = OffsetDateTime::now_utc();
        LeafSpec {
            common_name: uri.rsplit('/').next().unwrap_or(uri).to_string(),
            sans: vec![San::Uri(uri.to_string())],
            usage: Usage::Client,
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(1),
            digital_signature: true,
            is_ca: false,
        }
    }

    /// A server certificate for these DNS names, valid for 90 days.
    pub fn server(hosts: &[&str]) -> Self {
        let now = OffsetDateTime::now_utc();
        LeafSpec {
            common_name: hosts.first().copied().unwrap_or("server").to_string(),
            sans: hosts.iter().map(|h| San::Dns(h.to_string())).collect(),
            usage: Usage::Server,
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(90),
            digital_signature: true,
            is_ca: false,
        }
    }

    pub fn valid(mut self, not_before: OffsetDateTime, not_after: OffsetDateTime) -> Self {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }

    pub fn usage(mut self, usage: Usage) -> Self {
        self.usage = usage;
        self
    }

    pub fn sans(mut self, sans: Vec<San>) -> Self {
        self.sans = sans;
        self
    }
}

fn random_serial() -> Vec<u8> {
    let mut bytes = [0u8; 16];
    openssl::rand::rand_bytes(&mut bytes).expect("the OpenSSL RNG does not fail once initialized");
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // no leading zero byte
    bytes.to_vec()
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "phasegate dev PKI");
    dn.push(DnType::CommonName, common_name);
    dn
}

impl CertificateAuthority {
    /// A self-signed root, valid for ten years.
    pub fn root(common_name: &str) -> Result<Self> {
        let key = KeyPair::generate()?;
        let params = Self::ca_params(common_name, None);
        let cert = params.self_signed(&key)?;
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            params,
            key,
        })
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, common_name: &str) -> Result<Self> {
        self.constrained_intermediate(common_name, &[])
    }

    /// An intermediate CA that may only issue for these DNS names (name constraints).
    pub fn constrained_intermediate(&self, common_name: &str, permitted_dns: &[&str]) -> Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = Self::ca_params(common_name, Some(0));
        if !permitted_dns.is_empty() {
            params.name_constraints = Some(NameConstraints {
                permitted_subtrees: permitted_dns
                    .iter()
                    .map(|d| GeneralSubtree::DnsName(d.to_string()))
                    .collect(),
                excluded_subtrees: Vec::new(),
            });
        }
        let cert = params.signed_by(&key, &self.issuer())?;
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            params,
            key,
        })
    }

    fn ca_params(common_name: &str, path_len: Option<u8>) -> CertificateParams {
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(match path_len {
            Some(n) => BasicConstraints::Constrained(n),
            None => BasicConstraints::Unconstrained,
        });
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        // backdated so tests can verify "as of" a recent past date
        params.not_before = now - Duration::days(30);
        params.not_after = now + Duration::days(3650);
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        params
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }

    pub fn issue(&self, spec: &LeafSpec) -> Result<Issued> {
        let key = KeyPair::generate()?;
        let serial = random_serial();
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&spec.common_name);
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.use_authority_key_identifier_extension = true;
        params.is_ca = if spec.is_ca {
            IsCa::Ca(BasicConstraints::Unconstrained)
        } else {
            IsCa::ExplicitNoCa
        };
        params.key_usages = if spec.digital_signature {
            vec![KeyUsagePurpose::DigitalSignature]
        } else {
            vec![KeyUsagePurpose::KeyEncipherment]
        };
        params.extended_key_usages = match spec.usage {
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::ServerAndClient => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Unrestricted => vec![],
        };
        for san in &spec.sans {
            params.subject_alt_names.push(match san {
                San::Uri(u) => SanType::URI(u.as_str().try_into()?),
                San::Dns(d) => SanType::DnsName(d.as_str().try_into()?),
                San::Ip(ip) => SanType::IpAddress(*ip),
                San::Email(e) => SanType::Rfc822Name(e.as_str().try_into()?),
            });
        }
        let cert = params.signed_by(&key, &self.issuer())?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial,
        })
    }

    /// A CRL listing `revoked`, current from an hour ago until `next_update`.
    pub fn crl(&self, revoked: &[&Issued], next_update: OffsetDateTime) -> Result<String> {
        let now = OffsetDateTime::now_utc();
        self.crl_between(revoked, now - Duration::hours(1), next_update)
    }

    pub fn crl_between(
        &self,
        revoked: &[&Issued],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<String> {
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from_slice(&random_serial()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|c| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&c.serial),
                    revocation_time: this_update,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer())?.pem()
    }
}
