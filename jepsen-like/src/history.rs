//! Histories of client operations, in the style of Jepsen.
//!
//! A history is a sequence of [`Op`]s. Every client operation appears twice: once when a process
//! *invokes* it ([`OpKind::Invoke`]) and once when it *completes* ([`OpKind::Ok`],
//! [`OpKind::Fail`] or [`OpKind::Info`]). `Ok` means the operation took effect, `Fail` means it
//! certainly did not, and `Info` means the outcome is unknown (a timeout, a crash). As in Jepsen,
//! a process whose operation completed with `Info` is never used again: the worker carries on
//! under a fresh process id, so everything one process does is sequential.
//!
//! The Kafka queue workload (after Jepsen's `jepsen.tests.kafka`) uses these operations:
//!
//! - `send`: a list of micro-operations `[key, value]`. On completion each carries the offset it
//!   was written at, when known (Jepsen's `[:send key [offset value]]`).
//! - `poll`: the completion maps each key to the `[offset, value]` pairs the poll returned, in
//!   the order returned.
//! - `assign` / `subscribe`: the keys a consumer is now assigned to (or whose topics it
//!   subscribes to); both replace the previous assignment.
//! - `commit`: a consumer group committed offsets (the next offset to consume) for some keys.
//! - `fetch-offsets`: a read of a consumer group's committed offsets.
//! - `crash`: the worker tore its client down (always completes with `info`).
//!
//! A *key* is a Kafka topic-partition, written `"topic/partition"`. Message values are unique
//! unsigned integers chosen by the workload.
//!
//! Histories are stored as JSON lines, one [`Op`] per line, for example:
//!
//! ```text
//! {"index":0,"process":1,"type":"invoke","time_ns":10,"f":"send","value":[{"key":"t/0","value":7}]}
//! {"index":1,"process":1,"type":"ok","time_ns":25,"f":"send","value":[{"key":"t/0","value":7,"offset":3}]}
//! {"index":2,"process":2,"type":"invoke","time_ns":30,"f":"poll","value":{}}
//! {"index":3,"process":2,"type":"ok","time_ns":41,"f":"poll","value":{"t/0":[[3,7]]}}
//! ```

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, Write};
use std::str::FromStr;

/// A Kafka topic-partition: the unit the queue checker reasons about (Jepsen's "key").
///
/// Serialized as the string `"topic/partition"`, so it can be a JSON object key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// Topic name.
    pub topic: String,
    /// Partition index within the topic.
    pub partition: i32,
}

impl Key {
    /// The key of partition `partition` of `topic`.
    pub fn new(topic: impl Into<String>, partition: i32) -> Key {
        Key {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

impl FromStr for Key {
    type Err = HistoryError;

    /// Parses `"topic/partition"`; the partition is after the last `/`.
    fn from_str(s: &str) -> Result<Key, HistoryError> {
        let (topic, partition) = s
            .rsplit_once('/')
            .ok_or_else(|| HistoryError::BadKey(s.to_string()))?;
        let partition: i32 = partition
            .parse()
            .map_err(|_| HistoryError::BadKey(s.to_string()))?;
        if topic.is_empty() || partition < 0 {
            return Err(HistoryError::BadKey(s.to_string()));
        }
        Ok(Key::new(topic, partition))
    }
}

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How an [`Op`] entry relates to its operation: the invocation or one of the three outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// The process started the operation.
    Invoke,
    /// The operation took effect.
    Ok,
    /// The operation certainly did not take effect.
    Fail,
    /// The outcome is unknown (timeout, crash); the process is retired.
    Info,
}

/// The function of an operation, without its value (see [`OpValue`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpF {
    /// Produce messages.
    Send,
    /// Consume messages.
    Poll,
    /// Manually assign partitions to the consumer.
    Assign,
    /// Subscribe the consumer (in a group) to topics.
    Subscribe,
    /// Commit consumer group offsets.
    Commit,
    /// Read consumer group committed offsets.
    FetchOffsets,
    /// Tear down the client.
    Crash,
}

impl fmt::Display for OpF {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            OpF::Send => "send",
            OpF::Poll => "poll",
            OpF::Assign => "assign",
            OpF::Subscribe => "subscribe",
            OpF::Commit => "commit",
            OpF::FetchOffsets => "fetch-offsets",
            OpF::Crash => "crash",
        };
        f.write_str(name)
    }
}

