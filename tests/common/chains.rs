//! Certificate chains of every shape a PKI engineer meets, built with OpenSSL itself so that
//! each extension, criticality flag, key type and signature hash can be set exactly —
//! including the ones rcgen will not produce (no key identifiers, weak keys, SHA-1, DSA,
//! malformed extensions).
#![allow(deprecated)] // X509Extension::new: the config-string form is what can say anything

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::dsa::Dsa;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509Builder, X509Extension, X509NameBuilder, X509};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    P256,
    P192,
    Rsa(u32),
    Dsa2048,
}

impl Key {
    pub fn generate(self) -> PKey<Private> {
        match self {
            Key::P256 | Key::P192 => {
                let nid = if self == Key::P256 {
                    Nid::X9_62_PRIME256V1
                } else {
                    Nid::X9_62_PRIME192V1
                };
                let group = EcGroup::from_curve_name(nid).unwrap();
                PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
            }
            Key::Rsa(bits) => PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap(),
            Key::Dsa2048 => PKey::from_dsa(Dsa::generate(2048).unwrap()).unwrap(),
        }
    }
}

/// How to make one certificate. Start from [`Spec::root`], [`Spec::intermediate`] or
/// [`Spec::leaf`] and change what the case needs.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Common name; `None` leaves the subject empty.
    pub cn: Option<String>,
    pub key: Key,
    /// basicConstraints value (`critical,CA:TRUE`…); `None` leaves the extension out.
    pub basic_constraints: Option<String>,
    pub key_usage: Option<String>,
    pub extended_key_usage: Option<String>,
    /// subjectAltName value (`URI:…,DNS:…`, optionally `critical,` first).
    pub san: Option<String>,
    pub subject_key_id: bool,
    pub authority_key_id: bool,
    pub digest: fn() -> MessageDigest,
    /// Further extensions as (name or OID, OpenSSL config value), e.g. `("1.2.3.4", "critical,DER:05:00")`.
    pub extra: Vec<(String, String)>,
    pub days_valid_from_now: (i64, i64),
}

impl Spec {
    fn base(cn: &str) -> Spec {
        Spec {
            cn: Some(cn.to_string()),
            key: Key::P256,
            basic_constraints: None,
            key_usage: None,
            extended_key_usage: None,
            san: None,
            subject_key_id: true,
            authority_key_id: true,
            digest: MessageDigest::sha256,
            extra: Vec::new(),
            days_valid_from_now: (-1, 365),
        }
    }

    /// A self-signed root as RFC 5280 wants it.
    pub fn root(cn: &str) -> Spec {
        Spec {
            basic_constraints: Some("critical,CA:TRUE".into()),
            key_usage: Some("critical,keyCertSign,cRLSign".into()),
            authority_key_id: false,
            ..Spec::base(cn)
        }
    }

    pub fn intermediate(cn: &str) -> Spec {
        Spec {
            basic_constraints: Some("critical,CA:TRUE".into()),
            key_usage: Some("critical,keyCertSign,cRLSign".into()),
            ..Spec::base(cn)
        }
    }

    /// A client certificate with one URI SAN.
    pub fn leaf(uri: &str) -> Spec {
        Spec {
            basic_constraints: Some("critical,CA:FALSE".into()),
            key_usage: Some("critical,digitalSignature".into()),
            extended_key_usage: Some("clientAuth".into()),
            san: Some(format!("URI:{uri}")),
            ..Spec::base(uri.rsplit('/').next().unwrap_or("leaf"))
        }
    }

    pub fn with(mut self, edit: impl FnOnce(&mut Spec)) -> Spec {
        edit(&mut self);
        self
    }
}

/// A certificate and its key.
#[derive(Clone)]
pub struct Made {
    pub cert: X509,
    pub key: PKey<Private>,
}

impl Made {
    pub fn pem(&self) -> String {
        String::from_utf8(self.cert.to_pem().unwrap()).unwrap()
    }

    pub fn key_pem(&self) -> String {
        String::from_utf8(self.key.private_key_to_pem_pkcs8().unwrap()).unwrap()
    }
}

/// Issues `spec`, signed by `issuer` (`None`: self-signed).
pub fn make(spec: &Spec, issuer: Option<&Made>) -> Made {
    let key = spec.key.generate();
    let mut name = X509NameBuilder::new().unwrap();
    if let Some(cn) = &spec.cn {
        name.append_entry_by_text("O", "phasegate chain matrix").unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
    }
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(127, openssl::bn::MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&Asn1Integer::from_bn(&serial).unwrap()).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.map_or(&*name, |i| i.cert.subject_name()))
        .unwrap();
    b.set_pubkey(&key).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (from, to) = spec.days_valid_from_now;
    b.set_not_before(&Asn1Time::from_unix(now + from * 86_400).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(now + to * 86_400).unwrap())
        .unwrap();
    let mut exts: Vec<(String, String)> = Vec::new();
    let mut push = |n: &str, v: &Option<String>| {
        if let Some(v) = v {
            exts.push((n.to_string(), v.clone()));
        }
    };
    push("basicConstraints", &spec.basic_constraints);
    push("keyUsage", &spec.key_usage);
    push("extendedKeyUsage", &spec.extended_key_usage);
    push("subjectAltName", &spec.san);
    if spec.subject_key_id {
        exts.push(("subjectKeyIdentifier".into(), "hash".into()));
    }
    if spec.authority_key_id && issuer.is_some() {
        exts.push(("authorityKeyIdentifier".into(), "keyid".into()));
    }
    exts.extend(spec.extra.iter().cloned());
    for (n, v) in &exts {
        let ext = {
            let ctx = b.x509v3_context(issuer.map(|i| &*i.cert), None);
            X509Extension::new(None, Some(&ctx), n, v).unwrap_or_else(|e| panic!("extension {n}={v}: {e}"))
        };
        b.append_extension(ext).unwrap();
    }
    let signer = issuer.map_or(&key, |i| &i.key);
    b.sign(signer, (spec.digest)()).unwrap();
    Made { cert: b.build(), key }
}

