//! The publishing side: `POST /apps/{app_id}/events` of the Pusher HTTP API,
//! signed as Pusher's REST API asks, in hand-written HTTP/1.1 on connections
//! kept alive between publications.
//!
//! The signature is `hex(HMAC-SHA256(secret, "POST\n{path}\n{query}"))`,
//! where the query is every parameter but `auth_signature`, sorted by key, as
//! `key=value` joined with `&`, and `body_md5` is the hex MD5 of the body.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long one publication (connecting, the request, the whole answer) may
/// take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest answer body read; a larger one is an error.
const MAX_BODY: usize = 1 << 20;

/// The longest status or header line read.
const MAX_LINE: usize = 16 << 10;

/// A publisher to one app's events endpoint.
pub struct Publisher {
    /// `host:port` to connect to.
    addr: String,
    /// The `Host` header.
    host: String,
    /// `/apps/{app_id}/events`, signed as it is.
    path: String,
    key: String,
    secret: Vec<u8>,
    /// The connection kept alive, if there is one.
    connection: Option<BufReader<TcpStream>>,
}

impl Publisher {
    /// A publisher to the events API at `api` (`http://HOST:PORT`), for the
    /// app `app_id` with `key` and `secret`. Nothing is connected yet.
    pub fn new(api: &str, app_id: &str, key: &str, secret: &str) -> Result<Publisher, String> {
        let rest = api.strip_prefix("http://").ok_or_else(|| {
            format!("--api {api:?} is not an http:// URL (https is not supported)")
        })?;
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains('/') || host.contains('?') {
            return Err(format!(
                "--api {api:?} must be http://HOST:PORT, without a path"
            ));
        }
        let addr = if has_port(host) {
            host.to_string()
        } else {
            format!("{host}:80")
        };
        if app_id.is_empty() || !app_id.bytes().all(is_unreserved) {
            return Err(format!(
                "--app-id {app_id:?} must be letters, digits, '-', '_', '.' or '~'"
            ));
        }
        Ok(Publisher {
            addr,
            host: host.to_string(),
            path: format!("/apps/{app_id}/events"),
            key: key.to_string(),
            secret: secret.as_bytes().to_vec(),
            connection: None,
        })
    }

    /// Another publisher to the same endpoint, on a connection of its own
    /// (made when it first publishes).
    pub fn another(&self) -> Publisher {
        Publisher {
            addr: self.addr.clone(),
            host: self.host.clone(),
            path: self.path.clone(),
            key: self.key.clone(),
            secret: self.secret.clone(),
            connection: None,
        }
    }

