//! The agent's only network peer: its tenant's portal, over HTTPS with the
//! tenant certificate's key pinned. Every request after enrollment is
//! signed with the device key.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rampart_proto::actions::{DeviceKeyView, KeyRotateRequest};
use rampart_proto::api::{
    AckRequest, BatchAck, EnrollRequest, EnrollResponse, ErrorBody, PollResponse, RefusalReport,
};
use rampart_proto::keys::SigningKey;
use rampart_proto::pin::PinnedServerVerifier;
use rampart_proto::reqsig::{DeviceAuth, HDR_DEVICE, HDR_NONCE, HDR_SIGNATURE, HDR_TIMESTAMP};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The portal answered with an error body.
    #[error("portal refused the request ({status}, {code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    /// Could not reach the portal, or the connection broke. Retry later.
    #[error("cannot reach the portal: {0}")]
    Transport(String),
    #[error("portal answer is not understood: {0}")]
    Decode(String),
    #[error("{0}")]
    Config(String),
}

impl ClientError {
    /// The portal stopped serving this agent's tenant for now (suspended
    /// or cancelled): nothing is wrong with the request, and the tenant may
    /// come back, so data is kept and sending pauses.
    pub fn is_tenant_paused(&self) -> bool {
        matches!(self, ClientError::Refused { status: 403, code, .. }
            if code == "tenant_suspended" || code == "tenant_cancelled")
    }

    /// Worth retrying as is: transport failures, 5xx, 429 and 408.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Refused { status, .. } => {
                *status >= 500 || *status == 429 || *status == 408
            }
            _ => false,
        }
    }
}

fn transport(e: reqwest::Error) -> ClientError {
    // Include the source chain: "error sending request" alone hides the
    // certificate or connection reason.
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    ClientError::Transport(msg)
}

pub struct PortalClient {
    http: reqwest::Client,
    base: reqwest::Url,
    host: String,
    device: Option<Uuid>,
    /// The device key. Every request holds it for reading until its answer
    /// is in; a key rotation holds it for writing, so no request signed with
    /// the old key is in flight when the portal switches keys, and none is
    /// signed with it afterwards.
    key: tokio::sync::RwLock<Option<Arc<SigningKey>>>,
}

impl PortalClient {
    /// A client that trusts only the certificate key matching `pin`.
    pub fn new(
        portal_url: &str,
        pin: &str,
        resolve: Option<SocketAddr>,
    ) -> Result<Self, ClientError> {
        let base = reqwest::Url::parse(portal_url)
            .map_err(|e| ClientError::Config(format!("portal url {portal_url}: {e}")))?;
        if base.scheme() != "https" {
            return Err(ClientError::Config("portal url must use https".into()));
        }
        let host = base
            .host_str()
            .ok_or_else(|| ClientError::Config("portal url has no host".into()))?
            .to_ascii_lowercase();
        let tls = PinnedServerVerifier::client_config(pin)
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let mut b = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("rampart-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(addr) = resolve {
            b = b.resolve(&host, addr);
        }
        let http = b
            .build()
            .map_err(|e| ClientError::Config(format!("http client: {e}")))?;
        Ok(PortalClient {
            http,
            base,
            host,
            device: None,
            key: tokio::sync::RwLock::new(None),
        })
    }

    /// Signs every later request as this device.
    pub fn with_device(mut self, device: Uuid, key: Arc<SigningKey>) -> Self {
        self.device = Some(device);
        self.key = tokio::sync::RwLock::new(Some(key));
        self
    }

