//! What a document is in one input file ([`DocumentRule`]) and splitting a file's text into
//! documents. A document is the unit the holdout split keeps whole and the unit a `[SEP]` closes
//! in the token stream; packing crosses documents anyway, so a long document costs nothing.

use serde::{Deserialize, Serialize};

/// How one file's text divides into documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentRule {
    /// WikiText articles when the file has ` = Title = ` headings, otherwise blank-line
    /// paragraphs ([`split_documents`]).
    #[default]
    Auto,
    /// Every non-blank line is a document (one State of the Union address, one chapter).
    Lines,
    /// The whole file is one document (a novel stored one paragraph per line).
    File,
}

/// Splits one file's text into documents by `rule`; blank documents are dropped.
pub fn split_by_rule(text: &str, rule: DocumentRule) -> Vec<String> {
    match rule {
        DocumentRule::Auto => split_documents(text),
        DocumentRule::Lines => text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect(),
        DocumentRule::File => {
            let lines: Vec<&str> = text.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()).collect();
            if lines.is_empty() {
                vec![]
            } else {
                vec![lines.join("\n")]
            }
        }
    }
}

/// Splits one file's text into documents: WikiText articles when the file has top-level
/// ` = Title = ` headings (each heading starts an article), otherwise blank-line paragraphs.
pub fn split_documents(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let groups: Vec<&[&str]> =
        if lines.iter().any(|l| is_article_heading(l)) { split_before_headings(&lines) } else { lines.split(|l| l.trim().is_empty()).collect() };
    groups.into_iter().map(|g| g.join("\n").trim().to_string()).filter(|d| !d.is_empty()).collect()
}

/// ` = Title = ` with exactly one `=` on each side; ` = = Section = = ` is not an article start.
fn is_article_heading(line: &str) -> bool {
    let t = line.trim();
    let Some(inner) = t.strip_prefix("= ").and_then(|r| r.strip_suffix(" =")) else {
        return false;
    };
    let inner = inner.trim();
    !inner.is_empty() && !inner.starts_with('=') && !inner.ends_with('=')
}

/// Groups of lines each starting at a heading; text before the first heading is its own group.
fn split_before_headings<'a>(lines: &'a [&'a str]) -> Vec<&'a [&'a str]> {
    let mut starts: Vec<usize> = (0..lines.len()).filter(|&i| is_article_heading(lines[i])).collect();
    if starts.first() != Some(&0) {
        starts.insert(0, 0);
    }
    let ends = starts.iter().skip(1).copied().chain([lines.len()]);
    starts.iter().zip(ends).map(|(&a, b)| &lines[a..b]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wikitext_splits_on_top_level_headings_only() {
        let text = " \n = First = \n \n Intro .\n \n = = Section = = \n \n More .\n = Second = \n Body .\n";
        let docs = split_documents(text);
        assert_eq!(docs.len(), 2);
        assert!(docs[0].starts_with("= First =") && docs[0].contains("= = Section = ="), "{docs:?}");
        assert_eq!(docs[1], "= Second = \n Body .");
        assert_eq!(split_by_rule(text, DocumentRule::Auto), docs);
    }

    #[test]
    fn plain_text_splits_on_blank_lines() {
        let docs = split_documents("one\ntwo\n\n\nthree\n   \nfour = five =\n");
        assert_eq!(docs, ["one\ntwo", "three", "four = five ="]);
    }

    #[test]
    fn lines_and_file_rules() {
        let text = "First address.\n\n  \nSecond address.  \nThird.\n";
        assert_eq!(split_by_rule(text, DocumentRule::Lines), ["First address.", "Second address.", "Third."]);
        assert_eq!(split_by_rule(text, DocumentRule::File), ["First address.\nSecond address.\nThird."]);
        assert!(split_by_rule(" \n\n", DocumentRule::File).is_empty());
        assert!(split_by_rule(" \n\n", DocumentRule::Lines).is_empty());
    }
}
