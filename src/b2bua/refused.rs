//! CDRs of refused call attempts (SPEC §2.5): every new INVITE that is
//! answered with a final failure without becoming a call gets one CDR line,
//! whichever layer refused it, because billing and operations count call
//! attempts, refused ones included.
//!
//! The B2BUA writes the line of its own refusals (admission, routing,
//! unreadable INVITE). The layers below refuse some INVITEs before the
//! B2BUA sees them: the transport answers 503 when its inbound queue is
//! full, the transaction layer 503 when the TU queue is full, and the
//! daemon's validator answers 400/415/416/420/505 and the like. They report
//! those through [`RefusalObserver`], implemented here by [`RefusedCalls`],
//! without knowing of calls or CDRs.
//!
//! Finish reasons: 503 is `overload` (our own limits), every other refusal
//! `rejected`. Such a line has no PBX (the number was not routed) and no
//! target, and its start, answer-less end are the moment of the refusal.
//!
//! A refusal on the receive path must not wait for the CDR writer, so these
//! lines are queued with [`CdrSink::try_write`]: if the CDR queue (65,536
//! records by default) is full, the line is dropped, counted
//! ([`RefusedCalls::lost`]) and logged. Each refused INVITE is reported
//! once: the transaction layer answers retransmissions from its server
//! transaction, and the transport remembers the INVITEs it refused
//! statelessly and answers their retransmissions without a new report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::cdr::{CallTimes, CdrRecord, CdrSink, FinishReason};
use crate::routing::Number;
use crate::sip::{Method, Request, StatusCode, Uri};
use crate::transport::RefusalObserver;

use super::service::dialed_number;

/// The dialed number for the CDR: E.164 when it parsed (`number`, from
/// [`dialed_number`]), else the user part of the Request-URI as received.
pub(crate) fn dialed_for_cdr(req: &Request, number: Option<Number>) -> String {
    match number {
        Some(n) => n.to_e164(),
        None => match &req.uri {
            Uri::Sip(u) => u.user.as_deref().unwrap_or_default().to_owned(),
            Uri::Tel(t) => t.number.to_string(),
            Uri::Other { .. } => String::new(),
        },
    }
}

/// The CDR of an INVITE refused with `status` at `now`: no answer, no
/// target.
pub(crate) fn refusal_record(
    req: &Request,
    status: StatusCode,
    reason: FinishReason,
    dialed: String,
    pbx: Option<String>,
    now: SystemTime,
) -> CdrRecord {
    let call_id = req.call_id().map(|c| c.to_string()).unwrap_or_default();
    let times = CallTimes {
        start: now,
        answer: None,
        end: now,
    };
    let mut rec = CdrRecord::new(call_id, times, status.as_u16(), reason);
    rec.caller = req.from().map(|f| f.uri.to_string()).unwrap_or_default();
    rec.dialed = dialed;
    rec.pbx = pbx;
    rec
}

/// The finish reason of an INVITE refused below the B2BUA with `status`.
pub fn refusal_reason(status: StatusCode) -> FinishReason {
    if status == StatusCode::SERVICE_UNAVAILABLE {
        FinishReason::Overload
    } else {
        FinishReason::Rejected
    }
}

/// A new call attempt: an INVITE outside any dialog (no To tag). A
/// refused re-INVITE does not end its call, so it gets no line.
fn is_call_attempt(req: &Request) -> bool {
    req.method == Method::Invite && req.to().is_ok_and(|to| to.tag().is_none())
}

/// Writes a CDR line for each new INVITE a lower layer refuses (see the
/// module doc). Hand it to the transport and the transaction layer.
#[derive(Debug)]
pub struct RefusedCalls {
    cdr: CdrSink,
    lost: AtomicU64,
}

impl RefusedCalls {
    /// Lines go to `cdr`.
    pub fn new(cdr: CdrSink) -> RefusedCalls {
        RefusedCalls {
            cdr,
            lost: AtomicU64::new(0),
        }
    }

