//! A whole B2BUA call driven in memory, shared by the B2BUA bench
//! (`benches/b2bua.rs`) and the allocation test
//! (`tests/b2bua_allocations.rs`), so both measure the same work.
//!
//! One call: the caller's INVITE goes through the transaction layer to
//! [`B2bua::handle`], which routes it and sends the outbound INVITE; the
//! callee answers 180 and 200 (with SDP) through the transaction layer's
//! client transaction; the B2BUA relays both; the caller ACKs (the B2BUA
//! ACKs the callee over a real UDP socket), the caller BYEs, the callee
//! answers the BYE 200 and the call ends with its CDR (written to
//! /dev/null by the real CDR writer). Messages between the layers and the
//! "network" are handed over in memory: the transaction layer's transport
//! is a recorder; the rig parses what it records to build the next
//! message (that parsing is counted too).

// The inputs are constant fixtures: a failure is a bug in the rig.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use vpbx::b2bua::admission;
use vpbx::b2bua::call::CallSettings;
use vpbx::b2bua::{B2bua, B2buaConfig};
use vpbx::cdr::{CdrWriter, WriterOptions};
use vpbx::config::{self, Source as ConfigSource};
use vpbx::routing::{Routes, RoutingTable};
use vpbx::sip::{
    parse_datagram, HeaderName, Limits, Message, Method, Request, Response, StatusCode,
};
use vpbx::transaction::{
    Incoming, LayerConfig, SendFuture, TransactionLayer, TransportSink, TrySend,
};
use vpbx::transport::{Destination, Protocol, Source, TransportConfig, Transports};

const NUMBER: &str = "+74951234567";

/// Records what the transaction layer sends.
#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<Bytes>>,
}

impl Recorder {
    fn take(&self) -> Vec<Bytes> {
        std::mem::take(&mut *self.sent.lock().unwrap())
    }
}

impl TransportSink for Recorder {
    fn send_request(&self, data: Bytes, _dest: Destination) -> SendFuture<'_> {
        self.sent.lock().unwrap().push(data);
        Box::pin(async { Ok(()) })
    }

    fn send_response(&self, data: Bytes, _source: Source, _dest: Destination) -> SendFuture<'_> {
        self.sent.lock().unwrap().push(data);
        Box::pin(async { Ok(()) })
    }

    // As the daemon's UDP transport does when the socket takes the datagram.
    fn try_send_request(&self, data: Bytes, _dest: Destination) -> TrySend {
        self.sent.lock().unwrap().push(data);
        TrySend::Done(Ok(()))
    }

    fn try_send_response(&self, data: Bytes, _source: Source, _dest: Destination) -> TrySend {
        self.sent.lock().unwrap().push(data);
        TrySend::Done(Ok(()))
    }
}

fn parse(bytes: &Bytes) -> Message {
    parse_datagram(bytes.clone(), &Limits::default()).unwrap()
}

/// The B2BUA with its transaction layer, a recording transport and the
/// CDR writer; [`Rig::call`] runs one call.
pub struct Rig {
    layer: TransactionLayer,
    incoming: mpsc::Receiver<Incoming>,
    b2bua: B2bua,
    sink: Arc<Recorder>,
    caller: Source,
    callee: Source,
    /// Keeps the callee's socket bound (the B2BUA's ACKs go there).
    _callee_socket: UdpSocket,
    _cdr: CdrWriter,
    next: u64,
}

const SDP: &str = "v=0\r\no=x 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n";

impl Rig {
    /// Sets everything up (inside a tokio runtime).
    pub async fn new() -> Rig {
        let callee_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let callee_addr = callee_socket.local_addr().unwrap();
        let pbx = format!(
            "id = \"bench\"\n\
             [[external]]\nid = \"office\"\nuri = \"sip:127.0.0.1:{}\"\ntransport = \"udp\"\n\
             [[number]]\nnumber = \"{NUMBER}\"\nforward = \"external:office\"\non_failure = \"hangup\"\n",
            callee_addr.port()
        );
        let config = config::load_sources(
            None,
            vec![ConfigSource {
                name: "bench.toml".into(),
                text: pbx,
            }],
        )
        .unwrap();
        let routes = Arc::new(Routes::new(RoutingTable::from_config(&config).unwrap()));
        let (transports, _inbound) = Transports::bind(
            &["udp:127.0.0.1:0".parse().unwrap()],
            TransportConfig::default(),
        )
        .await
        .unwrap();
        let local: SocketAddr = transports.local_addrs()[0].addr;
        let sink = Arc::new(Recorder::default());
        let (layer, incoming) = TransactionLayer::new(sink.clone(), LayerConfig::default());
        let cdr = CdrWriter::spawn("/dev/null", WriterOptions::default())
            .await
            .unwrap();
        let b2bua = B2bua::new(
            B2buaConfig {
                calls: CallSettings {
                    t1: Duration::from_millis(500),
                    t2: Duration::from_secs(4),
                    max_duration: Some(Duration::from_secs(3600)),
                },
                limits: admission::Limits {
                    max_calls: 1_000_000,
                    max_cps: 0,
                    retry_after: Duration::from_secs(5),
                },
                advertised_host: None,
                expected_cps: 0,
            },
            layer.clone(),
            transports,
            routes,
            Some(cdr.sink()),
        );
        Rig {
            layer,
            incoming,
            b2bua,
            sink,
            caller: Source {
                protocol: Protocol::Udp,
                peer: "192.0.2.10:5060".parse().unwrap(),
                local,
                conn: None,
            },
            callee: Source {
                protocol: Protocol::Udp,
                peer: callee_addr,
                local,
                conn: None,
            },
            _callee_socket: callee_socket,
            _cdr: cdr,
            next: 0,
        }
    }

