//! PPTX: slides in the order `ppt/presentation.xml` lists them (its
//! `sldIdLst`, resolved through the part's relationships; file names say
//! nothing about order). On each slide the title placeholder is a level-1
//! heading, and every other shape's text a block, then the words of its
//! charts and SmartArt diagrams; the speaker notes
//! (the body of the slide's notes page) follow the slide's own text. All
//! are located by slide; slide numbers drawn on a slide or its notes page
//! are not text.

use std::collections::HashMap;

use crate::archive;
use crate::output::Output;
use crate::xml::{attribute, local_name, Xml};
use crate::{BlockKind, ExtractError, ExtractLimits, ExtractedText, Location};

const PRESENTATION: &str = "ppt/presentation.xml";

pub(crate) fn extract(
    bytes: &[u8],
    limits: &ExtractLimits,
    format: &'static str,
) -> Result<ExtractedText, ExtractError> {
    let mut archive = archive::open(bytes, limits, format)?;
    let mut slide_ids: Vec<String> = Vec::new();
    let found = archive.read_xml(PRESENTATION, limits, |event| {
        if let Xml::Start(start) | Xml::Empty(start) = event {
            if local_name(start) == "sldId" {
                if slide_ids.len() >= limits.max_pages as usize {
                    return Err(ExtractError::too_large(
                        format,
                        format!("has more than {} slides", limits.max_pages),
                    ));
                }
                if let Some(id) = relationship_id(start) {
                    slide_ids.push(id);
                }
            }
        }
        Ok(())
    })?;
    if !found {
        return Err(ExtractError::malformed(
            format,
            "it has no ppt/presentation.xml, so it is not a powerpoint deck",
        ));
    }
    let targets: HashMap<String, String> = archive
        .relationships(PRESENTATION, limits)?
        .into_iter()
        .map(|relationship| (relationship.id, relationship.target))
        .collect();

    let mut out = Output::new(limits, format);
    let mut slides = 0u32;
    for id in &slide_ids {
        let Some(part) = targets.get(id) else { continue };
        slides += 1;
        let mut slide = Slide::default();
        archive.read_xml(part, limits, |event| slide.event(event, out.limits()))?;
        let relationships = archive.relationships(part, limits)?;
        let mut graphics = Vec::new();
        for graphic in relationships
            .iter()
            .filter(|relationship| relationship.is("chart") || relationship.is("diagramData"))
        {
            graphics.push(graphic_text(&mut archive, &graphic.target, limits)?);
        }
        let notes_part = relationships
            .into_iter()
            .find(|relationship| relationship.is("notesSlide"));
        let mut notes = Slide {
            notes: true,
            ..Slide::default()
        };
        if let Some(notes_part) = notes_part {
            archive.read_xml(&notes_part.target, limits, |event| notes.event(event, out.limits()))?;
        }
        let location = Location {
            slide: Some(slides),
            ..Location::default()
        };
        for title in &slide.titles {
            out.push(BlockKind::Heading { level: 1 }, location.clone(), title)?;
        }
        for text in slide.texts.iter().chain(&graphics).chain(&notes.texts) {
            out.push(BlockKind::Text, location.clone(), text)?;
        }
    }
    Ok(out.finish(Some(slides)))
}

