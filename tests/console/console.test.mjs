// Drives the Sluice web console in the system's headless Chromium with playwright-core and checks
// what a person would look at. Run by run.sh, which starts the broker and seeds the data; the
// inputs come from the environment:
//   CONSOLE_URL  the admin listener, e.g. http://127.0.0.1:9644
//   TOPIC        a topic run.sh created and produced to
//   MESSAGE      a record value produced to partition 0 of TOPIC
//   GROUP, LAG   a group with committed offsets on TOPIC and its expected total lag
//   ARTIFACTS    where screenshots go
// Prints one `PASS name` / `FAIL name: why` line per check and `console: N passed, M failed`.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const URL_BASE = env("CONSOLE_URL");
const TOPIC = env("TOPIC");
const MESSAGE = env("MESSAGE");
const GROUP = env("GROUP");
const LAG = env("LAG");
const ARTIFACTS = env("ARTIFACTS");
const STEP_MS = 15000;

const results = [];
const check = async (name, body) => {
  try {
    await body();
    results.push(true);
    console.log(`PASS ${name}`);
  } catch (e) {
    results.push(false);
    console.log(`FAIL ${name}: ${String(e && e.message ? e.message : e).split("\n")[0]}`);
  }
};

const profile = mkdtempSync(join(tmpdir(), "sluice-console-chromium-"));
let context;
try {
  // A persistent context is how playwright takes a user-data-dir: a fresh one per run.
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    timeout: 30000,
    viewport: { width: 1440, height: 900 },
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
} catch (e) {
  console.log(`FAIL chromium starts: ${String(e.message).split("\n")[0]}`);
  console.log("console: 0 passed, 1 failed");
  rmSync(profile, { recursive: true, force: true });
  process.exit(1);
}
const screenshots = [];
const shot = async (page, name) => {
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path, fullPage: false, timeout: STEP_MS });
  screenshots.push(path);
};

