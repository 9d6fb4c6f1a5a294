//! Hostile and broken files: each is refused with its error code and a
//! reason a person can read, within a bounded amount of memory (measured
//! by a counting allocator: the peak over the inputs already built) and
//! time (a generous guard that only catches hangs).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use extract::{extract_text, extract_with_limits, ExtractError, ExtractLimits, SUPPORTED_EXTENSIONS};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            if new_size >= layout.size() {
                let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Tests share the counters, so they measure one at a time.
static MEASURING: Mutex<()> = Mutex::new(());

const MEMORY_BOUND: usize = 64 * 1024 * 1024;
const TIME_GUARD: Duration = Duration::from_secs(10);

/// Extracts `bytes` as `ext` and checks that it fails with `code`, inside
/// the memory bound and the time guard; returns the message.
fn refused(ext: &str, bytes: &[u8], code: &str) -> String {
    refused_with(ext, bytes, code, &ExtractLimits::default())
}

fn refused_with(ext: &str, bytes: &[u8], code: &str, limits: &ExtractLimits) -> String {
    let _one_at_a_time = MEASURING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let baseline = CURRENT.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let started = Instant::now();
    let result = extract_with_limits(Some(ext), bytes, limits);
    let elapsed = started.elapsed();
    let peak = PEAK.load(Ordering::Relaxed) - baseline;
    let err = match result {
        Ok(extracted) => panic!("{ext}: extracted {} bytes instead of failing", extracted.text.len()),
        Err(err) => err,
    };
    let message = err.to_string();
    assert_eq!(err.code(), code, "{ext}: {message}");
    assert!(peak < MEMORY_BOUND, "{ext}: peak heap {} MiB: {message}", peak >> 20);
    assert!(elapsed < TIME_GUARD, "{ext}: took {elapsed:?}: {message}");
    assert!(
        !message.ends_with('.') && message.chars().next().is_some_and(|c| !c.is_uppercase()),
        "{message}"
    );
    eprintln!("{ext} -> {code} in {elapsed:?}, peak {} KiB: {message}", peak >> 10);
    message
}

// ---- pdf ----

/// A one-page pdf with `content` as its page's content stream (with
/// `filter`), its xref offsets computed.
fn pdf(content: &[u8], filter: &str) -> Vec<u8> {
    pdf_of(vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
           /Resources << /Font << /F1 5 0 R >> >> >>"
            .to_vec(),
        stream(filter, content),
        HELVETICA.to_vec(),
    ])
}

const HELVETICA: &[u8] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>";

/// A stream object: `dictionary` entries, then `content`.
fn stream(dictionary: &str, content: &[u8]) -> Vec<u8> {
    [
        format!("<< /Length {} {dictionary} >>\nstream\n", content.len()).as_bytes(),
        content,
        b"\nendstream",
    ]
    .concat()
}

