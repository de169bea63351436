//! The `strata` binary end to end: `serve` on a free port in a temp dir, then `topic`, `produce`
//! and `consume` round trips, SIGTERM, and a corrupt data dir.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

struct Serve {
    child: Option<Child>,
    bootstrap: String,
    log: mpsc::Receiver<String>,
    /// What the broker logged before it was listening.
    startup_log: Vec<String>,
}

impl Serve {
    /// Starts `strata serve` on 127.0.0.1:0 (metrics on 127.0.0.1:0 too) and waits for its
    /// "strata listening on" line.
    fn start(data_dir: &Path) -> Serve {
        let mut child = Command::new(STRATA)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn strata serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let marker = "strata listening on ";
        let mut startup_log = Vec::new();
        loop {
            let line = match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => line,
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("strata serve did not print its listening line: {e}");
                }
            };
            if let Some(at) = line.find(marker) {
                let bootstrap: String = line[at + marker.len()..]
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '\u{1b}')
                    .collect();
                return Serve {
                    child: Some(child),
                    bootstrap,
                    log: rx,
                    startup_log,
                };
            }
            startup_log.push(line);
        }
    }

    fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(STRATA)
            .args(args)
            .env("STRATA_BOOTSTRAP", &self.bootstrap)
            .env("NO_COLOR", "1")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn strata");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(input.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("strata runs")
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let output = self.cli(args, stdin);
        assert!(
            output.status.success(),
            "strata {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8 stdout")
    }

    /// SIGTERM; returns the exit code.
    fn terminate(mut self) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let status = child.wait().expect("wait");
        while self.log.try_recv().is_ok() {}
        status.code()
    }
}

impl Drop for Serve {
    /// A test that fails midway does not leave a broker behind.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn topic_produce_consume_round_trip_and_clean_shutdown() {
    let dir = temp_dir("roundtrip");
    let serve = Serve::start(&dir.join("data"));

