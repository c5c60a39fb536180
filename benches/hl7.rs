//! `make bench` (HL7 part): ferry's HL7 parse-and-map throughput on one and
//! two threads, with peak memory, beside python-hl7 on a slice of the same
//! file and `wc -l` over it as the floor. Two one-thread runs at once give
//! the ceiling for two threads: what the machine's two CPUs give this work
//! with nothing shared between them.
//!
//! FERRY_BENCH_MESSAGES sets the file size (default 1,000,000 ADT messages
//! of about 1.2 KB); the file is generated once under target/bench/.
//!
//! FERRY_BENCH_TRAIN=1 measures nothing: it is the HL7 part of the training
//! run for a profile-guided build (scripts/pgo.sh), reading a batch of other
//! generated messages and the demo's HL7 files, on one and two threads.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ferry::hl7::{self, Hl7Schema, MapSettings, ProviderKind};

/// The allocator the `ferry` binary uses (see src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FIRST: [&str; 12] =
    ["Mary", "John", "Ana", "Luis", "Wei", "Fatima", "James", "Zoë", "Olga", "Ken", "Priya", "Noah"];
const LAST: [&str; 12] = [
    "Smith", "O'Brien", "Nguyen", "Garcia", "Kowalski", "Okafor", "Lee", "Müller", "Rossi", "Khan", "Cohen",
    "Silva",
];
const STREETS: [&str; 6] = ["Main St", "Oak Ave", "Elm Rd", "Pine Ln", "Maple Dr", "Cedar Ct"];
const CITIES: [(&str, &str, &str); 4] = [
    ("Boston", "MA", "02134"),
    ("Salem", "MA", "01970"),
    ("Nashua", "NH", "03060"),
    ("Providence", "RI", "02903"),
];

/// One ADT^A31 of about 1.2 KB: MSH, EVN, PID, PD1, NK1, PV1, IN1, with escapes.
fn message(i: usize, out: &mut impl Write) -> std::io::Result<()> {
    let (first, last) = (FIRST[i % 12], LAST[(i / 12) % 12]);
    let (city, st, zip) = CITIES[i % 4];
    let street = STREETS[i % 6];
    let ts = format!("2026{:02}{:02}{:02}{:02}00", 1 + i % 12, 1 + i % 28, i % 24, i % 60);
    write!(
        out,
        "MSH|^~\\&|ATHENA|DEMOCLINIC|FERRY|PRACTICE|{ts}||ADT^A31^ADT_A05|MSG{i:08}|P|2.5.1|||AL|NE||UNICODE UTF-8\r\
EVN|A31|{ts}|||U{i}^Clerk^Front^^^^^^ATHENA\r\
PID|1||E{i:08}^^^ATHENA^PI~{:06}^^^PRACTICE^MR~{i:09}^^^SSA^SS||{last}^{first}^Q^^^^L~{last}^{first}^^^^^M||{}{:02}{:02}|{}||2106-3^White^CDCREC|{} {street} \\T\\ Rear^Apt {}^{city}^{st}^{zip}^USA^H||^PRN^PH^^1^617^555{:04}~^ORN^CP^^1^857^555{:04}~^NET^Internet^{}.{}@example.com||eng^English^ISO6392|M^Married^HL70002|||{i:09}|||2186-5^Not Hispanic or Latino^CDCREC\r\
PD1|||Demo Clinic^^1001|1234567893^Rivera^Ana^^^Dr.^MD^^NPI~P100^Rivera^Ana^^^Dr.^MD^^ATHENA\r\
NK1|1|{last}^Alex^^^^^L|SPO^Spouse^HL70063|{} {street}^^{city}^{st}^{zip}^USA|^PRN^PH^^1^617^555{:04}||EC^Emergency Contact^HL70131\r\
PV1|1|O|DEP{:02}^^^Demo Clinic||||1234567893^Rivera^Ana^^^Dr.^MD^^NPI|||||||||||||||||||||||||||||||||||||{ts}\r\
IN1|1|BCBS01^Blue Cross Blue Shield PPO|60054|Blue Cross Blue Shield of Massachusetts|PO Box 986030^^Boston^MA^02298^USA||^WPN^PH^^1^800^5550199|GRP{:05}|Acme Corp Employee Plan \\T\\ Dependents||||20260101|20261231|||{last}^{first}^Q|01^Self^HL70063|{}{:02}{:02}|{} {street}^^{city}^{st}^{zip}^USA|||1||||||||||||||XYZ{i:09}\r\n",
        100000 + i % 900000,
        1930 + i % 90,
        1 + i % 12,
        1 + i % 28,
        if i.is_multiple_of(2) { "F" } else { "M" },
        1 + i % 999,
        1 + i % 40,
        i % 100,
        (i + 7) % 100,
        first.to_lowercase(),
        last.to_lowercase().replace('\'', ""),
        1 + i % 999,
        (i + 3) % 100,
        i % 30,
        i % 5000,
        1930 + i % 90,
        1 + i % 12,
        1 + i % 28,
        1 + i % 999,
    )
}

