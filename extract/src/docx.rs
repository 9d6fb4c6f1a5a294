//! DOCX: `word/document.xml` read as a stream. Each paragraph is a block;
//! a paragraph whose style is a heading (by its outline level in
//! `word/styles.xml`, which localised templates rely on, or by the
//! built-in `Heading1`…`Heading9` / `Title` ids) is a heading of that
//! level; each row of a table is one block, its cells joined by ` | `.
//! The headers and footers the document uses come before its body (each
//! distinct one once), its footnotes, endnotes and comments after it. A text box's
//! paragraphs are blocks before the paragraph it is anchored in, read
//! once (the archive leaves out the VML fallback written beside it).

use std::collections::{HashMap, HashSet};

use crate::archive;
use crate::output::Output;
use crate::xml::{attribute, local_name, Xml};
use crate::{BlockKind, ExtractError, ExtractLimits, ExtractedText, Location};

const DOCUMENT: &str = "word/document.xml";

pub(crate) fn extract(
    bytes: &[u8],
    limits: &ExtractLimits,
    format: &'static str,
) -> Result<ExtractedText, ExtractError> {
    let mut archive = archive::open(bytes, limits, format)?;
    if !archive.has(DOCUMENT) {
        return Err(ExtractError::malformed(
            format,
            "it has no word/document.xml, so it is not a word document",
        ));
    }
    let levels = heading_levels(&mut archive, limits)?;
    let relationships = archive.relationships(DOCUMENT, limits)?;
    let parts_of = |kinds: &[&str]| -> Vec<String> {
        let mut parts: Vec<String> = relationships
            .iter()
            .filter(|relationship| kinds.iter().any(|kind| relationship.is(kind)))
            .map(|relationship| relationship.target.clone())
            .collect();
        parts.sort();
        parts.dedup();
        parts
    };
    let mut out = Output::new(limits, format);
    // Headers and footers come first, as text of no section; a header
    // repeated for the first page or even pages is read once.
    let mut seen: HashSet<String> = HashSet::new();
    for part in parts_of(&["header", "footer"]) {
        let mut margin = Output::new(limits, format);
        let mut body = Body::default();
        archive.read_xml(&part, limits, |event| body.event(event, &levels, &mut margin))?;
        let margin = margin.finish(None);
        if margin.text.is_empty() || !seen.insert(margin.text.clone()) {
            continue;
        }
        for block in &margin.blocks {
            out.push(BlockKind::Text, Location::default(), &margin.text[block.range.clone()])?;
        }
    }
    let mut body = Body::default();
    archive.read_xml(DOCUMENT, limits, |event| body.event(event, &levels, &mut out))?;
    // Footnotes, endnotes and reviewers' comments follow the body, under
    // its last heading.
    for part in parts_of(&["footnotes", "endnotes", "comments"]) {
        let mut notes = Body {
            headings: false,
            ..Body::default()
        };
        archive.read_xml(&part, limits, |event| notes.event(event, &levels, &mut out))?;
    }
    Ok(out.finish(None))
}

struct Body {
    /// Whether heading styles make headings: not in notes, whose
    /// paragraphs are all the notes' text.
    headings: bool,
    paragraph: String,
    style: Option<String>,
    outline: Option<u8>,
    in_text: bool,
    /// Inside a run of deleted text or a field's instructions: not text.
    hidden: usize,
    /// Whether a paragraph is open; one opened inside it (a text box's)
    /// sets the outer one aside until it ends.
    open: bool,
    outer: Vec<(String, Option<String>, Option<u8>)>,
    tables: usize,
    cells: Vec<String>,
    cell: String,
}

impl Default for Body {
    fn default() -> Body {
        Body {
            headings: true,
            paragraph: String::new(),
            style: None,
            outline: None,
            in_text: false,
            hidden: 0,
            open: false,
            outer: Vec::new(),
            tables: 0,
            cells: Vec::new(),
            cell: String::new(),
        }
    }
}

