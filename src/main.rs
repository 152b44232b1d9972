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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    palaver::telemetry::init();
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
    }
    Ok(())
}
