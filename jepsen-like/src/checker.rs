//! The queue checker: finds ordering and durability anomalies in a Kafka-workload [`History`].
//!
//! The analysis follows Jepsen's `jepsen.tests.kafka` checker. For each key (topic-partition)
//! it first builds a *log*: offset -> set of values, from the offsets acknowledged by sends that
//! certainly committed and from every offset any poll returned. Removing the gaps (Kafka may
//! leave offsets unused, e.g. for transaction markers) gives the *version order* of the key:
//! the values in offset order, each with a dense *index*. Most anomalies are stated in terms of
//! that order. When an offset holds several values the order keeps the smallest; that offset is
//! reported as `inconsistent-offsets` anyway.
//!
//! A send that completed `ok` is *committed*. A send whose outcome is unknown (`info`, or never
//! completed) counts as committed only if some successful poll read one of its values. A
//! `fail`ed send certainly did not commit.
//!
//! # Anomalies (Jepsen's definitions)
//!
//! - `inconsistent-offsets`: sends and polls disagree on the value at an offset of a key: two
//!   different values were seen at the same offset.
//! - `duplicate`: the same value appears at more than one offset of a key.
//! - `lost-write`: a committed write that no successful poll read although it lies at or below
//!   (in version order) the highest value some poll read of that key: readers went past it, so
//!   it must have been visible, yet nobody saw it.
//! - `unseen`: acknowledged sends whose value no successful poll read, at the end of the
//!   history. A workload ends with final polls from offset 0 after healing every fault, so a
//!   non-empty `unseen` means messages were acknowledged and then vanished (every `lost-write`
//!   is also `unseen`).
//! - `G1a` (aborted read): a successful poll read a value written by a send that failed.
//! - `poll-skip`: two successive polls of the same key by one process (with no reassignment in
//!   between) skipped over values of the version order.
//! - `nonmonotonic-poll`: a process's poll started at or before (in version order) where its
//!   previous poll of that key ended: it went backwards or re-read a value.
//! - `int-poll-skip`: within one poll, two consecutive values of a key are not adjacent in the
//!   version order (values in between were skipped).
//! - `int-nonmonotonic-poll`: within one poll, a value of a key is at or before the previous
//!   value (in version order).
//! - `int-send-skip`: within one send, two consecutive writes to a key landed non-adjacently
//!   (another writer's values between them). Normal for Kafka (batches interleave), so it is
//!   allowed by default.
//! - `int-nonmonotonic-send`: within one send, a later write to a key landed at or before an
//!   earlier one.
//! - `nonmonotonic-send`: a process's send to a key landed at or before (in version order) the
//!   last value its previous send wrote to that key.
//!
//! # Strata's own checks
//!
//! - `offset-changed`: an acknowledged `(offset, value)` was contradicted: a poll saw another
//!   value at that offset, or saw the value at another offset, or another acknowledged send got
//!   the same offset or the same value at a different offset. Offsets, once acknowledged, never
//!   change. (Always accompanied by `inconsistent-offsets` or `duplicate`; this one names the
//!   broken acknowledgment.)
//! - `group-offset-regression`: a consumer group's committed offset for a partition went
//!   backwards in real time: a successful commit or offset fetch, invoked after another
//!   successful commit or fetch of the same group and partition had completed, carries a lower
//!   offset. Workloads commit monotonically per group and partition, as Kafka consumers do.
//! - `unknown-value`: a poll returned a value that no send in the history ever wrote
//!   (corruption, or a stray record).
//!
//! The checker also measures *realtime lag* (Jepsen's definition): for each successful poll
//! and each key the consumer is positioned on, how long before the poll was invoked the
//! consumer's position had already stopped being the end of the log, as proven by some
//! completed operation that saw a higher offset. It reports the maximum and the 99th
//! percentile.
//!
//! # Differences from Jepsen
//!
//! - Not implemented: transactional anomalies (Elle cycles, `precommitted-read`) and consume
//!   counts, since the workload has no transactions.
//! - A poll that returns nothing for a key does not reset the `poll-skip` /
//!   `nonmonotonic-poll` comparison for that key (in Jepsen it does, hiding a skip across it).
//! - Where an offset holds several values the version order keeps the smallest (Jepsen keeps
//!   an arbitrary one), so reports are deterministic.
//! - `offset-changed`, `group-offset-regression` and `unknown-value` are Strata's additions.

use crate::history::{History, Key, OpF, OpKind, OpValue, PollReads};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Names of the anomaly kinds, as used in [`CheckReport::anomalies`].
pub mod anomaly {
    /// Two values at one offset.
    pub const INCONSISTENT_OFFSETS: &str = "inconsistent-offsets";
    /// One value at two offsets.
    pub const DUPLICATE: &str = "duplicate";
    /// A committed write below the highest read that nobody read.
    pub const LOST_WRITE: &str = "lost-write";
    /// Acknowledged writes never read.
    pub const UNSEEN: &str = "unseen";
    /// A read of a failed write.
    pub const G1A: &str = "G1a";
    /// A process's successive polls skipped values.
    pub const POLL_SKIP: &str = "poll-skip";
    /// A process's successive polls went backwards.
    pub const NONMONOTONIC_POLL: &str = "nonmonotonic-poll";
    /// One poll skipped values.
    pub const INT_POLL_SKIP: &str = "int-poll-skip";
    /// One poll went backwards.
    pub const INT_NONMONOTONIC_POLL: &str = "int-nonmonotonic-poll";
    /// One send's writes to a key were not adjacent.
    pub const INT_SEND_SKIP: &str = "int-send-skip";
    /// One send's writes to a key went backwards.
    pub const INT_NONMONOTONIC_SEND: &str = "int-nonmonotonic-send";
    /// A process's successive sends to a key went backwards.
    pub const NONMONOTONIC_SEND: &str = "nonmonotonic-send";
    /// An acknowledged offset was contradicted.
    pub const OFFSET_CHANGED: &str = "offset-changed";
    /// A committed group offset went backwards.
    pub const GROUP_OFFSET_REGRESSION: &str = "group-offset-regression";
    /// A read of a value nobody wrote.
    pub const UNKNOWN_VALUE: &str = "unknown-value";