/// A root, the intermediates under it (in order), and a leaf.
pub struct Chain {
    pub root: Made,
    pub intermediates: Vec<Made>,
    pub leaf: Made,
}

impl Chain {
    /// Builds root → intermediates… → leaf.
    pub fn build(root: &Spec, intermediates: &[Spec], leaf: &Spec) -> Chain {
        let root = make(root, None);
        let mut ints: Vec<Made> = Vec::new();
        for spec in intermediates {
            let made = make(spec, Some(ints.last().unwrap_or(&root)));
            ints.push(made);
        }
        let leaf = make(leaf, Some(ints.last().unwrap_or(&root)));
        Chain {
            root,
            intermediates: ints,
            leaf,
        }
    }

    /// The leaf followed by its intermediates, nearest first: what a client sends.
    pub fn presented_pem(&self) -> String {
        let mut pem = self.leaf.pem();
        for i in self.intermediates.iter().rev() {
            pem.push_str(&i.pem());
        }
        pem
    }

    pub fn intermediates_pem(&self) -> String {
        self.intermediates.iter().rev().map(Made::pem).collect()
    }
}

/// A CRL signed by `ca`, listing `revoked`, current until `next_update_days` from now
/// (negative: already stale); `number: false` leaves out the CRL number extension.
pub fn crl(ca: &Made, revoked: &[&Made], number: bool, next_update_days: i64) -> openssl::x509::X509Crl {
    use openssl::x509::extension::AuthorityKeyIdentifier;
    use openssl::x509::{CrlNumber, X509CrlBuilder, X509RevokedBuilder};
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut b = X509CrlBuilder::new().unwrap();
    b.set_issuer_name(ca.cert.subject_name()).unwrap();
    b.set_last_update(&Asn1Time::from_unix(now - 3600 + next_update_days.min(0) * 86_400).unwrap())
        .unwrap();
    b.set_next_update(&Asn1Time::from_unix(now + next_update_days * 86_400).unwrap())
        .unwrap();
    let dummy = X509Builder::new().unwrap();
    let ctx = dummy.x509v3_context(Some(&ca.cert), None);
    b.append_extension(AuthorityKeyIdentifier::new().keyid(true).build(&ctx).unwrap())
        .unwrap();
    if number {
        let n = BigNum::from_u32(7).unwrap();
        b.append_extension(CrlNumber::new(n).unwrap().build().unwrap()).unwrap();
    }
    for cert in revoked {
        let mut r = X509RevokedBuilder::new().unwrap();
        r.set_serial_number(cert.cert.serial_number()).unwrap();
        r.set_revocation_date(&Asn1Time::from_unix(now - 7200).unwrap())
            .unwrap();
        b.add_revoked(r.build()).unwrap();
    }
    b.sign(&ca.key, MessageDigest::sha256()).unwrap();
    b.build().unwrap()
}

pub fn crl_pem(crl: &openssl::x509::X509Crl) -> String {
    String::from_utf8(crl.to_pem().unwrap()).unwrap()
}

/// A CRL without a CRL number, as `openssl ca -gencrl` writes one when no `crlnumber` file
/// is configured (OpenSSL's own builder insists on a number).
pub fn numberless_crl_pem(ca: &Made, dir: &std::path::Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("ca.key"), ca.key_pem()).unwrap();
    std::fs::write(dir.join("index.txt"), "").unwrap();
    let config = format!(
        "[ca]\ndefault_ca = d\n[d]\ndatabase = {}\ndefault_md = sha256\ndefault_crl_days = 7\ncrl_extensions = ext\n[ext]\nauthorityKeyIdentifier = keyid:always\n",
        dir.join("index.txt").display()
    );
    std::fs::write(dir.join("ca.cnf"), config).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["ca", "-gencrl", "-batch", "-config"])
        .arg(dir.join("ca.cnf"))
        .arg("-keyfile")
        .arg(dir.join("ca.key"))
        .arg("-cert")
        .arg(dir.join("ca.pem"))
        .output()
        .expect("the openssl CLI");
    assert!(
        out.status.success(),
        "openssl ca: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
