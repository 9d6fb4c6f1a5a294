//! CSV and TSV: one block per data row, rendered `header: value | header:
//! value` so that a chunk of rows still says what each value is; the
//! block's row is the row number a spreadsheet shows (the header is row 1).

use crate::output::Output;
use crate::text::decode_utf8_text;
use crate::{BlockKind, ExtractError, ExtractLimits, ExtractedText, Location};

pub(crate) fn extract(
    bytes: &[u8],
    delimiter: u8,
    limits: &ExtractLimits,
    format: &'static str,
) -> Result<ExtractedText, ExtractError> {
    // Validated (and the BOM dropped) as a whole first, so that a bad byte
    // is reported at its offset in the file, as for any text file.
    let text = decode_utf8_text(bytes, limits, format)?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut out = Output::new(limits, format);
    let mut headers: Vec<String> = Vec::new();
    let mut record = csv::StringRecord::new();
    let mut row: u64 = 0;
    let mut line = String::new();
    loop {
        let more = reader
            .read_record(&mut record)
            .map_err(|e| ExtractError::malformed(format, e))?;
        if !more {
            break;
        }
        row += 1;
        if row == 1 {
            headers = record.iter().map(|field| field.trim().to_owned()).collect();
            continue;
        }
        line.clear();
        for (column, value) in record.iter().enumerate() {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            if !line.is_empty() {
                line.push_str(" | ");
            }
            match headers.get(column).filter(|header| !header.is_empty()) {
                Some(header) => line.push_str(header),
                None => {
                    line.push_str("column ");
                    line.push_str(&(column + 1).to_string());
                }
            }
            line.push_str(": ");
            line.push_str(value);
        }
        out.push_line(BlockKind::Text, row_location(row), &line)?;
    }
    // A file of one line has no data rows; its line is the content.
    if out.is_empty() && row == 1 {
        out.push_line(BlockKind::Text, row_location(1), &headers.join(" | "))?;
    }
    Ok(out.finish(None))
}

fn row_location(row: u64) -> Location {
    Location {
        row: Some(row),
        ..Location::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_carry_their_headers_and_spreadsheet_row_numbers() {
        let csv = "name,city\n\"Ada, Countess\",London\n,\n\"multi\nline\",Paris,extra\n";
        let extracted = extract(csv.as_bytes(), b',', &ExtractLimits::default(), "csv").unwrap();
        let rows: Vec<(&str, Option<u64>)> = extracted
            .blocks
            .iter()
            .map(|block| (&extracted.text[block.range.clone()], block.location.row))
            .collect();
        assert_eq!(
            rows,
            [
                ("name: Ada, Countess | city: London", Some(2)),
                ("name: multi\nline | city: Paris | column 3: extra", Some(4)),
            ]
        );
    }

    #[test]
    fn tsv_uses_tabs() {
        let extracted = extract(b"a\tb\n1\t2\n", b'\t', &ExtractLimits::default(), "tsv").unwrap();
        assert_eq!(extracted.text, "a: 1 | b: 2");
    }
}
