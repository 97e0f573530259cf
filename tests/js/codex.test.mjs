// The Codex CLI (npm @openai/codex, pinned in package-lock.json) as `codex exec`, with a model
// provider pointed at corral's /v1/responses, against `corral sim`. Codex offers its tools on
// every request, so prompts carry sim directives (`[[tool=none]]`, `[[tool=exec_command]]`).

import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { BIN, agentEnv, explain, jsonLines, run, startFleet, tempDir } from './harness.mjs';

const CODEX = join(BIN, 'codex');

let fleet;

before(async () => {
  fleet = await startFleet();
});

after(() => fleet?.close());

/** A CODEX_HOME whose config sends everything to corral and nothing anywhere else. */
function codexEnv(token) {
  const env = agentEnv({ CORRAL_TOKEN: token });
  mkdirSync(env.CODEX_HOME, { recursive: true });
  writeFileSync(
    join(env.CODEX_HOME, 'config.toml'),
    `model = "llama3.1:8b"
model_provider = "corral"
check_for_update_on_startup = false

[analytics]
enabled = false

# Plugin and app catalogues are fetched from the internet at start.
[features]
plugins = false
apps = false
remote_plugin = false
plugin_sharing = false
in_app_updates = false
skill_mcp_dependency_install = false

[model_providers.corral]
name = "corral"
base_url = "${fleet.url}/v1"
env_key = "CORRAL_TOKEN"
wire_api = "responses"
# Codex retries a failed stream (a 401 included; it does not read x-should-retry) five
# times with growing pauses by default; two keep the wrong-token run short.
stream_max_retries = 2
`,
  );
  return env;
}

function codex(args, { token = fleet.userToken, timeoutMs = 120000 } = {}) {
  const cwd = tempDir('corral-codex-cwd-');
  return run(CODEX, ['exec', '--skip-git-repo-check', '--json', ...args], { env: codexEnv(token), cwd, timeoutMs });
}

describe('codex exec', () => {
  test('answers over the Responses API', async () => {
    const r = await codex(['say hello [[tool=none]]']);
    assert.equal(r.code, 0, explain(r));
    const evs = jsonLines(r.stdout);
    const message = evs.find((e) => e.type === 'item.completed' && e.item.type === 'agent_message');
    assert.ok(message?.item.text.length > 0, explain(r));
    const done = evs.find((e) => e.type === 'turn.completed');
    assert.ok(done.usage.input_tokens > 0 && done.usage.output_tokens > 0, explain(r));
  });

  test('runs a command and sends its output back in the next request', async () => {
    const marker = `corral-codex-${process.pid}`;
    const args = JSON.stringify({ cmd: `echo ${marker}` });
    const r = await codex([
      '--sandbox',
      'danger-full-access',
      `print the marker [[tool=exec_command]] [[args=${args}]]`,
    ]);
    assert.equal(r.code, 0, explain(r));
    const evs = jsonLines(r.stdout);
    const command = evs.find((e) => e.type === 'item.completed' && e.item.type === 'command_execution');
    assert.ok(command, explain(r));
    assert.equal(command.item.exit_code, 0);
    assert.ok(command.item.aggregated_output.includes(marker), explain(r));
    assert.ok(evs.some((e) => e.type === 'item.completed' && e.item.type === 'agent_message'), explain(r));
    // The last upstream request ends with the command's output as a tool result.
    const last = await fleet.lastBody('/api/chat');
    const tail = last.messages.at(-1);
    assert.equal(tail.role, 'tool');
    assert.equal(tail.tool_name, 'exec_command');
    assert.ok(tail.content.includes(marker), JSON.stringify(tail));
  });

  test('shows reasoning summaries of a thinking model and sends them back', async () => {
    const args = JSON.stringify({ cmd: 'echo thought' });
    const r = await codex([
      '-m',
      'qwen3:8b',
      '-c',
      'model_reasoning_effort="low"',
      '-c',
      'model_reasoning_summary="auto"',
      '--sandbox',
      'danger-full-access',
      `think, then run it [[tool=exec_command]] [[args=${args}]]`,
    ]);
    assert.equal(r.code, 0, explain(r));
    const evs = jsonLines(r.stdout);
    const reasoning = evs.filter((e) => e.type === 'item.completed' && e.item.type === 'reasoning');
    assert.ok(reasoning.length >= 1 && reasoning[0].item.text.length > 0, explain(r));
    const last = await fleet.lastBody('/api/chat');
    const assistant = last.messages.find((m) => m.role === 'assistant');
    assert.ok(assistant.thinking?.length > 0, JSON.stringify(assistant));
  });

  test('a wrong token exits non-zero within 10 s', async () => {
    const r = await codex(['say hello [[tool=none]]'], { token: 'crl_wrong', timeoutMs: 30000 });
    assert.notEqual(r.code, 0, explain(r));
    assert.equal(r.signal, null, explain(r));
    assert.ok(r.ms < 10000, explain(r));
    assert.ok(r.stdout.includes('401'), explain(r));
  });
});
