import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { devArgs, unwatchablePath, watcherKillAfterMs } from "../../tools/dev.ts";
import { configFromEnv } from "../../src/env.ts";
import { checkoutWithSpace, startServerProcess } from "../_server_process.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));

Deno.test("devArgs() watches the config file besides the module graph", () => {
  const args = devArgs("/tmp/streams.json");
  assert.ok(args.includes("--watch=/tmp/streams.json"), args.join(" "));
  assert.ok(args.at(-1)!.endsWith("/src/main.ts"));
});

Deno.test("deno task dev restarts the server when the config file changes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "edgestream-dev-" });
  const config = `${dir}/config.json`;
  const counters = { n: { window: { tumbling: "1m" }, aggregate: "count" } };
  await Deno.writeTextFile(config, JSON.stringify({ streams: { one: { counters } } }));
  const env: Record<string, string> = {
    ...Deno.env.toObject(),
    EDGESTREAM_CONFIG: config,
    PORT: "0",
    NO_COLOR: "1",
  };
  delete env.EDGESTREAM_KEYS;
  delete env.UPSTASH_REDIS_REST_URL;
  delete env.UPSTASH_REDIS_REST_TOKEN;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["task", "--cwd", root, "dev"],
    cwd: root,
    env,
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let printed = "";
  const waiters: { pattern: RegExp; resolve: () => void }[] = [];
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      printed += text;
      for (const waiter of waiters) if (waiter.pattern.test(printed)) waiter.resolve();
    }
  };
  const drained = Promise.all([drain(child.stdout), drain(child.stderr)]);
  const seen = (pattern: RegExp) =>
    new Promise<void>((resolve, reject) => {
      if (pattern.test(printed)) return resolve();
      waiters.push({ pattern, resolve });
      setTimeout(() => reject(new Error(`no ${pattern} in:\n${printed}`)), 30_000);
    });
  try {
    await seen(/listening on http:\/\/[\s\S]*1 stream\(s\) from .*: one/);
    const reloaded = seen(/2 stream\(s\) from .*: one, two/);
    // Written again while not reloaded: a change that lands before the
    // watcher is registered (a loaded machine) is not seen, the next one is.
    for (let attempt = 0; attempt < 8; attempt++) {
      await Deno.writeTextFile(
        config,
        JSON.stringify({ streams: { one: { counters }, two: { counters } } }),
      );
      let timer: ReturnType<typeof setTimeout> | undefined;
      const done = await Promise.race([
        reloaded.then(() => true),
        new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), 3_000)),
      ]);
      clearTimeout(timer);
      if (done) break;
    }
    await reloaded;
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await drained;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Ctrl-C under deno task dev stops the server well: the SIGTERM (and at times a second SIGINT) `deno run --watch` sends after the SIGINT is the same stop, exit 0", async () => {
  const dir = await Deno.makeTempDir({ prefix: "edgestream-dev-stop-" });
  const config = `${dir}/config.json`;
  const counters = { n: { window: { tumbling: "1m" }, aggregate: "count" } };
  await Deno.writeTextFile(config, JSON.stringify({ streams: { one: { counters } } }));
  // The watcher process `deno task dev` runs; a terminal's Ctrl-C sends it SIGINT.
  const server = await startServerProcess("dev", { EDGESTREAM_CONFIG: config }, {
    denoArgs: devArgs(config),
  });
  try {
    server.signal("SIGINT");
    const status = await server.status;
    const printed = server.output();
    // The watcher hands the child a SIGTERM and a SIGINT: in either order (under load its SIGTERM
    // has come first), the first is the stop and the second within 250 ms the same stop.
    assert.match(printed, /SIG(?:INT|TERM): stopping/);
    assert.match(printed, /within 250 ms of the first signal: the same stop/);
    assert.match(printed, /stopped in \d+ ms/);
    assert.doesNotMatch(printed, /again: exiting now/);
    assert.equal(status.code, 0, printed);
  } finally {
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * `tools/dev.ts` at `script` run as `deno task dev` runs it, in `cwd`, with `vars` over the
 * machine's environment; `stop()` sends it SIGTERM, which it hands to its watcher (a SIGKILL would
 * leave the watcher running, holding the output open).
 */
function runDev(script: string, cwd: string, vars: Record<string, string>) {
  const env: Record<string, string> = {
    ...Deno.env.toObject(),
    PORT: "0",
    NO_COLOR: "1",
    ...vars,
  };
  for (const name of ["EDGESTREAM_KEYS", "UPSTASH_REDIS_REST_URL", "UPSTASH_REDIS_REST_TOKEN"]) {
    delete env[name];
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--cached-only", "--allow-env", "--allow-read", "--allow-run", script],
    cwd,
    env,
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let printed = "";
  let stopped = false;
  const drained = Promise.all([child.stdout, child.stderr].map(async (stream) => {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) printed += text;
  }));
  return {
    printed: () => printed,
    /** Waits up to 30 s for `text` in what it printed; fails naming what it printed. */
    async seen(text: string) {
      const deadline = Date.now() + 30_000;
      while (!printed.includes(text) && Date.now() < deadline) await delay(50);
      assert.ok(printed.includes(text), `no '${text}' in:\n${printed}`);
    },
    /** Sends it SIGTERM (once), and resolves with its exit status once its output ended. */
    async stop(): Promise<Deno.CommandStatus> {
      if (!stopped) child.kill("SIGTERM");
      stopped = true;
      const status = await child.status;
      await drained;
      return status;
    },
  };
}

