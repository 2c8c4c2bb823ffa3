// Safehand's pages in headless Chromium: first-run setup, TOTP enrolment (codes computed from
// the secret shown on the page), sign-in, wrong code, lock-out, sign-out, an admin creating and
// disabling a user whose open session then fails, and (phase "idle") the idle time-out.
// Every page visited gets an axe-core check; any serious or critical violation fails the run.
// The helpers shared with register.mjs (TOTP, axe-core, launching chromium) are in lib.mjs.
//
//   BASE_URL=... SETUP_URL=... STATE_FILE=... node run.mjs main
//   BASE_URL=... STATE_FILE=... node run.mjs idle
//   BASE_URL=... STATE_FILE=... DATA_DIR=... node run.mjs transfers
//   BASE_URL=... STATE_FILE=... MAIL_TO=... SMTP_ADDR=... node run.mjs mail
//
// Phase "transfers": the admin adds and verifies a contact and sets the policy; a staff member
// sends two files through the send page (file picker, progress bar), sees the passphrase once
// and confirms; the recipient follows the mailed link (mail read from DATA_DIR/outbox), gets a
// code, enters a wrong then the right passphrase and downloads; the sender sees the receipt and
// recalls a second transfer, whose link then shows the "cannot be used" page.
import { readFileSync, writeFileSync, readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { axeCheck, check, freshCode, lastStep, launch, runAndReport, submit } from './lib.mjs';

const BASE = process.env.BASE_URL;
const STATE_FILE = process.env.STATE_FILE;
const phase = process.argv[2] ?? 'main';

// The context bypasses CSP only so the test can inject axe-core; the pages' own scripts
// (send.js, countdown.js) are files served by Safehand, as its CSP (script-src 'self') requires.
const contextOptions = { bypassCSP: true, viewport: { width: 390, height: 844 } };

async function signIn(page, who, label) {
  await page.goto(`${BASE}/sign-in`);
  await page.fill('#email', who.email);
  await page.fill('#password', who.password);
  await submit(page);
  check(page.url().endsWith('/sign-in/code'), `${label}: password accepted (at ${page.url()})`);
  await page.fill('#code', await freshCode(who.secret));
  await submit(page);
  check(new URL(page.url()).pathname === '/', `${label}: signed in (at ${page.url()})`);
}

async function enrolTotp(page, label) {
  check(page.url().endsWith('/enrol/totp'), `${label}: on the enrolment page (at ${page.url()})`);
  await axeCheck(page, `${label}: TOTP enrolment`);
  const secret = (await page.textContent('#totp-secret')).trim();
  check(/^[A-Z2-7]{16,}$/.test(secret), `${label}: secret shown as text (${secret})`);
  const qrOk = await page.$eval('img.qr', (img) => img.complete && img.naturalWidth > 0);
  check(qrOk, `${label}: QR code image renders`);
  // A wrong code first: the page says so and stays.
  await page.fill('#code', '12345');
  await submit(page);
  check((await page.textContent('.error-summary')).includes('The code is not right'), `${label}: wrong enrolment code refused`);
  await page.fill('#code', await freshCode(secret));
  await submit(page);
  await axeCheck(page, `${label}: recovery codes`);
  const codes = await page.$$eval('#recovery-codes code', (els) => els.map((e) => e.textContent));
  check(codes.length === 10, `${label}: ten recovery codes shown`);
  await Promise.all([page.waitForLoadState('load'), page.click('text=I have saved my recovery codes')]);
  return { secret, codes };
}

// Phase "setup": only the first-run setup of the admin (for a run of the transfers phase on a
// fresh database); the main phase tests these pages in full.
async function setupOnly() {
  const browser = await launch();
  try {
    const a = await (await browser.newContext(contextOptions)).newPage();
    await a.goto(process.env.SETUP_URL);
    const admin = { email: 'ada@school.sch.uk', password: 'kettle orbit lantern' };
    await a.fill('#name', 'Ada Admin');
    await a.fill('#email', admin.email);
    await a.fill('#password', admin.password);
    await a.fill('#confirm', admin.password);
    await submit(a);
    Object.assign(admin, await enrolTotp(a, 'admin'));
    writeFileSync(STATE_FILE, JSON.stringify({ admin, lastStep: [...lastStep] }));
  } finally {
    await browser.close();
  }
}

async function main() {
  const browser = await launch();
  try {
    // ---- first-run setup ----
    const ctxA = await browser.newContext(contextOptions);
    const a = await ctxA.newPage();
    await a.goto(process.env.SETUP_URL);
    await axeCheck(a, 'setup');
    await submit(a); // empty form: error summary linked to fields
    const links = await a.$$eval('.error-summary a', (els) => els.map((e) => e.getAttribute('href')));
    check(links.includes('#name') && links.includes('#email') && links.includes('#password'), `setup errors link to fields (${links})`);
    await axeCheck(a, 'setup with errors');
    const admin = { email: 'ada@school.sch.uk', password: 'kettle orbit lantern' };
    await a.fill('#name', 'Ada Admin');
    await a.fill('#email', admin.email);
    await a.fill('#password', 'password1234');
    await a.fill('#confirm', 'password1234');
    await submit(a);
    check((await a.textContent('#password-error')).includes('too common'), 'common password refused');
    await a.fill('#password', admin.password);
    await a.fill('#confirm', admin.password);
    await submit(a);
    Object.assign(admin, await enrolTotp(a, 'admin'));
    check((await a.textContent('h1')).includes('Hello, Ada Admin'), 'admin home page');
    await axeCheck(a, 'home (admin)');

    // ---- account page, API token ----
    await a.goto(`${BASE}/account`);
    await axeCheck(a, 'account');
    await a.fill('#token_name', 'browser test');
    await a.check('#scope-staff');
    // Without the password: refused, the error linked to the field.
    await Promise.all([a.waitForLoadState('load'), a.click('text=Create token')]);
    check((await a.textContent('#token_password-error')).includes('Enter your password.'), 'a token needs the password again');
    await axeCheck(a, 'token refused');
    await a.fill('#token_name', 'browser test');
    await a.check('#scope-staff');
    await a.fill('#token_password', admin.password);
    await Promise.all([a.waitForLoadState('load'), a.click('text=Create token')]);
    await axeCheck(a, 'token created');
    const token = await a.inputValue('#token');
    check(token.startsWith('shtok_'), 'token shown once');
    const me = await fetch(`${BASE}/api/v1/me`, { headers: { Authorization: `Bearer ${token}` } });
    check(me.status === 200 && (await me.json()).roles === 'staff', 'token works for the API with its scope');

    // ---- admin creates a user ----
    await a.goto(`${BASE}/admin/users`);
    await axeCheck(a, 'admin users');
    await a.fill('#name', 'Sam Staff');
    await a.fill('#email', 'sam@school.sch.uk');
    await Promise.all([a.waitForLoadState('load'), a.click('text=Create user')]);
    await axeCheck(a, 'admin user (created, with link)');
    const enrolLink = await a.inputValue('#link');
    check(enrolLink.includes('/enrol/'), 'enrolment link shown');
    await a.goto(`${BASE}/admin/audit`);
    await axeCheck(a, 'audit log');
    await a.selectOption('#action', 'user_created');
    await Promise.all([a.waitForLoadState('load'), a.click('text=Filter')]);
    check((await a.textContent('tbody')).includes('sam@school.sch.uk'), 'audit filter shows the creation');
    await a.goto(`${BASE}/no/such/page`);
    await axeCheck(a, 'not found page');

    // ---- sign out, wrong password, wrong code, sign in ----
    await a.goto(`${BASE}/`);
    await Promise.all([a.waitForLoadState('load'), a.click('header button[type=submit]')]);
    check((await a.textContent('h1')).includes('You have signed out'), 'signed out page');
    await axeCheck(a, 'signed out');
    await a.goto(`${BASE}/`);
    check(a.url().endsWith('/sign-in'), 'after sign-out the home page asks to sign in');
    await axeCheck(a, 'sign in');
    await a.fill('#email', admin.email);
    await a.fill('#password', 'not my password at all');
    await submit(a);
    check((await a.textContent('.error-summary')).includes('Enter a correct email address and password'), 'wrong password message');
    await axeCheck(a, 'sign in with error');
    await a.fill('#password', admin.password);
    await submit(a);
    await axeCheck(a, 'security code');
    const right = await freshCode(admin.secret);
    await a.fill('#code', right === '000000' ? '111111' : '000000');
    await submit(a);
    check((await a.textContent('.error-summary')).includes('The code is not right'), 'wrong code refused');
    await axeCheck(a, 'security code with error');
    await a.fill('#code', right);
    await submit(a);
    check(new URL(a.url()).pathname === '/', 'signed in with the right code');

    // ---- the new user enrols in another browser ----
    const ctxB = await browser.newContext(contextOptions);
    const b = await ctxB.newPage();
    await b.goto(enrolLink);
    await axeCheck(b, 'enrolment link');
    const sam = { email: 'sam@school.sch.uk', password: 'marble harbour window' };
    await b.fill('#password', sam.password);
    await b.fill('#confirm', sam.password);
    await submit(b);
    Object.assign(sam, await enrolTotp(b, 'sam'));
    check((await b.textContent('main')).includes('Send files securely'), 'staff home page');
    await axeCheck(b, 'home (staff)');
    const forbidden = await b.goto(`${BASE}/admin/users`);
    check(forbidden.status() === 403 && (await b.textContent('h1')).includes('You cannot do that'), 'staff cannot open admin pages');
    await axeCheck(b, 'forbidden page');

    // ---- lock-out (the server runs with --sign-in-lock-after 3) ----
    const ctxC = await browser.newContext(contextOptions);
    const c = await ctxC.newPage();
    for (let i = 0; i < 3; i++) {
      await c.goto(`${BASE}/sign-in`);
      await c.fill('#email', sam.email);
      await c.fill('#password', `wrong password ${i}`);
      await submit(c);
    }
    await c.goto(`${BASE}/sign-in`);
    await c.fill('#email', sam.email);
    await c.fill('#password', sam.password);
    await submit(c);
    check((await c.textContent('.error-summary')).includes('Sign-in is locked'), 'locked after repeated failures, even with the right password');
    await axeCheck(c, 'locked sign-in');

    // ---- admin disables the user; their open session fails ----
    await a.goto(`${BASE}/admin/users`);
    await Promise.all([a.waitForLoadState('load'), a.click('text=Sam Staff')]);
    check((await a.textContent('main')).includes('locked'), 'admin sees the lock');
    await Promise.all([a.waitForLoadState('load'), a.click('text=Disable account')]);
    check((await a.textContent('#user-status')).includes('disabled'), 'user disabled');
    await axeCheck(a, 'admin user (disabled)');
    await b.goto(`${BASE}/account`);
    check(b.url().includes('/sign-in'), `disabled user's open session fails (at ${b.url()})`);
    check((await b.textContent('main')).includes('Your session has ended'), 'the page says the session ended');

    writeFileSync(STATE_FILE, JSON.stringify({ admin, lastStep: [...lastStep] }));
  } finally {
    await browser.close();
  }
}

async function idle() {
  const state = JSON.parse(readFileSync(STATE_FILE, 'utf8'));
  for (const [k, v] of state.lastStep) lastStep.set(k, v);
  const browser = await launch();
  try {
    const ctx = await browser.newContext(contextOptions);
    const p = await ctx.newPage();
    await signIn(p, state.admin, 'idle');
    await p.goto(`${BASE}/account`);
    check(p.url().endsWith('/account'), 'active session works');
    // The server runs with --session-idle-timeout 3s.
    await new Promise((r) => setTimeout(r, 4500));
    await p.goto(`${BASE}/account`);
    check(p.url().includes('/sign-in?ended=1'), `idle session ended (at ${p.url()})`);
    check((await p.textContent('main')).includes('Your session has ended'), 'the page says the session ended');
    await axeCheck(p, 'session ended');
  } finally {
    await browser.close();
  }
}


// ---- mail written to DATA_DIR/outbox/*.eml (no SMTP configured) ----
function decodeQuotedPrintable(s) {
  return s.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16)));
}
function mailsTo(address) {
  const dir = join(process.env.DATA_DIR, 'outbox');
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((f) => f.endsWith('.eml')).sort().map((f) => readFileSync(join(dir, f), 'utf8'))
    .filter((raw) => raw.toLowerCase().includes(`to: ${address.toLowerCase()}`))
    .map((raw) => {
      const [head, ...rest] = raw.replace(/\r\n/g, '\n').split('\n\n');
      let body = rest.join('\n\n');
      if (/content-transfer-encoding: quoted-printable/i.test(head)) body = decodeQuotedPrintable(body);
      if (/content-transfer-encoding: base64/i.test(head)) body = Buffer.from(body.replace(/\s/g, ''), 'base64').toString('utf8');
      const subject = (head.match(/^subject: (.*)$/im) || [])[1] || '';
      return { subject, body };
    });
}
async function waitForMail(address, subject, count = 1) {
  for (let i = 0; i < 300; i++) {
    const found = mailsTo(address).filter((m) => m.subject.includes(subject));
    if (found.length >= count) return found[count - 1];
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`no mail "${subject}" for ${address}`);
}

