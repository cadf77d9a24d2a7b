//! `esi-federation dev`, the README's first command: started as a subprocess, the `curl`
//! commands it prints work.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn dev_mode_prints_working_curl_commands() {
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("dev.token");
    // Any free port: the commands it prints must name the port it really bound.
    let mut child = Command::new(env!("CARGO_BIN_EXE_esi-federation"))
        .args(["dev", "--listen", "127.0.0.1:0", "--token-out"])
        .arg(&token_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut curls = Vec::new();
    while curls.len() < 4 {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("dev mode printed its commands");
        if let Some(cmd) = line.trim().strip_prefix("curl ") {
            curls.push(format!("curl --fail {cmd}"));
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let run = |cmd: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let password: serde_json::Value = serde_json::from_str(&run(&curls[0])).unwrap();
    assert_eq!(password["data"]["password"].as_str().unwrap().len(), 32);
    let fake: serde_json::Value = serde_json::from_str(&run(&curls[1])).unwrap();
    assert_eq!(fake["data"]["username"], "demo-user");
    let whoami: serde_json::Value = serde_json::from_str(&run(&curls[2])).unwrap();
    assert_eq!(whoami["cluster"], "dev");
    assert_eq!(whoami["serviceAccount"]["name"], "demo");
    assert!(run(&curls[3]).contains("esi_federation_requests_total"));
    let _ = child.kill();
    let _ = child.wait();
}
