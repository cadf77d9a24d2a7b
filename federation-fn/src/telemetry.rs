//! Logging setup: plain or JSON lines, filtered by `ESI_LOG` (default `info`). On AWS Lambda,
//! `AWS_LAMBDA_LOG_FORMAT=JSON` and `AWS_LAMBDA_LOG_LEVEL` are honoured.

use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable.
    Plain,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber (idempotent: a second call is ignored).
pub fn init(format: Option<LogFormat>) {
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Plain => builder.with_ansi(false).try_init(),
    };
}
