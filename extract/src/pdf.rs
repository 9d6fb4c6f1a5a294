//! PDF: the text of each page's content stream (lopdf, pure Rust), read
//! one operation at a time so that a page of millions of operators costs
//! no more memory than its text. Lines set in a font clearly larger than
//! the body's are headings (the largest size level 1, the next level 2, …);
//! the other lines of a page form its body blocks; every block carries its
//! page, and `pages` is the page count.
//!
//! Codes become text through a font's ToUnicode map when it has one, else
//! through its encoding. Text drawn by form XObjects (headers and footers,
//! pages placed from another file) is read where the form is drawn, with
//! the form's own fonts; forms are followed a bounded number of times per
//! page, never into themselves.
//!
//! Every stream lopdf unpacks (object streams while loading, page content,
//! forms and font encodings while reading) is bounded by `max_stream_bytes`.

use std::collections::{BTreeMap, HashMap};

use lopdf::content::Content;
use lopdf::{DecompressError, Dictionary, Document, Encoding, LoadOptions, Object, ObjectId};

use crate::output::{Budget, Output};
use crate::{describe_bytes, BlockKind, ExtractError, ExtractLimits, ExtractedText, Location};

pub(crate) fn extract(
    bytes: &[u8],
    limits: &ExtractLimits,
    format: &'static str,
) -> Result<ExtractedText, ExtractError> {
    let budget = Budget::start(limits, format);
    let options = LoadOptions::with_max_decompressed_size(limits.max_stream_bytes);
    let document = Document::load_mem_with_options(bytes, options).map_err(|e| error(format, limits, e))?;
    // lopdf decrypts a file whose user password is empty (only printing
    // or copying restricted) and leaves /Encrypt for one that needs a
    // password.
    if document.trailer.has(b"Encrypt") {
        return Err(ExtractError::Encrypted { format });
    }
    let pages = document.get_pages();
    if pages.len() > limits.max_pages as usize {
        return Err(ExtractError::too_large(
            format,
            format!("has {} pages; at most {} are read", pages.len(), limits.max_pages),
        ));
    }
    budget.check()?;

    let mut lines: Vec<Line> = Vec::new();
    let mut text_bytes = 0usize;
    let mut first_error: Option<lopdf::Error> = None;
    // shared by every page: pages share their fonts, and a ToUnicode map is
    // parsed once, not once a page
    let mut encodings = Encodings::new();
    for (&number, &page_id) in &pages {
        budget.check()?;
        let before = lines.len();
        if let Err(e) = page_lines(&document, page_id, number, limits, &budget, &mut lines, &mut encodings) {
            if let lopdf::Error::Decompress(DecompressError::MemoryLimitExceeded { .. }) = e {
                return Err(stream_too_large(format, limits));
            }
            first_error.get_or_insert(e);
        }
        text_bytes += lines[before..].iter().map(|line| line.text.len()).sum::<usize>();
        if text_bytes > limits.max_text_bytes {
            return Err(Output::new(limits, format).text_too_large());
        }
    }
    if lines.iter().all(|line| line.text.trim().is_empty()) {
        if let Some(e) = first_error {
            return Err(ExtractError::malformed(format, e));
        }
        // A file cut short still loads (its objects are found by scanning),
        // but "no text" would blame the file's content, not its damage.
        if document.xref_recovery.is_some() {
            return Err(ExtractError::malformed(
                format,
                "its cross-reference table is missing or broken (is the file truncated?) and no text could be read",
            ));
        }
    }

    let levels = heading_sizes(&lines);
    let mut out = Output::new(limits, format);
    let mut body = String::new();
    let mut body_page = 0;
    for line in &lines {
        let level = levels
            .iter()
            .position(|size| (line.size - size).abs() < 0.01)
            .filter(|_| line.text.trim().chars().count() <= 200);
        if line.page != body_page || level.is_some() {
            out.push(BlockKind::Text, page_location(body_page), &body)?;
            body.clear();
            body_page = line.page;
        }
        match level {
            Some(rank) => out.push(
                BlockKind::Heading {
                    level: (rank + 1) as u8,
                },
                page_location(line.page),
                &line.text,
            )?,
            None => {
                if !body.is_empty() {
                    body.push('\n');
                }
                body.push_str(line.text.trim());
            }
        }
    }
    out.push(BlockKind::Text, page_location(body_page), &body)?;
    Ok(out.finish(Some(pages.len() as u32)))
}

fn page_location(page: u32) -> Location {
    Location {
        page: Some(page),
        ..Location::default()
    }
}

/// A line of text as set on a page, with the size of its largest glyphs.
struct Line {
    page: u32,
    text: String,
    size: f32,
}

