//! `esi-cli` end to end: the real binary as a subprocess against the real federation binary
//! (a local OIDC issuer minting Kubernetes-shaped tokens), in temp dirs standing for the Pod's
//! volumes.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use esi_api::inject::{
    ContainerSpec, EnvImport, EnvMapping, FileContent, FileOutput, Notify, Owner, RefreshSpec,
};
use esi_test_support::ClosedPort;
use esi_tests::{
    Federation, GENERATORS, Issuer, Pod, TokenSpec, config_dir, send_signal, spec, terminate,
    wait_exit, wait_until,
};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run esi-cli")
}

fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "esi-cli failed: {}\nstdout: {}",
        text(&out.stderr),
        text(&out.stdout)
    );
    out
}

fn mapping(name: &str, alias: &str, key: &str) -> EnvMapping {
    EnvMapping {
        name: name.into(),
        alias: alias.into(),
        key: key.into(),
    }
}

fn file(name: &str, content: FileContent, mode: u32) -> FileOutput {
    FileOutput {
        name: name.into(),
        path: format!("/etc/app/{name}"),
        volume_path: format!("files/app/{name}"),
        content,
        mode,
    }
}

fn app_container() -> ContainerSpec {
    ContainerSpec {
        env: vec![
            mapping("DB_USER", "creds", "username"),
            mapping("DB_PASS", "creds", "password"),
        ],
        env_from: vec![EnvImport {
            alias: "pw".into(),
            prefix: "PW_".into(),
        }],
    }
}

struct Setup {
    issuer: Issuer,
    _config: tempfile::TempDir,
    fed: Federation,
}

/// The spec most tests use: a leased `Fake/creds` and a `Password/db`, both read by `app`.
fn app_spec(url: &str) -> esi_api::inject::InjectionSpec {
    spec(
        url,
        &[
            ("creds", "default/Fake/creds"),
            ("pw", "default/Password/db"),
        ],
        &[("app", app_container())],
        vec![],
    )
}

fn setup() -> Setup {
    let issuer = Issuer::start();
    let config = config_dir(&issuer.url(), GENERATORS);
    let fed = Federation::start(config.path(), "127.0.0.1:0", None);
    Setup {
        issuer,
        _config: config,
        fed,
    }
}

fn json_file(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn init_writes_bundles_and_files_in_every_format_then_exec_runs_with_them() {
    let s = setup();
    let pod = Pod::new(&s.issuer.token("default", "app"));
    let mut spec = spec(
        &s.fed.url(),
        &[
            ("creds", "default/Fake/creds"),
            ("pw", "default/Password/db"),
        ],
        &[("app", app_container())],
        vec![
            file(
                "creds.json",
                FileContent::Json {
                    alias: "creds".into(),
                },
                0o400,
            ),
            file(
                "creds.yaml",
                FileContent::Yaml {
                    alias: "creds".into(),
                },
                0o440,
            ),
            file(
                "creds.env",
                FileContent::Env {
                    alias: "creds".into(),
                },
                0o600,
            ),
            file(
                "password",
                FileContent::Raw {
                    alias: "pw".into(),
                    key: "password".into(),
                    decode: None,
                },
                0o400,
            ),
            file(
                "dsn",
                FileContent::Template {
                    template: "postgres://{{ .creds.username }}:{{.pw.password}}@db/app\n".into(),
                },
                0o440,
            ),
        ],
    );
    spec.owner = Owner {
        uid: Some(1000),
        gid: Some(2000),
    };
    ok(pod.cli(&spec).arg("init"));

    // The binary, for app containers without a shell.
    let binary = pod.path("bin/esi-cli");
    assert_eq!(mode(&binary), 0o555);
    assert_eq!(
        std::fs::read(&binary).unwrap(),
        std::fs::read(esi_tests::bin("esi-cli")).unwrap()
    );

    let creds = json_file(&pod.path("files/app/creds.json"));
    assert_eq!(creds["username"], "fake-user");
    let hostile = "fake pass 'with' \"quotes\", $dollar & ünïcødé";
    assert_eq!(creds["password"], hostile);
    let yaml = std::fs::read_to_string(pod.path("files/app/creds.yaml")).unwrap();
    assert!(yaml.contains("username: fake-user"), "{yaml}");
    let env = std::fs::read_to_string(pod.path("files/app/creds.env")).unwrap();
    assert!(env.contains("username=\"fake-user\"\n"), "{env}");
    // The dotenv file reads back exactly through a POSIX shell.
    let sourced = Command::new("sh")
        .arg("-c")
        .arg(". \"$1\"; printf %s \"$password\"")
        .arg("sh")
        .arg(pod.path("files/app/creds.env"))
        .output()
        .unwrap();
    assert_eq!(text(&sourced.stdout), hostile);
    let password = std::fs::read_to_string(pod.path("files/app/password")).unwrap();
    assert_eq!(password.len(), 24);
    let dsn = std::fs::read_to_string(pod.path("files/app/dsn")).unwrap();
    assert_eq!(dsn, format!("postgres://fake-user:{password}@db/app\n"));

    for (name, want) in [
        ("creds.json", 0o400),
        ("creds.yaml", 0o440),
        ("creds.env", 0o600),
        ("password", 0o400),
        ("dsn", 0o440),
    ] {
        let p = pod.path(&format!("files/app/{name}"));
        assert_eq!(mode(&p), want, "{name}");
        let meta = std::fs::metadata(&p).unwrap();
        if rustix_is_root() {
            assert_eq!((meta.uid(), meta.gid()), (1000, 2000), "{name} ownership");
        }
    }
    let bundle_path = pod.path("env/app.json");
    assert_eq!(mode(&bundle_path), 0o400);
    let bundle = json_file(&bundle_path);
    assert_eq!(bundle["env"]["DB_USER"], "fake-user");
    assert_eq!(bundle["env"]["DB_PASS"], hostile);
    assert_eq!(bundle["env"]["PW_password"], password.as_str());
    assert!(bundle["expiresAt"].is_string(), "the Fake lease expires");
    assert_eq!(mode(&pod.path("state")), 0o700);
    let leases = json_file(&pod.path("state/leases.json"));
    assert_eq!(
        leases["leases"].as_array().unwrap().len(),
        1,
        "Fake has a lease, Password none"
    );
    // No temp files left behind.
    for dir in ["files/app", "env", "state", "bin"] {
        for e in std::fs::read_dir(pod.path(dir)).unwrap() {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!n.contains("esi-tmp"), "temp file {n} left in {dir}");
        }
    }

    // One fetch per Pod start: a second init mints nothing.
    let again = ok(pod.cli(&spec).arg("init"));
    assert!(
        text(&again.stderr).contains("not fetching again"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(pod.path("files/app/password")).unwrap(),
        password
    );
    assert_eq!(json_file(&pod.path("state/leases.json")), leases);

    // exec in the app container: no ESI_SPEC, no token, only the volume.
    let out = ok(pod
        .cli(&spec)
        .env_remove("ESI_SPEC")
        .env_remove("ESI_TOKEN_FILE")
        .env("KEEP_ME", "kept")
        .args(["exec", "--container", "app", "--", "env", "-0"]));
    let vars: BTreeMap<String, String> = out
        .stdout
        .split(|b| *b == 0)
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let l = text(l);
            l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect();
    assert_eq!(vars["DB_USER"], "fake-user");
    assert_eq!(vars["DB_PASS"], hostile);
    assert_eq!(vars["PW_password"], password);
    assert_eq!(vars["KEEP_ME"], "kept", "the app keeps its own environment");
}

fn rustix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| text(&o.stdout).trim() == "0")
}

