//! Pure placement: which backend takes a model, given a snapshot of backend health, models,
//! residency, memory and in-flight reservations. No clock, no I/O: `now` and the RNG seed come in.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::{BackendConfig, BackendKind, RoutingConfig};
use crate::routing::memory::{MemoryEstimator, normalize_model};

/// Index of a backend in configuration order.
pub type BackendId = usize;

type ModelId = u32;

/// Requests one backend is assumed to run in parallel for one loaded model (Ollama's default
/// `OLLAMA_NUM_PARALLEL`). Below it, a backend that has the model loaded beats an idle one
/// that would have to load it; at it, load spreads to other backends.
pub const PARALLEL_HINT: u32 = 4;

/// Weight of a backend whose time to first byte was never measured.
const DEFAULT_WEIGHT_MS: f64 = 250.0;

/// Circuit breaker state as the placer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    Closed,
    /// Ejected until `until`; after it, half-open.
    Open {
        until: Instant,
    },
    /// One probe request may go through.
    HalfOpen,
}

impl Circuit {
    /// The state at `now`: an open circuit whose cool-down is over is half-open.
    pub fn at(self, now: Instant) -> Circuit {
        match self {
            Circuit::Open { until } if until <= now => Circuit::HalfOpen,
            other => other,
        }
    }

    /// `closed`, `open` or `half_open`, as the admin API spells it.
    pub fn name(self, now: Instant) -> &'static str {
        match self.at(now) {
            Circuit::Closed => "closed",
            Circuit::Open { .. } => "open",
            Circuit::HalfOpen => "half_open",
        }
    }
}

/// What configuration says about a backend.
#[derive(Debug, Clone)]
pub struct BackendSpec {
    pub name: String,
    pub kind: BackendKind,
    pub priority: u32,
    pub max_memory: Option<u64>,
    pub allow_pull: bool,
    /// Models served whatever the backend lists (required for openai/anthropic kinds).
    pub models: Vec<String>,
}

impl BackendSpec {
    pub fn from_config(cfg: &BackendConfig) -> BackendSpec {
        BackendSpec {
            name: cfg.name.clone(),
            kind: cfg.kind,
            priority: cfg.priority,
            max_memory: cfg.max_memory.map(|m| m.as_u64()),
            allow_pull: cfg.allow_pull && cfg.kind == BackendKind::Ollama,
            models: cfg.models.clone(),
        }
    }
}

/// The latest observed state of one backend.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSnapshot {
    /// False until the first poll answered (or failed); an unpolled backend takes nothing.
    pub polled: bool,
    pub circuit: Circuit,
    /// Models it has, with their `/api/tags` size when known.
    pub models: Vec<(String, Option<u64>)>,
    /// Models loaded in memory (`/api/ps`) and the memory each takes.
    pub resident: Vec<(String, u64)>,
    pub ewma_ttfb_ms: Option<f64>,
}

impl Default for BackendSnapshot {
    fn default() -> Self {
        Self {
            polled: false,
            circuit: Circuit::Closed,
            models: Vec::new(),
            resident: Vec::new(),
            ewma_ttfb_ms: None,
        }
    }
}

/// A placement request: the model and backends already tried for this request.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    pub model: &'a str,
    pub exclude: &'a [BackendId],
}

/// Identifies one reservation so it can be given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    backend: BackendId,
    model: ModelId,
}

/// Where a request goes, and what was reserved for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub backend: BackendId,
    /// The model name as the backend spells it (`llama3` → `llama3:latest`).
    pub model: String,
    /// New memory reserved by this placement (0 when the model is loaded or already loading).
    pub memory_reserved: u64,
    ticket: Ticket,
}

impl Placement {
    pub fn ticket(&self) -> Ticket {
        self.ticket
    }
}

impl Ticket {
    pub fn backend(&self) -> BackendId {
        self.backend
    }
}

/// Why nothing was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaceError {
    /// No backend lists the model, up or not.
    UnknownModel,
    /// Some backend lists it, but none can take it now.
    NoCapacity,
}

#[derive(Debug, Clone)]
struct Served {
    model: ModelId,
    spelling: String,
    size: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Work {
    model: ModelId,
    inflight: u32,
    /// Memory the model needs; counted as reserved while it is not resident.
    need: u64,
}

#[derive(Debug, Clone)]
struct Slot {
    spec: BackendSpec,
    polled: bool,
    circuit: Circuit,
    /// Sorted by model id.
    served: Vec<Served>,
    resident: Vec<(ModelId, u64)>,
    resident_total: u64,
    work: Vec<Work>,
    inflight: u32,
    weight_ms: f64,
}

impl Slot {
    fn serves(&self, model: ModelId) -> Option<&Served> {
        self.served
            .binary_search_by_key(&model, |s| s.model)
            .ok()
            .map(|i| &self.served[i])
    }

