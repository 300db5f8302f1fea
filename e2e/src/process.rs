//! Host daemons started by the harness, tracked by PID files.
//!
//! A PID file holds the PID and the process's start time (field 22 of /proc/<pid>/stat), so a
//! recycled PID is never mistaken for ours and `down` only ever signals what `up` started.
//! Daemons get their own process group: a Ctrl-C in the terminal that ran `cargo dev up` does
//! not reach them, and they outlive it (their parent becomes PID 1; there is no systemd here).

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::layout::Layout;

/// A daemon to start.
pub struct Daemon {
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Daemon {
    pub fn new(name: &'static str, program: PathBuf, args: Vec<String>) -> Self {
        Self {
            name,
            program,
            args,
            env: Vec::new(),
        }
    }
}

fn pid_file(layout: &Layout, name: &str) -> PathBuf {
    layout.pids().join(format!("{name}.pid"))
}

/// The daemon's log file.
pub fn log_file(layout: &Layout, name: &str) -> PathBuf {
    layout.logs().join(format!("{name}.log"))
}

/// Start time of `pid` in clock ticks since boot, if it exists (and is not a zombie).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Starts `daemon`, appending its output to its log, and records its PID file.
pub fn start(layout: &Layout, daemon: &Daemon) -> anyhow::Result<u32> {
    for dir in [layout.logs(), layout.pids()] {
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let log_path = log_file(layout, daemon.name);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("open {}", log_path.display()))?;
    let err = log.try_clone().context("duplicate log handle")?;
    let child = Command::new(&daemon.program)
        .args(&daemon.args)
        .envs(daemon.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("start {} ({})", daemon.name, daemon.program.display()))?;
    let pid = child.id();
    let started = start_time(pid).unwrap_or(0);
    std::fs::write(pid_file(layout, daemon.name), format!("{pid} {started}\n"))
        .with_context(|| format!("write the PID file of {}", daemon.name))?;
    // The child is not waited for here: it is a daemon. Once we exit, PID 1 reaps it; while
    // we run (tests), `running` treats a zombie as stopped.
    drop(child);
    Ok(pid)
}

/// The PID of `name` if the process recorded in its PID file is still alive.
pub fn running(layout: &Layout, name: &str) -> Option<u32> {
    let text = std::fs::read_to_string(pid_file(layout, name)).ok()?;
    let mut parts = text.split_whitespace();
    let pid: u32 = parts.next()?.parse().ok()?;
    let recorded: u64 = parts.next()?.parse().ok()?;
    (start_time(pid)? == recorded).then_some(pid)
}

/// Fails with the log tail when `name` has exited.
pub fn check_alive(layout: &Layout, name: &str) -> anyhow::Result<()> {
    if running(layout, name).is_none() {
        let log = log_file(layout, name);
        bail!(
            "{name} exited; last lines of {}:\n{}",
            log.display(),
            crate::cmd::tail(&log, 30)
        );
    }
    Ok(())
}

/// Stops `name` (SIGTERM, then SIGKILL after `grace`) if it runs; removes its PID file.
pub fn stop(layout: &Layout, name: &str, grace: Duration) -> anyhow::Result<()> {
    stop_all(layout, &[name], grace)
}

/// Stops several daemons at once: all get SIGTERM together, stragglers SIGKILL after
/// `grace` (a dev cluster's components need no drawn-out graceful shutdown; e.g. the API
/// server otherwise lingers ~10 s draining).
pub fn stop_all(layout: &Layout, names: &[&str], grace: Duration) -> anyhow::Result<()> {
    let mut pids = Vec::new();
    for name in names {
        if let Some(pid) = running(layout, name) {
            signal(pid, libc::SIGTERM)?;
            pids.push((*name, pid));
        }
    }
    let deadline = Instant::now() + grace;
    while pids.iter().any(|(_, pid)| start_time(*pid).is_some()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for (name, pid) in &pids {
        if start_time(*pid).is_some() {
            eprintln!("{name} did not exit within {grace:?} of SIGTERM: killing it");
            signal(*pid, libc::SIGKILL)?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|(_, pid)| start_time(*pid).is_some()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for name in names {
        remove_if_exists(&pid_file(layout, name))?;
    }
    Ok(())
}

fn signal(pid: u32, sig: i32) -> anyhow::Result<()> {
    let pid = i32::try_from(pid).context("PID out of range")?;
    // SAFETY: kill(2) with a PID we recorded and verified by start time.
    if unsafe { libc::kill(pid, sig) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err).with_context(|| format!("signal {sig} to PID {pid}"));
        }
    }
    Ok(())
}

fn remove_if_exists(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Polls `check` every 200 ms until it returns true, `daemon` dies, or `timeout` passes.
pub fn wait_until(
    layout: &Layout,
    daemon: &str,
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return Ok(());
        }
        check_alive(layout, daemon)?;
        if Instant::now() > deadline {
            let log = log_file(layout, daemon);
            bail!(
                "timed out after {timeout:?} waiting for {what}; last lines of {}:\n{}",
                log.display(),
                crate::cmd::tail(&log, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
