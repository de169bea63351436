//! `strata tier status`: the remote tier of each partition, from the broker's admin endpoint
//! (`GET /v1/tier/status` on the metrics listener).

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The path of the tier status document on the admin (metrics) listener.
pub const STATUS_PATH: &str = "/v1/tier/status";

/// The largest response `strata tier status` reads (a status line per partition is ~400 bytes).
const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// `strata tier ...`
#[derive(Debug, Subcommand)]
pub enum TierCommand {
    /// Show, per partition, the local and remote offset ranges, pending uploads and bytes.
    Status(StatusArgs),
}

/// Flags of `strata tier status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The broker's admin (metrics) listener, `HOST:PORT`.
    #[arg(long, env = "STRATA_ADMIN", default_value = "127.0.0.1:9644")]
    pub admin: String,
    /// Only this topic.
    #[arg(long)]
    pub topic: Option<String>,
    /// Print the broker's JSON document (filtered by --topic) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Timeout of the whole request, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
}

/// The document served at [`STATUS_PATH`] (the broker's own type).
pub use strata_cluster::tier::TierStatusDocument as TierStatus;

/// Runs `strata tier ...`.
pub async fn run(command: TierCommand) -> anyhow::Result<()> {
    match command {
        TierCommand::Status(args) => status(args).await,
    }
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let body = http_get(
        &args.admin,
        STATUS_PATH,
        Duration::from_millis(args.timeout_ms),
    )
    .await?;
    let not_status = || {
        format!(
            "the broker at {} answered {STATUS_PATH} with a document that is not tier status JSON",
            args.admin
        )
    };
    let text = if args.json {
        // Passed through (fields this version does not know included), filtered by --topic.
        let mut document: serde_json::Value =
            serde_json::from_slice(&body).with_context(not_status)?;
        let partitions = document
            .get_mut("partitions")
            .and_then(serde_json::Value::as_array_mut)
            .ok_or_else(|| anyhow!("no \"partitions\" array"))
            .with_context(not_status)?;
        if let Some(topic) = &args.topic {
            partitions
                .retain(|p| p.get("topic").and_then(serde_json::Value::as_str) == Some(topic));
            if partitions.is_empty() {
                bail!("no partition of topic {topic:?} in the tier status");
            }
        }
        let mut text = serde_json::to_string_pretty(&document).context("cannot print JSON")?;
        text.push('\n');
        text
    } else {
        let mut status: TierStatus = serde_json::from_slice(&body).with_context(not_status)?;
        if let Some(topic) = &args.topic {
            status.partitions.retain(|p| &p.topic == topic);
            if status.partitions.is_empty() {
                bail!("no partition of topic {topic:?} in the tier status");
            }
        }
        status
            .partitions
            .sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        render_table(&status)
    };
    print!("{text}");
    Ok(())
}

/// An HTTP/1.0 GET of `path` on `addr`; the body of a 200 answer, an error for anything else.
async fn http_get(addr: &str, path: &str, timeout: Duration) -> anyhow::Result<Vec<u8>> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| {
                format!(
                    "cannot reach the broker's admin endpoint at {addr} \
                 (is the broker running with --metrics-listen {addr}?)"
                )
            })?;
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .with_context(|| format!("cannot send the request to {addr}"))?;
        let mut response = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = stream
                .read(&mut chunk)
                .await
                .with_context(|| format!("cannot read the answer of {addr}"))?;
            if n == 0 {
                break;
            }
            response.extend_from_slice(&chunk[..n]);
            if response.len() > RESPONSE_BYTES_MAX {
                bail!("the answer of {addr} is larger than {RESPONSE_BYTES_MAX} bytes");
            }
        }
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| {
            anyhow!(
                "the broker's admin endpoint at {addr} did not answer within {} ms",
                timeout.as_millis()
            )
        })??;
    parse_response(&response).with_context(|| format!("bad answer from {addr}{path}"))
}

/// Splits an HTTP/1.x response into status and body; the body of a 200, else an error with the
/// status line and body text.
fn parse_response(response: &[u8]) -> anyhow::Result<Vec<u8>> {
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no complete HTTP response head"))?;
    let head =
        std::str::from_utf8(&response[..head_end]).context("HTTP response head is not UTF-8")?;
    let mut body = &response[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        bail!("bad HTTP status line {status_line:?}");
    };
    if !version.starts_with("HTTP/1.") {
        bail!("bad HTTP status line {status_line:?}");
    }
    let code: u16 = code
        .parse()
        .map_err(|_| anyhow!("bad HTTP status line {status_line:?}"))?;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                let length: usize = value
                    .trim()
                    .parse()
                    .map_err(|_| anyhow!("bad Content-Length {:?}", value.trim()))?;
                if length > body.len() {
                    bail!(
                        "truncated body: Content-Length {length}, got {} bytes",
                        body.len()
                    );
                }
                body = &body[..length];
            }
        }
    }
    if code != 200 {
        let text = String::from_utf8_lossy(body);
        bail!("{status_line}: {}", text.trim());
    }
    Ok(body.to_vec())
}

/// `[start, end)` of a range, or `-` when empty or unknown.
fn range_text(start: Option<i64>, end: Option<i64>) -> String {
    match (start, end) {
        (Some(start), Some(end)) if end > start => format!("{start}..{end}"),
        _ => "-".to_string(),
    }
}

