//! Sticky-session cookies as ALB writes them (`AWSALB`/`AWSALBCORS`, `AWSALBAPP-0..3`,
//! `AWSALBTG`/`AWSALBTGCORS`), with values any albatross node holding the same key can
//! read: AES-256-GCM over the target (or group) and the end of the stickiness duration,
//! bound to the cookie kind and group name, base64 encoded.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::header::{HeaderMap, HeaderValue, COOKIE, SET_COOKIE, USER_AGENT};

/// Cookie `Expires` is always 7 days ahead, whatever the stickiness duration (as ALB).
pub const COOKIE_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

const TAG_LEN: usize = 16;
const VERSION: u8 = 1;
/// Largest sealed payload: version, expiry, and a group name of 32 bytes.
const MAX_PAYLOAD: usize = 1 + 8 + 1 + 32;
const MAX_SEALED: usize = NONCE_LEN + MAX_PAYLOAD + TAG_LEN;

/// Which of ALB's cookies a value belongs to (part of what is authenticated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieKind {
    /// `AWSALB` / `AWSALBCORS`: duration-based target stickiness.
    Lb,
    /// `AWSALBAPP-0`: application-based target stickiness.
    App,
    /// `AWSALBTG` / `AWSALBTGCORS`: target-group stickiness of a weighted forward.
    Group,
}

impl CookieKind {
    fn label(self) -> &'static [u8] {
        match self {
            CookieKind::Lb => b"AWSALB",
            CookieKind::App => b"AWSALBAPP",
            CookieKind::Group => b"AWSALBTG",
        }
    }
}

/// The key that seals and opens stickiness cookies.
pub struct StickyKey {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for StickyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StickyKey(..)")
    }
}

