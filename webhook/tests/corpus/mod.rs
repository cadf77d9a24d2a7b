//! The golden corpus (`tests/golden/`) as the webhook's test files read it: its folder, its
//! webhook configuration and its Pods.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use esi_webhook::WebhookConfig;
use serde_json::Value;

/// `tests/golden`.
pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The corpus's webhook configuration.
pub fn config() -> WebhookConfig {
    WebhookConfig::from_file(&golden_dir().join("config.yaml")).expect("golden config")
}

/// Every Pod of `tests/golden/pods/` as `(file stem, Pod)`, sorted by name.
pub fn pods() -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = std::fs::read_dir(golden_dir().join("pods"))
        .expect("pods dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read pod");
            let value: Value =
                serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (
                p.file_stem().expect("stem").to_string_lossy().into_owned(),
                value,
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
