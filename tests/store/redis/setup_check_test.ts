import assert from "node:assert/strict";
import { errors, Redis } from "@upstash/redis";
import { asksSetup, redisSetupWarnings } from "../../../src/store/mod.ts";
import { READY_SCRIPT, RedisStore } from "../../../src/store/redis/store.ts";
import { startRedisServer } from "../../../tools/redis_server.ts";
import { startUpstashBridge } from "../../../tools/upstash_bridge.ts";
import { redisServerInstalled, redisTest, withDirect } from "../../_redis.ts";
import { startServerProcess } from "../../_server_process.ts";
import { billedCommands, commandNames, startUpstashProxy } from "../../_upstash_proxy.ts";

function upstash(url: string, token: string): Redis {
  return new Redis({ url, token, enableTelemetry: false });
}

redisTest(
  "redisSetupWarnings() names appendonly other than yes and a maxmemory-policy other than noeviction",
  async (fixture) => {
    const redis = upstash(fixture.restUrl, fixture.restToken);
    // The test fixture runs without persistence (appendonly no, save ""), at Redis's default
    // noeviction: no snapshot either, so even a clean restart comes back empty.
    const [unsafe] = await redisSetupWarnings(redis);
    assert.match(
      unsafe,
      /^Redis has appendonly no: with no save points either \(save ''\), it keeps nothing on disk, so a redis-server restarted, even cleanly, comes back empty/,
    );
    assert.equal((await redisSetupWarnings(redis)).length, 1);
    // With RDB snapshots, what a kill loses is what came since the last one.
    await withDirect(fixture.redisUrl, (send) => send("CONFIG", "SET", "save", "3600 1"));
    const [snapshots] = await redisSetupWarnings(redis);
    assert.match(
      snapshots,
      /^Redis has appendonly no: a redis-server killed or crashed loses every event acknowledged since its last snapshot;/,
    );
    await withDirect(fixture.redisUrl, async (send) => {
      await send("CONFIG", "SET", "save", "");
      await send("CONFIG", "SET", "appendonly", "yes");
      await send("CONFIG", "SET", "maxmemory-policy", "allkeys-lru");
    });
    // The fixture's maxmemory is 0 (no limit): nothing is evicted until one is set.
    const unlimited = await redisSetupWarnings(redis);
    assert.equal(unlimited.length, 1);
    assert.equal(
      unlimited[0],
      "Redis has maxmemory-policy allkeys-lru with maxmemory 0 (no limit): nothing is evicted yet, but once maxmemory is set, at it Redis deletes keys edgestream relies on (counted data, or stream definitions, API keys and webhook endpoints, kept without a TTL) instead of refusing writes; set maxmemory-policy noeviction (see the README's Redis persistence and eviction)",
    );
    const readme = await Deno.readTextFile(new URL("../../../README.md", import.meta.url));
    const quoted = readme.match(
      /`(Redis has maxmemory-policy allkeys-lru with maxmemory 0[^`]*) …`/,
    );
    assert.ok(
      quoted && unlimited[0].startsWith(quoted[1]),
      "README quotes the maxmemory 0 warning",
    );
    await withDirect(fixture.redisUrl, (send) => send("CONFIG", "SET", "maxmemory", "1gb"));
    const warnings = await redisSetupWarnings(redis);
    assert.equal(warnings.length, 1);
    assert.match(
      warnings[0],
      /^Redis has maxmemory-policy allkeys-lru: at its maxmemory it deletes/,
    );
    await withDirect(fixture.redisUrl, async (send) => {
      await send("CONFIG", "SET", "maxmemory", "0");
      await send("CONFIG", "SET", "maxmemory-policy", "noeviction");
    });
    assert.deepEqual(await redisSetupWarnings(redis), []);
    // README: "`appendfsync` it does not judge": no warning at any of its values.
    for (const fsync of ["no", "everysec", "always"]) {
      await withDirect(fixture.redisUrl, (send) => send("CONFIG", "SET", "appendfsync", fsync));
      assert.deepEqual(await redisSetupWarnings(redis), [], `appendfsync ${fsync}`);
    }
    // An append-only file being written holds up the fixture's stop by seconds.
    await withDirect(fixture.redisUrl, (send) => send("CONFIG", "SET", "appendonly", "no"));
  },
);

redisTest(
  "the store's ping is one billed command, as PING was: one EVALSHA (its script sent once, on the first)",
  async (fixture) => {
    const proxy = await startUpstashProxy({ targetUrl: fixture.restUrl });
    try {
      const store = new RedisStore(upstash(proxy.url, fixture.restToken));
      await store.ping();
      proxy.take();
      for (let i = 0; i < 3; i++) await store.ping();
      const requests = proxy.take();
      assert.deepEqual(requests.map(commandNames), [["evalsha"], ["evalsha"], ["evalsha"]]);
      assert.equal(requests.reduce((sum, request) => sum + billedCommands(request), 0), 3);
    } finally {
      await proxy.close();
    }
  },
);

redisTest(
  'the setup check runs return "PONG" (no key, no write) by EVAL and EVALSHA, and /readyz\'s ping once, which writes es:{@ready} for a second, as the README says',
  async (fixture) => {
    const readme = (await Deno.readTextFile(new URL("../../../README.md", import.meta.url)))
      .replace(/\s+/g, " ");
    assert.ok(
      readme.includes(
        'one command as `PING` is, `redis.call("SET", KEYS[1], "1", "PX", 1000)` then `return "PONG"`, that writes `es:{@ready}` for a second,',
      ),
      "README quotes /readyz's script",
    );
    assert.ok(
      readme.includes(
        'runs the one-line Lua script `return "PONG"` (no key, no write) as the store runs every script, by text (`EVAL`) and by SHA (`EVALSHA`), and runs the `/readyz` script above once, by `EVAL` (it sets `es:{@ready}`, under `EDGESTREAM_PREFIX`, for a second)',
      ),
      "README quotes the setup check's scripts",
    );
    const proxy = await startUpstashProxy({ targetUrl: fixture.restUrl });
    try {
      await redisSetupWarnings(upstash(proxy.url, fixture.restToken));
      const scripts = proxy.take().flatMap((request) => request.commands)
        .filter(([name]) => /^eval/i.test(String(name)));
      const script = 'return "PONG"';
      const digest = await crypto.subtle.digest("SHA-1", new TextEncoder().encode(script));
      const sha = Array.from(new Uint8Array(digest), (byte) => byte.toString(16).padStart(2, "0"))
        .join("");
      // Sent together: in any order.
      const sorted = (list: unknown[][]) => list.map((command) => JSON.stringify(command)).sort();
      assert.deepEqual(
        sorted(scripts),
        sorted([
          ["EVAL", script, "0"],
          ["EVAL", READY_SCRIPT, "1", "es:{@ready}"],
          ["EVALSHA", sha, "0"],
        ]),
      );
      // Its only write: /readyz's key, for a second.
      const [keys, checked] = await withDirect(fixture.redisUrl, async (send) => [
        await send("KEYS", "*"),
        Number(await send("PTTL", "es:{@ready}")),
      ]);
      assert.deepEqual(keys, ["es:{@ready}"]);
      assert.ok(checked > 0 && checked <= 1_000, String(checked));
      await redisSetupWarnings(upstash(proxy.url, fixture.restToken), { prefix: "other" });
      assert.equal(
        await withDirect(fixture.redisUrl, (send) => send("EXISTS", "other:{@ready}")),
        1,
        "the store's prefix",
      );

      await new RedisStore(upstash(proxy.url, fixture.restToken)).ping();
      const [ready, ttl] = await withDirect(fixture.redisUrl, async (send) => [
        await send("GET", "es:{@ready}"),
        Number(await send("PTTL", "es:{@ready}")),
      ]);
      assert.equal(ready, "1");
      assert.ok(ttl > 0 && ttl <= 1_000, String(ttl));

      // Refusing writes: /readyz's ping fails, the setup check says so, not of scripting.
      await withDirect(fixture.redisUrl, async (send) => {
        await send("CONFIG", "SET", "maxmemory-policy", "noeviction");
        await send("CONFIG", "SET", "maxmemory", "1");
      });
      try {
        const warnings = await redisSetupWarnings(upstash(proxy.url, fixture.restToken));
        assert.ok(!warnings.some((text) => text.includes("Lua script")), warnings.join("\n"));
        assert.deepEqual(warnings.filter((text) => text.startsWith("Redis refuses writes")), [
          "Redis refuses writes (OOM command not allowed when used memory > 'maxmemory'.): every ingest and /readyz answers 503 until it takes them; it is at its maxmemory: raise maxmemory or free memory (keep maxmemory-policy noeviction, see the README's Redis persistence and eviction)",
        ]);
        await assert.rejects(
          new RedisStore(upstash(proxy.url, fixture.restToken)).ping(),
          /OOM command not allowed/,
        );
      } finally {
        await withDirect(fixture.redisUrl, (send) => send("CONFIG", "SET", "maxmemory", "0"));
      }
    } finally {
      await proxy.close();
    }
  },
);

redisTest(
  "a Redis that refuses scripting (an ACL user without @scripting) is named at startup, and the store is not ready",
  async (fixture) => {
    const redis = upstash(fixture.restUrl, fixture.restToken);
    const store = new RedisStore(redis);
    await store.ping();
    await withDirect(fixture.redisUrl, (send) => send("ACL", "SETUSER", "default", "-@scripting"));
    try {
      const warnings = await redisSetupWarnings(redis);
      assert.equal(
        warnings.find((text) => text.startsWith("Redis refused a Lua script")),
        "Redis refused a Lua script (NOPERM this user has no permissions to run the 'eval' command): edgestream applies every write as one, by EVALSHA (and EVAL when Redis does not have it yet), so nothing can be stored; allow both, not renamed (an ACL user needs +@scripting, or +evalsha +eval)",
      );
      await assert.rejects(store.ping(), /Redis refused ping: NOPERM/);
    } finally {
      await withDirect(fixture.redisUrl, (send) => send("ACL", "SETUSER", "default", "+@all"));
    }
    await store.ping();
    assert.ok(
      !(await redisSetupWarnings(redis)).some((text) => text.includes("Lua script")),
      "no warning where scripts run",
    );
  },
);

redisTest(
  "a Redis whose ACL user may run EVAL but not EVALSHA, or EVALSHA but not EVAL, is named at startup in one line, and the store is not ready",
  async (fixture) => {
    for (const [rule, command] of [["-evalsha", "evalsha"], ["-eval", "eval"]]) {
      const user = `edge${command}`;
      await withDirect(
        fixture.redisUrl,
        (send) => send("ACL", "SETUSER", user, "on", ">secret", "~*", "&*", "+@all", rule),
      );
      const port = new URL(fixture.redisUrl).port;
      const bridge = await startUpstashBridge({
        redisUrl: `redis://${user}:secret@127.0.0.1:${port}`,
        token: "acl-token",
      });
      try {
        const redis = upstash(bridge.url, "acl-token");
        const warnings = await redisSetupWarnings(redis);
        const scripting = warnings.filter((text) => text.startsWith("Redis refused a Lua script"));
        assert.equal(scripting.length, 1, `${rule}: ${warnings.join("\n")}`);
        assert.ok(
          !warnings.some((text) => text.startsWith("Redis refuses writes")),
          `${rule}: one warning, not a second of writes: ${warnings.join("\n")}`,
        );
        assert.ok(
          scripting[0].startsWith(
            `Redis refused a Lua script (NOPERM this user has no permissions to run the '${command}' command): `,
          ),
          scripting[0],
        );
        assert.ok(!scripting[0].includes("\n"), "one line");
        if (command === "evalsha") {
          // What the store runs for every call: ping (and every write) is refused.
          await assert.rejects(new RedisStore(redis).ping(), /Redis refused ping: NOPERM/);
        }
      } finally {
        await bridge.close();
      }
    }
  },
);

