//! WireGuard VPN of a tenant's devices: one interface per device, peers
//! (clients) with addresses from the interface's network, client profiles
//! as wg-quick `.conf` text and as a QR code PNG.
//!
//! The portal generates every key pair (X25519, as `wg genkey`). Private
//! and preshared keys are wrapped under the tenant's secrets key before they
//! reach the store (so they are shredded with the tenant's KEK), and leave
//! the portal only in two ways: in a client profile an admin downloads, and
//! to the device itself through its signed `GET /api/v1/device/vpn-keys`.
//! The device's interface as its configuration carries it
//! ([`device_interface`]) has public keys only: instructions are stored and
//! shown to tenant admins.

use std::net::{IpAddr, Ipv4Addr};

use rampart_proto::wg::{self, Cidr, WgInterface, WgPeer, WgPeerSecret, WgSecrets};
use rampart_store::*;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::audit::Actor;
use crate::service::{now, Portal, Result, ServiceError};

/// wg-quick's usual port, when none is given.
pub const DEFAULT_LISTEN_PORT: u16 = 51820;
/// Keepalive written into client profiles, so a client behind NAT stays
/// reachable (the interval WireGuard's documentation suggests).
pub const CLIENT_KEEPALIVE_SECS: u16 = 25;
/// Rows a device may accumulate, revoked peers included.
pub const MAX_PEER_ROWS: usize = 10 * wg::MAX_PEERS;
const MAX_DNS: usize = 4;
const MAX_NAME: usize = 64;
/// Attempts at a free address when concurrent creations race for one.
const SLOT_ATTEMPTS: usize = 3;

/// What an admin sets on a device's interface.
#[derive(Clone, Debug)]
pub struct InterfaceSpec {
    /// The device's tunnel address with the network's prefix (IPv4).
    pub address: String,
    pub listen_port: Option<u16>,
    /// Host name or address clients reach the device at.
    pub endpoint: String,
    pub dns: Vec<String>,
    /// What clients route through the tunnel; the network when `None`.
    pub client_allowed_ips: Option<Vec<String>>,
}

fn invalid(m: impl Into<String>) -> ServiceError {
    ServiceError::Invalid(m.into())
}

fn device_purpose(device: DeviceId) -> String {
    format!("vpn/{}/interface", device.0)
}

fn peer_purpose(device: DeviceId, peer: Uuid, what: &str) -> String {
    format!("vpn/{}/peer/{peer}/{what}", device.0)
}

/// The interface address, checked: IPv4, a network of /8 to /30, and
/// neither the network's nor its broadcast address.
fn interface_address(s: &str) -> Result<(Ipv4Addr, u8)> {
    let c = Cidr::parse(s).map_err(|e| invalid(format!("address: {e}")))?;
    let IpAddr::V4(a) = c.addr else {
        return Err(invalid(
            "address must be an IPv4 address with prefix, e.g. 10.8.0.1/24",
        ));
    };
    if !(8..=30).contains(&c.prefix) {
        return Err(invalid(
            "address needs a prefix length of 8 to 30, so peers have addresses, e.g. 10.8.0.1/24",
        ));
    }
    let host = u32::from(a) & host_mask(c.prefix);
    if host == 0 || host == host_mask(c.prefix) {
        return Err(invalid(format!(
            "address {s} is the network's own or broadcast address: use a host address such as {}",
            Ipv4Addr::from(u32::from(a) & !host_mask(c.prefix) | 1)
        )));
    }
    Ok((a, c.prefix))
}

fn host_mask(prefix: u8) -> u32 {
    u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0)
}

/// A DNS name (RFC 1123 labels) or an IP address.
fn check_endpoint(s: &str) -> Result<String> {
    let s = s.trim().to_ascii_lowercase();
    if s.parse::<IpAddr>().is_ok() {
        return Ok(s);
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if s.is_empty() || s.len() > 253 || !s.split('.').all(label_ok) {
        return Err(invalid(
            "endpoint must be the host name or IP address clients reach the device at, without a port, e.g. vpn.example.com",
        ));
    }
    Ok(s)
}

/// Peer names end up in file names: letters, digits, `.`, `_` and `-`.
pub fn check_peer_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "name must be 1 to {MAX_NAME} letters, digits, '.', '_' or '-', starting with a letter or digit"
        )))
    }
}

