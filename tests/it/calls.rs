//! Calls through the B2BUA (SPEC §2, §3): the real binary routes numbers of
//! a temporary config to a SIPp UAS on a free port, a SIPp UAC (or the test
//! UA) calls in. Every SIPp run is bounded (`-m`, `-timeout`); each test
//! asserts the exit status of both SIPp sides, the CDR lines written at the
//! graceful stop, and that the call table is empty afterwards.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use vpbx::sip::{HeaderName, Method};

use crate::daemon::Daemon;
use crate::ua::{response_to, UdpUa, ANSWER_WAIT};

pub(crate) const ROUTED: &str = "+74951234567";
const DISABLED: &str = "+74951234568";
const UNKNOWN: &str = "+74950000000";
/// How long a call placed by the test UA may take to be answered.
pub(crate) const CALL_WAIT: Duration = Duration::from_secs(10);

fn sipp_installed() -> bool {
    Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn scenario(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("sipp-scenarios")
        .join(name);
    assert!(p.exists(), "missing {}", p.display());
    p
}

/// A loopback port free for both UDP and TCP right now.
pub(crate) fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Options of the test config.
pub(crate) struct Setup {
    /// Transport towards the callee (`udp`/`tcp`).
    pub callee_transport: &'static str,
    pub dial_timeout: &'static str,
    pub max_cps: u32,
    /// `[reload] debounce`.
    pub debounce: &'static str,
    /// `[shutdown] drain_time`.
    pub drain_time: &'static str,
    /// `[timers] t1`.
    pub t1: &'static str,
    /// More `[limits]` lines (each ending in a newline).
    pub limits: &'static str,
    /// More lines of the PBX file (externals, numbers), after the routed
    /// number.
    pub pbx_extra: String,
    /// More top-level lines of `vpbx.toml` (each ending in a newline).
    pub top: &'static str,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            callee_transport: "udp",
            dial_timeout: "10s",
            max_cps: 5000,
            debounce: "500ms",
            drain_time: "5s",
            t1: "500ms",
            limits: "",
            pbx_extra: String::new(),
            top: "",
        }
    }
}

fn write_pbx(dir: &Path, uas_port: u16, setup: &Setup, comment: &str) {
    std::fs::write(
        dir.join("pbx/test.toml"),
        format!(
            "id = \"test\"\n\
             [[external]]\nid = \"office\"\nuri = \"sip:127.0.0.1:{uas_port}\"\n\
             transport = \"{}\"\ndial_timeout = \"{}\"\n\
             [[number]]\nnumber = \"{ROUTED}\"\nforward = \"external:office\"\non_failure = \"hangup\"\n\
             comment = \"{comment}\"\n\
             [[number]]\nnumber = \"{DISABLED}\"\nforward = \"external:office\"\nenabled = false\n{}",
            setup.callee_transport, setup.dial_timeout, setup.pbx_extra
        ),
    )
    .unwrap();
}

/// A daemon on a temporary config routing [`ROUTED`] to `127.0.0.1:uas_port`.
pub(crate) struct Rig {
    pub dir: tempfile::TempDir,
    _cdr_dir: tempfile::TempDir,
    cdr: PathBuf,
    pub uas_port: u16,
    daemon: Option<Daemon>,
    /// What the daemon printed on stdout, once it exited.
    pub exit_stdout: Vec<String>,
}

/// Each CDR line's finish reason and final status, sorted: how the calls
/// of a test ended, whatever order they ended in.
pub fn cdr_ends(cdrs: &[Value]) -> Vec<(String, u64)> {
    let mut ends: Vec<(String, u64)> = cdrs
        .iter()
        .map(|c| {
            (
                c["reason"].as_str().unwrap().to_owned(),
                c["status"].as_u64().unwrap(),
            )
        })
        .collect();
    ends.sort();
    ends
}

