//! `report.html` in headless Chromium (Debian's `chromium`): it renders
//! with no console error and no request anywhere (the page's CSP would log
//! one), and the screenshot is a page with content, charts included.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{Dir, assert_exit};

fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser"] {
        if let Ok(out) = Command::new("which").arg(name).output()
            && out.status.success()
        {
            return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        }
    }
    panic!(
        "chromium is missing: run ./tests/install-deps.sh (or `make test`), or `apt-get install chromium`"
    );
}

/// Render `page` headless and return (screenshot PNG path, Chromium's log).
fn screenshot(page: &Path, scratch: &Path) -> (PathBuf, String) {
    let png = scratch.join("report.png");
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            // Nothing may leave the machine: no name resolves, any proxy use hits a closed loopback port.
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--proxy-server=http://127.0.0.1:9",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1000,1400",
        ])
        .arg(format!("--user-data-dir={}", scratch.join("profile").display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "chromium failed: {log}");
    (png, log)
}

#[test]
fn report_html_renders_in_headless_chromium() {
    let d = Dir::with_project();
    for now in ["2026-06-01T02:30:00-04:00", "2026-06-02T02:30:00-04:00"] {
        assert_exit(&d.ferry_env(&["run", "demo"], &[("FERRY_NOW", now)]), 0);
    }
    let page = d.latest_report("demo").join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<svg") && html.contains("Content-Security-Policy"));
    assert!(!html.contains("<script") && !html.contains("https://"), "self-contained, no script");
    assert_eq!(html.matches("<svg").count(), 4, "four charts");

    let (png, log) = screenshot(&page, &d.path("chromium"));
    for bad in ["CONSOLE", "Uncaught", "Refused to", "ERR_FILE_NOT_FOUND", "net::ERR"] {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(bad)).collect();
        assert!(lines.is_empty(), "chromium logged {bad}: {lines:#?}");
    }

    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1000, 1400));
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(channels).collect();
    let ink = pixels.iter().filter(|p| p[..3].iter().any(|&c| c < 200)).count();
    let share = ink as f64 / pixels.len() as f64;
    assert!(share > 0.02, "the page looks empty: {:.3}% of pixels are not near-white", share * 100.0);
    // The charts' and badge's green (#2e7d4f) is on the page.
    let green = pixels
        .iter()
        .filter(|p| p[0].abs_diff(0x2e) < 24 && p[1].abs_diff(0x7d) < 24 && p[2].abs_diff(0x4f) < 24)
        .count();
    assert!(green > 500, "no chart bars or badge drawn ({green} green pixels)");
    let colours: std::collections::HashSet<[u8; 3]> = pixels.iter().map(|p| [p[0], p[1], p[2]]).collect();
    assert!(colours.len() > 30, "only {} colours: not a rendered page", colours.len());
}
