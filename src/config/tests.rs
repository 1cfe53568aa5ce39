//! Validation tests: one per error, each asserting the exact
//! `file:line:col: message` that `vpbx check` prints.

use std::time::Duration;

use super::*;
use crate::routing::{RoutingTable, Target};

const EXT: &str = "[[external]]\nid = \"office\"\nuri = \"sip:127.0.0.1:5080\"\n";

fn sources(daemon: &str, pbxs: &[(&str, &str)]) -> (Option<Source>, Vec<Source>) {
    (
        Some(Source {
            name: "cfg/vpbx.toml".into(),
            text: daemon.to_owned(),
        }),
        pbxs.iter()
            .map(|(name, text)| Source {
                name: Path::new("cfg/pbx").join(name),
                text: (*text).to_owned(),
            })
            .collect(),
    )
}

fn load_text(daemon: &str, pbxs: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let (d, p) = sources(daemon, pbxs);
    load_sources(d, p)
}

/// The error lines for a config that must fail.
fn errors(daemon: &str, pbxs: &[(&str, &str)]) -> Vec<String> {
    match load_text(daemon, pbxs) {
        Ok(_) => panic!("config was accepted"),
        Err(e) => e.errors().iter().map(ToString::to_string).collect(),
    }
}

fn pbx_errors(text: &str) -> Vec<String> {
    errors("", &[("acme.toml", text)])
}

#[test]
fn embedded_default_config_is_valid() {
    let config = embedded().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.daemon, DaemonConfig::default());
    assert_eq!(config.pbxs.len(), 1);
    let demo = &config.pbxs[0];
    assert_eq!(&*demo.id, "demo");
    let numbers: Vec<String> = demo.numbers.iter().map(|n| n.number.to_string()).collect();
    assert_eq!(
        numbers,
        [
            "+74951234567",
            "+74957654321",
            "+78005553535",
            "+79160000001"
        ]
    );
    assert!(!demo.numbers[3].enabled);
    let Target::External(office) = &demo.numbers[0].forward else {
        panic!("demo numbers go to an external PBX")
    };
    assert_eq!(office.uri.to_string(), "sip:127.0.0.1:5080");
    assert_eq!(
        office.destination(),
        Some(crate::transport::Destination::udp(
            "127.0.0.1:5080".parse().unwrap()
        ))
    );
    assert_eq!(office.transport, Protocol::Udp);
    assert_eq!(office.dial_timeout, Duration::from_secs(30));
    let table = RoutingTable::from_config(&config).unwrap();
    assert_eq!(table.len(), 4);
}

#[test]
fn empty_daemon_file_means_all_defaults() {
    let config = load_text("", &[]).unwrap();
    assert_eq!(config.daemon, DaemonConfig::default());
    assert!(config.pbxs.is_empty());
}

#[test]
fn daemon_values_are_read() {
    let config = load_text(
        "listen = [\"udp:[::1]:5070\"]\nadvertised_address = \"203.0.113.7\"\ndomain = \"pbx.example.com\"\nworker_threads = 4\n\
         [timers]\nt1 = \"200ms\"\n[limits]\nmax_calls = 10\nmax_call_duration = \"1h\"\ntcp_connect_timeout = \"30s\"\nudp_receive_buffer = 8388608\nexpected_cps = 8000\n\
         [cdr]\npath = \"/var/log/cdr.jsonl\"\n[shutdown]\ndrain_time = \"0s\"\n[reload]\ndebounce = \"2s\"\n",
        &[],
    )
    .unwrap();
    let d = config.daemon;
    assert_eq!(
        d.listen,
        vec!["udp:[::1]:5070".parse::<ListenAddr>().unwrap()]
    );
    assert_eq!(d.advertised_address.as_deref(), Some("203.0.113.7"));
    assert_eq!(d.domain.as_deref(), Some("pbx.example.com"));
    assert_eq!(d.worker_threads, 4);
    assert_eq!(d.timers.t1, Duration::from_millis(200));
    assert_eq!(d.timers.t2, Timers::default().t2);
    assert_eq!(d.limits.max_calls, 10);
    assert_eq!(d.limits.max_call_duration, Duration::from_secs(3600));
    assert_eq!(d.limits.max_cps, Limits::default().max_cps);
    assert_eq!(d.limits.tcp_connect_timeout, Duration::from_secs(30));
    assert_eq!(d.limits.udp_receive_buffer, 8 << 20);
    assert_eq!(d.limits.expected_cps, 8000);
    assert_eq!(d.cdr.path, Path::new("/var/log/cdr.jsonl"));
    assert_eq!(d.shutdown.drain_time, Duration::ZERO);
    assert_eq!(d.reload.debounce, Duration::from_secs(2));
}