#[test]
fn exec_passes_hostile_arguments_through_untouched() {
    let s = setup();
    let pod = Pod::new(&s.issuer.token("default", "app"));
    let spec = app_spec(&s.fed.url());
    ok(pod.cli(&spec).arg("init"));
    let hostile = [
        "two words",
        "comma,separated,list",
        "'single'",
        "\"double\"",
        "ünïcødé ✓ 日本",
        "",
        "--container",
        "--",
        "$HOME",
        "*",
        "back\\slash",
        "new\nline",
        "  padded  ",
    ];
    // The binary copied into the volume is what app containers run.
    let out = ok(Command::new(pod.path("bin/esi-cli"))
        .env("ESI_VOLUME_DIR", &pod.volume)
        .args(["exec", "--container", "app", "--", "sh", "-c"])
        .arg("printf '%s\\0' \"$@\"")
        .arg("argv0")
        .args(hostile));
    let got: Vec<String> = out
        .stdout
        .split(|b| *b == 0)
        .map(text)
        .collect::<Vec<_>>()
        .split_last()
        .map(|(_, rest)| rest.to_vec())
        .unwrap();
    assert_eq!(got, hostile, "arguments must arrive exactly as given");

    // Without --container, the only bundle is used; a missing program is a precise error.
    let out = run(Command::new(pod.path("bin/esi-cli"))
        .env("ESI_VOLUME_DIR", &pod.volume)
        .env("ESI_TERMINATION_LOG", &pod.termination_log)
        .args(["exec", "--", "/no/such/program", "x"]));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot execute /no/such/program"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn exec_refetches_expired_credentials_when_it_can_and_explains_when_it_cannot() {
    let s = setup();
    let pod = Pod::new(&s.issuer.token("default", "app"));
    let container = ContainerSpec {
        env: vec![mapping("SHORT_PASS", "short", "password")],
        env_from: vec![],
    };
    let spec = spec(
        &s.fed.url(),
        &[("short", "default/Fake/short")],
        &[("app", container)],
        vec![],
    );

    // Nothing in the volume, no token: says what is missing.
    let out = run(pod.cli(&spec).env_remove("ESI_SPEC").args([
        "exec",
        "--container",
        "app",
        "--",
        "true",
    ]));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("no credentials for container app"), "{err}");
    assert!(err.contains("esi-init"), "{err}");
    assert!(
        pod.termination_reason()
            .contains("no credentials for container app")
    );

    ok(pod.cli(&spec).arg("init"));
    let bundle = json_file(&pod.path("env/app.json"));
    let expires: jiff::Timestamp = bundle["expiresAt"].as_str().unwrap().parse().unwrap();
    wait_until(
        "the 4 s credential to expire",
        Duration::from_secs(10),
        || jiff::Timestamp::now() > expires,
    );

    // Expired, and this container has no token: precise failure.
    let out = run(pod
        .cli(&spec)
        .env_remove("ESI_SPEC")
        .env("ESI_TOKEN_FILE", pod.dir.path().join("absent-token"))
        .args(["exec", "--container", "app", "--", "true"]));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("expired at"), "{err}");
    assert!(err.contains("no ServiceAccount token at"), "{err}");

    // Expired, with a token (an esi-cli-capable container): fetched again, then exec'd.
    let out = ok(pod.cli(&spec).env_remove("ESI_SPEC").args([
        "exec",
        "--container",
        "app",
        "--",
        "sh",
        "-c",
        "printf %s \"$SHORT_PASS\"",
    ]));
    assert_eq!(text(&out.stdout), "short-lived-secret-9f8e7d");
    let renewed = json_file(&pod.path("env/app.json"));
    assert_ne!(
        renewed["expiresAt"], bundle["expiresAt"],
        "the bundle was rewritten"
    );
}