/// Creates the device's interface (generating its key pair) or changes
/// its settings (keeping the key pair). Moving to another network is
/// refused while live peers have addresses in the current one.
pub async fn put_interface(
    p: &Portal,
    actor: &Actor,
    tenant: TenantId,
    device: DeviceId,
    spec: InterfaceSpec,
) -> Result<(VpnInterfaceRow, bool)> {
    let (addr, prefix) = interface_address(&spec.address)?;
    let network = Cidr {
        addr: IpAddr::V4(addr),
        prefix,
    }
    .network();
    let listen_port = spec.listen_port.unwrap_or(DEFAULT_LISTEN_PORT);
    if listen_port == 0 {
        return Err(invalid(format!(
            "listen_port must be 1 to 65535 (or left out for {DEFAULT_LISTEN_PORT})"
        )));
    }
    let endpoint = check_endpoint(&spec.endpoint)?;
    if spec.dns.len() > MAX_DNS {
        return Err(invalid(format!("dns lists at most {MAX_DNS} servers")));
    }
    for d in &spec.dns {
        d.parse::<IpAddr>()
            .map_err(|_| invalid(format!("dns: {d:.64} is not an IP address")))?;
    }
    let client_allowed_ips = match spec.client_allowed_ips {
        None => vec![network.to_string()],
        Some(v) => {
            if v.is_empty() || v.len() > wg::MAX_ALLOWED_IPS {
                return Err(invalid(format!(
                    "client_allowed_ips must list 1 to {} networks",
                    wg::MAX_ALLOWED_IPS
                )));
            }
            v.iter()
                .map(|c| {
                    Cidr::parse(c)
                        .map(|c| c.network().to_string())
                        .map_err(|e| invalid(format!("client_allowed_ips: {e}")))
                })
                .collect::<Result<Vec<_>>>()?
        }
    };
    if p.store.get_device(tenant, device).await?.is_none() {
        return Err(ServiceError::NotFound(format!("device {}", device.0)));
    }
    let at = now();
    let address = format!("{addr}/{prefix}");
    let existing = p.store.get_vpn_interface(tenant, device).await?;
    let created = existing.is_none();
    let row = match existing {
        Some(old) => {
            let peers = p.store.list_vpn_peers(tenant, device).await?;
            let live: Vec<&VpnPeerRow> = peers.iter().filter(|x| x.revoked_at.is_none()).collect();
            let old_net = Cidr::parse(&old.address).map(|c| c.network()).ok();
            if old_net != Some(network) && !live.is_empty() {
                return Err(ServiceError::Conflict(format!(
                    "the device's live vpn peers have addresses in {}: revoke them before moving the interface to {network}",
                    old_net.map(|n| n.to_string()).unwrap_or_default()
                )));
            }
            let own_slot = u32::from(addr) & host_mask(prefix);
            if live.iter().any(|x| x.slot == own_slot) {
                return Err(ServiceError::Conflict(format!(
                    "{addr} is a live peer's address: choose another address for the device"
                )));
            }
            VpnInterfaceRow {
                address,
                listen_port,
                endpoint,
                dns: spec.dns,
                client_allowed_ips,
                updated_at: at,
                ..old
            }
        }
        None => {
            let sk = wg::generate_private_key();
            let secrets = p.secrets(tenant).await?;
            VpnInterfaceRow {
                device_id: device,
                address,
                listen_port,
                endpoint,
                dns: spec.dns,
                client_allowed_ips,
                public_key: wg::key_b64(&wg::public_key(&sk)),
                private_key_wrapped: secrets.wrap_secret(
                    tenant,
                    &device_purpose(device),
                    sk.as_ref(),
                ),
                created_at: at,
                updated_at: at,
            }
        }
    };
    p.store.put_vpn_interface(tenant, &row).await?;
    crate::audit::record(
        p,
        Some(tenant),
        actor,
        "vpn.interface.put",
        &device.0.to_string(),
        serde_json::json!({"device": device.0}),
    )
    .await?;
    rollout(p, actor, tenant, device).await;
    Ok((row, created))
}

/// The lowest host number of the interface's network that neither the
/// interface nor a live peer holds.
fn free_slot(iface: &VpnInterfaceRow, live: &[&VpnPeerRow]) -> Result<(u32, String)> {
    let (addr, prefix) = interface_address(&iface.address)?;
    let base = u32::from(addr) & !host_mask(prefix);
    let own = u32::from(addr) & host_mask(prefix);
    let last = host_mask(prefix) - 1;
    let taken: std::collections::HashSet<u32> = live.iter().map(|p| p.slot).collect();
    (1..=last)
        .find(|s| *s != own && !taken.contains(s))
        .map(|s| (s, format!("{}/32", Ipv4Addr::from(base | s))))
        .ok_or_else(|| {
            ServiceError::Conflict(format!(
                "the vpn network of {} has no free address: revoke a peer or give the interface a larger network",
                iface.address
            ))
        })
}

