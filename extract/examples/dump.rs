//! Prints what is extracted from a file, block by block:
//!
//! ```text
//! cargo run -p extract --example dump -- path/to/file.pdf
//! ```

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: dump FILE");
        std::process::exit(2);
    };
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        eprintln!("reading {path}: {e}");
        std::process::exit(1);
    });
    let ext = std::path::Path::new(&path).extension().and_then(|ext| ext.to_str());
    match extract::extract_text(ext, &bytes) {
        Ok(extracted) => {
            println!("pages: {:?}, {} bytes of text", extracted.pages, extracted.text.len());
            for block in &extracted.blocks {
                println!(
                    "{:?} {:?}\n    {:?}",
                    block.kind,
                    block.location,
                    &extracted.text[block.range.clone()]
                );
            }
        }
        Err(e) => {
            println!("error {}: {e}", e.code());
            std::process::exit(1);
        }
    }
}
