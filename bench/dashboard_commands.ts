/**
 * What one open dashboard page costs a Redis-backed server in billed Upstash commands: a real
 * server process (`src/main.ts`) with `--streams` config streams (one counter each) on
 * redis-server behind the Upstash REST bridge, a counting proxy in front of the bridge (one
 * billed command per `POST /`, one per command of a `/pipeline` or `/multi-exec` body, as
 * `tests/_upstash_proxy.ts` counts them), and headless Chromium on `/`.
 *
 * Counts `--seconds` s with no page open (the server's own polls; the sweep is off,
 * `EDGESTREAM_SWEEP_EVERY=0s`, so that its 5 s rhythm adds no noise), then `--seconds` s with one
 * page open (after 10 s for it to load and settle). The page's cost is the difference, per second,
 * with the page's requests by path and the commands by name.
 *
 * `deno task bench:dashboard-commands [--streams 1000] [--seconds 30] [--port 7843]`: redis-server
 * on that port, the bridge on the next, the proxy on the one after, the server on the fourth.
 */
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";
import { startRedisServer } from "../tools/redis_server.ts";
import { startUpstashBridge } from "../tools/upstash_bridge.ts";
import { CHROMIUM_PATH } from "../tests/_chromium.ts";
import { loadAverageText, machineInfo, writeResults } from "./_shared.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    streams: { type: "string", default: "1000" },
    seconds: { type: "string", default: "30" },
    port: { type: "string", default: "7843" },
    warmup: { type: "string", default: "30" },
  },
});
const STREAMS = Number(flags.streams);
const SECONDS = Number(flags.seconds);
const PORT = Number(flags.port);
const WARMUP = Number(flags.warmup);

/** Billed commands forwarded since the last take, by command name. */
const counted = new Map<string, number>();
function take(): { billed: number; commands: Record<string, number> } {
  const commands = Object.fromEntries([...counted].sort((a, b) => b[1] - a[1]));
  counted.clear();
  return { billed: Object.values(commands).reduce((sum, n) => sum + n, 0), commands };
}

const machine = await machineInfo();
const dir = await Deno.makeTempDir({ prefix: "edgestream-dashboard-commands-" });
const configPath = `${dir}/config.json`;
const names = Array.from({ length: STREAMS }, (_, i) => `s${String(i).padStart(4, "0")}`);
await Deno.writeTextFile(
  configPath,
  JSON.stringify({
    streams: Object.fromEntries(names.map((name) => [name, {
      counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
    }])),
  }),
);

