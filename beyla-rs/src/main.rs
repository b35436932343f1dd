//! `beyla-rs`: the daemon's entry point. Exit codes: 0 after a clean shutdown, 1 on a runtime
//! failure (e.g. the programs do not load), 2 on bad configuration, missing privileges or a
//! kernel without a feature the programs need.

use std::{io::Write, process::ExitCode};

use beyla_rs::{capture, config::Config, daemon, privileges};

fn init_logging(level: log::LevelFilter) {
    // aya's own debug output (relocations, verifier logs) is only useful when tracing.
    let aya_level = if level >= log::LevelFilter::Trace {
        log::LevelFilter::Trace
    } else {
        level.min(log::LevelFilter::Info)
    };
    env_logger::Builder::new()
        .filter_level(level)
        .filter_module("aya", aya_level)
        .filter_module("aya_obj", aya_level)
        .format(|buf, record| {
            writeln!(
                buf,
                "{} {:5} beyla-rs: {}",
                buf.timestamp_millis(),
                record.level(),
                record.args()
            )
        })
        .target(env_logger::Target::Stderr)
        .init();
}

/// Resolves at the first SIGTERM or SIGINT. The handlers are installed when this is called,
/// not when the future is first polled: the daemon reports ready before its event loop polls
/// it, and a SIGTERM in between would otherwise kill it with the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        let (mut term, mut int) = match (term, int) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                log::error!("cannot handle SIGTERM/SIGINT: {e}");
                return std::future::pending().await;
            }
        };
        tokio::select! {
            _ = term.recv() => log::info!("SIGTERM: shutting down"),
            _ = int.recv() => log::info!("SIGINT: shutting down"),
        }
    }
}

/// What the command line asks for.
struct Args {
    config: Option<String>,
    print_config: bool,
}

const USAGE: &str = "usage: beyla-rs [--config FILE] [--print-config] [--version]";

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        config: None,
        print_config: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--version" | "-V" => {
                println!("beyla-rs {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "--print-config" => args.print_config = true,
            // `-config` is Beyla's spelling.
            "--config" | "-config" => {
                args.config = Some(it.next().ok_or("--config needs a file")?);
            }
            _ => match a.strip_prefix("--config=").or(a.strip_prefix("-config=")) {
                Some(f) => args.config = Some(f.to_owned()),
                None => return Err(format!("unknown argument {a:?}")),
            },
        }
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("beyla-rs: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::load(args.config.as_deref(), |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("beyla-rs: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        print!("{}", config.to_yaml());
        return ExitCode::SUCCESS;
    }
    init_logging(config.log_level);

    let missing = privileges::missing();
    if !missing.is_empty() {
        if config.enforce_caps {
            eprintln!("beyla-rs: {}", privileges::explain(&missing));
            return ExitCode::from(2);
        }
        log::warn!("{}", privileges::explain(&missing));
    }
    privileges::raise_memlock();
    // A kernel without a feature the programs need is a deployment error, like a missing
    // capability: exit 2 with the feature and the kernel named, before anything is loaded.
    if let Err(e) = capture::probe::check() {
        eprintln!("beyla-rs: {e}");
        return ExitCode::from(2);
    }

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("beyla-rs: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(async { daemon::run(config, shutdown_signal()).await }) {
        Ok(stats) => {
            let summary: Vec<String> = stats
                .pairs()
                .into_iter()
                .filter(|(_, v)| *v > 0)
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if stats.spans_dropped > 0 || stats.events_lost_kernel > 0 {
                // Losses are counted all along; at exit they are a warning, not an info line.
                log::warn!("stopped: {}", summary.join(" "));
            } else {
                log::info!("stopped: {}", summary.join(" "));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("{e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                log::error!("  caused by: {s}");
                source = s.source();
            }
            if e.is_deployment_error() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
