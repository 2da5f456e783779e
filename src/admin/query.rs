//! The AWS Query protocol as ELBv2 speaks it: form-encoded parameters in, XML out.
//!
//! Lists travel as `Name.member.N` (1-based) and structures as dotted members, so
//! `Targets.member.2.Port=80` is the second target's port; [`Params::members`] turns a
//! list of structures into one [`Params`] each. Answers are
//! `<{Action}Response xmlns=…><{Action}Result>…</{Action}Result><ResponseMetadata>…`,
//! errors `<ErrorResponse xmlns=…><Error><Type>Sender</Type><Code>…` (codes without the
//! `Exception` suffix botocore adds).

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The XML namespace of ELBv2's 2015-12-01 API.
pub const NAMESPACE: &str = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/";

/// A request's parameters (or one structure's members).
#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// The parameters of a query string and a form-encoded body, in that order.
    pub fn parse(query: Option<&str>, body: &[u8]) -> Params {
        let mut pairs: Vec<(String, String)> = Vec::new();
        if let Some(q) = query {
            pairs.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        pairs.extend(form_urlencoded::parse(body).into_owned());
        Params { pairs }
    }

    /// The value of `key` (the last one given, as AWS reads repeated keys).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a required `key`.
    pub fn required(&self, key: &str) -> Result<&str, ApiError> {
        match self.get(key) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(ApiError::validation(format!(
                "1 validation error detected: Value null at '{}' failed to satisfy constraint: \
                 Member must not be null",
                lower_first(key)
            ))),
        }
    }

    /// Whether any parameter is `key` or a member of it.
    pub fn has(&self, key: &str) -> bool {
        let dotted = format!("{key}.");
        self.pairs
            .iter()
            .any(|(k, _)| k == key || k.starts_with(&dotted))
    }

    /// The values of the list `key` (`key.member.N`), in the order of N.
    pub fn list(&self, key: &str) -> Vec<&str> {
        let prefix = format!("{key}.member.");
        let mut items: BTreeMap<usize, &str> = BTreeMap::new();
        for (k, v) in &self.pairs {
            if let Some(n) = k.strip_prefix(&prefix).and_then(|n| n.parse().ok()) {
                items.insert(n, v);
            }
        }
        items.into_values().collect()
    }

    /// The structures of the list `key` (`key.member.N.Field`), in the order of N, each
    /// with its fields as parameters.
    pub fn members(&self, key: &str) -> Vec<Params> {
        let prefix = format!("{key}.member.");
        let mut items: BTreeMap<usize, Params> = BTreeMap::new();
        for (k, v) in &self.pairs {
            let Some(rest) = k.strip_prefix(&prefix) else {
                continue;
            };
            let Some((n, field)) = rest.split_once('.') else {
                continue;
            };
            let Ok(n) = n.parse::<usize>() else {
                continue;
            };
            items
                .entry(n)
                .or_default()
                .pairs
                .push((field.to_string(), v.clone()));
        }
        items.into_values().collect()
    }

    /// The structure `key` (`key.Field`), its fields as parameters.
    pub fn structure(&self, key: &str) -> Params {
        let prefix = format!("{key}.");
        Params {
            pairs: self
                .pairs
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_string(), v.clone())))
                .collect(),
        }
    }

    /// `key` as a boolean (`true` / `false`).
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(v) => Err(ApiError::validation(format!(
                "Value '{v}' at '{}' failed to satisfy constraint: Member must be true or false",
                lower_first(key)
            ))),
        }
    }

    /// `key` as an integer within `lo..=hi`.
    pub fn int(&self, key: &str, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v.parse::<i64>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
            _ => Err(ApiError::validation(format!(
                "Value '{v}' at '{}' failed to satisfy constraint: Member must have value \
                 between {lo} and {hi}",
                lower_first(key)
            ))),
        }
    }
}

