//! HTML: tokenized as a browser does (html5ever's tokenizer: character
//! references, raw text of scripts and styles), with our own light tree
//! of open elements on top, so that nesting depth and time stay bounded
//! (a full tree builder scans its stack of open elements per tag, which
//! 100k nested elements turn quadratic). Headings h1–h6 become headings,
//! block elements (paragraphs, list items, table rows, divs) blocks;
//! script, style, noscript, template and the head's title are skipped.

use std::cell::RefCell;

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{BufferQueue, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts};
use html5ever::TokenizerResult;

use crate::output::{push_collapsed, Output};
use crate::text::decode_utf8_text;
use crate::{BlockKind, ExtractError, ExtractLimits, ExtractedText, Location};

pub(crate) fn extract(
    bytes: &[u8],
    limits: &ExtractLimits,
    format: &'static str,
) -> Result<ExtractedText, ExtractError> {
    let text = decode_utf8_text(bytes, limits, format)?;
    let sink = Sink {
        state: RefCell::new(State {
            out: Output::new(limits, format),
            open: Vec::new(),
            skipping: 0,
            preformatted: 0,
            buffer: String::new(),
            heading: None,
            failure: None,
        }),
    };
    let tokenizer = Tokenizer::new(sink, TokenizerOpts::default());
    let input = BufferQueue::default();
    // Fed in pieces so that a limit hit early stops the work early.
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let mut cut = rest.len().min(64 * 1024);
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        let (piece, after) = rest.split_at(cut);
        rest = after;
        input.push_back(StrTendril::from_slice(piece));
        while let TokenizerResult::Script(()) = tokenizer.feed(&input) {}
        let state = tokenizer.sink.state.borrow();
        if state.failure.is_some() {
            break;
        }
        if let Err(e) = state.out.budget.check() {
            drop(state);
            tokenizer.sink.state.borrow_mut().failure = Some(e);
            break;
        }
    }
    let stopped = tokenizer.sink.state.borrow().failure.is_some();
    if !stopped {
        tokenizer.end();
    }
    let mut state = tokenizer.sink.state.into_inner();
    if let Some(failure) = state.failure.take() {
        return Err(failure);
    }
    state.flush()?;
    Ok(state.out.finish(None))
}

struct Sink<'l> {
    state: RefCell<State<'l>>,
}

struct State<'l> {
    out: Output<'l>,
    /// Names of the open elements, innermost last.
    open: Vec<String>,
    /// Open elements whose content is not text (script, style, …).
    skipping: usize,
    preformatted: usize,
    /// Text of the block being read.
    buffer: String,
    heading: Option<u8>,
    failure: Option<ExtractError>,
}

const SKIPPED: &[&str] = &[
    "script", "style", "noscript", "template", "title", "textarea", "svg", "math",
];

const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr",
];

/// Elements whose text is a block of its own.
const BLOCKS: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "body",
    "caption",
    "dd",
    "details",
    "dialog",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hgroup",
    "hr",
    "html",
    "li",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "tbody",
    "tfoot",
    "thead",
    "tr",
    "ul",
];

/// Start tags that close an open `p`, as the parsing spec says.
const CLOSES_P: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "details",
    "dialog",
    "div",
    "dl",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hgroup",
    "hr",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "ul",
    "li",
    "dd",
    "dt",
];

fn heading_level(name: &str) -> Option<u8> {
    match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}