/// Adds a peer with a new key pair, the lowest free address and, when
/// asked, a preshared key.
pub async fn create_peer(
    p: &Portal,
    actor: &Actor,
    tenant: TenantId,
    device: DeviceId,
    name: &str,
    preshared_key: bool,
) -> Result<VpnPeerRow> {
    check_peer_name(name)?;
    let iface = p
        .store
        .get_vpn_interface(tenant, device)
        .await?
        .ok_or_else(|| ServiceError::NotFound(format!("vpn interface of device {}", device.0)))?;
    let secrets = p.secrets(tenant).await?;
    let mut attempt = 0;
    let row = loop {
        attempt += 1;
        let peers = p.store.list_vpn_peers(tenant, device).await?;
        let live: Vec<&VpnPeerRow> = peers.iter().filter(|x| x.revoked_at.is_none()).collect();
        if live.len() >= wg::MAX_PEERS {
            return Err(invalid(format!(
                "this device has {} live vpn peers, the limit: revoke unused ones first",
                wg::MAX_PEERS
            )));
        }
        if peers.len() >= MAX_PEER_ROWS {
            return Err(invalid(format!(
                "this device has had {MAX_PEER_ROWS} vpn peers, the limit: give new clients their own device interface"
            )));
        }
        let (slot, address) = free_slot(&iface, &live)?;
        let id = Uuid::new_v4();
        let sk = wg::generate_private_key();
        let psk = preshared_key.then(wg::generate_preshared_key);
        let row = VpnPeerRow {
            id,
            device_id: device,
            name: name.into(),
            slot,
            address,
            public_key: wg::key_b64(&wg::public_key(&sk)),
            private_key_wrapped: Some(secrets.wrap_secret(
                tenant,
                &peer_purpose(device, id, "private"),
                sk.as_ref(),
            )),
            preshared_key_wrapped: psk
                .map(|k| secrets.wrap_secret(tenant, &peer_purpose(device, id, "psk"), k.as_ref())),
            created_at: now(),
            revoked_at: None,
        };
        match p.store.create_vpn_peer(tenant, &row).await {
            Ok(()) => break row,
            Err(StoreError::Raced(_)) if attempt < SLOT_ATTEMPTS => continue,
            Err(e) => return Err(e.into()),
        }
    };
    crate::audit::record(
        p,
        Some(tenant),
        actor,
        "vpn.peer.create",
        &row.id.to_string(),
        serde_json::json!({"device": device.0, "peer": row.id}),
    )
    .await?;
    rollout(p, actor, tenant, device).await;
    Ok(row)
}

/// Revokes a live peer: its wrapped keys are dropped, and the device's next
/// configuration no longer lists it.
pub async fn revoke_peer(
    p: &Portal,
    actor: &Actor,
    tenant: TenantId,
    device: DeviceId,
    peer: Uuid,
) -> Result<VpnPeerRow> {
    if !p.store.revoke_vpn_peer(tenant, device, peer, now()).await? {
        return match p.store.get_vpn_peer(tenant, device, peer).await? {
            Some(_) => Err(ServiceError::Conflict(format!(
                "vpn peer {peer} is already revoked: revocation is final"
            ))),
            None => Err(ServiceError::NotFound(format!(
                "vpn peer {peer} of this device"
            ))),
        };
    }
    crate::audit::record(
        p,
        Some(tenant),
        actor,
        "vpn.peer.revoke",
        &peer.to_string(),
        serde_json::json!({"device": device.0, "peer": peer}),
    )
    .await?;
    rollout(p, actor, tenant, device).await;
    p.store
        .get_vpn_peer(tenant, device, peer)
        .await?
        .ok_or_else(|| ServiceError::NotFound(format!("vpn peer {peer} of this device")))
}

/// Every change of a device's interface or peers ends here: the device's
/// effective configuration (with [`device_interface`]) is rolled out, so
/// a revoked peer leaves the device's interface. The change is stored
/// already: a failed rollout is logged, and the device gets it with its
/// next configuration.
async fn rollout(p: &Portal, actor: &Actor, tenant: TenantId, device: DeviceId) {
    if let Err(e) = crate::devconf::refresh(p, actor, tenant, Some(&[device])).await {
        tracing::warn!(tenant = %tenant, device = %device.0, error = %e, "vpn change not rolled out");
    }
}

