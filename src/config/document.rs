//! Reading a config text into [`FileConfig`], collecting every syntax error, every unknown
//! key and every type error with its place.
//!
//! The text is parsed once into a spanned tree. Each top-level table and each element of
//! `[[listener]]`, `[[listener.rule]]`, `[[target_group]]` and `[[backend]]` is then
//! deserialized on its own, so a type error in one of them does not hide the problems of the
//! others. Unknown keys are collected with `serde_ignored` and located by walking the tree.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::file::{FileConfig, ListenerConfig, RuleConfig};
use super::ConfigError;

/// The text being read, to turn byte offsets into `LINE:COL`.
pub(crate) struct Source<'a> {
    pub name: &'a str,
    pub text: &'a str,
}

impl Source<'_> {
    /// 1-based line and column (in characters) of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text.as_bytes()[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&before[line_start..])
            .chars()
            .count()
            + 1;
        (line, column)
    }

    /// An error (or warning) at a place in the text.
    pub fn at(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, column) = self.position(span.start);
        ConfigError {
            file: self.name.to_string(),
            line: Some(line),
            column: Some(column),
            message: message.into(),
        }
    }
}

/// What was read from a text that is valid TOML.
pub(crate) struct Read {
    /// The parts that could be deserialized.
    pub file: FileConfig,
    /// How many `[[listener]]` tables the text has, read or not.
    pub listeners_in_text: usize,
    /// Names of target groups whose table could not be read: references to them are not
    /// reported as undefined (their own error is).
    pub unreadable_target_groups: Vec<String>,
}

/// Parse and deserialize `text`. Returns `None` when the text is not valid TOML (every
/// syntax error is in `errors` then); otherwise the parts that could be read, with the
/// problems of the others in `errors`.
pub(crate) fn read(src: &Source<'_>, errors: &mut Vec<ConfigError>) -> Option<Read> {
    let (root, syntax) = DeTable::parse_recoverable(src.text);
    if !syntax.is_empty() {
        for e in syntax {
            let span = e.span().unwrap_or(0..0);
            errors.push(src.at(span, format!("invalid TOML: {}", e.message().trim())));
        }
        return None;
    }
    let mut file = FileConfig::default();
    let mut listeners_in_text = 0;
    let mut unreadable_target_groups = Vec::new();
    for (key, value) in root.into_inner() {
        let name: &str = key.get_ref();
        match name {
            "load_balancer" => file.load_balancer = element(src, value, "load_balancer", errors),
            "admin" => file.admin = element(src, value, "admin", errors),
            "access_log" => file.access_log = element(src, value, "access_log", errors),
            "connection_log" => file.connection_log = element(src, value, "connection_log", errors),
            "listener" => {
                for (i, item) in array(src, value, "listener", errors)
                    .into_iter()
                    .enumerate()
                {
                    listeners_in_text += 1;
                    if let Some(l) = listener(src, item, i, errors) {
                        file.listener.push(l);
                    }
                }
            }
            "target_group" => {
                for (i, item) in array(src, value, name, errors).into_iter().enumerate() {
                    let path = format!("target_group[{i}]");
                    let name = match item.get_ref() {
                        DeValue::Table(t) => t
                            .get("name")
                            .and_then(|n| n.get_ref().as_str())
                            .map(str::to_string),
                        _ => None,
                    };
                    match element(src, item, &path, errors) {
                        Some(tg) => file.target_group.push(tg),
                        None => unreadable_target_groups.extend(name),
                    }
                }
            }
            "backend" => {
                for (i, item) in array(src, value, name, errors).into_iter().enumerate() {
                    if let Some(b) = element(src, item, &format!("backend[{i}]"), errors) {
                        file.backend.push(b);
                    }
                }
            }
            other => errors.push(src.at(
                key.span(),
                format!(
                    "unknown key `{other}`; the top level takes load_balancer, admin, \
                     access_log, connection_log, listener, target_group and backend"
                ),
            )),
        }
    }
    Some(Read {
        file,
        listeners_in_text,
        unreadable_target_groups,
    })
}

