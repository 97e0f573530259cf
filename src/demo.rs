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
    let token = crate::demo_admin_token(&cfg).map_err(std::io::Error::other)?;
    let running = crate::serve(cfg, &format!("127.0.0.1:{port}")).await?;
    let _ = running
        .gateway
        .fleet
        .wait_ready(Duration::from_secs(5))
        .await;
    print_banner(&running.url(), token.as_deref());
    shutdown.await;
    running.shutdown().await;
    for s in sims {
        s.stop().await;
    }
    Ok(())
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
         metrics:     {url}/metrics\n\nCtrl-C stops everything.\n"
    );
}