impl Rig {
    pub fn start(listen: &[&str], setup: Setup) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let cdr_dir = tempfile::tempdir().unwrap();
        let cdr = cdr_dir.path().join("cdr.jsonl");
        std::fs::create_dir_all(dir.path().join("pbx")).unwrap();
        std::fs::write(
            dir.path().join("vpbx.toml"),
            format!(
                "listen = [\"udp:127.0.0.1:0\"]\n{}\
                 [timers]\nt1 = \"{}\"\n\
                 [limits]\nmax_cps = {}\n{}\
                 [cdr]\npath = \"{}\"\n\
                 [shutdown]\ndrain_time = \"{}\"\n\
                 [reload]\ndebounce = \"{}\"\n",
                setup.top,
                setup.t1,
                setup.max_cps,
                setup.limits,
                cdr.display(),
                setup.drain_time,
                setup.debounce
            ),
        )
        .unwrap();
        let uas_port = free_port();
        write_pbx(dir.path(), uas_port, &setup, "test");
        let daemon = Daemon::start_with_config(dir.path(), listen);
        Rig {
            dir,
            _cdr_dir: cdr_dir,
            cdr,
            uas_port,
            daemon: Some(daemon),
            exit_stdout: Vec::new(),
        }
    }

    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().unwrap()
    }

    /// The callee: a SIPp UAS on the routed port, `-m calls`.
    fn uas(&self, name: &str, transport: &str, calls: u32, extra: &[&str]) -> Child {
        let child = Command::new("sipp")
            .arg("-sf")
            .arg(scenario(name))
            .args([
                "-i",
                "127.0.0.1",
                "-p",
                &self.uas_port.to_string(),
                "-t",
                transport,
            ])
            .args([
                "-m",
                &calls.to_string(),
                "-timeout",
                "40s",
                "-timeout_error",
                "-nostdin",
            ])
            .args(extra)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Let it bind before the first INVITE.
        thread::sleep(Duration::from_millis(300));
        child
    }

    /// The caller: a SIPp UAC dialing `number` at the daemon's `proto`
    /// listener; waits for it.
    fn uac(&self, name: &str, number: &str, proto: &str, calls: u32, extra: &[&str]) -> Output {
        self.uac_command(name, number, proto, calls, extra)
            .output()
            .unwrap()
    }

    fn uac_command(
        &self,
        name: &str,
        number: &str,
        proto: &str,
        calls: u32,
        extra: &[&str],
    ) -> Command {
        let server = self.daemon().addr(proto, false);
        let transport = if proto == "tcp" { "t1" } else { "u1" };
        let mut cmd = Command::new("sipp");
        cmd.arg("-sf")
            .arg(scenario(name))
            .arg(server.to_string())
            .args([
                "-i",
                "127.0.0.1",
                "-p",
                &free_port().to_string(),
                "-t",
                transport,
                "-s",
                number,
            ])
            .args([
                "-m",
                &calls.to_string(),
                "-timeout",
                "40s",
                "-timeout_error",
                "-nostdin",
            ])
            .args(extra)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// SIGTERM (drain, CDR flush); returns the CDR lines and checks that no
    /// call was left in the table.
    pub fn stop(&mut self) -> Vec<Value> {
        self.daemon().signal_term();
        self.wait_stopped()
    }

    /// After a SIGTERM: waits for the exit, returns the CDR lines and checks
    /// that no call was left in the table.
    fn wait_stopped(&mut self) -> Vec<Value> {
        let daemon = self.daemon.take().unwrap();
        let stderr = daemon.stderr_text();
        let (status, stdout) = daemon.wait_exit();
        assert!(status.success(), "vpbx exit {status:?}\n{stderr}");
        assert!(
            stdout.iter().any(|l| l == "b2bua calls: active=0 legs=0"),
            "call table not empty at exit: {stdout:?}"
        );
        self.exit_stdout = stdout;
        let text = std::fs::read_to_string(&self.cdr).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: sipp exited with {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wait_ok(what: &str, child: Child) {
    let out = child.wait_with_output().unwrap();
    assert_ok(what, &out);
}

/// Asserts `n` CDR lines, all with this reason and status to the caller.
pub(crate) fn assert_cdrs(cdrs: &[Value], n: usize, reason: &str, status: u64) {
    assert_eq!(cdrs.len(), n, "{cdrs:#?}");
    for c in cdrs {
        assert_eq!(c["reason"], reason, "{c}");
        assert_eq!(c["status"], status, "{c}");
    }
}

macro_rules! need_sipp {
    () => {
        if !sipp_installed() {
            eprintln!(
                "SKIPPED: sipp is not installed (apt-get install sip-tester; scripts/test does it)"
            );
            return;
        }
    };
}

fn basic_call(caller: &str, callee: &'static str) {
    basic_call_with(caller, callee, "");
}

/// [`basic_call`] with more top-level config lines.
fn basic_call_with(caller: &str, callee: &'static str, top: &'static str) {
    let mut rig = Rig::start(
        &["udp:127.0.0.1:0", "tcp:127.0.0.1:0"],
        Setup {
            callee_transport: callee,
            top,
            ..Setup::default()
        },
    );
    let uas = rig.uas(
        "uas_answer.xml",
        if callee == "tcp" { "t1" } else { "u1" },
        5,
        &[],
    );
    let uac = rig.uac("uac_call.xml", ROUTED, caller, 5, &["-r", "10"]);
    assert_ok("caller", &uac);
    wait_ok("callee", uas);
    let cdrs = rig.stop();
    assert_cdrs(&cdrs, 5, "answered", 200);
    for c in &cdrs {
        assert_eq!(c["dialed"], ROUTED);
        assert_eq!(c["pbx"], "test");
        assert_eq!(c["targets"][0]["target"], "external:office");
        assert_eq!(c["targets"][0]["status"], 200);
        assert!(c["answer"].is_string(), "{c}");
        assert!(
            c["caller"]
                .as_str()
                .unwrap()
                .starts_with("sip:sipp@127.0.0.1"),
            "{c}"
        );
    }
}

#[test]
fn basic_call_udp_to_udp_is_answered_and_recorded() {
    need_sipp!();
    basic_call("udp", "udp");
}

/// With more than one worker thread the transaction layer hands its items
/// to the TU through its channels (one thread: directly, as above).
#[test]
fn calls_go_through_with_two_worker_threads() {
    need_sipp!();
    basic_call_with("udp", "udp", "worker_threads = 2\n");
    basic_call_with("tcp", "udp", "worker_threads = 2\n");
}

#[test]
fn tcp_caller_reaches_udp_callee() {
    need_sipp!();
    basic_call("tcp", "udp");
}

#[test]
fn udp_caller_reaches_tcp_callee() {
    need_sipp!();
    basic_call("udp", "tcp");
}

#[test]
fn bye_from_callee_ends_the_call_on_both_legs() {
    need_sipp!();
    let mut rig = Rig::start(&["udp:127.0.0.1:0"], Setup::default());
    let uas = rig.uas("uas_answer_bye.xml", "u1", 3, &[]);
    let uac = rig.uac("uac_callee_bye.xml", ROUTED, "udp", 3, &[]);
    assert_ok("caller", &uac);
    wait_ok("callee", uas);
    assert_cdrs(&rig.stop(), 3, "answered", 200);
}

#[test]
fn busy_callee_gives_486_and_busy() {
    need_sipp!();
    let mut rig = Rig::start(&["udp:127.0.0.1:0"], Setup::default());
    let uas = rig.uas("uas_busy.xml", "u1", 2, &[]);
    let uac = rig.uac("uac_expect_486.xml", ROUTED, "udp", 2, &[]);
    assert_ok("caller", &uac);
    wait_ok("callee", uas);
    let cdrs = rig.stop();
    assert_cdrs(&cdrs, 2, "busy", 486);
    assert_eq!(cdrs[0]["targets"][0]["status"], 486);
}

#[test]
fn unavailable_callee_503_gives_480() {
    need_sipp!();
    let mut rig = Rig::start(&["udp:127.0.0.1:0"], Setup::default());
    let uas = rig.uas("uas_reject_503.xml", "u1", 1, &[]);
    let uac = rig.uac("uac_expect_480.xml", ROUTED, "udp", 1, &[]);
    assert_ok("caller", &uac);
    wait_ok("callee", uas);
    assert_cdrs(&rig.stop(), 1, "unavailable", 480);
}

#[test]
fn no_answer_within_dial_timeout_cancels_and_gives_480() {
    need_sipp!();
    let mut rig = Rig::start(
        &["udp:127.0.0.1:0"],
        Setup {
            dial_timeout: "1s",
            ..Setup::default()
        },
    );
    let uas = rig.uas("uas_noanswer.xml", "u1", 2, &[]);
    let started = Instant::now();
    let uac = rig.uac("uac_expect_480.xml", ROUTED, "udp", 2, &[]);
    assert_ok("caller", &uac);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "dial timeout not applied"
    );
    wait_ok("callee (got our CANCEL)", uas);
    assert_cdrs(&rig.stop(), 2, "no_answer", 480);
}

#[test]
fn cancel_before_answer_gives_487_and_cancels_the_callee() {
    need_sipp!();
    let mut rig = Rig::start(&["udp:127.0.0.1:0"], Setup::default());
    let uas = rig.uas("uas_noanswer.xml", "u1", 2, &[]);
    let uac = rig.uac("uac_cancel.xml", ROUTED, "udp", 2, &[]);
    assert_ok("caller", &uac);
    wait_ok("callee", uas);
    assert_cdrs(&rig.stop(), 2, "caller_hangup", 487);
}

#[test]
fn cancel_crossing_the_callees_200_still_gives_487_and_byes_the_callee() {
    need_sipp!();
    let mut rig = Rig::start(&["udp:127.0.0.1:0"], Setup::default());
    let uas = rig.uas("uas_cancel_race.xml", "u1", 2, &[]);
    let uac = rig.uac("uac_cancel.xml", ROUTED, "udp", 2, &[]);
    assert_ok("caller", &uac);
    wait_ok("callee (ACKed and BYEd)", uas);
    let cdrs = rig.stop();
    assert_cdrs(&cdrs, 2, "caller_hangup", 487);
    assert_eq!(cdrs[0]["targets"][0]["status"], 200);
}

#[test]
fn reinvite_is_relayed_in_the_dialog() {
    need_sipp!();
    let mut rig = Rig::start(&["udp:127.0.0.1:0"], Setup::default());
    let uas = rig.uas("uas_reinvite.xml", "u1", 2, &[]);
    let uac = rig.uac("uac_reinvite.xml", ROUTED, "udp", 2, &[]);
    assert_ok("caller", &uac);
    wait_ok("callee", uas);
    assert_cdrs(&rig.stop(), 2, "answered", 200);
}

#[test]
fn unknown_number_gives_404_and_disabled_480() {
    need_sipp!();
    let mut rig = Rig::start(&["udp:127.0.0.1:0"], Setup::default());
    let uac = rig.uac("uac_expect_404.xml", UNKNOWN, "udp", 2, &[]);
    assert_ok("unknown number", &uac);
    let uac = rig.uac("uac_expect_480.xml", DISABLED, "udp", 1, &[]);
    assert_ok("disabled number", &uac);
    let cdrs = rig.stop();
    assert_eq!(cdrs.len(), 3, "{cdrs:#?}");
    assert_cdrs(&cdrs[..2], 2, "not_found", 404);
    assert_eq!(cdrs[0]["dialed"], UNKNOWN);
    assert_cdrs(&cdrs[2..], 1, "rejected", 480);
    assert_eq!(cdrs[2]["pbx"], "test");
}

pub(crate) fn invite(number: &str, ua: &UdpUa, i: u32) -> String {
    let local = ua.local();
    format!(
        "INVITE sip:{number}@{server} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bKov{i};rport\r\n\
         From: <sip:load@{local}>;tag=ov{i}\r\n\
         To: <sip:{number}@{server}>\r\n\
         Call-ID: overload-{i}@{local}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:load@{local}>\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n",
        server = ua.server
    )
}

#[test]
fn calls_above_the_rate_limit_get_503_with_retry_after() {
    let mut rig = Rig::start(
        &["udp:127.0.0.1:0"],
        Setup {
            max_cps: 1,
            ..Setup::default()
        },
    );
    let ua = UdpUa::new(rig.daemon().addr("udp", false));
    let mut statuses = Vec::new();
    for i in 0..4 {
        ua.send(invite(UNKNOWN, &ua, i).as_bytes());
        let r = ua.recv_final(ANSWER_WAIT).expect("a final response");
        if r.status.as_u16() == 503 {
            let ra = r
                .headers
                .get(&HeaderName::RetryAfter)
                .expect("Retry-After on 503");
            assert!(
                std::str::from_utf8(ra)
                    .unwrap()
                    .trim()
                    .parse::<u32>()
                    .unwrap()
                    > 0
            );
        }
        statuses.push(r.status.as_u16());
    }
    // One token a second, burst 1: the first call is routed (404), the rest
    // within the same second are refused.
    assert_eq!(statuses, [404, 503, 503, 503]);
    let cdrs = rig.stop();
    assert_eq!(cdrs.len(), 4);
    assert_eq!(cdrs.iter().filter(|c| c["reason"] == "overload").count(), 3);
}

#[test]
fn max_forwards_zero_gives_483() {
    let mut rig = Rig::start(&["udp:127.0.0.1:0"], Setup::default());
    let ua = UdpUa::new(rig.daemon().addr("udp", false));
    ua.send(
        invite(ROUTED, &ua, 1)
            .replace("Max-Forwards: 70", "Max-Forwards: 0")
            .as_bytes(),
    );
    assert_eq!(ua.recv_final(ANSWER_WAIT).unwrap().status.as_u16(), 483);
    let cdrs = rig.stop();
    assert_cdrs(&cdrs, 1, "rejected", 483);
    assert_eq!(cdrs[0]["call_id"], format!("overload-1@{}", ua.local()));
}

/// INVITEs refused before they become calls, whichever layer refuses them,
/// get a CDR line each: here the validator in front of the B2BUA (420) and
/// the B2BUA itself for an INVITE whose Record-Route cannot set up a dialog
/// (400, a well-formed response).
#[test]
fn every_refused_invite_gets_a_cdr_line() {
    let mut rig = Rig::start(&["udp:127.0.0.1:0"], Setup::default());
    let ua = UdpUa::new(rig.daemon().addr("udp", false));
    let with = |i: u32, header: &str| {
        invite(ROUTED, &ua, i).replace(
            "Max-Forwards: 70\r\n",
            &format!("Max-Forwards: 70\r\n{header}\r\n"),
        )
    };
    ua.send(with(1, "Require: no-such-extension").as_bytes());
    let r = ua.recv_final(ANSWER_WAIT).expect("420");
    assert_eq!(r.status.as_u16(), 420);
    ua.send(with(2, "Record-Route: <sip:proxy.example;lr>;x=\"unterminated").as_bytes());
    let r = ua.recv_final(ANSWER_WAIT).expect("400");
    assert_eq!(r.status.as_u16(), 400);
    assert_eq!(r.cseq().unwrap().seq, 1, "a response to the INVITE");
    assert!(r.to().unwrap().tag().is_some());
    let cdrs = rig.stop();
    assert_eq!(cdrs.len(), 2, "{cdrs:#?}");
    assert_cdrs(&cdrs[..1], 1, "rejected", 420);
    assert_cdrs(&cdrs[1..], 1, "rejected", 400);
    assert_eq!(cdrs[0]["dialed"], ROUTED);
    assert_eq!(cdrs[1]["pbx"], "test");
}

/// How many times the daemon has logged a successful reload so far.
fn reloads(daemon: &Daemon) -> usize {
    daemon.stderr_text().matches("config reloaded").count()
}

/// Polls (every 50 ms, at most `wait`) until `done`; whether it came.
pub(crate) fn wait_until(wait: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn reload_under_traffic_fails_no_call() {
    need_sipp!();
    // A debounce well under the edit interval, so that edits reload while
    // the calls run (with edits closer than the debounce, the only reload
    // would come after the last edit, possibly after the traffic).
    let mut rig = Rig::start(
        &["udp:127.0.0.1:0"],
        Setup {
            debounce: "100ms",
            ..Setup::default()
        },
    );
    let calls = 150;
    let uas = rig.uas("uas_answer.xml", "u1", calls, &[]);
    // SIPp runs at 50 calls/s; the routing file (a comment) is edited every
    // 300 ms for as long as it runs.
    let uac = rig
        .uac_command("uac_call.xml", ROUTED, "udp", calls, &["-r", "50"])
        .spawn()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let editor = {
        let (dir, port, stop) = (rig.dir.path().to_path_buf(), rig.uas_port, stop.clone());
        thread::spawn(move || {
            let mut edits = 0;
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(300));
                write_pbx(&dir, port, &Setup::default(), &format!("edit {edits}"));
                edits += 1;
            }
            edits
        })
    };
    let uac = uac.wait_with_output().unwrap();
    let during_traffic = reloads(rig.daemon());
    stop.store(true, Ordering::Relaxed);
    let edits = editor.join().unwrap();
    let callee = uas.wait_with_output().unwrap();
    // This test has failed about once in 40 runs on a saturated box, never
    // reproduced since: a failure shows when the daemon reloaded too.
    for (what, out) in [("caller", &uac), ("callee", &callee)] {
        if !out.status.success() {
            eprintln!("vpbx stderr:\n{}", rig.daemon().stderr_text());
        }
        assert_ok(what, out);
    }
    assert!(
        during_traffic > 0,
        "no reload while the calls ran ({edits} edits):\n{}",
        rig.daemon().stderr_text()
    );
    let cdrs = rig.stop();
    assert_cdrs(&cdrs, calls as usize, "answered", 200);
}

#[test]
fn sigterm_drains_calls_in_progress_and_refuses_new_ones_with_503() {
    need_sipp!();
    let mut rig = Rig::start(&["udp:127.0.0.1:0"], Setup::default());
    let uas = rig.uas("uas_answer.xml", "u1", 1, &[]);
    // A call answered before the SIGTERM (its 200 says so), hung up by its
    // caller 2 s after the answer.
    let caller = UdpUa::new(rig.daemon().addr("udp", false));
    caller.send(invite(ROUTED, &caller, 1).as_bytes());
    let ok = recv_final_to(&caller, "INVITE", CALL_WAIT).expect("the call is answered");
    let answered = Instant::now();
    assert_eq!(ok.status.as_u16(), 200);
    let dialog = CallerDialog::of(&ok, 1);
    caller.send(dialog.request(&caller, "ACK", 1).as_bytes());

    rig.daemon().signal_term();
    assert!(
        wait_until(Duration::from_secs(10), || rig
            .daemon()
            .stderr_text()
            .contains("draining: new calls refused")),
        "not draining:\n{}",
        rig.daemon().stderr_text()
    );
    let ua = UdpUa::new(rig.daemon().addr("udp", false));
    ua.send(invite(ROUTED, &ua, 2).as_bytes());
    let r = ua
        .recv_final(ANSWER_WAIT)
        .expect("an answer while draining");
    assert_eq!(r.status.as_u16(), 503);
    assert!(r.headers.get(&HeaderName::RetryAfter).is_some());

    // The call outlives the SIGTERM: its BYE is answered in the dialog.
    thread::sleep(Duration::from_secs(2).saturating_sub(answered.elapsed()));
    caller.send(dialog.request(&caller, "BYE", 2).as_bytes());
    let bye = recv_final_to(&caller, "BYE", CALL_WAIT).expect("an answer to the BYE");
    assert_eq!(bye.status.as_u16(), 200);
    wait_ok("callee", uas);
    let cdrs = rig.wait_stopped();
    assert_eq!(cdrs.len(), 2, "{cdrs:#?}");
    assert_eq!(cdrs[0]["reason"], "overload");
    assert_eq!(cdrs[1]["reason"], "answered");
    assert!(cdrs[1]["talk_ms"].as_u64().unwrap() >= 1900, "{}", cdrs[1]);
}

/// The caller's side of a dialog set up by [`invite`] number `i`, for
/// in-dialog requests (the B2BUA does not Record-Route: the remote target
/// is the Contact of its 2xx).
pub(crate) struct CallerDialog {
    i: u32,
    target: String,
    to: String,
}

impl CallerDialog {
    pub(crate) fn of(ok: &vpbx::sip::Response, i: u32) -> CallerDialog {
        let header = |name| {
            let v = ok.headers.get(&name).expect("header in the 2xx");
            std::str::from_utf8(v).unwrap().trim().to_owned()
        };
        let contact = header(HeaderName::Contact);
        let target = contact
            .trim_start_matches('<')
            .split('>')
            .next()
            .unwrap()
            .to_owned();
        CallerDialog {
            i,
            target,
            to: header(HeaderName::To),
        }
    }

    /// An in-dialog request (ACK with CSeq 1, BYE with CSeq 2).
    pub(crate) fn request(&self, ua: &UdpUa, method: &str, cseq: u32) -> String {
        let (i, local) = (self.i, ua.local());
        format!(
            "{method} {target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK{method}{i};rport\r\n\
             From: <sip:load@{local}>;tag=ov{i}\r\n\
             To: {to}\r\n\
             Call-ID: overload-{i}@{local}\r\n\
             CSeq: {cseq} {method}\r\n\
             Max-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n",
            target = self.target,
            to = self.to
        )
    }
}

/// The final response to `method`, skipping others (retransmitted 2xx of
/// the INVITE, provisionals); `None` if none within `wait`.
pub(crate) fn recv_final_to(
    ua: &UdpUa,
    method: &str,
    wait: Duration,
) -> Option<vpbx::sip::Response> {
    let deadline = Instant::now() + wait;
    loop {
        let r = ua.recv_final(deadline.saturating_duration_since(Instant::now()))?;
        if r.cseq().is_ok_and(|c| c.method.as_str() == method) {
            return Some(r);
        }
    }
}

#[test]
fn a_reload_does_not_change_a_call_already_routed() {
    need_sipp!();
    let mut rig = Rig::start(&["udp:127.0.0.1:0"], Setup::default());
    let uas = rig.uas("uas_answer.xml", "u1", 1, &[]);
    // A call routed and answered before the edit: its 200 says so.
    let caller = UdpUa::new(rig.daemon().addr("udp", false));
    caller.send(invite(ROUTED, &caller, 1).as_bytes());
    let ok = recv_final_to(&caller, "INVITE", CALL_WAIT).expect("the first call is answered");
    assert_eq!(ok.status.as_u16(), 200);
    let dialog = CallerDialog::of(&ok, 1);
    caller.send(dialog.request(&caller, "ACK", 1).as_bytes());

    // The number is disabled by a reload while the call is up.
    let before = reloads(rig.daemon());
    let pbx = rig.dir.path().join("pbx/test.toml");
    let text = std::fs::read_to_string(&pbx).unwrap();
    let disabled = text.replacen(
        "on_failure = \"hangup\"\n",
        "on_failure = \"hangup\"\nenabled = false\n",
        1,
    );
    assert_ne!(text, disabled);
    std::fs::write(&pbx, disabled).unwrap();
    // The line is logged once the new table is in effect.
    assert!(
        wait_until(Duration::from_secs(10), || reloads(rig.daemon()) > before),
        "no reload within 10 s:\n{}",
        rig.daemon().stderr_text()
    );
    let ua = UdpUa::new(rig.daemon().addr("udp", false));
    ua.send(invite(ROUTED, &ua, 2).as_bytes());
    let status = ua
        .recv_final(ANSWER_WAIT)
        .unwrap_or_else(|| panic!("no final answer; vpbx:\n{}", rig.daemon().stderr_text()))
        .status
        .as_u16();
    assert_eq!(
        status,
        480,
        "new calls see the reloaded (disabled) number; vpbx:\n{}",
        rig.daemon().stderr_text()
    );

    // The call routed before the reload is still up on both legs.
    caller.send(dialog.request(&caller, "BYE", 2).as_bytes());
    let bye = recv_final_to(&caller, "BYE", CALL_WAIT).expect("an answer to the BYE");
    assert_eq!(bye.status.as_u16(), 200);
    wait_ok("callee (BYEd after the reload)", uas);
    let cdrs = rig.stop();
    let answered: Vec<&Value> = cdrs.iter().filter(|c| c["reason"] == "answered").collect();
    assert_eq!(answered.len(), 1, "{cdrs:#?}");
    assert!(cdrs
        .iter()
        .any(|c| c["reason"] == "rejected" && c["status"] == 480));
}

#[test]
fn bye_from_callee_reaches_a_tcp_caller_over_its_connection() {
    need_sipp!();
    let mut rig = Rig::start(&["udp:127.0.0.1:0", "tcp:127.0.0.1:0"], Setup::default());
    let uas = rig.uas("uas_answer_bye.xml", "u1", 2, &[]);
    let uac = rig.uac("uac_callee_bye.xml", ROUTED, "tcp", 2, &[]);
    assert_ok("TCP caller", &uac);
    wait_ok("callee", uas);
    assert_cdrs(&rig.stop(), 2, "answered", 200);
}

/// A request of the test caller in its dialog with the daemon (`to_tag`:
/// the daemon's tag; empty for the INVITE).
fn caller_request(ua: &UdpUa, method: &str, seq: u32, to_tag: &str, sdp: bool) -> String {
    let local = ua.local();
    let server = ua.server;
    let to_tag = if to_tag.is_empty() {
        String::new()
    } else {
        format!(";tag={to_tag}")
    };
    let body = if sdp {
        format!("v=0\r\no=caller 1 {seq} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n")
    } else {
        String::new()
    };
    let content_type = if sdp {
        "Content-Type: application/sdp\r\n"
    } else {
        ""
    };
    format!(
        "{method} sip:{ROUTED}@{server} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bKri{seq}{method};rport\r\n\
         From: <sip:caller@{local}>;tag=ri-caller\r\n\
         To: <sip:{ROUTED}@{server}>{to_tag}\r\n\
         Call-ID: reinvite-retx@{local}\r\n\
         CSeq: {seq} {method}\r\n\
         Contact: <sip:caller@{local}>\r\n\
         Max-Forwards: 70\r\n\
         {content_type}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn reinvite_2xx_is_retransmitted_until_the_callers_ack() {
    need_sipp!();
    let mut rig = Rig::start(&["udp:127.0.0.1:0"], Setup::default());
    let uas = rig.uas("uas_reinvite.xml", "u1", 1, &[]);
    let ua = UdpUa::new(rig.daemon().addr("udp", false));
    ua.send(caller_request(&ua, "INVITE", 1, "", true).as_bytes());
    let ok = ua.recv_final(ANSWER_WAIT).expect("200 to the INVITE");
    assert_eq!(ok.status.as_u16(), 200);
    let tag = ok.to().unwrap().tag().unwrap().to_owned();
    ua.send(caller_request(&ua, "ACK", 1, &tag, false).as_bytes());

    ua.send(caller_request(&ua, "INVITE", 2, &tag, true).as_bytes());
    let first = ua.recv_final(ANSWER_WAIT).expect("200 to the re-INVITE");
    let sent_at = Instant::now();
    assert_eq!(first.status.as_u16(), 200);
    assert_eq!(first.cseq().unwrap().seq, 2);
    // Our ACK is "lost": the daemon sends its 2xx again after T1 (500 ms
    // in this config), then 2*T1 later.
    let mut again = Vec::new();
    while again.len() < 2 {
        let r = ua
            .recv_final(ANSWER_WAIT)
            .expect("the 2xx retransmitted while no ACK came");
        assert_eq!((r.status.as_u16(), r.cseq().unwrap().seq), (200, 2));
        assert_eq!(r.body, first.body);
        again.push(sent_at.elapsed());
    }
    assert!(again[0] >= Duration::from_millis(400), "{again:?}");
    assert!(
        again[1] - again[0] >= Duration::from_millis(800),
        "{again:?}"
    );
    ua.send(caller_request(&ua, "ACK", 2, &tag, false).as_bytes());
    // The next retransmission would come 4*T1 = 2 s later.
    assert!(
        ua.recv(Duration::from_millis(2500)).is_none(),
        "2xx retransmitted after the ACK"
    );
    // The callee got the relayed ACK (else its scenario fails) and the BYE.
    ua.send(caller_request(&ua, "BYE", 3, &tag, false).as_bytes());
    let bye_ok = ua.recv_final(ANSWER_WAIT).expect("200 to the BYE");
    assert_eq!(bye_ok.status.as_u16(), 200);
    wait_ok("callee", uas);
    assert_cdrs(&rig.stop(), 1, "answered", 200);
}

#[test]
fn a_cancel_or_merged_invite_after_the_callers_ack_is_matched_and_the_call_goes_on() {
    // After the caller's ACK of our 2xx its INVITE server transaction
    // stays Accepted until Timer L (RFC 6026 §7.1): a CANCEL matching it
    // gets 200, with the tag of the INVITE's response (RFC 3261 §9.2) and
    // no effect on the call; one matching no transaction gets 481
    // (torture.rs). (Session 10 briefly took the call out of the inbound
    // leg index at the ACK: this CANCEL got 481 and the merged INVITE
    // below became a new call.) Before the answer a
    // CANCEL ends the call (cancel_before_answer_gives_487_and_cancels_the_callee).
    need_sipp!();
    let mut rig = Rig::start(&["udp:127.0.0.1:0"], Setup::default());
    let uas = rig.uas("uas_answer.xml", "u1", 1, &[]);
    let ua = UdpUa::new(rig.daemon().addr("udp", false));
    let invite = caller_request(&ua, "INVITE", 1, "", true);
    ua.send(invite.as_bytes());
    let ok = ua.recv_final(ANSWER_WAIT).expect("200 to the INVITE");
    assert_eq!(ok.status.as_u16(), 200);
    let tag = ok.to().unwrap().tag().unwrap().to_owned();
    ua.send(caller_request(&ua, "ACK", 1, &tag, false).as_bytes());
    // The INVITE's CANCEL: its Request-URI, Via (branch), From, To
    // (without tag), Call-ID and CSeq number (RFC 3261 §9.1).
    let cancel = caller_request(&ua, "CANCEL", 1, "", false)
        .replace("branch=z9hG4bKri1CANCEL", "branch=z9hG4bKri1INVITE");
    ua.send(cancel.as_bytes());
    // (A retransmission of the 2xx that crossed the ACK is skipped.)
    let final_to = |method: Method| {
        std::iter::from_fn(|| ua.recv_final(ANSWER_WAIT))
            .find(|r| r.cseq().unwrap().method == method)
    };
    let cancel_ok = final_to(Method::Cancel).expect("a response to the CANCEL");
    assert_eq!(cancel_ok.status.as_u16(), 200);
    assert_eq!(cancel_ok.to().unwrap().tag(), Some(tag.as_str()));
    // A merged copy of the INVITE (same Call-ID, From tag and CSeq, another
    // branch, RFC 3261 §8.2.2.2) after the ACK is refused 482, not taken
    // for a new call.
    let merged = invite.replace("branch=z9hG4bKri1INVITE", "branch=z9hG4bKri1MERGED");
    ua.send(merged.as_bytes());
    let refused = std::iter::from_fn(|| ua.recv_final(ANSWER_WAIT))
        .find(|r| r.cseq().unwrap().method == Method::Invite && r.status.as_u16() != 200)
        .expect("a final response to the merged INVITE");
    assert_eq!(refused.status.as_u16(), 482);
    // Its ACK (RFC 3261 §17.1.1.3: the INVITE's branch, the 482's To tag).
    let refused_tag = refused.to().unwrap().tag().unwrap().to_owned();
    let ack = caller_request(&ua, "ACK", 1, &refused_tag, false)
        .replace("branch=z9hG4bKri1ACK", "branch=z9hG4bKri1MERGED");
    ua.send(ack.as_bytes());
    // The call is untouched: the caller's BYE ends it.
    ua.send(caller_request(&ua, "BYE", 2, &tag, false).as_bytes());
    assert_eq!(final_to(Method::Bye).map(|r| r.status.as_u16()), Some(200));
    wait_ok("callee", uas);
    // No call and no leg index entry left (checked by `stop`); the call's
    // CDR and the refused copy's.
    assert_eq!(
        cdr_ends(&rig.stop()),
        [("answered".to_owned(), 200), ("rejected".to_owned(), 482)]
    );
}

/// The value of `name=` in the daemon's `transaction counters:` exit line.
pub(crate) fn transaction_counter(rig: &Rig, name: &str) -> u64 {
    let line = rig
        .exit_stdout
        .iter()
        .find_map(|l| l.strip_prefix("transaction counters: "))
        .unwrap_or_else(|| panic!("no transaction counters in {:?}", rig.exit_stdout));
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        .parse()
        .unwrap()
}

#[test]
fn a_response_whose_via_is_not_ours_is_discarded() {
    // RFC 3261 §18.1.2. The callee is the test UA on the routed port: it
    // answers our INVITE with a 200 whose top Via names another port, then
    // another host (same branch, so it would match the transaction), and
    // only then with a 486 carrying our Via as it came.
    let mut rig = Rig::start(&["udp:127.0.0.1:0"], Setup::default());
    let server = rig.daemon().addr("udp", false);
    let callee = UdpUa::bind(SocketAddr::from(([127, 0, 0, 1], rig.uas_port)), server);
    let caller = UdpUa::new(server);
    caller.send(invite(ROUTED, &caller, 1).as_bytes());
    let (req, from) = callee
        .recv_request(CALL_WAIT)
        .expect("the INVITE reaches the callee");
    assert_eq!(req.method.as_str(), "INVITE");
    let ours = std::str::from_utf8(req.headers.get(&HeaderName::Via).unwrap())
        .unwrap()
        .to_owned();
    let via = req.top_via().unwrap();
    let branch = via.branch().unwrap();
    let port = via.port.unwrap();
    let contact = format!("Contact: <sip:callee@{}>\r\n", callee.local());
    for forged in [
        format!("SIP/2.0/UDP 127.0.0.1:{};branch={branch};rport", port + 1),
        format!("SIP/2.0/UDP 192.0.2.1:{port};branch={branch};rport"),
    ] {
        let ok = response_to(&req, "200 OK", &forged, "callee1", &contact);
        callee.send_to(ok.as_bytes(), from);
    }
    let busy = response_to(&req, "486 Busy Here", &ours, "callee1", "");
    callee.send_to(busy.as_bytes(), from);
    let r = caller.recv_final(CALL_WAIT).expect("a final answer");
    assert_eq!(
        r.status.as_u16(),
        486,
        "the forged 200s were taken for answers; vpbx:\n{}",
        rig.daemon().stderr_text()
    );
    let cdrs = rig.stop();
    assert_cdrs(&cdrs, 1, "busy", 486);
    assert_eq!(transaction_counter(&rig, "foreign_sent_by"), 2);
}

#[test]
fn a_stop_after_an_overload_keeps_to_the_drain_time() {
    // Calls an overload leaves ringing (the callee never answers) are still
    // up when the drain time is over: the stop must not take longer than
    // the drain time plus recording them, however many there are.
    let calls = 1000;
    let drain = Duration::from_secs(1);
    let mut rig = Rig::start(
        &["udp:127.0.0.1:0"],
        Setup {
            drain_time: "1s",
            // No call may end by itself while a loaded box works them off
            // (the callee sends nothing: Timer B ends them after 32 s).
            dial_timeout: "100s",
            ..Setup::default()
        },
    );
    // The callee: a socket that never reads (its INVITEs are retransmitted).
    let _callee = UdpSocket::bind(("127.0.0.1", rig.uas_port)).unwrap();
    let caller = UdpUa::new(rig.daemon().addr("udp", false));
    // Room for the 100 Tryings of every call: they come within
    // milliseconds of each other, 200 ms after the INVITEs, and one lost
    // would leave this test waiting for Timer B (a default buffer of ~200
    // KiB holds fewer than a hundred while this thread is descheduled).
    // Forced past `net.core.rmem_max` when the tests run as root (CI), which
    // on a fresh machine caps SO_RCVBUF at ~208 KiB.
    if rustix::net::sockopt::set_socket_recv_buffer_size_force(&caller.sock, 8 << 20).is_err() {
        socket2::SockRef::from(&caller.sock)
            .set_recv_buffer_size(8 << 20)
            .unwrap();
    }
    for i in 0..calls {
        caller.send(invite(ROUTED, &caller, i).as_bytes());
    }
    // Every call is in the daemon once it answered it (100 Trying).
    let mut answered = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered.len() < calls as usize {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = caller
            .recv(left)
            .unwrap_or_else(|| panic!("only {} of {calls} calls answered", answered.len()));
        assert!(r.status.is_provisional(), "{}", r.status);
        answered.insert(r.call_id().unwrap().to_string());
    }
    let stopped = Instant::now();
    rig.daemon().signal_term();
    let cdrs = rig.wait_stopped();
    let took = stopped.elapsed();
    eprintln!("stop took {took:?}");
    // A loaded debug build records a few thousand calls a second.
    assert!(
        took < drain + Duration::from_secs(4),
        "the stop took {took:?} with a drain time of {drain:?}"
    );
    assert_eq!(cdrs.len(), calls as usize, "one CDR per call");
    assert!(cdrs.iter().all(|c| c["status"] == 503), "{:#?}", &cdrs[..3]);
}

/// Keep-alives (CRLF) queued at the daemon ahead of the callee's answer in
/// [`answer_while_stopped`]: more than one receive batch (32 datagrams),
/// so the receive loop hands the runtime over to the due timer (it yields
/// after a full batch) before it has read the answer. Without them the
/// receive loop, woken in the same turn of the runtime as the timer and
/// before it, may read the answer first: there is then nothing to hold
/// back, and the test would pass without the hold too.
const BACKLOG: usize = 100;

/// Sends `signal` to the daemon.
pub(crate) fn signal(daemon: &Daemon, signal: rustix::process::Signal) {
    let raw = i32::try_from(daemon.pid()).unwrap();
    rustix::process::kill_process(rustix::process::Pid::from_raw(raw).unwrap(), signal).unwrap();
}

/// Waits until every thread of the daemon is stopped (SIGSTOP taken).
/// Polls every millisecond, not at [`wait_until`]'s 50 ms: the callers
/// take the time of return as the time of the stop, and a stop seen up to
/// 50 ms (more on a loaded machine) after it happened counted as late
/// against their `t1 / 2` = 100 ms.
pub(crate) fn wait_until_stopped(daemon: &Daemon) {
    let tasks = format!("/proc/{}/task", daemon.pid());
    let all_stopped = || {
        std::fs::read_dir(&tasks).unwrap().all(|task| {
            let stat = std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap();
            // `pid (comm) state ...`; comm may hold spaces and parentheses.
            let state = stat.rsplit_once(')').unwrap().1.trim_start();
            state.starts_with(['T', 't'])
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !all_stopped() {
        assert!(
            Instant::now() < deadline,
            "vpbx not stopped within 5 s of SIGSTOP"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// Gives `answer` (the callee's answer to a request the daemon sent at
/// about `received`) to the daemon while it is stopped, behind
/// [`BACKLOG`] keep-alives, and keeps it stopped until the request's
/// first retransmission (T1 after its send) is `t1 / 2` overdue. True
/// when the stop came early enough to say something (within `t1 / 2` of
/// `received`, and no retransmission had come yet): the retransmission
/// timer then fires when the daemon resumes, with the answer queued
/// unread.
fn answer_while_stopped(
    daemon: &Daemon,
    callee: &UdpUa,
    answer: &str,
    to: SocketAddr,
    received: Instant,
    t1: Duration,
) -> bool {
    let resent = || callee.recv_request(Duration::from_millis(1)).is_some();
    queue_while_stopped(daemon, callee, answer, to, (received, t1), resent)
}

/// [`answer_while_stopped`] for any message `from` sends (e.g. the
/// caller's ACK of a final response that reached it at `received`);
/// `resent` says whether a retransmission came before the stop.
fn queue_while_stopped(
    daemon: &Daemon,
    from: &UdpUa,
    message: &str,
    to: SocketAddr,
    (received, t1): (Instant, Duration),
    resent: impl FnOnce() -> bool,
) -> bool {
    signal(daemon, rustix::process::Signal::STOP);
    wait_until_stopped(daemon);
    // Whatever the daemon sent before it stopped has arrived (loopback).
    let early = received.elapsed() < t1 / 2;
    let resent = resent();
    let backlog = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..BACKLOG {
        backlog.send_to(b"\r\n\r\n", to).unwrap();
    }
    from.send_to(message.as_bytes(), to);
    thread::sleep((received + t1 + t1 / 2).saturating_duration_since(Instant::now()));
    signal(daemon, rustix::process::Signal::CONT);
    early && !resent
}

/// The requests the callee gets within `wait`: none may be another copy
/// of `method` (a retransmission); returns the methods that came.
fn no_retransmission_of(callee: &UdpUa, method: &str, wait: Duration, rig: &Rig) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut came = Vec::new();
    while let Some((req, _)) =
        callee.recv_request(deadline.saturating_duration_since(Instant::now()))
    {
        let got = req.method.as_str().to_owned();
        assert_ne!(
            got,
            method,
            "the {method} was retransmitted while its answer waited unread; vpbx:\n{}",
            rig.daemon().stderr_text()
        );
        came.push(got);
    }
    came
}

/// A 200 to an in-dialog request of the daemon (its To has our tag).
pub(crate) fn in_dialog_ok(req: &vpbx::sip::Request) -> String {
    let header = |name| {
        let v = req.headers.get(&name).expect("header in the request");
        std::str::from_utf8(v).unwrap().trim().to_owned()
    };
    format!(
        "SIP/2.0 200 OK\r\n\
         Via: {via}\r\n\
         From: {from}\r\n\
         To: {to}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq}\r\n\
         Content-Length: 0\r\n\r\n",
        via = header(HeaderName::Via),
        from = header(HeaderName::From),
        to = header(HeaderName::To),
        call_id = header(HeaderName::CallId),
        cseq = header(HeaderName::CSeq),
    )
}

#[test]
fn a_retransmission_due_while_its_answer_is_queued_unread_waits_for_the_read() {
    // docs/architecture.md, "A retransmission waits until what arrived
    // since its send is read". The test UA is the callee. When the
    // daemon's INVITE (then its BYE) arrives, the daemon is stopped
    // (SIGSTOP), the callee's 200 is queued at its socket behind more
    // than a receive batch of keep-alives, and the daemon is resumed once
    // Timer A (Timer E) is overdue: the timer fires before the receive
    // loop has read the 200, and must not resend the request. Without the
    // hold the request goes out again at once.
    let t1 = Duration::from_millis(200);
    let mut rig = Rig::start(
        &["udp:127.0.0.1:0"],
        Setup {
            t1: "200ms",
            ..Setup::default()
        },
    );
    let server = rig.daemon().addr("udp", false);
    let callee = UdpUa::bind(SocketAddr::from(([127, 0, 0, 1], rig.uas_port)), server);
    let caller = UdpUa::new(server);
    let contact = format!("Contact: <sip:callee@{}>\r\n", callee.local());
    // Long enough for a held retransmission to go out (at most T1 late).
    let watch = t1 + t1 / 2;
    let calls = 3;
    let mut telling = 0u32;
    for i in 1..=calls {
        caller.send(invite(ROUTED, &caller, i).as_bytes());
        let (req, from) = callee
            .recv_request(CALL_WAIT)
            .expect("the INVITE reaches the callee");
        let received = Instant::now();
        assert_eq!(req.method.as_str(), "INVITE");
        let via = std::str::from_utf8(req.headers.get(&HeaderName::Via).unwrap())
            .unwrap()
            .to_owned();
        let ok = response_to(&req, "200 OK", &via, &format!("callee{i}"), &contact);
        if answer_while_stopped(rig.daemon(), &callee, &ok, from, received, t1) {
            telling += 1;
        }
        let came = no_retransmission_of(&callee, "INVITE", watch, &rig);
        assert!(came.is_empty(), "{came:?}");
        let ok = recv_final_to(&caller, "INVITE", CALL_WAIT).expect("the caller's 200");
        assert_eq!(ok.status.as_u16(), 200);
        let dialog = CallerDialog::of(&ok, i);
        // The caller's ACK is relayed to the callee.
        caller.send(dialog.request(&caller, "ACK", 1).as_bytes());
        let (ack, _) = callee
            .recv_request(CALL_WAIT)
            .expect("the ACK reaches the callee");
        assert_eq!(ack.method.as_str(), "ACK");
        caller.send(dialog.request(&caller, "BYE", 2).as_bytes());

        let (bye, from) = callee
            .recv_request(CALL_WAIT)
            .expect("the BYE reaches the callee");
        let received = Instant::now();
        assert_eq!(bye.method.as_str(), "BYE");
        if answer_while_stopped(
            rig.daemon(),
            &callee,
            &in_dialog_ok(&bye),
            from,
            received,
            t1,
        ) {
            telling += 1;
        }
        let came = no_retransmission_of(&callee, "BYE", watch, &rig);
        assert!(came.is_empty(), "{came:?}");
        let ok = recv_final_to(&caller, "BYE", CALL_WAIT).expect("the caller's 200 to its BYE");
        assert_eq!(ok.status.as_u16(), 200);
    }
    // A stop that came late (a loaded machine) says nothing either way.
    assert!(
        telling >= 4,
        "only {telling} of {} stops in time",
        2 * calls
    );
    let cdrs = rig.stop();
    assert_cdrs(&cdrs, calls as usize, "answered", 200);
    // Each timer found the 200 queued unread and held the request back.
    let deferred = transaction_counter(&rig, "request_retransmissions_deferred");
    eprintln!("{telling} stops in time, {deferred} deferrals");
    assert!(
        deferred >= u64::from(telling),
        "{deferred} deferrals for {telling} stops"
    );
}

/// The ACK of a non-2xx final response to [`invite`] number `i` (RFC 3261
/// §17.1.1.3: the INVITE's branch, the response's To).
fn ack_of_failure(number: &str, ua: &UdpUa, i: u32, to: &str) -> String {
    let local = ua.local();
    format!(
        "ACK sip:{number}@{server} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bKov{i};rport\r\n\
         From: <sip:load@{local}>;tag=ov{i}\r\n\
         To: {to}\r\n\
         Call-ID: overload-{i}@{local}\r\n\
         CSeq: 1 ACK\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n",
        server = ua.server
    )
}

/// Whatever reaches the caller within `wait`: nothing may (another copy
/// of the final response it got would be a retransmission).
fn no_response_to_caller(caller: &UdpUa, wait: Duration, what: &str, rig: &Rig) {
    if let Some(r) = caller.recv(wait) {
        panic!(
            "{what}: {} {} retransmitted while the ACK waited unread; vpbx:\n{}",
            r.status.as_u16(),
            r.cseq().unwrap().method.as_str(),
            rig.daemon().stderr_text()
        );
    }
}

#[test]
fn a_final_response_retransmission_due_while_the_ack_is_queued_unread_waits_for_the_read() {
    // The server side of docs/architecture.md, "A retransmission waits
    // until what arrived since its send is read": Timer G of the caller's
    // INVITE server transaction (the callee's 486 relayed), and the
    // B2BUA's retransmission of its 2xx until the caller's ACK. The test
    // UA is the caller and the callee. When the final response reaches
    // the caller, the daemon is stopped (SIGSTOP), the caller's ACK is
    // queued at its socket behind more than a receive batch of
    // keep-alives, and the daemon is resumed once the retransmission (T1
    // after the send) is overdue: it must not go out. Without the hold it
    // goes out at once.
    let t1 = Duration::from_millis(200);
    let mut rig = Rig::start(
        &["udp:127.0.0.1:0"],
        Setup {
            t1: "200ms",
            ..Setup::default()
        },
    );
    let server = rig.daemon().addr("udp", false);
    let callee = UdpUa::bind(SocketAddr::from(([127, 0, 0, 1], rig.uas_port)), server);
    let caller = UdpUa::new(server);
    let contact = format!("Contact: <sip:callee@{}>\r\n", callee.local());
    // Long enough for a held retransmission to go out (at most T1 late).
    let watch = t1 + t1 / 2;
    let calls = 3;
    let mut telling = 0u32;
    for i in 1..=calls {
        // Busy: the 486 to the caller is retransmitted by Timer G.
        let n = 2 * i - 1;
        caller.send(invite(ROUTED, &caller, n).as_bytes());
        let (req, from) = callee
            .recv_request(CALL_WAIT)
            .expect("the INVITE reaches the callee");
        assert_eq!(req.method.as_str(), "INVITE");
        let via = std::str::from_utf8(req.headers.get(&HeaderName::Via).unwrap())
            .unwrap()
            .to_owned();
        let busy = response_to(&req, "486 Busy Here", &via, &format!("callee{n}"), "");
        callee.send_to(busy.as_bytes(), from);
        let (ack, _) = callee
            .recv_request(CALL_WAIT)
            .expect("the daemon ACKs the callee's 486");
        assert_eq!(ack.method.as_str(), "ACK");
        let r = recv_final_to(&caller, "INVITE", CALL_WAIT).expect("the caller's 486");
        let received = Instant::now();
        assert_eq!(r.status.as_u16(), 486);
        let to = std::str::from_utf8(r.headers.get(&HeaderName::To).unwrap())
            .unwrap()
            .to_owned();
        let ack = ack_of_failure(ROUTED, &caller, n, &to);
        let resent = || caller.recv(Duration::from_millis(1)).is_some();
        if queue_while_stopped(rig.daemon(), &caller, &ack, server, (received, t1), resent) {
            telling += 1;
        }
        no_response_to_caller(&caller, watch, "Timer G", &rig);

        // Answered: the B2BUA retransmits its 2xx until the caller's ACK.
        let n = 2 * i;
        caller.send(invite(ROUTED, &caller, n).as_bytes());
        let (req, from) = callee
            .recv_request(CALL_WAIT)
            .expect("the INVITE reaches the callee");
        assert_eq!(req.method.as_str(), "INVITE");
        let via = std::str::from_utf8(req.headers.get(&HeaderName::Via).unwrap())
            .unwrap()
            .to_owned();
        let ok = response_to(&req, "200 OK", &via, &format!("callee{n}"), &contact);
        callee.send_to(ok.as_bytes(), from);
        let ok = recv_final_to(&caller, "INVITE", CALL_WAIT).expect("the caller's 200");
        let received = Instant::now();
        assert_eq!(ok.status.as_u16(), 200);
        let dialog = CallerDialog::of(&ok, n);
        let ack = dialog.request(&caller, "ACK", 1);
        let resent = || caller.recv(Duration::from_millis(1)).is_some();
        if queue_while_stopped(rig.daemon(), &caller, &ack, server, (received, t1), resent) {
            telling += 1;
        }
        no_response_to_caller(&caller, watch, "2xx", &rig);
        // The ACK is relayed to the callee; the call ends with the BYE.
        let (ack, _) = callee
            .recv_request(CALL_WAIT)
            .expect("the ACK reaches the callee");
        assert_eq!(ack.method.as_str(), "ACK");
        caller.send(dialog.request(&caller, "BYE", 2).as_bytes());
        let (bye, from) = callee
            .recv_request(CALL_WAIT)
            .expect("the BYE reaches the callee");
        assert_eq!(bye.method.as_str(), "BYE");
        callee.send_to(in_dialog_ok(&bye).as_bytes(), from);
        let ok = recv_final_to(&caller, "BYE", CALL_WAIT).expect("the caller's 200 to its BYE");
        assert_eq!(ok.status.as_u16(), 200);
    }
    // A stop that came late (a loaded machine) says nothing either way.
    assert!(
        telling >= 4,
        "only {telling} of {} stops in time",
        2 * calls
    );
    let cdrs = rig.stop();
    assert_eq!(cdrs.len(), 2 * calls as usize, "{cdrs:#?}");
    for pair in cdrs.chunks(2) {
        assert_eq!(
            (&pair[0]["reason"], &pair[0]["status"]),
            (&"busy".into(), &486.into())
        );
        assert_eq!(
            (&pair[1]["reason"], &pair[1]["status"]),
            (&"answered".into(), &200.into())
        );
    }
    // Each retransmission found the ACK queued unread and was held back.
    let deferred = transaction_counter(&rig, "response_retransmissions_deferred");
    eprintln!("{telling} stops in time, {deferred} deferrals");
    assert!(
        deferred >= u64::from(telling),
        "{deferred} deferrals for {telling} stops"
    );
}
