//! `VaultDynamicSecret`'s retries against a loopback FAKE of Vault that answers one minting
//! call badly (no answer, a reset, a cut or oversized body, an error status) and every later
//! one well. OpenBao cannot be made to misbehave on cue; the fake speaks raw HTTP/1.1 so it can
//! drop a connection mid-answer. It serves exactly what the generator calls: `lookup-self`
//! (refused, so the static token is used without renewal), the minting `POST`, and
//! `sys/leases/revoke`. Each case counts the mints Vault would have made.

#![cfg(feature = "vault")]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use esi_backends::{BackendError, Generate};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::{build, ctx, identity};

const MINT_PATH: &str = "pki/issue/web";

/// How the fake answers the first minting call.
#[derive(Clone, Copy, Debug)]
enum Bad {
    /// Never answers (the client's timeout fires).
    Silent,
    /// Closes the connection without answering.
    Reset,
    /// Announces the whole answer, sends its first half, closes.
    Cut,
    /// Answers 200 with a body over the client's 1 MiB limit.
    Oversized,
    /// Answers 200 with a proxy's HTML page.
    Html,
    /// Answers this error status.
    Status(u16),
    /// Answers well, with a token (an `auth` block) beside the data.
    WithToken,
    /// Answers 401 after writing a new token into the file the store reads (the operator's
    /// rotation, or a proxy refusing a token revoked behind the federation's back).
    Unauthorized,
}

#[derive(Default)]
struct Seen {
    mints: AtomicUsize,
    revoked: Mutex<Vec<String>>,
    /// The store's token file, rewritten by [`Bad::Unauthorized`].
    token_file: Mutex<Option<std::path::PathBuf>>,
}

/// Vault's answer to the `n`th mint: a leased certificate, its fields in Vault's order (a
/// Go struct's: `lease_id` before `data`), which `json!` would sort.
fn minted(n: usize, padding: usize) -> Vec<u8> {
    let data = json!({
        "certificate": format!("-----BEGIN CERTIFICATE-----{}", "A".repeat(padding)),
        "private_key": "-----BEGIN PRIVATE KEY-----secret",
        "serial_number": format!("0a:{n:02x}"),
    });
    format!(
        r#"{{"request_id":"req-{n}","lease_id":"{MINT_PATH}/lease-{n}","renewable":false,"lease_duration":1800,"data":{data},"wrap_info":null,"warnings":null,"auth":null}}"#
    )
    .into_bytes()
}

fn response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Reads one request: its request line and body; `None` when the client closed.
async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + length].to_vec();
    buf.drain(..head_end + length);
    let line = head.lines().next().unwrap_or_default().to_owned();
    Some((line, body))
}

async fn serve_connection(mut sock: TcpStream, bad: Bad, seen: Arc<Seen>) {
    let mut buf = Vec::new();
    while let Some((line, body)) = read_request(&mut sock, &mut buf).await {
        let answer = if line.starts_with("GET /v1/auth/token/lookup-self") {
            response(
                403,
                "application/json",
                br#"{"errors":["permission denied"]}"#,
            )
        } else if line.starts_with("PUT /v1/sys/leases/revoke") {
            let body: serde_json::Value = serde_json::from_slice(&body).expect("json body");
            let lease = body["lease_id"].as_str().unwrap_or_default().to_owned();
            seen.revoked.lock().expect("lock").push(lease);
            response(204, "application/json", b"")
        } else if line.starts_with("POST /v1/auth/token/revoke-accessor") {
            let body: serde_json::Value = serde_json::from_slice(&body).expect("json body");
            let accessor = body["accessor"].as_str().unwrap_or_default();
            seen.revoked
                .lock()
                .expect("lock")
                .push(format!("accessor {accessor}"));
            response(204, "application/json", b"")
        } else if line.starts_with(&format!("POST /v1/{MINT_PATH} ")) {
            let n = seen.mints.fetch_add(1, Ordering::SeqCst) + 1;
            if let Bad::WithToken = bad {
                let with_token = String::from_utf8(minted(n, 16)).expect("utf-8").replace(
                    r#""auth":null"#,
                    r#""auth":{"client_token":"hvs.minted-alongside","accessor":"acc-1","lease_duration":3600,"renewable":true}"#,
                );
                response(200, "application/json", with_token.as_bytes())
            } else if n > 1 {
                response(200, "application/json", &minted(n, 16))
            } else {
                match bad {
                    Bad::Silent => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        return;
                    }
                    Bad::Reset => return,
                    Bad::Cut => {
                        let whole = response(200, "application/json", &minted(n, 4096));
                        let _ = sock.write_all(&whole[..whole.len() / 2]).await;
                        return;
                    }
                    Bad::Oversized => response(200, "application/json", &minted(n, 2 << 20)),
                    Bad::Html => response(200, "text/html", b"<html>502 bad gateway</html>"),
                    Bad::Status(code) => {
                        response(code, "application/json", br#"{"errors":["try again"]}"#)
                    }
                    Bad::WithToken => unreachable!("answered above"),
                    Bad::Unauthorized => {
                        if let Some(path) = seen.token_file.lock().expect("lock").as_ref() {
                            std::fs::write(path, "rotated-token").expect("rotate");
                        }
                        response(401, "application/json", br#"{"errors":["bad token"]}"#)
                    }
                }
            }
        } else {
            response(404, "application/json", br#"{"errors":[]}"#)
        };
        if sock.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// Starts the fake; its base URL and what it saw.
async fn fake_vault(bad: Bad) -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Seen::default());
    let shared = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(serve_connection(sock, bad, shared.clone()));
        }
    });
    (base, seen)
}

