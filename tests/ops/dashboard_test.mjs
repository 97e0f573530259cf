// Drives corral's built-in dashboard in headless Debian Chromium (playwright-core, no bundled
// browser) against a running corral (tests/ops/dashboard_real.py starts one under traffic).
//
//   CORRAL_URL=http://127.0.0.1:8080 CORRAL_ADMIN_TOKEN=crl_... node tests/ops/dashboard_test.mjs
//
// Optional: CORRAL_TEST_MODEL (model for the generated traffic; default: first of /v1/models),
// SCREENSHOT_DIR (default docs/screenshots), CHROMIUM_PATH (default /usr/bin/chromium),
// DASHBOARD_EXPECT_PENALTY=1 (a key pool must show a penalized key with a ticking countdown).
// Prints one line per check and `dashboard: N passed, M failed`; exits 1 on any failure.
import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BASE = (process.env.CORRAL_URL || '').replace(/\/$/, '');
const ADMIN = process.env.CORRAL_ADMIN_TOKEN || '';
const SHOTS = resolve(ROOT, process.env.SCREENSHOT_DIR || 'docs/screenshots');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const TOKEN_RE = /^crl_[A-Za-z0-9_-]{43}$/;
const STAMP = Date.now().toString(36);
const EXPECT_PENALTY = process.env.DASHBOARD_EXPECT_PENALTY === '1';

if (!BASE || !ADMIN) {
  console.error('set CORRAL_URL and CORRAL_ADMIN_TOKEN');
  process.exit(2);
}

let passed = 0;
let failed = 0;
let phase = 'start';
const consoleProblems = [];

/** Network-level console errors we provoke on purpose, by phase. */
function expectedConsoleError(text, url) {
  if (!/^Failed to load resource/.test(text)) return false;
  if (/\/admin\/api\/keys(\?|$)/.test(url) && /404/.test(text)) return true; // keys API absent
  return ['bad-token', 'offline', 'revoked'].includes(phase);
}

