//! Applies the device's WireGuard interface from its configuration.
//!
//! The configuration ([`WgInterface`]) names public keys only; the private
//! key and the preshared keys are fetched from the portal with a signed
//! request each time the interface is applied, kept in memory only (never
//! written to disk: `wg syncconf` reads them from a pipe) and dropped after.
//!
//! Applying is opt-in (`--wireguard-interface wg0`): without it the agent
//! checks the configuration and says it applied nothing. With it, the
//! agent creates the interface when missing (`ip link add … type
//! wireguard`, or a userspace implementation such as wireguard-go where the
//! kernel has no WireGuard), replaces its keys, port and whole peer set
//! with `wg syncconf` (so a revoked peer disappears, while the sessions of
//! unchanged peers survive, which `wg setconf` would drop), sets its addresses and
//! brings it up.

use std::path::PathBuf;
use std::process::Stdio;

use rampart_proto::wg::{Cidr, WgInterface, WgSecrets};
use tokio::io::AsyncWriteExt;
use zeroize::Zeroizing;

use crate::client::PortalClient;

/// What the operator allows the agent to do with WireGuard.
#[derive(Clone, Debug)]
pub struct WgOptions {
    /// The interface the agent manages; `None`: apply nothing.
    pub interface: Option<String>,
    pub wg: PathBuf,
    pub ip: PathBuf,
    /// Run this (e.g. `wireguard-go`) with the interface name to create it
    /// when the kernel has no WireGuard, as wg-quick's
    /// `WG_QUICK_USERSPACE_IMPLEMENTATION` does.
    pub userspace: Option<PathBuf>,
}

impl Default for WgOptions {
    fn default() -> Self {
        WgOptions {
            interface: None,
            wg: "wg".into(),
            ip: "ip".into(),
            userspace: None,
        }
    }
}

/// What applying said when nothing is configured on this agent.
pub const NOT_APPLIED: &str = "not applied: no interface configured on this agent";

/// Linux interface names: 1 to 15 bytes, no `/`, whitespace or `:`.
pub fn check_interface_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.=+".contains(&b))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(format!(
            "wireguard interface {name:?} must be 1 to 15 letters, digits or _-.=+"
        ))
    }
}

/// The interface configuration for `wg syncconf` (`wg(8)`'s format): keys,
/// port and every peer, so applying it replaces the peer set whole.
pub fn render_conf(iface: &WgInterface, secrets: &WgSecrets) -> Result<Zeroizing<String>, String> {
    use std::fmt::Write;
    iface.validate()?;
    secrets.check_for(iface)?;
    let mut s = Zeroizing::new(String::with_capacity(256 + 160 * iface.peers.len()));
    let _ = writeln!(s, "[Interface]");
    let _ = writeln!(s, "PrivateKey = {}", secrets.private_key);
    if let Some(port) = iface.listen_port {
        let _ = writeln!(s, "ListenPort = {port}");
    }
    for p in &iface.peers {
        let _ = writeln!(s, "\n[Peer]");
        let _ = writeln!(s, "PublicKey = {}", p.public_key);
        if let Some(psk) = secrets.preshared_key(&p.public_key) {
            let _ = writeln!(s, "PresharedKey = {psk}");
        }
        let _ = writeln!(s, "AllowedIPs = {}", p.allowed_ips.join(", "));
        if let Some(k) = p.persistent_keepalive {
            let _ = writeln!(s, "PersistentKeepalive = {k}");
        }
    }
    Ok(s)
}

/// Runs a command; its stdout, or an error naming it with its stderr.
async fn run(bin: &PathBuf, args: &[&str], stdin: Option<&[u8]>) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let what = format!("{} {}", bin.display(), args.join(" "));
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e} (is it installed?)"))?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(data)
            .await
            .map_err(|e| format!("{what}: writing its input: {e}"))?;
        drop(pipe);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .map_err(|_| format!("{what} did not finish in 30 s"))?
        .map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates the interface when it does not exist yet.
async fn ensure_interface(name: &str, opts: &WgOptions) -> Result<(), String> {
    if run(&opts.ip, &["link", "show", "dev", name], None)
        .await
        .is_ok()
    {
        return Ok(());
    }
    match run(&opts.ip, &["link", "add", "dev", name, "type", "wireguard"], None).await {
        Ok(_) => Ok(()),
        Err(kernel) => match &opts.userspace {
            Some(bin) => run(bin, &[name], None).await.map(|_| ()).map_err(|e| {
                format!("the kernel has no wireguard ({kernel}) and the userspace one failed: {e}")
            }),
            None => Err(format!(
                "cannot create {name}: {kernel} (without kernel wireguard, give --wireguard-userspace wireguard-go)"
            )),
        },
    }
}

/// The interface's global addresses (`ip -o address show`).
async fn addresses(name: &str, opts: &WgOptions) -> Result<Vec<String>, String> {
    let out = run(&opts.ip, &["-o", "address", "show", "dev", name], None).await?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            it.find(|w| *w == "inet" || *w == "inet6")
                .and_then(|_| it.next())
                .map(String::from)
        })
        .filter(|a| !a.starts_with("fe80:"))
        .collect())
}

