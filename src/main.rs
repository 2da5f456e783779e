//! The `albatross` binary: run on the embedded default or a config file, check a
//! config, or run one heartbeat backend.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use albatross::config::{self, Origin};
use albatross::control::ConfigSource;
use albatross::{backend, certs, Proxy, ProxyHandle, ProxyOptions};

/// A Layer-7, WebSocket-aware reverse proxy that behaves like an AWS Application Load Balancer.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Config file (TOML). Without it albatross runs on its embedded default.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Worker threads (default: one per CPU the process may use, by affinity and cgroup
    /// quota). With 1, and by default when only one CPU is usable, everything runs on a
    /// single thread, the cheapest setup for a proxy pinned to one core.
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config and print the effective model, or every error with its location.
    Check,
    /// Run one heartbeat WebSocket backend.
    Backend {
        /// Address to listen on, e.g. 127.0.0.1:9001.
        #[arg(long)]
        listen: SocketAddr,
        /// Name shown in the hello message (default: the listen address).
        #[arg(long)]
        id: Option<String>,
        /// Time between Ping frames, e.g. 25s or 300ms; 0 disables pings.
        #[arg(long, default_value = "25s", value_parser = parse_optional_duration)]
        ping_interval: OptionalDuration,
        /// Time allowed for the Pong after a Ping; 0 disables the deadline.
        #[arg(long, default_value = "20s", value_parser = parse_optional_duration)]
        ping_timeout: OptionalDuration,
        /// Redis URL for cross-instance notifications.
        #[arg(long)]
        redis: Option<String>,
    },
}

#[derive(Clone, Copy)]
struct OptionalDuration(Option<Duration>);

fn parse_optional_duration(s: &str) -> Result<OptionalDuration, String> {
    let d = config::parse_duration(s)?;
    Ok(OptionalDuration((!d.is_zero()).then_some(d)))
}

/// mimalloc keeps objects of one size class together and serves aligned allocations
/// without padding (tokio's task cells are 128-byte aligned), so the few hundred bytes
/// an idle tunnel keeps do not pin the pages its handshake's short-lived buffers used.
/// Against glibc's allocator, in the same run: 1.8 → 1.4 KiB of RSS per idle tunnel at
/// 9,900 tunnels, and about 12 % fewer instructions per WebSocket handshake.
/// Built with `no_thp`: mimalloc would otherwise ask for transparent huge pages for its
/// arenas, which doubled the process's resident memory at start (about 10 → 20 MiB).
///
/// Allocations whose alignment `mi_malloc` already gives (at most 16 bytes, and not more
/// than their size, as the standard library asks of the C allocator) go to `mi_malloc`;
/// `mimalloc::MiMalloc` sends every allocation to `mi_malloc_aligned`, whose fast path
/// covers only blocks up to 1 KiB: the 8 KiB read buffers and grown header maps of each
/// request took its generic path, about 250 instructions each, four per request.
#[global_allocator]
static GLOBAL: Allocator = Allocator;

struct Allocator;

/// The alignment every `mi_malloc` block of at least that size has (`max_align_t`).
const MI_MIN_ALIGN: usize = 16;

/// Whether `mi_malloc(size)` gives the alignment `align` asks for.
fn plain(align: usize, size: usize) -> bool {
    align <= MI_MIN_ALIGN && align <= size
}

// SAFETY: each method hands the request to mimalloc, which returns blocks of at least
// the size asked for (or null) with the alignment asked for: directly where `plain` says
// `mi_malloc` gives it, through mimalloc's aligned entry points otherwise. Every block is
// freed by `mi_free`, whichever entry point made it.
unsafe impl std::alloc::GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            libmimalloc_sys::mi_malloc(layout.size()).cast()
        } else {
            std::alloc::GlobalAlloc::alloc(&mimalloc::MiMalloc, layout)
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            libmimalloc_sys::mi_zalloc(layout.size()).cast()
        } else {
            std::alloc::GlobalAlloc::alloc_zeroed(&mimalloc::MiMalloc, layout)
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        libmimalloc_sys::mi_free(ptr.cast());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if plain(layout.align(), new_size) {
            libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast()
        } else {
            std::alloc::GlobalAlloc::realloc(&mimalloc::MiMalloc, ptr, layout, new_size)
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: a log file or a collector gets plain
        // lines (and formatting them costs half as much).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    // A server may use the descriptors its hard limit allows; the default connection
    // limit follows from them.
    albatross::proxy::limit::raise_descriptor_limit();
    let mut builder = match cli.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(usize::from(n));
            b
        }
        None if usable_cpus() == 1 => tokio::runtime::Builder::new_current_thread(),
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("albatross: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Some(Command::Check) => check(cli.config),
            Some(Command::Backend {
                listen,
                id,
                ping_interval,
                ping_timeout,
                redis,
            }) => {
                let options = backend::BackendOptions {
                    id: id.unwrap_or_else(|| listen.to_string()),
                    ping_interval: ping_interval.0,
                    ping_timeout: ping_timeout.0,
                    redis,
                };
                run_backend(listen, options).await
            }
            None => run(cli.config).await,
        }
    })
}

