//! ALB's wildcard patterns: `*` is zero or more of any byte (it crosses `/` and `.`),
//! `?` exactly one byte, and the pattern is anchored to the whole value.
//!
//! A pattern is compiled once into the literal run before its first `*` (the head),
//! the run after its last `*` (the tail) and the runs between (the middle). Matching
//! checks the tail, then the head, then finds each middle run leftmost-first: the
//! segment form of the classic two-pointer star algorithm. It never backtracks more
//! than one star, so the cost is at most `O(len(text) · len(pattern))` whatever the
//! pattern, and it never allocates.
//!
//! Text is read through [`Text`], so the same matcher serves raw bytes (host, path,
//! header values) and query-string components decoded on the fly.

/// One pattern position: a literal byte, or `?`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Byte(u8),
    Any,
}

/// A run of pattern positions without `*`.
#[derive(Debug, Clone)]
struct Run {
    units: Box<[Unit]>,
    /// The same run as bytes when it has no `?`, for a plain slice compare.
    literal: Option<Box<[u8]>>,
}

impl Run {
    fn new(units: Vec<Unit>) -> Run {
        let literal = units
            .iter()
            .map(|u| match u {
                Unit::Byte(b) => Some(*b),
                Unit::Any => None,
            })
            .collect::<Option<Box<[u8]>>>();
        Run {
            units: units.into_boxed_slice(),
            literal,
        }
    }

    fn len(&self) -> usize {
        self.units.len()
    }
}

/// Whether literal bytes compare with ASCII case folding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Case {
    Sensitive,
    Insensitive,
}

/// How the pattern text is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Syntax {
    /// `*` and `?` are wildcards; every other byte is literal (host, path, header values).
    Plain,
    /// Query-string values: `\` makes the next byte literal (`\*`, `\?`, `\\`), and
    /// `%HH` stands for the byte it encodes, always literal (so `%2A` is a plain `*`).
    Query,
}

/// A compiled full-string glob.
#[derive(Debug, Clone)]
pub(crate) struct Glob {
    /// Units before the first `*`; the whole pattern when it has no `*`.
    head: Run,
    /// Runs between consecutive `*`s (empty runs dropped: `**` is `*`).
    middle: Box<[Run]>,
    /// Units after the last `*`.
    tail: Run,
    /// Whether the pattern has at least one `*`.
    starred: bool,
    /// Literal bytes are stored lower-cased and text bytes folded when comparing.
    fold: bool,
    /// The shortest text that can match.
    min_len: usize,
}

impl Glob {
    pub(crate) fn new(pattern: &str, case: Case, syntax: Syntax) -> Glob {
        let fold = case == Case::Insensitive;
        let mut runs: Vec<Vec<Unit>> = vec![Vec::new()];
        let bytes = pattern.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            i += 1;
            let unit = match b {
                b'*' => {
                    runs.push(Vec::new());
                    continue;
                }
                b'?' => Unit::Any,
                b'\\' if syntax == Syntax::Query && i < bytes.len() => {
                    i += 1;
                    Unit::Byte(bytes[i - 1])
                }
                b'%' if syntax == Syntax::Query => match decode_escape(&bytes[i - 1..]) {
                    Some(decoded) => {
                        i += 2;
                        Unit::Byte(decoded)
                    }
                    None => Unit::Byte(b),
                },
                _ => Unit::Byte(b),
            };
            let unit = match unit {
                Unit::Byte(b) if fold => Unit::Byte(b.to_ascii_lowercase()),
                u => u,
            };
            runs.last_mut().expect("runs is never empty").push(unit);
        }
        let starred = runs.len() > 1;
        let tail = if starred {
            runs.pop().expect("starred has two runs")
        } else {
            Vec::new()
        };
        let mut rest = runs.into_iter();
        let head = rest.next().expect("runs is never empty");
        let middle: Box<[Run]> = rest.filter(|run| !run.is_empty()).map(Run::new).collect();
        let min_len = head.len() + tail.len() + middle.iter().map(|m| m.len()).sum::<usize>();
        Glob {
            head: Run::new(head),
            middle,
            tail: Run::new(tail),
            starred,
            fold,
            min_len,
        }
    }

    /// Whether the whole of `text` matches the pattern.
    pub(crate) fn matches<T: Text>(&self, text: T) -> bool {
        let len = text.remaining();
        if !self.starred {
            return len == self.head.len() && self.eat(&self.head, &mut text.clone());
        }
        if len < self.min_len {
            return false;
        }
        // The tail first: it rejects `*.example.com`-style patterns cheapest.
        let mut tail = text.clone();
        tail.advance(len - self.tail.len());
        if !self.eat(&self.tail, &mut tail) {
            return false;
        }
        let mut text = text;
        if !self.eat(&self.head, &mut text) {
            return false;
        }
        // Bytes between head and tail the middle runs may use.
        let mut room = len - self.head.len() - self.tail.len();
        for run in self.middle.iter() {
            loop {
                if room < run.len() {
                    return false;
                }
                let mut probe = text.clone();
                if self.eat(run, &mut probe) {
                    text = probe;
                    room -= run.len();
                    break;
                }
                text.advance(1);
                room -= 1;
            }
        }
        true
    }

    /// Consumes `run.len()` bytes of `text`, reporting whether they all match.
    #[inline]
    fn eat<T: Text>(&self, run: &Run, text: &mut T) -> bool {
        if let Some(literal) = &run.literal {
            return text.eat_literal(literal, self.fold);
        }
        run.units.iter().all(|&unit| match text.next_byte() {
            None => false,
            Some(b) => match unit {
                Unit::Any => true,
                Unit::Byte(p) if self.fold => p == b.to_ascii_lowercase(),
                Unit::Byte(p) => p == b,
            },
        })
    }
}

