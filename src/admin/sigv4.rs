//! Checking AWS Signature Version 4 on API calls, when `[admin] credentials` are set.
//!
//! The signature is recomputed with AWS's own signer (`aws-sigv4`) from what the client
//! says it signed: the headers listed in `SignedHeaders` with their values, the method,
//! the path and query, the body, the time in `X-Amz-Date`, and the region and service of
//! the credential scope; then compared with the one sent, in constant time. A request
//! dated more than 15 minutes away from now is refused, as AWS refuses it.

use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;

use super::query::ApiError;
use crate::config::model::Credentials;

/// How far `X-Amz-Date` may be from now.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// The service name a signature must be for.
pub const SERVICE: &str = "elasticloadbalancing";

/// Check the request's signature against `credentials` at time `now`.
pub fn verify(
    parts: &http::request::Parts,
    body: &[u8],
    credentials: &Credentials,
    now: SystemTime,
) -> Result<(), ApiError> {
    let Some(auth) = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(ApiError::new(
            403,
            "MissingAuthenticationToken",
            "Request is missing Authentication Token",
        ));
    };
    let auth = Authorization::parse(auth).ok_or_else(|| {
        ApiError::new(
            403,
            "IncompleteSignature",
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' \
             parameters (AWS4-HMAC-SHA256).",
        )
    })?;
    if auth.access_key_id != credentials.access_key_id {
        return Err(ApiError::new(
            403,
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        ));
    }
    let date_text = header(parts, "x-amz-date").ok_or_else(|| {
        ApiError::new(
            403,
            "IncompleteSignature",
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        )
    })?;
    let time = parse_amz_date(date_text).ok_or_else(|| {
        ApiError::new(
            403,
            "IncompleteSignature",
            format!("Date must be in ISO-8601 'basic format'. Got '{date_text}'."),
        )
    })?;
    let skew = now
        .duration_since(time)
        .or_else(|_| time.duration_since(now))
        .unwrap_or_default();
    if skew > MAX_SKEW {
        return Err(ApiError::new(
            403,
            "SignatureDoesNotMatch",
            format!(
                "Signature expired: {date_text} is now earlier than {} ({} - 15 min.) or \
                 later than {} ({} + 15 min.)",
                format_amz_date(now - MAX_SKEW),
                format_amz_date(now),
                format_amz_date(now + MAX_SKEW),
                format_amz_date(now),
            ),
        ));
    }
    if auth.service != SERVICE || !auth.date_scope_matches(date_text) {
        return Err(mismatch());
    }
    let expected = signature(parts, body, &auth, credentials, time).ok_or_else(mismatch)?;
    if aws_lc_rs::constant_time::verify_slices_are_equal(
        expected.as_bytes(),
        auth.signature.as_bytes(),
    )
    .is_err()
    {
        return Err(mismatch());
    }
    Ok(())
}

