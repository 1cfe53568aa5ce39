//! `vpbx check` on real directories: exit status and the exact error lines.

use std::path::Path;
use std::process::Command;

fn vpbx() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vpbx"))
}

// Test helper: a failed write is a broken test environment.
#[allow(clippy::unwrap_used)]
fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn check_reports_every_error_with_file_and_line_and_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(
        dir,
        "vpbx.toml",
        "listen = [\"udp:127.0.0.1:5060\"]\n[timers]\nt1 = \"soon\"\n",
    );
    write(
        dir,
        "pbx/acme.toml",
        "id = \"acme\"\n\
         [[external]]\nid = \"office\"\nuri = \"sip:127.0.0.1:5080\"\n\
         [[number]]\nnumber = \"+7 (495) 123-45-67\"\nforward = \"external:office\"\n\
         [[number]]\nnumber = \"+7 495 12x\"\nforward = \"external:nowhere\"\n",
    );
    write(dir, "pbx/beta.toml", "id = \"beta\"\ncolour = \"red\"\n");
    write(
        dir,
        "pbx/gamma.toml",
        "id = \"gamma\"\n\
         [[external]]\nid = \"pbx\"\nuri = \"sip:10.0.0.1\"\n\
         [[number]]\nnumber = \"84951234567\"\nforward = \"external:pbx\"\n",
    );

    let out = vpbx()
        .arg("check")
        .arg("--config")
        .arg(dir)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "check must fail on a bad config"
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    let d = dir.display();
    let expected = [
        format!("{d}/vpbx.toml:3:6: bad duration \"soon\": expected number at 0"),
        format!("{d}/pbx/acme.toml:6:10: duplicate number +74951234567 (also at {d}/pbx/gamma.toml:6:10)"),
        format!("{d}/pbx/acme.toml:9:10: bad number \"+7 495 12x\": invalid character 'x' at position 9 (allowed: digits, a leading '+', and the separators space - . ( ))"),
        format!("{d}/pbx/acme.toml:10:11: forward target external:nowhere is not defined: PBX \"acme\" has no [[external]] with id = \"nowhere\""),
        format!("{d}/pbx/beta.toml:2:1: unknown field `colour`, expected one of `id`, `name`, `number`, `external`, `number_block`"),
        format!("{d}/pbx/gamma.toml:6:10: duplicate number +74951234567 (also at {d}/pbx/acme.toml:6:10)"),
        "6 error(s)".to_owned(),
    ];
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines, expected, "stderr was:\n{stderr}");
}

#[test]
fn check_accepts_the_shipped_config_directory() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let out = vpbx()
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.trim(),
        "config OK: 1 PBX(s), 4 number(s), 1 external PBX(s); listen udp:127.0.0.1:5060, tcp:127.0.0.1:5060"
    );
}

#[test]
fn check_without_config_validates_the_embedded_default() {
    let out = vpbx().arg("check").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .starts_with("config OK: 1 PBX(s), 4 number(s)"));
}

#[test]
fn check_on_a_missing_directory_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let out = vpbx()
        .arg("check")
        .arg("--config")
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!(
            "{}: missing daemon config file vpbx.toml",
            missing.join("vpbx.toml").display()
        )),
        "{stderr}"
    );
}

#[test]
fn run_rejects_a_bad_listen_flag() {
    let out = vpbx()
        .args(["run", "--listen", "sctp:127.0.0.1:5060"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown transport protocol \"sctp\""));
}

#[test]
fn routes_from_csv_output_passes_check() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let csv = dir.join("routes.csv");
    write(
        dir,
        "routes.csv",
        "number;destination\r\n74951234567;127.0.0.1:5080\r\n# a comment\n\n8 (495) 765-43-21;127.0.0.1:5080\n+442079460958;sip:10.0.0.2:5070\n",
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/routes-from-csv");
    let out = Command::new("bash")
        .arg(script)
        .args(["-i", "loadtest", "-t", "tcp"])
        .arg(&csv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let toml = String::from_utf8(out.stdout).unwrap();
    assert!(
        toml.contains("id = \"dest-2\"\nuri = \"sip:10.0.0.2:5070\"\ntransport = \"tcp\""),
        "{toml}"
    );
    write(dir, "cfg/vpbx.toml", "");
    write(dir, "cfg/pbx/loadtest.toml", &toml);

    let out = vpbx()
        .arg("check")
        .arg("--config")
        .arg(dir.join("cfg"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .starts_with("config OK: 1 PBX(s), 3 number(s), 2 external PBX(s)"),);
}

#[test]
fn run_refuses_to_start_on_a_bad_config() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "vpbx.toml", "");
    write(
        tmp.path(),
        "pbx/acme.toml",
        "id = \"acme\"\n[[number]]\nnumber = \"12\"\nforward = \"external:x\"\n",
    );
    let out = vpbx()
        .args(["run", "--listen", "udp:127.0.0.1:0", "--config"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let file = tmp.path().join("pbx/acme.toml");
    assert!(
        stderr.contains(&format!("{}:3:10: bad number \"12\"", file.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{}:4:11: forward target external:x is not defined",
            file.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("vpbx: invalid config: 2 error(s)"),
        "{stderr}"
    );
    // Not a terminal: no colour codes in the log.
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
}

#[test]
fn log_level_flag_is_checked() {
    let out = vpbx()
        .args(["--log-level", "=bad=", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad --log-level"));
}
