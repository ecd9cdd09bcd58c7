//! `--web.config.file`: TLS and basic auth on every route (exporter-toolkit format).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::exporter::{free_port, write};

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test CA");
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    leaf.subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse().expect("ip")));
    let leaf_key = rcgen::KeyPair::generate().expect("key");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf");
    Pki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    }
}

async fn https_get(addr: &str, ca_pem: &str, path: &str, auth: Option<&str>) -> (u16, String) {
    use rustls::pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("pem")).expect("add");
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the exporter");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    tls.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn tls_and_basic_auth_cover_every_route() {
    use base64::Engine;
    let dir = tempfile::tempdir().expect("tmp");
    let p = pki();
    write(dir.path(), "ca.crt", &p.ca_pem);
    write(dir.path(), "server.crt", &p.cert_pem);
    write(dir.path(), "server.key", &p.key_pem);
    let hash = bcrypt::hash("CANARY-web-password", 4).expect("hash");
    let web = write(
        dir.path(),
        "web.yml",
        &format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  prometheus: {hash}\n"),
    );
    let cfg = write(
        dir.path(),
        "c.yaml",
        &format!(
            "endpoints:\n  - {{name: a, host: 127.0.0.1, port: {}}}\n",
            free_port()
        ),
    );
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = std::process::Command::new(crate::support::exporter::bin())
        .args([
            "--config.file",
            cfg.to_str().expect("utf8"),
            "--web.config.file",
            web.to_str().expect("utf8"),
            &format!("--web.listen-address={addr}"),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starts");
    // wait for the port
    let mut up = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "exporter did not listen");
    let good = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("prometheus:CANARY-web-password")
    );
    let bad = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("prometheus:nope")
    );
    for path in [
        "/metrics",
        "/",
        "/-/healthy",
        "/-/ready",
        "/checks/endpoint:a",
    ] {
        let (s, body) = https_get(&addr, &p.ca_pem, path, None).await;
        assert_eq!(s, 401, "{path} without credentials: {body}");
        assert!(
            body.contains("WWW-Authenticate") || body.contains("www-authenticate"),
            "{body}"
        );
        assert_eq!(
            https_get(&addr, &p.ca_pem, path, Some(&bad)).await.0,
            401,
            "{path} with a wrong password"
        );
    }
    let (s, body) = https_get(&addr, &p.ca_pem, "/metrics", Some(&good)).await;
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("o365_endpoint_up{endpoint=\"a\"}"));
    assert!(!body.contains("CANARY"));
    assert_eq!(https_get(&addr, &p.ca_pem, "/", Some(&good)).await.0, 200);
    // plain HTTP on the TLS port gets nothing useful
    let plain = crate::support::exporter::get(&addr, "/metrics");
    assert!(plain.map(|(s, _)| s != 200).unwrap_or(true));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_broken_web_config_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tmp");
    let web = write(
        dir.path(),
        "web.yml",
        "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
    );
    let out = std::process::Command::new(crate::support::exporter::bin())
        .args([
            "--web.config.file",
            web.to_str().expect("utf8"),
            "--web.listen-address=127.0.0.1:0",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cert_file"));
}
