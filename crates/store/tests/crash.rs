//! Crash test: a child process (this test binary, running this same test with an environment
//! variable naming the data directory) appends events in a loop, printing each acknowledged
//! sequence number, and is killed with SIGKILL at a seeded random moment. The store must then
//! reopen cleanly and hold a gap-free prefix of the event stream containing every acknowledged
//! event; recovery must equal a fresh replay; a client retrying with its idempotency keys must
//! get its events applied once. Repeated over one data directory, each child going on where
//! the last one died.
//!
//! There is one test: run without the variable it is the parent, with it the child, which never
//! returns (it is killed, or exits non-zero on a failure, which the parent reports). So no run
//! counts a test as passed without the parent's checks.

mod common;

use common::{assert_same, event, genesis, recover, replay, snapshot, Rng, TempDir};
use pmargin_store::{NewEvent, Store};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CHILD_DIR: &str = "PMARGIN_STORE_CRASH_CHILD_DIR";
const SNAPSHOT_EVERY: u64 = 25;
const TEST_NAME: &str = "sigkill_at_random_moments_loses_no_acknowledged_event";

fn key(i: u64) -> String {
    format!("client-{i}")
}

/// The child: recover, then append the stream's next events until killed, acknowledging each
/// (to stdout, flushed) only after `append` returned, i.e. after its commit. A failure exits at
/// once with status 3; the parent checks the child was still running when it killed it.
fn child(dir: &std::path::Path) -> ! {
    let mut store = Store::open(dir).unwrap_or_else(|e| fail(format!("open: {e}")));
    let (mut engine, last) =
        recover(&store, genesis).unwrap_or_else(|e| fail(format!("recover: {e}")));
    let mut stdout = std::io::stdout().lock();
    let mut say = |line: String| {
        if writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            fail("stdout closed".into());
        }
    };
    // (On a line of its own: the harness has printed "test ... " without a newline.)
    say(format!("\nREADY {last}"));
    for i in last + 1.. {
        let e = event(i);
        let out = engine.apply(&e);
        let k = key(i);
        let a = store
            .append(&NewEvent {
                idempotency_key: Some(&k),
                key_id: Some("crash-child"),
                outputs: Some(&out),
                ..NewEvent::new(&e, i as i64)
            })
            .unwrap_or_else(|e| fail(format!("append {i}: {e}")));
        if a.seq != i || a.duplicate {
            fail(format!("event {i} stored as {a:?}"));
        }
        say(format!("ACK {}", a.seq));
        if i % SNAPSHOT_EVERY == 0 {
            store
                .save_snapshot(i, &snapshot(&engine))
                .unwrap_or_else(|e| fail(format!("snapshot {i}: {e}")));
        }
    }
    fail("the event stream ended".into())
}

fn fail(what: String) -> ! {
    eprintln!("crash child: {what}");
    std::process::exit(3)
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_event() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        child(std::path::Path::new(&dir));
    }
    let start = Instant::now();
    let tmp = TempDir::new("crash");
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(0x5EED_C0DE);
    let mut rounds_with_acks = 0;
    let mut max_acked = 0;
    for round in 0..12 {
        let mut child = Command::new(&exe)
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, tmp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Round 0 may die while the database is being created; later rounds are killed a
        // random time after the child's first acknowledgement.
        let delay = Duration::from_millis(rng.below(250));
        let mut lines = Vec::new();
        if round > 0 {
            let deadline = Instant::now() + Duration::from_secs(10);
            while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                let ack = line.starts_with("ACK ");
                lines.push(line);
                if ack {
                    break;
                }
            }
        }
        std::thread::sleep(delay);
        // Still running: it did not fail (exit 3) nor stop on its own.
        let early = child.try_wait().unwrap();
        assert!(
            early.is_none(),
            "round {round}: the child exited by itself: {early:?}"
        );
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        if round > 0 {
            assert!(
                lines.iter().any(|l| l.starts_with("READY ")),
                "round {round}: the child ran (READY), got {lines:?}"
            );
        }
        let acked: Vec<u64> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("ACK "))
            .map(|s| s.parse().unwrap())
            .collect();
        assert!(
            acked.windows(2).all(|w| w[1] == w[0] + 1),
            "acknowledgements are consecutive"
        );
        let round_max = acked.iter().copied().max().unwrap_or(0).max(max_acked);

        let mut store = Store::open(tmp.path()).unwrap();
        let last = store.last_seq().unwrap();
        assert!(
            last >= round_max,
            "round {round}: acknowledged {round_max} but the log ends at {last}"
        );
        let stored = store.events_after(0).unwrap(); // also checks there is no gap
        assert_eq!(stored.len() as u64, last);
        for s in &stored {
            assert_eq!(
                s.event,
                event(s.seq),
                "round {round}: event {} is the stream's",
                s.seq
            );
            assert_eq!(s.idempotency_key.as_deref(), Some(key(s.seq).as_str()));
        }
        let (recovered, seq) = recover(&store, genesis).unwrap();
        let (fresh, _) = replay(&store, genesis).unwrap();
        assert_eq!(seq, last);
        assert_same(
            &recovered,
            &fresh,
            &format!("round {round}: recovery vs fresh replay"),
        );
        // The client retries what it did not see acknowledged: the events already in the log
        // are recognised by their keys, nothing is stored twice.
        for i in round_max + 1..=last {
            let a = store
                .append_event(&event(i), Some(&key(i)), Some("crash-child"), 0)
                .unwrap();
            assert!(a.duplicate && !a.conflict && a.seq == i);
        }
        assert_eq!(store.last_seq().unwrap(), last);
        if !acked.is_empty() {
            rounds_with_acks += 1;
        }
        max_acked = round_max;
        eprintln!(
            "round {round}: killed after {delay:?}, {} acks seen, log ends at {last}",
            acked.len()
        );
    }
    assert!(
        rounds_with_acks >= 8,
        "the child acknowledged events in most rounds"
    );
    assert!(max_acked > 0);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "bounded in time: {:?}",
        start.elapsed()
    );
}
