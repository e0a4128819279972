//! WireGuard interface configuration as it travels to a device inside an
//! [`crate::config::EffectiveConfig`]. The interface's private key is not
//! part of it (configurations are stored and shown to tenant admins): the
//! device fetches it with a signed request.

use serde::{Deserialize, Serialize};

/// A device's WireGuard interface and the peers it accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WgInterface {
    /// Interface addresses with prefix, e.g. `10.8.0.1/24`.
    pub address: Vec<String>,
    pub listen_port: Option<u16>,
    /// The public key of the private key the device fetches (base64).
    pub public_key: String,
    pub peers: Vec<WgPeer>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WgPeer {
    pub public_key: String,
    pub allowed_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_keepalive: Option<u16>,
}