/// One `[key, value]` micro-operation of a send; `offset` is filled in on completion when the
/// broker acknowledged the write (Jepsen's `[:send key [offset value]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMop {
    /// The partition written to.
    pub key: Key,
    /// The (unique) message value.
    pub value: u64,
    /// The offset the broker assigned, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// What a poll returned: for each key, the `(offset, value)` pairs in the order returned.
pub type PollReads = BTreeMap<Key, Vec<(u64, u64)>>;

/// Consumer group offsets: the group and, per key, the committed offset (the next offset the
/// group will consume).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupOffsets {
    /// The consumer group id.
    pub group: String,
    /// Committed offset per partition.
    pub offsets: BTreeMap<Key, u64>,
}

/// The function of an operation together with its value. Serialized (flattened into [`Op`]) as
/// the two JSON fields `"f"` and `"value"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", content = "value", rename_all = "kebab-case")]
pub enum OpValue {
    /// Micro-operations of a send; offsets known only on an `ok` completion.
    Send(Vec<SendMop>),
    /// Reads of a poll; empty on the invocation.
    Poll(PollReads),
    /// The keys assigned (replaces the previous assignment).
    Assign(Vec<Key>),
    /// Keys whose topics the consumer subscribes to (replaces the previous subscription).
    Subscribe(Vec<Key>),
    /// Offsets committed for a group.
    Commit(GroupOffsets),
    /// Committed offsets of a group; empty `offsets` on the invocation.
    FetchOffsets(GroupOffsets),
    /// The client was torn down.
    Crash,
}

impl OpValue {
    /// The function of this value.
    pub fn f(&self) -> OpF {
        match self {
            OpValue::Send(_) => OpF::Send,
            OpValue::Poll(_) => OpF::Poll,
            OpValue::Assign(_) => OpF::Assign,
            OpValue::Subscribe(_) => OpF::Subscribe,
            OpValue::Commit(_) => OpF::Commit,
            OpValue::FetchOffsets(_) => OpF::FetchOffsets,
            OpValue::Crash => OpF::Crash,
        }
    }
}

/// One entry of a history: an invocation or a completion of an operation by a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history, dense from 0.
    pub index: u64,
    /// The logical process (single-threaded client) performing the operation.
    pub process: u64,
    /// Invocation or outcome.
    #[serde(rename = "type")]
    pub kind: OpKind,
    /// When this entry happened, in nanoseconds since the start of the test.
    pub time_ns: u64,
    /// The function and value (`"f"` and `"value"` in JSON).
    #[serde(flatten)]
    pub value: OpValue,
    /// Why the operation failed or is indefinite, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Keys whose assignment changed (a consumer group rebalance) while this operation ran;
    /// the checker does not expect contiguous reads across a rebalance of a key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rebalanced: Vec<Key>,
}

impl Op {
    /// The function of this operation.
    pub fn f(&self) -> OpF {
        self.value.f()
    }
}

/// Errors reading, writing or building a history.
#[derive(Debug)]
pub enum HistoryError {
    /// An I/O error from the underlying reader or writer.
    Io(std::io::Error),
    /// A line of a JSON-lines history did not parse (`line` is 1-based).
    Json {
        /// 1-based line number.
        line: u64,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A key was not of the form `"topic/partition"`.
    BadKey(String),
    /// The history breaks a structural rule (see [`History::validate`]).
    Malformed {
        /// Index of the offending entry.
        index: u64,
        /// What rule it breaks.
        reason: String,
    },
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryError::Io(e) => write!(f, "history I/O error: {e}"),
            HistoryError::Json { line, source } => {
                write!(f, "history line {line} is not a valid op: {source}")
            }
            HistoryError::BadKey(s) => write!(f, "bad key {s:?}: expected \"topic/partition\""),
            HistoryError::Malformed { index, reason } => {
                write!(f, "malformed history at op {index}: {reason}")
            }
        }
    }
}

