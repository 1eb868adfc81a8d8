//! One port for pages and WebSocket: files from a directory, and on `/ws` a
//! WebSocket that broadcasts every message to every client, over HTTP/1.1 and
//! HTTP/2 (with TLS, browsers open the WebSocket as an HTTP/2 stream, RFC
//! 8441).
//!
//! ```sh
//! cargo run -p duplex --example static_and_ws -- \
//!     --listen 127.0.0.1:8080 --root crates/duplex/examples/static_and_ws/public \
//!     [--tls-cert cert.pem --tls-key key.pem]
//! ```
//!
//! Then open the printed URL in two browser tabs and chat. Ctrl-C closes every
//! WebSocket with 1001 and waits for their close handshakes. The server itself
//! is in `app.rs`.

mod app;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio::net::TcpListener;

/// Files and a WebSocket broadcast on one port, HTTP/1.1 and HTTP/2.
#[derive(Debug, Parser)]
struct Args {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// The directory of files to serve (index.html for `/`).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/static_and_ws/public"))]
    root: PathBuf,
    /// The certificate chain (PEM): serve HTTPS, with HTTP/2 offered by ALPN.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Messages queued per client before it is dropped as too slow (1008).
    #[arg(long, default_value_t = 256)]
    queue: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("static_and_ws: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if !args.root.is_dir() {
        return Err(format!("{} is not a directory", args.root.display()).into());
    }
    let mut config = app::Config::new(&args.root);
    config.queue = args.queue;
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let tls = duplex::tls::server_config_from_pem(cert, key)?;
        config.tls = Some(app::with_http2_alpn(tls));
    }
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };

    let listener = TcpListener::bind(&args.listen).await?;
    let addr = listener.local_addr()?;
    println!("listening on {scheme}://{addr}");
    app::App::new(config)
        .serve(listener, shutdown_signal())
        .await;
    Ok(())
}

/// Ctrl-C, or SIGTERM on Unix (what `docker stop` and systemd send).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            eprintln!("static_and_ws: cannot listen for Ctrl-C: {err}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    eprintln!("static_and_ws: shutting down");
}
