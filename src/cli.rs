//! The command line (clap): subcommands, flags, their `PLANBOX_*` variables
//! and defaults, mapped onto `config` types.
//!
//! Precedence is flag, then environment variable, then default. This module
//! must not do anything but parse: no I/O, no store, no network. Variables
//! that may hold a provider URL (and so credentials) are never shown by
//! `--help` (`hide_env_values`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono_tz::Tz;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{
    parse_cidrs, parse_duration, parse_size, parse_tz, Cidr, ConfigError, ProviderConfig,
    RateLimit, ServeConfig,
};
use crate::secret::SecretUrl;

#[derive(Debug, Parser)]
#[command(
    name = "planbox",
    version,
    about = "Mirror a flaky XML events feed into a fast, always-available search API",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log line format on stderr (the level comes from PLANBOX_LOG: error,
    /// warn, info or debug; default info).
    #[arg(
        long,
        global = true,
        env = "PLANBOX_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Migrate, start the fetch loop and the HTTP server; run until SIGINT/SIGTERM.
    Serve(Box<ServeArgs>),
    /// Fetch and ingest once now; print the report; non-zero exit on failure.
    Fetch(FetchArgs),
    /// Ingest local feed files in order, each as if fetched.
    Import(ImportArgs),
    /// Query the local store.
    Search(SearchArgs),
    /// Show recent fetch runs and counts.
    Status(StatusArgs),
    /// Apply migrations to the store.
    Migrate(DbArgs),
    /// Write a consistent, verified copy of the store (safe while serving).
    Backup(BackupArgs),
    /// Exit 0 when the server at --listen answers /ready.
    Healthcheck(HealthcheckArgs),
    /// Write the man pages and shell completions into DIR (a packaging step).
    #[command(hide = true)]
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Directory to write `man/*.1` and `completions/*` into (created).
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct DbArgs {
    /// The SQLite store.
    #[arg(long, env = "PLANBOX_DB", default_value = "planbox.db")]
    pub db: PathBuf,
}

/// Provider settings shared by `serve` and `fetch`.
#[derive(Debug, Args)]
pub struct ProviderArgs {
    /// The provider's feed URL.
    #[arg(long, env = "PLANBOX_PROVIDER_URL", hide_env_values = true)]
    pub provider_url: Option<String>,

    /// The provider's name: part of every plan's identity (and so its id).
    #[arg(long, env = "PLANBOX_PROVIDER_NAME", default_value = crate::model::DEFAULT_PROVIDER)]
    pub provider_name: String,

    /// IANA time zone of the feed's local times.
    #[arg(long, env = "PLANBOX_PROVIDER_TIMEZONE", default_value = "UTC", value_parser = parse_tz)]
    pub provider_timezone: Tz,

    /// Deadline of one fetch attempt, body included.
    #[arg(long, env = "PLANBOX_FETCH_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub fetch_timeout: Duration,

    /// Connect timeout of one fetch attempt (at most --fetch-timeout).
    #[arg(long, env = "PLANBOX_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Largest feed accepted (after decompression).
    #[arg(long, env = "PLANBOX_MAX_FEED_BYTES", default_value = "512MiB", value_parser = parse_size)]
    pub max_feed_bytes: u64,

    /// A PEM bundle to trust for the provider's TLS certificate, besides the
    /// system CA store.
    #[arg(long, env = "PLANBOX_PROVIDER_CA")]
    pub provider_ca: Option<PathBuf>,
}

impl ProviderArgs {
    /// The one provider these flags describe. The URL is checked here; the
    /// name keeps any non-empty value, as it always did (it is part of the
    /// ids of a store's plans).
    pub fn to_config(&self) -> Result<ProviderConfig, ConfigError> {
        if self.provider_name.is_empty() {
            return Err(ConfigError::EmptyProviderName);
        }
        let url = match &self.provider_url {
            Some(u) => Some(SecretUrl::parse(u).map_err(ConfigError::ProviderUrl)?),
            None => None,
        };
        Ok(ProviderConfig {
            url,
            ca: self.provider_ca.clone(),
            ..self.defaults()
        })
    }

    /// Everything but the URL: what a `--provider` entry leaves out.
    pub fn defaults(&self) -> ProviderConfig {
        ProviderConfig {
            url: None,
            name: self.provider_name.clone(),
            timezone: self.provider_timezone,
            ca: None,
            fetch_timeout: self.fetch_timeout,
            connect_timeout: self.connect_timeout,
            max_feed_bytes: self.max_feed_bytes,
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the HTTP API.
    #[arg(long, env = "PLANBOX_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Serve /metrics only on this address instead of the main listener.
    #[arg(long, env = "PLANBOX_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Serve the status page (`/`) only on this address instead of the main
    /// listener (it may equal --metrics-listen).
    #[arg(long, env = "PLANBOX_STATUS_LISTEN")]
    pub status_listen: Option<SocketAddr>,

    /// A provider: `name=NAME,url=URL[,timezone=TZ][,ca=FILE]`; repeat for
    /// several. Instead of the --provider-url shorthand.
    #[arg(
        long = "provider",
        value_name = "name=NAME,url=URL[,timezone=TZ][,ca=FILE]"
    )]
    pub providers: Vec<String>,

    /// Provider entries separated by whitespace (what --provider takes).
    #[arg(
        long = "providers",
        env = "PLANBOX_PROVIDERS",
        hide = true,
        hide_env_values = true
    )]
    pub providers_env: Option<String>,

    /// Read the provider entries from this file (whitespace-separated, `#`
    /// comments), e.g. a systemd credential only the service can read.
    #[arg(long, env = "PLANBOX_PROVIDERS_FILE")]
    pub providers_file: Option<PathBuf>,

    /// The SQLite store [default: planbox.db; planbox-demo.db with --demo, so
    /// the sample plans never land in a real store by accident].
    #[arg(long, env = "PLANBOX_DB")]
    pub db: Option<PathBuf>,

    #[command(flatten)]
    pub provider: ProviderArgs,

    /// Time between fetches.
    #[arg(long, env = "PLANBOX_FETCH_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub fetch_interval: Duration,

    /// How long an HTTP cache in front may reuse a /search answer
    /// (`Cache-Control: max-age`, as long again `stale-while-revalidate`);
    /// 0: every use revalidates [default: --fetch-interval].
    #[arg(long, env = "PLANBOX_CACHE_MAX_AGE", value_parser = parse_duration)]
    pub cache_max_age: Option<Duration>,

    /// Longest wait between attempts while the provider fails.
    #[arg(long, env = "PLANBOX_MAX_BACKOFF", default_value = "5m", value_parser = parse_duration)]
    pub max_backoff: Duration,

    /// HTTP worker threads (default: one per core, at least 2).
    #[arg(long, env = "PLANBOX_WORKERS")]
    pub workers: Option<usize>,

    /// Open client connections at most; beyond, the longest-idle one is
    /// closed, or the new one gets 503 [default: 16384, lowered to fit the
    /// open-files limit].
    #[arg(long, env = "PLANBOX_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Serve the built-in sample feeds through an in-process provider (no network).
    #[arg(long, env = "PLANBOX_DEMO")]
    pub demo: bool,

    /// Per-client request limit, e.g. `100/s` or `600/m` (default: off).
    #[arg(long, env = "PLANBOX_RATE_LIMIT")]
    pub rate_limit: Option<RateLimit>,

    /// Proxies whose `X-Forwarded-For` names the client: `CIDR,...`.
    #[arg(long, env = "PLANBOX_TRUSTED_PROXIES", value_parser = parse_cidrs)]
    pub trusted_proxies: Option<std::vec::Vec<Cidr>>,
}

