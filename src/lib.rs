//! ferry: moves healthcare data files between a practice and its EHR and
//! reconciles them. The data flows one way: transport -> parse -> store ->
//! reconcile -> report. `main.rs` is only the command line; everything it
//! does is here so tests and benches can use every part.

pub mod clock;
pub mod commands;
pub mod flatfile;
pub mod generate;
pub mod hl7;
pub mod job;
pub mod model;
pub mod outbox;
pub mod prune;
pub mod push;
pub mod reconcile;
pub mod report;
pub mod run;
pub mod schedule;
pub mod store;
pub mod transport;

/// A hash map for keys taken from the input files (IDs, names) at a million
/// records a side: foldhash, not the standard SipHash, which was the
/// largest single cost of linking by ID. Its seed is random per process, so
/// code that iterates one must sort what it reports.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// [`FastMap`]'s set.
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// mimalloc's `mi_option_purge_delay` (the same place in its v2 and v3
/// option lists; libmimalloc-sys names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// mimalloc's `mi_option_allow_thp` in its v3 option list, the one
/// libmimalloc-sys builds without its `v2` feature (37 in v2); it names no
/// constant for it. tests/memory.rs fails if it is the wrong option.
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;
/// PR_SET_THP_DISABLE's flag (Linux 6.18, `linux/prctl.h`): THP stays on
/// where the process asked for it with MADV_HUGEPAGE. The libc crate does not
/// name it yet.
const PR_THP_DISABLE_EXCEPT_ADVISED: libc::c_ulong = 1 << 1;

/// Patient data is never open to other users of the machine: whatever
/// the umask (cron's and most systems' is 022), what ferry creates (the
/// store, received copies, reports, the outbox, their folders) gives
/// others no access. The group keeps what the umask gives it, for staff
/// who read the reports through a group. A file pushed to a local folder
/// for another system to pick up gets the modes the umask gave
/// ([`handed_over_mode`]).
pub fn private_files() {
    // SAFETY: umask only sets this process's file mode mask; it is called
    // at start-up, before any thread that could create a file.
    let mask = unsafe {
        let mask = libc::umask(0o077);
        libc::umask(mask | 0o007);
        mask
    };
    UMASK_GIVEN.store(mask as u32, std::sync::atomic::Ordering::Relaxed);
}

/// The umask ferry was started with, once [`private_files`] tightened it.
static UMASK_GIVEN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(u32::MAX);

/// The mode for a file handed over to another system (a push to a local
/// pickup folder, whose reader may be another user): what the umask ferry
/// was started with gives. `None` when ferry has not tightened it.
pub fn handed_over_mode() -> Option<u32> {
    match UMASK_GIVEN.load(std::sync::atomic::Ordering::Relaxed) {
        u32::MAX => None,
        mask => Some(0o666 & !mask),
    }
}

/// Call first thing in `main` (the `ferry` binary and the benches do).
///
/// Two defaults cost a run dearly in page faults, each page of which the
/// kernel zeroes (`perf`: 16% of a 1M x 1M backfill's CPU time, 28% of a
/// 10k one's):
/// - mimalloc asks for transparent huge pages (MADV_HUGEPAGE on its
///   arenas), so touching one byte of a fresh region zeroes 2 MiB. THP
///   stays off for this process (PR_SET_THP_DISABLE, checked by the kernel
///   at every fault), except, on Linux 6.18 and later, where ferry asks for
///   it: the maps of files it reads ([`map_file`]), which then take the
///   page cache's 2 MiB pages whole. mimalloc then asks no more, and the
///   arena it reserved before `main` has the advice taken back. Older
///   kernels turn THP off for everything, as before;
/// - mimalloc hands freed memory back to the kernel after 10 ms (100 ms
///   for its arenas), and a backfill frees and reallocates hundreds of MB
///   between stages, faulting the same memory in again. A second (ten for
///   arenas) keeps it for the next stage; MIMALLOC_PURGE_DELAY in the
///   environment still wins.
pub fn tune_memory() {
    // SAFETY: the calls only set a flag or an integer option of this
    // process; the option indexes are mimalloc's, checked against its header.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0);
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        // With THP off for everything, so that reading smaps faults no huge
        // page into the arena, take the advice back; then let THP in where
        // advised, for file maps. Before Linux 6.18 the flag is EINVAL, and
        // THP stays off for everything.
        unadvise_anonymous_huge();
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, PR_THP_DISABLE_EXCEPT_ADVISED, 0, 0);
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1000);
        }
    }
}

/// MADV_NOHUGEPAGE on every anonymous map of this process that has asked
/// for huge pages (`hg` among its VmFlags in /proc/self/smaps): mimalloc's
/// arena, reserved before `main` ran.
fn unadvise_anonymous_huge() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else { return };
    let mut anonymous = None;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if first == "VmFlags:" {
            if let Some((start, end)) = anonymous.take()
                && words.any(|flag| flag == "hg")
            {
                // SAFETY: advice on a range that is mapped, changing only
                // which page size the kernel may use for it.
                unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_NOHUGEPAGE) };
            }
        } else if let Some((start, end)) = first.split_once('-') {
            // A map's first line: range, perms, offset, device, inode, path.
            let range = usize::from_str_radix(start, 16).ok().zip(usize::from_str_radix(end, 16).ok());
            let inode = words.nth(3);
            anonymous = range.filter(|_| inode == Some("0"));
        }
    }
}

/// Map a whole file for reading, asking for 2 MiB pages. A file written or
/// read through `read()` lately sits in the page cache in 2 MiB pieces; in
/// 2 MiB pages, the map of a 1.2 GB HL7 batch reads about 8% faster on one
/// thread than in 4 KiB ones (fewer TLB misses). The advice is only that:
/// where the kernel cannot follow it, the map is as it would be without.
///
/// # Safety
/// As [`memmap2::Mmap::map`]: nothing may change the file while it is
/// mapped.
pub unsafe fn map_file(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the caller's promise.
    let map = unsafe { memmap2::Mmap::map(file)? };
    let _ = map.advise(memmap2::Advice::HugePage);
    Ok(map)
}

/// Run one stage of a run and log, at debug level (`-vv`), how long it took
/// and how much CPU time the process spent meanwhile (more than the wall
/// time where a stage runs on several cores): where a slow run spends its
/// time, without a profiler.
pub(crate) fn timed<T>(stage: &'static str, f: impl FnOnce() -> T) -> T {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return f();
    }
    let (start, cpu) = (std::time::Instant::now(), cpu_ms());
    let out = f();
    let ms = start.elapsed().as_millis() as u64;
    tracing::debug!(stage, ms, cpu_ms = cpu_ms().saturating_sub(cpu), "Stage done.");
    out
}

/// CPU time (user + system) of this process so far, in milliseconds, from
/// /proc (0 where there is none).
fn cpu_ms() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name in parentheses: utime and stime are the 12th
    // and 13th fields, in ticks of 1/100 s.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse::<u64>().ok()).sum();
    ticks * 10
}
