use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch project: its own folder, its own FERRY_HOME.
pub struct Dir {
    root: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Dir {
        Dir { root: tempfile::tempdir().expect("tempdir") }
    }

    /// A scratch copy of the project's jobs/, schemas/ and sample-data/.
    pub fn with_project() -> Dir {
        let d = Dir::new();
        let src = Path::new(env!("CARGO_MANIFEST_DIR"));
        for sub in ["jobs", "schemas", "sample-data"] {
            copy_tree(&src.join(sub), &d.path(sub));
        }
        d
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap();
        p
    }

    /// Copy a fixture from tests/data.
    pub fn fixture(&self, name: &str, rel: &str) -> PathBuf {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name);
        self.write(rel, fs::read(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display())))
    }

    pub fn home(&self) -> PathBuf {
        self.path("home")
    }

    pub fn ferry(&self, args: &[&str]) -> Output {
        self.ferry_env(args, &[])
    }

    /// `ferry` with extra environment variables.
    pub fn ferry_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .current_dir(self.root.path())
            .env("FERRY_HOME", self.home())
            .env_remove("FERRY_LOG")
            .env_remove("FERRY_FAILPOINT")
            .env_remove("FERRY_PAUSEPOINT")
            .envs(env.iter().copied())
            .output()
            .expect("run ferry")
    }

    /// The run folders of a job, oldest first.
    pub fn report_dirs(&self, job: &str) -> Vec<PathBuf> {
        let dir = self.home().join("reports").join(job);
        let mut out: Vec<PathBuf> = fs::read_dir(&dir)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        out.retain(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'));
        out.sort();
        out
    }

    pub fn latest_report(&self, job: &str) -> PathBuf {
        self.report_dirs(job).pop().unwrap_or_else(|| panic!("no report folder for {job}"))
    }
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            fs::copy(e.path(), target).unwrap();
        }
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Assert the exit status, showing the output when it is wrong.
pub fn assert_exit(o: &Output, code: i32) {
    assert_eq!(o.status.code(), Some(code), "exit status\nstdout:\n{}\nstderr:\n{}", stdout(o), stderr(o));
}

/// A CSV (a report, with its BOM) as rows keyed by header.
pub fn read_csv(path: &Path) -> Vec<HashMap<String, String>> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let mut rdr = csv::Reader::from_reader(bytes);
    let headers = rdr.headers().unwrap().clone();
    rdr.records()
        .map(|r| {
            let r = r.unwrap();
            headers.iter().zip(r.iter()).map(|(h, v)| (h.to_string(), v.to_string())).collect()
        })
        .collect()
}

/// summary.csv as (scope, metric) -> value.
pub fn summary(dir: &Path) -> HashMap<(String, String), String> {
    read_csv(&dir.join("summary.csv"))
        .into_iter()
        .map(|r| ((r["scope"].clone(), r["metric"].clone()), r["value"].clone()))
        .collect()
}

pub fn count(summary: &HashMap<(String, String), String>, scope: &str, metric: &str) -> u64 {
    summary
        .get(&(scope.to_string(), metric.to_string()))
        .unwrap_or_else(|| panic!("summary has no {scope}/{metric}"))
        .parse()
        .unwrap()
}

/// The shipped demo job with more top-level keys (`top`) and more tables
/// (`tables`), for tests that schedule, email or push it.
pub fn demo_job(top: &str, tables: &str) -> String {
    let base = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/demo.toml")).unwrap();
    assert!(base.contains("name = \"demo\"\n"));
    format!("{}\n{tables}\n", base.replacen("name = \"demo\"\n", &format!("name = \"demo\"\n{top}\n"), 1))
}

/// The rows of a two-column query, as pairs.
pub fn pairs<A: rusqlite::types::FromSql, B: rusqlite::types::FromSql>(
    db: &rusqlite::Connection,
    sql: &str,
) -> Vec<(A, B)> {
    let mut stmt = db.prepare(sql).unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}
