//! `corral sim` through its public API, as other test groups use it.

use std::time::Duration;

use corral::sim::{SimArgs, start};
use serde_json::{Value, json};

#[actix_web::test]
async fn sim_serves_ollama_and_reports_stats() {
    let sim = start(SimArgs {
        models: vec!["qwen3:8b".into(), "tiny=1GiB".into()],
        ..SimArgs::default()
    })
    .await
    .expect("sim starts");
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let mut res = client
        .post(format!("{}/api/chat", sim.url()))
        .send_json(&json!({"model": "tiny", "stream": false,
                           "messages": [{"role": "user", "content": "hi [[tokens=3]]"}]}))
        .await
        .expect("chat");
    assert_eq!(res.status().as_u16(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["done"], true);
    assert_eq!(body["eval_count"], 3);

    let mut res = client
        .get(format!("{}/_sim/stats", sim.url()))
        .send()
        .await
        .expect("stats");
    let stats: Value = res.json().await.expect("json");
    assert_eq!(stats["requests_by_path"]["/api/chat"], 1);
    assert_eq!(stats["resident"][0]["name"], "tiny:latest");
    assert_eq!(sim.state.completed_streams(), 1);
    sim.stop().await;
}
