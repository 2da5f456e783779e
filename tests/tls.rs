//! HTTPS listener TLS: SNI certificate choice, policies, ALPN, resumption, handshake timeout,
//! PEM loading errors and the generated localhost certificate. Real sockets on 127.0.0.1:0,
//! certificates made here with rcgen, clients that trust only the test CA.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use albatross::certs;
use albatross::listener;
use albatross::tls::{self, TlsError};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, HandshakeKind, RootCertStore,
    SignatureScheme, SupportedProtocolVersion,
};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

const TIMEOUT: Duration = Duration::from_secs(5);
const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A test CA and a directory for the PEM files of the leaves it signs.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    dir: TempDir,
}

/// A leaf written to disk: its PEM files and its DER.
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "albatross test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self {
            ca,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Sign a leaf for `names`, written as `<file>.pem` (leaf + CA) and `<file>-key.pem`.
    fn leaf(&self, file: &str, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, file);
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let cert_path = self.dir.path().join(format!("{file}.pem"));
        let key_path = self.dir.path().join(format!("{file}-key.pem"));
        std::fs::write(&cert_path, cert.pem() + &self.ca.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Leaf {
            cert: cert_path,
            key: key_path,
            der: cert.der().clone(),
        }
    }

    fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        Arc::new(roots)
    }
}

/// The listener of most tests: `default.test` (also 127.0.0.1) first, then `a.test`, `*.b.test`.
struct Site {
    pki: Pki,
    default: Leaf,
    a: Leaf,
    b: Leaf,
}

impl Site {
    fn new() -> Self {
        let pki = Pki::new();
        let default = pki.leaf("default", &["default.test", "127.0.0.1"]);
        let a = pki.leaf("a", &["a.test"]);
        let b = pki.leaf("b", &["*.b.test"]);
        Self { pki, default, a, b }
    }

    fn config(&self, policy: &str) -> Arc<rustls::ServerConfig> {
        let keys = [&self.default, &self.a, &self.b]
            .iter()
            .map(|l| tls::load_certified_key(&l.cert, &l.key).unwrap())
            .collect();
        tls::server_config(keys, policy).unwrap()
    }
}

/// What the server saw of a completed handshake.
#[derive(Debug)]
struct Seen {
    sni: Option<String>,
    version: Option<&'static str>,
    suite: Option<&'static str>,
    alpn: Option<Vec<u8>>,
}

/// Serve TLS on 127.0.0.1:0; each connection's handshake outcome is sent on the channel.
/// A successful connection gets `ok` and is held until the client closes it.
async fn serve(
    config: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
) -> (SocketAddr, mpsc::UnboundedReceiver<Result<Seen, TlsError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tls::acceptor(config);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let mut stream = match listener::handshake(&acceptor, tcp, handshake_timeout).await
                {
                    Ok(stream) => stream,
                    Err(e) => return drop(tx.send(Err(e))),
                };
                let conn = stream.get_ref().1;
                let (version, suite) = tls::openssl_names(conn);
                let seen = Seen {
                    sni: conn.server_name().map(str::to_owned),
                    version,
                    suite,
                    alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                };
                let _ = tx.send(Ok(seen));
                let _ = stream.write_all(b"ok").await;
                let _ = stream.flush().await;
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
            });
        }
    });
    (addr, rx)
}

