//! The behaviour every [`Store`] backend must have. Each backend's tests call
//! [`run_all`] on a fresh, empty store: one suite, many backends.

use uuid::Uuid;

use crate::*;

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

/// Runs every check in order on one empty store.
pub async fn run_all(s: &dyn Store) {
    meta(s).await;
    tenants(s).await;
    enrollment_and_devices(s).await;
    instructions(s).await;
    batches(s).await;
    tenant_isolation(s).await;
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
