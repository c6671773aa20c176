// Drives Debian's chromium, headless, through boxproxy's OAuth login for
// integration_test/browser_test.go, which starts the proxy and the Box
// stand-in, and checks what this script reports. It never downloads a
// browser: playwright-core only speaks the DevTools protocol to the
// chromium given in CHROMIUM (default /usr/bin/chromium).
//
//   node login.mjs '{"start":"http://localhost:PORT/auth/login","foreign":"http://127.0.0.1:OTHER/","api":"http://127.0.0.1:PORT/2.0/users/me"}'
//
// It prints one JSON object: the page after the login, the same page
// reloaded, and what a cross-origin page's fetch of the API got.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const args = JSON.parse(process.argv[2]);
const dataDir = mkdtempSync(join(tmpdir(), 'boxproxy-chromium-'));
let context;
try {
  context = await chromium.launchPersistentContext(dataDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    ignoreHTTPSErrors: true, // the Box stand-in may serve a self-signed certificate
    timeout: 60000,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--no-proxy-server'],
  });
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(30000);
  const seen = [];
  page.on('response', (r) => { if (r.request().isNavigationRequest()) seen.push({ url: r.url(), status: r.status() }); });

  const view = async (resp) => ({
    url: page.url(),
    status: resp ? resp.status() : 0,
    title: await page.title(),
    text: await page.locator('body').innerText(),
  });

  const login = await view(await page.goto(args.start, { waitUntil: 'load' }));
  login.navigations = seen.splice(0);
  const reload = await view(await page.reload({ waitUntil: 'load' }));

  // A page of another origin calls the API, as a malicious site would.
  await page.goto(args.foreign, { waitUntil: 'load' });
  const cross = await page.evaluate(async (api) => {
    try {
      const r = await fetch(api, { mode: 'no-cors', credentials: 'include' });
      return { type: r.type, status: r.status };
    } catch (e) {
      return { error: String(e) };
    }
  }, args.api);

  process.stdout.write(JSON.stringify({ login, reload, cross }) + '\n');
} catch (e) {
  process.stdout.write(JSON.stringify({ error: String(e && e.stack || e) }) + '\n');
  process.exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(dataDir, { recursive: true, force: true });
}