/// Applies `iface` (secrets already fetched) to the interface `name`.
pub async fn apply_with_secrets(
    name: &str,
    iface: &WgInterface,
    secrets: &WgSecrets,
    opts: &WgOptions,
) -> Result<String, String> {
    check_interface_name(name)?;
    let conf = render_conf(iface, secrets)?;
    ensure_interface(name, opts).await?;
    // From a pipe: the private key never touches the disk.
    run(
        &opts.wg,
        &["syncconf", name, "/dev/stdin"],
        Some(conf.as_bytes()),
    )
    .await?;
    drop(conf);
    let want: Vec<Cidr> = iface
        .address
        .iter()
        .map(|a| Cidr::parse(a))
        .collect::<Result<_, _>>()?;
    for have in addresses(name, opts).await? {
        if !want.iter().any(|w| w.to_string() == have) {
            run(&opts.ip, &["address", "del", &have, "dev", name], None).await?;
        }
    }
    for w in &want {
        run(
            &opts.ip,
            &["address", "replace", &w.to_string(), "dev", name],
            None,
        )
        .await?;
    }
    run(&opts.ip, &["link", "set", "up", "dev", name], None).await?;
    probe(name, iface, opts).await
}

/// Applies the configuration's interface: fetches the secrets and applies
/// with [`apply_with_secrets`]. Without an interface on this agent it only
/// checks the configuration. `iface` `None` (no VPN in the configuration)
/// removes a managed interface that is still there.
pub async fn apply(
    client: &PortalClient,
    iface: Option<&WgInterface>,
    opts: &WgOptions,
) -> Result<String, String> {
    if let Some(i) = iface {
        i.validate()?;
    }
    let Some(name) = opts.interface.as_deref() else {
        return Ok(NOT_APPLIED.into());
    };
    check_interface_name(name)?;
    let Some(iface) = iface else {
        if run(&opts.ip, &["link", "show", "dev", name], None)
            .await
            .is_err()
        {
            return Ok(format!("{name}: no vpn configured, no interface"));
        }
        // Only ever a WireGuard interface (kernel or userspace) is removed.
        run(&opts.wg, &["show", name, "public-key"], None)
            .await
            .map_err(|e| format!("{name} is not a wireguard interface, left alone: {e}"))?;
        run(&opts.ip, &["link", "del", "dev", name], None).await?;
        return Ok(format!("{name}: no vpn configured, interface removed"));
    };
    let secrets = client
        .vpn_keys()
        .await
        .map_err(|e| format!("fetching the vpn keys: {e}"))?;
    apply_with_secrets(name, iface, &secrets, opts).await
}

/// Health: the interface has the configured public key and exactly the
/// configured peers (`wg show`).
pub async fn probe(name: &str, iface: &WgInterface, opts: &WgOptions) -> Result<String, String> {
    let pk = run(&opts.wg, &["show", name, "public-key"], None).await?;
    if pk.trim() != iface.public_key {
        return Err(format!(
            "{name} has public key {} and the configuration {}",
            pk.trim(),
            iface.public_key
        ));
    }
    let out = run(&opts.wg, &["show", name, "peers"], None).await?;
    let mut have: Vec<&str> = out.split_whitespace().collect();
    let mut want: Vec<&str> = iface.peers.iter().map(|p| p.public_key.as_str()).collect();
    have.sort_unstable();
    want.sort_unstable();
    if have != want {
        return Err(format!(
            "{name} has {} peers and the configuration {}: apply it again",
            have.len(),
            want.len()
        ));
    }
    Ok(format!(
        "{name}: {} peers, port {}",
        want.len(),
        iface
            .listen_port
            .map(|p| p.to_string())
            .unwrap_or_else(|| "any".into())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_proto::wg::{self, WgPeer, WgPeerSecret};

    #[test]
    fn interface_names_follow_linux_rules() {
        for ok in ["wg0", "rampart-vpn", "a"] {
            assert!(check_interface_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "wg/0", "wg 0", "abcdefghijklmnop", "..", "wg0:1"] {
            assert!(check_interface_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn conf_text_has_the_key_port_and_every_peer_with_its_preshared_key() {
        let sk = wg::generate_private_key();
        let (p1, p2) = (wg::generate_private_key(), wg::generate_private_key());
        let pk = |k: &[u8; 32]| wg::key_b64(&wg::public_key(k));
        let psk = wg::key_b64(&wg::generate_preshared_key());
        let iface = WgInterface {
            address: vec!["10.8.0.1/24".into()],
            listen_port: Some(51820),
            public_key: pk(&sk),
            peers: vec![
                WgPeer {
                    public_key: pk(&p1),
                    allowed_ips: vec!["10.8.0.2/32".into()],
                    persistent_keepalive: None,
                    preshared_key: true,
                },
                WgPeer {
                    public_key: pk(&p2),
                    allowed_ips: vec!["10.8.0.3/32".into(), "192.168.9.0/24".into()],
                    persistent_keepalive: Some(25),
                    preshared_key: false,
                },
            ],
        };
        let secrets = WgSecrets {
            public_key: pk(&sk),
            private_key: wg::key_b64(&sk),
            peers: vec![WgPeerSecret {
                public_key: pk(&p1),
                preshared_key: psk.clone(),
            }],
        };
        let text = render_conf(&iface, &secrets).unwrap();
        let want = format!(
            "[Interface]\nPrivateKey = {}\nListenPort = 51820\n\n[Peer]\nPublicKey = {}\nPresharedKey = {psk}\nAllowedIPs = 10.8.0.2/32\n\n[Peer]\nPublicKey = {}\nAllowedIPs = 10.8.0.3/32, 192.168.9.0/24\nPersistentKeepalive = 25\n",
            wg::key_b64(&sk),
            pk(&p1),
            pk(&p2)
        );
        assert_eq!(*text, want);
        // Secrets of another interface are refused before anything runs.
        let other = WgSecrets {
            private_key: wg::key_b64(&wg::generate_private_key()),
            ..secrets
        };
        assert!(render_conf(&iface, &other).is_err());
    }
}