#[test]
fn unknown_key_in_daemon_file() {
    assert_eq!(
        errors("[limits]\nmax_calls = 5\nmax_callz = 6\n", &[]),
        ["cfg/vpbx.toml:3:1: unknown field `max_callz`, expected one of `max_calls`, `max_cps`, `max_call_duration`, `max_message_size`, `max_tcp_connections`, `tcp_idle_timeout`, `tcp_connect_timeout`, `udp_receive_buffer`, `expected_cps`"]
    );
}

#[test]
fn toml_syntax_error() {
    assert_eq!(
        errors("listen = [\"udp:127.0.0.1:5060\"\n", &[]),
        ["cfg/vpbx.toml:2:1: invalid array\nexpected `]`"]
    );
}

#[test]
fn wrong_type() {
    assert_eq!(
        errors("[limits]\nmax_calls = \"many\"\n", &[]),
        ["cfg/vpbx.toml:2:13: invalid type: string \"many\", expected i64"]
    );
}

#[test]
fn bad_listen_addresses_all_reported() {
    assert_eq!(
        errors(
            "listen = [\"udp:127.0.0.1:5060\", \"tls:127.0.0.1:5061\",\n  \"udp:127.0.0.1\", \"udp:127.0.0.1:5060\"]\n",
            &[]
        ),
        [
            "cfg/vpbx.toml:1:33: bad listen address \"tls:127.0.0.1:5061\": unknown transport protocol \"tls\" (expected udp or tcp)",
            "cfg/vpbx.toml:2:3: bad listen address \"udp:127.0.0.1\": invalid socket address \"127.0.0.1\" (expected IPv4:PORT or [IPv6]:PORT)",
            "cfg/vpbx.toml:2:20: listen address udp:127.0.0.1:5060 is given twice",
        ]
    );
    assert_eq!(
        errors("listen = []\n", &[]),
        ["cfg/vpbx.toml:1:10: listen is empty: at least one udp: or tcp: address is needed"]
    );
}

#[test]
fn bad_durations_and_ranges() {
    assert_eq!(
        errors(
            "worker_threads = 0\n[timers]\nt1 = \"fast\"\nt4 = \"0s\"\n[limits]\nmax_cps = 0\nmax_message_size = 100\ntcp_idle_timeout = \"5 min\"\nudp_receive_buffer = 1000\nexpected_cps = 100001\ntcp_connect_timeout = \"500ms\"\n",
            &[]
        ),
        [
            "cfg/vpbx.toml:1:18: worker_threads = 0 is out of range (allowed: 1 to 64)",
            "cfg/vpbx.toml:3:6: bad duration \"fast\": expected number at 0",
            "cfg/vpbx.toml:4:6: timers.t4 = \"0s\" is out of range (allowed: 1ms to 10min)",
            "cfg/vpbx.toml:6:11: limits.max_cps = 0 is out of range (allowed: 1 to 1000000)",
            "cfg/vpbx.toml:7:20: limits.max_message_size = 100 is out of range (allowed: 1024 to 1048576 bytes)",
            "cfg/vpbx.toml:9:22: limits.udp_receive_buffer = 1000 is out of range (allowed: 65536 to 268435456 bytes)",
            "cfg/vpbx.toml:10:16: limits.expected_cps = 100001 is out of range (allowed: 0 to 100000)",
            "cfg/vpbx.toml:11:23: limits.tcp_connect_timeout = \"500ms\" is out of range (allowed: 1s to 2min)",
        ]
    );
}

