//! One WebSocket connection: requests in, replies and pushes out.
//!
//! The reader handles one request at a time and sends exactly one reply
//! for it. Replies and pushes alike are written to the socket by whoever
//! makes them, through the connection's [`Outbox`]; what the socket does not
//! take at once waits in a bounded queue that the reading half writes out
//! as the socket drains (there is no writer task). The
//! connection ends when the client closes, when its queue overflows (1008,
//! slow consumer), when it keeps going over the rate limit (1008), when its
//! token expired without a `refresh` ([`TOKEN_EXPIRED`]), or when the server
//! shuts down (1001). Its subscriptions end with it (with `leave` pushed where
//! presence is on).
//!
//! Token expiry costs nothing to a connection whose tokens have no `exp`: the
//! deadlines (the `refresh` push, the close, the end of a private
//! subscription) are fields of the session, and the reader waits on a timer
//! (boxed, made for the nearest deadline) only while there is one.

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
use crate::clock::Clock;
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

/// The close code of a connection whose token expired (`exp` plus
/// `auth.leeway_secs` passed) without a `refresh`: a reason to reconnect with
/// a fresh token, unlike 1008.
pub const TOKEN_EXPIRED: CloseCode = CloseCode(4001);

/// Why the connection stops.
enum Stop {
    Ended,
    Close(CloseCode, String),
}

/// How the reading half ended.
enum ReadEnd {
    /// The client closed, or the connection failed.
    Ended,
    /// Over the rate limit again and again.
    Abused,
    /// The token expired without a refresh.
    Expired,
}

/// A private subscription whose token has an `exp`: it ends at `at`.
struct Expiring {
    channel: String,
    at: Instant,
}

/// The state of one connection.
struct Session {
    hub: Arc<Hub>,
    /// Where the client connects from (behind trusted proxies, the client
    /// they name): what logs show and what per-client limits key on.
    addr: ClientAddr,
    outbox: Outbox,
    client: Arc<ClientInfo>,
    /// Boxed: most connections have none, and the session lives in every
    /// connection's task.
    claims: Option<Box<Claims>>,
    /// When the `refresh` push is due (the token has an `exp`, and the push
    /// was not made yet).
    refresh_at: Option<Instant>,
    /// When the connection is closed with [`TOKEN_EXPIRED`]: the token's
    /// `exp` plus the leeway.
    expires_at: Option<Instant>,
    /// Private subscriptions whose token has an `exp`.
    expiring: Vec<Expiring>,
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
        claims: None,
        refresh_at: None,
        expires_at: None,
        expiring: Vec::new(),
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
    session.set_claims(claims);
    tracing::info!(
        client = %session.client.client,
        client_addr = %session.addr.ip(),
        proxy_addr = session.addr.proxy().map(tracing::field::display),
        "connection open"
    );

