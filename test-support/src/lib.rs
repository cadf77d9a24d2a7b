//! What esi's tests and benchmark share across crates: a throwaway PKI ([`pki`]: a CA, and a
//! certificate it signed for `localhost` and `127.0.0.1`, all as PEM; every call makes new
//! keys, so two calls give two CAs that do not trust each other's certificates), and a
//! loopback port that refuses connections until a test opens it ([`ClosedPort`]), and the
//! lookup of an external peer's address that skips loudly or fails ([`peer`]).

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A CA and a server certificate it signed.
pub struct Pki {
    /// The CA's certificate, the one clients trust.
    pub ca_pem: String,
    /// The server certificate (names `localhost` and `127.0.0.1`).
    pub cert_pem: String,
    /// The server certificate's private key (PKCS#8).
    pub key_pem: String,
}

/// Makes a CA called "`name` CA" and a certificate called `name` signed by it.
pub fn pki(name: &str) -> Result<Pki, rcgen::Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} CA"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.signed_by(&key, &ca)?;
    Ok(Pki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A loopback port that refuses connections for as long as this lives: its socket is bound,
/// so no other test's server can take the port, but never listens. (A port that was merely
/// free a moment ago can be someone else's server by the time a client connects.)
/// [`ClosedPort::open`] starts listening on that same socket when a test wants the port to come
/// up: the port never changes hands.
pub struct ClosedPort(socket2::Socket);

impl ClosedPort {
    /// Binds a fresh loopback port without listening on it.
    pub fn new() -> Self {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .expect("TCP socket");
        let any: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
        socket.bind(&any.into()).expect("bind a loopback port");
        Self(socket)
    }

    /// The port's address (`127.0.0.1:port`); connecting to it is refused.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.0
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("bound IPv4 socket")
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    /// Starts listening on the port: from now on connections to it are accepted (blocking
    /// listener).
    pub fn open(self) -> std::net::TcpListener {
        self.0.listen(128).expect("listen on the bound port");
        self.0.into()
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads from `stream` until the server closes it (or resets it), and returns how long that
/// took; panics after `limit`, naming it.
pub async fn closed_within(
    stream: &mut tokio::net::TcpStream,
    limit: std::time::Duration,
) -> std::time::Duration {
    use tokio::io::AsyncReadExt as _;
    let started = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    let read_to_end = async { while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {} };
    if tokio::time::timeout(limit, read_to_end).await.is_err() {
        panic!("the server kept the connection open for {limit:?}");
    }
    started.elapsed()
}

/// The value of a peer's env var `var`. When it is absent: a panic saying how to start the peer
/// under `ESI_REQUIRE_PEERS=1`, otherwise a `SKIPPED` line and `None`.
///
/// The line is written to `/dev/stderr` directly: libtest captures `eprintln!` of passing tests,
/// which would hide the skip. It is opened for appending: when stderr is a file, a plain write
/// would start at its beginning and overwrite the lines before.
pub fn peer(var: &str, test: &str) -> Option<String> {
    use std::io::Write as _;
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            assert!(
                std::env::var("ESI_REQUIRE_PEERS").as_deref() != Ok("1"),
                "{test}: {var} is not set and ESI_REQUIRE_PEERS=1: start the peers with ./scripts/test-all.sh (or eval \"$(scripts/peers/<name>.sh up)\")"
            );
            let line = format!(
                "SKIPPED: {test}: {var} is not set; run ./scripts/test-all.sh to start the peers\n"
            );
            match std::fs::OpenOptions::new().append(true).open("/dev/stderr") {
                Ok(mut f) => {
                    let _ = f.write_all(line.as_bytes());
                }
                Err(_) => eprint!("{line}"),
            }
            None
        }
    }
}