    /// Waits for the requests in flight to finish and holds off new ones
    /// while the guard lives; writing through it changes the key later
    /// requests are signed with (see [`crate::actions`]).
    pub async fn lock_key(&self) -> tokio::sync::RwLockWriteGuard<'_, Option<Arc<SigningKey>>> {
        self.key.write().await
    }

    fn url(&self, path_and_query: &str) -> Result<reqwest::Url, ClientError> {
        self.base
            .join(path_and_query)
            .map_err(|e| ClientError::Config(e.to_string()))
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Vec<u8>,
        content_type: &str,
        timeout: Duration,
    ) -> Result<reqwest::Response, ClientError> {
        let key = self.key.read().await;
        self.send_as(
            key.as_deref(),
            method,
            path_and_query,
            body,
            content_type,
            timeout,
        )
        .await
    }

    /// [`Self::send`] signed with `signer` (none: unsigned), for the key
    /// rotation, which holds the key lock itself.
    async fn send_as(
        &self,
        signer: Option<&SigningKey>,
        method: reqwest::Method,
        path_and_query: &str,
        body: Vec<u8>,
        content_type: &str,
        timeout: Duration,
    ) -> Result<reqwest::Response, ClientError> {
        let url = self.url(path_and_query)?;
        let mut req = self
            .http
            .request(method.clone(), url)
            .timeout(timeout)
            .header("content-type", content_type);
        if let (Some(device), Some(key)) = (self.device, signer) {
            let now = time_now();
            let auth = DeviceAuth::sign(
                key,
                device,
                method.as_str(),
                &self.host,
                path_and_query,
                now,
                &body,
            );
            req = req
                .header(HDR_DEVICE, auth.device.to_string())
                .header(HDR_TIMESTAMP, auth.timestamp.to_string())
                .header(HDR_NONCE, auth.nonce)
                .header(HDR_SIGNATURE, auth.signature);
        }
        let resp = req.body(body).send().await.map_err(transport)?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => (b.error.code, b.error.message),
            Err(_) => ("unknown".into(), text.chars().take(200).collect()),
        };
        Err(ClientError::Refused {
            status,
            code,
            message,
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(
        resp: reqwest::Response,
    ) -> Result<T, ClientError> {
        let bytes = resp.bytes().await.map_err(transport)?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub async fn enroll(&self, req: &EnrollRequest) -> Result<EnrollResponse, ClientError> {
        let body = serde_json::to_vec(req).map_err(|e| ClientError::Decode(e.to_string()))?;
        let resp = self
            .send(
                reqwest::Method::POST,
                "/api/v1/enroll",
                body,
                "application/json",
                Duration::from_secs(30),
            )
            .await?;
        Self::json(resp).await
    }

    /// Long poll: returns when instructions are pending or after `wait`.
    pub async fn poll(&self, after_seq: u64, wait: Duration) -> Result<PollResponse, ClientError> {
        let path = format!(
            "/api/v1/device/poll?after_seq={after_seq}&wait_secs={}",
            wait.as_secs()
        );
        let resp = self
            .send(
                reqwest::Method::GET,
                &path,
                Vec::new(),
                "application/json",
                wait + Duration::from_secs(20),
            )
            .await?;
        Self::json(resp).await
    }

    pub async fn ack(&self, seq: u64, ack: &AckRequest) -> Result<(), ClientError> {
        let body = serde_json::to_vec(ack).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.send(
            reqwest::Method::POST,
            &format!("/api/v1/device/instructions/{seq}/ack"),
            body,
            "application/json",
            Duration::from_secs(30),
        )
        .await?;
        Ok(())
    }

    pub async fn report_refusal(&self, r: &RefusalReport) -> Result<(), ClientError> {
        let body = serde_json::to_vec(r).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.send(
            reqwest::Method::POST,
            "/api/v1/device/refusals",
            body,
            "application/json",
            Duration::from_secs(30),
        )
        .await?;
        Ok(())
    }

    /// `GET /api/v1/device/pseudonym-key`: the tenant's key for address
    /// pseudonyms, kept out of instructions because the portal stores those.
    pub async fn pseudonym_key(
        &self,
    ) -> Result<rampart_proto::controls::PseudonymKey, ClientError> {
        let resp = self
            .send(
                reqwest::Method::GET,
                "/api/v1/device/pseudonym-key",
                Vec::new(),
                "application/json",
                Duration::from_secs(30),
            )
            .await?;
        let key: rampart_proto::controls::PseudonymKey = Self::json(resp).await?;
        key.key_bytes()
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        Ok(key)
    }

    /// `POST /api/v1/device/key`, signed with `old`: the portal replaces
    /// `old` with the request's new key and answers the key it now holds.
    pub async fn rotate_key_as(
        &self,
        old: &SigningKey,
        req: &KeyRotateRequest,
    ) -> Result<DeviceKeyView, ClientError> {
        let body = serde_json::to_vec(req).map_err(|e| ClientError::Decode(e.to_string()))?;
        let resp = self
            .send_as(
                Some(old),
                reqwest::Method::POST,
                "/api/v1/device/key",
                body,
                "application/json",
                Duration::from_secs(30),
            )
            .await?;
        Self::json(resp).await
    }

    /// `GET /api/v1/device/key` signed with `signer`: succeeds only if the
    /// portal holds that key for this device.
    pub async fn device_key_as(&self, signer: &SigningKey) -> Result<DeviceKeyView, ClientError> {
        let resp = self
            .send_as(
                Some(signer),
                reqwest::Method::GET,
                "/api/v1/device/key",
                Vec::new(),
                "application/json",
                Duration::from_secs(30),
            )
            .await?;
        Self::json(resp).await
    }

    /// `GET /api/v1/device/vpn-keys`: the WireGuard private key and the
    /// peers' preshared keys, kept out of configurations because the portal
    /// stores those. Held in memory only.
    pub async fn vpn_keys(&self) -> Result<rampart_proto::wg::WgSecrets, ClientError> {
        let resp = self
            .send(
                reqwest::Method::GET,
                "/api/v1/device/vpn-keys",
                Vec::new(),
                "application/json",
                Duration::from_secs(30),
            )
            .await?;
        Self::json(resp).await
    }

    pub async fn upload(&self, frame: Vec<u8>) -> Result<BatchAck, ClientError> {
        let resp = self
            .send(
                reqwest::Method::POST,
                "/api/v1/device/batches",
                frame,
                "application/octet-stream",
                Duration::from_secs(120),
            )
            .await?;
        Self::json(resp).await
    }
}

pub fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