/// One `[[listener]]`, its rules read one by one.
fn listener(
    src: &Source<'_>,
    mut item: Spanned<DeValue<'_>>,
    index: usize,
    errors: &mut Vec<ConfigError>,
) -> Option<Spanned<ListenerConfig>> {
    let path = format!("listener[{index}]");
    let mut rules: Vec<Spanned<RuleConfig>> = Vec::new();
    if let DeValue::Table(table) = item.get_mut() {
        if let Some(raw) = table.remove("rule") {
            let rules_path = format!("{path}.rule");
            for (j, r) in array(src, raw, &rules_path, errors).into_iter().enumerate() {
                if let Some(rule) = element(src, r, &format!("{rules_path}[{j}]"), errors) {
                    rules.push(rule);
                }
            }
        }
    }
    let mut listener: Spanned<ListenerConfig> = element(src, item, &path, errors)?;
    listener.get_mut().rule = rules;
    Some(listener)
}

/// The elements of an array (of tables), or an error when `value` is not an array.
fn array<'i>(
    src: &Source<'_>,
    value: Spanned<DeValue<'i>>,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<Spanned<DeValue<'i>>> {
    let span = value.span();
    match value.into_inner() {
        DeValue::Array(items) => items.into_iter().collect(),
        other => {
            errors.push(src.at(
                span,
                format!(
                    "`{path}` must be an array of tables (write `[[{path}]]`), not a {}",
                    other.type_str()
                ),
            ));
            Vec::new()
        }
    }
}

