//! Unit tests of the queue checker: one synthetic history per anomaly kind, a clean
//! concurrent history, realtime lag, and report rendering.

use super::*;
use crate::history::{GroupOffsets, HistoryBuilder, OpKind, OpValue, PollReads, SendMop};

type R = Result<(), crate::history::HistoryError>;

fn a() -> Key {
    Key::new("t", 0)
}

fn b() -> Key {
    Key::new("t", 1)
}

/// Asserts the report holds exactly the `expected` anomaly kinds.
fn assert_kinds(report: &CheckReport, expected: &[&str]) {
    let mut expected: Vec<&str> = expected.to_vec();
    expected.sort_unstable();
    assert_eq!(report.kinds(), expected, "report:\n{report}");
    for kind in report.kinds() {
        assert!(anomaly::ALL.contains(&kind), "unknown kind {kind}");
        assert!(!report.anomalies[kind].is_empty());
    }
}

fn build(f: impl FnOnce(&mut HistoryBuilder) -> R) -> History {
    let mut h = HistoryBuilder::new();
    f(&mut h).expect("test history is well formed");
    h.build()
}

#[test]
fn inconsistent_offsets() {
    let h = build(|h| {
        h.send_info(1, &[(a(), 1)])?;
        h.send_info(2, &[(a(), 2)])?;
        h.poll_ok(3, vec![(a(), vec![(0, 1)])])?;
        h.poll_ok(4, vec![(a(), vec![(0, 2)])])
    });
    let r = check(&h);
    assert_kinds(&r, &[anomaly::INCONSISTENT_OFFSETS]);
    assert!(!r.valid);
    let d = &r.anomalies[anomaly::INCONSISTENT_OFFSETS][0];
    assert_eq!(d.key, Some(a()));
    assert_eq!(d.offsets, vec![0]);
    assert_eq!(d.values, vec![1, 2]);
}

#[test]
fn duplicate() {
    let h = build(|h| {
        h.send_info(1, &[(a(), 1)])?;
        h.poll_ok(2, vec![(a(), vec![(0, 1)])])?;
        h.poll_ok(3, vec![(a(), vec![(1, 1)])])
    });
    let r = check(&h);
    assert_kinds(&r, &[anomaly::DUPLICATE]);
    let d = &r.anomalies[anomaly::DUPLICATE][0];
    assert_eq!(d.values, vec![1]);
    assert_eq!(d.offsets, vec![0, 1]);
}

#[test]
fn lost_write() {
    // Value 1 was acknowledged at offset 0; a reader saw offset 1, so offset 0 existed,
    // yet nobody ever read value 1. A lost write is always unseen too.
    let h = build(|h| {
        h.send_ok(1, &[(a(), 1, 0)])?;
        h.send_ok(1, &[(a(), 2, 1)])?;
        h.poll_ok(2, vec![(a(), vec![(1, 2)])])
    });
    let r = check(&h);
    assert_kinds(&r, &[anomaly::LOST_WRITE, anomaly::UNSEEN]);
    let d = &r.anomalies[anomaly::LOST_WRITE][0];
    assert_eq!(d.values, vec![1]);
    assert_eq!(d.offsets, vec![0]);
    // The writer (op 1) and the reader that went past it (op 5).
    assert_eq!(d.ops, vec![1, 5]);
    assert_eq!(r.stats.unseen, 1);
}

#[test]
fn crashed_send_not_read_is_not_lost() {
    // The info send of value 1 was never read: it may not have happened, so nothing is lost.
    let h = build(|h| {
        h.send_info(1, &[(a(), 1)])?;
        h.send_ok(2, &[(a(), 2, 1)])?;
        h.poll_ok(3, vec![(a(), vec![(1, 2)])])
    });
    let r = check(&h);
    assert_kinds(&r, &[]);
    assert!(r.valid);
}

#[test]
fn unseen() {
    let h = build(|h| {
        h.send_ok(1, &[(a(), 1, 0), (b(), 2, 0)])?;
        h.send_ok(1, &[(a(), 3, 1)])?;
        h.poll_ok(2, vec![(a(), vec![(0, 1), (1, 3)]), (b(), vec![])])
    });
    let r = check(&h);
    assert_kinds(&r, &[anomaly::UNSEEN]);
    let d = &r.anomalies[anomaly::UNSEEN];
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].key, Some(b()));
    assert_eq!(d[0].values, vec![2]);
    assert_eq!(r.stats.unseen, 1);
}