    /// Every kind the checker reports.
    pub const ALL: [&str; 15] = [
        INCONSISTENT_OFFSETS,
        DUPLICATE,
        LOST_WRITE,
        UNSEEN,
        G1A,
        POLL_SKIP,
        NONMONOTONIC_POLL,
        INT_POLL_SKIP,
        INT_NONMONOTONIC_POLL,
        INT_SEND_SKIP,
        INT_NONMONOTONIC_SEND,
        NONMONOTONIC_SEND,
        OFFSET_CHANGED,
        GROUP_OFFSET_REGRESSION,
        UNKNOWN_VALUE,
    ];
}

/// Which anomaly kinds do not make a history invalid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOptions {
    /// Anomaly kinds reported but tolerated.
    pub allowed: BTreeSet<String>,
}

impl CheckOptions {
    /// For consumers using `assign`: only `int-send-skip` is tolerated (as in Jepsen).
    pub fn assign_mode() -> CheckOptions {
        CheckOptions {
            allowed: [anomaly::INT_SEND_SKIP.to_string()].into_iter().collect(),
        }
    }

    /// For consumers using `subscribe`: rebalances may move a partition between consumers
    /// at any time, so `poll-skip` and `nonmonotonic-poll` are tolerated too (as in Jepsen).
    pub fn subscribe_mode() -> CheckOptions {
        CheckOptions {
            allowed: [
                anomaly::INT_SEND_SKIP,
                anomaly::POLL_SKIP,
                anomaly::NONMONOTONIC_POLL,
            ]
            .into_iter()
            .map(String::from)
            .collect(),
        }
    }
}

impl Default for CheckOptions {
    fn default() -> CheckOptions {
        CheckOptions::assign_mode()
    }
}

/// One instance of an anomaly. Fields that do not apply are empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnomalyDetail {
    /// The partition concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Key>,
    /// The consumer group concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Indices (in the history) of the completions involved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ops: Vec<u64>,
    /// Message values involved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<u64>,
    /// Offsets involved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offsets: Vec<u64>,
    /// Distance in version-order indices, for skips and inversions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<i64>,
    /// Values skipped over, in version order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<u64>,
    /// A one-line human explanation.
    pub message: String,
}

impl AnomalyDetail {
    fn new(key: &Key, message: String) -> AnomalyDetail {
        AnomalyDetail {
            key: Some(key.clone()),
            group: None,
            ops: Vec::new(),
            values: Vec::new(),
            offsets: Vec::new(),
            delta: None,
            skipped: Vec::new(),
            message,
        }
    }
}

/// One realtime-lag measurement: a poll's lag on one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LagSample {
    /// Index of the poll's completion.
    pub op: u64,
    /// The polling process.
    pub process: u64,
    /// The key.
    pub key: Key,
    /// When the poll was invoked.
    pub time_ns: u64,
    /// The lag.
    pub lag_ns: u64,
}

/// Summary of realtime lag over all successful polls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LagStats {
    /// Number of (poll, key) measurements.
    pub samples: u64,
    /// Largest lag.
    pub max_ns: u64,
    /// 99th percentile (nearest rank).
    pub p99_ns: u64,
    /// The measurement with the largest lag (the first such one).
    pub worst: Option<LagSample>,
}

/// Counts describing the history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckStats {
    /// Sends completed `ok`.
    pub sends_ok: u64,
    /// Sends completed `fail`.
    pub sends_fail: u64,
    /// Sends with unknown outcome (`info`, or never completed).
    pub sends_info: u64,
    /// Acknowledged send micro-ops (values with an offset).
    pub values_acked: u64,
    /// Polls completed `ok`.
    pub polls_ok: u64,
    /// Polls completed `fail` or `info` (or never completed).
    pub polls_not_ok: u64,
    /// `(offset, value)` pairs returned by successful polls, repeats included.
    pub values_read: u64,
    /// Distinct `(key, value)` pairs returned by successful polls.
    pub distinct_values_read: u64,
    /// Acknowledged values never read.
    pub unseen: u64,
    /// Successful commits.
    pub commits_ok: u64,
    /// Keys (partitions) seen in the history.
    pub keys: u64,
    /// Realtime lag.
    pub lag: LagStats,
}

/// The checker's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    /// True when every reported anomaly kind is allowed by the options.
    pub valid: bool,
    /// Anomaly kind -> instances, in a deterministic order. Absent kinds were not found.
    pub anomalies: BTreeMap<String, Vec<AnomalyDetail>>,
    /// Reported kinds that are not allowed (they make the history invalid).
    pub bad_anomaly_kinds: Vec<String>,
    /// Counts and lag.
    pub stats: CheckStats,
}

impl CheckReport {
    /// The kinds found, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        self.anomalies.keys().map(String::as_str).collect()
    }
}

fn fmt_ms(ns: u64) -> String {
    format!("{:.3} ms", ns as f64 / 1e6)
}

/// At most this many instances per kind are printed by `Display`.
const DISPLAY_PER_KIND: usize = 10;

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        writeln!(f, "valid: {}", self.valid)?;
        writeln!(
            f,
            "sends: {} ok, {} fail, {} info; {} values acked; polls: {} ok, {} not ok; {} values read ({} distinct); {} unseen; {} commits; {} keys",
            s.sends_ok,
            s.sends_fail,
            s.sends_info,
            s.values_acked,
            s.polls_ok,
            s.polls_not_ok,
            s.values_read,
            s.distinct_values_read,
            s.unseen,
            s.commits_ok,
            s.keys
        )?;
        write!(
            f,
            "realtime lag: max {}, p99 {} over {} samples",
            fmt_ms(s.lag.max_ns),
            fmt_ms(s.lag.p99_ns),
            s.lag.samples
        )?;
        if let Some(w) = &s.lag.worst {
            write!(
                f,
                " (worst: process {} on {} at {})",
                w.process,
                w.key,
                fmt_ms(w.time_ns)
            )?;
        }
        writeln!(f)?;
        if self.anomalies.is_empty() {
            return writeln!(f, "anomalies: none");
        }
        for (kind, details) in &self.anomalies {
            let allowed = if self.bad_anomaly_kinds.contains(kind) {
                ""
            } else {
                " (allowed)"
            };
            writeln!(f, "{kind}: {}{allowed}", details.len())?;
            for d in details.iter().take(DISPLAY_PER_KIND) {
                writeln!(f, "  - {}", d.message)?;
            }
            if details.len() > DISPLAY_PER_KIND {
                writeln!(f, "  ... and {} more", details.len() - DISPLAY_PER_KIND)?;
            }
        }
        Ok(())
    }
}

