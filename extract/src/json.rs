//! JSON: flattened to `path: value` lines (`items[2].name: Ada`), one
//! block per member of a top-level object or element of a top-level
//! array. It is read as a stream, so memory follows the text written,
//! not the size of a parsed tree.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::output::Output;
use crate::text::decode_utf8_text;
use crate::{BlockKind, ExtractError, ExtractLimits, ExtractedText, Location};

pub(crate) fn extract(
    bytes: &[u8],
    limits: &ExtractLimits,
    format: &'static str,
) -> Result<ExtractedText, ExtractError> {
    let text = decode_utf8_text(bytes, limits, format)?;
    let mut flattener = Flattener {
        out: Output::new(limits, format),
        path: String::new(),
        block: String::new(),
        depth: 0,
        failure: None,
    };
    let mut deserializer = serde_json::Deserializer::from_str(&text);
    let parsed = Node {
        flattener: &mut flattener,
    }
    .deserialize(&mut deserializer)
    .and_then(|()| deserializer.end());
    if let Some(failure) = flattener.failure.take() {
        return Err(failure);
    }
    if let Err(e) = parsed {
        // serde_json refuses to recurse past 128 levels on its own.
        if e.to_string().contains("recursion limit exceeded") {
            return Err(ExtractError::TooDeep {
                format,
                limit: limits.max_depth.min(128),
            });
        }
        return Err(ExtractError::malformed(format, e));
    }
    flattener.flush()?;
    Ok(flattener.out.finish(None))
}

struct Flattener<'l> {
    out: Output<'l>,
    /// The path of the value being read.
    path: String,
    /// The lines of the current top-level member.
    block: String,
    depth: usize,
    /// Why reading stopped, when it was a limit rather than the syntax:
    /// serde errors carry only a message, so the error itself waits here.
    failure: Option<ExtractError>,
}

impl Flattener<'_> {
    fn stop<E: serde::de::Error>(&mut self, failure: ExtractError) -> E {
        self.failure = Some(failure);
        E::custom("stopped")
    }

    fn line<E: serde::de::Error>(&mut self, value: fmt::Arguments<'_>) -> Result<(), E> {
        use fmt::Write;
        if let Err(e) = self.out.budget.check() {
            return Err(self.stop(e));
        }
        if !self.block.is_empty() {
            self.block.push('\n');
        }
        if !self.path.is_empty() {
            self.block.push_str(&self.path);
            self.block.push_str(": ");
        }
        // Writing into a String cannot fail.
        let _ = self.block.write_fmt(value);
        if self.block.len() > self.out.limits().max_text_bytes {
            let failure = self.out.text_too_large();
            return Err(self.stop(failure));
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ExtractError> {
        let block = std::mem::take(&mut self.block);
        self.out.push(BlockKind::Text, Location::default(), &block)
    }

    fn flush_member<E: serde::de::Error>(&mut self) -> Result<(), E> {
        if self.depth == 1 {
            if let Err(e) = self.flush() {
                return Err(self.stop(e));
            }
        }
        Ok(())
    }

    fn enter<E: serde::de::Error>(&mut self) -> Result<(), E> {
        self.depth += 1;
        if self.depth > self.out.limits().max_depth {
            let failure = ExtractError::TooDeep {
                format: self.out.format,
                limit: self.out.limits().max_depth,
            };
            return Err(self.stop(failure));
        }
        Ok(())
    }
}

fn is_plain_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|first| first.is_alphabetic() || first == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '-')
}

struct Node<'f, 'l> {
    flattener: &'f mut Flattener<'l>,
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any json value")
    }

    fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<(), E> {
        self.flattener.line(format_args!("{value}"))
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<(), E> {
        self.flattener.line(format_args!("{value}"))
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<(), E> {
        self.flattener.line(format_args!("{value}"))
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<(), E> {
        self.flattener.line(format_args!("{value}"))
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<(), E> {
        self.flattener.line(format_args!("{value}"))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.flattener.line(format_args!("null"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let flattener = self.flattener;
        flattener.enter()?;
        let mut index = 0usize;
        loop {
            let base = flattener.path.len();
            flattener.path.push_str(&format!("[{index}]"));
            let element = seq.next_element_seed(Node {
                flattener: &mut *flattener,
            })?;
            flattener.path.truncate(base);
            if element.is_none() {
                break;
            }
            flattener.flush_member()?;
            index += 1;
        }
        if index == 0 {
            flattener.line(format_args!("[]"))?;
        }
        flattener.depth -= 1;
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let flattener = self.flattener;
        flattener.enter()?;
        let mut members = 0usize;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let base = flattener.path.len();
            if is_plain_key(&key) {
                if !flattener.path.is_empty() {
                    flattener.path.push('.');
                }
                flattener.path.push_str(&key);
            } else {
                flattener.path.push('[');
                flattener
                    .path
                    .push_str(&serde_json::to_string(&key).unwrap_or_default());
                flattener.path.push(']');
            }
            map.next_value_seed(Node {
                flattener: &mut *flattener,
            })?;
            flattener.path.truncate(base);
            flattener.flush_member()?;
            members += 1;
        }
        if members == 0 {
            flattener.line(format_args!("{{}}"))?;
        }
        flattener.depth -= 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(json: &str) -> Vec<String> {
        let extracted = extract(json.as_bytes(), &ExtractLimits::default(), "json").unwrap();
        extracted
            .blocks
            .iter()
            .map(|block| extracted.text[block.range.clone()].to_owned())
            .collect()
    }

    #[test]
    fn members_flatten_to_paths_one_block_each() {
        assert_eq!(
            blocks(r#"{"title": "Report", "items": [{"name": "Ada", "n": 1.5}, true], "odd key": null, "e": {}}"#),
            [
                "title: Report",
                "items[0].name: Ada\nitems[0].n: 1.5\nitems[1]: true",
                "[\"odd key\"]: null",
                "e: {}",
            ]
        );
        assert_eq!(blocks("[1, [2, 3]]"), ["[0]: 1", "[1][0]: 2\n[1][1]: 3"]);
        assert_eq!(blocks("\"just text\""), ["just text"]);
    }

    #[test]
    fn depth_and_syntax_errors_have_their_codes() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        let err = extract(deep.as_bytes(), &ExtractLimits::default(), "json").unwrap_err();
        assert_eq!(err.code(), "too_deep", "{err}");
        let limits = ExtractLimits {
            max_depth: 3,
            ..ExtractLimits::default()
        };
        let err = extract(b"[[[[1]]]]", &limits, "json").unwrap_err();
        assert_eq!(err.to_string(), "the json nests more than 3 levels deep");
        let err = extract(b"{\"a\": ", &ExtractLimits::default(), "json").unwrap_err();
        assert_eq!(err.code(), "malformed");
        assert!(
            err.to_string().starts_with("the json is damaged: EOF while parsing"),
            "{err}"
        );
    }
}
