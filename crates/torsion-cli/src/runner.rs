//! The runner: the command line of `torsion`, and the order in which a program is brought
//! up and down (Twisted's `twist` and `twisted.application.runner.Runner`, with `twistd`'s
//! `--daemon`, `--pidfile`, `--umask` and `--uid`/`--gid`).
//!
//! Up: parse the options; detach (`--daemon`); take the pidfile; start logging; build the
//! reactor and the plugin's service; start the service's privileged part (binding ports),
//! drop privileges, start the rest; then say so (to the waiting parent of a daemon, and to
//! systemd through `NOTIFY_SOCKET`) and run. Down, on SIGINT or SIGTERM: tell systemd,
//! stop the service and wait for its Deferred (at most `--shutdown-timeout`, logged when
//! it is hit), then remove the pidfile and exit 0. Anything that goes wrong on the way up
//! exits 1 with the reason on stderr (and in the log, once logging is up).
//!
//! Invariant: every step on the way up that can fail reports through [`Startup::fail`],
//! so a daemon's parent, the terminal and the log all hear of it; no step is skipped on the
//! way down once the service has started.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};
use torsion::log::Logger;
use torsion::reactor::backend::BackendKind;
use torsion::reactor::{Phase, SystemEvent};

use crate::daemon::{DaemonChild, DaemonOptions, daemonize, gid_from_str, uid_from_str};
use crate::logging::{LogConfig, LogDestination, LogFormat, LogGuard, install};
use crate::pidfile::Pidfile;
use crate::workers::{Gate, WorkerConfig, bring_up};
use crate::{Plugin, notify};

/// How long the services get to stop before the runner exits anyway (Twisted waits
/// forever; a stuck service should not keep a restart from happening).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The `torsion` command line and the plugins it offers (Twisted's `twist`, whose
/// subcommands are the `IServiceMaker` plugins it finds).
///
/// A program with plugins of its own builds a `Runner` with them (and the built-in ones,
/// if it likes) and calls [`main`](Runner::main); `examples/own_runner.rs` is a whole one:
///
/// ```no_run
/// use std::process::ExitCode;
/// use torsion_cli::Runner;
/// # use torsion_cli::plugins::echo::EchoPlugin as MyPlugin;
///
/// fn main() -> ExitCode {
///     Runner::new("myserver").plugin(MyPlugin).main()
/// }
/// ```
pub struct Runner {
    name: String,
    plugins: Vec<Box<dyn Plugin>>,
}

impl Runner {
    /// A runner called `name` (the program name its help shows) with no plugins.
    pub fn new(name: impl Into<String>) -> Runner {
        Runner {
            name: name.into(),
            plugins: Vec::new(),
        }
    }

    /// The `torsion` binary's runner: the built-in plugins ([`crate::plugins::builtin`]).
    pub fn with_builtin_plugins() -> Runner {
        let mut runner = Runner::new("torsion");
        runner.plugins = crate::plugins::builtin();
        runner
    }

    /// Adds a plugin (the Rust form of dropping a module into `twisted/plugins`).
    pub fn plugin(mut self, plugin: impl Plugin + 'static) -> Runner {
        self.plugins.push(Box::new(plugin));
        self
    }

    /// Adds a plugin already boxed (as [`plugins::builtin`](crate::plugins::builtin) hands
    /// them out).
    pub fn boxed_plugin(mut self, plugin: Box<dyn Plugin>) -> Runner {
        self.plugins.push(plugin);
        self
    }

