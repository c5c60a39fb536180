//! `make bench`: SFTP pull throughput of ferry beside OpenSSH's `sftp -b`
//! and `rclone copy`, all from one local sshd (the tests' harness, on
//! loopback): one large file (1 GiB; FERRY_BENCH_BIG_MIB to change) and
//! 5,000 files of 4 KiB (FERRY_BENCH_SMALL to change). Prints one table.
//!
//! ferry's side is the path `ferry run` takes files by: list, downloads
//! ahead on one session, each file hashed (SHA-256) into a temporary name,
//! the batch made durable on disk, renamed, the folder synced
//! (`ferry::run::pull`). It does not load the files into SQLite. The other
//! two write without syncing. Goals (issue 5): >= 1.2x OpenSSH's throughput
//! on the large file, >= 3x on the small files.

#[allow(dead_code)]
#[path = "../tests/servers.rs"]
mod servers;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ferry::transport::{self, Endpoint, Limits, SftpEndpoint, SshAuth};
use servers::{KEY_USER, Sshd};

struct Case {
    name: &'static str,
    remote: PathBuf,
    files: usize,
    bytes: u64,
}

struct Row {
    tool: &'static str,
    case: &'static str,
    secs: f64,
    files: usize,
    bytes: u64,
}

fn main() {
    let big_mib: u64 = env_num("FERRY_BENCH_BIG_MIB", 1024);
    let small_n: usize = env_num("FERRY_BENCH_SMALL", 5000) as usize;
    let sshd = Sshd::start();
    let work = tempfile::tempdir().expect("tempdir");
    let kh = work.path().join("known_hosts");
    fs::write(&kh, sshd.known_hosts_line()).unwrap();
    let key = sshd.key("id_rsa");

    eprintln!("transfer bench: writing {big_mib} MiB and {small_n} x 4 KiB on the server...");
    let big = sshd.srv().join("big");
    let small = sshd.srv().join("small");
    fs::create_dir_all(&big).unwrap();
    fs::create_dir_all(&small).unwrap();
    let mut block = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in block.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    {
        let mut f = fs::File::create(big.join("big.bin")).unwrap();
        for i in 0..big_mib {
            block[0..8].copy_from_slice(&i.to_le_bytes());
            f.write_all(&block).unwrap();
        }
    }
    for i in 0..small_n {
        block[0..8].copy_from_slice(&(i as u64).to_le_bytes());
        fs::write(small.join(format!("f{i:05}.dat")), &block[..4096]).unwrap();
    }
    let cases = [
        Case { name: "1 large file", remote: big, files: 1, bytes: big_mib << 20 },
        Case { name: "small files", remote: small, files: small_n, bytes: small_n as u64 * 4096 },
    ];

    let mut rows = Vec::new();
    for case in &cases {
        for tool in ["ferry", "sftp -b", "rclone copy"] {
            let dest = work.path().join("dest");
            let _ = fs::remove_dir_all(&dest);
            fs::create_dir_all(&dest).unwrap();
            // Start each from the same page cache state for the source.
            let started = Instant::now();
            match tool {
                "ferry" => ferry_pull(&sshd, &key, &kh, &case.remote, &dest),
                "sftp -b" => openssh_pull(&sshd, &key, &kh, &case.remote, &dest, work.path()),
                _ => rclone_pull(&sshd, &key, &kh, &case.remote, &dest),
            }
            let secs = started.elapsed().as_secs_f64();
            let (files, bytes) = tally(&dest);
            assert_eq!((files, bytes), (case.files, case.bytes), "{tool} on {}: incomplete copy", case.name);
            eprintln!("  {tool:<12} {:<13} {secs:7.2} s", case.name);
            rows.push(Row { tool, case: case.name, secs, files, bytes });
        }
    }

    println!();
    println!("SFTP pull from a local OpenSSH sshd ({} MiB file; {small_n} x 4 KiB files)", big_mib);
    println!(
        "{:<13} {:<12} {:>9} {:>9} {:>10} {:>13}",
        "case", "tool", "seconds", "MB/s", "files/s", "vs sftp -b"
    );
    for case in &cases {
        let base = rows.iter().find(|r| r.case == case.name && r.tool == "sftp -b").map(|r| r.secs).unwrap();
        for r in rows.iter().filter(|r| r.case == case.name) {
            println!(
                "{:<13} {:<12} {:>9.2} {:>9.1} {:>10.0} {:>12.2}x",
                r.case,
                r.tool,
                r.secs,
                r.bytes as f64 / 1e6 / r.secs,
                r.files as f64 / r.secs,
                base / r.secs
            );
        }
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// What `ferry run` does to take files, minus the load into SQLite.
fn ferry_pull(sshd: &Sshd, key: &Path, kh: &Path, remote: &Path, dest: &Path) {
    let endpoint = Endpoint::Sftp(SftpEndpoint {
        host: "127.0.0.1".into(),
        port: sshd.port,
        user: KEY_USER.into(),
        auth: SshAuth::Key { file: key.to_path_buf(), passphrase: None },
        known_hosts: kh.to_path_buf(),
        folder: remote.display().to_string(),
        limits: Limits::remote_default(),
        parallel: 16,
    });
    let mut t = transport::open(&endpoint).expect("open");
    let entries = t.list().expect("list");
    t.prefetch(&entries);
    let names: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
    for batch in names.chunks(512) {
        for f in ferry::run::pull(t.as_mut(), batch, dest).expect("pull") {
            assert!(matches!(f, ferry::run::Fetched::Whole(..)), "{f:?}");
        }
    }
}

fn openssh_pull(sshd: &Sshd, key: &Path, kh: &Path, remote: &Path, dest: &Path, work: &Path) {
    let batch = work.join("batch");
    fs::write(&batch, format!("get {}/* {}/\n", remote.display(), dest.display())).unwrap();
    let out = Command::new("sftp")
        .arg("-q")
        .arg("-b")
        .arg(&batch)
        .arg("-P")
        .arg(sshd.port.to_string())
        .arg("-i")
        .arg(key)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", kh.display()))
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
        .arg(format!("{KEY_USER}@127.0.0.1"))
        .output()
        .expect("sftp is missing: run tests/install-deps.sh");
    assert!(out.status.success(), "sftp: {}", String::from_utf8_lossy(&out.stderr));
}

fn rclone_pull(sshd: &Sshd, key: &Path, kh: &Path, remote: &Path, dest: &Path) {
    let out = Command::new("rclone")
        .args(["copy", "--config", "/dev/null"])
        .arg(format!("bench:{}", remote.display()))
        .arg(dest)
        .env("RCLONE_CONFIG_BENCH_TYPE", "sftp")
        .env("RCLONE_CONFIG_BENCH_HOST", "127.0.0.1")
        .env("RCLONE_CONFIG_BENCH_PORT", sshd.port.to_string())
        .env("RCLONE_CONFIG_BENCH_USER", KEY_USER)
        .env("RCLONE_CONFIG_BENCH_KEY_FILE", key)
        .env("RCLONE_CONFIG_BENCH_KNOWN_HOSTS_FILE", kh)
        // The test account has no shell for rclone's remote md5sum.
        .env("RCLONE_CONFIG_BENCH_DISABLE_HASHCHECK", "true")
        .output()
        .expect("rclone is missing: run tests/install-deps.sh");
    assert!(out.status.success(), "rclone: {}", String::from_utf8_lossy(&out.stderr));
}

fn tally(dir: &Path) -> (usize, u64) {
    let mut files = 0;
    let mut bytes = 0;
    for e in fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        if m.is_file() {
            files += 1;
            bytes += m.len();
        }
    }
    (files, bytes)
}