impl std::error::Error for HistoryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HistoryError::Io(e) => Some(e),
            HistoryError::Json { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<std::io::Error> for HistoryError {
    fn from(e: std::io::Error) -> HistoryError {
        HistoryError::Io(e)
    }
}

/// A well-formed history (see [`History::validate`] for the rules).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Op>", into = "Vec<Op>")]
pub struct History {
    ops: Vec<Op>,
}

impl TryFrom<Vec<Op>> for History {
    type Error = HistoryError;

    fn try_from(ops: Vec<Op>) -> Result<History, HistoryError> {
        History::from_ops(ops)
    }
}

impl From<History> for Vec<Op> {
    fn from(h: History) -> Vec<Op> {
        h.ops
    }
}

/// Tracks, per process, the operation in flight and whether the process crashed; shared by
/// validation and the builder so both enforce the same rules.
#[derive(Debug, Clone, Default)]
struct ProcessTable {
    /// Process -> f of the invocation in flight.
    pending: BTreeMap<u64, OpF>,
    /// Processes retired by an `info` completion.
    crashed: std::collections::BTreeSet<u64>,
    last_time_ns: u64,
    next_index: u64,
}

impl ProcessTable {
    fn check(&self, op: &Op) -> Result<(), String> {
        if op.index != self.next_index {
            return Err(format!(
                "index {} where {} was expected",
                op.index, self.next_index
            ));
        }
        if op.time_ns < self.last_time_ns {
            return Err(format!(
                "time {} ns is before the previous op's {} ns",
                op.time_ns, self.last_time_ns
            ));
        }
        if self.crashed.contains(&op.process) {
            return Err(format!(
                "process {} is used after an info completion",
                op.process
            ));
        }
        match (op.kind, self.pending.get(&op.process)) {
            (OpKind::Invoke, Some(f)) => Err(format!(
                "process {} invokes {} while its {} is in flight",
                op.process,
                op.f(),
                f
            )),
            (OpKind::Invoke, None) => Ok(()),
            (_, None) => Err(format!(
                "process {} completes {} without an invocation",
                op.process,
                op.f()
            )),
            (_, Some(f)) if *f != op.f() => Err(format!(
                "process {} completes {} but invoked {}",
                op.process,
                op.f(),
                f
            )),
            (_, Some(_)) => Ok(()),
        }
    }

    fn apply(&mut self, op: &Op) {
        self.next_index += 1;
        self.last_time_ns = op.time_ns;
        match op.kind {
            OpKind::Invoke => {
                self.pending.insert(op.process, op.f());
            }
            OpKind::Ok | OpKind::Fail => {
                self.pending.remove(&op.process);
            }
            OpKind::Info => {
                self.pending.remove(&op.process);
                self.crashed.insert(op.process);
            }
        }
    }
}

impl History {
    /// An empty history.
    pub fn new() -> History {
        History::default()
    }

    /// A history from ops, checked with [`History::validate`].
    pub fn from_ops(ops: Vec<Op>) -> Result<History, HistoryError> {
        let h = History { ops };
        h.validate()?;
        Ok(h)
    }

    /// Checks the structural rules: indices are dense from 0; times never go backwards; each
    /// process has at most one operation in flight; every completion follows an invocation of
    /// the same function by the same process; a process is never used after an `info`
    /// completion. Invocations left without a completion at the end are allowed (the checker
    /// treats them as `info`).
    pub fn validate(&self) -> Result<(), HistoryError> {
        let mut table = ProcessTable::default();
        for op in &self.ops {
            table.check(op).map_err(|reason| HistoryError::Malformed {
                index: op.index,
                reason,
            })?;
            table.apply(op);
        }
        Ok(())
    }

    /// The entries, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Number of entries (invocations plus completions).
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True if there are no entries.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Writes the history as JSON lines, one op per line.
    pub fn write_jsonl(&self, out: &mut impl Write) -> Result<(), HistoryError> {
        for op in &self.ops {
            serde_json::to_writer(&mut *out, op).map_err(|e| {
                HistoryError::Io(std::io::Error::other(format!(
                    "serializing op {}: {e}",
                    op.index
                )))
            })?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        Ok(())
    }

    /// Reads a JSON-lines history (blank lines are ignored) and validates it.
    pub fn read_jsonl(input: impl BufRead) -> Result<History, HistoryError> {
        let mut ops = Vec::new();
        for (i, line) in input.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let op: Op = serde_json::from_str(&line).map_err(|source| HistoryError::Json {
                line: i as u64 + 1,
                source,
            })?;
            ops.push(op);
        }
        History::from_ops(ops)
    }

    /// Pairs every completion with its invocation, in history order of the completions;
    /// invocations that never completed come last, without completion.
    pub fn pairs(&self) -> Vec<OpPair> {
        let mut pending: BTreeMap<u64, usize> = BTreeMap::new();
        let mut out = Vec::new();
        for (pos, op) in self.ops.iter().enumerate() {
            if op.kind == OpKind::Invoke {
                pending.insert(op.process, pos);
            } else {
                out.push(OpPair {
                    invoke: pending.remove(&op.process),
                    completion: Some(pos),
                });
            }
        }
        let mut dangling: Vec<usize> = pending.into_values().collect();
        dangling.sort_unstable();
        out.extend(dangling.into_iter().map(|pos| OpPair {
            invoke: Some(pos),
            completion: None,
        }));
        out
    }
}

/// An operation's invocation and completion, as positions in [`History::ops`]. At least one
/// is present; in a validated history only `completion` can be missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpPair {
    /// Position of the invocation.
    pub invoke: Option<usize>,
    /// Position of the completion, if the operation completed.
    pub completion: Option<usize>,
}

