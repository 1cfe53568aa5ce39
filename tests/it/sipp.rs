//! SIPp drives the daemon with the OPTIONS scenario of `sipp-scenarios/`.
//! Skipped, loudly, only when `sipp` is not installed (`scripts/test`
//! installs it).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::daemon::Daemon;

fn sipp_installed() -> bool {
    Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Runs `calls` OPTIONS transactions from SIPp; asserts SIPp's exit status 0
/// (every call succeeded, within the global timeout).
fn run_sipp_options(transport_flag: &str, daemon_listen: &str, proto: &str) {
    if !sipp_installed() {
        eprintln!(
            "SKIPPED: sipp is not installed (apt-get install sip-tester; scripts/test does it)"
        );
        return;
    }
    let scenario = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sipp-scenarios/uac_options.xml");
    assert!(scenario.exists(), "missing {}", scenario.display());
    let daemon = Daemon::start(&[daemon_listen]);
    let server = daemon.addr(proto, false);
    let workdir = tempfile::tempdir().unwrap();
    let output = Command::new("sipp")
        .current_dir(workdir.path())
        .arg("-sf")
        .arg(&scenario)
        .arg(server.to_string())
        .args(["-i", "127.0.0.1", "-t", transport_flag])
        .args(["-m", "50", "-r", "100", "-l", "20"])
        .args(["-timeout", "30s", "-timeout_error", "-nostdin"])
        .stdin(Stdio::null())
        .output()
        .expect("run sipp");
    assert!(
        output.status.success(),
        "sipp exited with {:?}\nstdout:\n{}\nstderr:\n{}\nvpbx stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        daemon.stderr_text()
    );
}

#[test]
fn sipp_options_scenario_passes_over_udp() {
    run_sipp_options("u1", "udp:127.0.0.1:0", "udp");
}

#[test]
fn sipp_options_scenario_passes_over_tcp() {
    run_sipp_options("t1", "tcp:127.0.0.1:0", "tcp");
}
