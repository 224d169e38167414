// Browser tests of the admin UI, in Debian's headless Chromium driven by playwright-core,
// against the real `eshost` binary that scripts/ui-test starts (ESHOST_URL, tokens of each
// role in ESHOST_UI_ADMIN / _WRITER / _READER). Every wait is on a condition with a deadline.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the tests through scripts/ui-test`);
  return value;
};
const BASE = env("ESHOST_URL");
const TOKENS = { admin: env("ESHOST_UI_ADMIN"), writer: env("ESHOST_UI_WRITER"), reader: env("ESHOST_UI_READER") };
const SHOTS = env("ESHOST_UI_SCREENSHOTS");
const CANDIDATE = env("ESHOST_UI_CANDIDATE");
const AXE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const WAIT = 15_000;

let browser;
const ids = {};

// The HTTP API, as a client with a token.
async function api(method, path, body, token = TOKENS.writer) {
  const response = await fetch(BASE + path, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return JSON.parse(text);
}

async function until(what, check, deadline = WAIT) {
  const end = Date.now() + deadline;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

// A signed-in page for a role; console errors (a refused script or style) fail the test.
async function signIn(role) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.problems = [];
  page.on("console", (message) => {
    if (message.type() === "error" && /Refused|Content Security Policy/.test(message.text())) page.problems.push(message.text());
  });
  page.on("pageerror", (error) => page.problems.push(String(error)));
  await page.goto(`${BASE}/ui`);
  assert.match(page.url(), /\/ui\/login\?next=/, "an unsigned visitor is sent to sign in");
  await page.fill("#token", TOKENS[role]);
  await page.click("button[type=submit]");
  await page.waitForURL(`${BASE}/ui`);
  return page;
}

async function axe(page, label) {
  await page.evaluate(AXE);
  const result = await page.evaluate(() =>
    window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } }),
  );
  const found = result.violations.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).slice(0, 3).join("; ")})`);
  assert.deepEqual(found, [], `accessibility violations on ${label}`);
}

async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: false });
}

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  // playwright-core starts Chromium with a fresh --user-data-dir of its own (a temporary
  // folder it removes), and refuses one given here.
  browser = await chromium.launch({
    executablePath: env("ESHOST_CHROMIUM"),
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
      "--disable-component-update", "--disable-sync",
    ],
  });
  // The story the pages show: an account, a customer with personal data, a causal chain.
  await api("POST", "/aggregates/bank-account/account-ui-1", { type: "Open", owner: "Ann", currency: "USD" });
  await api("POST", "/aggregates/bank-account/account-ui-1", { type: "Deposit", amount: 500 });
  await api("POST", "/aggregates/bank-account/account-ui-1", { type: "Deposit", amount: 200 });
  await api("POST", "/aggregates/customer/customer-ui-1", { type: "Register", name: "Ann Lee", email: "ann@example.com" });
  const placed = await api("POST", "/streams/order-ui-1", {
    events: [{ type: "OrderPlaced", data: { total: 42 }, metadata: { correlation_id: "corr-ui-1" } }],
  });
  const order = await api("GET", "/streams/order-ui-1");
  ids.order = { position: placed.first_position, id: order.events[0].event_id };
  const shipped = await api("POST", "/streams/shipment-ui-1", {
    events: [{ type: "ShipmentRequested", data: { order: "order-ui-1" }, metadata: { correlation_id: "corr-ui-1", causation_id: ids.order.id } }],
  });
  ids.shipment = { position: shipped.first_position };
  const customer = await api("GET", "/streams/customer-ui-1");
  ids.customer = { position: customer.events[0].position };
  await until("the projections to catch up", async () => {
    const { projections } = await api("GET", "/projections");
    return projections.every((p) => p.lag === 0);
  });
});

after(async () => {
  if (browser) await browser.close();
});

test("each role signs in; a wrong token is refused", async () => {
  for (const [role, name] of [["admin", "ada"], ["writer", "wes"], ["reader", "rey"]]) {
    const page = await signIn(role);
    const who = await page.textContent("header .who");
    assert.match(who, new RegExp(`${name} · ${role === "writer" ? "write" : role === "reader" ? "read" : "admin"}`));
    await page.context().close();
  }
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${BASE}/ui/login`);
  await axe(page, "the sign-in page");
  await page.fill("#token", "not-a-token-at-all");
  await page.click("button[type=submit]");
  assert.match(await page.textContent("[role=alert]"), /not configured/);
  const cookies = await context.cookies();
  assert.equal(cookies.filter((c) => c.name === "eshost_session").length, 0, "no session without a valid token");
  await context.close();
});