    /// Hands what the transaction layer passed up to the B2BUA.
    async fn serve_incoming(&mut self) {
        while let Ok(ev) = self.incoming.try_recv() {
            assert!(self.b2bua.handle(ev).await.is_none());
        }
    }

    /// Lets the B2BUA's tasks run until the recorder got a message that
    /// `want` accepts; returns it.
    async fn wait_for(&mut self, want: impl Fn(&Message) -> bool) -> Message {
        for _ in 0..1000 {
            self.serve_incoming().await;
            if let Some(m) = self.sink.take().iter().map(parse).find(|m| want(m)) {
                return m;
            }
            tokio::task::yield_now().await;
        }
        panic!("the B2BUA sent nothing expected");
    }

    async fn caller_sends(&mut self, text: String) {
        let Message::Request(r) = parse(&Bytes::from(text)) else {
            unreachable!()
        };
        self.layer
            .on_message(Message::Request(r), self.caller)
            .await
            .unwrap();
        self.serve_incoming().await;
    }

    async fn callee_answers(&mut self, req: &Request, status: u16, body: bool) {
        let mut r = Response::for_request(req, StatusCode::new(status).unwrap());
        if !req.to().map(|t| t.tag().is_some()).unwrap_or_default() {
            r.set_to_tag("callee-tag");
        }
        if status < 300 && req.method == Method::Invite {
            r.headers.push(
                HeaderName::Contact,
                Bytes::from(format!("<sip:callee@{}>", self.callee.peer)),
            );
        }
        if body {
            r.headers.push(
                HeaderName::ContentType,
                Bytes::from_static(b"application/sdp"),
            );
            r.body = Bytes::from_static(SDP.as_bytes());
        }
        // Through the wire format, as a received response would be.
        let r = parse(&Message::Response(r).to_bytes());
        self.layer.on_message(r, self.callee).await.unwrap();
    }

    /// One whole call (see the module doc).
    pub async fn call(&mut self) {
        self.next += 1;
        let n = self.next;
        let head = |method: &str, seq: u32, to_tag: &str| {
            format!(
                "{method} sip:{NUMBER}@127.0.0.1 SIP/2.0\r\n\
                 Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{n}{method};rport\r\n\
                 Max-Forwards: 70\r\n\
                 From: \"Caller\" <sip:+74957654321@carrier.example.net>;tag=c{n}\r\n\
                 To: <sip:{NUMBER}@127.0.0.1>{to_tag}\r\n\
                 Call-ID: bench-{n}@192.0.2.10\r\n\
                 CSeq: {seq} {method}\r\n\
                 Contact: <sip:+74957654321@192.0.2.10:5060>\r\n"
            )
        };
        self.caller_sends(format!(
            "{}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
            head("INVITE", 1, ""),
            SDP.len()
        ))
        .await;
        let Message::Request(out_invite) = self
            .wait_for(|m| matches!(m, Message::Request(r) if r.method == Method::Invite))
            .await
        else {
            unreachable!()
        };
        self.callee_answers(&out_invite, 180, false).await;
        self.callee_answers(&out_invite, 200, true).await;
        let Message::Response(ok) = self
            .wait_for(|m| matches!(m, Message::Response(r) if r.status.as_u16() == 200))
            .await
        else {
            unreachable!()
        };
        let tag = format!(";tag={}", ok.to().unwrap().tag().unwrap());
        self.caller_sends(format!("{}Content-Length: 0\r\n\r\n", head("ACK", 1, &tag)))
            .await;
        self.caller_sends(format!("{}Content-Length: 0\r\n\r\n", head("BYE", 2, &tag)))
            .await;
        let Message::Request(out_bye) = self
            .wait_for(|m| matches!(m, Message::Request(r) if r.method == Method::Bye))
            .await
        else {
            unreachable!()
        };
        self.callee_answers(&out_bye, 200, false).await;
        // The call ends when the B2BUA's event task has seen the 200.
        for _ in 0..1000 {
            if self.b2bua.active_calls() == 0 {
                self.sink.take();
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("call {n} did not end");
    }
}
