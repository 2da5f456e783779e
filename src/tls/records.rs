//! TLS record protection for a wss tunnel, taken over from rustls once the handshake and
//! the upgrade are done.
//!
//! rustls keeps a 4 KiB receive buffer and its whole connection state for as long as a
//! connection lives, 7.8 KiB of the 9.2 KiB an idle wss tunnel cost. A tunnel needs
//! none of the handshake's state: only each direction's AEAD key, IV and sequence
//! number, which rustls hands over ([`rustls::ServerConnection::dangerous_extract_secrets`]).
//! [`RecordStream`] then seals and opens the records itself (TLS 1.3, and TLS 1.2 with
//! AES-GCM or ChaCha20-Poly1305, the suites of every policy albatross offers), holding
//! its read and write buffers only while bytes are in flight. These are the same secrets
//! kernel TLS (`TCP_ULP` `tls`) would be given.
//!
//! What a tunnel's client may send after the handshake is application data and alerts:
//! `close_notify` is the end of the stream, any other alert ends the tunnel. A TLS 1.3
//! post-handshake message (a `KeyUpdate`) cannot be followed without the traffic secret
//! rustls keeps to itself, and ends the tunnel as an error; rustls's own stream is used
//! instead whenever the connection is in a state the hand-over does not cover.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use bytes::{Bytes, BytesMut};
use rustls::{CipherSuite, ConnectionTrafficSecrets, ProtocolVersion};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

const HEADER_LEN: usize = 5;
const TAG_LEN: usize = 16;
/// TLS 1.2 AES-GCM's per-record explicit nonce.
const EXPLICIT_NONCE_LEN: usize = 8;
/// The most plaintext one record carries.
const MAX_PLAINTEXT: usize = 16 * 1024;
/// The most a record's payload may exceed its plaintext (TLS 1.2's bound, which covers
/// TLS 1.3's 256).
const MAX_EXPANSION: usize = 2048;
/// Bytes read from the socket at most at once: several full records.
const READ_BUF: usize = 64 * 1024;
/// Records sealed per write at most (each up to [`MAX_PLAINTEXT`]).
const RECORDS_PER_WRITE: usize = 4;
/// The most one sealed record takes on the wire.
const MAX_SEALED: usize = HEADER_LEN + EXPLICIT_NONCE_LEN + MAX_PLAINTEXT + 1 + TAG_LEN;

const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
const CONTENT_APPLICATION_DATA: u8 = 23;
/// `close_notify`'s description; its level is warning (1).
const ALERT_CLOSE_NOTIFY: u8 = 0;

/// The suites whose records [`RecordStream`] protects.
const SUITES: [CipherSuite; 9] = [
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Tls12,
    Tls13,
}

/// One direction's protection: its key, IV and next sequence number.
struct Keys {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl Keys {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> io::Result<Keys> {
        let (algorithm, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            #[allow(unreachable_patterns)]
            _ => return Err(unsupported("the suite's secrets have an unknown shape")),
        };
        let key = UnboundKey::new(algorithm, key.as_ref())
            .map_err(|_| unsupported("the AEAD key was refused"))?;
        let iv: [u8; 12] = iv
            .as_ref()
            .try_into()
            .map_err(|_| unsupported("the IV is not 12 bytes"))?;
        Ok(Keys {
            key: LessSafeKey::new(key),
            iv,
            seq,
        })
    }

    /// The nonce of the next record: the IV with the sequence number XORed into its last
    /// eight bytes (TLS 1.3, TLS 1.2 ChaCha20; TLS 1.2 AES-GCM sends its last eight).
    fn nonce(&self) -> [u8; 12] {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        nonce
    }

    fn advance(&mut self) -> io::Result<()> {
        self.seq = self
            .seq
            .checked_add(1)
            .ok_or_else(|| unsupported("the record sequence number ran out"))?;
        Ok(())
    }
}

fn unsupported(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, what)
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// TLS 1.2's additional data: sequence number, type, version and plaintext length.
fn tls12_aad(seq: u64, typ: u8, len: usize) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8] = typ;
    aad[9..11].copy_from_slice(&[3, 3]);
    aad[11..].copy_from_slice(&(len as u16).to_be_bytes());
    aad
}

