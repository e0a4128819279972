//! What an enrolled agent keeps on disk, in its state dir:
//!
//! - `identity.json`: portal URL, pin, tenant and device ids, the tenant's
//!   public keys. Public data only.
//! - `device.key`: the device's Ed25519 key, wrapped (XChaCha20-Poly1305)
//!   under the agent's wrapping key. Never written in the clear.
//! - `device.key.next`: during a key rotation, the new key, wrapped the
//!   same way, until the portal's answer settles which key is in force.
//! - `state.json`: the last applied instruction seq and results not yet
//!   acknowledged by the portal, so a restart neither re-runs nor forgets.
//! - `status.json`: written by `run` for `status` and health checks.
//! - `controls.json`: the tenant's edge data controls last applied (public:
//!   they say what is masked, not how to unmask it).
//! - `pseudonym.key`: the tenant's pseudonym key, wrapped like the device
//!   key. Never written in the clear.
//! - `tails.json`: how far each tailed log file has been shipped.
//! - `outbox/`: sealed batches waiting to go up.
//!
//! The wrapping key comes from `RAMPART_AGENT_WRAP_KEY` (base64) or a file
//! (`--wrap-key-file`, e.g. a systemd credential); by default it is
//! generated into `<state_dir>/wrap.key` with mode 0600.

use std::path::{Path, PathBuf};

use base64::Engine;
use rampart_proto::keys::SigningKey;
use rampart_proto::wrap::Kek;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::AgentError;

const KEY_AAD: &[u8] = b"rampart-agent/device-key/v1";
const PSEUDONYM_KEY_AAD: &[u8] = b"rampart-agent/pseudonym-key/v1";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Identity {
    pub portal_url: String,
    /// `host:port` → address override, like curl's `--resolve`, for portals
    /// whose domain does not resolve from here.
    pub resolve: Option<std::net::SocketAddr>,
    pub pin: String,
    pub tenant_id: Uuid,
    pub device_id: Uuid,
    pub instruction_key: String,
    pub upload_key: String,
    pub poll_wait_secs: u64,
    pub enrolled_at: i64,
}

/// Results and refusals the portal has not acknowledged yet.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunState {
    pub last_applied_seq: u64,
    pub pending_acks: Vec<PendingAck>,
    pub pending_refusals: Vec<rampart_proto::api::RefusalReport>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingAck {
    pub seq: u64,
    pub ack: rampart_proto::api::AckRequest,
}

