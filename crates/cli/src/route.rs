//! `pmargin route`: the router in front of K engine groups (docs/DEPLOYMENT.md "Sharded").

use clap::Args;
use pmargin_server::router::{parse_group, start, RouterConfig};
use std::time::Duration;

#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Example (two groups, each an HA trio; see docs/DEPLOYMENT.md):\n  \
    pmargin route --listen 0.0.0.0:8080 \\\n    \
    --group A=http://a1:8080,http://a2:8080,http://a3:8080 \\\n    \
    --group B=http://b1:8080,http://b2:8080,http://b3:8080\n\n\
    An account's requests go to its group (a stable hash of its id over the groups, in the\n\
    order of the --group flags: keep that order in every router and never change it; a new\n\
    group goes last). Quotes, market events and governance go to every group; a fill between\n\
    two groups goes to both as two legs under one Idempotency-Key. The caller's API key is\n\
    passed on: it must be valid in every group. GET /healthz lists each group's leader."
)]
pub struct RouteArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// An engine group: NAME=URL[,URL...], the base URLs of its nodes; once per group, in the
    /// order of the account hash
    #[arg(long = "group", value_name = "NAME=URLS", required = true)]
    pub groups: Vec<String>,
    /// How long one node has to answer one attempt
    #[arg(long, value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub attempt_timeout_s: u64,
    /// How long a read, or a write with an Idempotency-Key, is retried while its group has
    /// no leader or no node answers (a failover takes about 3 s)
    #[arg(long, value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub retry_for_s: u64,
}

/// Routes until Ctrl-C.
pub fn route(args: &RouteArgs) -> Result<String, String> {
    let groups = args
        .groups
        .iter()
        .map(|g| parse_group(g))
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = RouterConfig::new(args.listen.clone(), groups);
    config.attempt_timeout = Duration::from_secs(args.attempt_timeout_s);
    config.retry_for = Duration::from_secs(args.retry_for_s);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let running = start(config.clone()).await?;
        eprintln!("pmargin route: listening on http://{}", running.addr);
        for (i, (name, nodes)) in config.groups.iter().enumerate() {
            eprintln!("  group {i} {name}: {}", nodes.join(", "));
        }
        eprintln!(
            "  health of every group: http://{}/healthz; stop with Ctrl-C",
            running.addr
        );
        tokio::signal::ctrl_c()
            .await
            .map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
        running.stop().await?;
        Ok("router stopped\n".to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_group_is_refused_before_anything_starts_naming_the_flag() {
        let args = |groups: &[&str]| RouteArgs {
            listen: "127.0.0.1:0".into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            attempt_timeout_s: 1,
            retry_for_s: 1,
        };
        let e = route(&args(&["A=http://127.0.0.1:1", "B"])).unwrap_err();
        assert!(e.starts_with("--group `B`"), "{e}");
        let e = route(&args(&["A=http://h:1", "A=http://h:2"])).unwrap_err();
        assert!(e.contains("--group A: named twice"), "{e}");
    }
}