/// Messages `numbers` (each number gives its own values) as one batch file.
fn generate(path: &Path, numbers: std::ops::Range<usize>) -> std::io::Result<()> {
    let tmp = path.with_extension("part");
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
    for i in numbers {
        message(i, &mut out)?;
    }
    out.flush()?;
    drop(out);
    fs::rename(tmp, path)
}

/// Drop the file's pages from the page cache and read it once through
/// `read()`, so that it sits in the cache in 2 MiB pieces. How the file
/// came into the cache moves the floor: over the 1M-message file, `wc -l`
/// took 0.27-0.30 s over several sessions while the file stayed cached
/// from earlier runs, and 0.15-0.19 s once it was dropped and read again
/// (or freshly written). The floor is then the faster one whatever read the
/// file last, and ferry's map takes the 2 MiB pieces whole, as in a run.
fn recache(path: &Path) {
    let mut file = File::open(path).unwrap();
    // SAFETY: advice on an open descriptor; no memory is touched.
    let dropped = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if dropped != 0 {
        eprintln!("bench: could not drop {} from the page cache (error {dropped})", path.display());
    }
    std::io::copy(&mut file, &mut std::io::sink()).unwrap();
}

/// Resident anonymous memory (heap), in KiB: file pages of the map are
/// page cache, not the process's own memory.
fn rss_anon_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time of the whole process (user + system), in seconds: unlike wall
/// time, hardly moved by other work on the machine.
fn cpu_secs() -> f64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the
    // 12th and stime the 13th, in clock ticks of 1/100 s.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0.0)).collect();
    f.get(11).zip(f.get(12)).map_or(0.0, |(u, s)| (u + s) / 100.0)
}

/// Rounds of wc, ferry on one thread, on two, and two one-thread runs at
/// once, taken in turn.
const ROUNDS: usize = 5;

struct Run {
    secs: f64,
    cpu_secs: f64,
    mapped: u64,
    errors: u64,
    peak_anon_kib: u64,
}

/// One run over the file on `threads` threads; `progress` counts the
/// messages handed on so far.
fn ferry_run(bytes: &[u8], schema: &Hl7Schema, threads: usize, progress: &AtomicU64) -> Run {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    // The generated messages are dated through 2026: none is to be refused
    // as ahead of the clock, whenever the benchmark runs. The check is made.
    let settings = MapSettings {
        latest_time: chrono::DateTime::<chrono::Utc>::MAX_UTC,
        ..MapSettings::new(schema, ProviderKind::Npi, chrono_tz::America::New_York)
    };
    pool.install(|| {
        let (start, cpu_start) = (Instant::now(), cpu_secs());
        let (mut mapped, mut errors, mut peak, mut chunks) = (0u64, 0u64, rss_anon_kib(), 0u64);
        hl7::read_file(bytes, &settings, |chunk| -> Result<(), ()> {
            progress.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            for o in &chunk {
                match o.result {
                    Ok(_) => mapped += 1,
                    Err(_) => errors += 1,
                }
            }
            // Sampled every eighth chunk (8,192 messages): reading
            // /proc/self/status takes tens of microseconds, 1% of the run
            // when done for every chunk.
            if chunks % 8 == 0 {
                peak = peak.max(rss_anon_kib());
            }
            chunks += 1;
            Ok(())
        })
        .unwrap();
        Run {
            secs: start.elapsed().as_secs_f64(),
            cpu_secs: cpu_secs() - cpu_start,
            mapped,
            errors,
            peak_anon_kib: peak,
        }
    })
}