    fn resident_size(&self, model: ModelId) -> Option<u64> {
        self.resident
            .iter()
            .find(|(m, _)| *m == model)
            .map(|(_, s)| *s)
    }

    fn work(&self, model: ModelId) -> Option<&Work> {
        self.work.iter().find(|w| w.model == model)
    }

    fn available(&self, now: Instant) -> bool {
        self.polled
            && match self.circuit.at(now) {
                Circuit::Closed => true,
                Circuit::HalfOpen => self.inflight == 0,
                Circuit::Open { .. } => false,
            }
    }

    /// Memory held for in-flight work on models that are not loaded yet.
    fn reserved(&self) -> u64 {
        self.work
            .iter()
            .filter(|w| self.resident_size(w.model).is_none())
            .map(|w| w.need)
            .sum()
    }

    /// Memory Ollama cannot evict: loaded models with work in flight, plus reservations.
    fn pinned(&self) -> u64 {
        let busy: u64 = self
            .resident
            .iter()
            .filter(|(m, _)| self.work(*m).is_some())
            .map(|(_, s)| *s)
            .sum();
        busy + self.reserved()
    }

    /// Can `model`, needing `need` bytes, run here now, evicting idle models if it must?
    ///
    /// A loaded model needs no new memory, unless earlier placements already counted on Ollama
    /// evicting it: then it must fit beside the pinned work like any other.
    fn fits(&self, model: ModelId, need: u64) -> bool {
        if self.work(model).is_some() {
            return true;
        }
        let Some(max) = self.spec.max_memory else {
            return true;
        };
        let (new, size) = match self.resident_size(model) {
            Some(size) => (0, size),
            None => (need, need),
        };
        self.resident_total + self.reserved() + new <= max || self.pinned() + size <= max
    }
}

/// The placement view of the whole fleet. All logic, no actors.
#[derive(Debug, Clone)]
pub struct Placer {
    estimator: MemoryEstimator,
    ids: HashMap<String, ModelId>,
    /// Configured memory need, by model id.
    configured_need: Vec<u64>,
    /// Largest `/api/tags` size any backend reported, by model id (for pulls).
    listed_size: Vec<Option<u64>>,
    assignments: HashMap<ModelId, BackendId>,
    slots: Vec<Slot>,
    rng: StdRng,
}

impl Placer {
    /// A placer for `specs` (index = `BackendId`); `seed` makes tie-breaking reproducible.
    pub fn new(
        specs: Vec<BackendSpec>,
        routing: &RoutingConfig,
        seed: u64,
    ) -> Result<Placer, regex::Error> {
        let mut placer = Placer {
            estimator: MemoryEstimator::new(routing)?,
            ids: HashMap::new(),
            configured_need: Vec::new(),
            listed_size: Vec::new(),
            assignments: HashMap::new(),
            slots: Vec::with_capacity(specs.len()),
            rng: StdRng::seed_from_u64(seed),
        };
        for spec in specs {
            let served = spec
                .models
                .iter()
                .map(|m| (m.clone(), None))
                .collect::<Vec<_>>();
            let mut slot = Slot {
                spec,
                polled: false,
                circuit: Circuit::Closed,
                served: Vec::new(),
                resident: Vec::new(),
                resident_total: 0,
                work: Vec::new(),
                inflight: 0,
                weight_ms: DEFAULT_WEIGHT_MS,
            };
            slot.served = placer.served_list(&slot.spec, &served);
            placer.slots.push(slot);
        }
        for (model, backend) in &routing.assignments {
            if let Some(id) = placer.slots.iter().position(|s| &s.spec.name == backend) {
                let m = placer.intern(model);
                placer.assignments.insert(m, id);
            }
        }
        Ok(placer)
    }