async function transfers() {
  const state = JSON.parse(readFileSync(STATE_FILE, 'utf8'));
  for (const [k, v] of state.lastStep) lastStep.set(k, v);
  const browser = await launch();
  try {
    const ctxA = await browser.newContext(contextOptions);
    const a = await ctxA.newPage();
    await signIn(a, state.admin, 'admin');
    // ---- policy and the contacts directory ----
    await a.goto(`${BASE}/admin/policy`);
    await axeCheck(a, 'policy');
    check((await a.inputValue('#undo_window_secs')) === '60', 'the undo window is 60 s by default');
    await a.fill('#undo_window_secs', '15'); // short, so that the link mails below do not keep the test waiting
    await Promise.all([a.waitForLoadState('load'), a.click('button:has-text("Save policy")')]);
    check((await a.textContent('main')).includes('Policy saved.'), 'undo window set to 15 s');
    await a.fill('#pattern', '*.gov.uk');
    await Promise.all([a.waitForLoadState('load'), a.click('button:has-text("Add domain")')]);
    check((await a.textContent('main')).includes('*.gov.uk added'), 'allowed domain added');
    await axeCheck(a, 'policy with a domain');
    await a.goto(`${BASE}/contacts`);
    await submit(a); // empty: errors linked to fields
    const links = await a.$$eval('.error-summary a', (els) => els.map((e) => e.getAttribute('href')));
    check(links.includes('#name') && links.includes('#email'), `contact errors link to fields (${links})`);
    await axeCheck(a, 'contacts with errors');
    const jo = 'jo.bloggs@northshire.gov.uk';
    await a.fill('#name', 'Jo Bloggs');
    await a.fill('#organisation', 'Northshire Children\'s Services');
    await a.fill('#job_title', 'Social worker');
    await a.fill('#email', jo);
    await a.fill('#phone', '01632 960 123');
    await submit(a);
    check((await a.textContent('#verification-status')).includes('not verified'), 'new contact is not verified');
    await axeCheck(a, 'contact (not verified)');
    // Four eyes by default: whoever entered the contact may not verify them. This school
    // lets the one admin do both, in its policy.
    check((await a.textContent('#verify-own')).includes('someone else must verify them'), 'four eyes: no self-verification by default');
    const contactUrl = a.url();
    await a.goto(`${BASE}/admin/policy`);
    await a.check('#self-verification');
    await Promise.all([a.waitForLoadState('load'), a.click('button:has-text("Save policy")')]);
    check((await a.textContent('main')).includes('Policy saved.'), 'self-verification allowed by policy');
    await a.goto(contactUrl);
    await a.fill('#phone_called', '01632 960 123');
    await a.check('#source-switchboard');
    await a.fill('#note', 'Rang the council switchboard; Jo read the address back.');
    await Promise.all([a.waitForLoadState('load'), a.click('button:has-text("Record verification")')]);
    check((await a.textContent('#verification-status')).includes('verified until'), 'contact verified');
    await axeCheck(a, 'contact (verified)');

    // ---- a staff member ----
    await a.goto(`${BASE}/admin/users`);
    await a.fill('#name', 'Tom Teacher');
    await a.fill('#email', 'tom@school.sch.uk');
    await Promise.all([a.waitForLoadState('load'), a.click('text=Create user')]);
    const enrolLink = await a.inputValue('#link');
    const ctxT = await browser.newContext({ ...contextOptions, acceptDownloads: true });
    const t = await ctxT.newPage();
    await t.goto(enrolLink);
    await t.fill('#password', 'meadow copper violin');
    await t.fill('#confirm', 'meadow copper violin');
    await submit(t);
    await enrolTotp(t, 'tom');

    // ---- sending, with the progress bar ----
    await t.goto(`${BASE}/transfers/new`);
    await axeCheck(t, 'send page');
    await t.click('#send-button'); // nothing chosen: the page says so
    check((await t.textContent('#error-summary')).includes('Add at least one file'), 'no files: error shown');
    await axeCheck(t, 'send page with errors');
    const big = Buffer.alloc(8 * 1024 * 1024, 7);
    await t.setInputFiles('#files', [
      { name: 'referral.txt', mimeType: 'text/plain', buffer: Buffer.from('Referral notes for the meeting.\n') },
      { name: 'scan.bin', mimeType: 'application/octet-stream', buffer: big },
    ]);
    check((await t.textContent('#file-list')).includes('scan.bin'), 'chosen files listed');
    await t.fill('#purpose', 'Child protection referral');
    await t.click('#send-button');
    await t.waitForSelector('#passphrase-step', { state: 'visible', timeout: 60000 });
    check((await t.$eval('#progress', (p) => p.value)) === 100, 'the progress bar reached 100%');
    const passphrase = (await t.textContent('#passphrase')).trim();
    check(passphrase.split('-').length === 7, `a seven-word passphrase is shown (${passphrase})`);
    check((await t.textContent('#contact-phone')).includes('01632 960 123'), 'the verified number is shown with it');
    await axeCheck(t, 'passphrase page');
    await t.check('#will_phone');
    await Promise.all([t.waitForLoadState('load'), t.click('button:has-text("Send the link to the recipient")')]);
    await t.waitForSelector('#undo-countdown'); // the transfer page, not the passphrase page
    check((await t.textContent('main')).includes('The link will be emailed to the recipient in 15 seconds'), 'sender confirmed; the undo window runs');
    check(/\(in 1[0-5] s\)/.test(await t.textContent('#undo-countdown')), 'the countdown is shown');
    // The home page lists it with its own Undo (one click, inside the 15 s: the
    // accessibility check of the transfer page waits for the second release below): nothing
    // is mailed and the transfer can be sent again.
    await t.goto(`${BASE}/`);
    check((await t.textContent('main')).includes('Being sent now: you can still take these back'), 'the home page lists the transfer being sent');
    await axeCheck(t, 'home page with a transfer being sent');
    await Promise.all([t.waitForLoadState('load'), t.click('.sending button:has-text("Undo")')]);
    check((await t.textContent('main')).includes('Undone: nothing was emailed'), 'release undone from the home page');
    check((await t.textContent('#transfer-state')).includes('not sent yet'), 'sealed again after undo');
    await t.check('#will_phone');
    await Promise.all([t.waitForLoadState('load'), t.click('button:has-text("Send the link to the recipient")')]);
    check((await t.$$('button:has-text("Undo")')).length === 1, 'sent again, with its own undo window');
    await axeCheck(t, 'transfer page (undo window)');
    // The page counts down by itself; when the window closes the Undo button goes and the
    // page says the link is being emailed.
    await t.waitForFunction(() => /\(in [0-9] s\)/.test(document.querySelector('#undo-countdown').textContent), null, { timeout: 30000 });
    await t.waitForFunction(() => document.querySelector('#undo-form').hidden, null, { timeout: 30000 });
    check((await t.textContent('#undo-countdown')).includes('The undo window has closed'), 'the countdown ends by itself');
    check(!(await t.isVisible('button:has-text("Undo")')), 'no Undo once the window has closed');
    const transferUrl = t.url().replace(/\/release$/, '');

    // ---- the recipient ----
    const linkMail = await waitForMail(jo, 'A secure file is waiting for you');
    check(mailsTo(jo).filter((m) => m.subject.includes('A secure file is waiting for you')).length === 1, 'one link mail: the undone release sent none');
    check(!linkMail.body.includes(passphrase) && !linkMail.body.includes('scan.bin'), 'the mail has no passphrase and no file names');
    const link = linkMail.body.match(/https?:\/\/\S+\/r\/\S+/)[0];
    const ctxR = await browser.newContext({ ...contextOptions, acceptDownloads: true });
    const r = await ctxR.newPage();
    await r.goto(link);
    await axeCheck(r, 'recipient: link page');
    await Promise.all([r.waitForLoadState('load'), r.click('button:has-text("Email me a code")')]);
    await axeCheck(r, 'recipient: code page');
    const codeMail = await waitForMail(jo, 'Your Safehand code');
    const code = codeMail.body.match(/code is: (\d{8})/)[1];
    await r.fill('#code', code);
    await submit(r);
    await axeCheck(r, 'recipient: passphrase page');
    await r.fill('#passphrase', 'not the right words');
    await submit(r);
    check((await r.textContent('.error-summary')).includes('not right'), 'wrong passphrase refused');
    await axeCheck(r, 'recipient: wrong passphrase');
    await r.fill('#passphrase', passphrase);
    await submit(r);
    check(r.url().endsWith('/files'), `files page after the passphrase (at ${r.url()})`);
    await axeCheck(r, 'recipient: files');
    const [download] = await Promise.all([r.waitForEvent('download'), r.click('text=referral.txt')]);
    const path = await download.path();
    check(readFileSync(path, 'utf8') === 'Referral notes for the meeting.\n', 'downloaded file matches');
    check(download.suggestedFilename() === 'referral.txt', 'download keeps its name');

    // ---- receipts and recall ----
    await waitForMail('tom@school.sch.uk', 'Your transfer was downloaded');
    await t.goto(transferUrl);
    check((await t.textContent('#transfer-state')).includes('downloaded 1 of 3'), 'the sender sees the download');
    await t.goto(`${BASE}/transfers`);
    await axeCheck(t, 'dashboard');
    await t.goto(`${BASE}/transfers/new`);
    await t.setInputFiles('#files', [{ name: 'second.txt', mimeType: 'text/plain', buffer: Buffer.from('second') }]);
    await t.fill('#purpose', 'Follow-up');
    await t.click('#send-button');
    await t.waitForSelector('#passphrase-step', { state: 'visible', timeout: 60000 });
    await t.check('#will_phone');
    await Promise.all([t.waitForLoadState('load'), t.click('button:has-text("Send the link to the recipient")')]);
    const secondLink = (await waitForMail(jo, 'A secure file is waiting for you', 2)).body.match(/https?:\/\/\S+\/r\/\S+/)[0];
    await Promise.all([t.waitForLoadState('load'), t.click('button:has-text("Recall this transfer")')]);
    check((await t.textContent('#transfer-state')).includes('recalled'), 'recalled');
    await axeCheck(t, 'transfer page (recalled)');
    const gone = await r.goto(secondLink);
    check(gone.status() === 404 && (await r.textContent('h1')).includes('This link cannot be used'), 'a recalled link cannot be used');
    await axeCheck(r, 'recipient: link cannot be used');
  } finally {
    await browser.close();
  }
}

