//! A large portfolio's accounts read in two halves at once.
//!
//! Reading a 100,000-account file is most of a batch run's serial time. The text is cut near
//! its middle at what looks like the start of an account (`}` `,` `{` and one of an account's
//! fields, whitespace allowed), and both halves are read at once, account by account. The cut is only trusted if the first
//! half, read from the start, arrives exactly at it after a comma: then it is where an account
//! begins, and the second half is read exactly as a reading from the start would read it.
//! A cut inside a string is passed over by the first half, which then reads on to the end
//! alone. A file of another shape, or an error anywhere, gives `None`, and the caller reads
//! the file whole, which also words the error.

use serde::de::DeserializeOwned;

/// Files smaller than this are read whole: the cut would save less than it costs.
const WORTH_IT: usize = 1 << 20;

/// The elements of the array under the file's only key `key` (`{ "key": [ ... ] }`), objects
/// with the given `fields`, read in two halves at once; `None` where the file is small, of
/// another shape, or refused.
pub(crate) fn read_in_halves<T: DeserializeOwned + Send>(
    text: &str,
    key: &str,
    fields: &[&str],
) -> Option<Vec<T>> {
    if text.len() < WORTH_IT {
        return None;
    }
    let bytes = text.as_bytes();
    let start = array_start(bytes, key)?;
    let end = array_end(bytes)?;
    let cut = cut_near(bytes, start + (end - start) / 2, end, fields)?;
    let (first, second) = rayon::join(
        || read_until(text, start, Some(cut), end),
        || read_until(text, cut, None, end),
    );
    match first? {
        // The first half read on past the cut, to the end: it holds every element.
        (items, true) => Some(items),
        (mut items, false) => {
            items.extend(second?.0);
            Some(items)
        }
    }
}

/// JSON's whitespace (not ASCII's: a form feed is not JSON whitespace).
fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

fn skip_space(bytes: &[u8], mut at: usize) -> usize {
    while at < bytes.len() && is_space(bytes[at]) {
        at += 1;
    }
    at
}

/// Just after the `[` of `{ "key": [`, or `None` for any other opening.
fn array_start(bytes: &[u8], key: &str) -> Option<usize> {
    let quoted = format!("\"{key}\"");
    let mut at = skip_space(bytes, 0);
    for token in [b"{".as_slice(), quoted.as_bytes(), b":", b"["] {
        at = skip_space(bytes, at);
        if !bytes[at..].starts_with(token) {
            return None;
        }
        at += token.len();
    }
    Some(at)
}

/// The `]` of a file ending `] }` (whitespace allowed), or `None`.
fn array_end(bytes: &[u8]) -> Option<usize> {
    let mut at = bytes.len();
    for token in [b'}', b']'] {
        while at > 0 && is_space(bytes[at - 1]) {
            at -= 1;
        }
        if at == 0 || bytes[at - 1] != token {
            return None;
        }
        at -= 1;
    }
    Some(at)
}

/// The first `{` at or after `from` (before `end`) that follows `}` and `,` and opens with
/// one of an element's `fields` (an element's own objects, a position within an account,
/// follow `}` and `,` too).
fn cut_near(bytes: &[u8], from: usize, end: usize, fields: &[&str]) -> Option<usize> {
    let keys: Vec<String> = fields.iter().map(|f| format!("\"{f}\"")).collect();
    let opens_element = |open: usize| {
        let at = skip_space(bytes, open + 1);
        keys.iter().any(|key| {
            bytes[at..end].starts_with(key.as_bytes())
                && bytes.get(skip_space(bytes, at + key.len())) == Some(&b':')
        })
    };
    let mut at = from;
    while at < end {
        if bytes[at] == b'}' {
            let comma = skip_space(bytes, at + 1);
            if comma < end && bytes[comma] == b',' {
                let open = skip_space(bytes, comma + 1);
                if open < end && bytes[open] == b'{' && opens_element(open) {
                    return Some(open);
                }
            }
        }
        at += 1;
    }
    None
}

/// The comma-separated elements from `from` on: up to `cut` if a comma and whitespace lead
/// exactly to it (`false`), else up to the array's closing `]` at `end` (`true`).
fn read_until<T: DeserializeOwned>(
    text: &str,
    from: usize,
    cut: Option<usize>,
    end: usize,
) -> Option<(Vec<T>, bool)> {
    let bytes = text.as_bytes();
    let mut items = Vec::new();
    let mut at = skip_space(bytes, from);
    if at == end {
        return Some((items, true));
    }
    loop {
        let mut stream = serde_json::Deserializer::from_str(&text[at..end]).into_iter::<T>();
        items.push(stream.next()?.ok()?);
        at = skip_space(bytes, at + stream.byte_offset());
        if at == end {
            return Some((items, true));
        }
        if at > end || bytes[at] != b',' {
            return None;
        }
        at = skip_space(bytes, at + 1);
        if Some(at) == cut {
            return Some((items, false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Item {
        id: String,
        #[serde(default)]
        nested: Vec<serde_json::Value>,
    }

    fn whole(text: &str) -> Option<Vec<Item>> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            accounts: Vec<Item>,
        }
        serde_json::from_str::<File>(text).ok().map(|f| f.accounts)
    }

    fn file(items: &[String]) -> String {
        format!("{{ \"accounts\": [\n{}\n] }}\n", items.join(",\n"))
    }

    #[test]
    fn halves_read_what_the_whole_file_reads() {
        // Strings holding `}, {"id":` (escaped) and nested objects that open like an element
        // (a false cut): wherever the cut lands, the halves agree with a whole reading.
        for tricky in [0usize, 1, 7] {
            let items: Vec<String> = (0..100_000)
                .map(|i| match (tricky > 0 && i % tricky == 0, i % 2) {
                    (true, 0) => format!(r#"{{ "id": "a{i} }}, {{\"id\": 1" }}"#),
                    (true, _) => {
                        format!(r#"{{ "id": "a{i}", "nested": [ {{ "id": 1 }}, {{ "id": 2 }} ] }}"#)
                    }
                    _ => format!(r#"{{"id":"a{i}"}}"#),
                })
                .collect();
            let text = file(&items);
            assert!(text.len() > WORTH_IT);
            let halves =
                read_in_halves::<Item>(&text, "accounts", &["id"]).expect("read in halves");
            assert_eq!(Some(&halves), whole(&text).as_ref());
            assert_eq!(halves.len(), 100_000);
        }
    }

    #[test]
    fn a_file_of_another_shape_or_with_an_error_is_left_to_the_whole_reading() {
        let items: Vec<String> = (0..100_000)
            .map(|i| format!(r#"{{"id":"a{i}"}}"#))
            .collect();
        let good = file(&items);
        assert!(read_in_halves::<Item>(&good, "accounts", &["id"]).is_some());
        let mut bad_late = items.clone();
        bad_late[80_000] = r#"{"id":"x","extra":1}"#.into();
        let mut bad_early = items.clone();
        bad_early[10] = r#"{"id":7}"#.into();
        for text in [
            good.replace("\"accounts\"", "\"others\""),
            good.replace("] }", "], \"more\": 1 }"),
            good.replacen(",\n", ",,\n", 1),
            file(&bad_late),
            file(&bad_early),
            format!("{} x", good),
            good.replacen(",\n", ",\x0c\n", 1),
        ] {
            assert!(read_in_halves::<Item>(&text, "accounts", &["id"]).is_none());
        }
        // Small files are read whole.
        assert!(read_in_halves::<Item>(&file(&items[..10]), "accounts", &["id"]).is_none());
    }
}
