//! Stickiness cookies (`AWSALB`, `AWSALBAPP-*`, `AWSALBTG`): what a client sends back is
//! opened with [`StickyKey`], and found in its `Cookie` headers by [`request_cookie`].

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use albatross::target_group::sticky::{request_cookie, CookieKind, StickyKey};
use http::header::{HeaderMap, HeaderValue, COOKIE};
use proptest::prelude::*;
use proptest::sample::Index;

const KINDS: [CookieKind; 3] = [CookieKind::Lb, CookieKind::App, CookieKind::Group];

fn key() -> StickyKey {
    StickyKey::from_secret("a shared secret for property tests")
}

/// A time between 1970 and about 2500, with a fraction of a second.
fn time() -> impl Strategy<Value = SystemTime> {
    (0u64..16_000_000_000, 0u32..1_000_000_000).prop_map(|(s, n)| UNIX_EPOCH + Duration::new(s, n))
}

/// A stickiness duration as ALB allows it (1 s to 7 days), in whole seconds.
fn validity() -> impl Strategy<Value = Duration> {
    (1u64..=7 * 24 * 3600).prop_map(Duration::from_secs)
}

/// Targets as registered: an IP and a port (a cookie does not carry an IPv6 scope or
/// flow label, and targets are never given one).
fn target() -> impl Strategy<Value = SocketAddr> {
    (any::<std::net::IpAddr>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

/// Group names as configured (at most 32 alphanumerics and hyphens), and any string.
fn group() -> impl Strategy<Value = String> {
    prop_oneof!["[A-Za-z0-9-]{1,32}", any::<String>()]
}

/// Cookie values: base64-looking text of plausible lengths, and any text.
fn cookie_value() -> impl Strategy<Value = String> {
    prop_oneof!["[A-Za-z0-9+/=]{0,120}", any::<String>()]
}

/// The value with the character at `at` replaced by another one.
fn change_one(value: &str, at: Index, with: char) -> String {
    let mut chars: Vec<char> = value.chars().collect();
    let i = at.index(chars.len());
    chars[i] = if chars[i] == with {
        if with == 'A' {
            'B'
        } else {
            'A'
        }
    } else {
        with
    };
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(crate::config())]

    /// Any text as a cookie value opens to nothing, for every kind and group, and
    /// never panics.
    #[test]
    fn sticky_arbitrary_values_never_open(value in cookie_value(), group in group(), now in time()) {
        let k = key();
        for kind in KINDS {
            prop_assert_eq!(k.open_target(kind, &group, &value, now), None);
        }
        prop_assert!(!k.opens_to_group(&value, &group, now));
    }

    /// A sealed target opens to the same target, for the same kind and group, at any
    /// time before its stickiness ends, and not at its end or after; nor for another
    /// kind or another group.
    #[test]
    fn sticky_target_round_trips(
        target in target(),
        group in group(),
        validity in validity(),
        now in time(),
        within in any::<prop::sample::Index>(),
        after in 0u64..1_000_000,
    ) {
        let k = key();
        for kind in KINDS {
            let v = k.seal_target(kind, &group, target, validity, now).expect("sealed");
            let secs = validity.as_secs();
            let before_end = now + Duration::from_secs(within.index(secs as usize) as u64);
            prop_assert_eq!(k.open_target(kind, &group, &v, now), Some(target));
            prop_assert_eq!(k.open_target(kind, &group, &v, before_end), Some(target));
            let expired = now + validity + Duration::from_secs(after);
            prop_assert_eq!(k.open_target(kind, &group, &v, expired), None);
            for other in KINDS.iter().filter(|&&o| o != kind) {
                prop_assert_eq!(k.open_target(*other, &group, &v, now), None);
            }
            let other_group = format!("{group}x");
            // Group names bind the value up to their 32nd byte, the longest name allowed.
            if group.len() < 32 {
                prop_assert_eq!(k.open_target(kind, &other_group, &v, now), None);
            }
        }
    }

    /// A sealed group opens to the same group, before its end only, and to no other
    /// group; every name of at most 32 bytes (the longest a group may have) seals.
    #[test]
    fn sticky_group_round_trips(
        group in group(),
        validity in validity(),
        now in time(),
        within in any::<prop::sample::Index>(),
    ) {
        let k = key();
        let sealed = k.seal_group(&group, validity, now);
        if group.len() <= 32 {
            prop_assert!(sealed.is_some());
        }
        if let Some(v) = sealed {
            let before_end = now + Duration::from_secs(within.index(validity.as_secs() as usize) as u64);
            prop_assert!(k.opens_to_group(&v, &group, now));
            prop_assert!(k.opens_to_group(&v, &group, before_end));
            prop_assert!(!k.opens_to_group(&v, &group, now + validity));
            let other_group = format!("{group}x");
            prop_assert!(!k.opens_to_group(&v, &other_group, now));
        }
    }

    /// A sealed value with any one character changed, to a base64 character or to any
    /// character, opens to nothing.
    #[test]
    fn sticky_changed_values_do_not_open(
        target in target(),
        group in "[A-Za-z0-9-]{1,32}",
        now in time(),
        at in any::<Index>(),
        with in prop_oneof![
            prop::sample::select(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=".to_vec()).prop_map(char::from),
            any::<char>(),
        ],
    ) {
        let k = key();
        let validity = Duration::from_secs(3600);
        let v = k.seal_target(CookieKind::Lb, &group, target, validity, now).expect("sealed");
        let changed = change_one(&v, at, with);
        prop_assert_eq!(k.open_target(CookieKind::Lb, &group, &changed, now), None);
        let g = k.seal_group(&group, validity, now).expect("sealed");
        let changed = change_one(&g, at, with);
        prop_assert!(!k.opens_to_group(&changed, &group, now));
    }

    /// `request_cookie` never panics on any `Cookie` headers, and in well-formed ones
    /// finds the first pair of that name, as a simple split on `;` and `=` does.
    #[test]
    fn sticky_request_cookie(
        raw in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 0..3),
        pairs in prop::collection::vec(("AWSALB|AWSALBTG|AWSALBAPP-0|session|[A-Za-z]{1,6}", "[A-Za-z0-9+/=]{0,20}"), 0..6),
        per_header in 1usize..4,
        name in "AWSALB|AWSALBTG|AWSALBAPP-0|session",
    ) {
        // Any bytes: never a panic.
        let mut headers = HeaderMap::new();
        for r in &raw {
            if let Ok(v) = HeaderValue::from_bytes(r) {
                headers.append(COOKIE, v);
            }
        }
        let _ = request_cookie(&headers, &name);

        // Well-formed: `a=1; b=2` over one or more headers.
        let mut headers = HeaderMap::new();
        for chunk in pairs.chunks(per_header) {
            let line: Vec<String> = chunk.iter().map(|(k, v)| format!("{k}={v}")).collect();
            headers.append(COOKIE, HeaderValue::from_str(&line.join("; ")).expect("a valid value"));
        }
        let want = pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str());
        prop_assert_eq!(request_cookie(&headers, &name), want);
    }
}