/// Builds a well-formed [`History`] incrementally: for tests and for workload drivers.
///
/// The `*_at` methods take explicit times; the others use an internal clock that advances by
/// `step_ns` (default 1 ms) per entry. Every method enforces the rules of
/// [`History::validate`] and returns [`HistoryError::Malformed`] instead of recording a
/// broken entry.
#[derive(Debug, Clone)]
pub struct HistoryBuilder {
    ops: Vec<Op>,
    table: ProcessTable,
    step_ns: u64,
}

impl Default for HistoryBuilder {
    fn default() -> HistoryBuilder {
        HistoryBuilder::new()
    }
}

impl HistoryBuilder {
    /// An empty builder whose clock steps 1 ms per entry.
    pub fn new() -> HistoryBuilder {
        HistoryBuilder {
            ops: Vec::new(),
            table: ProcessTable::default(),
            step_ns: 1_000_000,
        }
    }

    /// Sets how far the internal clock advances per entry.
    pub fn with_step_ns(mut self, step_ns: u64) -> HistoryBuilder {
        self.step_ns = step_ns;
        self
    }

    /// The time of the last entry (0 if none).
    pub fn last_time_ns(&self) -> u64 {
        self.table.last_time_ns
    }

    fn next_time_ns(&self) -> u64 {
        if self.ops.is_empty() {
            0
        } else {
            self.table.last_time_ns.saturating_add(self.step_ns)
        }
    }