impl Body {
    fn event(
        &mut self,
        event: Xml<'_>,
        levels: &HashMap<String, u8>,
        out: &mut Output<'_>,
    ) -> Result<(), ExtractError> {
        match event {
            Xml::Start(start) | Xml::Empty(start) => {
                let empty = matches!(event, Xml::Empty(_));
                match local_name(start) {
                    "p" if !empty => {
                        if self.open {
                            self.outer.push((
                                std::mem::take(&mut self.paragraph),
                                self.style.take(),
                                self.outline.take(),
                            ));
                        }
                        self.open = true;
                        self.paragraph.clear();
                        self.style = None;
                        self.outline = None;
                    }
                    "pStyle" => self.style = attribute(start, "val"),
                    "outlineLvl" => self.outline = attribute(start, "val").and_then(|v| outline_level(&v)),
                    "t" if !empty => self.in_text = true,
                    "delText" | "instrText" if !empty => self.hidden += 1,
                    "tab" => self.paragraph.push('\t'),
                    "br" | "cr" => self.paragraph.push('\n'),
                    "tbl" if !empty => self.tables += 1,
                    "tr" if !empty && self.tables == 1 => self.cells.clear(),
                    "tc" if !empty && self.tables == 1 => self.cell.clear(),
                    _ => {}
                }
            }
            Xml::Text(text) => {
                if self.in_text && self.hidden == 0 {
                    self.paragraph.push_str(text);
                    if self.paragraph.len() > out.limits().max_text_bytes {
                        return Err(out.text_too_large());
                    }
                }
            }
            Xml::End(name) => match name {
                "t" => self.in_text = false,
                "delText" | "instrText" => self.hidden = self.hidden.saturating_sub(1),
                "p" => {
                    if self.tables > 0 {
                        if !self.cell.is_empty() && !self.paragraph.trim().is_empty() {
                            self.cell.push(' ');
                        }
                        self.cell.push_str(self.paragraph.trim());
                        if self.cell.len() > out.limits().max_text_bytes {
                            return Err(out.text_too_large());
                        }
                    } else {
                        let level = self
                            .outline
                            .or_else(|| self.style.as_ref().and_then(|style| levels.get(style).copied()));
                        let kind = match level {
                            Some(level) if self.headings => BlockKind::Heading { level },
                            _ => BlockKind::Text,
                        };
                        out.push(kind, Location::default(), &self.paragraph)?;
                    }
                    self.paragraph.clear();
                    match self.outer.pop() {
                        Some((paragraph, style, outline)) => {
                            (self.paragraph, self.style, self.outline) = (paragraph, style, outline);
                        }
                        None => self.open = false,
                    }
                }
                "tc" if self.tables == 1 => {
                    let cell = std::mem::take(&mut self.cell);
                    self.cells.push(cell);
                }
                "tr" if self.tables == 1 => {
                    let cells: Vec<&str> = self
                        .cells
                        .iter()
                        .map(|cell| cell.trim())
                        .filter(|c| !c.is_empty())
                        .collect();
                    out.push(BlockKind::Text, Location::default(), &cells.join(" | "))?;
                    self.cells.clear();
                }
                "tbl" => self.tables = self.tables.saturating_sub(1),
                _ => {}
            },
        }
        Ok(())
    }
}

/// `w:outlineLvl` counts from 0 (level 1); 9 means body text.
fn outline_level(value: &str) -> Option<u8> {
    let level: u8 = value.trim().parse().ok()?;
    (level < 9).then(|| (level + 1).min(6))
}

/// The level of a heading style named by its id, without styles.xml.
fn builtin_level(style_id: &str) -> Option<u8> {
    let lower = style_id.to_ascii_lowercase().replace(' ', "");
    if lower == "title" {
        return Some(1);
    }
    let digits = lower.strip_prefix("heading")?;
    let level: u8 = digits.parse().ok()?;
    (1..=9).contains(&level).then(|| level.min(6))
}

