//! Starts the real `vpbx` binary on free ports and learns them from its
//! `listening PROTO ADDR` lines on stdout. Its log level is `info`, or
//! `VPBX_TEST_LOG` when set (e.g. `info,vpbx::config=debug`).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long the daemon may take to bind its sockets.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long it may take to exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// A running `vpbx run` process, killed on drop.
pub struct Daemon {
    child: Child,
    /// Working directory of the process: relative paths of the config
    /// (the CDR file) land here, not in the source tree.
    _workdir: tempfile::TempDir,
    /// Bound addresses in `--listen` order.
    pub listening: Vec<(String, SocketAddr)>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// The reader threads of stdout and stderr; they end at EOF.
    readers: Vec<thread::JoinHandle<()>>,
}

/// The embedded default config shipped in the repository.
pub fn default_config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")
}

fn collect_lines(
    stream: impl Read + Send + 'static,
    sink: Arc<Mutex<Vec<String>>>,
    notify: Option<mpsc::Sender<String>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = &notify {
                let _ = tx.send(line.clone());
            }
            sink.lock().unwrap().push(line);
        }
    })
}

impl Daemon {
    /// `vpbx run --config <default config> --listen ...` for each listen spec
    /// (e.g. `udp:127.0.0.1:0`); waits until every socket is reported bound.
    pub fn start(listen: &[&str]) -> Daemon {
        Daemon::start_with_config(&default_config_dir(), listen)
    }

    /// As [`Daemon::start`] with another config directory.
    pub fn start_with_config(config: &std::path::Path, listen: &[&str]) -> Daemon {
        let workdir = tempfile::tempdir().expect("temp dir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vpbx"));
        cmd.current_dir(workdir.path())
            .arg("run")
            .arg("--config")
            .arg(config);
        for l in listen {
            cmd.arg("--listen").arg(l);
        }
        let log = std::env::var("VPBX_TEST_LOG").unwrap_or_else(|_| "info".to_owned());
        cmd.env("RUST_LOG", log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn vpbx");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let readers = vec![
            collect_lines(
                child.stdout.take().expect("stdout piped"),
                Arc::clone(&stdout),
                Some(tx),
            ),
            collect_lines(
                child.stderr.take().expect("stderr piped"),
                Arc::clone(&stderr),
                None,
            ),
        ];
        let mut daemon = Daemon {
            child,
            _workdir: workdir,
            listening: Vec::new(),
            stdout,
            stderr,
            readers,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while daemon.listening.len() < listen.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("listening ") {
                        let (proto, addr) = rest.split_once(' ').expect("listening PROTO ADDR");
                        daemon.listening.push((
                            proto.to_owned(),
                            addr.trim().parse().expect("socket address"),
                        ));
                    }
                }
                Err(_) => panic!(
                    "vpbx did not report {} listening sockets in time; stderr:\n{}",
                    listen.len(),
                    daemon.stderr_text()
                ),
            }
        }
        daemon
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first bound address of a protocol (`udp`/`tcp`) and family.
    pub fn addr(&self, proto: &str, ipv6: bool) -> SocketAddr {
        self.listening
            .iter()
            .find(|(p, a)| p == proto && a.is_ipv6() == ipv6)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no {proto} listener (ipv6={ipv6}) in {:?}", self.listening))
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM and waits for the exit; returns the status and stdout.
    pub fn terminate(self) -> (ExitStatus, Vec<String>) {
        self.signal_term();
        self.wait_exit()
    }

    /// Sends SIGTERM without waiting (the daemon starts draining).
    pub fn signal_term(&self) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(killed.success(), "kill -TERM {pid} failed");
    }

    /// Waits for the exit after a SIGTERM; returns the status and stdout.
    pub fn wait_exit(mut self) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait vpbx") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "vpbx did not exit within {EXIT_TIMEOUT:?} of SIGTERM; stderr:\n{}",
                self.stderr_text()
            );
            thread::sleep(Duration::from_millis(20));
        };
        // Everything the process wrote is read once the readers saw EOF
        // (the process is gone, and nothing else holds its pipes).
        let deadline = Instant::now() + EXIT_TIMEOUT;
        for reader in std::mem::take(&mut self.readers) {
            while !reader.is_finished() {
                assert!(
                    Instant::now() < deadline,
                    "vpbx output not at EOF after its exit"
                );
                thread::sleep(Duration::from_millis(10));
            }
            reader.join().expect("reader thread");
        }
        let lines = self.stdout.lock().unwrap().clone();
        (status, lines)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
