//! [`TestCert`]: a self-signed certificate, also as PEM files for the peers.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use duplex::tls::rustls::ServerConfig;
use duplex::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A self-signed certificate for `localhost` and `127.0.0.1`, also written as
/// PEM files in a temporary directory (removed when this is dropped).
pub struct TestCert {
    dir: PathBuf,
    /// The certificate, DER: what our client trusts with `tls_root`.
    pub cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl TestCert {
    /// Generates a new key and certificate and writes `cert.pem` and `key.pem`.
    pub fn generate() -> TestCert {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let certified = rcgen::generate_simple_self_signed(names).expect("rcgen");
        let dir = std::env::temp_dir().join(format!(
            "duplex-interop-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the certificate directory");
        std::fs::write(dir.join("cert.pem"), certified.cert.pem()).expect("write cert.pem");
        std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem())
            .expect("write key.pem");
        TestCert {
            dir,
            cert_der: certified.cert.der().clone(),
            key_der: certified.signing_key.serialize_der(),
        }
    }

    /// The certificate's PEM file (also the CA file the peers' clients trust).
    pub fn cert_path(&self) -> String {
        self.dir.join("cert.pem").display().to_string()
    }

    /// The private key's PEM file.
    pub fn key_path(&self) -> String {
        self.dir.join("key.pem").display().to_string()
    }

    /// A rustls server configuration with this certificate, for our server.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        duplex::tls::server_config(vec![self.cert_der.clone()], key).expect("server config")
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl std::fmt::Debug for TestCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCert").field("dir", &self.dir).finish()
    }
}
