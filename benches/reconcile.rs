//! `make bench` (reconciliation part): link quality against the generator's
//! truth beside Python's recordlinkage and splink on the same sample, and a
//! backfill plus reconciliation at scale with wall time and peak memory.
//!
//! FERRY_BENCH_QUALITY sets the quality sample (default 10,000 patients per
//! side), FERRY_BENCH_PATIENTS the scale run (default 1,000,000 per side;
//! 0 skips it), FERRY_BENCH_SEED the quality sample's seed (default 1; try
//! others to see that the rules are not tuned to one sample). Generated
//! files are kept under target/bench/ and reused.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry::generate::{GenOptions, Noise, generate};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(default)
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The generated population of `n` per side (seeded), made once.
fn population(n: usize, seed: u64) -> PathBuf {
    let dir = root().join(format!("target/bench/population_{n}_{seed}"));
    if !dir.join("truth.csv").exists() {
        eprintln!("bench: generating {n} patients per side in {} ...", dir.display());
        let t = Instant::now();
        generate(&GenOptions { patients: n, seed, noise: Noise::default(), out_dir: dir.clone() })
            .expect("generate");
        eprintln!("bench: generated in {:.1}s", t.elapsed().as_secs_f64());
    }
    dir
}

/// A copy of a population with the ID columns each side carries blanked:
/// demographics alone, as the Python tools link.
fn without_ids(dir: &Path) -> PathBuf {
    let out = dir.with_file_name(format!("{}_no_ids", dir.file_name().unwrap().to_string_lossy()));
    if out.join("truth.csv").exists() {
        return out;
    }
    fs::create_dir_all(&out).unwrap();
    blank_column(&dir.join("ehr_patients.csv"), &out.join("ehr_patients.csv"), "PracticeMRN", true);
    blank_column(&dir.join("practice_roster.csv"), &out.join("practice_roster.csv"), "EHR Patient ID", false);
    fs::copy(dir.join("truth.csv"), out.join("truth.csv")).unwrap();
    out
}

/// Copy a CSV with one column emptied. The EHR file is UTF-8 with a BOM;
/// the roster Windows-1252, which passes through untouched as bytes.
fn blank_column(from: &Path, to: &Path, column: &str, bom: bool) {
    let bytes = fs::read(from).unwrap();
    let body = if bom { bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes) } else { &bytes[..] };
    let mut rdr = csv::ReaderBuilder::new().has_headers(false).from_reader(body);
    let mut out = Vec::new();
    if bom {
        out.extend_from_slice(b"\xEF\xBB\xBF");
    }
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(&mut out);
    let mut index = None;
    for rec in rdr.byte_records() {
        let rec = rec.unwrap();
        let i = *index.get_or_insert_with(|| rec.iter().position(|h| h == column.as_bytes()).expect(column));
        let fields: Vec<&[u8]> = rec
            .iter()
            .enumerate()
            .map(|(j, f)| if j == i && !f.starts_with(column.as_bytes()) { &[][..] } else { f })
            .collect();
        w.write_record(fields).unwrap();
    }
    drop(w);
    fs::write(to, out).unwrap();
}

struct Backfill {
    secs: f64,
    /// The part of the run that does what the Python tools' seconds cover
    /// (read and normalise both files, block, compare, train, classify,
    /// choose links): see [`linkage_secs`].
    linkage_secs: Option<f64>,
    peak_rss_mib: f64,
    summary: HashMap<String, String>,
    report: PathBuf,
}