impl StickyKey {
    /// The key derived from `[load_balancer] stickiness_secret` (SHA-256 of the text),
    /// so that every node configured with the same secret reads the others' cookies.
    pub fn from_secret(secret: &str) -> StickyKey {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes());
        StickyKey::from_bytes(digest.as_ref())
    }

    /// A random key, for a node without a configured secret.
    pub fn random() -> StickyKey {
        let rng = SystemRandom::new();
        let mut bytes = [0u8; 32];
        if rng.fill(&mut bytes).is_err() {
            // The system RNG failing is not something to serve without; fall back to
            // the thread RNG rather than a fixed key.
            bytes = rand::random();
        }
        StickyKey::from_bytes(&bytes)
    }

    fn from_bytes(bytes: &[u8]) -> StickyKey {
        #[allow(clippy::expect_used)]
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte AES-256 key");
        StickyKey {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        }
    }

    /// A cookie value naming `target`, valid for `validity` from `now`.
    pub fn seal_target(
        &self,
        kind: CookieKind,
        group: &str,
        target: SocketAddr,
        validity: Duration,
        now: SystemTime,
    ) -> Option<String> {
        let mut payload = [0u8; MAX_PAYLOAD];
        let mut n = header(&mut payload, validity, now);
        match target.ip() {
            IpAddr::V4(ip) => {
                payload[n] = 4;
                payload[n + 1..n + 5].copy_from_slice(&ip.octets());
                n += 5;
            }
            IpAddr::V6(ip) => {
                payload[n] = 6;
                payload[n + 1..n + 17].copy_from_slice(&ip.octets());
                n += 17;
            }
        }
        payload[n..n + 2].copy_from_slice(&target.port().to_be_bytes());
        n += 2;
        self.seal(kind, group.as_bytes(), &payload[..n])
    }

    /// The target a cookie value names, if it is authentic, for this kind and group,
    /// and its stickiness has not expired.
    pub fn open_target(
        &self,
        kind: CookieKind,
        group: &str,
        value: &str,
        now: SystemTime,
    ) -> Option<SocketAddr> {
        let mut buf = [0u8; MAX_SEALED];
        let body = self.open(kind, group.as_bytes(), value, now, &mut buf)?;
        let (ip, rest) = match body.split_first()? {
            (4, rest) if rest.len() == 6 => {
                let o: [u8; 4] = rest[..4].try_into().ok()?;
                (IpAddr::V4(Ipv4Addr::from(o)), &rest[4..])
            }
            (6, rest) if rest.len() == 18 => {
                let o: [u8; 16] = rest[..16].try_into().ok()?;
                (IpAddr::V6(Ipv6Addr::from(o)), &rest[16..])
            }
            _ => return None,
        };
        let port = u16::from_be_bytes(rest.try_into().ok()?);
        Some(SocketAddr::new(ip, port))
    }

    /// A cookie value naming target group `group`, valid for `validity`.
    pub fn seal_group(&self, group: &str, validity: Duration, now: SystemTime) -> Option<String> {
        let mut payload = [0u8; MAX_PAYLOAD];
        let n = header(&mut payload, validity, now);
        let name = group.as_bytes();
        let end = n.checked_add(name.len()).filter(|&e| e <= MAX_PAYLOAD)?;
        payload[n..end].copy_from_slice(name);
        self.seal(CookieKind::Group, b"", &payload[..end])
    }

    /// Whether a group cookie value names `group` and is still valid.
    pub fn opens_to_group(&self, value: &str, group: &str, now: SystemTime) -> bool {
        let mut buf = [0u8; MAX_SEALED];
        self.open(CookieKind::Group, b"", value, now, &mut buf)
            .is_some_and(|name| name == group.as_bytes())
    }

    fn seal(&self, kind: CookieKind, group: &[u8], payload: &[u8]) -> Option<String> {
        let mut buf = [0u8; MAX_SEALED];
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        buf[..NONCE_LEN].copy_from_slice(&nonce);
        let end = NONCE_LEN + payload.len();
        buf[NONCE_LEN..end].copy_from_slice(payload);
        let aad = aad(kind, group);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad[..aad_len(kind, group)]),
                &mut buf[NONCE_LEN..end],
            )
            .ok()?;
        buf[end..end + TAG_LEN].copy_from_slice(tag.as_ref());
        Some(STANDARD.encode(&buf[..end + TAG_LEN]))
    }

    /// Open a value into `buf`; returns the payload after the version and expiry.
    fn open<'b>(
        &self,
        kind: CookieKind,
        group: &[u8],
        value: &str,
        now: SystemTime,
        buf: &'b mut [u8; MAX_SEALED],
    ) -> Option<&'b [u8]> {
        if value.len() > base64::encoded_len(MAX_SEALED, true)? {
            return None;
        }
        let n = STANDARD.decode_slice(value, &mut buf[..]).ok()?;
        if n < NONCE_LEN + TAG_LEN + 9 {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(&buf[..NONCE_LEN]).ok()?;
        let aad = aad(kind, group);
        let plain = self
            .key
            .open_in_place(
                nonce,
                Aad::from(&aad[..aad_len(kind, group)]),
                &mut buf[NONCE_LEN..n],
            )
            .ok()?;
        let (&version, rest) = plain.split_first()?;
        if version != VERSION || rest.len() < 8 {
            return None;
        }
        let expires = u64::from_be_bytes(rest[..8].try_into().ok()?);
        if unix_secs(now) >= expires {
            return None;
        }
        Some(&rest[8..])
    }
}

fn header(payload: &mut [u8; MAX_PAYLOAD], validity: Duration, now: SystemTime) -> usize {
    payload[0] = VERSION;
    let expires = unix_secs(now).saturating_add(validity.as_secs().max(1));
    payload[1..9].copy_from_slice(&expires.to_be_bytes());
    9
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Associated data: the cookie kind, a zero byte, then the group name (≤ 32 bytes).
fn aad(kind: CookieKind, group: &[u8]) -> [u8; 48] {
    let mut out = [0u8; 48];
    let label = kind.label();
    out[..label.len()].copy_from_slice(label);
    let g = &group[..group.len().min(32)];
    out[label.len() + 1..label.len() + 1 + g.len()].copy_from_slice(g);
    out
}

fn aad_len(kind: CookieKind, group: &[u8]) -> usize {
    kind.label().len() + 1 + group.len().min(32)
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn request_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"'))
        })
}

/// Whether the response sets cookie `name`.
pub fn response_sets_cookie(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split_once('=').is_some_and(|(k, _)| k.trim() == name))
}