fn mismatch() -> ApiError {
    ApiError::new(
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. \
         Check your AWS Secret Access Key and signing method. Consult the service \
         documentation for details.",
    )
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 …` header.
#[derive(Debug, PartialEq, Eq)]
struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

impl<'a> Authorization<'a> {
    fn parse(header: &'a str) -> Option<Authorization<'a>> {
        let rest = header.strip_prefix("AWS4-HMAC-SHA256")?.trim_start();
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for field in rest.split(',') {
            let (k, v) = field.trim().split_once('=')?;
            match k {
                "Credential" => credential = Some(v),
                "SignedHeaders" => signed = Some(v),
                "Signature" => signature = Some(v),
                _ => {}
            }
        }
        let mut scope = credential?.split('/');
        let access_key_id = scope.next()?;
        let date = scope.next()?;
        let region = scope.next()?;
        let service = scope.next()?;
        if scope.next()? != "aws4_request" || scope.next().is_some() {
            return None;
        }
        let signature = signature?;
        if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(Authorization {
            access_key_id,
            date,
            region,
            service,
            signed_headers: signed?.split(';').collect(),
            signature,
        })
    }

    /// The scope's date is the day of `X-Amz-Date`.
    fn date_scope_matches(&self, amz_date: &str) -> bool {
        amz_date.get(..8) == Some(self.date)
    }
}

fn header<'a>(parts: &'a http::request::Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The signature AWS's signer gives the request as the client says it signed it.
fn signature(
    parts: &http::request::Parts,
    body: &[u8],
    auth: &Authorization<'_>,
    credentials: &Credentials,
    time: SystemTime,
) -> Option<String> {
    // AWS requires `host` among the signed headers. Without it the signer would take the
    // host from the URI, which an origin-form request line does not carry (it panics).
    if !auth
        .signed_headers
        .iter()
        .any(|name| name.eq_ignore_ascii_case("host"))
    {
        return None;
    }
    let mut values: Vec<(&str, String)> = Vec::with_capacity(auth.signed_headers.len());
    for name in &auth.signed_headers {
        let joined: Vec<&str> = parts
            .headers
            .get_all(*name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if joined.is_empty() {
            return None;
        }
        values.push((name, joined.join(",")));
    }
    let uri = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    let request = SignableRequest::new(
        parts.method.as_str(),
        uri,
        values.iter().map(|(k, v)| (*k, v.as_str())),
        SignableBody::Bytes(body),
    )
    .ok()?;
    let identity = aws_credential_types::Credentials::new(
        credentials.access_key_id.clone(),
        credentials.secret_access_key.expose().to_string(),
        None,
        None,
        "albatross-admin",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(auth.region)
        .name(auth.service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .ok()?
        .into();
    Some(sign(request, &params).ok()?.signature().to_string())
}

/// `20261204T083000Z` as a time.
fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() != 16
        || b[8] != b'T'
        || b[15] != b'Z'
        || !text[..8].bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &text[0..4],
        &text[4..6],
        &text[6..8],
        text.get(9..11)?,
        text.get(11..13)?,
        text.get(13..15)?
    );
    humantime::parse_rfc3339(&rfc3339).ok()
}

/// A time as `20261204T083000Z`.
fn format_amz_date(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace(['-', ':'], "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::Secret;

    fn credentials() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
        }
    }

    /// A request signed by AWS's signer as a client would sign it.
    fn signed(body: &'static str, time: SystemTime, secret: &str) -> http::request::Parts {
        let date = format_amz_date(time);
        let headers = [
            (
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
            ("host", "127.0.0.1:9900"),
            ("x-amz-date", date.as_str()),
        ];
        let request = SignableRequest::new(
            "POST",
            "/",
            headers.iter().copied(),
            SignableBody::Bytes(body.as_bytes()),
        )
        .unwrap();
        let identity =
            aws_credential_types::Credentials::new("AKIDEXAMPLE", secret, None, None, "test")
                .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name(SERVICE)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let signature = sign(request, &params).unwrap().signature().to_string();
        let mut b = http::Request::builder().method("POST").uri("/");
        for (k, v) in headers {
            b = b.header(k, v);
        }
        b = b.header(
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{}/us-east-1/{SERVICE}/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date, Signature={signature}",
                &date[..8]
            ),
        );
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_good_signature_passes_and_anything_else_is_refused() {
        let now = SystemTime::now();
        let body = "Action=DescribeLoadBalancers&Version=2015-12-01";
        let creds = credentials();
        let good = signed(body, now, creds.secret_access_key.expose());
        assert_eq!(verify(&good, body.as_bytes(), &creds, now), Ok(()));

        let code = |r: Result<(), ApiError>| r.unwrap_err().code;
        let wrong_secret = signed(body, now, "not the secret");
        assert_eq!(
            code(verify(&wrong_secret, body.as_bytes(), &creds, now)),
            "SignatureDoesNotMatch"
        );
        assert_eq!(
            code(verify(&good, b"Action=DeleteRule", &creds, now)),
            "SignatureDoesNotMatch",
            "a changed body"
        );
        let other = Credentials {
            access_key_id: "AKIDOTHER".into(),
            ..credentials()
        };
        assert_eq!(
            code(verify(&good, body.as_bytes(), &other, now)),
            "InvalidClientTokenId"
        );
        let stale = now + Duration::from_secs(16 * 60);
        let err = verify(&good, body.as_bytes(), &creds, stale).unwrap_err();
        assert_eq!(err.code, "SignatureDoesNotMatch");
        assert!(
            err.message.starts_with("Signature expired"),
            "{}",
            err.message
        );
        let mut unsigned = good.clone();
        unsigned.headers.remove("authorization");
        assert_eq!(
            code(verify(&unsigned, body.as_bytes(), &creds, now)),
            "MissingAuthenticationToken"
        );
        let mut garbled = good;
        garbled.headers.insert(
            "authorization",
            "AWS4-HMAC-SHA256 nonsense".parse().unwrap(),
        );
        assert_eq!(
            code(verify(&garbled, body.as_bytes(), &creds, now)),
            "IncompleteSignature"
        );
    }

    #[test]
    fn amz_dates_read_and_write() {
        let t = parse_amz_date("20261204T083015Z").unwrap();
        assert_eq!(format_amz_date(t), "20261204T083015Z");
        assert_eq!(
            t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
            1_796_373_015
        );
        for bad in [
            "2026-12-04T08:30:15Z",
            "20261304T083015Z",
            "20261204T083015",
            "",
        ] {
            assert!(parse_amz_date(bad).is_none(), "{bad}");
        }
    }
}