/// Run `ferry backfill` on a population in a fresh state folder, sampling
/// the child's peak resident memory (VmHWM) while it runs.
fn backfill(data: &Path, name: &str) -> Backfill {
    let work = root().join("target/bench/runs").join(name);
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(work.join("inbox")).unwrap();
    // Hard links keep a 1M-row file from being copied; the source keeps it.
    let inbox_file = work.join("inbox/ehr_patients.csv");
    if fs::hard_link(data.join("ehr_patients.csv"), &inbox_file).is_err() {
        fs::copy(data.join("ehr_patients.csv"), &inbox_file).unwrap();
    }
    let job = format!(
        "name = \"{name}\"\nstate_dir = \"state\"\nschemas_dir = \"{schemas}\"\n\n[source]\ntype = \"local\"\n\
         inbox = \"inbox\"\nmin_age = \"0\"\nafter = \"keep\"\n\n[[inputs]]\nfiles = \"ehr_patients.csv\"\n\
         schema = \"ehr_patients\"\n\n[practice]\nfile = \"{roster}\"\nschema = \"practice_roster\"\n",
        schemas = root().join("schemas").display(),
        roster = data.join("practice_roster.csv").display(),
    );
    fs::write(work.join("job.toml"), job).unwrap();
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["backfill", "job.toml", "-vv", "--log-format", "json"])
        .current_dir(&work)
        .stdout(Stdio::null())
        .stderr(fs::File::create(work.join("backfill.log")).unwrap())
        .spawn()
        .expect("start ferry");
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let status = loop {
        if let Ok(s) = fs::read_to_string(&status_path)
            && let Some(v) = s.lines().find_map(|l| l.strip_prefix("VmHWM:"))
        {
            peak_kib = peak_kib.max(v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0));
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let secs = start.elapsed().as_secs_f64();
    let log = fs::read_to_string(work.join("backfill.log")).unwrap_or_default();
    assert!(status.success(), "ferry backfill failed on {}:\n{log}", data.display());
    let reports = work.join("state/reports").join(name);
    let report = fs::read_dir(&reports).unwrap().map(|e| e.unwrap().path()).max().expect("a report folder");
    let summary = read_rows(&report.join("summary.csv"))
        .into_iter()
        .filter(|r| r["scope"] == "reconcile")
        .map(|r| (r["metric"].clone(), r["value"].clone()))
        .collect();
    Backfill {
        secs,
        linkage_secs: linkage_secs(&log),
        peak_rss_mib: peak_kib as f64 / 1024.0,
        summary,
        report,
    }
}

/// From the run's `-vv` JSON log ("Stage done." lines with each stage's
/// end time and milliseconds): parsing the files, plus everything from
/// the start of "matching features" to the end of "deciding links" (the
/// ID links, blocking, comparing, u and the model, the decisions; some of
/// it side by side). Loading into and reading back from the store, the
/// duplicates, field differences and reports are left out.
fn linkage_secs(log: &str) -> Option<f64> {
    let stages: Vec<(String, f64, f64)> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let f = v.get("fields")?;
            let stage = f.get("stage")?.as_str()?.to_string();
            let ms = f.get("ms")?.as_f64()?;
            let end = chrono::DateTime::parse_from_rfc3339(v.get("timestamp")?.as_str()?).ok()?;
            let end = end.timestamp_micros() as f64 / 1e6;
            Some((stage, end - ms / 1e3, end))
        })
        .collect();
    let find = |name: &str| stages.iter().find(|s| s.0 == name);
    let parse = find("parsing flat files")?;
    let (start, end) = (find("matching features")?.1, find("deciding links")?.2);
    Some(parse.2 - parse.1 + end - start)
}

fn read_rows(path: &Path) -> Vec<HashMap<String, String>> {
    let bytes = fs::read(path).unwrap();
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let mut rdr = csv::Reader::from_reader(body);
    let headers = rdr.headers().unwrap().clone();
    rdr.records()
        .map(|r| headers.iter().zip(r.unwrap().iter()).map(|(h, v)| (h.to_string(), v.to_string())).collect())
        .collect()
}

