//! The behaviour every [`Store`] backend must have. Each backend's tests call
//! [`run_all`] on a fresh, empty store: one suite, many backends.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::cipher::{FieldCipher, TenantSealer};
use crate::*;

/// A real AEAD cipher for the suite (and for tests of other crates that use
/// a bare store), so the suite checks that what the store seals opens only
/// with the associated data it was sealed with. Keys come from a random
/// seed, the tenant and the version; [`TestCipher::rotate`] moves new
/// writes to the next version. The portal's own cipher is in its crate.
pub struct TestCipher {
    seed: [u8; 32],
    current: AtomicU32,
}

impl Default for TestCipher {
    fn default() -> Self {
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&XChaCha20Poly1305::generate_key(&mut OsRng));
        TestCipher {
            seed,
            current: AtomicU32::new(1),
        }
    }
}

impl TestCipher {
    /// Moves new writes to the next key version; returns it.
    pub fn rotate(&self) -> u32 {
        self.current.fetch_add(1, Ordering::SeqCst) + 1
    }
}

struct TestSealer {
    seed: [u8; 32],
    tenant: TenantId,
    version: u32,
}

impl TestSealer {
    fn key(&self, version: u32) -> XChaCha20Poly1305 {
        let k = Sha256::new()
            .chain_update(self.seed)
            .chain_update(self.tenant.0.as_bytes())
            .chain_update(version.to_be_bytes())
            .finalize();
        XChaCha20Poly1305::new(&k)
    }
}

impl TenantSealer for TestSealer {
    fn version(&self) -> u32 {
        self.version
    }

    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = self
            .key(self.version)
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| StoreError::Crypto("test seal".into()))?;
        let mut out = self.version.to_be_bytes().to_vec();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        let bad = || StoreError::Crypto("test open: wrong key, row or tampered".into());
        if sealed.len() < 4 + 24 {
            return Err(bad());
        }
        let (v, rest) = sealed.split_at(4);
        let (nonce, ct) = rest.split_at(24);
        let v = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
        self.key(v)
            .decrypt(nonce.into(), Payload { msg: ct, aad })
            .map_err(|_| bad())
    }

    fn blind_index(&self, aad: &[u8], value: &[u8]) -> String {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.seed)
            .unwrap_or_else(|_| unreachable!("hmac takes any key length"));
        m.update(self.tenant.0.as_bytes());
        m.update(aad);
        m.update(value);
        m.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[async_trait]
impl FieldCipher for TestCipher {
    async fn sealer(&self, _store: &dyn Store, tenant: TenantId) -> Result<Arc<dyn TenantSealer>> {
        Ok(Arc::new(TestSealer {
            seed: self.seed,
            tenant,
            version: self.current.load(Ordering::SeqCst),
        }))
    }
}

fn tenant(name: &str) -> NewTenant {
    NewTenant {
        tenant: Tenant {
            id: TenantId(Uuid::new_v4()),
            name: name.into(),
            domain: format!("{name}.example.net"),
            status: TenantStatus::Active,
            created_at: 1_000,
            cert_file: None,
            key_file: None,
            lifecycle: Lifecycle::Live,
            region: "default".into(),
        },
        keys: TenantKeys {
            kek_wrapped: vec![1; 40],
            signing_sk_wrapped: vec![2; 40],
            signing_pk: vec![3; 32],
            upload_sk_wrapped: vec![4; 40],
            upload_pk: vec![5; 32],
            tls_cert_pem: "-----BEGIN CERTIFICATE-----".into(),
            tls_key_wrapped: vec![6; 40],
        },
    }
}

fn enrollment(
    tenant: TenantId,
    hash: &str,
    max_uses: u32,
    needs_approval: bool,
) -> EnrollmentTokenRow {
    EnrollmentTokenRow {
        id: Uuid::new_v4(),
        tenant_id: tenant,
        secret_hash: hash.into(),
        created_at: 1_000,
        expires_at: 2_000,
        max_uses,
        uses: 0,
        labels: vec!["site:lab".into()],
        needs_approval,
        revoked_at: None,
    }
}

fn new_device(now: i64) -> NewDevice {
    NewDevice {
        id: DeviceId(Uuid::new_v4()),
        public_key: vec![9; 32],
        hostname: "edge-1".into(),
        now,
    }
}

fn instruction(device: DeviceId, seq: u64, expires_at: i64) -> InstructionRow {
    InstructionRow {
        device_id: device,
        seq,
        kind: "ping".into(),
        payload: serde_json::json!({"message": "hi"}),
        signed: serde_json::json!({"envelope": "e", "signature": "s"}),
        issued_at: 1_000,
        expires_at,
        status: "queued".into(),
        result: None,
        delivered_at: None,
        acked_at: None,
    }
}

/// Runs every check in order on one empty store, with a [`TestCipher`]
/// installed.
pub async fn run_all(s: &dyn Store) {
    let cipher = Arc::new(TestCipher::default());
    s.set_field_cipher(cipher.clone());
    meta(s).await;
    tenants(s).await;
    enrollment_and_devices(s).await;
    instructions(s).await;
    batches(s).await;
    tenant_isolation(s).await;
    flow_batches(s).await;
    flow_segments(s).await;
    flow_retention(s).await;
    tenant_settings(s).await;
    alarm_detection(s).await;
    alarm_changes(s).await;
    alarm_rules_and_webhooks(s).await;
    webhook_deliveries(s).await;
    audit_log(s).await;
    billing(s).await;
    plans(s).await;
    device_limit(s).await;
    retention(s).await;
    cancellation_and_purge(s).await;
    tenant_regions(s).await;
    users_and_access(s).await;
    reports(s).await;
    target_lists(s).await;
    vpn(s).await;
    configs(s).await;
    encryption_at_rest(s, &cipher).await;
    remote_actions(s).await;
}

async fn meta(s: &dyn Store) {
    assert_eq!(s.get_meta("ca").await.unwrap(), None);
    assert_eq!(s.init_meta("ca", b"first").await.unwrap(), b"first");
    // A second initialiser loses the race and sees the first value.
    assert_eq!(s.init_meta("ca", b"second").await.unwrap(), b"first");
}

async fn tenants(s: &dyn Store) {
    let a = tenant("alpha");
    s.create_tenant(&a).await.unwrap();
    let dup = NewTenant {
        tenant: Tenant {
            id: TenantId(Uuid::new_v4()),
            ..a.tenant.clone()
        },
        keys: a.keys.clone(),
    };
    assert!(matches!(
        s.create_tenant(&dup).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.get_tenant(a.tenant.id).await.unwrap(),
        Some(a.tenant.clone())
    );
    assert_eq!(
        s.tenant_by_name("alpha").await.unwrap(),
        Some(a.tenant.clone())
    );
    assert_eq!(
        s.tenant_by_domain("ALPHA.example.net").await.unwrap(),
        Some(a.tenant.clone())
    );
    assert_eq!(s.tenant_by_name("nobody").await.unwrap(), None);
    // Names and domains are separate namespaces.
    assert_eq!(s.tenant_by_domain("alpha").await.unwrap(), None);
    assert_eq!(s.tenant_by_name("alpha.example.net").await.unwrap(), None);
    assert_eq!(s.tenant_keys(a.tenant.id).await.unwrap(), a.keys);
    s.set_tenant_status(a.tenant.id, TenantStatus::Suspended)
        .await
        .unwrap();
    assert_eq!(
        s.get_tenant(a.tenant.id).await.unwrap().unwrap().status,
        TenantStatus::Suspended
    );
    assert!(s
        .set_tenant_status(TenantId(Uuid::new_v4()), TenantStatus::Active)
        .await
        .is_err());
    assert!(s
        .list_tenants()
        .await
        .unwrap()
        .iter()
        .any(|t| t.name == "alpha"));

    let tok = ApiToken {
        id: Uuid::new_v4(),
        tenant_id: Some(a.tenant.id),
        name: "ci".into(),
        token_hash: "h-alpha".into(),
        role: "admin".into(),
        created_at: 1,
        expires_at: None,
        revoked_at: None,
        created_by: None,
    };
    s.create_api_token(&tok).await.unwrap();
    assert_eq!(s.find_api_token("h-alpha").await.unwrap(), Some(tok));
    assert_eq!(s.find_api_token("nope").await.unwrap(), None);
}

async fn enrollment_and_devices(s: &dyn Store) {
    let t = tenant("bravo");
    s.create_tenant(&t).await.unwrap();
    let tid = t.tenant.id;
    let once = enrollment(tid, "h-once", 1, false);
    s.create_enrollment_token(tid, &once).await.unwrap();

    let d1 = new_device(1_500);
    let dev = s
        .redeem_enrollment(tid, "h-once", &d1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dev.status, "active");
    assert_eq!(dev.labels, vec!["site:lab".to_string()]);
    assert_eq!(
        s.redeem_enrollment(tid, "h-once", &new_device(1_500))
            .await
            .unwrap(),
        Err(TokenRejection::UsedUp)
    );
    assert_eq!(
        s.redeem_enrollment(tid, "h-unknown", &new_device(1_500))
            .await
            .unwrap(),
        Err(TokenRejection::Unknown)
    );
    let approval = enrollment(tid, "h-approval", 5, true);
    s.create_enrollment_token(tid, &approval).await.unwrap();
    assert_eq!(
        s.redeem_enrollment(tid, "h-approval", &new_device(2_000))
            .await
            .unwrap(),
        Err(TokenRejection::Expired)
    );
    let pending = s
        .redeem_enrollment(tid, "h-approval", &new_device(1_999))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pending.status, "pending");
    assert!(s
        .revoke_enrollment_token(tid, approval.id, 1_600)
        .await
        .unwrap());
    assert_eq!(
        s.redeem_enrollment(tid, "h-approval", &new_device(1_700))
            .await
            .unwrap(),
        Err(TokenRejection::Revoked)
    );
    let listed = s.list_enrollment_tokens(tid).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed.iter().find(|t| t.id == once.id).unwrap().uses, 1);

    assert_eq!(s.list_devices(tid).await.unwrap().len(), 2);
    assert!(s
        .set_device_status(tid, pending.id, "active")
        .await
        .unwrap());
    s.touch_device(tid, dev.id, 1_800).await.unwrap();
    s.set_device_health(tid, dev.id, &serde_json::json!({"uptime_secs": 5}))
        .await
        .unwrap();
    let got = s.get_device(tid, dev.id).await.unwrap().unwrap();
    assert_eq!(got.last_seen, Some(1_800));
    assert_eq!(got.health, Some(serde_json::json!({"uptime_secs": 5})));
    assert!(s.count_devices_seen_since(1_800).await.unwrap() >= 1);
    assert!(!s
        .set_device_status(tid, DeviceId(Uuid::new_v4()), "revoked")
        .await
        .unwrap());
}

async fn instructions(s: &dyn Store) {
    let t = tenant("charlie");
    s.create_tenant(&t).await.unwrap();
    let tid = t.tenant.id;
    s.create_enrollment_token(tid, &enrollment(tid, "h-c", 10, false))
        .await
        .unwrap();
    let dev = s
        .redeem_enrollment(tid, "h-c", &new_device(1_000))
        .await
        .unwrap()
        .unwrap();
    let other = DeviceId(Uuid::new_v4());
    assert_eq!(
        s.allocate_seqs(tid, &[dev.id, other]).await.unwrap(),
        vec![(dev.id, 1)],
        "unknown devices are left out"
    );
    assert_eq!(
        s.allocate_seqs(tid, &[dev.id]).await.unwrap(),
        vec![(dev.id, 2)]
    );
    assert_eq!(
        s.allocate_seqs(tid, &[dev.id]).await.unwrap(),
        vec![(dev.id, 3)]
    );
    s.insert_instructions(tid, &[instruction(dev.id, 1, 5_000)])
        .await
        .unwrap();
    s.insert_instructions(tid, &[instruction(dev.id, 2, 1_500)])
        .await
        .unwrap();
    s.insert_instructions(tid, &[instruction(dev.id, 3, 5_000)])
        .await
        .unwrap();

    let p = s
        .pending_instructions(tid, dev.id, 0, 2_000, 10)
        .await
        .unwrap();
    assert_eq!(
        p.iter().map(|i| i.seq).collect::<Vec<_>>(),
        vec![1, 3],
        "expired one is skipped"
    );
    let p = s
        .pending_instructions(tid, dev.id, 1, 1_000, 10)
        .await
        .unwrap();
    assert_eq!(p.iter().map(|i| i.seq).collect::<Vec<_>>(), vec![2, 3]);
    s.mark_delivered(tid, &[(dev.id, 1)], 1_100).await.unwrap();
    assert!(s
        .finish_instruction(
            tid,
            dev.id,
            1,
            "ok",
            &serde_json::json!({"pong": true}),
            1_200
        )
        .await
        .unwrap());
    assert!(!s
        .finish_instruction(tid, dev.id, 99, "ok", &serde_json::json!({}), 1_200)
        .await
        .unwrap());
    assert!(
        !s.finish_instruction(tid, dev.id, 1, "refused", &serde_json::json!({}), 1_300)
            .await
            .unwrap(),
        "an outcome is final"
    );
    assert_eq!(
        s.get_instruction(tid, dev.id, 1)
            .await
            .unwrap()
            .map(|i| i.status),
        Some("ok".to_string())
    );
    assert_eq!(s.get_instruction(tid, dev.id, 99).await.unwrap(), None);
    let all = s.list_instructions(tid, dev.id).await.unwrap();
    assert_eq!(all[0].status, "ok");
    assert_eq!(all[0].delivered_at, Some(1_100));
    assert_eq!(all[0].result, Some(serde_json::json!({"pong": true})));
    assert_eq!(
        s.pending_instructions(tid, dev.id, 0, 1_000, 10)
            .await
            .unwrap()
            .len(),
        2,
        "acked instruction is no longer pending"
    );

    let ev = DeviceEvent {
        device_id: dev.id,
        at: 1_300,
        kind: "refusal".into(),
        detail: serde_json::json!({"code": "replayed"}),
    };
    s.add_device_event(tid, &ev).await.unwrap();
    assert_eq!(s.list_device_events(tid, dev.id).await.unwrap(), vec![ev]);
}