const redis = await startRedisServer({ port: PORT });
const token = crypto.randomUUID().replaceAll("-", "");
const bridge = await startUpstashBridge({ redisUrl: redis.url, token, port: PORT + 1 });
const proxy = Deno.serve({ port: PORT + 2, hostname: "127.0.0.1", onListen() {} }, async (req) => {
  const body = await req.text();
  const path = new URL(req.url).pathname;
  const parsed = JSON.parse(body) as unknown[];
  const commands = path === "/" ? [parsed] : parsed as unknown[][];
  for (const command of commands) {
    const name = String((command as unknown[])[0]).toLowerCase();
    counted.set(name, (counted.get(name) ?? 0) + 1);
  }
  const res = await fetch(`${bridge.url}${path}`, {
    method: "POST",
    headers: req.headers,
    body,
  });
  return new Response(res.body, { status: res.status, headers: res.headers });
});
const base = `http://127.0.0.1:${PORT + 3}`;
const server = new Deno.Command(Deno.execPath(), {
  args: ["run", "--allow-net", "--allow-env", "--allow-read", "--allow-sys", "src/main.ts"],
  cwd: fileURLToPath(new URL("..", import.meta.url)),
  env: {
    PORT: String(PORT + 3),
    EDGESTREAM_CONFIG: configPath,
    EDGESTREAM_SWEEP_EVERY: "0s",
    UPSTASH_REDIS_REST_URL: `http://127.0.0.1:${PORT + 2}`,
    UPSTASH_REDIS_REST_TOKEN: token,
  },
  stdout: "null",
  stderr: "null",
}).spawn();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
try {
  for (let tries = 0;; tries++) {
    try {
      const res = await fetch(`${base}/readyz`);
      await res.body?.cancel();
      if (res.ok) break;
    } catch { /* not listening yet */ }
    if (tries > 600) throw new Error("the server did not get ready");
    await sleep(100);
  }
  // Something to draw in the 6 streams shown.
  for (const name of names.slice(0, 6)) {
    const res = await fetch(`${base}/v1/streams/${name}/events`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify([{}, {}]),
    });
    await res.body?.cancel();
  }
  // Past the start's own work (recording the config streams' definitions).
  await sleep(WARMUP * 1000);
  take();
  await sleep(SECONDS * 1000);
  const idle = take();

  // How long a read of the whole list takes here (every page of it, as the dashboard reads it).
  const listReadMs: number[] = [];
  for (let i = 0; i < 3; i++) {
    const started = performance.now();
    let cursor: string | null = null;
    do {
      const res: Response = await fetch(
        `${base}/v1/streams?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`,
      );
      cursor = (await res.json()).nextCursor ?? null;
    } while (cursor);
    listReadMs.push(performance.now() - started);
  }
  take();

  const browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    args: ["--headless", "--no-sandbox", "--disable-gpu"],
  });
  const requests = new Map<string, number>();
  /** When (ms) each read of the stream list began, while counting. */
  const listReads: number[] = [];
  let counting = false;
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on("request", (request) => {
      if (!counting) return;
      const path = new URL(request.url()).pathname.replace(/\/s\d{4}(\/|$)/, "/{stream}$1");
      requests.set(path, (requests.get(path) ?? 0) + 1);
      if (path === "/v1/streams") listReads.push(performance.now());
    });
    await page.goto(`${base}/`);
    await page.locator(`[data-live="${names[0]}"].ok`).waitFor({ timeout: 60_000 });
    await sleep(10_000);
    take();
    counting = true;
    await sleep(SECONDS * 1000);
    counting = false;
  } finally {
    await browser.close();
  }
  const open = take();
  const perSecond = (n: number) => n / SECONDS;
  const pageBilled = perSecond(open.billed) - perSecond(idle.billed);
  const results = {
    streams: STREAMS,
    seconds: SECONDS,
    idle: { billedPerSecond: perSecond(idle.billed), commands: idle.commands },
    pageOpen: { billedPerSecond: perSecond(open.billed), commands: open.commands },
    pageBilledPerSecond: pageBilled,
    pageRequests: Object.fromEntries([...requests].sort((a, b) => b[1] - a[1])),
    // The page reads the list again 2 s after a read ends (30 s with more than 6 streams): the
    // gap is that plus a read's time; null with one read or none while counting.
    listReadEveryMs: listReads.length > 1
      ? (listReads.at(-1)! - listReads[0]) / (listReads.length - 1)
      : null,
    listReadMs,
    // A shown stream read alone (`GET /v1/streams/{stream}`) is one HGETALL too.
    hgetallPerListRead:
      ((open.commands.hgetall ?? 0) - (requests.get("/v1/streams/{stream}") ?? 0)) /
      Math.max(1, requests.get("/v1/streams") ?? 0),
  };
  console.log(
    `machine load ${
      loadAverageText(machine)
    }; ${STREAMS} streams, sweep off, ${SECONDS} s each: no page ${
      perSecond(idle.billed).toFixed(1)
    } billed commands/s, one page open ${perSecond(open.billed).toFixed(1)}/s: the page ${
      pageBilled.toFixed(1)
    }/s`,
  );
  console.log(`commands with the page open: ${JSON.stringify(open.commands)}`);
  console.log(`commands without: ${JSON.stringify(idle.commands)}`);
  console.log(`the page's requests in ${SECONDS} s: ${JSON.stringify(results.pageRequests)}`);
  console.log(
    `a read of the stream list ${
      results.listReadEveryMs === null
        ? "once or never"
        : `every ${results.listReadEveryMs.toFixed(0)} ms`
    }, ${results.hgetallPerListRead.toFixed(0)} HGETALL a read; a read alone took ${
      listReadMs.map((ms) => ms.toFixed(0)).join(", ")
    } ms`,
  );
  console.log(`results: ${await writeResults("dashboard_commands", { machine, ...results })}`);
} finally {
  server.kill("SIGTERM");
  await server.status;
  await proxy.shutdown();
  await bridge.close();
  await redis.stop();
  await Deno.remove(dir, { recursive: true });
}
