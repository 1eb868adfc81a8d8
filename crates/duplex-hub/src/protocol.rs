//! The hub's protocol: JSON requests in, replies and pushes out.
//!
//! A request is `{"id":N,"op":"...",...}` and gets exactly one reply,
//! `{"id":N,"ok":true,"result":{...}}` or
//! `{"id":N,"ok":false,"error":{"code":"...","message":"..."}}`; a message that
//! is not a JSON object with a usable id gets the error with `"id":null`.
//! Pushes (`message`, `join`, `leave`, `refresh`, `unsubscribe`) carry no
//! id. See docs/PROTOCOL.md.

use std::fmt::Write;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The ops a client may send.
pub const OPS: [&str; 8] = [
    "connect",
    "refresh",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "history",
    "ping",
];

/// The largest `info` a client may give in `connect`, in bytes of JSON.
pub const MAX_INFO_SIZE: usize = 1024;
/// `history`'s `limit` when the request has none.
pub const DEFAULT_HISTORY_LIMIT: usize = 50;
/// The largest `limit` of `history`.
pub const MAX_HISTORY_LIMIT: usize = 1000;

/// An error reply's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Not JSON, not an object, no id, a missing or mistyped field.
    BadRequest,
    /// An `op` the hub does not know.
    UnknownOp,
    /// A channel whose namespace is not configured.
    UnknownNamespace,
    /// A channel name that is not valid.
    BadChannel,
    /// Not allowed: publishing where clients may not, a channel the token
    /// does not allow, a refresh to another user, a subscription token for
    /// another channel or user.
    Forbidden,
    /// No valid token where one is required (a subscription token in a
    /// private namespace), or a bad token.
    Unauthorized,
    /// `unsubscribe` from a channel the connection is not subscribed to.
    NotSubscribed,
    /// `subscribe` twice to the same channel.
    AlreadySubscribed,
    /// `since` is older than what history still holds.
    RecoveryImpossible,
    /// Over the request rate limit.
    TooManyRequests,
    /// Over the limit of channels per connection.
    TooManyChannels,
    /// The channel has its maximum of subscribers.
    ChannelFull,
    /// A publication (or `info`) over its size limit.
    MessageTooBig,
    /// The hub failed (storage); the request may be retried.
    Internal,
    /// The engine (Redis) did not answer in time; retry later.
    Unavailable,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::UnknownNamespace => "unknown_namespace",
            ErrorCode::BadChannel => "bad_channel",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotSubscribed => "not_subscribed",
            ErrorCode::AlreadySubscribed => "already_subscribed",
            ErrorCode::RecoveryImpossible => "recovery_impossible",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::TooManyChannels => "too_many_channels",
            ErrorCode::ChannelFull => "channel_full",
            ErrorCode::MessageTooBig => "message_too_big",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

/// An error to reply with: a code and a message in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubError {
    /// The code.
    pub code: ErrorCode,
    /// What was wrong, and which limit.
    pub message: String,
}

impl HubError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        HubError {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for HubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for HubError {}

/// `since` of a `subscribe`: where the client left off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Since {
    /// The offset of the last publication the client has.
    pub offset: u64,
}

/// A request, without its id.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Authenticate (optional token) and describe the client (`info`).
    Connect {
        /// A JWT.
        #[serde(default)]
        token: Option<String>,
        /// Free JSON shown in presence.
        #[serde(default)]
        info: Option<Value>,
    },
    /// Replace the connection's token with a fresh one of the same user
    /// (before the old one expires).
    Refresh {
        /// A JWT.
        token: String,
    },
    /// Subscribe to a channel, optionally recovering from `since`.
    Subscribe {
        /// The channel.
        channel: String,
        /// Where the client left off.
        #[serde(default)]
        since: Option<Since>,
        /// A subscription token (`channel` claim): needed in private
        /// namespaces, refused in the others.
        #[serde(default)]
        token: Option<String>,
    },
    /// Unsubscribe from a channel.
    Unsubscribe {
        /// The channel.
        channel: String,
    },
    /// Publish `data` to a channel.
    Publish {
        /// The channel.
        channel: String,
        /// Any JSON value.
        data: Value,
    },
    /// The clients subscribed to a channel.
    Presence {
        /// The channel.
        channel: String,
    },
    /// The newest publications of a channel.
    History {
        /// The channel.
        channel: String,
        /// How many, at most (default 50, max 1000).
        #[serde(default)]
        limit: Option<u64>,
        /// Only offsets below this.
        #[serde(default)]
        before: Option<u64>,
    },
    /// Answers `{}`.
    Ping,
}

