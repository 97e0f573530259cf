//! One key pool: key states plus the ordered index that makes picking O(log n) (pure, takes `now`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::import::secret_prefix;
use super::state::{
    Availability, Change, Clock, DisableReason, KeyOutcome, KeyState, PoolPolicy, WINDOW_MINUTES,
};

/// Index position of a key; stable for the life of the pool (keys are disabled, never removed).
pub type KeyIdx = u32;

/// Ordering of active keys: least requests in the window, then least tokens, then least
/// recently used (never used first), then index for uniqueness.
type Rank = (u64, u64, u64, KeyIdx);

/// A state change other replicas must hear about.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum KeyEvent {
    Penalized {
        pool: String,
        id: String,
        until_unix_ms: i64,
        strikes: u32,
    },
    Disabled {
        pool: String,
        id: String,
        reason: DisableReason,
    },
    Enabled {
        pool: String,
        id: String,
    },
}

/// Requests and tokens one replica added to a key in one minute, for the other replicas.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UsageDelta {
    pub pool: String,
    pub id: String,
    pub minute: i64,
    pub requests: u64,
    pub tokens: u64,
}

/// Why nothing could be picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickError {
    /// Every usable key is cooling down; the soonest is free again after this long.
    AllPenalized(Duration),
    /// No active or penalized key can serve the model.
    NoKeys,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub active: i64,
    pub penalized: i64,
    pub disabled: i64,
}

struct Slot {
    id: String,
    secret: Arc<str>,
    category: Option<String>,
    state: KeyState,
    /// Where the key sits in the index right now (exactly one of these, or neither if disabled).
    rank: Option<Rank>,
    penalized_until: Option<Instant>,
}

/// A picked key, by index; the handle wraps it in a `KeyLease`.
#[derive(Clone, PartialEq, Eq)]
pub struct Picked {
    pub idx: KeyIdx,
    pub id: String,
    pub secret: Arc<str>,
}

impl std::fmt::Debug for Picked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Picked")
            .field("idx", &self.idx)
            .field("id", &self.id)
            .field("secret", &secret_prefix(&self.secret))
            .finish()
    }
}

pub struct KeyPool {
    name: String,
    policy: PoolPolicy,
    clock: Clock,
    slots: Vec<Slot>,
    by_id: HashMap<String, KeyIdx>,
    by_secret: HashMap<Arc<str>, KeyIdx>,
    active: BTreeSet<Rank>,
    penalized: BTreeSet<(Instant, KeyIdx)>,
    /// minute → keys that have a usage bucket for that minute, so sliding the window
    /// touches only keys whose sums change.
    expiry: BTreeMap<i64, Vec<KeyIdx>>,
    rolled_to: i64,
    counts: Counts,
    /// Usage not yet sent to the cluster, when a ClusterSync is attached.
    pending: Option<HashMap<(KeyIdx, i64), (u64, u64)>>,
}

