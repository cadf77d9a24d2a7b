//! Logging setup: plain or JSON lines, filtered by `ESI_LOG` (default `info`). On AWS Lambda,
//! `AWS_LAMBDA_LOG_FORMAT=JSON` and `AWS_LAMBDA_LOG_LEVEL` are honoured.
//!
//! The server writes its lines through [`Sink::Batched`] (every issuance writes an audit line;
//! see [`esi_telemetry`] for the batching writer and the JSON line layer). Lambda and the CLI
//! commands write directly: a frozen Lambda sandbox must not hold lines back.

pub use esi_telemetry::{LogFormat, Sink, flush};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber writing each line directly to stderr (idempotent: a second
/// call is ignored).
pub fn init(format: Option<LogFormat>) {
    init_with(format, Sink::Direct);
}

/// Installs the global subscriber with the given sink (idempotent: a second call is ignored).
pub fn init_with(format: Option<LogFormat>, sink: Sink) {
    let format = format.unwrap_or_else(|| {
        let lambda_json =
            std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
        let esi_json =
            std::env::var("ESI_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
        if lambda_json || esi_json {
            LogFormat::Json
        } else {
            LogFormat::Plain
        }
    });
    // Without an explicit ESI_LOG the backends' SDKs stay quiet (they never log bodies at these
    // levels, but their connection chatter drowns the audit lines).
    let level = std::env::var("ESI_LOG")
        .or_else(|_| {
            std::env::var("AWS_LAMBDA_LOG_LEVEL").map(|l| {
                format!(
                    "{},{}",
                    l.to_lowercase(),
                    esi_backends::QUIET_LOG_DIRECTIVES
                )
            })
        })
        .unwrap_or_else(|_| format!("info,{}", esi_backends::QUIET_LOG_DIRECTIVES));
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
    esi_telemetry::install(format, filter, sink);
}