/// Deserialize one value, reporting its unknown keys and its first type error.
fn element<T: DeserializeOwned>(
    src: &Source<'_>,
    value: Spanned<DeValue<'_>>,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let tree = value.clone();
    let mut unknown: Vec<Vec<Segment>> = Vec::new();
    let result: Result<T, toml::de::Error> =
        serde_ignored::deserialize(ValueDeserializer::from(value), |p| {
            unknown.push(segments(&p))
        });
    for segs in unknown {
        let (span, key) = locate_key(&tree, &segs);
        let inside = join_path(path, &segs[..segs.len().saturating_sub(1)]);
        errors.push(src.at(span, format!("unknown key `{key}` in `{inside}`")));
    }
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            let span = e.span().unwrap_or_else(|| tree.span());
            let message = e
                .message()
                .trim()
                .replace("expected i64", "expected an integer");
            errors.push(src.at(span, format!("in `{path}`: {message}")));
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// The path of an ignored value, without serde's wrappers (`Option`, `Spanned`).
fn segments(path: &serde_ignored::Path<'_>) -> Vec<Segment> {
    use serde_ignored::Path;
    let mut out = match path {
        Path::Root => return Vec::new(),
        Path::Seq { parent, .. }
        | Path::Map { parent, .. }
        | Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => segments(parent),
    };
    match path {
        Path::Seq { index, .. } => out.push(Segment::Index(*index)),
        Path::Map { key, .. } if !key.starts_with("$__serde_spanned_private") => {
            out.push(Segment::Key(key.clone()))
        }
        _ => {}
    }
    out
}

fn join_path(base: &str, segs: &[Segment]) -> String {
    let mut out = base.to_string();
    for s in segs {
        match s {
            Segment::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The span of the key a path ends with (or of the deepest value found), and the key.
fn locate_key(tree: &Spanned<DeValue<'_>>, segs: &[Segment]) -> (Range<usize>, String) {
    let mut here = tree;
    let mut key_span = tree.span();
    let mut last = String::new();
    for seg in segs {
        match (seg, here.get_ref()) {
            (Segment::Key(k), DeValue::Table(t)) => {
                match t
                    .iter()
                    .find(|(name, _)| name.get_ref().as_ref() == k.as_str())
                {
                    Some((name, v)) => {
                        key_span = name.span();
                        last = k.clone();
                        here = v;
                    }
                    None => break,
                }
            }
            (Segment::Index(i), DeValue::Array(a)) => match a.get(*i) {
                Some(v) => {
                    key_span = v.span();
                    here = v;
                }
                None => break,
            },
            _ => break,
        }
    }
    (key_span, last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> Source<'_> {
        Source {
            name: "t.toml",
            text,
        }
    }

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let s = src("a = 1\nbé = \"x\"\n");
        assert_eq!(s.position(0), (1, 1));
        assert_eq!(s.position(6), (2, 1));
        // after "bé " (é is two bytes) the `=` is the 4th character
        assert_eq!(s.position(10), (2, 4));
    }

    #[test]
    fn reports_every_syntax_error() {
        let mut errors = Vec::new();
        let text = "[load_balancer\nidle_timeout = = 3\n";
        assert!(read(&src(text), &mut errors).is_none());
        assert!(!errors.is_empty());
        assert!(errors.iter().all(|e| e.message.starts_with("invalid TOML")));
        assert_eq!(errors[0].line, Some(1));
    }

    #[test]
    fn reports_every_unknown_key_at_the_key() {
        let text = "[load_balancer]\nidle_timeot = 5\n\n[admin]\nlisten = \"127.0.0.1:1\"\nlsten = 1\n\n[[listener]]\nport = 80\nprotocol = \"HTTP\"\ndefault_action = { type = \"fixed_response\", status_code = 200, colour = \"red\" }\n";
        let mut errors = Vec::new();
        let file = read(&src(text), &mut errors).expect("valid TOML").file;
        let got: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert!(
            got.contains(&"t.toml:2:1: unknown key `idle_timeot` in `load_balancer`".to_string()),
            "{got:?}"
        );
        assert!(
            got.contains(&"t.toml:6:1: unknown key `lsten` in `admin`".to_string()),
            "{got:?}"
        );
        assert!(
            got.contains(
                &"t.toml:11:64: unknown key `colour` in `listener[0].default_action`".to_string()
            ),
            "{got:?}"
        );
        assert_eq!(file.listener.len(), 1);
    }

    #[test]
    fn unknown_keys_in_rules_and_conditions_are_located() {
        let text = "[[listener]]\nport = 80\nprotocol = \"HTTP\"\ndefault_action = { type = \"fixed_response\", status_code = 200 }\n[[listener.rule]]\npriority = 1\nconditions = [ { path_pattern = [\"/a\"], hostt = [\"x\"] } ]\naction = { type = \"fixed_response\", status_code = 200 }\n";
        let mut errors = Vec::new();
        read(&src(text), &mut errors).expect("valid TOML");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            errors[0].to_string(),
            "t.toml:7:41: unknown key `hostt` in `listener[0].rule[0].conditions[0]`"
        );
    }

    #[test]
    fn a_type_error_does_not_hide_other_elements() {
        let text = "[[target_group]]\nname = 1\n[[target_group]]\nname = \"ok\"\nbogus = 1\n";
        let mut errors = Vec::new();
        let file = read(&src(text), &mut errors).expect("valid TOML").file;
        assert_eq!(file.target_group.len(), 1);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].line, Some(2));
        assert!(errors[0].message.contains("target_group[0]"));
        assert_eq!(errors[1].line, Some(5));
    }

    #[test]
    fn unknown_top_level_key() {
        let mut errors = Vec::new();
        read(&src("\n[listeners]\n"), &mut errors).expect("valid TOML");
        assert_eq!(errors.len(), 1);
        assert_eq!((errors[0].line, errors[0].column), (Some(2), Some(2)));
    }

    #[test]
    fn listener_must_be_an_array() {
        let mut errors = Vec::new();
        read(&src("[listener]\nport = 1\n"), &mut errors).expect("valid TOML");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("[[listener]]"), "{errors:?}");
    }
}
