//! ALB's mutual TLS on HTTPS listeners, with certificates made by rcgen: `verify` lets
//! only clients whose certificate chains to the trust store through (valid, expired,
//! untrusted and missing certificates tried) and tells the target about the leaf in
//! `X-Amzn-Mtls-Clientcert-*`; `passthrough` forwards the chain as it came in
//! `X-Amzn-Mtls-Clientcert`. The connection log names each outcome.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use albatross::ProxyHandle;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A CA for client certificates, written as `<stem>.pem` (the trust store).
struct ClientCa {
    issuer: Issuer<'static, KeyPair>,
    pem_path: PathBuf,
}

impl ClientCa {
    fn new(dir: &Path, name: &str) -> ClientCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem_path = dir.join(format!("{}.pem", name.replace(' ', "-")));
        std::fs::write(&pem_path, cert.pem()).unwrap();
        ClientCa {
            issuer: Issuer::new(params, key),
            pem_path,
        }
    }

    /// A client certificate: `CN=<cn>,O=Company LLC,C=US`, serial 2, valid over
    /// `years` (from, to).
    fn client(&self, cn: &str, years: (i32, i32)) -> ClientCert {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        // In DER order (C first), as a CA would issue it; RFC 2253 writes it backwards.
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CountryName, "US");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Company LLC");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serial_number = Some(rcgen::SerialNumber::from(2u64));
        params.not_before = rcgen::date_time_ymd(years.0, 1, 2);
        params.not_after = rcgen::date_time_ymd(years.1, 4, 2);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        ClientCert {
            der: cert.der().clone(),
            pem: cert.pem(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }
}

struct ClientCert {
    der: CertificateDer<'static>,
    pem: String,
    key: PrivateKeyDer<'static>,
}

/// The listeners: 0 verify, 1 verify ignoring expiry, 2 passthrough, 3 off.
fn config(pki: &Pki, trust_store: &Path, connection_log: &Path) -> String {
    let (cert, key, _) = pki.leaf("server", &["localhost"]);
    let listener = |mutual: &str| {
        format!(
            r#"
[[listener]]
address = "127.0.0.1"
port = 0
protocol = "HTTPS"
certificates = [ {{ cert = "{cert}", key = "{key}" }} ]
{mutual}
default_action = {{ type = "forward", target_group = "app" }}
"#,
            cert = cert.display(),
            key = key.display(),
        )
    };
    let store = trust_store.display();
    format!(
        "[connection_log]\npath = \"{log}\"\n{}{}{}{}\n[[target_group]]\nname = \"app\"\ntargets = [ \"{{TARGET}}\" ]\n",
        listener(&format!(
            "mutual_authentication = {{ mode = \"verify\", trust_store = \"{store}\" }}"
        )),
        listener(&format!(
            "mutual_authentication = {{ mode = \"verify\", trust_store = \"{store}\", ignore_client_certificate_expiry = true }}"
        )),
        listener("mutual_authentication = { mode = \"passthrough\" }"),
        listener(""),
        log = connection_log.display(),
    )
}

struct Setup {
    pki: Pki,
    proxy: ProxyHandle,
    ca: ClientCa,
    other_ca: ClientCa,
    connection_log: PathBuf,
}

async fn setup() -> Setup {
    let pki = Pki::new();
    let ca = ClientCa::new(pki.dir.path(), "client test CA");
    let other_ca = ClientCa::new(pki.dir.path(), "someone else");
    let connection_log = pki.dir.path().join("connection.log");
    let target = echo_head_target().await;
    let text = config(&pki, &ca.pem_path, &connection_log).replace("{TARGET}", &target.to_string());
    let proxy = start_proxy(&pki, &text).await;
    Setup {
        pki,
        proxy,
        ca,
        other_ca,
        connection_log,
    }
}

