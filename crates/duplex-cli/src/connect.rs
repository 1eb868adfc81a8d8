//! `duplex connect`: a WebSocket client for the terminal, in the manner of wscat.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use duplex::reconnect::{Event, Reconnect, Stop};
use duplex::{ClientBuilder, CloseCode, Message, Proxy};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// ws:// or wss:// URL to connect to.
    url: String,
    /// Offer this subprotocol (repeatable, most preferred first).
    #[arg(short = 's', long = "subprotocol")]
    subprotocols: Vec<String>,
    /// Add a request header, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Accept any TLS certificate (self-signed test servers only).
    #[arg(long)]
    insecure: bool,
    /// Trust this PEM root certificate besides the system's.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Send every received text and binary message back unchanged until the
    /// server closes, instead of reading stdin.
    #[arg(long)]
    echo: bool,
    /// Seconds to wait for the TCP connection and for the handshake.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Do not offer permessage-deflate.
    #[arg(long)]
    no_deflate: bool,
    /// Reconnect when the connection ends, with exponential backoff: stdin
    /// lines keep flowing (queued while disconnected), and each state change
    /// is a line on stderr. Stops on close code 1008, on a 4xx answer but 408
    /// and 429, and at the end of stdin.
    #[arg(long)]
    reconnect: bool,
    /// Connect through this proxy: http://HOST:PORT or http://USER:PASS@HOST:PORT (CONNECT),
    /// socks5://... or socks5h://... (the proxy resolves the name). Default:
    /// the environment's https_proxy / HTTPS_PROXY (wss), http_proxy (ws),
    /// all_proxy / ALL_PROXY, less the hosts no_proxy / NO_PROXY lists.
    #[arg(long, value_name = "URL")]
    proxy: Option<String>,
    /// Connect directly, whatever the environment's proxy variables say.
    #[arg(long, conflicts_with = "proxy")]
    no_proxy: bool,
    /// Open the WebSocket as a stream of an HTTP/2 connection (RFC 8441; h2
    /// by ALPN for wss://, h2c for ws://), falling back to HTTP/1.1 when the
    /// server does not take it.
    #[arg(long)]
    http2: bool,
}

pub fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(session(args));
    // A read of stdin may still be parked on its blocking thread: do not wait
    // for it.
    runtime.shutdown_background();
    result
}

async fn session(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let timeout = std::time::Duration::from_secs_f64(args.timeout);
    let mut builder = ClientBuilder::new(&args.url)
        .protocols(args.subprotocols.iter().cloned())
        .connect_timeout(timeout)
        .handshake_timeout(timeout)
        .danger_accept_invalid_certs(args.insecure)
        .http2(args.http2);
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("header {header:?} is not \"Name: value\""))?;
        builder = builder.header(name.trim(), value.trim())?;
    }
    if args.no_deflate {
        builder = builder.no_deflate();
    }
    if let Some(proxy) = &args.proxy {
        builder = builder.proxy(Proxy::new(proxy)?);
    }
    if args.no_proxy {
        builder = builder.no_proxy();
    }
    if let Some(ca) = &args.ca {
        for root in duplex::tls::load_certs(ca)? {
            builder = builder.tls_root(root);
        }
    }
    if args.reconnect {
        return reconnecting(builder, &args).await;
    }
    let mut ws = builder.connect().await?;
    let mut agreed = Vec::new();
    if ws.get_ref().is_http2() {
        agreed.push("HTTP/2".to_owned());
    } else if args.http2 {
        agreed.push("HTTP/1.1".to_owned());
    }
    if let Some(protocol) = ws.protocol() {
        agreed.push(format!("subprotocol {protocol}"));
    }
    if ws.deflate().is_some() {
        agreed.push("permessage-deflate".to_owned());
    }
    match agreed.is_empty() {
        true => eprintln!("connected to {}", args.url),
        false => eprintln!("connected to {} ({})", args.url, agreed.join(", ")),
    }

    if args.echo {
        while let Some(message) = ws.next().await {
            match message {
                Ok(message @ (Message::Text(_) | Message::Binary(_))) => ws.feed(message).await?,
                Ok(_) => {}
                Err(err) => eprintln!("error: {}", duplex_hub::error_chain(&err)),
            }
        }
        return Ok(report(ws.close_info()));
    }

    let (mut reader, mut writer) = ws.split();
    let printer = tokio::spawn(async move {
        let mut stdout = std::io::stdout();
        while let Some(message) = reader.next().await {
            match message {
                Ok(Message::Text(text)) => {
                    let _ = writeln!(stdout, "{text}");
                }
                Ok(Message::Binary(data)) => {
                    let _ = writeln!(stdout, "{}", describe_binary(&data));
                }
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                Ok(Message::Close(_)) => {}
                Err(err) => eprintln!("error: {}", duplex_hub::error_chain(&err)),
            }
            let _ = stdout.flush();
        }
        reader.close_info()
    });

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let sender = async {
        while let Some(line) = lines.next_line().await? {
            writer.send(Message::text(line)).await?;
        }
        // End of input: close normally; the printer sees the rest.
        writer.close(CloseCode::NORMAL, "").await?;
        Ok::<_, duplex::Error>(())
    };
    tokio::pin!(sender);
    tokio::pin!(printer);
    let info = tokio::select! {
        done = &mut printer => done?,
        sent = &mut sender => {
            if let Err(err) = sent
                && !err.is_closed() {
                    eprintln!("error: {}", duplex_hub::error_chain(&err));
                }
            printer.await?
        }
    };
    Ok(report(info))
}