/// The words of a chart (its titles, series names and category labels,
/// not its numbers) or of a SmartArt diagram's data, one line each, each
/// once: a chart repeats its categories for every series.
fn graphic_text(
    archive: &mut archive::Archive<'_>,
    part: &str,
    limits: &ExtractLimits,
) -> Result<String, ExtractError> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    // depth inside `a:t`, and inside a chart's `c:tx` or `c:cat` (a `c:v`
    // there is a name; under `c:val` it is a number)
    let (mut in_text, mut named, mut in_value) = (false, 0usize, false);
    let mut text_bytes = 0usize;
    archive.read_xml(part, limits, |event| {
        match event {
            Xml::Start(start) => match local_name(start) {
                "t" => in_text = true,
                "tx" | "cat" => named += 1,
                "v" => in_value = true,
                _ => {}
            },
            Xml::Text(text) if in_text || (in_value && named > 0) => {
                line.push_str(text);
                text_bytes += text.len();
                if text_bytes > limits.max_text_bytes {
                    return Err(ExtractError::too_large(
                        "pptx",
                        format!(
                            "holds more than {} of text",
                            crate::describe_bytes(limits.max_text_bytes as u64)
                        ),
                    ));
                }
            }
            Xml::End(name) => {
                match name {
                    "t" => in_text = false,
                    "tx" | "cat" => named = named.saturating_sub(1),
                    "v" => in_value = false,
                    _ => {}
                }
                // a paragraph of rich text ends, or one name does
                if matches!(name, "p" | "v") {
                    let ended = std::mem::take(&mut line);
                    let ended = ended.trim();
                    if !ended.is_empty() && !lines.iter().any(|seen| seen == ended) {
                        lines.push(ended.to_owned());
                    }
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(lines.join("\n"))
}

/// The `r:id` of a `p:sldId`: the attribute named `id` in the
/// relationships namespace, beside the plain `id` (a number).
fn relationship_id(start: &quick_xml::events::BytesStart<'_>) -> Option<String> {
    start
        .attributes()
        .with_checks(false)
        .flatten()
        .find(|attribute| {
            let key = attribute.key.as_ref();
            key.ends_with(":id") && key != "id"
        })
        .map(|attribute| attribute.value.into_owned())
}

#[derive(Default)]
struct Slide {
    /// A notes page: only its body placeholder is text (the others are a
    /// picture of the slide, its number, the header and footer).
    notes: bool,
    titles: Vec<String>,
    texts: Vec<String>,
    /// Depth of shapes (`p:sp`, `p:graphicFrame`) open; a shape's text is
    /// one block.
    shapes: usize,
    shape: String,
    /// The `type` of the shape's placeholder, if it is one.
    placeholder: Option<String>,
    in_text: bool,
    paragraph_started: bool,
}

impl Slide {
    fn event(&mut self, event: Xml<'_>, limits: &ExtractLimits) -> Result<(), ExtractError> {
        match event {
            Xml::Start(start) | Xml::Empty(start) => {
                let empty = matches!(event, Xml::Empty(_));
                match local_name(start) {
                    "sp" | "graphicFrame" if !empty => {
                        self.shapes += 1;
                        if self.shapes == 1 {
                            self.shape.clear();
                            self.placeholder = None;
                        }
                    }
                    // a placeholder without a type is an object (content) placeholder
                    "ph" => self.placeholder = Some(attribute(start, "type").unwrap_or_else(|| "obj".to_owned())),
                    "p" if !empty => self.paragraph_started = false,
                    "t" if !empty => self.in_text = true,
                    "br" => self.shape.push('\n'),
                    "tc" if !empty && !self.shape.is_empty() && !self.shape.ends_with('\n') => {
                        self.shape.push_str(" | ")
                    }
                    _ => {}
                }
            }
            Xml::Text(text) => {
                if self.in_text {
                    if !self.paragraph_started && !self.shape.is_empty() && !self.shape.ends_with([' ', '\n']) {
                        self.shape.push('\n');
                    }
                    self.paragraph_started = true;
                    self.shape.push_str(text);
                    if self.shape.len() > limits.max_text_bytes {
                        return Err(ExtractError::too_large(
                            "pptx",
                            format!(
                                "holds more than {} of text",
                                crate::describe_bytes(limits.max_text_bytes as u64)
                            ),
                        ));
                    }
                }
            }
            Xml::End(name) => match name {
                "t" => self.in_text = false,
                "tr" => self.shape.push('\n'),
                "sp" | "graphicFrame" => {
                    self.shapes = self.shapes.saturating_sub(1);
                    if self.shapes == 0 {
                        let text = std::mem::take(&mut self.shape);
                        match self.placeholder.as_deref() {
                            Some("sldNum") => {}
                            Some("title" | "ctrTitle") if !self.notes => self.titles.push(text),
                            Some("body") => self.texts.push(text),
                            _ if !self.notes => self.texts.push(text),
                            _ => {}
                        }
                    }
                }
                _ => {}
            },
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn pptx(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, content) in entries {
            zip.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
            zip.write_all(content.as_bytes()).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    const RELATIONSHIPS: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";

    #[test]
    fn a_smartart_diagram_is_read_once_from_its_data() {
        let diagram_text = "<a:p><a:r><a:t>Survey the reef</a:t></a:r></a:p>";
        let bytes = pptx(&[
            (
                "ppt/presentation.xml",
                r#"<p:presentation xmlns:p="p" xmlns:r="r"><p:sldIdLst><p:sldId id="256" r:id="rId1"/></p:sldIdLst></p:presentation>"#,
            ),
            (
                "ppt/_rels/presentation.xml.rels",
                &format!(
                    r#"<Relationships><Relationship Id="rId1" Type="{RELATIONSHIPS}/slide" Target="slides/slide1.xml"/></Relationships>"#
                ),
            ),
            (
                "ppt/slides/slide1.xml",
                r#"<p:sld xmlns:p="p" xmlns:a="a"><p:cSld><p:spTree><p:sp><p:nvSpPr><p:nvPr><p:ph type="title"/></p:nvPr></p:nvSpPr>
                <p:txBody><a:p><a:r><a:t>Plan</a:t></a:r></a:p></p:txBody></p:sp></p:spTree></p:cSld></p:sld>"#,
            ),
            (
                "ppt/slides/_rels/slide1.xml.rels",
                &format!(
                    r#"<Relationships><Relationship Id="rId2" Type="{RELATIONSHIPS}/diagramData" Target="../diagrams/data1.xml"/>
                    <Relationship Id="rId3" Type="http://schemas.microsoft.com/office/2007/relationships/diagramDrawing" Target="../diagrams/drawing1.xml"/></Relationships>"#
                ),
            ),
            (
                "ppt/diagrams/data1.xml",
                &format!(
                    r#"<dgm:dataModel xmlns:dgm="d" xmlns:a="a"><dgm:ptLst>
                    <dgm:pt modelId="1" type="doc"><dgm:t><a:p><a:endParaRPr/></a:p></dgm:t></dgm:pt>
                    <dgm:pt modelId="2"><dgm:t>{diagram_text}</dgm:t></dgm:pt>
                    <dgm:pt modelId="3"><dgm:t><a:p><a:r><a:t>Chart the channel</a:t></a:r></a:p></dgm:t></dgm:pt>
                    </dgm:ptLst></dgm:dataModel>"#
                ),
            ),
            // the same words laid out, which PowerPoint writes beside the data
            (
                "ppt/diagrams/drawing1.xml",
                &format!(
                    r#"<dsp:drawing xmlns:dsp="s" xmlns:a="a"><dsp:sp><dsp:txBody>{diagram_text}</dsp:txBody></dsp:sp></dsp:drawing>"#
                ),
            ),
        ]);
        let extracted = extract(&bytes, &ExtractLimits::default(), "pptx").unwrap();
        let blocks: Vec<(&str, BlockKind, Option<u32>)> = extracted
            .blocks
            .iter()
            .map(|block| (&extracted.text[block.range.clone()], block.kind, block.location.slide))
            .collect();
        assert_eq!(
            blocks,
            [
                ("Plan", BlockKind::Heading { level: 1 }, Some(1)),
                ("Survey the reef\nChart the channel", BlockKind::Text, Some(1)),
            ]
        );
    }
}
