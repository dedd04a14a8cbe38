//! The store: durability across reopen, idempotency, migrations, the service's tables (keys and
//! genesis among them), and recovery (snapshot + replay) equal to a fresh replay of the whole
//! log.

mod common;

use common::{assert_same, event, genesis, genesis_with, recover, replay, snapshot, TempDir};
use pmargin_engine::oracle::OracleConfig;
use pmargin_engine::{Event, Output};
use pmargin_store::{
    NewEvent, Record, ServiceState, State, Store, StoreError, DB_FILE, MIGRATIONS, SCHEMA_VERSION,
    STATE_FORMAT,
};
use rusqlite::Connection;
use serde_json::json;

#[test]
fn first_open_creates_the_directory_and_a_wal_database_with_full_sync() {
    let tmp = TempDir::new("open");
    let dir = tmp.path().join("nested").join("pmargin-data");
    let store = Store::open(&dir).unwrap();
    assert!(dir.join(DB_FILE).is_file());
    assert_eq!(store.pragma("journal_mode").unwrap(), "wal");
    assert_eq!(store.pragma("synchronous").unwrap(), "2", "FULL");
    assert_eq!(store.pragma("foreign_keys").unwrap(), "1");
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(store.last_seq().unwrap(), 0);
    assert!(store.latest_snapshot().unwrap().is_none());
    assert!(store.pragma("x; DROP TABLE events").is_err());
}

#[test]
fn events_survive_reopen_in_order_with_their_metadata() {
    let tmp = TempDir::new("durable");
    let events: Vec<Event> = (1..=50).map(event).collect();
    {
        let mut store = Store::open(tmp.path()).unwrap();
        for (i, e) in events.iter().enumerate() {
            let a = store
                .append_event(
                    e,
                    Some(&format!("key-{i}")),
                    Some("trader-1"),
                    1_000 + i as i64,
                )
                .unwrap();
            assert_eq!(
                (a.seq, a.duplicate, a.conflict),
                (i as u64 + 1, false, false)
            );
        }
        let outputs = vec![Output::LiquidationsSuspended {
            underlying: "BTC".into(),
            suspended: true,
        }];
        let a = store
            .append(&NewEvent {
                outputs: Some(&outputs),
                ..NewEvent::new(&Event::Liquidate, 9_999)
            })
            .unwrap();
        assert_eq!(a.seq, 51);
    }
    let store = Store::open(tmp.path()).unwrap();
    assert_eq!(store.last_seq().unwrap(), 51);
    let stored = store.events_after(0).unwrap();
    assert_eq!(stored.len(), 51);
    for (i, s) in stored.iter().take(50).enumerate() {
        assert_eq!(s.seq, i as u64 + 1);
        assert_eq!(
            s.event, events[i],
            "event {} read back exactly (floats included)",
            s.seq
        );
        assert_eq!(s.ts_ms, 1_000 + i as i64);
        assert_eq!(
            s.idempotency_key.as_deref(),
            Some(format!("key-{i}").as_str())
        );
        assert_eq!(s.key_id.as_deref(), Some("trader-1"));
        assert!(s.outputs.is_none());
    }
    let last = store.event(51).unwrap().unwrap();
    assert_eq!(last.event, Event::Liquidate);
    assert_eq!(last.outputs.unwrap().len(), 1);
    assert!(store.event(52).unwrap().is_none());
    assert_eq!(
        store
            .events_after(48)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
        vec![49, 50, 51]
    );
    assert_eq!(
        store
            .events_range(10, 3)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
        vec![11, 12, 13]
    );
}