impl ServeArgs {
    pub fn to_config(&self) -> Result<ServeConfig, ConfigError> {
        let entries: Vec<&str> = if self.providers.is_empty() {
            self.providers_env
                .as_deref()
                .map(|e| e.split_whitespace().collect())
                .unwrap_or_default()
        } else {
            self.providers.iter().map(String::as_str).collect()
        };
        let several = !entries.is_empty() || self.providers_file.is_some();
        if self.demo && (self.provider.provider_url.is_some() || several) {
            return Err(ConfigError::DemoWithProviders);
        }
        if !entries.is_empty() && self.providers_file.is_some() {
            return Err(ConfigError::ProvidersTwice);
        }
        if several && self.provider.provider_url.is_some() {
            return Err(ConfigError::ShorthandWithEntries);
        }
        let defaults = self.provider.defaults();
        let providers = if entries.is_empty() {
            vec![self.provider.to_config()?]
        } else {
            crate::config::parse_provider_list(&entries.join("\n"), &defaults)?
        };
        if self.fetch_interval.is_zero() {
            return Err(ConfigError::ZeroInterval);
        }
        let workers = self.workers.unwrap_or_else(crate::server::default_workers);
        if !(1..=1024).contains(&workers) {
            return Err(ConfigError::Workers);
        }
        let max_connections = self
            .max_connections
            .unwrap_or(crate::server::DEFAULT_MAX_CONNECTIONS);
        if !(1..=1 << 20).contains(&max_connections) {
            return Err(ConfigError::MaxConnections);
        }
        Ok(ServeConfig {
            listen: self.listen,
            metrics_listen: self.metrics_listen,
            status_listen: self.status_listen,
            db: self.db.clone().unwrap_or_else(|| {
                PathBuf::from(if self.demo {
                    "planbox-demo.db"
                } else {
                    "planbox.db"
                })
            }),
            providers,
            providers_file: self.providers_file.clone(),
            provider_defaults: defaults,
            fetch_interval: self.fetch_interval,
            cache_max_age: self.cache_max_age.unwrap_or(self.fetch_interval),
            max_backoff: self.max_backoff.max(self.fetch_interval),
            workers,
            max_connections,
            demo: self.demo,
            rate_limit: self.rate_limit,
            trusted_proxies: self.trusted_proxies.clone().unwrap_or_default(),
        })
    }
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub provider: ProviderArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// The provider these feeds came from (part of every plan's id).
    #[arg(long, env = "PLANBOX_PROVIDER_NAME", default_value = crate::model::DEFAULT_PROVIDER)]
    pub provider_name: String,
    /// Largest file accepted.
    #[arg(long, env = "PLANBOX_MAX_FEED_BYTES", default_value = "512MiB", value_parser = parse_size)]
    pub max_feed_bytes: u64,
    /// The files' encoding, as an HTTP Content-Type charset would say it
    /// (`ISO-8859-1`, `windows-1252`, `UTF-16`): it wins over an XML
    /// declaration, a byte order mark still wins over it. Without it, a file
    /// is read as its BOM or declaration says, else as UTF-8.
    #[arg(long, value_name = "LABEL", value_parser = crate::feed::parse_charset)]
    pub charset: Option<String>,
    /// Feed files, ingested in this order.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Only plans starting at or after this (same forms as the API).
    #[arg(long)]
    pub starts_at: Option<String>,
    /// Only plans ending at or before this.
    #[arg(long)]
    pub ends_at: Option<String>,
    /// IANA time zone of the feed's local times.
    #[arg(long, env = "PLANBOX_PROVIDER_TIMEZONE", default_value = "UTC", value_parser = parse_tz)]
    pub provider_timezone: Tz,
    /// Print the API's JSON envelope.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Print `{"runs": [...]}`, newest first.
    #[arg(long)]
    pub json: bool,
    /// How many runs to show.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Destination file (must not exist).
    pub dest: PathBuf,
}

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// Address of the server to check.
    #[arg(long, env = "PLANBOX_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// How long to wait for the answer.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_defaults_match_the_contract() {
        let cli = Cli::try_parse_from(["planbox", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        let c = args.to_config().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.db, PathBuf::from("planbox.db"));
        assert_eq!(c.fetch_interval, Duration::from_secs(60));
        assert_eq!(c.cache_max_age, c.fetch_interval);
        assert_eq!(c.providers.len(), 1);
        assert_eq!(c.providers[0].fetch_timeout, Duration::from_secs(30));
        assert_eq!(c.providers[0].max_feed_bytes, 512 << 20);
        assert_eq!(c.max_backoff, Duration::from_secs(300));
        assert_eq!(c.providers[0].timezone, Tz::UTC);
        assert!(c.providers[0].url.is_none());
        assert!(c.workers >= 2);
        let demo = |args: &[&str]| {
            let Command::Serve(a) = Cli::try_parse_from(args).unwrap().command else {
                panic!("not serve")
            };
            a.to_config().unwrap().db
        };
        assert_eq!(
            demo(&["planbox", "serve", "--demo"]),
            PathBuf::from("planbox-demo.db")
        );
        assert_eq!(
            demo(&["planbox", "serve", "--demo", "--db", "x.db"]),
            PathBuf::from("x.db")
        );
    }

    #[test]
    fn flags_parse_their_syntaxes() {
        let cli = Cli::try_parse_from([
            "planbox",
            "serve",
            "--fetch-interval",
            "500ms",
            "--provider-timezone",
            "Europe/Madrid",
            "--max-feed-bytes",
            "1GB",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.fetch_interval, Duration::from_millis(500));
        assert_eq!(
            args.to_config().unwrap().cache_max_age,
            Duration::from_millis(500),
            "the cache max-age follows the fetch interval"
        );
        let cli = Cli::try_parse_from(["planbox", "serve", "--cache-max-age", "0"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.to_config().unwrap().cache_max_age, Duration::ZERO);
        assert!(Cli::try_parse_from(["planbox", "serve", "--fetch-interval", "soon"]).is_err());
        assert!(Cli::try_parse_from(["planbox", "serve", "--provider-timezone", "X"]).is_err());
    }

    #[test]
    fn variables_that_may_hold_a_url_never_show_their_value() {
        const URL_VARS: [&str; 2] = ["PLANBOX_PROVIDER_URL", "PLANBOX_PROVIDERS"];
        let mut seen = Vec::new();
        let mut stack = vec![Cli::command()];
        while let Some(cmd) = stack.pop() {
            for arg in cmd.get_arguments() {
                let Some(var) = arg.get_env().and_then(|v| v.to_str()) else {
                    continue;
                };
                if URL_VARS.contains(&var) {
                    assert!(
                        arg.is_hide_env_values_set(),
                        "{} {var}: --help would print its value",
                        cmd.get_name()
                    );
                    seen.push(var.to_owned());
                }
            }
            stack.extend(cmd.get_subcommands().cloned());
        }
        for var in URL_VARS {
            assert!(seen.iter().any(|s| s == var), "{var} not found");
        }
    }
}
