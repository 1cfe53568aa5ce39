//! Transport behaviour of the real daemon: IPv6 listeners, TCP framing
//! across writes, size limits, garbage, and RFC 3261 §18.2 / RFC 3581
//! response routing.

use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::Duration;

use crate::daemon::Daemon;
use crate::ua::{options, TcpEvent, TcpUa, UdpUa, ANSWER_WAIT, SILENCE_WAIT};

fn ipv6_loopback_available() -> bool {
    UdpSocket::bind("[::1]:0").is_ok()
}

#[test]
fn ipv6_listeners_answer_options_over_udp_and_tcp() {
    if !ipv6_loopback_available() {
        eprintln!("SKIPPED ipv6_listeners_answer_options_over_udp_and_tcp: no ::1 on this machine");
        return;
    }
    let daemon = Daemon::start(&["udp:[::1]:0", "tcp:[::1]:0"]);
    let udp = daemon.addr("udp", true);
    let tcp = daemon.addr("tcp", true);

    let ua = UdpUa::new(udp);
    ua.send(options(udp, "UDP", ua.local(), "v6udp").as_bytes());
    let r = ua.recv_final(ANSWER_WAIT).expect("answer over UDP/IPv6");
    assert_eq!(r.status.as_u16(), 200);

    let mut tua = TcpUa::connect(tcp);
    let local = tua.stream.local_addr().unwrap();
    tua.send(options(tcp, "TCP", local, "v6tcp").as_bytes());
    match tua.next_final(ANSWER_WAIT) {
        TcpEvent::Response(r) => assert_eq!(r.status.as_u16(), 200),
        other => panic!("no answer over TCP/IPv6: {other:?}"),
    }
}

#[test]
fn options_answer_lists_allow_accept_supported() {
    let daemon = Daemon::start(&["udp:127.0.0.1:0"]);
    let server = daemon.addr("udp", false);
    let ua = UdpUa::new(server);
    ua.send(options(server, "UDP", ua.local(), "caps").as_bytes());
    let r = ua.recv_final(ANSWER_WAIT).expect("answer");
    assert_eq!(r.status.as_u16(), 200);
    let allow: Vec<String> = r.allow().unwrap().iter().map(|m| m.to_string()).collect();
    for m in ["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"] {
        assert!(allow.iter().any(|a| a == m), "Allow {allow:?} lacks {m}");
    }
    let accept = r
        .headers
        .get(&vpbx::sip::HeaderName::Accept)
        .expect("Accept header");
    assert!(String::from_utf8_lossy(accept).contains("application/sdp"));
    assert!(
        r.headers.get(&vpbx::sip::HeaderName::Supported).is_some(),
        "Supported header"
    );
    assert!(
        r.to().unwrap().tag().is_some(),
        "To tag added (RFC 3261 §8.2.6.2)"
    );
}

#[test]
fn tcp_message_split_over_several_writes_is_reassembled() {
    let daemon = Daemon::start(&["tcp:127.0.0.1:0"]);
    let server = daemon.addr("tcp", false);
    let mut ua = TcpUa::connect(server);
    let local = ua.stream.local_addr().unwrap();
    let msg = options(server, "TCP", local, "split");
    let bytes = msg.as_bytes();
    // Cut inside the start line, inside a header, and inside the final CRLFCRLF.
    let cuts = [5, 60, bytes.len() - 2];
    let mut start = 0;
    for cut in cuts {
        ua.send(&bytes[start..cut]);
        thread::sleep(Duration::from_millis(30));
        start = cut;
    }
    assert!(
        matches!(ua.next(Duration::from_millis(100)), TcpEvent::Silence),
        "answered before the message was complete"
    );
    ua.send(&bytes[start..]);
    match ua.next_final(ANSWER_WAIT) {
        TcpEvent::Response(r) => {
            assert_eq!(r.status.as_u16(), 200);
            assert_eq!(r.call_id().unwrap().to_string(), "split@test");
        }
        other => panic!("no answer: {other:?}"),
    }
}

#[test]
fn tcp_several_messages_in_one_write_are_all_answered_in_order() {
    let daemon = Daemon::start(&["tcp:127.0.0.1:0"]);
    let server = daemon.addr("tcp", false);
    let mut ua = TcpUa::connect(server);
    let local = ua.stream.local_addr().unwrap();
    let tags = ["m1", "m2", "m3"];
    let all: String = tags
        .iter()
        .map(|t| options(server, "TCP", local, t))
        .collect();
    ua.send(all.as_bytes());
    for tag in tags {
        match ua.next_final(ANSWER_WAIT) {
            TcpEvent::Response(r) => {
                assert_eq!(r.status.as_u16(), 200);
                assert_eq!(r.call_id().unwrap().to_string(), format!("{tag}@test"));
            }
            other => panic!("no answer for {tag}: {other:?}"),
        }
    }
}

