//! Helpers shared by the end-to-end tests: the real `rampart` and
//! `rampart-agent` binaries as processes in temp dirs, talking HTTPS over
//! loopback as in production.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub fn portal_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rampart"))
}

pub fn agent_bin() -> PathBuf {
    let p = portal_bin().with_file_name("rampart-agent");
    assert!(
        p.exists(),
        "{} is missing: build all binaries first (`cargo build --bins`, as scripts/test does)",
        p.display()
    );
    p
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A child process killed when dropped; its output goes to files in `log_dir`.
pub struct Proc {
    pub child: Child,
    pub name: String,
    pub log_dir: PathBuf,
}

impl Proc {
    pub fn spawn(cmd: &mut Command, name: &str, log_dir: &Path) -> Proc {
        let out = std::fs::File::create(log_dir.join(format!("{name}.out"))).unwrap();
        let err = std::fs::File::create(log_dir.join(format!("{name}.err"))).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            child,
            name: name.into(),
            log_dir: log_dir.into(),
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log_dir.join(format!("{}.err", self.name))).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a command to completion, returning (success, stdout, stderr).
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("running a command");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A running portal process on a temp data dir.
pub struct PortalProc {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub proc: Option<Proc>,
    pub operator: String,
    /// Extra `serve` flags, kept across restarts.
    pub extra: Vec<String>,
}

impl PortalProc {
    pub async fn start() -> PortalProc {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra: &[&str]) -> PortalProc {
        let dir = tempfile::tempdir().unwrap();
        let (ok, out, err) = run(Command::new(portal_bin())
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--json", "admin-token", "create"]));
        assert!(ok, "admin-token create failed: {err}");
        let operator = serde_json::from_str::<Value>(&out).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string();
        let mut p = PortalProc {
            dir,
            port: free_port(),
            proc: None,
            operator,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        p.restart().await;
        p
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub async fn restart(&mut self) {
        let proc = Proc::spawn(
            Command::new(portal_bin())
                .arg("--data-dir")
                .arg(self.dir.path())
                .args(["serve", "--listen", &self.addr().to_string()])
                .args(["--poll-wait-secs", "5", "--metrics-listen", "off"])
                .args(&self.extra)
                .env("RAMPART_LOG", "info"),
            "portal",
            self.dir.path(),
        );
        self.proc = Some(proc);
        let addr = self.addr();
        eventually(
            "the portal to listen",
            Duration::from_secs(30),
            || async move { std::net::TcpStream::connect(addr).ok().map(|_| ()) },
        )
        .await;
    }

    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// An HTTPS request to `domain` on this portal, verified against its CA.
    pub async fn call(
        &self,
        method: reqwest::Method,
        domain: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("https://{domain}:{}{path}", self.port);
        // Resolve every domain to loopback, like curl --resolve.
        let client = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(
                    &std::fs::read(self.dir.path().join("ca.pem")).unwrap(),
                )
                .unwrap(),
            )
            .resolve(domain, self.addr())
            .build()
            .unwrap();
        let mut req = client.request(method, url).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("portal reachable");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, domain: &str, path: &str, token: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, domain, path, token, None)
            .await
    }

    pub async fn post(
        &self,
        domain: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.call(reqwest::Method::POST, domain, path, token, body)
            .await
    }

    pub async fn create_tenant(&self, name: &str) -> Tenant {
        let domain = format!("{name}.rampart.test");
        let (s, v) = self
            .post(
                "localhost",
                "/api/v1/admin/tenants",
                &self.operator,
                Some(json!({"name": name, "domain": domain})),
            )
            .await;
        assert_eq!(s, 201, "create tenant: {v}");
        Tenant {
            domain,
            token: v["admin_token"].as_str().unwrap().to_string(),
        }
    }

    pub async fn enrollment_token(&self, t: &Tenant, body: Value) -> String {
        let (s, v) = self
            .post(&t.domain, "/api/v1/enrollment-tokens", &t.token, Some(body))
            .await;
        assert_eq!(s, 201, "enrollment token: {v}");
        v["token"].as_str().unwrap().to_string()
    }
}

pub struct Tenant {
    pub domain: String,
    pub token: String,
}

/// An agent state dir and, while running, its process.
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub proc: Option<Proc>,
}

impl Agent {
    pub fn new() -> Agent {
        Agent {
            dir: tempfile::tempdir().unwrap(),
            proc: None,
        }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(agent_bin());
        c.arg("--state-dir").arg(self.dir.path().join("state"));
        c
    }

    pub fn enroll(&self, token: &str, portal: SocketAddr) -> (bool, String) {
        let (ok, out, err) =
            run(self
                .cmd()
                .args(["enroll", token, "--resolve", &portal.to_string()]));
        (ok, format!("{out}{err}"))
    }

    pub fn identity(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir.path().join("state/identity.json")).unwrap())
            .unwrap()
    }

    pub fn device_id(&self) -> String {
        self.identity()["device_id"].as_str().unwrap().to_string()
    }

    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    /// Starts `run` with extra flags (collectors, limits).
    pub fn start_with(&mut self, extra: &[&str]) {
        let mut c = self.cmd();
        c.args(["run", "--heartbeat-secs", "1"]).args(extra);
        self.proc = Some(Proc::spawn(&mut c, "agent", self.dir.path()));
    }

    pub fn status(&self) -> Value {
        let (ok, out, err) = run(self.cmd().args(["status", "--json"]));
        assert!(ok, "agent status: {err}");
        serde_json::from_str(&out).unwrap()
    }
}

/// Mail received by [`smtp_sink`]: the envelope recipients and the
/// message as sent after DATA, with quoted-printable soft line breaks
/// (RFC 2045 6.7) joined so that text can be searched.
#[derive(Clone, Debug)]
pub struct Mail {
    pub rcpt: Vec<String>,
    pub data: String,
}

/// A minimal SMTP server on loopback (RFC 5321's commands a client needs
/// to hand over a message), keeping what it receives: the sink alarm email
/// is tested against.
pub async fn smtp_sink() -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<Mail>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let mails = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let m = mails.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = l.accept().await {
            let m = m.clone();
            tokio::spawn(async move {
                let (r, mut w) = conn.into_split();
                let mut lines = BufReader::new(r).lines();
                let _ = w.write_all(b"220 sink ESMTP\r\n").await;
                let mut rcpt = Vec::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    let cmd = line.to_ascii_uppercase();
                    let reply: &[u8] = if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
                        b"250 sink\r\n"
                    } else if cmd.starts_with("RCPT TO:") {
                        rcpt.push(line[8..].trim().trim_matches(['<', '>']).to_string());
                        b"250 ok\r\n"
                    } else if cmd.starts_with("DATA") {
                        let _ = w.write_all(b"354 end with .\r\n").await;
                        let mut data = String::new();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            data.push_str(&l);
                            data.push('\n');
                        }
                        m.lock().unwrap().push(Mail {
                            rcpt: std::mem::take(&mut rcpt),
                            data: data.replace("=\n", ""),
                        });
                        b"250 queued\r\n"
                    } else if cmd.starts_with("QUIT") {
                        let _ = w.write_all(b"221 bye\r\n").await;
                        break;
                    } else {
                        b"250 ok\r\n"
                    };
                    if w.write_all(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, mails)
}
