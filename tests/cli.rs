//! The command line as operators meet it: `check`, settings on either side of a subcommand,
//! one line per fatal error, and `watch`'s readable form.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn ebpf() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_osquery-ebpf"));
    c.env("OSQUERY_EBPF_CONFIG", "/dev/null");
    c
}

fn check_json(extra_env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, Value, String) {
    let mut cmd = ebpf();
    cmd.args(["check", "--json"]).args(args);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run check");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (
        out.status.code(),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_reports_this_host_and_every_program() {
    if !require_root() {
        return;
    }
    let (code, r, stderr) = check_json(&[], &[]);
    assert_eq!(code, Some(0), "{r} {stderr}");
    assert_eq!(r["status"], 0, "{r}");
    assert_eq!(r["verdict"], "both tables would work", "{r}");
    let release = nix::sys::utsname::uname().expect("uname");
    assert_eq!(r["kernel"], release.release().to_string_lossy().as_ref());
    assert_eq!(r["architecture"], std::env::consts::ARCH);
    assert_eq!(r["btf"], "/sys/kernel/btf/vmlinux", "{r}");
    assert_eq!(r["transport"], "ring buffer", "{r}");
    assert_eq!(r["privileges"], "root", "{r}");
    // the hook set: what a forced trampoline start says about this kernel
    let forced = ebpf()
        .args(["watch", "--duration", "0", "--hooks", "trampoline"])
        .output()
        .expect("run");
    let want = if forced.status.success() {
        "trampoline"
    } else {
        "tracepoint"
    };
    assert_eq!(r["process_hooks"], want, "{r}");
    assert_eq!(r["socket_hooks"], want, "{r}");
    let programs = r["programs"].as_array().expect("programs");
    assert!(programs.len() >= 13, "{r}");
    assert!(programs.iter().all(|p| p["attached"] == true), "{r}");
    for name in ["on_exec", "on_fork", "on_exit"] {
        assert!(
            programs
                .iter()
                .any(|p| p["name"] == name && p["hooks"] == "tp_btf (both sets)"),
            "{name}: {r}"
        );
    }
    let suffix = if want == "trampoline" { "_fx" } else { "_tp" };
    assert!(
        programs
            .iter()
            .any(|p| p["name"] == format!("exit_connect{suffix}") && p["hooks"] == want),
        "{r}"
    );
    // the text form says the same
    let out = ebpf().arg("check").output().expect("run check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("hooks         {want} for the process table")),
        "{text}"
    );
    assert!(
        text.contains("verdict       both tables would work (status 0)"),
        "{text}"
    );
}

#[test]
fn check_reports_a_program_that_would_be_missing_and_a_start_that_would_fail() {
    if !require_root() {
        return;
    }
    // one socket program of the tracepoint set rejected
    let fail = ("OSQUERY_EBPF_TEST_FAIL_PROBES", "exit_listen_tp");
    let (code, r, stderr) = check_json(&[fail], &["--hooks", "tracepoint"]);
    assert_eq!(code, Some(7), "{r} {stderr}");
    assert_eq!(r["status"], 7, "{r}");
    let listen = r["programs"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "exit_listen_tp"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(listen["attached"], false, "{r}");
    assert!(
        listen["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{r}"
    );
    assert!(
        r["verdict"]
            .as_str()
            .is_some_and(|v| v.contains("exit_listen_tp")),
        "{r}"
    );
    assert_eq!(
        stderr.matches("osquery-ebpf:").count(),
        1,
        "one fatal line: {stderr}"
    );

    // an essential program rejected: the extension would not start (its own status 7), and
    // hooks = trampoline where trampolines do not work: status 8
    let (code, r, _) = check_json(&[("OSQUERY_EBPF_TEST_FAIL_PROBES", "on_exec")], &[]);
    assert_eq!(code, Some(7), "{r}");
    assert!(
        r["verdict"]
            .as_str()
            .is_some_and(|v| v.starts_with("the extension would not start")),
        "{r}"
    );
    let (code, r, _) = check_json(
        &[("OSQUERY_EBPF_TEST_FAIL_PROBES", "trampoline_probe")],
        &["--hooks", "trampoline"],
    );
    assert_eq!(code, Some(8), "{r}");
    assert_eq!(r["status"], 8, "{r}");
}

#[test]
fn settings_are_accepted_before_and_after_the_subcommand() {
    for args in [
        &["--process-table", "procs_before", "schema"][..],
        &["schema", "--process-table", "procs_before"][..],
    ] {
        let out = ebpf().args(args).output().expect("run schema");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("CREATE TABLE procs_before("),
            "{args:?}: {stdout}"
        );
    }
    // an invalid setting is the same error, in one line, on either side
    for args in [
        &["--argv-max", "0", "watch"][..],
        &["watch", "--argv-max", "0"][..],
    ] {
        let out = ebpf().args(args).output().expect("run watch");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("argv_max: must be between 1 and 65535"),
            "{stderr}"
        );
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    }
}

#[test]
fn every_option_has_help_text() {
    for cmd in [&[][..], &["watch"][..], &["check"][..], &["schema"][..]] {
        // -h: one line per option, its help beside it
        let out = ebpf().args(cmd).arg("-h").output().expect("help");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{help}");
        // clap puts an option's help beside it, or (when long) on the next line, indented
        let lines: Vec<&str> = help.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim();
            if !t.starts_with('-') {
                continue;
            }
            let name_words = t
                .split_whitespace()
                .take_while(|w| w.starts_with('-') || w.starts_with('<'))
                .count();
            let beside = t.split_whitespace().count() > name_words;
            let below = lines.get(i + 1).is_some_and(|n| {
                let n = n.trim();
                !n.is_empty() && !n.starts_with('-') && lines[i + 1].starts_with("          ")
            });
            assert!(beside || below, "{cmd:?}: an option without help: {t}");
        }
    }
}

#[test]
fn watch_shows_a_clock_time_aligned_columns_and_one_table_when_asked() {
    if !require_root() {
        return;
    }
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipping: script(1) (util-linux) gives watch the terminal it needs");
        return;
    }
    let marker = "readable-marker";
    // script(1) gives watch a terminal, so that it prints its readable form. The marker runs
    // until watch exits: loading the probes takes seconds when other tests load theirs, and
    // --duration only counts from the moment watch is ready.
    let shell = format!(
        "{} watch --table process --stats-every 0 --duration 2 & w=$!; \
         while kill -0 $w 2>/dev/null; do /bin/true {marker}; sleep 0.3; done; wait",
        env!("CARGO_BIN_EXE_osquery-ebpf")
    );
    let out = Command::new("script")
        .args(["-qec", &shell, "/dev/null"])
        .env("OSQUERY_EBPF_CONFIG", "/dev/null")
        .output()
        .expect("run script");
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let line = text
        .lines()
        .find(|l| l.contains(&format!("cmdline=/bin/true {marker}")) && l.contains(" execve "))
        .unwrap_or_else(|| panic!("no readable execve row: {text}"));
    // "HH:MM:SS.mmm process execve     pid=..."
    let (clock, rest) = line.split_once(' ').expect("fields");
    let b = clock.as_bytes();
    assert!(
        clock.len() == 12 && b[2] == b':' && b[5] == b':' && b[8] == b'.',
        "clock time: {line}"
    );
    assert!(
        rest.starts_with("process execve     pid="),
        "aligned columns: {line}"
    );
    let socket_rows: Vec<&str> = text
        .lines()
        .filter(|l| l.get(12..20) == Some(" socket "))
        .collect();
    assert!(
        socket_rows.is_empty(),
        "--table process shows socket rows: {socket_rows:?}"
    );
}
