import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { redisServerInstalled } from "../_redis.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));

/**
 * The permission flags of `deno task redis`, read from deno.json: the tool runs here with what
 * users run it with.
 */
const REDIS_FLAGS: readonly string[] = (() => {
  const words: string[] = JSON.parse(Deno.readTextFileSync(`${root}deno.json`)).tasks.redis
    .split(/\s+/);
  return words.slice(words.indexOf("run") + 1, words.indexOf("tools/dev_redis.ts"));
})();

/** Runs `tools/dev_redis.ts` as `deno task redis` does, plus `flags`, with `PORT` set. */
async function runDevRedis(port: string, flags: string[] = []) {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--cached-only", ...REDIS_FLAGS, ...flags, "tools/dev_redis.ts"],
    cwd: root,
    env: { PORT: port, NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    printed: decoder.decode(output.stdout) + decoder.decode(output.stderr),
  };
}

Deno.test({
  name:
    "deno task redis on a PORT it may not listen on (a port below 1024 for a user, one Deno's flags deny) says so in one line naming PORT, exit 1",
  // As the Redis tests: ignored without redis-server, but under CI=true.
  ignore: !redisServerInstalled() && Deno.env.get("CI") !== "true",
  async fn() {
    // The bridge listens on 127.0.0.1; denied it there, as the system denies a user port 80.
    const { code, printed } = await runDevRedis("1023", ["--deny-net=127.0.0.1:1023"]);
    assert.equal(code, 1, printed);
    const lines = printed.trim().split("\n");
    assert.equal(lines.length, 1, printed);
    assert.match(
      lines[0],
      /^Cannot start the Upstash bridge: PORT 1023 is not allowed \(.+\); set PORT to a port above 1023, or unset it for a free one$/,
    );
  },
});

Deno.test("deno task redis with a PORT that is no port number says so in one line, exit 1", async () => {
  const { code, printed } = await runDevRedis("0x1f90");
  assert.equal(code, 1, printed);
  assert.equal(
    printed.trim(),
    "Cannot start the Upstash bridge as PORT is not a port number from 0 to 65535: '0x1f90'",
  );
});

Deno.test("deno task redis that may not start redis-server (a permission its flags deny) does not blame PORT", async () => {
  const { code, printed } = await runDevRedis("0", ["--deny-run"]);
  assert.equal(code, 1, printed);
  assert.match(printed, /run access/, printed);
  assert.doesNotMatch(printed, /PORT/, printed);
});

Deno.test({
  name:
    "deno task redis stops its redis-server when its terminal closes (SIGHUP), as on Ctrl+C: none is left running",
  ignore: !redisServerInstalled() && Deno.env.get("CI") !== "true",
  async fn() {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--cached-only", ...REDIS_FLAGS, "tools/dev_redis.ts"],
      cwd: root,
      env: { PORT: "0", NO_COLOR: "1" },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    let printed = "";
    const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    while (!/Redis at redis:\/\/127\.0\.0\.1:(\d+)/.test(printed)) {
      const { value, done } = await reader.read();
      if (done) break;
      printed += value;
    }
    const port = Number(printed.match(/Redis at redis:\/\/127\.0\.0\.1:(\d+)/)?.[1]);
    assert.ok(port > 0, printed);
    child.kill("SIGHUP");
    await child.status;
    reader.releaseLock();
    await child.stderr.cancel().catch(() => {});
    // Stopped with its tool, the server refuses connections; one left running is shut down here.
    let left = false;
    for (let tries = 0; tries < 50; tries++) {
      try {
        const connection = await Deno.connect({ hostname: "127.0.0.1", port });
        left = true;
        await connection.write(new TextEncoder().encode("SHUTDOWN NOSAVE\r\n")).catch(() => 0);
        connection.close();
        await new Promise((resolve) => setTimeout(resolve, 100));
      } catch {
        break;
      }
    }
    assert.equal(left, false, "a redis-server outlived deno task redis");
  },
});

Deno.test({
  name:
    "deno task redis whose redis-server exits on its own (killed, crashed, shut down) says so in one line and exits 1 rather than serve a bridge to nothing",
  ignore: !redisServerInstalled() && Deno.env.get("CI") !== "true",
  async fn() {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--cached-only", ...REDIS_FLAGS, "tools/dev_redis.ts"],
      cwd: root,
      env: { PORT: "0", NO_COLOR: "1" },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    let printed = "";
    const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    const readAll = (async () => {
      while (true) {
        const { value, done } = await reader.read();
        if (done) return;
        printed += value;
      }
    })();
    try {
      for (let tries = 0; tries < 200 && !/Redis at redis:\/\//.test(printed); tries++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const port = Number(printed.match(/Redis at redis:\/\/127\.0\.0\.1:(\d+)/)?.[1]);
      assert.ok(port > 0, printed);
      // Ended from outside, as a kill or a crash ends it: not through the tool.
      const connection = await Deno.connect({ hostname: "127.0.0.1", port });
      await connection.write(new TextEncoder().encode("SHUTDOWN NOSAVE\r\n")).catch(() => 0);
      connection.close();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const status = await Promise.race([
        child.status,
        new Promise<undefined>((resolve) => timer = setTimeout(() => resolve(undefined), 5_000)),
      ]);
      clearTimeout(timer);
      assert.ok(
        status !== undefined,
        `still running 5 s after its redis-server exited: ${printed}`,
      );
      await readAll;
      assert.equal(status.code, 1, printed);
      const lines = printed.trim().split("\n");
      assert.match(
        lines[lines.length - 1],
        /^redis-server exited \(code 0\) while deno task redis ran, so the bridge stopped too: run deno task redis again for a fresh, empty store/,
      );
    } finally {
      try {
        child.kill("SIGTERM");
      } catch {
        // Already exited.
      }
      await child.status;
      await readAll.catch(() => {});
    }
  },
});