#[test]
fn g1a_aborted_read() {
    let h = build(|h| {
        h.send_fail(1, &[(a(), 1)])?;
        h.poll_ok(2, vec![(a(), vec![(0, 1)])])
    });
    let r = check(&h);
    assert_kinds(&r, &[anomaly::G1A]);
    let d = &r.anomalies[anomaly::G1A][0];
    assert_eq!(d.values, vec![1]);
    assert_eq!(d.ops, vec![1, 3]);
}

/// Three acknowledged sends: values 1, 2, 3 at offsets 0, 1, 2 of `a()`.
fn three_sends(h: &mut HistoryBuilder) -> R {
    h.send_ok(1, &[(a(), 1, 0)])?;
    h.send_ok(1, &[(a(), 2, 1)])?;
    h.send_ok(1, &[(a(), 3, 2)])
}

#[test]
fn poll_skip() {
    let h = build(|h| {
        three_sends(h)?;
        h.assign(2, &[a()])?;
        h.poll_ok(2, vec![(a(), vec![(0, 1)])])?;
        // Reassigning the same key keeps the position: still a skip.
        h.assign(2, &[a(), b()])?;
        h.poll_ok(2, vec![(a(), vec![(2, 3)])])?;
        h.poll_ok(3, vec![(a(), vec![(0, 1), (1, 2), (2, 3)])])
    });
    let r = check(&h);
    assert_kinds(&r, &[anomaly::POLL_SKIP]);
    let d = &r.anomalies[anomaly::POLL_SKIP][0];
    assert_eq!(d.skipped, vec![2]);
    assert_eq!(d.delta, Some(2));
    assert!(check_with(&h, &CheckOptions::subscribe_mode()).valid);
}

#[test]
fn poll_skip_forgiven_after_assignment_change() {
    let h = build(|h| {
        three_sends(h)?;
        h.poll_ok(2, vec![(a(), vec![(0, 1)])])?;
        h.assign(2, &[b()])?;
        h.assign(2, &[a()])?;
        h.poll_ok(2, vec![(a(), vec![(2, 3)])])?;
        h.poll_ok(3, vec![(a(), vec![(0, 1), (1, 2), (2, 3)])])
    });
    assert_kinds(&check(&h), &[]);
}

#[test]
fn nonmonotonic_poll() {
    let h = build(|h| {
        h.send_ok(1, &[(a(), 1, 0)])?;
        h.send_ok(1, &[(a(), 2, 1)])?;
        h.poll_ok(2, vec![(a(), vec![(0, 1), (1, 2)])])?;
        h.poll_ok(2, vec![(a(), vec![(1, 2)])])
    });
    let r = check(&h);
    assert_kinds(&r, &[anomaly::NONMONOTONIC_POLL]);
    let d = &r.anomalies[anomaly::NONMONOTONIC_POLL][0];
    assert_eq!(d.delta, Some(0));
    assert_eq!(d.values, vec![2, 2]);
    assert!(!r.valid);
    assert!(check_with(&h, &CheckOptions::subscribe_mode()).valid);
}

#[test]
fn int_poll_skip() {
    let h = build(|h| {
        three_sends(h)?;
        h.poll_ok(2, vec![(a(), vec![(0, 1), (2, 3)])])?;
        h.poll_ok(3, vec![(a(), vec![(1, 2)])])
    });
    let r = check(&h);
    assert_kinds(&r, &[anomaly::INT_POLL_SKIP]);
    assert_eq!(r.anomalies[anomaly::INT_POLL_SKIP][0].skipped, vec![2]);
}

#[test]
fn int_poll_skip_forgiven_on_rebalanced_key() {
    let h = build(|h| {
        three_sends(h)?;
        h.invoke(2, OpValue::Poll(PollReads::new()))?;
        let reads: PollReads = [(a(), vec![(0, 1), (2, 3)])].into_iter().collect();
        h.complete(2, OpKind::Ok, OpValue::Poll(reads))?.rebalanced = vec![a()];
        h.poll_ok(3, vec![(a(), vec![(1, 2)])])
    });
    assert_kinds(&check(&h), &[]);
}

