//! The standalone `ferrocable` server: options from flags, `ANYCABLE_*` variables and a TOML file
//! (precedence: flags > environment > file > defaults), logging, signals.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, Command};
use ferrocable::{Config, OPTIONS, Server};

/// The file read when `--config-path` is not given, if it exists.
const DEFAULT_CONFIG_FILE: &str = "anycable.toml";

fn command() -> Command {
    let mut cmd = Command::new("ferrocable")
        .version(env!("CARGO_PKG_VERSION"))
        .about("A real-time WebSocket server that speaks AnyCable's protocols")
        .arg(
            Arg::new("config_path")
                .long("config-path")
                .alias("config_path")
                .env("ANYCABLE_CONFIG_PATH")
                .value_name("FILE")
                .help("TOML file with options (default: ./anycable.toml when present)"),
        )
        .arg(
            Arg::new("print_config")
                .long("print-config")
                .alias("print_config")
                .action(ArgAction::SetTrue)
                .help("Print the effective configuration and exit"),
        );
    for spec in OPTIONS {
        let mut arg = Arg::new(spec.name).long(spec.name).env(spec.env_var()).help(spec.help()).value_name("VALUE");
        if !spec.default.is_empty() {
            arg = arg.help(format!("{} [default: {}]", spec.help(), spec.default));
        }
        if spec.switch {
            arg = arg.num_args(0..=1).default_missing_value("true").require_equals(true);
        }
        if spec.is_secret() || matches!(spec.name, "redis_url" | "nats_servers") {
            // `--help` would otherwise print `[env: ANYCABLE_SECRET=<the secret>]`, or a URL with its password.
            arg = arg.hide_env_values(true);
        }
        cmd = cmd.arg(arg);
    }
    cmd
}

/// Builds the configuration from flags, environment and file.
fn load_config(matches: &clap::ArgMatches) -> anyhow::Result<Config> {
    let mut config = Config::default();

    let file: Option<PathBuf> = match matches.get_one::<String>("config_path") {
        Some(path) => Some(PathBuf::from(path)),
        None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
    };
    if let Some(path) = &file {
        apply_file(&mut config, path)?;
    }
    // `PORT` is honoured like AnyCable does, below `ANYCABLE_PORT` and `--port`.
    if let Ok(port) = std::env::var("PORT") {
        config.set("port", &port).context("environment variable PORT")?;
    }
    // `REDIS_URL` likewise, below `ANYCABLE_REDIS_URL` and `--redis_url`.
    if let Ok(url) = std::env::var("REDIS_URL") {
        config.set("redis_url", &url).context("environment variable REDIS_URL")?;
    }
    for spec in OPTIONS {
        let source = matches.value_source(spec.name);
        if matches!(source, Some(ValueSource::CommandLine) | Some(ValueSource::EnvVariable)) {
            if let Some(value) = matches.get_one::<String>(spec.name) {
                let origin = if source == Some(ValueSource::EnvVariable) {
                    format!("environment variable {}", spec.env_var())
                } else {
                    format!("flag --{}", spec.name)
                };
                config.set(spec.name, value).with_context(|| origin)?;
            }
        }
    }
    Ok(config.finalize()?)
}

fn apply_file(config: &mut Config, path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    config.set_from_toml(&text).with_context(|| format!("config file {}", path.display()))
}

/// `ANYCABLE_*` variables are often shared with the application's own AnyCable settings, so one this server
/// does not know is reported, not fatal.
fn warn_unknown_env() {
    let known: Vec<String> = OPTIONS.iter().map(|s| s.env_var()).chain(["ANYCABLE_CONFIG_PATH".to_owned()]).collect();
    for (name, _) in std::env::vars() {
        if name.starts_with("ANYCABLE_") && !known.contains(&name) {
            eprintln!("ferrocable: warning: ignoring {name}: not an option of this server");
        }
    }
}

