//! The alarm tables of the SQLite backend (migration 0005). Kept apart from
//! `sqlite.rs` for size; the `Store` impl there calls these.

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};
use uuid::Uuid;

use crate::cipher::{RowSeal, TenantSealer};
use crate::sqlite::{
    json_col, opt_sealed_col, opt_uuid_col, row_seal, sealed_col, sealed_json_col, uuid_col,
    BatchMark, SqliteStore,
};
use crate::*;

/// The associated data of the dedupe key's blind index (one per tenant, not
/// per row: equal keys must give equal digests).
fn dedupe_index(sealer: &dyn TenantSealer, tenant: TenantId, key: &str) -> String {
    sealer.blind_index(
        &crate::cipher::aad(tenant, "alarms", &[], "dedupe_key"),
        key.as_bytes(),
    )
}

/// Opens rows of several tenants (the portal-wide queues), each with its
/// tenant's sealer, fetched once per tenant.
async fn open_across_tenants<T>(
    store: &SqliteStore,
    rows: &[SqliteRow],
    open: impl Fn(&dyn TenantSealer, TenantId, &SqliteRow) -> Result<T>,
) -> Result<Vec<(TenantId, T)>> {
    let mut sealers: std::collections::HashMap<TenantId, std::sync::Arc<dyn TenantSealer>> =
        std::collections::HashMap::new();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let t = TenantId(uuid_col(row, "tenant_id")?);
        let sealer = match sealers.get(&t) {
            Some(s) => s.clone(),
            None => {
                let s = store.sealer(t).await?;
                sealers.insert(t, s.clone());
                s
            }
        };
        out.push((t, open(sealer.as_ref(), t, row)?));
    }
    Ok(out)
}

fn state_col(row: &SqliteRow) -> Result<AlarmState> {
    let s: String = row.try_get("state")?;
    AlarmState::parse(&s).ok_or_else(|| StoreError::Corrupt(format!("alarm state {s}")))
}

fn small_col<T: TryFrom<i64>>(row: &SqliteRow, col: &str) -> Result<Option<T>> {
    let v: Option<i64> = row.try_get(col)?;
    v.map(|v| T::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col} {v} is out of range"))))
        .transpose()
}

