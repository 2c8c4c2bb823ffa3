// What the browser tests share: checks, TOTP codes (RFC 6238) that never reuse a time step, enrolment,
// the axe-core accessibility check, launching Debian's chromium, submitting forms, and the
// closing summary.
import { chromium } from 'playwright-core';
import { createRequire } from 'node:module';
import { createHmac } from 'node:crypto';

const require = createRequire(import.meta.url);
const AXE = require.resolve('axe-core/axe.min.js');

// Problems found so far (axe violations and the error that stopped the run).
export const failures = [];
// Pages axe-core has checked.
export const checked = [];

export function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

// ---- TOTP (RFC 6238, SHA-1, 6 digits, 30 s) ----
function base32Decode(s) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of s.replace(/=+$/, '').toUpperCase()) {
    const v = alphabet.indexOf(c);
    if (v < 0) continue;
    bits += v.toString(2).padStart(5, '0');
  }
  const bytes = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) bytes.push(parseInt(bits.slice(i, i + 8), 2));
  return Buffer.from(bytes);
}
function totp(secret, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = createHmac('sha1', base32Decode(secret)).update(counter).digest();
  const offset = mac[mac.length - 1] & 0xf;
  const n = (mac.readUInt32BE(offset) & 0x7fffffff) % 1000000;
  return n.toString().padStart(6, '0');
}
// The last time step used per secret (saved between phases: the server refuses a step again).
export const lastStep = new Map();
// A code for a time step not used before (the server refuses a replayed step). The server
// accepts one step of drift, so the next step's code works at once; beyond that, wait.
export async function freshCode(secret) {
  const now = Math.floor(Date.now() / 1000 / 30);
  const step = Math.max(now, (lastStep.get(secret) ?? 0) + 1);
  if (step > now + 1) {
    const waitMs = (step - 1) * 30000 - Date.now() + 200;
    if (waitMs > 0) await new Promise((r) => setTimeout(r, waitMs));
  }
  lastStep.set(secret, step);
  return totp(secret, step);
}

// ---- accessibility ----
export async function axeCheck(page, label) {
  await page.addScriptTag({ path: AXE });
  const results = await page.evaluate(async () =>
    // eslint-disable-next-line no-undef
    await axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice'] } }));
  const bad = results.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  checked.push(`${label} (${results.violations.length} minor or moderate notes)`);
  for (const v of bad) {
    failures.push(`${label}: [${v.impact}] ${v.id}: ${v.help} at ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
  }
}

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

export async function submit(page, selector = 'main button[type=submit]') {
  await Promise.all([page.waitForLoadState('load'), page.click(selector)]);
}

// Follows an enrolment link already open in `page`: sets the password, enrols TOTP with a
// fresh code, and leaves the recovery codes page (the account is then signed in).
export async function enrol(page, password) {
  await page.fill('#password', password);
  await page.fill('#confirm', password);
  await submit(page);
  const secret = (await page.textContent('#totp-secret')).trim();
  await page.fill('#code', await freshCode(secret));
  await submit(page);
  await Promise.all([page.waitForLoadState('load'), page.click('text=I have saved my recovery codes')]);
  return secret;
}

// Runs `body`, then prints the pages checked and any failures; exits 1 if there were any.
export async function runAndReport(name, body) {
  try {
    await body();
  } catch (e) {
    failures.push(String(e && e.stack ? e.stack : e));
  }
  console.log(`axe-core checked ${checked.length} pages:\n  ${checked.join('\n  ')}`);
  if (failures.length) {
    console.error(`FAILED:\n  ${failures.join('\n  ')}`);
    process.exit(1);
  }
  console.log(`${name} passed`);
}
