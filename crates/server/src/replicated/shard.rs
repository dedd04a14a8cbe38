//! Sharding (issue 19, docs/DEPLOYMENT.md "Sharded"): accounts partitioned over K engine
//! groups, each a replicated log of its own with its own leader. This module is the pure part
//! a router needs: which group holds an account ([`group_of`]), where an event goes
//! ([`route`]), and how a fill between two groups becomes two legs under one idempotency key.
//!
//! - An account's group is a jump consistent hash (Lamping and Veach, "A Fast, Minimal Memory,
//!   Consistent Hash Algorithm", 2014) of the first 8 bytes of SHA-256 of its id: stable
//!   across builds and machines, and going from K to K+1 groups moves only the accounts that
//!   the new group takes (about 1/(K+1) of them), never one between two old groups.
//! - Market data and parameters (prices, marks, vols, quotes, oracle ticks, activations,
//!   settlements, funding, the liquidation sweep) go to every group, in the same order: each
//!   group's engine prices its accounts from the same market.
//! - A fill between two accounts of different groups becomes one leg per group, each a fill of
//!   one side against no counterparty in the group's log, both submitted under the venue's fill
//!   id as the Idempotency-Key: a router that crashes between the two legs resubmits both,
//!   and the group that already logged its leg answers with the stored result. Each leg
//!   carries the fill's fee: the engine charges `fee` to each side of a fill, so the two legs
//!   pay the fund what the one fill would have. A leg is posted with the [`LEG_OF`] header
//!   naming the other side: the service refuses a one-sided fill without it (issue 15).

use pmargin_engine::Event;
use sha2::{Digest, Sha256};

/// The header of a cross-group leg (`POST /v1/events`): the account on the fill's other side,
/// which lives in another group.
pub const LEG_OF: &str = "x-pmargin-leg-of";

/// A node's place among the groups (`serve --shard I/K`): group `index` of `groups`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub groups: u32,
}

impl Shard {
    /// `I/K`, with `I` below `K` and `K` at least 2.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let bad =
            || format!("--shard: `{text}` is not I/K (this group's index I of K groups, e.g. 0/2)");
        let (i, k) = text.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let groups: u32 = k.trim().parse().map_err(|_| bad())?;
        if groups < 2 || index >= groups {
            return Err(format!(
                "--shard: {text}: the index must be below the number of groups, which is at least 2"
            ));
        }
        Ok(Shard { index, groups })
    }

    pub fn holds(&self, account: &str) -> bool {
        group_of(account, self.groups) == self.index
    }
}

/// Whether a one-sided fill of `account` marked with `leg_of` (the [`LEG_OF`] header) is a
/// cross-group leg this node takes: the node is a group of a sharded deployment, the account
/// is its own, and the other side is an account of another group. A node that is not a
/// group, or a header naming an account of the same group, leaves the fill one-sided, and the
/// service refuses it: the header cannot be used to print value inside one log.
pub fn is_leg(shard: Option<&Shard>, account: &str, leg_of: Option<&str>) -> bool {
    match (shard, leg_of) {
        (Some(s), Some(other)) => !other.is_empty() && s.holds(account) && !s.holds(other),
        _ => false,
    }
}

