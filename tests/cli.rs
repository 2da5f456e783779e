//! The `albatross` binary: `check` prints the model or located errors with the right
//! exit code; `backend` rejects a bad duration with a sentence.

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