/// The table printed by `strata tier status`.
fn render_table(status: &TierStatus) -> String {
    let header = [
        "TOPIC",
        "PARTITION",
        "TIERED",
        "LOCAL",
        "REMOTE",
        "FILES",
        "PENDING",
        "LOCAL_BYTES",
        "REMOTE_BYTES",
        "LAG_MS",
        "LAST_ERROR",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for p in &status.partitions {
        rows.push(vec![
            p.topic.clone(),
            p.partition.to_string(),
            if p.remote_storage_enable { "yes" } else { "no" }.to_string(),
            range_text(Some(p.local_start_offset), Some(p.log_end_offset)),
            range_text(p.remote_start_offset, p.remote_end_offset),
            p.remote_files.to_string(),
            format!("{} ({} B)", p.pending_segments, p.pending_bytes),
            p.local_bytes.to_string(),
            p.remote_bytes.to_string(),
            p.offload_lag_ms.to_string(),
            p.last_error
                .as_deref()
                .map(|e| e.replace(['\n', '\r'], " "))
                .unwrap_or_else(|| "-".to_string()),
        ]);
    }
    let columns = header.len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut text = String::new();
    for row in &rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    if status.partitions.is_empty() {
        text.push_str("(no partitions)\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"partitions":[{"topic":"t","partition":0,"remote_storage_enable":true,
        "log_start_offset":0,"local_start_offset":120,"log_end_offset":500,"high_watermark":500,
        "remote_start_offset":0,"remote_end_offset":120,
        "remote_files":3,"remote_bytes":12345,"local_bytes":4567,
        "pending_segments":1,"pending_bytes":4000,"offload_lag_ms":0,"last_error":null},
        {"topic":"u","partition":1,"remote_storage_enable":false,
        "log_start_offset":0,"local_start_offset":0,"log_end_offset":0,"high_watermark":0,
        "remote_start_offset":null,"remote_end_offset":null,
        "remote_files":0,"remote_bytes":0,"local_bytes":0,
        "pending_segments":0,"pending_bytes":0,"offload_lag_ms":0,"last_error":"connection refused\nretrying"}]}"#;

    #[test]
    fn the_contract_document_parses_and_renders() {
        let status: TierStatus = serde_json::from_str(SAMPLE).expect("parse");
        assert_eq!(status.partitions.len(), 2);
        assert_eq!(status.partitions[0].remote_end_offset, Some(120));
        assert_eq!(status.partitions[1].remote_start_offset, None);
        let table = render_table(&status);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("TOPIC"), "{table}");
        assert!(lines[1].contains("120..500"), "{table}");
        assert!(lines[1].contains("0..120"), "{table}");
        assert!(lines[1].contains("1 (4000 B)"), "{table}");
        assert!(lines[2].ends_with("connection refused retrying"), "{table}");
        // Columns line up: REMOTE starts at the same position in every line.
        let at = lines[0].find("REMOTE ").expect("column");
        assert_eq!(&lines[1][at..at + 6], "0..120");
    }

    #[test]
    fn a_document_missing_a_field_is_an_error() {
        let missing = SAMPLE.replace("\"pending_bytes\":4000,", "");
        assert!(serde_json::from_str::<TierStatus>(&missing).is_err());
    }

    #[test]
    fn http_responses_are_checked() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}trailing";
        assert_eq!(parse_response(ok).expect("200"), b"{}");
        let no_length = b"HTTP/1.0 200 OK\r\n\r\n{\"a\":1}";
        assert_eq!(parse_response(no_length).expect("200"), b"{\"a\":1}");
        let not_found = b"HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\n\r\nnot found\n";
        let error = parse_response(not_found).expect_err("404");
        assert!(
            error.to_string().contains("404 Not Found: not found"),
            "{error}"
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").is_err());
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"SMTP 200 OK\r\n\r\n").is_err());
    }

    #[test]
    fn an_unreachable_endpoint_is_a_clear_error() {
        // Bind then drop: nothing listens on that port any more.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let error = runtime
            .block_on(http_get(
                &addr.to_string(),
                STATUS_PATH,
                Duration::from_secs(5),
            ))
            .expect_err("nothing listens");
        assert!(
            format!("{error:#}").contains("cannot reach the broker's admin endpoint"),
            "{error:#}"
        );
    }

    #[test]
    fn a_served_document_is_fetched() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let server = tokio::spawn(async move {
                let (mut stream, _) = listener.accept().await.expect("accept");
                let mut head = vec![0u8; 1024];
                let n = stream.read(&mut head).await.expect("read");
                let head = String::from_utf8_lossy(&head[..n]).to_string();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{SAMPLE}",
                    SAMPLE.len()
                );
                stream.write_all(answer.as_bytes()).await.expect("write");
                stream.shutdown().await.expect("shutdown");
                head
            });
            let body = http_get(&addr.to_string(), STATUS_PATH, Duration::from_secs(5))
                .await
                .expect("get");
            let head = server.await.expect("server");
            assert!(
                head.starts_with("GET /v1/tier/status HTTP/1.0\r\n"),
                "{head}"
            );
            let status: TierStatus = serde_json::from_slice(&body).expect("json");
            assert_eq!(status.partitions[0].topic, "t");
        });
    }
}
