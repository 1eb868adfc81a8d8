//! Outgoing HTTP requests of the hub: an identity provider's JWKS, the
//! backend hooks' POSTs.
//!
//! One pooled client (hyper-util's, with rustls from duplex: ring, the
//! system's roots and the webpki roots), a deadline on every request, and a
//! bound on every response body.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A pooled HTTP/1.1 client for `http://` and `https://` URLs.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").finish_non_exhaustive()
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    /// A client that trusts the system's and the webpki roots.
    pub fn new() -> Self {
        let tls = rustls::ClientConfig::builder_with_provider(duplex::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(duplex::tls::default_roots())
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        HttpClient {
            client: Client::builder(TokioExecutor::new()).build(https),
        }
    }

    /// GETs `url` and returns the body of a 200 answer, of at most
    /// `max_body` bytes, all within `timeout`.
    ///
    /// # Errors
    ///
    /// What went wrong, in words: a bad URL, the connection, the deadline, a
    /// status other than 200, a body over the bound.
    pub async fn get(
        &self,
        url: &str,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Bytes, String> {
        let request = http::Request::get(parse(url)?)
            .body(Full::default())
            .map_err(|err| format!("invalid request: {err}"))?;
        self.send(request, timeout, max_body).await
    }

    /// POSTs `body` as `application/json` to `url` and returns the body of a
    /// 200 answer, of at most `max_body` bytes, all within `timeout`.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub async fn post_json(
        &self,
        url: &str,
        body: Bytes,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Bytes, String> {
        let request = http::Request::post(parse(url)?)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|err| format!("invalid request: {err}"))?;
        self.send(request, timeout, max_body).await
    }

    /// Sends `request` and reads a 200 answer's body, within `timeout`.
    async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Bytes, String> {
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|err| format!("request failed: {}", crate::error_chain(&err)))?;
            let status = response.status();
            if status != http::StatusCode::OK {
                return Err(format!("answered {status}"));
            }
            let body = Limited::new(response.into_body(), max_body)
                .collect()
                .await
                .map_err(|err| format!("reading the body failed: {err}"))?;
            Ok(body.to_bytes())
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        }
    }
}

/// `url` as a URI, or why it is not one.
fn parse(url: &str) -> Result<http::Uri, String> {
    url.parse().map_err(|err| format!("invalid URL: {err}"))
}