/// A completed operation (or one that never completed, treated as `info`), normalized for
/// analysis.
#[derive(Debug)]
struct Event {
    /// History index of the completion (of the invocation if it never completed).
    index: u64,
    process: u64,
    kind: OpKind,
    f: OpF,
    invoke_time_ns: u64,
    complete_time_ns: u64,
    /// Send micro-ops per key in op order: (value, offset).
    writes: BTreeMap<Key, Vec<(u64, Option<u64>)>>,
    /// Poll reads.
    reads: PollReads,
    /// Assign/subscribe keys.
    keys: Vec<Key>,
    /// Commit / fetch-offsets.
    group: Option<(String, BTreeMap<Key, u64>)>,
    rebalanced: BTreeSet<Key>,
}

fn events(history: &History) -> Vec<Event> {
    let ops = history.ops();
    let mut out = Vec::new();
    for pair in history.pairs() {
        let (inv, done) = (pair.invoke, pair.completion);
        let (op, kind) = match (inv, done) {
            (_, Some(c)) => (&ops[c], ops[c].kind),
            (Some(i), None) => (&ops[i], OpKind::Info),
            (None, None) => continue,
        };
        let invoke_time_ns = inv.map_or(op.time_ns, |i| ops[i].time_ns);
        let last_time_ns = ops.last().map_or(0, |o| o.time_ns);
        let complete_time_ns = if done.is_some() {
            op.time_ns
        } else {
            last_time_ns
        };
        let mut e = Event {
            index: op.index,
            process: op.process,
            kind,
            f: op.f(),
            invoke_time_ns,
            complete_time_ns,
            writes: BTreeMap::new(),
            reads: PollReads::new(),
            keys: Vec::new(),
            group: None,
            rebalanced: op.rebalanced.iter().cloned().collect(),
        };
        match &op.value {
            OpValue::Send(mops) => {
                // A completion may omit the micro-ops: fall back to the invocation's.
                let mops = match (mops.is_empty(), inv) {
                    (true, Some(i)) => match &ops[i].value {
                        OpValue::Send(m) => m,
                        _ => mops,
                    },
                    _ => mops,
                };
                for m in mops {
                    e.writes
                        .entry(m.key.clone())
                        .or_default()
                        .push((m.value, m.offset));
                }
            }
            OpValue::Poll(reads) => {
                if done.is_some() {
                    e.reads = reads.clone();
                }
            }
            OpValue::Assign(keys) | OpValue::Subscribe(keys) => e.keys = keys.clone(),
            OpValue::Commit(g) | OpValue::FetchOffsets(g) => {
                e.group = Some((g.group.clone(), g.offsets.clone()))
            }
            OpValue::Crash => {}
        }
        out.push(e);
    }
    out
}

/// The version order of one key.
#[derive(Debug, Default)]
struct VersionOrder {
    /// Offset -> values seen there.
    log: BTreeMap<u64, BTreeSet<u64>>,
    /// Dense index -> representative value (smallest at its offset).
    by_index: Vec<u64>,
    /// Value -> dense index where it is the representative (the last such index).
    by_value: BTreeMap<u64, usize>,
    /// Dense index -> offset.
    offset_of_index: Vec<u64>,
}

impl VersionOrder {
    fn finish(&mut self) {
        for (offset, values) in &self.log {
            let Some(first) = values.iter().next() else {
                continue;
            };
            let i = self.by_index.len();
            self.by_index.push(*first);
            self.by_value.insert(*first, i);
            self.offset_of_index.push(*offset);
        }
    }

    /// Index distance from `v1` to `v2` (1 when adjacent); 1 if either is not in the order,
    /// as in Jepsen (nothing can be concluded).
    fn delta(&self, v1: u64, v2: u64) -> (i64, Option<(usize, usize)>) {
        match (self.by_value.get(&v1), self.by_value.get(&v2)) {
            (Some(&i1), Some(&i2)) => (i2 as i64 - i1 as i64, Some((i1, i2))),
            _ => (1, None),
        }
    }

    fn skipped(&self, i1: usize, i2: usize) -> Vec<u64> {
        if i2 > i1 + 1 {
            self.by_index[i1 + 1..i2].to_vec()
        } else {
            Vec::new()
        }
    }
}

/// Shared indexes over the events.
struct Analysis<'a> {
    events: &'a [Event],
    /// Key -> values read by successful polls.
    ok_reads: BTreeMap<Key, BTreeSet<u64>>,
    /// Key -> values written by failed sends.
    failed_writes: BTreeMap<Key, BTreeSet<u64>>,
    /// Key -> value -> event index of its writer (an `ok` writer preferred, else the first).
    writer_of: BTreeMap<Key, BTreeMap<u64, usize>>,
    /// Key -> value -> event indices of the successful polls that read it.
    readers_of: BTreeMap<Key, BTreeMap<u64, Vec<usize>>>,
    orders: BTreeMap<Key, VersionOrder>,
}

