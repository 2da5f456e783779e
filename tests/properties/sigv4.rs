//! SigV4 on API calls: [`sigv4::verify`] reading the `Authorization` header a client
//! sends and checking its signature.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use albatross::admin::sigv4::{self, SERVICE};
use albatross::config::model::{Credentials, Secret};
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use http::request::Parts;
use proptest::prelude::*;
use proptest::sample::Index;

const ACCESS_KEY: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn credentials() -> Credentials {
    Credentials {
        access_key_id: ACCESS_KEY.to_string(),
        secret_access_key: Secret::new(SECRET.to_string()),
    }
}

/// `20261204T083000Z`.
fn amz_date(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace(['-', ':'], "")
}

/// A time between 2001 and 2033.
fn time() -> impl Strategy<Value = SystemTime> {
    (1_000_000_000u64..2_000_000_000).prop_map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

/// A request with these headers (an X-Amz-Date for `now` first) and `authorization`.
fn request(now: SystemTime, headers: &[(String, String)], authorization: &str) -> Option<Parts> {
    let mut b = http::Request::builder()
        .method("POST")
        .uri("/")
        .header("x-amz-date", amz_date(now));
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let b = b.header(http::header::AUTHORIZATION, authorization);
    b.body(()).ok().map(|r| r.into_parts().0)
}

/// Headers a client signs besides X-Amz-Date (always `host`).
fn signed_headers() -> impl Strategy<Value = Vec<(String, String)>> {
    (
        "[a-z0-9.:]{1,20}",
        prop::option::of("[ -~]{0,30}"),
        prop::option::of("[ -~]{0,30}"),
    )
        .prop_map(|(host, content_type, other)| {
            let mut h = vec![("host".to_string(), host)];
            if let Some(c) = content_type {
                h.push(("content-type".to_string(), c.trim().to_string()));
            }
            if let Some(o) = other {
                h.push(("x-amz-other".to_string(), o.trim().to_string()));
            }
            h
        })
}

/// The Authorization header AWS's signer gives a client for these headers and body.
fn authorization(now: SystemTime, headers: &[(String, String)], body: &[u8]) -> String {
    let date = amz_date(now);
    let mut all: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    all.push(("x-amz-date", &date));
    let request = SignableRequest::new("POST", "/", all.iter().copied(), SignableBody::Bytes(body))
        .expect("a signable request");
    let identity =
        aws_credential_types::Credentials::new(ACCESS_KEY, SECRET, None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name(SERVICE)
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .expect("signing parameters")
        .into();
    let signature = sign(request, &params)
        .expect("signed")
        .signature()
        .to_string();
    let mut names: Vec<&str> = all.iter().map(|(k, _)| *k).collect();
    names.sort_unstable();
    format!(
        "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{}/us-east-1/{SERVICE}/aws4_request, \
         SignedHeaders={}, Signature={signature}",
        &date[..8],
        names.join(";")
    )
}

/// Authorization headers that get past the parser to the signature check, or nearly:
/// the right scheme, the right key and date now and then, signed-header lists with and
/// without `host`, any 64 hex digits; and any visible text.
fn authorization_header(now: SystemTime) -> impl Strategy<Value = String> {
    let date = amz_date(now)[..8].to_string();
    let structured = (
        prop_oneof![4 => Just("AWS4-HMAC-SHA256 "), 1 => Just("AWS4-HMAC-SHA256"), 1 => Just("AWS4-HMAC-SHA1 ")],
        prop_oneof![4 => Just(ACCESS_KEY), 1 => Just("AKIDOTHER"), 1 => Just("")],
        prop_oneof![4 => Just(date), 1 => "[0-9]{8}"],
        prop_oneof![4 => Just("us-east-1"), 1 => Just(""), 1 => Just("eu-west-1")],
        prop_oneof![4 => Just(SERVICE), 1 => Just("s3")],
        prop_oneof![4 => Just("aws4_request"), 1 => Just("aws4_request/x"), 1 => Just("")],
        prop::collection::vec(
            prop_oneof![
                3 => Just("host"),
                3 => Just("x-amz-date"),
                2 => Just("content-type"),
                1 => Just("Host"),
                1 => Just("x-missing"),
                1 => Just(""),
                1 => Just("bad name"),
            ],
            0..4,
        ),
        prop_oneof![4 => "[0-9a-fA-F]{64}", 1 => "[0-9a-f]{0,70}"],
        prop::sample::select(vec![", ", ",", " , "]),
    )
        .prop_map(|(scheme, key, date, region, service, term, signed, sig, sep)| {
            format!(
                "{scheme}Credential={key}/{date}/{region}/{service}/{term}{sep}SignedHeaders={}{sep}Signature={sig}",
                signed.join(";")
            )
        });
    prop_oneof![3 => structured, 1 => "[ -~]{0,200}"]
}

proptest! {
    #![proptest_config(crate::config())]

    /// Any Authorization header on an otherwise well-formed request: `verify` returns
    /// without panicking and never accepts it.
    #[test]
    fn sigv4_arbitrary_authorization_never_verifies(
        (now, auth) in time().prop_flat_map(|t| (Just(t), authorization_header(t))),
        headers in signed_headers(),
        body in "[ -~]{0,40}",
    ) {
        let Some(parts) = request(now, &headers, &auth) else {
            return Ok(());
        };
        prop_assert!(sigv4::verify(&parts, body.as_bytes(), &credentials(), now).is_err(), "{}", auth);
    }

    /// A request signed with the key verifies, within 15 minutes of its date; with any
    /// one character of the signature changed, or of a signed header's value, or with
    /// the body changed, it does not.
    #[test]
    fn sigv4_signed_requests_verify_and_changes_do_not(
        now in time(),
        skew in -900i64..=900,
        headers in signed_headers(),
        body in "[ -~]{0,40}",
        at in any::<Index>(),
        which in any::<Index>(),
        with in "[0-9a-z]",
    ) {
        let auth = authorization(now, &headers, body.as_bytes());
        let parts = request(now, &headers, &auth).expect("a valid request");
        let creds = credentials();
        let later = if skew >= 0 {
            now + Duration::from_secs(skew as u64)
        } else {
            now - Duration::from_secs(skew.unsigned_abs())
        };
        prop_assert_eq!(sigv4::verify(&parts, body.as_bytes(), &creds, later), Ok(()));

        // One character of the signature.
        let sig_start = auth.rfind('=').expect("a signature") + 1;
        let i = sig_start + at.index(auth.len() - sig_start);
        let mut changed = auth.clone().into_bytes();
        changed[i] = if changed[i] == with.as_bytes()[0] { b'x' } else { with.as_bytes()[0] };
        let changed = String::from_utf8(changed).expect("text");
        let forged = request(now, &headers, &changed).expect("a valid request");
        prop_assert!(sigv4::verify(&forged, body.as_bytes(), &creds, now).is_err());

        // One character of a signed header's value (the value still valid and not
        // trimmed to the same text).
        let mut h = headers.clone();
        let (_, value) = which.get(&h).clone();
        if !value.is_empty() {
            let i = at.index(value.len());
            let mut v = value.into_bytes();
            v[i] = if v[i] == b'q' { b'r' } else { b'q' };
            let k = which.index(h.len());
            h[k].1 = String::from_utf8(v).expect("text");
            let tampered = request(now, &h, &auth).expect("a valid request");
            prop_assert!(sigv4::verify(&tampered, body.as_bytes(), &creds, now).is_err());
        }

        // Another body.
        let other = format!("{body}&");
        prop_assert!(sigv4::verify(&parts, other.as_bytes(), &creds, now).is_err());
    }
}

/// Found by `sigv4_arbitrary_authorization_never_verifies`: with the right key and a
/// current date, a `SignedHeaders` list without `host` made AWS's signer panic (it
/// looks for the host in the URI, which an origin-form request line lacks) instead of
/// refusing the signature.
#[test]
fn signed_headers_without_host_are_refused() {
    let now = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20010909/us-east-1/{SERVICE}/aws4_request, \
         SignedHeaders=x-amz-date, Signature={}",
        "0a".repeat(32)
    );
    let parts = request(now, &[("host".to_string(), "0".to_string())], &auth).expect("a request");
    let e = sigv4::verify(&parts, b"", &credentials(), now).expect_err("refused");
    assert_eq!(e.code, "SignatureDoesNotMatch");
}