/// The font sizes that mark headings, largest first: sizes clearly above
/// the body's (the size most characters are set in), at most six.
fn heading_sizes(lines: &[Line]) -> Vec<f32> {
    let mut characters: BTreeMap<u32, usize> = BTreeMap::new();
    for line in lines {
        *characters.entry(line.size.to_bits()).or_default() += line.text.trim().chars().count();
    }
    let Some(body) = characters
        .iter()
        .max_by_key(|(_, count)| **count)
        .map(|(size, _)| f32::from_bits(*size))
    else {
        return Vec::new();
    };
    let mut sizes: Vec<f32> = characters
        .keys()
        .map(|size| f32::from_bits(*size))
        .filter(|size| *size > body * 1.15)
        .collect();
    sizes.sort_by(|a, b| b.total_cmp(a));
    sizes.truncate(6);
    sizes
}

fn number(object: &Object) -> Option<f32> {
    match object {
        Object::Integer(n) => Some(*n as f32),
        Object::Real(n) => Some(*n),
        _ => None,
    }
}

/// The most form XObjects one page may draw, counting every use: a form
/// drawn by a form drawn by a form multiplies, and a crafted file could
/// otherwise make a page of a few bytes cost hours.
const MAX_FORMS_PER_PAGE: usize = 4096;

/// How deep forms may draw forms; real files nest two or three.
const MAX_FORM_DEPTH: usize = 12;

/// The named resources content is drawn with: its fonts, and its
/// XObjects (forms hold text too, often a page's header and footer or, in
/// pages placed from another file, all of it).
#[derive(Default)]
struct Resources<'d> {
    fonts: BTreeMap<Vec<u8>, &'d Dictionary>,
    xobjects: BTreeMap<Vec<u8>, ObjectId>,
}

impl<'d> Resources<'d> {
    /// A page's resources: its own, then those it inherits from the page tree.
    fn of_page(document: &'d Document, page_id: ObjectId) -> Result<Resources<'d>, lopdf::Error> {
        let (direct, referenced) = document.get_page_resources(page_id)?;
        let mut resources = Resources::default();
        if let Some(dictionary) = direct {
            resources.add(document, dictionary);
        }
        for id in referenced {
            if let Ok(dictionary) = document.get_dictionary(id) {
                resources.add(document, dictionary);
            }
        }
        Ok(resources)
    }

    /// A form's resources: its own, then (for a form written without them,
    /// as older files do) those of what draws it.
    fn of_form(document: &'d Document, form: &'d Dictionary, outer: &Resources<'d>) -> Resources<'d> {
        let mut resources = Resources::default();
        if let Ok(dictionary) = document.get_dict_in_dict(form, b"Resources") {
            resources.add(document, dictionary);
        }
        for (name, font) in &outer.fonts {
            resources.fonts.entry(name.clone()).or_insert(font);
        }
        for (name, id) in &outer.xobjects {
            resources.xobjects.entry(name.clone()).or_insert(*id);
        }
        resources
    }

    /// Adds the entries of a resource dictionary that are not named yet.
    fn add(&mut self, document: &'d Document, dictionary: &'d Dictionary) {
        if let Ok(fonts) = document.get_dict_in_dict(dictionary, b"Font") {
            for (name, value) in fonts.iter() {
                let font = match value {
                    Object::Reference(id) => document.get_dictionary(*id).ok(),
                    Object::Dictionary(font) => Some(font),
                    _ => None,
                };
                if let Some(font) = font {
                    self.fonts.entry(name.clone()).or_insert(font);
                }
            }
        }
        if let Ok(xobjects) = document.get_dict_in_dict(dictionary, b"XObject") {
            for (name, value) in xobjects.iter() {
                if let Object::Reference(id) = value {
                    self.xobjects.entry(name.clone()).or_insert(*id);
                }
            }
        }
    }
}

/// Each font's encoding, read when text is first shown in it; keyed by the
/// font dictionary's address, which does not move while the document is
/// read. `None`: it could not be read, and its text is lost.
type Encodings<'d> = HashMap<*const Dictionary, Option<Encoding<'d>>>;

/// Reads the lines of one page: its content stream and the forms it draws.
struct PageReader<'d, 'a> {
    document: &'d Document,
    page: u32,
    limits: &'a ExtractLimits,
    budget: &'a Budget,
    lines: &'a mut Vec<Line>,
    encodings: &'a mut Encodings<'d>,
    font: Option<&'d Dictionary>,
    font_size: f32,
    scale: f32,
    line: Line,
    line_bytes: usize,
    forms_drawn: usize,
    /// The forms being read, innermost last: one that draws itself is not
    /// followed.
    open_forms: Vec<ObjectId>,
    /// Out of time or of text: the rest of the page is not read.
    stopped: bool,
}

fn page_lines<'d>(
    document: &'d Document,
    page_id: ObjectId,
    page: u32,
    limits: &ExtractLimits,
    budget: &Budget,
    lines: &mut Vec<Line>,
    encodings: &mut Encodings<'d>,
) -> Result<(), lopdf::Error> {
    let resources = Resources::of_page(document, page_id)?;
    let content = document.get_page_content_with_limit(page_id, limits.max_stream_bytes)?;
    let mut reader = PageReader {
        document,
        page,
        limits,
        budget,
        lines,
        encodings,
        font: None,
        font_size: 0.0,
        scale: 1.0,
        line: Line {
            page,
            text: String::new(),
            size: 0.0,
        },
        line_bytes: 0,
        forms_drawn: 0,
        open_forms: Vec::new(),
        stopped: false,
    };
    reader.read(&content, &resources)?;
    reader.end_line();
    Ok(())
}

impl<'d> PageReader<'d, '_> {
    fn end_line(&mut self) {
        if !self.line.text.trim().is_empty() {
            self.lines.push(Line {
                page: self.page,
                text: std::mem::take(&mut self.line.text),
                size: self.line.size,
            });
        }
        self.line.text.clear();
        self.line.size = 0.0;
    }

