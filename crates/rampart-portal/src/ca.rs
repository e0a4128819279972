//! The portal's local certificate authority.
//!
//! It issues each tenant's certificate (for the tenant's domain) and the admin
//! API's certificate. Its key is kept wrapped by the master key in the store;
//! its certificate is written to `<data_dir>/ca.pem` for tools that should
//! trust the portal (curl, browsers, schemathesis). Agents do not need it:
//! they pin the tenant certificate's key instead.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};

use crate::crypto::MasterKey;
use crate::service::ServiceError;

const META_KEY: &str = "local_ca";
const AAD: &[u8] = b"rampart/local-ca/v1";

/// Leaf certificates live a little over a year, the CA ten years.
const LEAF_DAYS: i64 = 397;
const CA_DAYS: i64 = 3650;

#[derive(Serialize, Deserialize)]
struct StoredCa {
    cert_pem: String,
    key_wrapped: Vec<u8>,
}

pub struct LocalCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A freshly issued leaf certificate.
pub struct Issued {
    /// Leaf then CA, PEM.
    pub chain_pem: String,
    /// PKCS#8 DER of the leaf's private key. Wrap it before storing.
    pub key_der: zeroize::Zeroizing<Vec<u8>>,
}

fn tls_err(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Tls(e.to_string())
}

impl LocalCa {
    /// Loads the CA from the store, creating it on first start. Replicas that
    /// race here agree on whichever CA was stored first.
    pub async fn load_or_create(
        store: &dyn rampart_store::Store,
        master: &dyn MasterKey,
    ) -> Result<Self, ServiceError> {
        let stored = match store.get_meta(META_KEY).await? {
            Some(v) => v,
            None => {
                let key = KeyPair::generate().map_err(tls_err)?;
                let mut p = CertificateParams::default();
                p.distinguished_name
                    .push(DnType::CommonName, "Rampart local CA");
                p.distinguished_name
                    .push(DnType::OrganizationName, "Rampart");
                p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
                p.key_usages = vec![
                    KeyUsagePurpose::KeyCertSign,
                    KeyUsagePurpose::CrlSign,
                    KeyUsagePurpose::DigitalSignature,
                ];
                let now = time::OffsetDateTime::now_utc();
                p.not_before = now - time::Duration::hours(1);
                p.not_after = now + time::Duration::days(CA_DAYS);
                let cert = p.self_signed(&key).map_err(tls_err)?;
                let s = StoredCa {
                    cert_pem: cert.pem(),
                    key_wrapped: master.wrap(&key.serialize_der(), AAD),
                };
                let bytes = serde_json::to_vec(&s).map_err(tls_err)?;
                store.init_meta(META_KEY, &bytes).await?
            }
        };
        let s: StoredCa = serde_json::from_slice(&stored).map_err(tls_err)?;
        let key_der = master.unwrap(&s.key_wrapped, AAD)?;
        let key = KeyPair::try_from(key_der.as_slice()).map_err(tls_err)?;
        let params = CertificateParams::from_ca_cert_pem(&s.cert_pem).map_err(tls_err)?;
        // Re-signing the stored parameters gives an issuer object with the
        // same name and key; leaves it signs chain to the stored certificate.
        let cert = params.self_signed(&key).map_err(tls_err)?;
        Ok(LocalCa { cert, key })
    }

    /// Re-wraps the stored CA key under the current master key (a master
    /// key rotation); the stored value is replaced only if unchanged since
    /// it was read.
    pub async fn rewrap(
        store: &dyn rampart_store::Store,
        master: &dyn MasterKey,
    ) -> Result<(), ServiceError> {
        let Some(stored) = store.get_meta(META_KEY).await? else {
            return Ok(());
        };
        let s: StoredCa = serde_json::from_slice(&stored).map_err(tls_err)?;
        let key_der = master.unwrap(&s.key_wrapped, AAD)?;
        let new = StoredCa {
            cert_pem: s.cert_pem,
            key_wrapped: master.wrap(&key_der, AAD),
        };
        let bytes = serde_json::to_vec(&new).map_err(tls_err)?;
        if !store.replace_meta(META_KEY, &stored, &bytes).await? {
            return Err(ServiceError::Conflict(
                "the CA key was re-wrapped by another process meanwhile: run again".into(),
            ));
        }
        Ok(())
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// Issues a server certificate for `names` (DNS names or IP
    /// addresses); the first is the subject's common name.
    pub fn issue(&self, names: &[&str]) -> Result<Issued, ServiceError> {
        let key = KeyPair::generate().map_err(tls_err)?;
        let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut p = CertificateParams::new(sans).map_err(tls_err)?;
        p.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("rampart"),
        );
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(LEAF_DAYS);
        let leaf = p.signed_by(&key, &self.cert, &self.key).map_err(tls_err)?;
        Ok(Issued {
            chain_pem: format!("{}{}", leaf.pem(), self.cert.pem()),
            key_der: zeroize::Zeroizing::new(key.serialize_der()),
        })
    }
}
