/**
 * The benchmarks (and tests and tools) find their own files from a checkout whose path has a
 * space: a file URL percent-escapes it (`with%20space`), so a URL's `pathname` names no file there.
 */
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const repository = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** What a benchmark needs of the checkout (not `bench/results/`). */
const COPIED = ["deno.json", "deno.lock", "src", "bench", "tools", "static", "examples"];

async function copyTree(from: string, to: string): Promise<void> {
  const info = await Deno.stat(from);
  if (!info.isDirectory) return await Deno.copyFile(from, to);
  await Deno.mkdir(to, { recursive: true });
  for await (const entry of Deno.readDir(from)) {
    if (from.endsWith("bench") && entry.name === "results") continue;
    await copyTree(join(from, entry.name), join(to, entry.name));
  }
}

Deno.test("bench scripts read their config, write results and start their server from a checkout whose path has a space", async () => {
  const parent = await Deno.makeTempDir({ prefix: "edgestream-bench-" });
  const root = join(parent, "with space");
  try {
    await Deno.mkdir(root);
    for (const name of COPIED) await copyTree(join(repository, name), join(root, name));
    // bench/pipeline.ts, in its smallest run: reads bench/config.json, writes its results file.
    const run = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--cached-only",
        "--allow-all",
        "bench/pipeline.ts",
        "--batches",
        "300",
        "--rounds",
        "1",
      ],
      cwd: root,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(run.stderr);
    assert.equal(run.code, 0, stderr);
    const results = [...Deno.readDirSync(join(root, "bench", "results"))].map((e) => e.name);
    assert.equal(results.length, 1, String(results));
    assert.match(results[0], /^pipeline-.*\.json$/);

    // bench/_shared.ts starts bench/server.ts by its path, on the config it names by path.
    const shared = await import(pathToFileURL(join(root, "bench", "_shared.ts")).href);
    const env = shared.benchServerEnv("k-0123456789abcdef");
    assert.ok((await Deno.stat(env.EDGESTREAM_CONFIG)).isFile, env.EDGESTREAM_CONFIG);
    for (const mode of ["pipeline", "main"]) {
      const server = await shared.startServer(mode, { env, denoArgs: ["--cached-only"] });
      try {
        const response = await fetch(`${server.url}/healthz`);
        await response.body?.cancel();
        assert.equal(response.status, 200, mode);
      } finally {
        await server.stop();
      }
    }
  } finally {
    await Deno.remove(parent, { recursive: true });
  }
});

Deno.test("no script, test or tool takes the pathname of a file URL, which keeps a space percent-escaped", async () => {
  const found: string[] = [];
  async function walk(dir: string): Promise<void> {
    for await (const entry of Deno.readDir(dir)) {
      const path = join(dir, entry.name);
      if (entry.isDirectory) {
        if (entry.name !== "results" && entry.name !== "vendor") await walk(path);
      } else if (entry.name.endsWith(".ts")) {
        const text = await Deno.readTextFile(path);
        // A file URL made from import.meta.url, then its pathname (also over a line break).
        if (/import\.meta\.url\s*\)*\s*\.pathname/.test(text)) found.push(path);
      }
    }
  }
  for (const dir of ["bench", "tests", "src", "tools", "deploy"]) await walk(join(repository, dir));
  assert.deepEqual(found, [], "use fileURLToPath() from node:url instead");
});