/// The CPUs this process may run on: its affinity mask (`taskset`) and its cgroup's CPU
/// quota (a container limited to one CPU) both count. With one, the single-threaded
/// runtime serves everything: a multi-threaded one on a single CPU only adds the cost of
/// waking and parking its workers (15–50 % more CPU per WebSocket handshake, measured).
fn usable_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Load the config file, or the embedded default (generating its certificate first),
/// with where a reload reads it again.
fn load(path: Option<&PathBuf>) -> Result<(config::Config, Origin, ConfigSource), String> {
    match path {
        Some(path) => {
            generate_named_certs(path)?;
            let config = config::load_file(path).map_err(|e| e.to_string())?;
            Ok((config, Origin::file(path), ConfigSource::File(path.clone())))
        }
        None => {
            let base_dir = std::env::current_dir()
                .map_err(|e| format!("cannot read the current directory: {e}"))?;
            certs::ensure_localhost_cert(&base_dir.join("certs"))
                .map_err(|e| format!("cannot create the self-signed certificate in certs/: {e}"))?;
            let origin = Origin {
                name: "<embedded default>".to_string(),
                base_dir,
            };
            let config =
                config::from_str(config::DEFAULT_CONFIG, &origin).map_err(|e| e.to_string())?;
            let source = ConfigSource::Text(config::DEFAULT_CONFIG.to_string());
            Ok((config, origin, source))
        }
    }
}

/// Generate the localhost certificate a config file names when it is not there yet, as
/// the embedded default does (see [`certs::ensure_named_localhost_certs`]); say so.
fn generate_named_certs(path: &Path) -> Result<(), String> {
    let generated = certs::ensure_named_localhost_certs(path).map_err(|e| {
        format!(
            "{}: cannot create the self-signed localhost certificate it names: {e}",
            path.display()
        )
    })?;
    for dir in generated {
        eprintln!(
            "Generated a self-signed certificate for localhost in {} (named by {}, not there yet).",
            dir.display(),
            path.display()
        );
    }
    Ok(())
}

fn check(path: Option<PathBuf>) -> ExitCode {
    let Some(path) = path else {
        eprintln!("albatross check: give the file to check with --config FILE.");
        return ExitCode::from(2);
    };
    if let Err(e) = generate_named_certs(&path) {
        println!("{e}");
        return ExitCode::FAILURE;
    }
    match config::load_file(&path) {
        Ok(cfg) => {
            println!("{}: OK", path.display());
            println!("{}", config::describe(&cfg));
            ExitCode::SUCCESS
        }
        Err(errors) => {
            println!("{errors}");
            ExitCode::FAILURE
        }
    }
}

async fn run(path: Option<PathBuf>) -> ExitCode {
    // Registered before anything starts: a SIGHUP or SIGUSR1 that arrives while the
    // listeners come up is then queued, not left to its default action (ending the
    // process).
    let signals = Signals::register();
    let (cfg, origin, source) = match load(path.as_ref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let handle = match Proxy::start_from(cfg, origin, source, ProxyOptions::default()).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("albatross: {e}");
            return ExitCode::FAILURE;
        }
    };
    // SIGHUP reloads the config (the outcome is logged); SIGUSR1 reopens the log files
    // (for logrotate); SIGINT/SIGTERM stop.
    let Signals { hangup, usr1 } = signals;
    tokio::select! {
        _ = reload_on_hangup(&handle, hangup) => {}
        _ = reopen_logs_on_usr1(&handle, usr1) => {}
        _ = wait_for_signal() => {}
    }
    tracing::info!("Shutting down: no new connections; finishing requests and tunnels (signal again to stop at once).");
    tokio::select! {
        _ = handle.shutdown() => {}
        _ = wait_for_signal() => tracing::info!("Stopping at once."),
    }
    ExitCode::SUCCESS
}

/// The signals a running load balancer answers besides SIGINT and SIGTERM: SIGHUP
/// reloads, SIGUSR1 reopens the logs. `None` where they cannot be had.
struct Signals {
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    usr1: Option<tokio::signal::unix::Signal>,
    #[cfg(not(unix))]
    hangup: Option<()>,
    #[cfg(not(unix))]
    usr1: Option<()>,
}

impl Signals {
    fn register() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals {
                hangup: signal(SignalKind::hangup()).ok(),
                usr1: signal(SignalKind::user_defined1()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {
            hangup: None,
            usr1: None,
        }
    }
}

/// Reload the config at every SIGHUP (never returns).
#[cfg(unix)]
async fn reload_on_hangup(handle: &ProxyHandle, hangup: Option<tokio::signal::unix::Signal>) {
    if let Some(mut hup) = hangup {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration.");
            // The outcome is logged by the reload itself.
            let _ = handle.reload().await;
        }
    }
    std::future::pending::<()>().await
}

/// Reopen the access and connection logs at every SIGUSR1 (never returns).
#[cfg(unix)]
async fn reopen_logs_on_usr1(handle: &ProxyHandle, usr1: Option<tokio::signal::unix::Signal>) {
    if let Some(mut usr1) = usr1 {
        while usr1.recv().await.is_some() {
            tracing::info!("SIGUSR1: reopening the log files.");
            handle.reopen_logs();
        }
    }
    std::future::pending::<()>().await
}

#[cfg(not(unix))]
async fn reload_on_hangup(_: &ProxyHandle, _: Option<()>) {
    std::future::pending::<()>().await
}

#[cfg(not(unix))]
async fn reopen_logs_on_usr1(_: &ProxyHandle, _: Option<()>) {
    std::future::pending::<()>().await
}

async fn run_backend(listen: SocketAddr, options: backend::BackendOptions) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("albatross backend: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cancel = CancellationToken::new();
    let handle = match backend::start(listener, options, cancel.clone()).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("albatross backend: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        "Heartbeat backend listening on http://{}",
        handle.local_addr()
    );
    wait_for_signal().await;
    handle.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
