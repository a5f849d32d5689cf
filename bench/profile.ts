/**
 * A CPU profile of the memory path under the realistic config of `deno task bench` (the `bench`
 * stream of `bench/config.json`, API keys on, 16 closed-loop clients): `bench/server.ts main` runs
 * under `deno run --cpu-prof`, this process is the load generator. Prints the share of all samples
 * of the functions with the most self time, of the log lines (everything under LogTape's logger
 * methods: the record, redaction, formatting, the write) and of the API-key hash, then where the
 * profile is.
 *
 * `deno run --allow-all bench/profile.ts [--batch 1] [--seconds 8]`
 */
import { parseArgs } from "node:util";
import { benchServerEnv, closedLoop, startServer } from "./_shared.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: { batch: { type: "string", default: "1" }, seconds: { type: "string", default: "8" } },
});
const KEY = crypto.randomUUID().replaceAll("-", "");
const dir = await Deno.makeTempDir({ prefix: "edgestream-profile-" });
const server = await startServer("main", {
  env: benchServerEnv(KEY),
  denoArgs: ["--cpu-prof", `--cpu-prof-dir=${dir}`],
});
const result = await closedLoop(`${server.url}/v1/streams/bench/events`, {
  clients: 16,
  seconds: Number(flags.seconds),
  batch: Number(flags.batch),
  headers: { Authorization: `Bearer ${KEY}` },
});
// SIGTERM: bench/server.ts main exits through Deno.exit, so `--cpu-prof` writes its profile.
await server.stop();

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
const [file] = [...Deno.readDirSync(dir)].map((entry) => `${dir}/${entry.name}`);
const profile = JSON.parse(await Deno.readTextFile(file)) as {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
};
const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
const parents = new Map<number, number>();
for (const node of profile.nodes) {
  for (const child of node.children ?? []) parents.set(child, node.id);
}
const selfTime = new Map<number, number>();
let total = 0;
profile.samples.forEach((id, i) => {
  selfTime.set(id, (selfTime.get(id) ?? 0) + profile.timeDeltas[i]);
  total += profile.timeDeltas[i];
});
const name = (node: Node) =>
  `${node.callFrame.functionName || "(anonymous)"} ${node.callFrame.url.split("/").at(-1)}:${
    node.callFrame.lineNumber + 1
  }`;
const bySelf = new Map<string, number>();
for (const [id, time] of selfTime) {
  const key = name(nodes.get(id)!);
  bySelf.set(key, (bySelf.get(key) ?? 0) + time);
}
/** Time under frames `matches` picks (each sample counted once). */
function inclusive(matches: (node: Node) => boolean): number {
  let sum = 0;
  for (const [id, time] of selfTime) {
    for (let at: number | undefined = id; at !== undefined; at = parents.get(at)) {
      if (matches(nodes.get(at)!)) {
        sum += time;
        break;
      }
    }
  }
  return sum;
}
const share = (time: number) => `${(100 * time / total).toFixed(1)}%`;
console.log(
  `batch ${flags.batch}: ${
    Math.round(result.events / Number(flags.seconds))
  } events/s profiled, load ${Deno.loadavg().map((x) => x.toFixed(2)).join(" ")}`,
);
for (const [key, time] of [...bySelf].sort((a, b) => b[1] - a[1]).slice(0, 20)) {
  console.log(`${share(time).padStart(6)}  ${key}`);
}
const LOG_METHODS = new Set(["trace", "debug", "info", "warn", "warning", "error", "fatal"]);
// Under a LogTape logger method (the record, redaction, formatting, the write), or our sink's
// timer flush.
const logLine = inclusive((node) =>
  (node.callFrame.url.includes("@logtape") && LOG_METHODS.has(node.callFrame.functionName)) ||
  node.callFrame.url.endsWith("/src/telemetry/logging.ts")
);
const sha = inclusive((node) =>
  node.callFrame.functionName === "digest" && node.callFrame.url === ""
);
console.log(`log lines (under LogTape's logger methods): ${share(logLine)}`);
console.log(`API-key SHA-256 (crypto.subtle.digest): ${share(sha)}`);
console.log(`profile: ${file}`);