#[test]
fn int_nonmonotonic_poll() {
    let h = build(|h| {
        h.send_ok(1, &[(a(), 1, 0)])?;
        h.send_ok(1, &[(a(), 2, 1)])?;
        h.poll_ok(2, vec![(a(), vec![(1, 2), (0, 1)])])
    });
    let r = check(&h);
    assert_kinds(&r, &[anomaly::INT_NONMONOTONIC_POLL]);
    assert_eq!(
        r.anomalies[anomaly::INT_NONMONOTONIC_POLL][0].delta,
        Some(-1)
    );
}

#[test]
fn int_send_skip_is_reported_but_allowed() {
    let h = build(|h| {
        h.send_ok(1, &[(a(), 1, 0), (a(), 3, 2)])?;
        h.send_ok(2, &[(a(), 2, 1)])?;
        h.poll_ok(3, vec![(a(), vec![(0, 1), (1, 2), (2, 3)])])
    });
    let r = check(&h);
    assert_kinds(&r, &[anomaly::INT_SEND_SKIP]);
    assert!(r.valid, "int-send-skip is allowed by default");
    assert!(r.bad_anomaly_kinds.is_empty());
    assert_eq!(r.anomalies[anomaly::INT_SEND_SKIP][0].skipped, vec![2]);
    let strict = CheckOptions {
        allowed: BTreeSet::new(),
    };
    assert!(!check_with(&h, &strict).valid);
}

#[test]
fn int_nonmonotonic_send() {
    let h = build(|h| {
        h.send_ok(1, &[(a(), 1, 1), (a(), 2, 0)])?;
        h.poll_ok(2, vec![(a(), vec![(0, 2), (1, 1)])])
    });
    let r = check(&h);
    assert_kinds(&r, &[anomaly::INT_NONMONOTONIC_SEND]);
    assert_eq!(
        r.anomalies[anomaly::INT_NONMONOTONIC_SEND][0].delta,
        Some(-1)
    );
}

#[test]
fn nonmonotonic_send() {
    let h = build(|h| {
        h.send_ok(1, &[(a(), 1, 1)])?;
        h.send_ok(1, &[(a(), 2, 0)])?;
        h.poll_ok(2, vec![(a(), vec![(0, 2), (1, 1)])])
    });
    let r = check(&h);
    assert_kinds(&r, &[anomaly::NONMONOTONIC_SEND]);
    let d = &r.anomalies[anomaly::NONMONOTONIC_SEND][0];
    assert_eq!(d.values, vec![1, 2]);
    assert_eq!(d.ops, vec![1, 3]);
}

#[test]
fn offset_changed_value_replaced() {
    // Offset 0 was acknowledged for value 1; a poll later found value 2 there.
    let h = build(|h| {
        h.send_ok(1, &[(a(), 1, 0)])?;
        h.send_info(2, &[(a(), 2)])?;
        h.poll_ok(3, vec![(a(), vec![(0, 1)])])?;
        h.poll_ok(4, vec![(a(), vec![(0, 2)])])
    });
    let r = check(&h);
    assert_kinds(
        &r,
        &[anomaly::OFFSET_CHANGED, anomaly::INCONSISTENT_OFFSETS],
    );
    let d = &r.anomalies[anomaly::OFFSET_CHANGED][0];
    assert_eq!(d.ops, vec![1, 7]);
    assert_eq!(d.values, vec![1, 2]);
    assert_eq!(d.offsets, vec![0]);
}

#[test]
fn offset_changed_value_acked_twice() {
    // The same value acknowledged at two offsets (e.g. a retried send that was not
    // deduplicated).
    let h = build(|h| {
        h.send_ok(1, &[(a(), 1, 0)])?;
        h.send_ok(2, &[(a(), 1, 1)])?;
        h.poll_ok(3, vec![(a(), vec![(0, 1)])])?;
        h.poll_ok(4, vec![(a(), vec![(1, 1)])])
    });
    let r = check(&h);
    assert_kinds(&r, &[anomaly::OFFSET_CHANGED, anomaly::DUPLICATE]);
}