/// How a request over a connection with `cert` went: the target's view of the request
/// head (lower-cased), or the error.
async fn request(
    s: &Setup,
    listener: usize,
    cert: Option<&ClientCert>,
    extra: &str,
) -> Result<String, String> {
    let addr: SocketAddr = s.proxy.listener_addr(listener);
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots_of(&s.pki));
    let config = match cert {
        Some(c) => builder
            .with_client_auth_cert(vec![c.der.clone()], c.key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = match within(
        "the handshake",
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    {
        Ok(t) => t,
        Err(e) => return Err(e.to_string()),
    };
    // TLS 1.3: the server judges the client's certificate after the client finished;
    // a refusal arrives as an alert on the first read.
    let req = format!("GET /who HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n");
    if let Err(e) = tls.write_all(req.as_bytes()).await {
        return Err(e.to_string());
    }
    let mut out = Vec::new();
    match within("the response", tls.read_to_end(&mut out)).await {
        Ok(_) if !out.is_empty() => Ok(String::from_utf8_lossy(&out).to_lowercase()),
        Ok(_) => Err("closed without an answer".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The test CA as a root store (the server's certificate is from it).
fn roots_of(pki: &Pki) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der().clone()).unwrap();
    roots
}

/// `name: value` of a header in a lower-cased head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::trim_end)
}

/// ALB's URL encoding of PEM text: `+`, `=` and `/` kept.
fn url_encoded(pem: &str) -> String {
    let mut out = String::new();
    for b in pem.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~+=/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The connection log's lines once `n` are written.
async fn connection_lines(s: &Setup, n: usize) -> Vec<String> {
    for _ in 0..100 {
        s.proxy.flush_logs();
        let text = std::fs::read_to_string(&s.connection_log).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("fewer than {n} connection-log lines");
}

#[tokio::test]
async fn verify_forwards_the_leaf_and_refuses_what_does_not_chain() {
    let s = setup().await;
    let valid = s.ca.client("client-one", (2020, 2099));

    // A client that sends its own mTLS header does not get it through.
    let head = request(
        &s,
        0,
        Some(&valid),
        "X-Amzn-Mtls-Clientcert-Subject: CN=evil\r\nX-Amzn-Mtls-Clientcert: forged\r\n",
    )
    .await
    .expect("a valid certificate is let through");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(
        header(&head, "x-amzn-mtls-clientcert-serial-number"),
        Some("02")
    );
    assert_eq!(
        header(&head, "x-amzn-mtls-clientcert-issuer"),
        Some("cn=client test ca")
    );
    assert_eq!(
        header(&head, "x-amzn-mtls-clientcert-subject"),
        Some("cn=client-one,o=company llc,c=us")
    );
    assert_eq!(
        header(&head, "x-amzn-mtls-clientcert-validity"),
        Some("notbefore=2020-01-02t00:00:00z;notafter=2099-04-02t00:00:00z")
    );
    assert_eq!(
        header(&head, "x-amzn-mtls-clientcert-leaf"),
        Some(url_encoded(&valid.pem).to_lowercase().as_str())
    );
    assert_eq!(header(&head, "x-amzn-mtls-clientcert"), None, "{head}");
    assert_eq!(head.matches("cn=evil").count(), 0, "{head}");

    // Expired, from another CA, and none at all: refused at the handshake.
    let expired = s.ca.client("client-old", (2010, 2011));
    let stranger = s.other_ca.client("client-stranger", (2020, 2099));
    for (cert, what) in [
        (Some(&expired), "an expired certificate"),
        (Some(&stranger), "a certificate from another CA"),
        (None, "no certificate"),
    ] {
        let r = request(&s, 0, cert, "").await;
        assert!(r.is_err(), "{what} was let through: {r:?}");
    }

    let lines = connection_lines(&s, 4).await;
    let status = |l: &String| l.split(' ').rev().nth(1).unwrap_or("").to_string();
    assert_eq!(
        lines.iter().map(status).collect::<Vec<_>>(),
        [
            "Success",
            "Failed:ClientCertExpired",
            "Failed:ClientCertUntrusted",
            "Failed:ClientCertMissing"
        ],
        "{lines:#?}"
    );
    // The successful line names the leaf as ALB's connection log does.
    assert!(
        lines[0].contains(
            " \"CN=client-one,O=Company LLC,C=US\" NotBefore=2020-01-02T00:00:00Z;NotAfter=2099-04-02T00:00:00Z 02 Success "
        ),
        "{}",
        lines[0]
    );
    // A refused handshake's line names the certificate that was refused, as ALB's does.
    assert!(
        lines[1].contains(
            " \"CN=client-old,O=Company LLC,C=US\" NotBefore=2010-01-02T00:00:00Z;NotAfter=2011-04-02T00:00:00Z 02 Failed:ClientCertExpired "
        ),
        "{}",
        lines[1]
    );
    assert!(
        lines[3].contains(" \"-\" - - Failed:ClientCertMissing "),
        "{}",
        lines[3]
    );
    // A refused handshake leaves others alone.
    let again = request(&s, 0, Some(&valid), "").await;
    assert!(again.is_ok(), "{again:?}");
}

#[tokio::test]
async fn ignoring_expiry_lets_an_expired_certificate_from_the_trust_store_through() {
    let s = setup().await;
    let expired = s.ca.client("client-old", (2010, 2011));
    let head = request(&s, 1, Some(&expired), "")
        .await
        .expect("expiry is ignored");
    assert_eq!(
        header(&head, "x-amzn-mtls-clientcert-validity"),
        Some("notbefore=2010-01-02t00:00:00z;notafter=2011-04-02t00:00:00z")
    );
    // Still only certificates of the trust store.
    let stranger = s.other_ca.client("client-stranger", (2010, 2011));
    assert!(request(&s, 1, Some(&stranger), "").await.is_err());
}

#[tokio::test]
async fn passthrough_forwards_any_chain_unverified() {
    let s = setup().await;
    // From a CA the listener knows nothing of, and expired: passthrough does not judge.
    let stranger = s.other_ca.client("client-stranger", (2010, 2011));
    let head = request(&s, 2, Some(&stranger), "X-Amzn-Mtls-Clientcert: forged\r\n")
        .await
        .expect("passthrough lets any certificate through");
    assert_eq!(
        header(&head, "x-amzn-mtls-clientcert"),
        Some(url_encoded(&stranger.pem).to_lowercase().as_str())
    );
    assert_eq!(header(&head, "x-amzn-mtls-clientcert-subject"), None);

    // No certificate: served, with no mTLS header (and the client's own removed).
    let head = request(&s, 2, None, "X-Amzn-Mtls-Clientcert: forged\r\n")
        .await
        .expect("a certificate is optional in passthrough");
    assert!(!head.contains("x-amzn-mtls"), "{head}");

    // A listener without mutual TLS passes a client's headers on as ALB does.
    let head = request(&s, 3, None, "X-Amzn-Mtls-Clientcert: as-sent\r\n")
        .await
        .unwrap();
    assert_eq!(header(&head, "x-amzn-mtls-clientcert"), Some("as-sent"));
}

#[test]
fn mutual_authentication_settings_are_checked() {
    let pki = Pki::new();
    let (cert, key, _) = pki.leaf("server", &["localhost"]);
    std::fs::write(pki.dir.path().join("empty.pem"), "").unwrap();
    let ca = ClientCa::new(pki.dir.path(), "client test CA");
    let with = |protocol: &str, mutual: &str| {
        let certs = if protocol == "HTTPS" {
            format!(
                "certificates = [ {{ cert = \"{}\", key = \"{}\" }} ]\n",
                cert.display(),
                key.display()
            )
        } else {
            String::new()
        };
        format!(
            "[[listener]]\nport = 0\nprotocol = \"{protocol}\"\n{certs}mutual_authentication = {mutual}\ndefault_action = {{ type = \"fixed_response\", status_code = 200 }}\n"
        )
    };
    let origin = albatross::config::Origin {
        name: "mtls.toml".into(),
        base_dir: pki.dir.path().to_path_buf(),
    };
    let error = |text: &str| match albatross::config::from_str(text, &origin) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    };
    let ok = |text: &str| {
        albatross::config::from_str(text, &origin)
            .unwrap_or_else(|e| panic!("refused: {e}\n{text}"))
    };
    let store = ca
        .pem_path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    for (text, expected) in [
        (
            with("HTTPS", "{ mode = \"verify\" }"),
            "mode = \"verify\" needs `trust_store`",
        ),
        (
            with(
                "HTTPS",
                &format!("{{ mode = \"passthrough\", trust_store = \"{store}\" }}"),
            ),
            "`trust_store` is used only with mode = \"verify\"",
        ),
        (
            with("HTTPS", "{ mode = \"sometimes\" }"),
            "`mode` must be one of",
        ),
        (
            with(
                "HTTPS",
                "{ mode = \"verify\", trust_store = \"empty.pem\" }",
            ),
            "cannot use the trust store",
        ),
        (
            with(
                "HTTPS",
                "{ mode = \"verify\", trust_store = \"missing.pem\" }",
            ),
            "cannot read trust store file",
        ),
        (
            with("HTTP", "{ mode = \"passthrough\" }"),
            "`mutual_authentication` applies only to HTTPS listeners",
        ),
    ] {
        let e = error(&text);
        assert!(e.contains(expected), "want {expected:?} in:\n{e}");
        assert!(e.contains("mtls.toml:"), "located: {e}");
    }
    let c = ok(&with(
        "HTTPS",
        &format!("{{ mode = \"verify\", trust_store = \"{store}\", ignore_client_certificate_expiry = true }}"),
    ));
    let m = &c.listeners[0].tls.as_ref().unwrap().mutual_authentication;
    assert_eq!(m.mode, albatross::tls::MtlsMode::Verify);
    assert!(m.ignore_client_certificate_expiry);
}
