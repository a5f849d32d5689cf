/**
 * `deno task dev`: runs `src/main.ts` under `deno run --watch`, watching the
 * stream config file as well as the module graph (`--watch` alone follows
 * only imported modules, so editing the config would not restart the server).
 * The config file is the one `src/main.ts` will read: `EDGESTREAM_CONFIG`, or
 * `examples/config.json`.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { ConfigError } from "../src/config/mod.ts";
import { readShutdown } from "../src/env.ts";

/**
 * Why `deno task dev` cannot watch the config file at `configPath`, or undefined when it can:
 * `deno run --watch=` splits its value on commas, with no escape, so a path holding one would
 * name files no one has and the config file would not be watched. `setting`: where the path
 * came from, for the message.
 */
export function unwatchablePath(configPath: string, setting: string): string | undefined {
  if (!configPath.includes(",")) return undefined;
  return `${setting}: deno task dev cannot watch a config file whose path holds a comma ('deno run --watch' splits its paths on commas), got '${configPath}': rename it, or serve with deno task start, which does not restart`;
}

/** Arguments of the `deno run` that serves with the config file watched. */
export function devArgs(configPath: string): string[] {
  return [
    "run",
    `--watch=${configPath}`,
    "--allow-net",
    "--allow-env",
    "--allow-read",
    // node:https reads the extra CA certificates (NODE_EXTRA_CA_CERTS) for webhooks.
    "--allow-sys",
    // File paths, not a URL's paths, which escape a space (`my%20projects/`) in a checkout's path.
    fileURLToPath(new URL("../src/main.ts", import.meta.url)),
  ];
}

/** Time (ms) past the server's stop bound before a watcher that has not exited is killed. */
const WATCHER_GRACE_MS = 2_000;

/**
 * How long (ms) after a stop signal `deno task dev` kills a watcher that has not exited: the
 * server's stop bound (`EDGESTREAM_SHUTDOWN`, as `src/env.ts` reads it, default and all) and
 * {@linkcode WATCHER_GRACE_MS}, so a stop with work in flight is never cut short by it. A value
 * the server refuses (it then never started) counts as the default.
 */
export function watcherKillAfterMs(shutdown: string | undefined): number {
  let boundMs: number;
  try {
    boundMs = readShutdown({
      get: (name) => name === "EDGESTREAM_SHUTDOWN" ? shutdown : undefined,
    });
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    boundMs = readShutdown({ get: () => undefined });
  }
  // At most 24 days (the server's bound for a timer), so within `setTimeout`'s 2^31 - 1 ms.
  return boundMs + WATCHER_GRACE_MS;
}

if (import.meta.main) {
  // Empty is not set, as src/env.ts reads it: `--watch=` with no path would watch the whole
  // working directory, restarting the server (and emptying its memory store) on any file saved.
  const named = Deno.env.get("EDGESTREAM_CONFIG");
  const configPath = named || fileURLToPath(new URL("../examples/config.json", import.meta.url));
  const problem = unwatchablePath(configPath, named ? "EDGESTREAM_CONFIG" : "The checkout's path");
  if (problem) {
    console.error(problem);
    Deno.exit(1);
  }
  const child = new Deno.Command(Deno.execPath(), { args: devArgs(configPath) }).spawn();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => {
      // SIGINT, whichever came: the watcher hands it to the server, which stops well, and then
      // exits itself. On SIGTERM it would stop the server and wait for the next file change.
      child.kill("SIGINT");
      // Only for a watcher that hangs: the server's own stop has its bound first.
      setTimeout(
        () => child.kill("SIGKILL"),
        watcherKillAfterMs(Deno.env.get("EDGESTREAM_SHUTDOWN")),
      );
    });
  }
  Deno.exit((await child.status).code);
}