    let stop = {
        let reader = async {
            loop {
                let item = match session.next_deadline() {
                    None => read.next().await,
                    Some(at) => {
                        // Boxed: only connections with a deadline hold one.
                        let timer = Box::pin(tokio::time::sleep_until(at.into()));
                        // The timer first: a client that keeps sending does
                        // not put its deadline off.
                        tokio::select! {
                            biased;
                            () = timer => {
                                if !Box::pin(session.on_deadline()).await {
                                    return ReadEnd::Expired;
                                }
                                continue;
                            }
                            item = read.next() => item,
                        }
                    }
                };
                let Some(item) = item else { break };
                let message = match item {
                    Ok(message) => message,
                    Err(err) => {
                        let err = crate::error_chain(&err);
                        tracing::debug!(err, "connection failed");
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
                    return ReadEnd::Abused;
                }
            }
            ReadEnd::Ended
        };
        let mut reader = pin!(reader);
        tokio::select! {
            biased;
            () = closing.cancelled() => {
                Stop::Close(CloseCode::GOING_AWAY, "the server is shutting down".into())
            }
            (code, reason) = told.closed() => Stop::Close(code, reason),
            end = &mut reader => match end {
                ReadEnd::Abused => Stop::Close(
                    CloseCode::POLICY_VIOLATION,
                    format!("too many requests: over {} per second", limits.requests_per_second),
                ),
                ReadEnd::Expired => Stop::Close(
                    TOKEN_EXPIRED,
                    "token expired: refresh it before exp, or reconnect with a fresh one".into(),
                ),
                ReadEnd::Ended => Stop::Ended,
            },
        }
    };
    Box::pin(session.leave_all()).await;
    drop(write);
    if let Stop::Close(code, reason) = stop {
        // Boxed, as the requests are: only a closing connection needs it.
        // The close timeout is the server's (`Acceptor::close_timeout`).
        if let Err(err) = Box::pin(read.close(code, &reason)).await {
            tracing::debug!(%err, "the closing handshake did not complete");
        }
    }
    drop_one(&metrics.connections);
    tracing::info!(
        client = %session.client.client,
        client_addr = %session.addr.ip(),
        proxy_addr = session.addr.proxy().map(tracing::field::display),
        "connection closed"
    );
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
            Request::Refresh { token } => self
                .refresh(token)
                .await
                .map(|r| Some(protocol::ok_reply(id, &r))),
            Request::Subscribe {
                channel,
                since,
                token,
            } => self.subscribe(id, channel, since, token).await,
            Request::Unsubscribe { channel } => {
                let (channel, namespace) = self.hub.channel(&channel)?;
                if !self.subscriptions.remove(channel.as_str()) {
                    return Err(HubError::new(
                        ErrorCode::NotSubscribed,
                        format!("not subscribed to {channel}"),
                    ));
                }
                self.expiring.retain(|e| e.channel != channel.as_str());
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
                self.check_allowed(&channel, namespace)?;
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
                self.check_allowed(&channel, namespace)?;
                let clients = self.hub.engine().presence(channel.as_str()).await?;
                ok(serde_json::json!({ "clients": clients }).to_string())
            }
            Request::History {
                channel,
                limit,
                before,
            } => {
                let (channel, namespace) = self.hub.channel(&channel)?;
                self.check_allowed(&channel, namespace)?;
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
            let claims = self.connection_claims(&token).await?;
            self.set_claims(Some(claims));
        } else if self.claims.is_none() && self.hub.hooks().has(HookOp::Connect) {
            // No token at all: the backend says who the client is.
            let allowed = self.ask(HookOp::Connect, None, None).await?;
            let allowed = allowed.unwrap_or_default();
            self.set_claims(Some(Claims {
                sub: allowed.user.unwrap_or_default(),
                channels: allowed.channels,
                ..Claims::default()
            }));
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

    /// The claims of a connection token (`connect`, `refresh`): valid, and
    /// not a subscription token.
    async fn connection_claims(&self, token: &str) -> Result<Claims, HubError> {
        let claims = self
            .hub
            .verify_token(token)
            .await
            .map_err(|err| HubError::new(ErrorCode::Unauthorized, err.message))?;
        if claims.channel.is_some() {
            return Err(HubError::new(
                ErrorCode::Unauthorized,
                "a subscription token (with a channel claim) is not a connection token",
            ));
        }
        Ok(claims)
    }

    /// Takes `claims` as the connection's and schedules its deadlines: the
    /// `refresh` push at `exp - auth.refresh_before_secs` (but not before
    /// halfway to `exp`), the close at `exp + auth.leeway_secs`; none
    /// without `exp`.
    fn set_claims(&mut self, claims: Option<Claims>) {
        let auth = &self.hub.config().auth;
        let now = Instant::now();
        match claims.as_ref().and_then(|c| c.exp) {
            None => {
                self.refresh_at = None;
                self.expires_at = None;
            }
            Some(exp) => {
                let left = until(self.hub.clock(), exp);
                let wait = left
                    .saturating_sub(Duration::from_secs(auth.refresh_before_secs))
                    .max(left / 2);
                self.refresh_at = now.checked_add(wait);
                self.expires_at = left
                    .checked_add(Duration::from_secs(auth.leeway_secs))
                    .and_then(|d| now.checked_add(d));
            }
        }
        self.claims = claims.map(Box::new);
    }

    /// The nearest deadline: the `refresh` push, the close for an expired
    /// token, or the end of a private subscription.
    fn next_deadline(&self) -> Option<Instant> {
        let subscriptions = self.expiring.iter().map(|e| e.at).min();
        [self.refresh_at, self.expires_at, subscriptions]
            .into_iter()
            .flatten()
            .min()
    }

    /// Does what is due: false when the token expired (the connection is
    /// closed), else the `refresh` push and the end of private subscriptions
    /// whose token expired, with an `unsubscribe` push.
    async fn on_deadline(&mut self) -> bool {
        let now = Instant::now();
        if self.expires_at.is_some_and(|at| at <= now) {
            tracing::info!(client = %self.client.client, user = %self.client.user, "token expired");
            bump(&self.hub.metrics().tokens_expired);
            return false;
        }
        if self.refresh_at.is_some_and(|at| at <= now) {
            self.refresh_at = None;
            let exp = self.claims.as_ref().and_then(|c| c.exp).unwrap_or(0);
            self.outbox.push_text(protocol::refresh_push(
                until(self.hub.clock(), exp).as_secs(),
            ));
        }
        if self.expiring.iter().any(|e| e.at <= now) {
            let (due, kept) = std::mem::take(&mut self.expiring)
                .into_iter()
                .partition::<Vec<_>, _>(|e| e.at <= now);
            self.expiring = kept;
            for expired in due {
                self.drop_subscription(&expired.channel, "the subscription token expired")
                    .await;
            }
        }
        true
    }

    /// Ends a subscription the client did not end itself, with an
    /// `unsubscribe` push saying why.
    async fn drop_subscription(&mut self, channel: &str, reason: &str) {
        if !self.subscriptions.remove(channel) {
            return;
        }
        self.expiring.retain(|e| e.channel != channel);
        let presence = self
            .hub
            .channel(channel)
            .map(|(_, ns)| ns.presence)
            .unwrap_or(false);
        self.hub
            .unsubscribe(channel, self.outbox.id, &self.client, presence)
            .await;
        self.outbox
            .push_text(protocol::unsubscribe_push(channel, reason));
    }

    /// `refresh`: a fresh token of the same user replaces the connection's;
    /// subscriptions it no longer allows end (an `unsubscribe` push each,
    /// before the reply).
    async fn refresh(&mut self, token: String) -> Result<String, HubError> {
        let Some(current) = &self.claims else {
            return Err(HubError::new(
                ErrorCode::BadRequest,
                "this connection has no token to refresh: give one in connect or in ?token=",
            ));
        };
        let claims = self.connection_claims(&token).await?;
        if claims.sub != current.sub {
            return Err(HubError::new(
                ErrorCode::Forbidden,
                format!(
                    "a refresh cannot change the connection's user: the token is for {:?}, \
                     the connection for {:?}",
                    claims.sub, current.sub
                ),
            ));
        }
        let result = match claims.exp {
            Some(exp) => format!(
                "{{\"expires_in\":{}}}",
                until(self.hub.clock(), exp).as_secs()
            ),
            None => "{}".to_owned(),
        };
        let refused: Vec<String> = self
            .subscriptions
            .iter()
            .filter(|name| match self.hub.channel(name) {
                Ok((channel, namespace)) => !namespace.private && !claims.allows(&channel),
                Err(_) => false,
            })
            .cloned()
            .collect();
        self.set_claims(Some(claims));
        bump(&self.hub.metrics().token_refreshes);
        for channel in refused {
            self.drop_subscription(&channel, "the refreshed token does not allow the channel")
                .await;
        }
        Ok(result)
    }

    /// The end of a private subscription to `channel` that `token` grants:
    /// `None` when the token has no `exp`.
    async fn subscription_token(
        &self,
        channel: &crate::channel::ChannelName,
        token: Option<String>,
    ) -> Result<Option<Instant>, HubError> {
        let Some(token) = token else {
            return Err(HubError::new(
                ErrorCode::Unauthorized,
                format!(
                    "namespace {:?} is private: subscribing to {channel} needs a subscription \
                     token (\"token\", with a \"channel\" claim)",
                    channel.namespace()
                ),
            ));
        };
        let claims = self.hub.verify_token(&token).await.map_err(|err| {
            HubError::new(
                ErrorCode::Unauthorized,
                format!("subscription token refused: {}", err.message),
            )
        })?;
        match claims.channel.as_deref() {
            Some(granted) if granted == channel.as_str() => {}
            Some(granted) => {
                let shown: String = granted.chars().take(200).collect();
                return Err(HubError::new(
                    ErrorCode::Forbidden,
                    format!("the subscription token is for channel {shown:?}, not {channel}"),
                ));
            }
            None => {
                return Err(HubError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "not a subscription token (no channel claim): {channel} is private, and a \
                         connection token's channels claim does not grant it"
                    ),
                ));
            }
        }
        if !self.client.user.is_empty() && claims.sub != self.client.user {
            return Err(HubError::new(
                ErrorCode::Forbidden,
                format!(
                    "the subscription token is for user {:?}, the connection for {:?}",
                    claims.sub, self.client.user
                ),
            ));
        }
        let leeway = self.hub.config().auth.leeway_secs;
        Ok(claims.exp.and_then(|exp| {
            until(self.hub.clock(), exp)
                .checked_add(Duration::from_secs(leeway))
                .and_then(|d| Instant::now().checked_add(d))
        }))
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

    /// Whether the connection may use `channel` (publish, presence,
    /// history): its token's `channels` claim allows it; in a private
    /// namespace, the connection is subscribed to it.
    fn check_allowed(
        &self,
        channel: &crate::channel::ChannelName,
        namespace: &crate::config::NamespaceConfig,
    ) -> Result<(), HubError> {
        if namespace.private {
            if self.subscriptions.contains(channel.as_str()) {
                return Ok(());
            }
            return Err(HubError::new(
                ErrorCode::Forbidden,
                format!("{channel} is private: subscribe to it with a subscription token first"),
            ));
        }
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

    async fn subscribe(
        &mut self,
        id: u64,
        channel: String,
        since: Option<Since>,
        token: Option<String>,
    ) -> Reply {
        let (channel, namespace) = self.hub.channel(&channel)?;
        let ends = if namespace.private {
            self.subscription_token(&channel, token).await?
        } else if token.is_some() {
            return Err(HubError::new(
                ErrorCode::BadRequest,
                format!(
                    "namespace {:?} is not private: subscribe takes no token there",
                    channel.namespace()
                ),
            ));
        } else {
            self.check_allowed(&channel, namespace)?;
            None
        };
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
        if let Some(at) = ends {
            self.expiring.push(Expiring {
                channel: channel.as_str().to_string(),
                at,
            });
        }
        Ok(None)
    }

    /// Ends every subscription, pushing `leave` where presence is on.
    async fn leave_all(&mut self) {
        self.expiring.clear();
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

/// How long until `exp` (seconds since the epoch) on `clock`; zero once it
/// is past.
fn until(clock: &Clock, exp: u64) -> Duration {
    Duration::from_millis(exp.saturating_mul(1000).saturating_sub(clock.now_ms()))
}

/// `protocol::parse` never returns a request without an id.
fn unreachable_id() -> Result<Option<String>, (Option<u64>, HubError)> {
    Err((
        None,
        HubError::new(ErrorCode::BadRequest, "a request needs an \"id\""),
    ))
}
