//! No private key is ever written in plaintext: after the portal creates a
//! tenant on a real data dir, none of its private keys' bytes appear in any
//! file there (database, WAL, blobs, CA file).

use std::path::Path;

use rampart_portal::audit::Actor;
use rampart_portal::config::Config;
use rampart_portal::service::Portal;

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[tokio::test]
async fn tenant_private_keys_never_reach_the_disk_in_the_clear() {
    let dir = tempfile::tempdir().unwrap();
    let portal = Portal::open(Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    })
    .await
    .unwrap();
    let tenant = portal
        .create_tenant(&Actor::Cli, "acme", "acme.rampart.test", None)
        .await
        .unwrap();
    // Exercise the paths that write: a token, an enrollment token.
    portal
        .mint_api_token(&Actor::Cli, Some(tenant.id), "t", "admin", None)
        .await
        .unwrap();
    portal
        .create_enrollment_token(&Actor::Cli, &tenant, 600, 1, vec![], false)
        .await
        .unwrap();
    let secrets = portal.secrets(tenant.id).await.unwrap();
    let signing = secrets.signing.secret_bytes();
    let upload = secrets.upload.secret_bytes();
    // The PKCS#8 DER holds the raw EC scalar; search for its last 32 bytes.
    let tls = &secrets.tls_key_der[secrets.tls_key_der.len() - 32..];
    let public = secrets.upload_key().to_bytes();
    drop(portal);

    let mut all = Vec::new();
    files(dir.path(), &mut all);
    assert!(
        all.iter().any(|p| p.ends_with("rampart.db")),
        "the database was written"
    );
    let mut public_found = false;
    for path in all {
        let data = std::fs::read(&path).unwrap();
        public_found |= data.windows(public.len()).any(|w| w == public.as_slice());
        for (name, secret) in [
            ("signing", &signing[..]),
            ("upload", &upload[..]),
            ("tls", tls),
        ] {
            assert!(
                !data.windows(secret.len()).any(|w| w == secret),
                "{name} private key found in clear in {}",
                path.display()
            );
        }
    }
    // The same scan does find what is stored in the clear: it can see keys.
    assert!(public_found, "the scan should find the public upload key");
}