impl State<'_> {
    fn flush(&mut self) -> Result<(), ExtractError> {
        let kind = match self.heading {
            Some(level) => BlockKind::Heading { level },
            None => BlockKind::Text,
        };
        let result = self.out.push(kind, Location::default(), &self.buffer);
        self.buffer.clear();
        result
    }

    /// Closes the innermost open `name` (and what is open inside it), if
    /// one is open before any of `boundaries`.
    fn close(&mut self, name: &str, boundaries: &[&str]) -> Result<(), ExtractError> {
        let found = self
            .open
            .iter()
            .rposition(|open| open == name || boundaries.contains(&open.as_str()));
        match found {
            Some(index) if self.open[index] == name => self.pop_to(index),
            _ => Ok(()),
        }
    }

    fn pop_to(&mut self, index: usize) -> Result<(), ExtractError> {
        while self.open.len() > index {
            let Some(name) = self.open.pop() else { break };
            if SKIPPED.contains(&name.as_str()) {
                self.skipping = self.skipping.saturating_sub(1);
            } else if name == "pre" {
                self.preformatted = self.preformatted.saturating_sub(1);
            }
            if heading_level(&name).is_some() {
                self.flush()?;
                self.heading = None;
            } else if BLOCKS.contains(&name.as_str()) {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn start(&mut self, name: &str, self_closing: bool) -> Result<TokenSinkResult<()>, ExtractError> {
        if name == "br" {
            if self.skipping == 0 {
                self.buffer.push('\n');
            }
            return Ok(TokenSinkResult::Continue);
        }
        if CLOSES_P.contains(&name) {
            self.close("p", &["button", "table", "td", "th"])?;
        }
        match name {
            "li" => self.close("li", &["ul", "ol"])?,
            "dd" | "dt" => {
                self.close("dd", &["dl"])?;
                self.close("dt", &["dl"])?;
            }
            "td" | "th" => {
                self.close("td", &["tr", "table"])?;
                self.close("th", &["tr", "table"])?;
            }
            "tr" => self.close("tr", &["table"])?,
            "option" => self.close("option", &["select"])?,
            _ => {}
        }
        if VOID.contains(&name) || (self_closing && !SKIPPED.contains(&name)) {
            if name == "hr" || name == "img" {
                self.flush()?;
            }
            return Ok(TokenSinkResult::Continue);
        }
        if BLOCKS.contains(&name) {
            self.flush()?;
        }
        if (name == "td" || name == "th") && !self.buffer.trim().is_empty() {
            self.buffer.push_str(" | ");
        }
        if let Some(level) = heading_level(name) {
            self.flush()?;
            self.heading = Some(level);
        }
        self.open.push(name.to_owned());
        if self.open.len() > self.out.limits().max_depth {
            return Err(ExtractError::TooDeep {
                format: self.out.format,
                limit: self.out.limits().max_depth,
            });
        }
        Ok(match name {
            "pre" => {
                self.preformatted += 1;
                TokenSinkResult::Continue
            }
            "script" => {
                self.skipping += 1;
                TokenSinkResult::RawData(RawKind::ScriptData)
            }
            "style" | "noscript" | "svg" | "math" | "template" => {
                self.skipping += 1;
                if name == "style" || name == "noscript" {
                    TokenSinkResult::RawData(RawKind::Rawtext)
                } else {
                    TokenSinkResult::Continue
                }
            }
            "title" | "textarea" => {
                self.skipping += 1;
                TokenSinkResult::RawData(RawKind::Rcdata)
            }
            _ => TokenSinkResult::Continue,
        })
    }

    fn end(&mut self, name: &str) -> Result<(), ExtractError> {
        if let Some(index) = self.open.iter().rposition(|open| open == name) {
            self.pop_to(index)?;
        }
        Ok(())
    }

    fn characters(&mut self, text: &str) -> Result<(), ExtractError> {
        if self.skipping > 0 {
            return Ok(());
        }
        if self.preformatted > 0 {
            self.buffer.push_str(text);
        } else {
            push_collapsed(&mut self.buffer, text);
        }
        if self.buffer.len() > self.out.limits().max_text_bytes {
            return Err(self.out.text_too_large());
        }
        Ok(())
    }
}

impl TokenSink for Sink<'_> {
    type Handle = ();

    fn process_token(&self, token: Token, _line_number: u64) -> TokenSinkResult<()> {
        let mut state = self.state.borrow_mut();
        if state.failure.is_some() {
            return TokenSinkResult::Continue;
        }
        let result = match token {
            Token::TagToken(tag) => {
                let name = tag.name.to_ascii_lowercase();
                match tag.kind {
                    TagKind::StartTag => state.start(&name, tag.self_closing),
                    TagKind::EndTag => state.end(&name).map(|()| TokenSinkResult::Continue),
                }
            }
            Token::CharacterTokens(text) => state.characters(&text).map(|()| TokenSinkResult::Continue),
            Token::EOFToken => state.pop_to(0).map(|()| TokenSinkResult::Continue),
            _ => Ok(TokenSinkResult::Continue),
        };
        result.unwrap_or_else(|failure| {
            state.failure = Some(failure);
            TokenSinkResult::Continue
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(html: &str) -> Vec<(String, BlockKind)> {
        let extracted = extract(html.as_bytes(), &ExtractLimits::default(), "html page").unwrap();
        extracted
            .blocks
            .iter()
            .map(|block| (extracted.text[block.range.clone()].to_owned(), block.kind))
            .collect()
    }

    #[test]
    fn headings_paragraphs_and_rows_are_blocks_and_scripts_are_skipped() {
        let html = "<!doctype html><html><head><title>T</title><style>p{}</style>\
            <script>if (a<b) { document.write('<p>x</p>') }</script></head><body>\
            <h1>Main &amp; title</h1><p>First   para<br>next line<p>Second<div>in div</div>\
            <h2>Sub</h2><ul><li>one<li>two</ul><table><tr><td>a<td>b<tr><th>c</th></table>\
            <noscript>enable js</noscript><pre>  keep\n  this</pre></body></html>";
        let text = |s: &str| (s.to_owned(), BlockKind::Text);
        assert_eq!(
            blocks(html),
            [
                ("Main & title".to_owned(), BlockKind::Heading { level: 1 }),
                text("First para\nnext line"),
                text("Second"),
                text("in div"),
                ("Sub".to_owned(), BlockKind::Heading { level: 2 }),
                text("one"),
                text("two"),
                text("a | b"),
                text("c"),
                text("keep\n  this"),
            ]
        );
    }

    #[test]
    fn deep_nesting_is_too_deep() {
        let html = "<div>".repeat(100_000);
        let err = extract(html.as_bytes(), &ExtractLimits::default(), "html page").unwrap_err();
        assert_eq!(err.code(), "too_deep");
        assert_eq!(err.to_string(), "the html page nests more than 128 levels deep");
        // unclosed paragraphs and list items do not nest
        let html = "<p>a".repeat(10_000) + &"<li>b".repeat(10_000);
        assert!(extract(html.as_bytes(), &ExtractLimits::default(), "html page").is_ok());
    }
}
