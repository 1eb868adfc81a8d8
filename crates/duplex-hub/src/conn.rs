//! One WebSocket connection: requests in, replies and pushes out.
//!
//! The reader handles one request at a time and sends exactly one reply
//! for it. Replies and pushes alike are written to the socket by whoever
//! makes them, through the connection's [`Outbox`]; what the socket does not
//! take at once waits in a bounded queue that the reading half writes out
//! as the socket drains (there is no writer task). The
//! connection ends when the client closes, when its queue overflows (1008,
//! slow consumer), when it keeps going over the rate limit (1008), or when the
//! server shuts down (1001). Its subscriptions end with it (with `leave`
//! pushed where presence is on).

use std::collections::HashSet;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duplex::{CloseCode, Message, ReadHalf, WebSocket, WriteHalf};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::auth::Claims;
use crate::forwarded::ClientAddr;
use crate::history;
use crate::hooks::{HookOp, HookRequest, RequestHeaders};
use crate::hub::Hub;
use crate::hub::Subscribe;
use crate::limits::TokenBucket;
use crate::metrics::{bump, drop_one};
use crate::protocol::{
    self, ClientInfo, DEFAULT_HISTORY_LIMIT, ErrorCode, HubError, MAX_INFO_SIZE, Request, Since,
};
use crate::registry::Outbox;

/// How long a connection being closed gets to answer the close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the connection stops.
enum Stop {
    Ended,
    Close(CloseCode, String),
}

/// The state of one connection.
struct Session {
    hub: Arc<Hub>,
    /// Where the client connects from (behind trusted proxies, the client
    /// they name): what logs show and what per-client limits key on.
    addr: ClientAddr,
    outbox: Outbox,
    client: Arc<ClientInfo>,
    claims: Option<Claims>,
    /// The upgrade's headers, kept for the connect hook until `connect`
    /// (`None` without a connect hook).
    headers: Option<Box<RequestHeaders>>,
    /// `connect` succeeded.
    connected: bool,
    /// A request other than `connect` and `ping` was made.
    started: bool,
    subscriptions: HashSet<String>,
    bucket: TokenBucket,
    /// Requests refused for the rate limit in a row.
    refused: u32,
}

type Reply = Result<Option<String>, HubError>;

/// Runs a connection until it ends. `claims` are those of a valid token in
/// the URL; `headers` those of the upgrade the connect hook is told;
/// `addr` is where the client connects from; `closing` is cancelled when the
/// server shuts down.
///
/// The WebSocket is split before the connection's future is made, so that
/// the future (which every idle connection holds for its whole life) keeps
/// the two small halves and not a slot the size of a whole `WebSocket`.
pub fn run<S>(
    hub: Arc<Hub>,
    ws: WebSocket<S>,
    claims: Option<Claims>,
    headers: Option<Box<RequestHeaders>>,
    addr: ClientAddr,
    closing: CancellationToken,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve(hub, ws.split(), claims, headers, addr, closing)
}