/// A pdf of `objects`, numbered from 1 (the catalog), with its xref.
fn pdf_of(objects: Vec<Vec<u8>>) -> Vec<u8> {
    let mut out: Vec<u8> = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (index, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", index + 1).as_bytes());
        out.extend_from_slice(object);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for offset in offsets {
        out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

/// A form XObject drawing `content`, with `resources` (a dictionary, or
/// nothing for a form that inherits them).
fn form(resources: &str, content: &[u8]) -> Vec<u8> {
    stream(
        &format!("/Type /XObject /Subtype /Form /BBox [0 0 612 792] {resources}"),
        content,
    )
}

#[test]
fn forms_are_read_where_they_are_drawn_and_never_into_themselves() {
    let bytes = pdf_of(vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
           /Resources << /Font << /F1 5 0 R >> /XObject << /Fa 6 0 R /Im 8 0 R >> >> >>"
            .to_vec(),
        stream(
            "",
            b"BT /F1 12 Tf 72 720 Td (page text) Tj ET /Im Do /Fa Do BT 72 600 Td (after the form) Tj ET",
        ),
        HELVETICA.to_vec(),
        // Fa draws Fb and itself; Fb, with no resources of its own, uses
        // Fa's, ends on a font that does not exist, and draws itself.
        form(
            "/Resources << /Font << /F2 5 0 R >> /XObject << /Fa 6 0 R /Fb 7 0 R >> >>",
            b"BT /F2 12 Tf 72 700 Td (form a text) Tj ET /Fb Do /Fa Do",
        ),
        form("", b"BT /F2 12 Tf 72 650 Td (form b text) Tj /F9 12 Tf ET /Fb Do"),
        stream(
            "/Type /XObject /Subtype /Image /Width 1 /Height 1 /ColorSpace /DeviceGray /BitsPerComponent 8",
            b"\x00",
        ),
    ]);
    let extracted = extract_text(Some("pdf"), &bytes).unwrap();
    assert_eq!(
        extracted.text, "page text\nform a text\nform b text\nafter the form",
        "the font before a form is the font after it"
    );
}

#[test]
fn a_font_whose_encoding_names_unknown_glyphs_is_read_through_its_to_unicode_map() {
    let cmap = b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap /CMapName /Test def \
        1 begincodespacerange <00> <FF> endcodespacerange \
        2 beginbfchar <41> <0048> <42> <0069> endbfchar \
        endcmap CMapName currentdict /CMap defineresource pop end end";
    let bytes = pdf_of(vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
           /Resources << /Font << /F1 5 0 R >> >> >>"
            .to_vec(),
        stream("", b"BT /F1 12 Tf 72 720 Td (ABBA) Tj ET"),
        // glyph names as subset fonts re-encoded by some producers have
        b"<< /Type /Font /Subtype /Type1 /BaseFont /ABCDEF+Custom \
           /Encoding << /Type /Encoding /Differences [65 /g1 /g2] >> /ToUnicode 6 0 R >>"
            .to_vec(),
        stream("", cmap),
    ]);
    let extracted = extract_text(Some("pdf"), &bytes).unwrap();
    assert_eq!(extracted.text, "HiiH");
}

#[test]
fn forms_that_multiply_stop_at_the_per_page_bound() {
    // F0 draws F1 ten times, F1 draws F2 ten times, …: 10^9 forms drawn
    // from a file of a few kilobytes.
    let depth = 9;
    let mut objects = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
           /Resources << /Font << /F1 5 0 R >> /XObject << /X 6 0 R >> >> >>"
            .to_vec(),
        stream("", b"/X Do"),
        HELVETICA.to_vec(),
    ];
    for level in 0..=depth {
        let next = if level < depth {
            format!(
                "/Resources << /Font << /F1 5 0 R >> /XObject << /X {} 0 R >> >>",
                7 + level
            )
        } else {
            String::new()
        };
        let draws = if level < depth {
            "/X Do ".repeat(10)
        } else {
            String::new()
        };
        let content = format!("BT /F1 12 Tf 72 700 Td (level {level}) Tj ET {draws}");
        objects.push(form(&next, content.as_bytes()));
    }
    let started = Instant::now();
    let extracted = extract_text(Some("pdf"), &pdf_of(objects)).unwrap();
    let elapsed = started.elapsed();
    let drawn = extracted.text.matches("level ").count();
    assert!(
        extracted.text.starts_with("level 0\nlevel 1\nlevel 2"),
        "{}",
        &extracted.text[..60]
    );
    assert!((1000..=4096).contains(&drawn), "{drawn} forms read");
    assert!(elapsed < TIME_GUARD, "took {elapsed:?}");
}

#[test]
fn a_hand_made_pdf_reads() {
    let extracted = extract_text(Some("pdf"), &pdf(b"BT /F1 12 Tf 72 720 Td (hello pdf) Tj ET", "")).unwrap();
    assert_eq!(extracted.text, "hello pdf");
    assert_eq!(extracted.pages, Some(1));
}

#[test]
fn a_truncated_pdf_is_damaged() {
    let whole = pdf(b"BT /F1 12 Tf 72 720 Td (hello pdf) Tj ET", "");
    for cut in [9, whole.len() / 3, whole.len() / 2] {
        let message = refused("pdf", &whole[..cut], "malformed");
        assert!(message.starts_with("the pdf is damaged: "), "{message}");
    }
    refused("pdf", b"not a pdf at all", "malformed");
}

#[test]
fn a_flate_bomb_in_a_pdf_is_too_large() {
    // 1 GiB of zeros compresses to about 1 MiB; it is written in pieces so
    // the test itself never holds it.
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        encoder.write_all(&zeros).unwrap();
    }
    drop(zeros);
    let bomb = encoder.finish().unwrap();
    let message = refused("pdf", &pdf(&bomb, "/Filter /FlateDecode"), "too_large");
    assert!(message.contains("decompression bomb"), "{message}");
}

// ---- zip containers ----

/// Writes an entry's content, streamed into the zip writer.
type Content<'a> = &'a dyn Fn(&mut dyn Write);