#[test]
fn t2_below_t1() {
    assert_eq!(
        errors("[timers]\nt1 = \"2s\"\nt2 = \"1s\"\n", &[]),
        ["cfg/vpbx.toml:3:6: timers.t2 must not be smaller than timers.t1"]
    );
}

#[test]
fn bad_hosts() {
    assert_eq!(
        errors(
            "domain = \"bad domain\"\nadvertised_address = \"::1\"\n",
            &[]
        ),
        ["cfg/vpbx.toml:1:10: domain \"bad domain\" is not an IP address or a domain name"]
    );
}

#[test]
fn unknown_key_in_pbx_file() {
    assert_eq!(
        pbx_errors("id = \"acme\"\n[[number]]\nnumber = \"+74951234567\"\nforward = \"external:office\"\nforwrd = \"x\"\n"),
        ["cfg/pbx/acme.toml:5:1: unknown field `forwrd`, expected one of `number`, `forward`, `on_failure`, `enabled`, `comment`"]
    );
}

#[test]
fn bad_numbers_all_reported() {
    let text = format!(
        "id = \"acme\"\n{EXT}[[number]]\nnumber = \"+7 495 12\"\nforward = \"external:office\"\n\
         [[number]]\nnumber = \"4951234567\"\nforward = \"external:office\"\n"
    );
    assert_eq!(
        pbx_errors(&text),
        [
            "cfg/pbx/acme.toml:6:10: bad number \"+7 495 12\": +7 numbers have 10 digits after the country code, found 5",
            "cfg/pbx/acme.toml:9:10: bad number \"4951234567\": no country code: write +<country code><number>, or 11 digits starting with 8 or 7 (found 10 digits)",
        ]
    );
}

#[test]
fn dangling_external_reference() {
    assert_eq!(
        pbx_errors(&format!(
            "id = \"acme\"\n{EXT}[[number]]\nnumber = \"+74951234567\"\nforward = \"external:ofice\"\n"
        )),
        ["cfg/pbx/acme.toml:7:11: forward target external:ofice is not defined: PBX \"acme\" has no [[external]] with id = \"ofice\""]
    );
}

#[test]
fn bad_and_unsupported_targets() {
    let text = format!(
        "id = \"acme\"\n{EXT}\
         [[number]]\nnumber = \"+74951234561\"\nforward = \"office\"\n\
         [[number]]\nnumber = \"+74951234562\"\nforward = \"department:sales\"\n\
         [[number]]\nnumber = \"+74951234563\"\nforward = \"pbx:other\"\n"
    );
    assert_eq!(
        pbx_errors(&text),
        [
            "cfg/pbx/acme.toml:7:11: bad forward target: target \"office\" has no kind; write external:<id>, employee:<id>, department:<id>, scenario:<id> or pbx:<id>",
            "cfg/pbx/acme.toml:10:11: forward to department:<id> is not supported yet (only external:<id> is)",
            "cfg/pbx/acme.toml:13:11: forward to pbx:<id> is not supported yet (only external:<id> is)",
        ]
    );
}

#[test]
fn on_failure_forms() {
    let text = format!(
        "id = \"acme\"\n{EXT}\
         [[number]]\nnumber = \"+74951234561\"\nforward = \"external:office\"\non_failure = \"hang up\"\n\
         [[number]]\nnumber = \"+74951234562\"\nforward = \"external:office\"\non_failure = {{ prompt = \"busy.wav\" }}\n\
         [[number]]\nnumber = \"+74951234563\"\nforward = \"external:office\"\non_failure = \"voicemail\"\n"
    );
    assert_eq!(
        pbx_errors(&text),
        [
            "cfg/pbx/acme.toml:8:14: bad on_failure: expected \"hangup\", \"voicemail\" or { prompt = \"file.wav\" }",
            "cfg/pbx/acme.toml:12:14: on_failure { prompt = … } is not supported yet (only \"hangup\" is)",
            "cfg/pbx/acme.toml:16:14: on_failure \"voicemail\" is not supported yet (only \"hangup\" is)",
        ]
    );
}