    fn push(
        &mut self,
        process: u64,
        kind: OpKind,
        time_ns: u64,
        value: OpValue,
    ) -> Result<&mut Op, HistoryError> {
        let op = Op {
            index: self.table.next_index,
            process,
            kind,
            time_ns,
            value,
            error: None,
            rebalanced: Vec::new(),
        };
        self.table
            .check(&op)
            .map_err(|reason| HistoryError::Malformed {
                index: op.index,
                reason,
            })?;
        self.table.apply(&op);
        self.ops.push(op);
        let last = self.ops.len() - 1;
        Ok(&mut self.ops[last])
    }

    /// Records that `process` invoked an operation at `time_ns`. Returns the new entry (its
    /// `index` identifies it).
    pub fn invoke_at(
        &mut self,
        process: u64,
        time_ns: u64,
        value: OpValue,
    ) -> Result<&mut Op, HistoryError> {
        self.push(process, OpKind::Invoke, time_ns, value)
    }

    /// Records the outcome (`kind` must not be `Invoke`) of `process`'s operation in flight.
    /// The returned entry can be annotated (`error`, `rebalanced`).
    pub fn complete_at(
        &mut self,
        process: u64,
        kind: OpKind,
        time_ns: u64,
        value: OpValue,
    ) -> Result<&mut Op, HistoryError> {
        if kind == OpKind::Invoke {
            return Err(HistoryError::Malformed {
                index: self.table.next_index,
                reason: "a completion cannot have type invoke".to_string(),
            });
        }
        self.push(process, kind, time_ns, value)
    }

    /// [`HistoryBuilder::invoke_at`] at the internal clock's next time.
    pub fn invoke(&mut self, process: u64, value: OpValue) -> Result<&mut Op, HistoryError> {
        let t = self.next_time_ns();
        self.invoke_at(process, t, value)
    }

    /// [`HistoryBuilder::complete_at`] at the internal clock's next time.
    pub fn complete(
        &mut self,
        process: u64,
        kind: OpKind,
        value: OpValue,
    ) -> Result<&mut Op, HistoryError> {
        let t = self.next_time_ns();
        self.complete_at(process, kind, t, value)
    }

    fn invoke_complete(
        &mut self,
        process: u64,
        invoke: OpValue,
        kind: OpKind,
        completion: OpValue,
    ) -> Result<(), HistoryError> {
        self.invoke(process, invoke)?;
        self.complete(process, kind, completion)?;
        Ok(())
    }

    /// A send of `(key, value, offset)` micro-ops, invoked and acknowledged.
    pub fn send_ok(&mut self, process: u64, mops: &[(Key, u64, u64)]) -> Result<(), HistoryError> {
        let invoke = mops
            .iter()
            .map(|(k, v, _)| (k.clone(), *v))
            .collect::<Vec<_>>();
        let done = mops
            .iter()
            .map(|(key, value, offset)| SendMop {
                key: key.clone(),
                value: *value,
                offset: Some(*offset),
            })
            .collect();
        self.invoke_complete(
            process,
            send_value(&invoke),
            OpKind::Ok,
            OpValue::Send(done),
        )
    }

    /// A send of `(key, value)` micro-ops, invoked and definitely failed.
    pub fn send_fail(&mut self, process: u64, mops: &[(Key, u64)]) -> Result<(), HistoryError> {
        self.invoke_complete(process, send_value(mops), OpKind::Fail, send_value(mops))
    }

    /// A send of `(key, value)` micro-ops, invoked with an unknown outcome (retires `process`).
    pub fn send_info(&mut self, process: u64, mops: &[(Key, u64)]) -> Result<(), HistoryError> {
        self.invoke_complete(process, send_value(mops), OpKind::Info, send_value(mops))
    }

    /// A poll, invoked and returning `reads` (key, `(offset, value)` pairs in order).
    pub fn poll_ok(
        &mut self,
        process: u64,
        reads: Vec<(Key, Vec<(u64, u64)>)>,
    ) -> Result<(), HistoryError> {
        let mut map = PollReads::new();
        for (k, pairs) in reads {
            map.entry(k).or_default().extend(pairs);
        }
        self.invoke_complete(
            process,
            OpValue::Poll(PollReads::new()),
            OpKind::Ok,
            OpValue::Poll(map),
        )
    }