#[test]
fn tcp_oversize_message_is_refused_and_the_connection_closed() {
    let daemon = Daemon::start(&["tcp:127.0.0.1:0"]);
    let server = daemon.addr("tcp", false);
    let mut ua = TcpUa::connect(server);
    let local = ua.stream.local_addr().unwrap();
    let msg = options(server, "TCP", local, "big");
    let pad = "a".repeat(70_000);
    let big = msg.replacen(
        "Max-Forwards: 70\r\n",
        &format!("Max-Forwards: 70\r\nX-Pad: {pad}\r\n"),
        1,
    );
    // The daemon may close while we are still writing; that is an answer too.
    let _ = std::io::Write::write_all(&mut ua.stream, big.as_bytes());
    let mut answered = None;
    loop {
        match ua.next(ANSWER_WAIT) {
            TcpEvent::Response(r) => answered = Some(r.status.as_u16()),
            TcpEvent::Closed => break,
            TcpEvent::Silence => panic!("oversize message neither refused nor closed"),
        }
    }
    if let Some(status) = answered {
        assert!(matches!(status, 400 | 513), "oversize answered {status}");
    }
}

#[test]
fn garbage_datagrams_are_dropped_and_counted() {
    let daemon = Daemon::start(&["udp:127.0.0.1:0"]);
    let server = daemon.addr("udp", false);
    let ua = UdpUa::new(server);
    for junk in [
        &b"hello there\r\n\r\n"[..],
        b"\x00\x01\x02\xff",
        b"SIP/2.0 banana\r\n\r\n",
    ] {
        ua.send(junk);
    }
    assert!(ua.recv(SILENCE_WAIT).is_none(), "garbage was answered");
    // The daemon still works after the garbage.
    ua.send(options(server, "UDP", ua.local(), "after").as_bytes());
    assert_eq!(
        ua.recv_final(ANSWER_WAIT).expect("answer").status.as_u16(),
        200
    );
    let (status, stdout) = daemon.terminate();
    assert!(
        status.success(),
        "vpbx exit status {status:?} after SIGTERM"
    );
    let counters = stdout
        .iter()
        .find(|l| l.starts_with("transport counters:"))
        .unwrap_or_else(|| panic!("no counters line in stdout: {stdout:?}"));
    assert!(counters.contains(" malformed_dropped=3"), "{counters}");
    assert!(counters.contains(" udp_datagrams_received=4"), "{counters}");
    // Only the OPTIONS got as far as the transaction layer.
    let tx = stdout
        .iter()
        .find(|l| l.starts_with("transaction counters:"))
        .unwrap_or_else(|| panic!("no transaction counters in stdout: {stdout:?}"));
    assert!(tx.contains(" server_transactions=1 "), "{tx}");
}

#[test]
fn rport_request_is_answered_to_the_source_port_with_received_and_rport() {
    let daemon = Daemon::start(&["udp:127.0.0.1:0"]);
    let server = daemon.addr("udp", false);
    let ua = UdpUa::new(server);
    // sent-by names a port nobody listens on; rport asks for the source port.
    let msg = options(server, "UDP", "127.0.0.1:9".parse().unwrap(), "rport").replacen(
        ";branch=",
        ";rport;branch=",
        1,
    );
    ua.send(msg.as_bytes());
    let r = ua
        .recv_final(ANSWER_WAIT)
        .expect("answer at the source port");
    let via = r.top_via().unwrap();
    assert_eq!(via.rport(), Some(Some(ua.local().port())), "{via}");
    assert_eq!(via.received(), Some("127.0.0.1"), "{via}");
}

#[test]
fn request_without_rport_is_answered_to_the_sent_by_port() {
    let daemon = Daemon::start(&["udp:127.0.0.1:0"]);
    let server = daemon.addr("udp", false);
    let sender = UdpUa::new(server);
    let listener = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent_by: SocketAddr = listener.local_addr().unwrap();
    // RFC 3261 §18.2.2: sent-by is the source IP, so no `received`, and the
    // response goes to the sent-by port, not to the port we sent from.
    sender.send(options(server, "UDP", sent_by, "sentby").as_bytes());
    let at_listener = UdpUa {
        sock: listener,
        server,
    };
    let r = at_listener
        .recv_final(ANSWER_WAIT)
        .expect("answer at the sent-by port");
    assert_eq!(r.status.as_u16(), 200);
    let via = r.top_via().unwrap();
    assert_eq!(via.received(), None, "{via}");
    assert!(
        sender.recv(SILENCE_WAIT).is_none(),
        "answer went to the source port"
    );
}

