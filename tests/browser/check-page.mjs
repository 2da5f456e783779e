// Optional browser check of the heartbeat backend's demo page through the
// proxy. Not part of `cargo test`, and CI does not need a browser.
//
// Needs Node.js, the `playwright-core` package (no bundled browsers) and a
// Chromium binary:
//
//   npm install --prefix "$TMP_DIR" playwright-core
//   NODE_PATH="$TMP_DIR/node_modules" CHROMIUM=/usr/bin/chromium \
//     node tests/browser/check-page.mjs [URL] [--idle-close SECONDS | --stay-open SECONDS] [--shots DIR]
//
// URL defaults to https://localhost:8443/ (albatross on its embedded default).
// Without a mode it checks: hello shows the backend id, a text is echoed, an
// echoed JSON text is not taken for a server message, POST /notify/USER (the
// command the page shows) reaches the page, Reconnect leaves no stale close
// code, no page errors, no horizontal overflow 360 px wide.
// --idle-close N: with pings off and idle_timeout < N, the page must show 1006.
// --stay-open N: with pings on, the page must still be open after N seconds.

import { createRequire } from "node:module";
import { execFileSync } from "node:child_process";
import path from "node:path";

const require = createRequire(path.join(process.cwd(), "noop.js"));
const { chromium } = require("playwright-core");

const args = process.argv.slice(2);
const flag = (name) => {
  const i = args.indexOf(name);
  return i < 0 ? null : args.splice(i, 2)[1];
};
const idleClose = flag("--idle-close");
const stayOpen = flag("--stay-open");
const shots = flag("--shots");
const base = args[0] || "https://localhost:8443/";

let failures = 0;
function check(ok, what) {
  console.log((ok ? "ok   " : "FAIL ") + what);
  if (!ok) failures += 1;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--ignore-certificate-errors"],
});
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1000, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  const text = (id) => page.locator("#" + id).innerText();
  const logText = () => page.locator("#log").innerText();
  const shot = async (name) => { if (shots) await page.screenshot({ path: path.join(shots, name + ".png"), fullPage: true }); };
  const opened = () => page.waitForFunction(() =>
    document.getElementById("state").textContent === "open" &&
    document.getElementById("backend").textContent !== "–", null, { timeout: 10000 });

  await page.goto(base);
  await opened();
  const backend = await text("backend");
  check(/\S/.test(backend) && backend !== "–", "hello shows the backend id: " + backend);
  check(new URL(page.url()).searchParams.get("user") === await text("user"), "the user is kept in the address bar");
  const scheme = new URL(base).protocol === "https:" ? "wss:" : "ws:";
  check((await text("url")).startsWith(scheme + "//"), "the socket uses " + scheme);

  if (idleClose) {
    await page.waitForTimeout(Number(idleClose) * 1000);
    check((await text("state")) === "closed", "closed after " + idleClose + " s");
    check((await text("close")).startsWith("1006"), "close code shown: " + await text("close"));
    await shot("idle-close");
  } else if (stayOpen) {
    await page.waitForTimeout(Number(stayOpen) * 1000);
    check((await text("state")) === "open", "still open after " + stayOpen + " s");
    check((await text("close")) === "–", "no close code shown");
    await shot("stay-open");
  } else {
    await page.fill("#text", "hello through the proxy");
    await page.click("#send");
    await page.waitForFunction(() => document.getElementById("log").textContent.includes("echo: hello through the proxy"), null, { timeout: 5000 })
      .then(() => check(true, "text echoed"), () => check(false, "text echoed"));

    await page.fill("#text", '{"type":"hello","backend":"spoofed"}');
    await page.click("#send");
    await page.waitForFunction(() => document.getElementById("log").textContent.includes('echo: {"type":"hello"'), null, { timeout: 5000 })
      .catch(() => {});
    check((await text("backend")) === backend, "an echoed JSON text does not change the backend id");

    // Each backend instance delivers to its own sockets only, and the load
    // balancer spreads requests, so a notification may need a few tries.
    const command = await text("notify");
    let delivered = 0;
    for (let i = 0; i < 4 && delivered === 0; i++) {
      delivered = JSON.parse(execFileSync("sh", ["-c", command + " -s"]).toString()).delivered;
    }
    check(delivered > 0, "POST /notify delivered (" + command + ")");
    await page.waitForFunction(() => document.getElementById("log").textContent.includes("notification: hi"), null, { timeout: 5000 })
      .then(() => check(true, "notification shown"), () => check(false, "notification shown"));
    await shot("echo-notify");

    await page.click("#reconnect");
    await opened();
    await page.waitForTimeout(500);
    check((await text("close")) === "–", "no stale close code after Reconnect");
    check((await logText()).includes("previous socket closed with code 1000"), "the old socket's close is logged");

    await page.setViewportSize({ width: 360, height: 740 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    check(overflow <= 0, "no horizontal overflow 360 px wide (" + overflow + " px)");
    await shot("narrow");
  }
  check(errors.length === 0, "no page or console errors" + (errors.length ? ": " + errors.join("; ") : ""));
} finally {
  await browser.close();
}
process.exit(failures ? 1 : 0);
