//! Jepsen-style histories and the queue checker for Strata.
//!
//! This crate knows Strata only as a Kafka-compatible service: a workload drives clients
//! through the Kafka protocol, records what each client asked for and what it was told in a
//! [`History`](history::History), and the [`checker`] decides afterwards whether the
//! answers are consistent with a correct queue. The analysis follows Jepsen's Kafka workload
//! (`jepsen.tests.kafka`).
//!
//! - [`history`]: operations (`send`, `poll`, `assign`, `subscribe`, `commit`,
//!   `fetch-offsets`, `crash`), the [`HistoryBuilder`](history::HistoryBuilder), and JSON-lines
//!   storage ([`History::write_jsonl`](history::History::write_jsonl),
//!   [`History::read_jsonl`](history::History::read_jsonl)).
//! - [`checker`]: [`check`](checker::check) / [`check_with`](checker::check_with) produce a
//!   [`CheckReport`](checker::CheckReport): validity, anomalies by kind, counts, realtime lag.
//!
//! # Anomalies
//!
//! Per partition, the checker derives the log (which value sits at which offset) from every
//! acknowledged send and every poll, and reports:
//!
//! | kind | meaning |
//! |---|---|
//! | `inconsistent-offsets` | Two different values were seen at the same offset. |
//! | `duplicate` | One value was seen at more than one offset. |
//! | `lost-write` | A committed write was never read although readers went past its offset. |
//! | `unseen` | Acknowledged writes that no poll ever read, after the final polls from offset 0. |
//! | `G1a` | A poll read a value whose send failed (an aborted read). |
//! | `poll-skip` | A consumer's next poll of a partition skipped values after its previous one. |
//! | `nonmonotonic-poll` | A consumer's next poll of a partition went backwards or re-read. |
//! | `int-poll-skip` | Within one poll, consecutive values of a partition skipped values. |
//! | `int-nonmonotonic-poll` | Within one poll, values of a partition went backwards or repeated. |
//! | `int-send-skip` | One send's values to a partition were not adjacent (allowed: batches interleave). |
//! | `int-nonmonotonic-send` | One send's later value landed at or before an earlier one. |
//! | `nonmonotonic-send` | A producer's next send to a partition landed at or before its previous one. |
//! | `offset-changed` | An acknowledged offset was later seen holding another value, or the value elsewhere. |
//! | `group-offset-regression` | A consumer group's committed offset for a partition went backwards. |
//! | `unknown-value` | A poll returned a value no send ever wrote. |
//!
//! A send whose outcome is unknown (`info`) counts as committed only if some poll read one of
//! its values. The [`checker`] module documentation gives the precise definitions.
//!
//! # Example
//!
//! ```
//! use jepsen_like::checker::{anomaly, check};
//! use jepsen_like::history::{History, HistoryBuilder, Key};
//!
//! let p0 = Key::new("queue", 0);
//! let mut h = HistoryBuilder::new();
//! h.send_ok(1, &[(p0.clone(), 100, 0)]).unwrap(); // value 100 acknowledged at offset 0
//! h.send_ok(1, &[(p0.clone(), 101, 1)]).unwrap(); // value 101 acknowledged at offset 1
//! h.poll_ok(2, vec![(p0.clone(), vec![(1, 101)])]).unwrap(); // offset 0 never shows up
//! let history = h.build();
//!
//! let mut jsonl = Vec::new();
//! history.write_jsonl(&mut jsonl).unwrap();
//! let history = History::read_jsonl(&jsonl[..]).unwrap();
//!
//! let report = check(&history);
//! assert!(!report.valid);
//! assert!(report.anomalies.contains_key(anomaly::LOST_WRITE));
//! println!("{report}");
//! ```

pub mod checker;
pub mod history;