#[test]
fn group_offset_regression() {
    let h = build(|h| {
        h.commit_ok(1, "g", &[(a(), 5), (b(), 1)])?;
        h.commit_ok(1, "g", &[(a(), 3), (b(), 2)])?;
        // Another group is independent.
        h.commit_ok(2, "other", &[(a(), 1)])?;
        // A fetch returning the latest commit's value is right, even though it is lower.
        h.fetch_offsets_ok(3, "g", &[(a(), 3), (b(), 2)])?;
        // A fetch going below a commit that completed after the last commit of its value
        // is a regression.
        h.commit_ok(1, "g", &[(a(), 6)])?;
        h.fetch_offsets_ok(3, "g", &[(a(), 3), (b(), 2)])
    });
    let r = check(&h);
    assert_kinds(&r, &[anomaly::GROUP_OFFSET_REGRESSION]);
    let ds = &r.anomalies[anomaly::GROUP_OFFSET_REGRESSION];
    assert_eq!(ds.len(), 2, "{ds:?}");
    assert!(ds
        .iter()
        .all(|d| d.group.as_deref() == Some("g") && d.key == Some(a())));
    assert_eq!(ds[0].offsets, vec![5, 3]);
    assert_eq!(ds[1].offsets, vec![6, 3]);
    assert_eq!(ds[1].ops, vec![9, 11]);
}

#[test]
fn concurrent_commits_are_not_a_regression() {
    let commit = |offset| {
        OpValue::Commit(GroupOffsets {
            group: "g".into(),
            offsets: [(a(), offset)].into_iter().collect(),
        })
    };
    let h = build(|h| {
        h.invoke(1, commit(7))?;
        h.invoke(2, commit(6))?;
        h.complete(1, OpKind::Ok, commit(7))?;
        h.complete(2, OpKind::Ok, commit(6))?;
        h.fetch_offsets_ok(3, "g", &[(a(), 6)])?;
        h.commit_ok(3, "g", &[(a(), 8)])
    });
    assert_kinds(&check(&h), &[]);
    // A fetch of 7 after the commit of 8 completed regresses.
    let h2 = build(|h| {
        h.commit_ok(1, "g", &[(a(), 8)])?;
        h.fetch_offsets_ok(3, "g", &[(a(), 7)])
    });
    assert_kinds(&check(&h2), &[anomaly::GROUP_OFFSET_REGRESSION]);
}

#[test]
fn unknown_value() {
    let h = build(|h| {
        h.send_ok(1, &[(a(), 1, 0)])?;
        h.poll_ok(2, vec![(a(), vec![(0, 1), (1, 99)])])
    });
    let r = check(&h);
    assert_kinds(&r, &[anomaly::UNKNOWN_VALUE]);
    assert_eq!(r.anomalies[anomaly::UNKNOWN_VALUE][0].values, vec![99]);
}

#[test]
fn pending_send_counts_as_info() {
    // A send that never completed but whose value was read is neither G1a nor unknown.
    let h = build(|h| {
        h.invoke(
            1,
            OpValue::Send(vec![SendMop {
                key: a(),
                value: 1,
                offset: None,
            }]),
        )?;
        h.poll_ok(2, vec![(a(), vec![(0, 1)])])
    });
    let r = check(&h);
    assert_kinds(&r, &[]);
    assert_eq!(r.stats.sends_info, 1);
}