/// `TargetGroupArn` → `targetGroupArn`, as AWS names members in validation messages.
fn lower_first(key: &str) -> String {
    let mut chars = key.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// An API error: HTTP status, ALB's code (without the `Exception` suffix) and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// A 400 error of `code`.
    pub fn sender(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(400, code, message)
    }

    /// `ValidationError`, ALB's generic answer to a malformed parameter.
    pub fn validation(message: impl Into<String>) -> ApiError {
        ApiError::sender("ValidationError", message)
    }

    /// The error document.
    pub fn to_xml(&self, request_id: &str) -> String {
        let kind = if self.status >= 500 {
            "Receiver"
        } else {
            "Sender"
        };
        let mut x = Xml::new();
        x.raw(&format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse xmlns=\"{NAMESPACE}\">"
        ));
        x.open("Error");
        x.leaf("Type", kind);
        x.leaf("Code", self.code);
        x.leaf("Message", &self.message);
        x.close("Error");
        x.leaf("RequestId", request_id);
        x.raw("</ErrorResponse>");
        x.finish()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl std::error::Error for ApiError {}

/// An XML document written in order; text is escaped.
#[derive(Debug, Default)]
pub struct Xml {
    out: String,
}

impl Xml {
    pub fn new() -> Xml {
        Xml::default()
    }

    pub fn open(&mut self, tag: &str) -> &mut Xml {
        let _ = write!(self.out, "<{tag}>");
        self
    }

    pub fn close(&mut self, tag: &str) -> &mut Xml {
        let _ = write!(self.out, "</{tag}>");
        self
    }

    /// `<tag>text</tag>`.
    pub fn leaf(&mut self, tag: &str, text: &str) -> &mut Xml {
        self.open(tag);
        escape_into(&mut self.out, text);
        self.close(tag)
    }

    /// `<tag>text</tag>` when there is a text.
    pub fn leaf_opt(&mut self, tag: &str, text: Option<&str>) -> &mut Xml {
        if let Some(t) = text {
            self.leaf(tag, t);
        }
        self
    }

    /// `<tag><member>…</member>…</tag>`, each member written by `each`.
    pub fn list<T>(
        &mut self,
        tag: &str,
        items: impl IntoIterator<Item = T>,
        mut each: impl FnMut(&mut Xml, T),
    ) -> &mut Xml {
        self.open(tag);
        for item in items {
            self.open("member");
            each(self, item);
            self.close("member");
        }
        self.close(tag)
    }

    /// `<tag><member>text</member>…</tag>`.
    pub fn strings<'a>(&mut self, tag: &str, items: impl IntoIterator<Item = &'a str>) -> &mut Xml {
        self.list(tag, items, |x, s| {
            escape_into(&mut x.out, s);
        })
    }

    pub fn raw(&mut self, text: &str) -> &mut Xml {
        self.out.push_str(text);
        self
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

/// The document answering `action` with `result` (the inside of `<{action}Result>`).
pub fn response(action: &str, result: &str, request_id: &str) -> String {
    let mut x = Xml::new();
    x.raw(&format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{action}Response xmlns=\"{NAMESPACE}\">"
    ));
    x.raw(&format!("<{action}Result>"));
    x.raw(result);
    x.raw(&format!("</{action}Result>"));
    x.open("ResponseMetadata");
    x.leaf("RequestId", request_id);
    x.close("ResponseMetadata");
    x.raw(&format!("</{action}Response>"));
    x.finish()
}

/// A request id in AWS's shape (a random UUID).
pub fn request_id() -> String {
    let b: [u8; 16] = rand::random();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_structures_come_apart() {
        let p = Params::parse(
            Some("Action=RegisterTargets"),
            b"TargetGroupArn=arn%3Aaws&Targets.member.2.Id=10.0.0.2&Targets.member.1.Id=10.0.0.1&Targets.member.1.Port=8080&Names.member.1=a&Names.member.2=b",
        );
        assert_eq!(p.get("Action"), Some("RegisterTargets"));
        assert_eq!(p.get("TargetGroupArn"), Some("arn:aws"));
        let t = p.members("Targets");
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].get("Id"), Some("10.0.0.1"));
        assert_eq!(t[0].get("Port"), Some("8080"));
        assert_eq!(t[1].get("Port"), None);
        assert_eq!(p.list("Names"), ["a", "b"]);
        assert!(p.required("Marker").is_err());
        assert_eq!(
            p.required("Nope").unwrap_err().message,
            "1 validation error detected: Value null at 'nope' failed to satisfy constraint: Member must not be null"
        );
    }

    #[test]
    fn text_is_escaped_and_documents_are_wrapped() {
        let mut x = Xml::new();
        x.leaf("Message", "a<b & \"c\"");
        assert_eq!(x.finish(), "<Message>a&lt;b &amp; &quot;c&quot;</Message>");
        let doc = response("DescribeTags", "<TagDescriptions/>", "id-1");
        assert!(doc.contains("<DescribeTagsResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\">"));
        assert!(doc.contains("<RequestId>id-1</RequestId>"));
        let e = ApiError::sender("TargetGroupNotFound", "nope").to_xml("id-2");
        assert!(e.contains(
            "<Type>Sender</Type><Code>TargetGroupNotFound</Code><Message>nope</Message>"
        ));
        assert_eq!(request_id().len(), 36);
    }
}