Deno.test("deno task dev with EDGESTREAM_CONFIG set empty watches the default config file, not every file of its working directory", async () => {
  // As the task runs it, in a working directory of its own: a file saved there is no source.
  const dir = await Deno.makeTempDir({ prefix: "edgestream-dev-empty-" });
  const dev = runDev(`${root}tools/dev.ts`, dir, { EDGESTREAM_CONFIG: "" });
  try {
    await dev.seen(`1 stream(s) from ${root}examples/config.json: orders`);
    await delay(1_000); // the watcher set up
    await Deno.writeTextFile(`${dir}/notes.txt`, "not a source file");
    await delay(3_000);
    assert.doesNotMatch(dev.printed(), /File change detected/);
    assert.equal(dev.printed().match(/listening on http:/g)?.length, 1, dev.printed());
  } finally {
    await dev.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("watcherKillAfterMs() gives the server its whole EDGESTREAM_SHUTDOWN before a watcher that hangs is killed", () => {
  // Was a fixed 6 s: a server given 10 s was killed with work in flight at 6 s.
  assert.equal(watcherKillAfterMs("10s"), 12_000);
  assert.equal(watcherKillAfterMs("1m"), 62_000);
  assert.equal(watcherKillAfterMs(undefined), 6_000);
  assert.equal(watcherKillAfterMs(""), 6_000);
  // Refused by the server, which then never started: the default.
  assert.equal(watcherKillAfterMs("soon"), 6_000);
  assert.ok(watcherKillAfterMs("24d") <= 2 ** 31 - 1);
});

Deno.test("watcherKillAfterMs() takes the server's default EDGESTREAM_SHUTDOWN from src/env.ts, and refuses what it refuses", async () => {
  const config = await configFromEnv({ get: () => undefined });
  try {
    assert.equal(watcherKillAfterMs(undefined), config.shutdownMs + 2_000);
  } finally {
    await config.webhooks.close();
  }
  // The server's bounds: above 0, at most 24 days (a timer).
  assert.equal(watcherKillAfterMs("0s"), config.shutdownMs + 2_000);
  assert.equal(watcherKillAfterMs("25d"), config.shutdownMs + 2_000);
  assert.equal(watcherKillAfterMs("24d"), 24 * 86_400_000 + 2_000);
});

Deno.test("unwatchablePath() refuses a config path with a comma, which deno run --watch splits, naming the setting", () => {
  assert.equal(unwatchablePath("/tmp/streams.json", "EDGESTREAM_CONFIG"), undefined);
  assert.equal(
    unwatchablePath("/tmp/a,b/streams.json", "EDGESTREAM_CONFIG"),
    "EDGESTREAM_CONFIG: deno task dev cannot watch a config file whose path holds a comma ('deno run --watch' splits its paths on commas), got '/tmp/a,b/streams.json': rename it, or serve with deno task start, which does not restart",
  );
});

Deno.test("deno task dev with EDGESTREAM_CONFIG holding a comma stops with one line naming it, before starting a server", async () => {
  const readme = (await Deno.readTextFile(`${root}README.md`)).replace(/\s+/g, " ");
  const claim =
    "it stops with one line naming `EDGESTREAM_CONFIG` when that path holds a comma, which `deno run --watch` cannot watch";
  assert.ok(readme.includes(claim), claim);
  const dir = await Deno.makeTempDir({ prefix: "edgestream-dev-comma," });
  const config = `${dir}/config.json`;
  const counters = { n: { window: { tumbling: "1m" }, aggregate: "count" } };
  await Deno.writeTextFile(config, JSON.stringify({ streams: { one: { counters } } }));
  try {
    const env: Record<string, string> = {
      ...Deno.env.toObject(),
      EDGESTREAM_CONFIG: config,
      PORT: "0",
      NO_COLOR: "1",
    };
    delete env.EDGESTREAM_KEYS;
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--cached-only",
        "--allow-env",
        "--allow-read",
        "--allow-run",
        `${root}tools/dev.ts`,
      ],
      cwd: root,
      env,
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const output = child.output();
    // One that started a server instead is stopped (as a user would), and fails below.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const exited = await Promise.race([
      output.then(() => true),
      new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), 20_000)),
    ]);
    clearTimeout(timer);
    if (!exited) child.kill("SIGTERM");
    const { code, stdout, stderr: errors } = await output;
    const stderr = new TextDecoder().decode(errors);
    assert.ok(exited, `still running after 20 s: ${new TextDecoder().decode(stdout)}${stderr}`);
    assert.equal(code, 1, stderr);
    assert.equal(new TextDecoder().decode(stdout), "");
    assert.equal(stderr, `${unwatchablePath(config, "EDGESTREAM_CONFIG")}\n`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SIGTERM to deno task dev (a process manager's stop, `kill`) stops the server well and exits 0 once it stopped, not by a SIGKILL of its watcher", async () => {
  const dev = runDev(`${root}tools/dev.ts`, root, {});
  try {
    await dev.seen("listening on http:");
    await dev.seen("1 stream(s) from");
    const status = await dev.stop();
    // `deno run --watch` ends on SIGINT once its program stopped; on SIGTERM it stopped the
    // program and waited for a file change, until the SIGKILL meant for a watcher that hangs (137).
    assert.match(dev.printed(), /stopped in \d+ ms/);
    assert.doesNotMatch(dev.printed(), /Restarting on file change/);
    assert.equal(status.code, 0, dev.printed());
  } finally {
    await dev.stop();
  }
});

Deno.test("deno task dev in a checkout whose path has a space serves, with its default config file", async () => {
  const copy = await checkoutWithSpace();
  const dev = runDev(`${copy}/tools/dev.ts`, copy, {});
  try {
    await dev.seen(`1 stream(s) from ${copy}/examples/config.json: orders`);
  } finally {
    await dev.stop();
    await Deno.remove(copy.slice(0, copy.indexOf("/my projects/")), { recursive: true });
  }
});

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