/// A client trusting `roots` only, offering `versions` and ALPN `http/1.1`.
fn client(
    roots: Arc<RootCertStore>,
    versions: &[&'static SupportedProtocolVersion],
) -> ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// Like [`client`], but accepting a certificate for another name (still from the CA), to see
/// which certificate the server presents for a name none of them holds.
fn client_ignoring_names(roots: Arc<RootCertStore>) -> ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let inner = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .unwrap();
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(BOTH)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(IgnoreName(inner)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

#[derive(Debug)]
struct IgnoreName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for IgnoreName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Connect, complete the handshake and read the server's `ok`.
async fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    name: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = tokio::time::timeout(TIMEOUT, TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("handshake hung")?;
    let mut ok = [0; 2];
    tls.read_exact(&mut ok).await?;
    assert_eq!(&ok, b"ok");
    Ok(tls)
}

async fn seen(rx: &mut mpsc::UnboundedReceiver<Result<Seen, TlsError>>) -> Result<Seen, TlsError> {
    tokio::time::timeout(TIMEOUT, rx.recv())
        .await
        .expect("server reported nothing")
        .unwrap()
}

fn presented(tls: &tokio_rustls::client::TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

#[tokio::test]
async fn sni_a_test_gets_its_own_leaf_and_http11() {
    let site = Site::new();
    let (addr, mut rx) = serve(site.config(tls::DEFAULT_SSL_POLICY), TIMEOUT).await;
    let tls = connect(addr, Arc::new(client(site.pki.roots(), BOTH)), "a.test")
        .await
        .unwrap();
    assert_eq!(presented(&tls), site.a.der);
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));

    let seen = seen(&mut rx).await.unwrap();
    assert_eq!(seen.sni.as_deref(), Some("a.test"));
    assert_eq!(seen.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(seen.version, Some("TLSv1.3"));
    assert_eq!(seen.suite, Some("TLS_AES_128_GCM_SHA256"));
}

#[tokio::test]
async fn sni_under_a_wildcard_gets_the_wildcard_leaf() {
    let site = Site::new();
    let (addr, _rx) = serve(site.config(tls::DEFAULT_SSL_POLICY), TIMEOUT).await;
    let config = Arc::new(client(site.pki.roots(), BOTH));
    let tls = connect(addr, config.clone(), "x.b.test").await.unwrap();
    assert_eq!(presented(&tls), site.b.der);
    let tls = connect(addr, config, "X.B.Test").await.unwrap();
    assert_eq!(presented(&tls), site.b.der);
}

#[tokio::test]
async fn unknown_sni_gets_the_default_leaf() {
    let site = Site::new();
    let (addr, mut rx) = serve(site.config(tls::DEFAULT_SSL_POLICY), TIMEOUT).await;
    let config = Arc::new(client_ignoring_names(site.pki.roots()));
    let tls = connect(addr, config.clone(), "unknown.test").await.unwrap();
    assert_eq!(presented(&tls), site.default.der);
    assert_eq!(
        seen(&mut rx).await.unwrap().sni.as_deref(),
        Some("unknown.test")
    );
    // One label too many for `*.b.test`.
    let tls = connect(addr, config, "y.x.b.test").await.unwrap();
    assert_eq!(presented(&tls), site.default.der);
}

#[tokio::test]
async fn no_sni_gets_the_default_leaf() {
    let site = Site::new();
    let (addr, mut rx) = serve(site.config(tls::DEFAULT_SSL_POLICY), TIMEOUT).await;
    // Clients send no SNI when connecting to an IP address.
    let tls = connect(addr, Arc::new(client(site.pki.roots(), BOTH)), "127.0.0.1")
        .await
        .unwrap();
    assert_eq!(presented(&tls), site.default.der);
    assert_eq!(seen(&mut rx).await.unwrap().sni, None);
}

#[tokio::test]
async fn tls13_only_policy_rejects_a_tls12_client() {
    let site = Site::new();
    let (addr, mut rx) = serve(site.config("ELBSecurityPolicy-TLS13-1-3-2021-06"), TIMEOUT).await;
    let err = connect(addr, Arc::new(client(site.pki.roots(), TLS12)), "a.test").await;
    assert!(err.is_err());
    let err = seen(&mut rx).await.unwrap_err();
    assert!(matches!(err, TlsError::Handshake(_)), "{err}");

    let tls = connect(addr, Arc::new(client(site.pki.roots(), TLS13)), "a.test")
        .await
        .unwrap();
    assert_eq!(presented(&tls), site.a.der);
}

#[tokio::test]
async fn tls13_1_2_policy_accepts_tls12_and_tls13_clients() {
    let site = Site::new();
    let (addr, mut rx) = serve(site.config("ELBSecurityPolicy-TLS13-1-2-2021-06"), TIMEOUT).await;

    let tls = connect(addr, Arc::new(client(site.pki.roots(), TLS12)), "a.test")
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let seen12 = seen(&mut rx).await.unwrap();
    assert_eq!(seen12.version, Some("TLSv1.2"));
    assert_eq!(seen12.suite, Some("ECDHE-ECDSA-AES128-GCM-SHA256"));

    let tls = connect(addr, Arc::new(client(site.pki.roots(), TLS13)), "a.test")
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(seen(&mut rx).await.unwrap().version, Some("TLSv1.3"));
}

#[tokio::test]
async fn tls12_policy_rejects_a_tls13_only_client() {
    let site = Site::new();
    let (addr, mut rx) = serve(site.config("ELBSecurityPolicy-2016-08"), TIMEOUT).await;
    assert!(
        connect(addr, Arc::new(client(site.pki.roots(), TLS13)), "a.test")
            .await
            .is_err()
    );
    assert!(matches!(seen(&mut rx).await, Err(TlsError::Handshake(_))));
    connect(addr, Arc::new(client(site.pki.roots(), BOTH)), "a.test")
        .await
        .unwrap();
    assert_eq!(seen(&mut rx).await.unwrap().version, Some("TLSv1.2"));
}

#[tokio::test]
async fn sessions_resume() {
    let site = Site::new();
    let (addr, _rx) = serve(site.config(tls::DEFAULT_SSL_POLICY), TIMEOUT).await;
    for versions in [TLS13, TLS12] {
        let config = Arc::new(client(site.pki.roots(), versions));
        let first = connect(addr, config.clone(), "a.test").await.unwrap();
        assert_eq!(
            first.get_ref().1.handshake_kind(),
            Some(HandshakeKind::Full)
        );
        let second = connect(addr, config, "a.test").await.unwrap();
        assert_eq!(
            second.get_ref().1.handshake_kind(),
            Some(HandshakeKind::Resumed),
            "{versions:?}"
        );
    }
}

#[tokio::test]
async fn handshake_times_out_for_a_silent_client() {
    let site = Site::new();
    let timeout = Duration::from_millis(200);
    let (addr, mut rx) = serve(site.config(tls::DEFAULT_SSL_POLICY), timeout).await;
    let start = Instant::now();
    let _silent = TcpStream::connect(addr).await.unwrap();
    let err = seen(&mut rx).await.unwrap_err();
    assert!(matches!(err, TlsError::HandshakeTimeout), "{err}");
    assert!(start.elapsed() >= timeout);
}

#[test]
fn mismatched_key_is_rejected() {
    let site = Site::new();
    let err = tls::load_certified_key(&site.a.cert, &site.b.key).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("does not match"), "{text}");
    assert!(text.contains(&site.a.cert.display().to_string()), "{text}");
    assert!(text.contains(&site.b.key.display().to_string()), "{text}");
}

#[test]
fn missing_file_error_names_the_path() {
    let site = Site::new();
    let missing = site.pki.dir.path().join("missing.pem");
    for err in [
        tls::load_certified_key(&missing, &site.a.key).unwrap_err(),
        tls::load_certified_key(&site.a.cert, &missing).unwrap_err(),
    ] {
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
    }
}

#[test]
fn pem_without_a_key_or_certificate_is_rejected() {
    let site = Site::new();
    // The certificate file holds no key.
    let err = tls::load_certified_key(&site.a.cert, &site.a.cert).unwrap_err();
    assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err}");
    assert!(
        err.to_string().contains(&site.a.cert.display().to_string()),
        "{err}"
    );
    // The key file holds no certificate.
    let err = tls::load_certified_key(&site.a.key, &site.a.key).unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    // Not PEM at all.
    let junk = write(site.pki.dir.path(), "junk.pem", "hello\n");
    let err = tls::load_certified_key(&site.a.cert, &junk).unwrap_err();
    assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err}");
    // A broken PEM block.
    let broken = write(
        site.pki.dir.path(),
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\nMIIB\n",
    );
    let err = tls::load_certified_key(&broken, &site.a.key).unwrap_err();
    assert!(matches!(err, TlsError::Pem { .. }), "{err}");
}

