//! `esi-federation dev`: the federation on an embedded default configuration, with a built-in
//! dev issuer (a key generated at start, its discovery document and JWKS served by the same
//! process) and a signed dev ServiceAccount token written to a file.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::Api;
use crate::config::{self, LoadError};
use crate::issuer::{LocalIssuer, SigningKey, TokenSpec};
use crate::lease::LeaseKeys;
use crate::state::{AppState, Settings};

/// The embedded dev configuration; `${ISSUER}` is replaced with the dev issuer URL.
pub const DEV_CONFIG: &str = include_str!("../config/dev.yaml");

/// Path under which the dev issuer is served.
pub const ISSUER_PATH: &str = "/dev-issuer";

/// A running dev federation's pieces.
#[derive(Debug)]
pub struct Dev {
    /// The federation state.
    pub state: AppState,
    /// The dev issuer.
    pub issuer: Arc<LocalIssuer>,
    /// The federation's API with the dev issuer nested at [`ISSUER_PATH`].
    pub app: Api,
    /// The base URL clients use.
    pub base_url: String,
}

/// The URL clients use for a listener bound to `addr` (unspecified addresses become loopback).
pub fn base_url(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        if addr.is_ipv4() {
            "127.0.0.1".to_owned()
        } else {
            "[::1]".to_owned()
        }
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    format!("http://{ip}:{}", addr.port())
}

/// Builds the dev federation for a listener at `addr`.
pub fn build(addr: SocketAddr) -> Result<Dev, LoadError> {
    let base_url = base_url(addr);
    let issuer = LocalIssuer::new(SigningKey::rsa());
    issuer.set_issuer(&format!("{base_url}{ISSUER_PATH}"));
    let state = AppState::new(Settings::default(), LeaseKeys::ephemeral());
    let text = DEV_CONFIG.replace("${ISSUER}", &issuer.issuer());
    let snapshot = config::load_text("embedded dev.yaml", &text, &state)?;
    state.install(snapshot);
    let app = crate::api(state.clone()).nest(ISSUER_PATH, issuer.router());
    Ok(Dev {
        state,
        issuer,
        app,
        base_url,
    })
}

/// Mints the dev ServiceAccount token (`default/demo`, audience `esi`, 24 h).
pub fn dev_token(issuer: &LocalIssuer) -> String {
    let mut spec = TokenSpec::new("default", "demo");
    spec.pod = Some("demo".to_owned());
    spec.lifetime = 24 * 3600;
    issuer.mint(&spec)
}

/// Writes `token` to `path` with mode 0600 (replacing it atomically).
pub fn write_token(path: &Path, token: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("token")
    ));
    {
        use std::io::Write as _;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        f.write_all(token.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// The ready-to-paste commands printed at start.
pub fn instructions(base_url: &str, token_path: &Path) -> String {
    let t = token_path.display();
    format!(
        "\nesi federation (dev mode) listening on {base_url}\n\
         dev ServiceAccount token (default/demo, audience esi) written to {t}\n\n\
         Try:\n\
         \x20 curl -s -X POST -H \"Authorization: Bearer $(cat {t})\" {base_url}/v1/generators/default/Password/demo\n\
         \x20 curl -s -X POST -H \"Authorization: Bearer $(cat {t})\" {base_url}/v1/generators/default/Fake/demo\n\
         \x20 curl -s -H \"Authorization: Bearer $(cat {t})\" {base_url}/v1/whoami\n\
         \x20 curl -s {base_url}/metrics\n"
    )
}
