//! TLS settings as rustls configurations: the certificate the listeners present (`ssl_cert`, `ssl_key`) and
//! what the RPC clients trust (`rpc_enable_tls` or an https:// HTTP RPC URL, `rpc_tls_root_ca`, `rpc_tls_verify`).
//!
//! Runs once at startup and turns unreadable or invalid PEM into configuration errors naming the option. It
//! never touches a socket, and no error it makes quotes the contents of a file (a key file is a secret).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::config::{Config, ConfigError};

/// The one crypto provider, chosen here rather than by whatever rustls features the build happens to enable.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::ring::default_provider())
}

fn invalid(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Inconsistent { name, reason: reason.into() }
}

fn read_file(name: &'static str, path: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| invalid(name, format!("cannot read {path:?}: {e}")))
}

/// Every certificate in a PEM text; an error when there is none or one does not decode.
fn certificates(name: &'static str, origin: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(name, format!("{origin} is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(name, format!("{origin} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")));
    }
    Ok(certs)
}

/// The listeners' TLS configuration, `None` when `ssl_cert`/`ssl_key` are unset. Offers HTTP/1.1 only, which
/// is what WebSocket upgrades, health checks, metrics and HTTP broadcasts use.
pub(crate) fn listener_config(config: &Config) -> Result<Option<Arc<ServerConfig>>, ConfigError> {
    let (Some(cert_path), Some(key_path)) = (&config.ssl_cert, &config.ssl_key) else { return Ok(None) };
    let chain = certificates("ssl_cert", &format!("{cert_path:?}"), &read_file("ssl_cert", cert_path)?)?;
    let key = PrivateKeyDer::from_pem_slice(&read_file("ssl_key", key_path)?).map_err(|e| {
        invalid("ssl_key", format!("{key_path:?} holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"))
    })?;
    let mut tls = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("ssl_cert", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InvalidCertificate(_) => {
                invalid("ssl_cert", format!("{cert_path:?} holds a certificate that cannot be used: {e}"))
            }
            e => invalid("ssl_key", format!("{key_path:?} does not fit the certificate in {cert_path:?}: {e}")),
        })?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(tls)))
}

/// The RPC client's TLS configuration, `None` when TLS is off (the HTTP RPC client widens its ALPN list). Trusts `rpc_tls_root_ca` when given, else the
/// system's CA certificates; with `rpc_tls_verify=false` it trusts any certificate (development only).
pub(crate) fn rpc_client_config(config: &Config) -> Result<Option<Arc<ClientConfig>>, ConfigError> {
    if !config.rpc_tls_enabled() {
        return Ok(None);
    }
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("rpc_enable_tls", e.to_string()))?;
    let mut tls = if config.rpc_tls_verify {
        let roots = match &config.rpc_tls_root_ca {
            Some(value) => root_ca(value)?,
            None => system_roots()?,
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyServerCert(provider))).with_no_client_auth()
    };
    // gRPC is HTTP/2; servers such as grpc-go refuse a TLS client that does not offer it.
    tls.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Some(Arc::new(tls)))
}

/// `rpc_tls_root_ca` is a file path or PEM contents, like in AnyCable.
fn root_ca(value: &str) -> Result<RootCertStore, ConfigError> {
    const NAME: &str = "rpc_tls_root_ca";
    let (pem, origin) = if value.contains("-----BEGIN") {
        (value.as_bytes().to_vec(), "the PEM contents given".to_owned())
    } else if Path::new(value).is_file() {
        (read_file(NAME, value)?, format!("{value:?}"))
    } else {
        return Err(invalid(NAME, format!("{value:?} is neither a readable file nor PEM contents")));
    };
    let mut roots = RootCertStore::empty();
    for cert in certificates(NAME, &origin, &pem)? {
        roots.add(cert).map_err(|e| invalid(NAME, format!("{origin} holds a certificate that cannot be used: {e}")))?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, ConfigError> {
    let reason = "no system CA certificates found: install them (ca-certificates) or set rpc_tls_root_ca";
    let certs =
        rustls_native_certs::load_native_certs().map_err(|e| invalid("rpc_enable_tls", format!("{reason} ({e})")))?;
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(certs);
    if roots.is_empty() {
        return Err(invalid("rpc_enable_tls", reason));
    }
    Ok(roots)
}

/// Accepts any server certificate while still checking the handshake signatures: `rpc_tls_verify=false`.
#[derive(Debug)]
struct AnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
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
        crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
