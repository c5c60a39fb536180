//! `report.html`: the run at a glance for a manager, in one self-contained
//! page (no script, no font, no image from anywhere; a Content-Security-
//! Policy says so to the browser). Counts and file names only, never a
//! patient: the page is attached to the email outside the zip. Every piece
//! of text that comes from data goes through [`esc`].

use std::fmt::Write as _;

use crate::store::RunRow;

use super::FileSummary;

/// One run in the charts.
#[derive(Debug, Clone)]
pub(crate) struct Point {
    pub run_id: i64,
    /// As people read it, in local time.
    pub when: String,
    pub outcome: String,
    pub records: u64,
    pub rejects: u64,
    pub matches: u64,
    pub conflicts: u64,
}

impl Point {
    pub(crate) fn from_row(r: &RunRow) -> Point {
        Point {
            run_id: r.id,
            when: super::local_time(&r.started_at),
            outcome: r.outcome.clone(),
            records: r.records,
            rejects: r.rejects,
            matches: r.matches,
            conflicts: r.conflicts,
        }
    }
}

/// Everything on the page.
pub(crate) struct Page<'a> {
    pub job: &'a str,
    pub run_id: i64,
    pub started: &'a str,
    pub outcome: &'a str,
    /// (label, value) headline numbers.
    pub counts: &'a [(&'a str, u64)],
    pub files: &'a [FileSummary],
    /// Oldest first, this run last.
    pub history: &'a [Point],
    /// (file name, what it lists) of the CSVs beside the page.
    pub outputs: &'a [(&'a str, &'a str)],
}