/// Chromium 80 and later want `SameSite=None; Secure` on cross-site cookies; ALB adds
/// them to `AWSALBAPP-*` only for those browsers.
pub fn is_chromium_80_plus(headers: &HeaderMap) -> bool {
    let Some(ua) = headers.get(USER_AGENT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(at) = ua.find("Chrome/") else {
        return false;
    };
    let digits: &str = &ua[at + 7..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse::<u32>().is_ok_and(|v| v >= 80)
}

/// `Expires` of a cookie set at `now`: IMF-fixdate 7 days ahead.
pub fn expires(now: SystemTime) -> String {
    httpdate::fmt_http_date(now + COOKIE_LIFETIME)
}

/// Append `Set-Cookie: NAME=VALUE; Expires=…; Path=/[; SameSite=None; Secure]`.
pub fn set_cookie(headers: &mut HeaderMap, name: &str, value: &str, expires: &str, cors: bool) {
    let line = if cors {
        format!("{name}={value}; Expires={expires}; Path=/; SameSite=None; Secure")
    } else {
        format!("{name}={value}; Expires={expires}; Path=/")
    };
    if let Ok(v) = HeaderValue::from_str(&line) {
        headers.append(SET_COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn a_target_cookie_round_trips_between_nodes_sharing_the_secret() {
        let a = StickyKey::from_secret("shared secret for tests");
        let b = StickyKey::from_secret("shared secret for tests");
        let target: SocketAddr = "10.1.2.3:8080".parse().unwrap();
        let v = a
            .seal_target(
                CookieKind::Lb,
                "app",
                target,
                Duration::from_secs(60),
                now(),
            )
            .unwrap();
        assert_eq!(
            b.open_target(CookieKind::Lb, "app", &v, now()),
            Some(target)
        );
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        let v = a
            .seal_target(CookieKind::App, "app", v6, Duration::from_secs(60), now())
            .unwrap();
        assert_eq!(b.open_target(CookieKind::App, "app", &v, now()), Some(v6));
    }

    #[test]
    fn forged_foreign_or_expired_cookies_do_not_open() {
        let k = StickyKey::from_secret("one");
        let target: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let v = k
            .seal_target(
                CookieKind::Lb,
                "app",
                target,
                Duration::from_secs(60),
                now(),
            )
            .unwrap();
        let mut forged = v.clone().into_bytes();
        forged[20] = if forged[20] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert_eq!(k.open_target(CookieKind::Lb, "app", &forged, now()), None);
        assert_eq!(k.open_target(CookieKind::Lb, "other", &v, now()), None);
        assert_eq!(k.open_target(CookieKind::App, "app", &v, now()), None);
        let other = StickyKey::from_secret("two");
        assert_eq!(other.open_target(CookieKind::Lb, "app", &v, now()), None);
        let later = now() + Duration::from_secs(60);
        assert_eq!(k.open_target(CookieKind::Lb, "app", &v, later), None);
        assert_eq!(
            k.open_target(CookieKind::Lb, "app", "garbage!", now()),
            None
        );
        assert_eq!(k.open_target(CookieKind::Lb, "app", "", now()), None);
    }

    #[test]
    fn group_cookie_names_its_group() {
        let k = StickyKey::random();
        let v = k
            .seal_group("blue", Duration::from_secs(10), now())
            .unwrap();
        assert!(k.opens_to_group(&v, "blue", now()));
        assert!(!k.opens_to_group(&v, "green", now()));
    }

    #[test]
    fn cookies_are_found_in_any_cookie_header() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; AWSALB=xyz"));
        h.append(COOKIE, HeaderValue::from_static("session=abc"));
        assert_eq!(request_cookie(&h, "AWSALB"), Some("xyz"));
        assert_eq!(request_cookie(&h, "session"), Some("abc"));
        assert_eq!(request_cookie(&h, "AWSALBCORS"), None);
    }

    #[test]
    fn chromium_detection() {
        let mut h = HeaderMap::new();
        h.insert(
            USER_AGENT,
            HeaderValue::from_static("Mozilla/5.0 Chrome/120.0.0.0 Safari/537.36"),
        );
        assert!(is_chromium_80_plus(&h));
        h.insert(
            USER_AGENT,
            HeaderValue::from_static("Mozilla/5.0 Chrome/79.0 Safari"),
        );
        assert!(!is_chromium_80_plus(&h));
        h.insert(USER_AGENT, HeaderValue::from_static("curl/8"));
        assert!(!is_chromium_80_plus(&h));
    }

    #[test]
    fn expires_is_seven_days_ahead_in_imf_fixdate() {
        assert_eq!(expires(now()), "Tue, 21 Nov 2023 22:13:20 GMT");
    }
}
