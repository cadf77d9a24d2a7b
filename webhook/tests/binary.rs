//! The `esi-webhook` binary as its Deployment runs it: its flags' defaults parse, it serves
//! HTTPS, and on SIGTERM it keeps serving for its shutdown delay, then exits cleanly.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_esi-webhook");

/// The port in a log line naming `127.0.0.1:<port>`.
fn port_in(line: &str) -> Option<u16> {
    let rest = &line[line.find("127.0.0.1:")? + "127.0.0.1:".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn starts_on_its_defaults_and_serves_through_its_shutdown_delay() {
    let p = esi_test_support::pki("esi-webhook").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, &p.cert_pem).unwrap();
    std::fs::write(&key, &p.key_pem).unwrap();
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--service-account-defaults",
            "false",
        ])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("ESI_WEBHOOK_SHUTDOWN_DELAY", "2s")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut log = Vec::new();
    let started = Instant::now();
    let port = loop {
        let line = seen
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("esi-webhook did not start; its log:\n{}", log.join("\n"))
            });
        if line.contains("esi-webhook listening") {
            break port_in(&line).unwrap();
        }
        log.push(line);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}",
            log.join("\n")
        );
    };
    let url = format!("https://127.0.0.1:{port}/healthz");
    let fresh = || {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(p.ca_pem.as_bytes()).unwrap()])
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    };
    assert_eq!(fresh().get(&url).send().await.unwrap().status(), 200);

    let asked = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = fresh().get(&url).send().await;
    assert!(
        asked.elapsed() < Duration::from_millis(1500),
        "checked too late"
    );
    assert_eq!(during.expect("refused inside the delay").status(), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "esi-webhook did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit {status}");
    assert!(
        asked.elapsed() >= Duration::from_millis(1900),
        "exited {:?} after SIGTERM, before its delay",
        asked.elapsed()
    );
}
