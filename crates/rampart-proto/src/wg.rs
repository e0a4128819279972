//! WireGuard interface configuration as it travels to a device inside an
//! [`crate::config::EffectiveConfig`], the secrets the device fetches apart
//! from it, and the X25519 key handling both sides share.
//!
//! The interface's private key and the peers' preshared keys are never part
//! of a [`WgInterface`] (configurations are stored and shown to tenant
//! admins): the device fetches them as [`WgSecrets`] with a signed request
//! and keeps them in memory only.

use std::fmt;
use std::net::IpAddr;

use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Most peers one interface accepts (a client profile each).
pub const MAX_PEERS: usize = 1000;
/// Most addresses of an interface and most allowed IPs of one peer.
pub const MAX_ADDRESSES: usize = 8;
pub const MAX_ALLOWED_IPS: usize = 64;

/// A device's WireGuard interface and the peers it accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WgInterface {
    /// Interface addresses with prefix, e.g. `10.8.0.1/24`.
    pub address: Vec<String>,
    /// UDP port; `None` lets the kernel choose one.
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
    /// The peer has a preshared key, which the device fetches with the
    /// private key: a configuration never carries it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preshared_key: bool,
}

/// `GET /api/v1/device/vpn-keys`: the device's interface private key and
/// its active peers' preshared keys, all base64 of 32 bytes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WgSecrets {
    /// The public key of `private_key`, so the device can tell the secrets
    /// belong to the interface its configuration names.
    pub public_key: String,
    pub private_key: String,
    pub peers: Vec<WgPeerSecret>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WgPeerSecret {
    pub public_key: String,
    pub preshared_key: String,
}

/// Secrets never reach a log through `{:?}`.
impl fmt::Debug for WgSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WgSecrets")
            .field("public_key", &self.public_key)
            .field("private_key", &"<redacted>")
            .field("peers", &self.peers.len())
            .finish()
    }
}

impl fmt::Debug for WgPeerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WgPeerSecret")
            .field("public_key", &self.public_key)
            .field("preshared_key", &"<redacted>")
            .finish()
    }
}

/// Base64 (standard, padded, as `wg genkey` prints) of a 32-byte key.
pub fn key_b64(key: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// Decodes a base64 key of exactly 32 bytes; `what` names it in the error.
pub fn parse_key(what: &str, s: &str) -> Result<Zeroizing<[u8; 32]>, String> {
    let bad = || format!("{what} must be base64 of 32 bytes, as wg genkey prints");
    // 32 bytes are 44 base64 characters: refuse anything longer unread.
    if s.len() != 44 {
        return Err(bad());
    }
    let v = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|_| bad())?,
    );
    let mut out = Zeroizing::new([0u8; 32]);
    if v.len() != 32 {
        return Err(bad());
    }
    out.copy_from_slice(&v);
    Ok(out)
}

/// A new private key, clamped as `wg genkey` clamps it (X25519 clamps on
/// use anyway; clamping here makes stored keys look like WireGuard's own).
pub fn generate_private_key() -> Zeroizing<[u8; 32]> {
    let mut raw = Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, raw.as_mut());
    Zeroizing::new(curve25519_dalek::scalar::clamp_integer(*raw))
}

/// 32 random bytes for a peer's preshared key (`wg genpsk`).
pub fn generate_preshared_key() -> Zeroizing<[u8; 32]> {
    let mut k = Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, k.as_mut());
    k
}

/// The X25519 public key of a private key (`wg pubkey`).
pub fn public_key(private: &[u8; 32]) -> [u8; 32] {
    let secret = x25519_dalek::StaticSecret::from(*private);
    x25519_dalek::PublicKey::from(&secret).to_bytes()
}