impl KeyPool {
    pub fn new(name: &str, policy: PoolPolicy, clock: Clock) -> KeyPool {
        KeyPool {
            name: name.to_string(),
            policy,
            clock,
            slots: Vec::new(),
            by_id: HashMap::new(),
            by_secret: HashMap::new(),
            active: BTreeSet::new(),
            penalized: BTreeSet::new(),
            expiry: BTreeMap::new(),
            rolled_to: i64::MIN,
            counts: Counts::default(),
            pending: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    pub fn idx_of(&self, id: &str) -> Option<KeyIdx> {
        self.by_id.get(id).copied()
    }

    /// Adds a key, or updates it when its id or secret is already known. A key known by a
    /// derived id (from a keys file) takes the database id when the database has it too.
    pub fn upsert(
        &mut self,
        id: &str,
        secret: &str,
        enabled: bool,
        category: Option<String>,
        now: Instant,
    ) -> KeyIdx {
        let known = self
            .by_id
            .get(id)
            .or_else(|| self.by_secret.get(secret))
            .copied();
        let idx = match known {
            Some(idx) => {
                self.rename(idx, id);
                idx
            }
            None => self.insert(id, secret, now),
        };
        let slot = &mut self.slots[idx as usize];
        if category.is_some() {
            slot.category = category;
        }
        if slot.secret.as_ref() != secret {
            crate::redact::register(secret);
            self.by_secret.remove(&slot.secret);
            slot.secret = Arc::from(secret);
            self.by_secret.insert(slot.secret.clone(), idx);
        }
        let is_enabled = self.slots[idx as usize].state.disabled.is_none();
        if is_enabled != enabled {
            self.update(idx, now, |s| s.set_enabled(enabled));
        }
        idx
    }

    fn insert(&mut self, id: &str, secret: &str, now: Instant) -> KeyIdx {
        crate::redact::register(secret);
        let idx = self.slots.len() as KeyIdx;
        let secret: Arc<str> = Arc::from(secret);
        self.slots.push(Slot {
            id: id.to_string(),
            secret: secret.clone(),
            category: None,
            state: KeyState::default(),
            rank: None,
            penalized_until: None,
        });
        self.by_id.insert(id.to_string(), idx);
        self.by_secret.insert(secret, idx);
        self.place(idx, now);
        idx
    }

    fn rename(&mut self, idx: KeyIdx, id: &str) {
        let slot = &mut self.slots[idx as usize];
        if slot.id != id {
            self.by_id.remove(&slot.id);
            slot.id = id.to_string();
            self.by_id.insert(id.to_string(), idx);
        }
    }

    /// Releases penalties that ran out and slides usage windows. Cheap when nothing is due.
    pub fn advance(&mut self, now: Instant) {
        while let Some(&(until, idx)) = self.penalized.first() {
            if until > now {
                break;
            }
            self.update(idx, now, |_| {});
        }
        let minute = self.clock.minute(now);
        if minute == self.rolled_to {
            return;
        }
        self.rolled_to = minute;
        let cutoff = minute - WINDOW_MINUTES;
        while let Some(entry) = self.expiry.first_entry() {
            if *entry.key() > cutoff {
                break;
            }
            for idx in entry.remove() {
                self.update(idx, now, |s| {
                    s.usage.expire(minute);
                });
            }
        }
    }

    /// The active key with the least recent usage that may serve `model`; records the pick.
    pub fn pick(&mut self, model: &str, now: Instant) -> Result<Picked, PickError> {
        self.pick_except(model, now, &[])
    }

    /// [`pick`](Self::pick) passing over the keys in `except` (refused earlier in the same
    /// request).
    pub fn pick_except(
        &mut self,
        model: &str,
        now: Instant,
        except: &[KeyIdx],
    ) -> Result<Picked, PickError> {
        self.advance(now);
        let found = self.active.iter().map(|r| r.3).find(|&idx| {
            !except.contains(&idx) && !self.slots[idx as usize].state.is_denied(model, now)
        });
        let Some(idx) = found else {
            return Err(self.why_none(model, now));
        };
        let minute = self.clock.minute(now);
        let mut new_bucket = false;
        self.update(idx, now, |s| new_bucket = s.record_pick(minute, now));
        if new_bucket {
            self.expiry.entry(minute).or_default().push(idx);
        }
        self.note_pending(idx, minute, 1, 0);
        let slot = &self.slots[idx as usize];
        Ok(Picked {
            idx,
            id: slot.id.clone(),
            secret: slot.secret.clone(),
        })
    }

    fn why_none(&self, model: &str, now: Instant) -> PickError {
        self.penalized
            .iter()
            .find(|(_, idx)| !self.slots[*idx as usize].state.is_denied(model, now))
            .map_or(PickError::NoKeys, |(until, _)| {
                PickError::AllPenalized(until.saturating_duration_since(now))
            })
    }

    /// Applies an upstream answer to the key at `idx`; returns the event to publish, if any.
    pub fn report(&mut self, idx: KeyIdx, outcome: &KeyOutcome, now: Instant) -> Option<KeyEvent> {
        if idx as usize >= self.slots.len() {
            return None;
        }
        let policy = self.policy;
        let mut change = Change::None;
        let minute = self.clock.minute(now);
        let mut new_bucket = false;
        self.update(idx, now, |s| {
            change = s.on_outcome(outcome, &policy, now);
            if let KeyOutcome::Ok { tokens } = outcome {
                if *tokens > 0 {
                    new_bucket = s.usage.add(minute, minute, 0, *tokens);
                }
            }
        });
        if new_bucket {
            self.expiry.entry(minute).or_default().push(idx);
        }
        if let KeyOutcome::Ok { tokens } = outcome {
            self.note_pending(idx, minute, 0, *tokens);
        }
        let id = self.slots[idx as usize].id.clone();
        let pool = self.name.clone();
        match change {
            Change::None => None,
            Change::Penalized { until, strikes } => Some(KeyEvent::Penalized {
                pool,
                id,
                until_unix_ms: self.clock.unix_ms(until),
                strikes,
            }),
            Change::Disabled(reason) => Some(KeyEvent::Disabled { pool, id, reason }),
        }
    }

    /// Keys disabled after refused credentials (never an operator's), with their secrets,
    /// for the re-probe.
    pub fn failure_disabled(&self) -> Vec<(String, Arc<str>)> {
        self.slots
            .iter()
            .filter(|s| s.state.disabled == Some(DisableReason::Failures))
            .map(|s| (s.id.clone(), s.secret.clone()))
            .collect()
    }

    /// Enables a key a probe found accepted, unless it is no longer disabled by failures
    /// (an operator disabled or enabled it meanwhile). Returns the event to publish.
    pub fn reenable_probed(&mut self, id: &str, now: Instant) -> Option<KeyEvent> {
        let idx = self.idx_of(id)?;
        if self.slots[idx as usize].state.disabled != Some(DisableReason::Failures) {
            return None;
        }
        Some(self.set_enabled(idx, true, now))
    }

    /// A disable the database recorded, restored at start-up with its reason and time.
    pub fn restore_disabled(
        &mut self,
        id: &str,
        reason: DisableReason,
        since: Instant,
        now: Instant,
    ) {
        let Some(idx) = self.idx_of(id) else {
            return;
        };
        self.update(idx, now, |s| {
            s.disabled = Some(reason);
            s.disabled_since = Some(since);
        });
    }

    /// Manual enable/disable; returns the event to publish.
    pub fn set_enabled(&mut self, idx: KeyIdx, enabled: bool, now: Instant) -> KeyEvent {
        self.update(idx, now, |s| s.set_enabled(enabled));
        let id = self.slots[idx as usize].id.clone();
        let pool = self.name.clone();
        if enabled {
            KeyEvent::Enabled { pool, id }
        } else {
            KeyEvent::Disabled {
                pool,
                id,
                reason: DisableReason::Manual,
            }
        }
    }

    /// Applies an event decided on another replica (never re-published).
    pub fn apply_event(&mut self, event: &KeyEvent, now: Instant) {
        let (KeyEvent::Penalized { id, .. }
        | KeyEvent::Disabled { id, .. }
        | KeyEvent::Enabled { id, .. }) = event;
        let Some(idx) = self.idx_of(id) else {
            return;
        };
        let clock = self.clock;
        self.update(idx, now, |s| match event {
            KeyEvent::Penalized {
                until_unix_ms,
                strikes,
                ..
            } => s.apply_remote_penalty(clock.instant(*until_unix_ms), *strikes, now),
            KeyEvent::Disabled { reason, .. } => {
                // An operator's disable replaces a failure one: the re-probe must not undo it.
                if s.disabled.is_none() || *reason == DisableReason::Manual {
                    s.disabled = Some(*reason);
                    s.disabled_since.get_or_insert(now);
                }
            }
            KeyEvent::Enabled { .. } => s.set_enabled(true),
        });
    }

    /// Adds usage another replica recorded.
    pub fn apply_usage(&mut self, id: &str, minute: i64, requests: u64, tokens: u64, now: Instant) {
        let Some(idx) = self.idx_of(id) else {
            return;
        };
        let current = self.clock.minute(now);
        let mut new_bucket = false;
        self.update(idx, now, |s| {
            new_bucket = s.usage.add(minute, current, requests, tokens);
        });
        if new_bucket {
            self.expiry.entry(minute).or_default().push(idx);
        }
    }

    /// Starts (or stops) keeping usage deltas for the cluster.
    pub fn track_pending(&mut self, on: bool) {
        self.pending = on.then(HashMap::new);
    }

    fn note_pending(&mut self, idx: KeyIdx, minute: i64, requests: u64, tokens: u64) {
        if let Some(p) = &mut self.pending {
            let e = p.entry((idx, minute)).or_default();
            e.0 += requests;
            e.1 += tokens;
        }
    }

    /// Usage recorded here since the last call, for the cluster.
    pub fn drain_pending(&mut self) -> Vec<UsageDelta> {
        let Some(p) = &mut self.pending else {
            return Vec::new();
        };
        p.drain()
            .map(|((idx, minute), (requests, tokens))| UsageDelta {
                pool: self.name.clone(),
                id: self.slots[idx as usize].id.clone(),
                minute,
                requests,
                tokens,
            })
            .collect()
    }

    /// Penalties still running and disabled keys, to seed a Redis that lost its state.
    pub fn snapshot_events(&self, now: Instant) -> Vec<KeyEvent> {
        let mut out = Vec::new();
        for slot in &self.slots {
            let (pool, id) = (self.name.clone(), slot.id.clone());
            match (slot.state.disabled, slot.state.availability(now)) {
                (Some(reason), _) => out.push(KeyEvent::Disabled { pool, id, reason }),
                (None, Availability::Penalized { until }) => out.push(KeyEvent::Penalized {
                    pool,
                    id,
                    until_unix_ms: self.clock.unix_ms(until),
                    strikes: slot.state.consecutive_429,
                }),
                _ => {}
            }
        }
        out
    }

    /// Takes the key out of the index, lets `f` change its state, and puts it back where
    /// its new state says. Every state change goes through here so the index stays exact.
    fn update(&mut self, idx: KeyIdx, now: Instant, f: impl FnOnce(&mut KeyState)) {
        let slot = &mut self.slots[idx as usize];
        if let Some(rank) = slot.rank.take() {
            self.active.remove(&rank);
            self.counts.active -= 1;
        } else if let Some(until) = slot.penalized_until.take() {
            self.penalized.remove(&(until, idx));
            self.counts.penalized -= 1;
        } else if slot.state.disabled.is_some() {
            self.counts.disabled -= 1;
        }
        f(&mut slot.state);
        self.place(idx, now);
    }

    fn place(&mut self, idx: KeyIdx, now: Instant) {
        let base = self.clock;
        let slot = &mut self.slots[idx as usize];
        match slot.state.availability(now) {
            Availability::Active => {
                let last = slot
                    .state
                    .last_used
                    .map_or(0, |t| base.unix_ms(t).max(0) as u64 + 1);
                let rank = (
                    slot.state.usage.requests(),
                    slot.state.usage.tokens(),
                    last,
                    idx,
                );
                self.active.insert(rank);
                slot.rank = Some(rank);
                self.counts.active += 1;
            }
            Availability::Penalized { until } => {
                self.penalized.insert((until, idx));
                slot.penalized_until = Some(until);
                self.counts.penalized += 1;
            }
            Availability::Disabled => self.counts.disabled += 1,
        }
    }

    /// One key as `/admin/api/keys` shows it.
    pub fn key_json(&self, idx: KeyIdx, now: Instant) -> Value {
        let slot = &self.slots[idx as usize];
        let s = &slot.state;
        let availability = s.availability(now);
        let penalty_until = match availability {
            Availability::Penalized { until } => Value::String(self.clock.rfc3339(until)),
            _ => Value::Null,
        };
        json!({
            "id": slot.id,
            "prefix": secret_prefix(&slot.secret),
            "state": availability.label(),
            "disabled_reason": s.disabled.map(DisableReason::as_str),
            "disabled_since": s.disabled_since.filter(|_| s.disabled.is_some()).map(|t| self.clock.rfc3339(t)),
            "penalty_until": penalty_until,
            "requests_2h": s.usage.requests(),
            "tokens_2h": s.usage.tokens(),
            "last_used": s.last_used.map(|t| self.clock.rfc3339(t)),
            "category": slot.category,
        })
    }

    /// The pool as `/admin/api/keys` shows it.
    pub fn to_json(&self, now: Instant) -> Value {
        let keys: Vec<Value> = (0..self.slots.len() as KeyIdx)
            .map(|i| self.key_json(i, now))
            .collect();
        json!({
            "name": self.name,
            "active": self.counts.active,
            "penalized": self.counts.penalized,
            "disabled": self.counts.disabled,
            "keys": keys,
        })
    }

    /// Test and bench access to a key's state.
    pub fn state(&self, idx: KeyIdx) -> Option<&KeyState> {
        self.slots.get(idx as usize).map(|s| &s.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pool(n: usize, now: Instant) -> KeyPool {
        let mut p = KeyPool::new(
            "cloud",
            PoolPolicy::default(),
            Clock::at(now, 1_700_000_000_000),
        );
        for i in 0..n {
            p.upsert(&format!("k{i}"), &format!("secret-{i:08}"), true, None, now);
        }
        p
    }

    fn limited() -> KeyOutcome {
        KeyOutcome::RateLimited {
            retry_after: None,
            body: String::new(),
        }
    }

    #[test]
    fn picks_spread_evenly() {
        let now = Instant::now();
        let mut p = pool(10, now);
        let mut hits = HashMap::<String, u32>::new();
        for i in 0..1000u64 {
            let t = now + Duration::from_millis(i * 10);
            let k = p.pick("m", t).unwrap();
            *hits.entry(k.id).or_default() += 1;
            p.report(k.idx, &KeyOutcome::Ok { tokens: 100 }, t);
        }
        let (min, max) = (hits.values().min().unwrap(), hits.values().max().unwrap());
        assert_eq!(hits.len(), 10);
        assert!(*max as f64 <= *min as f64 * 1.5, "{hits:?}");
    }

    #[test]
    fn all_penalized_gives_soonest_release_then_recovers() {
        let now = Instant::now();
        let mut p = pool(2, now);
        let a = p.pick("m", now).unwrap();
        p.report(a.idx, &limited(), now);
        let later = now + Duration::from_secs(5);
        let b = p.pick("m", later).unwrap();
        assert_ne!(a.idx, b.idx);
        p.report(b.idx, &limited(), later);
        assert_eq!(
            p.pick("m", later),
            Err(PickError::AllPenalized(Duration::from_secs(25)))
        );
        assert_eq!(p.counts().penalized, 2);
        let c = p.pick("m", now + Duration::from_secs(30)).unwrap();
        assert_eq!(c.idx, a.idx, "released by time alone");
        assert_eq!(
            p.counts(),
            Counts {
                active: 1,
                penalized: 1,
                disabled: 0
            }
        );
    }

    #[test]
    fn disabled_everywhere_means_no_keys() {
        let now = Instant::now();
        let mut p = pool(2, now);
        p.set_enabled(0, false, now);
        p.set_enabled(1, false, now);
        assert_eq!(p.pick("m", now), Err(PickError::NoKeys));
        assert_eq!(p.counts().disabled, 2);
        p.set_enabled(1, true, now);
        assert_eq!(p.pick("m", now).unwrap().idx, 1);
    }

    #[test]
    fn model_denial_skips_only_that_model() {
        let now = Instant::now();
        let mut p = pool(2, now);
        let denied = KeyOutcome::ModelDenied {
            model: "big".into(),
        };
        p.report(0, &denied, now);
        for _ in 0..5 {
            assert_eq!(p.pick("big", now).unwrap().idx, 1);
        }
        assert_eq!(p.pick("small", now).unwrap().idx, 0);
        p.report(1, &denied, now);
        assert_eq!(p.pick("big", now), Err(PickError::NoKeys));
        assert_eq!(p.counts().active, 2);
    }

    #[test]
    fn usage_slides_out_after_two_hours() {
        let now = Instant::now();
        let mut p = pool(2, now);
        for _ in 0..3 {
            p.pick("m", now).unwrap();
        }
        let s0 = p.state(0).unwrap().usage.requests() + p.state(1).unwrap().usage.requests();
        assert_eq!(s0, 3);
        p.advance(now + Duration::from_secs(121 * 60));
        assert_eq!(p.state(0).unwrap().usage.requests(), 0);
        assert_eq!(p.state(1).unwrap().usage.requests(), 0);
        assert_eq!(
            p.active.first().map(|r| r.0),
            Some(0),
            "index follows the window"
        );
    }

    #[test]
    fn remote_events_and_usage_apply() {
        let now = Instant::now();
        let mut p = pool(2, now);
        let clock = Clock::at(now, 1_700_000_000_000);
        let ev = KeyEvent::Penalized {
            pool: "cloud".into(),
            id: "k0".into(),
            until_unix_ms: clock.unix_ms(now + Duration::from_secs(10)),
            strikes: 1,
        };
        p.apply_event(&ev, now);
        assert_eq!(p.pick("m", now).unwrap().id, "k1");
        p.apply_usage("k1", clock.minute(now), 50, 0, now);
        p.advance(now + Duration::from_secs(10));
        assert_eq!(p.pick("m", now + Duration::from_secs(10)).unwrap().id, "k0");
        p.apply_event(
            &KeyEvent::Disabled {
                pool: "cloud".into(),
                id: "k0".into(),
                reason: DisableReason::Failures,
            },
            now,
        );
        assert_eq!(p.counts().disabled, 1);
        p.apply_event(
            &KeyEvent::Enabled {
                pool: "cloud".into(),
                id: "k0".into(),
            },
            now,
        );
        assert_eq!(p.counts().active, 2);
    }

    #[test]
    fn upsert_dedups_by_secret_and_takes_db_id() {
        let now = Instant::now();
        let mut p = pool(1, now);
        let idx = p.upsert("db-7", "secret-00000000", false, Some("pro".into()), now);
        assert_eq!(idx, 0);
        assert_eq!(p.len(), 1);
        assert_eq!(p.idx_of("db-7"), Some(0));
        assert_eq!(p.idx_of("k0"), None);
        assert_eq!(p.counts().disabled, 1);
        let j = p.key_json(0, now);
        assert_eq!(j["category"], "pro");
        assert_eq!(j["prefix"], "secret…");
    }

    #[test]
    fn pending_deltas_drain() {
        let now = Instant::now();
        let mut p = pool(1, now);
        p.track_pending(true);
        let k = p.pick("m", now).unwrap();
        p.report(k.idx, &KeyOutcome::Ok { tokens: 7 }, now);
        let d = p.drain_pending();
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].requests, d[0].tokens), (1, 7));
        assert!(p.drain_pending().is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Pick,
        Ok(u64),
        Limited(Option<u64>),
        Fail,
        Deny,
        Toggle(bool),
        Wait(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Pick),
            3 => (0u64..5000).prop_map(Op::Ok),
            2 => proptest::option::of(1u64..120).prop_map(Op::Limited),
            1 => Just(Op::Fail),
            1 => Just(Op::Deny),
            1 => any::<bool>().prop_map(Op::Toggle),
            2 => (0u64..90_000).prop_map(Op::Wait),
        ]
    }

    proptest! {
        #[test]
        fn never_picks_a_penalized_disabled_or_denied_key(
            n in 1usize..12,
            ops in proptest::collection::vec((op(), 0usize..12), 1..300),
        ) {
            let start = Instant::now();
            let mut now = start;
            let mut p = pool(n, start);
            for (op, k) in ops {
                let idx = (k % n) as KeyIdx;
                match op {
                    Op::Pick => match p.pick("m", now) {
                        Ok(picked) => {
                            let s = p.state(picked.idx).unwrap();
                            prop_assert_eq!(s.availability(now), Availability::Active);
                            prop_assert!(!s.is_denied("m", now));
                        }
                        Err(PickError::AllPenalized(wait)) => {
                            prop_assert!(wait > Duration::ZERO);
                            for i in 0..n as KeyIdx {
                                let s = p.state(i).unwrap();
                                prop_assert!(
                                    s.availability(now) != Availability::Active || s.is_denied("m", now)
                                );
                            }
                        }
                        Err(PickError::NoKeys) => {
                            for i in 0..n as KeyIdx {
                                let s = p.state(i).unwrap();
                                prop_assert!(
                                    s.availability(now) == Availability::Disabled || s.is_denied("m", now)
                                );
                            }
                        }
                    },
                    Op::Ok(t) => { p.report(idx, &KeyOutcome::Ok { tokens: t }, now); }
                    Op::Limited(r) => {
                        let out = KeyOutcome::RateLimited {
                            retry_after: r.map(Duration::from_secs),
                            body: String::new(),
                        };
                        p.report(idx, &out, now);
                    }
                    Op::Fail => { p.report(idx, &KeyOutcome::AuthFailed, now); }
                    Op::Deny => { p.report(idx, &KeyOutcome::ModelDenied { model: "m".into() }, now); }
                    Op::Toggle(on) => { p.set_enabled(idx, on, now); }
                    Op::Wait(ms) => now += Duration::from_millis(ms),
                }
                let c = p.counts();
                prop_assert_eq!((c.active + c.penalized + c.disabled) as usize, n);
                prop_assert_eq!(c.active as usize, p.active.len());
            }
        }

        #[test]
        fn equal_outcomes_spread_within_one_and_a_half(n in 2usize..40, tokens in 0u64..2000) {
            let now = Instant::now();
            let mut p = pool(n, now);
            let mut hits = vec![0u32; n];
            for i in 0..1000u64 {
                let t = now + Duration::from_millis(i);
                let k = p.pick("m", t).unwrap();
                hits[k.idx as usize] += 1;
                p.report(k.idx, &KeyOutcome::Ok { tokens }, t);
            }
            let (min, max) = (*hits.iter().min().unwrap(), *hits.iter().max().unwrap());
            prop_assert!(max as f64 <= min as f64 * 1.5, "{:?}", hits);
        }
    }
}
