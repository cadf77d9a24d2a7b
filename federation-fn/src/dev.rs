//! `esi-federation dev`: the federation on an embedded default configuration, with a built-in
//! dev issuer (a key generated at start, its discovery document and JWKS served by the same
//! process) and a signed dev ServiceAccount token written to a file.

use secrecy::ExposeSecret as _;
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
    // Dev mode is an OIDC issuer too, at its own loopback URL, with a key that dies with it:
    // RSA, which every relying party takes (Quay takes nothing else).
    let key = esi_backends::identity::generate_key_pem(esi_backends::identity::KeyAlgorithm::Rs256)
        .map_err(|_| LoadError::one("dev issuer", "cannot generate its key"))?;
    let own = esi_backends::identity::Issuer::new(&base_url, key.expose_secret())
        .map_err(|e| LoadError::one("dev issuer", e.to_string()))?;
    let state = AppState::serving(
        Settings::default(),
        LeaseKeys::ephemeral(),
        Some(std::sync::Arc::new(own)),
    );
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

/// Writes `token` to `path` with mode 0600, replacing it atomically: through a new file of a
/// random name in the same folder, created exclusively (so another user of a shared folder
/// cannot have placed a file or a link there first), then renamed over `path`.
pub fn write_token(path: &Path, token: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // tempfile creates with O_EXCL and mode 0600.
    let mut tmp = tempfile::Builder::new()
        .prefix(".esi-dev-token.")
        .tempfile_in(dir)?;
    tmp.write_all(token.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn the_token_file_is_private_and_placed_links_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("token");
        // Another user of a shared folder placed links where a fixed temporary name would be.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        for name in [".token.tmp", ".esi-dev-token.tmp"] {
            std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
        }
        write_token(&out, "t0ken").unwrap();
        write_token(&out, "t0ken-2").unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "t0ken-2");
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    }
}
