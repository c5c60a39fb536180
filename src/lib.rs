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
pub mod outbox;
pub mod reconcile;
pub mod report;
pub mod run;
pub mod store;
pub mod transport;
