//! One configuration for the server, read from flags and environment, with embedded defaults so that
//! `cargo run` works on a fresh machine.
use std::net::SocketAddr;

use crate::limits::Rate;

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

    /// Largest size the SQLite file may grow to, in bytes (counted in 4 KiB pages); unset: the
    /// disk's free space is the limit. A write past it fails as it would on a full disk: the send
    /// is refused and nothing of it is kept. Ignored on PostgreSQL.
    #[arg(long, env = "PALAVER_SQLITE_MAX_BYTES")]
    pub sqlite_max_bytes: Option<u64>,

    /// `redis://…` for cross-instance events and presence; unset: in-process event bus.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Redis pub/sub channel for events that every instance hears, and the prefix of the
    /// per-conversation and per-user channels (`<channel>:c:<id>`, `<channel>:u:<id>`).
    /// Instances that serve the same users share it.
    #[arg(long, env = "PALAVER_REDIS_CHANNEL", default_value = "palaver:events")]
    pub redis_channel: String,

    /// `file://…`, `memory://`, or `s3://bucket/prefix` (with the AWS_* variables).
    #[arg(long, env = "STORAGE_URL", default_value = "file://data/files")]
    pub storage_url: String,

    /// Uploads larger than this are refused with PAYLOAD_TOO_LARGE.
    #[arg(long, env = "PALAVER_MAX_UPLOAD_BYTES", default_value_t = 26_214_400)]
    pub max_upload_bytes: u64,

    /// File name extensions refused on upload (comma-separated, case ignored). A file is also
    /// refused when its content (magic bytes) is recognised as one of these, whatever its name.
    #[arg(
        long,
        env = "PALAVER_DENIED_EXTENSIONS",
        value_delimiter = ',',
        default_value = DEFAULT_DENIED_EXTENSIONS
    )]
    pub denied_extensions: Vec<String>,

    /// Key for signing download URLs. Every instance using the same database must share it; unset,
    /// a random key is generated once and kept in the database's `settings` table.
    #[arg(long, env = "PALAVER_URL_SIGNING_KEY")]
    pub url_signing_key: Option<Secret>,

    /// How long a signed `downloadUrl` stays valid, in seconds (rounded up to the next 5 minutes,
    /// so that repeated queries hand out the same URL and browsers can cache the file).
    #[arg(long, env = "PALAVER_DOWNLOAD_URL_TTL_SECS", default_value_t = 3600)]
    pub download_url_ttl_secs: u64,

    /// Public base URL (`https://chat.example.com`) put in front of `downloadUrl`; unset, the
    /// scheme and host the request came in on are used (see `trust_forwarded`), so that links are
    /// absolute and work from a page on another origin.
    #[arg(long, env = "PALAVER_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Take a request's scheme and host from `Forwarded` (or `X-Forwarded-Proto` and
    /// `X-Forwarded-Host`) when making links: turn on only behind a proxy that sets those headers
    /// and strips them from clients; otherwise a client could name any host. Off: the `Host` the
    /// request was sent to, over `http`.
    #[arg(long, env = "PALAVER_TRUST_FORWARDED", default_value_t = false, action = clap::ArgAction::Set)]
    pub trust_forwarded: bool,

    /// Longest message body accepted, in characters.
    #[arg(long, env = "PALAVER_MAX_MESSAGE_CHARS", default_value_t = 4000)]
    pub max_message_chars: usize,

    /// Lifetime of a bearer token issued by `register` or `login`, in seconds.
    #[arg(long, env = "PALAVER_TOKEN_TTL_SECS", default_value_t = 30 * 24 * 3600)]
    pub token_ttl_secs: u64,

    /// How long an instance may answer for a token from memory before reading its row again, in
    /// seconds (0: read it on every request). Revoking a session reaches every instance's memory
    /// at once through the event bus; this bounds only what a lost bus message could leave.
    #[arg(long, env = "PALAVER_TOKEN_CACHE_SECS", default_value_t = 10)]
    pub token_cache_secs: u64,

    /// Rooms with more members than this have their members' MESSAGE/FILE notifications made just
    /// after a message is committed and delivered, several messages at a time, instead of in the
    /// message's own transaction (mentions and replies are always made with the message).
    #[arg(long, env = "PALAVER_NOTIFY_INLINE_MEMBERS", default_value_t = 32)]
    pub notify_inline_members: usize,

    /// How long after a user's last connection closes before they are shown offline, in
    /// milliseconds (absorbs quick reconnects).
    #[arg(long, env = "PALAVER_PRESENCE_GRACE_MS", default_value_t = 3000)]
    pub presence_grace_ms: u64,

    /// Answer introspection (`__schema`, `__type`). Turn off in production so that strangers are
    /// not handed a map of the API; `__typename` keeps working either way.
    #[arg(long, env = "PALAVER_INTROSPECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub introspection: bool,

    /// Serve GraphiQL on `GET /graphql` (404 when off).
    #[arg(long, env = "PALAVER_GRAPHIQL", default_value_t = true, action = clap::ArgAction::Set)]
    pub graphiql: bool,

    /// A manifest of trusted documents (Apollo's persisted query list format): when set, only
    /// the documents it lists run, named by id (`extensions.persistedQuery.sha256Hash`) or sent as
    /// their exact text; anything else is refused (QUERY_NOT_IN_SAFELIST,
    /// PERSISTED_QUERY_NOT_IN_LIST). Unset: any document runs, and automatic persisted queries
    /// are on.
    #[arg(long, env = "PALAVER_TRUSTED_DOCUMENTS")]
    pub trusted_documents: Option<crate::graphql::TrustedDocuments>,

    /// Most operations in one batched request (a JSON array); more is BATCH_TOO_LARGE.
    #[arg(long, env = "PALAVER_MAX_BATCH", default_value_t = 10)]
    pub max_batch: usize,

    /// Most root fields one operation may select, aliases and fragments included; more is
    /// QUERY_TOO_COMPLEX. Each root field may cost a database round trip (or a password hash).
    #[arg(long, env = "PALAVER_MAX_ROOT_FIELDS", default_value_t = 20)]
    pub max_root_fields: usize,

    /// Most aliases in one document; more is QUERY_TOO_COMPLEX.
    #[arg(long, env = "PALAVER_MAX_ALIASES", default_value_t = 50)]
    pub max_aliases: usize,

    /// How long a GraphQL request over HTTP may run once its body has been read, in milliseconds;
    /// past it the request is dropped and answered TIMEOUT (HTTP 503). A change it asked for may
    /// or may not have been made by then (a send retried with the same `clientMessageId` is not
    /// sent twice).
    #[arg(long, env = "PALAVER_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,

    /// Messages a user may send: a burst, refilled over a period (token bucket).
    #[arg(long, env = "PALAVER_RATE_SEND", default_value = "30/10s")]
    pub send_rate: Rate,

    /// Files a user may upload (counted on top of `send_rate`).
    #[arg(long, env = "PALAVER_RATE_UPLOAD", default_value = "10/1m")]
    pub upload_rate: Rate,

    /// Failed sign-ins per username. Refills by itself, so a brute force is slowed to a crawl
    /// while the real user is never locked out for longer than one refill.
    #[arg(long, env = "PALAVER_RATE_LOGIN_USER", default_value = "10/15m")]
    pub login_user_rate: Rate,

    /// Sign-in attempts per client address, failed or not (credential stuffing across usernames).
    #[arg(long, env = "PALAVER_RATE_LOGIN_ADDR", default_value = "30/1m")]
    pub login_addr_rate: Rate,

    /// Open WebSockets a user may hold at once (across instances with Redis).
    #[arg(long, env = "PALAVER_MAX_WS_PER_USER", default_value_t = 10)]
    pub max_ws_per_user: u64,

    /// Subscriptions one WebSocket may run at once.
    #[arg(long, env = "PALAVER_MAX_SUBSCRIPTIONS", default_value_t = 20)]
    pub max_subscriptions: usize,

    /// How often the server pings each WebSocket, in milliseconds; a socket that sends nothing
    /// (not even the pong every client answers with) for three of these is closed.
    #[arg(long, env = "PALAVER_WS_KEEPALIVE_MS", default_value_t = 15_000)]
    pub ws_keepalive_ms: u64,

    /// How often a subscription over HTTP (multipart) sends an empty `{}` part when it has no
    /// event to send, in milliseconds, so that the client and proxies see it is alive.
    #[arg(
        long,
        env = "PALAVER_HTTP_SUBSCRIPTION_HEARTBEAT_MS",
        default_value_t = 5_000
    )]
    pub http_subscription_heartbeat_ms: u64,

    /// Largest WebSocket message (and frame) accepted; a larger one closes the socket (1009).
    #[arg(long, env = "PALAVER_WS_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024)]
    pub ws_max_message_bytes: usize,

    /// How long a new WebSocket may take to be signed in (`connection_init` accepted), in
    /// milliseconds; a socket still without a session then is closed (4408).
    #[arg(long, env = "PALAVER_WS_INIT_TIMEOUT_MS", default_value_t = 10_000)]
    pub ws_init_timeout_ms: u64,

    /// WebSockets one client address (an IPv6 /64) may hold open before they are signed in; a
    /// further upgrade from there is refused (429). Signed-in sockets do not count.
    #[arg(long, env = "PALAVER_MAX_ANON_WS_PER_ADDR", default_value_t = 50)]
    pub max_anon_ws_per_addr: usize,

    /// Web origins (`https://chat.example.com`, comma-separated) whose pages may call the API from
    /// a browser; unset: no CORS headers at all, so only same-origin pages (and non-browser
    /// clients) can use it.
    #[arg(long, env = "PALAVER_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<CorsOrigin>,
}