    fn encoding(&mut self, font: &'d Dictionary) -> Result<Option<&Encoding<'d>>, lopdf::Error> {
        let key: *const Dictionary = font;
        if !self.encodings.contains_key(&key) {
            let encoding = match self.to_unicode(font)? {
                Some(map) => Some(map),
                None => match font.get_font_encoding_with_limit(self.document, self.limits.max_stream_bytes) {
                    Ok(encoding) => Some(encoding),
                    Err(e @ lopdf::Error::Decompress(DecompressError::MemoryLimitExceeded { .. })) => return Err(e),
                    // A font whose encoding cannot be read loses its text, not the page's.
                    Err(_) => None,
                },
            };
            self.encodings.insert(key, encoding);
        }
        Ok(self.encodings.get(&key).and_then(Option::as_ref))
    }

    /// The font's ToUnicode map, which says what its codes mean as text
    /// and so comes before its `/Encoding` (as in poppler and pdf.js): the
    /// encoding selects glyphs, and a `/Differences` of glyph names lopdf
    /// does not know (Type 3 and re-encoded subset fonts) reads as the
    /// standard encoding, which is garbage. lopdf reads the map of a simple
    /// font only when it has no `/Encoding`, so a copy without one is asked.
    /// `None`: no map, or one that cannot be read.
    fn to_unicode(&self, font: &Dictionary) -> Result<Option<Encoding<'d>>, lopdf::Error> {
        if !font.has(b"ToUnicode") {
            return Ok(None);
        }
        let mut mapped = font.clone();
        mapped.remove(b"Encoding");
        match mapped.get_font_encoding_with_limit(self.document, self.limits.max_stream_bytes) {
            // the map owns what it holds, so it outlives the copy
            Ok(Encoding::UnicodeMapEncoding(map)) => Ok(Some(Encoding::UnicodeMapEncoding(map))),
            Err(e @ lopdf::Error::Decompress(DecompressError::MemoryLimitExceeded { .. })) => Err(e),
            Ok(_) | Err(_) => Ok(None),
        }
    }