#[test]
fn duplicate_number_across_pbxs_reported_at_both_places() {
    let a = format!(
        "id = \"a\"\n{EXT}[[number]]\nnumber = \"+74951234567\"\nforward = \"external:office\"\n"
    );
    let b = format!(
        "id = \"b\"\n{EXT}[[number]]\nnumber = \"+74950000000\"\nforward = \"external:office\"\n\
         [[number]]\nnumber = \"8 (495) 123-45-67\"\nforward = \"external:office\"\n"
    );
    assert_eq!(
        errors("", &[("a.toml", &a), ("b.toml", &b)]),
        [
            "cfg/pbx/a.toml:6:10: duplicate number +74951234567 (also at cfg/pbx/b.toml:9:10)",
            "cfg/pbx/b.toml:9:10: duplicate number +74951234567 (also at cfg/pbx/a.toml:6:10)",
        ]
    );
}

#[test]
fn duplicate_number_within_one_pbx() {
    let text = format!(
        "id = \"acme\"\n{EXT}[[number]]\nnumber = \"+74951234567\"\nforward = \"external:office\"\n\
         [[number]]\nnumber = \"74951234567\"\nforward = \"external:office\"\n"
    );
    assert_eq!(
        pbx_errors(&text),
        [
            "cfg/pbx/acme.toml:6:10: duplicate number +74951234567 (also at cfg/pbx/acme.toml:9:10)",
            "cfg/pbx/acme.toml:9:10: duplicate number +74951234567 (also at cfg/pbx/acme.toml:6:10)",
        ]
    );
}

#[test]
fn duplicate_ids() {
    let text = format!("id = \"acme\"\n{EXT}{EXT}");
    assert_eq!(
        pbx_errors(&text),
        ["cfg/pbx/acme.toml:6:6: duplicate external PBX id \"office\" (also at cfg/pbx/acme.toml:3:6)"]
    );
    // Two files claiming one PBX id: one of them also has the wrong file name.
    let errs = errors(
        "",
        &[
            ("acme.toml", "id = \"acme\"\n"),
            ("copy.toml", "id = \"acme\"\n"),
        ],
    );
    assert_eq!(
        errs,
        [
            "cfg/pbx/acme.toml:1:6: duplicate PBX id \"acme\" (also at cfg/pbx/copy.toml:1:6)",
            "cfg/pbx/copy.toml:1:6: PBX id \"acme\" does not match its file name copy.toml (a PBX lives in pbx/<id>.toml)",
            "cfg/pbx/copy.toml:1:6: duplicate PBX id \"acme\" (also at cfg/pbx/acme.toml:1:6)",
        ]
    );
    assert_eq!(
        pbx_errors("id = \"a c m e\"\n"),
        ["cfg/pbx/acme.toml:1:6: bad id \"a c m e\": ids are non-empty, at most 64 characters, and use only letters, digits, '-', '_' and '.'"]
    );
}

#[test]
fn bad_external_pbx() {
    let text = "id = \"acme\"\n[[external]]\nid = \"office\"\nuri = \"sip:pbx:99999\"\ntransport = \"sctp\"\n\
                password = \"secret\"\ndial_timeout = \"101s\"\nnumbers = [\"+74951234567\", \"+7 1\"]\n";
    assert_eq!(
        pbx_errors(text),
        [
            "cfg/pbx/acme.toml:4:7: bad SIP URI \"sip:pbx:99999\": invalid port",
            "cfg/pbx/acme.toml:5:13: bad transport: unknown transport protocol \"sctp\" (expected udp or tcp)",
            "cfg/pbx/acme.toml:6:12: digest username and password must be given together",
            "cfg/pbx/acme.toml:7:16: dial_timeout = \"101s\" is out of range (allowed: 1s to 100s)",
            "cfg/pbx/acme.toml:8:12: number +74951234567 is not a number of PBX \"acme\" (external PBXs may only list their PBX's numbers)",
            "cfg/pbx/acme.toml:8:28: bad number \"+7 1\": +7 numbers have 10 digits after the country code, found 1",
        ]
    );
}