    let out = serve.ok(
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=86400000",
        ],
        None,
    );
    assert_eq!(out, "Created topic orders.\n");
    let again = serve.cli(&["topic", "create", "orders"], None);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("TopicAlreadyExists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    serve.ok(&["topic", "create", "logs"], None);
    assert_eq!(serve.ok(&["topic", "list"], None), "logs\norders\n");

    // Keyed records go where Kafka's partitioner puts them; headers and keys come back.
    serve.ok(
        &[
            "produce",
            "orders",
            "--key-separator",
            ":",
            "--header",
            "src=cli",
            "--compression",
            "zstd",
        ],
        Some("k1:hello\nk2:world\nk3:third\n"),
    );
    let consumed = serve.ok(
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--count",
            "3",
            "--print-key",
            "--print-headers",
        ],
        None,
    );
    let mut lines: Vec<&str> = consumed.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            "src=cli\tk1\thello",
            "src=cli\tk2\tworld",
            "src=cli\tk3\tthird"
        ]
    );

    // One partition, offsets, a start offset, and stopping when idle.
    let input: String = (0..100).map(|i| format!("line-{i}\n")).collect();
    serve.ok(
        &["produce", "logs", "--partition", "0", "--acks", "1"],
        Some(&input),
    );
    let out = serve.ok(
        &[
            "consume",
            "logs",
            "--partition",
            "0",
            "--offset",
            "98",
            "--timeout-ms",
            "500",
            "--print-offset",
        ],
        None,
    );
    assert_eq!(out, "0/98\tline-98\n0/99\tline-99\n");
    let out = serve.ok(&["consume", "logs", "--timeout-ms", "300"], None);
    assert_eq!(out, "", "the default start is the end of the log");

    let described = serve.ok(&["topic", "describe", "logs"], None);
    assert!(
        described.contains(
            "Partition: 0\tLeader: 0\tReplicas: 0\tIsr: 0\tLogStartOffset: 0\tLogEndOffset: 100"
        ),
        "{described}"
    );
    serve.ok(
        &["topic", "alter", "logs", "--config", "retention.ms=1000"],
        None,
    );
    let described = serve.ok(&["topic", "describe", "logs"], None);
    assert!(
        described.contains("retention.ms=1000\t(set on topic)"),
        "{described}"
    );
    assert_eq!(
        serve.ok(&["topic", "delete", "logs"], None),
        "Deleted topic logs.\n"
    );
    assert_eq!(serve.ok(&["topic", "list"], None), "orders\n");

    assert_eq!(serve.terminate(), Some(0), "SIGTERM is a clean exit");

    // The data survives a restart.
    let serve = Serve::start(&dir.join("data"));
    let consumed = serve.ok(
        &["consume", "orders", "--from-beginning", "--count", "3"],
        None,
    );
    assert_eq!(consumed.lines().count(), 3);
    assert_eq!(serve.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Goal: a batch corrupted in the middle of a partition's log is never silently dropped: the
/// broker names the file and byte position, keeps that partition offline (reads and writes get
/// KAFKA_STORAGE_ERROR instead of data with a hole), and keeps serving every other partition.
#[test]
fn corrupt_log_takes_its_partition_offline_with_a_clear_error() {
    let dir = temp_dir("corrupt");
    let data = dir.join("data");
    let serve = Serve::start(&data);
    serve.ok(&["topic", "create", "t"], None);
    serve.ok(&["topic", "create", "healthy"], None);
    for value in ["a", "b", "c"] {
        serve.ok(&["produce", "t"], Some(&format!("{value}\n")));
    }
    assert_eq!(serve.terminate(), Some(0));

    let log_file = data.join("t-0").join("00000000000000000000.log");
    let mut bytes = std::fs::read(&log_file).expect("read log");
    assert!(bytes.len() > 70, "{} bytes", bytes.len());
    // Inside the first batch's records, with two valid batches after it.
    bytes[65] ^= 0xff;
    std::fs::write(&log_file, &bytes).expect("corrupt log");

    let serve = Serve::start(&data);
    let startup = serve.startup_log.join("\n");
    assert!(
        startup.contains("00000000000000000000.log") && startup.contains("corrupt"),
        "the startup log names the damaged file: {startup}"
    );
    let consume = serve.cli(
        &[
            "consume",
            "t",
            "--from-beginning",
            "--count",
            "3",
            "--timeout-ms",
            "3000",
        ],
        None,
    );
    assert!(
        !consume.status.success(),
        "the damaged partition serves no data"
    );
    let stderr = String::from_utf8_lossy(&consume.stderr);
    assert!(
        stderr.contains("KAFKA_STORAGE_ERROR") || stderr.contains("no leader for t-0"),
        "{stderr}"
    );
    serve.ok(&["produce", "healthy"], Some("still here\n"));
    let out = serve.ok(
        &["consume", "healthy", "--from-beginning", "--count", "1"],
        None,
    );
    assert_eq!(out, "still here\n");
    assert_eq!(serve.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_logs_and_serves_its_metrics_address() {
    let dir = temp_dir("metrics");
    let serve = Serve::start(&dir);
    let marker = "metrics listening on http://";
    let addr = loop {
        let line = serve
            .log
            .recv_timeout(Duration::from_secs(20))
            .expect("strata serve logs its metrics address");
        if let Some(at) = line.find(marker) {
            let rest = &line[at + marker.len()..];
            break rest[..rest.find('/').expect("a /metrics path")].to_string();
        }
    };
    let mut stream = std::net::TcpStream::connect(&addr).expect("connect to metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: strata\r\n\r\n")
        .expect("write request");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).expect("read answer");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("\nstrata_connections 0\n"), "{answer}");
    assert_eq!(serve.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_config_file_is_rejected() {
    let dir = temp_dir("config");
    let config = dir.join("strata.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nflush = \"sometimes\"\n").expect("write");
    let output = Command::new(STRATA)
        .args(["serve", "--config"])
        .arg(&config)
        .env("NO_COLOR", "1")
        .output()
        .expect("run strata serve");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad flush policy"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