    /// Reads one content stream drawn with `resources`; only a stream that
    /// unpacks past the limit is an error, a damaged one keeps the text read
    /// up to the damage.
    fn read(&mut self, content: &[u8], resources: &Resources<'d>) -> Result<(), lopdf::Error> {
        for (index, operation) in Content::decode_iter(content).enumerate() {
            if self.stopped || (index.is_multiple_of(4096) && self.budget.check().is_err()) {
                self.stopped = true;
                break;
            }
            let Ok(operation) = operation else { break };
            let operands = &operation.operands;
            match operation.operator.as_str() {
                "Tf" => {
                    self.font = operands
                        .first()
                        .and_then(|name| name.as_name().ok())
                        .and_then(|name| resources.fonts.get(name).copied());
                    self.font_size = operands.get(1).and_then(number).unwrap_or(self.font_size);
                }
                "Tm" => {
                    self.end_line();
                    let (b, d) = (
                        operands.get(1).and_then(number).unwrap_or(0.0),
                        operands.get(3).and_then(number).unwrap_or(1.0),
                    );
                    self.scale = (b * b + d * d).sqrt();
                }
                "Td" | "TD" => {
                    let dy = operands.get(1).and_then(number).unwrap_or(0.0);
                    if dy.abs() > 0.01 {
                        self.end_line();
                    } else if !self.line.text.is_empty() && !self.line.text.ends_with(' ') {
                        self.line.text.push(' ');
                    }
                }
                "T*" | "ET" => self.end_line(),
                "Tj" | "TJ" | "'" | "\"" => {
                    if matches!(operation.operator.as_str(), "'" | "\"") {
                        self.end_line();
                    }
                    let shown = if operation.operator == "\"" {
                        operands.get(2..).unwrap_or_default()
                    } else {
                        &operands[..]
                    };
                    let Some(font) = self.font else { continue };
                    let size = (self.font_size * self.scale).abs();
                    let mut text = std::mem::take(&mut self.line.text);
                    let before = text.len();
                    if let Some(encoding) = self.encoding(font)? {
                        collect_text(&mut text, encoding, shown, 0);
                    }
                    self.line_bytes += text.len() - before;
                    if text.len() > before {
                        self.line.size = self.line.size.max(size);
                    }
                    self.line.text = text;
                    if self.line_bytes > self.limits.max_text_bytes {
                        self.stopped = true;
                    }
                }
                "Do" => {
                    let form = operands
                        .first()
                        .and_then(|name| name.as_name().ok())
                        .and_then(|name| resources.xobjects.get(name).copied());
                    if let Some(form) = form {
                        self.draw_form(form, resources)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads a form XObject where it is drawn. The form runs in a graphics
    /// state of its own, so the font chosen before it is the font after it.
    fn draw_form(&mut self, id: ObjectId, outer: &Resources<'d>) -> Result<(), lopdf::Error> {
        if self.open_forms.len() >= MAX_FORM_DEPTH
            || self.open_forms.contains(&id)
            || self.forms_drawn >= MAX_FORMS_PER_PAGE
        {
            return Ok(());
        }
        // An image is an XObject too; only forms have text.
        let Ok(stream) = self.document.get_object(id).and_then(Object::as_stream) else {
            return Ok(());
        };
        if stream.dict.get(b"Subtype").and_then(Object::as_name).ok() != Some(b"Form".as_slice()) {
            return Ok(());
        }
        self.forms_drawn += 1;
        let content = match stream.decompressed_content_with_limit(self.limits.max_stream_bytes) {
            Ok(content) => content,
            Err(e @ lopdf::Error::Decompress(DecompressError::MemoryLimitExceeded { .. })) => return Err(e),
            // A form that cannot be unpacked loses its text, not the page's.
            Err(_) => return Ok(()),
        };
        let resources = Resources::of_form(self.document, &stream.dict, outer);
        let state = (self.font, self.font_size, self.scale);
        self.end_line();
        self.open_forms.push(id);
        let read = self.read(&content, &resources);
        self.open_forms.pop();
        self.end_line();
        (self.font, self.font_size, self.scale) = state;
        read
    }
}

fn collect_text(text: &mut String, encoding: &Encoding<'_>, operands: &[Object], depth: usize) {
    for operand in operands {
        match operand {
            Object::String(bytes, _) => {
                if let Ok(decoded) = encoding.bytes_to_string(bytes) {
                    text.push_str(&decoded);
                }
            }
            // TJ arrays hold strings and spacing; an array inside one is
            // not valid, and is not followed further.
            Object::Array(items) if depth == 0 => collect_text(text, encoding, items, depth + 1),
            // A large negative adjustment is a gap between words.
            Object::Integer(n) if *n < -100 => text.push(' '),
            Object::Real(n) if *n < -100.0 => text.push(' '),
            _ => {}
        }
    }
}

fn stream_too_large(format: &'static str, limits: &ExtractLimits) -> ExtractError {
    ExtractError::too_large(
        format,
        format!(
            "has a compressed stream that unpacks to more than {}; it looks like a decompression bomb",
            describe_bytes(limits.max_stream_bytes as u64)
        ),
    )
}

fn error(format: &'static str, limits: &ExtractLimits, e: lopdf::Error) -> ExtractError {
    match e {
        lopdf::Error::Decompress(DecompressError::MemoryLimitExceeded { .. }) => stream_too_large(format, limits),
        lopdf::Error::InvalidPassword
        | lopdf::Error::Decryption(_)
        | lopdf::Error::UnsupportedSecurityHandler(_)
        | lopdf::Error::AlreadyEncrypted => ExtractError::Encrypted { format },
        e => ExtractError::malformed(format, e),
    }
}
