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
    flow_batches(s).await;
    flow_segments(s).await;
    flow_retention(s).await;
    tenant_settings(s).await;
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