/// Whether `stream` can be handed over: handshake done, nothing left to send, a suite
/// [`RecordStream`] protects.
pub fn can_take_over(stream: &TlsStream<TcpStream>) -> bool {
    let conn = stream.get_ref().1;
    !conn.is_handshaking()
        && !conn.wants_write()
        && matches!(
            conn.protocol_version(),
            Some(ProtocolVersion::TLSv1_2 | ProtocolVersion::TLSv1_3)
        )
        && conn
            .negotiated_cipher_suite()
            .is_some_and(|s| SUITES.contains(&s.suite()))
}

/// A TLS stream left to rustls.
pub type Kept = Box<TlsStream<TcpStream>>;

/// A TLS connection whose records albatross protects itself (see the module docs).
pub struct RecordStream {
    tcp: TcpStream,
    version: Version,
    /// TLS 1.2 AES-GCM: each record carries the last eight bytes of its nonce.
    explicit_nonce: bool,
    rx: Keys,
    tx: Keys,
    /// Bytes read from the socket (empty, without capacity, while idle).
    rbuf: Vec<u8>,
    /// Where the bytes not yet taken from `rbuf` start.
    rpos: usize,
    /// Plaintext opened in place in `rbuf`, not yet read.
    plain: (usize, usize),
    /// The client sent `close_notify`.
    read_closed: bool,
    /// An error met after plaintext was given out, for the next read.
    failed: Option<io::Error>,
    /// Sealed records not yet written (empty, without capacity, once written out).
    wbuf: Vec<u8>,
    wpos: usize,
    close_sent: bool,
}

