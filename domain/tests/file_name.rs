//! `FileName::parse`: what it keeps, what it changes, what it refuses and
//! why; and, over generated names, that it is idempotent and that nothing
//! it accepts holds a character it refuses.

use domain::document::{FileName, MAX_FILE_NAME_BYTES, MAX_FILE_NAME_CHARS};
use domain::DomainError;
use proptest::prelude::*;
use unicode_normalization::{is_nfc, UnicodeNormalization};

fn name(raw: &str) -> FileName {
    FileName::parse(raw).unwrap_or_else(|error| panic!("{raw:?} is a valid file name: {error}"))
}

/// The reason `raw` is refused for.
fn reason(raw: &str) -> String {
    match FileName::parse(raw) {
        Err(DomainError::Invalid {
            field: "file_name",
            reason,
        }) => reason,
        other => panic!("{raw:?} should be an invalid file_name, got {other:?}"),
    }
}

#[test]
fn names_are_trimmed_and_kept_as_written() {
    assert_eq!(name("  report.pdf\t").as_str(), "report.pdf");
    assert_eq!(name("..hidden").as_str(), "..hidden");
    assert_eq!(name(".bashrc").as_str(), ".bashrc");
    assert_eq!(name("résumé v2.PDF").as_str(), "résumé v2.PDF");
    assert_eq!(name("日本語のメモ.md").as_str(), "日本語のメモ.md");
    // right-to-left text is fine: only the invisible formatting characters are refused
    assert_eq!(name("שלום.txt").as_str(), "שלום.txt");
}

#[test]
fn names_are_normalised_to_nfc() {
    let decomposed = "re\u{301}sume\u{301}.txt";
    let composed = "r\u{e9}sum\u{e9}.txt";
    assert_eq!(name(decomposed).as_str(), composed);
    assert_eq!(name(decomposed), name(composed), "one name, one spelling");
    // combining marks in canonical order whatever order they came in
    assert_eq!(name("q\u{307}\u{323}.md"), name("q\u{323}\u{307}.md"));
}

#[test]
fn the_length_bounds_are_bytes_and_characters() {
    assert_eq!(
        name(&"a".repeat(MAX_FILE_NAME_CHARS)).as_str().len(),
        MAX_FILE_NAME_CHARS
    );
    assert!(reason(&"a".repeat(MAX_FILE_NAME_CHARS + 1)).contains("at most 200 characters"));
    // 127 two-byte characters: 254 bytes
    assert_eq!(name(&"é".repeat(127)).as_str().len(), 254);
    // 128 of them: 256 bytes although only 128 characters
    assert!(reason(&"é".repeat(128)).contains("at most 255 bytes"));
    // the bound holds for the normalised name: 100 decomposed é are 300
    // bytes as sent and 200 as stored
    assert_eq!(name(&"e\u{301}".repeat(100)).as_str().len(), 200);
    assert!(reason(&"a".repeat(300)).contains("not 300"));
    assert_eq!(MAX_FILE_NAME_BYTES, 255);
}

#[test]
fn every_refusal_says_why() {
    for (raw, expected) in [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("\u{3000}\t", "must not be empty"),
        (".", "dots only"),
        ("..", "dots only"),
        (" .. ", "dots only"),
        ("....", "dots only"),
        ("a/b.txt", "path separator"),
        ("../etc/passwd", "path separator"),
        ("a\\b.txt", "path separator"),
        ("..\\windows", "path separator"),
        ("nul\u{0}byte.txt", "control characters: U+0000 at character 4"),
        ("line\nbreak.txt", "control characters: U+000A"),
        ("tab\tinside.txt", "control characters: U+0009"),
        ("escape\u{1b}[31m.txt", "control characters: U+001B"),
        ("del\u{7f}.txt", "control characters: U+007F"),
        ("next\u{85}line.txt", "control characters: U+0085"),
        ("line\u{2028}separator.txt", "control characters: U+2028"),
        ("report\u{202e}txt.exe", "bidirectional formatting characters"),
        ("report\u{202a}.txt", "U+202A"),
        ("report\u{2066}.txt", "U+2066"),
        ("report\u{2069}.txt", "U+2069"),
        ("mark\u{200f}.txt", "U+200F"),
    ] {
        let reason = reason(raw);
        assert!(reason.contains(expected), "{raw:?}: {reason:?} should say {expected:?}");
        assert!(!reason.ends_with('.'), "{reason:?}");
    }
}

#[test]
fn the_extension_is_lowercase_and_dot_files_have_none() {
    assert_eq!(name("report.MD").extension().as_deref(), Some("md"));
    assert_eq!(name("archive.tar.GZ").extension().as_deref(), Some("gz"));
    assert_eq!(name(".bashrc").extension(), None);
    assert_eq!(name("Makefile").extension(), None);
}

/// Characters that stress every rule: letters of several scripts,
/// combining marks (NFC composes some, reorders others), characters with
/// canonical decompositions, whitespace of several kinds, dots, both
/// separators, controls, line separators and every bidi control.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::char::range('a', 'z'),
        2 => Just('.'),
        1 => prop::sample::select(vec![' ', '\t', '\u{a0}', '\u{2000}', '\u{3000}', '\u{feff}']),
        2 => prop::sample::select(vec!['\u{301}', '\u{323}', '\u{307}', '\u{308}', '\u{e9}', '\u{212b}', '\u{1e0b}', '\u{f900}', '\u{ac00}', '\u{1100}', '\u{1161}', 'ש', '日']),
        1 => prop::sample::select(vec!['/', '\\']),
        1 => prop::sample::select(vec!['\u{0}', '\n', '\u{1b}', '\u{7f}', '\u{85}', '\u{2028}', '\u{2029}']),
        1 => prop::sample::select(vec!['\u{61c}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}']),
        1 => any::<char>(),
    ]
}

fn tricky_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(tricky_char(), 0..24).prop_map(|chars| chars.into_iter().collect()),
        // around the length bounds
        1 => (prop::collection::vec(tricky_char(), 0..4), 190usize..260, prop::sample::select(vec!['a', 'é', '日', '\u{1f600}']))
            .prop_map(|(edge, count, filler)| edge.into_iter().chain(std::iter::repeat_n(filler, count)).collect()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_is_idempotent_on_its_own_output(raw in tricky_name()) {
        if let Ok(parsed) = FileName::parse(&raw) {
            prop_assert_eq!(FileName::parse(parsed.as_str()), Ok(parsed.clone()));
        }
    }

    #[test]
    fn a_parsed_name_holds_nothing_that_is_refused(raw in tricky_name()) {
        if let Ok(parsed) = FileName::parse(&raw) {
            let text = parsed.as_str();
            prop_assert!(!text.is_empty());
            prop_assert!(!text.chars().all(|c| c == '.'));
            prop_assert!(!text.contains(['/', '\\']), "{:?}", text);
            prop_assert!(!text.chars().any(|c| c.is_control() || ('\u{2028}'..='\u{2029}').contains(&c)), "{:?}", text);
            prop_assert!(!text.chars().any(|c| matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')), "{:?}", text);
            prop_assert!(text.len() <= MAX_FILE_NAME_BYTES);
            prop_assert!(text.chars().count() <= MAX_FILE_NAME_CHARS);
            prop_assert!(is_nfc(text), "{:?}", text);
            prop_assert_eq!(text, text.trim());
        }
    }

    #[test]
    fn canonically_equal_spellings_are_one_name(raw in tricky_name()) {
        let composed: String = raw.nfc().collect();
        let decomposed: String = raw.nfd().collect();
        prop_assert_eq!(FileName::parse(&composed), FileName::parse(&decomposed));
    }
}