#[test]
fn external_may_only_list_its_pbx_numbers() {
    let text = "id = \"acme\"\n[[external]]\nid = \"office\"\nuri = \"sip:127.0.0.1\"\nnumbers = [\"84951234567\", \"+74950000000\"]\n\
                [[number]]\nnumber = \"+74951234567\"\nforward = \"external:office\"\n";
    assert_eq!(
        pbx_errors(text),
        ["cfg/pbx/acme.toml:5:27: number +74950000000 is not a number of PBX \"acme\" (external PBXs may only list their PBX's numbers)"]
    );
}

#[test]
fn full_external_pbx_is_read() {
    let text = "id = \"acme\"\nname = \"ACME\"\n[[external]]\nid = \"office\"\nuri = \"sip:office@pbx.example.com:5070\"\n\
                transport = \"tcp\"\nusername = \"acme\"\npassword = \"pw\"\nnumbers = [\"+74951234567\"]\n\
                [[number]]\nnumber = \"+74951234567\"\nforward = \"external:office\"\ncomment = \"main\"\nenabled = false\n";
    let config = load_text("", &[("acme.toml", text)]).unwrap();
    let pbx = &config.pbxs[0];
    assert_eq!(pbx.name.as_deref(), Some("ACME"));
    let ext = &pbx.externals[0];
    assert_eq!(ext.transport, Protocol::Tcp);
    assert_eq!(ext.uri.to_string(), "sip:office@pbx.example.com:5070");
    // A domain needs RFC 3263 resolution: no direct destination.
    assert_eq!(ext.destination(), None);
    assert_eq!(ext.dial_timeout, DEFAULT_DIAL_TIMEOUT);
    let creds = ext.credentials.as_ref().unwrap();
    assert_eq!(
        (creds.username.as_str(), creds.password.as_str()),
        ("acme", "pw")
    );
    assert_eq!(ext.numbers, vec![Number::parse("+74951234567").unwrap()]);
    let n = &pbx.numbers[0];
    assert!(!n.enabled);
    assert_eq!(n.comment.as_deref(), Some("main"));
    assert_eq!(n.on_failure, OnFailure::Hangup);
    assert_eq!(n.forward, Target::External(ext.clone()));
}

#[test]
fn load_reads_a_directory_and_reports_missing_files() {
    let tmp = tempfile::tempdir().unwrap();
    let err = load(tmp.path()).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}: missing daemon config file vpbx.toml",
            tmp.path().join("vpbx.toml").display()
        )
    );

    std::fs::write(tmp.path().join("vpbx.toml"), EMBEDDED_DAEMON).unwrap();
    std::fs::create_dir(tmp.path().join("pbx")).unwrap();
    std::fs::write(tmp.path().join("pbx/demo.toml"), EMBEDDED_PBXS[0].1).unwrap();
    // Editor leftovers are not PBX files.
    std::fs::write(tmp.path().join("pbx/.demo.toml.swp"), "garbage").unwrap();
    std::fs::write(tmp.path().join("pbx/notes.txt"), "garbage").unwrap();
    let config = load(tmp.path()).unwrap();
    assert_eq!(config.pbxs.len(), 1);
    assert_eq!(config.pbxs[0].file, tmp.path().join("pbx/demo.toml"));
}

#[test]
fn errors_from_several_files_come_in_file_order() {
    let errs = errors(
        "[timers]\nt1 = \"x\"\n",
        &[
            ("a.toml", "id = \"a\"\nbogus = 1\n"),
            (
                "b.toml",
                "id = \"b\"\n[[number]]\nnumber = \"1\"\nforward = \"external:x\"\n",
            ),
        ],
    );
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(errs[0].starts_with("cfg/vpbx.toml:2:6: bad duration"));
    assert!(errs[1].starts_with("cfg/pbx/a.toml:2:1: unknown field `bogus`"));
    assert!(errs[2].starts_with("cfg/pbx/b.toml:3:10: bad number \"1\""));
    assert!(errs[3].starts_with("cfg/pbx/b.toml:4:11: forward target external:x is not defined"));
}

