//! A report as a list of blocks, rendered to Markdown (`report.md`, images linked) and to a
//! self-contained HTML page (`report.html`, images embedded), so both say the same thing.

use anyhow::{Context, Result};
use base64::Engine;
use std::fmt::Write;
use std::path::Path;

pub enum Block {
    Heading(usize, String),
    Paragraph(String),
    /// Header row, then rows.
    Table(Vec<String>, Vec<Vec<String>>),
    /// A figure file in the report dir (PNG), with a caption.
    Figure(String, String),
}

pub struct Document {
    pub title: String,
    pub blocks: Vec<Block>,
}

impl Document {
    pub fn to_markdown(&self) -> String {
        let mut md = format!("# {}\n\n", self.title);
        for block in &self.blocks {
            match block {
                Block::Heading(level, text) => {
                    let _ = writeln!(md, "{} {text}\n", "#".repeat(level + 1));
                }
                Block::Paragraph(text) => {
                    let _ = writeln!(md, "{text}\n");
                }
                Block::Table(header, rows) => {
                    let _ = writeln!(md, "| {} |", header.join(" | "));
                    let _ = writeln!(md, "|{}|", header.iter().map(|_| "---").collect::<Vec<_>>().join("|"));
                    for row in rows {
                        let _ = writeln!(md, "| {} |", row.iter().map(|c| c.replace('|', "\\|")).collect::<Vec<_>>().join(" | "));
                    }
                    md.push('\n');
                }
                Block::Figure(file, caption) => {
                    let _ = writeln!(md, "![{caption}]({file})\n\n*{caption}*\n");
                }
            }
        }
        md
    }

    /// HTML with every figure inlined as a data URI (reads the PNGs from `dir`).
    pub fn to_html(&self, dir: &Path) -> Result<String> {
        let mut html = format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
            escape(&self.title),
            escape(&self.title)
        );
        for block in &self.blocks {
            match block {
                Block::Heading(level, text) => {
                    let _ = writeln!(html, "<h{0}>{1}</h{0}>", level + 1, inline(text));
                }
                Block::Paragraph(text) => {
                    let _ = writeln!(html, "<p>{}</p>", inline(text));
                }
                Block::Table(header, rows) => {
                    html.push_str("<table><thead><tr>");
                    for cell in header {
                        let _ = write!(html, "<th>{}</th>", inline(cell));
                    }
                    html.push_str("</tr></thead><tbody>\n");
                    for row in rows {
                        html.push_str("<tr>");
                        for cell in row {
                            let _ = write!(html, "<td>{}</td>", inline(cell));
                        }
                        html.push_str("</tr>\n");
                    }
                    html.push_str("</tbody></table>\n");
                }
                Block::Figure(file, caption) => {
                    let bytes = std::fs::read(dir.join(file)).with_context(|| format!("embedding {}", dir.join(file).display()))?;
                    let data = base64::engine::general_purpose::STANDARD.encode(bytes);
                    let _ =
                        writeln!(html, "<figure><img alt=\"{0}\" src=\"data:image/png;base64,{data}\"><figcaption>{0}</figcaption></figure>", escape(caption));
                }
            }
        }
        html.push_str("</body></html>\n");
        Ok(html)
    }
}

const STYLE: &str = "body{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.45;color:#222}\
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}\
th{background:#f3f3f3}figure{margin:1.5rem 0}img{max-width:100%}figcaption{font-style:italic;color:#555}code{background:#f3f3f3;padding:0 .2rem}";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Escapes, then renders the two inline Markdown forms the report uses: `code` and **bold**.
fn inline(text: &str) -> String {
    let escaped = escape(text);
    let with_code = alternate(&escaped, "`", "<code>", "</code>");
    alternate(&with_code, "**", "<strong>", "</strong>")
}

fn alternate(text: &str, marker: &str, open: &str, close: &str) -> String {
    let parts: Vec<&str> = text.split(marker).collect();
    if parts.len() % 2 == 0 {
        return text.to_string(); // unbalanced: leave as is
    }
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i == 0 {
                p.to_string()
            } else if i % 2 == 1 {
                format!("{open}{p}")
            } else {
                format!("{close}{p}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_and_html_carry_the_same_content() {
        let doc = Document {
            title: "T".into(),
            blocks: vec![
                Block::Heading(1, "Claims".into()),
                Block::Paragraph("rank is **higher** for `MLM` <here>".into()),
                Block::Table(vec!["a".into(), "b".into()], vec![vec!["1".into(), "x|y".into()]]),
            ],
        };
        let md = doc.to_markdown();
        assert!(md.contains("## Claims") && md.contains("| 1 | x\\|y |"));
        let html = doc.to_html(Path::new(".")).unwrap();
        assert!(html.contains("<strong>higher</strong>") && html.contains("<code>MLM</code>") && html.contains("&lt;here&gt;"));
    }
}
