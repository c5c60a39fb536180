//! The `ferry` command line: parse arguments, call the library, turn the
//! outcome into an exit status (0 done, 1 failed, 2 bad command line or bad
//! job/schema file). Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferry::commands::{self, Exit, LogFormat, Logging};

/// Mapping HL7 and flat files makes and drops many small strings on every
/// rayon thread; mimalloc's per-thread heaps handle that better than glibc's
/// arenas (HL7 mapping about 13% faster, see `make bench`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn time_zone(name: &str) -> Result<chrono_tz::Tz, String> {
    name.parse().map_err(|_| format!("{name:?} is not a time zone name such as America/New_York"))
}

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Move healthcare data files between a practice and its EHR, and reconcile them."
)]
struct Cli {
    /// More detail in log lines (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Log lines as readable text or as JSON objects.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Where job names are looked up and which jobs run-due runs.
    #[arg(long, env = "FERRY_JOBS_DIR", default_value = "jobs", global = true)]
    jobs_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one job now: take new files, load them, reconcile, write reports.
    Run {
        /// A job name (jobs/NAME.toml) or a path to a job file.
        job: String,
        /// Load a snapshot (the practice roster, a `load = "replace"` input) even if it drops more of
        /// the stored records than its `max_shrink` allows: you have checked that the drop is real.
        #[arg(long)]
        accept_shrink: bool,
    },
    /// The full load when an interface is first enabled: every file the job's source has, committed in
    /// batches (a killed backfill goes on where it stopped), then a full reconciliation.
    Backfill {
        /// A job name (jobs/NAME.toml) or a path to a job file.
        job: String,
        /// Records (or HL7 messages) per committed batch.
        #[arg(long, default_value_t = ferry::run::DEFAULT_BATCH as u64, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
        batch: u64,
    },
    /// Write a made-up population with known truth: an EHR patient export, a practice roster and
    /// truth.csv (which records are the same person), with controlled noise. For testing and benchmarks.
    Gen {
        /// Patients per side (1,000 to 10,000,000).
        #[arg(long, default_value_t = 10_000)]
        patients: usize,
        /// The same seed and options write the same files.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// none, default or high.
        #[arg(long, default_value = "default")]
        noise: String,
        /// Folder to write ehr_patients.csv, practice_roster.csv and truth.csv in.
        #[arg(long)]
        out: PathBuf,
    },
    /// Validate job and schema files; with a job, also connect to each server it names and say, step
    /// by step, what works (DNS, TCP, host key or TLS, login, listing, write permission).
    Check {
        /// Jobs to check; with none, every jobs/*.toml and schemas/*.toml.
        jobs: Vec<String>,
        /// Record an SFTP server's host key in the job's known_hosts file when it has none for that
        /// server (OpenSSH's accept-new). A changed key is never accepted.
        #[arg(long)]
        accept_new_host_key: bool,
    },
    /// Parse one file and print what ferry sees in it (HL7: segments and fields; --json: mapped records).
    Parse {
        file: PathBuf,
        /// A schema name (schemas/NAME.toml) or a path to a schema file.
        /// Required for flat files; for HL7 it defaults to schemas/ehr_hl7.toml.
        #[arg(long)]
        schema: Option<String>,
        /// Which side the file belongs to (default: guessed from the schema's own-ID column).
        #[arg(long, value_parser = ["ehr", "practice"])]
        side: Option<String>,
        /// Print records as JSON lines.
        #[arg(long)]
        json: bool,
        /// Read the file as this job does: the schema of its input for the
        /// file's name, its time zone and provider ID.
        #[arg(long)]
        job: Option<String>,
        /// Read HL7 times without an offset in this zone (default: the
        /// job's, else UTC).
        #[arg(long, value_parser = time_zone)]
        time_zone: Option<chrono_tz::Tz>,
    },
    /// HL7 messages in ERROR: list them, show one, retry it after a mapping fix, or delete it.
    /// The list ends with each job's count of messages in every state.
    Queue {
        #[command(subcommand)]
        action: Option<QueueAction>,
        /// Only this job's queue (name or path).
        #[arg(long, global = true)]
        job: Option<String>,
        /// List the messages in this state instead: new (received, not loaded yet: the rest of a file
        /// whose load stopped, which the next run loads), processed, error or deleted.
        #[arg(long, value_enum, default_value_t = commands::QueueState::Error)]
        state: commands::QueueState,
        /// List as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// For cron, every minute: run each job whose schedule fired since its last run (once, however many
    /// firings were missed), never two runs of one job at once; send email still waiting.
    RunDue,
    /// Each job's last run, its outcome, its next due time and email waiting to be sent.
    Status,
    /// Past runs with their counts, newest first.
    History {
        /// Only this job (name or path).
        job: Option<String>,
        /// How many runs to list.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON lines for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum QueueAction {
    /// Why a message is in ERROR, and the message itself.
    Show { id: i64 },
    /// Map a message again (after a schema or job fix) and load it; with --all, every message in
    /// ERROR (of --job, or of every job), oldest first.
    Retry {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every message in ERROR, except those that may have been cut short.
        #[arg(long)]
        all: bool,
    },
    /// Mark a message DELETED: it will not be loaded.
    Delete { id: i64 },
}

fn main() -> ExitCode {
    ferry::tune_memory();
    ferry::private_files();
    let cli = Cli::parse();
    commands::init_logging(Logging { verbose: cli.verbose, quiet: cli.quiet, format: cli.log_format });
    ferry::job::set_jobs_dir(cli.jobs_dir);
    let result = match cli.command {
        Command::Run { job, accept_shrink } => commands::run(&job, accept_shrink, cli.quiet),
        Command::Backfill { job, batch } => commands::backfill(&job, batch as usize, cli.quiet),
        Command::Gen { patients, seed, noise, out } => {
            commands::generate_population(patients, seed, &noise, &out, cli.quiet)
        }
        Command::Check { jobs, accept_new_host_key } => commands::check(&jobs, accept_new_host_key),
        Command::Parse { file, schema, side, json, job, time_zone } => {
            let options = commands::ParseOptions {
                schema: schema.as_deref(),
                side: side.as_deref(),
                json,
                job: job.as_deref(),
                time_zone,
            };
            commands::parse(&file, &options)
        }
        Command::Queue { action, job, state, json } => match action {
            None => commands::queue_list(job.as_deref(), state, json),
            Some(QueueAction::Show { id }) => commands::queue_show(job.as_deref(), id),
            Some(QueueAction::Retry { id, all: _ }) => commands::queue_retry(job.as_deref(), id),
            Some(QueueAction::Delete { id }) => commands::queue_delete(job.as_deref(), id),
        },
        Command::RunDue => commands::run_due(cli.quiet),
        Command::Status => commands::status(),
        Command::History { job, limit, json } => commands::history(job.as_deref(), limit, json),
    };
    let exit = commands::exit_status(result);
    ExitCode::from(match exit {
        Exit::Done => 0,
        Exit::Failed => 1,
        Exit::BadConfig => 2,
    })
}
