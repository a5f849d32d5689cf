/**
 * Browser tests in real headless Chromium (Debian's `chromium` at
 * /usr/bin/chromium) driven by `npm:playwright-core`, which never downloads
 * a browser. Without Chromium the tests are ignored with a hint, except under
 * `CI=true`, where they fail (`.ci/run` installs it).
 *
 * @module
 */
import { type Browser, chromium } from "playwright-core";

/** Where Debian's `chromium` package installs the browser. */
/** The Chromium to drive: `EDGESTREAM_CHROMIUM` (runners differ), else Debian's. */
export const CHROMIUM_PATH = Deno.env.get("EDGESTREAM_CHROMIUM") ?? "/usr/bin/chromium";

const IN_CI = Deno.env.get("CI") === "true";

let warned = false;

/** True when the browser is installed. */
export function chromiumInstalled(): boolean {
  try {
    return Deno.statSync(CHROMIUM_PATH).isFile;
  } catch {
    return false;
  }
}

/** Options of {@linkcode browserTest}. */
export interface BrowserTestOptions {
  /** Command-line switches for Chromium besides the headless ones. @default {[]} */
  args?: readonly string[];
}

/**
 * Registers a `Deno.test` that gets a freshly launched headless Chromium,
 * closed afterwards (pages and their connections with it).
 */
export function browserTest(
  name: string,
  fn: (browser: Browser) => Promise<void>,
  options: BrowserTestOptions = {},
): void {
  const skip = !chromiumInstalled() && !IN_CI;
  if (skip && !warned) {
    warned = true;
    console.warn(
      `Chromium is not at ${CHROMIUM_PATH}, so browser tests are ignored: install it with apt-get install -y chromium`,
    );
  }
  Deno.test({
    name,
    ignore: skip,
    // Playwright keeps its own pipes and timers to the browser process until it exits.
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      if (!chromiumInstalled()) {
        throw new Error(
          `Chromium is not at ${CHROMIUM_PATH}; under CI=true browser tests must run: apt-get install -y chromium`,
        );
      }
      const browser = await chromium.launch({
        executablePath: CHROMIUM_PATH,
        args: ["--headless", "--no-sandbox", "--disable-gpu", ...(options.args ?? [])],
      });
      try {
        await fn(browser);
      } finally {
        await browser.close();
      }
    },
  });
}