/// Several producers and consumers, interleaved, with a failed send, a crashed send that was
/// written (and read), a crashed send that was not, commits and a final poll from offset 0.
fn clean_concurrent_history() -> Result<History, crate::history::HistoryError> {
    let us = 1_000;
    let send = |mops: &[(Key, u64, Option<u64>)]| {
        OpValue::Send(
            mops.iter()
                .map(|(key, value, offset)| SendMop {
                    key: key.clone(),
                    value: *value,
                    offset: *offset,
                })
                .collect(),
        )
    };
    let poll = |reads: Vec<(Key, Vec<(u64, u64)>)>| OpValue::Poll(reads.into_iter().collect());
    let empty = || OpValue::Poll(PollReads::new());
    let commit = |offsets: &[(Key, u64)]| {
        OpValue::Commit(GroupOffsets {
            group: "g".into(),
            offsets: offsets.iter().cloned().collect(),
        })
    };
    let mut h = HistoryBuilder::new();
    h.invoke_at(1, 0, send(&[(a(), 1, None)]))?;
    h.invoke_at(2, us, send(&[(a(), 2, None), (b(), 3, None)]))?;
    h.invoke_at(10, 2 * us, OpValue::Assign(vec![a(), b()]))?;
    h.complete_at(10, OpKind::Ok, 3 * us, OpValue::Assign(vec![a(), b()]))?;
    h.complete_at(1, OpKind::Ok, 4 * us, send(&[(a(), 1, Some(0))]))?;
    h.invoke_at(10, 5 * us, empty())?;
    h.complete_at(
        2,
        OpKind::Ok,
        6 * us,
        send(&[(a(), 2, Some(1)), (b(), 3, Some(0))]),
    )?;
    // Concurrent with process 2's send: not seeing it is fine.
    h.complete_at(10, OpKind::Ok, 7 * us, poll(vec![(a(), vec![(0, 1)])]))?;
    h.invoke_at(3, 8 * us, send(&[(b(), 4, None)]))?;
    h.invoke_at(1, 9 * us, send(&[(a(), 5, None)]))?;
    h.complete_at(3, OpKind::Fail, 10 * us, send(&[(b(), 4, None)]))?;
    h.invoke_at(10, 11 * us, empty())?;
    h.complete_at(1, OpKind::Ok, 12 * us, send(&[(a(), 5, Some(2))]))?;
    h.complete_at(
        10,
        OpKind::Ok,
        13 * us,
        // Process 10 does not see t/1 yet although offset 0 exists since 6 us: lagging.
        poll(vec![(a(), vec![(1, 2), (2, 5)]), (b(), vec![])]),
    )?;
    h.invoke_at(3, 14 * us, send(&[(b(), 6, None)]))?;
    h.complete_at(3, OpKind::Info, 15 * us, send(&[(b(), 6, None)]))?
        .error = Some("timeout".into());
    h.invoke_at(11, 16 * us, OpValue::Assign(vec![b()]))?;
    h.complete_at(11, OpKind::Ok, 17 * us, OpValue::Assign(vec![b()]))?;
    h.invoke_at(4, 18 * us, send(&[(b(), 7, None)]))?;
    h.invoke_at(11, 19 * us, empty())?;
    h.complete_at(4, OpKind::Ok, 20 * us, send(&[(b(), 7, Some(2))]))?;
    h.complete_at(
        11,
        OpKind::Ok,
        21 * us,
        poll(vec![(b(), vec![(0, 3), (1, 6)])]),
    )?;
    h.invoke_at(10, 22 * us, commit(&[(a(), 3), (b(), 0)]))?;
    h.complete_at(10, OpKind::Ok, 23 * us, commit(&[(a(), 3), (b(), 0)]))?;
    h.invoke_at(5, 24 * us, send(&[(a(), 8, None)]))?;
    h.complete_at(5, OpKind::Info, 25 * us, send(&[(a(), 8, None)]))?;
    h.invoke_at(11, 26 * us, empty())?;
    h.complete_at(11, OpKind::Ok, 27 * us, poll(vec![(b(), vec![(2, 7)])]))?;
    h.invoke_at(11, 28 * us, commit(&[(b(), 3)]))?;
    h.complete_at(11, OpKind::Ok, 29 * us, commit(&[(b(), 3)]))?;
    // Final polls: a fresh process reads everything from offset 0.
    h.invoke_at(20, 30 * us, OpValue::Assign(vec![a(), b()]))?;
    h.complete_at(20, OpKind::Ok, 31 * us, OpValue::Assign(vec![a(), b()]))?;
    h.invoke_at(20, 32 * us, empty())?;
    h.complete_at(
        20,
        OpKind::Ok,
        33 * us,
        poll(vec![
            (a(), vec![(0, 1), (1, 2), (2, 5)]),
            (b(), vec![(0, 3), (1, 6), (2, 7)]),
        ]),
    )?;
    h.fetch_offsets_ok(20, "g", &[(a(), 3), (b(), 3)])?;
    Ok(h.build())
}