impl RecordStream {
    /// Takes `stream` over, with `prefix` (bytes already read from it past the request
    /// head) completed by what rustls had opened and not yet handed out. `Err` gives the
    /// stream back when it cannot be taken over (see [`can_take_over`]).
    pub fn take_over(
        mut stream: Box<TlsStream<TcpStream>>,
        prefix: Bytes,
    ) -> Result<(RecordStream, Bytes), (Kept, Bytes)> {
        if !can_take_over(&stream) {
            return Err((stream, prefix));
        }
        let conn = stream.get_mut().1;
        let version = match conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => Version::Tls13,
            _ => Version::Tls12,
        };
        // Plaintext rustls opened but nobody read yet goes after the prefix.
        let mut opened = BytesMut::new();
        let mut read_closed = false;
        loop {
            let mut chunk = [0u8; 4096];
            match io::Read::read(&mut conn.reader(), &mut chunk) {
                Ok(0) => {
                    read_closed = true;
                    break;
                }
                Ok(n) => opened.extend_from_slice(&chunk[..n]),
                Err(_) => break,
            }
        }
        let prefix = if opened.is_empty() {
            prefix
        } else {
            let mut joined = BytesMut::from(&prefix[..]);
            joined.extend_from_slice(&opened);
            joined.freeze()
        };
        let (tcp, conn) = (*stream).into_inner();
        let secrets = match conn.dangerous_extract_secrets() {
            Ok(secrets) => secrets,
            Err(e) => {
                // `can_take_over` rules out every failure rustls documents; the
                // connection is gone, so the tunnel ends.
                tracing::warn!("rustls did not hand over the TLS secrets: {e}.");
                return Ok((RecordStream::broken(tcp, version), Bytes::new()));
            }
        };
        // TLS 1.2's AES-GCM records carry part of their nonce; ChaCha20's do not.
        let explicit_nonce = version == Version::Tls12
            && !matches!(
                secrets.tx.1,
                ConnectionTrafficSecrets::Chacha20Poly1305 { .. }
            );
        let keys = Keys::new(secrets.rx).and_then(|rx| Ok((rx, Keys::new(secrets.tx)?)));
        let Ok((rx, tx)) = keys else {
            return Ok((RecordStream::broken(tcp, version), Bytes::new()));
        };
        Ok((
            RecordStream {
                tcp,
                version,
                explicit_nonce,
                rx,
                tx,
                rbuf: Vec::new(),
                rpos: 0,
                plain: (0, 0),
                read_closed,
                failed: None,
                wbuf: Vec::new(),
                wpos: 0,
                close_sent: false,
            },
            prefix,
        ))
    }

    /// A stream that fails every read and write (its keys could not be made).
    fn broken(tcp: TcpStream, version: Version) -> RecordStream {
        let dead = || Keys {
            key: LessSafeKey::new(
                UnboundKey::new(&aead::AES_128_GCM, &[0; 16]).expect("a 16-byte AES key"),
            ),
            iv: [0; 12],
            seq: u64::MAX,
        };
        RecordStream {
            tcp,
            version,
            explicit_nonce: false,
            rx: dead(),
            tx: dead(),
            rbuf: Vec::new(),
            rpos: 0,
            plain: (0, 0),
            read_closed: false,
            failed: None,
            wbuf: Vec::new(),
            wpos: 0,
            close_sent: true,
        }
    }

    /// The TCP stream under the records.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Opens the record of payload length `len` whose header starts at `at` in `rbuf`,
    /// in place: its content type and its plaintext's range in `rbuf`.
    fn open(&mut self, at: usize, len: usize) -> io::Result<(u8, (usize, usize))> {
        let payload_at = at + HEADER_LEN;
        let typ = self.rbuf[at];
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&self.rbuf[at..payload_at]);
        let failed = || invalid("a TLS record from the client failed to decrypt");
        let (typ, range) = match self.version {
            Version::Tls13 => {
                if typ != CONTENT_APPLICATION_DATA {
                    return Err(invalid("the client sent an unprotected TLS 1.3 record"));
                }
                let nonce = Nonce::assume_unique_for_key(self.rx.nonce());
                let payload = &mut self.rbuf[payload_at..payload_at + len];
                let plain = self
                    .rx
                    .key
                    .open_in_place(nonce, Aad::from(header), payload)
                    .map_err(|_| failed())?;
                // The inner plaintext: content, its type, then zeros.
                let Some(end) = plain.iter().rposition(|&b| b != 0) else {
                    return Err(invalid(
                        "a TLS 1.3 record from the client had no content type",
                    ));
                };
                (plain[end], (payload_at, payload_at + end))
            }
            Version::Tls12 => {
                let explicit = if self.explicit_nonce {
                    EXPLICIT_NONCE_LEN
                } else {
                    0
                };
                if len < explicit + TAG_LEN {
                    return Err(failed());
                }
                let plain_len = len - explicit - TAG_LEN;
                let mut nonce = self.rx.nonce();
                if self.explicit_nonce {
                    nonce[4..].copy_from_slice(&self.rbuf[payload_at..payload_at + explicit]);
                }
                let aad = tls12_aad(self.rx.seq, typ, plain_len);
                let sealed = &mut self.rbuf[payload_at + explicit..payload_at + len];
                self.rx
                    .key
                    .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), sealed)
                    .map_err(|_| failed())?;
                (
                    typ,
                    (payload_at + explicit, payload_at + explicit + plain_len),
                )
            }
        };
        self.rx.advance()?;
        if range.1 - range.0 > MAX_PLAINTEXT {
            return Err(invalid("the client sent an oversized TLS record"));
        }
        Ok((typ, range))
    }

    /// Opens the next record if it has arrived whole: `Ok(false)` when it has not.
    /// Application data becomes `plain`; `close_notify` sets `read_closed`.
    fn open_next(&mut self) -> io::Result<bool> {
        let waiting = &self.rbuf[self.rpos..];
        if waiting.len() < HEADER_LEN {
            return Ok(false);
        }
        let len = u16::from_be_bytes([waiting[3], waiting[4]]) as usize;
        if len > MAX_PLAINTEXT + MAX_EXPANSION {
            return Err(invalid("the client sent an oversized TLS record"));
        }
        if waiting.len() < HEADER_LEN + len {
            return Ok(false);
        }
        let at = self.rpos;
        self.rpos += HEADER_LEN + len;
        let (typ, range) = self.open(at, len)?;
        match typ {
            CONTENT_APPLICATION_DATA => self.plain = range,
            CONTENT_ALERT => {
                let alert = &self.rbuf[range.0..range.1];
                if alert.len() == 2 && alert[1] == ALERT_CLOSE_NOTIFY {
                    self.read_closed = true;
                } else {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the client sent a TLS alert",
                    ));
                }
            }
            CONTENT_HANDSHAKE => {
                return Err(unsupported(
                    "the client sent a TLS handshake message (a key update or renegotiation) in a tunnel",
                ))
            }
            _ => {
                return Err(invalid(
                    "the client sent a TLS record of an unexpected type",
                ))
            }
        }
        Ok(true)
    }

    /// Seals `plain` as one record of content type `typ` at the end of `wbuf`.
    fn seal(&mut self, typ: u8, plain: &[u8]) -> io::Result<()> {
        let at = self.wbuf.len();
        let nonce = self.tx.nonce();
        match self.version {
            Version::Tls13 => {
                let len = plain.len() + 1 + TAG_LEN;
                let header = record_header(CONTENT_APPLICATION_DATA, len);
                self.wbuf.extend_from_slice(&header);
                self.wbuf.extend_from_slice(plain);
                self.wbuf.push(typ);
                let tag = self
                    .tx
                    .key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(header),
                        &mut self.wbuf[at + HEADER_LEN..],
                    )
                    .map_err(|_| invalid("a TLS record could not be sealed"))?;
                self.wbuf.extend_from_slice(tag.as_ref());
            }
            Version::Tls12 => {
                let explicit = if self.explicit_nonce {
                    EXPLICIT_NONCE_LEN
                } else {
                    0
                };
                let len = explicit + plain.len() + TAG_LEN;
                self.wbuf.extend_from_slice(&record_header(typ, len));
                if self.explicit_nonce {
                    self.wbuf.extend_from_slice(&nonce[4..]);
                }
                self.wbuf.extend_from_slice(plain);
                let aad = tls12_aad(self.tx.seq, typ, plain.len());
                let tag = self
                    .tx
                    .key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad),
                        &mut self.wbuf[at + HEADER_LEN + explicit..],
                    )
                    .map_err(|_| invalid("a TLS record could not be sealed"))?;
                self.wbuf.extend_from_slice(tag.as_ref());
            }
        }
        self.tx.advance()
    }

    /// Writes out the sealed records waiting in `wbuf`; `Ready(Ok)` once none wait.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wbuf.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.wbuf[self.wpos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wpos += n;
        }
        self.wbuf.clear();
        self.wpos = 0;
        Poll::Ready(Ok(()))
    }
}

