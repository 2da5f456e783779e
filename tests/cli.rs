//! The `albatross` binary: `check` prints the model or located errors with the right
//! exit code; `backend` rejects a bad duration with a sentence; a process allowed one
//! CPU runs the single-threaded runtime.

use std::process::Command;

fn albatross() -> Command {
    Command::new(env!("CARGO_BIN_EXE_albatross"))
}

#[test]
fn check_prints_every_error_with_its_location_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[load_balancer]\nidle_timout = 5\n\n[[listener]]\nport = 80\nprotocol = \"HTTP\"\ndefault_action = { type = \"forward\", target_group = \"nope\" }\n",
    )
    .unwrap();
    let out = albatross()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let file = path.display().to_string();
    assert!(
        stdout.contains(&format!("{file}:2:1: unknown key `idle_timout`")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{file}:7:53: forward to undefined target group `nope`"
        )),
        "{stdout}"
    );
}

#[test]
fn check_prints_the_effective_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("good.toml");
    std::fs::write(
        &path,
        "[[listener]]\nport = 8080\nprotocol = \"HTTP\"\ndefault_action = { type = \"forward\", target_group = \"app\" }\n\n[[target_group]]\nname = \"app\"\ntargets = [\"127.0.0.1:9001\"]\n",
    )
    .unwrap();
    let out = albatross()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("0.0.0.0:8080"), "{stdout}");
    assert!(stdout.contains("app"), "{stdout}");
    assert!(stdout.contains("127.0.0.1:9001"), "{stdout}");
    assert!(stdout.contains("deregistration_delay"), "{stdout}");
}

#[test]
fn backend_rejects_a_bad_duration() {
    let out = albatross()
        .args([
            "backend",
            "--listen",
            "127.0.0.1:0",
            "--ping-interval",
            "soon",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("soon"), "{stderr}");
}

#[test]
fn logs_to_a_pipe_carry_no_terminal_colours() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = albatross()
        .args(["backend", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut line = String::new();
    let mut reader = BufReader::new(stderr);
    // The backend logs one line once it listens; EOF would mean it died.
    while reader.read_line(&mut line).unwrap() > 0 && !line.contains("listening") {}
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("Heartbeat backend listening"), "{line:?}");
    assert!(!line.contains('\u{1b}'), "an escape sequence in {line:?}");
}

/// Start `albatross` with `args`, allowed to run on one CPU only (as `taskset -c N`
/// would), and count its threads once it listens.
#[cfg(target_os = "linux")]
fn threads_on_one_cpu(args: &[&str]) -> usize {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("one.toml");
    std::fs::write(
        &config,
        "[[listener]]\naddress = \"127.0.0.1\"\nport = 0\nprotocol = \"HTTP\"\n\
         default_action = { type = \"fixed_response\", status_code = 200 }\n",
    )
    .unwrap();
    // One CPU this test may use itself.
    let cpu = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        (0..libc::CPU_SETSIZE as usize)
            .find(|&c| libc::CPU_ISSET(c, &set))
            .unwrap()
    };
    let mut cmd = albatross();
    cmd.arg("--config")
        .arg(&config)
        .args(args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 && !line.contains("listener on") {}
    assert!(line.contains("listener on"), "{line:?}");
    let threads = std::fs::read_dir(format!("/proc/{}/task", child.id()))
        .unwrap()
        .count();
    let _ = child.kill();
    let _ = child.wait();
    threads
}

#[cfg(target_os = "linux")]
#[test]
fn one_usable_cpu_means_the_single_threaded_runtime() {
    assert_eq!(threads_on_one_cpu(&[]), 1, "the default on one CPU");
    // An explicit worker count still wins: two workers beside the main thread.
    assert_eq!(threads_on_one_cpu(&["--threads", "2"]), 3, "--threads 2");
}

#[cfg(unix)]
#[test]
fn sighup_reloads_the_config_file() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("albatross.toml");
    let config = |body: &str| {
        format!(
            "[[listener]]\naddress = \"127.0.0.1\"\nport = 0\nprotocol = \"HTTP\"\n\
             default_action = {{ type = \"fixed_response\", status_code = 200, message_body = \"{body}\" }}\n"
        )
    };
    std::fs::write(&path, config("before")).unwrap();
    let mut child = albatross()
        .arg("--config")
        .arg(&path)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 && !line.contains("listener on") {}
    let addr = line.rsplit("http://").next().unwrap().trim().to_string();
    let get = || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(get().ends_with("before"), "{}", get());

    std::fs::write(&path, config("after")).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGHUP) };
    line.clear();
    while reader.read_line(&mut line).unwrap() > 0 && !line.contains("Configuration reloaded") {
        line.clear();
    }
    let answer = get();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("Configuration reloaded"), "{line:?}");
    assert!(answer.ends_with("after"), "{answer}");
}

#[cfg(unix)]
#[test]
fn sigusr1_reopens_the_access_log_after_a_rename() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("albatross.toml");
    std::fs::write(
        &path,
        "[access_log]\npath = \"logs/access.log\"\n\n[[listener]]\naddress = \"127.0.0.1\"\nport = 0\nprotocol = \"HTTP\"\n\
         default_action = { type = \"fixed_response\", status_code = 200, message_body = \"ok\" }\n",
    )
    .unwrap();
    let mut child = albatross()
        .arg("--config")
        .arg(&path)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 && !line.contains("listener on") {}
    let addr = line.rsplit("http://").next().unwrap().trim().to_string();
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
    };
    let log = dir.path().join("logs/access.log");
    let rotated = dir.path().join("logs/access.log.1");
    // Lines reach the file within the writer's interval (50 ms); wait for them, bounded.
    let wait_for = |file: &std::path::Path, needle: &str| {
        for _ in 0..200 {
            if std::fs::read_to_string(file)
                .unwrap_or_default()
                .contains(needle)
            {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        false
    };
    get("/first");
    assert!(wait_for(&log, "/first"));
    std::fs::rename(&log, &rotated).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGUSR1) };
    line.clear();
    while reader.read_line(&mut line).unwrap() > 0 && !line.contains("SIGUSR1") {
        line.clear();
    }
    get("/second");
    let reopened = wait_for(&log, "/second");
    let _ = child.kill();
    let _ = child.wait();
    assert!(reopened, "the second line is in a new access.log");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("/first") && !old.contains("/second"), "{old}");
}

/// Every config shipped in `config/` checks on a fresh clone: the localhost certificate
/// the HTTPS ones name is generated where they name it, as a first run would, and is
/// reused afterwards.
#[test]
fn every_shipped_config_checks_without_a_first_run() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let copy = dir.path().join("config");
    std::fs::create_dir(&copy).unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(&shipped).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, copy.join(path.file_name().unwrap())).unwrap();
        }
    }
    for entry in std::fs::read_dir(&copy).unwrap() {
        let path = entry.unwrap().path();
        let out = albatross()
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}:\n{}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 4, "{checked} configs");
    let cert = copy.join("certs/localhost.pem");
    assert!(cert.is_file(), "no certificate generated");
    // Generated once: a second check keeps the same certificate.
    let before = std::fs::read(&cert).unwrap();
    let out = albatross()
        .args(["check", "--config"])
        .arg(copy.join("default.toml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(std::fs::read(&cert).unwrap(), before);
}