    /// A successful manual assignment of `keys`.
    pub fn assign(&mut self, process: u64, keys: &[Key]) -> Result<(), HistoryError> {
        let v = OpValue::Assign(keys.to_vec());
        self.invoke_complete(process, v.clone(), OpKind::Ok, v)
    }

    /// A successful subscription to the topics of `keys`.
    pub fn subscribe(&mut self, process: u64, keys: &[Key]) -> Result<(), HistoryError> {
        let v = OpValue::Subscribe(keys.to_vec());
        self.invoke_complete(process, v.clone(), OpKind::Ok, v)
    }

    /// A successful commit of `offsets` for `group`.
    pub fn commit_ok(
        &mut self,
        process: u64,
        group: &str,
        offsets: &[(Key, u64)],
    ) -> Result<(), HistoryError> {
        let v = OpValue::Commit(group_offsets(group, offsets));
        self.invoke_complete(process, v.clone(), OpKind::Ok, v)
    }

    /// A successful read of `group`'s committed offsets, which returned `offsets`.
    pub fn fetch_offsets_ok(
        &mut self,
        process: u64,
        group: &str,
        offsets: &[(Key, u64)],
    ) -> Result<(), HistoryError> {
        self.invoke_complete(
            process,
            OpValue::FetchOffsets(group_offsets(group, &[])),
            OpKind::Ok,
            OpValue::FetchOffsets(group_offsets(group, offsets)),
        )
    }

    /// The entries so far.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// The function of `process`'s operation in flight, if any.
    pub fn in_flight(&self, process: u64) -> Option<OpF> {
        self.table.pending.get(&process).copied()
    }

    /// True if `process` was retired by an `info` completion: the worker must continue under
    /// a fresh process id.
    pub fn is_retired(&self, process: u64) -> bool {
        self.table.crashed.contains(&process)
    }

    /// The finished history (operations still in flight stay without completion).
    pub fn build(self) -> History {
        let h = History { ops: self.ops };
        debug_assert!(
            h.validate().is_ok(),
            "the builder produced a malformed history"
        );
        h
    }
}

fn send_value(mops: &[(Key, u64)]) -> OpValue {
    OpValue::Send(
        mops.iter()
            .map(|(key, value)| SendMop {
                key: key.clone(),
                value: *value,
                offset: None,
            })
            .collect(),
    )
}