/// Parses one text message: the request id (`None` if there is no usable
/// one) and the request, or the error to reply with.
pub fn parse(text: &str) -> (Option<u64>, Result<Request, HubError>) {
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(err) => {
            return (
                None,
                Err(HubError::new(
                    ErrorCode::BadRequest,
                    format!("the message is not JSON: {err}"),
                )),
            );
        }
    };
    let Value::Object(object) = &value else {
        return (
            None,
            Err(HubError::new(
                ErrorCode::BadRequest,
                "a request is a JSON object: {\"id\":1,\"op\":\"ping\"}",
            )),
        );
    };
    let Some(id) = object.get("id").and_then(Value::as_u64) else {
        return (
            None,
            Err(HubError::new(
                ErrorCode::BadRequest,
                "a request needs an \"id\": a non-negative integer",
            )),
        );
    };
    let op = match object.get("op") {
        Some(Value::String(op)) => op.as_str(),
        _ => {
            return (
                Some(id),
                Err(HubError::new(
                    ErrorCode::BadRequest,
                    "a request needs an \"op\" string",
                )),
            );
        }
    };
    if !OPS.contains(&op) {
        let shown: String = op.chars().take(32).collect();
        return (
            Some(id),
            Err(HubError::new(
                ErrorCode::UnknownOp,
                format!("unknown op {shown:?}; ops are {}", OPS.join(", ")),
            )),
        );
    }
    let op = op.to_string();
    let request = serde_json::from_value::<Request>(value).map_err(|err| {
        HubError::new(
            ErrorCode::BadRequest,
            format!("invalid {op} request: {err}"),
        )
    });
    (Some(id), request)
}

/// One publication of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// Its offset in the channel: 1, 2, 3...
    pub offset: u64,
    /// When it was published, milliseconds since the epoch.
    pub time: u64,
    /// Its data, as JSON text.
    pub data: Arc<str>,
}

impl Publication {
    /// Appends `{"offset":N,"time":T,"data":...}` to `out`.
    pub fn write_json(&self, out: &mut String) {
        let _ = write!(
            out,
            "{{\"offset\":{},\"time\":{},\"data\":{}}}",
            self.offset, self.time, self.data
        );
    }
}

/// A client as presence lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// The server-assigned client id.
    pub client: String,
    /// The user id from the token, or empty.
    pub user: String,
    /// The `info` the client gave in `connect`, or `{}`.
    pub info: Value,
}

/// `{"id":N,"ok":true,"result":RESULT}`, RESULT being JSON text.
pub fn ok_reply(id: u64, result: &str) -> String {
    format!("{{\"id\":{id},\"ok\":true,\"result\":{result}}}")
}

/// `{"id":N,"ok":false,"error":{...}}`, with `"id":null` for `None`.
pub fn error_reply(id: Option<u64>, error: &HubError) -> String {
    serde_json::json!({
        "id": id,
        "ok": false,
        "error": {"code": error.code.as_str(), "message": error.message},
    })
    .to_string()
}

/// A result `{"offset":N,"publications":[...]}`.
pub fn publications_result(offset: u64, publications: &[Publication]) -> String {
    let mut out = format!("{{\"offset\":{offset},\"publications\":[");
    for (i, publication) in publications.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        publication.write_json(&mut out);
    }
    out.push_str("]}");
    out
}

/// The `message` push of a publication.
pub fn message_push(channel: &str, publication: &Publication) -> String {
    format!(
        "{{\"push\":\"message\",\"channel\":{},\"offset\":{},\"time\":{},\"data\":{}}}",
        Value::from(channel),
        publication.offset,
        publication.time,
        publication.data
    )
}

/// The `refresh` push: the connection's token expires in `expires_in`
/// seconds.
pub fn refresh_push(expires_in: u64) -> String {
    format!("{{\"push\":\"refresh\",\"expires_in\":{expires_in}}}")
}

/// The `unsubscribe` push: the hub ended the subscription to `channel`, for
/// `reason`.
pub fn unsubscribe_push(channel: &str, reason: &str) -> String {
    serde_json::json!({"push": "unsubscribe", "channel": channel, "reason": reason}).to_string()
}

