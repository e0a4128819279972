//! Certificate pinning for the agent's connection to its portal.
//!
//! An agent has no CA to trust before it enrolls; its enrollment token carries
//! the SHA-256 of the tenant certificate's SubjectPublicKeyInfo instead (the
//! same idea as `kubeadm join --discovery-token-ca-cert-hash` or Fleet's
//! `--ca-sha256`). This verifier is not a relaxation of TLS verification: it
//! replaces "some CA vouches for this name" with "this exact key", and still
//! checks the certificate's validity period, that it names the host, and the
//! handshake signature. Anything else is refused.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use x509_cert::der::{Decode, Encode};

use crate::{ProtoError, Result};

/// Hex SHA-256 of the certificate's SubjectPublicKeyInfo (DER).
pub fn spki_pin(cert_der: &[u8]) -> Result<String> {
    let cert = x509_cert::Certificate::from_der(cert_der)
        .map_err(|e| ProtoError::malformed("certificate", e))?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| ProtoError::malformed("certificate", e))?;
    Ok(hex::encode(Sha256::digest(spki)))
}

/// Accepts exactly the server key whose SPKI hashes to `pin`.
#[derive(Debug)]
pub struct PinnedServerVerifier {
    pin: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl PinnedServerVerifier {
    pub fn new(pin_hex: &str) -> Result<Self> {
        let pin: [u8; 32] = hex::decode(pin_hex)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| ProtoError::malformed("pin", "expected 64 hex digits"))?;
        Ok(PinnedServerVerifier {
            pin,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }

    /// A client config that trusts only the pinned key.
    pub fn client_config(pin_hex: &str) -> Result<rustls::ClientConfig> {
        let v = Arc::new(Self::new(pin_hex)?);
        let provider = v.provider.clone();
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ProtoError::malformed("tls config", e))?
            .dangerous()
            .with_custom_certificate_verifier(v)
            .with_no_client_auth())
    }
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = x509_cert::Certificate::from_der(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|_| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
            })?;
        let got: [u8; 32] = Sha256::digest(&spki).into();
        if !crate::ct_eq(&got, &self.pin) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        let validity = &cert.tbs_certificate.validity;
        let now = now.as_secs();
        if now < validity.not_before.to_unix_duration().as_secs() {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidYet,
            ));
        }
        if now > validity.not_after.to_unix_duration().as_secs() {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired,
            ));
        }
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_name(&parsed, server_name)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(name: &str) -> (CertificateDer<'static>, String) {
        let kp = rcgen::KeyPair::generate().unwrap();
        let c = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&kp)
            .unwrap();
        let pin = hex::encode(Sha256::digest(kp.public_key_der()));
        (c.der().clone(), pin)
    }

    #[test]
    fn pin_matches_rcgen_spki() {
        let (der, pin) = cert("acme.example");
        assert_eq!(spki_pin(&der).unwrap(), pin);
    }

    #[test]
    fn verifier_accepts_pinned_key_and_name_only() {
        let (der, pin) = cert("acme.example");
        let now = UnixTime::now();
        let name = ServerName::try_from("acme.example").unwrap();
        let v = PinnedServerVerifier::new(&pin).unwrap();
        assert!(v.verify_server_cert(&der, &[], &name, &[], now).is_ok());
        let other = ServerName::try_from("evil.example").unwrap();
        assert!(v.verify_server_cert(&der, &[], &other, &[], now).is_err());
        let (der2, _) = cert("acme.example");
        assert!(v.verify_server_cert(&der2, &[], &name, &[], now).is_err());
    }
}