    /// Lines dropped because the CDR queue was full or closed.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

impl RefusalObserver for RefusedCalls {
    fn refused(&self, request: &Request, status: StatusCode) {
        if !is_call_attempt(request) {
            return;
        }
        let reason = refusal_reason(status);
        let record = refusal_record(
            request,
            status,
            reason,
            dialed_for_cdr(request, dialed_number(request)),
            None,
            SystemTime::now(),
        );
        tracing::debug!(
            call_id = %record.call_id,
            status = status.as_u16(),
            reason = reason.as_str(),
            "call refused below the B2BUA"
        );
        if let Err(e) = self.cdr.try_write(record) {
            let lost = self.lost.fetch_add(1, Ordering::Relaxed) + 1;
            // Once per power of two: a flood must not flood the log too.
            if lost.is_power_of_two() {
                tracing::error!(error = %e, lost, "CDR of a refused call lost");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::cdr::{CdrWriter, WriterOptions};
    use crate::sip::{parse_datagram, Limits, Message};

    fn invite(to_tag: &str, uri_user: &str) -> Request {
        let text = format!(
            "INVITE sip:{uri_user}@vpbx.example.net SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKr1\r\n\
             From: <sip:+79161234567@carrier.example>;tag=a\r\n\
             To: <sip:{uri_user}@vpbx.example.net>{to_tag}\r\n\
             Call-ID: refused-1@carrier.example\r\n\
             CSeq: 1 INVITE\r\n\
             Max-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n"
        );
        match parse_datagram(Bytes::from(text), &Limits::default()).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => unreachable!(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_refused_call_attempt_gets_one_line_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.jsonl");
        let writer = CdrWriter::spawn(&path, WriterOptions::default())
            .await
            .unwrap();
        let refused = RefusedCalls::new(writer.sink());
        refused.refused(&invite("", "84951234567"), StatusCode::SERVICE_UNAVAILABLE);
        refused.refused(&invite("", "bob"), StatusCode::new(420).unwrap());
        // A re-INVITE and an OPTIONS are no call attempts.
        refused.refused(
            &invite(";tag=ours", "84951234567"),
            StatusCode::SERVICE_UNAVAILABLE,
        );
        let mut options = invite("", "84951234567");
        options.method = Method::Options;
        refused.refused(&options, StatusCode::SERVICE_UNAVAILABLE);
        writer.shutdown().await.unwrap();
        let lines: Vec<CdrRecord> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert_eq!(lines[0].reason, FinishReason::Overload);
        assert_eq!(lines[0].status, 503);
        assert_eq!(lines[0].dialed, "+74951234567");
        assert_eq!(lines[0].call_id, "refused-1@carrier.example");
        assert_eq!(lines[0].caller, "sip:+79161234567@carrier.example");
        assert_eq!(lines[0].pbx, None);
        assert!(lines[0].answer.is_none());
        assert!(lines[0].targets.is_empty());
        assert_eq!(lines[1].reason, FinishReason::Rejected);
        assert_eq!(lines[1].status, 420);
        assert_eq!(lines[1].dialed, "bob", "not a number: kept as received");
        assert_eq!(refused.lost(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cdr_queue_loses_the_line_without_waiting_and_counts_it() {
        let dir = tempfile::tempdir().unwrap();
        let options = WriterOptions {
            queue_capacity: 1,
            ..WriterOptions::default()
        };
        let writer = CdrWriter::spawn(dir.path().join("cdr.jsonl"), options)
            .await
            .unwrap();
        let refused = RefusedCalls::new(writer.sink());
        let req = invite("", "84951234567");
        // The writer task does not run until this test yields: the second
        // line finds the queue full and must return at once.
        refused.refused(&req, StatusCode::SERVICE_UNAVAILABLE);
        refused.refused(&req, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.lost(), 1);
        tokio::time::sleep(Duration::from_millis(1)).await;
        let stats = writer.shutdown().await.unwrap();
        assert_eq!(stats.records, 1);
    }
}