#[derive(Clone)]
pub struct StateDir {
    pub root: PathBuf,
    wrap_key_file: Option<PathBuf>,
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> AgentError {
    AgentError::State(format!("cannot {what} {}: {e}", path.display()))
}

/// Writes via temp file, fsync and rename, so a crash leaves old or new.
pub fn write_atomic(path: &Path, data: &[u8], private: bool) -> Result<(), AgentError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, "create", e))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state")
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(&tmp).map_err(|e| io_err(&tmp, "write", e))?;
    f.write_all(data).map_err(|e| io_err(&tmp, "write", e))?;
    f.sync_all().map_err(|e| io_err(&tmp, "sync", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, "replace", e))
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>, wrap_key_file: Option<PathBuf>) -> Self {
        StateDir {
            root: root.into(),
            wrap_key_file,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn outbox_dir(&self) -> PathBuf {
        self.path("outbox")
    }

    pub fn is_enrolled(&self) -> bool {
        self.path("identity.json").exists()
    }

    fn wrap_key(&self) -> Result<Kek, AgentError> {
        let decode = |s: &str, from: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .ok()
                .and_then(|b| Kek::from_bytes(&b).ok())
                .ok_or_else(|| {
                    AgentError::State(format!(
                        "wrapping key from {from} is not base64 of 32 bytes"
                    ))
                })
        };
        if let Ok(v) = std::env::var("RAMPART_AGENT_WRAP_KEY") {
            return decode(&v, "RAMPART_AGENT_WRAP_KEY");
        }
        let path = self
            .wrap_key_file
            .clone()
            .unwrap_or_else(|| self.path("wrap.key"));
        match std::fs::read_to_string(&path) {
            Ok(s) => decode(&s, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.wrap_key_file.is_none() => {
                let k = Kek::generate();
                write_atomic(
                    &path,
                    base64::engine::general_purpose::STANDARD
                        .encode(k.as_bytes())
                        .as_bytes(),
                    true,
                )?;
                tracing::warn!(path = %path.display(), "generated the agent's wrapping key; for production provide it with --wrap-key-file (e.g. a systemd credential) or RAMPART_AGENT_WRAP_KEY");
                Ok(k)
            }
            Err(e) => Err(io_err(&path, "read wrapping key", e)),
        }
    }

    pub fn save_device_key(&self, key: &SigningKey) -> Result<(), AgentError> {
        let wrapped = self.wrap_key()?.wrap(&key.secret_bytes(), KEY_AAD);
        write_atomic(&self.path("device.key"), &wrapped, true)
    }

    pub fn device_key(&self) -> Result<SigningKey, AgentError> {
        let path = self.path("device.key");
        let blob = std::fs::read(&path).map_err(|e| io_err(&path, "read", e))?;
        let secret = self.wrap_key()?.unwrap(&blob, KEY_AAD).map_err(|_| {
            AgentError::State(
                "device key does not unwrap: is this the wrapping key it was enrolled with?".into(),
            )
        })?;
        SigningKey::from_secret(&secret).map_err(|e| AgentError::State(e.to_string()))
    }

    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, AgentError> {
        let path = self.path(name);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| AgentError::State(format!("{} is corrupt: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path, "read", e)),
        }
    }

    fn write_json<T: Serialize>(&self, name: &str, v: &T) -> Result<(), AgentError> {
        let data = serde_json::to_vec_pretty(v).map_err(|e| AgentError::State(e.to_string()))?;
        write_atomic(&self.path(name), &data, false)
    }

    pub fn identity(&self) -> Result<Identity, AgentError> {
        self.read_json("identity.json")?.ok_or_else(|| {
            AgentError::State(format!(
                "{} holds no enrollment: run `rampart-agent enroll <token>` first",
                self.root.display()
            ))
        })
    }

    pub fn save_identity(&self, id: &Identity) -> Result<(), AgentError> {
        self.write_json("identity.json", id)
    }

    pub fn run_state(&self) -> Result<RunState, AgentError> {
        Ok(self.read_json("state.json")?.unwrap_or_default())
    }

    pub fn save_run_state(&self, s: &RunState) -> Result<(), AgentError> {
        self.write_json("state.json", s)
    }

    pub fn status(&self) -> Result<Option<crate::run::Status>, AgentError> {
        self.read_json("status.json")
    }

    pub fn save_status(&self, s: &crate::run::Status) -> Result<(), AgentError> {
        self.write_json("status.json", s)
    }

    /// The configuration the agent runs (last applied and healthy), if any.
    /// It holds no secret: configurations never carry one.
    pub fn running_config(
        &self,
    ) -> Result<Option<rampart_proto::config::EffectiveConfig>, AgentError> {
        self.read_json("config.json")
    }

    pub fn save_running_config(
        &self,
        c: &rampart_proto::config::EffectiveConfig,
    ) -> Result<(), AgentError> {
        self.write_json("config.json", c)
    }

    /// The data controls last applied, if any were ever set.
    pub fn data_controls(
        &self,
    ) -> Result<Option<rampart_proto::controls::DataControls>, AgentError> {
        self.read_json("controls.json")
    }

    pub fn save_data_controls(
        &self,
        c: &rampart_proto::controls::DataControls,
    ) -> Result<(), AgentError> {
        self.write_json("controls.json", c)
    }

    /// Keeps the tenant's pseudonym key, wrapped under the wrapping key like
    /// the device key: whoever copies the state dir without the wrapping key
    /// cannot reverse or forge pseudonyms.
    pub fn save_pseudonym_key(
        &self,
        key: &rampart_proto::controls::PseudonymKey,
    ) -> Result<(), AgentError> {
        let clear = zeroize::Zeroizing::new(
            serde_json::to_vec(key).map_err(|e| AgentError::State(e.to_string()))?,
        );
        let wrapped = self.wrap_key()?.wrap(&clear, PSEUDONYM_KEY_AAD);
        write_atomic(&self.path("pseudonym.key"), &wrapped, true)
    }

    /// The pseudonym key, if one was fetched.
    pub fn pseudonym_key(
        &self,
    ) -> Result<Option<rampart_proto::controls::PseudonymKey>, AgentError> {
        let path = self.path("pseudonym.key");
        let blob = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path, "read", e)),
        };
        let clear = self
            .wrap_key()?
            .unwrap(&blob, PSEUDONYM_KEY_AAD)
            .map_err(|_| {
                AgentError::State(format!(
                    "{} does not unwrap: remove it and the agent fetches the key again",
                    path.display()
                ))
            })?;
        serde_json::from_slice(&clear)
            .map(Some)
            .map_err(|e| AgentError::State(format!("{} is corrupt: {e}", path.display())))
    }

    /// Keeps a new device key, wrapped like the current one, beside it:
    /// written before the portal hears of the key, so a crash during a
    /// rotation leaves both keys on disk (see [`crate::actions`]).
    pub fn save_next_device_key(&self, key: &SigningKey) -> Result<(), AgentError> {
        let wrapped = self.wrap_key()?.wrap(&key.secret_bytes(), KEY_AAD);
        write_atomic(&self.path("device.key.next"), &wrapped, true)
    }

    /// The key of a rotation whose outcome is not settled yet, if any.
    pub fn next_device_key(&self) -> Result<Option<SigningKey>, AgentError> {
        let path = self.path("device.key.next");
        let blob = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path, "read", e)),
        };
        let secret = self.wrap_key()?.unwrap(&blob, KEY_AAD).map_err(|_| {
            AgentError::State(format!(
                "{} does not unwrap: is this the wrapping key the agent runs with?",
                path.display()
            ))
        })?;
        SigningKey::from_secret(&secret)
            .map(Some)
            .map_err(|e| AgentError::State(e.to_string()))
    }

    /// Makes the next key the device key: one rename, so `device.key` is
    /// always one whole key, the old or the new.
    pub fn promote_next_device_key(&self) -> Result<(), AgentError> {
        let (next, cur) = (self.path("device.key.next"), self.path("device.key"));
        std::fs::rename(&next, &cur).map_err(|e| io_err(&cur, "replace", e))?;
        #[cfg(unix)]
        if let Ok(d) = std::fs::File::open(&self.root) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Forgets the next key: the portal never took it.
    pub fn discard_next_device_key(&self) -> Result<(), AgentError> {
        let path = self.path("device.key.next");
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path, "remove", e)),
        }
    }

    /// How far each tailed file was shipped, by source label.
    pub fn tail_offsets(
        &self,
    ) -> Result<std::collections::BTreeMap<String, crate::tail::TailPos>, AgentError> {
        Ok(self.read_json("tails.json")?.unwrap_or_default())
    }

    pub fn save_tail_offsets(
        &self,
        offsets: &std::collections::BTreeMap<String, crate::tail::TailPos>,
    ) -> Result<(), AgentError> {
        self.write_json("tails.json", offsets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_key_is_never_on_disk_in_the_clear() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path(), None);
        let k = SigningKey::generate();
        sd.save_device_key(&k).unwrap();
        let on_disk = std::fs::read(dir.path().join("device.key")).unwrap();
        let secret = k.secret_bytes();
        assert!(!on_disk.windows(secret.len()).any(|w| w == &secret[..]));
        assert_eq!(sd.device_key().unwrap().verifying_key(), k.verifying_key());
        // Another wrapping key cannot open it.
        std::fs::remove_file(dir.path().join("wrap.key")).unwrap();
        let sd2 = StateDir::new(dir.path(), None);
        assert!(sd2.device_key().is_err());
    }

    #[test]
    fn run_state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path(), None);
        assert_eq!(sd.run_state().unwrap().last_applied_seq, 0);
        let s = RunState {
            last_applied_seq: 7,
            ..Default::default()
        };
        sd.save_run_state(&s).unwrap();
        assert_eq!(sd.run_state().unwrap().last_applied_seq, 7);
    }
}