Deno.test({
  name: "a redis-server that renamed EVALSHA away is named at startup, as one that forbids it",
  ignore: !redisServerInstalled(),
  async fn() {
    const server = await startRedisServer({ extraArgs: ["--rename-command", "EVALSHA", ""] });
    try {
      const bridge = await startUpstashBridge({ redisUrl: server.url, token: "renamed-token" });
      try {
        const redis = upstash(bridge.url, "renamed-token");
        const scripting = (await redisSetupWarnings(redis)).filter((text) =>
          text.startsWith("Redis refused a Lua script")
        );
        assert.equal(scripting.length, 1);
        assert.match(scripting[0], /^Redis refused a Lua script \(ERR unknown command 'evalsha'/i);
        await assert.rejects(
          new RedisStore(redis).ping(),
          /Redis refused ping: ERR unknown command/,
        );
      } finally {
        await bridge.close();
      }
    } finally {
      await server.stop();
    }
  },
});

redisTest(
  "main.ts names a Redis that refuses EVALSHA once it listens, in one line with no stack",
  async (fixture) => {
    await withDirect(fixture.redisUrl, (send) => send("ACL", "SETUSER", "default", "-evalsha"));
    const server = await startServerProcess("setup-check-evalsha", {
      UPSTASH_REDIS_REST_URL: fixture.restUrl,
      UPSTASH_REDIS_REST_TOKEN: fixture.restToken,
      EDGESTREAM_SWEEP_EVERY: "0s",
    });
    try {
      const warned = () => server.output().includes("Redis refused a Lua script");
      for (let attempt = 0; attempt < 100 && !warned(); attempt++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const lines = server.output().split("\n");
      const at = lines.findIndex((line) => line.includes("Redis refused a Lua script"));
      assert.ok(at >= 0, server.output());
      assert.match(lines[at], /run the 'evalsha' command/);
      assert.ok(!/^\s+at /.test(lines[at + 1] ?? ""), `no stack after it:\n${server.output()}`);
    } finally {
      await server.stop();
      await withDirect(fixture.redisUrl, (send) => send("ACL", "SETUSER", "default", "+@all"));
    }
  },
);

redisTest(
  "a Redis that refuses writes (a read-only replica, an ACL user without write commands) is named in one line saying what to do",
  async (fixture) => {
    const redis = upstash(fixture.restUrl, fixture.restToken);
    const refusals = (warnings: string[]) =>
      warnings.filter((text) => text.startsWith("Redis refuses writes"));
    assert.deepEqual(refusals(await redisSetupWarnings(redis)), [], "a primary takes writes");
    // A replica of a primary that is not there: read-only, as a replica is by default.
    const unused = await withDirect(fixture.redisUrl, async (send) => {
      const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const port = listener.addr.port;
      listener.close();
      await send("CONFIG", "SET", "replica-read-only", "yes");
      await send("REPLICAOF", "127.0.0.1", String(port));
      return port;
    });
    try {
      assert.deepEqual(refusals(await redisSetupWarnings(redis)), [
        "Redis refuses writes (READONLY You can't write against a read only replica.): every ingest and /readyz answers 503 until it takes them; it is a read-only replica: point UPSTASH_REDIS_REST_URL at the primary",
      ], `replica of :${unused}`);
      await assert.rejects(new RedisStore(redis).ping(), /READONLY/);
    } finally {
      await withDirect(fixture.redisUrl, (send) => send("REPLICAOF", "NO", "ONE"));
    }
    await withDirect(fixture.redisUrl, (send) => send("ACL", "SETUSER", "default", "-@write"));
    try {
      const warnings = await redisSetupWarnings(redis);
      assert.ok(!warnings.some((text) => text.includes("Lua script")), warnings.join("\n"));
      assert.deepEqual(refusals(warnings), [
        "Redis refuses writes (ERR The user executing the script can't run this command or subcommand): every ingest and /readyz answers 503 until it takes them; allow its ACL user write commands (+@write, with +@scripting and +@read)",
      ]);
    } finally {
      await withDirect(fixture.redisUrl, (send) => send("ACL", "SETUSER", "default", "+@all"));
    }
    assert.deepEqual(refusals(await redisSetupWarnings(redis)), [], "writes again");
  },
);

redisTest(
  "main.ts on a read-only replica keeps listening, names it once in one line, and /readyz answers 503",
  async (fixture) => {
    await withDirect(fixture.redisUrl, async (send) => {
      const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const port = listener.addr.port;
      listener.close();
      await send("REPLICAOF", "127.0.0.1", String(port));
    });
    const server = await startServerProcess("setup-check-readonly", {
      UPSTASH_REDIS_REST_URL: fixture.restUrl,
      UPSTASH_REDIS_REST_TOKEN: fixture.restToken,
      EDGESTREAM_SWEEP_EVERY: "0s",
    });
    try {
      const warned = () => server.output().includes("Redis refuses writes");
      for (let attempt = 0; attempt < 100 && !warned(); attempt++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const lines = server.output().split("\n");
      const found = lines.filter((line) => line.includes("Redis refuses writes"));
      assert.equal(found.length, 1, server.output());
      assert.match(found[0], /READONLY .*point UPSTASH_REDIS_REST_URL at the primary/);
      const ready = await fetch(`${server.url}/readyz`);
      assert.equal(ready.status, 503);
      assert.match((await ready.json()).error, /READONLY/);
      await withDirect(fixture.redisUrl, (send) => send("REPLICAOF", "NO", "ONE"));
      // Redis recovered: the server that went on is ready now.
      let status = 0;
      for (let attempt = 0; attempt < 40 && status !== 200; attempt++) {
        const response = await fetch(`${server.url}/readyz`);
        status = response.status;
        await response.body?.cancel();
        if (status !== 200) await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.equal(status, 200);
    } finally {
      await server.stop();
      await withDirect(fixture.redisUrl, (send) => send("REPLICAOF", "NO", "ONE"));
    }
  },
);

Deno.test({
  name: "redisSetupWarnings() says nothing where CONFIG is refused (as on Upstash)",
  ignore: !redisServerInstalled(),
  async fn() {
    const server = await startRedisServer({ extraArgs: ["--rename-command", "CONFIG", ""] });
    try {
      const bridge = await startUpstashBridge({ redisUrl: server.url, token: "setup-check-token" });
      try {
        const redis = upstash(bridge.url, "setup-check-token");
        await assert.rejects(redis.exec(["CONFIG", "GET", "appendonly"]));
        assert.deepEqual(await redisSetupWarnings(redis), []);
      } finally {
        await bridge.close();
      }
    } finally {
      await server.stop();
    }
  },
});

/** A local port nothing listens on (taken, then let go). */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

Deno.test("redisSetupWarnings() says in one warning alone that nothing was checked where Redis cannot be reached", async () => {
  const unreachable = new Redis({
    url: `http://127.0.0.1:${closedPort()}`,
    token: "t",
    enableTelemetry: false,
    retry: false,
  });
  const warnings = await redisSetupWarnings(unreachable);
  assert.equal(warnings.length, 1, warnings.join("\n"));
  assert.match(
    warnings[0],
    /^Redis setup not checked: CONFIG GET failed \(.+\), so whether Redis keeps what it acknowledges \(appendonly, maxmemory-policy\), runs scripts and takes writes is not known; it is asked only at startup \(see the README's Redis persistence and eviction\)$/,
  );
  assert.ok(!warnings[0].includes("\n"), "one line");
  const readme = (await Deno.readTextFile(new URL("../../../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  const quoted = readme.match(/`Redis setup not checked: CONFIG GET failed \(…\)(, so [^`]*) …`/);
  assert.ok(quoted && warnings[0].includes(quoted[1]), "README quotes the warning");
});

/**
 * A client whose `exec` answers each command by `answer` (its name, and `CONFIG GET`'s setting):
 * what it returns, or the error it throws, as the client's own would be.
 */
function answering(answer: (command: string[]) => unknown): Pick<Redis, "exec"> {
  return {
    exec: (command: string[]) => Promise.resolve().then(() => answer(command)),
  } as unknown as Pick<Redis, "exec">;
}

/** The client's error for a Redis error reply `text` (as it quotes one sent back by HTTP). */
function replyError(text: string, command: string[]): Error {
  return new errors.UpstashError(`${text}, command was: ${JSON.stringify(command)}`);
}

/** What `CONFIG GET` of a Redis set up safely answers (appendonly yes, noeviction). */
function safeSetting(name: string): string[] {
  const values: Record<string, string> = {
    appendonly: "yes",
    save: "3600 1",
    "maxmemory-policy": "noeviction",
    maxmemory: "0",
  };
  return [name, values[name]];
}

Deno.test("redisSetupWarnings() keeps a script or write refusal that came back when a CONFIG GET was not answered", async () => {
  const notAnswered = () => new TypeError("fetch failed");
  // One CONFIG GET not answered while EVAL was refused by an ACL: both are said.
  const scripting = await redisSetupWarnings(answering((command) => {
    if (command[0] === "CONFIG" && command[2] === "save") throw notAnswered();
    if (command[0] === "CONFIG") return safeSetting(command[2]);
    if (command[0] === "EVAL") {
      throw replyError("NOPERM User edge has no permissions to run the 'eval' command", command);
    }
    return "PONG";
  }));
  assert.equal(scripting.length, 2, scripting.join("\n"));
  assert.equal(
    scripting[0],
    "Redis setup not checked: CONFIG GET failed (fetch failed), so whether Redis keeps what it acknowledges (appendonly, maxmemory-policy) is not known; it is asked only at startup (see the README's Redis persistence and eviction)",
  );
  assert.match(
    scripting[1],
    /^Redis refused a Lua script \(NOPERM User edge has no permissions to run the 'eval' command\): /,
  );
  // The write refused (a read-only replica) while CONFIG GET was not answered.
  const writing = await redisSetupWarnings(answering((command) => {
    if (command[0] === "CONFIG") throw notAnswered();
    if (command[0] === "EVAL" && command[2] === "1") {
      throw replyError("READONLY You can't write against a read only replica.", command);
    }
    return "PONG";
  }));
  assert.equal(writing.length, 2, writing.join("\n"));
  assert.match(writing[0], /^Redis setup not checked: CONFIG GET failed \(fetch failed\)/);
  assert.match(writing[1], /^Redis refuses writes \(READONLY You can't write against/);
  // Nothing came back: the warning alone, saying scripts and writes are not known either.
  const none = await redisSetupWarnings(answering(() => {
    throw notAnswered();
  }));
  assert.equal(none.length, 1, none.join("\n"));
  assert.match(none[0], /runs scripts and takes writes is not known/);
});

/** The pattern of the one warning of a Redis whose settings were not checked, with the cause `cause`. */
function notCheckedAlone(cause: RegExp): RegExp {
  return new RegExp(
    `^Redis setup not checked: CONFIG GET failed \\(${cause.source}.*\\), so whether Redis keeps what it acknowledges \\(appendonly, maxmemory-policy\\), runs scripts and takes writes is not known; `,
  );
}

redisTest(
  "redisSetupWarnings() says in one warning alone that nothing was checked where the REST endpoint refuses the token (HTTP 401)",
  async (fixture) => {
    const refused = new Redis({
      url: fixture.restUrl,
      token: "wrong-token",
      enableTelemetry: false,
      retry: false,
    });
    const warnings = await redisSetupWarnings(refused);
    assert.equal(warnings.length, 1, warnings.join("\n"));
    assert.match(warnings[0], notCheckedAlone(/Unauthorized/));
  },
);

Deno.test("redisSetupWarnings() says in one warning alone that nothing was checked where Redis is still loading or refuses the password (NOAUTH, WRONGPASS)", async () => {
  for (
    const reply of [
      "LOADING Redis is loading the dataset in memory",
      "NOAUTH Authentication required.",
      "WRONGPASS invalid username-password pair or user is disabled.",
    ]
  ) {
    const warnings = await redisSetupWarnings(answering((command) => {
      throw replyError(reply, command);
    }));
    assert.equal(warnings.length, 1, `${reply}: ${warnings.join("\n")}`);
    assert.match(warnings[0], notCheckedAlone(new RegExp(reply.split(" ")[0])), reply);
    assert.ok(!warnings[0].includes("command was"), "the request is not quoted");
  }
  // README names each of these cases.
  const readme = (await Deno.readTextFile(new URL("../../../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  assert.match(
    readme,
    /Where Redis does not answer it then \(unreachable at startup, still loading \(`LOADING`\), the token refused \(HTTP 401 `Unauthorized`, or `NOAUTH` or `WRONGPASS` passed on from Redis\)\)/,
  );
});

Deno.test("main.ts with Redis unreachable at startup keeps listening and says once, in one line, that the Redis setup was not checked", async () => {
  const server = await startServerProcess("setup-check-unreachable", {
    UPSTASH_REDIS_REST_URL: `http://127.0.0.1:${closedPort()}`,
    UPSTASH_REDIS_REST_TOKEN: "unreachable-token-0123456789",
    EDGESTREAM_SWEEP_EVERY: "0s",
  });
  try {
    const said = () => server.output().includes("Redis setup not checked");
    for (let attempt = 0; attempt < 100 && !said(); attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const lines = server.output().split("\n");
    const found = lines.filter((line) => line.includes("Redis setup not checked"));
    assert.equal(found.length, 1, server.output());
    assert.match(found[0], /CONFIG GET failed .*it is asked only at startup/);
    const at = lines.indexOf(found[0]);
    assert.ok(!/^\s+at /.test(lines[at + 1] ?? ""), `no stack after it:\n${server.output()}`);
    const health = await fetch(`${server.url}/healthz`);
    await health.body?.cancel();
    assert.equal(health.status, 200, "still listening");
  } finally {
    await server.stop();
  }
});

redisTest(
  "main.ts warns once it listens when its redis-server runs without appendonly yes",
  async (fixture) => {
    const server = await startServerProcess("setup-check", {
      UPSTASH_REDIS_REST_URL: fixture.restUrl,
      UPSTASH_REDIS_REST_TOKEN: fixture.restToken,
      EDGESTREAM_SWEEP_EVERY: "0s",
    });
    try {
      const warned = () => server.output().includes("Redis has appendonly no");
      for (let attempt = 0; attempt < 100 && !warned(); attempt++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.ok(warned(), server.output());
      assert.ok(!server.output().includes("maxmemory-policy"), server.output());
    } finally {
      await server.stop();
    }
  },
);

Deno.test("asksSetup() leaves out Upstash's own hosts, which refuse CONFIG, and asks any other REST URL", () => {
  for (
    const url of [
      "https://eu1-quiet-owl-12345.upstash.io",
      "https://X.UPSTASH.IO/",
      "https://upstash.io",
    ]
  ) {
    assert.equal(asksSetup(url), false, url);
  }
  for (
    const url of [
      "http://127.0.0.1:8079",
      "https://redis.example.com",
      "https://upstash.io.example.com",
    ]
  ) {
    assert.equal(asksSetup(url), true, url);
  }
});
