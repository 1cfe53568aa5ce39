//! A TCP callee whose connect hangs (its accept queue full: the kernel
//! drops the SYNs) with the real binary: the B2BUA does not wait for that
//! connect, so calls to every other destination go on at their usual pace;
//! the calls to the dead callee wait for `[limits] tcp_connect_timeout`
//! and then end as a transport error does (RFC 3261 §8.1.3.1, §17.1.4: the
//! number's `on_failure`).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use vpbx::sip::HeaderName;

use crate::calls::{
    cdr_ends, free_port, invite, recv_final_to, CallerDialog, Rig, Setup, CALL_WAIT, ROUTED,
};
use crate::ua::{response_to, UdpUa};

/// A number routed to the dead PBX.
const DEAD: &str = "+74957654321";
/// The daemon's `[limits] tcp_connect_timeout` here ([`LIMITS`]): twice
/// the default, so that the calls to the live PBX, which must all end
/// before it, have room on a loaded machine, and so that the dead PBX's
/// calls ending no sooner shows the setting is used.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const LIMITS: &str = "tcp_connect_timeout = \"10s\"\n";
/// How long a call to the live PBX may take, INVITE to 200 at the caller:
/// well short of [`CONNECT_TIMEOUT`], which a call held behind the connect
/// would take.
const PROMPT: Duration = Duration::from_secs(2);

/// A listener whose accept queue holds one connection (backlog 0), filled:
/// connects to it hang (dropped SYNs, sent again 1 s later and more; see
/// tests/it/lanes.rs).
fn full_listener(port: u16) -> (TcpListener, TcpStream) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_reuse_address(true).unwrap();
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    sock.listen(0).unwrap();
    let listener: TcpListener = sock.into();
    let queued = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    (listener, queued)
}

fn header(r: &vpbx::sip::Request, name: HeaderName) -> String {
    std::str::from_utf8(r.headers.get(&name).expect("header in the request"))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn a_tcp_callee_whose_connect_hangs_does_not_delay_calls_to_others() {
    let dead_port = free_port();
    let mut rig = Rig::start(
        &["udp:127.0.0.1:0", "tcp:127.0.0.1:0"],
        Setup {
            pbx_extra: format!(
                "[[external]]\nid = \"dead\"\nuri = \"sip:127.0.0.1:{dead_port}\"\n\
                 transport = \"tcp\"\ndial_timeout = \"30s\"\n\
                 [[number]]\nnumber = \"{DEAD}\"\nforward = \"external:dead\"\n\
                 on_failure = \"hangup\"\n"
            ),
            limits: LIMITS,
            ..Setup::default()
        },
    );
    let (listener, _queued) = full_listener(dead_port);
    let server = rig.daemon().addr("udp", false);
    // The live PBX: a UDP UA on the routed port.
    let callee = UdpUa::bind(SocketAddr::from(([127, 0, 0, 1], rig.uas_port)), server);
    let contact = format!("Contact: <sip:callee@{}>\r\n", callee.local());

    // Two calls to the dead PBX: the first opens the connection, the second
    // is queued behind it.
    let dead_caller = UdpUa::new(server);
    let dialed = Instant::now();
    dead_caller.send(invite(DEAD, &dead_caller, 1).as_bytes());
    dead_caller.send(invite(DEAD, &dead_caller, 2).as_bytes());

    // Meanwhile, calls to the live PBX are answered at once.
    let caller = UdpUa::new(server);
    let mut live = Vec::new();
    for i in 11..=13 {
        let sent = Instant::now();
        caller.send(invite(ROUTED, &caller, i).as_bytes());
        let (req, from) = callee
            .recv_request(CALL_WAIT)
            .expect("the INVITE reaches the live PBX");
        assert_eq!(req.method.as_str(), "INVITE");
        let via = header(&req, HeaderName::Via);
        let ok = response_to(&req, "200 OK", &via, &format!("callee{i}"), &contact);
        callee.send_to(ok.as_bytes(), from);
        let ok = recv_final_to(&caller, "INVITE", CALL_WAIT).expect("the caller's 200");
        assert_eq!(ok.status.as_u16(), 200);
        live.push(sent.elapsed());
        // Hung up at once: ACK and BYE reach the live PBX.
        let dialog = CallerDialog::of(&ok, i);
        caller.send(dialog.request(&caller, "ACK", 1).as_bytes());
        caller.send(dialog.request(&caller, "BYE", 2).as_bytes());
        for method in ["ACK", "BYE"] {
            let (req, from) = callee
                .recv_request(CALL_WAIT)
                .unwrap_or_else(|| panic!("the {method} reaches the live PBX"));
            assert_eq!(req.method.as_str(), method);
            if method == "BYE" {
                let via = header(&req, HeaderName::Via);
                let ok = response_to(&req, "200 OK", &via, &format!("callee{i}"), "");
                callee.send_to(ok.as_bytes(), from);
            }
        }
        let ok = recv_final_to(&caller, "BYE", CALL_WAIT).expect("the BYE's 200");
        assert_eq!(ok.status.as_u16(), 200);
    }
    assert!(
        live.iter().all(|took| *took < PROMPT),
        "calls to the live PBX took {live:?} while the dead PBX's connect hung"
    );
    assert!(
        dialed.elapsed() < CONNECT_TIMEOUT,
        "the live calls took until the connect gave up"
    );

    // The dead PBX's calls end when the connect gives up, not before.
    for _ in 1..=2 {
        let r = recv_final_to(&dead_caller, "INVITE", CONNECT_TIMEOUT + CALL_WAIT)
            .expect("the dead PBX's calls end");
        let after = dialed.elapsed();
        assert!(
            after >= CONNECT_TIMEOUT - Duration::from_millis(500),
            "a dead PBX's call ended after {after:?}: {r:?}"
        );
        // The callee's 408 (§8.1.3.1), told the caller as unavailable.
        assert_eq!(r.status.as_u16(), 480, "{r:?}");
    }
    drop(listener);
    let cdrs = rig.stop();
    let ends = cdr_ends(&cdrs);
    eprintln!("live calls: {live:?}");
    assert_eq!(
        ends,
        [
            ("answered".to_owned(), 200),
            ("answered".to_owned(), 200),
            ("answered".to_owned(), 200),
            ("unavailable".to_owned(), 480),
            ("unavailable".to_owned(), 480),
        ],
        "{cdrs:#?}"
    );
}
