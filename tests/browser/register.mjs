// The equipment and disposal register in headless Chromium, with an axe-core check on every
// page (any serious or critical violation fails the run): first-run admin, a technician who
// registers their signing key, adds an asset (with and without errors), imports a CSV with
// bad rows, uploads a signed wipe certificate, and fills in the disposal form; the admin
// authorises; the technician completes; the disposal report shows it.
//
// The server runs on SQLite or PostgreSQL (server/tests/browser.rs runs it on both).
//
//   BASE_URL=... SETUP_URL=... CERT_FILE=... PUBLIC_KEY=... BAD_CSV=... node register.mjs
import { axeCheck, check, enrol, launch, runAndReport, submit } from './lib.mjs';

const BASE = process.env.BASE_URL;

const contextOptions = { bypassCSP: true, viewport: { width: 1024, height: 900 } };

async function main() {
  const browser = await launch();
  try {
    // ---- the admin, and a technician ----
    const ctxA = await browser.newContext(contextOptions);
    const a = await ctxA.newPage();
    await a.goto(process.env.SETUP_URL);
    await a.fill('#name', 'Ada Admin');
    await a.fill('#email', 'ada@school.sch.uk');
    await enrol(a, 'kettle orbit lantern');
    await a.goto(`${BASE}/admin/users`);
    await a.fill('#name', 'Tess Tech');
    await a.fill('#email', 'tess@school.sch.uk');
    await a.uncheck('#role-staff');
    await a.check('#role-technician');
    await Promise.all([a.waitForLoadState('load'), a.click('text=Create user')]);
    const link = await a.inputValue('#link');
    const ctxT = await browser.newContext(contextOptions);
    const t = await ctxT.newPage();
    await t.goto(link);
    await enrol(t, 'marble harbour window');

    // ---- the technician registers their signing key ----
    await t.goto(`${BASE}/account`);
    await t.fill('#key_label', 'IT office PC');
    await t.fill('#public_key', 'not a key');
    await submit(t, 'main button:has-text("Register key")');
    check((await t.textContent('.error-summary')).includes('Paste the public key exactly'), 'a bad key is refused with a message');
    await axeCheck(t, 'account: key with error');
    await t.fill('#public_key', process.env.PUBLIC_KEY);
    await submit(t, 'main button:has-text("Register key")');
    check((await t.textContent('#signing-keys ~ .table-wrap')).includes(process.env.PUBLIC_KEY), 'key listed on the account page');
    await axeCheck(t, 'account: signing keys');

    // ---- the register: add an asset ----
    await t.click('text=Equipment register');
    await t.waitForLoadState('load');
    await axeCheck(t, 'register: assets (empty)');
    await Promise.all([t.waitForLoadState('load'), t.click('text=Add an asset')]);
    await axeCheck(t, 'register: new asset');
    await t.fill('#tag', 'LT-100');
    await t.selectOption('#kind', 'laptop');
    await submit(t, 'main button:has-text("Save asset")');
    const errors = await t.$$eval('.error-summary a', (els) => els.map((e) => e.getAttribute('href')));
    check(errors.includes('#personal_data') && errors.includes('#storage_media'), `asset errors link to fields (${errors})`);
    await axeCheck(t, 'register: new asset with errors');
    await t.fill('#make', 'Lenovo');
    await t.fill('#model', 'ThinkPad E14');
    await t.fill('#location', 'Room 12');
    await t.fill('#storage_media', 'SN-BROWSER-1 (256 GB SSD)');
    await t.check('#personal_data');
    await submit(t, 'main button:has-text("Save asset")');
    check((await t.textContent('h1')).includes('Asset LT-100'), 'asset page after saving');
    await axeCheck(t, 'register: asset');
    const assetUrl = t.url();
    await t.goto(`${BASE}/register?q=thinkpad`);
    check((await t.textContent('tbody')).includes('LT-100'), 'search finds the asset');
    await axeCheck(t, 'register: search results');

    // ---- CSV import with bad rows ----
    await t.goto(`${BASE}/register/import`);
    await axeCheck(t, 'register: import');
    await t.setInputFiles('#file', process.env.BAD_CSV);
    await submit(t, 'main button:has-text("Import")');
    const problems = await t.$$eval('#import-problems tbody tr', (rows) => rows.map((r) => [r.cells[0].textContent, r.cells[1].textContent]));
    check(problems.length === 1 && problems[0][0] === '3' && problems[0][1].includes('Choose the kind'), `import problems listed with line numbers (${JSON.stringify(problems)})`);
    check((await t.textContent('.error-summary')).includes('Nothing was imported'), 'nothing imported');
    await axeCheck(t, 'register: import with problems');

    // ---- upload the wipe certificate ----
    await t.goto(`${BASE}/register/certificates`);
    await axeCheck(t, 'register: certificates');
    await t.setInputFiles('#certificate', process.env.CERT_FILE);
    await submit(t, 'main button:has-text("Upload certificate")');
    check((await t.textContent('#verification')).includes('Verifies.'), 'certificate verifies');
    check((await t.textContent('#cert-medium')).includes('LT-100: SN-BROWSER-1'), 'matched to the storage medium by serial');
    await axeCheck(t, 'register: certificate');

    // ---- the disposal form ----
    await t.goto(assetUrl);
    await submit(t, 'main button:has-text("Start a disposal record")');
    await axeCheck(t, 'register: new disposal record');
    await t.fill('#disposal_date', '2026-01-15');
    await t.check('#method');
    await t.fill('#receiver_name', 'Green IT Recycling Ltd');
    await t.check('#receiver_kind');
    await t.fill('#receiver_registration', 'CBDU123456');
    await t.check('#licence_checked');
    await submit(t, 'main button:has-text("Save details")');
    check((await t.textContent('.notice')).includes('Disposal record saved.'), 'disposal saved');
    await submit(t, 'main button:has-text("Complete the disposal record")');
    check((await t.textContent('.error-summary')).includes('must authorise it'), 'completion refused without authorisation');
    await axeCheck(t, 'register: disposal refused');
    const disposalUrl = t.url().replace(/\/complete$/, '');

    // ---- the admin authorises; the technician completes ----
    await a.goto(disposalUrl);
    await axeCheck(a, 'register: disposal (admin)');
    await submit(a, 'main button:has-text("Authorise this disposal")');
    check((await a.textContent('#authorised')).includes('Ada Admin'), 'authorised by the admin');
    check((await a.textContent('#complete')).includes('Only Tess'), 'four eyes: only the technician doing the disposal completes it');
    check(await a.locator('main button:has-text("Complete the disposal record")').count() === 0, 'the authorising admin has no complete button');
    await t.goto(disposalUrl);
    await submit(t, 'main button:has-text("Complete the disposal record")');
    check((await t.textContent('.notice')).includes('completed'), 'disposal completed');
    check((await t.textContent('#evidence')).includes('ERASED'), 'evidence shown');
    await axeCheck(t, 'register: completed disposal');

    // ---- the report ----
    await t.goto(`${BASE}/register/report`);
    await t.fill('#from', '2026-01-01');
    await t.fill('#to', '2026-12-31');
    await submit(t, 'main button:has-text("Show disposals")');
    check((await t.textContent('tbody')).includes('LT-100'), 'report lists the disposal');
    await axeCheck(t, 'register: disposal report');
    await t.goto(`${BASE}/register/disposals`);
    await axeCheck(t, 'register: disposal records');
  } finally {
    await browser.close();
  }
}

await runAndReport('browser register pages', main);