    /// A placer straight from configuration (start-up).
    pub fn from_config(
        backends: &[BackendConfig],
        routing: &RoutingConfig,
        seed: u64,
    ) -> Result<Placer, regex::Error> {
        Placer::new(
            backends.iter().map(BackendSpec::from_config).collect(),
            routing,
            seed,
        )
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn intern(&mut self, name: &str) -> ModelId {
        let key = normalize_model(name);
        if let Some(id) = self.ids.get(key.as_ref()) {
            return *id;
        }
        let id = self.configured_need.len() as ModelId;
        self.configured_need.push(self.estimator.configured(&key));
        self.listed_size.push(None);
        self.ids.insert(key.into_owned(), id);
        id
    }

    fn served_list(&mut self, spec: &BackendSpec, models: &[(String, Option<u64>)]) -> Vec<Served> {
        let mut served: Vec<Served> = Vec::with_capacity(models.len() + spec.models.len());
        let configured = spec.models.iter().map(|m| (m, None));
        for (name, size) in models.iter().map(|(n, s)| (n, *s)).chain(configured) {
            let model = self.intern(name);
            if let Some(size) = size.filter(|s| *s > 0) {
                let listed = &mut self.listed_size[model as usize];
                *listed = Some(listed.map_or(size, |l| l.max(size)));
            }
            match served.iter_mut().find(|s| s.model == model) {
                Some(s) => s.size = s.size.or(size),
                None => served.push(Served {
                    model,
                    spelling: name.clone(),
                    size,
                }),
            }
        }
        served.sort_by_key(|s| s.model);
        served
    }

    /// Replaces what is known about backend `id`. Reservations are kept.
    pub fn update(&mut self, id: BackendId, snap: &BackendSnapshot) {
        let Some(spec) = self.slots.get(id).map(|s| s.spec.clone()) else {
            return;
        };
        let served = self.served_list(&spec, &snap.models);
        let mut resident: Vec<(ModelId, u64)> = Vec::with_capacity(snap.resident.len());
        for (name, size) in &snap.resident {
            let model = self.intern(name);
            if !resident.iter().any(|(m, _)| *m == model) {
                resident.push((model, *size));
            }
        }
        let slot = &mut self.slots[id];
        slot.polled = snap.polled;
        slot.circuit = snap.circuit;
        slot.served = served;
        slot.resident_total = resident.iter().map(|(_, s)| s).sum();
        slot.resident = resident;
        slot.weight_ms = snap
            .ewma_ttfb_ms
            .filter(|w| w.is_finite())
            .map_or(DEFAULT_WEIGHT_MS, |w| w.max(1.0));
    }

    /// Could backend `id` take `model` now (up, serves or may pull it, memory fits)?
    pub fn can_take(&self, id: BackendId, model: &str, now: Instant) -> bool {
        let Some(&m) = self.ids.get(normalize_model(model).as_ref()) else {
            return false;
        };
        self.eligible(id, m, now).is_some()
    }

    fn eligible(&self, id: BackendId, model: ModelId, now: Instant) -> Option<u64> {
        let slot = self.slots.get(id)?;
        if !slot.available(now) {
            return None;
        }
        let need = need_on(slot, model, &self.listed_size, &self.configured_need)?;
        slot.fits(model, need).then_some(need)
    }

    /// Whether some backend lists `model` (tag normalised), may pull it, or is assigned it:
    /// what `place` would not call an unknown model.
    pub fn knows(&self, model: &str) -> bool {
        let Some(&m) = self.ids.get(normalize_model(model).as_ref()) else {
            return false;
        };
        self.assignments.contains_key(&m)
            || self
                .slots
                .iter()
                .any(|s| s.serves(m).is_some() || s.spec.allow_pull)
    }

    /// Picks a backend for `q.model` and reserves in-flight and memory on it.
    pub fn place(&mut self, q: Query<'_>, now: Instant) -> Result<Placement, PlaceError> {
        let model = *self
            .ids
            .get(normalize_model(q.model).as_ref())
            .ok_or(PlaceError::UnknownModel)?;
        if let Some(&id) = self.assignments.get(&model) {
            if !q.exclude.contains(&id) {
                if let Some(need) = self.eligible_assigned(id, model, now) {
                    return Ok(self.reserve(id, model, need, q.model));
                }
            }
        }
        let mut known = self.assignments.contains_key(&model);
        let mut best: Option<(BackendId, u64, Rank)> = None;
        let mut ties = 0u32;
        let Placer {
            slots,
            rng,
            listed_size,
            configured_need,
            ..
        } = self;
        for (id, slot) in slots.iter().enumerate() {
            known |= slot.serves(model).is_some();
            if q.exclude.contains(&id) || !slot.available(now) {
                continue;
            }
            let Some(need) = need_on(slot, model, listed_size, configured_need) else {
                continue;
            };
            if !slot.fits(model, need) {
                continue;
            }
            let key = rank(slot, model);
            // Reservoir sampling: each of the equally ranked backends wins with equal odds.
            match best.as_ref().map(|(_, _, b)| cmp_rank(&key, b)) {
                None | Some(Ordering::Less) => {
                    best = Some((id, need, key));
                    ties = 1;
                }
                Some(Ordering::Equal) => {
                    ties += 1;
                    if rng.gen_range(0..ties) == 0 {
                        best = Some((id, need, key));
                    }
                }
                Some(Ordering::Greater) => {}
            }
        }
        match best {
            Some((id, need, _)) => Ok(self.reserve(id, model, need, q.model)),
            None if known => Err(PlaceError::NoCapacity),
            None => Err(PlaceError::UnknownModel),
        }
    }

    /// An assigned backend must be up and have room; it need not list the model.
    fn eligible_assigned(&self, id: BackendId, model: ModelId, now: Instant) -> Option<u64> {
        let slot = self.slots.get(id)?;
        if !slot.available(now) {
            return None;
        }
        let need =
            need_on(slot, model, &self.listed_size, &self.configured_need).unwrap_or_else(|| {
                self.listed_size[model as usize]
                    .filter(|s| *s > 0)
                    .unwrap_or(self.configured_need[model as usize])
            });
        slot.fits(model, need).then_some(need)
    }

    fn reserve(&mut self, id: BackendId, model: ModelId, need: u64, asked: &str) -> Placement {
        let slot = &mut self.slots[id];
        let spelling = slot
            .serves(model)
            .map_or_else(|| asked.to_string(), |s| s.spelling.clone());
        let resident = slot.resident_size(model).is_some();
        slot.inflight += 1;
        let memory_reserved = match slot.work.iter_mut().find(|w| w.model == model) {
            Some(w) => {
                w.inflight += 1;
                0
            }
            None => {
                slot.work.push(Work {
                    model,
                    inflight: 1,
                    need,
                });
                if resident { 0 } else { need }
            }
        };
        Placement {
            backend: id,
            model: spelling,
            memory_reserved,
            ticket: Ticket { backend: id, model },
        }
    }

    /// Gives back what `ticket`'s placement reserved. Releasing twice is harmless.
    pub fn release(&mut self, ticket: Ticket) {
        let Some(slot) = self.slots.get_mut(ticket.backend) else {
            return;
        };
        let Some(i) = slot.work.iter().position(|w| w.model == ticket.model) else {
            return;
        };
        slot.inflight = slot.inflight.saturating_sub(1);
        slot.work[i].inflight -= 1;
        if slot.work[i].inflight == 0 {
            slot.work.swap_remove(i);
        }
    }

    /// In-flight requests and reserved memory on backend `id`.
    pub fn load(&self, id: BackendId) -> (u64, u64) {
        self.slots
            .get(id)
            .map_or((0, 0), |s| (u64::from(s.inflight), s.reserved()))
    }

    /// In-flight requests and reserved memory over the fleet.
    pub fn totals(&self) -> (u64, u64) {
        (0..self.slots.len())
            .map(|id| self.load(id))
            .fold((0, 0), |(a, b), (i, r)| (a + i, b + r))
    }
}

/// Memory `model` needs on `slot`, or `None` when the slot can neither serve nor pull it.
fn need_on(slot: &Slot, model: ModelId, listed: &[Option<u64>], configured: &[u64]) -> Option<u64> {
    let size = match slot.serves(model) {
        Some(s) => s.size,
        None if slot.spec.allow_pull => listed[model as usize],
        None => return None,
    };
    Some(
        size.filter(|s| *s > 0)
            .unwrap_or(configured[model as usize]),
    )
}

type Rank = (u32, u8, f64);

/// Lower is better: priority tier, then "has the model loaded (or loading) with room to run it
/// in parallel", then in-flight work weighted by the backend's EWMA time to first byte.
fn rank(slot: &Slot, model: ModelId) -> Rank {
    let warm = slot.resident_size(model).is_some() || slot.work(model).is_some();
    let busy = slot.work(model).map_or(0, |w| w.inflight);
    let class = u8::from(!(warm && busy < PARALLEL_HINT));
    let cost = f64::from(slot.inflight + 1) * slot.weight_ms;
    (slot.spec.priority, class, cost)
}

fn cmp_rank(a: &Rank, b: &Rank) -> Ordering {
    a.0.cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.total_cmp(&b.2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const GIB: u64 = 1 << 30;

    fn spec(name: &str, priority: u32, max_gib: Option<u64>) -> BackendSpec {
        BackendSpec {
            name: name.into(),
            kind: BackendKind::Ollama,
            priority,
            max_memory: max_gib.map(|g| g * GIB),
            allow_pull: false,
            models: Vec::new(),
        }
    }

    fn up(models: &[(&str, u64)], resident: &[(&str, u64)]) -> BackendSnapshot {
        BackendSnapshot {
            polled: true,
            circuit: Circuit::Closed,
            models: models
                .iter()
                .map(|(m, s)| (m.to_string(), Some(s * GIB)))
                .collect(),
            resident: resident
                .iter()
                .map(|(m, s)| (m.to_string(), s * GIB))
                .collect(),
            ewma_ttfb_ms: None,
        }
    }

    fn placer(specs: Vec<BackendSpec>) -> Placer {
        Placer::new(specs, &RoutingConfig::default(), 7).unwrap()
    }

    fn q(model: &str) -> Query<'_> {
        Query {
            model,
            exclude: &[],
        }
    }

    #[test]
    fn unknown_model_versus_no_capacity() {
        let now = Instant::now();
        let mut p = placer(vec![spec("a", 1, Some(10))]);
        p.update(0, &up(&[("big:70b", 40)], &[]));
        assert_eq!(p.place(q("nope"), now), Err(PlaceError::UnknownModel));
        assert_eq!(p.place(q("big:70b"), now), Err(PlaceError::NoCapacity));
    }

    #[test]
    fn lower_tier_first_and_fallback_when_it_is_down() {
        let now = Instant::now();
        let mut p = placer(vec![spec("fallback", 2, None), spec("first", 1, None)]);
        p.update(0, &up(&[("m:1b", 1)], &[]));
        p.update(1, &up(&[("m:1b", 1)], &[]));
        assert_eq!(p.place(q("m:1b"), now).unwrap().backend, 1);
        let mut down = up(&[("m:1b", 1)], &[]);
        down.circuit = Circuit::Open {
            until: now + Duration::from_secs(5),
        };
        p.update(1, &down);
        assert_eq!(p.place(q("m:1b"), now).unwrap().backend, 0);
    }

    #[test]
    fn exclusion_skips_a_backend() {
        let now = Instant::now();
        let mut p = placer(vec![spec("a", 1, None), spec("b", 2, None)]);
        p.update(0, &up(&[("m:1b", 1)], &[]));
        p.update(1, &up(&[("m:1b", 1)], &[]));
        let got = p.place(
            Query {
                model: "m:1b",
                exclude: &[0],
            },
            now,
        );
        assert_eq!(got.unwrap().backend, 1);
        let none = p.place(
            Query {
                model: "m:1b",
                exclude: &[0, 1],
            },
            now,
        );
        assert_eq!(none, Err(PlaceError::NoCapacity));
    }

    #[test]
    fn resident_backend_preferred_until_it_is_busy() {
        let now = Instant::now();
        let mut p = placer(vec![spec("cold", 1, None), spec("warm", 1, None)]);
        p.update(0, &up(&[("m:8b", 5)], &[]));
        p.update(1, &up(&[("m:8b", 5)], &[("m:8b", 6)]));
        let mut got = Vec::new();
        for _ in 0..PARALLEL_HINT + 1 {
            got.push(p.place(q("m:8b"), now).unwrap().backend);
        }
        assert!(got[..PARALLEL_HINT as usize].iter().all(|b| *b == 1));
        assert_eq!(got[PARALLEL_HINT as usize], 0);
    }

    #[test]
    fn faster_backend_takes_more_load() {
        let now = Instant::now();
        let mut p = placer(vec![spec("slow", 1, None), spec("fast", 1, None)]);
        let mut slow = up(&[("m:8b", 5)], &[("m:8b", 5)]);
        slow.ewma_ttfb_ms = Some(400.0);
        let mut fast = slow.clone();
        fast.ewma_ttfb_ms = Some(100.0);
        p.update(0, &slow);
        p.update(1, &fast);
        let mut count = [0; 2];
        for _ in 0..20 {
            count[p.place(q("m:8b"), now).unwrap().backend] += 1;
        }
        assert!(count[1] > 3 * count[0], "{count:?}");
    }

    #[test]
    fn concurrent_loads_cannot_overfill_and_idle_models_are_evicted() {
        let now = Instant::now();
        let mut p = placer(vec![spec("gpu", 1, Some(24))]);
        p.update(
            0,
            &up(&[("a:14b", 10), ("b:14b", 10), ("c:8b", 6)], &[("c:8b", 6)]),
        );
        let a = p.place(q("a:14b"), now).unwrap();
        assert_eq!(a.memory_reserved, 10 * GIB);
        // b fits only by evicting idle c: allowed.
        let b = p.place(q("b:14b"), now).unwrap();
        assert_eq!(b.memory_reserved, 10 * GIB);
        // a second request for a loading model needs no new memory
        let a2 = p.place(q("a:14b"), now).unwrap();
        assert_eq!(a2.memory_reserved, 0);
        // c is loaded, but placing b counted on evicting it: a + b + c > 24 GiB.
        assert_eq!(p.place(q("c:8b"), now), Err(PlaceError::NoCapacity));
        assert_eq!(p.totals(), (3, 20 * GIB));
        for t in [a, b, a2] {
            p.release(t.ticket());
        }
        assert_eq!(p.totals(), (0, 0));
    }

    #[test]
    fn loaded_models_need_no_new_memory() {
        let now = Instant::now();
        let mut p = placer(vec![spec("gpu", 1, Some(24))]);
        p.update(0, &up(&[("a:14b", 14), ("c:8b", 6)], &[("c:8b", 6)]));
        let a = p.place(q("a:14b"), now).unwrap();
        let c = p.place(q("c:8b"), now).unwrap();
        assert_eq!((a.memory_reserved, c.memory_reserved), (14 * GIB, 0));
    }

    #[test]
    fn busy_resident_models_are_pinned() {
        let now = Instant::now();
        let mut p = placer(vec![spec("gpu", 1, Some(24))]);
        p.update(0, &up(&[("a:14b", 10), ("c:8b", 16)], &[("c:8b", 16)]));
        let c = p.place(q("c:8b"), now).unwrap();
        assert_eq!(p.place(q("a:14b"), now), Err(PlaceError::NoCapacity));
        p.release(c.ticket());
        assert!(p.place(q("a:14b"), now).is_ok());
    }

    #[test]
    fn half_open_lets_one_probe_through() {
        let now = Instant::now();
        let mut p = placer(vec![spec("a", 1, None)]);
        let mut s = up(&[("m:1b", 1)], &[]);
        s.circuit = Circuit::Open {
            until: now + Duration::from_secs(10),
        };
        p.update(0, &s);
        assert_eq!(p.place(q("m:1b"), now), Err(PlaceError::NoCapacity));
        let later = now + Duration::from_secs(10);
        let probe = p.place(q("m:1b"), later).unwrap();
        assert_eq!(p.place(q("m:1b"), later), Err(PlaceError::NoCapacity));
        p.release(probe.ticket());
        assert!(p.place(q("m:1b"), later).is_ok());
    }

    #[test]
    fn unpolled_backends_take_nothing() {
        let mut p = placer(vec![spec("a", 1, None)]);
        let mut s = up(&[("m:1b", 1)], &[]);
        s.polled = false;
        p.update(0, &s);
        assert_eq!(
            p.place(q("m:1b"), Instant::now()),
            Err(PlaceError::NoCapacity)
        );
    }

    #[test]
    fn assignment_wins_while_its_backend_is_up() {
        let now = Instant::now();
        let routing: RoutingConfig =
            toml::from_str(r#"assignments = { "m:70b" = "pinned" }"#).unwrap();
        let specs = vec![spec("free", 1, None), spec("pinned", 3, None)];
        let mut p = Placer::new(specs, &routing, 1).unwrap();
        p.update(0, &up(&[("m:70b", 40)], &[("m:70b", 40)]));
        p.update(1, &up(&[], &[]));
        assert_eq!(p.place(q("m:70b"), now).unwrap().backend, 1);
        let mut down = up(&[], &[]);
        down.circuit = Circuit::Open {
            until: now + Duration::from_secs(1),
        };
        p.update(1, &down);
        assert_eq!(p.place(q("m:70b"), now).unwrap().backend, 0);
    }

    #[test]
    fn pull_backends_take_models_listed_elsewhere() {
        let now = Instant::now();
        let mut puller = spec("puller", 1, Some(8));
        puller.allow_pull = true;
        let mut p = placer(vec![puller, spec("other", 2, None)]);
        p.update(0, &up(&[], &[]));
        p.update(1, &up(&[("m:8b", 5), ("big:70b", 40)], &[]));
        let got = p.place(q("m:8b"), now).unwrap();
        assert_eq!((got.backend, got.memory_reserved), (0, 5 * GIB));
        // too big for the puller: the lister takes it
        assert_eq!(p.place(q("big:70b"), now).unwrap().backend, 1);
        assert_eq!(p.place(q("nobody:1b"), now), Err(PlaceError::UnknownModel));
    }

    #[test]
    fn openai_backends_serve_configured_models_in_their_spelling() {
        let now = Instant::now();
        let mut s = spec("oai", 1, None);
        s.kind = BackendKind::Openai;
        s.models = vec!["gpt-4o".into()];
        let mut p = placer(vec![s]);
        p.update(0, &up(&[], &[]));
        let got = p.place(q("gpt-4o"), now).unwrap();
        assert_eq!((got.backend, got.model.as_str()), (0, "gpt-4o"));
    }

    #[test]
    fn untagged_names_mean_latest() {
        let now = Instant::now();
        let mut p = placer(vec![spec("a", 1, None)]);
        p.update(0, &up(&[("llama3:latest", 5)], &[]));
        assert_eq!(p.place(q("llama3"), now).unwrap().model, "llama3:latest");
    }

    #[test]
    fn unknown_sizes_use_configured_memory() {
        let now = Instant::now();
        let routing: RoutingConfig =
            toml::from_str(r#"memory_patterns = [ { pattern = ".*:70b", memory = "40GiB" } ]"#)
                .unwrap();
        let mut p = Placer::new(vec![spec("a", 1, Some(24))], &routing, 1).unwrap();
        let mut s = up(&[], &[]);
        s.models = vec![("m:70b".into(), None), ("m:8b".into(), None)];
        p.update(0, &s);
        assert_eq!(p.place(q("m:70b"), now), Err(PlaceError::NoCapacity));
        assert_eq!(p.place(q("m:8b"), now).unwrap().memory_reserved, 8 * GIB);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        const MODELS: [(&str, u64); 4] = [("a:1b", 1), ("b:8b", 6), ("c:14b", 10), ("d:70b", 40)];

        #[derive(Debug, Clone)]
        struct Fleet {
            backends: Vec<(u32, Option<u64>, bool)>, // priority, max GiB, allow_pull
            snaps: Vec<BackendSnapshot>,
        }

        fn circuit(now: Instant) -> impl Strategy<Value = Circuit> {
            prop_oneof![
                6 => Just(Circuit::Closed),
                1 => Just(Circuit::HalfOpen),
                1 => Just(Circuit::Open { until: now + Duration::from_secs(30) }),
                1 => Just(Circuit::Open { until: now }),
            ]
        }

        fn snapshot(now: Instant) -> impl Strategy<Value = BackendSnapshot> {
            (
                prop::bool::weighted(0.9),
                circuit(now),
                prop::collection::vec(any::<bool>(), 4),
                prop::collection::vec(any::<bool>(), 4),
                prop::option::of(1.0f64..2000.0),
            )
                .prop_map(|(polled, circuit, has, loaded, ewma)| {
                    let models: Vec<_> = MODELS
                        .iter()
                        .zip(&has)
                        .filter(|(_, h)| **h)
                        .map(|((m, s), _)| (m.to_string(), Some(s * GIB)))
                        .collect();
                    let resident = MODELS
                        .iter()
                        .zip(has.iter().zip(&loaded))
                        .filter(|(_, (h, l))| **h && **l)
                        .map(|((m, s), _)| (m.to_string(), s * GIB))
                        .collect();
                    BackendSnapshot {
                        polled,
                        circuit,
                        models,
                        resident,
                        ewma_ttfb_ms: ewma,
                    }
                })
        }

        fn fleet(now: Instant) -> impl Strategy<Value = Fleet> {
            prop::collection::vec(
                (
                    (
                        1u32..=3,
                        prop::option::of(4u64..=64),
                        prop::bool::weighted(0.2),
                    ),
                    snapshot(now),
                ),
                1..8,
            )
            .prop_map(|v| {
                let (backends, snaps) = v.into_iter().unzip();
                Fleet { backends, snaps }
            })
        }

        #[derive(Debug, Clone)]
        enum Op {
            Place { model: usize, exclude: Vec<usize> },
            Release(usize),
        }

        fn ops() -> impl Strategy<Value = Vec<Op>> {
            prop::collection::vec(
                prop_oneof![
                    3 => (0usize..4, prop::collection::vec(0usize..8, 0..2))
                        .prop_map(|(model, exclude)| Op::Place { model, exclude }),
                    1 => any::<usize>().prop_map(Op::Release),
                ],
                1..60,
            )
        }

        fn build(f: &Fleet) -> Placer {
            let specs = f
                .backends
                .iter()
                .enumerate()
                .map(|(i, (prio, max, pull))| {
                    let mut s = spec(&format!("b{i}"), *prio, *max);
                    s.allow_pull = *pull;
                    s
                })
                .collect();
            let mut p = placer(specs);
            for (i, s) in f.snaps.iter().enumerate() {
                p.update(i, s);
            }
            p
        }

        /// Memory the test's own bookkeeping says cannot be evicted on `b`.
        fn pinned(b: usize, live: &[(usize, usize)]) -> u64 {
            let mut models: Vec<usize> = live.iter().filter(|l| l.0 == b).map(|l| l.1).collect();
            models.sort_unstable();
            models.dedup();
            models.iter().map(|m| MODELS[*m].1 * GIB).sum()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn placements_are_safe_and_reservations_return(f in fleet(Instant::now()), ops in ops()) {
                let now = Instant::now();
                let mut p = build(&f);
                let mut live: Vec<(usize, usize, Ticket)> = Vec::new();
                for op in ops {
                    match op {
                        Op::Release(i) if !live.is_empty() => {
                            let (_, _, t) = live.swap_remove(i % live.len());
                            p.release(t);
                        }
                        Op::Release(_) => {}
                        Op::Place { model, exclude } => {
                            let name = MODELS[model].0;
                            let eligible: Vec<usize> = (0..f.backends.len())
                                .filter(|b| !exclude.contains(b) && p.can_take(*b, name, now))
                                .collect();
                            let inflight_before: Vec<u64> = (0..f.backends.len()).map(|b| p.load(b).0).collect();
                            match p.place(Query { model: name, exclude: &exclude }, now) {
                                Ok(got) => {
                                    let b = got.backend;
                                    let snap = &f.snaps[b];
                                    prop_assert!(!exclude.contains(&b));
                                    prop_assert!(snap.polled);
                                    match snap.circuit.at(now) {
                                        Circuit::Open { .. } => prop_assert!(false, "ejected backend chosen"),
                                        Circuit::HalfOpen => prop_assert_eq!(inflight_before[b], 0),
                                        Circuit::Closed => {}
                                    }
                                    let need = MODELS[model].1 * GIB;
                                    if let Some(max) = f.backends[b].1 {
                                        prop_assert!(need <= max * GIB, "too small");
                                    }
                                    let listed = snap.models.iter().any(|(m, _)| m == name);
                                    prop_assert!(listed || f.backends[b].2);
                                    let tier = f.backends[b].0;
                                    let best = eligible.iter().map(|e| f.backends[*e].0).min();
                                    prop_assert_eq!(Some(tier), best, "tier not respected");
                                    live.push((b, model, got.ticket()));
                                }
                                Err(PlaceError::UnknownModel) => {
                                    prop_assert!(f.snaps.iter().all(|s| s.models.iter().all(|(m, _)| m != name)));
                                }
                                Err(PlaceError::NoCapacity) => {
                                    prop_assert!(eligible.is_empty());
                                }
                            }
                            // memory: work in flight never exceeds any backend's maximum
                            for (b, (_, max, _)) in f.backends.iter().enumerate() {
                                if let Some(max) = max {
                                    let live2: Vec<_> = live.iter().map(|l| (l.0, l.1)).collect();
                                    prop_assert!(pinned(b, &live2) <= max * GIB, "memory overfilled on b{}", b);
                                }
                            }
                        }
                    }
                }
                for (_, _, t) in live.drain(..) {
                    p.release(t);
                }
                prop_assert_eq!(p.totals(), (0, 0));
            }

            #[test]
            fn equal_backends_share_load_evenly(n in 1usize..20, k in 1usize..200, resident in any::<bool>(), seed in any::<u64>()) {
                let now = Instant::now();
                let specs = (0..n).map(|i| spec(&format!("b{i}"), 1, None)).collect();
                let mut p = Placer::new(specs, &RoutingConfig::default(), seed).unwrap();
                let loaded: &[(&str, u64)] = if resident { &[("m:8b", 5)] } else { &[] };
                for i in 0..n {
                    p.update(i, &up(&[("m:8b", 5)], loaded));
                }
                for _ in 0..k {
                    prop_assert!(p.place(q("m:8b"), now).is_ok());
                }
                let loads: Vec<u64> = (0..n).map(|b| p.load(b).0).collect();
                let spread = loads.iter().max().unwrap() - loads.iter().min().unwrap();
                let bound = if resident { 1 } else { u64::from(PARALLEL_HINT) };
                prop_assert!(spread <= bound, "loads {:?}", loads);
            }
        }
    }
}
