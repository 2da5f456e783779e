//! What a notification looks like on a socket and on the Redis channel.
//!
//! On a socket it is the text message `{"type":"notify","data":BODY}`. On the
//! channel the same bytes follow a header line that names the instance that
//! published it and the user it is for:
//!
//! ```text
//! {"origin":"8c0f3a5e9d41b7e2","user":"alice"}
//! {"type":"notify","data":"hello"}
//! ```
//!
//! The header is one line because compact JSON never holds a raw newline (one
//! inside a string is escaped). A receiver reads the header, and the rest of
//! the payload is the socket message as is: it is neither parsed nor written
//! again, so messages from Redis look exactly like local ones.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Room reserved besides the body and the user id when encoding.
const ENVELOPE_ROOM: usize = 64;

/// A notification, encoded once for the local sockets and for Redis.
pub(in crate::backend) struct Notification {
    /// The header line (when there is one) followed by the socket message.
    payload: Bytes,
    /// Where the socket message starts in `payload`.
    message_start: usize,
}

#[derive(Serialize)]
struct SocketMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    data: &'a str,
}

#[derive(Serialize, Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    origin: Cow<'a, str>,
    #[serde(borrow)]
    user: Cow<'a, str>,
}

impl Notification {
    /// The notification of `data` for `user`. With `origin` (the publishing
    /// instance), the header line for Redis comes first.
    pub(in crate::backend) fn new(origin: Option<&str>, user: &str, data: &str) -> Notification {
        let mut payload = Vec::with_capacity(data.len() + user.len() + ENVELOPE_ROOM);
        if let Some(origin) = origin {
            let header = Header {
                origin: Cow::Borrowed(origin),
                user: Cow::Borrowed(user),
            };
            // Writing strings into a Vec cannot fail.
            serde_json::to_writer(&mut payload, &header).expect("a header serializes");
            payload.push(b'\n');
        }
        let message_start = payload.len();
        let message = SocketMessage {
            kind: "notify",
            data,
        };
        serde_json::to_writer(&mut payload, &message).expect("a notification serializes");
        Notification {
            payload: Bytes::from(payload),
            message_start,
        }
    }

    /// The text message for the sockets (shares the payload's memory).
    pub(in crate::backend) fn message(&self) -> Bytes {
        self.payload.slice(self.message_start..)
    }

    /// What is published: the header line and the message.
    pub(in crate::backend) fn payload(&self) -> &[u8] {
        &self.payload
    }
}

/// A notification read from the channel, borrowing the payload.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::backend) struct Received<'a> {
    pub(in crate::backend) origin: Cow<'a, str>,
    pub(in crate::backend) user: Cow<'a, str>,
    /// The socket message, valid UTF-8.
    pub(in crate::backend) message: &'a [u8],
}

/// A payload on the channel that is not a notification.
#[derive(Debug)]
pub(in crate::backend) enum MalformedMessage {
    NoHeaderLine,
    Header(serde_json::Error),
    NotText(std::str::Utf8Error),
}

impl fmt::Display for MalformedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MalformedMessage::NoHeaderLine => write!(f, "it has no header line"),
            MalformedMessage::Header(e) => write!(f, "its header is not valid: {e}"),
            MalformedMessage::NotText(e) => write!(f, "its message is not UTF-8 text: {e}"),
        }
    }
}

impl std::error::Error for MalformedMessage {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MalformedMessage::NoHeaderLine => None,
            MalformedMessage::Header(e) => Some(e),
            MalformedMessage::NotText(e) => Some(e),
        }
    }
}

/// Split a payload from the channel into its header and socket message.
pub(in crate::backend) fn decode(payload: &[u8]) -> Result<Received<'_>, MalformedMessage> {
    let newline = payload
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(MalformedMessage::NoHeaderLine)?;
    let header: Header<'_> =
        serde_json::from_slice(&payload[..newline]).map_err(MalformedMessage::Header)?;
    let message = &payload[newline + 1..];
    std::str::from_utf8(message).map_err(MalformedMessage::NotText)?;
    Ok(Received {
        origin: header.origin,
        user: header.user,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_message_is_the_same_with_or_without_a_header() {
        let local = Notification::new(None, "alice", "hi \"there\"\n");
        let published = Notification::new(Some("0123"), "alice", "hi \"there\"\n");
        assert_eq!(local.message(), published.message());
        assert_eq!(local.payload(), &local.message()[..]);
        let message: serde_json::Value = serde_json::from_slice(&local.message()).unwrap();
        assert_eq!(
            message,
            serde_json::json!({ "type": "notify", "data": "hi \"there\"\n" })
        );
        assert!(local.message().starts_with(br#"{"type":"notify","#));
    }

    #[test]
    fn a_published_payload_decodes_to_its_parts() {
        let user = "a\nb \"c\" é";
        let published = Notification::new(Some("0123"), user, "line 1\nline 2");
        let received = decode(published.payload()).unwrap();
        assert_eq!(received.origin, "0123");
        assert_eq!(received.user, user);
        assert_eq!(received.message, &published.message()[..]);
    }

    #[test]
    fn malformed_payloads_are_refused() {
        assert!(matches!(
            decode(b"no header"),
            Err(MalformedMessage::NoHeaderLine)
        ));
        assert!(matches!(
            decode(b"{\"origin\":1}\n{}"),
            Err(MalformedMessage::Header(_))
        ));
        assert!(matches!(
            decode(b"{\"origin\":\"o\",\"user\":\"u\"}\n\xff"),
            Err(MalformedMessage::NotText(_))
        ));
    }
}
