use clap::{Parser, Subcommand};

// mimalloc returns freed memory to the system promptly; with glibc's allocator the 19 MiB Argon2
// buffers and per-thread arenas kept the process's resident size in the gigabytes after a burst of
// logins, and every idle connection looked far more expensive than it is.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use palaver::config::Config;

/// Palaver: a real-time chat backend served as a GraphQL API with subscriptions.
#[derive(Parser)]
#[command(name = "palaver", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Run pending database migrations and exit.
    Migrate,
    /// Print the GraphQL schema (SDL) and exit.
    Schema,
    /// Manage server administrators (who may read the audit log).
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
}

#[derive(Subcommand)]
enum AdminAction {
    /// Make a user a server administrator.
    Grant { username: String },
    /// Take administrator rights away from a user.
    Revoke { username: String },
}

/// Runs the command; a failure is reported as one line (`error: ` and the chain of causes), with
/// exit status 1: it is read by an operator, to whom a backtrace says nothing.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    palaver::telemetry::init();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once (database errors repeat their cause in
/// their own message).
fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if !parts
            .last()
            .is_some_and(|previous| previous.contains(&text))
        {
            parts.push(text);
        }
    }
    parts.join(": ")
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = palaver::Application::build(cli.config).await?;
            app.run_until_stopped(palaver::shutdown_signal()).await?;
        }
        Command::Migrate => {
            palaver::db::connect(&cli.config.database_url).await?;
            tracing::info!("migrations applied");
        }
        Command::Schema => print!("{}", palaver::graphql::sdl()),
        Command::Admin { action } => {
            let db = palaver::db::connect(&cli.config.database_url).await?;
            let (username, admin) = match &action {
                AdminAction::Grant { username } => (username, true),
                AdminAction::Revoke { username } => (username, false),
            };
            if !palaver::chat::audit::set_admin(&db, username, admin).await? {
                anyhow::bail!("no user named {username}");
            }
            println!(
                "{username} is {} a server administrator",
                if admin { "now" } else { "no longer" }
            );
        }
    }
    Ok(())
}