/// `--reconnect`: the session over as many connections as it takes.
async fn reconnecting(
    builder: ClientBuilder,
    args: &Args,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut client = Reconnect::new(builder).start();
    let handle = client.handle();
    if !args.echo {
        tokio::spawn(async move {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if handle.send(Message::text(line)).await.is_err() {
                    return;
                }
            }
            // End of input: close normally once what was read is sent.
            handle.close(CloseCode::NORMAL, "");
        });
    }
    let mut stdout = std::io::stdout();
    let mut last_close = None;
    while let Some(event) = client.next().await {
        match event {
            Event::Open { attempt, response } => {
                let agreed = agreed_in(response.headers());
                match (attempt, agreed.is_empty()) {
                    (1, true) => eprintln!("connected to {}", args.url),
                    (1, false) => eprintln!("connected to {} ({agreed})", args.url),
                    (n, true) => eprintln!("connected to {} (attempt {n})", args.url),
                    (n, false) => eprintln!("connected to {} (attempt {n}; {agreed})", args.url),
                }
            }
            Event::Message(message) => {
                if args.echo {
                    client.send(message).await?;
                    continue;
                }
                match message {
                    Message::Text(text) => writeln!(stdout, "{text}")?,
                    Message::Binary(data) => writeln!(stdout, "{}", describe_binary(&data))?,
                    _ => {}
                }
                stdout.flush()?;
            }
            Event::Closed(info) => {
                describe_close(&info);
                last_close = Some(info);
            }
            Event::Reconnecting {
                attempt,
                delay,
                error,
            } => {
                let seconds = delay.as_secs_f64();
                match error {
                    Some(err) => {
                        eprintln!(
                            "reconnecting in {seconds:.1} s (attempt {attempt}): {}",
                            duplex_hub::error_chain(&err)
                        )
                    }
                    None => eprintln!("reconnecting in {seconds:.1} s (attempt {attempt})"),
                }
            }
            Event::Stopped(Stop::Closed) => {
                let clean = last_close.as_ref().is_none_or(|info| info.was_clean);
                return Ok(if clean {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                });
            }
            Event::Stopped(Stop::CloseCode(code)) => {
                eprintln!("not reconnecting: the server closed with {code}");
                return Ok(ExitCode::from(1));
            }
            Event::Stopped(why) => {
                eprintln!("not reconnecting: {why}");
                return Ok(ExitCode::from(2));
            }
            _ => {}
        }
    }
    Ok(ExitCode::from(1))
}

/// The subprotocol and extensions a 101 response agreed on, for the
/// "connected" line.
fn agreed_in(headers: &http::HeaderMap) -> String {
    let mut agreed = Vec::new();
    if let Some(protocol) = headers
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
    {
        agreed.push(format!("subprotocol {protocol}"));
    }
    let extensions = headers.get_all("sec-websocket-extensions");
    if extensions
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("permessage-deflate"))
    {
        agreed.push("permessage-deflate".to_owned());
    }
    agreed.join(", ")
}

/// Prints how a connection closed.
fn describe_close(info: &duplex::CloseInfo) {
    if info.reason.is_empty() {
        eprintln!("closed: {}", info.code);
    } else {
        eprintln!("closed: {} {:?}", info.code, info.reason.as_str());
    }
}

/// Prints how the connection closed; the exit status says whether cleanly.
fn report(info: Option<duplex::CloseInfo>) -> ExitCode {
    match info {
        Some(info) => {
            describe_close(&info);
            if info.was_clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        None => {
            eprintln!("closed");
            ExitCode::from(1)
        }
    }
}

fn describe_binary(data: &[u8]) -> String {
    let shown: Vec<String> = data.iter().take(64).map(|b| format!("{b:02x}")).collect();
    let more = if data.len() > 64 { " ..." } else { "" };
    format!("[binary, {} bytes] {}{more}", data.len(), shown.join(" "))
}