try {
  context.setDefaultTimeout(STEP_MS);
  const page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  // The 4xx answers the bad-input check provokes are logged by Chromium as failed loads: expected.
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) pageErrors.push(m.text());
  });

  await check("console loads with the overview", async () => {
    await page.goto(URL_BASE + "/", { timeout: STEP_MS });
    await page.locator("#page-title", { hasText: "Overview" }).waitFor();
    await page.locator("#live-text", { hasText: "live" }).waitFor();
    await page.locator("[data-testid=topic-count]").waitFor();
    // Let a few polls land so the sparkline has samples.
    await page.waitForTimeout(13000);
    await page.locator("[data-testid=sparkline] polyline").first().waitFor({ state: "attached" });
    await shot(page, "overview");
  });

  await check("overview counts topics as its lists show them, internal ones apart", async () => {
    const count = Number((await page.locator("[data-testid=topic-count]").textContent()).replace(/\D/g, ""));
    const topics = await (await fetch(`${URL_BASE}/api/topics`)).json();
    const user = topics.filter((t) => !t.internal).length;
    if (count !== user) throw new Error(`the Topics card says ${count}; there are ${user} user topics`);
    const rows = await page.locator("[data-testid=topic-row]").count();
    if (rows !== Math.min(user, 5)) throw new Error(`"Largest topics" lists ${rows} of ${user} topics`);
    // run.sh's groups committed offsets: __consumer_offsets exists, counted apart.
    await page.locator("[data-testid=topic-count-note]", { hasText: "+ 1 internal" }).waitFor();
  });

  await check("the sparkline draws its samples to the scale of its 2-minute window", async () => {
    const points = await page.locator("[data-testid=sparkline] polyline.in").getAttribute("points");
    const xs = points.trim().split(/\s+/).map((p) => Number(p.split(",")[0]));
    const [first, last] = [xs[0], xs[xs.length - 1]];
    if (Math.abs(last - 600) > 0.5) throw new Error(`the newest sample is at x=${last}, not the right edge (600)`);
    // The page has been open well under a minute: its samples fill less than half the width.
    if (!(first > 300)) throw new Error(`samples of under a minute start at x=${first} of 600`);
  });

  await check("the cluster id stays on one line", async () => {
    const id = await page.locator("#cluster-id").evaluate((e) => ({
      text: e.textContent, title: e.title,
      height: e.getBoundingClientRect().height, font: parseFloat(getComputedStyle(e).fontSize),
    }));
    if (!id.text || id.text === "…" || id.title !== id.text) throw new Error(`id ${id.text}, title ${id.title}`);
    if (id.height >= 2 * id.font) throw new Error(`it wraps: ${id.height}px high at a ${id.font}px font`);
  });

  await check("topic list shows the test topic", async () => {
    await page.goto(URL_BASE + "/#/topics");
    await page.locator(`[data-testid=topic-row][data-topic="${TOPIC}"]`).waitFor();
    await shot(page, "topics");
  });

  await check("topic detail shows partitions and configs", async () => {
    await page.locator(`[data-testid=topic-row][data-topic="${TOPIC}"] a`).first().click();
    await page.locator("#page-title", { hasText: `Topic ${TOPIC}` }).waitFor();
    await page.locator("[data-testid=partition-row]").first().waitFor();
    await page.getByText("retention.ms", { exact: true }).waitFor();
    await shot(page, "topic");
  });

  await check("message browser shows a produced message", async () => {
    await page.goto(`${URL_BASE}/#/messages?topic=${encodeURIComponent(TOPIC)}&partition=0`);
    await page.locator("[data-testid=message-row]").first().waitFor();
    await page.locator("[data-testid=messages]", { hasText: MESSAGE }).waitFor();
    // JSON values are pretty-printed and binary ones shown as hex.
    await page.locator("pre[data-encoding=json]").first().waitFor();
    await page.locator("pre[data-encoding=hex]").first().waitFor();
    await shot(page, "messages");
  });

  await check("message browser starts from an offset and pages", async () => {
    await page.selectOption("[data-testid=msg-mode]", "offset");
    await page.fill("[data-testid=msg-at]", "0");
    await page.click("[data-testid=msg-load]");
    await page.locator("[data-testid=message-row][data-offset='0']").waitFor();
    // Pages of five: the next page starts where this one ended.
    await page.selectOption("[data-testid=msg-max]", "5");
    await page.click("[data-testid=msg-load]");
    await page.locator("[data-testid=message-row][data-offset='4']").waitFor();
    // Inclusive ranges: the partition's offsets (the high watermark is the next one) and the page's.
    const first = await (await fetch(
      `${URL_BASE}/api/topics/${encodeURIComponent(TOPIC)}/messages?partition=0&offset=0&max=5`)).json();
    const range = `offsets 0 – ${first.high_watermark - 1} · showing 5 (0 – 4)`;
    await page.locator("[data-testid=msg-range]", { hasText: range }).waitFor();
    await page.click("[data-testid=msg-newer]");
    await page.locator("[data-testid=message-row][data-offset='5']").waitFor();
    await page.click("[data-testid=msg-older]");
    await page.locator("[data-testid=message-row][data-offset='0']").waitFor();
  });

  await check("consumer group shows its lag", async () => {
    await page.goto(URL_BASE + "/#/groups");
    const row = page.locator(`[data-testid=group-row][data-group="${GROUP}"]`);
    await row.waitFor();
    await row.locator("[data-testid=group-lag]", { hasText: new RegExp(`^${LAG}$`) }).waitFor();
    await row.locator("a").click();
    await page.locator("[data-testid=group-total-lag]", { hasText: new RegExp(`^${LAG}$`) }).waitFor();
    await page.locator("[data-testid=offset-row]").first().waitFor();
    await shot(page, "group");
  });

  const produced = `console-test-${Date.now()}`;
  await check("a test message produced through the form shows up", async () => {
    await page.goto(`${URL_BASE}/#/produce?topic=${encodeURIComponent(TOPIC)}`);
    await page.locator(`[data-testid=produce-topic] option[value="${TOPIC}"]`).waitFor({ state: "attached" });
    await page.selectOption("[data-testid=produce-topic]", TOPIC);
    await page.fill("[data-testid=produce-partition]", "0");
    await page.fill("[data-testid=produce-key]", "from-the-form");
    await page.fill("[data-testid=produce-value]", produced);
    await page.click("[data-testid=produce-submit]");
    await page.locator("[data-testid=produce-result] .result.ok").waitFor();
    await shot(page, "produce");
    await page.locator("[data-testid=produce-result] a").click();
    await page.locator("[data-testid=messages]", { hasText: produced }).waitFor();
  });

  await check("bad input is reported, not crashed on", async () => {
    await page.goto(`${URL_BASE}/#/messages?topic=${encodeURIComponent(TOPIC)}&partition=0`);
    await page.locator("[data-testid=message-row]").first().waitFor();
    await page.selectOption("[data-testid=msg-mode]", "offset");
    await page.fill("[data-testid=msg-at]", "999999999");
    await page.click("[data-testid=msg-load]");
    await page.locator("[data-testid=msg-error]", { hasText: "outside" }).waitFor();
  });

  await check("no script errors on any page", async () => {
    if (pageErrors.length > 0) throw new Error(pageErrors.join(" | "));
  });
} finally {
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}

for (const path of screenshots) console.log(`screenshot: ${path}`);
const passed = results.filter(Boolean).length;
const failed = results.length - passed;
console.log(`console: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
