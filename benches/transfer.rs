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
//!
//! The machine is shared and noisy: FERRY_BENCH_RUNS=N runs every tool N
//! times, interleaved, and reports the median with the fastest and slowest
//! run. FERRY_BENCH_CASES=large (or small) and FERRY_BENCH_TOOLS=ferry,...
//! narrow a run down while tuning or profiling.

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

/// The allocator the `ferry` binary uses (see src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Case {
    name: &'static str,
    remote: PathBuf,
    files: usize,
    bytes: u64,
}

struct Row {
    tool: &'static str,
    case: &'static str,
    /// One time per run, sorted.
    secs: Vec<f64>,
    /// CPU seconds (user + system) the client spent, per run, sorted: a
    /// steadier measure than the wall clock on a busy machine.
    cpu: Vec<f64>,
    /// CPU seconds the server's session processes spent, per run, sorted.
    server_cpu: Vec<f64>,
    files: usize,
    bytes: u64,
}

impl Row {
    fn median(&self) -> f64 {
        self.secs[self.secs.len() / 2]
    }
}

const TOOLS: [&str; 3] = ["ferry", "sftp -b", "rclone copy"];

fn main() {
    // Not ferry::tune_memory(): its THP setting is inherited by sshd, sftp
    // and rclone started from here, and slowed OpenSSH by ~10%.
    let big_mib: u64 = env_num("FERRY_BENCH_BIG_MIB", 1024);
    let small_n: usize = env_num("FERRY_BENCH_SMALL", 5000) as usize;
    let runs = env_num("FERRY_BENCH_RUNS", 1).max(1) as usize;
    let only =
        |var: &str, what: &str| std::env::var(var).map_or(true, |v| v.split(',').any(|x| x.trim() == what));
    let sshd = Sshd::start();
    let sshd_pid = servers::children_of(std::process::id())
        .into_iter()
        .find(|&p| fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sshd"));
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
    let cases: Vec<Case> = [
        ("large", Case { name: "1 large file", remote: big, files: 1, bytes: big_mib << 20 }),
        ("small", Case { name: "small files", remote: small, files: small_n, bytes: small_n as u64 * 4096 }),
    ]
    .into_iter()
    .filter(|(key, _)| only("FERRY_BENCH_CASES", key))
    .map(|(_, c)| c)
    .collect();
    let tools: Vec<&'static str> = TOOLS.into_iter().filter(|t| only("FERRY_BENCH_TOOLS", t)).collect();

    let mut rows: Vec<Row> = Vec::new();
    for case in &cases {
        // Each run writes to a folder of its own, and a case's many-file
        // folders are removed only after its last run: ext4 scans past
        // recently freed inodes when it allocates new ones, and creating
        // 5,000 files just after deleting 5,000 cost whichever tool came
        // next 2-3 s of system time (first ferry's later runs, and in a
        // single run sftp's and rclone's).
        let mut leftovers = Vec::new();
        for run in 0..runs {
            for &tool in &tools {
                let dest = work.path().join(format!("dest-{}-{run}", tool.replace(' ', "")));
                fs::create_dir_all(&dest).unwrap();
                let started = Instant::now();
                let cpu_before = cpu_secs();
                let server = sshd_pid.map(ServerCpu::watch);
                match tool {
                    "ferry" => ferry_pull(&sshd, &key, &kh, &case.remote, &dest),
                    "sftp -b" => openssh_pull(&sshd, &key, &kh, &case.remote, &dest, work.path()),
                    _ => rclone_pull(&sshd, &key, &kh, &case.remote, &dest),
                }
                let secs = started.elapsed().as_secs_f64();
                let cpu = cpu_secs() - cpu_before;
                let server_cpu = server.map_or(0.0, ServerCpu::take);
                let (files, bytes) = tally(&dest);
                assert_eq!(
                    (files, bytes),
                    (case.files, case.bytes),
                    "{tool} on {}: incomplete copy",
                    case.name
                );
                eprintln!(
                    "  run {} {tool:<12} {:<13} {secs:7.2} s, CPU {cpu:5.2} s client {server_cpu:5.2} s server",
                    run + 1,
                    case.name
                );
                match rows.iter_mut().find(|r| r.case == case.name && r.tool == tool) {
                    Some(r) => {
                        r.secs.push(secs);
                        r.cpu.push(cpu);
                        r.server_cpu.push(server_cpu);
                    }
                    None => rows.push(Row {
                        tool,
                        case: case.name,
                        secs: vec![secs],
                        cpu: vec![cpu],
                        server_cpu: vec![server_cpu],
                        files,
                        bytes,
                    }),
                }
                if case.files > 10 {
                    leftovers.push(dest);
                } else {
                    fs::remove_dir_all(&dest).unwrap();
                }
            }
        }
        for dest in leftovers {
            fs::remove_dir_all(&dest).unwrap();
        }
    }
    for r in &mut rows {
        r.secs.sort_by(f64::total_cmp);
        r.cpu.sort_by(f64::total_cmp);
        r.server_cpu.sort_by(f64::total_cmp);
    }

    println!();
    println!(
        "SFTP pull from a local OpenSSH sshd ({big_mib} MiB file; {small_n} x 4 KiB files; median of {runs} \
         run(s), range in brackets)"
    );
    println!(
        "{:<13} {:<12} {:>9} {:>15} {:>9} {:>10} {:>11} {:>10} {:>10}",
        "case", "tool", "seconds", "range", "MB/s", "files/s", "vs sftp -b", "client CPU", "server CPU"
    );
    for case in &cases {
        let base = rows.iter().find(|r| r.case == case.name && r.tool == "sftp -b").map(Row::median);
        for r in rows.iter().filter(|r| r.case == case.name) {
            let secs = r.median();
            let range = format!("[{:.2}-{:.2}]", r.secs[0], r.secs[r.secs.len() - 1]);
            let vs = base.map_or_else(|| "-".to_string(), |b| format!("{:.2}x", b / secs));
            println!(
                "{:<13} {:<12} {:>9.2} {:>15} {:>9.1} {:>10.0} {:>11} {:>10.2} {:>10.2}",
                r.case,
                r.tool,
                secs,
                range,
                r.bytes as f64 / 1e6 / secs,
                r.files as f64 / secs,
                vs,
                r.cpu[r.cpu.len() / 2],
                r.server_cpu[r.server_cpu.len() / 2]
            );
        }
    }
}

/// CPU time of this process (ferry runs in it) plus its waited-for
/// children (`sftp` with its `ssh`, `rclone`); sshd is not waited for, so
/// the server's share is in neither.
fn cpu_secs() -> f64 {
    let secs = |who| {
        // SAFETY: getrusage fills the struct it is given; zeroed is valid.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut u) };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(u.ru_utime) + tv(u.ru_stime)
    };
    secs(libc::RUSAGE_SELF) + secs(libc::RUSAGE_CHILDREN)
}

/// CPU time of sshd's session processes (one set per login, below the
/// listening sshd), sampled from /proc every 50 ms while a tool runs: a
/// process that ends is read from its last sample, so up to 50 ms of each
/// is missed. Their own time only (fields 14 and 15 of /proc/PID/stat):
/// reaped children's time would otherwise be counted twice.
struct ServerCpu {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sampler: std::thread::JoinHandle<f64>,
}

impl ServerCpu {
    fn watch(sshd: u32) -> ServerCpu {
        use std::collections::HashMap;
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let sampler = std::thread::spawn(move || {
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
            let mut seen: HashMap<u32, f64> = HashMap::new();
            loop {
                let done = stopped.load(Ordering::Relaxed);
                let mut below = vec![sshd];
                while let Some(p) = below.pop() {
                    for c in children(p) {
                        below.push(c);
                        let stat = fs::read_to_string(format!("/proc/{c}/stat")).unwrap_or_default();
                        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
                        // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
                        let f: Vec<f64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
                        let t = (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / hz;
                        seen.insert(c, t);
                    }
                }
                if done {
                    return seen.values().sum();
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        });
        ServerCpu { stop, sampler }
    }

    fn take(self) -> f64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.sampler.join().unwrap_or(0.0)
    }
}

/// A process's children, from the kernel's list (cheap enough to sample;
/// `servers::children_of` reads every process's stat instead).
fn children(pid: u32) -> Vec<u32> {
    let list = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"));
    match list {
        Ok(l) => l.split_whitespace().filter_map(|p| p.parse().ok()).collect(),
        Err(_) => servers::children_of(pid),
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