/// Precision, recall and F1 of ferry's links, scored by the same code that
/// scores the Python tools (benches/linkage/compare.py --evaluate).
fn evaluate(data: &Path, report: &Path, name: &str) -> Option<serde_json::Value> {
    let links = report.with_file_name(format!("{name}_links.csv"));
    let mut w = csv::Writer::from_path(&links).unwrap();
    w.write_record(["ehr_id", "practice_id"]).unwrap();
    for r in read_rows(&report.join("matched.csv")) {
        w.write_record([&r["ehr_id"], &r["practice_mrn"]]).unwrap();
    }
    w.flush().unwrap();
    let script = root().join("benches/linkage/compare.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(data)
        .args(["--evaluate"])
        .arg(&links)
        .args(["--name", name])
        .output()
        .ok()?;
    serde_json::from_slice(out.stdout.trim_ascii()).ok()
}

/// recordlinkage and splink on the same sample, each as a JSON line.
fn python_tools(data: &Path) -> Vec<serde_json::Value> {
    let venv = root().join("target/bench/linkage-venv");
    let setup = Command::new("bash").arg(root().join("benches/linkage/setup.sh")).arg(&venv).status();
    if !setup.is_ok_and(|s| s.success()) {
        eprintln!(
            "bench: could not set up recordlinkage/splink (benches/linkage/setup.sh); skipping their rows"
        );
        return Vec::new();
    }
    let out = Command::new(venv.join("bin/python"))
        .arg(root().join("benches/linkage/compare.py"))
        .arg(data)
        .args(["--tool", "all", "--json"])
        .stderr(Stdio::inherit())
        .output()
        .expect("run compare.py");
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn num(v: &serde_json::Value, key: &str) -> f64 {
    v.get(key).and_then(serde_json::Value::as_f64).unwrap_or(f64::NAN)
}

fn main() {
    let quality_n = env_usize("FERRY_BENCH_QUALITY", 10_000);
    let scale_n = env_usize("FERRY_BENCH_PATIENTS", 1_000_000);

    if quality_n > 0 {
        let seed = env_usize("FERRY_BENCH_SEED", 1) as u64;
        let with_ids = population(quality_n, seed);
        let no_ids = without_ids(&with_ids);
        let mut rows: Vec<(String, f64, Option<f64>, serde_json::Value)> = Vec::new();
        for (name, data) in
            [("ferry (demographics only)", &no_ids), ("ferry (IDs, then demographics)", &with_ids)]
        {
            let run = backfill(data, if data == &no_ids { "quality_no_ids" } else { "quality_ids" });
            if let Some(score) = evaluate(data, &run.report, "ferry") {
                rows.push((name.to_string(), run.secs, run.linkage_secs, score));
            }
        }
        for v in python_tools(&no_ids) {
            let tool = v.get("tool").and_then(|t| t.as_str()).unwrap_or("?").to_string();
            let secs = num(&v, "seconds");
            rows.push((format!("{tool} (demographics only)"), secs, Some(secs), v));
        }
        println!();
        println!(
            "Link quality, {quality_n} x {quality_n} patients (generator default noise, seed {seed}, no SSN)"
        );
        println!(
            "{:<34} {:>9} {:>9} {:>8} {:>10} {:>8} {:>8}",
            "tool", "seconds", "linkage", "links", "precision", "recall", "F1"
        );
        for (name, secs, linkage, v) in &rows {
            let linkage = linkage.map_or("-".to_string(), |l| format!("{l:.2}"));
            println!(
                "{name:<34} {secs:>9.2} {linkage:>9} {:>8} {:>10.4} {:>8.4} {:>8.4}",
                v.get("links").and_then(serde_json::Value::as_u64).unwrap_or(0),
                num(v, "precision"),
                num(v, "recall"),
                num(v, "f1"),
            );
        }
        println!(
            "(ferry's seconds are the whole backfill: parse, load into SQLite, reconcile, reports; its \
             linkage\n the part the Python tools' seconds cover: parse, features, ID links, blocking, \
             compare, train, decide)"
        );
    }

    if scale_n > 0 {
        let data = population(scale_n, 2);
        let run = backfill(&data, "scale");
        let get = |k: &str| run.summary.get(k).cloned().unwrap_or_default();
        println!();
        println!("Backfill + reconciliation, {scale_n} x {scale_n} patients from generated files");
        println!("{:<34} {:>12}", "wall seconds", format!("{:.1}", run.secs));
        if let Some(l) = run.linkage_secs {
            println!("{:<34} {:>12}", "of which linkage (as above)", format!("{l:.1}"));
        }
        println!("{:<34} {:>12}", "peak resident memory (MiB)", format!("{:.0}", run.peak_rss_mib));
        for k in [
            "ehr_patients",
            "practice_patients",
            "matched_by_practice_mrn",
            "matched_by_ehr_id",
            "matched_by_demographics",
            "possible_matches",
            "possible_duplicates",
            "external_id_conflicts",
            "candidate_pairs_compared",
            "duplicate_pairs_compared",
            "blocks_skipped_as_too_large",
        ] {
            println!("{k:<34} {:>12}", get(k));
        }
        let pairs: f64 = get("candidate_pairs_compared").parse().unwrap_or(0.0);
        println!("{:<34} {:>12.2}", "candidate pairs per patient", pairs / scale_n as f64);
    }
}