async fn batches(s: &dyn Store) {
    let t = tenant("delta");
    s.create_tenant(&t).await.unwrap();
    let tid = t.tenant.id;
    s.create_enrollment_token(tid, &enrollment(tid, "h-d", 10, false))
        .await
        .unwrap();
    let dev = s
        .redeem_enrollment(tid, "h-d", &new_device(1_000))
        .await
        .unwrap()
        .unwrap();
    let row = BatchRow {
        batch_id: Uuid::new_v4(),
        device_id: dev.id,
        kind: "events".into(),
        priority: 2,
        items: 3,
        bytes: 100,
        created_at: 1_000,
        received_at: 1_001,
        blob_key: "spool/x.rpb".into(),
    };
    assert!(s.record_batch(tid, &row).await.unwrap());
    assert!(
        !s.record_batch(tid, &row).await.unwrap(),
        "second time is a duplicate"
    );
    assert_eq!(
        s.list_batches(tid, Some(dev.id), 100).await.unwrap(),
        vec![row.clone()]
    );
    assert_eq!(
        s.get_batch(tid, dev.id, row.batch_id).await.unwrap(),
        Some(row.clone())
    );
    assert_eq!(
        s.get_batch(tid, dev.id, Uuid::new_v4()).await.unwrap(),
        None
    );
    assert_eq!(s.list_batches(tid, None, 100).await.unwrap().len(), 1);
}