impl<'a> Analysis<'a> {
    fn new(events: &'a [Event]) -> Analysis<'a> {
        let mut ok_reads: BTreeMap<Key, BTreeSet<u64>> = BTreeMap::new();
        let mut failed_writes: BTreeMap<Key, BTreeSet<u64>> = BTreeMap::new();
        let mut writer_of: BTreeMap<Key, BTreeMap<u64, usize>> = BTreeMap::new();
        let mut readers_of: BTreeMap<Key, BTreeMap<u64, Vec<usize>>> = BTreeMap::new();
        for (ei, e) in events.iter().enumerate() {
            if e.kind == OpKind::Ok {
                for (k, pairs) in &e.reads {
                    for &(_, v) in pairs {
                        ok_reads.entry(k.clone()).or_default().insert(v);
                        let readers = readers_of
                            .entry(k.clone())
                            .or_default()
                            .entry(v)
                            .or_default();
                        if readers.last() != Some(&ei) {
                            readers.push(ei);
                        }
                    }
                }
            }
            for (k, ws) in &e.writes {
                for &(v, _) in ws {
                    if e.kind == OpKind::Fail {
                        failed_writes.entry(k.clone()).or_default().insert(v);
                    }
                    let w = writer_of.entry(k.clone()).or_default();
                    match w.get(&v) {
                        Some(&prev) if events[prev].kind == OpKind::Ok => {}
                        Some(_) if e.kind != OpKind::Ok => {}
                        _ => {
                            w.insert(v, ei);
                        }
                    }
                }
            }
        }
        let mut a = Analysis {
            events,
            ok_reads,
            failed_writes,
            writer_of,
            readers_of,
            orders: BTreeMap::new(),
        };
        let mut orders: BTreeMap<Key, VersionOrder> = BTreeMap::new();
        for e in events {
            // Polls of every outcome tell us what was in the log; sends only if committed.
            for (k, pairs) in &e.reads {
                let vo = orders.entry(k.clone()).or_default();
                for &(o, v) in pairs {
                    vo.log.entry(o).or_default().insert(v);
                }
            }
            if a.must_have_committed(e) {
                for (k, ws) in &e.writes {
                    let vo = orders.entry(k.clone()).or_default();
                    for &(v, o) in ws {
                        if let Some(o) = o {
                            vo.log.entry(o).or_default().insert(v);
                        }
                    }
                }
            }
        }
        for vo in orders.values_mut() {
            vo.finish();
        }
        a.orders = orders;
        a
    }

    /// True if the operation certainly took effect: `ok`, or `info` with a value that some
    /// successful poll read.
    fn must_have_committed(&self, e: &Event) -> bool {
        match e.kind {
            OpKind::Ok => true,
            OpKind::Info => e.writes.iter().any(|(k, ws)| {
                self.ok_reads
                    .get(k)
                    .is_some_and(|read| ws.iter().any(|(v, _)| read.contains(v)))
            }),
            OpKind::Fail | OpKind::Invoke => false,
        }
    }

    fn op(&self, ei: usize) -> u64 {
        self.events[ei].index
    }
}

/// Checks `history` with the default (assign-mode) options.
pub fn check(history: &History) -> CheckReport {
    check_with(history, &CheckOptions::default())
}

/// Checks `history`: finds every anomaly kind described in the module documentation, and
/// computes statistics and realtime lag.
pub fn check_with(history: &History, options: &CheckOptions) -> CheckReport {
    let events = events(history);
    let a = Analysis::new(&events);
    let mut anomalies: BTreeMap<String, Vec<AnomalyDetail>> = BTreeMap::new();
    let mut add = |kind: &str, details: Vec<AnomalyDetail>| {
        if !details.is_empty() {
            anomalies
                .entry(kind.to_string())
                .or_default()
                .extend(details);
        }
    };
    add(anomaly::INCONSISTENT_OFFSETS, inconsistent_offsets(&a));
    add(anomaly::DUPLICATE, duplicates(&a));
    add(anomaly::LOST_WRITE, lost_writes(&a));
    let (unseen_details, unseen_count) = unseen(&a);
    add(anomaly::UNSEEN, unseen_details);
    add(anomaly::G1A, g1a(&a));
    let (skips, nonmonotonic) = poll_skip_nonmonotonic(&a);
    add(anomaly::POLL_SKIP, skips);
    add(anomaly::NONMONOTONIC_POLL, nonmonotonic);
    let (skips, nonmonotonic) = int_poll(&a);
    add(anomaly::INT_POLL_SKIP, skips);
    add(anomaly::INT_NONMONOTONIC_POLL, nonmonotonic);
    let (skips, nonmonotonic) = int_send(&a);
    add(anomaly::INT_SEND_SKIP, skips);
    add(anomaly::INT_NONMONOTONIC_SEND, nonmonotonic);
    add(anomaly::NONMONOTONIC_SEND, nonmonotonic_sends(&a));
    add(anomaly::OFFSET_CHANGED, offset_changed(&a));
    add(
        anomaly::GROUP_OFFSET_REGRESSION,
        group_offset_regressions(&a),
    );
    add(anomaly::UNKNOWN_VALUE, unknown_values(&a));

    let bad_anomaly_kinds: Vec<String> = anomalies
        .keys()
        .filter(|k| !options.allowed.contains(*k))
        .cloned()
        .collect();
    let mut stats = stats(&a);
    stats.unseen = unseen_count;
    stats.lag = lag_stats(realtime_lag(&a));
    CheckReport {
        valid: bad_anomaly_kinds.is_empty(),
        anomalies,
        bad_anomaly_kinds,
        stats,
    }
}

fn stats(a: &Analysis<'_>) -> CheckStats {
    let mut s = CheckStats::default();
    let mut keys: BTreeSet<&Key> = BTreeSet::new();
    for e in a.events {
        keys.extend(e.writes.keys());
        keys.extend(e.reads.keys());
        match (e.f, e.kind) {
            (OpF::Send, OpKind::Ok) => {
                s.sends_ok += 1;
                s.values_acked += e
                    .writes
                    .values()
                    .flatten()
                    .filter(|(_, o)| o.is_some())
                    .count() as u64;
            }
            (OpF::Send, OpKind::Fail) => s.sends_fail += 1,
            (OpF::Send, _) => s.sends_info += 1,
            (OpF::Poll, OpKind::Ok) => {
                s.polls_ok += 1;
                s.values_read += e.reads.values().map(|p| p.len() as u64).sum::<u64>();
            }
            (OpF::Poll, _) => s.polls_not_ok += 1,
            (OpF::Commit, OpKind::Ok) => s.commits_ok += 1,
            _ => {}
        }
    }
    s.distinct_values_read = a.ok_reads.values().map(|v| v.len() as u64).sum();
    s.keys = keys.len() as u64;
    s
}

fn inconsistent_offsets(a: &Analysis<'_>) -> Vec<AnomalyDetail> {
    let mut out = Vec::new();
    for (k, vo) in &a.orders {
        for (index, (offset, values)) in vo.log.iter().enumerate() {
            if values.len() > 1 {
                let mut d = AnomalyDetail::new(
                    k,
                    format!(
                        "{k} offset {offset} (index {index}) holds {} values: {values:?}",
                        values.len()
                    ),
                );
                d.offsets = vec![*offset];
                d.values = values.iter().copied().collect();
                out.push(d);
            }
        }
    }
    out
}

fn duplicates(a: &Analysis<'_>) -> Vec<AnomalyDetail> {
    let mut out = Vec::new();
    for (k, vo) in &a.orders {
        let mut offsets_of: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for (offset, values) in &vo.log {
            for v in values {
                offsets_of.entry(*v).or_default().push(*offset);
            }
        }
        for (v, offsets) in offsets_of {
            if offsets.len() > 1 {
                let mut d = AnomalyDetail::new(
                    k,
                    format!(
                        "{k} value {v} appears at {} offsets: {offsets:?}",
                        offsets.len()
                    ),
                );
                d.values = vec![v];
                d.offsets = offsets;
                out.push(d);
            }
        }
    }
    out
}

fn lost_writes(a: &Analysis<'_>) -> Vec<AnomalyDetail> {
    let mut out = Vec::new();
    for (k, read) in &a.ok_reads {
        let Some(vo) = a.orders.get(k) else {
            continue;
        };
        // Earliest and latest dense index of every value in the raw log.
        let mut first_index: BTreeMap<u64, usize> = BTreeMap::new();
        let mut last_index: BTreeMap<u64, usize> = BTreeMap::new();
        for (i, values) in vo.log.values().enumerate() {
            for v in values {
                first_index.entry(*v).or_insert(i);
                last_index.insert(*v, i);
            }
        }
        // The highest index some reader must have gone past: the latest of the earliest
        // positions of the values read.
        let Some(bound) = read
            .iter()
            .filter_map(|v| first_index.get(v))
            .max()
            .copied()
        else {
            continue;
        };
        let max_reader = vo
            .by_index
            .get(bound)
            .and_then(|v| a.readers_of.get(k).and_then(|r| r.get(v)))
            .and_then(|r| r.first())
            .map(|&ei| a.op(ei));
        // Values whose last appearance is at or below the bound, in index order.
        let mut must_read: Vec<(usize, u64)> = last_index
            .iter()
            .filter(|(_, &i)| i <= bound)
            .map(|(&v, &i)| (i, v))
            .collect();
        must_read.sort_unstable();
        for (i, v) in must_read {
            if read.contains(&v) {
                continue;
            }
            let Some(&writer) = a.writer_of.get(k).and_then(|w| w.get(&v)) else {
                continue; // Never written: reported as unknown-value.
            };
            if !a.must_have_committed(&a.events[writer]) {
                continue;
            }
            let offset = vo.offset_of_index[i];
            let mut d = AnomalyDetail::new(
                k,
                format!(
                    "{k} value {v} at offset {offset} (index {i}) was committed by op {} but never read, although op {} read up to index {bound}",
                    a.op(writer),
                    max_reader.map_or("?".to_string(), |o| o.to_string())
                ),
            );
            d.values = vec![v];
            d.offsets = vec![offset];
            d.ops = std::iter::once(a.op(writer)).chain(max_reader).collect();
            d.delta = Some(bound as i64 - i as i64);
            out.push(d);
        }
    }
    out
}

/// Per key: acknowledged values minus values read by successful polls.
fn unseen(a: &Analysis<'_>) -> (Vec<AnomalyDetail>, u64) {
    let mut sent: BTreeMap<&Key, BTreeSet<u64>> = BTreeMap::new();
    for e in a.events.iter().filter(|e| e.kind == OpKind::Ok) {
        for (k, ws) in &e.writes {
            sent.entry(k)
                .or_default()
                .extend(ws.iter().map(|(v, _)| *v));
        }
    }
    let mut out = Vec::new();
    let mut total = 0;
    for (k, values) in sent {
        let read = a.ok_reads.get(k);
        let missing: Vec<u64> = values
            .into_iter()
            .filter(|v| !read.is_some_and(|r| r.contains(v)))
            .collect();
        if missing.is_empty() {
            continue;
        }
        total += missing.len() as u64;
        let shown: Vec<String> = missing.iter().take(16).map(u64::to_string).collect();
        let mut d = AnomalyDetail::new(
            k,
            format!(
                "{k}: {} acknowledged values never read: {}{}",
                missing.len(),
                shown.join(", "),
                if missing.len() > 16 { ", ..." } else { "" }
            ),
        );
        d.values = missing;
        out.push(d);
    }
    (out, total)
}

fn g1a(a: &Analysis<'_>) -> Vec<AnomalyDetail> {
    let mut out = Vec::new();
    for e in a.events.iter().filter(|e| e.kind == OpKind::Ok) {
        for (k, pairs) in &e.reads {
            let Some(failed) = a.failed_writes.get(k) else {
                continue;
            };
            for &(o, v) in pairs {
                if failed.contains(&v) {
                    let writer = a.writer_of.get(k).and_then(|w| w.get(&v)).map(|&w| a.op(w));
                    let mut d = AnomalyDetail::new(
                        k,
                        format!(
                            "op {} read {k} value {v} at offset {o}, written by failed op {}",
                            e.index,
                            writer.map_or("?".to_string(), |w| w.to_string())
                        ),
                    );
                    d.values = vec![v];
                    d.offsets = vec![o];
                    d.ops = writer.into_iter().chain([e.index]).collect();
                    out.push(d);
                }
            }
        }
    }
    out
}

/// Classifies the step from `v1` to `v2` in the version order of `k`: a skip (delta > 1) or
/// a nonmonotonic step (delta < 1), or nothing.
fn step_anomaly(
    a: &Analysis<'_>,
    k: &Key,
    v1: u64,
    v2: u64,
    what: impl FnOnce() -> String,
    ops: &[u64],
) -> Option<(bool, AnomalyDetail)> {
    let vo = a.orders.get(k)?;
    let (delta, idx) = vo.delta(v1, v2);
    if delta == 1 {
        return None;
    }
    let (i1, i2) = idx?;
    let what = what();
    let skip = delta > 1;
    let skipped = if skip { vo.skipped(i1, i2) } else { Vec::new() };
    let message = if skip {
        format!(
            "{what} on {k} went from value {v1} (index {i1}) to {v2} (index {i2}), skipping {} values {skipped:?}; ops {ops:?}",
            skipped.len()
        )
    } else {
        format!(
            "{what} on {k} went from value {v1} (index {i1}) to {v2} (index {i2}), delta {delta}; ops {ops:?}"
        )
    };
    let mut d = AnomalyDetail::new(k, message);
    d.values = vec![v1, v2];
    d.offsets = vec![vo.offset_of_index[i1], vo.offset_of_index[i2]];
    d.delta = Some(delta);
    d.skipped = skipped;
    d.ops = ops.to_vec();
    Some((skip, d))
}

fn poll_skip_nonmonotonic(a: &Analysis<'_>) -> (Vec<AnomalyDetail>, Vec<AnomalyDetail>) {
    let mut skips = Vec::new();
    let mut nonmonotonic = Vec::new();
    // Process -> key -> the last successful poll of that key (event index).
    let mut last_reads: BTreeMap<u64, BTreeMap<Key, usize>> = BTreeMap::new();
    for (ei, e) in a.events.iter().enumerate() {
        let last = last_reads.entry(e.process).or_default();
        match e.f {
            OpF::Assign | OpF::Subscribe if e.kind != OpKind::Fail => {
                last.retain(|k, _| e.keys.contains(k));
            }
            OpF::Poll => {
                for (k, pairs) in &e.reads {
                    let (Some(&prev), Some(&(_, first))) = (last.get(k), pairs.first()) else {
                        continue;
                    };
                    let Some(&(_, prev_last)) = a.events[prev].reads.get(k).and_then(|p| p.last())
                    else {
                        continue;
                    };
                    let what = || format!("process {}'s successive polls", e.process);
                    let ops = [a.op(prev), e.index];
                    if let Some((skip, d)) = step_anomaly(a, k, prev_last, first, what, &ops) {
                        if skip {
                            skips.push(d);
                        } else {
                            nonmonotonic.push(d);
                        }
                    }
                }
                if e.kind == OpKind::Ok {
                    for (k, pairs) in &e.reads {
                        if !pairs.is_empty() {
                            last.insert(k.clone(), ei);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    (skips, nonmonotonic)
}

fn int_poll(a: &Analysis<'_>) -> (Vec<AnomalyDetail>, Vec<AnomalyDetail>) {
    let mut skips = Vec::new();
    let mut nonmonotonic = Vec::new();
    for e in a.events {
        for (k, pairs) in &e.reads {
            if e.rebalanced.contains(k) {
                continue;
            }
            for w in pairs.windows(2) {
                let what = || format!("poll op {}", e.index);
                if let Some((skip, d)) = step_anomaly(a, k, w[0].1, w[1].1, what, &[e.index]) {
                    if skip {
                        skips.push(d);
                    } else {
                        nonmonotonic.push(d);
                    }
                }
            }
        }
    }
    (skips, nonmonotonic)
}

fn int_send(a: &Analysis<'_>) -> (Vec<AnomalyDetail>, Vec<AnomalyDetail>) {
    let mut skips = Vec::new();
    let mut nonmonotonic = Vec::new();
    for e in a.events {
        for (k, ws) in &e.writes {
            for w in ws.windows(2) {
                let what = || format!("send op {}", e.index);
                if let Some((skip, d)) = step_anomaly(a, k, w[0].0, w[1].0, what, &[e.index]) {
                    if skip {
                        skips.push(d);
                    } else {
                        nonmonotonic.push(d);
                    }
                }
            }
        }
    }
    (skips, nonmonotonic)
}

fn nonmonotonic_sends(a: &Analysis<'_>) -> Vec<AnomalyDetail> {
    let mut out = Vec::new();
    // Process -> key -> the last send (ok or info) to that key (event index).
    let mut last_sends: BTreeMap<u64, BTreeMap<Key, usize>> = BTreeMap::new();
    for (ei, e) in a.events.iter().enumerate() {
        if !matches!(e.kind, OpKind::Ok | OpKind::Info) {
            continue;
        }
        let last = last_sends.entry(e.process).or_default();
        match e.f {
            OpF::Assign | OpF::Subscribe => last.retain(|k, _| e.keys.contains(k)),
            OpF::Send => {
                for (k, ws) in &e.writes {
                    let (Some(&prev), Some(&(first, _))) = (last.get(k), ws.first()) else {
                        continue;
                    };
                    let Some(&(prev_last, _)) = a.events[prev].writes.get(k).and_then(|w| w.last())
                    else {
                        continue;
                    };
                    let what = || format!("process {}'s successive sends", e.process);
                    if let Some((false, d)) =
                        step_anomaly(a, k, prev_last, first, what, &[a.op(prev), e.index])
                    {
                        out.push(d);
                    }
                }
                for k in e.writes.keys() {
                    last.insert(k.clone(), ei);
                }
            }
            _ => {}
        }
    }
    out
}

fn offset_changed(a: &Analysis<'_>) -> Vec<AnomalyDetail> {
    // Per key: acknowledged (offset, value, event) and observed reads.
    let mut acks: BTreeMap<&Key, Vec<(u64, u64, usize)>> = BTreeMap::new();
    let mut reads_at: BTreeMap<&Key, BTreeMap<u64, BTreeMap<u64, Vec<usize>>>> = BTreeMap::new();
    let mut read_offsets_of: BTreeMap<&Key, BTreeMap<u64, BTreeSet<u64>>> = BTreeMap::new();
    for (ei, e) in a.events.iter().enumerate() {
        if e.kind == OpKind::Ok {
            for (k, ws) in &e.writes {
                for &(v, o) in ws {
                    if let Some(o) = o {
                        acks.entry(k).or_default().push((o, v, ei));
                    }
                }
            }
        }
        for (k, pairs) in &e.reads {
            for &(o, v) in pairs {
                let readers = reads_at
                    .entry(k)
                    .or_default()
                    .entry(o)
                    .or_default()
                    .entry(v)
                    .or_default();
                if readers.last() != Some(&ei) {
                    readers.push(ei);
                }
                read_offsets_of
                    .entry(k)
                    .or_default()
                    .entry(v)
                    .or_default()
                    .insert(o);
            }
        }
    }
    let mut out = Vec::new();
    for (k, key_acks) in &acks {
        let mut by_offset: BTreeMap<u64, Vec<(u64, usize)>> = BTreeMap::new();
        let mut by_value: BTreeMap<u64, Vec<(u64, usize)>> = BTreeMap::new();
        for &(o, v, ei) in key_acks {
            by_offset.entry(o).or_default().push((v, ei));
            by_value.entry(v).or_default().push((o, ei));
        }
        for &(o, v, ei) in key_acks {
            let mut seen: BTreeSet<(u64, u64)> = BTreeSet::new();
            let mut ops: BTreeSet<u64> = BTreeSet::new();
            // Reads of another value at the acknowledged offset.
            if let Some(at) = reads_at.get(k).and_then(|r| r.get(&o)) {
                for (&w, readers) in at {
                    if w != v {
                        seen.insert((o, w));
                        ops.extend(readers.iter().map(|&r| a.op(r)));
                    }
                }
            }
            // Reads of the value at another offset.
            if let Some(offsets) = read_offsets_of.get(k).and_then(|r| r.get(&v)) {
                for &o2 in offsets.iter().filter(|&&o2| o2 != o) {
                    seen.insert((o2, v));
                    if let Some(readers) = reads_at
                        .get(k)
                        .and_then(|r| r.get(&o2))
                        .and_then(|r| r.get(&v))
                    {
                        ops.extend(readers.iter().map(|&r| a.op(r)));
                    }
                }
            }
            // Other acknowledgments of the same offset or the same value; each pair once.
            for &(w, other) in by_offset.get(&o).into_iter().flatten() {
                if w != v && other > ei {
                    seen.insert((o, w));
                    ops.insert(a.op(other));
                }
            }
            for &(o2, other) in by_value.get(&v).into_iter().flatten() {
                if o2 != o && other > ei {
                    seen.insert((o2, v));
                    ops.insert(a.op(other));
                }
            }
            if seen.is_empty() {
                continue;
            }
            let observed: Vec<String> = seen.iter().map(|(o, v)| format!("{v}@{o}")).collect();
            let mut d = AnomalyDetail::new(
                k,
                format!(
                    "op {} acknowledged {k} value {v} at offset {o}, contradicted by {} (ops {:?})",
                    a.op(ei),
                    observed.join(", "),
                    ops
                ),
            );
            d.values = std::iter::once(v)
                .chain(seen.iter().map(|(_, w)| *w))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            d.offsets = std::iter::once(o)
                .chain(seen.iter().map(|(o, _)| *o))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            d.ops = std::iter::once(a.op(ei)).chain(ops).collect();
            out.push(d);
        }
    }
    out
}

fn group_offset_regressions(a: &Analysis<'_>) -> Vec<AnomalyDetail> {
    /// A successful commit or fetch of one group's offset for one partition.
    struct Item {
        ei: usize,
        commit: bool,
        offset: u64,
        invoke_ns: u64,
        complete_ns: u64,
    }
    let mut by_partition: BTreeMap<(&str, &Key), Vec<Item>> = BTreeMap::new();
    for (ei, e) in a.events.iter().enumerate() {
        if e.kind != OpKind::Ok {
            continue;
        }
        if let Some((group, offsets)) = &e.group {
            for (k, &offset) in offsets {
                by_partition
                    .entry((group.as_str(), k))
                    .or_default()
                    .push(Item {
                        ei,
                        commit: e.f == OpF::Commit,
                        offset,
                        invoke_ns: e.invoke_time_ns,
                        complete_ns: e.complete_time_ns,
                    });
            }
        }
    }
    let mut out = Vec::new();
    for ((group, k), items) in by_partition {
        // Items by completion time, with the running maximum offset (first one on ties).
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by_key(|&i| (items[i].complete_ns, items[i].ei));
        let mut running_max: Vec<usize> = Vec::with_capacity(order.len());
        for &i in &order {
            let best = match running_max.last() {
                Some(&m) if items[m].offset >= items[i].offset => m,
                _ => i,
            };
            running_max.push(best);
        }
        // Commit offset -> completion times of the commits of that offset.
        let mut commits_of: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
        for c in items.iter().filter(|c| c.commit) {
            commits_of
                .entry(c.offset)
                .or_default()
                .push((c.invoke_ns, c.complete_ns));
        }
        for b in &items {
            // Operations that finished before `b` began set a floor for it. But a fetch may
            // legitimately return the value of a commit that raced with a higher one: for a
            // fetch, only operations that began after every commit of the fetched value had
            // completed set a floor.
            let raced_until_ns = if b.commit {
                None
            } else {
                commits_of
                    .get(&b.offset)
                    .into_iter()
                    .flatten()
                    .filter(|(invoke_ns, _)| *invoke_ns < b.complete_ns)
                    .map(|(_, complete_ns)| *complete_ns)
                    .max()
            };
            let before = order.partition_point(|&i| items[i].complete_ns < b.invoke_ns);
            let floor = match raced_until_ns {
                None => before.checked_sub(1).map(|n| running_max[n]),
                Some(t) => {
                    // Candidates began after `t`, so they completed after `t` too.
                    let from = order.partition_point(|&i| items[i].complete_ns <= t);
                    order[from.min(before)..before]
                        .iter()
                        .copied()
                        .filter(|&i| items[i].invoke_ns > t)
                        .max_by_key(|&i| (items[i].offset, std::cmp::Reverse(items[i].ei)))
                }
            };
            let Some(p) = floor.map(|i| &items[i]).filter(|p| p.offset > b.offset) else {
                continue;
            };
            let (pe, be) = (&a.events[p.ei], &a.events[b.ei]);
            let mut d = AnomalyDetail::new(
                k,
                format!(
                    "group {group} {k}: {} op {} has offset {} after {} op {} completed with offset {}",
                    be.f, be.index, b.offset, pe.f, pe.index, p.offset
                ),
            );
            d.group = Some(group.to_string());
            d.offsets = vec![p.offset, b.offset];
            d.ops = vec![pe.index, be.index];
            d.delta = Some(b.offset as i64 - p.offset as i64);
            out.push(d);
        }
    }
    out
}

fn unknown_values(a: &Analysis<'_>) -> Vec<AnomalyDetail> {
    let mut out = Vec::new();
    for (k, readers) in &a.readers_of {
        let written = a.writer_of.get(k);
        for (v, eis) in readers {
            if written.is_some_and(|w| w.contains_key(v)) {
                continue;
            }
            let ops: Vec<u64> = eis.iter().map(|&ei| a.op(ei)).collect();
            let mut d = AnomalyDetail::new(
                k,
                format!("{k} value {v} was read by ops {ops:?} but never sent"),
            );
            d.values = vec![*v];
            d.ops = ops;
            out.push(d);
        }
    }
    out
}

/// Jepsen's realtime lag: one sample per successful poll and key the process is positioned on.
fn realtime_lag(a: &Analysis<'_>) -> Vec<LagSample> {
    // Key -> a staircase of (highest offset known to exist, completion time when first
    // known), both increasing. Offset i - 1 stopped being the end of the log at the time of
    // the first step whose offset is >= i. Events are in completion order and completion
    // times never decrease, so the first time recorded for an offset is the earliest.
    let mut known: BTreeMap<&Key, Vec<(u64, u64)>> = BTreeMap::new();
    for e in a.events {
        if !matches!(e.kind, OpKind::Ok | OpKind::Info) {
            continue;
        }
        for (k, o) in max_offsets(e) {
            let steps = known.entry(k).or_default();
            if steps.last().is_none_or(|&(m, _)| o > m) {
                debug_assert!(steps.last().is_none_or(|&(_, t)| t <= e.complete_time_ns));
                steps.push((o, e.complete_time_ns));
            }
        }
    }
    // When the offset before `next` stopped being the end of `k`'s log (`next` = 0: when the
    // log stopped being empty).
    let expired_at = |k: &Key, next: u64| -> Option<u64> {
        let steps = known.get(k)?;
        let n = steps.partition_point(|&(m, _)| m < next);
        steps.get(n).map(|&(_, t)| t)
    };
    let mut samples = Vec::new();
    // Process -> key -> the next offset to consume (one past the highest consumed).
    let mut positions: BTreeMap<u64, BTreeMap<&Key, u64>> = BTreeMap::new();
    for e in a.events.iter().filter(|e| e.kind == OpKind::Ok) {
        let pos = positions.entry(e.process).or_default();
        match e.f {
            OpF::Assign => {
                let mut next: BTreeMap<&Key, u64> = BTreeMap::new();
                for k in &e.keys {
                    next.insert(k, pos.get(k).copied().unwrap_or(0));
                }
                *pos = next;
            }
            OpF::Subscribe => pos.clear(),
            OpF::Poll => {
                for (k, o) in max_offsets(e) {
                    let p = pos.entry(k).or_insert(0);
                    *p = (*p).max(o.saturating_add(1));
                }
                for (&k, &o) in pos.iter() {
                    let lag_ns = expired_at(k, o).map_or(0, |t| e.invoke_time_ns.saturating_sub(t));
                    samples.push(LagSample {
                        op: e.index,
                        process: e.process,
                        key: k.clone(),
                        time_ns: e.invoke_time_ns,
                        lag_ns,
                    });
                }
            }
            _ => {}
        }
    }
    samples
}

/// Highest offset per key an operation sent (with a known offset) or read.
fn max_offsets(e: &Event) -> BTreeMap<&Key, u64> {
    let mut out: BTreeMap<&Key, u64> = BTreeMap::new();
    let mut note = |k, o: u64| {
        let m = out.entry(k).or_insert(o);
        *m = (*m).max(o);
    };
    for (k, ws) in &e.writes {
        for &(_, o) in ws {
            if let Some(o) = o {
                note(k, o);
            }
        }
    }
    for (k, pairs) in &e.reads {
        for &(o, _) in pairs {
            note(k, o);
        }
    }
    out
}

fn lag_stats(samples: Vec<LagSample>) -> LagStats {
    if samples.is_empty() {
        return LagStats::default();
    }
    let mut lags: Vec<u64> = samples.iter().map(|s| s.lag_ns).collect();
    lags.sort_unstable();
    let n = lags.len();
    // Nearest rank: the smallest value with at least 99% of samples at or below it.
    let rank = (n * 99).div_ceil(100).max(1);
    let max_ns = lags[n - 1];
    let worst = samples.into_iter().find(|s| s.lag_ns == max_ns);
    LagStats {
        samples: n as u64,
        max_ns,
        p99_ns: lags[rank - 1],
        worst,
    }
}

#[cfg(test)]
#[path = "checker_tests.rs"]
mod tests;
