//! `esi-cli fetch namespace/kind/name`: one credential to stdout, for scripts and debugging.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};
use esi_api::inject::GeneratorRef;

use crate::token::Token;
use crate::{FetchFormat, Global, output};

/// Parses `namespace/kind/name`.
pub fn parse_generator(s: &str) -> anyhow::Result<GeneratorRef> {
    let parts: Vec<&str> = s.split('/').collect();
    let [namespace, kind, name] = parts.as_slice() else {
        bail!("generator {s:?} must look like namespace/kind/name");
    };
    if [namespace, kind, name].iter().any(|p| p.is_empty()) {
        bail!("generator {s:?} must look like namespace/kind/name");
    }
    Ok(GeneratorRef {
        namespace: (*namespace).to_owned(),
        kind: (*kind).to_owned(),
        name: (*name).to_owned(),
    })
}

/// Federation URL and CA from flags, else the spec.
pub fn federation(
    g: &Global,
    url: Option<String>,
    ca_file: Option<PathBuf>,
    spec: Option<&esi_api::inject::InjectionSpec>,
) -> anyhow::Result<crate::client::Federation> {
    let url = url
        .or_else(|| spec.map(|s| s.federation_url.clone()))
        .ok_or_else(|| {
            anyhow!("no federation URL: pass --federation-url or set ESI_FEDERATION_URL")
        })?;
    let ca = match ca_file {
        Some(p) => Some(
            std::fs::read_to_string(&p)
                .with_context(|| format!("cannot read the CA file {}", p.display()))?,
        ),
        None => spec.and_then(|s| s.federation_ca_pem.clone()),
    };
    g.client(&url, ca)
}

/// Runs `fetch`.
pub async fn run(
    g: &Global,
    generator: &str,
    url: Option<String>,
    ca_file: Option<PathBuf>,
    format: FetchFormat,
) -> anyhow::Result<ExitCode> {
    let gref = parse_generator(generator)?;
    let spec = g.spec_from_env()?;
    let client = federation(g, url, ca_file, spec.as_ref())?;
    let token = Token::read(&g.token_path(spec.as_ref()))?;
    let env = client
        .generate(&token, &gref, Instant::now() + g.deadline)
        .await
        .map_err(|e| anyhow!("{gref}: {e}"))?;
    let text = match format {
        FetchFormat::Json => serde_json::to_string_pretty(&env.data)? + "\n",
        FetchFormat::Env => output::dotenv(&env.data)?,
        FetchFormat::Envelope => serde_json::to_string_pretty(&env)? + "\n",
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}
