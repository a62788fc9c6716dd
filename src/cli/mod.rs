//! The `chatguard` command line.

pub mod replay;
pub mod score;
pub mod train;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use replay::ReplayArgs;
pub use score::{EvalArgs, ScoreArgs};
pub use train::TrainArgs;

#[derive(Debug, Parser)]
#[command(
    name = "chatguard",
    version,
    about = "Self-hosted moderation worker for Stream Chat webhooks",
    long_about = "chatguard receives Stream Chat webhooks, verifies and queues them durably, scores each \
                  message with the rules in rules/, decides allow | flag | block | ban, and records every \
                  decision. With no configuration it runs on SQLite (./chatguard.db) in dry-run mode."
)]
pub struct Cli {
    /// TOML file with settings (see config/default.toml); environment variables override it.
    #[arg(long, global = true, env = "CHATGUARD_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook receiver and the scoring worker in one process.
    Serve {
        /// Decide and record what would be done, never call Stream (CHATGUARD_DRY_RUN). Required
        /// to run without Stream credentials.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run only the scoring worker; start one per machine to share one PostgreSQL.
    Worker {
        /// As for serve.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the dry-run development webhook key and secret (made on first use).
    DevSecret,
    /// List Stream calls that failed for good (refused, or Stream unreachable past the retry
    /// horizon), newest first.
    Actions {
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Create or upgrade the database tables (serve and worker also do this on start).
    Migrate,
    /// Sign fixture events and POST them to a running chatguard, printing each response.
    Replay(ReplayArgs),
    /// Print recent decisions, newest first.
    Decisions {
        /// How many decisions to print.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// One JSON object per line instead of a summary line.
        #[arg(long)]
        json: bool,
    },
    /// List jobs that used up their attempts, or send them back to the queue.
    DeadLetters {
        #[command(subcommand)]
        action: Option<DeadLetterAction>,
    },
    /// Validate every file in the rules folder (rules, policy, engine settings, lexicon, block
    /// lists, model) and report what was loaded.
    CheckRules,
    /// Score messages from standard input or a file: one JSON object per input line, in order.
    Score(ScoreArgs),
    /// Measure the engine on a labelled JSON-lines file: ROC-AUC, AUPRC, precision, recall and
    /// false-flag rate at the policy's thresholds, per category.
    Eval(EvalArgs),
    /// Train the model from the labelled sets and write rules/models/chatguard.model.
    Train(TrainArgs),
    /// Create, list or revoke the bearer tokens of the moderators' review API.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Print the OpenAPI 3 document of the review API (what `GET /api/openapi.json` serves).
    Openapi,
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Create a token; its secret is printed once (only a hash is stored).
    Create {
        #[arg(long)]
        name: String,
        /// viewer (reads), moderator (also claims and resolves), admin (also tokens and audit).
        #[arg(long)]
        role: String,
    },
    /// List tokens (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by name.
    Revoke {
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeadLetterAction {
    /// Show dead letters not yet retried (the default).
    List {
        /// Include those already sent back to the queue.
        #[arg(long)]
        all: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Send dead letters back to the queue with a fresh set of attempts.
    Retry {
        /// Dead-letter ids to retry; all pending ones when none is given.
        ids: Vec<i64>,
    },
}