#[test]
fn refresh_swaps_files_atomically_before_expiry_and_signals_the_app() {
    let s = setup();
    let pod = Pod::new(&s.issuer.token("default", "app"));
    // A unique process name, so the refresher can signal no other process on this machine.
    let app_name = format!("esiapp{}", std::process::id() % 100_000);
    let app_bin = pod.dir.path().join(&app_name);
    // A symlink, not a copy: the kernel names the process after the path it was exec'd by, and
    // a copy's write descriptor, inherited by a process another test forks meanwhile, would make
    // the exec fail with ETXTBSY ("Text file busy").
    std::os::unix::fs::symlink("/bin/sh", &app_bin).unwrap();
    let signals = pod.dir.path().join("signals");
    let mut app = Command::new(&app_bin)
        .arg("-c")
        .arg(format!(
            "trap 'echo hup >> {}' USR1; echo started; while :; do sleep 0.05; done",
            signals.display()
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(app.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "started\n", "the app installed its trap");

    let mut spec = spec(
        &s.fed.url(),
        &[("short", "default/Fake/short")],
        &[],
        vec![file(
            "short.json",
            FileContent::Json {
                alias: "short".into(),
            },
            0o400,
        )],
    );
    spec.refresh = Some(RefreshSpec {
        at_percent: 50,
        notify: Notify::Signal {
            signal: "SIGUSR1".into(),
            process: app_name.clone(),
        },
    });
    spec.revoke_on_exit = true;
    ok(pod.cli(&spec).arg("init"));
    let target = pod.path("files/app/short.json");
    let expected = std::fs::read(&target).unwrap();
    let first_ino = std::fs::metadata(&target).unwrap().ino();
    let first_expiry: jiff::Timestamp =
        json_file(&pod.path("state/credentials.json"))["aliases"]["short"]["expiresAt"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();

    // A concurrent reader that must only ever see the whole file.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, reads, target, expected) = (
            stop.clone(),
            reads.clone(),
            target.clone(),
            expected.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut buf = Vec::new();
                std::fs::File::open(&target)
                    .expect("the file never disappears")
                    .read_to_end(&mut buf)
                    .unwrap();
                assert_eq!(buf, expected, "a reader saw a partial or different file");
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let mut refresher = pod
        .cli(&spec)
        .args(["refresh", "--min-interval", "500ms"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = refresher.stderr.take().unwrap();
    let log = Arc::new(std::sync::Mutex::new(String::new()));
    {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
    }
    wait_until("readiness", Duration::from_secs(10), || {
        pod.path("state/refresh.ready").exists()
    });
    wait_until("the first swap and signal", Duration::from_secs(10), || {
        std::fs::read_to_string(&signals).is_ok_and(|s| !s.is_empty())
    });
    let swapped_at = jiff::Timestamp::now();
    assert!(
        swapped_at < first_expiry,
        "the file must be replaced before the credential expires"
    );
    assert_ne!(
        std::fs::metadata(&target).unwrap().ino(),
        first_ino,
        "replaced by rename"
    );
    assert_eq!(mode(&target), 0o400);
    wait_until("a second swap and signal", Duration::from_secs(10), || {
        std::fs::read_to_string(&signals).is_ok_and(|s| s.lines().count() >= 2)
    });
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("the reader never saw a partial file");
    assert!(reads.load(Ordering::Relaxed) > 10);

    // SIGTERM: clean exit, and every lease revoked (revoke-on-exit).
    send_signal(refresher.id(), "TERM");
    let status = wait_exit(&mut refresher, Duration::from_secs(15));
    let log = log.lock().unwrap().clone();
    assert!(status.success(), "{log}");
    assert!(
        log.contains(&format!("sent SIGUSR1 to {app_name}")),
        "{log}"
    );
    let leases = json_file(&pod.path("state/leases.json"));
    let leases = leases["leases"].as_array().unwrap();
    // One lease per issuance, but each recording drops the expired ones: with a re-issue at
    // half of a 4 s lifetime, at most three are alive at once.
    assert!((2..=3).contains(&leases.len()), "{leases:?}");
    assert!(leases.iter().all(|l| l["revoked"] == true), "{leases:?}");
    let _ = app.kill();
    let _ = app.wait();
}

/// What [`reload_endpoint`] saw: each request's first line, with the inode of the watched file
/// when it came in.
type Calls = Arc<std::sync::Mutex<Vec<(String, u64)>>>;

/// An app's reload endpoint on loopback: records each request ([`Calls`]), answers 200.
fn reload_endpoint(watched: std::path::PathBuf) -> (String, Calls) {
    use std::io::Write as _;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/-/reload?from=esi",
        listener.local_addr().unwrap().port()
    );
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let ino = std::fs::metadata(&watched).map_or(0, |m| m.ino());
            record
                .lock()
                .unwrap()
                .push((first.trim_end().to_owned(), ino));
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, seen)
}

#[test]
fn refresh_calls_the_apps_reload_endpoint_after_each_swap() {
    let s = setup();
    let pod = Pod::new(&s.issuer.token("default", "app"));
    let target = pod.path("files/app/short.json");
    let (url, seen) = reload_endpoint(target.clone());
    let mut spec = spec(
        &s.fed.url(),
        &[("short", "default/Fake/short")],
        &[],
        vec![file(
            "short.json",
            FileContent::Json {
                alias: "short".into(),
            },
            0o400,
        )],
    );
    spec.refresh = Some(RefreshSpec {
        at_percent: 50,
        notify: Notify::Http {
            url: url.clone(),
            method: "PUT".into(),
        },
    });
    ok(pod.cli(&spec).arg("init"));
    let first_ino = std::fs::metadata(&target).unwrap().ino();
    let mut refresher = pod
        .cli(&spec)
        .args(["refresh", "--min-interval", "500ms"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("two swaps and calls", Duration::from_secs(15), || {
        seen.lock().unwrap().len() >= 2
    });
    let (status, log) = terminate(&mut refresher, Duration::from_secs(15));
    assert!(status.success(), "{log}");
    let seen = seen.lock().unwrap().clone();
    let mut inodes = vec![first_ino];
    for (line, ino) in &seen {
        assert_eq!(line, "PUT /-/reload?from=esi HTTP/1.1", "{seen:?}");
        // Called after the swap: the file the app re-reads is already the new one.
        assert!(!inodes.contains(ino), "called before a swap: {seen:?}");
        inodes.push(*ino);
    }
    assert!(
        log.contains(&format!("notified the app: PUT {url}: 200 OK")),
        "{log}"
    );

    // Nothing listening: each swap tries a few times, warns and keeps refreshing.
    let closed = ClosedPort::new();
    spec.refresh = Some(RefreshSpec {
        at_percent: 50,
        notify: Notify::Http {
            url: format!("http://127.0.0.1:{}/-/reload", closed.addr().port()),
            method: "POST".into(),
        },
    });
    let mut refresher = pod
        .cli(&spec)
        .args(["refresh", "--min-interval", "500ms"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let swapped = std::fs::metadata(&target).unwrap().ino();
    wait_until(
        "a swap without anyone to notify",
        Duration::from_secs(15),
        || std::fs::metadata(&target).is_ok_and(|m| m.ino() != swapped),
    );
    std::thread::sleep(Duration::from_secs(3));
    let (status, log) = terminate(&mut refresher, Duration::from_secs(15));
    assert!(status.success(), "{log}");
    assert!(
        log.contains("cannot notify the app: POST") && log.contains("failed 3 times"),
        "{log}"
    );

    // A URL off the Pod is refused before anything is issued.
    spec.refresh = Some(RefreshSpec {
        at_percent: 50,
        notify: Notify::Http {
            url: "http://169.254.169.254:80/latest".into(),
            method: "GET".into(),
        },
    });
    let out = pod.cli(&spec).arg("refresh").output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("the host must be 127.0.0.1, localhost or [::1]"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn init_retries_until_a_down_federation_comes_up() {
    let issuer = Issuer::start();
    let config = config_dir(&issuer.url(), GENERATORS);
    let closed = ClosedPort::new();
    let port = closed.addr().port();
    let url = format!("http://127.0.0.1:{port}");
    let pod = Pod::new(&issuer.token("default", "app"));
    let spec = spec(
        &url,
        &[("pw", "default/Password/db")],
        &[(
            "app",
            ContainerSpec {
                env: vec![mapping("PW", "pw", "password")],
                env_from: vec![],
            },
        )],
        vec![],
    );
    let started = Instant::now();
    let mut init = pod
        .cli(&spec)
        .args(["init", "--deadline", "60s", "--verbose"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until init has really failed to connect and is backing off.
    let mut lines = BufReader::new(init.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    while !seen.contains("retrying in") {
        let line = lines.next().expect("init exited early").unwrap();
        seen.push_str(&line);
        seen.push('\n');
    }
    assert!(seen.contains("cannot connect"), "{seen}");
    // The federation comes up behind the same port, which never changes hands (freed, it could
    // become another test's before the federation bound it): the port starts listening and
    // relays its connections to a federation on a port of its own.
    let fed = Federation::start(config.path(), "127.0.0.1:0", None);
    relay(closed.open(), ([127, 0, 0, 1], fed.port()).into());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = wait_exit(&mut init, Duration::from_secs(60));
    assert!(status.success(), "{seen}{}", rest.join("\n"));
    assert!(pod.path("env/app.json").exists());
    assert!(started.elapsed() < Duration::from_secs(60));
    drop(fed);
}

/// Relays every connection accepted on `listener` to `to`, both ways, on threads of their own.
fn relay(listener: std::net::TcpListener, to: std::net::SocketAddr) {
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let (Ok(client), Ok(server)) = (client, std::net::TcpStream::connect(to)) else {
                return;
            };
            let halves = (client.try_clone(), server.try_clone());
            let (Ok(client_in), Ok(server_in)) = halves else {
                return;
            };
            for (mut from, mut into) in [(client_in, server), (server_in, client)] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut into);
                    let _ = into.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
}

#[test]
fn init_gives_up_at_the_deadline_and_says_why_in_the_termination_log() {
    let issuer = Issuer::start();
    let pod = Pod::new(&issuer.token("default", "app"));
    let closed = ClosedPort::new();
    let spec = spec(
        &format!("http://127.0.0.1:{}", closed.addr().port()),
        &[("pw", "default/Password/db")],
        &[],
        vec![],
    );
    let started = Instant::now();
    let out = run(pod.cli(&spec).args(["init", "--deadline", "2s"]));
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    let reason = pod.termination_reason();
    assert!(reason.contains("gave up after"), "{reason}");
    assert!(reason.contains("default/Password/db"), "{reason}");
    assert_eq!(reason.lines().count(), 1);
    drop(closed);
}

#[test]
fn init_fails_fast_on_policy_denial_and_revokes_what_it_already_got() {
    let s = setup();
    // `limited` may use Password/db and Fake/short, not Fake/creds.
    let pod = Pod::new(&s.issuer.token("default", "limited"));
    let spec = spec(
        &s.fed.url(),
        &[
            ("short", "default/Fake/short"),
            ("creds", "default/Fake/creds"),
        ],
        &[("app", app_container())],
        vec![],
    );
    let started = Instant::now();
    let out = run(pod.cli(&spec).args(["init", "--deadline", "60s"]));
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "403 is not retried"
    );
    let err = text(&out.stderr);
    assert!(!err.contains("retrying"), "{err}");
    assert!(
        err.contains("revoked the unused credential of `short`"),
        "all or nothing: {err}"
    );
    let reason = pod.termination_reason();
    assert!(reason.contains("policy_denied"), "{reason}");
    assert!(reason.contains("`creds` (default/Fake/creds)"), "{reason}");
    assert!(reason.contains("request id"), "{reason}");
    assert!(!pod.path("env/app.json").exists(), "nothing half-written");
    assert!(!pod.path("state/init.done").exists());
    assert!(!pod.path("state/leases.json").exists());

    // An unknown generator is a 404: also final.
    let pod = Pod::new(&s.issuer.token("default", "app"));
    let spec = esi_tests::spec(&s.fed.url(), &[("x", "default/Password/none")], &[], vec![]);
    let started = Instant::now();
    let out = run(pod.cli(&spec).args(["init", "--deadline", "60s"]));
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    let reason = pod.termination_reason();
    assert!(reason.contains("generator_not_found"), "{reason}");
}

#[test]
fn plain_http_needs_an_explicit_opt_in() {
    let s = setup();
    let pod = Pod::new(&s.issuer.token("default", "app"));
    let spec = spec(&s.fed.url(), &[("pw", "default/Password/db")], &[], vec![]);
    let out = run(pod.cli(&spec).env_remove("ESI_ALLOW_HTTP").arg("init"));
    assert!(!out.status.success());
    assert!(pod.termination_reason().contains("refusing plain-HTTP"));
}

#[test]
fn revoke_revokes_every_lease_once() {
    let s = setup();
    let pod = Pod::new(&s.issuer.token("default", "app"));
    let spec = app_spec(&s.fed.url());
    ok(pod.cli(&spec).arg("init"));
    let out = ok(pod.cli(&spec).env_remove("ESI_SPEC").arg("revoke"));
    assert!(
        text(&out.stderr).contains("revoked 1 lease"),
        "{}",
        text(&out.stderr)
    );
    let leases = json_file(&pod.path("state/leases.json"));
    assert_eq!(leases["leases"][0]["revoked"], true);
    let out = ok(pod.cli(&spec).arg("revoke"));
    assert!(text(&out.stderr).contains("nothing to revoke"));
    assert!(
        s.fed.logged(r#""action":"revoke""#),
        "no revoke audit line:\n{}",
        s.fed.logs()
    );
}

#[test]
fn fetch_prints_json_dotenv_or_the_envelope() {
    let s = setup();
    let pod = Pod::new(&s.issuer.token("default", "app"));
    let fetch = |format: &str| {
        let out = ok(Command::new(esi_tests::bin("esi-cli"))
            .env("ESI_TOKEN_FILE", &pod.token)
            .env_remove("ESI_SPEC")
            .args([
                "fetch",
                "default/Fake/creds",
                "--allow-http",
                "--format",
                format,
            ])
            .arg("--federation-url")
            .arg(s.fed.url()));
        text(&out.stdout)
    };
    let json: serde_json::Value = serde_json::from_str(&fetch("json")).unwrap();
    assert_eq!(json["username"], "fake-user");
    let env = fetch("env");
    assert!(env.contains("username=\"fake-user\"\n"), "{env}");
    assert!(env.contains("\\$dollar"), "{env}");
    let envelope: serde_json::Value = serde_json::from_str(&fetch("envelope")).unwrap();
    assert!(envelope["lease"].is_string() && envelope["expiresAt"].is_string());
}

/// Runs `doctor` (JSON and human) and returns (exit ok, report, human output).
fn doctor(pod: &Pod, fed_url: &str, extra: &[&str]) -> (bool, serde_json::Value, String) {
    let cmd = |json: bool| {
        let mut c = Command::new(esi_tests::bin("esi-cli"));
        c.env("ESI_TOKEN_FILE", &pod.token)
            .env_remove("ESI_SPEC")
            .args(["doctor", "--allow-http", "--federation-url", fed_url])
            .args(extra);
        if json {
            c.arg("--json");
        }
        run(&mut c)
    };
    let json = cmd(true);
    let human = cmd(false);
    assert_eq!(json.status.success(), human.status.success());
    let report = serde_json::from_slice(&json.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&json.stdout), text(&json.stderr)));
    (json.status.success(), report, text(&human.stdout))
}

#[test]
fn doctor_explains_expired_token_wrong_audience_and_policy_denial() {
    let s = setup();
    let url = s.fed.url();

    let mut expired = TokenSpec::new("default", "app");
    expired.lifetime = -3600;
    let pod = Pod::new(&s.issuer.mint(&expired));
    let (ok, r, human) = doctor(&pod, &url, &["--generator", "pw=default/Password/db"]);
    assert!(!ok);
    assert_eq!(r["token"]["expired"], true);
    assert_eq!(r["whoami"]["code"], "token_expired");
    assert!(human.contains("EXPIRED"), "{human}");
    assert!(human.contains("refused     token_expired"), "{human}");

    let mut wrong_aud = TokenSpec::new("default", "app");
    wrong_aud.audience = vec!["vault".into()];
    let pod = Pod::new(&s.issuer.mint(&wrong_aud));
    let (ok, r, human) = doctor(&pod, &url, &[]);
    assert!(!ok);
    assert_eq!(r["token"]["claims"]["audiences"][0], "vault");
    assert_eq!(r["whoami"]["code"], "audience_mismatch");
    assert!(
        r["whoami"]["hint"]
            .as_str()
            .unwrap()
            .contains("spec.audiences")
    );
    assert!(human.contains("audience    vault"), "{human}");

    let pod = Pod::new(&s.issuer.token("default", "limited"));
    let (ok, r, human) = doctor(
        &pod,
        &url,
        &[
            "--generator",
            "pw=default/Password/db",
            "--generator",
            "creds=default/Fake/creds",
        ],
    );
    assert!(!ok);
    assert_eq!(r["whoami"]["ok"], true);
    assert_eq!(r["whoami"]["identity"]["serviceAccount"]["name"], "limited");
    assert_eq!(r["generators"][0]["authorized"], true);
    assert_eq!(r["generators"][1]["authorized"], false);
    assert_eq!(r["generators"][1]["code"], "policy_denied");
    assert!(
        human.contains("[DENY] generator   creds = default/Fake/creds"),
        "{human}"
    );
    assert!(human.contains("add an Authorization"), "{human}");
}

#[test]
fn doctor_reports_a_healthy_setup_over_tls_and_init_works_with_the_spec_ca() {
    let issuer = Issuer::start();
    let config = config_dir(&issuer.url(), GENERATORS);
    let tls_dir = tempfile::tempdir().unwrap();
    let esi_test_support::Pki {
        ca_pem: ca,
        cert_pem: cert,
        key_pem: key,
    } = esi_test_support::pki("esi-cli test").unwrap();
    let files = (
        tls_dir.path().join("tls.crt"),
        tls_dir.path().join("tls.key"),
    );
    std::fs::write(&files.0, cert).unwrap();
    std::fs::write(&files.1, key).unwrap();
    let fed = Federation::start(config.path(), "127.0.0.1:0", Some(&files));
    let url = format!("https://localhost:{}", fed.port());
    let pod = Pod::new(&issuer.token("default", "app"));
    let mut spec = app_spec(&url);

    // Without the CA, TLS verification fails (system roots do not know it).
    let out = run(pod
        .cli(&spec)
        .env_remove("ESI_ALLOW_HTTP")
        .args(["init", "--deadline", "1s"]));
    assert!(!out.status.success());

    spec.federation_ca_pem = Some(ca);
    let out = run(pod
        .cli(&spec)
        .env_remove("ESI_ALLOW_HTTP")
        .args(["doctor", "--json"]));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{r:#}");
    assert_eq!(r["ok"], true);
    assert_eq!(r["federation"]["tls"], true);
    assert_eq!(r["federation"]["healthz"], 200);
    assert_eq!(r["token"]["claims"]["namespace"], "default");
    assert_eq!(r["whoami"]["identity"]["cluster"], "alpha");
    let gens = r["generators"].as_array().unwrap();
    assert_eq!(gens.len(), 2);
    assert!(gens.iter().all(|g| g["authorized"] == true), "{r:#}");
    let creds = gens.iter().find(|g| g["alias"] == "creds").unwrap();
    assert!(
        creds["message"]
            .as_str()
            .unwrap()
            .contains("allowed by Authorization"),
        "{r:#}"
    );
    assert!(
        creds.get("revoked").is_none(),
        "a dry run mints nothing: {r:#}"
    );
    // --issue also mints (and revokes at once) a real credential per allowed generator.
    let out = run(pod
        .cli(&spec)
        .env_remove("ESI_ALLOW_HTTP")
        .args(["doctor", "--json", "--issue"]));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{r:#}");
    let gens = r["generators"].as_array().unwrap();
    let creds = gens.iter().find(|g| g["alias"] == "creds").unwrap();
    assert_eq!(creds["revoked"], true, "doctor revokes its test credential");
    let human = run(pod.cli(&spec).env_remove("ESI_ALLOW_HTTP").arg("doctor"));
    let human = text(&human.stdout);
    assert!(human.contains("(TLS)"), "{human}");
    assert!(human.contains("result: everything works"), "{human}");

    ok(pod.cli(&spec).env_remove("ESI_ALLOW_HTTP").arg("init"));
    assert!(pod.path("env/app.json").exists());
}

#[test]
fn no_secret_or_token_reaches_logs_errors_or_doctor_output() {
    let s = setup();
    let token = s.issuer.token("default", "app");
    let pod = Pod::new(&token);
    let spec = spec(
        &s.fed.url(),
        &[
            ("creds", "default/Fake/creds"),
            ("pw", "default/Password/db"),
        ],
        &[("app", app_container())],
        vec![file(
            "pw",
            FileContent::Raw {
                alias: "pw".into(),
                key: "password".into(),
                decode: None,
            },
            0o400,
        )],
    );
    let mut transcript = String::new();
    fn record(transcript: &mut String, out: &Output) {
        transcript.push_str(&text(&out.stderr));
        transcript.push('\n');
    }
    record(
        &mut transcript,
        &ok(pod.cli(&spec).args(["init", "--verbose"])),
    );
    let password = std::fs::read_to_string(pod.path("files/app/pw")).unwrap();
    let lease = json_file(&pod.path("state/leases.json"))["leases"][0]["lease"]
        .as_str()
        .unwrap()
        .to_owned();
    record(
        &mut transcript,
        &ok(pod
            .cli(&spec)
            .args(["exec", "--verbose", "--container", "app", "--", "true"])),
    );
    let doctor_out = ok(pod.cli(&spec).args(["doctor", "--verbose"]));
    record(&mut transcript, &doctor_out);
    transcript.push_str(&text(&doctor_out.stdout));
    let doctor_json = ok(pod.cli(&spec).args(["doctor", "--json"]));
    transcript.push_str(&text(&doctor_json.stdout));
    record(
        &mut transcript,
        &ok(pod.cli(&spec).args(["revoke", "--verbose"])),
    );
    // Failures: a broken template, a denied identity, a bad env mapping.
    let bad = esi_tests::spec(
        &s.fed.url(),
        &[("pw", "default/Password/db")],
        &[(
            "app",
            ContainerSpec {
                env: vec![mapping("X", "pw", "nokey")],
                env_from: vec![],
            },
        )],
        vec![],
    );
    let out = run(pod.cli(&bad).args(["init", "--verbose"]));
    assert!(!out.status.success());
    record(&mut transcript, &out);
    transcript.push_str(&pod.termination_reason());
    let other = Pod::new(&s.issuer.token("default", "limited"));
    let out = run(other.cli(&spec).args(["init", "--verbose"]));
    record(&mut transcript, &out);
    transcript.push_str(&other.termination_reason());
    transcript.push_str(&s.fed.logs());

    assert!(
        transcript.contains("POST /v1/generators/default/Fake/creds -> 200"),
        "{transcript}"
    );
    let hostile = "fake pass 'with' \"quotes\", $dollar & ünïcødé";
    for (what, secret) in [
        ("the token", token.as_str()),
        ("the token's signature", token.rsplit('.').next().unwrap()),
        ("a password", password.as_str()),
        ("a Fake password", hostile),
        ("a lease", lease.as_str()),
    ] {
        assert!(!transcript.contains(secret), "{what} leaked:\n{transcript}");
    }
}

#[test]
fn agent_without_refresh_only_revokes_on_sigterm() {
    let s = setup();
    let pod = Pod::new(&s.issuer.token("default", "app"));
    let mut spec = spec(
        &s.fed.url(),
        &[
            ("short", "default/Fake/short"),
            ("creds", "default/Fake/creds"),
        ],
        &[("app", app_container_short())],
        vec![],
    );
    spec.revoke_on_exit = true;
    ok(pod.cli(&spec).arg("init"));
    let bundle_ino = std::fs::metadata(pod.path("env/app.json")).unwrap().ino();
    let mut agent = pod
        .cli(&spec)
        .args(["refresh", "--min-interval", "200ms"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("readiness", Duration::from_secs(10), || {
        pod.path("state/refresh.ready").exists()
    });
    // Past the point where a refresher would have re-issued the 4 s credential.
    let expiry: jiff::Timestamp = json_file(&pod.path("env/app.json"))["expiresAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    wait_until(
        "the short credential's expiry",
        Duration::from_secs(10),
        || jiff::Timestamp::now() > expiry,
    );
    let (status, err) = terminate(&mut agent, Duration::from_secs(15));
    assert!(status.success(), "{err}");
    assert!(err.contains("refresh is off"), "{err}");
    assert_eq!(
        std::fs::metadata(pod.path("env/app.json")).unwrap().ino(),
        bundle_ino,
        "nothing re-issued or rewritten"
    );
    let leases = json_file(&pod.path("state/leases.json"));
    let leases = leases["leases"].as_array().unwrap();
    assert_eq!(leases.len(), 2, "no re-issue");
    assert!(leases.iter().all(|l| l["revoked"] == true));
    assert!(
        err.contains("revoked 1 lease(s), 1 had already expired"),
        "{err}"
    );
}

fn app_container_short() -> ContainerSpec {
    ContainerSpec {
        env: vec![
            mapping("SHORT_PASS", "short", "password"),
            mapping("DB_PASS", "creds", "password"),
        ],
        env_from: vec![],
    }
}

/// Lets other users reach the Pod's folder, write its volume and read its token, for an
/// `esi-cli` run under another uid ([`init_as`]).
fn open_to_other_users(pod: &Pod) {
    for (p, m) in [
        (pod.dir.path().to_owned(), 0o755),
        (pod.volume.clone(), 0o777),
        (pod.token.clone(), 0o644),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
    }
}

/// `esi-cli init` of `spec` run as `uid`:`gid` with no other groups (needs root to drop to
/// them), as the webhook runs it.
fn init_as(pod: &Pod, spec: &esi_api::inject::InjectionSpec, uid: u32, gid: u32) -> Command {
    let cmd = pod.cli(spec);
    let mut init = Command::new("setpriv");
    init.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .args(["--clear-groups", "--"])
        .arg(cmd.get_program())
        .arg("init")
        .envs(
            cmd.get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
        )
        .env("ESI_TERMINATION_LOG", pod.volume.join("termination-log"));
    init
}

#[test]
fn non_root_init_checks_that_the_app_can_read_its_files() {
    if !rustix_is_root() {
        eprintln!(
            "SKIPPED: non_root_init_checks_that_the_app_can_read_its_files needs root to drop privileges"
        );
        return;
    }
    let s = setup();
    let pod = Pod::new(&s.issuer.token("default", "app"));
    open_to_other_users(&pod);
    let run_as_nobody =
        |spec: &esi_api::inject::InjectionSpec| run(&mut init_as(&pod, spec, 65534, 65534));
    let mut spec = spec(
        &s.fed.url(),
        &[("pw", "default/Password/db")],
        &[],
        vec![file(
            "pw",
            FileContent::Raw {
                alias: "pw".into(),
                key: "password".into(),
                decode: None,
            },
            0o400,
        )],
    );
    // The app is uid 1000, esi-cli runs as 65534 and cannot chown: refused with the fix.
    spec.owner = Owner {
        uid: Some(1000),
        gid: None,
    };
    let out = run_as_nobody(&spec);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("would not be readable by the app (uid 1000)"),
        "{err}"
    );
    assert!(err.contains("run esi-cli as uid 1000"), "{err}");

    // Running as the app's own uid (what the webhook does) needs no chown.
    spec.owner = Owner {
        uid: Some(65534),
        gid: None,
    };
    let out = run_as_nobody(&spec);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let meta = std::fs::metadata(pod.path("files/app/pw")).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (65534, 0o400));
}

#[test]
fn root_app_gets_readable_credentials_from_a_non_root_init() {
    if !rustix_is_root() {
        eprintln!(
            "SKIPPED: root_app_gets_readable_credentials_from_a_non_root_init needs root to drop privileges"
        );
        return;
    }
    let s = setup();
    let pod = Pod::new(&s.issuer.token("default", "app"));
    open_to_other_users(&pod);
    // What the webhook emits for `runAsUser: 0` (or `esi.dev/run-as: "0"`): owner 0:0, files
    // 0440, esi-cli as 65532 in group 0.
    let mut spec = spec(
        &s.fed.url(),
        &[("pw", "default/Password/db")],
        &[(
            "app",
            ContainerSpec {
                env: vec![mapping("PW", "pw", "password")],
                env_from: vec![],
            },
        )],
        vec![file(
            "pw",
            FileContent::Raw {
                alias: "pw".into(),
                key: "password".into(),
                decode: None,
            },
            0o440,
        )],
    );
    spec.owner = Owner {
        uid: Some(0),
        gid: Some(0),
    };
    let out = run(&mut init_as(&pod, &spec, 65532, 0));
    assert!(
        out.status.success(),
        "a root app must not fail init: {}",
        text(&out.stderr)
    );
    for (rel, want) in [("files/app/pw", 0o440), ("env/app.json", 0o440)] {
        let meta = std::fs::metadata(pod.path(rel)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o777),
            (65532, 0, want),
            "{rel}"
        );
    }
    // A root app that dropped every capability reads through the group.
    let no_caps = |program: &std::ffi::OsStr| {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=0",
            "--regid=0",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ])
        .arg(program);
        c
    };
    let password = ok(no_caps("cat".as_ref()).arg(pod.path("files/app/pw"))).stdout;
    assert_eq!(password.len(), 24);
    let out = ok(no_caps(pod.path("bin/esi-cli").as_os_str())
        .env("ESI_VOLUME_DIR", &pod.volume)
        .env_remove("ESI_SPEC")
        .args(["exec", "--container", "app", "--", "printenv", "PW"]));
    assert_eq!(out.stdout.trim_ascii(), password.as_slice());
    // The check is real: without capabilities root cannot read an owner-only file of 65532.
    let state = pod.path("state/credentials.json");
    assert_eq!(mode(&state), 0o600);
    let denied = run(no_caps("cat".as_ref()).arg(&state));
    assert!(!denied.status.success(), "capabilities were not dropped");
}

/// Audit lines of `action` on `generator` that succeeded.
fn audited(fed: &Federation, action: &str, generator: &str) -> usize {
    let (action, generator) = (
        format!(r#""action":"{action}""#),
        format!(r#""generator":"{generator}""#),
    );
    fed.logs()
        .lines()
        .filter(|l| l.contains(&action) && l.contains(&generator) && l.contains(r#""code":"ok""#))
        .count()
}

#[test]
fn init_revokes_what_it_issued_when_a_later_step_fails() {
    let s = setup();
    let pod = Pod::new(&s.issuer.token("default", "app"));
    // A typo in a key: found only once the credential is there.
    let typo = ContainerSpec {
        env: vec![
            mapping("DB_USER", "creds", "username"),
            mapping("DB_PASS", "creds", "pasword"),
        ],
        env_from: vec![],
    };
    let spec = spec(
        &s.fed.url(),
        &[("creds", "default/Fake/creds")],
        &[("app", typo)],
        vec![],
    );
    for attempt in 1..=2 {
        let out = run(pod.cli(&spec).arg("init"));
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(err.contains("no key `pasword`"), "{err}");
        assert!(
            err.contains("revoked the unused credential of `creds` (a later step failed)"),
            "{err}"
        );
        // Every restart of the init container mints one and revokes it: nothing piles up.
        wait_until("the revoke audit line", Duration::from_secs(5), || {
            audited(&s.fed, "revoke", "default/Fake/creds") == attempt
        });
        assert_eq!(audited(&s.fed, "generate", "default/Fake/creds"), attempt);
        assert!(!pod.path("env/app.json").exists(), "nothing half-written");
        assert!(!pod.path("state/init.done").exists());
    }

    // A write that fails after the leases were recorded: they are revoked and marked so.
    let pod = Pod::new(&s.issuer.token("default", "app"));
    let spec = esi_tests::spec(
        &s.fed.url(),
        &[("creds", "default/Fake/creds")],
        &[],
        vec![file(
            "creds.json",
            FileContent::Json {
                alias: "creds".into(),
            },
            0o400,
        )],
    );
    std::fs::write(pod.path("files"), b"not a directory").unwrap();
    let out = run(pod.cli(&spec).arg("init"));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("file creds.json"), "{err}");
    assert!(err.contains("revoked the unused credential"), "{err}");
    wait_until("the revoke audit line", Duration::from_secs(5), || {
        audited(&s.fed, "revoke", "default/Fake/creds") == 3
    });
    let leases = json_file(&pod.path("state/leases.json"));
    let leases = leases["leases"].as_array().unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0]["revoked"], true, "{leases:?}");
    let out = ok(pod.cli(&spec).arg("revoke"));
    assert!(text(&out.stderr).contains("nothing to revoke"));
}

#[test]
fn the_app_cannot_reach_the_agent_through_proc_even_as_the_same_user() {
    if !rustix_is_root() {
        eprintln!(
            "SKIPPED: the_app_cannot_reach_the_agent_through_proc_even_as_the_same_user needs root to drop privileges"
        );
        return;
    }
    let issuer = Issuer::start();
    let pod = Pod::new(&issuer.token("default", "app"));
    for (p, m) in [
        (pod.dir.path().to_owned(), 0o755),
        (pod.volume.clone(), 0o777),
        (pod.token.clone(), 0o644),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
    }
    // esi-cli holds the token while it retries a federation that is down.
    let closed = ClosedPort::new();
    let spec = spec(
        &format!("http://127.0.0.1:{}", closed.addr().port()),
        &[("pw", "default/Password/db")],
        &[],
        vec![],
    );
    let as_app = |program: &std::ffi::OsStr| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(program);
        c
    };
    let cmd = pod.cli(&spec);
    let mut agent = as_app(cmd.get_program())
        .args(["init", "--deadline", "60s"])
        .envs(
            cmd.get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
        )
        .env("ESI_TERMINATION_LOG", pod.volume.join("termination-log"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(agent.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("retrying"), "{line}");
    let proc_dir = std::path::PathBuf::from(format!("/proc/{}", agent.id()));
    // Same uid, yet its /proc entries belong to root and stay closed.
    let environ = std::fs::metadata(proc_dir.join("environ")).unwrap();
    let read = run(as_app("cat".as_ref()).arg(proc_dir.join("environ")));
    let listed = run(as_app("ls".as_ref()).arg(proc_dir.join("root/")));
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(environ.uid(), 0, "esi-cli is dumpable");
    assert!(!read.status.success(), "the app read esi-cli's environment");
    assert!(!listed.status.success(), "the app reached esi-cli's root");
    drop(closed);
}

#[test]
fn refresh_alone_records_and_revokes_the_leases_it_issues() {
    let s = setup();
    let pod = Pod::new(&s.issuer.token("default", "app"));
    let mut spec = spec(
        &s.fed.url(),
        &[("creds", "default/Fake/creds")],
        &[("app", app_container_short_creds())],
        vec![],
    );
    spec.revoke_on_exit = true;
    // No init ran: the agent fetches everything itself.
    let mut agent = pod
        .cli(&spec)
        .arg("refresh")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("readiness", Duration::from_secs(10), || {
        pod.path("state/refresh.ready").exists()
    });
    let recorded = std::fs::read(pod.path("state/leases.json"));
    let (status, err) = terminate(&mut agent, Duration::from_secs(15));
    assert!(status.success(), "{err}");
    let recorded: serde_json::Value = serde_json::from_slice(&recorded.unwrap()).unwrap();
    assert_eq!(
        recorded["leases"].as_array().unwrap().len(),
        1,
        "{recorded}"
    );
    assert!(err.contains("revoked 1 lease(s)"), "{err}");
    assert_eq!(
        json_file(&pod.path("state/leases.json"))["leases"][0]["revoked"],
        true
    );
    wait_until("the revoke audit line", Duration::from_secs(5), || {
        audited(&s.fed, "revoke", "default/Fake/creds") == 1
    });
}

fn app_container_short_creds() -> ContainerSpec {
    ContainerSpec {
        env: vec![mapping("DB_PASS", "creds", "password")],
        env_from: vec![],
    }
}