fn record_header(typ: u8, len: usize) -> [u8; HEADER_LEN] {
    let len = (len as u16).to_be_bytes();
    [typ, 3, 3, len[0], len[1]]
}

impl AsyncRead for RecordStream {
    /// Fills `out` with the plaintext of as many whole records as have arrived (one
    /// socket read brings several), reading the socket only when none waits.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Err(e));
        }
        let mut given = false;
        loop {
            // 1. Plaintext already opened.
            let (from, to) = this.plain;
            if from < to {
                let n = (to - from).min(out.remaining());
                out.put_slice(&this.rbuf[from..from + n]);
                this.plain.0 += n;
                given = true;
                if out.remaining() == 0 {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            if this.read_closed {
                if !given {
                    // Nothing more is read after close_notify.
                    this.rbuf = Vec::new();
                    this.rpos = 0;
                    this.plain = (0, 0);
                }
                return Poll::Ready(Ok(()));
            }
            // 2. A whole record waiting: open it.
            match this.open_next() {
                Ok(true) => continue,
                Ok(false) => {}
                // What was given goes out first; the error comes with the next read.
                Err(e) if given => {
                    this.failed = Some(e);
                    return Poll::Ready(Ok(()));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
            if given {
                return Poll::Ready(Ok(()));
            }
            // 3. More bytes are needed: move what waits to the front, then read.
            if this.rpos > 0 {
                this.rbuf.copy_within(this.rpos.., 0);
                this.rbuf.truncate(this.rbuf.len() - this.rpos);
                this.rpos = 0;
                this.plain = (0, 0);
            }
            if this.rbuf.capacity() == 0 {
                this.rbuf.reserve_exact(READ_BUF);
            }
            let filled = this.rbuf.len();
            let mut read = ReadBuf::uninit(this.rbuf.spare_capacity_mut());
            match Pin::new(&mut this.tcp).poll_read(cx, &mut read) {
                Poll::Pending => {
                    if this.rbuf.is_empty() {
                        // Idle: hold no buffer.
                        this.rbuf = Vec::new();
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    if n == 0 {
                        // As rustls reports a TCP close without close_notify.
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the client closed the connection without a TLS close_notify",
                        )));
                    }
                    // SAFETY: `poll_read` initialised the `n` bytes it filled, right
                    // after the `filled` bytes already in the vector.
                    unsafe { this.rbuf.set_len(filled + n) };
                }
            }
        }
    }
}