#[test]
fn a_repeated_idempotency_key_returns_the_original_and_stores_nothing() {
    let tmp = TempDir::new("idem");
    let mut store = Store::open(tmp.path()).unwrap();
    let deposit = Event::Deposit {
        account: "a".into(),
        asset: "USDC".into(),
        amount: 100.0,
    };
    let first = store
        .append_event(&deposit, Some("req-1"), Some("k"), 1)
        .unwrap();
    assert!(!first.duplicate);
    store
        .append_event(&Event::Liquidate, None, None, 2)
        .unwrap();
    store
        .append_event(&Event::Liquidate, None, None, 3)
        .unwrap(); // no key: never a duplicate
    let again = store
        .append_event(&deposit, Some("req-1"), Some("k"), 4)
        .unwrap();
    assert_eq!(
        (again.seq, again.duplicate, again.conflict),
        (first.seq, true, false)
    );
    // The same key with another body: a conflict, still nothing stored.
    let other = Event::Deposit {
        account: "a".into(),
        asset: "USDC".into(),
        amount: 1e6,
    };
    let clash = store
        .append_event(&other, Some("req-1"), Some("k"), 5)
        .unwrap();
    assert_eq!(
        (clash.seq, clash.duplicate, clash.conflict),
        (first.seq, true, true)
    );
    assert_eq!(store.last_seq().unwrap(), 3);
    assert_eq!(store.idempotent_seq("req-1").unwrap(), Some(1));
    assert_eq!(store.idempotent_seq("req-2").unwrap(), None);
    drop(store);
    // After a restart too, and within one group-committed batch.
    let mut store = Store::open(tmp.path()).unwrap();
    let e2 = Event::Price {
        underlying: "BTC".into(),
        price: 61_000.5,
    };
    let batch = [
        NewEvent {
            idempotency_key: Some("req-1"),
            ..NewEvent::new(&deposit, 6)
        },
        NewEvent {
            idempotency_key: Some("req-2"),
            ..NewEvent::new(&e2, 6)
        },
        NewEvent {
            idempotency_key: Some("req-2"),
            ..NewEvent::new(&e2, 6)
        },
        NewEvent::new(&Event::Liquidate, 6),
    ];
    let got: Vec<_> = store
        .append_batch(&batch)
        .unwrap()
        .iter()
        .map(|a| (a.seq, a.duplicate))
        .collect();
    assert_eq!(got, vec![(1, true), (4, false), (4, true), (5, false)]);
    assert_eq!(store.last_seq().unwrap(), 5);
}

#[test]
fn a_version_1_database_is_migrated_in_order_and_keeps_its_events() {
    let tmp = TempDir::new("migrate");
    std::fs::create_dir_all(tmp.path()).unwrap();
    {
        // A database as the first release wrote it: only migration 1, user_version 1.
        let conn = Connection::open(tmp.path().join(DB_FILE)).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch("PRAGMA user_version = 1").unwrap();
        conn.execute(
            "INSERT INTO events (seq, ts_ms, idempotency_key, key_id, event, outputs) VALUES (1, 7, 'old', NULL, ?1, NULL)",
            [r#"{"type":"deposit","account":"a","asset":"USDC","amount":5}"#],
        )
        .unwrap();
        let tables: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'audit'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0);
    }
    let mut store = Store::open(tmp.path()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    const { assert!(SCHEMA_VERSION >= 2) };
    assert_eq!(
        store.events_after(0).unwrap()[0].event,
        Event::Deposit {
            account: "a".into(),
            asset: "USDC".into(),
            amount: 5.0
        }
    );
    assert!(
        store
            .append_event(&Event::Liquidate, Some("old"), None, 8)
            .unwrap()
            .duplicate
    );
    // The later tables are there: the audit trail (v2), keys and genesis (v6).
    store
        .audit(8, Some("admin"), "migrated", &json!({"from": 1}))
        .unwrap();
    assert_eq!(store.audit_list(0, 10).unwrap().len(), 1);
    store.put_api_key("admin", "{}", 8).unwrap();
    store.set_genesis("{}", 8).unwrap();
    // The v2 `api_keys` table (id, role, hash...), never written, was replaced.
    let columns: Vec<String> = Connection::open(tmp.path().join(DB_FILE))
        .unwrap()
        .prepare("SELECT name FROM pragma_table_info('api_keys') ORDER BY cid")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(columns, vec!["id", "record", "updated_ms"]);
    drop(store);
    // Reopening at the current version applies nothing; a newer database is refused.
    assert_eq!(
        Store::open(tmp.path()).unwrap().schema_version().unwrap(),
        SCHEMA_VERSION
    );
    Connection::open(tmp.path().join(DB_FILE))
        .unwrap()
        .execute_batch(&format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1))
        .unwrap();
    assert!(matches!(
        Store::open(tmp.path()),
        Err(StoreError::Schema(_))
    ));
}