/// Two one-thread runs over the file at the same time, each with its own
/// pool: the same work as the two-thread run, with nothing shared between
/// the threads. Returns their speed together, in messages per second, up to
/// the moment the first one finishes (after that the other runs alone).
/// Over one thread alone, that is what this machine gives two threads at
/// that moment (the two vCPUs of a shared VM are not always as fast as each
/// other): the ceiling for the two-thread run.
fn ferry_pair(bytes: &[u8], schema: &Hl7Schema) -> f64 {
    let progress = [AtomicU64::new(0), AtomicU64::new(0)];
    let first = OnceLock::new();
    let start = Instant::now();
    std::thread::scope(|s| {
        for mine in &progress {
            let (progress, first) = (&progress, &first);
            s.spawn(move || {
                let run = ferry_run(bytes, schema, 1, mine);
                assert_eq!(run.errors, 0, "every generated message maps");
                let done: u64 = progress.iter().map(|p| p.load(Ordering::Relaxed)).sum();
                first.get_or_init(|| done as f64 / start.elapsed().as_secs_f64());
            });
        }
    });
    *first.get().unwrap()
}

fn python_hl7(dir: &Path, slice: &Path) -> Option<(f64, usize)> {
    let venv = dir.join("venv");
    let py = venv.join("bin/python");
    if !py.exists() {
        let ok = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "hl7"])
                .status()
                .is_ok_and(|s| s.success());
        if !ok {
            eprintln!(
                "bench: could not set up python-hl7 (python3 -m venv, pip install hl7); skipping its row"
            );
            return None;
        }
    }
    let script = r#"
import sys, time, hl7
data = open(sys.argv[1], 'rb').read().decode('utf-8')
msgs = [m for m in data.split('\r\n') if m.startswith('MSH')]
t = time.perf_counter()
n = 0
for m in msgs:
    h = hl7.parse(m)
    pid = h.segment('PID')
    # the same fields ferry maps
    _ = (str(pid[3]), str(pid[5][0][0]), str(pid[5][0][1]), str(pid[7]), str(pid[8]), str(pid[10]),
         str(pid[11]), str(pid[13]), str(pid[15]), str(pid[22]), str(h.segment('PD1')[4]), str(h['MSH.F7']))
    n += 1
print(time.perf_counter() - t, n)
"#;
    let out = Command::new(&py).arg("-c").arg(script).arg(slice).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Messages in the training batch: from this number on, so that their IDs,
/// names and dates are not those of the measured file's first messages.
const TRAIN_FROM: usize = 5_000_000;
const TRAIN_MESSAGES: usize = 50_000;

/// The HL7 part of a profile-guided build's training run (see the module
/// comment): every path the measured run takes, on other messages, and the
/// demo's ADT and SIU files with their planted bad messages.
fn train(dir: &Path, schema: &Hl7Schema) {
    let path = dir.join(format!("train_adt_{TRAIN_MESSAGES}.hl7"));
    if !path.exists() {
        generate(&path, TRAIN_FROM..TRAIN_FROM + TRAIN_MESSAGES).unwrap();
    }
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sample-data/inbox");
    let mut demo_files: Vec<PathBuf> = fs::read_dir(&demo)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hl7"))
        .collect();
    demo_files.sort();
    let files = std::iter::once(path).chain(demo_files);
    for file in files {
        let bytes = fs::read(&file).unwrap();
        for threads in [1, 2] {
            let run = ferry_run(&bytes, schema, threads, &AtomicU64::new(0));
            eprintln!(
                "bench: trained on {} ({} messages, {threads} thread(s))",
                file.display(),
                run.mapped + run.errors
            );
        }
    }
}

