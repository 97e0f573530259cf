// Starts `corral sim` and `corral serve` on free loopback ports for the JavaScript suites, and
// runs the command-line clients (Claude Code, Codex) against them with a throwaway HOME and
// every kind of outside traffic turned off. Every process started here is stopped by its PID.

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(HERE, '..', '..');
export const CORRAL = process.env.CORRAL_BIN || join(ROOT, 'target', 'debug', 'corral');
export const BIN = join(HERE, 'node_modules', '.bin');

const TEMP_DIRS = [];
const STARTED = [];
// A test file that ends without its `after` hook (a failed `before`, an uncaught error) still
// stops what it started and removes its directories.
process.on('exit', () => {
  STARTED.forEach(stop);
  TEMP_DIRS.forEach((d) => rmSync(d, { recursive: true, force: true }));
});

/** A fresh directory under the system's temp dir, removed when the test file's process exits. */
export function tempDir(prefix) {
  const d = mkdtempSync(join(tmpdir(), prefix));
  TEMP_DIRS.push(d);
  return d;
}

export function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

async function waitHttp(url, proc, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`${url}: process exited (${proc.exitCode})`);
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (r.ok) return;
      last = r.status;
    } catch (e) {
      last = e.message;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${url} not up after ${timeoutMs} ms: ${last}`);
}

function start(args, logPath, env) {
  const log = openSync(logPath, 'a');
  const proc = spawn(CORRAL, args, { stdio: ['ignore', log, log], env: { ...process.env, ...env } });
  STARTED.push(proc);
  return proc;
}

function stop(proc) {
  if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
}

/**
 * One sim and one gateway in front of it. `kind` is the backend kind the gateway uses for the
 * sim (ollama, openai or anthropic); `aliases` go to `[routing] aliases`.
 */
export async function startFleet(opts = {}) {
  const dir = tempDir('corral-js-');
  const procs = [];
  try {
    return await fleetIn(dir, procs, opts);
  } catch (e) {
    procs.reverse().forEach(stop);
    throw new Error(`${e.message}\n(logs in ${dir})`);
  }
}

const SERVED = ['qwen3:8b', 'llama3.1:8b', 'nomic-embed-text'];

async function fleetIn(dir, procs, { kind = 'ollama', aliases = {}, models } = {}) {
  const simPort = await freePort();
  const simArgs = ['sim', '--port', String(simPort), '--name', 'sim', '--vram', '64GiB'];
  if (models) simArgs.push('--models', models.join(','));
  const sim = start(simArgs, join(dir, 'sim.log'));
  procs.push(sim);
  const simUrl = `http://127.0.0.1:${simPort}`;
  await waitHttp(`${simUrl}/api/version`, sim);

  const port = await freePort();
  const aliasToml = Object.entries(aliases)
    .map(([k, v]) => `${JSON.stringify(k)} = ${JSON.stringify(v)}`)
    .join(', ');
  const config = join(dir, 'corral.toml');
  writeFileSync(
    config,
    [
      '[server]',
      `listen = "127.0.0.1:${port}"`,
      'shutdown_grace = "2s"',
      'workers = 2',
      '[database]',
      `url = "sqlite://${dir}/corral.db"`,
      '[[backends]]',
      'name = "sim"',
      `url = "${simUrl}"`,
      `kind = "${kind}"`,
      // Upstreams other than Ollama do not list their models; the gateway is told them.
      kind === 'ollama' ? '' : `models = ${JSON.stringify(models || SERVED)}`,
      'poll_interval = "500ms"',
      '[routing]',
      `aliases = { ${aliasToml} }`,
      '',
    ].join('\n'),
  );
  const cli = (...args) => {
    const r = spawnSync(CORRAL, ['--config', config, ...args], { cwd: dir, encoding: 'utf8', timeout: 60000 });
    if (r.status !== 0) throw new Error(`corral ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  const token = (name, admin) => {
    const out = cli('users', 'create', name, ...(admin ? ['--admin'] : []));
    const t = out.split(/\s+/).find((w) => w.startsWith('crl_'));
    if (!t) throw new Error(`no token printed: ${out}`);
    return t;
  };
  const gw = start(['--config', config, 'serve'], join(dir, 'gw.log'));
  procs.push(gw);
  const url = `http://127.0.0.1:${port}`;
  await waitHttp(`${url}/health`, gw);
  const fleet = {
    dir,
    url,
    simUrl,
    userToken: token('js-user', false),
    adminToken: token('js-admin', true),
    async ready() {
      await waitHttp(`${url}/ready`, gw);
    },
    /** The body of the last request the sim got on `path`. */
    async lastBody(path) {
      const stats = await (await fetch(`${simUrl}/_sim/stats`)).json();
      return stats.last_requests?.[path]?.body;
    },
    async requestsByPath() {
      const stats = await (await fetch(`${simUrl}/_sim/stats`)).json();
      return stats.requests_by_path;
    },
    log() {
      return readFileSync(join(dir, 'gw.log'), 'utf8');
    },
    close() {
      procs.reverse().forEach(stop);
    },
  };
  await fleet.ready();
  return fleet;
}

/** The environment that keeps an agent CLI on loopback: a fresh HOME, no telemetry, no updates. */
export function agentEnv(extra = {}) {
  const home = tempDir('corral-agent-home-');
  const keep = ['PATH', 'LANG', 'TERM', 'TMPDIR'];
  const env = Object.fromEntries(keep.filter((k) => process.env[k]).map((k) => [k, process.env[k]]));
  return {
    ...env,
    HOME: home,
    XDG_CONFIG_HOME: join(home, '.config'),
    CODEX_HOME: join(home, '.codex'),
    DISABLE_TELEMETRY: '1',
    DISABLE_ERROR_REPORTING: '1',
    DISABLE_AUTOUPDATER: '1',
    DISABLE_BUG_COMMAND: '1',
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
    CLAUDE_CODE_DISABLE_TERMINAL_TITLE: '1',
    NO_PROXY: '127.0.0.1,localhost',
    ...extra,
  };
}

/**
 * Runs a CLI to its end or until `timeoutMs` (then SIGKILL): `{code, signal, stdout, stderr, ms}`.
 */
export function run(cmd, args, { env, cwd, timeoutMs = 120000 } = {}) {
  return new Promise((ok) => {
    const t0 = Date.now();
    const child = spawn(cmd, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      ok({ code, signal, stdout, stderr, ms: Date.now() - t0 });
    });
  });
}

/** The JSON lines an agent CLI prints (`claude --output-format stream-json`, `codex exec --json`). */
export function jsonLines(stdout) {
  return stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l));
}

/** A finished run, for assertion messages. */
export function explain(r) {
  return `exit ${r.code} (${r.signal}) after ${r.ms} ms\nstdout: ${r.stdout.slice(-2000)}\nstderr: ${r.stderr.slice(-2000)}`;
}