#[test]
fn certificate_and_key_in_one_file_load() {
    let site = Site::new();
    let both = std::fs::read_to_string(&site.a.cert).unwrap()
        + &std::fs::read_to_string(&site.a.key).unwrap();
    let path = write(site.pki.dir.path(), "both.pem", &both);
    let key = tls::load_certified_key(&path, &path).unwrap();
    assert_eq!(key.cert.len(), 2, "leaf and CA");
    assert_eq!(key.cert[0], site.a.der);
}

#[tokio::test]
async fn localhost_cert_is_generated_once_and_serves_localhost() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    let (cert, key) = certs::ensure_localhost_cert(&certs_dir).unwrap();
    assert_eq!(cert, certs_dir.join("localhost.pem"));
    assert_eq!(key, certs_dir.join("localhost-key.pem"));
    let (cert_bytes, key_bytes) = (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());

    let again = certs::ensure_localhost_cert(&certs_dir).unwrap();
    assert_eq!(again, (cert.clone(), key.clone()));
    assert_eq!(std::fs::read(&cert).unwrap(), cert_bytes);
    assert_eq!(std::fs::read(&key).unwrap(), key_bytes);

    let loaded = tls::load_certified_key(&cert, &key).unwrap();
    let config = tls::server_config(vec![loaded.clone()], tls::DEFAULT_SSL_POLICY).unwrap();
    let (addr, _rx) = serve(config, TIMEOUT).await;
    let mut roots = RootCertStore::empty();
    roots.add(loaded.cert[0].clone()).unwrap();
    let config = Arc::new(client(Arc::new(roots), BOTH));
    for name in ["localhost", "127.0.0.1"] {
        let tls = connect(addr, config.clone(), name).await.unwrap();
        assert_eq!(presented(&tls), loaded.cert[0]);
    }
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}
