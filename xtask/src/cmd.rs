//! Running external commands with errors that show the command line and its stderr, so
//! that a failure in `ip`, `ethtool` or `apt-get` says exactly what was run and why it failed.

use std::{
    ffi::OsStr,
    os::unix::process::CommandExt as _,
    process::{Child, Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// A `Command` built from a program and its arguments.
pub fn command<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// The command line as a shell would show it (for messages only).
pub fn display(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs to completion with captured output; returns stdout. Fails with the command line,
/// exit status and stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{}`: is it installed? (`cargo xtask setup`)", display(cmd)))?;
    if !out.status.success() {
        bail!("`{}` failed ({}): {}", display(cmd), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs to completion with stdout and stderr inherited (streamed to the user).
pub fn stream(cmd: &mut Command) -> Result<()> {
    let status = cmd.stdin(Stdio::null()).status().with_context(|| format!("cannot start `{}`", display(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// Whether a program can be started at all (found on PATH and executable).
pub fn exists(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Makes a child die with us and keeps the terminal's Ctrl-C away from it: a child in its
/// own process group does not get the terminal's SIGINT, so xtask decides the order of
/// shutdown (agent first, then traffic, then the lab); PR_SET_PDEATHSIG stops it if xtask
/// itself is killed, so no traffic generator outlives the lab.
pub fn supervised(cmd: &mut Command, death_signal: libc::c_int) -> &mut Command {
    cmd.process_group(0);
    // SAFETY: the closure runs between fork and exec and only calls prctl, which is
    // async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, death_signal as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Sends `signal` to a child and waits up to `timeout` for it, then SIGKILLs it.
/// Returns the exit status when the child ended by itself after the signal.
pub fn stop(child: &mut Child, signal: libc::c_int, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        let _ = child.kill();
        return child.wait().ok();
    };
    // SAFETY: kill(2) on the pid of a child we have not reaped yet, so the pid is ours.
    unsafe { libc::kill(pid, signal) };
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}
