//! `duplex serve`: the real-time hub (channels, presence, history, the chat
//! and ticker pages, the publish API, metrics) on one port.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use duplex_hub::engine::EngineKind;
use duplex_hub::{Config, Server};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Folder of the hub's database (hub.sqlite3), created if missing.
    #[arg(long, default_value = "./duplex-data")]
    data: PathBuf,
    /// TOML configuration (see duplex.example.toml); defaults without it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// PEM certificate chain: serve https:// and wss:// (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Share this hub's channels with other nodes through Redis at URL
    /// (redis:// or rediss://): the same as `[engine]` `kind = "redis"` and
    /// `url = URL` in the configuration.
    #[arg(long, value_name = "URL", env = "DUPLEX_REDIS_URL")]
    redis: Option<String>,
}

pub fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(url) = args.redis {
        config.engine.kind = EngineKind::Redis;
        config.engine.url = Some(url);
        config.engine.urls.clear();
        config.validate()?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = crate::listen(args.listen)?;
        let addr = listener.local_addr()?;
        if config.engine.node.is_none() {
            config.engine.node = Some(format!("{}:{}", duplex_hub::hub::hostname(), addr.port()));
        }
        let mut server = Server::open(config, &args.data).await?;
        let scheme = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => {
                server = server.tls(duplex::tls::server_config_from_pem(cert, key)?);
                "https"
            }
            _ => "http",
        };
        let mut stdout = std::io::stdout();
        writeln!(stdout, "listening on {scheme}://{addr}")?;
        stdout.flush()?;
        server.serve(listener, shutdown_signal()).await;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