    /// The whole command line: the runner's options and one subcommand per plugin.
    pub fn command(&self) -> Command {
        let mut command = Command::new(self.name.clone())
            .about("Runs a torsion service: one of the plugins below, with logging, a pidfile and optionally as a daemon")
            .subcommand_required(true)
            .arg_required_else_help(true)
            .subcommand_value_name("PLUGIN")
            .subcommand_help_heading("Plugins")
            .arg(
                Arg::new("reactor")
                    .long("reactor")
                    .value_name("NAME")
                    .value_parser(["epoll", "poll", "io_uring", "auto"])
                    .help(
                        "The reactor's backend; auto is io_uring where the kernel allows it, \
                         else epoll [default: $TORSION_REACTOR, else epoll]",
                    ),
            )
            .arg(
                Arg::new("log-level")
                    .long("log-level")
                    .value_name("LEVEL")
                    .default_value("info")
                    .help("The lowest level logged: debug, info, warn, error or critical"),
            )
            .arg(
                Arg::new("log-file")
                    .long("log-file")
                    .value_name("PATH")
                    .help("Where to log: a file (rotated by size), - for stdout, + for stderr, syslog for /dev/log [default: -, or torsion.log with --daemon]"),
            )
            .arg(
                Arg::new("log-format")
                    .long("log-format")
                    .value_name("FORMAT")
                    .value_parser(["text", "json"])
                    .help("text or json (one event per line) [default: text on a terminal, json otherwise]"),
            )
            .arg(
                Arg::new("log-filter")
                    .long("log-filter")
                    .value_name("NAMESPACE=LEVEL")
                    .action(ArgAction::Append)
                    .help("A level for one namespace, e.g. torsion::net=debug (repeatable; the longest prefix wins)"),
            )
            .arg(
                Arg::new("pidfile")
                    .long("pidfile")
                    .value_name("PATH")
                    .help("Write the process id here, locked while running; refuse to start if a live process holds it"),
            )
            .arg(
                Arg::new("daemon")
                    .long("daemon")
                    .action(ArgAction::SetTrue)
                    .help("Detach from the terminal (double fork, new session, stdio on /dev/null); exits once the service has started"),
            )
            .arg(
                Arg::new("umask")
                    .long("umask")
                    .value_name("MASK")
                    .value_parser(parse_umask)
                    .help("The file mode mask, in octal [default: unchanged, or 077 with --daemon]"),
            )
            .arg(
                Arg::new("uid")
                    .long("uid")
                    .value_name("USER")
                    .help("Run as this user (name or number) once the service's ports are bound"),
            )
            .arg(
                Arg::new("gid")
                    .long("gid")
                    .value_name("GROUP")
                    .help("Run with this group (name or number) once the service's ports are bound"),
            )
            .arg(
                Arg::new("workers")
                    .long("workers")
                    .value_name("N")
                    .value_parser(clap::value_parser!(u16).range(1..=1024))
                    .help("Run N reactors, one per thread, each with its own service, sharing the TCP ports (SO_REUSEPORT) [default: 1]"),
            )
            .arg(
                Arg::new("shutdown-timeout")
                    .long("shutdown-timeout")
                    .value_name("SECS")
                    .value_parser(parse_seconds)
                    .help("How long services get to stop on SIGINT or SIGTERM [default: 30]"),
            );
        for plugin in &self.plugins {
            command = command.subcommand(plugin.command().about(plugin.description()));
        }
        command
    }

    /// Runs with this process's arguments; the exit code to return from `main`.
    pub fn main(self) -> ExitCode {
        self.run_with_args(std::env::args_os())
    }

    /// Runs with `args` (the first is the program name, as in `std::env::args_os`).
    pub fn run_with_args<I, T>(self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = match self.command().try_get_matches_from(args) {
            Ok(matches) => matches,
            Err(err) => {
                let _ = err.print();
                return ExitCode::from(err.exit_code().clamp(0, 255) as u8);
            }
        };
        let Some((name, plugin_options)) = matches.subcommand() else {
            return ExitCode::from(2);
        };
        let Some(plugin) = self.plugins.iter().find(|p| p.name() == name) else {
            eprintln!("{}: no plugin named {name}", self.name);
            return ExitCode::from(2);
        };
        match Options::from_matches(&matches) {
            Ok(options) => run(&self.name, plugin.as_ref(), plugin_options, options),
            Err(message) => {
                eprintln!("{}: {message}", self.name);
                ExitCode::from(2)
            }
        }
    }
}