fn alarm_from(sealer: &dyn TenantSealer, tenant: TenantId, row: &SqliteRow) -> Result<AlarmRow> {
    let seal = row_seal(sealer, tenant, "alarms", row, &["id"])?;
    Ok(AlarmRow {
        id: uuid_col(row, "id")?,
        device_id: opt_uuid_col(row, "device_id")?.map(DeviceId),
        kind: row.try_get("kind")?,
        severity: row.try_get("severity")?,
        title: sealed_col(&seal, row, "title")?,
        dedupe_key: sealed_col(&seal, row, "dedupe_sealed")?,
        state: state_col(row)?,
        assignee: opt_sealed_col(&seal, row, "assignee")?,
        first_seen: row.try_get("first_seen")?,
        last_seen: row.try_get("last_seen")?,
        count: row.try_get::<i64, _>("count")?.max(0) as u64,
        src: opt_sealed_col(&seal, row, "src")?,
        dst: opt_sealed_col(&seal, row, "dst")?,
        dst_port: small_col(row, "dst_port")?,
        protocol: small_col(row, "protocol")?,
        evidence: sealed_json_col(&seal, row, "evidence")?,
        flow_filter: opt_sealed_col(&seal, row, "flow_filter")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn event_from(sealer: &dyn TenantSealer, tenant: TenantId, row: &SqliteRow) -> Result<AlarmEvent> {
    let seal = row_seal(
        sealer,
        tenant,
        "alarm_history",
        row,
        &["alarm_id", "at", "action"],
    )?;
    Ok(AlarmEvent {
        id: row.try_get("id")?,
        alarm_id: uuid_col(row, "alarm_id")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        detail: sealed_json_col(&seal, row, "detail")?,
    })
}

fn rule_from(sealer: &dyn TenantSealer, tenant: TenantId, row: &SqliteRow) -> Result<AlarmRuleRow> {
    let seal = row_seal(sealer, tenant, "alarm_rules", row, &["id"])?;
    Ok(AlarmRuleRow {
        id: uuid_col(row, "id")?,
        action: row.try_get("action")?,
        kind: row.try_get("kind")?,
        host: opt_sealed_col(&seal, row, "host")?,
        network: opt_sealed_col(&seal, row, "network")?,
        port: small_col(row, "port")?,
        expires_at: row.try_get("expires_at")?,
        comment: sealed_col(&seal, row, "comment")?,
        created_at: row.try_get("created_at")?,
    })
}

fn webhook_from(
    sealer: &dyn TenantSealer,
    tenant: TenantId,
    row: &SqliteRow,
) -> Result<WebhookRow> {
    let seal = row_seal(sealer, tenant, "webhooks", row, &["id"])?;
    Ok(WebhookRow {
        id: uuid_col(row, "id")?,
        url: sealed_col(&seal, row, "url")?,
        secret_wrapped: row.try_get("secret_wrapped")?,
        min_severity: row.try_get("min_severity")?,
        kinds: serde_json::from_value(json_col(row, "kinds")?)
            .map_err(|e| StoreError::Corrupt(format!("webhook kinds: {e}")))?,
        created_at: row.try_get("created_at")?,
    })
}

fn delivery_from(
    sealer: &dyn TenantSealer,
    tenant: TenantId,
    row: &SqliteRow,
) -> Result<DeliveryRow> {
    let seal = row_seal(sealer, tenant, "alarm_deliveries", row, &["id"])?;
    let status: String = row.try_get("status")?;
    Ok(DeliveryRow {
        id: uuid_col(row, "id")?,
        channel: {
            let c: String = row.try_get("channel")?;
            DeliveryChannel::parse(&c)
                .ok_or_else(|| StoreError::Corrupt(format!("delivery channel {c}")))?
        },
        target_id: uuid_col(row, "target_id")?,
        alarm_id: uuid_col(row, "alarm_id")?,
        event_id: row.try_get("event_id")?,
        body: sealed_col(&seal, row, "body")?,
        status: DeliveryStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("delivery status {status}")))?,
        attempts: row.try_get::<i64, _>("attempts")?.clamp(0, u32::MAX as i64) as u32,
        next_at: row.try_get("next_at")?,
        last_error: opt_sealed_col(&seal, row, "last_error")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

#[allow(clippy::too_many_arguments)]
async fn log_event(
    tx: &mut Transaction<'_, Sqlite>,
    sealer: &dyn TenantSealer,
    tenant: TenantId,
    alarm: Uuid,
    at: i64,
    actor: &str,
    action: &str,
    detail: &serde_json::Value,
) -> Result<()> {
    let seal = RowSeal {
        sealer,
        tenant,
        table: "alarm_history",
        row: vec![alarm.to_string(), at.to_string(), action.to_string()],
    };
    sqlx::query(
        "INSERT INTO alarm_history (tenant_id, alarm_id, at, actor, action, detail, key_version)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(tenant.0.to_string())
    .bind(alarm.to_string())
    .bind(at)
    .bind(actor)
    .bind(action)
    .bind(seal.seal_json("detail", detail)?)
    .bind(sealer.version())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The newest `max` items of `old` followed by `new` (a JSON array each;
/// anything else counts as one item).
fn merge_evidence(
    old: serde_json::Value,
    new: &serde_json::Value,
    max: usize,
) -> serde_json::Value {
    let as_vec = |v: serde_json::Value| match v {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Null => Vec::new(),
        other => vec![other],
    };
    let mut all = as_vec(old);
    all.extend(as_vec(new.clone()));
    let skip = all.len().saturating_sub(max.max(1));
    serde_json::Value::Array(all.into_iter().skip(skip).collect())
}

impl SqliteStore {
    pub(crate) async fn alarms_undetected(
        &self,
        kind: &str,
        limit: u32,
    ) -> Result<Vec<(TenantId, BatchRow)>> {
        sqlx::query(
            "SELECT * FROM batches WHERE kind = ? AND detected_at IS NULL
             ORDER BY received_at, tenant_id, device_id, batch_id LIMIT ?",
        )
        .bind(kind)
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|row| {
            Ok((
                TenantId(uuid_col(row, "tenant_id")?),
                crate::sqlite::batch_from(row)?,
            ))
        })
        .collect()
    }

    pub(crate) async fn alarms_commit(
        &self,
        tenant: TenantId,
        c: &AlarmCommit<'_>,
    ) -> Result<Vec<AlarmOutcome>> {
        let t = tenant.0.to_string();
        let sealer = self.sealer(tenant).await?;
        let sealer = sealer.as_ref();
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        crate::sqlite::mark_batches(&mut tx, &t, BatchMark::Detected, c.detected, c.now).await?;
        let mut out = Vec::with_capacity(c.occurrences.len());
        let mut bumped: Vec<(Uuid, u64)> = Vec::new();
        for o in c.occurrences {
            let open = sqlx::query(
                "SELECT * FROM alarms WHERE tenant_id = ? AND dedupe_key = ?
                 AND state IN ('active', 'acknowledged') AND last_seen >= ?
                 ORDER BY last_seen DESC LIMIT 1",
            )
            .bind(&t)
            .bind(dedupe_index(sealer, tenant, &o.dedupe_key))
            .bind(o.at.saturating_sub(o.window_ms))
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = open {
                let a = alarm_from(sealer, tenant, &row)?;
                let seal = RowSeal {
                    sealer,
                    tenant,
                    table: "alarms",
                    row: vec![a.id.to_string()],
                };
                let evidence = merge_evidence(a.evidence, &o.evidence, c.max_evidence);
                sqlx::query(
                    "UPDATE alarms SET count = count + 1, last_seen = MAX(last_seen, ?),
                     first_seen = MIN(first_seen, ?), evidence = ?, updated_at = ?
                     WHERE tenant_id = ? AND id = ?",
                )
                .bind(o.at)
                .bind(o.at)
                .bind(seal.seal_json("evidence", &evidence)?)
                .bind(c.now)
                .bind(&t)
                .bind(a.id.to_string())
                .execute(&mut *tx)
                .await?;
                match bumped.iter_mut().find(|(id, _)| *id == a.id) {
                    Some((_, n)) => *n += 1,
                    None => bumped.push((a.id, 1)),
                }
                out.push(AlarmOutcome::Bumped(a.id));
            } else {
                let evidence = merge_evidence(serde_json::Value::Null, &o.evidence, c.max_evidence);
                let seal = RowSeal {
                    sealer,
                    tenant,
                    table: "alarms",
                    row: vec![o.new_id.to_string()],
                };
                sqlx::query(
                    "INSERT INTO alarms (tenant_id, id, device_id, kind, severity, title, dedupe_key,
                     dedupe_sealed, state, first_seen, last_seen, count, src, dst, dst_port,
                     protocol, evidence, flow_filter, updated_at, key_version)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&t)
                .bind(o.new_id.to_string())
                .bind(o.device_id.map(|d| d.0.to_string()))
                .bind(&o.kind)
                .bind(&o.severity)
                .bind(seal.seal_str("title", &o.title)?)
                .bind(dedupe_index(sealer, tenant, &o.dedupe_key))
                .bind(seal.seal_str("dedupe_sealed", &o.dedupe_key)?)
                .bind(o.at)
                .bind(o.at)
                .bind(seal.seal_opt("src", o.src.as_deref())?)
                .bind(seal.seal_opt("dst", o.dst.as_deref())?)
                .bind(o.dst_port.map(i64::from))
                .bind(o.protocol.map(i64::from))
                .bind(seal.seal_json("evidence", &evidence)?)
                .bind(seal.seal_opt("flow_filter", o.flow_filter.as_deref())?)
                .bind(c.now)
                .bind(sealer.version())
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    if crate::sqlite::is_unique_violation(&e) {
                        StoreError::Raced(format!("alarm {} (already created)", o.new_id))
                    } else {
                        e.into()
                    }
                })?;
                log_event(
                    &mut tx,
                    sealer,
                    tenant,
                    o.new_id,
                    c.now,
                    "detector",
                    "created",
                    &serde_json::json!({ "kind": o.kind, "severity": o.severity, "muted": o.muted }),
                )
                .await?;
                out.push(AlarmOutcome::Created(o.new_id));
            }
        }
        // One history line per alarm per commit, however many occurrences.
        for (id, n) in bumped {
            log_event(
                &mut tx,
                sealer,
                tenant,
                id,
                c.now,
                "detector",
                "bumped",
                &serde_json::json!({ "occurrences": n }),
            )
            .await?;
        }
        if let Some(state) = c.detector_state {
            let seal = RowSeal {
                sealer,
                tenant,
                table: "detector_state",
                row: vec![],
            };
            sqlx::query(
                "INSERT INTO detector_state (tenant_id, state, updated_at, key_version)
                 VALUES (?, ?, ?, ?)
                 ON CONFLICT (tenant_id) DO UPDATE SET state = excluded.state,
                 updated_at = excluded.updated_at, key_version = excluded.key_version",
            )
            .bind(&t)
            .bind(seal.seal("state", state)?)
            .bind(c.now)
            .bind(sealer.version())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    pub(crate) async fn alarms_detector_state(&self, tenant: TenantId) -> Result<Option<Vec<u8>>> {
        let sealed: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT state FROM detector_state WHERE tenant_id = ?")
                .bind(tenant.0.to_string())
                .fetch_optional(self.pool())
                .await?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let sealer = self.sealer(tenant).await?;
        RowSeal {
            sealer: sealer.as_ref(),
            tenant,
            table: "detector_state",
            row: vec![],
        }
        .open("state", &sealed)
        .map(Some)
    }

    pub(crate) async fn alarms_get(&self, tenant: TenantId, id: Uuid) -> Result<Option<AlarmRow>> {
        let sealer = self.sealer(tenant).await?;
        sqlx::query("SELECT * FROM alarms WHERE tenant_id = ? AND id = ?")
            .bind(tenant.0.to_string())
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(|r| alarm_from(sealer.as_ref(), tenant, r))
            .transpose()
    }

    pub(crate) async fn alarms_list(
        &self,
        tenant: TenantId,
        f: &AlarmFilter,
    ) -> Result<Vec<AlarmRow>> {
        let sealer = self.sealer(tenant).await?;
        let mut q = sqlx::QueryBuilder::<Sqlite>::new("SELECT * FROM alarms WHERE tenant_id = ");
        q.push_bind(tenant.0.to_string());
        match f.state {
            Some(s) => {
                q.push(" AND state = ").push_bind(s.as_str());
            }
            None => {
                q.push(" AND state <> 'archived'");
            }
        }
        if let Some(k) = &f.kind {
            q.push(" AND kind = ").push_bind(k.clone());
        }
        if let Some(s) = &f.severity {
            q.push(" AND severity = ").push_bind(s.clone());
        }
        if let Some(d) = f.device_id {
            q.push(" AND device_id = ").push_bind(d.0.to_string());
        }
        if let Some(from) = f.from {
            q.push(" AND last_seen >= ").push_bind(from);
        }
        if let Some(to) = f.to {
            q.push(" AND last_seen < ").push_bind(to);
        }
        if let Some((ls, id)) = f.before {
            q.push(" AND (last_seen < ")
                .push_bind(ls)
                .push(" OR (last_seen = ")
                .push_bind(ls)
                .push(" AND id < ")
                .push_bind(id.to_string())
                .push("))");
        }
        q.push(" ORDER BY last_seen DESC, id DESC LIMIT ")
            .push_bind(f.limit.max(1) as i64);
        q.build()
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| alarm_from(sealer.as_ref(), tenant, r))
            .collect()
    }

    pub(crate) async fn alarms_counts(
        &self,
        tenant: TenantId,
    ) -> Result<Vec<(String, String, AlarmState, u64)>> {
        sqlx::query(
            "SELECT kind, severity, state, COUNT(*) AS n FROM alarms
             WHERE tenant_id = ? AND state <> 'archived'
             GROUP BY kind, severity, state ORDER BY kind, severity, state",
        )
        .bind(tenant.0.to_string())
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|row| {
            Ok((
                row.try_get("kind")?,
                row.try_get("severity")?,
                state_col(row)?,
                row.try_get::<i64, _>("n")?.max(0) as u64,
            ))
        })
        .collect()
    }

    pub(crate) async fn alarms_update(
        &self,
        tenant: TenantId,
        id: Uuid,
        actor: &str,
        update: &AlarmUpdate,
        now: i64,
    ) -> Result<AlarmRow> {
        let t = tenant.0.to_string();
        let sealer = self.sealer(tenant).await?;
        let sealer = sealer.as_ref();
        let seal = RowSeal {
            sealer,
            tenant,
            table: "alarms",
            row: vec![id.to_string()],
        };
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        // The state is clear (lists filter on it); an assignee is sealed.
        let (set, action, detail, value): (&str, &str, serde_json::Value, Option<Vec<u8>>) =
            match update {
                AlarmUpdate::State(s) => (
                    "state = ?,",
                    "state",
                    serde_json::json!({ "state": s.as_str() }),
                    None,
                ),
                AlarmUpdate::Assign(who) => (
                    "assignee = ?,",
                    "assigned",
                    serde_json::json!({ "assignee": who }),
                    seal.seal_opt("assignee", who.as_deref())?,
                ),
                // A note changes only the history (and the update time).
                AlarmUpdate::Note(text) => ("", "note", serde_json::json!({ "text": text }), None),
            };
        let sql = format!("UPDATE alarms SET {set} updated_at = ? WHERE tenant_id = ? AND id = ?");
        let mut q = sqlx::query(&sql);
        if let AlarmUpdate::State(st) = update {
            q = q.bind(st.as_str());
        } else if !set.is_empty() {
            q = q.bind(value);
        }
        let r = q
            .bind(now)
            .bind(&t)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() != 1 {
            return Err(StoreError::NotFound(format!("alarm {id}")));
        }
        log_event(&mut tx, sealer, tenant, id, now, actor, action, &detail).await?;
        let row = sqlx::query("SELECT * FROM alarms WHERE tenant_id = ? AND id = ?")
            .bind(&t)
            .bind(id.to_string())
            .fetch_one(&mut *tx)
            .await?;
        let a = alarm_from(sealer, tenant, &row)?;
        tx.commit().await?;
        Ok(a)
    }

    pub(crate) async fn alarms_history(
        &self,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<Vec<AlarmEvent>> {
        let sealer = self.sealer(tenant).await?;
        sqlx::query("SELECT * FROM alarm_history WHERE tenant_id = ? AND alarm_id = ? ORDER BY id")
            .bind(tenant.0.to_string())
            .bind(id.to_string())
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| event_from(sealer.as_ref(), tenant, r))
            .collect()
    }

    pub(crate) async fn alarms_events_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(TenantId, AlarmEvent)>> {
        let rows = sqlx::query("SELECT * FROM alarm_history WHERE id > ? ORDER BY id LIMIT ?")
            .bind(after)
            .bind(limit as i64)
            .fetch_all(self.pool())
            .await?;
        open_across_tenants(self, &rows, event_from).await
    }

    pub(crate) async fn alarms_create_rule(
        &self,
        tenant: TenantId,
        r: &AlarmRuleRow,
    ) -> Result<()> {
        let sealer = self.sealer(tenant).await?;
        let seal = RowSeal {
            sealer: sealer.as_ref(),
            tenant,
            table: "alarm_rules",
            row: vec![r.id.to_string()],
        };
        sqlx::query(
            "INSERT INTO alarm_rules (tenant_id, id, action, kind, host, network, port,
             expires_at, comment, created_at, key_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(tenant.0.to_string())
        .bind(r.id.to_string())
        .bind(&r.action)
        .bind(&r.kind)
        .bind(seal.seal_opt("host", r.host.as_deref())?)
        .bind(seal.seal_opt("network", r.network.as_deref())?)
        .bind(r.port.map(i64::from))
        .bind(r.expires_at)
        .bind(seal.seal_str("comment", &r.comment)?)
        .bind(r.created_at)
        .bind(sealer.version())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub(crate) async fn alarms_list_rules(&self, tenant: TenantId) -> Result<Vec<AlarmRuleRow>> {
        let sealer = self.sealer(tenant).await?;
        sqlx::query("SELECT * FROM alarm_rules WHERE tenant_id = ? ORDER BY created_at, id")
            .bind(tenant.0.to_string())
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| rule_from(sealer.as_ref(), tenant, r))
            .collect()
    }

    pub(crate) async fn alarms_delete(
        &self,
        table: &str,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<bool> {
        let sql = match table {
            "alarm_rules" => "DELETE FROM alarm_rules WHERE tenant_id = ? AND id = ?",
            _ => "DELETE FROM webhooks WHERE tenant_id = ? AND id = ?",
        };
        let r = sqlx::query(sql)
            .bind(tenant.0.to_string())
            .bind(id.to_string())
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub(crate) async fn alarms_create_webhook(
        &self,
        tenant: TenantId,
        h: &WebhookRow,
    ) -> Result<()> {
        let sealer = self.sealer(tenant).await?;
        let seal = RowSeal {
            sealer: sealer.as_ref(),
            tenant,
            table: "webhooks",
            row: vec![h.id.to_string()],
        };
        sqlx::query(
            "INSERT INTO webhooks (tenant_id, id, url, secret_wrapped, min_severity, kinds,
             created_at, key_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(tenant.0.to_string())
        .bind(h.id.to_string())
        .bind(seal.seal_str("url", &h.url)?)
        .bind(&h.secret_wrapped)
        .bind(&h.min_severity)
        .bind(serde_json::to_string(&h.kinds).map_err(|e| StoreError::Corrupt(e.to_string()))?)
        .bind(h.created_at)
        .bind(sealer.version())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub(crate) async fn alarms_list_webhooks(&self, tenant: TenantId) -> Result<Vec<WebhookRow>> {
        let sealer = self.sealer(tenant).await?;
        sqlx::query("SELECT * FROM webhooks WHERE tenant_id = ? ORDER BY created_at, id")
            .bind(tenant.0.to_string())
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| webhook_from(sealer.as_ref(), tenant, r))
            .collect()
    }

    pub(crate) async fn alarms_queue_deliveries(
        &self,
        cursor_key: &str,
        cursor: i64,
        rows: &[(TenantId, DeliveryRow)],
    ) -> Result<()> {
        // Sealed before the transaction: a sealer may read keys from the store.
        let mut sealed = Vec::with_capacity(rows.len());
        let mut sealers: std::collections::HashMap<TenantId, std::sync::Arc<dyn TenantSealer>> =
            std::collections::HashMap::new();
        for (tenant, d) in rows {
            let sealer = match sealers.get(tenant) {
                Some(s) => s.clone(),
                None => {
                    let s = self.sealer(*tenant).await?;
                    sealers.insert(*tenant, s.clone());
                    s
                }
            };
            let seal = RowSeal {
                sealer: sealer.as_ref(),
                tenant: *tenant,
                table: "alarm_deliveries",
                row: vec![d.id.to_string()],
            };
            sealed.push((
                seal.seal_str("body", &d.body)?,
                seal.seal_opt("last_error", d.last_error.as_deref())?,
                sealer.version(),
            ));
        }
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        for ((tenant, d), (body, last_error, version)) in rows.iter().zip(sealed) {
            sqlx::query(
                "INSERT INTO alarm_deliveries (tenant_id, id, channel, target_id, alarm_id, event_id,
                 body, status, attempts, next_at, last_error, created_at, finished_at, key_version)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (target_id, event_id) DO NOTHING",
            )
            .bind(tenant.0.to_string())
            .bind(d.id.to_string())
            .bind(d.channel.as_str())
            .bind(d.target_id.to_string())
            .bind(d.alarm_id.to_string())
            .bind(d.event_id)
            .bind(body)
            .bind(d.status.as_str())
            .bind(i64::from(d.attempts))
            .bind(d.next_at)
            .bind(last_error)
            .bind(d.created_at)
            .bind(d.finished_at)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO portal_meta (key, value) VALUES (?, ?)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(cursor_key)
        .bind(cursor.to_string().into_bytes())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn alarms_due_deliveries(
        &self,
        now: i64,
        limit: u32,
    ) -> Result<Vec<(TenantId, DeliveryRow)>> {
        let rows = sqlx::query(
            "SELECT * FROM alarm_deliveries WHERE status = 'pending' AND next_at <= ?
             ORDER BY next_at, created_at LIMIT ?",
        )
        .bind(now)
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        open_across_tenants(self, &rows, delivery_from).await
    }

    pub(crate) async fn alarms_record_attempt(
        &self,
        tenant: TenantId,
        d: &DeliveryRow,
    ) -> Result<()> {
        let sealer = self.sealer(tenant).await?;
        let seal = RowSeal {
            sealer: sealer.as_ref(),
            tenant,
            table: "alarm_deliveries",
            row: vec![d.id.to_string()],
        };
        let r = sqlx::query(
            "UPDATE alarm_deliveries SET status = ?, attempts = ?, next_at = ?, last_error = ?,
             finished_at = ? WHERE tenant_id = ? AND id = ?",
        )
        .bind(d.status.as_str())
        .bind(i64::from(d.attempts))
        .bind(d.next_at)
        .bind(seal.seal_opt("last_error", d.last_error.as_deref())?)
        .bind(d.finished_at)
        .bind(tenant.0.to_string())
        .bind(d.id.to_string())
        .execute(self.pool())
        .await?;
        if r.rows_affected() != 1 {
            return Err(StoreError::NotFound(format!("delivery {}", d.id)));
        }
        Ok(())
    }

    pub(crate) async fn alarms_list_deliveries(
        &self,
        tenant: TenantId,
        status: Option<DeliveryStatus>,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>> {
        let sealer = self.sealer(tenant).await?;
        let mut q =
            sqlx::QueryBuilder::<Sqlite>::new("SELECT * FROM alarm_deliveries WHERE tenant_id = ");
        q.push_bind(tenant.0.to_string());
        if let Some(s) = status {
            q.push(" AND status = ").push_bind(s.as_str());
        }
        q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(limit.max(1) as i64);
        q.build()
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| delivery_from(sealer.as_ref(), tenant, r))
            .collect()
    }
}