// ---- phase "approval" (after "transfers", same database): the admin turns on approval of
// every transfer; a sender's transfer waits; the approver's queue and page; rejection without
// a reason refused; approval; the sender sees the decision; a second transfer rejected.
async function approval() {
  const state = JSON.parse(readFileSync(STATE_FILE, 'utf8'));
  for (const [k, v] of state.lastStep) lastStep.set(k, v);
  const browser = await launch();
  try {
    const a = await (await browser.newContext(contextOptions)).newPage();
    await signIn(a, state.admin, 'admin');
    await a.goto(`${BASE}/admin/policy`);
    await a.check('#approval_always');
    await Promise.all([a.waitForLoadState('load'), a.click('button:has-text("Save policy")')]);
    check((await a.textContent('main')).includes('Policy saved.'), 'approval of every transfer switched on');
    check(await a.isChecked('#approval_always'), 'the policy page shows the approval rule');
    await axeCheck(a, 'policy with approval rules');
    // An approver (approver role only) and a sender.
    const people = {};
    for (const [key, name, email, roles] of [
      ['alex', 'Alex Approver', 'alex@school.sch.uk', ['approver']],
      ['una', 'Una Sender', 'una@school.sch.uk', ['staff']],
    ]) {
      await a.goto(`${BASE}/admin/users`);
      await a.fill('#name', name);
      await a.fill('#email', email);
      if (!roles.includes('staff')) await a.uncheck('#role-staff');
      for (const r of roles) if (r !== 'staff') await a.check(`#role-${r}`);
      await Promise.all([a.waitForLoadState('load'), a.click('text=Create user')]);
      const enrolLink = await a.inputValue('#link');
      const page = await (await browser.newContext(contextOptions)).newPage();
      await page.goto(enrolLink);
      await page.fill('#password', 'meadow copper violin');
      await page.fill('#confirm', 'meadow copper violin');
      await submit(page);
      await enrolTotp(page, key);
      people[key] = page;
    }
    const { alex, una } = people;

    async function sendOne(name, text) {
      await una.goto(`${BASE}/transfers/new`);
      await una.setInputFiles('#files', [{ name, mimeType: 'text/plain', buffer: Buffer.from(text) }]);
      await una.fill('#purpose', 'Annual review papers');
      await una.click('#send-button');
      await una.waitForSelector('#passphrase-step', { state: 'visible', timeout: 60000 });
      await una.check('#will_phone');
      await Promise.all([una.waitForLoadState('load'), una.click('button:has-text("Send the link to the recipient")')]);
      await una.waitForSelector('#held-reasons');
      check((await una.textContent('main')).includes('School policy asks for an approver to check this transfer first'), 'the sender is told it waits for an approver');
      check((await una.textContent('#transfer-state')).includes('waiting for an approver'), 'state: waiting for an approver');
      return una.url().replace(/\/release$/, '');
    }
    const firstUrl = await sendOne('review.txt', 'Review notes.\n');
    await axeCheck(una, 'transfer page (waiting for an approver)');
    await waitForMail('alex@school.sch.uk', 'A transfer is waiting for your approval');

    // The approver's queue and page.
    await alex.goto(`${BASE}/`);
    check((await alex.textContent('#approver-h ~ p')).includes('1 transfer is waiting for approval'), 'the approver home page counts the queue');
    await alex.goto(`${BASE}/approvals`);
    await axeCheck(alex, 'approvals queue');
    check((await alex.textContent('#queue')).includes('Una Sender'), 'the queue lists the transfer');
    await Promise.all([alex.waitForLoadState('load'), alex.click('#queue tbody a')]);
    await axeCheck(alex, 'approval page');
    check((await alex.textContent('main')).includes('Annual review papers'), 'the approver sees the purpose');
    check((await alex.textContent('#verification')).includes('verified'), 'and the contact\'s verification record');
    check((await alex.textContent('main')).includes('review.txt'), 'and the file names');
    await submit(alex, 'button:has-text("Reject and destroy")'); // no reason
    check((await alex.textContent('.error-summary')).includes('Write why you are rejecting'), 'a rejection needs a reason');
    const errorLinks = await alex.$$eval('.error-summary a', (els) => els.map((e) => e.getAttribute('href')));
    check(errorLinks.includes('#reason'), `the error links to the reason field (${errorLinks})`);
    await axeCheck(alex, 'approval page with an error');
    await alex.fill('#note', 'Checked with the head teacher.');
    await submit(alex, 'button:has-text("Approve and send")');
    await alex.waitForSelector('#decision');
    check((await alex.textContent('main')).includes('Approved. The sender has been told'), 'approved');
    check((await alex.textContent('#decision')).includes('Approved by alex@school.sch.uk'), 'the decision is shown');
    await axeCheck(alex, 'approval page (approved)');
    await waitForMail('una@school.sch.uk', 'Your transfer was approved');
    await una.goto(firstUrl);
    check((await una.textContent('#decision')).includes('Checked with the head teacher.'), 'the sender sees the approver\'s note');
    await waitForMail('jo.bloggs@northshire.gov.uk', 'A secure file is waiting for you', 3);

    // A second transfer, rejected with a reason.
    const secondUrl = await sendOne('wrong.txt', 'Not for sending.\n');
    await alex.goto(`${BASE}/approvals`);
    await Promise.all([alex.waitForLoadState('load'), alex.click('#queue tbody a')]);
    await alex.fill('#reason', 'This is the report for a different pupil.');
    await submit(alex, 'button:has-text("Reject and destroy")');
    await alex.waitForSelector('#decision');
    check((await alex.textContent('main')).includes('Rejected. The files have been destroyed'), 'rejected');
    await waitForMail('una@school.sch.uk', 'Your transfer was not approved');
    await una.goto(secondUrl);
    check((await una.textContent('#transfer-state')).includes('rejected by alex@school.sch.uk'), 'the sender sees the rejection');
    check((await una.textContent('#decision')).includes('a different pupil'), 'with the reason');
    await axeCheck(una, 'transfer page (rejected)');
    await alex.goto(`${BASE}/approvals`);
    check((await alex.textContent('main')).includes('No transfers are waiting for approval.'), 'the queue is empty');
    await axeCheck(alex, 'approvals queue (empty, with decisions)');
    // Back to no approval, for any phase that follows.
    await a.goto(`${BASE}/admin/policy`);
    await a.uncheck('#approval_always');
    await Promise.all([a.waitForLoadState('load'), a.click('button:has-text("Save policy")')]);
  } finally {
    await browser.close();
  }
}

