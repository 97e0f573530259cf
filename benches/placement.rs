//! Cost of one placement (place + release) over fleets of 10, 100 and 1000 backends, beside a
//! bare least-loaded scan of the same size as the floor.

use std::hint::black_box;
use std::time::Instant;

use corral::config::{BackendKind, RoutingConfig};
use corral::routing::placer::{BackendSnapshot, BackendSpec, Circuit, Placer, Query};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

const GIB: u64 = 1 << 30;
const MODELS: [(&str, u64); 6] = [
    ("qwen3:8b", 5),
    ("llama3.1:8b", 5),
    ("qwen2.5-coder:32b", 20),
    ("llama3.1:70b", 40),
    ("gpt-oss:20b", 14),
    ("nomic-embed-text:latest", 1),
];

/// A mixed fleet: three tiers, 24-80 GiB, every model listed, a third of them loaded.
fn fleet(n: usize) -> Placer {
    let specs = (0..n)
        .map(|i| BackendSpec {
            name: format!("gpu-{i}"),
            kind: BackendKind::Ollama,
            priority: 1 + (i % 3) as u32,
            max_memory: Some([24, 48, 80][i % 3] * GIB),
            allow_pull: i % 5 == 0,
            models: Vec::new(),
        })
        .collect();
    let mut p = Placer::new(specs, &RoutingConfig::default(), 42).expect("placer");
    for i in 0..n {
        let snap = BackendSnapshot {
            polled: true,
            circuit: if i % 17 == 3 {
                Circuit::Open {
                    until: Instant::now() + std::time::Duration::from_secs(3600),
                }
            } else {
                Circuit::Closed
            },
            models: MODELS
                .iter()
                .map(|(m, s)| (m.to_string(), Some(s * GIB)))
                .collect(),
            resident: MODELS
                .iter()
                .skip(i % 3)
                .step_by(3)
                .map(|(m, s)| (m.to_string(), s * GIB))
                .collect(),
            ewma_ttfb_ms: Some(100.0 + (i % 7) as f64 * 30.0),
        };
        p.update(i, &snap);
    }
    p
}

fn placement(c: &mut Criterion) {
    let mut group = c.benchmark_group("placement");
    for n in [10usize, 100, 1000] {
        let mut placer = fleet(n);
        let now = Instant::now();
        group.bench_with_input(BenchmarkId::new("place_release", n), &n, |b, _| {
            b.iter(|| {
                let q = Query {
                    model: black_box("qwen3:8b"),
                    exclude: &[],
                };
                if let Ok(p) = placer.place(q, now) {
                    placer.release(black_box(p).ticket());
                }
            })
        });
        let loads: Vec<u32> = (0..n as u32)
            .map(|i| i.wrapping_mul(2654435761) % 13)
            .collect();
        group.bench_with_input(BenchmarkId::new("baseline_min_scan", n), &n, |b, _| {
            b.iter(|| {
                black_box(&loads)
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, l)| **l)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, placement);
criterion_main!(benches);
