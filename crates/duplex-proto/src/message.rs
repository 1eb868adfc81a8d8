//! Messages: what the application sends and receives.

use bytes::Bytes;

use crate::close::{CloseCode, CloseFrame};
use crate::utf8::Utf8Bytes;

/// A WebSocket message, or a control frame the application may want to see.
///
/// Text and binary messages are whole, however many frames carried them. Pings,
/// pongs and close frames are reported as they arrive; the connection answers
/// pings and close frames itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message: valid UTF-8.
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping, with its payload (at most 125 bytes).
    Ping(Bytes),
    /// A pong, with its payload (at most 125 bytes).
    Pong(Bytes),
    /// A close frame; `None` when it carried no code.
    Close(Option<CloseFrame>),
}

impl Message {
    /// A text message.
    pub fn text(text: impl Into<Utf8Bytes>) -> Message {
        Message::Text(text.into())
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Message {
        Message::Binary(data.into())
    }

    /// A ping with this payload.
    pub fn ping(data: impl Into<Bytes>) -> Message {
        Message::Ping(data.into())
    }

    /// A pong with this payload.
    pub fn pong(data: impl Into<Bytes>) -> Message {
        Message::Pong(data.into())
    }

    /// A close frame with a code and reason.
    pub fn close(code: CloseCode, reason: impl Into<Utf8Bytes>) -> Message {
        Message::Close(Some(CloseFrame::new(code, reason)))
    }

    /// Whether this is a text message.
    pub fn is_text(&self) -> bool {
        matches!(self, Message::Text(_))
    }

    /// Whether this is a binary message.
    pub fn is_binary(&self) -> bool {
        matches!(self, Message::Binary(_))
    }

    /// Whether this is a ping, pong or close frame.
    pub fn is_control(&self) -> bool {
        matches!(
            self,
            Message::Ping(_) | Message::Pong(_) | Message::Close(_)
        )
    }

    /// The text, for a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(t) => Some(t.as_str()),
            _ => None,
        }
    }

    /// The payload's length in bytes (for a close frame, code and reason).
    pub fn len(&self) -> usize {
        match self {
            Message::Text(t) => t.len(),
            Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
            Message::Close(None) => 0,
            Message::Close(Some(frame)) => frame.payload_len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload's bytes (a text message's UTF-8; for a close frame, only
    /// the reason), borrowed.
    pub fn as_data(&self) -> &[u8] {
        match self {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b,
            Message::Close(None) => &[],
            Message::Close(Some(frame)) => frame.reason.as_bytes(),
        }
    }

    /// The payload as bytes (for a close frame, only the reason).
    pub fn into_data(self) -> Bytes {
        match self {
            Message::Text(t) => t.into_bytes(),
            Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b,
            Message::Close(None) => Bytes::new(),
            Message::Close(Some(frame)) => frame.reason.into_bytes(),
        }
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Message::Text(s.into())
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Self {
        Message::Text(s.into())
    }
}

impl From<Utf8Bytes> for Message {
    fn from(t: Utf8Bytes) -> Self {
        Message::Text(t)
    }
}

impl From<Bytes> for Message {
    fn from(b: Bytes) -> Self {
        Message::Binary(b)
    }
}

impl From<Vec<u8>> for Message {
    fn from(b: Vec<u8>) -> Self {
        Message::Binary(b.into())
    }
}

#[cfg(feature = "json")]
impl Message {
    /// A text message holding `value` as JSON.
    ///
    /// # Errors
    ///
    /// Whatever `serde_json` reports for a value it cannot serialize (a map with
    /// non-string keys, a failing `Serialize` impl).
    ///
    /// ```
    /// use duplex_proto::{JsonMessage, Message};
    /// let msg = Message::json(&serde_json::json!({"op": "ping", "id": 1})).unwrap();
    /// assert_eq!(msg.as_text(), Some(r#"{"id":1,"op":"ping"}"#));
    /// let back: serde_json::Value = msg.json().unwrap();
    /// assert_eq!(back["op"], "ping");
    /// ```
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Message, serde_json::Error> {
        Ok(Message::Text(serde_json::to_string(value)?.into()))
    }
}

/// Reading a message as JSON: `message.json::<T>()`.
#[cfg(feature = "json")]
pub trait JsonMessage {
    /// Parses a text or binary message's payload as JSON into `T`.
    ///
    /// # Errors
    ///
    /// A `serde_json` error for a payload that is not JSON of `T`'s shape, or for
    /// a ping, pong or close (which carry no JSON).
    fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error>;
}

#[cfg(feature = "json")]
impl JsonMessage for Message {
    fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        match self {
            Message::Text(text) => serde_json::from_str(text),
            Message::Binary(data) => serde_json::from_slice(data),
            _ => Err(serde::de::Error::custom(
                "only text and binary messages carry JSON",
            )),
        }
    }
}