/// A `join` or `leave` push.
pub fn presence_push(kind: &str, channel: &str, client: &ClientInfo) -> String {
    serde_json::json!({"push": kind, "channel": channel, "client": client}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> (Option<u64>, ErrorCode) {
        let (id, result) = parse(text);
        (id, result.unwrap_err().code)
    }

    #[test]
    fn requests_parse() {
        let (id, request) =
            parse(r#"{"id":7,"op":"subscribe","channel":"chat:a","since":{"offset":3}}"#);
        assert_eq!(id, Some(7));
        assert_eq!(
            request.unwrap(),
            Request::Subscribe {
                channel: "chat:a".into(),
                since: Some(Since { offset: 3 }),
                token: None,
            }
        );
        let (_, request) = parse(r#"{"id":2,"op":"subscribe","channel":"dm:a","token":"t"}"#);
        assert!(matches!(request.unwrap(), Request::Subscribe { token: Some(t), .. } if t == "t"));
        let (_, request) = parse(r#"{"id":3,"op":"refresh","token":"t"}"#);
        assert_eq!(request.unwrap(), Request::Refresh { token: "t".into() });
        let (_, request) = parse(r#"{"id":1,"op":"ping"}"#);
        assert_eq!(request.unwrap(), Request::Ping);
        let (_, request) = parse(r#"{"id":1,"op":"publish","channel":"chat:a","data":null}"#);
        assert!(matches!(
            request.unwrap(),
            Request::Publish {
                data: Value::Null,
                ..
            }
        ));
    }

    #[test]
    fn malformed_requests_get_codes() {
        assert_eq!(code("not json"), (None, ErrorCode::BadRequest));
        assert_eq!(code("[1]"), (None, ErrorCode::BadRequest));
        assert_eq!(code(r#"{"op":"ping"}"#), (None, ErrorCode::BadRequest));
        assert_eq!(
            code(r#"{"id":-1,"op":"ping"}"#),
            (None, ErrorCode::BadRequest)
        );
        assert_eq!(code(r#"{"id":2}"#), (Some(2), ErrorCode::BadRequest));
        assert_eq!(
            code(r#"{"id":2,"op":"fly"}"#),
            (Some(2), ErrorCode::UnknownOp)
        );
        assert_eq!(
            code(r#"{"id":2,"op":"subscribe"}"#),
            (Some(2), ErrorCode::BadRequest)
        );
        assert_eq!(
            code(r#"{"id":2,"op":"refresh"}"#),
            (Some(2), ErrorCode::BadRequest)
        );
        assert_eq!(
            code(r#"{"id":2,"op":"publish","channel":"chat:a"}"#),
            (Some(2), ErrorCode::BadRequest)
        );
        assert_eq!(
            code(r#"{"id":2,"op":"history","channel":"chat:a","limit":"x"}"#),
            (Some(2), ErrorCode::BadRequest)
        );
    }

    #[test]
    fn replies_are_json() {
        let p = Publication {
            offset: 4,
            time: 5,
            data: Arc::from(r#"{"text":"hi"}"#),
        };
        let refresh: Value = serde_json::from_str(&refresh_push(25)).unwrap();
        assert_eq!(
            refresh,
            serde_json::json!({"push": "refresh", "expires_in": 25})
        );
        let gone: Value = serde_json::from_str(&unsubscribe_push("dm:a", "why \"")).unwrap();
        assert_eq!(gone["reason"], "why \"");
        let push: Value = serde_json::from_str(&message_push("chat:a", &p)).unwrap();
        assert_eq!(push["offset"], 4);
        assert_eq!(push["data"]["text"], "hi");
        let reply: Value =
            serde_json::from_str(&ok_reply(3, &publications_result(4, &[p]))).unwrap();
        assert_eq!(reply["result"]["publications"][0]["offset"], 4);
        let err = error_reply(None, &HubError::new(ErrorCode::Forbidden, "no \"way\""));
        let err: Value = serde_json::from_str(&err).unwrap();
        assert_eq!(err["id"], Value::Null);
        assert_eq!(err["error"]["code"], "forbidden");
    }

    proptest::proptest! {
        /// Whatever arrives from the network, parsing answers (a request or
        /// an error to reply with) and never panics.
        #[test]
        fn parse_never_panics(text in "\\PC{0,200}") {
            let _ = parse(&text);
            let _ = crate::channel::ChannelName::parse(&text);
        }

        #[test]
        fn parse_answers_json_requests(
            id in proptest::option::of(0u64..u64::MAX),
            op in "(connect|refresh|subscribe|unsubscribe|publish|presence|history|ping|[a-z]{0,8})",
            channel in proptest::option::of("\\PC{0,40}"),
            limit in proptest::option::of(-5i64..5000),
        ) {
            let mut request = serde_json::json!({"op": op});
            if let Some(id) = id { request["id"] = id.into(); }
            if let Some(channel) = channel { request["channel"] = channel.into(); }
            if let Some(limit) = limit { request["limit"] = limit.into(); }
            let (got, result) = parse(&request.to_string());
            proptest::prop_assert_eq!(got, id);
            if id.is_none() {
                proptest::prop_assert_eq!(result.unwrap_err().code, ErrorCode::BadRequest);
            }
        }
    }
}