/// The binary's allocations come from jemalloc. An idle connection is a dozen small blocks; jemalloc keeps
/// them in size classes without a header per block, where glibc's malloc adds 8 bytes to each and rounds it to
/// 16: 1,771 → 1,462 bytes of RSS per idle subscribed connection (docs/benchmarks.md). Its freed memory goes
/// back after about ten seconds (its decay time), so the broadcast storm of `core/tests/backpressure.rs` stays within its bound (mimalloc
/// did not: it held the storm's freed blocks). Its symbols are prefixed: only the binary uses it, never a
/// process that embeds the library.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let matches = command().get_matches();
    let config = match load_config(&matches) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("ferrocable: configuration error: {error:#}");
            return ExitCode::from(2);
        }
    };
    warn_unknown_env();
    if matches.get_flag("print_config") {
        print!("{}", config.describe());
        return ExitCode::SUCCESS;
    }
    ferrocable::logging::init(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("ferrocable: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let server = match Server::start(config, None).await {
            Ok(server) => server,
            Err(error) => {
                tracing::error!("cannot start: {error}");
                return ExitCode::FAILURE;
            }
        };
        wait_for_signal().await;
        server.shutdown().await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Config> {
        // Env vars are process-wide: give each case its own names by only using options no other test sets.
        for (k, v) in env {
            // SAFETY: tests in this module run on one thread (see `config_precedence_*`), nothing else reads env.
            unsafe { std::env::set_var(k, v) };
        }
        let mut argv = vec!["ferrocable"];
        argv.extend_from_slice(args);
        let matches = command().try_get_matches_from(argv)?;
        let result = load_config(&matches);
        for (k, _) in env {
            unsafe { std::env::remove_var(k) };
        }
        result
    }

    #[test]
    fn config_precedence_is_cli_then_env_then_file_then_default() {
        let dir = std::env::temp_dir().join(format!("ferrocable-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("anycable.toml");
        std::fs::write(
            &file,
            "rpc_concurrency = 7\nping_interval = 9\nheaders = [\"cookie\", \"x-token\"]\nhealth_path = \"/file\"\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();

        let c = load(&["--config-path", path], &[]).unwrap();
        assert_eq!((c.rpc_concurrency, c.ping_interval, c.health_path.as_str()), (7, 9, "/file"));
        assert_eq!(c.headers, vec!["cookie", "x-token"]);
        assert_eq!(c.port, 8080, "untouched options keep their defaults");

        let c = load(&["--config-path", path], &[("ANYCABLE_PING_INTERVAL", "5")]).unwrap();
        assert_eq!((c.rpc_concurrency, c.ping_interval), (7, 5), "env beats file");

        let c = load(&["--config-path", path, "--ping_interval", "4"], &[("ANYCABLE_PING_INTERVAL", "5")]).unwrap();
        assert_eq!(c.ping_interval, 4, "flag beats env");

        let c = load(&["--public"], &[]).unwrap();
        assert!(c.noauth && c.public_streams);

        let c = load(&[], &[("REDIS_URL", "redis://from-redis-url:6379/1")]).unwrap();
        assert_eq!(c.redis_url, "redis://from-redis-url:6379/1", "REDIS_URL is read");
        let c = load(&[], &[("REDIS_URL", "redis://a:1/1"), ("ANYCABLE_REDIS_URL", "redis://b:2/2")]).unwrap();
        assert_eq!(c.redis_url, "redis://b:2/2", "ANYCABLE_REDIS_URL beats REDIS_URL");
        let c = load(&["--redis_url", "redis://c:3/3"], &[("REDIS_URL", "redis://a:1/1")]).unwrap();
        assert_eq!(c.redis_url, "redis://c:3/3", "the flag beats REDIS_URL");

        let err = load(&["--ping_interval", "soon"], &[]).unwrap_err();
        assert!(format!("{err:#}").contains("ping_interval"), "{err:#}");

        std::fs::write(&file, "no_such_option = 1\n").unwrap();
        let err = load(&["--config-path", path], &[]).unwrap_err();
        assert!(format!("{err:#}").contains("no_such_option"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