/// Heading level of each paragraph style that is a heading.
fn heading_levels(
    archive: &mut archive::Archive<'_>,
    limits: &ExtractLimits,
) -> Result<HashMap<String, u8>, ExtractError> {
    struct Style {
        name: Option<String>,
        based_on: Option<String>,
        outline: Option<u8>,
    }
    let mut styles: HashMap<String, Style> = HashMap::new();
    let mut current: Option<(String, Style)> = None;
    archive.read_xml("word/styles.xml", limits, |event| {
        match event {
            Xml::Start(start) | Xml::Empty(start) => match local_name(start) {
                "style" => {
                    current = attribute(start, "styleId").map(|id| {
                        (
                            id,
                            Style {
                                name: None,
                                based_on: None,
                                outline: None,
                            },
                        )
                    });
                }
                "name" => {
                    if let Some((_, style)) = current.as_mut() {
                        style.name = attribute(start, "val");
                    }
                }
                "basedOn" => {
                    if let Some((_, style)) = current.as_mut() {
                        style.based_on = attribute(start, "val");
                    }
                }
                "outlineLvl" => {
                    if let Some((_, style)) = current.as_mut() {
                        style.outline = attribute(start, "val").and_then(|v| outline_level(&v));
                    }
                }
                _ => {}
            },
            Xml::End("style") => {
                if let Some((id, style)) = current.take() {
                    if styles.len() < 100_000 {
                        styles.insert(id, style);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    let mut levels = HashMap::new();
    for id in styles.keys() {
        // A style inherits its outline level; chains are short, and a
        // cycle in a damaged file ends at the hop limit.
        let mut at = Some(id.as_str());
        for _ in 0..16 {
            let Some(style_id) = at else { break };
            let Some(style) = styles.get(style_id) else {
                if let Some(level) = builtin_level(style_id) {
                    levels.insert(id.clone(), level);
                }
                break;
            };
            let level = style
                .outline
                .or_else(|| builtin_level(style_id))
                .or_else(|| style.name.as_deref().and_then(builtin_level));
            if let Some(level) = level {
                levels.insert(id.clone(), level);
                break;
            }
            at = style.based_on.as_deref();
        }
    }
    // A document without styles.xml still has the built-in ids.
    for level in 1..=9u8 {
        levels.entry(format!("Heading{level}")).or_insert(level.min(6));
    }
    levels.entry("Title".to_owned()).or_insert(1);
    Ok(levels)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn docx(document_xml: &str) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        zip.start_file("word/document.xml", zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(document_xml.as_bytes()).unwrap();
        zip.finish().unwrap().into_inner()
    }

    #[test]
    fn a_text_box_is_read_once_and_its_paragraph_keeps_its_text() {
        // as Word writes a text box: the DrawingML box, and the same box as
        // VML in the fallback
        let box_paragraph = r#"<w:p><w:r><w:t>boxed words</w:t></w:r></w:p>"#;
        let xml = format!(
            r#"<w:document xmlns:w="w" xmlns:mc="mc" xmlns:wps="wps" xmlns:v="v"><w:body>
            <w:p><w:r><w:t>before the box, </w:t></w:r><w:r><mc:AlternateContent>
              <mc:Choice Requires="wps"><w:drawing><wps:txbx><w:txbxContent>{box_paragraph}</w:txbxContent></wps:txbx></w:drawing></mc:Choice>
              <mc:Fallback><w:pict><v:textbox><w:txbxContent>{box_paragraph}</w:txbxContent></v:textbox></w:pict></mc:Fallback>
            </mc:AlternateContent></w:r><w:r><w:t>after the box</w:t></w:r></w:p>
            <w:p><w:r><w:t>next paragraph</w:t></w:r></w:p>
            </w:body></w:document>"#
        );
        let extracted = extract(&docx(&xml), &ExtractLimits::default(), "docx").unwrap();
        let blocks: Vec<&str> = extracted
            .blocks
            .iter()
            .map(|block| &extracted.text[block.range.clone()])
            .collect();
        assert_eq!(
            blocks,
            ["boxed words", "before the box, after the box", "next paragraph"]
        );
    }

    #[test]
    fn heading_styles_map_to_levels() {
        assert_eq!(builtin_level("Heading2"), Some(2));
        assert_eq!(builtin_level("heading 3"), Some(3));
        assert_eq!(builtin_level("Title"), Some(1));
        assert_eq!(builtin_level("Normal"), None);
        assert_eq!(outline_level("0"), Some(1));
        assert_eq!(outline_level("9"), None);
    }
}