#[test]
fn audit_api_keys_and_genesis_are_stored() {
    let tmp = TempDir::new("service");
    let mut store = Store::open(tmp.path()).unwrap();
    let a1 = store
        .audit(
            10,
            Some("admin"),
            "create_key",
            &json!({"id": "t1", "role": "trader"}),
        )
        .unwrap();
    let a2 = store.audit(11, None, "startup", &json!(null)).unwrap();
    assert!(a2 > a1);
    let trail = store.audit_list(0, 10).unwrap();
    assert_eq!(
        trail.iter().map(|a| a.action.as_str()).collect::<Vec<_>>(),
        vec!["create_key", "startup"]
    );
    assert_eq!(trail[0].key_id.as_deref(), Some("admin"));
    assert_eq!(store.audit_list(a1, 10).unwrap().len(), 1);

    // Key records: stored whole by id; a second put of an id replaces it (a revocation).
    let t1 = r#"{"id":"t1","role":"trader","hash":"aa"}"#;
    let t1_revoked = r#"{"id":"t1","role":"trader","hash":"aa","revoked_ms":20}"#;
    let admin = r#"{"id":"admin","role":"admin","hash":"bb"}"#;
    store.put_api_key("t1", t1, 10).unwrap();
    store.put_api_key("admin", admin, 5).unwrap();
    store.put_api_key("t1", t1_revoked, 20).unwrap();
    // The genesis is written once.
    assert_eq!(store.genesis().unwrap(), None);
    store.set_genesis(r#"{"g":1}"#, 1).unwrap();
    assert!(matches!(
        store.set_genesis(r#"{"g":2}"#, 2),
        Err(StoreError::Invalid(_))
    ));
    drop(store);
    let store = Store::open(tmp.path()).unwrap();
    assert_eq!(store.api_keys().unwrap(), vec![admin, t1_revoked]);
    assert_eq!(store.genesis().unwrap().as_deref(), Some(r#"{"g":1}"#));
}

#[cfg(unix)]
#[test]
fn the_database_and_its_wal_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let tmp = TempDir::new("mode");
    let mut store = Store::open(tmp.path()).unwrap();
    store.put_api_key("k", "{}", 1).unwrap();
    let db = tmp.path().join(DB_FILE);
    assert_eq!(mode(&db), 0o600);
    assert_eq!(mode(&tmp.path().join(format!("{DB_FILE}-wal"))), 0o600);
    drop(store);
    // A database an earlier build left readable by others is narrowed on open.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = Store::open(tmp.path()).unwrap();
    assert_eq!(mode(&db), 0o600);
    assert_eq!(store.api_keys().unwrap(), vec!["{}"]);
}

/// Runs `n` events through a live engine and the store, with snapshots at `snapshots`; checks
/// after each snapshot and at the end that recovery (snapshot + replay) equals the live engine
/// and a fresh replay of the whole log, and that the recovered engine then behaves identically.
fn recovery_matches_fresh_replay(n: u64, snapshots: &[u64]) {
    let tmp = TempDir::new("recover");
    let mut store = Store::open(tmp.path()).unwrap();
    let mut live = genesis();
    let mut checked = 0;
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..=n {
        if i > 0 {
            let e = event(i);
            let out = live.apply(&e);
            for o in &out {
                let v = serde_json::to_value(o).unwrap();
                *kinds
                    .entry(v["type"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
            let a = store
                .append(&NewEvent {
                    outputs: Some(&out),
                    ..NewEvent::new(&e, i as i64)
                })
                .unwrap();
            assert_eq!(a.seq, i);
        }
        if snapshots.contains(&i) {
            let state = snapshot(&live);
            // The state's JSON reads back to the same state.
            let json = serde_json::to_string(&state).unwrap();
            // (`Params::source` is not serialised: compare the documents.)
            let back: State = serde_json::from_str(&json).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), json);
            store.save_snapshot(i, &state).unwrap();
            assert_same(&state.restore().unwrap(), &live, &format!("restore at {i}"));
        }
        if snapshots.contains(&i) || (i > 0 && i % 37 == 0) {
            let (recovered, seq) = recover(&store, genesis).unwrap();
            assert_eq!(seq, i);
            assert_same(&recovered, &live, &format!("recover at {i}"));
            checked += 1;
        }
    }
    drop(store);
    let store = Store::open(tmp.path()).unwrap();
    assert_eq!(
        store.snapshot_seqs().unwrap(),
        snapshots
            .iter()
            .copied()
            .filter(|&s| s <= n)
            .collect::<Vec<_>>()
    );
    let (mut recovered, seq) = recover(&store, genesis).unwrap();
    let (mut fresh, fresh_seq) = replay(&store, genesis).unwrap();
    assert_eq!((seq, fresh_seq), (n, n));
    assert_same(&recovered, &fresh, "recover vs fresh replay");
    assert_same(&recovered, &live, "recover vs live");
    // The stored outputs are what a fresh replay gives.
    let mut again = genesis();
    for e in store.events_after(0).unwrap() {
        assert_eq!(
            Some(again.apply(&e.event)),
            e.outputs,
            "outputs of event {}",
            e.seq
        );
    }
    // Going on from the recovered state gives the same outputs as going on from a replay.
    for i in n + 1..=n + 60 {
        let e = event(i);
        assert_eq!(
            recovered.apply(&e),
            fresh.apply(&e),
            "event {i} after recovery"
        );
    }
    assert_same(&recovered, &fresh, "after going on");
    assert!(checked > 0);
    eprintln!("{n} events: outputs {kinds:?}");
    if n >= 300 {
        // The stream exercised the engine's paths: refusals, status changes, liquidations,
        // settlement, and accounts holding three collateral assets.
        for kind in ["rejected", "margin_change", "liquidation_fill", "settled"] {
            assert!(kinds.contains_key(kind), "no {kind} in {kinds:?}");
        }
        assert!(live
            .portfolio()
            .accounts
            .iter()
            .any(|a| a.balances.len() >= 3));
    }
}

#[test]
fn recovery_from_snapshots_equals_a_fresh_replay() {
    recovery_matches_fresh_replay(300, &[0, 13, 64, 150, 151, 299]);
}

#[test]
fn recovery_with_the_snapshot_at_the_last_event_and_with_none() {
    recovery_matches_fresh_replay(120, &[120]);
    recovery_matches_fresh_replay(80, &[]);
}

#[test]
fn snapshots_are_pruned_and_cannot_be_ahead_of_the_log() {
    let tmp = TempDir::new("prune");
    let mut store = Store::open(tmp.path()).unwrap();
    let mut live = genesis();
    for i in 1..=30 {
        let e = event(i);
        live.apply(&e);
        store.append_event(&e, None, None, 0).unwrap();
        if i % 5 == 0 {
            store.save_snapshot(i, &snapshot(&live)).unwrap();
        }
    }
    assert!(matches!(
        store.save_snapshot(31, &snapshot(&live)),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.prune_snapshots(2).unwrap(), 4);
    assert_eq!(store.snapshot_seqs().unwrap(), vec![25, 30]);
    assert_eq!(store.latest_snapshot().unwrap().unwrap().0, 30);
    assert_same(&recover(&store, genesis).unwrap().0, &live, "after pruning");
}

#[test]
fn with_an_oracle_recovery_starts_from_the_snapshot_and_replays_the_rest() {
    let tmp = TempDir::new("oracle");
    let mut store = Store::open(tmp.path()).unwrap();
    let mut live = genesis_with(Some(OracleConfig::default()));
    for i in 1..=40u64 {
        let e = if i % 3 == 0 {
            let source = ["a", "b", "c"][(i % 9 / 3) as usize].to_string();
            Event::Quote {
                source,
                underlying: "BTC".into(),
                price: 60_000.0 + i as f64 * 7.5,
                ts_ms: 1_000 * i as i64,
                confidence: None,
                weight: None,
            }
        } else {
            event(i)
        };
        live.apply(&e);
        store.append_event(&e, None, None, i as i64).unwrap();
        if i == 20 {
            let state = snapshot(&live);
            let json = serde_json::to_string(&state).unwrap();
            let back: State = serde_json::from_str(&json).unwrap();
            let restored = back.restore().unwrap();
            assert_same(&restored, &live, "restored at 20");
            assert_eq!(
                restored.oracle().unwrap().state("BTC"),
                live.oracle().unwrap().state("BTC")
            );
            store.save_snapshot(i, &state).unwrap();
        }
    }
    // Genesis must not be needed: the oracle's quotes and stable prices come from the snapshot.
    let (recovered, seq) = recover(&store, || panic!("recovery replayed from genesis")).unwrap();
    assert_eq!(seq, 40);
    assert_same(&recovered, &live, "oracle engine");
    assert_eq!(
        recovered.oracle().unwrap().state("BTC"),
        live.oracle().unwrap().state("BTC")
    );
}

#[test]
fn group_commit_ingests_quickly() {
    let tmp = TempDir::new("speed");
    let mut store = Store::open(tmp.path()).unwrap();
    let events: Vec<Event> = (1..=20_000).map(event).collect();
    let keys: Vec<String> = (0..events.len()).map(|i| format!("k{i}")).collect();
    let start = std::time::Instant::now();
    for (chunk, ks) in events.chunks(500).zip(keys.chunks(500)) {
        let batch: Vec<NewEvent> = chunk
            .iter()
            .zip(ks)
            .map(|(e, k)| NewEvent {
                idempotency_key: Some(k),
                ..NewEvent::new(e, 0)
            })
            .collect();
        store.append_batch(&batch).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "group commit: {} events in {secs:.3} s = {:.0} events/s",
        events.len(),
        events.len() as f64 / secs
    );
    assert_eq!(store.last_seq().unwrap(), 20_000);
}

/// A database at schema v3 with events (as the last build before the records wrote it) is
/// migrated: its events read back unchanged and without records, the first of them is found as
/// unrecorded, and records set afterwards read back and locate stream messages.
#[test]
fn a_version_3_database_with_events_gains_records_by_backfill() {
    let tmp = TempDir::new("migrate-v4");
    std::fs::create_dir_all(tmp.path()).unwrap();
    let deposit = r#"{"type":"deposit","account":"a","asset":"USDC","amount":5}"#;
    {
        let conn = Connection::open(tmp.path().join(DB_FILE)).unwrap();
        for m in &MIGRATIONS[..3] {
            conn.execute_batch(m).unwrap();
        }
        conn.execute_batch("PRAGMA user_version = 3").unwrap();
        for seq in 1..=3 {
            conn.execute(
                "INSERT INTO events (seq, ts_ms, idempotency_key, key_id, event, outputs) VALUES (?1, 7, ?2, 'admin', ?3, NULL)",
                rusqlite::params![seq, format!("k{seq}"), deposit],
            )
            .unwrap();
        }
    }
    let mut store = Store::open(tmp.path()).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    const { assert!(SCHEMA_VERSION >= 4) };
    let old = store.events_after(0).unwrap();
    assert_eq!(old.len(), 3);
    assert!(old
        .iter()
        .all(|e| e.record.is_none() && e.outputs.is_none()));
    assert_eq!(old[1].idempotency_key.as_deref(), Some("k2"));
    assert_eq!(store.first_unrecorded().unwrap(), Some(1));
    // Backfill: events 1 and 3 make one stream message each, event 2 none.
    let fill = |account: &str| Output::MarginChange {
        account: account.into(),
        from: pmargin_core::Status::Healthy,
        to: pmargin_core::Status::Restricted,
        margin_balance: 0.1 + 0.2,
        initial_margin: 1.0 / 3.0,
        maintenance_margin: 2.0,
    };
    let (o1, o2, o3) = (vec![fill("a")], Vec::new(), vec![fill("b")]);
    let r1 = Record {
        stream_seq: 1,
        stream_extra: Vec::new(),
        params_version: 1,
    };
    let r2 = Record {
        stream_seq: 2,
        ..r1.clone()
    };
    let r3 = Record {
        stream_seq: 2,
        stream_extra: vec![json!({"type": "oracle_health", "price": 0.1 + 0.7})],
        params_version: 2,
    };
    store
        .set_records(&[(1, &o1, &r1), (2, &o2, &r2), (3, &o3, &r3)])
        .unwrap();
    assert_eq!(store.first_unrecorded().unwrap(), None);
    let e3 = store.event_by_key("k3").unwrap().unwrap();
    assert_eq!((e3.seq, e3.outputs, e3.record), (3, Some(o3), Some(r3)));
    assert_eq!(store.event(2).unwrap().unwrap().record, Some(r2));
    // Message 1 is event 1's; message 2 the last event starting at 2 (3: event 2 has none);
    // message 0 precedes every event.
    assert_eq!(store.event_of_stream_message(1).unwrap(), Some(1));
    assert_eq!(store.event_of_stream_message(2).unwrap(), Some(3));
    assert_eq!(store.event_of_stream_message(9).unwrap(), Some(3));
    assert_eq!(store.event_of_stream_message(0).unwrap(), None);
    assert!(matches!(
        store.set_records(&[(4, &o1, &r1)]),
        Err(StoreError::Invalid(_))
    ));
    assert!(store.event_by_key("nope").unwrap().is_none());
}

/// A record is stored with the outputs, in the event's transaction, and reads back exactly;
/// one without outputs is refused and nothing of its batch is stored.
#[test]
fn records_are_stored_with_their_event() {
    let tmp = TempDir::new("records");
    let mut store = Store::open(tmp.path()).unwrap();
    let outputs = vec![Output::Deleveraged {
        account: "a".into(),
        amount: 1e-7 + 3.0,
    }];
    let record = Record {
        stream_seq: 41,
        stream_extra: vec![json!({"type": "oracle_health", "health": "stale", "price": null})],
        params_version: 7,
    };
    store
        .append(&NewEvent {
            outputs: Some(&outputs),
            record: Some(&record),
            idempotency_key: Some("r1"),
            ..NewEvent::new(&Event::Liquidate, 5)
        })
        .unwrap();
    let without = NewEvent {
        record: Some(&record),
        ..NewEvent::new(&Event::Liquidate, 6)
    };
    assert!(matches!(
        store.append_batch(&[NewEvent::new(&Event::Liquidate, 6), without]),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.last_seq().unwrap(), 1);
    let back = store.event_by_key("r1").unwrap().unwrap();
    assert_eq!(back.outputs, Some(outputs));
    assert_eq!(back.record, Some(record));
    assert_eq!(store.first_unrecorded().unwrap(), None);
    store
        .append_event(&Event::Liquidate, None, None, 7)
        .unwrap();
    assert_eq!(store.first_unrecorded().unwrap(), Some(2));
}

/// One format: the engine and the service's part. A document of an earlier development format
/// (no service part, or no engine) does not read; a newer format does not restore.
#[test]
fn only_the_current_state_format_restores() {
    let mut live = genesis();
    for i in 1..=25 {
        live.apply(&event(i));
    }
    let service = ServiceState {
        stream_next: 9,
        events_applied: 20,
        events_rejected: 5,
    };
    let current = State::capture(&live, service);
    assert_eq!(current.format, 3);
    let text = serde_json::to_string(&current).unwrap();
    let back: State = serde_json::from_str(&text).unwrap();
    assert_eq!(back.service, service);
    assert_same(&back.restore().unwrap(), &live, "format 3");
    let mut old: serde_json::Value = serde_json::from_str(&text).unwrap();
    old["format"] = 2.into();
    old.as_object_mut().unwrap().remove("service");
    assert!(serde_json::from_value::<State>(old).is_err(), "format 2");
    let first = r#"{"format":1,"engine_sequence":7,"config":{},"portfolio":{"source":"x","accounts":[]},"has_oracle":true}"#;
    assert!(serde_json::from_str::<State>(first).is_err(), "format 1");
    let future = State {
        format: STATE_FORMAT + 1,
        ..back
    };
    assert!(matches!(
        future.restore(),
        Err(StoreError::NotRestorable(_))
    ));
}

/// The search for events with a given output finds exactly those (and those without outputs),
/// pages them, and says how far it looked.
#[test]
fn events_are_searched_by_their_outputs() {
    let tmp = TempDir::new("search");
    let mut store = Store::open(tmp.path()).unwrap();
    let fill = vec![Output::LiquidationFill {
        account: "a".into(),
        instrument: "BTC-PERPETUAL".into(),
        size: -0.5,
        price: 60_000.0,
        penalty: 300.0,
    }];
    let other = vec![Output::Deleveraged {
        account: "liquidation_fill".into(),
        amount: 1.0,
    }];
    let record = Record {
        stream_seq: 1,
        stream_extra: Vec::new(),
        params_version: 1,
    };
    // Events 1..=10: fills at 2, 5 and 9; event 7 holds the word only as an account name.
    for seq in 1..=10u64 {
        let outputs = match seq {
            2 | 5 | 9 => &fill,
            7 => &other,
            _ => &Vec::new(),
        };
        store
            .append(&NewEvent {
                outputs: Some(outputs),
                record: Some(&record),
                ..NewEvent::new(&Event::Liquidate, seq as i64)
            })
            .unwrap();
    }
    let needle = "\"type\":\"liquidation_fill\"";
    let seqs = |v: &[pmargin_store::StoredEvent]| v.iter().map(|e| e.seq).collect::<Vec<_>>();
    let (all, through) = store
        .events_with_outputs_containing(0, 100, needle)
        .unwrap();
    assert_eq!((seqs(&all), through), (vec![2, 5, 9], 10));
    // A full page stops at its last match.
    let (page, through) = store.events_with_outputs_containing(0, 2, needle).unwrap();
    assert_eq!((seqs(&page), through), (vec![2, 5], 5));
    let (rest, through) = store.events_with_outputs_containing(5, 2, needle).unwrap();
    assert_eq!((seqs(&rest), through), (vec![9], 10));
    // Past the end: nothing, and the search covered up to where it started.
    let (none, through) = store.events_with_outputs_containing(12, 2, needle).unwrap();
    assert_eq!((seqs(&none), through), (vec![], 12));
    // An event without outputs is returned too (its reader must say it cannot tell).
    store
        .append_event(&Event::Liquidate, None, None, 11)
        .unwrap();
    let (tail, through) = store.events_with_outputs_containing(9, 10, needle).unwrap();
    assert_eq!((seqs(&tail), through), (vec![11], 11));
}
