//! `corral demo`: three simulated Ollama servers and the gateway in one process, zero setup.

use std::time::Duration;

use crate::config::Config;
use crate::sim::{self, SimArgs, SimHandle};

/// The simulated fleet: name, memory, priority tier, per-token delay (ms).
const FLEET: &[(&str, &str, u32, u64)] = &[
    ("gpu-big", "80GiB", 1, 15),
    ("gpu-small", "16GiB", 1, 25),
    ("cpu-fallback", "8GiB", 2, 60),
];

async fn start_fleet() -> std::io::Result<Vec<SimHandle>> {
    let mut sims = Vec::new();
    for (name, vram, _, token_ms) in FLEET {
        let args = SimArgs {
            name: (*name).to_string(),
            vram: vram.parse().map_err(std::io::Error::other)?,
            token_ms: *token_ms,
            latency_ms: 80,
            load_ms: 1500,
            ..SimArgs::default()
        };
        sims.push(sim::start(args).await?);
    }
    Ok(sims)
}

fn demo_config(sims: &[SimHandle], port: u16) -> Result<Config, String> {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace = \"5s\"\n\
         [database]\nurl = \"sqlite://corral.db\"\n\
         [routing]\ndefault_model = \"qwen3:8b\"\n\
         aliases = {{ \"claude-*\" = \"qwen3:8b\", \"claude-haiku-*\" = \"llama3.1:8b\", \"gpt-4o\" = \"llama3.1:70b\" }}\n\
         fallbacks = {{ \"llama3.1:70b\" = [\"llama3.1:8b\"] }}\n"
    );
    for ((name, vram, priority, _), sim) in FLEET.iter().zip(sims) {
        text.push_str(&format!(
            "[[backends]]\nname = \"{name}\"\nurl = \"{}\"\npriority = {priority}\nmax_memory = \"{vram}\"\npoll_interval = \"2s\"\n",
            sim.url()
        ));
    }
    Config::from_toml(&text).map_err(|e| e.to_string())
}

/// Runs the demo until Ctrl-C or SIGTERM.
pub async fn run(
    port: u16,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let sims = start_fleet().await?;
    let cfg = demo_config(&sims, port).map_err(std::io::Error::other)?;
    let token = crate::demo_token(&cfg, "demo-admin", true).map_err(std::io::Error::other)?;
    let traffic_token =
        crate::demo_token(&cfg, "demo-traffic", false).map_err(std::io::Error::other)?;
    let running = crate::serve(cfg, &format!("127.0.0.1:{port}")).await?;
    let _ = running
        .gateway
        .fleet
        .wait_ready(Duration::from_secs(5))
        .await;
    print_banner(&running.url(), Some(&token));
    let traffic = actix_web::rt::spawn(background_traffic(running.url(), traffic_token));
    shutdown.await;
    traffic.abort();
    running.shutdown().await;
    for s in sims {
        s.stop().await;
    }
    Ok(())
}

/// A trickle of mixed requests (three dialects, `auto`, a streaming one, an unknown model)
/// so the dashboard shows something moving the moment it is opened.
async fn background_traffic(url: String, token: String) {
    let Ok(client) = crate::upstream::Client::new(
        &url,
        &crate::upstream::Reach {
            connect_timeout: Duration::from_secs(5),
            ..Default::default()
        },
    ) else {
        return;
    };
    let Ok(bearer) = http::HeaderValue::from_str(&format!("Bearer {token}")) else {
        return;
    };
    let asks: [(&str, serde_json::Value); 6] = [
        (
            "/api/chat",
            serde_json::json!({"model": "qwen3:8b", "stream": false,
            "messages": [{"role": "user", "content": "Summarize the plot of Hamlet in two lines."}]}),
        ),
        (
            "/v1/chat/completions",
            serde_json::json!({"model": "auto",
            "messages": [{"role": "user", "content": "Fix this Python: def f(x) return x+1"}]}),
        ),
        (
            "/v1/messages",
            serde_json::json!({"model": "claude-sonnet-4-6", "max_tokens": 256,
            "messages": [{"role": "user", "content": "Write a haiku about GPUs."}]}),
        ),
        (
            "/api/chat",
            serde_json::json!({"model": "llama3.1:70b", "stream": true,
            "messages": [{"role": "user", "content": "Explain backpressure."}]}),
        ),
        (
            "/v1/chat/completions",
            serde_json::json!({"model": "auto",
            "messages": [{"role": "user", "content": "Prove that there are infinitely many primes, step by step."}]}),
        ),
        (
            "/api/chat",
            serde_json::json!({"model": "no-such-model:1b", "stream": false,
            "messages": [{"role": "user", "content": "hi"}]}),
        ),
    ];
    for i in 0usize.. {
        let (path, body) = &asks[i % asks.len()];
        let headers = [
            (http::header::AUTHORIZATION, bearer.clone()),
            (
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            ),
            (
                http::HeaderName::from_static("anthropic-version"),
                http::HeaderValue::from_static("2023-06-01"),
            ),
        ];
        let body = bytes::Bytes::from(body.to_string());
        if let Ok(resp) = client.send(http::Method::POST, path, headers, body).await {
            // Read to the end so the connection is reused.
            let mut rest = resp.body;
            while let Some(Ok(_)) = futures_util::StreamExt::next(&mut rest).await {}
        }
        actix_web::rt::time::sleep(Duration::from_millis(1200)).await;
    }
}

fn print_banner(url: &str, token: Option<&str>) {
    let token = token.unwrap_or("crl_... (corral users create NAME --admin)");
    println!(
        "\ncorral demo is running at {url} in front of three simulated Ollama servers\n\
         (gpu-big 80GiB, gpu-small 16GiB, cpu-fallback 8GiB; models: qwen3:8b, llama3.1:8b,\n\
         llama3.1:70b, qwen2.5-coder:7b, llava:7b, nomic-embed-text, gpt-oss:20b).\n\n\
         admin token (shown once): {token}\n\n\
         dashboard:   {url}/dashboard  (paste the token)\n\
         curl:        curl -H 'Authorization: Bearer {token}' {url}/api/chat \\\n\
         \x20            -d '{{\"model\":\"qwen3:8b\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'\n\
         ollama:      OLLAMA_HOST={url} OLLAMA_API_KEY={token} python3 -c \"import ollama; print(ollama.list())\"\n\
         OpenAI SDK:  OpenAI(base_url=\"{url}/v1\", api_key=\"{token}\")\n\
         Claude Code: ANTHROPIC_BASE_URL={url} ANTHROPIC_AUTH_TOKEN={token} claude\n\
         metrics:     {url}/metrics\n\n\
         A little background traffic (user demo-traffic) keeps the dashboard moving.\n\
         Ctrl-C stops everything.\n"
    );
}