impl AsyncWrite for RecordStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        if this.close_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let take = buf.len().min(RECORDS_PER_WRITE * MAX_PLAINTEXT);
        if this.wbuf.capacity() == 0 {
            this.wbuf.reserve_exact(RECORDS_PER_WRITE * MAX_SEALED);
        }
        for chunk in buf[..take].chunks(MAX_PLAINTEXT) {
            this.seal(CONTENT_APPLICATION_DATA, chunk)?;
        }
        // The records are taken; they go out now or at the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_write_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(take))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        // Flushed when the copy has nothing more to send for now: idle, so hold no buffer.
        this.wbuf = Vec::new();
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            ready!(this.poll_write_out(cx))?;
            this.seal(CONTENT_ALERT, &[1, ALERT_CLOSE_NOTIFY])?;
            this.close_sent = true;
        }
        ready!(this.poll_write_out(cx))?;
        this.wbuf = Vec::new();
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use rustls::crypto::aws_lc_rs::cipher_suite as suite;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::SupportedCipherSuite;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::{client, TlsAcceptor, TlsConnector};

    use super::*;

    /// A connected client and the proxy's server end, the client offering only `suite`.
    async fn pair(
        suite: SupportedCipherSuite,
    ) -> (client::TlsStream<TcpStream>, TlsStream<TcpStream>) {
        let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = issued.cert.der().clone();
        let key =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.signing_key.serialize_der()));
        let mut server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        server.enable_secret_extraction = true;
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: vec![suite],
            ..rustls::crypto::aws_lc_rs::default_provider()
        };
        let version = match suite {
            SupportedCipherSuite::Tls13(_) => &rustls::version::TLS13,
            SupportedCipherSuite::Tls12(_) => &rustls::version::TLS12,
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client_tcp, server_tcp) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let name = ServerName::try_from("localhost").unwrap();
        let (client, server) = tokio::join!(
            TlsConnector::from(Arc::new(client)).connect(name, client_tcp.unwrap()),
            TlsAcceptor::from(Arc::new(server)).accept(server_tcp.unwrap().0),
        );
        (client.unwrap(), server.unwrap())
    }

    fn suites() -> [SupportedCipherSuite; 6] {
        [
            suite::TLS13_AES_128_GCM_SHA256,
            suite::TLS13_AES_256_GCM_SHA384,
            suite::TLS13_CHACHA20_POLY1305_SHA256,
            suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ]
    }

    fn pattern(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(seed) % 251) as u8)
            .collect()
    }

    /// Bytes both ways after the take-over, records of every size, and a clean close
    /// each way, on every suite of both versions; the rustls client is the judge of
    /// what albatross seals, and its records (sequence numbers already past the
    /// handshake's and an exchange's) are what albatross opens.
    #[tokio::test]
    async fn every_suite_carries_bytes_both_ways_and_closes_cleanly() {
        for suite in suites() {
            let name = format!("{:?}", suite.suite());
            let (mut client, mut server) = pair(suite).await;
            // Some records before the take-over, as the upgrade's request and 101 are.
            client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
            client.flush().await.unwrap();
            let mut head = [0u8; 18];
            server.read_exact(&mut head).await.unwrap();
            server.write_all(b"HTTP/1.1 101 \r\n\r\n").await.unwrap();
            server.flush().await.unwrap();
            let mut reply = [0u8; 17];
            client.read_exact(&mut reply).await.unwrap();

            assert!(can_take_over(&server), "{name}");
            let (mut records, prefix) =
                match RecordStream::take_over(Box::new(server), Bytes::new()) {
                    Ok(taken) => taken,
                    Err(_) => panic!("{name}: not taken over"),
                };
            assert!(prefix.is_empty(), "{name}");

            let up = pattern(100_000, 7);
            let down = pattern(150_001, 13);
            let (sent, got) = tokio::join!(
                async {
                    client.write_all(&up).await.unwrap();
                    client.flush().await.unwrap();
                    let mut got = vec![0u8; down.len()];
                    client.read_exact(&mut got).await.unwrap();
                    got
                },
                async {
                    let mut got = vec![0u8; up.len()];
                    records.read_exact(&mut got).await.unwrap();
                    records.write_all(&down).await.unwrap();
                    records.flush().await.unwrap();
                    got
                }
            );
            assert!(got == up, "{name}: client → proxy altered");
            assert!(sent == down, "{name}: proxy → client altered");
            // Nothing in flight: a read that waits gives its buffer back, as a flush does.
            let waited =
                tokio::time::timeout(Duration::from_millis(20), records.read(&mut [0u8; 16])).await;
            assert!(waited.is_err(), "{name}: nothing was sent");
            assert_eq!(
                (records.rbuf.capacity(), records.wbuf.capacity()),
                (0, 0),
                "{name}"
            );

            // The client's close_notify is the end of the stream; the proxy's reaches
            // the client as a clean end (no UnexpectedEof).
            client.shutdown().await.unwrap();
            let mut rest = Vec::new();
            records.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty(), "{name}");
            records.shutdown().await.unwrap();
            let mut rest = Vec::new();
            client
                .read_to_end(&mut rest)
                .await
                .unwrap_or_else(|e| panic!("{name}: the client saw {e}"));
            assert!(rest.is_empty(), "{name}");
            // Idle and closed: no buffer held.
            assert_eq!(
                (records.rbuf.capacity(), records.wbuf.capacity()),
                (0, 0),
                "{name}"
            );
        }
    }

    /// Plaintext rustls had opened but nobody had read comes back after the prefix.
    #[tokio::test]
    async fn plaintext_rustls_held_follows_the_prefix() {
        let (mut client, mut server) = pair(suite::TLS13_AES_128_GCM_SHA256).await;
        client.write_all(b"0123456789").await.unwrap();
        client.flush().await.unwrap();
        let mut one = [0u8; 4];
        server.read_exact(&mut one).await.unwrap();
        let Ok((_, prefix)) =
            RecordStream::take_over(Box::new(server), Bytes::from_static(b"head|"))
        else {
            panic!("not taken over");
        };
        assert_eq!(&prefix[..], b"head|456789");
    }

    /// A record changed on the way fails to open; a TLS 1.3 key update ends the stream
    /// with an error instead of being misread.
    #[tokio::test]
    async fn tampering_and_key_updates_are_errors() {
        let (client, server) = pair(suite::TLS13_AES_128_GCM_SHA256).await;
        let Ok((mut records, _)) = RecordStream::take_over(Box::new(server), Bytes::new()) else {
            panic!("not taken over");
        };
        let (mut raw, _) = client.into_inner();
        // A well-framed record of garbage.
        raw.write_all(&[23, 3, 3, 0, 20]).await.unwrap();
        raw.write_all(&[0x55; 20]).await.unwrap();
        let err = records.read(&mut [0u8; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");

        let (mut client, server) = pair(suite::TLS13_AES_128_GCM_SHA256).await;
        let Ok((mut records, _)) = RecordStream::take_over(Box::new(server), Bytes::new()) else {
            panic!("not taken over");
        };
        client.get_mut().1.refresh_traffic_keys().unwrap();
        client.write_all(b"after the update").await.unwrap();
        client.flush().await.unwrap();
        let err = records.read(&mut [0u8; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Unsupported, "{err}");
    }

    /// A TCP close without close_notify is reported as rustls reports it.
    #[tokio::test]
    async fn a_tcp_close_without_close_notify_is_an_unexpected_eof() {
        let (client, server) = pair(suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256).await;
        let Ok((mut records, _)) = RecordStream::take_over(Box::new(server), Bytes::new()) else {
            panic!("not taken over");
        };
        drop(client);
        let err = records.read(&mut [0u8; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