#[test]
fn clean_concurrent_history_is_valid() {
    let h = clean_concurrent_history().unwrap();
    let r = check(&h);
    assert_kinds(&r, &[]);
    assert!(r.valid);
    assert!(r.to_string().contains("anomalies: none"), "{r}");
    let s = &r.stats;
    assert_eq!((s.sends_ok, s.sends_fail, s.sends_info), (4, 1, 2));
    assert_eq!(s.values_acked, 5);
    assert_eq!(s.polls_ok, 5);
    assert_eq!(s.polls_not_ok, 0);
    assert_eq!(s.distinct_values_read, 6);
    assert_eq!(s.values_read, 1 + 2 + 2 + 1 + 6);
    assert_eq!(s.unseen, 0);
    assert_eq!(s.commits_ok, 2);
    assert_eq!(s.keys, 2);
    assert!(s.lag.samples > 0);
    // Process 10's second poll (invoked at 11 us) had consumed nothing of t/1, which was
    // non-empty since 6 us: a lag of 5 us. Every other poll was caught up.
    assert_eq!(s.lag.max_ns, 5_000);
    let worst = s.lag.worst.as_ref().unwrap();
    assert_eq!(
        (worst.process, &worst.key, worst.time_ns),
        (10, &b(), 11_000)
    );
    assert_eq!(s.lag.p99_ns, 5_000);
    assert_eq!(check(&h), r, "the checker is deterministic");
}

#[test]
fn clean_history_stays_clean_through_jsonl() {
    let h = clean_concurrent_history().unwrap();
    let mut buf = Vec::new();
    h.write_jsonl(&mut buf).unwrap();
    let back = History::read_jsonl(&buf[..]).unwrap();
    assert_eq!(back, h);
    assert_eq!(check(&back), check(&h));
}

#[test]
fn realtime_lag_follows_jepsen_example() {
    // From Jepsen's docstring: send x 0 at 1; poll at 2 reads it (lag 0); send x 1 at 3;
    // poll invoked at 4 reads nothing new: lag 4 - 3 = 1.
    let send = |v, o: Option<u64>| {
        OpValue::Send(vec![SendMop {
            key: a(),
            value: v,
            offset: o,
        }])
    };
    let mut h = HistoryBuilder::new();
    h.invoke_at(1, 0, send(10, None)).unwrap();
    h.complete_at(1, OpKind::Ok, 1, send(10, Some(0))).unwrap();
    h.invoke_at(2, 2, OpValue::Poll(PollReads::new())).unwrap();
    h.complete_at(
        2,
        OpKind::Ok,
        2,
        OpValue::Poll([(a(), vec![(0, 10)])].into_iter().collect()),
    )
    .unwrap();
    h.invoke_at(1, 2, send(11, None)).unwrap();
    h.complete_at(1, OpKind::Ok, 3, send(11, Some(1))).unwrap();
    h.invoke_at(2, 4, OpValue::Poll(PollReads::new())).unwrap();
    h.complete_at(
        2,
        OpKind::Ok,
        5,
        OpValue::Poll([(a(), vec![])].into_iter().collect()),
    )
    .unwrap();
    let h = h.build();
    let samples = realtime_lag(&Analysis::new(&events(&h)));
    let lags: Vec<u64> = samples.iter().map(|s| s.lag_ns).collect();
    assert_eq!(lags, vec![0, 1]);
    let r = check(&h);
    assert_eq!(r.stats.lag.max_ns, 1);
    assert_eq!(r.stats.lag.samples, 2);
    assert_eq!(r.stats.lag.worst.as_ref().map(|w| w.time_ns), Some(4));
    // Value 11 was never read.
    assert_kinds(&r, &[anomaly::UNSEEN]);
}

#[test]
fn lag_p99_is_nearest_rank() {
    let sample = |lag_ns| LagSample {
        op: 0,
        process: 0,
        key: a(),
        time_ns: 0,
        lag_ns,
    };
    let stats = lag_stats((1..=200).rev().map(sample).collect());
    assert_eq!(stats.samples, 200);
    assert_eq!(stats.max_ns, 200);
    assert_eq!(stats.p99_ns, 198);
    assert_eq!(stats.worst.map(|w| w.lag_ns), Some(200));
    assert_eq!(lag_stats(vec![sample(7)]).p99_ns, 7);
    assert_eq!(lag_stats(Vec::new()), LagStats::default());
}