/// The generator under test: a PKI certificate from the fake at `base`, with `retries` as its
/// `retrySettings`.
fn generator(
    base: &str,
    token_file: &std::path::Path,
    retries: Option<serde_json::Value>,
) -> esi_backends::Generator {
    let mut spec = json!({
        "secretStoreRef": {"name": "vault"},
        "path": MINT_PATH,
        "method": "POST",
        "parameters": {"common_name": "a.example.test"},
    });
    if let Some(r) = retries {
        spec["retrySettings"] = r;
    }
    build(
        "VaultDynamicSecret",
        spec,
        Some(
            json!({"provider": {"vault": {"server": base, "timeout": "1s",
            "auth": {"token": {"file": token_file}}}}}),
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_never_mint_twice_what_cannot_be_revoked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "fake-root-token").expect("write");
    let id = identity();
    let c = ctx(&id, "payments/VaultDynamicSecret/cert");
    // (first answer, mints, revoked lease ids, whether the call succeeds in the end)
    let cases: [(Bad, usize, &[&str], bool); 9] = [
        // The request reached Vault and no answer came back: it may have minted.
        (Bad::Silent, 1, &[], false),
        (Bad::Reset, 1, &[], false),
        // Vault minted; the lease found in what arrived is revoked, then a fresh mint.
        (Bad::Cut, 2, &["pki/issue/web/lease-1"], true),
        (Bad::Oversized, 2, &["pki/issue/web/lease-1"], true),
        // Success without anything revocable in it: Vault may have minted; no retry.
        (Bad::Html, 1, &[], false),
        // Vault said "not now": nothing was minted.
        (Bad::Status(503), 2, &[], true),
        (Bad::Status(429), 2, &[], true),
        (Bad::Status(412), 2, &[], true),
        // A gateway's timeout says nothing about what Vault did behind it.
        (Bad::Status(504), 1, &[], false),
    ];
    for (bad, mints, revoked, succeeds) in cases {
        let (base, seen) = fake_vault(bad).await;
        let retries = json!({"maxRetries": 2, "retryInterval": "10ms"});
        let g = generator(&base, &token_file, Some(retries));
        let result = g.generate(&c).await;
        assert_eq!(
            seen.mints.load(Ordering::SeqCst),
            mints,
            "{bad:?}: mints ({result:?})"
        );
        assert_eq!(
            *seen.revoked.lock().expect("lock"),
            revoked,
            "{bad:?}: revoked leases"
        );
        match result {
            Ok(cred) if succeeds => {
                assert_eq!(cred.data["serial_number"], "0a:02", "{bad:?}")
            }
            Err(BackendError::Unavailable { .. } | BackendError::Rejected { .. }) if !succeeds => {}
            other => panic!("{bad:?}: want success {succeeds}, got {other:?}"),
        }
    }
}

/// An answer that carries a token beside the data asked for (`resultType: Data`): the data is
/// handed out, and the token, which nobody is handed, is revoked at once by its accessor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_minted_beside_the_data_is_revoked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "fake-root-token").expect("write");
    let id = identity();
    let c = ctx(&id, "payments/VaultDynamicSecret/cert");
    let (base, seen) = fake_vault(Bad::WithToken).await;
    let g = generator(&base, &token_file, None);
    let cred = g.generate(&c).await.expect("the data is handed out");
    assert_eq!(cred.data["serial_number"], "0a:01");
    assert!(
        !cred.data.values().any(|v| v.contains("hvs.")),
        "the token leaked into the credential"
    );
    assert_eq!(seen.mints.load(Ordering::SeqCst), 1);
    assert_eq!(*seen.revoked.lock().expect("lock"), ["accessor acc-1"]);
}

/// A 401 is the federation's token not accepted: the store reads its token again and retries
/// once with the new one, with no `retrySettings` needed; an unchanged token is not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_re_reads_the_token_and_retries_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    let id = identity();
    let c = ctx(&id, "payments/VaultDynamicSecret/cert");
    for rotates in [true, false] {
        std::fs::write(&token_file, "fake-root-token").expect("write");
        let (base, seen) = fake_vault(Bad::Unauthorized).await;
        if rotates {
            *seen.token_file.lock().expect("lock") = Some(token_file.clone());
        }
        let result = generator(&base, &token_file, None).generate(&c).await;
        if rotates {
            let cred = result.expect("the retry with the rotated token mints");
            assert_eq!(cred.data["serial_number"], "0a:02");
            assert_eq!(seen.mints.load(Ordering::SeqCst), 2);
        } else {
            assert!(
                matches!(result, Err(BackendError::Unavailable { .. })),
                "{result:?}"
            );
            assert_eq!(seen.mints.load(Ordering::SeqCst), 1);
        }
    }
}
