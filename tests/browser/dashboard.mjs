// Browser smoke test: starts `galen demo`, drives the dashboard and the
// patient page in headless Chromium. Plain node script (no test runner).
// Last stdout line is exactly "1 passed, 0 failed" or "0 passed, 1 failed".
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const TOTAL_TIMEOUT_MS = 90_000;
const START_TIMEOUT_MS = 60_000;
const EXPECTED_TILES = 24;

let child = null;
let childExited = false;
let stderrTail = '';
let browser = null;
let tmpDir = null;

function log(msg) {
  console.log(msg);
}

function findBinary() {
  const bin = process.env.GALEN_BIN || path.resolve(HERE, '../../target/debug/galen');
  try {
    fs.accessSync(bin, fs.constants.X_OK);
  } catch {
    throw new Error(`galen binary not found or not executable at ${bin} (build it with \`cargo build\` or set GALEN_BIN)`);
  }
  return bin;
}

function startServer(bin) {
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'galen-browser-'));
  const dataDir = path.join(tmpDir, 'data');
  fs.mkdirSync(dataDir);
  child = spawn(bin, ['demo', '--http-addr', '127.0.0.1:0', '--data-dir', dataDir], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1' },
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    stderrTail = (stderrTail + d).slice(-8000);
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`server did not print "dashboard at <url>" within ${START_TIMEOUT_MS / 1000} s`));
    }, START_TIMEOUT_MS);
    const rl = readline.createInterface({ input: child.stdout });
    let found = false;
    rl.on('line', (line) => {
      if (found) return;
      const m = /dashboard at (http:\/\/\S+)/.exec(line);
      if (m) {
        found = true;
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    // Keep draining stdout after the URL so the child never blocks on a full pipe.
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${bin}: ${err.message}`));
    });
    child.on('exit', (code, signal) => {
      childExited = true;
      if (!found) {
        clearTimeout(timer);
        // Give stderr a moment to drain so the tail shown is complete.
        const fail = () => reject(new Error(`server exited early (code ${code}, signal ${signal})`));
        const t = setTimeout(fail, 500);
        child.once('close', () => { clearTimeout(t); fail(); });
      }
    });
  });
}

async function stopServer() {
  if (!child || childExited) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timeout = new Promise((resolve) => setTimeout(() => resolve('timeout'), 5000));
  if ((await Promise.race([exited, timeout])) === 'timeout' && !childExited) {
    child.kill('SIGKILL');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 2000))]);
  }
}

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

async function run() {
  const bin = findBinary();
  const baseUrl = await startServer(bin);
  log(`server: ${baseUrl}`);

  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 1920, height: 1080 } });
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (err) => pageErrors.push(err.message));

  await page.goto(baseUrl, { waitUntil: 'domcontentloaded', timeout: 15_000 });

  // 1. 24 tiles, each showing a heart-rate number.
  await page.waitForFunction((n) => {
    const tiles = document.querySelectorAll('.tile');
    if (tiles.length !== n) return false;
    return [...tiles].every((t) => {
      const el = t.querySelector('[data-vital="heart_rate"]');
      return el && /^\d+$/.test(el.textContent.trim());
    });
  }, EXPECTED_TILES, { timeout: 20_000 }).catch(async () => {
    const count = await page.locator('.tile').count();
    throw new Error(`expected ${EXPECTED_TILES} tiles each with a heart rate; found ${count} tiles`);
  });
  log(`dashboard: ${EXPECTED_TILES} tiles with heart rates`);

  // 2. Live updates without a reload.
  const before = await page.evaluate(() => {
    window.__marker = 1;
    const values = {};
    for (const t of document.querySelectorAll('.tile')) {
      values[t.dataset.patientId] = [...t.querySelectorAll('[data-vital]')].map((e) => e.textContent).join('|');
    }
    return { values, updates: Number(document.body.dataset.updates || 0) };
  });
  await page.waitForFunction((b) => {
    if (Number(document.body.dataset.updates || 0) <= b.updates) return false;
    for (const t of document.querySelectorAll('.tile')) {
      const now = [...t.querySelectorAll('[data-vital]')].map((e) => e.textContent).join('|');
      if (t.dataset.patientId in b.values && b.values[t.dataset.patientId] !== now) return true;
    }
    return false;
  }, before, { timeout: 20_000, polling: 250 }).catch(() => {
    throw new Error('no live update reached the dashboard within 20 s');
  });
  const after = await page.evaluate(() => ({ marker: window.__marker, updates: Number(document.body.dataset.updates || 0) }));
  check(after.marker === 1, 'page was reloaded or navigated during live updates');
  check(after.updates > before.updates, 'updates counter did not grow');
  log(`dashboard: live updates applied (${before.updates} -> ${after.updates}) without reload`);

  const shot = path.join(tmpDir, 'dashboard.png');
  await page.screenshot({ path: shot });
  log(`screenshot: ${shot}${process.env.KEEP_TMP ? '' : ' (removed at exit; set KEEP_TMP=1 to keep)'}`);

  // 3. Tile click opens the patient page with the name and a chart.
  const tile = page.locator('.tile').first();
  const name = ((await tile.locator('.name').textContent()) || '').trim();
  const id = await tile.getAttribute('data-patient-id');
  check(name.length > 0, 'first tile shows no patient name');
  await Promise.all([
    page.waitForURL((u) => new URL(u).pathname === `/patients/${id}`, { timeout: 10_000 }),
    tile.click(),
  ]);
  await page.waitForFunction((n) => {
    const h = document.getElementById('patient-name');
    return h && h.textContent.trim() === n;
  }, name, { timeout: 10_000 }).catch(async () => {
    const shown = await page.locator('#patient-name').textContent().catch(() => null);
    throw new Error(`patient page does not show the tile's patient name (shown: ${JSON.stringify(shown)})`);
  });
  await page.waitForFunction(() => document.querySelectorAll('.chart svg path.mean').length > 0, null, { timeout: 15_000 })
    .catch(() => { throw new Error('patient page shows no SVG chart with a path'); });
  const charts = await page.locator('.chart svg').count();
  log(`patient page: name shown, ${charts} charts`);
  await page.screenshot({ path: path.join(tmpDir, 'patient.png') });
  log(`screenshot: ${path.join(tmpDir, 'patient.png')}`);

  check(pageErrors.length === 0, `JavaScript errors on the pages: ${pageErrors.join('; ')}`);
}

async function cleanup() {
  if (browser) await browser.close().catch(() => {});
  await stopServer().catch(() => {});
  if (tmpDir && !process.env.KEEP_TMP) fs.rmSync(tmpDir, { recursive: true, force: true });
}

let finished = false;
async function finish(ok) {
  if (finished) return;
  finished = true;
  clearTimeout(overall);
  await cleanup();
  console.log(ok ? '1 passed, 0 failed' : '0 passed, 1 failed');
  process.exit(ok ? 0 : 1);
}

const overall = setTimeout(() => {
  console.error(`error: test exceeded ${TOTAL_TIMEOUT_MS / 1000} s`);
  finish(false);
}, TOTAL_TIMEOUT_MS);

try {
  await run();
  await finish(true);
} catch (err) {
  if (!finished) {
    console.error(`error: ${err && err.message ? err.message : err}`);
    if (stderrTail.trim()) console.error(`--- galen stderr (tail) ---\n${stderrTail.trimEnd()}\n---`);
  }
  await finish(false);
}