    /// Publishes `event` with `data` (sent as a JSON string) on `channel`.
    /// A non-2xx answer is an error that gives its status and body.
    pub async fn publish(&mut self, channel: &str, event: &str, data: &str) -> Result<(), String> {
        let body =
            serde_json::json!({ "name": event, "channel": channel, "data": data }).to_string();
        let request = self.request(&body);
        match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(&request)).await {
            Ok(result) => result,
            Err(_) => {
                self.connection = None;
                Err(format!(
                    "POST {}: no answer within {} s",
                    self.path,
                    REQUEST_TIMEOUT.as_secs()
                ))
            }
        }
    }

    /// The whole request, signed now.
    fn request(&self, body: &str) -> Vec<u8> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|t| t.as_secs())
            .unwrap_or(0)
            .to_string();
        let body_md5 = hex(&Md5::digest(body.as_bytes()));
        // Already sorted by key.
        let params = [
            ("auth_key", self.key.as_str()),
            ("auth_timestamp", timestamp.as_str()),
            ("auth_version", "1.0"),
            ("body_md5", body_md5.as_str()),
        ];
        let signed: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let signature = sign(
            &self.secret,
            &format!("POST\n{}\n{}", self.path, signed.join("&")),
        );
        let mut query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect();
        query.push(format!("auth_signature={signature}"));
        let mut request = format!(
            "POST {}?{} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: keep-alive\r\n\r\n",
            self.path,
            query.join("&"),
            self.host,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body.as_bytes());
        request
    }

    /// Sends `request` and reads the answer; on a connection kept from
    /// before that fails without any answer (the server may have closed it
    /// while idle), once more on a new one.
    async fn exchange(&mut self, request: &[u8]) -> Result<(), String> {
        let reused = self.connection.is_some();
        match self.send(request).await {
            Ok(answer) => self.judge(answer),
            Err(Failure::BeforeAnswer(_)) if reused => {
                self.connection = None;
                match self.send(request).await {
                    Ok(answer) => self.judge(answer),
                    Err(failure) => Err(self.failed(failure)),
                }
            }
            Err(failure) => Err(self.failed(failure)),
        }
    }

    /// One attempt: connects if needed, writes, reads the answer.
    async fn send(&mut self, request: &[u8]) -> Result<Answer, Failure> {
        if self.connection.is_none() {
            let tcp = TcpStream::connect(&self.addr)
                .await
                .map_err(|e| Failure::Connect(format!("cannot connect to {}: {e}", self.addr)))?;
            let _ = tcp.set_nodelay(true);
            self.connection = Some(BufReader::new(tcp));
        }
        let Some(connection) = self.connection.as_mut() else {
            return Err(Failure::Connect("no connection".into()));
        };
        connection
            .get_mut()
            .write_all(request)
            .await
            .map_err(|e| Failure::BeforeAnswer(format!("cannot send the request: {e}")))?;
        let answer = read_answer(connection).await?;
        if !answer.keep_alive {
            self.connection = None;
        }
        Ok(answer)
    }

    /// A 2xx answer is success; anything else an error with its status and
    /// body.
    fn judge(&self, answer: Answer) -> Result<(), String> {
        if (200..300).contains(&answer.status) {
            return Ok(());
        }
        let body = String::from_utf8_lossy(&answer.body);
        let body = body.trim();
        let body: String = body.chars().take(300).collect();
        Err(format!(
            "POST {}: HTTP {} {}",
            self.path,
            answer.status,
            if body.is_empty() { "(no body)" } else { &body }
        ))
    }

    /// The message for a failed attempt; the connection is dropped.
    fn failed(&mut self, failure: Failure) -> String {
        self.connection = None;
        let (Failure::Connect(message) | Failure::BeforeAnswer(message) | Failure::Answer(message)) =
            failure;
        format!("POST {} to {}: {message}", self.path, self.addr)
    }
}

/// An HTTP answer, read whole.
struct Answer {
    status: u16,
    body: Vec<u8>,
    /// Whether the connection may carry the next request.
    keep_alive: bool,
}

/// How an attempt failed.
enum Failure {
    /// No connection could be made.
    Connect(String),
    /// The request could not be sent, or the connection ended before any
    /// byte of an answer.
    BeforeAnswer(String),
    /// The answer was cut short or not HTTP.
    Answer(String),
}

