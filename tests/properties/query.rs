//! The ELBv2 Query API's form decoder: [`Params::parse`] over a query string and a
//! form-encoded body, and what the handlers read from it.

use albatross::admin::query::Params;
use proptest::prelude::*;

/// Form text: keys and values of the shapes the API uses, separators, escapes (valid
/// or not) and any characters.
fn form_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => "[A-Za-z0-9]{1,6}",
        2 => prop::sample::select(vec![".member.", ".", "=", "&", "+", "%", "%2", "%3D", "%26", "%FF", "%zz", "-1", "9223372036854775808", "true", "false"])
            .prop_map(str::to_string),
        1 => any::<String>(),
    ];
    prop::collection::vec(piece, 0..20).prop_map(|p| p.concat())
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The value AWS reads for `key`: the last one given, decoded the way forms are.
fn last_value(query: Option<&str>, body: &[u8], key: &str) -> Option<String> {
    let q = query.map(|q| {
        form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect::<Vec<_>>()
    });
    let b: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    q.into_iter()
        .flatten()
        .chain(b)
        .rfind(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// Field names of one structure: distinct, no dots.
fn fields() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::btree_map("[A-Z][A-Za-z]{0,7}", any::<String>(), 0..4)
        .prop_map(|m| m.into_iter().collect())
}

proptest! {
    #![proptest_config(crate::config())]

    /// Any query string and body: parsing and every accessor return without panicking;
    /// `int` is a value within its range or a validation error, `bool` true, false or
    /// a validation error, each agreeing with the last value given for the key.
    #[test]
    fn query_any_form(
        query in prop::option::of(form_text()),
        body in prop_oneof![form_text().prop_map(String::into_bytes), prop::collection::vec(any::<u8>(), 0..100)],
        key in prop_oneof![Just("Port".to_string()), Just("Targets".to_string()), "[A-Za-z.0-9]{0,10}"],
        lo in -10i64..10,
        span in 0i64..100_000,
    ) {
        let p = Params::parse(query.as_deref(), &body);
        let last = last_value(query.as_deref(), &body, &key);
        prop_assert_eq!(p.get(&key), last.as_deref());
        let _ = p.has(&key);
        let _ = p.required(&key);
        let _ = p.list(&key);
        let _ = p.structure(&key).get("Id");
        for m in p.members(&key) {
            let _ = m.get("Id");
        }
        let hi = lo + span;
        match p.int(&key, lo, hi) {
            Ok(None) => prop_assert!(last.is_none()),
            Ok(Some(n)) => {
                prop_assert!((lo..=hi).contains(&n));
                prop_assert_eq!(last.as_deref().map(str::parse::<i64>), Some(Ok(n)));
            }
            Err(e) => {
                prop_assert_eq!((e.status, e.code), (400, "ValidationError"));
                let v = last.as_deref().expect("an error only for a value");
                prop_assert!(v.parse::<i64>().map_or(true, |n| !(lo..=hi).contains(&n)));
            }
        }
        match p.bool(&key) {
            Ok(b) => prop_assert_eq!(b, last.as_deref().map(|v| v == "true")),
            Err(e) => {
                prop_assert_eq!((e.status, e.code), (400, "ValidationError"));
                prop_assert!(!matches!(last.as_deref(), Some("true" | "false") | None));
            }
        }
    }

    /// `Key.member.N.Field=value` forms, in any order, split between the query string
    /// and the body: `members` gives back the structures in the order of N, each with
    /// exactly its fields; `list` does the same for `Key.member.N=value`, and
    /// `structure` for `Key.Field=value`.
    #[test]
    fn query_members_round_trip(
        structures in prop::collection::vec(fields(), 0..5),
        gaps in prop::collection::vec(1usize..4, 5),
        items in prop::collection::vec(any::<String>(), 0..5),
        top in fields(),
        order in any::<u64>(),
        split in any::<prop::sample::Index>(),
    ) {
        // Indices rising with gaps (1, 3, 4, …), as a client may number them.
        let mut n = 0;
        let numbers: Vec<usize> = gaps.iter().map(|g| { n += g; n }).collect();
        let mut pairs: Vec<String> = Vec::new();
        for (s, n) in structures.iter().zip(&numbers) {
            for (f, v) in s {
                pairs.push(format!("Targets.member.{n}.{f}={}", encode(v)));
            }
        }
        for (v, n) in items.iter().zip(&numbers) {
            pairs.push(format!("Names.member.{n}={}", encode(v)));
        }
        for (f, v) in &top {
            pairs.push(format!("Attributes.{f}={}", encode(v)));
        }
        // A fixed shuffle from `order`, then a split point between query and body.
        let mut rng = order;
        for i in (1..pairs.len()).rev() {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            pairs.swap(i, (rng >> 33) as usize % (i + 1));
        }
        let at = split.index(pairs.len() + 1);
        let query = pairs[..at].join("&");
        let body = pairs[at..].join("&");
        let p = Params::parse(Some(&query), body.as_bytes());

        let got = p.members("Targets");
        let want: Vec<&Vec<(String, String)>> = structures.iter().filter(|s| !s.is_empty()).collect();
        prop_assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            for (f, v) in w {
                prop_assert_eq!(g.get(f), Some(v.as_str()));
            }
            prop_assert_eq!(g.get("Missing"), None);
        }
        prop_assert_eq!(p.list("Names"), items.iter().map(String::as_str).collect::<Vec<_>>());
        let s = p.structure("Attributes");
        for (f, v) in &top {
            prop_assert_eq!(s.get(f), Some(v.as_str()));
        }
    }
}