test("the session cookie is HttpOnly, SameSite=Strict and expires", async () => {
  const page = await signIn("reader");
  const [cookie] = (await page.context().cookies()).filter((c) => c.name === "eshost_session");
  assert.ok(cookie, "a session cookie");
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, "Strict");
  assert.ok(cookie.expires > Date.now() / 1000, "it expires");
  assert.equal(cookie.path, "/ui");
  await page.context().close();
});

test("browse to an event and its correlation chain", async () => {
  const page = await signIn("reader");
  await page.click("nav >> text=Streams");
  await page.fill("input[name=prefix]", "shipment-");
  await page.click("form.filters button");
  await page.click("a:text('shipment-ui-1')");
  await page.click(`a[href='/ui/events/${ids.shipment.position}']`);
  await page.waitForURL(`${BASE}/ui/events/${ids.shipment.position}`);
  assert.match(await page.textContent("main"), /corr-ui-1/);
  // The cause is the order event; its page lists the shipment as caused by it.
  await page.click(`dd >> a[href='/ui/events/${ids.order.position}']`);
  await page.waitForURL(`${BASE}/ui/events/${ids.order.position}`);
  const caused = await page.textContent("main");
  assert.match(caused, /Events caused by this one/);
  assert.ok(await page.isVisible(`table >> a[href='/ui/events/${ids.shipment.position}']`), "the shipment is listed as caused by the order");
  assert.match(await page.textContent("main"), /[0-9a-f]{64}/, "hashes are shown");
  await shot(page, "event");
  await axe(page, "an event page");
  // $all filtered by the correlation id finds both.
  await page.goto(`${BASE}/ui/all?from=1&correlation=corr-ui-1`);
  const rows = await page.$$eval("tbody tr", (trs) => trs.map((tr) => tr.textContent));
  assert.equal(rows.length, 2, rows.join("\n"));
  await axe(page, "$all");
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test("the timeline shows the state as of a version", async () => {
  const page = await signIn("reader");
  await page.click("nav >> text=Aggregates");
  await axe(page, "the aggregates page");
  await page.selectOption("select[name=type]", "bank-account");
  await page.fill("input[name=id]", "account-ui-1");
  await page.click("form.filters button");
  await page.waitForURL(`${BASE}/ui/aggregates/bank-account/account-ui-1`);
  assert.match(await page.textContent("main"), /"balance": 700/);
  await page.click("td.num >> a:text-is('2')");
  await page.waitForURL(/version=2/);
  const asOf = await page.textContent("#as-of");
  assert.match(asOf, /As of version 2/);
  assert.match(asOf, /"balance": 500/);
  assert.doesNotMatch(asOf, /"balance": 700/);
  await shot(page, "timeline");
  await axe(page, "the timeline");
  await page.context().close();
});

test("the live tail shows an event appended during the test, and resumes without a gap", async () => {
  const page = await signIn("reader");
  await page.goto(`${BASE}/ui/tail?prefix=tail-ui-`);
  await until("the tail to go live", async () => /live/.test(await page.textContent("[data-tail-state]")));
  await api("POST", "/streams/tail-ui-1", { events: [{ type: "Pinged", data: { n: 1 } }] });
  await page.waitForSelector("tbody >> text=tail-ui-1", { timeout: WAIT });
  await shot(page, "tail");
  await axe(page, "the live tail");
  await page.click("[data-tail-toggle]");
  assert.match(await page.textContent("[data-tail-state]"), /paused/);
  await api("POST", "/streams/tail-ui-2", { events: [{ type: "Pinged", data: { n: 2 } }] });
  await page.waitForTimeout(300); // a paused tail must not move; this only gives it the chance
  assert.equal(await page.locator("tbody >> text=tail-ui-2").count(), 0, "nothing arrives while paused");
  await page.click("[data-tail-toggle]");
  await page.waitForSelector("tbody >> text=tail-ui-2", { timeout: WAIT });
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test("an admin pauses and resumes a projection", async () => {
  const page = await signIn("admin");
  await page.click("nav >> text=Projections");
  await shot(page, "projections");
  await axe(page, "the projections");
  await page.click("a:text-is('balances')");
  await page.click("#status button:text-is('Pause')");
  await page.waitForSelector("#status .state-paused", { timeout: WAIT });
  assert.equal((await api("GET", "/projections/balances", undefined, TOKENS.reader)).state, "paused");
  await axe(page, "a projection");
  await page.click("#status button:text-is('Resume')");
  await page.waitForSelector("#status .state-running", { timeout: WAIT });
  assert.equal((await api("GET", "/projections/balances", undefined, TOKENS.reader)).state, "running");
  await page.click("#status a:text('Rebuild')");
  assert.match(await page.textContent(".confirm"), /build a new generation/);
  await axe(page, "the rebuild confirmation");
  assert.deepEqual(page.problems, []);
  await page.context().close();
});

test("a read token sees no admin control, and a forged admin POST is refused", async () => {
  const page = await signIn("reader");
  await page.goto(`${BASE}/ui/projections/balances`);
  assert.equal(await page.locator("button:text-is('Pause')").count(), 0);
  assert.equal(await page.locator("a:text('Rebuild')").count(), 0);
  await page.goto(`${BASE}/ui/plugins`);
  assert.equal(await page.locator("input[type=file]").count(), 0);
  await page.goto(`${BASE}/ui/integrity`);
  assert.equal(await page.locator("button:text('Verify')").count(), 0);
  assert.equal(await page.locator("input[name=subject]").count(), 0);
  // The session's own CSRF token does not make the POST allowed: the role is checked.
  const csrf = await page.getAttribute("input[name=csrf]", "value");
  const response = await page.request.post(`${BASE}/ui/projections/balances/pause`, { form: { csrf }, maxRedirects: 0 });
  assert.equal(response.status(), 403);
  const forget = await page.request.post(`${BASE}/ui/forget`, { form: { csrf, subject: "customer-ui-1" }, maxRedirects: 0 });
  assert.equal(forget.status(), 403);
  assert.equal((await api("GET", "/projections/balances", undefined, TOKENS.reader)).state, "running");
  await page.context().close();
});

test("a POST without the CSRF token is refused", async () => {
  const page = await signIn("admin");
  const none = await page.request.post(`${BASE}/ui/projections/balances/pause`, { form: {}, maxRedirects: 0 });
  assert.equal(none.status(), 403);
  const wrong = await page.request.post(`${BASE}/ui/projections/balances/pause`, { form: { csrf: "0".repeat(64) }, maxRedirects: 0 });
  assert.equal(wrong.status(), 403);
  assert.equal((await api("GET", "/projections/balances", undefined, TOKENS.reader)).state, "running");
  await page.context().close();
});

test("personal data is shown only to a token allowed to see it", async () => {
  const reader = await signIn("reader");
  await reader.goto(`${BASE}/ui/events/${ids.customer.position}`);
  const hidden = await reader.textContent("main");
  assert.match(hidden, /Hidden: your token may not see personal data/);
  assert.doesNotMatch(hidden, /Ann Lee|ann@example\.com/);
  const raw = await (await reader.request.get(`${BASE}/ui/events/${ids.customer.position}/raw`)).json();
  assert.equal(raw.personal_data, undefined);
  await reader.context().close();
  const admin = await signIn("admin");
  await admin.goto(`${BASE}/ui/events/${ids.customer.position}`);
  assert.match(await admin.textContent("main"), /Ann Lee/);
  await admin.context().close();
});

test("compare a candidate projection version with the live one", async () => {
  const page = await signIn("admin");
  await page.click("nav >> text=Compare");
  await axe(page, "the compare form");
  await page.selectOption("select[name=projection]", "statement");
  await page.setInputFiles("input[name=candidate]", CANDIDATE);
  await page.click("form.stack button");
  await page.waitForURL(/\/ui\/compare\/\d+$/);
  await page.waitForSelector("text=No row differs", { timeout: 60_000 });
  await axe(page, "a comparison");
  await page.context().close();
});

test("every other page passes the accessibility scan; screenshots of the main pages", async () => {
  const page = await signIn("admin");
  await shot(page, "overview");
  await axe(page, "the overview");
  // The README's picture (docs/ui-overview.png is a copy of it): small, the top of the page.
  await page.setViewportSize({ width: 1024, height: 600 });
  await shot(page, "readme-overview");
  await page.setViewportSize({ width: 1280, height: 900 });
  for (const [path, name] of [
    ["/ui/streams", "streams"],
    ["/ui/streams/account-ui-1", "stream"],
    ["/ui/all", "all"],
    ["/ui/plugins", "plugins"],
    ["/ui/integrity", "integrity"],
    ["/ui/forget?subject=customer-nobody", "forget"],
    ["/ui/projections/statement?q=statement&args=%7B%22account%22%3A%22account-ui-1%22%7D", "query"],
  ]) {
    await page.goto(BASE + path);
    if (["streams", "all", "plugins"].includes(name)) await shot(page, name);
    await axe(page, path);
  }
  // The overview follows the log live.
  await page.goto(`${BASE}/ui`);
  const head = Number(await page.textContent("#head"));
  await api("POST", "/streams/overview-ui-1", { events: [{ type: "Pinged" }] });
  await page.waitForSelector("#newest >> text=overview-ui-1", { timeout: WAIT });
  await until("the head to move", async () => Number(await page.textContent("#head")) > head);
  assert.deepEqual(page.problems, []);
  await page.context().close();
});