#[test]
fn number_block_routes_every_line() {
    let text = format!(
        "id = \"acme\"\n{EXT}[[number_block]]\nforward = \"external:office\"\ncomment = \"bulk\"\nnumbers = '''\n\
         +74951234567\n  8 (495) 765-43-21   # sales\n\n# a comment line\n+442079460958\n'''\n"
    );
    let config = load_text("", &[("acme.toml", &text)]).unwrap();
    let numbers: Vec<String> = config.pbxs[0]
        .numbers
        .iter()
        .map(|n| n.number.to_string())
        .collect();
    assert_eq!(numbers, ["+74951234567", "+74957654321", "+442079460958"]);
    assert!(config.pbxs[0].numbers.iter().all(|n| n.enabled
        && n.comment.as_deref() == Some("bulk")
        && n.on_failure == OnFailure::Hangup));
}

#[test]
fn number_block_errors_point_at_their_line() {
    let text = format!(
        "id = \"acme\"\n{EXT}[[number]]\nnumber = \"+74951234567\"\nforward = \"external:office\"\n\
         [[number_block]]\nforward = \"external:office\"\nnumbers = \"\"\"\n\
         +74957654321\n   +7 495 12x\n84951234567\n\"\"\"\n\
         [[number_block]]\nforward = \"external:nope\"\nnumbers = '''+74950000001\n+1'''\n"
    );
    assert_eq!(
        pbx_errors(&text),
        [
            "cfg/pbx/acme.toml:6:10: duplicate number +74951234567 (also at cfg/pbx/acme.toml:13:1)",
            "cfg/pbx/acme.toml:12:4: bad number \"+7 495 12x\": invalid character 'x' at position 9 (allowed: digits, a leading '+', and the separators space - . ( ))",
            "cfg/pbx/acme.toml:13:1: duplicate number +74951234567 (also at cfg/pbx/acme.toml:6:10)",
            "cfg/pbx/acme.toml:16:11: forward target external:nope is not defined: PBX \"acme\" has no [[external]] with id = \"nope\"",
            "cfg/pbx/acme.toml:18:1: bad number \"+1\": too short: 1 digits after '+', at least 6 expected",
        ]
    );
}

#[test]
fn number_block_with_escapes_reports_at_the_string() {
    let text = format!(
        "id = \"acme\"\n{EXT}[[number_block]]\nforward = \"external:office\"\nnumbers = \"+74951234567\\n12\"\n"
    );
    assert_eq!(
        pbx_errors(&text),
        ["cfg/pbx/acme.toml:7:11: bad number \"12\": no country code: write +<country code><number>, or 11 digits starting with 8 or 7 (found 2 digits)"]
    );
}

#[test]
fn number_block_rejects_unknown_keys() {
    let text = format!(
        "id = \"acme\"\n{EXT}[[number_block]]\nforward = \"external:office\"\nnumbers = ''\nnumber = \"x\"\n"
    );
    assert_eq!(
        pbx_errors(&text),
        ["cfg/pbx/acme.toml:8:1: unknown field `number`, expected one of `numbers`, `forward`, `on_failure`, `enabled`, `comment`"]
    );
}

