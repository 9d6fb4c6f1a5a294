//! The zip container of docx, xlsx and pptx, opened inside the limits:
//! the central directory is checked (entry count, declared sizes) before
//! anything is unpacked, and every entry is then read through a
//! [`Metered`] reader, so a size that lies is caught by counting.

use std::io::Cursor;

use zip::result::ZipError;
use zip::ZipArchive;

use crate::xml::{attribute, local_name, read_xml, Meter, Metered, Xml};
use crate::{ExtractError, ExtractLimits};

pub(crate) struct Archive<'b> {
    zip: ZipArchive<Cursor<&'b [u8]>>,
    pub(crate) meter: Meter,
    format: &'static str,
}

/// The signature of an OLE compound file: what Office writes for a file
/// saved with a password (the zip inside is encrypted), and for the old
/// binary formats.
const COMPOUND_FILE: &[u8] = b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1";

pub(crate) fn open<'b>(
    bytes: &'b [u8],
    limits: &ExtractLimits,
    format: &'static str,
) -> Result<Archive<'b>, ExtractError> {
    if bytes.starts_with(COMPOUND_FILE) {
        return Err(compound_file(bytes, format));
    }
    let zip = ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| ExtractError::malformed(format, format!("it is not a zip container ({e})")))?;
    let archive = Archive {
        zip,
        meter: Meter::new(limits, format),
        format,
    };
    if archive.zip.len() > limits.max_entries {
        return Err(ExtractError::too_large(
            format,
            format!(
                "has {} entries in its zip container; at most {} are read",
                archive.zip.len(),
                limits.max_entries
            ),
        ));
    }
    // The zip reader fails an entry that unpacks to more than it declares,
    // so the declared total bounds what can be unpacked; an entry written
    // with a data descriptor declares nothing, and then the total is
    // unknown and only the counting while reading bounds it.
    let declared = archive
        .zip
        .decompressed_size()
        .map_or(0, |total| u64::try_from(total).unwrap_or(u64::MAX));
    if declared > limits.max_unpacked_bytes {
        return Err(archive.meter.zip_bomb());
    }
    Ok(archive)
}

/// Why a compound file is not read: with an `EncryptedPackage` stream it
/// is a password-protected office file, otherwise an old binary one.
fn compound_file(bytes: &[u8], format: &'static str) -> ExtractError {
    let marker: Vec<u8> = "EncryptedPackage".encode_utf16().flat_map(u16::to_le_bytes).collect();
    if bytes.windows(marker.len()).any(|window| window == marker) {
        ExtractError::Encrypted { format }
    } else {
        ExtractError::malformed(
            format,
            "it is an old binary office file (doc, xls, ppt), not a zip container; save it in the current format",
        )
    }
}

impl Archive<'_> {
    pub(crate) fn has(&self, name: &str) -> bool {
        self.zip.index_for_name(name).is_some()
    }

    /// Reads the XML entry `name`, or returns `Ok(false)` if there is none.
    /// What an `mc:Fallback` holds is left out: it is the content of the
    /// `mc:Choice` before it in an older form (a text box, an equation as
    /// VML or a picture), and reading both would read it twice.
    pub(crate) fn read_xml(
        &mut self,
        name: &str,
        limits: &ExtractLimits,
        mut on_event: impl FnMut(Xml<'_>) -> Result<(), ExtractError>,
    ) -> Result<bool, ExtractError> {
        let format = self.format;
        let entry = match self.zip.by_name(name) {
            Ok(entry) => entry,
            Err(ZipError::FileNotFound) => return Ok(false),
            Err(ZipError::UnsupportedArchive(reason)) if reason.contains("assword") => {
                return Err(ExtractError::Encrypted { format })
            }
            Err(e) => return Err(ExtractError::malformed(format, format!("{name}: {e}"))),
        };
        let mut fallback = 0usize;
        read_xml(Metered::new(entry, &self.meter), name, limits, |event| {
            match &event {
                Xml::Start(start) if local_name(start) == "Fallback" => fallback += 1,
                Xml::End("Fallback") if fallback > 0 => fallback -= 1,
                _ if fallback > 0 => {}
                _ => return on_event(event),
            }
            Ok(())
        })?;
        Ok(true)
    }
}

/// One relationship of a part: its id, its type (a URI whose last
/// segment names it: `slide`, `notesSlide`, `header`, `footnotes`) and
/// the entry it points to.
pub(crate) struct Relationship {
    pub(crate) id: String,
    pub(crate) kind: String,
    pub(crate) target: String,
}

impl Relationship {
    /// Whether the relationship's type is `name` (the last segment of its URI).
    pub(crate) fn is(&self, name: &str) -> bool {
        self.kind.rsplit('/').next() == Some(name)
    }
}

impl Archive<'_> {
    /// The relationships of the part `part`, from its `_rels/<name>.rels`
    /// (none if there is no such entry); external targets are left out,
    /// and at most `max_entries` are kept.
    pub(crate) fn relationships(
        &mut self,
        part: &str,
        limits: &ExtractLimits,
    ) -> Result<Vec<Relationship>, ExtractError> {
        let rels = match part.rsplit_once('/') {
            Some((folder, name)) => format!("{folder}/_rels/{name}.rels"),
            None => format!("_rels/{part}.rels"),
        };
        let mut found = Vec::new();
        self.read_xml(&rels, limits, |event| {
            if let Xml::Start(start) | Xml::Empty(start) = event {
                if local_name(start) == "Relationship"
                    && attribute(start, "TargetMode").as_deref() != Some("External")
                    && found.len() < limits.max_entries
                {
                    if let (Some(id), Some(target)) = (attribute(start, "Id"), attribute(start, "Target")) {
                        found.push(Relationship {
                            id,
                            kind: attribute(start, "Type").unwrap_or_default(),
                            target: resolve_target(part, &target),
                        });
                    }
                }
            }
            Ok(())
        })?;
        Ok(found)
    }
}

/// `target` of a relationship of the part `base` (`ppt/presentation.xml`),
/// as an entry name: relative to the part's folder, or absolute from the
/// root of the package.
pub(crate) fn resolve_target(base: &str, target: &str) -> String {
    let mut parts: Vec<&str> = if let Some(absolute) = target.strip_prefix('/') {
        return normalize(absolute.split('/').collect());
    } else {
        base.rsplit_once('/')
            .map_or(Vec::new(), |(folder, _)| folder.split('/').collect())
    };
    parts.extend(target.split('/'));
    normalize(parts)
}

fn normalize(parts: Vec<&str>) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in parts {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            part => out.push(part),
        }
    }
    out.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relationship_targets_resolve_against_the_part() {
        assert_eq!(
            resolve_target("ppt/presentation.xml", "slides/slide1.xml"),
            "ppt/slides/slide1.xml"
        );
        assert_eq!(
            resolve_target("ppt/slides/slide1.xml", "../media/a.png"),
            "ppt/media/a.png"
        );
        assert_eq!(
            resolve_target("ppt/presentation.xml", "/ppt/slides/s.xml"),
            "ppt/slides/s.xml"
        );
        assert_eq!(resolve_target("ppt/presentation.xml", "../../../x"), "x");
    }
}