#[test]
fn a_full_stdout_does_not_stop_the_daemon() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let full = std::fs::OpenOptions::new().write(true).open("/dev/full");
    let Ok(full) = full else {
        eprintln!("SKIPPED a_full_stdout_does_not_stop_the_daemon: no /dev/full");
        return;
    };
    let workdir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vpbx"))
        .current_dir(workdir.path())
        .args(["run", "--listen", "udp:127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::from(full))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The port comes from the log line on stderr instead.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let server: SocketAddr = loop {
        let line = lines.next().expect("vpbx exited").unwrap();
        if line.contains("listening") {
            let addr = line.split("addr=").nth(1).expect("addr= in the log line");
            break addr.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    thread::spawn(move || lines.for_each(drop));
    let ua = UdpUa::new(server);
    ua.send(options(server, "UDP", ua.local(), "full").as_bytes());
    let answer = ua.recv_final(ANSWER_WAIT);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("vpbx did not exit after SIGTERM");
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(answer.expect("answer").status.as_u16(), 200);
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn the_daemon_runs_without_transparent_huge_pages() {
    let daemon = Daemon::start(&["udp:127.0.0.1:0"]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    // Linux reports the PR_SET_THP_DISABLE flag here (since 5.0).
    let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) else {
        eprintln!(
            "SKIPPED the_daemon_runs_without_transparent_huge_pages: no THP_enabled in /proc"
        );
        return;
    };
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
}

/// The `name=` value of the daemon's `wakeup coalescing:` exit line, or
/// `None` when it says `off`.
fn coalescing_counter(stdout: &[String], name: &str) -> Option<u64> {
    let line = stdout
        .iter()
        .find_map(|l| l.strip_prefix("wakeup coalescing: "))
        .unwrap_or_else(|| panic!("no wakeup coalescing line in stdout: {stdout:?}"));
    if line == "off" {
        return None;
    }
    let value = line
        .split(' ')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name} in {line}"));
    Some(value.parse().unwrap())
}

/// OPTIONS every ~200 µs (several per 1-ms interval): the daemon's thread
/// delays its parks (the default `wakeup_coalescing = "1ms"`), and every
/// request is still answered.
#[test]
fn dense_requests_are_coalesced_and_all_answered() {
    const REQUESTS: usize = 200;
    let daemon = Daemon::start(&["udp:127.0.0.1:0"]);
    let server = daemon.addr("udp", false);
    let ua = UdpUa::new(server);
    // Read while sending: 200 unread answers would overflow the test
    // socket's default receive buffer.
    let answered = thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut answered = 0;
            while let Some(r) = ua.recv_final(ANSWER_WAIT) {
                assert_eq!(r.status.as_u16(), 200);
                answered += 1;
                if answered == REQUESTS {
                    break;
                }
            }
            answered
        });
        for i in 0..REQUESTS {
            ua.send(options(server, "UDP", ua.local(), &format!("dense{i}")).as_bytes());
            thread::sleep(Duration::from_micros(200));
        }
        reader.join().unwrap()
    });
    assert_eq!(answered, REQUESTS);
    let (status, stdout) = daemon.terminate();
    assert!(status.success(), "vpbx exit status {status:?}");
    let pauses = coalescing_counter(&stdout, "pauses").expect("on by default");
    assert!(pauses > 0, "{stdout:?}");
}

#[test]
fn wakeup_coalescing_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pbx")).unwrap();
    std::fs::write(dir.path().join("vpbx.toml"), "wakeup_coalescing = \"0s\"\n").unwrap();
    let daemon = Daemon::start_with_config(dir.path(), &["udp:127.0.0.1:0"]);
    let server = daemon.addr("udp", false);
    let ua = UdpUa::new(server);
    ua.send(options(server, "UDP", ua.local(), "off").as_bytes());
    assert_eq!(
        ua.recv_final(ANSWER_WAIT).expect("answer").status.as_u16(),
        200
    );
    let (status, stdout) = daemon.terminate();
    assert!(status.success(), "vpbx exit status {status:?}");
    assert_eq!(coalescing_counter(&stdout, "pauses"), None);
}
