//! Certificates made for one test: a CA and a server certificate it signed for 127.0.0.1 and localhost, written
//! to a folder of the test's own (removed on drop), plus the rustls configurations of clients that trust that
//! CA or another one, an HTTPS request helper and a gRPC backend that serves TLS. No key file is checked in.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig, crypto};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::ChatApp;

/// A CA and one server certificate, as PEM text and as files.
pub struct Pki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    dir: PathBuf,
}

impl Pki {
    /// Makes the CA and the server certificate; `name` keeps the folder apart from other tests'.
    pub fn new(name: &str) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, format!("Ferrocable test CA {name}"));
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let dir = std::env::temp_dir().join(format!("ferrocable-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Self { ca_pem: ca.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem(), dir };
        std::fs::write(pki.ca_path(), &pki.ca_pem).unwrap();
        std::fs::write(pki.cert_path(), &pki.cert_pem).unwrap();
        std::fs::write(pki.key_path(), &pki.key_pem).unwrap();
        pki
    }

    pub fn ca_path(&self) -> String {
        self.file("ca.pem")
    }

    pub fn cert_path(&self) -> String {
        self.file("cert.pem")
    }

    pub fn key_path(&self) -> String {
        self.file("key.pem")
    }

    /// A path in this test's folder (for files a test writes itself).
    pub fn file(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    /// `ssl_cert` and `ssl_key` for the server options.
    pub fn listener_options(&self) -> [(&'static str, String); 2] {
        [("ssl_cert", self.cert_path()), ("ssl_key", self.key_path())]
    }

    /// A client trusting this CA only, offering `alpn`.
    pub fn client_config(&self, alpn: &[u8]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).unwrap()).unwrap();
        let mut config = ClientConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(config)
    }

    /// A server presenting this certificate, offering `alpn`.
    pub fn server_config(&self, alpn: &[u8]) -> Arc<ServerConfig> {
        let chain = vec![CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap();
        let mut config = ServerConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(config)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The request of [`super::http`] over TLS to 127.0.0.1, trusting what `tls` trusts; returns (status, body).
pub async fn https(
    addr: SocketAddr,
    tls: Arc<ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stream = TlsConnector::from(tls).connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await.unwrap();
    super::http_over(stream, addr, method, path, headers, body).await
}

/// Serves the app over gRPC with TLS (this certificate, ALPN h2) on a free loopback port. Handshakes that
/// fail (a client that does not trust the certificate) are skipped.
pub async fn start_grpc_backend_tls(app: ChatApp, pki: &Pki) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(pki.server_config(b"h2"));
    let incoming = futures_util::stream::unfold((listener, acceptor), |(listener, acceptor)| async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            if let Ok(tls) = acceptor.accept(tcp).await {
                return Some((Ok::<_, std::io::Error>(tls), (listener, acceptor)));
            }
        }
    });
    (addr, super::serve_grpc(app, incoming))
}
