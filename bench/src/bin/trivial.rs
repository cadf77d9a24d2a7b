//! `esi-bench-trivial`: the cold-start baseline of figure 5. A trivial axum server built by the
//! same `cargo build` and profile as the federation, started the same way (multi-threaded tokio
//! runtime, bind, serve); `GET /` answers 200.

use std::process::ExitCode;

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("esi-bench-trivial: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = match (args.next().as_deref(), args.next()) {
        (Some("--listen"), Some(addr)) => addr,
        _ => anyhow::bail!("usage: esi-bench-trivial --listen ADDR"),
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let app = Router::new().route("/", get(|| async { "ok\n" }));
            axum::serve(listener, app).await.context("serving")
        })
}