async fn serve<S>(
    hub: Arc<Hub>,
    (mut read, write): (ReadHalf<S>, WriteHalf<S>),
    claims: Option<Claims>,
    headers: Option<Box<RequestHeaders>>,
    addr: ClientAddr,
    closing: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let metrics = hub.metrics().clone();
    bump(&metrics.connections);
    bump(&metrics.connections_total);
    let limits = hub.config().limits.clone();
    let (id, client_id) = hub.new_client_id();
    let outbox = Outbox::new(id, write.sender(), limits.send_queue, metrics.clone());
    let told = outbox.clone();
    let user = claims.as_ref().map(|c| c.sub.clone()).unwrap_or_default();
    let mut session = Session {
        client: Arc::new(ClientInfo {
            client: client_id,
            user,
            info: Value::Object(Default::default()),
        }),
        claims,
        headers,
        connected: false,
        started: false,
        subscriptions: HashSet::new(),
        bucket: TokenBucket::new(limits.requests_per_second, limits.burst, Instant::now()),
        refused: 0,
        outbox,
        hub: hub.clone(),
        addr,
    };
    tracing::info!(
        client = %session.client.client,
        client_addr = %session.addr.ip(),
        proxy_addr = session.addr.proxy().map(tracing::field::display),
        "connection open"
    );

    let stop = {
        let reader = async {
            while let Some(item) = read.next().await {
                let message = match item {
                    Ok(message) => message,
                    Err(err) => {
                        tracing::debug!(%err, "connection failed");
                        break;
                    }
                };
                let text = match message {
                    Message::Text(text) => text,
                    Message::Binary(_) => {
                        bump(&metrics.messages_in);
                        session.reply_error(
                            None,
                            HubError::new(
                                ErrorCode::BadRequest,
                                "binary messages are not part of the protocol: send JSON text",
                            ),
                        );
                        continue;
                    }
                    _ => continue,
                };
                bump(&metrics.messages_in);
                // Boxed: handling a request awaits the engine, a future of
                // kilobytes, which would otherwise sit in every idle
                // connection's task for its whole life.
                if !Box::pin(session.handle(text.as_str())).await {
                    // Abuse: the connection is closed with 1008.
                    return true;
                }
            }
            false
        };
        let mut reader = pin!(reader);
        tokio::select! {
            biased;
            () = closing.cancelled() => {
                Stop::Close(CloseCode::GOING_AWAY, "the server is shutting down".into())
            }
            (code, reason) = told.closed() => Stop::Close(code, reason),
            abused = &mut reader => if abused {
                Stop::Close(
                    CloseCode::POLICY_VIOLATION,
                    format!("too many requests: over {} per second", limits.requests_per_second),
                )
            } else {
                Stop::Ended
            },
        }
    };
    Box::pin(session.leave_all()).await;
    if let Stop::Close(code, reason) = stop {
        // Boxed, as the requests are: only a closing connection needs it.
        Box::pin(close(read, write, code, reason)).await;
    }
    drop_one(&metrics.connections);
    tracing::info!(
        client = %session.client.client,
        client_addr = %session.addr.ip(),
        proxy_addr = session.addr.proxy().map(tracing::field::display),
        "connection closed"
    );
}

/// Runs the closing handshake: our close frame, then what the client sends
/// read and dropped until it closes too, for [`CLOSE_TIMEOUT`] at most.
async fn close<S>(mut read: ReadHalf<S>, mut write: WriteHalf<S>, code: CloseCode, reason: String)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut reader = pin!(async { while read.next().await.is_some() {} });
    let closing = async {
        if let Err(err) = write.close(code, &reason).await {
            tracing::debug!(%err, "sending the close frame failed");
        }
        std::future::pending::<()>().await;
    };
    let handshake = async {
        tokio::select! {
            biased;
            () = closing => {}
            () = &mut reader => {}
        }
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, handshake).await;
}

impl Session {
    fn reply_error(&self, id: Option<u64>, error: HubError) {
        bump(&self.hub.metrics().errors);
        self.outbox.push_text(protocol::error_reply(id, &error));
    }

    /// Handles one text message; false when the connection should be closed
    /// for abuse.
    async fn handle(&mut self, text: &str) -> bool {
        let (id, request) = protocol::parse(text);
        if !self.bucket.take(Instant::now()) {
            bump(&self.hub.metrics().rate_limited);
            self.refused += 1;
            let limits = &self.hub.config().limits;
            let error = HubError::new(
                ErrorCode::TooManyRequests,
                format!(
                    "over the limit of {} requests per second (burst {}); retry in {} ms",
                    limits.requests_per_second,
                    limits.burst,
                    self.bucket.retry_after().as_millis().max(1)
                ),
            );
            self.reply_error(id, error);
            // Twice the burst refused in a row: the client is not listening.
            return self.refused < limits.burst.saturating_mul(2).max(10);
        }
        self.refused = 0;
        let reply = match (id, request) {
            (id, Err(error)) => Err((id, error)),
            (None, Ok(_)) => unreachable_id(),
            (Some(id), Ok(request)) => self.dispatch(id, request).await.map_err(|e| (Some(id), e)),
        };
        match reply {
            Ok(Some(text)) => {
                self.outbox.push_text(text);
            }
            Ok(None) => {}
            Err((id, error)) => self.reply_error(id, error),
        }
        true
    }

