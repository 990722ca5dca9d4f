//! Checks that hold the book together, over whatever chapters are present:
//!
//! - every chapter file in `docs/guide/` is listed in `SUMMARY.md`, and every
//!   entry of `SUMMARY.md` is a file;
//! - every internal markdown link in the book resolves: the file exists and,
//!   when the link names a heading (`file.md#heading`), that heading exists;
//! - every chapter is included in `docs/src/lib.rs`, so its code blocks run as
//!   doc tests;
//! - the facade's top-level documentation (`src/lib.rs`, section "The guide")
//!   names every numbered chapter.
//!
//! The chapters are read from the folder, not from a list kept here, so a new
//! chapter is checked as soon as its file exists.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn guide_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("guide")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("docs/ has a parent")
        .to_owned()
}

/// Every markdown file of the book except `SUMMARY.md`, by file name, sorted.
fn chapters() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(guide_dir())
        .expect("docs/guide exists")
        .map(|entry| entry.expect("readable entry").file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md") && name != "SUMMARY.md")
        .collect();
    names.sort();
    names
}

/// Numbered chapters (`NN-name.md`).
fn numbered_chapters() -> Vec<String> {
    chapters()
        .into_iter()
        .filter(|name| name.as_bytes().first().is_some_and(u8::is_ascii_digit))
        .collect()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The lines of a markdown text that are not inside a fenced code block.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut fence: Option<&str> = None;
    let mut lines = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        match fence {
            Some(marker) => {
                if trimmed.starts_with(marker) {
                    fence = None;
                }
            }
            None => {
                if trimmed.starts_with("```") {
                    fence = Some("```");
                } else if trimmed.starts_with("~~~") {
                    fence = Some("~~~");
                } else {
                    lines.push(line);
                }
            }
        }
    }
    lines
}

/// Removes inline code spans from a line, so that text like `` `[a](b)` `` is
/// not taken for a link.
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code {
            out.push(c);
        }
    }
    out
}

/// The targets of the inline (`[text](target)`) and reference
/// (`[name]: target`) links of a markdown text.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose_lines(text) {
        let line = without_code_spans(line);
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            if let Some(end) = trimmed.find("]: ") {
                let target = trimmed[end + 3..].split_whitespace().next().unwrap_or("");
                targets.push(target.to_owned());
                continue;
            }
        }
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            let target = after[..end].split_whitespace().next().unwrap_or("");
            targets.push(target.to_owned());
            rest = &after[end..];
        }
    }
    targets
}

/// mdBook's (and GitHub's) id for a heading: the heading's text, lower-cased,
/// spaces turned into dashes, anything but letters, digits, `-` and `_` dropped.
fn anchor_of(heading: &str) -> String {
    // Drop markdown around the text: code ticks, emphasis, link targets.
    let mut text = String::new();
    let mut rest = heading;
    while let Some(at) = rest.find("](") {
        text.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        rest = after.find(')').map_or("", |end| &after[end + 1..]);
    }
    text.push_str(rest);
    text.chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_lowercase().next().unwrap_or(c))
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// The ids of every heading of a markdown file, with mdBook's `-1`, `-2`, …
/// suffixes for repeated headings.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for line in prose_lines(text) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let base = anchor_of(heading.trim());
        let mut id = base.clone();
        let mut n = 1;
        while seen.contains(&id) {
            id = format!("{base}-{n}");
            n += 1;
        }
        seen.insert(id);
    }
    seen
}

fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:")
}

#[test]
fn every_chapter_is_in_the_summary_and_every_entry_exists() {
    let summary = read(&guide_dir().join("SUMMARY.md"));
    let listed: BTreeSet<String> = link_targets(&summary).into_iter().collect();
    for chapter in chapters() {
        assert!(
            listed.contains(&chapter),
            "docs/guide/{chapter} is not listed in docs/guide/SUMMARY.md"
        );
    }
    for entry in &listed {
        assert!(
            guide_dir().join(entry).is_file(),
            "docs/guide/SUMMARY.md lists {entry}, which does not exist"
        );
    }
}

#[test]
fn every_internal_link_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for chapter in chapters().into_iter().chain(["SUMMARY.md".to_owned()]) {
        let path = guide_dir().join(&chapter);
        let text = read(&path);
        for target in link_targets(&text) {
            if target.is_empty() || is_external(&target) {
                continue;
            }
            checked += 1;
            let (file, anchor) = match target.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (target.as_str(), None),
            };
            let resolved = if file.is_empty() {
                path.clone()
            } else {
                guide_dir().join(file)
            };
            if !resolved.exists() {
                broken.push(format!("{chapter}: {target} (no such file)"));
                continue;
            }
            if let Some(anchor) = anchor {
                if resolved.extension().is_some_and(|e| e == "md")
                    && !anchors(&read(&resolved)).contains(anchor)
                {
                    broken.push(format!("{chapter}: {target} (no such heading)"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(
        checked > 0,
        "no internal link found: the link scanner is broken"
    );
}

#[test]
fn every_chapter_is_compiled_as_doc_tests() {
    let lib = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"));
    for chapter in chapters() {
        let include = format!("include_str!(\"../guide/{chapter}\")");
        assert!(
            lib.contains(&include),
            "docs/src/lib.rs does not include docs/guide/{chapter}; add\n\
             #[doc = {include}]\npub mod <name> {{}}"
        );
    }
}

#[test]
fn the_facade_docs_name_every_chapter() {
    let facade = read(&repo_root().join("src/lib.rs"));
    let docs: String = facade
        .lines()
        .filter_map(|line| line.strip_prefix("//!"))
        .map(|line| format!("{}\n", line.strip_prefix(' ').unwrap_or(line)))
        .collect();
    let section = docs
        .split_once("\n# The guide\n")
        .map(|(_, rest)| rest.split("\n# ").next().unwrap_or(rest))
        .expect("the facade's documentation has a \"# The guide\" section");
    for chapter in numbered_chapters() {
        assert!(
            section.contains(&format!("docs/guide/{chapter}")),
            "the facade's \"The guide\" section (src/lib.rs) does not name docs/guide/{chapter}"
        );
    }
}

#[test]
fn the_anchor_rules_match_mdbook() {
    assert_eq!(anchor_of("Step 1: a producer"), "step-1-a-producer");
    assert_eq!(anchor_of("`max_demand` costs"), "max_demand-costs");
    assert_eq!(anchor_of("See [this](x.md) now"), "see-this-now");
    let ids = anchors("# A\n## A\n```text\n# not a heading\n```\n#nope\n");
    assert_eq!(ids, BTreeSet::from(["a".to_owned(), "a-1".to_owned()]));
    assert_eq!(
        link_targets("[a](b.md#c) and `[d](e)` and [f](g \"t\")\n[h]: i.md\n"),
        ["b.md#c", "g", "i.md"]
    );
}