fn parse_umask(value: &str) -> Result<u32, String> {
    let digits = value.strip_prefix("0o").unwrap_or(value);
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{value:?} is not an octal mask such as 022 or 077"))
}

fn parse_seconds(value: &str) -> Result<Duration, String> {
    value
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("{value:?} is not a number of seconds"))
}

/// The runner's own options, checked and with paths made absolute (a daemon runs in `/`).
struct Options {
    /// `None` for `auto`, resolved once logging is set up so its one line is logged.
    backend: Option<BackendKind>,
    log: LogConfig,
    pidfile: Option<PathBuf>,
    daemon: bool,
    umask: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    shutdown_timeout: Duration,
    workers: usize,
}

fn absolute(path: &str) -> Result<PathBuf, String> {
    std::path::absolute(Path::new(path)).map_err(|err| format!("bad path {path:?}: {err}"))
}

impl Options {
    fn from_matches(matches: &ArgMatches) -> Result<Options, String> {
        let from_env = std::env::var("TORSION_REACTOR").ok();
        let backend = match matches
            .get_one::<String>("reactor")
            .map(String::as_str)
            .or_else(|| from_env.as_deref().map(str::trim).filter(|n| !n.is_empty()))
        {
            Some(name) if name.eq_ignore_ascii_case("auto") => None,
            Some(name) => Some(name.parse::<BackendKind>().map_err(|err| err.to_string())?),
            None => Some(BackendKind::Epoll),
        };
        let daemon = matches.get_flag("daemon");
        let level = matches
            .get_one::<String>("log-level")
            .map_or("info", String::as_str);
        let level = LogConfig::parse_level(level)?;
        let destination = match matches.get_one::<String>("log-file").map(String::as_str) {
            Some("-") => LogDestination::Stdout,
            Some("+") => LogDestination::Stderr,
            Some("syslog") => LogDestination::Syslog {
                prefix: "torsion".into(),
            },
            Some(path) => LogDestination::File(absolute(path)?),
            None if daemon => LogDestination::File(absolute("torsion.log")?),
            None => LogDestination::Stdout,
        };
        let format = match matches.get_one::<String>("log-format").map(String::as_str) {
            Some("json") => LogFormat::Json,
            Some(_) => LogFormat::Text,
            None => LogConfig::default_format_for(&destination),
        };
        let filters = matches
            .get_many::<String>("log-filter")
            .map(|f| f.cloned().collect())
            .unwrap_or_default();
        let log = LogConfig {
            level,
            destination,
            format,
            filters,
            ..LogConfig::default()
        };
        let pidfile = match matches.get_one::<String>("pidfile") {
            Some(path) if !path.is_empty() => Some(absolute(path)?),
            _ => None,
        };
        let uid = match matches.get_one::<String>("uid") {
            Some(user) => Some(uid_from_str(user).map_err(|e| e.to_string())?),
            None => None,
        };
        let gid = match matches.get_one::<String>("gid") {
            Some(group) => Some(gid_from_str(group).map_err(|e| e.to_string())?),
            None => None,
        };
        Ok(Options {
            backend,
            log,
            pidfile,
            daemon,
            umask: matches.get_one::<u32>("umask").copied(),
            uid,
            gid,
            shutdown_timeout: matches
                .get_one::<Duration>("shutdown-timeout")
                .copied()
                .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
            workers: matches
                .get_one::<u16>("workers")
                .map_or(1, |n| usize::from(*n)),
        })
    }
}

/// Where start-up failures are reported: stderr (or a daemon's waiting parent), and the
/// log once it is up.
struct Startup {
    program: String,
    daemon: Option<DaemonChild>,
    logger: Option<Logger>,
}

impl Startup {
    fn fail(mut self, message: impl std::fmt::Display) -> ExitCode {
        let message = format!("{}: {message}", self.program);
        if let Some(logger) = &self.logger {
            logger.critical(&message);
        }
        match self.daemon.take() {
            Some(child) => {
                let _ = child.failed(&message);
            }
            None => eprintln!("{message}"),
        }
        ExitCode::FAILURE
    }
}