fn group_offsets(group: &str, offsets: &[(Key, u64)]) -> GroupOffsets {
    GroupOffsets {
        group: group.to_string(),
        offsets: offsets.iter().cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(p: i32) -> Key {
        Key::new("orders", p)
    }

    fn sample() -> History {
        let mut b = HistoryBuilder::new();
        b.send_ok(1, &[(k(0), 1, 0), (k(1), 2, 0)]).unwrap();
        b.send_fail(2, &[(k(0), 3)]).unwrap();
        b.assign(3, &[k(0), k(1)]).unwrap();
        b.poll_ok(3, vec![(k(0), vec![(0, 1)]), (k(1), vec![(0, 2)])])
            .unwrap();
        b.commit_ok(3, "g", &[(k(0), 1)]).unwrap();
        b.fetch_offsets_ok(3, "g", &[(k(0), 1)]).unwrap();
        b.invoke(4, OpValue::Crash).unwrap();
        b.complete(4, OpKind::Info, OpValue::Crash).unwrap().error =
            Some("client torn down".into());
        b.invoke(5, OpValue::Poll(PollReads::new())).unwrap();
        let p = b
            .complete(5, OpKind::Ok, OpValue::Poll(PollReads::new()))
            .unwrap();
        p.rebalanced = vec![k(1)];
        b.send_info(6, &[(k(1), 9)]).unwrap();
        // Left in flight.
        b.invoke(7, send_value(&[(k(2), 10)])).unwrap();
        b.build()
    }

    #[test]
    fn jsonl_round_trip() {
        let h = sample();
        let mut buf = Vec::new();
        h.write_jsonl(&mut buf).unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert_eq!(text.lines().count(), h.len());
        assert!(text.contains(r#""f":"send""#), "{text}");
        assert!(text.contains(r#""type":"ok""#), "{text}");
        assert!(text.contains(r#""orders/1":[[0,2]]"#), "{text}");
        let back = History::read_jsonl(&buf[..]).unwrap();
        assert_eq!(back, h);
        // Whole-history serde goes through validation too.
        let json = serde_json::to_string(&h).unwrap();
        let back: History = serde_json::from_str(&json).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn read_jsonl_reports_bad_lines_and_malformed_histories() {
        let bad = "{\"index\":0}\n";
        match History::read_jsonl(bad.as_bytes()) {
            Err(HistoryError::Json { line: 1, .. }) => {}
            other => panic!("expected a JSON error, got {other:?}"),
        }
        // A completion without invocation.
        let orphan = r#"{"index":0,"process":1,"type":"ok","time_ns":5,"f":"poll","value":{}}"#;
        match History::read_jsonl(orphan.as_bytes()) {
            Err(HistoryError::Malformed { index: 0, .. }) => {}
            other => panic!("expected a malformed history, got {other:?}"),
        }
        let bad_key = r#"{"index":0,"process":1,"type":"invoke","time_ns":5,"f":"assign","value":["nopartition"]}"#;
        assert!(History::read_jsonl(bad_key.as_bytes()).is_err());
    }

    #[test]
    fn builder_enforces_process_rules() {
        let mut b = HistoryBuilder::new();
        b.invoke(1, OpValue::Poll(PollReads::new())).unwrap();
        assert_eq!(b.in_flight(1), Some(OpF::Poll));
        assert_eq!(b.in_flight(2), None);
        assert!(b.invoke(1, OpValue::Crash).is_err(), "double invoke");
        assert!(
            b.complete(1, OpKind::Ok, OpValue::Crash).is_err(),
            "f mismatch"
        );
        assert!(
            b.complete(2, OpKind::Ok, OpValue::Crash).is_err(),
            "no invocation"
        );
        assert!(b
            .complete(1, OpKind::Invoke, OpValue::Poll(PollReads::new()))
            .is_err());
        b.complete(1, OpKind::Info, OpValue::Poll(PollReads::new()))
            .unwrap();
        assert!(b.is_retired(1));
        assert_eq!(b.in_flight(1), None);
        assert!(b.invoke(1, OpValue::Crash).is_err(), "reuse after info");
        assert!(b.invoke_at(2, 0, OpValue::Crash).is_err(), "time backwards");
        let h = b.build();
        assert_eq!(h.len(), 2);
        assert!(h.validate().is_ok());
    }

    #[test]
    fn pairs_match_invocations() {
        let h = sample();
        let pairs = h.pairs();
        assert_eq!(pairs.len(), 10);
        for pair in &pairs {
            if let (Some(i), Some(c)) = (pair.invoke, pair.completion) {
                assert_eq!(h.ops()[i].process, h.ops()[c].process);
                assert_eq!(h.ops()[i].kind, OpKind::Invoke);
                assert!(i < c);
            }
        }
        // The in-flight send is last, without completion.
        let last = pairs.last().unwrap();
        assert!(last.completion.is_none());
        assert_eq!(h.ops()[last.invoke.unwrap()].process, 7);
    }

    #[test]
    fn key_parsing() {
        assert_eq!("a/b/3".parse::<Key>().unwrap(), Key::new("a/b", 3));
        assert!("t/-1".parse::<Key>().is_err());
        assert!("/1".parse::<Key>().is_err());
        assert!("t/x".parse::<Key>().is_err());
        assert_eq!(Key::new("t", 4).to_string(), "t/4");
    }
}