#[test]
fn report_renders_and_serializes() {
    let h = build(|h| {
        h.send_fail(1, &[(a(), 1)])?;
        h.poll_ok(2, vec![(a(), vec![(0, 1)])])?;
        h.send_ok(3, &[(b(), 2, 0)])
    });
    let r = check(&h);
    assert_kinds(&r, &[anomaly::G1A, anomaly::UNSEEN]);
    let text = r.to_string();
    assert!(text.starts_with("valid: false"), "{text}");
    assert!(text.contains("G1a: 1"), "{text}");
    assert!(text.contains("unseen: 1"), "{text}");
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains("\"G1a\""), "{json}");
    let back: CheckReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
}

/// A tiny deterministic PRNG (xorshift64*), so the simulation needs no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// What a simulated worker has in flight: the completion to record.
enum InFlight {
    Send(Vec<SendMop>, bool),
    Poll(PollReads),
    Other(OpValue),
}

/// Simulates a correct broker: producers append at invocation, consumers read at invocation
/// from their position; completions arrive later, in random interleavings; some sends fail
/// (not appended) or crash (appended or not); crashed workers continue as fresh processes.
/// Ends with a final poll of everything from offset 0 by a fresh process.
fn simulated_history(seed: u64, steps: usize) -> History {
    let keys = [a(), b(), Key::new("u", 0)];
    let producers = 3u64;
    let consumers = 2u64;
    let mut rng = Rng(seed | 1);
    let mut logs: BTreeMap<Key, Vec<u64>> = keys.iter().map(|k| (k.clone(), vec![])).collect();
    let mut process: Vec<u64> = (0..producers + consumers).collect();
    let mut in_flight: BTreeMap<u64, InFlight> = BTreeMap::new();
    let mut positions: BTreeMap<u64, BTreeMap<Key, usize>> = BTreeMap::new();
    let mut next_value = 1u64;
    let mut h = HistoryBuilder::new().with_step_ns(1_000);
    for _ in 0..steps {
        let w = rng.below(producers + consumers);
        let p = process[w as usize];
        if let Some(op) = in_flight.remove(&w) {
            match op {
                InFlight::Send(mops, crash) => {
                    let kind = if crash {
                        OpKind::Info
                    } else if mops[0].offset.is_some() {
                        OpKind::Ok
                    } else {
                        OpKind::Fail
                    };
                    let mops = if kind == OpKind::Ok {
                        mops
                    } else {
                        mops.into_iter()
                            .map(|m| SendMop { offset: None, ..m })
                            .collect()
                    };
                    h.complete(p, kind, OpValue::Send(mops)).unwrap();
                    if crash {
                        process[w as usize] += 100;
                    }
                }
                InFlight::Poll(reads) => {
                    h.complete(p, OpKind::Ok, OpValue::Poll(reads)).unwrap();
                }
                InFlight::Other(v) => {
                    h.complete(p, OpKind::Ok, v).unwrap();
                }
            }
            continue;
        }
        if w < producers {
            // A send of 1-3 values, possibly several to one key (landing adjacently).
            let k = &keys[rng.below(keys.len() as u64) as usize];
            let n = 1 + rng.below(3);
            let outcome = rng.below(10); // 0: fail, 1: crash unwritten, 2: crash written.
            let mut mops = Vec::new();
            for _ in 0..n {
                let value = next_value;
                next_value += 1;
                let offset = if outcome <= 1 {
                    None
                } else {
                    let log = logs.get_mut(k).unwrap();
                    log.push(value);
                    Some(log.len() as u64 - 1)
                };
                mops.push(SendMop {
                    key: k.clone(),
                    value,
                    offset,
                });
            }
            let invoke = mops
                .iter()
                .map(|m| SendMop {
                    offset: None,
                    ..m.clone()
                })
                .collect();
            h.invoke(p, OpValue::Send(invoke)).unwrap();
            in_flight.insert(w, InFlight::Send(mops, outcome == 1 || outcome == 2));
        } else if let Some(pos) = positions.get_mut(&p) {
            if rng.below(4) == 0 {
                let offsets = pos.iter().map(|(k, &o)| (k.clone(), o as u64)).collect();
                let v = OpValue::Commit(GroupOffsets {
                    group: format!("g-{p}"),
                    offsets,
                });
                h.invoke(p, v.clone()).unwrap();
                in_flight.insert(w, InFlight::Other(v));
                continue;
            }
            let mut reads = PollReads::new();
            for (k, at) in pos.iter_mut() {
                let log = &logs[k];
                let n = rng.below(4) as usize;
                let end = (*at + n).min(log.len());
                let pairs: Vec<(u64, u64)> = (*at..end).map(|o| (o as u64, log[o])).collect();
                *at = end;
                reads.insert(k.clone(), pairs);
            }
            h.invoke(p, OpValue::Poll(PollReads::new())).unwrap();
            in_flight.insert(w, InFlight::Poll(reads));
        } else {
            positions.insert(p, keys.iter().map(|k| (k.clone(), 0)).collect());
            let v = OpValue::Assign(keys.to_vec());
            h.invoke(p, v.clone()).unwrap();
            in_flight.insert(w, InFlight::Other(v));
        }
    }
    // Finish everything in flight (as if the test waited), then poll everything.
    let pending: Vec<u64> = in_flight.keys().copied().collect();
    for w in pending {
        let p = process[w as usize];
        match in_flight.remove(&w) {
            Some(InFlight::Send(mops, _)) => {
                h.complete(p, OpKind::Info, OpValue::Send(mops)).unwrap();
            }
            Some(InFlight::Poll(reads)) => {
                h.complete(p, OpKind::Ok, OpValue::Poll(reads)).unwrap();
            }
            Some(InFlight::Other(v)) => {
                h.complete(p, OpKind::Ok, v).unwrap();
            }
            None => {}
        }
    }
    h.assign(1_000_000, &keys).unwrap();
    h.poll_ok(
        1_000_000,
        logs.iter()
            .map(|(k, log)| {
                (
                    k.clone(),
                    log.iter()
                        .enumerate()
                        .map(|(o, v)| (o as u64, *v))
                        .collect(),
                )
            })
            .collect(),
    )
    .unwrap();
    h.build()
}

