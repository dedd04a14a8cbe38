//! The store: durability across reopen, idempotency, migrations, the service's tables, and
//! recovery (snapshot + replay) equal to a fresh replay of the whole log.

mod common;

use common::{assert_same, event, genesis, genesis_with, TempDir};
use pmargin_engine::oracle::OracleConfig;
use pmargin_engine::{Event, Output};
use pmargin_store::{
    recover, replay, NewEvent, Record, ServiceState, State, Store, StoreError, DB_FILE, MIGRATIONS,
    SCHEMA_VERSION, STATE_FORMAT,
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
    // The v2 tables are there.
    store
        .audit(8, Some("admin"), "migrated", &json!({"from": 1}))
        .unwrap();
    assert_eq!(store.audit_list(0, 10).unwrap().len(), 1);
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
fn params_proposals_audit_and_api_keys_are_stored() {
    let tmp = TempDir::new("service");
    let mut store = Store::open(tmp.path()).unwrap();
    let e = genesis();
    store.add_param_version(1, e.params(), 100, None).unwrap();
    assert!(
        store
            .add_param_version(2, e.params(), 200, Some("no-such-proposal"))
            .is_err(),
        "foreign key on proposal_id"
    );
    store
        .insert_proposal(
            "p-1",
            &json!({"rationale": "wider BTC scan", "params": {"version": 2}}),
            "pending",
            150,
        )
        .unwrap();
    assert!(
        store
            .insert_proposal("p-1", &json!({}), "pending", 151)
            .is_err(),
        "ids are unique"
    );
    store
        .update_proposal(
            "p-1",
            &json!({"rationale": "wider BTC scan", "approvals": ["m1", "m2"]}),
            "activated",
            199,
        )
        .unwrap();
    assert!(store.update_proposal("p-9", &json!({}), "x", 1).is_err());
    store
        .add_param_version(2, &json!({"version": 2}), 200, Some("p-1"))
        .unwrap();
    assert!(
        store
            .add_param_version(2, &json!({"version": 2}), 201, None)
            .is_err(),
        "versions are unique"
    );
    store
        .insert_proposal("p-2", &json!({"rationale": "x"}), "pending", 300)
        .unwrap();
    drop(store);

    let mut store = Store::open(tmp.path()).unwrap();
    let versions = store.param_versions().unwrap();
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(versions[0].params["version"], json!(1));
    let latest = store.latest_param_version().unwrap().unwrap();
    assert_eq!(
        (
            latest.version,
            latest.proposal_id.as_deref(),
            latest.activated_ms
        ),
        (2, Some("p-1"), 200)
    );
    let p = store.proposal("p-1").unwrap().unwrap();
    assert_eq!(
        (p.status.as_str(), p.created_ms, p.updated_ms),
        ("activated", 150, 199)
    );
    assert_eq!(p.proposal["approvals"], json!(["m1", "m2"]));
    assert!(store.proposal("p-3").unwrap().is_none());
    assert_eq!(store.proposals(None).unwrap().len(), 2);
    assert_eq!(store.proposals(Some("pending")).unwrap()[0].id, "p-2");

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

    let hash = [7u8; 32];
    store.insert_api_key("t1", "trader", &hash, 10).unwrap();
    store
        .insert_api_key("admin", "admin", &[1u8; 32], 5)
        .unwrap();
    assert!(store.insert_api_key("t1", "admin", &hash, 11).is_err());
    assert!(store.revoke_api_key("t1", 20).unwrap());
    assert!(!store.revoke_api_key("t1", 21).unwrap(), "already revoked");
    let k = store.api_key("t1").unwrap().unwrap();
    assert_eq!(
        (k.role.as_str(), k.hash.as_slice(), k.revoked_ms),
        ("trader", &hash[..], Some(20))
    );
    assert_eq!(
        store
            .api_keys()
            .unwrap()
            .iter()
            .map(|k| k.id.as_str())
            .collect::<Vec<_>>(),
        vec!["admin", "t1"]
    );
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
            let state = State::capture(&live);
            assert!(state.restorable());
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
            store.save_snapshot(i, &State::capture(&live)).unwrap();
        }
    }
    assert!(matches!(
        store.save_snapshot(31, &State::capture(&live)),
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
            }
        } else {
            event(i)
        };
        live.apply(&e);
        store.append_event(&e, None, None, i as i64).unwrap();
        if i == 20 {
            let state = State::capture(&live);
            assert!(state.restorable());
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
        from: "healthy".into(),
        to: "restricted".into(),
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

/// Format 3 carries the service's part; a format-2 document (engine only, as the previous
/// build wrote) still restores the same engine; an unknown newer format does not restore.
#[test]
fn state_formats_2_and_3_restore_and_only_3_has_the_service_part() {
    let mut live = genesis();
    for i in 1..=25 {
        live.apply(&event(i));
    }
    let service = ServiceState {
        stream_next: 9,
        events_applied: 20,
        events_rejected: 5,
    };
    let current = State::capture(&live).with_service(service);
    assert_eq!(current.format, 3);
    let text = serde_json::to_string(&current).unwrap();
    let back: State = serde_json::from_str(&text).unwrap();
    assert_eq!(back.service, Some(service));
    assert_same(&back.restore().unwrap(), &live, "format 3");
    let mut old: serde_json::Value = serde_json::from_str(&text).unwrap();
    old["format"] = 2.into();
    old.as_object_mut().unwrap().remove("service");
    let old: State = serde_json::from_value(old).unwrap();
    assert!(old.restorable() && old.service.is_none());
    assert_same(&old.restore().unwrap(), &live, "format 2");
    let future = State {
        format: STATE_FORMAT + 1,
        ..back
    };
    assert!(!future.restorable());
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