#[test]
fn uri_transport_parameter_agrees_with_transport() {
    let ext = |uri: &str, transport: &str| {
        format!("id = \"acme\"\n[[external]]\nid = \"office\"\nuri = \"{uri}\"\n{transport}")
    };
    // The URI's parameter stands in for a missing `transport`.
    let config = load_text("", &[("acme.toml", &ext("sip:10.0.0.1;transport=TCP", ""))]).unwrap();
    assert_eq!(config.pbxs[0].externals[0].transport, Protocol::Tcp);
    let config = load_text(
        "",
        &[(
            "acme.toml",
            &ext("sip:10.0.0.1;transport=tcp", "transport = \"tcp\"\n"),
        )],
    )
    .unwrap();
    assert_eq!(config.pbxs[0].externals[0].transport, Protocol::Tcp);
    assert_eq!(
        pbx_errors(&ext("sip:10.0.0.1;transport=tcp", "transport = \"udp\"\n")),
        ["cfg/pbx/acme.toml:5:13: transport disagrees with the URI's ;transport= parameter"]
    );
    assert_eq!(
        pbx_errors(&ext("sip:10.0.0.1;transport=sctp", "")),
        ["cfg/pbx/acme.toml:4:7: bad transport: unknown transport protocol \"sctp\" (expected udp or tcp)"]
    );
    assert_eq!(
        pbx_errors(&ext("sips:10.0.0.1", "")),
        ["cfg/pbx/acme.toml:4:7: sips: URIs need TLS, which is not supported yet; use sip: with transport udp or tcp"]
    );
}

proptest::proptest! {
    /// Any edit of a valid PBX file either loads or yields errors that all
    /// point inside the file; it never panics.
    #[test]
    fn mangled_pbx_files_never_panic(
        at in 0usize..2000,
        len in 0usize..40,
        insert in "\\PC{0,12}",
    ) {
        let base = EMBEDDED_PBXS[0].1;
        let mut at = at.min(base.len());
        while !base.is_char_boundary(at) {
            at -= 1;
        }
        let mut end = (at + len).min(base.len());
        while !base.is_char_boundary(end) {
            end -= 1;
        }
        let text = format!("{}{}{}", &base[..at], insert, &base[end..]);
        let lines = text.lines().count().max(1);
        if let Err(errors) = load_text("", &[("demo.toml", &text)]) {
            proptest::prop_assert!(!errors.errors().is_empty());
            for e in errors.errors() {
                if let Some(p) = e.location.position {
                    proptest::prop_assert!(p.line >= 1 && p.line <= lines + 1, "{e}");
                    proptest::prop_assert!(p.column >= 1, "{e}");
                }
            }
        }
    }
}

#[test]
fn expected_cps_is_zero_by_default_and_bounded_below_too() {
    let config = load_text("[limits]\nmax_calls = 5\n", &[]).unwrap();
    assert_eq!(config.daemon.limits.expected_cps, 0);
    let config = load_text("[limits]\nexpected_cps = 0\n", &[]).unwrap();
    assert_eq!(config.daemon.limits.expected_cps, 0);
    let config = load_text("[limits]\nexpected_cps = 100000\n", &[]).unwrap();
    assert_eq!(config.daemon.limits.expected_cps, 100_000);
    assert_eq!(
        errors("[limits]\nexpected_cps = -1\n", &[]),
        ["cfg/vpbx.toml:2:16: limits.expected_cps = -1 is out of range (allowed: 0 to 100000)"]
    );
}

#[test]
fn wakeup_coalescing_is_read_and_bounded() {
    let config = load_text("wakeup_coalescing = \"500us\"\n", &[]).unwrap();
    assert_eq!(config.daemon.wakeup_coalescing, Duration::from_micros(500));
    let off = load_text("wakeup_coalescing = \"0s\"\n", &[]).unwrap();
    assert_eq!(off.daemon.wakeup_coalescing, Duration::ZERO);
    assert_eq!(
        DaemonConfig::default().wakeup_coalescing,
        Duration::from_millis(1)
    );
    assert_eq!(
        errors("wakeup_coalescing = \"1s\"\n", &[]),
        ["cfg/vpbx.toml:1:21: wakeup_coalescing = \"1s\" is out of range (allowed: 0s, or 100us to 100ms)"]
    );
    assert_eq!(
        errors("wakeup_coalescing = \"20us\"\n", &[]),
        ["cfg/vpbx.toml:1:21: wakeup_coalescing = \"20us\" is out of range (allowed: 0s, or 100us to 100ms)"]
    );
    let least = load_text("wakeup_coalescing = \"100us\"\n", &[]).unwrap();
    assert_eq!(least.daemon.wakeup_coalescing, Duration::from_micros(100));
}
