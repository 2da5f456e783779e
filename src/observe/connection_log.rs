//! One ALB connection-log entry: a client connection attempt on an HTTPS listener, in
//! ALB's fields and order.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use super::log_file::Line;

#[derive(Debug, Clone)]
pub struct ConnectionRecord {
    /// When the handshake ended (or failed).
    pub time: SystemTime,
    pub client: SocketAddr,
    pub listener_port: u16,
    pub tls_protocol: Option<&'static str>,
    pub tls_cipher: Option<&'static str>,
    /// `None` when the handshake failed (`-1`).
    pub tls_handshake_latency: Option<Duration>,
    /// The client certificate's leaf (mutual TLS): subject (RFC 2253), validity
    /// (`NotBefore=…;NotAfter=…`) and serial number (hex); `None`: `"-" - -`.
    pub client_certificate: Option<std::sync::Arc<crate::tls::ClientCertificate>>,
    /// `Success`, or `Failed:<reason>`.
    pub tls_verify_status: String,
    pub conn_trace_id: super::ConnTraceId,
}

impl Line for ConnectionRecord {
    fn write_line(&self, out: &mut Vec<u8>) {
        let r = self;
        let _ = write!(
            out,
            "{} {} {} {} {} {} ",
            humantime::format_rfc3339_micros(r.time),
            r.client.ip(),
            r.client.port(),
            r.listener_port,
            r.tls_protocol.unwrap_or("-"),
            r.tls_cipher.unwrap_or("-"),
        );
        match r.tls_handshake_latency {
            Some(d) => {
                let _ = write!(out, "{:.3}", d.as_secs_f64());
            }
            None => out.extend_from_slice(b"-1"),
        }
        match &r.client_certificate {
            Some(c) => {
                out.extend_from_slice(b" \"");
                for ch in c.subject.chars() {
                    // The subject is quoted: its quotes and backslashes are escaped.
                    if ch == '"' || ch == '\\' {
                        out.push(b'\\');
                    }
                    let _ = write!(out, "{ch}");
                }
                let _ = write!(out, "\" {} {}", c.validity, c.serial_number);
            }
            None => out.extend_from_slice(b" \"-\" - -"),
        }
        let _ = write!(out, " {} {}", r.tls_verify_status, r.conn_trace_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_line_has_albs_fields() {
        let mut line = Vec::new();
        ConnectionRecord {
            time: std::time::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456),
            client: "192.0.2.1:40000".parse().unwrap(),
            listener_port: 443,
            tls_protocol: Some("TLSv1.3"),
            tls_cipher: Some("TLS_AES_128_GCM_SHA256"),
            tls_handshake_latency: Some(Duration::from_micros(1_500)),
            client_certificate: None,
            tls_verify_status: "Success".into(),
            conn_trace_id: crate::observe::ConnTraceId::from_bytes([0xab; 16]),
        }
        .write_line(&mut line);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "2023-11-14T22:13:20.123456Z 192.0.2.1 40000 443 TLSv1.3 TLS_AES_128_GCM_SHA256 0.002 \"-\" - - Success TID_abababababababababababababababab"
        );
        let mut line = Vec::new();
        ConnectionRecord {
            time: std::time::UNIX_EPOCH,
            client: "192.0.2.1:40000".parse().unwrap(),
            listener_port: 443,
            tls_protocol: Some("TLSv1.3"),
            tls_cipher: Some("TLS_AES_128_GCM_SHA256"),
            tls_handshake_latency: Some(Duration::from_millis(2)),
            client_certificate: Some(std::sync::Arc::new(crate::tls::ClientCertificate {
                serial_number: "02".into(),
                issuer: "CN=ca".into(),
                subject: "CN=client \\\"one\\\",O=Company LLC,C=US".into(),
                validity: "NotBefore=2024-01-02T19:17:20Z;NotAfter=2024-04-02T19:17:20Z".into(),
                leaf: String::new(),
                chain: String::new(),
            })),
            tls_verify_status: "Success".into(),
            conn_trace_id: crate::observe::ConnTraceId::from_bytes([0xab; 16]),
        }
        .write_line(&mut line);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "1970-01-01T00:00:00.000000Z 192.0.2.1 40000 443 TLSv1.3 TLS_AES_128_GCM_SHA256 0.002 \"CN=client \\\\\\\"one\\\\\\\",O=Company LLC,C=US\" NotBefore=2024-01-02T19:17:20Z;NotAfter=2024-04-02T19:17:20Z 02 Success TID_abababababababababababababababab"
        );
    }
}