/// A live peer's wg-quick profile: its private key and address, the
/// device as its one peer. `None` when the peer is revoked (its keys are
/// gone).
pub async fn client_profile(
    p: &Portal,
    actor: &Actor,
    tenant: TenantId,
    iface: &VpnInterfaceRow,
    peer: &VpnPeerRow,
) -> Result<Option<Zeroizing<String>>> {
    let (Some(sk_w), None) = (&peer.private_key_wrapped, peer.revoked_at) else {
        return Ok(None);
    };
    let secrets = p.secrets(tenant).await?;
    let device = iface.device_id;
    let sk = secrets.unwrap_secret(tenant, &peer_purpose(device, peer.id, "private"), sk_w)?;
    let sk: [u8; 32] = sk
        .as_slice()
        .try_into()
        .map_err(|_| ServiceError::Crypto(format!("vpn peer {} key is not 32 bytes", peer.id)))?;
    let sk = Zeroizing::new(sk);
    let psk = match &peer.preshared_key_wrapped {
        Some(w) => Some(secrets.unwrap_secret(tenant, &peer_purpose(device, peer.id, "psk"), w)?),
        None => None,
    };
    let psk = psk
        .map(|k| {
            <[u8; 32]>::try_from(k.as_slice())
                .map(|k| Zeroizing::new(wg::key_b64(&k)))
                .map_err(|_| {
                    ServiceError::Crypto(format!("vpn peer {} psk is not 32 bytes", peer.id))
                })
        })
        .transpose()?;
    let text = render_profile(
        iface,
        peer,
        &wg::key_b64(&sk),
        psk.as_deref().map(String::as_str),
    );
    crate::audit::record(
        p,
        Some(tenant),
        actor,
        "vpn.profile.download",
        &peer.id.to_string(),
        serde_json::json!({"device": device.0, "peer": peer.id}),
    )
    .await?;
    Ok(Some(text))
}

/// wg-quick's format (`wg-quick(8)`): the client's own interface, then the
/// device as its peer.
fn render_profile(
    iface: &VpnInterfaceRow,
    peer: &VpnPeerRow,
    private_key: &str,
    preshared_key: Option<&str>,
) -> Zeroizing<String> {
    use std::fmt::Write;
    let mut s = Zeroizing::new(String::with_capacity(512));
    let _ = writeln!(s, "[Interface]");
    let _ = writeln!(s, "PrivateKey = {private_key}");
    let _ = writeln!(s, "Address = {}", peer.address);
    if !iface.dns.is_empty() {
        let _ = writeln!(s, "DNS = {}", iface.dns.join(", "));
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "[Peer]");
    let _ = writeln!(s, "PublicKey = {}", iface.public_key);
    if let Some(k) = preshared_key {
        let _ = writeln!(s, "PresharedKey = {k}");
    }
    let host = match iface.endpoint.parse::<IpAddr>() {
        Ok(IpAddr::V6(a)) => format!("[{a}]"),
        _ => iface.endpoint.clone(),
    };
    let _ = writeln!(s, "Endpoint = {host}:{}", iface.listen_port);
    let _ = writeln!(s, "AllowedIPs = {}", iface.client_allowed_ips.join(", "));
    let _ = writeln!(s, "PersistentKeepalive = {CLIENT_KEEPALIVE_SECS}");
    s
}

/// Pixels per QR module and the quiet zone around the code (in modules,
/// as ISO/IEC 18004 asks).
const QR_SCALE: u32 = 6;
const QR_QUIET: u32 = 4;