/// One allowed web origin: a scheme and a host (and port), as browsers send it in `Origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsOrigin(pub axum::http::HeaderValue);

impl std::str::FromStr for CorsOrigin {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Browsers never send a trailing slash or a path; one in the setting would never match.
        let origin = s.trim().trim_end_matches('/');
        let rest = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
            .ok_or_else(|| format!("CORS origin {origin:?} must start with http:// or https://"))?;
        if rest.is_empty() || rest.contains(['/', '?', '#', '*', ' ']) {
            return Err(format!(
                "CORS origin {origin:?} must be a scheme and host only, like https://chat.example.com"
            ));
        }
        axum::http::HeaderValue::from_str(origin)
            .map(CorsOrigin)
            .map_err(|_| format!("CORS origin {origin:?} is not a valid header value"))
    }
}

/// Executables, installers and scripts: what a chat should not hand to a double-click.
pub const DEFAULT_DENIED_EXTENSIONS: &str = "exe,dll,com,scr,pif,cpl,msi,msp,msc,bat,cmd,ps1,psm1,\
vbs,vbe,js,jse,wsf,wsh,hta,lnk,reg,jar,class,apk,dex,dey,app,dmg,pkg,deb,rpm,elf,mach,so,dylib,sh,\
bash,zsh,csh,ksh,command,run,py,pl,rb,php,wasm,crx";

/// A configuration value that must not show up in logs or `Debug` output.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
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