async function check(name, fn) {
  phase = name.split(':')[0];
  const t0 = Date.now();
  try {
    const note = await fn();
    passed += 1;
    console.log(`ok   ${name}${note ? ` (${note})` : ''} [${Date.now() - t0} ms]`);
    return true;
  } catch (e) {
    failed += 1;
    console.log(`FAIL ${name}: ${e.message.split('\n')[0]}`);
    return false;
  }
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

async function http(path, { token, method = 'GET', body } = {}) {
  const res = await fetch(BASE + path, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, json, text };
}

/** Creates a user through the API and sends a few chat requests with its token, alternating
 * the OpenAI (/v1/chat/completions) and Ollama (/api/chat) dialects. */
async function makeTraffic(n) {
  const name = `ops-traffic-${STAMP}`;
  let created = await http('/admin/api/users', { token: ADMIN, method: 'POST', body: { name } });
  if (created.status === 400 || created.status === 409) {
    created = await http(`/admin/api/users/${name}/rotate`, { token: ADMIN, method: 'POST' });
  }
  assert([200, 201].includes(created.status) && created.json && created.json.token,
    `creating ${name}: HTTP ${created.status} ${created.text.slice(0, 200)}`);
  const token = created.json.token;
  // A token fresh from POST /admin/api/users may be refused (401) for up to a second while the
  // gateway's user cache is younger than its miss-reload interval: retry, and say so.
  let models = await http('/v1/models', { token });
  const t0 = Date.now();
  const refused = models.status === 401;
  while (models.status === 401 && Date.now() - t0 < 3000) {
    await new Promise((r) => { setTimeout(r, 200); });
    models = await http('/v1/models', { token });
  }
  if (refused) console.log(`note: the new token was refused for ${Date.now() - t0} ms before it worked`);
  let model = process.env.CORRAL_TEST_MODEL;
  if (!model) model = models.json && models.json.data && models.json.data[0] && models.json.data[0].id;
  assert(model, 'no model to send traffic to (set CORRAL_TEST_MODEL)');
  for (let i = 0; i < n; i += 1) {
    const content = `ops dashboard test ${STAMP} #${i}`;
    const res = i % 2 === 0
      ? await http('/v1/chat/completions', {
        token, method: 'POST',
        body: { model, stream: false, max_tokens: 16, messages: [{ role: 'user', content }] },
      })
      : await http('/api/chat', {
        token, method: 'POST', body: { model, stream: false, messages: [{ role: 'user', content }] },
      });
    assert(res.status === 200, `chat request ${i}: HTTP ${res.status} ${res.text.slice(0, 200)}`);
  }
  return { name, model };
}

const counter = async (page, id) => Number(((await page.textContent(`#${id}`)) || '').replace(/[^0-9]/g, '') || 'NaN');

async function main() {
  mkdirSync(SHOTS, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), 'corral-dash-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: FLAGS, viewport: { width: 1440, height: 1000 },
  });
  const page = context.pages()[0] || await context.newPage();
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const url = (msg.location() && msg.location().url) || '';
    if (!expectedConsoleError(msg.text(), url)) consoleProblems.push(`[${phase}] ${msg.text()} ${url}`);
  });
  page.on('pageerror', (err) => consoleProblems.push(`[${phase}] uncaught: ${err.message}`));
  page.on('dialog', (d) => d.accept()); // the rotate confirmation

  try {
    await check('page loads: GET /dashboard answers 200 with a CSP and the page title', async () => {
      const res = await page.goto(`${BASE}/dashboard`, { waitUntil: 'load' });
      assert(res && res.status() === 200, `HTTP ${res && res.status()}`);
      assert(res.headers()['content-security-policy'], 'no Content-Security-Policy header');
      assert(/corral/i.test(await page.title()), 'title does not name corral');
    });

    const loginShown = await check('login form: only the form is visible before sign-in', async () => {
      await page.waitForSelector('#login-form', { state: 'visible', timeout: 5000 });
      assert(await page.isHidden('#app'), 'app content visible before sign-in');
      await page.screenshot({ path: join(SHOTS, 'login.png') });
    });
    if (!loginShown) return;

    await check('bad-token: a wrong token is rejected and nothing is stored', async () => {
      await page.fill('#token', `crl_${'A'.repeat(43)}`);
      await page.click('#login-submit');
      await page.waitForSelector('#login-error', { state: 'visible', timeout: 5000 });
      const msg = await page.textContent('#login-error');
      assert(/reject|not an admin/i.test(msg), `unexpected message: ${msg}`);
      assert(await page.isHidden('#app'), 'app shown for a bad token');
      assert(await page.evaluate(() => sessionStorage.length) === 0, 'a rejected token was kept');
    });

    const signedIn = await check('sign-in: the admin token shows the backends, never in the URL', async () => {
      await page.fill('#token', ADMIN);
      await page.click('#login-submit');
      await page.waitForSelector('#app', { state: 'visible', timeout: 5000 });
      await page.waitForSelector('#backend-list article.card', { timeout: 10000 });
      assert(!page.url().includes(ADMIN), 'token in the URL');
      const stored = await page.evaluate(() => Object.keys(sessionStorage).map((k) => sessionStorage.getItem(k)));
      assert(stored.includes(ADMIN), 'token not in sessionStorage');
      assert(await page.evaluate(() => localStorage.length) === 0, 'something written to localStorage');
      const cards = await page.locator('#backend-list article.card').count();
      return `${cards} backend(s)`;
    });
    if (!signedIn) return;

    await check('live: the status badge says Live and backends show memory bars', async () => {
      await page.waitForFunction(() => document.querySelector('#conn')?.textContent === 'Live', null, { timeout: 5000 });
      assert(await page.locator('#backend-list .memory .bar').count() > 0, 'no memory bars');
      await page.waitForFunction(() => ['stat-requests', 'stat-inflight', 'stat-recent']
        .every((id) => /\d/.test(document.getElementById(id)?.textContent || '')), null, { timeout: 5000 });
      return `in flight ${await counter(page, 'stat-inflight')}, last 5 min ${await counter(page, 'stat-recent')}`;
    });

    let traffic = null;
    await check('traffic: the 24 h counter and the requests count go up after real requests', async () => {
      const before = await counter(page, 'stat-requests');
      traffic = await makeTraffic(3);
      await page.waitForFunction((b) => Number((document.querySelector('#stat-requests').textContent || '').replace(/[^0-9]/g, '')) >= b + 3,
        before, { timeout: 30000 });
      await page.waitForFunction(() => Number((document.querySelector('#stat-recent').textContent || '').replace(/[^0-9]/g, '')) >= 3,
        null, { timeout: 10000 });
      const after = await counter(page, 'stat-requests');
      await page.screenshot({ path: join(SHOTS, 'overview.png'), fullPage: true });
      return `${before} -> ${after} with ${traffic.model}`;
    });

    await check('requests: the table fills and a click shows the stored request', async () => {
      assert(traffic, 'no traffic was sent');
      const row = page.locator(`#request-table tbody tr.clickable:has(td:text-is("${traffic.name}"))`).first();
      await row.waitFor({ timeout: 30000 });
      await row.click();
      await page.waitForSelector('#request-dialog[open]', { timeout: 5000 });
      await page.waitForFunction(() => !/^loading/.test(document.querySelector('#request-dialog-body').textContent), null, { timeout: 5000 });
      const body = await page.textContent('#request-dialog-body');
      const fields = await page.textContent('#request-dialog-fields');
      assert(fields.includes(traffic.name), 'dialog does not show the user');
      await page.screenshot({ path: join(SHOTS, 'request.png') });
      await page.click('#request-dialog-close');
      return body.includes(`ops dashboard test ${STAMP}`) ? 'body shown' : 'no body stored';
    });

    await check('usage: the graph draws stacked areas and a total line, windows switch', async () => {
      await page.waitForSelector('#usage-chart svg path.total-line', { timeout: 5000 });
      await page.click('#usage-windows button:text-is("2h")');
      await page.waitForSelector('#usage-windows button.active:text-is("2h")', { timeout: 2000 });
      await page.waitForFunction(() => document.querySelectorAll('#usage-chart path.area').length > 0, null, { timeout: 10000 });
      await page.locator('#usage').screenshot({ path: join(SHOTS, 'usage.png') });
      return `${await page.locator('#usage-chart path.area').count()} series`;
    });

    await check('keys: pools show states and a live penalty countdown, or the section is hidden', async () => {
      if (await page.isHidden('#keys')) {
        assert(!EXPECT_PENALTY, 'key pools section hidden');
        return 'hidden: this corral has no /admin/api/keys';
      }
      await page.waitForSelector('#pool-list .pool', { timeout: 5000 });
      const countdowns = page.locator('#pool-list .countdown');
      if (await countdowns.count() === 0) {
        assert(!EXPECT_PENALTY, 'no penalty countdown although a key is penalized');
        return 'no key in the penalty box';
      }
      const first = await countdowns.first().textContent();
      await page.waitForTimeout(2100);
      const second = await countdowns.first().textContent();
      assert(/\d+s|ending/.test(first), `countdown reads "${first}"`);
      assert(first !== second || /ending/.test(second), 'countdown does not move');
      await page.locator('#keys').screenshot({ path: join(SHOTS, 'keys.png') });
      return `${first} -> ${second}`;
    });

    await check('keys-absent: a corral without the key pools API (404) gets no key pools section', async () => {
      // Older gateways answer 404 there; the browser plays one, the rest stays real.
      await page.route('**/admin/api/keys', (route) => route.fulfill({
        status: 404, contentType: 'application/json',
        body: JSON.stringify({ error: { message: 'not found', type: 'not_found_error', code: null } }),
      }));
      try {
        await page.waitForSelector('#keys', { state: 'hidden', timeout: 6000 });
        assert(await page.isVisible('#backend-list article.card'), 'the other sections went away too');
      } finally {
        await page.unroute('**/admin/api/keys');
      }
    });

    await check('users: create shows the token once; deactivate, activate and rotate work', async () => {
      const name = `ops-ui-${STAMP}`;
      await page.fill('#user-name', name);
      await page.click('#user-form button[type=submit]');
      await page.waitForSelector('#token-once', { state: 'visible', timeout: 5000 });
      const token = (await page.textContent('#token-once-value')).trim();
      assert(TOKEN_RE.test(token), `token looks wrong: ${token.slice(0, 8)}…`);
      const row = page.locator(`#user-table tr[data-user="${name}"]`);
      await row.waitFor({ timeout: 5000 });
      await page.locator('#users').screenshot({ path: join(SHOTS, 'users.png') });
      await page.click('#token-dismiss');
      assert(await page.isHidden('#token-once'), 'token still on screen after Done');
      await row.locator('button[data-action=deactivate]').click();
      await row.locator('button[data-action=activate]').waitFor({ timeout: 5000 });
      assert(/inactive/.test(await row.textContent()), 'row does not say inactive');
      await row.locator('button[data-action=activate]').click();
      await row.locator('button[data-action=deactivate]').waitFor({ timeout: 5000 });
      await row.locator('button[data-action=rotate]').click();
      await page.waitForSelector('#token-once', { state: 'visible', timeout: 5000 });
      const rotated = (await page.textContent('#token-once-value')).trim();
      assert(TOKEN_RE.test(rotated) && rotated !== token, 'rotation did not show a new token');
      await page.click('#token-dismiss');
    });

    await check('offline: a network failure keeps the data and says offline, then recovers', async () => {
      await page.route('**/admin/api/**', (route) => route.abort('connectionrefused'));
      await page.waitForSelector('#conn.bad', { timeout: 6000 });
      assert(await page.isVisible('#backend-list article.card'), 'data vanished while offline');
      await page.screenshot({ path: join(SHOTS, 'offline.png') });
      await page.unroute('**/admin/api/**');
      await page.waitForSelector('#conn.ok', { timeout: 6000 });
    });

    await check('revoked: a 401 during polling returns to the login form', async () => {
      await page.evaluate(() => sessionStorage.setItem('corral.adminToken', `crl_${'B'.repeat(43)}`));
      await page.waitForSelector('#login-form', { state: 'visible', timeout: 6000 });
      assert(await page.isHidden('#app'), 'app still visible');
      assert(/sign in again|reject/i.test(await page.textContent('#login-error')), 'no explanation shown');
      assert(await page.evaluate(() => sessionStorage.length) === 0, 'bad token kept');
    });

    phase = 'end';
    await check('console: no errors or uncaught exceptions', async () => {
      assert(consoleProblems.length === 0, `${consoleProblems.length} problem(s):\n${consoleProblems.join('\n')}`);
    });
    if (consoleProblems.length) console.log(consoleProblems.map((p) => `  ${p}`).join('\n'));
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

main()
  .catch((e) => { failed += 1; console.log(`FAIL harness: ${e.message}`); })
  .finally(() => {
    console.log(`dashboard: ${passed} passed, ${failed} failed`);
    process.exit(failed ? 1 : 0);
  });
