/**
 * The CI a user can copy (`.github/workflows/ci.yml`) runs what `.ci/run`
 * runs: the package cache from the lockfile, `deno task check`, then
 * `deno task test` under `CI=true`, with redis-server and a Chromium at hand.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";

const root = new URL("../", import.meta.url);

interface Step {
  uses?: string;
  run?: string;
  with?: Record<string, string>;
}

interface Workflow {
  on: Record<string, unknown>;
  jobs: Record<string, { "runs-on": string; env?: Record<string, string>; steps: Step[] }>;
}

Deno.test("the GitHub workflow installs Deno, redis-server and the packages, then checks and tests under CI", async () => {
  const workflow = parse(
    await Deno.readTextFile(new URL(".github/workflows/ci.yml", root)),
  ) as Workflow;
  assert.ok("push" in workflow.on && "pull_request" in workflow.on);
  const [job] = Object.values(workflow.jobs);
  assert.equal(job.env?.CI, "true");
  assert.ok(job.env?.EDGESTREAM_CHROMIUM, "the Chromium path is a setting");
  // The README's Tests section names the browser the workflow drives.
  const readme = await Deno.readTextFile(new URL("README.md", root));
  const tests = readme.slice(
    readme.indexOf("## Tests"),
    readme.indexOf("\n## ", readme.indexOf("## Tests") + 1),
  );
  assert.ok(
    tests.includes(`\`${job.env.EDGESTREAM_CHROMIUM}\``),
    `README's Tests section does not name the workflow's ${job.env.EDGESTREAM_CHROMIUM}`,
  );
  const steps = job.steps;
  const index = (find: (step: Step) => boolean, what: string) => {
    const at = steps.findIndex(find);
    assert.ok(at >= 0, `no step that ${what}`);
    return at;
  };
  const checkout = index(
    (step) => step.uses?.startsWith("actions/checkout@") ?? false,
    "checks out",
  );
  const deno = index(
    (step) => step.uses?.startsWith("denoland/setup-deno@") ?? false,
    "sets up Deno",
  );
  const redis = index(
    (step) => /apt-get install -y[^\n]*redis-server/.test(step.run ?? ""),
    "installs redis-server",
  );
  const install = index((step) => step.run === "deno install --frozen", "fills the cache");
  const check = index((step) => step.run === "deno task check", "runs the checks");
  const test = index((step) => step.run === "deno task test", "runs the tests");
  assert.ok(checkout < deno && deno < install && redis < test && install < check && check < test);
});

Deno.test("the workflow and .ci/run run tasks that deno.json defines", async () => {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));
  const script = await Deno.readTextFile(new URL(".ci/run", root));
  for (const task of ["check", "test"]) {
    assert.ok(config.tasks[task], `deno.json has no task ${task}`);
    assert.match(script, new RegExp(`deno task ${task}\\b`));
  }
  assert.match(script, /deno install --frozen/);
});

Deno.test("deno.json's deploy section runs deploy/main.ts dynamically, installing from the lockfile", async () => {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));
  assert.equal(config.deploy.runtime.type, "dynamic");
  assert.equal(config.deploy.runtime.entrypoint, "./deploy/main.ts");
  assert.equal(config.deploy.install, "deno install --frozen");
  const entry = await Deno.stat(new URL(config.deploy.runtime.entrypoint, root));
  assert.ok(entry.isFile);
  // org and app are the user's to choose (deno deploy create, or deno deploy switch).
  assert.equal(config.deploy.org, undefined);
  assert.equal(config.deploy.app, undefined);
});

/** Runs `deno test` on `file` with PATH holding only `dir` (no redis-server) and CI only as given. */
async function testRun(dir: string, file: string, vars: Record<string, string>) {
  const env: Record<string, string> = { ...Deno.env.toObject(), NO_COLOR: "1", PATH: dir };
  delete env.CI;
  Object.assign(env, vars);
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "test",
      "--cached-only",
      "--allow-all",
      "--config",
      `${fileURLToPath(root)}deno.json`,
      file,
    ],
    cwd: dir,
    env,
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code: output.code, text: decoder.decode(output.stdout) + decoder.decode(output.stderr) };
}

Deno.test("without redis-server or Chromium their tests are ignored with a message, and fail under CI=true", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/missing_test.ts`;
    await Deno.writeTextFile(
      file,
      [
        `import { redisTest } from "${new URL("_redis.ts", import.meta.url).href}";`,
        `import { browserTest } from "${new URL("_chromium.ts", import.meta.url).href}";`,
        `redisTest("needs redis", async () => {});`,
        `browserTest("needs chromium", async () => {});`,
      ].join("\n"),
    );
    const missing = { EDGESTREAM_CHROMIUM: `${dir}/chromium` };
    const local = await testRun(dir, file, missing);
    assert.equal(local.code, 0, local.text);
    assert.match(local.text, /needs redis \.\.\. ignored/);
    assert.match(local.text, /needs chromium \.\.\. ignored/);
    assert.match(local.text, /redis-server is not on PATH, so Redis tests are ignored/);
    assert.match(local.text, /Chromium is not at .*, so browser tests are ignored/);
    const ci = await testRun(dir, file, { ...missing, CI: "true" });
    assert.notEqual(ci.code, 0, ci.text);
    assert.match(ci.text, /needs redis \.\.\. FAILED/);
    assert.match(ci.text, /needs chromium \.\.\. FAILED/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Every `.ts` file under `dir` (a path relative to the repository), with its text. */
async function tsFiles(dir: string): Promise<{ path: string; text: string }[]> {
  const files: { path: string; text: string }[] = [];
  for await (const entry of Deno.readDir(new URL(`${dir}/`, root))) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) files.push(...await tsFiles(path));
    else if (entry.name.endsWith(".ts")) {
      files.push({ path, text: await Deno.readTextFile(new URL(path, root)) });
    }
  }
  return files;
}

Deno.test("every deno run, eval or test a test starts is --cached-only, so tests need no network", async () => {
  // An `args` list, or a list after `Deno.execPath()`, that starts with run, eval or test.
  const commands = [
    /\bargs:\s*\[\s*"(?:run|eval|test)"[^\]]*\]/g,
    /Deno\.execPath\(\),\s*"(?:run|eval|test)"[^\]]*\]/g,
  ];
  const unpinned: string[] = [];
  let seen = 0;
  for (const file of await tsFiles("tests")) {
    for (const pattern of commands) {
      for (const match of file.text.matchAll(pattern)) {
        seen++;
        if (!match[0].includes('"--cached-only"')) {
          unpinned.push(`${file.path}: ${match[0].replace(/\s+/g, " ")}`);
        }
      }
    }
  }
  assert.ok(seen >= 10, `found only ${seen} commands: the patterns no longer match the tests`);
  assert.deepEqual(unpinned, []);
});