#[test]
fn simulated_correct_broker_histories_are_valid() {
    for seed in 1..=20 {
        let h = simulated_history(seed, 400);
        let r = check(&h);
        // Sends with several values to one key land adjacently, so not even the allowed
        // int-send-skip may appear.
        assert_kinds(&r, &[]);
        assert!(r.stats.sends_ok > 10 && r.stats.polls_ok > 10, "{r}");
        assert!(r.stats.sends_fail > 0 && r.stats.sends_info > 0, "{r}");
        assert!(r.stats.commits_ok > 0, "{r}");
    }
}

#[test]
fn simulated_history_with_a_dropped_record_is_invalid() {
    // Remove one acknowledged value from every read: the broker "lost" it.
    let h = simulated_history(7, 400);
    let r = check(&h);
    assert!(r.valid);
    let victim = h
        .ops()
        .iter()
        .filter(|op| op.kind == OpKind::Ok)
        .find_map(|op| match &op.value {
            OpValue::Send(mops) => mops.first().cloned(),
            _ => None,
        })
        .expect("some acknowledged send");
    let ops: Vec<crate::history::Op> = h
        .ops()
        .iter()
        .cloned()
        .map(|mut op| {
            if let OpValue::Poll(reads) = &mut op.value {
                for pairs in reads.values_mut() {
                    pairs.retain(|&(_, v)| v != victim.value);
                }
            }
            op
        })
        .collect();
    let broken = History::from_ops(ops).unwrap();
    let r = check(&broken);
    assert!(!r.valid);
    assert!(r.anomalies.contains_key(anomaly::LOST_WRITE), "{r}");
    assert!(r.anomalies.contains_key(anomaly::UNSEEN), "{r}");
    assert_eq!(r.stats.unseen, 1, "{r}");
}