fn run(
    program: &str,
    plugin: &dyn Plugin,
    plugin_options: &ArgMatches,
    options: Options,
) -> ExitCode {
    let mut startup = Startup {
        program: program.to_string(),
        daemon: None,
        logger: None,
    };
    if options.daemon {
        let daemon_options = DaemonOptions {
            umask: options.umask,
            rundir: None,
        };
        match daemonize(&daemon_options) {
            Ok(child) => startup.daemon = Some(child),
            Err(err) => return startup.fail(err),
        }
    } else if let Some(mask) = options.umask {
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(mask));
    }
    let pidfile = match &options.pidfile {
        Some(path) => match Pidfile::acquire(path) {
            Ok(pidfile) => Some(pidfile),
            Err(err) => return startup.fail(err),
        },
        None => None,
    };
    let guard: LogGuard = match install(&options.log) {
        Ok(guard) => guard,
        Err(err) => return startup.fail(format!("cannot set up logging: {err}")),
    };
    let logger = Logger::new("torsion.runner");
    startup.logger = Some(logger.clone());
    let config = WorkerConfig {
        plugin,
        plugin_options,
        backend: options.backend.unwrap_or_else(BackendKind::auto),
        workers: options.workers,
        shutdown_timeout: options.shutdown_timeout,
        uid: options.uid,
        gid: options.gid,
    };
    let gate = Gate::new(config.workers);
    let mut code = ExitCode::SUCCESS;
    std::thread::scope(|scope| {
        for index in 1..config.workers {
            let (gate, config, logger) = (&gate, &config, &logger);
            let spawned = std::thread::Builder::new()
                .name(format!("torsion-worker-{index}"))
                .spawn_scoped(scope, move || run_worker(index, gate, config, logger));
            if let Err(err) = spawned {
                gate.fail(format!("cannot start worker {index}: {err}"));
                gate.leave();
            }
        }
        let (reactor, _service) = match bring_up(0, &gate, &config) {
            Ok(worker) => worker,
            Err(message) => {
                code = startup.fail(message);
                return;
            }
        };
        let others = gate.handles();
        let log = logger.clone();
        reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move || {
            log.info("stopping");
            if let Err(err) = notify::stopping() {
                log.warn(format_args!("cannot tell systemd we are stopping: {err}"));
            }
            for other in &others {
                other.stop();
            }
        });
        let workers = match config.workers {
            1 => String::new(),
            n => format!(", {n} workers"),
        };
        logger.info(format_args!(
            "{} started: {} (pid {}, reactor {}{workers})",
            plugin.name(),
            plugin.description(),
            std::process::id(),
            config.backend,
        ));
        if let Some(child) = startup.daemon.take()
            && let Err(err) = child.started()
        {
            logger.warn(format_args!(
                "cannot tell the parent process we started: {err}"
            ));
        }
        if let Err(err) = notify::ready() {
            logger.warn(format_args!("cannot tell systemd we are ready: {err}"));
        }
        match reactor.run() {
            Ok(()) => logger.info("stopped"),
            Err(failure) => {
                logger.failure("the reactor failed", &failure);
                code = ExitCode::FAILURE;
            }
        }
    });
    if gate.worker_failed() {
        code = ExitCode::FAILURE;
    }
    if let Some(pidfile) = pidfile
        && let Err(err) = pidfile.remove()
    {
        logger.warn(format_args!("{err}"));
    }
    drop(guard);
    code
}

/// Worker `index` (1 to N-1) on its own thread: up in step with the others, then run until
/// worker 0 stops it. A reactor that fails is logged and counted in the exit code.
fn run_worker(index: usize, gate: &Gate, config: &WorkerConfig<'_>, logger: &Logger) {
    let Ok((reactor, _service)) = bring_up(index, gate, config) else {
        return;
    };
    if let Err(failure) = reactor.run() {
        logger.failure(format_args!("worker {index}: the reactor failed"), &failure);
        gate.record_worker_failure();
    }
}