fn main() {
    ferry::tune_memory();
    // cargo bench passes --bench; nothing else to parse.
    let n: usize =
        std::env::var("FERRY_BENCH_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    fs::create_dir_all(&dir).unwrap();
    let schema_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas/ehr_hl7.toml");
    let schema = Hl7Schema::parse(&schema_path, &fs::read_to_string(&schema_path).unwrap()).unwrap();
    if std::env::var_os("FERRY_BENCH_TRAIN").is_some() {
        train(&dir, &schema);
        return;
    }
    let path = dir.join(format!("adt_{n}.hl7"));
    if !path.exists() {
        eprintln!("bench: generating {} ...", path.display());
        generate(&path, 0..n).unwrap();
    }
    recache(&path);
    let file = File::open(&path).unwrap();
    // SAFETY: the bench's own generated file, not written while mapped.
    let map = unsafe { ferry::map_file(&file).unwrap() };
    let size_mb = map.len() as f64 / 1e6;

    // wc -l is the floor (it reads every byte once). Timings on a shared VM
    // wander, by a fifth and more over tens of seconds, so the four
    // measures take turns, round after round, and each row is its best
    // round over a warm page cache: a slow spell then weighs on every row
    // alike rather than on the one measured during it.
    let wc = || {
        let t = Instant::now();
        let wc = Command::new("wc").arg("-l").arg(&path).output().unwrap();
        assert!(wc.status.success());
        t.elapsed().as_secs_f64()
    };
    let faster = |best: Option<Run>, run: Run| match best {
        Some(best) if best.secs <= run.secs => Some(best),
        _ => Some(run),
    };
    let (mut wc_secs, mut one, mut two, mut pair_speed) = (f64::INFINITY, None, None, 0.0f64);
    for _ in 0..ROUNDS {
        wc_secs = wc_secs.min(wc());
        one = faster(one, ferry_run(&map, &schema, 1, &AtomicU64::new(0)));
        two = faster(two, ferry_run(&map, &schema, 2, &AtomicU64::new(0)));
        pair_speed = pair_speed.max(ferry_pair(&map, &schema));
    }
    let (one, two) = (one.unwrap(), two.unwrap());
    assert_eq!(one.mapped as usize, n, "every generated message maps ({} errors)", one.errors);

    // python-hl7 on a 20,000-message slice, scaled.
    let slice_n = n.min(20_000);
    let slice = dir.join(format!("adt_slice_{slice_n}.hl7"));
    if !slice.exists() {
        generate(&slice, 0..slice_n).unwrap();
    }
    let py = python_hl7(&dir, &slice);

    println!();
    println!("HL7 parse-and-map, {n} ADT^A31 messages, {size_mb:.0} MB ({})", path.display());
    // Set by scripts/pgo.sh, which builds this bench as `make release` builds ferry.
    match option_env!("FERRY_PGO") {
        Some(profile) => println!("build: release, profile-guided ({profile})"),
        None => println!("build: release, without profile-guided optimisation (`make bench` uses it)"),
    }
    println!("{:<34} {:>12} {:>14} {:>10} {:>16}", "tool", "seconds", "messages/s", "MB/s", "peak heap MiB");
    let row = |name: &str, secs: f64, msgs: f64, mb: f64, mem: Option<u64>| {
        let mem = mem.map_or("-".to_string(), |k| format!("{:.0}", k as f64 / 1024.0));
        println!("{name:<34} {secs:>12.2} {:>14.0} {:>10.0} {mem:>16}", msgs / secs, mb / secs);
    };
    row("wc -l (floor)", wc_secs, n as f64, size_mb, None);
    row("ferry, 1 thread", one.secs, n as f64, size_mb, Some(one.peak_anon_kib));
    row("ferry, 2 threads", two.secs, n as f64, size_mb, Some(two.peak_anon_kib));
    // Seconds per file at the pair's speed together, as if it were one run.
    row("ferry, 2 x 1 thread at once", n as f64 / pair_speed, n as f64, size_mb, None);
    match py {
        Some((secs, count)) => {
            let scaled = secs * n as f64 / count as f64;
            row(&format!("python-hl7 ({count} msgs, scaled)"), scaled, n as f64, size_mb, None)
        }
        None => println!("python-hl7: not measured (see above)"),
    }
    println!(
        "ferry 1 thread is {:.1}x wc -l's time; 2 threads are {:.2}x 1 thread",
        one.secs / wc_secs,
        one.secs / two.secs
    );
    println!(
        "two 1-thread runs at once are {:.2}x 1 thread: the most this machine gave two threads for this work",
        one.secs * pair_speed / n as f64
    );
    println!(
        "CPU seconds (user + system): ferry 1 thread {:.2}, 2 threads {:.2} ({:.0} messages per CPU second)",
        one.cpu_secs,
        two.cpu_secs,
        n as f64 / one.cpu_secs
    );
}
