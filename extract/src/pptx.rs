//! PPTX: slides in the order `ppt/presentation.xml` lists them (its
//! `sldIdLst`, resolved through the part's relationships; file names say
//! nothing about order). On each slide the title placeholder is a level-1
//! heading, and every other shape's text a block; the speaker notes
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
        let notes_part = archive
            .relationships(part, limits)?
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
        for text in slide.texts.iter().chain(&notes.texts) {
            out.push(BlockKind::Text, location.clone(), text)?;
        }
    }
    Ok(out.finish(Some(slides)))
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
