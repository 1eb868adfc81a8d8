//! TLS for `wss://` with rustls: client configurations with the system's roots
//! and the webpki roots, and server configurations from PEM files.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::{Arc, OnceLock};

pub use rustls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::error::{Error, Result};

/// The crypto provider duplex builds its configurations with: ring.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The roots a client trusts by default: the operating system's store plus the
/// webpki (Mozilla) roots, loaded once per process.
pub fn default_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let native = rustls_native_certs::load_native_certs();
            let (added, ignored) = roots.add_parsable_certificates(native.certs);
            tracing::debug!(added, ignored, "loaded system root certificates");
            Arc::new(roots)
        })
        .clone()
}

/// How a client sets up TLS; built by the client builder.
#[derive(Debug, Default)]
pub(crate) struct TlsOptions {
    pub(crate) extra_roots: Vec<CertificateDer<'static>>,
    pub(crate) client_auth: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    pub(crate) config: Option<Arc<ClientConfig>>,
    pub(crate) insecure: bool,
}

impl Clone for TlsOptions {
    fn clone(&self) -> Self {
        TlsOptions {
            extra_roots: self.extra_roots.clone(),
            client_auth: self
                .client_auth
                .as_ref()
                .map(|(chain, key)| (chain.clone(), key.clone_key())),
            config: self.config.clone(),
            insecure: self.insecure,
        }
    }
}

impl TlsOptions {
    /// The configuration to connect with; with `http2`, offering `h2` before
    /// `http/1.1` in ALPN.
    pub(crate) fn client_config(&self, http2: bool) -> Result<Arc<ClientConfig>> {
        let config = self.http1_config()?;
        if !http2 {
            return Ok(config);
        }
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    fn http1_config(&self) -> Result<Arc<ClientConfig>> {
        if let Some(config) = &self.config {
            return Ok(config.clone());
        }
        let plain = self.extra_roots.is_empty() && self.client_auth.is_none() && !self.insecure;
        if plain {
            static DEFAULT: OnceLock<Arc<ClientConfig>> = OnceLock::new();
            if let Some(config) = DEFAULT.get() {
                return Ok(config.clone());
            }
            let config = self.build()?;
            return Ok(DEFAULT.get_or_init(|| config).clone());
        }
        self.build()
    }

    fn build(&self) -> Result<Arc<ClientConfig>> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?;
        let builder = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
        } else {
            let mut roots = (*default_roots()).clone();
            for root in &self.extra_roots {
                roots.add(root.clone()).map_err(tls_error)?;
            }
            builder.with_root_certificates(roots)
        };
        let mut config = match &self.client_auth {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(tls_error)?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn tls_error(err: rustls::Error) -> Error {
    Error::Tls {
        server_name: None,
        source: Box::new(err),
    }
}

/// Reads every certificate in a PEM file (a chain: leaf first).
///
/// # Errors
///
/// [`Error::Config`] if the file cannot be read or holds no certificate.
pub fn load_certs(path: impl AsRef<Path>) -> Result<Vec<CertificateDer<'static>>> {
    let path = path.as_ref();
    let file = File::open(path)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("{}: bad PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
///
/// # Errors
///
/// [`Error::Config`] if the file cannot be read or holds no key.
pub fn load_private_key(path: impl AsRef<Path>) -> Result<PrivateKeyDer<'static>> {
    let path = path.as_ref();
    let file = File::open(path)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(|e| Error::Config(format!("{}: bad PEM: {e}", path.display())))?
        .ok_or_else(|| Error::Config(format!("{} holds no PEM private key", path.display())))
}

/// A server configuration for this certificate chain and key, speaking
/// HTTP/1.1 (the WebSocket upgrade).
///
/// # Errors
///
/// [`Error::Tls`] if the key does not match the certificate or is unsupported.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(tls_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// [`server_config`] from PEM files.
///
/// # Errors
///
/// As [`load_certs`], [`load_private_key`] and [`server_config`].
pub fn server_config_from_pem(
    cert_path: impl AsRef<Path>,
    key_path: impl AsRef<Path>,
) -> Result<Arc<ServerConfig>> {
    server_config(load_certs(cert_path)?, load_private_key(key_path)?)
}

/// Accepts any server certificate, while still checking that the handshake is
/// signed by the certificate's key. For `--insecure` testing against
/// self-signed servers only: it gives up the protection TLS exists for.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
