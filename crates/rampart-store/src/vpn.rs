//! WireGuard interfaces of devices and their peers (migration 0016). The
//! private and preshared keys arrive wrapped by the portal; everything else
//! of tenant content is sealed by the store (see [`crate::cipher::SEALED`]).

use uuid::Uuid;

use crate::DeviceId;

/// A device's WireGuard interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VpnInterfaceRow {
    pub device_id: DeviceId,
    /// The interface's address with the network's prefix, e.g. `10.8.0.1/24`.
    pub address: String,
    pub listen_port: u16,
    /// The host name or address clients reach the device at.
    pub endpoint: String,
    /// DNS servers written into client profiles.
    pub dns: Vec<String>,
    /// What clients route through the tunnel (`AllowedIPs` of their profile).
    pub client_allowed_ips: Vec<String>,
    /// Base64, as `wg pubkey` prints it.
    pub public_key: String,
    /// The private key, wrapped by the portal.
    pub private_key_wrapped: Vec<u8>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One peer (client) of a device's interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VpnPeerRow {
    pub id: Uuid,
    pub device_id: DeviceId,
    pub name: String,
    /// The peer's host number in the interface's network: unique among the
    /// device's live peers, so no address is handed out twice.
    pub slot: u32,
    /// The peer's tunnel address, e.g. `10.8.0.2/32`.
    pub address: String,
    pub public_key: String,
    /// Wrapped by the portal; dropped (`None`) when the peer is revoked.
    pub private_key_wrapped: Option<Vec<u8>>,
    pub preshared_key_wrapped: Option<Vec<u8>>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}
