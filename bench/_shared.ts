/** Pieces every benchmark shares: a server subprocess and the event batches it is fed. */

/** A `bench/server.ts` process. */
export interface ServerProcess {
  /** Its port on 127.0.0.1. */
  port: number;
  /** `http://127.0.0.1:<port>`. */
  url: string;
  /** Stops it and waits for it to exit. */
  stop(): Promise<void>;
}

/**
 * Starts `<script> <mode>` (default `bench/server.ts`) and waits for its
 * `listening <port>` line.
 */
export async function startServer(
  mode: string,
  env?: Record<string, string>,
  script: URL = new URL("./server.ts", import.meta.url),
): Promise<ServerProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", script.pathname, mode],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!/listening (\d+)/.test(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`Server ${mode} exited before listening`);
    text += value;
  }
  const port = Number(/listening (\d+)/.exec(text)![1]);
  // Keep draining stdout so the child never blocks on a full pipe.
  const drained = (async () => {
    while (!(await reader.read()).done) { /* drain */ }
  })();
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await drained;
    },
  };
}

let sequence = 0;
const COUNTRIES = Array.from({ length: 20 }, (_, i) => `C${i}`);

/**
 * JSON text of `size` events for the `bench` stream of `bench/config.json`:
 * unique ids, times within the last second, 20 countries, 5000 users.
 */
export function makeBatch(size: number): string {
  const now = Date.now();
  const events = [];
  for (let i = 0; i < size; i++) {
    sequence += 1;
    events.push({
      id: `e${sequence}`,
      ts: now - (sequence % 1000),
      country: COUNTRIES[sequence % COUNTRIES.length],
      amount: (sequence % 97) + 0.5,
      user: `u${sequence % 5000}`,
    });
  }
  return JSON.stringify(events);
}
