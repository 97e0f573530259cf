// Claude Code (npm @anthropic-ai/claude-code, pinned in package-lock.json) in non-interactive
// mode against corral + `corral sim`. Claude Code offers its whole tool set on every request,
// so prompts carry sim directives: `[[tool=none]]` for a plain answer, `[[tool=Bash]]` with
// `[[args=...]]` for one chosen command.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { BIN, agentEnv, explain, jsonLines, run, startFleet, tempDir } from './harness.mjs';

const CLAUDE = join(BIN, 'claude');

let fleet;

before(async () => {
  fleet = await startFleet({
    // Claude Code's main model thinks; its small model (haiku) goes to one that cannot.
    aliases: { 'claude-*': 'qwen3:8b', 'claude-haiku-*': 'llama3.1:8b' },
  });
});

after(() => fleet?.close());

function claude(args, { token = fleet.userToken, timeoutMs = 120000 } = {}) {
  const env = agentEnv({ ANTHROPIC_BASE_URL: fleet.url, ANTHROPIC_AUTH_TOKEN: token });
  const cwd = tempDir('corral-claude-cwd-');
  return run(CLAUDE, args, { env, cwd, timeoutMs });
}

describe('claude -p', () => {
  test('answers in plain text', async () => {
    const r = await claude(['-p', 'say hello [[tool=none]]']);
    assert.equal(r.code, 0, explain(r));
    assert.ok(r.stdout.trim().length > 0, explain(r));
  });

  test('streams JSON ending in a successful result', async () => {
    const r = await claude(['-p', 'say hello [[tool=none]]', '--output-format', 'stream-json', '--verbose']);
    assert.equal(r.code, 0, explain(r));
    const out = jsonLines(r.stdout);
    assert.equal(out[0].type, 'system');
    const result = out.at(-1);
    assert.equal(result.type, 'result', explain(r));
    assert.equal(result.subtype, 'success');
    assert.equal(result.is_error, false);
    assert.ok(result.result.length > 0);
    assert.ok(out.some((m) => m.type === 'assistant' && m.message.content.some((b) => b.type === 'text')));
  });

  test('runs Bash and sends the result back in the next request', async () => {
    const marker = `corral-roundtrip-${process.pid}`;
    const args = JSON.stringify({ command: `echo ${marker}`, description: 'Print a marker' });
    const r = await claude([
      '-p',
      `print the marker [[tool=Bash]] [[args=${args}]]`,
      '--allowedTools',
      'Bash',
      '--output-format',
      'stream-json',
      '--verbose',
    ]);
    assert.equal(r.code, 0, explain(r));
    const out = jsonLines(r.stdout);
    const uses = out
      .filter((m) => m.type === 'assistant' && !m.parent_tool_use_id)
      .flatMap((m) => m.message.content.filter((b) => b.type === 'tool_use'));
    assert.equal(uses.length, 1, explain(r));
    assert.equal(uses[0].name, 'Bash');
    assert.equal(uses[0].input.command, `echo ${marker}`);
    const results = out
      .filter((m) => m.type === 'user')
      .flatMap((m) => (Array.isArray(m.message.content) ? m.message.content : []))
      .filter((b) => b.type === 'tool_result' && b.tool_use_id === uses[0].id);
    assert.equal(results.length, 1, explain(r));
    assert.ok(JSON.stringify(results[0].content).includes(marker), explain(r));
    assert.notEqual(results[0].is_error, true);
    const result = out.at(-1);
    assert.equal(result.subtype, 'success', explain(r));
    assert.ok(result.result.length > 0);
    // The request that produced that answer ended with the command's output.
    const last = await fleet.lastBody('/api/chat');
    const tail = last.messages.at(-1);
    assert.equal(tail.role, 'tool', JSON.stringify(tail));
    assert.equal(tail.tool_name, 'Bash');
    assert.ok(tail.content.includes(marker), JSON.stringify(tail));
  });

  test('--model haiku answers (a model that cannot think)', async () => {
    const r = await claude(['-p', 'say hello [[tool=none]]', '--model', 'haiku']);
    assert.equal(r.code, 0, explain(r));
    assert.ok(r.stdout.trim().length > 0, explain(r));
  });

  test('a wrong token exits non-zero within 10 s', async () => {
    const r = await claude(['-p', 'say hello [[tool=none]]'], { token: 'crl_wrong', timeoutMs: 30000 });
    assert.notEqual(r.code, 0, explain(r));
    assert.equal(r.signal, null, `killed after ${r.ms} ms: ${explain(r)}`);
    assert.ok(r.ms < 10000, explain(r));
  });
});