fn zip(entries: &[(&str, Content<'_>)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1))
        .large_file(true);
    for (name, write) in entries {
        writer.start_file(*name, options).unwrap();
        write(&mut writer);
    }
    writer.finish().unwrap().into_inner()
}

const DOCUMENT_START: &str = r#"<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>"#;

fn repeat(out: &mut dyn Write, piece: &[u8], total: usize) {
    let chunk = piece.repeat((64 * 1024 / piece.len()).max(1));
    let mut written = 0;
    while written < total {
        out.write_all(&chunk).unwrap();
        written += chunk.len();
    }
}

#[test]
fn zip_bombs_are_too_large() {
    // 300 MiB of paragraphs in each format's main part: the declared sizes
    // are over the limit before anything is unpacked.
    for (ext, part) in [
        ("docx", "word/document.xml"),
        ("pptx", "ppt/presentation.xml"),
        ("xlsx", "xl/worksheets/sheet1.xml"),
    ] {
        let bomb = zip(&[(part, &|out: &mut dyn Write| {
            out.write_all(DOCUMENT_START.as_bytes()).unwrap();
            repeat(out, b"<w:p><w:r><w:t>a</w:t></w:r></w:p>", 300 << 20);
        })]);
        assert!(bomb.len() < 4 << 20, "{}", bomb.len());
        let message = refused(ext, &bomb, "too_large");
        assert!(message.contains("zip bomb"), "{message}");
    }
}

#[test]
fn an_xlsx_part_loaded_whole_is_held_to_the_text_limit() {
    // calamine builds a string per shared string: 40 MiB of one-letter
    // strings would be millions of allocations.
    let bomb = zip(&[("xl/sharedStrings.xml", &|out: &mut dyn Write| {
        out.write_all(b"<sst>").unwrap();
        repeat(out, b"<si><t>a</t></si>", 40 << 20);
    })]);
    let message = refused("xlsx", &bomb, "too_large");
    assert!(
        message.contains("\"xl/sharedStrings.xml\" larger than 16 MiB"),
        "{message}"
    );
}

#[test]
fn one_huge_text_node_is_too_large() {
    let bomb = zip(&[("word/document.xml", &|out: &mut dyn Write| {
        out.write_all(DOCUMENT_START.as_bytes()).unwrap();
        out.write_all(b"<w:p><w:r><w:t>").unwrap();
        repeat(out, b"a", 100 << 20);
    })]);
    let message = refused("docx", &bomb, "too_large");
    assert!(message.contains("xml element larger than 16 MiB"), "{message}");
}

#[test]
fn millions_of_tiny_paragraphs_are_too_large() {
    let bomb = zip(&[("word/document.xml", &|out: &mut dyn Write| {
        out.write_all(DOCUMENT_START.as_bytes()).unwrap();
        repeat(out, b"<w:p><w:r><w:t>a</w:t></w:r></w:p>", 200 << 20);
    })]);
    let message = refused("docx", &bomb, "too_large");
    assert!(message.contains("paragraphs"), "{message}");
}

#[test]
fn a_size_that_lies_is_caught_while_unpacking() {
    // the central directory says 100 bytes; the entry unpacks to 50 MiB
    let mut bomb = zip(&[("word/document.xml", &|out: &mut dyn Write| {
        out.write_all(DOCUMENT_START.as_bytes()).unwrap();
        repeat(out, b"<w:p><w:r><w:t>lie</w:t></w:r></w:p>", 50 << 20);
    })]);
    lie_about_sizes(&mut bomb, 100);
    let message = refused("docx", &bomb, "malformed");
    assert!(
        message.starts_with("the docx is damaged: word/document.xml"),
        "{message}"
    );
    refused("xlsx", &bomb, "malformed");
}

/// Rewrites the uncompressed size of every entry (local headers and the
/// central directory; zip64 extra fields included) to `size`.
fn lie_about_sizes(zip: &mut [u8], size: u32) {
    let mut at = 0;
    while at + 46 <= zip.len() {
        let signature = &zip[at..at + 4];
        if signature == b"PK\x03\x04" {
            zip[at + 22..at + 26].copy_from_slice(&size.to_le_bytes());
            let name_len = u16::from_le_bytes([zip[at + 26], zip[at + 27]]) as usize;
            let extra_len = u16::from_le_bytes([zip[at + 28], zip[at + 29]]) as usize;
            patch_zip64(&mut zip[at + 30 + name_len..at + 30 + name_len + extra_len], size);
        } else if signature == b"PK\x01\x02" {
            zip[at + 24..at + 28].copy_from_slice(&size.to_le_bytes());
            let name_len = u16::from_le_bytes([zip[at + 28], zip[at + 29]]) as usize;
            let extra_len = u16::from_le_bytes([zip[at + 30], zip[at + 31]]) as usize;
            patch_zip64(&mut zip[at + 46 + name_len..at + 46 + name_len + extra_len], size);
        }
        at += 1;
    }
}

fn patch_zip64(extra: &mut [u8], size: u32) {
    let mut at = 0;
    while at + 4 <= extra.len() {
        let id = u16::from_le_bytes([extra[at], extra[at + 1]]);
        let len = u16::from_le_bytes([extra[at + 2], extra[at + 3]]) as usize;
        if id == 1 && len >= 8 && at + 12 <= extra.len() {
            extra[at + 4..at + 12].copy_from_slice(&u64::from(size).to_le_bytes());
        }
        at += 4 + len;
    }
}

#[test]
fn too_many_zip_entries_are_too_large() {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    for n in 0..20_000 {
        writer.start_file(format!("e{n}"), options).unwrap();
    }
    let many = writer.finish().unwrap().into_inner();
    for ext in ["docx", "xlsx", "pptx"] {
        let message = refused(ext, &many, "too_large");
        assert!(message.contains("20000 entries"), "{message}");
    }
}

#[test]
fn billion_laughs_in_a_docx_is_refused() {
    let laughs = zip(&[("word/document.xml", &|out: &mut dyn Write| {
        let mut doc = String::from("<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">");
        for n in 1..10 {
            doc.push_str(&format!(
                "<!ENTITY lol{n} \"{}\">",
                format!("&lol{};", n - 1).repeat(10)
            ));
        }
        doc = doc.replace("&lol0;", "&lol;");
        doc.push_str("]><w:document><w:body><w:p><w:r><w:t>&lol9;</w:t></w:r></w:p></w:body></w:document>");
        out.write_all(doc.as_bytes()).unwrap();
    })]);
    let message = refused("docx", &laughs, "malformed");
    assert!(message.contains("declares a DTD"), "{message}");
}

#[test]
fn deep_xml_is_too_deep() {
    let deep = zip(&[("word/document.xml", &|out: &mut dyn Write| {
        out.write_all(DOCUMENT_START.as_bytes()).unwrap();
        repeat(out, b"<w:sdt>", 100_000 * 7);
    })]);
    refused("docx", &deep, "too_deep");
}

#[test]
fn a_password_protected_office_file_is_encrypted() {
    let mut compound = b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1".to_vec();
    compound.resize(1024, 0);
    compound.extend("EncryptedPackage".encode_utf16().flat_map(u16::to_le_bytes));
    for ext in ["docx", "xlsx", "pptx"] {
        let message = refused(ext, &compound, "encrypted");
        assert!(message.contains("password"), "{message}");
    }
    let message = refused("docx", &compound[..512], "malformed");
    assert!(message.contains("old binary office file"), "{message}");
}

// ---- text formats ----

#[test]
fn deep_html_and_json_are_too_deep() {
    refused("html", "<div>".repeat(100_000).as_bytes(), "too_deep");
    refused("json", "[".repeat(100_000).as_bytes(), "too_deep");
    // minutes of parsing before the first event, were it not refused first
    refused("md", "> ".repeat(100_000).as_bytes(), "too_deep");
    refused("json", "{\"a\":".repeat(100_000).as_bytes(), "too_deep");
}

#[test]
fn invalid_utf8_is_not_utf8() {
    for ext in ["txt", "md", "csv", "tsv", "json", "html"] {
        let message = refused(ext, b"name,city\nAda,Lond\xFFon\n", "not_utf8");
        assert!(message.contains("offset 18"), "{message}");
    }
}

#[test]
fn a_text_over_the_limit_is_too_large() {
    let limits = ExtractLimits {
        max_text_bytes: 1024,
        ..ExtractLimits::default()
    };
    for ext in ["txt", "md", "csv", "json", "html"] {
        refused_with(ext, "\"word\"\n".repeat(1000).as_bytes(), "too_large", &limits);
    }
}

#[test]
fn a_spent_time_budget_is_a_timeout() {
    let limits = ExtractLimits {
        time_budget: Duration::ZERO,
        ..ExtractLimits::default()
    };
    let rows: String = (0..100_000).map(|n| format!("{n},value {n}\n")).collect();
    std::thread::sleep(Duration::from_millis(1));
    refused_with("csv", rows.as_bytes(), "timeout", &limits);
}

/// xorshift: the same garbage on every run.
fn garbage(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[test]
fn garbage_is_refused_by_every_reader() {
    for ext in SUPPORTED_EXTENSIONS {
        for seed in 1..4 {
            let bytes = garbage(64 * 1024, seed);
            let err = extract_text(Some(ext), &bytes).expect_err(ext);
            assert!(
                matches!(
                    err,
                    ExtractError::Malformed { .. } | ExtractError::NotUtf8 { .. } | ExtractError::Empty
                ),
                "{ext}: {err:?}"
            );
            // garbage that is valid text, for the text formats
            let ascii: Vec<u8> = bytes
                .iter()
                .map(|b| b"<>{}[]\",:#*-| \nab&;"[usize::from(*b) % 19])
                .collect();
            let _ = extract_text(Some(ext), &ascii);
        }
    }
}
