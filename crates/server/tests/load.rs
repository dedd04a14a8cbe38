//! A short, bounded run of the mixed load test (examples/load.rs) against an in-process server
//! with a durable SQLite store: zero errors and no acknowledged write lost. The 30 s, 100-client
//! run is `scripts/loadtest.sh`.

#[path = "../examples/load.rs"]
mod load;

use pmargin_server::demo::demo_genesis;
use pmargin_server::{start, ServerConfig};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_has_no_errors_and_loses_nothing() {
    let dir = std::env::temp_dir().join(format!("pmlt-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = ServerConfig::new("127.0.0.1:0", Some(dir.clone()), demo_genesis());
    cfg.admin_key = Some("load-test-admin-key-0123456789".into());
    // All the load's writes come from one key, beyond a venue's default rate (as in
    // scripts/loadtest.sh).
    cfg.limits.writes_per_second = 1e6;
    cfg.limits.write_burst = 1e6;
    let server = start(cfg).await.unwrap();
    let mut report = load::run(load::LoadConfig {
        base: format!("http://{}", server.addr),
        key: "load-test-admin-key-0123456789".into(),
        clients: 20,
        duration: Duration::from_secs(3),
        run: "t".into(),
    })
    .await
    .unwrap();
    report.print();
    assert_eq!(report.errors(), 0, "{:?}", report.samples);
    assert_eq!(report.lost, 0, "{:?}", report.balance_mismatches);
    assert!(report.acked > 0 && report.get.ms.len() > report.acked as usize);
    assert_eq!(
        report.sequence_after - report.sequence_before,
        report.acked,
        "only accepted writes are logged"
    );
    // Everything acknowledged is in the state a restart recovers: from the snapshot the clean
    // stop took, with nothing left to replay.
    let sequence = server.state.engine().sequence();
    server.stop().await.unwrap();
    let mut cfg = ServerConfig::new("127.0.0.1:0", Some(dir.clone()), demo_genesis());
    cfg.admin_key = Some("load-test-admin-key-0123456789".into());
    let again = start(cfg).await.unwrap();
    assert_eq!(again.recovered_events as u64, sequence);
    assert_eq!(
        (again.snapshot_seq, again.replayed_events),
        (Some(sequence), 0)
    );
    assert_eq!(again.state.engine().sequence(), sequence);
    again.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