/// HTML-escape text for element content and quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif;margin:24px auto;max-width:1040px;padding:0 16px;color:#1d2330;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde2ea;padding-bottom:4px}
.muted{color:#5c6678}.badge{display:inline-block;padding:2px 10px;border-radius:12px;font-size:14px;vertical-align:middle;color:#fff}
.ok{background:#2e7d4f}.failed{background:#b3261e}.other{background:#8a6d00}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}.card{border:1px solid #dde2ea;border-radius:8px;padding:10px 16px;min-width:130px}
.card b{display:block;font-size:26px}.card span{color:#5c6678;font-size:13px}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eef1f5;vertical-align:top}
th{background:#f4f6f9;font-weight:600}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(240px,1fr));gap:16px}
.chart{border:1px solid #dde2ea;border-radius:8px;padding:8px 10px}.chart h3{font-size:14px;margin:0 0 4px}
svg{display:block;width:100%;height:auto}footer{margin-top:32px;font-size:13px;color:#5c6678}
";

pub(crate) fn render(p: &Page) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let badge = match p.outcome {
        "ok" => "ok",
        "failed" => "failed",
        _ => "other",
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>ferry {job}: run {run}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>{job} <span class=\"badge {badge}\">{outcome}</span></h1>\n\
         <div class=\"muted\">Run {run}, started {started}</div>\n",
        job = esc(p.job),
        run = p.run_id,
        outcome = esc(p.outcome),
        started = esc(p.started),
    );

    h.push_str("<div class=\"cards\">\n");
    for (label, v) in p.counts.iter().take(6) {
        let _ = writeln!(h, "<div class=\"card\"><b>{v}</b><span>{}</span></div>", esc(label));
    }
    h.push_str("</div>\n");

    let _ = writeln!(h, "<h2>Last {} run(s)</h2>\n<div class=\"charts\">", p.history.len());
    type Metric = fn(&Point) -> u64;
    let charts: [(&str, Metric, &str); 4] = [
        ("Records loaded", |x| x.records, "#3461c1"),
        ("Rejected records", |x| x.rejects, "#c2571a"),
        ("Links (matched pairs)", |x| x.matches, "#2e7d4f"),
        ("External ID conflicts", |x| x.conflicts, "#8e3aa8"),
    ];
    for (title, metric, colour) in charts {
        let _ = writeln!(
            h,
            "<div class=\"chart\"><h3>{}</h3>{}</div>",
            esc(title),
            chart(p.history, metric, colour)
        );
    }
    h.push_str("</div>\n");

    h.push_str("<h2>Summary</h2>\n<table>\n<tr><th>Count</th><th class=\"n\">Value</th></tr>\n");
    for (label, v) in p.counts {
        let _ = writeln!(h, "<tr><td>{}</td><td class=\"n\">{v}</td></tr>", esc(label));
    }
    h.push_str("</table>\n");

    h.push_str(
        "<h2>Files</h2>\n<table>\n<tr><th>Side</th><th>File</th><th>Status</th><th class=\"n\">Read</th>\
         <th class=\"n\">Accepted</th><th class=\"n\">Rejected</th><th class=\"n\">Warnings</th><th>Note</th></tr>\n",
    );
    if p.files.is_empty() {
        h.push_str("<tr><td colspan=\"8\" class=\"muted\">No new files this run.</td></tr>\n");
    }
    for f in p.files {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            esc(f.side.as_str()),
            esc(&f.name),
            esc(&f.status),
            f.read,
            f.accepted,
            f.rejected,
            f.warnings,
            esc(&f.detail)
        );
    }
    h.push_str("</table>\n");

    h.push_str("<h2>Report files in this folder</h2>\n<table>\n<tr><th>File</th><th>One row per</th></tr>\n");
    for (name, what) in p.outputs {
        let _ = writeln!(h, "<tr><td><a href=\"{0}\">{0}</a></td><td>{1}</td></tr>", esc(name), esc(what));
    }
    h.push_str("</table>\n");
    let _ = write!(
        h,
        "<footer>Written by ferry {}. This page holds counts only; the patients behind them are in the \
         CSV files beside it.</footer>\n</body>\n</html>\n",
        esc(env!("CARGO_PKG_VERSION"))
    );
    h
}

/// A small bar chart of one count over the runs, as inline SVG. The last
/// bar (this run) is drawn solid, failed runs hatched grey.
fn chart(points: &[Point], metric: fn(&Point) -> u64, colour: &str) -> String {
    const W: f64 = 300.0;
    const H: f64 = 110.0;
    const TOP: f64 = 14.0;
    const BOTTOM: f64 = 18.0;
    let max = points.iter().map(metric).max().unwrap_or(0);
    let scale = if max == 0 { 0.0 } else { (H - TOP - BOTTOM) / max as f64 };
    let slot = W / points.len().max(1) as f64;
    let bar = (slot * 0.7).max(1.0);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg viewBox=\"0 0 {W} {H}\" xmlns=\"http://www.w3.org/2000/svg\" role=\"img\">\
         <line x1=\"0\" y1=\"{base}\" x2=\"{W}\" y2=\"{base}\" stroke=\"#c5ccd8\"/>\
         <text x=\"0\" y=\"10\" font-size=\"10\" fill=\"#5c6678\">max {max}</text>",
        base = H - BOTTOM
    );
    for (i, p) in points.iter().enumerate() {
        let v = metric(p);
        let height = (v as f64 * scale).max(if v > 0 { 1.0 } else { 0.0 });
        let x = i as f64 * slot + (slot - bar) / 2.0;
        let y = H - BOTTOM - height;
        let last = i + 1 == points.len();
        let fill = if p.outcome == "failed" { "#9aa3b2" } else { colour };
        let opacity = if last { "1" } else { "0.55" };
        let _ = write!(
            s,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{height:.1}\" fill=\"{fill}\" \
             fill-opacity=\"{opacity}\"><title>run {} ({}), {}: {v}</title></rect>",
            p.run_id,
            esc(&p.when),
            esc(&p.outcome)
        );
    }
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        let _ = write!(
            s,
            "<text x=\"0\" y=\"{y}\" font-size=\"10\" fill=\"#5c6678\">{}</text>\
             <text x=\"{W}\" y=\"{y}\" font-size=\"10\" fill=\"#5c6678\" text-anchor=\"end\">{}</text>",
            esc(first.when.get(..10).unwrap_or(&first.when)),
            esc(last.when.get(..10).unwrap_or(&last.when)),
            y = H - 4.0
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Side;

    #[test]
    fn everything_from_data_is_escaped() {
        let evil = "<script>alert('x')</script>&\"";
        let files = [FileSummary {
            side: Side::Ehr,
            name: evil.into(),
            status: "loaded".into(),
            read: 1,
            accepted: 1,
            rejected: 0,
            warnings: 0,
            detail: evil.into(),
        }];
        let history = [Point {
            run_id: 1,
            when: evil.into(),
            outcome: evil.into(),
            records: 3,
            rejects: 0,
            matches: 1,
            conflicts: 0,
        }];
        let page = render(&Page {
            job: evil,
            run_id: 1,
            started: evil,
            outcome: evil,
            counts: &[(evil, 3)],
            files: &files,
            history: &history,
            outputs: &[(evil, evil)],
        });
        assert!(!page.contains("<script>"), "{page}");
        assert!(!page.contains("alert('x')"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"));
        // No network: nothing refers to another host.
        assert!(
            !page.contains("http://")
                || page.matches("http://").count() == page.matches("http://www.w3.org/2000/svg").count()
        );
        assert!(!page.contains("https://"));
    }

    #[test]
    fn bars_scale_to_the_largest_run() {
        let pts: Vec<Point> = (1..=3)
            .map(|i| Point {
                run_id: i,
                when: format!("2026-06-0{i} 02:30"),
                outcome: "ok".into(),
                records: i as u64 * 10,
                rejects: 0,
                matches: 0,
                conflicts: 0,
            })
            .collect();
        let svg = chart(&pts, |p| p.records, "#000");
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains("max 30"));
        // All-zero counts draw empty bars, not NaN.
        let svg = chart(&pts, |p| p.rejects, "#000");
        assert!(!svg.contains("NaN"), "{svg}");
    }
}
