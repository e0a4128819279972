//! `rampart demo`: the portal with a demo tenant and a local agent enrolled
//! the real way (token, pin, HTTPS), so a new user sees the whole loop.
//! This is the only place the portal binary uses the agent library.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rampart_agent::identity::StateDir;
use rampart_portal::audit::Actor;
use rampart_portal::service::Portal;
use rampart_store::DeviceId;

const TENANT: &str = "demo";
const DOMAIN: &str = "demo.localhost";

pub async fn run(portal: Arc<Portal>) -> anyhow::Result<()> {
    let cfg = portal.config.clone();
    let tenant = match portal.store.tenant_by_name(TENANT).await? {
        Some(t) => t,
        None => {
            portal
                .create_tenant(&Actor::Cli, TENANT, DOMAIN, None)
                .await?
        }
    };
    let operator = portal
        .mint_api_token(&Actor::Cli, None, "demo operator", "operator", None)
        .await?;
    let tenant_token = portal
        .mint_api_token(&Actor::Cli, Some(tenant.id), "demo owner", "owner", None)
        .await?;

    let listener = rampart_portal::bind(cfg.listen)
        .with_context(|| format!("binding {}: is another portal running?", cfg.listen))?;
    let port = listener.local_addr()?.port();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(rampart_portal::run(portal.clone(), listener, async {
        let _ = stop_rx.await;
    }));

    // Enroll the demo agent over HTTPS, pinning the tenant certificate.
    let agent_dir = StateDir::new(cfg.data_dir.join("demo-agent"), None);
    let loopback = SocketAddr::from(([127, 0, 0, 1], port));
    if !agent_dir.is_enrolled() {
        let (_, token) = portal
            .create_enrollment_token(&Actor::Cli, &tenant, 600, 1, vec!["demo".into()], false)
            .await?;
        rampart_agent::run::enroll(&agent_dir, &token, Some(loopback), "demo-agent")
            .await
            .context("enrolling the demo agent")?;
    }
    let device = DeviceId(agent_dir.identity()?.device_id);
    let agent = tokio::spawn(rampart_agent::run::run(
        agent_dir,
        rampart_agent::run::RunOptions {
            heartbeat_every: Duration::from_secs(10),
            ..Default::default()
        },
        std::future::pending(),
    ));

    // Push one signed instruction and wait for the agent's ack.
    let ins = portal
        .queue_instruction(
            &Actor::Cli,
            tenant.id,
            device,
            "ping",
            serde_json::json!({"message": "hello from the demo"}),
            None,
        )
        .await?;
    let mut acked = None;
    for _ in 0..100 {
        let rows = portal.store.list_instructions(tenant.id, device).await?;
        if let Some(r) = rows.iter().find(|r| r.seq == ins.seq && r.status == "ok") {
            acked = r.result.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let admin_url = format!("https://{}:{port}", cfg.admin_domain);
    let tenant_url = format!("https://{}:{port}", tenant.domain);
    let ca = cfg.ca_cert_path();
    println!();
    println!("Rampart demo is running.");
    println!("  admin API     {admin_url}/api/v1/admin/tenants");
    println!("  tenant API    {tenant_url}/api/v1/devices");
    println!("  API document  {admin_url}/api/v1/openapi.json");
    println!("  CA cert       {}", ca.display());
    println!("  operator token (admin API):  {}", operator.secret);
    println!("  tenant admin token (demo):   {}", tenant_token.secret);
    println!(
        "  demo agent    device {device}, ping instruction seq {} -> {}",
        ins.seq,
        acked
            .map(|r| format!("acked: {r}"))
            .unwrap_or_else(|| "not acked yet".into())
    );
    println!();
    println!("Try:");
    println!(
        "  curl --cacert {} --resolve {}:{port}:127.0.0.1 -H 'authorization: Bearer {}' {tenant_url}/api/v1/devices",
        ca.display(),
        tenant.domain,
        tenant_token.secret
    );
    println!();
    println!("Press Ctrl-C to stop.");
    tokio::signal::ctrl_c().await.ok();
    agent.abort();
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(())
}
