//! `report --html`: the plot and the tables on one page that needs no
//! network (the SVG inline, the style in the page, no script).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::{svg, Report};

pub fn render(report: &Report) -> Result<String> {
    let title = escape(&report.title());
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <title>{title}</title>\n<style>{STYLE}</style></head><body>\n<h1>{title}</h1>\n"
    );
    page.push_str("<figure>");
    page.push_str(&svg::render(report)?);
    page.push_str("</figure>\n");
    for table in &report.tables {
        let _ = write!(
            page,
            "<h2>{}</h2>\n<table><thead><tr>",
            escape(&table.title)
        );
        for c in &table.columns {
            let _ = write!(page, "<th>{}</th>", escape(c));
        }
        page.push_str("</tr></thead><tbody>\n");
        for row in &table.rows {
            page.push_str("<tr>");
            for cell in row {
                let _ = write!(page, "<td>{}</td>", escape(cell));
            }
            page.push_str("</tr>\n");
        }
        page.push_str("</tbody></table>\n");
    }
    page.push_str("</body></html>\n");
    Ok(page)
}

pub fn write(report: &Report, out: &Path) -> Result<()> {
    std::fs::write(out, render(report)?).with_context(|| format!("writing {}", out.display()))
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}\
figure{margin:0}svg{max-width:100%;height:auto}\
table{border-collapse:collapse;margin-bottom:1.5em}\
th,td{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:right}\
th:first-child,td:first-child{text-align:left}";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histograms::Dimension;
    use crate::report::{Point, Table};

    #[test]
    fn one_page_with_plot_and_tables_and_nothing_fetched() {
        let report = Report {
            backend: Some("tracepoint".into()),
            kernel: None,
            points: vec![Point {
                dim: Dimension::FileSize,
                x: 4096,
                p50: 10_000,
                p99: 20_000,
                series: String::new(),
            }],
            tables: vec![Table {
                title: "by file size".into(),
                columns: vec!["key", "count"],
                rows: vec![vec!["4KiB..8KiB".into(), "3".into()]],
            }],
        };
        let page = render(&report).unwrap();
        assert!(page.contains("<svg") && page.contains("<td>4KiB..8KiB</td>"));
        assert!(page.contains("<h1>copy-up latency (tracepoint backend)</h1>"));
        for fetch in ["src=", "<link", "<script", "@import", "url("] {
            assert!(!page.contains(fetch), "{fetch}");
        }
    }
}