/// Bytes to match, read forward. Cloning must be cheap (it marks a position).
pub(crate) trait Text: Clone {
    fn next_byte(&mut self) -> Option<u8>;
    /// How many bytes are left (may walk them).
    fn remaining(&self) -> usize;
    /// Skips `n` bytes (or to the end).
    fn advance(&mut self, n: usize);
    /// Consumes `literal.len()` bytes, reporting whether they equal `literal`
    /// (lower-case when `fold`, the text then compared folded).
    #[inline]
    fn eat_literal(&mut self, literal: &[u8], fold: bool) -> bool {
        literal.iter().all(|&p| {
            self.next_byte()
                .is_some_and(|b| p == if fold { b.to_ascii_lowercase() } else { b })
        })
    }
}

impl Text for &[u8] {
    #[inline]
    fn next_byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.split_first()?;
        *self = rest;
        Some(b)
    }

    #[inline]
    fn remaining(&self) -> usize {
        self.len()
    }

    #[inline]
    fn advance(&mut self, n: usize) {
        *self = &self[n.min(self.len())..];
    }

    #[inline]
    fn eat_literal(&mut self, literal: &[u8], fold: bool) -> bool {
        let Some((head, rest)) = self.split_at_checked(literal.len()) else {
            *self = &[];
            return false;
        };
        *self = rest;
        if fold {
            head.eq_ignore_ascii_case(literal)
        } else {
            head == literal
        }
    }
}

/// A URI component read with `%HH` escapes decoded; a `%` not followed by two hex
/// digits stays literal, and `+` stays `+` (it means a space only in HTML forms).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PercentDecoded<'a>(pub(crate) &'a [u8]);

impl Text for PercentDecoded<'_> {
    #[inline]
    fn next_byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        if b == b'%' {
            if let Some(decoded) = decode_escape(self.0) {
                self.0 = &self.0[3..];
                return Some(decoded);
            }
        }
        self.0 = rest;
        Some(b)
    }

    fn remaining(&self) -> usize {
        let mut probe = *self;
        let mut n = 0;
        while probe.next_byte().is_some() {
            n += 1;
        }
        n
    }

    fn advance(&mut self, n: usize) {
        for _ in 0..n {
            if self.next_byte().is_none() {
                break;
            }
        }
    }
}

/// The byte `%HH` at the start of `s` encodes, if it is a valid escape.
fn decode_escape(s: &[u8]) -> Option<u8> {
    match s {
        [b'%', hi, lo, ..] => Some(hex(*hi)? << 4 | hex(*lo)?),
        _ => None,
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Matches a raw URI component, decoding escapes only when it has any.
#[inline]
pub(crate) fn matches_uri_component(glob: &Glob, raw: &[u8]) -> bool {
    if raw.contains(&b'%') {
        glob.matches(PercentDecoded(raw))
    } else {
        glob.matches(raw)
    }
}
