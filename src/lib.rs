//! ferry: moves healthcare data files between a practice and its EHR and
//! reconciles them. The data flows one way: transport -> parse -> store ->
//! reconcile -> report. `main.rs` is only the command line; everything it
//! does is here so tests and benches can use every part.

pub mod commands;
pub mod flatfile;
pub mod generate;
pub mod hl7;
pub mod job;
pub mod model;
pub mod reconcile;
pub mod report;
pub mod run;
pub mod store;
pub mod transport;

/// Run one stage of a run and log, at debug level (`-vv`), how long it took:
/// where a slow run spends its time, without a profiler.
pub(crate) fn timed<T>(stage: &'static str, f: impl FnOnce() -> T) -> T {
    let start = std::time::Instant::now();
    let out = f();
    tracing::debug!(stage, ms = start.elapsed().as_millis() as u64, "Stage done.");
    out
}
