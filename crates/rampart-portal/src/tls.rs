//! HTTPS serving with one certificate per tenant domain, chosen by SNI.
//!
//! The accept loop records the SNI name of each connection and hands it to
//! the router as [`ConnInfo`], so the tenant extractor can insist that the
//! `Host` header names the same tenant the TLS handshake did.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::service::ServiceError;

/// Facts about the connection a request arrived on.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The TLS server name the client asked for, lowercased.
    pub sni: Option<String>,
    pub peer: SocketAddr,
}

/// Builds a rustls signing key from a PEM chain and a PKCS#8 DER key.
pub fn certified_key(chain_pem: &str, key_der: &[u8]) -> Result<CertifiedKey, ServiceError> {
    let certs = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServiceError::Tls(format!("certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(ServiceError::Tls("certificate chain is empty".into()));
    }
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der.to_vec()));
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| ServiceError::Tls(format!("private key: {e}")))?;
    Ok(CertifiedKey::new(certs, signer))
}

/// Reads operator-provided certificate and key files (PEM, any key format).
pub fn certified_key_from_files(
    cert_file: &str,
    key_file: &str,
) -> Result<CertifiedKey, ServiceError> {
    let chain = std::fs::read_to_string(cert_file)
        .map_err(|e| ServiceError::Tls(format!("cannot read {cert_file}: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServiceError::Tls(format!("{cert_file}: {e}")))?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| ServiceError::Tls(format!("{key_file}: {e}")))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| ServiceError::Tls(format!("{key_file}: {e}")))?;
    if certs.is_empty() {
        return Err(ServiceError::Tls(format!(
            "{cert_file} holds no certificate"
        )));
    }
    Ok(CertifiedKey::new(certs, signer))
}

/// Picks the certificate for each handshake by SNI.
#[derive(Debug)]
pub struct CertStore {
    admin_domain: String,
    admin: Arc<CertifiedKey>,
    tenants: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl CertStore {
    pub fn new(admin_domain: &str, admin: CertifiedKey) -> Self {
        CertStore {
            admin_domain: admin_domain.to_ascii_lowercase(),
            admin: Arc::new(admin),
            tenants: RwLock::default(),
        }
    }

    pub fn set_tenants(&self, certs: HashMap<String, Arc<CertifiedKey>>) {
        if let Ok(mut m) = self.tenants.write() {
            *m = certs;
        }
    }

    pub fn get(&self, domain: &str) -> Option<Arc<CertifiedKey>> {
        self.tenants.read().ok()?.get(domain).cloned()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match hello.server_name() {
            // Clients connecting by IP send no SNI: they get the admin
            // certificate and are routed by their Host header.
            None => Some(self.admin.clone()),
            Some(name) => {
                let name = name.to_ascii_lowercase();
                if name == self.admin_domain {
                    return Some(self.admin.clone());
                }
                // An unknown name gets no certificate: the handshake fails
                // rather than presenting some other tenant's identity.
                self.tenants.read().ok()?.get(&name).cloned()
            }
        }
    }
}

pub fn server_config(certs: Arc<CertStore>) -> Arc<rustls::ServerConfig> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_no_client_auth()
    .with_cert_resolver(certs);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// Accepts TLS connections until `shutdown` resolves, serving `app` on each.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off, don't spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "tls handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "tls handshake timed out");
                        return;
                    }
                };
            let info = ConnInfo {
                sni: stream
                    .get_ref()
                    .1
                    .server_name()
                    .map(|s| s.to_ascii_lowercase()),
                peer,
            };
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(info.clone());
                    app.clone().oneshot(req.map(axum::body::Body::new))
                },
            );
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30));
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