// ---- phase "mail": the admin Mail page. The server sends through an SMTP server that is not
// running (MAIL_TO names a mail queued before it started), so that mail waits with its error.
async function mailPage() {
  const state = JSON.parse(readFileSync(STATE_FILE, 'utf8'));
  for (const [k, v] of state.lastStep) lastStep.set(k, v);
  const to = process.env.MAIL_TO;
  const browser = await launch();
  try {
    const a = await (await browser.newContext(contextOptions)).newPage();
    await signIn(a, state.admin, 'mail');
    await Promise.all([a.waitForLoadState('load'), a.click('header a[href="/admin/mail"]')]);
    check((await a.textContent('h1')).includes('Mail'), 'the Mail page opens from the menu');
    check((await a.textContent('main')).includes(`Mail is sent through the SMTP server ${process.env.SMTP_ADDR} (no encryption).`), 'the page says where mail goes');
    // The worker's first attempt happens at start-up; give it a moment.
    let cells = [];
    for (let i = 0; i < 20; i++) {
      cells = await a.$$eval('tbody tr', (rows, addr) => rows.map((r) => [...r.cells].map((c) => c.textContent.trim()))
        .find((c) => c[1] === addr) ?? [], to);
      if (cells[4] && cells[4] !== '0') break;
      await new Promise((r) => setTimeout(r, 500));
      await a.reload();
    }
    check(cells.length === 6, `the queued mail to ${to} is listed (${JSON.stringify(cells)})`);
    check(cells[2] === 'A secure file is waiting for you' && cells[3] === 'waiting' && cells[4] === '1', `it waits after one attempt (${JSON.stringify(cells)})`);
    check(/connect/i.test(cells[5]), `its last error says the server could not be reached (${cells[5]})`);
    check(/Waiting: [1-9]/.test(await a.textContent('main')), 'the waiting count includes it');
    await axeCheck(a, 'admin mail');
  } finally {
    await browser.close();
  }
}

await runAndReport(`browser phase "${phase}"`, async () => {
  if (phase === 'main') await main();
  else if (phase === 'setup') await setupOnly();
  else if (phase === 'transfers') await transfers();
  else if (phase === 'approval') await approval();
  else if (phase === 'idle') await idle();
  else if (phase === 'mail') await mailPage();
  else throw new Error(`unknown phase ${phase}`);
  // The server refuses a TOTP step it has seen: the next phase must know which were used.
  if (phase !== 'main') {
    const state = JSON.parse(readFileSync(STATE_FILE, 'utf8'));
    writeFileSync(STATE_FILE, JSON.stringify({ ...state, lastStep: [...lastStep] }));
  }
});