    async fn dispatch(&mut self, id: u64, request: Request) -> Reply {
        let auth = &self.hub.config().auth;
        let is_connect = matches!(request, Request::Connect { .. });
        if !matches!(request, Request::Connect { .. } | Request::Ping) {
            self.started = true;
            if auth.required && self.claims.is_none() {
                return Err(HubError::new(
                    ErrorCode::Unauthorized,
                    "this hub requires a token: send {\"op\":\"connect\",\"token\":...} first, \
                     or open /ws?token=...",
                ));
            }
        }
        let ok = |result: String| Ok(Some(protocol::ok_reply(id, &result)));
        match request {
            Request::Connect { token, info } => self.connect(token, info).await.map(|r| {
                debug_assert!(is_connect);
                Some(protocol::ok_reply(id, &r))
            }),
            Request::Ping => ok("{}".into()),
            Request::Subscribe { channel, since } => self.subscribe(id, channel, since).await,
            Request::Unsubscribe { channel } => {
                let (channel, namespace) = self.hub.channel(&channel)?;
                if !self.subscriptions.remove(channel.as_str()) {
                    return Err(HubError::new(
                        ErrorCode::NotSubscribed,
                        format!("not subscribed to {channel}"),
                    ));
                }
                self.hub
                    .unsubscribe(
                        channel.as_str(),
                        self.outbox.id,
                        &self.client,
                        namespace.presence,
                    )
                    .await;
                ok("{}".into())
            }
            Request::Publish { channel, data } => {
                let (channel, namespace) = self.hub.channel(&channel)?;
                if !namespace.publish {
                    return Err(HubError::new(
                        ErrorCode::Forbidden,
                        format!(
                            "clients may not publish to namespace {:?} (publish = false); \
                             only the server does",
                            channel.namespace()
                        ),
                    ));
                }
                self.check_allowed(&channel)?;
                let namespace = namespace.clone();
                let data = match self
                    .ask(HookOp::Publish, Some(&channel), Some(&data))
                    .await?
                {
                    Some(allowed) => allowed.data.unwrap_or(data),
                    None => data,
                };
                let publication = self.hub.publish(&channel, &namespace, &data).await?;
                ok(format!("{{\"offset\":{}}}", publication.offset))
            }
            Request::Presence { channel } => {
                let (channel, namespace) = self.hub.channel(&channel)?;
                if !namespace.presence {
                    return Err(HubError::new(
                        ErrorCode::Forbidden,
                        format!("presence is off in namespace {:?}", channel.namespace()),
                    ));
                }
                self.check_allowed(&channel)?;
                let clients = self.hub.engine().presence(channel.as_str()).await?;
                ok(serde_json::json!({ "clients": clients }).to_string())
            }
            Request::History {
                channel,
                limit,
                before,
            } => {
                let (channel, namespace) = self.hub.channel(&channel)?;
                self.check_allowed(&channel)?;
                let limit = limit.unwrap_or(DEFAULT_HISTORY_LIMIT as u64);
                let (current, publications) =
                    history::history(&self.hub, channel.as_str(), namespace, limit, before).await?;
                ok(protocol::publications_result(current, &publications))
            }
        }
    }

