//! XLSX: every sheet in workbook order, one block per non-empty row,
//! located by sheet name and row number as Excel shows them (1-based).
//! The first non-empty row of a sheet is its header: it is a block of its
//! own, and later rows are rendered `header: value | header: value`.
//!
//! calamine reads the cells as a stream, but it loads the shared strings
//! whole, so the zip is checked first: the central directory (entry count,
//! declared sizes, which the zip reader enforces) and the declared size of
//! every part it loads whole against the text limit.

use std::io::Cursor;

use calamine::{DataRef, Reader, Xlsx, XlsxError};

use crate::output::Output;
use crate::{archive, describe_bytes, BlockKind, ExtractError, ExtractLimits, ExtractedText, Location};

pub(crate) fn extract(
    bytes: &[u8],
    limits: &ExtractLimits,
    format: &'static str,
) -> Result<ExtractedText, ExtractError> {
    let archive = archive::open(bytes, limits, format)?;
    drop(archive);
    check_loaded_parts(bytes, limits, format)?;

    let mut workbook: Xlsx<_> = Xlsx::new(Cursor::new(bytes)).map_err(|e| error(format, e))?;
    let names = workbook.sheet_names();
    if names.len() > limits.max_pages as usize {
        return Err(ExtractError::too_large(
            format,
            format!("has {} sheets; at most {} are read", names.len(), limits.max_pages),
        ));
    }
    let mut out = Output::new(limits, format);
    for name in &names {
        let mut cells = workbook.worksheet_cells_reader(name).map_err(|e| error(format, e))?;
        let mut headers: Option<Vec<(u32, String)>> = None;
        let mut row: Vec<(u32, String)> = Vec::new();
        let mut row_number: Option<u32> = None;
        let mut read = 0usize;
        loop {
            let cell = cells.next_cell().map_err(|e| error(format, e))?;
            read += 1;
            if read.is_multiple_of(1024) {
                out.budget.check()?;
            }
            let position = cell.as_ref().map(|cell| cell.get_position());
            if position.map(|(r, _)| r) != row_number {
                if let Some(number) = row_number {
                    push_row(&mut out, name, number, &mut headers, std::mem::take(&mut row))?;
                }
                row_number = position.map(|(r, _)| r);
            }
            let Some(cell) = cell else { break };
            if let Some(value) = render(cell.get_value()) {
                row.push((cell.get_position().1, value));
                if row.iter().map(|(_, value)| value.len()).sum::<usize>() > limits.max_text_bytes {
                    return Err(out.text_too_large());
                }
            }
        }
    }
    Ok(out.finish(Some(names.len() as u32)))
}

fn push_row(
    out: &mut Output<'_>,
    sheet: &str,
    row_index: u32,
    headers: &mut Option<Vec<(u32, String)>>,
    row: Vec<(u32, String)>,
) -> Result<(), ExtractError> {
    if row.is_empty() {
        return Ok(());
    }
    let location = Location {
        sheet: Some(sheet.to_owned()),
        row: Some(u64::from(row_index) + 1),
        ..Location::default()
    };
    let Some(header) = headers.as_ref() else {
        let line: Vec<&str> = row.iter().map(|(_, value)| value.as_str()).collect();
        out.push_line(BlockKind::Text, location, &line.join(" | "))?;
        *headers = Some(row);
        return Ok(());
    };
    let mut line = String::new();
    for (column, value) in &row {
        if !line.is_empty() {
            line.push_str(" | ");
        }
        if let Some((_, name)) = header.iter().find(|(header_column, _)| header_column == column) {
            line.push_str(name);
            line.push_str(": ");
        }
        line.push_str(value);
    }
    out.push_line(BlockKind::Text, location, &line)
}

fn render(value: &DataRef<'_>) -> Option<String> {
    let text = match value {
        DataRef::Empty => return None,
        DataRef::String(text) | DataRef::DateTimeIso(text) | DataRef::DurationIso(text) => text.trim().to_owned(),
        DataRef::SharedString(text) => text.trim().to_owned(),
        DataRef::Int(n) => n.to_string(),
        // Whole numbers are shown as Excel shows them, without ".0".
        DataRef::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        DataRef::Float(f) => f.to_string(),
        DataRef::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_owned(),
        DataRef::DateTime(date) => date.to_string(),
        DataRef::Error(e) => format!("#{e:?}"),
    };
    (!text.is_empty()).then_some(text)
}

/// calamine streams the cells of a worksheet but loads every other part
/// it reads (shared strings, styles, the workbook, relationships) whole,
/// and builds a value per entry; such a part may declare no more than the
/// text limit (the zip reader holds it to what it declares).
fn check_loaded_parts(bytes: &[u8], limits: &ExtractLimits, format: &'static str) -> Result<(), ExtractError> {
    let zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| ExtractError::malformed(format, e))?;
    for index in 0..zip.len() {
        let Some(Ok(name)) = zip.name_for_index(index) else {
            continue;
        };
        let size = zip.by_index_data(index).map_or(0, |entry| entry.size());
        let loaded_whole = !name.starts_with("xl/worksheets/") && (name.ends_with(".xml") || name.ends_with(".rels"));
        if loaded_whole && size > limits.max_text_bytes as u64 {
            return Err(ExtractError::too_large(
                format,
                format!(
                    "has a part {:?} larger than {}",
                    name.chars().take(100).collect::<String>(),
                    describe_bytes(limits.max_text_bytes as u64)
                ),
            ));
        }
    }
    Ok(())
}

fn error(format: &'static str, e: XlsxError) -> ExtractError {
    match e {
        XlsxError::Password => ExtractError::Encrypted { format },
        e => ExtractError::malformed(format, e),
    }
}
