//! CI smoke test of `strata bench`: against a spawned `strata serve` on a free port in a temp
//! dir, an e2e run of about 2 seconds must produce and consume records and print a JSON report;
//! then `produce` (one request in flight, then pipelined) and `consume`. No timing assertion.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// A `strata serve` child, killed on drop.
struct Serve {
    child: Child,
    bootstrap: String,
}

impl Serve {
    /// Starts `strata serve` on 127.0.0.1:0 and waits for its "strata listening on" line.
    fn start(data_dir: &Path) -> Serve {
        let mut child = Command::new(STRATA)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
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
            // Keep draining stderr so the broker never blocks on a full pipe.
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let marker = "strata listening on ";
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
                let bootstrap = line[at + marker.len()..]
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '\u{1b}')
                    .collect();
                return Serve { child, bootstrap };
            }
        }
    }

    fn bench(&self, args: &[&str]) -> Output {
        let output = Command::new(STRATA)
            .arg("bench")
            .args(args)
            .args(["--bootstrap-server", &self.bootstrap])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("strata bench runs");
        assert!(
            output.status.success(),
            "strata bench {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn bench_e2e_json_then_produce_and_consume() {
    let dir = temp_dir("smoke");
    let serve = Serve::start(&dir.join("data"));

    let output = serve.bench(&[
        "e2e",
        "--topic",
        "smoke",
        "--partitions",
        "2",
        "--consumers",
        "2",
        "--duration-secs",
        "2",
        "--throughput",
        "20000",
        "--batch-size",
        "100",
        "--json",
    ]);
    let stdout = String::from_utf8(output.stdout).expect("utf-8 stdout");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(report["mode"], "e2e");
    let produced = report["produce"]["records"]
        .as_u64()
        .expect("produce.records");
    let consumed = report["consume"]["records"]
        .as_u64()
        .expect("consume.records");
    assert!(produced > 0, "{stdout}");
    assert!(consumed > 0, "{stdout}");
    for field in ["p50", "p95", "p99", "p999", "max"] {
        assert!(
            report["end_to_end_latency_ms"][field].as_f64().is_some(),
            "{field} in {stdout}"
        );
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("records/s"), "progress lines: {stderr}");

    let output = serve.bench(&[
        "produce",
        "--topic",
        "text",
        "--num-records",
        "3000",
        "--record-size",
        "1024",
        "--acks",
        "all",
        "--quiet",
    ]);
    let text = String::from_utf8(output.stdout).expect("utf-8 stdout");
    assert!(text.contains("produce: 3000 records"), "{text}");
    assert!(output.stderr.is_empty(), "--quiet prints no progress");

    // Pipelined: 4 requests in flight per producer, 100 records each.
    let output = serve.bench(&[
        "produce",
        "--topic",
        "text",
        "--num-records",
        "2000",
        "--record-size",
        "1024",
        "--acks",
        "all",
        "--batch-size",
        "100",
        "--max-in-flight",
        "4",
        "--quiet",
    ]);
    let text = String::from_utf8(output.stdout).expect("utf-8 stdout");
    assert!(text.contains("produce: 2000 records"), "{text}");
    assert!(text.contains("4 requests in flight each"), "{text}");
    assert!(text.contains(" 0 errors"), "{text}");

    let output = serve.bench(&["consume", "--topic", "text", "--json", "--quiet"]);
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(report["consume"]["records"], 5000);
    assert_eq!(report["consume"]["bytes"], 5000 * 1024);

    drop(serve);
    let _ = std::fs::remove_dir_all(&dir);
}
