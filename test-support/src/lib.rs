//! What esi's tests and benchmark share across crates: a throwaway PKI ([`pki`]: a CA, and a
//! certificate it signed for `localhost` and `127.0.0.1`, all as PEM; every call makes new
//! keys, so two calls give two CAs that do not trust each other's certificates), a CA issuing
//! client certificates ([`ClientCa`]), and a
//! loopback port that refuses connections until a test opens it ([`ClosedPort`]), and the
//! lookup of an external peer's address that skips loudly or fails ([`peer`]); with the
//! `hostile` feature, a reproducible property-test runner and byte-level mutations of valid
//! input (the module `hostile`, for the tests of the paths that read hostile input); with the
//! `terraform` feature, the project's Terraform modules read and the CEL in them run (the
//! module `terraform`, for the fakes that enforce what a module writes).

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

/// A CA that signs client certificates (extended key usage `clientAuth`), for the servers that
/// take a TLS client certificate as a credential (Vault's `cert` auth method, a Kubernetes
/// API server).
pub struct ClientCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl ClientCa {
    /// Makes a CA called "`name` CA".
    pub fn new(name: &str) -> Result<Self, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        Ok(ClientCa {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate()?)?,
        })
    }

    /// The CA's certificate (PEM), the one servers trust.
    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A new key and a client certificate for it, with common name `common_name` and
    /// organizations `organizations` (a Kubernetes user's groups), as PEM: the certificate, then
    /// the key (PKCS#8).
    pub fn issue(
        &self,
        common_name: &str,
        organizations: &[&str],
    ) -> Result<(String, String), rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        for o in organizations {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
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

#[cfg(feature = "terraform")]
pub mod terraform;

/// Property tests of the paths that read hostile input (tokens, requests, admission reviews,
/// configuration): a runner whose cases are reproducible, and mutations of valid input.
#[cfg(feature = "hostile")]
pub mod hostile {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

    /// The seed of every run unless `ESI_PROPTEST_SEED` names another (a number): the suite
    /// tries the same cases on every machine, so CI cannot pass and fail on the same commit.
    pub const DEFAULT_SEED: u64 = 0x65_73_69_2d_68_6f_73_74; // "esi-host"

    /// A runner of `cases` cases (`PROPTEST_CASES` overrides, to search longer locally), seeded
    /// with [`DEFAULT_SEED`] or `ESI_PROPTEST_SEED`, that writes no regression files (a failure
    /// prints its shrunk input; turn that into a named test).
    pub fn runner(cases: u32) -> TestRunner {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases);
        let seed = std::env::var("ESI_PROPTEST_SEED")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(DEFAULT_SEED);
        let mut bytes = [0u8; 32];
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&(seed.rotate_left(i as u32 * 16) ^ i as u64).to_le_bytes());
        }
        let config = Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        };
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
    }

    /// Runs `property` over `strategy` with [`runner`]; panics with the shrunk failing input
    /// and the seed to reproduce it.
    pub fn check<S: Strategy>(
        name: &str,
        cases: u32,
        strategy: &S,
        property: impl Fn(S::Value) -> Result<(), TestCaseError>,
    ) where
        S::Value: std::fmt::Debug,
    {
        let mut runner = runner(cases);
        if let Err(e) = runner.run(strategy, property) {
            let seed =
                std::env::var("ESI_PROPTEST_SEED").unwrap_or_else(|_| DEFAULT_SEED.to_string());
            panic!("{name}: {e}\n(ESI_PROPTEST_SEED={seed} reproduces it)");
        }
    }

    /// One edit of a byte string: what a fuzzer does to valid input.
    #[derive(Debug, Clone)]
    pub enum Edit {
        /// Flip some bits of the byte at this index (modulo the length).
        Flip(usize, u8),
        /// Remove the bytes from this index on (modulo the length).
        Truncate(usize),
        /// Insert these bytes at this index.
        Insert(usize, Vec<u8>),
        /// Remove up to this many bytes at this index.
        Remove(usize, usize),
        /// Copy a slice (index, length) of the input to another index.
        Splice(usize, usize, usize),
    }

    /// Edits of any kind, inserting bytes that are often significant to the formats read
    /// (JSON, YAML, base64url, JWT separators) as well as arbitrary ones.
    pub fn edit() -> impl Strategy<Value = Edit> {
        let significant =
            prop::sample::select(&b"{}[]\":,.-_=+/\\\n\t #&*!%@'0123456789eE\x00\xff\xc3\x80"[..]);
        let inserted = prop_oneof![
            prop::collection::vec(significant, 1..8),
            prop::collection::vec(any::<u8>(), 1..8),
        ];
        prop_oneof![
            (any::<usize>(), 1..=255u8).prop_map(|(i, m)| Edit::Flip(i, m)),
            any::<usize>().prop_map(Edit::Truncate),
            (any::<usize>(), inserted).prop_map(|(i, b)| Edit::Insert(i, b)),
            (any::<usize>(), 1..64usize).prop_map(|(i, n)| Edit::Remove(i, n)),
            (any::<usize>(), 1..64usize, any::<usize>())
                .prop_map(|(f, n, t)| Edit::Splice(f, n, t)),
        ]
    }

    /// `input` with `edits` applied in order.
    pub fn apply(input: &[u8], edits: &[Edit]) -> Vec<u8> {
        let mut out = input.to_vec();
        for e in edits {
            let len = out.len();
            let at = |i: usize| if len == 0 { 0 } else { i % (len + 1) };
            match e {
                Edit::Flip(i, mask) if len > 0 => out[i % len] ^= mask,
                Edit::Flip(..) => {}
                Edit::Truncate(i) => out.truncate(at(*i)),
                Edit::Insert(i, bytes) => {
                    let i = at(*i);
                    out.splice(i..i, bytes.iter().copied());
                }
                Edit::Remove(i, n) => {
                    let i = at(*i);
                    let end = (i + n).min(len);
                    out.drain(i..end);
                }
                Edit::Splice(from, n, to) if len > 0 => {
                    let from = from % len;
                    let piece = out[from..(from + n).min(len)].to_vec();
                    let to = at(*to);
                    out.splice(to..to, piece);
                }
                Edit::Splice(..) => {}
            }
        }
        out
    }

    /// Up to `max` edits.
    pub fn edits(max: usize) -> impl Strategy<Value = Vec<Edit>> {
        prop::collection::vec(edit(), 1..=max)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn edits_apply_within_bounds_and_change_input() {
            let input = b"{\"a\": [1, 2, 3]}";
            let changed = std::cell::Cell::new(0u32);
            check("edits", 200, &edits(4), |e| {
                let out = apply(input, &e);
                prop_assert!(out.len() <= input.len() + 4 * 64);
                if out != input {
                    changed.set(changed.get() + 1);
                }
                Ok(())
            });
            // Most edits change the input (a flip of the same byte twice may not).
            assert!(
                changed.get() > 150,
                "only {} of 200 edits changed the input",
                changed.get()
            );
        }

        #[test]
        fn the_same_seed_gives_the_same_cases() {
            let draw = || {
                let seen = std::cell::RefCell::new(Vec::new());
                check("seed", 20, &edits(3), |e| {
                    seen.borrow_mut().push(format!("{e:?}"));
                    Ok(())
                });
                seen.into_inner()
            };
            assert_eq!(draw(), draw());
        }
    }
}