/// Reads one HTTP/1.1 answer: the status line, the headers, and a body of
/// `Content-Length` bytes, chunked, or (neither given) up to the end.
async fn read_answer(connection: &mut BufReader<TcpStream>) -> Result<Answer, Failure> {
    let status_line = match read_line(connection).await {
        Ok(Some(line)) => line,
        Ok(None) => {
            return Err(Failure::BeforeAnswer(
                "the server closed the connection without answering".into(),
            ));
        }
        Err(e) => {
            return Err(Failure::BeforeAnswer(format!(
                "cannot read the answer: {e}"
            )));
        }
    };
    let answer = |e: String| Failure::Answer(e);
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status: u16 = parts
        .next()
        .and_then(|code| code.parse().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or_else(|| answer(format!("not an HTTP/1.x status line: {status_line:?}")))?;
    let mut length = None;
    let mut chunked = false;
    let mut keep_alive = version == "HTTP/1.1";
    loop {
        let line = read_line(connection)
            .await
            .map_err(|e| answer(format!("cannot read the headers: {e}")))?
            .ok_or_else(|| answer("the connection ended inside the headers".into()))?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(answer(format!("not a header line: {line:?}")));
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "content-length" => {
                let n: usize = value
                    .parse()
                    .map_err(|_| answer(format!("bad Content-Length {value:?}")))?;
                length = Some(n);
            }
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "connection" => {
                let value = value.to_ascii_lowercase();
                if value.contains("close") {
                    keep_alive = false;
                } else if value.contains("keep-alive") {
                    keep_alive = true;
                }
            }
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let line = read_line(connection)
                .await
                .map_err(|e| answer(format!("cannot read a chunk: {e}")))?
                .ok_or_else(|| answer("the connection ended inside the body".into()))?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| answer(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while let Some(line) = read_line(connection)
                    .await
                    .map_err(|e| answer(format!("cannot read the trailers: {e}")))?
                {
                    if line.is_empty() {
                        break;
                    }
                }
                break;
            }
            if body.len() + size > MAX_BODY {
                return Err(answer(format!("the body is over {MAX_BODY} bytes")));
            }
            let at = body.len();
            body.resize(at + size + 2, 0);
            connection
                .read_exact(&mut body[at..])
                .await
                .map_err(|e| answer(format!("cannot read a chunk: {e}")))?;
            body.truncate(at + size);
        }
    } else if let Some(length) = length {
        if length > MAX_BODY {
            return Err(answer(format!("the body is over {MAX_BODY} bytes")));
        }
        body.resize(length, 0);
        connection
            .read_exact(&mut body)
            .await
            .map_err(|e| answer(format!("cannot read the body: {e}")))?;
    } else if !(status == 204 || status == 304 || (100..200).contains(&status)) {
        keep_alive = false;
        (&mut *connection)
            .take(MAX_BODY as u64)
            .read_to_end(&mut body)
            .await
            .map_err(|e| answer(format!("cannot read the body: {e}")))?;
    }
    Ok(Answer {
        status,
        body,
        keep_alive,
    })
}

/// One line without its CRLF; `None` at the end of the stream.
async fn read_line(connection: &mut BufReader<TcpStream>) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    let n = (&mut *connection)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a line longer than {MAX_LINE} bytes, or cut short"),
        ));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

/// `hex(HMAC-SHA256(secret, text))`.
fn sign(secret: &[u8], text: &str) -> String {
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(text.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// Lowercase hexadecimal.
fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(2 * bytes.len());
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// RFC 3986's unreserved characters.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~')
}

/// A query value, every byte but the unreserved ones as `%XX`.
fn percent_encode(value: &str) -> String {
    let mut text = String::with_capacity(value.len());
    for &byte in value.as_bytes() {
        if is_unreserved(byte) {
            text.push(byte as char);
        } else {
            let _ = write!(text, "%{byte:02X}");
        }
    }
    text
}

/// Whether `host` (`name`, `name:port`, `[v6]` or `[v6]:port`) names a port.
pub fn has_port(host: &str) -> bool {
    match host.rsplit_once(':') {
        Some((before, port)) => {
            (!before.contains(':') || before.ends_with(']'))
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of Pusher's REST API documentation ("Worked
    /// authentication example").
    #[test]
    fn signs_as_pusher_documents() {
        let text = "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f";
        assert_eq!(
            sign(b"7ad3773142a6692b25b8", text),
            "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
        assert_eq!(
            hex(&Md5::digest(
                br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#
            )),
            "ec365a775a4cd0599faeb73354201b6f"
        );
    }

    #[test]
    fn ports() {
        assert!(has_port("127.0.0.1:6001"));
        assert!(has_port("[::1]:6001"));
        assert!(!has_port("[::1]"));
        assert!(!has_port("localhost"));
    }
}