    async fn connect(
        &mut self,
        token: Option<String>,
        info: Option<Value>,
    ) -> Result<String, HubError> {
        if self.connected || self.started {
            return Err(HubError::new(
                ErrorCode::BadRequest,
                "connect must be the first request, and only one",
            ));
        }
        let mut info = info.unwrap_or_else(|| Value::Object(Default::default()));
        let size = info.to_string().len();
        if size > MAX_INFO_SIZE {
            return Err(HubError::new(
                ErrorCode::MessageTooBig,
                format!("connect info is {size} bytes, over the limit of {MAX_INFO_SIZE}"),
            ));
        }
        if let Some(token) = token {
            let claims = self
                .hub
                .verify_token(&token)
                .await
                .map_err(|err| HubError::new(ErrorCode::Unauthorized, err.message))?;
            self.claims = Some(claims);
        } else if self.claims.is_none() && self.hub.hooks().has(HookOp::Connect) {
            // No token at all: the backend says who the client is.
            let allowed = self.ask(HookOp::Connect, None, None).await?;
            let allowed = allowed.unwrap_or_default();
            self.claims = Some(Claims {
                sub: allowed.user.unwrap_or_default(),
                channels: allowed.channels,
                ..Claims::default()
            });
            if let Some(given) = allowed.info {
                info = given;
            }
        }
        self.headers = None;
        let user = self
            .claims
            .as_ref()
            .map(|c| c.sub.clone())
            .unwrap_or_default();
        self.client = Arc::new(ClientInfo {
            client: self.client.client.clone(),
            user,
            info,
        });
        self.connected = true;
        Ok(serde_json::json!({"client": self.client.client, "user": self.client.user}).to_string())
    }

    /// Asks `op`'s backend hook, if configured (`None` if not), about this
    /// connection and `channel`, `data`.
    async fn ask(
        &self,
        op: HookOp,
        channel: Option<&crate::channel::ChannelName>,
        data: Option<&Value>,
    ) -> Result<Option<crate::hooks::Allowed>, HubError> {
        let hooks = self.hub.hooks();
        if !hooks.has(op) {
            return Ok(None);
        }
        let request = HookRequest {
            client: &self.client.client,
            addr: self.addr,
            headers: self.headers.as_deref(),
            user: (op != HookOp::Connect).then_some(self.client.user.as_str()),
            channel: channel.map(|c| c.as_str()),
            data,
        };
        hooks.ask(op, request).await.map(Some)
    }

    fn check_allowed(&self, channel: &crate::channel::ChannelName) -> Result<(), HubError> {
        match &self.claims {
            Some(claims) if !claims.allows(channel) => Err(HubError::new(
                ErrorCode::Forbidden,
                if self.hub.hooks().has(HookOp::Connect) {
                    format!("the token or the connect hook does not allow channel {channel}")
                } else {
                    format!("the token does not allow channel {channel}")
                },
            )),
            _ => Ok(()),
        }
    }

    async fn subscribe(&mut self, id: u64, channel: String, since: Option<Since>) -> Reply {
        let (channel, namespace) = self.hub.channel(&channel)?;
        self.check_allowed(&channel)?;
        if self.subscriptions.contains(channel.as_str()) {
            return Err(HubError::new(
                ErrorCode::AlreadySubscribed,
                format!("already subscribed to {channel}"),
            ));
        }
        let max = self.hub.config().limits.max_channels;
        if self.subscriptions.len() >= max {
            return Err(HubError::new(
                ErrorCode::TooManyChannels,
                format!(
                    "a connection may subscribe to at most {max} channels (limits.max_channels)"
                ),
            ));
        }
        self.ask(HookOp::Subscribe, Some(&channel), None).await?;
        self.hub
            .subscribe(Subscribe {
                id,
                channel: &channel,
                namespace,
                outbox: &self.outbox,
                client: &self.client,
                since: since.map(|since| since.offset),
            })
            .await?;
        self.subscriptions.insert(channel.as_str().to_string());
        Ok(None)
    }

    /// Ends every subscription, pushing `leave` where presence is on.
    async fn leave_all(&mut self) {
        for channel in std::mem::take(&mut self.subscriptions) {
            let presence = self
                .hub
                .channel(&channel)
                .map(|(_, ns)| ns.presence)
                .unwrap_or(false);
            self.hub
                .unsubscribe(&channel, self.outbox.id, &self.client, presence)
                .await;
        }
    }
}

/// `protocol::parse` never returns a request without an id.
fn unreachable_id() -> Result<Option<String>, (Option<u64>, HubError)> {
    Err((
        None,
        HubError::new(ErrorCode::BadRequest, "a request needs an \"id\""),
    ))
}
