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

if (import.meta.main) {
  // Empty is not set, as src/env.ts reads it: `--watch=` with no path would watch the whole
  // working directory, restarting the server (and emptying its memory store) on any file saved.
  const configPath = Deno.env.get("EDGESTREAM_CONFIG") ||
    fileURLToPath(new URL("../examples/config.json", import.meta.url));
  const child = new Deno.Command(Deno.execPath(), { args: devArgs(configPath) }).spawn();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => {
      // The server stops well on the signal, but under --watch its exit only
      // waits for the next file change: end the watcher once it has stopped.
      child.kill(signal);
      setTimeout(() => child.kill("SIGKILL"), 6_000);
    });
  }
  Deno.exit((await child.status).code);
}
