// Incidents (P11) in headless Chromium, with an axe-core check on every page (any serious or
// critical violation fails the run): first-run admin, a verified contact and a staff member who
// sends a file; the sender reports a problem on the transfer page (first with nothing filled
// in); the admin opens the incident from the list, sees the ICO clock and the evidence of
// access, records an assessment (first with errors) and closes the incident.
//
// The server runs on SQLite or PostgreSQL (server/tests/browser.rs runs it on both).
//
//   BASE_URL=... SETUP_URL=... node incidents.mjs
import { axeCheck, check, enrol, launch, runAndReport, submit } from './lib.mjs';

const BASE = process.env.BASE_URL;

const contextOptions = { bypassCSP: true, viewport: { width: 1024, height: 900 } };

async function main() {
  const browser = await launch();
  try {
    // ---- the admin, a verified contact, a staff member ----
    const ctxA = await browser.newContext({ ...contextOptions, acceptDownloads: true });
    const a = await ctxA.newPage();
    await a.goto(process.env.SETUP_URL);
    await a.fill('#name', 'Ada Admin');
    await a.fill('#email', 'ada@school.sch.uk');
    await enrol(a, 'kettle orbit lantern');
    // One admin adds and verifies the contact: the school's policy allows self-verification.
    await a.goto(`${BASE}/admin/policy`);
    await a.check('#self-verification');
    await Promise.all([a.waitForLoadState('load'), a.click('button:has-text("Save policy")')]);
    check((await a.textContent('main')).includes('Policy saved.'), 'self-verification allowed by policy');
    await a.goto(`${BASE}/contacts`);
    await a.fill('#name', 'Jo Bloggs');
    await a.fill('#organisation', 'Northshire Children\'s Services');
    await a.fill('#job_title', 'Social worker');
    await a.fill('#email', 'jo.bloggs@northshire.gov.uk');
    await a.fill('#phone', '01632 960 123');
    await submit(a);
    await a.fill('#phone_called', '01632 960 123');
    await a.check('#source-switchboard');
    await a.fill('#note', 'Rang the council switchboard; Jo read the address back.');
    await Promise.all([a.waitForLoadState('load'), a.click('button:has-text("Record verification")')]);
    check((await a.textContent('#verification-status')).includes('verified until'), 'contact verified');
    await a.goto(`${BASE}/admin/users`);
    await a.fill('#name', 'Tom Teacher');
    await a.fill('#email', 'tom@school.sch.uk');
    await Promise.all([a.waitForLoadState('load'), a.click('text=Create user')]);
    const enrolLink = await a.inputValue('#link');
    const ctxT = await browser.newContext(contextOptions);
    const t = await ctxT.newPage();
    await t.goto(enrolLink);
    await enrol(t, 'meadow copper violin');

    // ---- the staff member sends a file ----
    await t.goto(`${BASE}/transfers/new`);
    await t.setInputFiles('#files', [
      { name: 'referral.txt', mimeType: 'text/plain', buffer: Buffer.from('Referral notes.\n') },
    ]);
    await t.fill('#purpose', 'Child protection referral');
    await t.click('#send-button');
    await t.waitForSelector('#passphrase-step', { state: 'visible', timeout: 60000 });
    await t.check('#will_phone');
    await Promise.all([t.waitForLoadState('load'), t.click('button:has-text("Send the link to the recipient")')]);
    const transferUrl = t.url().replace(/\/release$/, '');

    // ---- the sender reports a problem ----
    await t.goto(transferUrl);
    await axeCheck(t, 'transfer page with "Report a problem"');
    await submit(t, 'button:has-text("Report the problem and recall the transfer")');
    const errors = await t.$$eval('.error-summary a', (els) => els.map((e) => e.getAttribute('href')));
    check(errors.includes('#kind') && errors.includes('#description'), `report errors link to fields (${errors})`);
    await axeCheck(t, 'report a problem with errors');
    await t.check('#kind');
    await t.fill('#description', 'Sent to Jo Bloggs at Northshire; it was meant for Southshire.');
    // Found out "99 hours ago" about a transfer made minutes ago: refused, the rest kept.
    await t.fill('#known_hours_ago', '99');
    await submit(t, 'button:has-text("Report the problem and recall the transfer")');
    const knownErrors = await t.$$eval('.error-summary a', (els) => els.map((e) => e.getAttribute('href')));
    check(knownErrors.length === 1 && knownErrors[0] === '#known_hours_ago', `an impossible time links to its field (${knownErrors})`);
    check((await t.inputValue('#description')).includes('meant for Southshire'), 'the description is kept');
    await axeCheck(t, 'report a problem with a refused time');
    await t.fill('#known_hours_ago', '');
    await submit(t, 'button:has-text("Report the problem and recall the transfer")');
    const notice = await t.textContent('.notice');
    check(notice.includes('Problem reported as incident 1.') && notice.includes('recalled at once'), `reported and recalled (${notice})`);
    check((await t.textContent('#ico-clock')).includes('72 h 0 min left to decide whether to report to the ICO'), 'the reporter sees the clock');
    await axeCheck(t, 'incident (reporter)');
    await t.goto(transferUrl);
    check((await t.textContent('#transfer-state')).includes('recalled'), 'the transfer is recalled');

    // ---- the admin opens the incident ----
    await a.goto(`${BASE}/`);
    await Promise.all([a.waitForLoadState('load'), a.click('nav >> text=Incidents')]);
    await axeCheck(a, 'incidents list');
    await Promise.all([a.waitForLoadState('load'), a.click('text=Incident 1')]);
    const clock = await a.textContent('#ico-clock');
    check(/\d+ h \d+ min left to decide whether to report to the ICO/.test(clock), `the ICO clock is shown (${clock})`);
    check((await a.textContent('#evidence-summary')).includes('No evidence the recipient opened the link'), 'evidence: nothing opened');
    check((await a.textContent('main')).includes('referral.txt'), 'the files are named');
    await axeCheck(a, 'incident (open, not assessed)');
    await submit(a, 'button:has-text("Save the assessment")');
    const assessErrors = await a.$$eval('.error-summary a', (els) => els.map((e) => e.getAttribute('href')));
    check(assessErrors.includes('#risk') && assessErrors.includes('#reportable'), `assessment errors link to fields (${assessErrors})`);
    await axeCheck(a, 'incident assessment with errors');
    await a.check('#risk');
    await a.fill('#risk_notes', 'The link was never opened; the files were destroyed within minutes.');
    await a.check('#reportable-no');
    await a.fill('#decision', 'Not reported to the ICO.');
    await a.fill('#reason', 'No evidence anyone opened the link; unlikely to result in a risk.');
    await a.fill('#actions', 'Recalled at once; the sender re-sent to the right address.');
    await submit(a, 'button:has-text("Save the assessment")');
    check((await a.textContent('.notice')).includes('Assessment recorded.'), 'assessment saved');
    check((await a.textContent('#assessment')).includes('Not reported to the ICO.'), 'assessment shown');
    await axeCheck(a, 'incident (assessed)');
    await submit(a, 'button:has-text("Close the incident")');
    check((await a.textContent('#incident-state')).includes('closed'), 'incident closed');
    check((await a.textContent('#ico-clock')).includes('Closed'), 'the clock says closed');
    await axeCheck(a, 'incident (closed)');
    const [pdf] = await Promise.all([a.waitForEvent('download'), a.click('text=Download the record (PDF)')]);
    check(pdf.suggestedFilename() === 'safehand-incident-1.pdf', 'the PDF record downloads');
  } finally {
    await browser.close();
  }
}

await runAndReport('incidents browser test', main);
