//! One configuration for the server, read from flags and environment, with embedded defaults so that
//! `cargo run` works on a fresh machine.
use std::net::SocketAddr;

/// Server settings. Every field is a `serve` flag and an environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Where to listen (`127.0.0.1:0` picks a free port and logs it).
    #[arg(long, env = "PALAVER_ADDR", default_value = "127.0.0.1:8000")]
    pub addr: SocketAddr,

    /// SQLite file (embedded) or `postgres://…`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://data/palaver.db?mode=rwc"
    )]
    pub database_url: String,

    /// `redis://…` for cross-instance events and presence; unset: in-process event bus.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Redis pub/sub channel for events. Instances that serve the same users share it.
    #[arg(long, env = "PALAVER_REDIS_CHANNEL", default_value = "palaver:events")]
    pub redis_channel: String,

    /// `file://…`, `memory://`, or `s3://bucket/prefix` (with the AWS_* variables).
    #[arg(long, env = "STORAGE_URL", default_value = "file://data/files")]
    pub storage_url: String,

    /// Uploads larger than this are refused with PAYLOAD_TOO_LARGE.
    #[arg(long, env = "PALAVER_MAX_UPLOAD_BYTES", default_value_t = 26_214_400)]
    pub max_upload_bytes: u64,

    /// Longest message body accepted, in characters.
    #[arg(long, env = "PALAVER_MAX_MESSAGE_CHARS", default_value_t = 4000)]
    pub max_message_chars: usize,

    /// Lifetime of a bearer token issued by `register` or `login`, in seconds.
    #[arg(long, env = "PALAVER_TOKEN_TTL_SECS", default_value_t = 30 * 24 * 3600)]
    pub token_ttl_secs: u64,

    /// How long after a user's last connection closes before they are shown offline, in
    /// milliseconds (absorbs quick reconnects).
    #[arg(long, env = "PALAVER_PRESENCE_GRACE_MS", default_value_t = 3000)]
    pub presence_grace_ms: u64,
}

impl Config {
    /// The defaults, as `palaver serve` with no flags and no environment would use them.
    pub fn embedded_defaults() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            config: Config,
        }
        Only::parse_from(["palaver"]).config
    }
}