/// An address with a prefix length (`10.8.0.1/24`, `fd00::1/64`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let bad = || format!("{s:.64} must be an address with a prefix length, e.g. 10.8.0.1/24");
        if s.len() > 64 {
            return Err(bad());
        }
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("{s}: the prefix length is at most {max}"));
        }
        Ok(Cidr { addr, prefix })
    }

    /// The network this address is in (host bits cleared).
    pub fn network(&self) -> Cidr {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Cidr {
            addr,
            prefix: self.prefix,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl WgInterface {
    /// Checks keys, addresses, ports and bounds: what an agent checks
    /// before applying and the portal before delivering.
    pub fn validate(&self) -> Result<(), String> {
        if self.address.is_empty() || self.address.len() > MAX_ADDRESSES {
            return Err(format!(
                "vpn.address must list 1 to {MAX_ADDRESSES} addresses"
            ));
        }
        for a in &self.address {
            Cidr::parse(a).map_err(|e| format!("vpn.address: {e}"))?;
        }
        if self.listen_port == Some(0) {
            return Err("vpn.listen_port must be 1 to 65535: leave it out for any port".into());
        }
        let own = parse_key("vpn.public_key", &self.public_key)?;
        if self.peers.len() > MAX_PEERS {
            return Err(format!(
                "vpn.peers has {} peers, the limit is {MAX_PEERS}: revoke unused ones",
                self.peers.len()
            ));
        }
        let mut seen = std::collections::HashSet::with_capacity(self.peers.len());
        for (i, p) in self.peers.iter().enumerate() {
            let k = parse_key(&format!("vpn.peers[{i}].public_key"), &p.public_key)?;
            if *k == *own {
                return Err(format!(
                    "vpn.peers[{i}].public_key is the interface's own key"
                ));
            }
            if !seen.insert(*k) {
                return Err(format!(
                    "vpn.peers[{i}].public_key appears twice: each peer needs its own key"
                ));
            }
            if p.allowed_ips.is_empty() || p.allowed_ips.len() > MAX_ALLOWED_IPS {
                return Err(format!(
                    "vpn.peers[{i}].allowed_ips must list 1 to {MAX_ALLOWED_IPS} networks"
                ));
            }
            for a in &p.allowed_ips {
                Cidr::parse(a).map_err(|e| format!("vpn.peers[{i}].allowed_ips: {e}"))?;
            }
            if p.persistent_keepalive == Some(0) {
                return Err(format!(
                    "vpn.peers[{i}].persistent_keepalive must be 1 to 65535 seconds: leave it out for none"
                ));
            }
        }
        Ok(())
    }
}

impl WgSecrets {
    /// Checks that these secrets belong to `iface`: the private key derives
    /// its public key, and every peer marked with a preshared key has one.
    pub fn check_for(&self, iface: &WgInterface) -> Result<(), String> {
        let sk = parse_key("the fetched private key", &self.private_key)?;
        if key_b64(&public_key(&sk)) != iface.public_key || self.public_key != iface.public_key {
            return Err(
                "the fetched private key is not the interface's: the configuration is stale, wait for the next one"
                    .into(),
            );
        }
        for p in &self.peers {
            parse_key("a fetched preshared key", &p.preshared_key)?;
        }
        for p in iface.peers.iter().filter(|p| p.preshared_key) {
            if !self.peers.iter().any(|s| s.public_key == p.public_key) {
                return Err(format!(
                    "no preshared key was fetched for peer {}: the configuration is stale, wait for the next one",
                    p.public_key
                ));
            }
        }
        Ok(())
    }

    /// The preshared key of the peer with this public key, if any.
    pub fn preshared_key(&self, peer_public_key: &str) -> Option<&str> {
        self.peers
            .iter()
            .find(|s| s.public_key == peer_public_key)
            .map(|s| s.preshared_key.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> [u8; 32] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// RFC 7748 §6.1: Alice's and Bob's key pairs and their shared secret.
    #[test]
    fn public_keys_match_rfc_7748_test_vectors() {
        let alice = unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let bob = unhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
        assert_eq!(
            hex::encode(public_key(&alice)),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
        assert_eq!(
            hex::encode(public_key(&bob)),
            "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
        );
        let shared = x25519_dalek::StaticSecret::from(alice)
            .diffie_hellman(&x25519_dalek::PublicKey::from(public_key(&bob)));
        assert_eq!(
            hex::encode(shared.as_bytes()),
            "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
        );
    }

    #[test]
    fn generated_keys_are_clamped_like_wg_genkey_and_distinct() {
        let (a, b) = (generate_private_key(), generate_private_key());
        assert_ne!(*a, *b);
        for k in [a, b] {
            assert_eq!(k[0] & 7, 0, "low three bits cleared");
            assert_eq!(k[31] & 0x80, 0, "top bit cleared");
            assert_eq!(k[31] & 0x40, 0x40, "second bit set");
            assert_eq!(*parse_key("k", &key_b64(&k)).unwrap(), *k);
        }
    }

    fn iface(peers: usize) -> WgInterface {
        WgInterface {
            address: vec!["10.8.0.1/24".into()],
            listen_port: Some(51820),
            public_key: key_b64(&public_key(&generate_private_key())),
            peers: (0..peers)
                .map(|i| WgPeer {
                    public_key: key_b64(&public_key(&generate_private_key())),
                    allowed_ips: vec![format!("10.8.{}.{}/32", i / 250, i % 250 + 2)],
                    persistent_keepalive: None,
                    preshared_key: i.is_multiple_of(2),
                })
                .collect(),
        }
    }

    #[test]
    fn validation_accepts_a_full_interface_and_names_what_is_wrong() {
        assert_eq!(iface(MAX_PEERS).validate(), Ok(()));
        type Change = Box<dyn Fn(&mut WgInterface)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "vpn.peers has 1001",
                Box::new(|i| *i = iface(MAX_PEERS + 1)),
            ),
            ("vpn.address must list", Box::new(|i| i.address.clear())),
            (
                "vpn.address: 10.8.0.1 must be",
                Box::new(|i| i.address = vec!["10.8.0.1".into()]),
            ),
            (
                "prefix length is at most 32",
                Box::new(|i| i.address = vec!["10.8.0.1/33".into()]),
            ),
            (
                "vpn.address: 10.8.0.256/24",
                Box::new(|i| i.address = vec!["10.8.0.256/24".into()]),
            ),
            ("vpn.listen_port", Box::new(|i| i.listen_port = Some(0))),
            (
                "vpn.public_key must be base64 of 32 bytes",
                Box::new(|i| i.public_key = key_b64(&[1; 32])[..43].into()),
            ),
            (
                "vpn.peers[0].public_key must be base64",
                Box::new(|i| i.peers[0].public_key = "AAAA".into()),
            ),
            (
                "vpn.peers[1].public_key appears twice",
                Box::new(|i| i.peers[1].public_key = i.peers[0].public_key.clone()),
            ),
            (
                "interface's own key",
                Box::new(|i| i.peers[0].public_key = i.public_key.clone()),
            ),
            (
                "vpn.peers[0].allowed_ips must list",
                Box::new(|i| i.peers[0].allowed_ips.clear()),
            ),
            (
                "vpn.peers[0].allowed_ips: fd00::/129",
                Box::new(|i| i.peers[0].allowed_ips = vec!["fd00::/129".into()]),
            ),
            (
                "persistent_keepalive",
                Box::new(|i| i.peers[0].persistent_keepalive = Some(0)),
            ),
        ];
        for (want, change) in cases {
            let mut i = iface(2);
            change(&mut i);
            let err = i.validate().expect_err(want);
            assert!(err.contains(want), "{want}: got {err}");
        }
    }

    #[test]
    fn cidr_networks_clear_host_bits() {
        for (s, net) in [
            ("10.8.0.77/24", "10.8.0.0/24"),
            ("10.8.0.77/0", "0.0.0.0/0"),
            ("10.8.0.77/32", "10.8.0.77/32"),
            ("fd00:1:2::9/48", "fd00:1:2::/48"),
            ("fd00::9/128", "fd00::9/128"),
        ] {
            assert_eq!(Cidr::parse(s).unwrap().network().to_string(), net, "{s}");
        }
        for bad in ["", "/24", "10.8.0.1/", "10.8.0.1/+1", "10.8.0.1/1 ", "x/1"] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secrets_must_derive_the_interfaces_key_and_cover_its_preshared_peers() {
        let sk = generate_private_key();
        let mut i = iface(2);
        i.public_key = key_b64(&public_key(&sk));
        let psk = key_b64(&generate_preshared_key());
        let s = WgSecrets {
            public_key: i.public_key.clone(),
            private_key: key_b64(&sk),
            peers: vec![WgPeerSecret {
                public_key: i.peers[0].public_key.clone(),
                preshared_key: psk.clone(),
            }],
        };
        assert_eq!(s.check_for(&i), Ok(()));
        assert_eq!(s.preshared_key(&i.peers[0].public_key), Some(psk.as_str()));
        assert!(!format!("{s:?}").contains(&s.private_key));
        assert!(!format!("{s:?}").contains(&psk));
        let mut other = s.clone();
        other.private_key = key_b64(&generate_private_key());
        assert!(other
            .check_for(&i)
            .unwrap_err()
            .contains("not the interface's"));
        let mut missing = s.clone();
        missing.peers.clear();
        assert!(missing
            .check_for(&i)
            .unwrap_err()
            .contains("no preshared key was fetched"));
    }
}