/// Every lookup with tenant B's id misses tenant A's rows.
async fn tenant_isolation(s: &dyn Store) {
    let a = tenant("echo");
    let b = tenant("foxtrot");
    s.create_tenant(&a).await.unwrap();
    s.create_tenant(&b).await.unwrap();
    let (ta, tb) = (a.tenant.id, b.tenant.id);
    let tok = enrollment(ta, "h-echo", 10, false);
    s.create_enrollment_token(ta, &tok).await.unwrap();
    assert_eq!(
        s.redeem_enrollment(tb, "h-echo", &new_device(1_000))
            .await
            .unwrap(),
        Err(TokenRejection::Unknown)
    );
    assert!(!s.revoke_enrollment_token(tb, tok.id, 1_000).await.unwrap());
    assert!(s.list_enrollment_tokens(tb).await.unwrap().is_empty());
    let dev = s
        .redeem_enrollment(ta, "h-echo", &new_device(1_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.get_device(tb, dev.id).await.unwrap(), None);
    assert!(s.list_devices(tb).await.unwrap().is_empty());
    assert!(!s.set_device_status(tb, dev.id, "revoked").await.unwrap());
    assert!(s.allocate_seqs(tb, &[dev.id]).await.unwrap().is_empty());
    s.insert_instructions(ta, &[instruction(dev.id, 1, 5_000)])
        .await
        .unwrap();
    assert!(s
        .pending_instructions(tb, dev.id, 0, 1_000, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(s.list_instructions(tb, dev.id).await.unwrap().is_empty());
    assert_eq!(s.get_instruction(tb, dev.id, 1).await.unwrap(), None);
    assert!(!s
        .finish_instruction(tb, dev.id, 1, "ok", &serde_json::json!({}), 1)
        .await
        .unwrap());
    assert!(s
        .list_batches(tb, Some(dev.id), 10)
        .await
        .unwrap()
        .is_empty());
    let batch = BatchRow {
        batch_id: Uuid::new_v4(),
        device_id: dev.id,
        kind: "events".into(),
        priority: 2,
        items: 1,
        bytes: 1,
        created_at: 1,
        received_at: 1,
        blob_key: "k".into(),
    };
    assert!(s.record_batch(ta, &batch).await.unwrap());
    assert_eq!(s.get_batch(tb, dev.id, batch.batch_id).await.unwrap(), None);
    assert!(s.list_device_events(tb, dev.id).await.unwrap().is_empty());
    assert_eq!(
        s.get_device(ta, dev.id).await.unwrap().unwrap().status,
        "active"
    );
}

/// A tenant with one active device, for the flow checks.
async fn tenant_with_device(s: &dyn Store, name: &str) -> (TenantId, DeviceId) {
    let t = tenant(name);
    s.create_tenant(&t).await.unwrap();
    let tid = t.tenant.id;
    let hash = format!("h-{name}");
    s.create_enrollment_token(tid, &enrollment(tid, &hash, 10, false))
        .await
        .unwrap();
    let dev = s
        .redeem_enrollment(tid, &hash, &new_device(1_000))
        .await
        .unwrap()
        .unwrap();
    (tid, dev.id)
}

fn batch(device: DeviceId, kind: &str, received_at: i64) -> BatchRow {
    BatchRow {
        batch_id: Uuid::new_v4(),
        device_id: device,
        kind: kind.into(),
        priority: 1,
        items: 10,
        bytes: 100,
        created_at: received_at,
        received_at,
        blob_key: format!("spool/{received_at}.rpb"),
    }
}

fn segment(level: SegmentLevel, start_ms: i64, end_ms: i64) -> FlowSegment {
    FlowSegment {
        id: Uuid::new_v4(),
        level,
        partition_hour: start_ms.div_euclid(3_600_000),
        start_ms,
        end_ms,
        rows: 7,
        bytes: 1234,
        blob_key: format!("flows/t/{}/{start_ms}.seg", level.as_str()),
        cut: level != SegmentLevel::Raw,
        compacted: false,
        created_at: 5,
    }
}

/// The spool processor's queue: across tenants, by kind, oldest first,
/// and a batch leaves it only with the commit that stores its rows.
async fn flow_batches(s: &dyn Store) {
    let (ta, da) = tenant_with_device(s, "golf").await;
    let (tb, db) = tenant_with_device(s, "hotel").await;
    let a1 = batch(da, "flows", 2_000_000_010);
    let b1 = batch(db, "flows", 2_000_000_005);
    let a2 = batch(da, "flows", 2_000_000_020);
    let ev = batch(da, "events", 2_000_000_001);
    for (t, b) in [(ta, &a1), (tb, &b1), (ta, &a2), (ta, &ev)] {
        assert!(s.record_batch(t, b).await.unwrap());
    }
    let queue = s.unprocessed_batches("flows", 10).await.unwrap();
    assert_eq!(
        queue,
        vec![(tb, b1.clone()), (ta, a1.clone()), (ta, a2.clone())],
        "oldest first across tenants, other kinds left out"
    );
    assert_eq!(
        s.unprocessed_batches("flows", 1).await.unwrap(),
        vec![(tb, b1.clone())]
    );

    let unknown = (da, Uuid::new_v4());
    assert_eq!(
        s.batch_states(ta, &[(da, a1.batch_id), unknown, (db, b1.batch_id)])
            .await
            .unwrap(),
        vec![
            BatchState::Pending,
            BatchState::Unknown,
            BatchState::Unknown
        ],
        "another tenant's batch is unknown here"
    );

    let seg = segment(SegmentLevel::Raw, 3_600_000, 3_600_500);
    s.commit_flow_segments(
        ta,
        &SegmentCommit {
            insert: std::slice::from_ref(&seg),
            processed: &[(da, a1.batch_id)],
            now: 2_000_000_100,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        s.batch_states(ta, &[(da, a1.batch_id), (da, a2.batch_id)])
            .await
            .unwrap(),
        vec![BatchState::Processed, BatchState::Pending]
    );
    assert_eq!(
        s.unprocessed_batches("flows", 10).await.unwrap(),
        vec![(tb, b1.clone()), (ta, a2.clone())]
    );

    // A second processor committing the same batch loses, and its segment
    // is not recorded: all or nothing.
    let dup = segment(SegmentLevel::Raw, 3_600_000, 3_600_500);
    let err = s
        .commit_flow_segments(
            ta,
            &SegmentCommit {
                insert: std::slice::from_ref(&dup),
                processed: &[(da, a2.batch_id), (da, a1.batch_id)],
                now: 2_000_000_200,
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(err, Err(StoreError::Raced(_))), "{err:?}");
    assert_eq!(
        s.batch_states(ta, &[(da, a2.batch_id)]).await.unwrap(),
        vec![BatchState::Pending],
        "the losing commit left the other batch untouched"
    );
    let listed = s
        .list_flow_segments(ta, SegmentLevel::Raw, 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(listed, vec![seg.clone()]);

    // Tenant B cannot mark tenant A's batch processed.
    assert!(matches!(
        s.commit_flow_segments(
            tb,
            &SegmentCommit {
                processed: &[(da, a2.batch_id)],
                now: 1,
                ..Default::default()
            },
        )
        .await,
        Err(StoreError::Raced(_))
    ));
    // Marking with nothing to store (a rejected batch) is allowed.
    s.commit_flow_segments(
        ta,
        &SegmentCommit {
            processed: &[(da, a2.batch_id)],
            now: 2_000_000_300,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        s.unprocessed_batches("flows", 10).await.unwrap(),
        vec![(tb, b1.clone())]
    );
    // Processing does not change the batch as the spine sees it.
    assert_eq!(s.get_batch(ta, da, a1.batch_id).await.unwrap(), Some(a1));
}

async fn flow_segments(s: &dyn Store) {
    let (ta, _) = tenant_with_device(s, "india").await;
    let (tb, _) = tenant_with_device(s, "juliett").await;
    let h = 3_600_000;
    let raw1 = segment(SegmentLevel::Raw, 10 * h, 10 * h + 1_000);
    let raw2 = segment(SegmentLevel::Raw, 10 * h + 2_000, 11 * h);
    let raw3 = segment(SegmentLevel::Raw, 11 * h, 11 * h + 5);
    let m1 = segment(SegmentLevel::M1, 10 * h, 11 * h);
    s.commit_flow_segments(
        ta,
        &SegmentCommit {
            insert: &[raw3.clone(), raw2.clone(), raw1.clone(), m1.clone()],
            now: 9,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let ids = |v: Vec<FlowSegment>| v.into_iter().map(|x| x.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s
            .list_flow_segments(ta, SegmentLevel::Raw, 0, i64::MAX)
            .await
            .unwrap()),
        vec![raw1.id, raw2.id, raw3.id],
        "ordered by start"
    );
    // Half-open ranges: [10h+1000, 10h+2000) touches neither raw1 nor raw2.
    assert!(s
        .list_flow_segments(ta, SegmentLevel::Raw, 10 * h + 1_000, 10 * h + 2_000)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        ids(s
            .list_flow_segments(ta, SegmentLevel::Raw, 10 * h + 999, 10 * h + 2_001)
            .await
            .unwrap()),
        vec![raw1.id, raw2.id]
    );
    assert_eq!(
        ids(s
            .list_flow_segments(ta, SegmentLevel::Raw, 11 * h, 12 * h)
            .await
            .unwrap()),
        vec![raw3.id]
    );
    assert_eq!(
        s.list_flow_segments(ta, SegmentLevel::M1, 0, i64::MAX)
            .await
            .unwrap(),
        vec![m1.clone()],
        "levels are separate and rows round-trip"
    );
    for level in [SegmentLevel::H1, SegmentLevel::D1] {
        assert!(s
            .list_flow_segments(ta, level, 0, i64::MAX)
            .await
            .unwrap()
            .is_empty());
    }
    // Every level round-trips, a day rollup included.
    let day = FlowSegment {
        partition_hour: 240,
        compacted: true,
        ..segment(SegmentLevel::D1, 240 * h, 264 * h)
    };
    s.commit_flow_segments(
        ta,
        &SegmentCommit {
            insert: std::slice::from_ref(&day),
            now: 9,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        s.list_flow_segments(ta, SegmentLevel::D1, 250 * h, 251 * h)
            .await
            .unwrap(),
        vec![day.clone()]
    );
    assert_eq!(s.delete_flow_segments(ta, &[day.id]).await.unwrap(), 1);
    assert!(
        s.list_flow_segments(tb, SegmentLevel::Raw, 0, i64::MAX)
            .await
            .unwrap()
            .is_empty(),
        "tenant B sees none of A's segments"
    );

    // Compaction swaps raw1+raw2 for one merged segment atomically.
    let merged = FlowSegment {
        compacted: true,
        ..segment(SegmentLevel::Raw, 10 * h, 11 * h)
    };
    s.commit_flow_segments(
        ta,
        &SegmentCommit {
            insert: std::slice::from_ref(&merged),
            delete: &[raw1.id, raw2.id],
            now: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        ids(s
            .list_flow_segments(ta, SegmentLevel::Raw, 0, i64::MAX)
            .await
            .unwrap()),
        vec![merged.id, raw3.id]
    );
    // A second compactor of the same sources loses and changes nothing.
    let again = segment(SegmentLevel::Raw, 10 * h, 11 * h);
    assert!(matches!(
        s.commit_flow_segments(
            ta,
            &SegmentCommit {
                insert: std::slice::from_ref(&again),
                delete: &[raw1.id, raw2.id],
                now: 11,
                ..Default::default()
            },
        )
        .await,
        Err(StoreError::Raced(_))
    ));
    // Inserting an id twice is refused too.
    assert!(matches!(
        s.commit_flow_segments(
            ta,
            &SegmentCommit {
                insert: std::slice::from_ref(&merged),
                now: 11,
                ..Default::default()
            },
        )
        .await,
        Err(StoreError::Raced(_))
    ));
    assert_eq!(
        ids(s
            .list_flow_segments(ta, SegmentLevel::Raw, 0, i64::MAX)
            .await
            .unwrap()),
        vec![merged.id, raw3.id]
    );
    // Tenant B can neither swap nor delete A's segments.
    assert!(s
        .commit_flow_segments(
            tb,
            &SegmentCommit {
                delete: &[merged.id],
                now: 12,
                ..Default::default()
            },
        )
        .await
        .is_err());
    assert_eq!(
        s.delete_flow_segments(tb, &[merged.id, raw3.id])
            .await
            .unwrap(),
        0
    );

    assert_eq!(
        s.delete_flow_segments(ta, &[merged.id, m1.id])
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        s.delete_flow_segments(ta, &[merged.id, m1.id])
            .await
            .unwrap(),
        0,
        "deleting again is a no-op"
    );
    assert_eq!(
        ids(s
            .list_flow_segments(ta, SegmentLevel::Raw, 0, i64::MAX)
            .await
            .unwrap()),
        vec![raw3.id]
    );
}

async fn tenant_settings(s: &dyn Store) {
    let a = tenant("settings-a");
    let b = tenant("settings-b");
    s.create_tenant(&a).await.unwrap();
    s.create_tenant(&b).await.unwrap();
    let (a, b) = (a.tenant.id, b.tenant.id);
    assert_eq!(s.tenant_setting(a, "k").await.unwrap(), None);
    s.set_tenant_setting(a, "k", &serde_json::json!({"v": 1}))
        .await
        .unwrap();
    s.set_tenant_setting(a, "k", &serde_json::json!({"v": 2}))
        .await
        .unwrap();
    assert_eq!(
        s.tenant_setting(a, "k").await.unwrap(),
        Some(serde_json::json!({"v": 2}))
    );
    // Another tenant's setting of the same name is its own.
    assert_eq!(s.tenant_setting(b, "k").await.unwrap(), None);
}

async fn flow_retention(s: &dyn Store) {
    let (ta, _) = tenant_with_device(s, "kilo").await;
    let (tb, _) = tenant_with_device(s, "lima").await;
    let defaults = FlowRetention {
        visible_days: 30,
        stored_days: 32,
    };
    assert_eq!(s.flow_retention(ta).await.unwrap(), defaults);
    s.set_flow_retention(ta, 7, 9).await.unwrap();
    s.set_flow_retention(ta, 90, 92).await.unwrap();
    assert_eq!(
        s.flow_retention(ta).await.unwrap(),
        FlowRetention {
            visible_days: 90,
            stored_days: 92
        }
    );
    assert_eq!(s.flow_retention(tb).await.unwrap(), defaults, "per tenant");
    assert!(s
        .set_flow_retention(TenantId(Uuid::new_v4()), 1, 2)
        .await
        .is_err());
}

fn occurrence(key: &str, at: i64) -> AlarmOccurrence {
    AlarmOccurrence {
        new_id: Uuid::new_v4(),
        device_id: None,
        kind: "port_scan".into(),
        severity: "medium".into(),
        title: "port scan from 192.0.2.1".into(),
        dedupe_key: key.into(),
        at,
        src: Some("192.0.2.1".into()),
        dst: Some("198.51.100.2".into()),
        dst_port: Some(22),
        protocol: Some(6),
        evidence: serde_json::json!([{ "at": at }]),
        flow_filter: Some("src host 192.0.2.1".into()),
        window_ms: 1_000,
        muted: false,
    }
}

/// The detection queue is separate from the flow queue, a batch leaves it
/// only with the commit of its alarms, and the same key within the window
/// bumps the alarm instead of making another.
async fn alarm_detection(s: &dyn Store) {
    let (ta, da) = tenant_with_device(s, "alarm-a").await;
    let (tb, _) = tenant_with_device(s, "alarm-b").await;
    let b1 = batch(da, "ids_alerts", 3_000_000_001);
    let b2 = batch(da, "ids_alerts", 3_000_000_002);
    for b in [&b1, &b2] {
        assert!(s.record_batch(ta, b).await.unwrap());
    }
    let queued = |q: Vec<(TenantId, BatchRow)>| -> Vec<Uuid> {
        q.into_iter()
            .filter(|(t, _)| *t == ta)
            .map(|(_, b)| b.batch_id)
            .collect()
    };
    assert_eq!(
        queued(s.undetected_batches("ids_alerts", 100).await.unwrap()),
        vec![b1.batch_id, b2.batch_id]
    );
    assert!(queued(s.unprocessed_batches("ids_alerts", 100).await.unwrap()).len() == 2);

    let first = occurrence("port_scan:192.0.2.1", 10_000);
    let out = s
        .commit_alarms(
            ta,
            &AlarmCommit {
                occurrences: &[first.clone(), occurrence("port_scan:192.0.2.1", 10_500)],
                detector_state: Some(b"state-1"),
                detected: &[(da, b1.batch_id)],
                max_evidence: 10,
                now: 50,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![
            AlarmOutcome::Created(first.new_id),
            AlarmOutcome::Bumped(first.new_id)
        ],
        "the second occurrence within the window bumps the first"
    );
    assert_eq!(
        s.detector_state(ta).await.unwrap().as_deref(),
        Some(&b"state-1"[..])
    );
    assert_eq!(s.detector_state(tb).await.unwrap(), None);
    assert_eq!(
        queued(s.undetected_batches("ids_alerts", 100).await.unwrap()),
        vec![b2.batch_id]
    );
    // The same batch again: refused, nothing changed.
    let again = s
        .commit_alarms(
            ta,
            &AlarmCommit {
                occurrences: &[occurrence("other", 10_000)],
                detector_state: Some(b"state-2"),
                detected: &[(da, b1.batch_id)],
                max_evidence: 10,
                now: 51,
            },
        )
        .await;
    assert!(matches!(again, Err(StoreError::Raced(_))), "{again:?}");
    assert_eq!(
        s.detector_state(ta).await.unwrap().as_deref(),
        Some(&b"state-1"[..])
    );

    let a = s.get_alarm(ta, first.new_id).await.unwrap().unwrap();
    assert_eq!((a.count, a.first_seen, a.last_seen), (2, 10_000, 10_500));
    assert_eq!(a.state, AlarmState::Active);
    assert_eq!(
        a.evidence,
        serde_json::json!([{ "at": 10_000 }, { "at": 10_500 }])
    );
    assert_eq!(a.dst_port, Some(22));
    assert_eq!(
        s.get_alarm(tb, first.new_id).await.unwrap(),
        None,
        "other tenant"
    );

    // Past the window: a new alarm. Evidence is bounded to the newest.
    let late = occurrence("port_scan:192.0.2.1", 12_000);
    let out = s
        .commit_alarms(
            ta,
            &AlarmCommit {
                occurrences: &[late.clone(), occurrence("port_scan:192.0.2.1", 12_001)],
                detected: &[(da, b2.batch_id)],
                max_evidence: 1,
                now: 52,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![
            AlarmOutcome::Created(late.new_id),
            AlarmOutcome::Bumped(late.new_id)
        ]
    );
    let l = s.get_alarm(ta, late.new_id).await.unwrap().unwrap();
    assert_eq!(l.evidence, serde_json::json!([{ "at": 12_001 }]));
    assert_eq!(
        s.detector_state(ta).await.unwrap().as_deref(),
        Some(&b"state-1"[..]),
        "kept"
    );

    let hist = s.alarm_history(ta, first.new_id).await.unwrap();
    let actions: Vec<&str> = hist.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["created", "bumped"]);
    assert_eq!(
        hist[0].detail,
        serde_json::json!({ "kind": "port_scan", "severity": "medium", "muted": false })
    );
    assert!(s.alarm_history(tb, first.new_id).await.unwrap().is_empty());
}

/// State changes, assignment and notes are logged; lists filter and page;
/// a resolved alarm never takes new occurrences.
async fn alarm_changes(s: &dyn Store) {
    let (ta, da) = tenant_with_device(s, "alarm-c").await;
    let (tb, _) = tenant_with_device(s, "alarm-d").await;
    let mut occ: Vec<AlarmOccurrence> = (0..5)
        .map(|i| occurrence(&format!("k{i}"), 1_000 * (i + 1)))
        .collect();
    occ[4].kind = "ids_alert".into();
    occ[4].severity = "high".into();
    occ[4].device_id = Some(da);
    s.commit_alarms(
        ta,
        &AlarmCommit {
            occurrences: &occ,
            max_evidence: 5,
            now: 7,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let id = |i: usize| occ[i].new_id;
    let all = s
        .list_alarms(
            ta,
            &AlarmFilter {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![id(4), id(3), id(2), id(1), id(0)],
        "newest first"
    );
    let page = s
        .list_alarms(
            ta,
            &AlarmFilter {
                limit: 2,
                before: Some((all[1].last_seen, all[1].id)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![id(2), id(1)]
    );
    let f = |kind: Option<&str>, dev: Option<DeviceId>| AlarmFilter {
        kind: kind.map(Into::into),
        device_id: dev,
        limit: 100,
        ..Default::default()
    };
    assert_eq!(
        s.list_alarms(ta, &f(Some("ids_alert"), None))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        s.list_alarms(ta, &f(None, Some(da))).await.unwrap().len(),
        1
    );
    let window = AlarmFilter {
        from: Some(2_000),
        to: Some(4_000),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(s.list_alarms(ta, &window).await.unwrap().len(), 2);
    assert!(s.list_alarms(tb, &f(None, None)).await.unwrap().is_empty());

    let acked = s
        .update_alarm(
            ta,
            id(0),
            "ana",
            &AlarmUpdate::State(AlarmState::Acknowledged),
            8,
        )
        .await
        .unwrap();
    assert_eq!(
        (acked.state, acked.updated_at),
        (AlarmState::Acknowledged, 8)
    );
    let who = s
        .update_alarm(
            ta,
            id(0),
            "ana",
            &AlarmUpdate::Assign(Some("bob".into())),
            9,
        )
        .await
        .unwrap();
    assert_eq!(who.assignee.as_deref(), Some("bob"));
    s.update_alarm(ta, id(0), "bob", &AlarmUpdate::Note("looking".into()), 10)
        .await
        .unwrap();
    s.update_alarm(
        ta,
        id(0),
        "bob",
        &AlarmUpdate::State(AlarmState::Resolved),
        11,
    )
    .await
    .unwrap();
    let wrong = s
        .update_alarm(
            tb,
            id(0),
            "eve",
            &AlarmUpdate::State(AlarmState::Archived),
            12,
        )
        .await;
    assert!(
        matches!(wrong, Err(StoreError::NotFound(_))),
        "other tenant: {wrong:?}"
    );
    let hist = s.alarm_history(ta, id(0)).await.unwrap();
    let lines: Vec<(&str, &str)> = hist
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            ("detector", "created"),
            ("ana", "state"),
            ("ana", "assigned"),
            ("bob", "note"),
            ("bob", "state")
        ]
    );
    assert_eq!(hist[3].detail, serde_json::json!({ "text": "looking" }));

    // Resolved: the same key makes a new alarm even inside the window.
    let mut again = occurrence("k0", 1_001);
    again.window_ms = 1_000_000;
    let out = s
        .commit_alarms(
            ta,
            &AlarmCommit {
                occurrences: &[again.clone()],
                max_evidence: 5,
                now: 13,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(out, vec![AlarmOutcome::Created(again.new_id)]);

    s.update_alarm(
        ta,
        id(1),
        "ana",
        &AlarmUpdate::State(AlarmState::Archived),
        14,
    )
    .await
    .unwrap();
    let listed = s.list_alarms(ta, &f(None, None)).await.unwrap();
    assert!(
        !listed.iter().any(|a| a.id == id(1)),
        "archived alarms are hidden by default"
    );
    let archived = AlarmFilter {
        state: Some(AlarmState::Archived),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(s.list_alarms(ta, &archived).await.unwrap().len(), 1);

    let counts = s.alarm_counts(ta).await.unwrap();
    assert_eq!(
        counts,
        vec![
            ("ids_alert".into(), "high".into(), AlarmState::Active, 1),
            ("port_scan".into(), "medium".into(), AlarmState::Active, 3),
            ("port_scan".into(), "medium".into(), AlarmState::Resolved, 1),
        ]
    );
    assert!(s.alarm_counts(tb).await.unwrap().is_empty());

    // The notifier's queue runs across tenants, in order.
    let evs = s.alarm_events_after(0, 10_000).await.unwrap();
    assert!(evs.windows(2).all(|w| w[0].1.id < w[1].1.id));
    let mine: Vec<i64> = evs
        .iter()
        .filter(|(t, _)| *t == ta)
        .map(|(_, e)| e.id)
        .collect();
    let last = *mine.last().unwrap();
    assert!(s
        .alarm_events_after(last, 10)
        .await
        .unwrap()
        .iter()
        .all(|(_, e)| e.id > last));
}

async fn alarm_rules_and_webhooks(s: &dyn Store) {
    let (ta, _) = tenant_with_device(s, "alarm-e").await;
    let (tb, _) = tenant_with_device(s, "alarm-f").await;
    let rule = AlarmRuleRow {
        id: Uuid::new_v4(),
        action: "mute".into(),
        kind: Some("port_scan".into()),
        host: None,
        network: Some("10.0.0.0/8".into()),
        port: Some(22),
        expires_at: Some(99),
        comment: "scanner".into(),
        created_at: 5,
    };
    s.create_alarm_rule(ta, &rule).await.unwrap();
    assert_eq!(s.list_alarm_rules(ta).await.unwrap(), vec![rule.clone()]);
    assert!(s.list_alarm_rules(tb).await.unwrap().is_empty());
    assert!(
        !s.delete_alarm_rule(tb, rule.id).await.unwrap(),
        "other tenant"
    );
    assert!(s.delete_alarm_rule(ta, rule.id).await.unwrap());
    assert!(s.list_alarm_rules(ta).await.unwrap().is_empty());

    let hook = WebhookRow {
        id: Uuid::new_v4(),
        url: "https://hooks.example.net/a".into(),
        secret_wrapped: vec![7; 40],
        min_severity: "medium".into(),
        kinds: vec!["ids_alert".into()],
        created_at: 6,
    };
    s.create_webhook(ta, &hook).await.unwrap();
    assert_eq!(s.list_webhooks(ta).await.unwrap(), vec![hook.clone()]);
    assert!(s.list_webhooks(tb).await.unwrap().is_empty());
    assert!(!s.delete_webhook(tb, hook.id).await.unwrap());
    assert!(s.delete_webhook(ta, hook.id).await.unwrap());
}

async fn webhook_deliveries(s: &dyn Store) {
    let (ta, _) = tenant_with_device(s, "alarm-g").await;
    let (tb, _) = tenant_with_device(s, "alarm-h").await;
    let d = |event_id: i64, next_at: i64| DeliveryRow {
        id: Uuid::new_v4(),
        channel: DeliveryChannel::Webhook,
        target_id: Uuid::from_u128(42),
        alarm_id: Uuid::new_v4(),
        event_id,
        body: format!("{{\"event\":{event_id}}}"),
        status: DeliveryStatus::Pending,
        attempts: 0,
        next_at,
        last_error: None,
        created_at: 1,
        finished_at: None,
    };
    let (d1, d2) = (d(1, 100), d(2, 200));
    s.queue_deliveries("test_cursor", 2, &[(ta, d1.clone()), (ta, d2.clone())])
        .await
        .unwrap();
    assert_eq!(
        s.get_meta("test_cursor").await.unwrap(),
        Some(b"2".to_vec())
    );
    // The same (webhook, event) again is skipped, the cursor still moves.
    s.queue_deliveries("test_cursor", 3, &[(ta, d(1, 100))])
        .await
        .unwrap();
    assert_eq!(
        s.get_meta("test_cursor").await.unwrap(),
        Some(b"3".to_vec())
    );
    assert_eq!(s.list_deliveries(ta, None, 10).await.unwrap().len(), 2);

    let due = s.due_deliveries(150, 10).await.unwrap();
    assert_eq!(due, vec![(ta, d1.clone())]);
    let mut retry = d1.clone();
    retry.attempts = 1;
    retry.next_at = 300;
    retry.last_error = Some("http 500".into());
    s.record_delivery_attempt(ta, &retry).await.unwrap();
    assert!(s
        .due_deliveries(250, 10)
        .await
        .unwrap()
        .iter()
        .all(|(_, r)| r.id != d1.id));
    let mut dead = retry.clone();
    dead.attempts = 2;
    dead.status = DeliveryStatus::Dead;
    dead.finished_at = Some(301);
    s.record_delivery_attempt(ta, &dead).await.unwrap();
    let wrong = s.record_delivery_attempt(tb, &dead).await;
    assert!(matches!(wrong, Err(StoreError::NotFound(_))), "{wrong:?}");
    assert_eq!(
        s.list_deliveries(ta, Some(DeliveryStatus::Dead), 10)
            .await
            .unwrap(),
        vec![dead.clone()]
    );
    assert_eq!(
        s.due_deliveries(1_000, 10).await.unwrap(),
        vec![(ta, d2.clone())]
    );
    assert!(s.list_deliveries(tb, None, 10).await.unwrap().is_empty());
}

fn audit_entry(action: &str) -> NewAuditEntry {
    NewAuditEntry {
        at: 1_000,
        actor: "cli".into(),
        action: action.into(),
        target: "tenant:audit".into(),
        detail: serde_json::json!({"what": action, "n": [1, 2]}),
    }
}

/// Walks the chain after `after`: contiguous seqs, each linked to the one
/// before and hashed as `audit::entry_hash` says. Returns the entries.
async fn walk_chain(s: &dyn Store, after: u64) -> Vec<AuditEntry> {
    let mut all = Vec::new();
    let mut cursor = after;
    loop {
        let page = s.audit_chain(cursor, 3).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = last.seq;
        all.extend(page);
    }
    for w in all.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1, "seqs are contiguous");
        assert_eq!(
            w[1].prev_hash, w[0].hash,
            "seq {} links to its predecessor",
            w[1].seq
        );
    }
    for e in &all {
        assert_eq!(
            e.hash,
            crate::audit::entry_hash(e).to_vec(),
            "seq {}",
            e.seq
        );
    }
    all
}

async fn audit_log(s: &dyn Store) {
    let (a, b) = (tenant("audit-a"), tenant("audit-b"));
    s.create_tenant(&a).await.unwrap();
    s.create_tenant(&b).await.unwrap();
    let (a, b) = (a.tenant.id, b.tenant.id);
    let start = s.audit_anchor().await.unwrap().map_or(0, |x| x.seq);

    let e1 = s.append_audit(Some(a), &audit_entry("a1")).await.unwrap();
    assert_eq!(e1.seq, start + 1);
    if start == 0 {
        assert_eq!(
            e1.prev_hash,
            crate::audit::GENESIS.to_vec(),
            "the first entry"
        );
    }
    assert_eq!(e1.tenant_id, Some(a));
    // The detail is kept as the JSON text that was hashed.
    assert_eq!(
        e1.detail,
        serde_json::json!({"what": "a1", "n": [1, 2]}).to_string()
    );
    let e2 = s.append_audit(None, &audit_entry("portal")).await.unwrap();
    let e3 = s.append_audit(Some(b), &audit_entry("b1")).await.unwrap();
    let e4 = s.append_audit(Some(a), &audit_entry("a2")).await.unwrap();
    assert_eq!(e2.prev_hash, e1.hash);
    assert_eq!(e4.prev_hash, e3.hash, "one chain across tenants");
    assert_eq!(
        s.audit_anchor().await.unwrap(),
        Some(AuditAnchor {
            seq: e4.seq,
            hash: e4.hash.clone()
        })
    );

    // Per tenant: only its own entries, paged by seq.
    assert_eq!(
        s.list_audit(a, 0, 100).await.unwrap(),
        vec![e1.clone(), e4.clone()]
    );
    assert_eq!(s.list_audit(b, 0, 100).await.unwrap(), vec![e3.clone()]);
    assert_eq!(s.list_audit(a, 0, 1).await.unwrap(), vec![e1.clone()]);
    assert_eq!(
        s.list_audit(a, e1.seq, 100).await.unwrap(),
        vec![e4.clone()]
    );
    assert!(s.list_audit(a, e4.seq, 100).await.unwrap().is_empty());
    assert!(s
        .list_audit(TenantId(Uuid::new_v4()), 0, 100)
        .await
        .unwrap()
        .is_empty());

    // The whole chain, for the operator and the verifier.
    assert_eq!(
        s.audit_chain(start, 100).await.unwrap(),
        vec![e1.clone(), e2.clone(), e3.clone(), e4.clone()]
    );
    assert_eq!(
        s.audit_chain(e2.seq, 100).await.unwrap(),
        vec![e3.clone(), e4.clone()]
    );
    assert_eq!(
        s.audit_chain(start, 2).await.unwrap(),
        vec![e1.clone(), e2.clone()]
    );

    // Concurrent appends still make one linear chain.
    let c: Vec<NewAuditEntry> = (1..=8).map(|i| audit_entry(&format!("c{i}"))).collect();
    let ap = |i: usize| s.append_audit(Some(a), &c[i]);
    let r = tokio::join!(ap(0), ap(1), ap(2), ap(3), ap(4), ap(5), ap(6), ap(7));
    for e in [r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7] {
        e.unwrap();
    }
    let chain = walk_chain(s, start).await;
    assert_eq!(chain.len(), 12);
    let last = chain.last().unwrap();
    assert_eq!(
        s.audit_anchor().await.unwrap(),
        Some(AuditAnchor {
            seq: last.seq,
            hash: last.hash.clone()
        })
    );
    assert_eq!(s.list_audit(a, 0, 100).await.unwrap().len(), 10);
}

fn billing_update(event: &str, at: i64, customer: &str) -> BillingUpdate {
    BillingUpdate {
        event_id: event.into(),
        event_at: at,
        customer_id: customer.into(),
        email: None,
        card_brand: None,
        card_last4: None,
        subscription: None,
        now: 5_000,
    }
}

fn subscription(plan: Option<&str>, status: &str, to: TenantStatus) -> Option<SubscriptionChange> {
    Some(SubscriptionChange {
        plan: plan.map(String::from),
        status: status.into(),
        tenant_status: Some(to),
    })
}

async fn billing(s: &dyn Store) {
    let (a, b) = (tenant("billing-a"), tenant("billing-b"));
    s.create_tenant(&a).await.unwrap();
    s.create_tenant(&b).await.unwrap();
    let (a, b) = (a.tenant.id, b.tenant.id);
    assert_eq!(s.get_billing(a).await.unwrap(), None);
    assert_eq!(s.billing_tenant("cus_a").await.unwrap(), None);

    let first = BillingUpdate {
        email: Some("owner@a.example".into()),
        ..billing_update("evt_1", 1_000, "cus_a")
    };
    let BillingOutcome::Applied { row, tenant_status } = s.apply_billing(a, &first).await.unwrap()
    else {
        panic!("the first event applies")
    };
    assert_eq!(tenant_status, None);
    assert_eq!(row.email.as_deref(), Some("owner@a.example"));
    assert_eq!(s.get_billing(a).await.unwrap(), Some(row.clone()));
    assert_eq!(s.billing_tenant("cus_a").await.unwrap(), Some(a));
    // The same event again changes nothing, even with other content.
    let replay = BillingUpdate {
        email: Some("attacker@evil.example".into()),
        ..first.clone()
    };
    assert_eq!(
        s.apply_billing(a, &replay).await.unwrap(),
        BillingOutcome::Duplicate
    );
    assert_eq!(s.get_billing(a).await.unwrap(), Some(row));

    // A cancellation suspends the tenant in the same transaction.
    let cancel = BillingUpdate {
        subscription: subscription(Some("pro"), "canceled", TenantStatus::Suspended),
        ..billing_update("evt_2", 2_000, "cus_a")
    };
    let out = s.apply_billing(a, &cancel).await.unwrap();
    let BillingOutcome::Applied { row, tenant_status } = out else {
        panic!("{out:?}")
    };
    assert_eq!(tenant_status, Some(TenantStatus::Suspended));
    assert_eq!(
        (row.plan.as_deref(), row.status.as_deref(), row.status_at),
        (Some("pro"), Some("canceled"), Some(2_000))
    );
    assert_eq!(row.email.as_deref(), Some("owner@a.example"), "kept");
    let status = |t| async move { s.get_tenant(t).await.unwrap().unwrap().status };
    assert_eq!(status(a).await, TenantStatus::Suspended);
    assert_eq!(status(b).await, TenantStatus::Active, "only this tenant");

    // An older subscription event delivered late does not undo it.
    let late = BillingUpdate {
        subscription: subscription(Some("basic"), "active", TenantStatus::Active),
        ..billing_update("evt_3", 1_500, "cus_a")
    };
    let out = s.apply_billing(a, &late).await.unwrap();
    assert!(
        matches!(&out, BillingOutcome::Stale { row } if row.status.as_deref() == Some("canceled") && row.plan.as_deref() == Some("pro")),
        "{out:?}"
    );
    assert_eq!(status(a).await, TenantStatus::Suspended);

    // A newer one does; a plan left out keeps the stored one.
    let renew = BillingUpdate {
        subscription: subscription(None, "active", TenantStatus::Active),
        ..billing_update("evt_4", 2_500, "cus_a")
    };
    let BillingOutcome::Applied { row, .. } = s.apply_billing(a, &renew).await.unwrap() else {
        panic!("a newer event applies")
    };
    assert_eq!(
        (row.plan.as_deref(), row.status.as_deref()),
        (Some("pro"), Some("active"))
    );
    assert_eq!(status(a).await, TenantStatus::Active);

    // Card brand and last 4 travel together.
    let card = BillingUpdate {
        card_brand: Some("visa".into()),
        card_last4: Some("4242".into()),
        ..billing_update("evt_5", 2_600, "cus_a")
    };
    let BillingOutcome::Applied { row, .. } = s.apply_billing(a, &card).await.unwrap() else {
        panic!("card event applies")
    };
    assert_eq!(
        (row.card_brand.as_deref(), row.card_last4.as_deref()),
        (Some("visa"), Some("4242"))
    );

    // A customer billed to A cannot be claimed by B; the refused event is
    // not used up by the refusal.
    let steal = billing_update("evt_6", 3_000, "cus_a");
    assert!(matches!(
        s.apply_billing(b, &steal).await,
        Err(StoreError::Conflict(_))
    ));
    let own = billing_update("evt_6", 3_000, "cus_b");
    assert!(matches!(
        s.apply_billing(b, &own).await.unwrap(),
        BillingOutcome::Applied { .. }
    ));
    assert_eq!(s.billing_tenant("cus_b").await.unwrap(), Some(b));
    assert_eq!(
        s.get_billing(a).await.unwrap().unwrap().customer_id,
        "cus_a"
    );
    assert_eq!(s.get_billing(b).await.unwrap().unwrap().email, None);
    assert!(s
        .apply_billing(
            TenantId(Uuid::new_v4()),
            &billing_update("evt_7", 1, "cus_x")
        )
        .await
        .is_err());
}

fn plan(name: &str, max_devices: Option<u32>) -> Plan {
    Plan {
        name: name.into(),
        visible_days: 7,
        stored_days: 9,
        max_devices,
        features: vec!["flows".into()],
        updated_at: 5,
    }
}

async fn plans(s: &dyn Store) {
    let (ta, _) = tenant_with_device(s, "plan-a").await;
    let (tb, _) = tenant_with_device(s, "plan-b").await;
    // Every tenant starts on the default plan the migration created.
    let std = s
        .get_plan(DEFAULT_PLAN)
        .await
        .unwrap()
        .expect("default plan");
    assert_eq!(
        (std.visible_days, std.stored_days, std.max_devices),
        (30, 32, None)
    );
    assert_eq!(s.tenant_plan(ta).await.unwrap().plan, DEFAULT_PLAN);
    assert_eq!(s.effective_plan(ta).await.unwrap().features, std.features);

    let small = plan("small", Some(2));
    s.upsert_plan(&small).await.unwrap();
    assert_eq!(s.get_plan("small").await.unwrap(), Some(small.clone()));
    let mut bigger = small.clone();
    bigger.visible_days = 10;
    bigger.stored_days = 12;
    s.upsert_plan(&bigger).await.unwrap();
    assert_eq!(s.get_plan("small").await.unwrap(), Some(bigger.clone()));
    let names: Vec<String> = s
        .list_plans()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert!(names.contains(&"small".to_string()) && names.contains(&DEFAULT_PLAN.to_string()));

    let on_small = TenantPlan {
        plan: "small".into(),
        max_devices: Some(5),
        ..TenantPlan::default()
    };
    s.set_tenant_plan(ta, &on_small).await.unwrap();
    assert_eq!(s.tenant_plan(ta).await.unwrap(), on_small);
    let eff = s.effective_plan(ta).await.unwrap();
    assert_eq!(
        eff,
        EffectivePlan {
            plan: "small".into(),
            visible_days: 10,
            stored_days: 12,
            max_devices: Some(5),
            features: vec!["flows".into()],
        },
        "the override wins, the rest is the plan's"
    );
    assert_eq!(s.flow_retention(ta).await.unwrap().stored_days, 12);
    // The flow windows are overrides that keep the plan.
    s.set_flow_retention(ta, 3, 4).await.unwrap();
    let eff = s.effective_plan(ta).await.unwrap();
    assert_eq!(
        (eff.plan.as_str(), eff.visible_days, eff.stored_days),
        ("small", 3, 4)
    );
    assert_eq!(
        s.effective_plan(tb).await.unwrap().plan,
        DEFAULT_PLAN,
        "per tenant"
    );

    assert!(matches!(
        s.set_tenant_plan(
            tb,
            &TenantPlan {
                plan: "nope".into(),
                ..TenantPlan::default()
            }
        )
        .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(
        matches!(s.delete_plan("small").await, Err(StoreError::Conflict(_))),
        "in use"
    );
    assert!(matches!(
        s.delete_plan(DEFAULT_PLAN).await,
        Err(StoreError::Conflict(_))
    ));
    s.upsert_plan(&plan("unused", None)).await.unwrap();
    assert!(s.delete_plan("unused").await.unwrap());
    assert!(!s.delete_plan("unused").await.unwrap());
}

async fn device_limit(s: &dyn Store) {
    let (t, _) = tenant_with_device(s, "limit-a").await;
    s.upsert_plan(&plan("two-devices", Some(2))).await.unwrap();
    s.set_tenant_plan(
        t,
        &TenantPlan {
            plan: "two-devices".into(),
            ..TenantPlan::default()
        },
    )
    .await
    .unwrap();
    s.create_enrollment_token(t, &enrollment(t, "h-limit", 10, true))
        .await
        .unwrap();
    // One device exists; a pending one takes the second place.
    let second = s
        .redeem_enrollment(t, "h-limit", &new_device(1_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.status, "pending");
    assert_eq!(
        s.redeem_enrollment(t, "h-limit", &new_device(1_000))
            .await
            .unwrap(),
        Err(TokenRejection::DeviceLimit(2))
    );
    let uses = s.list_enrollment_tokens(t).await.unwrap()[0].uses;
    assert_eq!(uses, 1, "a refused redemption does not use the token");
    // A revoked device frees its place.
    assert!(s.set_device_status(t, second.id, "revoked").await.unwrap());
    assert!(s
        .redeem_enrollment(t, "h-limit", &new_device(1_000))
        .await
        .unwrap()
        .is_ok());
}

async fn retention(s: &dyn Store) {
    let (ta, da) = tenant_with_device(s, "keep-a").await;
    let (tb, db) = tenant_with_device(s, "keep-b").await;
    let old = batch(da, "flows", 100);
    let new = batch(da, "flows", 10_000);
    let other = batch(db, "flows", 100);
    for (t, b) in [(ta, &old), (ta, &new), (tb, &other)] {
        assert!(s.record_batch(t, b).await.unwrap());
    }
    let event = |device_id, at| DeviceEvent {
        device_id,
        at,
        kind: "refusal".into(),
        detail: serde_json::json!({}),
    };
    s.add_device_event(ta, &event(da, 100)).await.unwrap();
    s.add_device_event(ta, &event(da, 10_000)).await.unwrap();
    s.add_device_event(tb, &event(db, 100)).await.unwrap();
    for (t, key, at) in [(ta, "old", 100), (ta, "new", 10_000), (tb, "old", 100)] {
        s.commit_alarms(
            t,
            &AlarmCommit {
                occurrences: &[occurrence(key, at * 1000)],
                detector_state: None,
                detected: &[],
                max_evidence: 10,
                now: at,
            },
        )
        .await
        .unwrap();
    }

    // The spool: only frames whose work is done, and only older ones.
    let rule = [SpoolRule {
        kind: Some("flows"),
        processed: true,
        detected: false,
    }];
    assert!(
        s.spent_spool(Some(ta), &rule, 5_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "unprocessed"
    );
    s.commit_flow_segments(
        ta,
        &SegmentCommit {
            processed: &[(da, old.batch_id), (da, new.batch_id)],
            now: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let spent = s.spent_spool(Some(ta), &rule, 5_000, 10).await.unwrap();
    assert_eq!(spent, vec![(ta, da, old.batch_id, old.blob_key.clone())]);
    let any = [SpoolRule {
        kind: None,
        processed: false,
        detected: false,
    }];
    let across = s.spent_spool(None, &any, 5_000, 1_000).await.unwrap();
    let mut mine: Vec<TenantId> = across
        .into_iter()
        .map(|r| r.0)
        .filter(|t| *t == ta || *t == tb)
        .collect();
    mine.sort();
    let mut both = vec![ta, tb];
    both.sort();
    assert_eq!(mine, both, "across tenants");
    s.mark_spool_deleted(ta, &[(da, old.batch_id)], 6_000)
        .await
        .unwrap();
    assert!(s
        .spent_spool(Some(ta), &any, 5_000, 10)
        .await
        .unwrap()
        .is_empty());

    let report = s.delete_tenant_data_before(ta, 5_000).await.unwrap();
    assert_eq!(
        (report.alarms, report.device_events, report.batches),
        (1, 1, 1),
        "{report:?}"
    );
    assert!(report.alarm_history >= 1);
    assert!(s.get_batch(ta, da, old.batch_id).await.unwrap().is_none());
    assert!(s.get_batch(ta, da, new.batch_id).await.unwrap().is_some());
    assert_eq!(s.list_device_events(ta, da).await.unwrap().len(), 1);
    assert_eq!(
        s.list_alarms(ta, &AlarmFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
    // The other tenant keeps everything.
    assert_eq!(s.list_device_events(tb, db).await.unwrap().len(), 1);
    assert_eq!(
        s.list_alarms(tb, &AlarmFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(s.get_batch(tb, db, other.batch_id).await.unwrap().is_some());
}

async fn cancellation_and_purge(s: &dyn Store) {
    let (ta, da) = tenant_with_device(s, "gone-a").await;
    let (tb, db) = tenant_with_device(s, "gone-b").await;
    let b = batch(da, "flows", 100);
    assert!(s.record_batch(ta, &b).await.unwrap());
    assert!(s.record_batch(tb, &batch(db, "flows", 100)).await.unwrap());
    s.set_tenant_setting(ta, "k", &serde_json::json!(1))
        .await
        .unwrap();
    s.set_tenant_setting(tb, "k", &serde_json::json!(1))
        .await
        .unwrap();
    s.append_audit(Some(ta), &audit_entry("tenant.cancel"))
        .await
        .unwrap();

    s.cancel_tenant(ta, 1_000, 2_000).await.unwrap();
    let t = s.get_tenant(ta).await.unwrap().unwrap();
    assert_eq!(
        t.lifecycle,
        Lifecycle::Cancelled {
            at: 1_000,
            delete_after: 2_000
        }
    );
    assert!(!t.is_live());
    assert!(matches!(
        s.cancel_tenant(ta, 1_000, 2_000).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.cancel_tenant(TenantId(Uuid::new_v4()), 1, 2).await,
        Err(StoreError::NotFound(_))
    ));
    let due = |v: Vec<Tenant>| v.into_iter().filter(|t| t.id == ta || t.id == tb).count();
    assert_eq!(due(s.tenants_due_for_deletion(1_999).await.unwrap()), 0);
    assert_eq!(due(s.tenants_due_for_deletion(2_000).await.unwrap()), 1);
    // Reactivation inside the window, then cancelled again.
    assert!(s.reactivate_tenant(ta).await.unwrap());
    assert!(!s.reactivate_tenant(ta).await.unwrap(), "already live");
    assert!(s.get_tenant(ta).await.unwrap().unwrap().is_live());
    s.cancel_tenant(ta, 3_000, 4_000).await.unwrap();

    let keys = s.tenant_blob_keys(ta).await.unwrap();
    assert_eq!(keys, vec![b.blob_key.clone()]);
    let removed = s.purge_tenant(ta, 4_000).await.unwrap();
    assert_eq!(removed.get("devices"), Some(&1));
    assert_eq!(removed.get("batches"), Some(&1));
    assert_eq!(removed.get("tenant_keys"), Some(&1));
    assert_eq!(removed.get("tenant_settings"), Some(&1));
    assert!(!removed.contains_key("audit_log"));
    let t = s.get_tenant(ta).await.unwrap().unwrap();
    assert_eq!(t.lifecycle, Lifecycle::Deleted { at: 4_000 });
    assert!(
        s.tenant_by_name("gone-a").await.unwrap().is_none(),
        "name released"
    );
    assert!(s
        .tenant_by_domain("gone-a.example.net")
        .await
        .unwrap()
        .is_none());
    assert!(s.tenant_keys(ta).await.is_err(), "keys destroyed");
    assert!(s.list_devices(ta).await.unwrap().is_empty());
    assert!(!s.reactivate_tenant(ta).await.unwrap(), "deleted is final");
    assert!(matches!(
        s.purge_tenant(ta, 5_000).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        s.list_audit(ta, 0, 10).await.unwrap().len(),
        1,
        "the audit log stays"
    );
    // The name can be taken again.
    s.create_tenant(&tenant("gone-a")).await.unwrap();
    // The other tenant is untouched.
    assert_eq!(s.list_devices(tb).await.unwrap().len(), 1);
    assert!(s.tenant_keys(tb).await.is_ok());
    assert_eq!(
        s.tenant_setting(tb, "k").await.unwrap(),
        Some(serde_json::json!(1))
    );
}

/// A tenant keeps the region it was created in, through every lookup.
async fn tenant_regions(s: &dyn Store) {
    let mut eu = tenant("region-eu");
    eu.tenant.region = "eu".into();
    s.create_tenant(&eu).await.unwrap();
    let got = s.get_tenant(eu.tenant.id).await.unwrap().unwrap();
    assert_eq!(got.region, "eu");
    let by_domain = s
        .tenant_by_domain("region-eu.example.net")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_domain.region, "eu");
    let listed = s.list_tenants().await.unwrap();
    let row = listed.iter().find(|t| t.id == eu.tenant.id).unwrap();
    assert_eq!(row.region, "eu");
    assert!(listed
        .iter()
        .filter(|t| t.id != eu.tenant.id)
        .all(|t| t.region == "default"));
}

fn user(tenant: Option<TenantId>, email: &str, role: Option<&str>) -> UserRow {
    UserRow {
        id: UserId(Uuid::new_v4()),
        tenant_id: tenant,
        email: email.into(),
        role: role.map(String::from),
        password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
        setup_token_hash: None,
        setup_expires_at: None,
        totp_secret_wrapped: None,
        totp_enabled: false,
        totp_last_step: 0,
        failed_logins: 0,
        locked_until: None,
        created_at: 10,
        offboarded_at: None,
    }
}

fn api_token(tenant: TenantId, hash: &str, created_by: Option<UserId>) -> ApiToken {
    ApiToken {
        id: Uuid::new_v4(),
        tenant_id: Some(tenant),
        name: hash.into(),
        token_hash: hash.into(),
        role: "analyst".into(),
        created_at: 10,
        expires_at: None,
        revoked_at: None,
        created_by,
    }
}

fn session(tenant: TenantId, user: UserId, hash: &str) -> SessionRow {
    SessionRow {
        id_hash: hash.into(),
        tenant_id: tenant,
        user_id: user,
        csrf_hash: format!("csrf-{hash}"),
        created_at: 10,
        last_seen: 10,
        expires_at: 1_000,
        revoked_at: None,
    }
}

/// Accounts, lockout counting, single-use TOTP steps and recovery codes,
/// sessions, tokens, MSP grants and offboarding; every call per tenant
/// (or per the MSP scope) and isolated from the others.
async fn users_and_access(s: &dyn Store) {
    let (ta, tb) = (tenant("uniform"), tenant("victor"));
    s.create_tenant(&ta).await.unwrap();
    s.create_tenant(&tb).await.unwrap();
    let (a, b) = (Some(ta.tenant.id), Some(tb.tenant.id));

    // Accounts: one live email per scope; the same email elsewhere is another account.
    let ann = user(a, "ann@uniform.example", Some("owner"));
    s.create_user(a, &ann).await.unwrap();
    assert!(matches!(
        s.create_user(a, &user(a, "ann@uniform.example", Some("admin")))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let ann_b = user(b, "ann@uniform.example", Some("read_only"));
    s.create_user(b, &ann_b).await.unwrap();
    let msp = user(None, "ann@uniform.example", None);
    s.create_user(None, &msp).await.unwrap();
    assert_eq!(s.get_user(a, ann.id).await.unwrap(), Some(ann.clone()));
    assert_eq!(s.get_user(b, ann.id).await.unwrap(), None);
    assert_eq!(s.get_user(None, ann.id).await.unwrap(), None);
    assert_eq!(s.get_user(a, msp.id).await.unwrap(), None);
    assert_eq!(
        s.user_by_email(a, "ANN@uniform.example").await.unwrap(),
        Some(ann.clone())
    );
    assert_eq!(
        s.user_by_email(None, "ann@uniform.example").await.unwrap(),
        Some(msp.clone())
    );
    assert_eq!(s.list_users(a).await.unwrap(), vec![ann.clone()]);
    assert_eq!(s.list_users(None).await.unwrap(), vec![msp.clone()]);

    // Setup tokens: found in their scope until they expire or are used.
    let bob = UserRow {
        password_hash: None,
        setup_token_hash: Some("setup-bob".into()),
        setup_expires_at: Some(100),
        ..user(a, "bob@uniform.example", Some("analyst"))
    };
    s.create_user(a, &bob).await.unwrap();
    assert_eq!(
        s.user_by_setup_token(a, "setup-bob", 99)
            .await
            .unwrap()
            .map(|u| u.id),
        Some(bob.id)
    );
    assert_eq!(
        s.user_by_setup_token(a, "setup-bob", 100).await.unwrap(),
        None
    );
    assert_eq!(
        s.user_by_setup_token(b, "setup-bob", 99).await.unwrap(),
        None
    );
    let set = UserUpdate {
        password_hash: Some("$argon2id$new".into()),
        role: Some("admin".into()),
        ..UserUpdate::default()
    };
    assert!(!s.update_user(b, bob.id, &set).await.unwrap());
    assert!(s.update_user(a, bob.id, &set).await.unwrap());
    let got = s.get_user(a, bob.id).await.unwrap().unwrap();
    assert_eq!(got.password_hash.as_deref(), Some("$argon2id$new"));
    assert_eq!(got.role.as_deref(), Some("admin"));
    assert_eq!(got.setup_token_hash, None);
    assert_eq!(
        s.user_by_setup_token(a, "setup-bob", 1).await.unwrap(),
        None
    );

    // Lockout counting: the third failure locks and starts again; success resets.
    let f1 = s.login_failed(a, ann.id, 50, 3, 900).await.unwrap();
    assert_eq!(
        f1,
        LoginFailure {
            failures: 1,
            locked_until: None
        }
    );
    assert!(s.login_failed(b, ann.id, 50, 3, 900).await.is_err());
    s.login_failed(a, ann.id, 51, 3, 900).await.unwrap();
    let f3 = s.login_failed(a, ann.id, 52, 3, 900).await.unwrap();
    assert_eq!(
        f3,
        LoginFailure {
            failures: 3,
            locked_until: Some(952)
        }
    );
    let got = s.get_user(a, ann.id).await.unwrap().unwrap();
    assert_eq!((got.failed_logins, got.locked_until), (0, Some(952)));
    s.login_failed(a, ann.id, 53, 3, 900).await.unwrap();
    s.login_succeeded(a, ann.id).await.unwrap();
    let got = s.get_user(a, ann.id).await.unwrap().unwrap();
    assert_eq!((got.failed_logins, got.locked_until), (0, None));

    // TOTP: a wrapped secret, each step accepted once and only going forward.
    let totp = UserUpdate {
        totp_secret_wrapped: Some(Some(vec![9; 48])),
        ..UserUpdate::default()
    };
    assert!(s.update_user(a, ann.id, &totp).await.unwrap());
    let on = UserUpdate {
        totp_enabled: Some(true),
        recovery_code_hashes: Some(vec!["rc-1".into(), "rc-2".into()]),
        ..UserUpdate::default()
    };
    assert!(s.update_user(a, ann.id, &on).await.unwrap());
    let got = s.get_user(a, ann.id).await.unwrap().unwrap();
    assert_eq!(got.totp_secret_wrapped, Some(vec![9; 48]));
    assert!(got.totp_enabled);
    assert!(s.use_totp_step(a, ann.id, 1000).await.unwrap());
    assert!(!s.use_totp_step(a, ann.id, 1000).await.unwrap());
    assert!(!s.use_totp_step(a, ann.id, 999).await.unwrap());
    assert!(!s.use_totp_step(b, ann.id, 2000).await.unwrap());
    assert!(s.use_totp_step(a, ann.id, 1001).await.unwrap());
    // Recovery codes: single use, only the user's own.
    assert!(!s.use_recovery_code(b, ann.id, "rc-1", 60).await.unwrap());
    assert!(!s.use_recovery_code(a, bob.id, "rc-1", 60).await.unwrap());
    assert!(s.use_recovery_code(a, ann.id, "rc-1", 60).await.unwrap());
    assert!(!s.use_recovery_code(a, ann.id, "rc-1", 61).await.unwrap());
    assert!(!s.use_recovery_code(a, ann.id, "rc-3", 61).await.unwrap());
    // New codes replace the old ones.
    let again = UserUpdate {
        recovery_code_hashes: Some(vec!["rc-3".into()]),
        ..UserUpdate::default()
    };
    assert!(s.update_user(a, ann.id, &again).await.unwrap());
    assert!(!s.use_recovery_code(a, ann.id, "rc-2", 62).await.unwrap());
    assert!(s.use_recovery_code(a, ann.id, "rc-3", 62).await.unwrap());

    // Sessions: per tenant.
    let (ia, ib) = (ta.tenant.id, tb.tenant.id);
    s.create_session(ia, &session(ia, bob.id, "sess-bob"))
        .await
        .unwrap();
    assert_eq!(s.get_session(ib, "sess-bob").await.unwrap(), None);
    s.touch_session(ib, "sess-bob", 99).await.unwrap();
    s.touch_session(ia, "sess-bob", 20).await.unwrap();
    let got = s.get_session(ia, "sess-bob").await.unwrap().unwrap();
    assert_eq!(got.last_seen, 20);
    assert!(!s.revoke_session(ib, "sess-bob", 21).await.unwrap());
    assert!(s.revoke_session(ia, "sess-bob", 21).await.unwrap());
    assert!(!s.revoke_session(ia, "sess-bob", 22).await.unwrap());
    assert_eq!(
        s.get_session(ia, "sess-bob")
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(21)
    );

    // Tokens: listed and revoked per tenant.
    let tok = api_token(ia, "tok-bob", Some(bob.id));
    s.create_api_token(&tok).await.unwrap();
    s.create_api_token(&api_token(ib, "tok-other", Some(ann_b.id)))
        .await
        .unwrap();
    assert_eq!(
        s.find_api_token("tok-bob").await.unwrap(),
        Some(tok.clone())
    );
    assert_eq!(s.list_api_tokens(ia).await.unwrap(), vec![tok.clone()]);
    assert!(!s.revoke_api_token(ib, tok.id, 30).await.unwrap());
    assert!(s.revoke_api_token(ia, tok.id, 30).await.unwrap());
    assert!(!s.revoke_api_token(ia, tok.id, 31).await.unwrap());
    assert_eq!(
        s.find_api_token("tok-bob")
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(30)
    );

    // Offboarding revokes the user's sessions and tokens, nobody else's.
    s.create_session(ia, &session(ia, bob.id, "sess-bob-2"))
        .await
        .unwrap();
    s.create_session(ia, &session(ia, ann.id, "sess-ann"))
        .await
        .unwrap();
    s.create_api_token(&api_token(ia, "tok-bob-2", Some(bob.id)))
        .await
        .unwrap();
    s.create_api_token(&api_token(ia, "tok-ann", Some(ann.id)))
        .await
        .unwrap();
    assert_eq!(s.offboard_user(b, bob.id, 40).await.unwrap(), None);
    assert_eq!(
        s.offboard_user(a, bob.id, 40).await.unwrap(),
        Some(Revoked {
            sessions: 1,
            tokens: 1,
            grants: 0
        })
    );
    assert_eq!(s.offboard_user(a, bob.id, 41).await.unwrap(), None);
    assert!(s
        .get_session(ia, "sess-bob-2")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_some());
    assert!(s
        .find_api_token("tok-bob-2")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_some());
    assert!(s
        .get_session(ia, "sess-ann")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());
    assert!(s
        .find_api_token("tok-ann")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());
    assert!(s
        .find_api_token("tok-other")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());
    assert_eq!(
        s.user_by_email(a, "bob@uniform.example").await.unwrap(),
        None
    );
    assert!(!s.update_user(a, bob.id, &set).await.unwrap());
    // The email is free again; the offboarded row stays for the record.
    s.create_user(a, &user(a, "bob@uniform.example", Some("analyst")))
        .await
        .unwrap();
    assert_eq!(
        s.get_user(a, bob.id).await.unwrap().unwrap().offboarded_at,
        Some(40)
    );

    // MSP grants: per tenant; revoking ends the grantee's sessions and
    // tokens in that tenant only.
    let grant = |t: TenantId, expires_at| MspGrantRow {
        id: Uuid::new_v4(),
        tenant_id: t,
        user_id: msp.id,
        role: "analyst".into(),
        created_by: "user:ann@uniform.example".into(),
        created_at: 10,
        expires_at,
        revoked_at: None,
    };
    let (ga, gb) = (grant(ia, None), grant(ib, Some(100)));
    s.create_msp_grant(ia, &ga).await.unwrap();
    s.create_msp_grant(ib, &gb).await.unwrap();
    assert_eq!(s.list_msp_grants(ia).await.unwrap(), vec![ga.clone()]);
    assert_eq!(
        s.active_msp_grant(ia, msp.id, 50).await.unwrap(),
        Some(ga.clone())
    );
    assert_eq!(
        s.active_msp_grant(ib, msp.id, 99).await.unwrap(),
        Some(gb.clone())
    );
    assert_eq!(s.active_msp_grant(ib, msp.id, 100).await.unwrap(), None);
    assert_eq!(s.active_msp_grant(ia, ann.id, 50).await.unwrap(), None);
    s.create_session(ia, &session(ia, msp.id, "sess-msp-a"))
        .await
        .unwrap();
    s.create_session(ib, &session(ib, msp.id, "sess-msp-b"))
        .await
        .unwrap();
    s.create_api_token(&api_token(ia, "tok-msp-a", Some(msp.id)))
        .await
        .unwrap();
    assert_eq!(s.revoke_msp_grant(ib, ga.id, 60).await.unwrap(), None);
    let (revoked, n) = s.revoke_msp_grant(ia, ga.id, 60).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(60));
    assert_eq!(
        n,
        Revoked {
            sessions: 1,
            tokens: 1,
            grants: 1
        }
    );
    assert_eq!(s.revoke_msp_grant(ia, ga.id, 61).await.unwrap(), None);
    assert_eq!(s.active_msp_grant(ia, msp.id, 62).await.unwrap(), None);
    assert!(s
        .get_session(ib, "sess-msp-b")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());
    // Offboarding the MSP user ends its remaining grants and sessions.
    assert_eq!(
        s.offboard_user(None, msp.id, 70).await.unwrap(),
        Some(Revoked {
            sessions: 1,
            tokens: 0,
            grants: 1
        })
    );
    assert_eq!(s.active_msp_grant(ib, msp.id, 71).await.unwrap(), None);
}

/// Data key versions, re-sealing after a rotation, segment key versions,
/// key destruction and the compare-and-swap of portal-wide values.
async fn encryption_at_rest(s: &dyn Store, cipher: &TestCipher) {
    let (ta, da) = tenant_with_device(s, "crypto-a").await;
    let (tb, _) = tenant_with_device(s, "crypto-b").await;

    // Data key rows: ordered, unique per version, retired once.
    assert!(s.data_keys(ta).await.unwrap().is_empty());
    let k = |version| DataKeyRow {
        version,
        key_wrapped: Some(vec![version as u8; 40]),
        created_at: 10,
        retired_at: None,
    };
    s.add_data_key(ta, &k(2)).await.unwrap();
    s.add_data_key(ta, &k(1)).await.unwrap();
    assert!(matches!(
        s.add_data_key(ta, &k(1)).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(s.data_keys(tb).await.unwrap().is_empty(), "per tenant");
    let listed = s.data_keys(ta).await.unwrap();
    assert_eq!(listed, vec![k(1), k(2)]);

    // Content written under the current version.
    let setting = serde_json::json!({"mask": "10.1.2.0/24"});
    s.set_tenant_setting(ta, "controls", &setting)
        .await
        .unwrap();
    s.add_device_event(
        ta,
        &DeviceEvent {
            device_id: da,
            at: 5,
            kind: "refusal".into(),
            detail: serde_json::json!({"why": "old"}),
        },
    )
    .await
    .unwrap();
    // A tenant user (email and password hash sealed) and an MSP user (clear,
    // no key version: the re-sealing pass never sees it).
    let ua = user(Some(ta), "cara@crypto-a.example", Some("admin"));
    s.create_user(Some(ta), &ua).await.unwrap();
    let um = user(None, "cara@crypto-a.example", None);
    s.create_user(None, &um).await.unwrap();
    let before = s.key_usage(ta).await.unwrap();
    let first = before.fields.first().map(|f| f.0).unwrap();
    // A rotation: new writes use the new version, old rows stay readable.
    let v = cipher.rotate();
    assert!(v > first);
    s.set_tenant_setting(ta, "fresh", &serde_json::json!(1))
        .await
        .unwrap();
    let mid = s.key_usage(ta).await.unwrap();
    assert!(
        mid.fields.iter().any(|(ver, n)| *ver == v && *n == 1),
        "{mid:?}"
    );
    assert_eq!(
        s.tenant_setting(ta, "controls").await.unwrap(),
        Some(setting.clone())
    );
    // Re-sealing is bounded per pass and resumable, and ends.
    assert_eq!(s.reseal_fields(ta, 1).await.unwrap(), 1);
    let mut passes = 0;
    while s.reseal_fields(ta, 2).await.unwrap() > 0 {
        passes += 1;
        assert!(passes < 100, "re-sealing does not end");
    }
    let after = s.key_usage(ta).await.unwrap();
    assert_eq!(after.fields.len(), 1, "{after:?}");
    assert_eq!(after.fields[0].0, v);
    let rows_before: u64 = before.fields.iter().map(|f| f.1).sum::<u64>() + 1;
    assert_eq!(after.fields[0].1, rows_before, "every row kept");
    // Everything still opens.
    assert_eq!(
        s.tenant_setting(ta, "controls").await.unwrap(),
        Some(setting)
    );
    let ev = s.list_device_events(ta, da).await.unwrap();
    assert_eq!(ev[0].detail, serde_json::json!({"why": "old"}));
    // The re-sealed user is still found by its email (the blind index does
    // not depend on the data key version) and opens whole.
    assert_eq!(
        s.user_by_email(Some(ta), "cara@crypto-a.example")
            .await
            .unwrap(),
        Some(ua.clone())
    );
    assert_eq!(
        s.user_by_email(None, "cara@crypto-a.example")
            .await
            .unwrap(),
        Some(um)
    );
    // A password set after the rotation is sealed under the new version
    // and opens; the row's key version stays its oldest value's.
    let phc = "$argon2id$v=19$m=19456,t=2,p=1$bmV3$bmV3";
    assert!(s
        .update_user(
            Some(ta),
            ua.id,
            &UserUpdate {
                password_hash: Some(phc.into()),
                ..UserUpdate::default()
            },
        )
        .await
        .unwrap());
    assert_eq!(
        s.get_user(Some(ta), ua.id)
            .await
            .unwrap()
            .unwrap()
            .password_hash
            .as_deref(),
        Some(phc)
    );
    assert_eq!(
        s.get_device(ta, da).await.unwrap().unwrap().hostname,
        "edge-1"
    );
    // The other tenant was not touched by ta's pass, and its pass works too.
    assert!(s
        .key_usage(tb)
        .await
        .unwrap()
        .fields
        .iter()
        .all(|f| f.0 < v));
    while s.reseal_fields(tb, 50).await.unwrap() > 0 {}
    assert!(s
        .key_usage(tb)
        .await
        .unwrap()
        .fields
        .iter()
        .all(|f| f.0 == v));
    assert!(s.retire_data_key(ta, 1, 20).await.unwrap());
    assert!(!s.retire_data_key(ta, 1, 21).await.unwrap(), "once");
    let retired = &s.data_keys(ta).await.unwrap()[0];
    assert_eq!(
        (retired.key_wrapped.as_ref(), retired.retired_at),
        (None, Some(20))
    );

    // Segment key versions: unverified until recorded, per tenant.
    let seg = segment(SegmentLevel::Raw, 0, 1_000);
    s.commit_flow_segments(
        ta,
        &SegmentCommit {
            insert: std::slice::from_ref(&seg),
            now: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let u = s.key_usage(ta).await.unwrap();
    assert_eq!((u.segments_unverified, u.segments.len()), (1, 0));
    let off = s.segments_off_key(ta, 3, 10).await.unwrap();
    assert_eq!(off.iter().map(|x| x.id).collect::<Vec<_>>(), vec![seg.id]);
    assert!(s.segments_off_key(tb, 3, 10).await.unwrap().is_empty());
    assert!(!s.set_segment_key_version(tb, seg.id, 3).await.unwrap());
    assert!(s.set_segment_key_version(ta, seg.id, 3).await.unwrap());
    assert!(s.segments_off_key(ta, 3, 10).await.unwrap().is_empty());
    assert_eq!(s.segments_off_key(ta, 4, 10).await.unwrap().len(), 1);
    assert_eq!(s.key_usage(ta).await.unwrap().segments, vec![(3, 1)]);
    assert!(!s
        .set_segment_key_version(ta, Uuid::new_v4(), 3)
        .await
        .unwrap());

    // Destroying keys leaves the other tenant's, and takes the tenant out
    // of the portal-wide queues.
    s.commit_alarms(
        ta,
        &AlarmCommit {
            occurrences: &[AlarmOccurrence {
                new_id: Uuid::new_v4(),
                device_id: None,
                kind: "k".into(),
                severity: "low".into(),
                title: "t".into(),
                dedupe_key: "d".into(),
                at: 1,
                src: None,
                dst: None,
                dst_port: None,
                protocol: None,
                evidence: serde_json::json!([]),
                flow_filter: None,
                window_ms: 1,
                muted: false,
            }],
            max_evidence: 1,
            now: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let queued = |v: Vec<(TenantId, AlarmEvent)>| v.iter().filter(|(t, _)| *t == ta).count();
    assert!(queued(s.alarm_events_after(0, 10_000).await.unwrap()) > 0);
    s.record_batch(ta, &batch(da, "flows", 3)).await.unwrap();
    let spooled = |v: Vec<(TenantId, BatchRow)>| v.iter().filter(|(t, _)| *t == ta).count();
    assert_eq!(
        spooled(s.unprocessed_batches("flows", 10_000).await.unwrap()),
        1
    );
    assert_eq!(
        spooled(s.undetected_batches("flows", 10_000).await.unwrap()),
        1
    );
    s.destroy_tenant_keys(ta).await.unwrap();
    assert_eq!(queued(s.alarm_events_after(0, 10_000).await.unwrap()), 0);
    assert_eq!(
        spooled(s.unprocessed_batches("flows", 10_000).await.unwrap()),
        0
    );
    assert_eq!(
        spooled(s.undetected_batches("flows", 10_000).await.unwrap()),
        0
    );
    assert!(matches!(
        s.tenant_keys(ta).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(s.data_keys(ta).await.unwrap().is_empty());
    assert!(s.tenant_keys(tb).await.is_ok());

    // Compare-and-swap of a portal-wide value.
    s.init_meta("cas", b"one").await.unwrap();
    assert!(!s.replace_meta("cas", b"other", b"two").await.unwrap());
    assert!(s.replace_meta("cas", b"one", b"two").await.unwrap());
    assert_eq!(s.get_meta("cas").await.unwrap().unwrap(), b"two");
    assert!(!s.replace_meta("absent", b"one", b"two").await.unwrap());
}

/// Key rotation is a compare-and-swap on the old key, per tenant; a
/// device's batches of one kind list newest first, per tenant.
async fn remote_actions(s: &dyn Store) {
    let (ta, da) = tenant_with_device(s, "actions-a").await;
    let (tb, db) = tenant_with_device(s, "actions-b").await;
    let old = s.get_device(ta, da).await.unwrap().unwrap().public_key;
    let new = vec![7u8; 32];
    assert!(
        !s.replace_device_key(tb, da, &old, &new).await.unwrap(),
        "another tenant cannot rotate the key"
    );
    assert!(
        !s.replace_device_key(ta, da, &new, &[8; 32]).await.unwrap(),
        "a stale old key loses"
    );
    assert!(s.replace_device_key(ta, da, &old, &new).await.unwrap());
    assert_eq!(s.get_device(ta, da).await.unwrap().unwrap().public_key, new);
    assert!(
        !s.replace_device_key(ta, da, &old, &[9; 32]).await.unwrap(),
        "a second rotation from the same old key loses"
    );
    assert_eq!(s.get_device(ta, da).await.unwrap().unwrap().public_key, new);
    assert_eq!(
        s.get_device(tb, db).await.unwrap().unwrap().public_key,
        old,
        "the other tenant's device kept its key"
    );

    let d1 = batch(da, "diagnostics", 100);
    let d2 = batch(da, "diagnostics", 200);
    let f = batch(da, "flows", 300);
    let other = batch(db, "diagnostics", 400);
    for (t, b) in [(ta, &d1), (ta, &d2), (ta, &f), (tb, &other)] {
        assert!(s.record_batch(t, b).await.unwrap());
    }
    assert_eq!(
        s.list_device_batches(ta, da, "diagnostics", 10)
            .await
            .unwrap(),
        vec![d2.clone(), d1.clone()]
    );
    assert_eq!(
        s.list_device_batches(ta, da, "diagnostics", 1)
            .await
            .unwrap(),
        vec![d2]
    );
    assert!(s
        .list_device_batches(tb, da, "diagnostics", 10)
        .await
        .unwrap()
        .is_empty());
}

/// One report per tenant, kind and period start; bodies open only for
/// their tenant; alarm counts by window count what was first seen in it,
/// archived alarms included.
async fn reports(s: &dyn Store) {
    let (ta, _) = tenant_with_device(s, "reports-a").await;
    let (tb, _) = tenant_with_device(s, "reports-b").await;
    let info = |kind: &str, start: i64| ReportInfo {
        id: Uuid::new_v4(),
        kind: kind.into(),
        period_start: start,
        period_end: start + 86_400,
        created_at: start + 86_500,
        emailed_at: None,
    };
    let body = serde_json::json!({"top_talkers": [{"key": "10.0.0.1", "bytes": 42}]});
    let d1 = info("daily", 1_800_000_000);
    assert!(s.create_report(ta, &d1, &body).await.unwrap());
    let again = info("daily", 1_800_000_000);
    assert!(
        !s.create_report(ta, &again, &serde_json::json!({}))
            .await
            .unwrap(),
        "a period is reported once"
    );
    assert!(s.get_report(ta, again.id).await.unwrap().is_none());
    let w1 = info("weekly", 1_800_000_000);
    assert!(
        s.create_report(ta, &w1, &body).await.unwrap(),
        "kinds apart"
    );
    let d2 = info("daily", 1_800_086_400);
    assert!(s.create_report(ta, &d2, &body).await.unwrap());
    assert!(s
        .create_report(tb, &info("daily", 1_800_000_000), &body)
        .await
        .unwrap());

    let all = s.list_reports(ta, None, 100).await.unwrap();
    assert_eq!(
        all,
        vec![d2.clone(), d1.clone(), w1.clone()],
        "newest period first"
    );
    assert_eq!(
        s.list_reports(ta, Some("weekly"), 100).await.unwrap(),
        vec![w1.clone()]
    );
    assert_eq!(s.list_reports(ta, None, 1).await.unwrap(), vec![d2.clone()]);
    assert_eq!(
        s.get_report(ta, d1.id).await.unwrap(),
        Some((d1.clone(), body.clone()))
    );
    assert!(
        s.get_report(tb, d1.id).await.unwrap().is_none(),
        "per tenant"
    );
    assert_eq!(
        s.report_for_period(ta, "daily", 1_800_000_000)
            .await
            .unwrap(),
        Some(d1.clone())
    );
    assert!(s
        .report_for_period(ta, "weekly", 1_800_086_400)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .mark_report_emailed(ta, d1.id, 1_800_090_000)
        .await
        .unwrap());
    assert!(
        !s.mark_report_emailed(tb, d1.id, 1).await.unwrap(),
        "per tenant"
    );
    assert_eq!(
        s.get_report(ta, d1.id).await.unwrap().unwrap().0.emailed_at,
        Some(1_800_090_000)
    );

    // Alarms first seen at 1, 2 and 3 s; the one at 2 s is archived.
    let occ: Vec<AlarmOccurrence> = (1..=3)
        .map(|i| occurrence(&format!("r{i}"), 1_000 * i))
        .collect();
    s.commit_alarms(
        ta,
        &AlarmCommit {
            occurrences: &occ,
            max_evidence: 5,
            now: 7,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    s.update_alarm(
        ta,
        occ[1].new_id,
        "test",
        &AlarmUpdate::State(AlarmState::Archived),
        8,
    )
    .await
    .unwrap();
    let counts = s.alarm_counts_between(ta, 2_000, 3_001).await.unwrap();
    assert_eq!(
        counts,
        vec![
            (
                "port_scan".to_string(),
                "medium".to_string(),
                AlarmState::Active,
                1
            ),
            (
                "port_scan".to_string(),
                "medium".to_string(),
                AlarmState::Archived,
                1
            ),
        ],
        "the window is [from, to) on first seen"
    );
    assert!(s
        .alarm_counts_between(tb, 0, 10_000)
        .await
        .unwrap()
        .is_empty());

    // Retention removes reports whose period ended before the cutoff.
    let r = s
        .delete_tenant_data_before(ta, 1_800_086_400)
        .await
        .unwrap();
    assert_eq!(r.reports, 0, "d1 and w1 end at the cutoff, not before it");
    let r = s
        .delete_tenant_data_before(ta, 1_800_086_401)
        .await
        .unwrap();
    assert_eq!(r.reports, 2, "{r:?}");
    assert_eq!(s.list_reports(ta, None, 100).await.unwrap(), vec![d2]);
    assert_eq!(
        s.list_reports(tb, None, 100).await.unwrap().len(),
        1,
        "per tenant"
    );
}

fn target_list(name: &str, entries: &[&str], source: &str) -> TargetListRow {
    TargetListRow {
        name: name.into(),
        description: format!("{name} list"),
        entries: entries.iter().map(|e| e.to_string()).collect(),
        source: source.into(),
        version: 0,
        updated_at: 50,
        last_import: None,
    }
}

async fn target_lists(s: &dyn Store) {
    let (ta, _) = tenant_with_device(s, "targets-a").await;
    let (tb, _) = tenant_with_device(s, "targets-b").await;
    assert_eq!(s.get_target_list(ta, "bad").await.unwrap(), None);
    let bad = target_list("bad", &["10.0.0.0/8", "evil.example"], SOURCE_MANUAL);
    assert_eq!(s.put_target_list(ta, &bad, 0).await.unwrap(), 1);
    let got = s.get_target_list(ta, "bad").await.unwrap().unwrap();
    assert_eq!(
        got,
        TargetListRow {
            version: 1,
            ..bad.clone()
        }
    );
    // Creating again, or writing with a stale version, changes nothing.
    assert!(matches!(
        s.put_target_list(ta, &bad, 0).await,
        Err(StoreError::Raced(_))
    ));
    let v2 = target_list("bad", &["192.0.2.1"], SOURCE_MANUAL);
    assert_eq!(s.put_target_list(ta, &v2, 1).await.unwrap(), 2);
    let stale = target_list("bad", &["198.51.100.0/24"], SOURCE_MANUAL);
    assert!(matches!(
        s.put_target_list(ta, &stale, 1).await,
        Err(StoreError::Raced(_))
    ));
    let got = s.get_target_list(ta, "bad").await.unwrap().unwrap();
    assert_eq!(
        (got.version, got.entries.clone()),
        (2, vec!["192.0.2.1".to_string()])
    );
    // Per tenant: the other tenant sees none, cannot update it, and has
    // its own list of the same name.
    assert!(s.list_target_lists(tb).await.unwrap().is_empty());
    assert!(matches!(
        s.put_target_list(tb, &stale, 2).await,
        Err(StoreError::Raced(_))
    ));
    assert!(!s.delete_target_list(tb, "bad").await.unwrap());
    assert_eq!(s.put_target_list(tb, &stale, 0).await.unwrap(), 1);
    assert_eq!(
        s.get_target_list(ta, "bad").await.unwrap().unwrap().entries,
        vec!["192.0.2.1".to_string()]
    );
    // An empty list round-trips as empty.
    let empty = target_list("a-empty", &[], "url:drop");
    assert_eq!(s.put_target_list(ta, &empty, 0).await.unwrap(), 1);
    let names: Vec<String> = s
        .list_target_lists(ta)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, vec!["a-empty".to_string(), "bad".to_string()]);
    assert!(s
        .get_target_list(ta, "a-empty")
        .await
        .unwrap()
        .unwrap()
        .entries
        .is_empty());

    // Imports apply only while the list is bound to the source.
    let import = TargetImport {
        at: 60,
        accepted: 2,
        skipped: 1,
        error: None,
    };
    let fresh = vec!["203.0.113.0/24".to_string(), "198.51.100.7".to_string()];
    assert_eq!(
        s.record_target_import(ta, "a-empty", "url:other", Some(&fresh), &import)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.record_target_import(ta, "a-empty", "url:drop", Some(&fresh), &import)
            .await
            .unwrap(),
        Some(2)
    );
    let got = s.get_target_list(ta, "a-empty").await.unwrap().unwrap();
    assert_eq!(
        (got.entries, got.version, got.updated_at, got.last_import),
        (fresh.clone(), 2, 60, Some(import.clone()))
    );
    let failed = TargetImport {
        at: 70,
        accepted: 0,
        skipped: 0,
        error: Some("status 503".into()),
    };
    assert_eq!(
        s.record_target_import(ta, "a-empty", "url:drop", None, &failed)
            .await
            .unwrap(),
        Some(2),
        "a failed import keeps the entries and the version"
    );
    let got = s.get_target_list(ta, "a-empty").await.unwrap().unwrap();
    assert_eq!((got.entries, got.last_import), (fresh, Some(failed)));
    assert_eq!(
        s.record_target_import(tb, "a-empty", "url:drop", None, &import)
            .await
            .unwrap(),
        None,
        "other tenant"
    );
    assert_eq!(
        s.target_list_versions(ta).await.unwrap(),
        vec![("a-empty".to_string(), 2), ("bad".to_string(), 2)]
    );
    assert_eq!(
        s.target_list_versions(tb).await.unwrap(),
        vec![("bad".to_string(), 1)]
    );
    assert!(s.delete_target_list(ta, "bad").await.unwrap());
    assert!(!s.delete_target_list(ta, "bad").await.unwrap());
    assert_eq!(s.get_target_list(ta, "bad").await.unwrap(), None);
    assert!(s.get_target_list(tb, "bad").await.unwrap().is_some());
}

/// WireGuard interfaces and peers: per tenant and device, live names and
/// address slots unique, revocation final and dropping the wrapped keys.
async fn vpn(s: &dyn Store) {
    let (ta, da) = tenant_with_device(s, "vpn-a").await;
    let (tb, db) = tenant_with_device(s, "vpn-b").await;
    let iface = VpnInterfaceRow {
        device_id: da,
        address: "10.8.0.1/24".into(),
        listen_port: 51820,
        endpoint: "vpn.vpn-a.example".into(),
        dns: vec!["10.8.0.1".into()],
        client_allowed_ips: vec!["10.8.0.0/24".into(), "192.168.7.0/24".into()],
        public_key: "pk-a".into(),
        private_key_wrapped: vec![1; 60],
        created_at: 10,
        updated_at: 10,
    };
    s.put_vpn_interface(ta, &iface).await.unwrap();
    assert_eq!(
        s.get_vpn_interface(ta, da).await.unwrap(),
        Some(iface.clone())
    );
    assert_eq!(
        s.get_vpn_interface(tb, da).await.unwrap(),
        None,
        "other tenant"
    );
    assert_eq!(s.get_vpn_interface(tb, db).await.unwrap(), None);
    // Replacing keeps the creation time.
    let moved = VpnInterfaceRow {
        endpoint: "203.0.113.9".into(),
        listen_port: 443,
        created_at: 99,
        updated_at: 20,
        ..iface.clone()
    };
    s.put_vpn_interface(ta, &moved).await.unwrap();
    let got = s.get_vpn_interface(ta, da).await.unwrap().unwrap();
    assert_eq!(
        (
            got.endpoint.as_str(),
            got.listen_port,
            got.created_at,
            got.updated_at
        ),
        ("203.0.113.9", 443, 10, 20)
    );

    let peer = |name: &str, slot: u32, at: i64| VpnPeerRow {
        id: Uuid::new_v4(),
        device_id: da,
        name: name.into(),
        slot,
        address: format!("10.8.0.{slot}/32"),
        public_key: format!("pk-{name}"),
        private_key_wrapped: Some(vec![2; 60]),
        preshared_key_wrapped: slot.is_multiple_of(2).then(|| vec![3; 60]),
        created_at: at,
        revoked_at: None,
    };
    let (p1, p2) = (peer("laptop", 2, 30), peer("phone", 3, 31));
    s.create_vpn_peer(ta, &p1).await.unwrap();
    s.create_vpn_peer(ta, &p2).await.unwrap();
    assert!(matches!(
        s.create_vpn_peer(ta, &peer("laptop", 4, 32)).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.create_vpn_peer(ta, &peer("tablet", 3, 32)).await,
        Err(StoreError::Raced(_))
    ));
    assert_eq!(
        s.list_vpn_peers(ta, da).await.unwrap(),
        vec![p1.clone(), p2.clone()]
    );
    assert!(
        s.list_vpn_peers(tb, da).await.unwrap().is_empty(),
        "other tenant"
    );
    assert_eq!(
        s.get_vpn_peer(ta, da, p2.id).await.unwrap(),
        Some(p2.clone())
    );
    assert_eq!(s.get_vpn_peer(tb, da, p2.id).await.unwrap(), None);
    assert_eq!(
        s.get_vpn_peer(ta, db, p2.id).await.unwrap(),
        None,
        "other device"
    );

    assert!(
        !s.revoke_vpn_peer(tb, da, p1.id, 40).await.unwrap(),
        "other tenant"
    );
    assert!(s.revoke_vpn_peer(ta, da, p1.id, 40).await.unwrap());
    assert!(!s.revoke_vpn_peer(ta, da, p1.id, 41).await.unwrap(), "once");
    let gone = s.get_vpn_peer(ta, da, p1.id).await.unwrap().unwrap();
    assert_eq!(gone.revoked_at, Some(40));
    assert_eq!(
        (gone.private_key_wrapped, gone.preshared_key_wrapped),
        (None, None)
    );
    assert_eq!(gone.name, "laptop", "the record stays");
    // A revoked peer's name and address are free again.
    let p3 = peer("laptop", 2, 50);
    s.create_vpn_peer(ta, &p3).await.unwrap();
    let names: Vec<_> = s
        .list_vpn_peers(ta, da)
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.id, p.revoked_at.is_some()))
        .collect();
    assert_eq!(names, vec![(p1.id, true), (p2.id, false), (p3.id, false)]);
    // Purging the tenant removes its interfaces and peers with it (their
    // rows reference each other and the device).
    let removed = s.purge_tenant(ta, 60).await.unwrap();
    assert_eq!(removed.get("vpn_interfaces"), Some(&1));
    assert_eq!(removed.get("vpn_peers"), Some(&3));
    assert_eq!(s.get_vpn_interface(ta, da).await.unwrap(), None);
    assert!(s.list_vpn_peers(ta, da).await.unwrap().is_empty());
}

/// Config documents: versions only after the expected one, per tenant;
/// groups; revisions; desired and applied rows with history; superseded
/// instructions; rollouts.
async fn configs(s: &dyn Store) {
    let (ta, da) = tenant_with_device(s, "configs-a").await;
    let (tb, db) = tenant_with_device(s, "configs-b").await;
    let doc = |layer: &str, scope: &str, version: u64, body: serde_json::Value| ConfigDocRow {
        layer: layer.into(),
        scope: scope.into(),
        version,
        body,
        author: "cli".into(),
        comment: format!("v{version}"),
        created_at: 100 + version as i64,
    };
    let v1 = doc("tenant", "", 1, serde_json::json!({"log_level": "info"}));
    assert!(s.save_config_doc(ta, &v1, 0).await.unwrap());
    // A second save on version 0 lost: nothing overwritten.
    assert!(!s
        .save_config_doc(ta, &doc("tenant", "", 1, serde_json::json!({})), 0)
        .await
        .unwrap());
    let v2 = doc("tenant", "", 2, serde_json::json!({"log_level": "debug"}));
    assert!(s.save_config_doc(ta, &v2, 1).await.unwrap());
    assert!(s
        .save_config_doc(
            ta,
            &doc("device", &da.0.to_string(), 1, serde_json::json!({})),
            0
        )
        .await
        .unwrap());
    assert_eq!(
        s.config_doc(ta, "tenant", "", None).await.unwrap(),
        Some(v2.clone())
    );
    assert_eq!(
        s.config_doc(ta, "tenant", "", Some(1)).await.unwrap(),
        Some(v1.clone())
    );
    assert_eq!(
        s.config_doc_versions(ta, "tenant", "", 10).await.unwrap(),
        vec![v2.clone(), v1]
    );
    let latest = s.latest_config_docs(ta).await.unwrap();
    assert_eq!(latest.len(), 2);
    assert!(latest.contains(&v2));
    assert!(
        s.latest_config_docs(tb).await.unwrap().is_empty(),
        "per tenant"
    );
    assert_eq!(s.config_doc(tb, "tenant", "", None).await.unwrap(), None);

    assert!(s.create_config_group(ta, "web", 1).await.unwrap());
    assert!(!s.create_config_group(ta, "web", 2).await.unwrap());
    assert!(matches!(
        s.set_device_group(ta, da, Some("nope")).await,
        Err(StoreError::NotFound(_))
    ));
    // B has no group web.
    assert!(s.set_device_group(tb, db, Some("web")).await.is_err());
    s.set_device_group(ta, da, Some("web")).await.unwrap();
    assert_eq!(
        s.device_groups(ta).await.unwrap(),
        vec![(da, "web".to_string())]
    );
    assert!(s.device_groups(tb).await.unwrap().is_empty());
    assert!(matches!(
        s.delete_config_group(ta, "web").await,
        Err(StoreError::Raced(_))
    ));
    s.set_device_group(ta, da, None).await.unwrap();
    assert!(s.delete_config_group(ta, "web").await.unwrap());
    assert!(!s.delete_config_group(ta, "web").await.unwrap());

    assert_eq!(s.allocate_config_revisions(ta, 3).await.unwrap(), 1);
    assert_eq!(s.allocate_config_revisions(ta, 1).await.unwrap(), 4);
    assert_eq!(
        s.allocate_config_revisions(tb, 1).await.unwrap(),
        1,
        "per tenant"
    );

    let row = DeviceConfigRow {
        device_id: da,
        desired_revision: 4,
        desired_hash: "h4".into(),
        desired_body: serde_json::json!({"revision": 4}),
        desired_seq: Some(3),
        desired_at: 10,
        applied_revision: None,
        applied_hash: None,
        applied_at: None,
        status: "pending".into(),
        error: None,
    };
    let ev = |at: i64, event: &str| ConfigEvent {
        at,
        revision: 4,
        event: event.into(),
        detail: serde_json::json!({"at": at}),
    };
    s.put_device_configs(ta, &[(row.clone(), ev(10, "queued"))])
        .await
        .unwrap();
    assert_eq!(
        s.pending_device_configs(ta).await.unwrap(),
        vec![row.clone()]
    );
    assert!(s.pending_device_configs(tb).await.unwrap().is_empty());
    let applied = DeviceConfigRow {
        applied_revision: Some(4),
        applied_hash: Some("h4".into()),
        applied_at: Some(11),
        status: "failed".into(),
        error: Some("health check failed".into()),
        ..row.clone()
    };
    s.put_device_configs(ta, &[(applied.clone(), ev(11, "failed"))])
        .await
        .unwrap();
    assert_eq!(
        s.device_config(ta, da).await.unwrap(),
        Some(applied.clone())
    );
    assert_eq!(s.device_configs(ta).await.unwrap(), vec![applied]);
    // Failed is not pending: the config job does not send it again.
    assert!(s.pending_device_configs(ta).await.unwrap().is_empty());
    assert_eq!(s.device_config(tb, da).await.unwrap(), None);
    let history = s.config_history(ta, da, 10).await.unwrap();
    assert_eq!(
        history,
        vec![ev(11, "failed"), ev(10, "queued")],
        "newest first"
    );
    assert!(s.config_history(tb, da, 10).await.unwrap().is_empty());

    // Three apply_config instructions queued while the device was away:
    // the two older are superseded, the newest stays.
    let seqs = s.allocate_seqs(ta, &[da, da, da]).await.unwrap();
    let rows: Vec<InstructionRow> = seqs
        .iter()
        .map(|(d, seq)| InstructionRow {
            kind: "apply_config".into(),
            ..instruction(*d, *seq, i64::MAX / 2)
        })
        .collect();
    s.insert_instructions(ta, &rows).await.unwrap();
    let newest = rows.iter().map(|r| r.seq).max().unwrap();
    assert_eq!(
        s.supersede_instructions(tb, "apply_config", &[(da, newest)])
            .await
            .unwrap(),
        vec![0]
    );
    assert_eq!(
        s.supersede_instructions(ta, "apply_config", &[(da, newest)])
            .await
            .unwrap(),
        vec![2]
    );
    let statuses: Vec<(u64, String)> = s
        .list_instructions(ta, da)
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.kind == "apply_config")
        .map(|i| (i.seq, i.status))
        .collect();
    assert_eq!(
        statuses.iter().filter(|(_, st)| st == "superseded").count(),
        2
    );
    assert!(statuses.contains(&(newest, "queued".to_string())));
    let pending = s.pending_instructions(ta, da, 0, 0, 100).await.unwrap();
    assert_eq!(
        pending
            .iter()
            .filter(|i| i.kind == "apply_config")
            .map(|i| i.seq)
            .collect::<Vec<_>>(),
        vec![newest],
        "a superseded instruction is not delivered"
    );

    let mut r = RolloutRow {
        id: Uuid::new_v4(),
        group: "edge".into(),
        from_version: 1,
        to_version: 2,
        canary_percent: 10,
        bake_secs: 60,
        canaries: vec![da],
        state: "canary".into(),
        reason: None,
        created_by: "cli".into(),
        created_at: 20,
        updated_at: 20,
    };
    s.put_rollout(ta, &r).await.unwrap();
    assert_eq!(s.rollouts(ta, 10).await.unwrap(), vec![r.clone()]);
    assert!(s.rollouts(tb, 10).await.unwrap().is_empty());
    assert!(s.rollouts(ta, 10).await.unwrap()[0].is_active());
    r.state = "failed".into();
    r.reason = Some("canary failed".into());
    r.updated_at = 30;
    // Another tenant cannot take over the rollout by its id.
    s.put_rollout(tb, &r).await.unwrap();
    assert_eq!(s.rollouts(ta, 10).await.unwrap()[0].state, "canary");
    s.put_rollout(ta, &r).await.unwrap();
    assert_eq!(s.rollouts(ta, 10).await.unwrap(), vec![r.clone()]);
    assert!(!s.rollouts(ta, 10).await.unwrap()[0].is_active());
}
