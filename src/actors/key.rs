//! KeyActor: the timer side of the key pools (releases penalties, slides usage, keeps gauges current).
//!
//! Selection does not go through this actor: the proxy calls `KeyPools::pick`, a lookup in
//! an index under a per-pool lock. The actor only makes time pass for keys nobody picks.

use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::keys::KeyPools;

/// How often penalties that ran out are released when no request asks.
pub const TICK: Duration = Duration::from_secs(1);

pub struct KeyActor {
    pools: KeyPools,
    every: Duration,
}

impl KeyActor {
    /// Starts the actor in the current actix system.
    pub fn start(pools: KeyPools, every: Duration) -> Addr<KeyActor> {
        Actor::start(KeyActor { pools, every })
    }
}

impl Actor for KeyActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(16);
        ctx.run_interval(self.every, |a, _| a.pools.tick(Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, KeyPoolConfig};
    use crate::keys::{Clock, KeyOutcome, StoredKey};
    use crate::metrics::Metrics;

    #[actix::test]
    async fn ticks_release_penalties_for_the_gauges() {
        let cfg = Config {
            key_pools: vec![KeyPoolConfig {
                name: "p".into(),
                penalty: Duration::from_millis(50),
                ..KeyPoolConfig::default()
            }],
            ..Config::default()
        };
        let metrics = Metrics::new();
        let pools = KeyPools::empty(&cfg, &metrics, Clock::now());
        pools.add_keys(
            "p",
            vec![StoredKey {
                id: "a".into(),
                secret: "sk-0123456789".into(),
                enabled: true,
                category: None,
            }],
        );
        let lease = pools.pick("p", "m").unwrap();
        pools.report(
            &lease,
            KeyOutcome::RateLimited {
                retry_after: None,
                body: String::new(),
            },
        );
        let gauge = || {
            metrics
                .key_state
                .with_label_values(&["p", "penalized"])
                .get()
        };
        assert_eq!(gauge(), 1);
        let _actor = KeyActor::start(pools, Duration::from_millis(10));
        // Bounded: the penalty ends after 50 ms and the actor ticks every 10 ms.
        for _ in 0..500 {
            if gauge() == 0 {
                break;
            }
            actix::clock::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(gauge(), 0, "the actor's ticks release the penalty");
    }
}
