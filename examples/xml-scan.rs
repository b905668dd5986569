//! xml-scan: the ingest *baselines* for benchmarks. planbox's `import` of a
//! feed is compared against these bare scans of the same file.
//!
//! It does the least any importer has to do and nothing more: a quick-xml
//! event scan (`Reader::from_reader` over a `BufReader`, `read_event_into`
//! with one reused buffer, default reader configuration) that visits every
//! attribute of every start and empty element and decodes + unescapes each
//! value (`Attribute::normalized_value`, what `decode_and_unescape_value`
//! became in quick-xml 0.42). The lengths of the values are summed and
//! printed so the work cannot be optimized away. No dates, prices or
//! domain rules: those belong to the importer being measured.
//!
//! With `--raw`, the least of all: the same event scan visiting every
//! attribute's raw bytes (no unescaping, quick-xml's duplicate check off),
//! the floor any reader of every attribute pays.
//!
//! ```text
//! cargo run --release --example xml-scan -- bench/out/feed-5000.xml
//! cargo run --release --example xml-scan -- --raw bench/out/feed-5000.xml
//! ```
//!
//! Prints one line to stdout: elements, attributes, value bytes, file bytes,
//! elapsed seconds and throughput; with `--json` the same as a JSON object.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use quick_xml::events::Event;
use quick_xml::{Reader, XmlVersion};

#[derive(Parser, Debug)]
#[command(about = "Bare quick-xml scan of a feed file: the import baseline")]
struct Args {
    /// The XML file to scan.
    file: PathBuf,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// Visit every attribute's raw bytes only (no unescaping).
    #[arg(long)]
    raw: bool,
}

#[derive(Default)]
struct Counts {
    elements: u64,
    attributes: u64,
    value_bytes: u64,
}

fn scan(path: &PathBuf, raw: bool) -> Result<Counts> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = Reader::from_reader(BufReader::with_capacity(64 * 1024, file));
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut version = XmlVersion::Implicit1_0;
    let mut c = Counts::default();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                c.elements += 1;
                if raw {
                    let mut attributes = e.attributes();
                    attributes.with_checks(false);
                    for attr in attributes {
                        let attr = attr.with_context(|| {
                            format!("bad attribute at byte {}", reader.buffer_position())
                        })?;
                        c.attributes += 1;
                        c.value_bytes += attr.value.len() as u64;
                    }
                    buf.clear();
                    continue;
                }
                for attr in e.attributes() {
                    let attr = attr.with_context(|| {
                        format!("bad attribute at byte {}", reader.buffer_position())
                    })?;
                    let value = attr.normalized_value(version).with_context(|| {
                        format!("bad attribute value at byte {}", reader.buffer_position())
                    })?;
                    c.attributes += 1;
                    c.value_bytes += value.len() as u64;
                }
            }
            Ok(Event::Decl(d)) => version = d.xml_version()?,
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("XML error at byte {}", reader.error_position()))
            }
        }
        buf.clear();
    }
    Ok(c)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let bytes = std::fs::metadata(&args.file)
        .with_context(|| format!("cannot stat {}", args.file.display()))?
        .len();
    let t0 = Instant::now();
    let c = scan(&args.file, args.raw)?;
    let secs = t0.elapsed().as_secs_f64();
    let mb_s = bytes as f64 / 1e6 / secs.max(1e-9);
    if args.json {
        let json = serde_json::json!({
            "file": args.file,
            "raw": args.raw,
            "bytes": bytes,
            "elements": c.elements,
            "attributes": c.attributes,
            "value_bytes": c.value_bytes,
            "seconds": secs,
            "mb_per_s": mb_s,
        });
        println!("{json}");
    } else {
        println!(
            "xml-scan{}: {} elements, {} attributes, {} value bytes, {} file bytes in {secs:.3} s ({mb_s:.0} MB/s)",
            if args.raw { " --raw" } else { "" },
            c.elements,
            c.attributes,
            c.value_bytes,
            bytes
        );
    }
    Ok(())
}