/// `text` as a QR code in a grayscale PNG, for a phone's WireGuard app.
pub fn qr_png(text: &str) -> Result<Vec<u8>> {
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| {
            invalid(format!(
                "the profile does not fit in a QR code ({e}): download profile.conf, or give the interface fewer client_allowed_ips"
            ))
        })?;
    let modules = u32::try_from(code.width()).map_err(|_| invalid("qr code too wide"))?;
    let side = (modules + 2 * QR_QUIET) * QR_SCALE;
    let colors = code.to_colors();
    let mut pixels = Zeroizing::new(vec![255u8; (side * side) as usize]);
    for (i, c) in colors.iter().enumerate() {
        if *c != qrcode::Color::Dark {
            continue;
        }
        let (mx, my) = (i as u32 % modules, i as u32 / modules);
        for dy in 0..QR_SCALE {
            let y = (my + QR_QUIET) * QR_SCALE + dy;
            let row = (y * side) as usize;
            let x0 = ((mx + QR_QUIET) * QR_SCALE) as usize;
            pixels[row + x0..row + x0 + QR_SCALE as usize].fill(0);
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, side, side);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc
            .write_header()
            .map_err(|e| ServiceError::Crypto(format!("png header: {e}")))?;
        w.write_image_data(&pixels)
            .map_err(|e| ServiceError::Crypto(format!("png data: {e}")))?;
        w.finish()
            .map_err(|e| ServiceError::Crypto(format!("png end: {e}")))?;
    }
    Ok(out)
}

/// The device's interface as it goes into its effective configuration:
/// public keys and addresses of its live peers, no secret. `None` when the
/// device has no interface.
pub async fn device_interface(
    p: &Portal,
    tenant: TenantId,
    device: DeviceId,
) -> Result<Option<WgInterface>> {
    let Some(iface) = p.store.get_vpn_interface(tenant, device).await? else {
        return Ok(None);
    };
    let peers = p.store.list_vpn_peers(tenant, device).await?;
    let out = WgInterface {
        address: vec![iface.address],
        listen_port: Some(iface.listen_port),
        public_key: iface.public_key,
        peers: peers
            .into_iter()
            .filter(|x| x.revoked_at.is_none())
            .map(|x| WgPeer {
                public_key: x.public_key,
                allowed_ips: vec![x.address],
                persistent_keepalive: None,
                preshared_key: x.preshared_key_wrapped.is_some(),
            })
            .collect(),
    };
    out.validate()
        .map_err(|e| ServiceError::Crypto(format!("stored vpn interface of {}: {e}", device.0)))?;
    Ok(Some(out))
}

/// The device's private key and its live peers' preshared keys, for the
/// device alone (its signed fetch). `None` when it has no interface.
pub async fn device_secrets(
    p: &Portal,
    tenant: TenantId,
    device: DeviceId,
) -> Result<Option<WgSecrets>> {
    let Some(iface) = p.store.get_vpn_interface(tenant, device).await? else {
        return Ok(None);
    };
    let secrets = p.secrets(tenant).await?;
    let key32 = |v: Zeroizing<Vec<u8>>, what: &str| {
        <[u8; 32]>::try_from(v.as_slice())
            .map(|k| wg::key_b64(&k))
            .map_err(|_| {
                ServiceError::Crypto(format!("{what} of device {} is not 32 bytes", device.0))
            })
    };
    let private_key = key32(
        secrets.unwrap_secret(tenant, &device_purpose(device), &iface.private_key_wrapped)?,
        "vpn private key",
    )?;
    let mut peers = Vec::new();
    for x in p.store.list_vpn_peers(tenant, device).await? {
        if let (None, Some(w)) = (x.revoked_at, &x.preshared_key_wrapped) {
            let k = secrets.unwrap_secret(tenant, &peer_purpose(device, x.id, "psk"), w)?;
            peers.push(WgPeerSecret {
                public_key: x.public_key,
                preshared_key: key32(k, "vpn preshared key")?,
            });
        }
    }
    Ok(Some(WgSecrets {
        public_key: iface.public_key,
        private_key,
        peers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_addresses_need_an_ipv4_host_in_a_network_with_room() {
        assert_eq!(interface_address("10.8.0.1/24").unwrap().1, 24);
        assert_eq!(interface_address("10.8.0.254/24").unwrap().1, 24);
        for bad in [
            "10.8.0.0/24",
            "10.8.0.255/24",
            "10.8.0.1/31",
            "10.8.0.1/7",
            "fd00::1/64",
            "10.8.0.1",
        ] {
            assert!(interface_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoints_and_names_are_checked() {
        assert_eq!(
            check_endpoint("VPN.Example.com").unwrap(),
            "vpn.example.com"
        );
        assert_eq!(check_endpoint("2001:db8::1").unwrap(), "2001:db8::1");
        for bad in ["", "vpn.example.com:51820", "-a.example", "a..b", "a b"] {
            assert!(check_endpoint(bad).is_err(), "{bad:?}");
        }
        assert!(check_peer_name("alice-laptop.1").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_peer_name(bad).is_err(), "{bad:?}");
        }
    }
}
