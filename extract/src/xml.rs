//! Reading the XML parts of office files as a stream of events, inside
//! the limits: bytes unpacked (counted as they are read, whatever the zip
//! declares), the size of one event, nesting depth, time; and no DTD, so
//! no entity expansion ("billion laughs").

use std::cell::Cell;
use std::io::{self, BufReader, Read};

use quick_xml::events::{BytesStart, Event};
use quick_xml::XmlVersion;

use crate::output::Budget;
use crate::{describe_bytes, ExtractError, ExtractLimits};

/// What reading has cost so far, shared by every part of one file.
pub(crate) struct Meter {
    unpacked: Cell<u64>,
    max_unpacked: u64,
    /// Bytes read since the last event: one text node or tag may not
    /// grow the parser's buffer past the text limit.
    since_event: Cell<u64>,
    max_event: u64,
    exceeded: Cell<Option<Exceeded>>,
    pub(crate) budget: Budget,
    format: &'static str,
}

#[derive(Debug, Clone, Copy)]
enum Exceeded {
    Unpacked,
    Event,
    Time,
}

impl Meter {
    pub(crate) fn new(limits: &ExtractLimits, format: &'static str) -> Meter {
        Meter {
            unpacked: Cell::new(0),
            max_unpacked: limits.max_unpacked_bytes,
            since_event: Cell::new(0),
            max_event: limits.max_text_bytes as u64,
            exceeded: Cell::new(None),
            budget: Budget::start(limits, format),
            format,
        }
    }

    /// The limit a failed read ran into, if that is why it failed.
    pub(crate) fn failure(&self) -> Option<ExtractError> {
        self.exceeded.get().map(|exceeded| match exceeded {
            Exceeded::Unpacked => self.zip_bomb(),
            Exceeded::Event => ExtractError::too_large(
                self.format,
                format!("holds one xml element larger than {}", describe_bytes(self.max_event)),
            ),
            Exceeded::Time => self.budget.timeout(),
        })
    }

    pub(crate) fn zip_bomb(&self) -> ExtractError {
        ExtractError::too_large(
            self.format,
            format!(
                "unpacks to more than {}; it looks like a zip bomb",
                describe_bytes(self.max_unpacked)
            ),
        )
    }

    fn count(&self, n: usize) -> io::Result<()> {
        let unpacked = self.unpacked.get().saturating_add(n as u64);
        self.unpacked.set(unpacked);
        let since_event = self.since_event.get().saturating_add(n as u64);
        self.since_event.set(since_event);
        let exceeded = if unpacked > self.max_unpacked {
            Some(Exceeded::Unpacked)
        } else if since_event > self.max_event {
            Some(Exceeded::Event)
        } else if self.budget.check().is_err() {
            Some(Exceeded::Time)
        } else {
            None
        };
        match exceeded {
            Some(exceeded) => {
                self.exceeded.set(Some(exceeded));
                Err(io::Error::other("extraction limit reached"))
            }
            None => Ok(()),
        }
    }
}

/// A reader whose bytes are counted against a [`Meter`].
pub(crate) struct Metered<'m, R> {
    inner: R,
    meter: &'m Meter,
}

impl<'m, R: Read> Metered<'m, R> {
    pub(crate) fn new(inner: R, meter: &'m Meter) -> Self {
        Metered { inner, meter }
    }
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.meter.count(n)?;
        Ok(n)
    }
}

/// An XML event, with names reduced to their local part (`w:p` → `p`):
/// the prefixes are the writer's choice.
pub(crate) enum Xml<'e> {
    Start(&'e BytesStart<'e>),
    Empty(&'e BytesStart<'e>),
    End(&'e str),
    Text(&'e str),
}

/// Reads the XML `source` (the part `part` of the file), calling
/// `on_event` for each element and piece of text.
pub(crate) fn read_xml<R: Read>(
    source: Metered<'_, R>,
    part: &str,
    limits: &ExtractLimits,
    mut on_event: impl FnMut(Xml<'_>) -> Result<(), ExtractError>,
) -> Result<(), ExtractError> {
    let meter = source.meter;
    let format = meter.format;
    let mut reader = quick_xml::Reader::from_reader(BufReader::with_capacity(16 * 1024, source));
    let config = reader.config_mut();
    // Word writes what it writes; a mismatched end tag in a damaged file
    // should not lose the rest of the text.
    config.check_end_names = false;
    config.allow_unmatched_ends = true;
    let mut buf = Vec::new();
    let mut depth = 0usize;
    let damaged = |e: &dyn std::fmt::Display| {
        meter
            .failure()
            .unwrap_or_else(|| ExtractError::malformed(format, format!("{part}: {e}")))
    };
    loop {
        buf.clear();
        let event = reader.read_event_into(&mut buf).map_err(|e| damaged(&e))?;
        meter.since_event.set(0);
        match event {
            Event::Start(start) => {
                depth += 1;
                if depth > limits.max_depth {
                    return Err(ExtractError::TooDeep {
                        format,
                        limit: limits.max_depth,
                    });
                }
                on_event(Xml::Start(&start))?;
            }
            Event::Empty(start) => on_event(Xml::Empty(&start))?,
            Event::End(end) => {
                depth = depth.saturating_sub(1);
                on_event(Xml::End(end.local_name().into_inner()))?;
            }
            Event::Text(text) => on_event(Xml::Text(&text.xml10_content()))?,
            Event::CData(data) => {
                on_event(Xml::Text(&data.xml10_content()))?;
            }
            Event::GeneralRef(reference) => {
                if let Some(c) = reference.resolve_char_ref().map_err(|e| damaged(&e))? {
                    on_event(Xml::Text(c.encode_utf8(&mut [0; 4])))?;
                } else {
                    let text = match &*reference {
                        "lt" => "<",
                        "gt" => ">",
                        "amp" => "&",
                        "apos" => "'",
                        "quot" => "\"",
                        other => {
                            return Err(ExtractError::malformed(
                                format,
                                format!("{part} refers to an undeclared entity &{other};"),
                            ))
                        }
                    };
                    on_event(Xml::Text(text))?;
                }
            }
            Event::DocType(_) => {
                // Office files never declare a DTD; one is there to define
                // entities, which is how entity-expansion bombs work.
                return Err(ExtractError::malformed(
                    format,
                    format!("{part} declares a DTD, which office files never do"),
                ));
            }
            Event::Eof => return Ok(()),
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
        }
    }
}

/// The value of the attribute whose local name is `local` (`w:val` → `val`).
pub(crate) fn attribute(start: &BytesStart<'_>, local: &str) -> Option<String> {
    start
        .attributes()
        .with_checks(false)
        .flatten()
        .find(|attribute| attribute.key.local_name().as_ref() == local)
        .and_then(|attribute| {
            attribute
                .normalized_value(XmlVersion::Implicit1_0)
                .ok()
                .map(|value| value.into_owned())
        })
}

/// The local name of an element (`w:p` → `p`).
pub(crate) fn local_name<'a>(start: &'a BytesStart<'_>) -> &'a str {
    start.local_name().into_inner()
}