/// The group (0..k) of an account among `k` groups (`k` at least 1).
pub fn group_of(account: &str, k: u32) -> u32 {
    let digest = Sha256::digest(account.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    jump_hash(u64::from_be_bytes(first), k.max(1))
}

/// Jump consistent hash: the bucket (0..buckets) of `key`.
pub fn jump_hash(mut key: u64, buckets: u32) -> u32 {
    let (mut b, mut j) = (-1i64, 0i64);
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

/// Where an event goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// To one group.
    One(u32),
    /// To every group (market data, parameters, the sweep).
    All,
    /// A fill across two groups: one leg each, both under the same idempotency key.
    Legs(Box<[(u32, Event); 2]>),
}

/// The route of `event` among `k` groups.
pub fn route(event: &Event, k: u32) -> Route {
    match event {
        Event::Deposit { account, .. } | Event::Withdrawal { account, .. } => {
            Route::One(group_of(account, k))
        }
        Event::Trade {
            account,
            instrument,
            size,
            price,
            fee,
            counterparty,
        } => {
            let g = group_of(account, k);
            match counterparty {
                Some(other) if group_of(other, k) != g => {
                    let taker = Event::Trade {
                        account: account.clone(),
                        instrument: instrument.clone(),
                        size: *size,
                        price: *price,
                        fee: *fee,
                        counterparty: None,
                    };
                    let maker = Event::Trade {
                        account: other.clone(),
                        instrument: instrument.clone(),
                        size: -*size,
                        price: *price,
                        fee: *fee,
                        counterparty: None,
                    };
                    Route::Legs(Box::new([(g, taker), (group_of(other, k), maker)]))
                }
                _ => Route::One(g),
            }
        }
        _ => Route::All,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_hash_matches_the_papers_function() {
        // Computed by a Python transcription of the paper's C++ function (an independent
        // implementation, not this code's output).
        assert_eq!(jump_hash(0, 1), 0);
        assert_eq!(jump_hash(0, 100), 0);
        assert_eq!(jump_hash(1, 2), 0);
        assert_eq!(jump_hash(1, 10), 6);
        assert_eq!(jump_hash(0xDEAD_10CC, 2), 1);
        assert_eq!(jump_hash(0xDEAD_10CC, 3), 1);
        assert_eq!(jump_hash(0xDEAD_10CC, 100), 94);
        assert_eq!(jump_hash(256, 1000), 520);
        assert_eq!(jump_hash(u64::MAX, 1 << 20), 589_430);
    }

    #[test]
    fn a_shard_is_i_of_k() {
        assert_eq!(
            Shard::parse("1/3"),
            Ok(Shard {
                index: 1,
                groups: 3
            })
        );
        for bad in ["3/3", "0/1", "a/2", "1", "-1/2", ""] {
            let e = Shard::parse(bad).unwrap_err();
            assert!(e.starts_with("--shard"), "{bad}: {e}");
        }
    }

    #[test]
    fn growing_by_one_group_moves_accounts_only_into_the_new_group() {
        let ids: Vec<String> = (0..20_000).map(|i| format!("acct-{i}")).collect();
        for k in 1..12u32 {
            let mut moved = 0;
            for id in &ids {
                let (before, after) = (group_of(id, k), group_of(id, k + 1));
                if before != after {
                    assert_eq!(after, k, "{id} moved between two old groups");
                    moved += 1;
                }
            }
            // About 1/(k+1) move: within 15% of it.
            let share = moved as f64 / ids.len() as f64;
            let want = 1.0 / f64::from(k + 1);
            assert!(
                (share - want).abs() < 0.15 * want,
                "k={k}: {share} moved, {want} expected"
            );
        }
    }

    #[test]
    fn a_cross_group_fill_becomes_two_opposite_legs() {
        let k = 4;
        // Two accounts in different groups (found, not assumed).
        let a = "alice".to_string();
        let b = (0..)
            .map(|i| format!("bob-{i}"))
            .find(|b| group_of(b, k) != group_of(&a, k))
            .unwrap();
        let fill = Event::Trade {
            account: a.clone(),
            instrument: "BTC-PERPETUAL".into(),
            size: 0.5,
            price: 60_000.0,
            fee: 1.5,
            counterparty: Some(b.clone()),
        };
        let Route::Legs(legs) = route(&fill, k) else {
            panic!("a cross-group fill must split");
        };
        let [(ga, la), (gb, lb)] = *legs;
        assert_eq!((ga, gb), (group_of(&a, k), group_of(&b, k)));
        let size = |e: &Event| match e {
            Event::Trade {
                size,
                counterparty: None,
                ..
            } => *size,
            other => panic!("a leg is a one-sided fill: {other:?}"),
        };
        assert_eq!(size(&la) + size(&lb), 0.0);
        // Each side of a fill pays its fee (engine::events::trade), so each leg does.
        for leg in [&la, &lb] {
            assert!(
                matches!(leg, Event::Trade { fee, .. } if *fee == 1.5),
                "{leg:?}"
            );
        }
        // The same pair in one group stays one event.
        let c = (0..)
            .map(|i| format!("carol-{i}"))
            .find(|c| group_of(c, k) == group_of(&a, k))
            .unwrap();
        // A leg is taken only by the account's own group of a sharded deployment, and only
        // when the other side lives in another group.
        let home = Shard {
            index: group_of(&a, k),
            groups: k,
        };
        let away = Shard {
            index: group_of(&b, k),
            groups: k,
        };
        assert!(is_leg(Some(&home), &a, Some(&b)));
        assert!(!is_leg(None, &a, Some(&b)), "a node that is not a group");
        assert!(
            !is_leg(Some(&away), &a, Some(&b)),
            "not this group's account"
        );
        assert!(
            !is_leg(Some(&home), &a, Some(&c)),
            "the other side is in this group"
        );
        assert!(!is_leg(Some(&home), &a, Some(&a)) && !is_leg(Some(&home), &a, None));
        let inside = Event::Trade {
            account: a.clone(),
            instrument: "BTC-PERPETUAL".into(),
            size: 0.5,
            price: 60_000.0,
            fee: 0.0,
            counterparty: Some(c),
        };
        assert_eq!(route(&inside, k), Route::One(group_of(&a, k)));
        assert_eq!(
            route(
                &Event::Price {
                    underlying: "BTC".into(),
                    price: 1.0
                },
                k
            ),
            Route::All
        );
    }
}
