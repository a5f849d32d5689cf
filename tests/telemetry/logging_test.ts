/** Log output: JSON lines or text, levels, and secrets that never reach a line. */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { getLogger, type LogLevel, type LogRecord, withContext } from "@logtape/logtape";
import fc from "fast-check";
import { configFromEnv } from "../../src/env.ts";
import { MemoryStore } from "../../src/store/memory/store.ts";
import { type Store, StoreUnavailableError } from "../../src/store/types.ts";
import {
  carriesContext,
  jsonLineFormatter,
  LOG_LEVELS,
  MAX_QUOTED_CHARACTERS,
  quoteInput,
  REDACTED,
  textLineFormatter,
  writeLogRecord,
} from "../../src/telemetry/logging.ts";
import { NOW, postEvents, testApp } from "../_fixtures.ts";
import { collectingLogs, jsonLines, writtenLogs } from "../_logs.ts";
import { evalAtRoot, type EvalResult } from "../_eval.ts";

const logger = getLogger(["edgestream", "test"]);

const API_KEY = 'admin-key-"quoted"/+&=?0123';
const REDIS_TOKEN = "AX1cAAIjcDE2ZmY3N2Y0ZjRkNzQ0YjI4";
const WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/** A run-time secret key as `POST /v1/keys` makes one: `sk_` and 24 random bytes in base64url. */
const RUNTIME_KEY = "sk_Xq3-vR9_kLmN0pQ2sT4uV6wY8zA1bC5d";

Deno.test("configureLogging() redacts the named secrets in plain, JSON and URL-encoded form", async () => {
  await writtenLogs((lines) => {
    logger.info(`plain ${API_KEY} and ${REDIS_TOKEN}`);
    logger.info("as a property {value}", { value: API_KEY, nested: { list: [REDIS_TOKEN] } });
    logger.info(`encoded ${encodeURIComponent(API_KEY)}`);
    const text = lines.map((line) => line.text).join("\n");
    for (
      const form of [API_KEY, JSON.stringify(API_KEY).slice(1, -1), encodeURIComponent(API_KEY)]
    ) {
      assert.ok(!text.includes(form), form);
    }
    assert.ok(!text.includes(REDIS_TOKEN));
    const [plain, property, encoded] = jsonLines(lines);
    assert.equal(plain.message, `plain ${REDACTED} and ${REDACTED}`);
    assert.equal(property.value, REDACTED);
    assert.deepEqual(property.nested, { list: [REDACTED] });
    assert.equal(encoded.message, `encoded ${REDACTED}`);
  }, { secrets: [API_KEY, REDIS_TOKEN] });
});

Deno.test("configureLogging() redacts a named secret holding a quote, a backslash and a percent escape in every form a line carries it in", async () => {
  // EDGESTREAM_KEYS takes any visible ASCII: a key may hold `"`, `\` and `%41`.
  const key = 'adm"in\\key%41-0123456789';
  const forms: Record<string, string> = {
    "written": key,
    "JSON-escaped": JSON.stringify(key),
    "JSON-escaped twice": JSON.stringify(JSON.stringify(key)),
    "in a query, as URL parsing leaves it": new URL(`http://h/p?token=${key}`).href,
    "in another query parameter": new URL(`http://h/p?x=${key}`).href,
    "in a path, as URL parsing leaves it": new URL(`http://h/${key}`).pathname,
    "URL-encoded": encodeURIComponent(key),
    "URL-encoded twice": encodeURIComponent(encodeURIComponent(key)),
    "encodeURI": encodeURI(key),
    "a parsed URL, JSON-escaped": JSON.stringify(new URL(`http://h/p?x=${key}`).href),
    "its escape decoded": 'adm"in\\keyA-0123456789',
  };
  const webhookSecret = "whsec_MfKQ9r8GK+qrTwjUPD8/LPZIo2LaLaSw=";
  const tabbed = "tab\t0123456789-token";
  for (const format of ["json", "text"] as const) {
    await writtenLogs((lines) => {
      for (const [name, form] of Object.entries(forms)) logger.info(`${name}: ${form}`);
      logger.info(`webhook secret URL-encoded: ${encodeURIComponent(webhookSecret)}`);
      // A secret with a control character (a token pasted with a tab), as JSON escapes it twice.
      logger.info(`tab JSON-escaped twice: ${JSON.stringify(JSON.stringify(tabbed))}`);
      assert.equal(lines.length, Object.keys(forms).length + 2);
      // Every form that shows any of the secret's characters, by name.
      const shown = lines.filter((line) =>
        /0123456789|qrTwj|LPZIo/.test(line.text) || !line.text.includes(REDACTED)
      ).map((line) => `${format} ${line.text.match(/([^:"]+): /)?.[1]}`);
      assert.deepEqual(shown, []);
    }, { format, secrets: [key, tabbed] });
  }
});

Deno.test("configureLogging() redacts a named secret holding a control character as a text line escapes it (\\x0b) and as a JSON line does", async () => {
  const token = "tok\v0123456789-redis\x1b";
  for (const format of ["json", "text"] as const) {
    await writtenLogs((lines) => {
      logger.info(`in the message ${token} end`);
      logger.info("as a value {value} end", { value: token });
      logger.info("as a property", { value: token });
      logger.info(`JSON-escaped ${JSON.stringify(token)} end`);
      assert.equal(lines.length, 4);
      for (const line of lines) {
        assert.doesNotMatch(line.text, /0123456789/, `${format}: ${line.text}`);
        assert.ok(line.text.includes(REDACTED), `${format}: ${line.text}`);
      }
    }, { format, secrets: [token] });
  }
});

Deno.test("configureLogging() searches a line of thousands of backslashes in linear time for named secrets holding runs of backslashes and a quote", async () => {
  // Each `\` of a secret once matched any run of backslashes and `"` any run before a quote:
  // adjacent runs split a long run every way, and one line held the event loop for seconds to
  // hours. The child process must finish well within the limit; the forms still match. Through
  // redactSecrets: the probe, the patterns and the percent-decoded copy of the line.
  const code = `
    import { configureLogging, redactSecrets } from "./src/telemetry/logging.ts";
    const secrets = [4, 5, 6, 7, 8].map((count) => "abcdefgh" + "\\\\".repeat(count) + "ijklmnop");
    secrets.push('quote\\\\\\\\\\\\\\"\\\\"0123456789');
    const quiet = () => {};
    configureLogging({ secrets, console: { debug: quiet, info: quiet, warn: quiet, error: quiet } });
    const redact = redactSecrets;
    const json = (text) => JSON.stringify(text).slice(1, -1);
    const lines = ["abcdefgh", "quote", ""].flatMap((prefix) => [
      prefix + "\\\\".repeat(4000) + "x",
      prefix + "\\\\".repeat(4000) + '"x',
      prefix + "%5C".repeat(4000) + "%22x",
    ]);
    const forms = secrets.flatMap((secret) => [
      secret,
      json(json(json(secret))),
      encodeURIComponent(encodeURIComponent(secret)),
    ]);
    console.log(JSON.stringify({
      long: lines.map((line) => redact(line) === line),
      forms: forms.map((form) => redact("got " + form + " end")),
    }));
  `;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--cached-only", code],
    cwd: fileURLToPath(new URL("../../", import.meta.url)),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).output();
  assert.equal(output.signal, null, "the search did not finish within 30 s");
  const stderr = new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 0, stderr);
  const result = JSON.parse(new TextDecoder().decode(output.stdout));
  assert.deepEqual(result.long, Array(9).fill(true));
  assert.deepEqual(result.forms, Array(18).fill(`got ${REDACTED} end`));
});

Deno.test("configureLogging() redacts a token query value holding a backslash, which a JSON line writes as two, up to the quote a quoted URL ends at", async () => {
  // A URL keeps a `\` in its query (`"` becomes %22); the value is no named secret (a wrong key).
  const url = new URL("https://app.example.com/v1/live?token=wr0ng\\k3y\\\\0123&x=1").href;
  for (const format of ["json", "text"] as const) {
    await writtenLogs((lines) => {
      logger.info(`got ${url}`);
      logger.info(`got ${JSON.stringify(url)}`);
      logger.info("got {url}", { url });
      assert.equal(lines.length, 3);
      for (const line of lines) {
        assert.doesNotMatch(line.text, /wr0ng|k3y|0123/, `${format}: ${line.text}`);
        assert.match(line.text, /token=\[REDACTED\]&x=1/, `${format}: ${line.text}`);
      }
    }, { format });
  }
});

Deno.test("configureLogging() redacts webhook secrets, bearer keys and token query values by their shape", async () => {
  await writtenLogs((lines) => {
    logger.error("failed {error}", {
      error: new Error(`signing with ${WEBHOOK_SECRET} for Bearer sk-live-123456`),
    });
    logger.info("GET {url}", {
      url: "http://h/v1/streams/s/subscribe?types=a&token=k-0123456789abcdef&x=1",
    });
    logger.info("offered {protocols}", { protocols: "edgestream, bearer.k-0123456789abcdef" });
    logger.info("GET {url}", {
      url:
        "http://h/?key=k-key-value&access_token=k-access-value&api_key=k-api-value&apikey=k-apikey",
    });
    logger.info(
      "Missing API key: send 'Authorization: Bearer <key>' or subprotocol 'bearer.<key>'",
    );
    logger.info("GET {path} 404", { path: `/v1/streams/${RUNTIME_KEY}/counters` });
    logger.warn("Redis is unavailable: {error}", {
      error: "Unauthorized: missing or invalid bearer token",
    });
    const text = lines.map((line) => line.text).join("\n");
    const secrets = [WEBHOOK_SECRET, "sk-live-123456", "k-0123456789abcdef", RUNTIME_KEY];
    secrets.push("k-key-value", "k-access-value", "k-api-value", "k-apikey");
    for (const secret of secrets) {
      assert.ok(!text.includes(secret), secret);
    }
    const [failed, url, offered, queries, hint, pasted, upstash] = jsonLines(lines);
    assert.equal(
      failed.error.message,
      `signing with whsec_${REDACTED} for Bearer ${REDACTED}`,
    );
    assert.match(failed.error.stack, /signing with whsec_\[REDACTED\]/);
    assert.equal(url.url, `http://h/v1/streams/s/subscribe?types=a&token=${REDACTED}&x=1`);
    assert.equal(offered.protocols, `edgestream, bearer.${REDACTED}`);
    assert.equal(
      queries.url,
      `http://h/?key=${REDACTED}&access_token=${REDACTED}&api_key=${REDACTED}&apikey=${REDACTED}`,
    );
    // Usage hints stay readable.
    assert.equal(
      hint.message,
      "Missing API key: send 'Authorization: Bearer <key>' or subprotocol 'bearer.<key>'",
    );
    // A run-time secret key pasted where no key belongs (a path) is found by its shape.
    assert.equal(pasted.path, `/v1/streams/sk_${REDACTED}/counters`);
    // A message about a bearer token is no token: Upstash's reply to a wrong one stays readable.
    assert.equal(upstash.error, "Unauthorized: missing or invalid bearer token");
  });
});

Deno.test("configureLogging() redacts a bearer key that begins with a word of a message about one", async () => {
  await writtenLogs((lines) => {
    for (const key of ["token-0a1b2c3d4e", "key.0a1b2c3d4e", "authz:0a1b2c3d", "token0a1b2c3d"]) {
      logger.warn("rejected {error}", { error: `Authorization: Bearer ${key} was refused` });
    }
    logger.warn("rejected {error}", { error: "send a bearer key, or a bearer token." });
    const text = lines.map((line) => line.text).join("\n");
    for (const key of ["0a1b2c3d"]) assert.ok(!text.includes(key), key);
    const replies = jsonLines(lines).map((line) => line.error);
    assert.deepEqual(replies.slice(0, 4), [
      `Authorization: Bearer ${REDACTED} was refused`,
      `Authorization: Bearer ${REDACTED} was refused`,
      `Authorization: Bearer ${REDACTED} was refused`,
      `Authorization: Bearer ${REDACTED} was refused`,
    ]);
    assert.equal(replies[4], "send a bearer key, or a bearer token.");
  });
});

Deno.test("configureLogging() redacts secrets after whitespace a line escapes, and a bearer key after a tab", async () => {
  const bearerKey = "k-0123456789abcdef";
  const shortSecret = "dev42";
  // Whitespace before a secret: a JSON line writes the first five as `\t`, `\n`, `\r`, `\u000b`,
  // `\f`, a text line's message the middle three as `\n`, `\r`, `\x0b`; the last two stay as they are.
  const gaps = ["\t", "\n", "\r", "\v", "\f", "\u00a0", "\u2028"];
  const secrets = [WEBHOOK_SECRET, RUNTIME_KEY, `Bearer ${bearerKey}`, `bearer.${bearerKey}`];
  secrets.push(shortSecret);
  const hidden = [WEBHOOK_SECRET.slice(6), RUNTIME_KEY.slice(3), bearerKey, shortSecret];
  for (const format of ["json", "text"] as const) {
    await writtenLogs((lines) => {
      for (const gap of gaps) {
        for (const secret of secrets) {
          // In the message's text, in the message as a value, and as a property the message does
          // not show (a text line writes such a string as JSON).
          logger.info(`sent${gap}${secret}`);
          logger.info("sent {value}", { value: `x${gap}${secret}` });
          logger.info("sent", { value: `x${gap}${secret}` });
        }
      }
      for (const gap of ["\t", " \t ", "\t\t"]) {
        logger.info(`Authorization: Bearer${gap}${bearerKey}`);
        logger.info("sent", { header: `Bearer${gap}${bearerKey}` });
        // A usage hint stays readable after a tab too.
        logger.info("sent", { hint: `Bearer${gap}<key>` });
      }
      assert.equal(lines.length, gaps.length * secrets.length * 3 + 9);
      for (const line of lines) {
        for (const secret of hidden) assert.ok(!line.text.includes(secret), line.text);
      }
      const hints = lines.filter((line) => line.text.includes("<key>"));
      assert.equal(hints.length, 3);
      assert.equal(
        lines.filter((line) => line.text.includes(REDACTED)).length,
        lines.length - hints.length,
      );
    }, { format, secrets: [shortSecret] });
  }
});

Deno.test("configureLogging() redacts a bearer key after any whitespace, a line break or a quote", async () => {
  const bearerKey = "k-0123456789abcdef";
  // A no-break space and other Unicode spaces, line breaks (a JSON line writes `\n`, `\r\n`), and
  // the quotes a key is written in (a JSON line writes `"` as `\"`).
  const forms = [
    "Bearer\u00a0KEY",
    "Bearer\u2003KEY",
    "Bearer\u3000KEY",
    "Bearer\u2028KEY",
    "Bearer\nKEY",
    "Bearer\r\nKEY",
    "Bearer \n KEY",
    'Bearer "KEY"',
    "Bearer 'KEY'",
    'Bearer\u00a0"KEY"',
    "authorization: 'Bearer KEY'",
    'authorization: "Bearer KEY"',
  ];
  for (const format of ["json", "text"] as const) {
    await writtenLogs((lines) => {
      for (const form of forms) {
        const text = form.replace("KEY", bearerKey);
        logger.info(text);
        logger.info("sent {value}", { value: text });
        logger.info("sent", { value: text });
      }
      // Usage hints and a message about a bearer token stay readable after such a gap too.
      logger.info('send Bearer\u00a0"<key>"');
      logger.info("rejected {error}", { error: "missing or invalid bearer\ntoken" });
      logger.info("rejected {error}", { error: 'missing bearer "token"' });
      assert.equal(lines.length, forms.length * 3 + 3);
      const secretLines = lines.slice(0, forms.length * 3);
      for (const line of secretLines) {
        assert.ok(!line.text.includes(bearerKey), `${format}: ${line.text}`);
        assert.ok(line.text.includes(REDACTED), `${format}: ${line.text}`);
      }
      for (const line of lines.slice(forms.length * 3)) {
        assert.ok(!line.text.includes(REDACTED), `${format}: ${line.text}`);
      }
    }, { format });
  }
});

Deno.test("configureLogging() drops properties named like secrets", async () => {
  await writtenLogs((lines) => {
    logger.info("endpoint {id}", {
      id: "ep_1",
      secret: "s1",
      token: "t1",
      authorization: "Bearer a1",
      password: "p1",
      apiKey: "k1",
      cookie: "c1",
      credential: "cr1",
      endpoint: { url: "https://example.com/hook", secrets: ["s2"] },
    });
    const [line] = jsonLines(lines);
    assert.deepEqual(
      Object.keys(line).filter((key) =>
        !["@timestamp", "level", "logger", "message"].includes(key)
      ),
      ["id", "endpoint"],
    );
    assert.deepEqual(line.endpoint, { url: "https://example.com/hook" });
  });
});

Deno.test("configureLogging() drops properties named like secrets inside class instances and arrays, keeping dates", async () => {
  class Client {
    url = "https://example.com/";
    token = "t-class";
  }
  await writtenLogs((lines) => {
    const at = new Date(0);
    logger.info("client", { client: new Client(), list: [{ password: "p-list", n: 1 }], at });
    const [line] = jsonLines(lines);
    assert.deepEqual(line.client, { url: "https://example.com/" });
    assert.deepEqual(line.list, [{ n: 1 }]);
    assert.equal(line.at, at.toISOString());
    assert.ok(!lines[0].text.includes("t-class") && !lines[0].text.includes("p-list"));
  });
});

Deno.test("configureLogging() writes only records at its level and above", async () => {
  for (const [index, level] of LOG_LEVELS.entries()) {
    await writtenLogs((lines) => {
      logger.trace("trace");
      logger.debug("debug");
      logger.info("info");
      logger.warn("warning");
      logger.error("error");
      logger.fatal("fatal");
      assert.deepEqual(jsonLines(lines).map((line) => line.level), LOG_LEVELS.slice(index), level);
    }, { level });
  }
});

function unavailableStore(): Store {
  const inner = new MemoryStore({ now: () => NOW });
  return new Proxy(inner, {
    get(target, property) {
      if (property === "applyBatch") {
        return () => {
          throw new StoreUnavailableError("Redis is unavailable (applyBatch): timeout");
        };
      }
      const value = Reflect.get(target, property);
      return typeof value === "function" ? value.bind(target) : value;
    },
  }) as Store;
}

Deno.test("EDGESTREAM_LOG_LEVEL decides which request lines are written", async () => {
  const expected: Record<string, number[]> = {
    debug: [200, 503],
    info: [200, 503],
    warn: [503],
    error: [],
  };
  for (const [variable, statuses] of Object.entries(expected)) {
    const config = await configFromEnv({
      get: (name) => ({ EDGESTREAM_LOG_LEVEL: variable } as Record<string, string>)[name],
    });
    await config.webhooks.close();
    const { app } = await testApp({ store: unavailableStore() });
    await writtenLogs(async (lines) => {
      await (await app.request("/healthz")).body?.cancel();
      await (await postEvents(app, [{ id: "a" }])).body?.cancel();
      assert.deepEqual(
        jsonLines(lines, "edgestream.http").map((line) => line.status),
        statuses,
        variable,
      );
    }, { level: config.logLevel });
  }
});

Deno.test("configureLogging() writes text lines with the properties the message leaves out", async () => {
  await writtenLogs((lines) => {
    logger.info("{method} {path} {status}", {
      method: "GET",
      path: "/v1/streams",
      status: 200,
      requestId: "r-1",
      stream: "my stream",
    });
    logger.error("Sweep failed: {error}", { error: new Error("boom") });
    assert.match(
      lines[0].text,
      /^\d\d:\d\d:\d\d\.\d{3} INF edgestream·test: GET \/v1\/streams 200 requestId=r-1 stream="my stream"$/,
    );
    assert.match(
      lines[1].text,
      /ERR edgestream·test: Sweep failed: Error: boom error=Error: boom\\n\s+at /,
    );
  }, { format: "text" });
});

/** A line break or a control character a terminal acts on (the tab aside). */
// deno-lint-ignore no-control-regex -- control characters are what a line must not hold
const RAW_CONTROL = /[\x00-\x08\x0a-\x1f\x7f-\x9f]/;

Deno.test("configureLogging() writes each text record as one line, with the control characters of input escaped", async () => {
  const forged = "\r\n10:41:00.012 INF edgestream·http: GET / 200";
  await writtenLogs((lines) => {
    // A value quoted in the message, a message built from input, properties and an error's stack.
    logger.warning("Ignoring {name}: {value}", { name: "cors", value: `x${forged}` });
    logger.warning(`Config value 'a${forged}' ignored`);
    logger.info("{method} {path}", {
      method: "GET",
      path: "/a\x1b[2J\x1b[31mred\x07",
      agent: "curl\x1b[31m\u0085",
    });
    logger.error("Failed", { error: new Error(`bad${forged}`) });
    assert.equal(lines.length, 4);
    for (const { text } of lines) assert.doesNotMatch(text, RAW_CONTROL, JSON.stringify(text));
    assert.match(lines[0].text, /WRN edgestream·test: Ignoring cors: x\\r\\n10:41:00\.012 INF /);
    assert.match(
      lines[1].text,
      /Config value 'a\\r\\n10:41:00\.012 INF edgestream·http: GET \/ 200'/,
    );
    assert.ok(lines[2].text.includes("GET /a\\x1b[2J\\x1b[31mred\\x07"), lines[2].text);
    assert.ok(lines[2].text.endsWith(" agent=curl\\x1b[31m\\x85"), lines[2].text);
    assert.match(lines[3].text, /error=Error: bad\\r\\n10:41:00\.012 INF .*\\n\s+at /);
  }, { format: "text" });
});

Deno.test("textLineFormatter() keeps its own colors and escapes those of input", async () => {
  const [record] = await collectingLogs((records: LogRecord[]) => {
    logger.warning("Ignoring {value}", { value: "\x1b[32mok\r\nforged", extra: "\x1b[2J" });
    return Promise.resolve(records);
  });
  const line = textLineFormatter({ colors: true })(record);
  // LogTape's color formatter: a dimmed time, the level in bold yellow, a dimmed category.
  assert.match(
    line,
    // deno-lint-ignore no-control-regex -- the formatter's own color codes
    /^\x1b\[2m\d\d:\d\d:\d\d\.\d{3}\x1b\[0m \x1b\[1m\x1b\[33mWRN\x1b\[0m \x1b\[2m/,
  );
  assert.ok(
    line.endsWith(
      "edgestream·test\x1b[0m: Ignoring \\x1b[32mok\\r\\nforged extra=\\x1b[2J\n",
    ),
    JSON.stringify(line),
  );
  assert.doesNotMatch(line.slice(0, -1), /[\r\n]/);
});

Deno.test("configureLogging() writes the message LogTape renders from any template and properties", async () => {
  // JSON lines fill plain `{name}` templates themselves (split once, not parsed per record): the
  // message must stay what LogTape's own parse gives, with values a dropped secret held redacted.
  const part = fc.tuple(
    fc.stringMatching(/^[ :{}xyz]{0,4}$/),
    fc.constantFrom("a", "b1", "user_id", "token", "missing", "x.y", " a ", "0a", ""),
  );
  const properties = fc.record({
    a: fc.oneof(fc.stringMatching(/^[a-z0-9]{0,6}$/), fc.integer()),
    b1: fc.stringMatching(/^[a-z0-9]{0,6}$/),
    user_id: fc.integer(),
    token: fc.stringMatching(/^[a-z0-9]{1,6}$/),
  }, { requiredKeys: [] });
  const samples = fc.sample(
    fc.tuple(fc.array(part, { maxLength: 4 }), fc.stringMatching(/^[ :xyz]{0,3}$/), properties),
    { numRuns: 300, seed: 14 },
  );
  for (const [parts, tail, props] of samples) {
    const template = parts.map(([text, name]) => `${text}{${name}}`).join("") + tail;
    const [record] = await collectingLogs((records: LogRecord[]) => {
      logger.info(template, { ...props });
      return Promise.resolve(records);
    });
    const dropped: unknown[] = "token" in props ? [props.token] : [];
    const expected = record.message.map((value, i) =>
      i % 2 === 0 ? String(value) : dropped.includes(value) ? REDACTED : String(value)
    ).join("");
    await writtenLogs((lines) => {
      logger.info(template, { ...props });
      assert.equal(jsonLines(lines)[0].message, expected, `template ${JSON.stringify(template)}`);
    });
  }
});

Deno.test("configureLogging() keeps a line whose property is circular", async () => {
  await writtenLogs((lines) => {
    const loop: Record<string, unknown> = {};
    loop.self = loop;
    logger.info("loop {name}", { name: "x", loop });
    const [line] = jsonLines(lines);
    assert.equal(line.message, "loop x");
    assert.equal(line.loop, undefined);
  });
});

/** Runs `code` with `deno eval` at the repository root; under a pseudo-terminal when `terminal`. */
async function evalOutput(code: string, terminal: boolean, color = false): Promise<string> {
  const root = fileURLToPath(new URL("../../", import.meta.url));
  const deno = [Deno.execPath(), "eval", "--cached-only", code];
  const quoted = deno.map((part) => `'${part.replaceAll("'", `'"'"'`)}'`).join(" ");
  const [command, args] = terminal
    ? ["script", ["-qec", quoted, "/dev/null"]]
    : [deno[0], deno.slice(1)];
  // The environment as it is (DENO_DIR, certificates) but for NO_COLOR, which CI sets itself.
  const { NO_COLOR: _, ...env } = Deno.env.toObject();
  const output = await new Deno.Command(command, {
    args,
    cwd: root,
    clearEnv: true,
    env: color ? env : { ...env, NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  assert.equal(output.code, 0, decoder.decode(output.stderr));
  return decoder.decode(output.stdout).replaceAll("\r\n", "\n");
}

const HAS_SCRIPT = (() => {
  try {
    return new Deno.Command("script", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
})();

Deno.test({
  name: "configureLogging() writes JSON lines when stdout is not a terminal and text when it is",
  // `script` (util-linux) gives the child a terminal; CI images have it.
  ignore: !HAS_SCRIPT && Deno.env.get("CI") !== "true",
  async fn() {
    const code = [
      'import { getLogger } from "@logtape/logtape";',
      'import { configureLogging } from "./src/telemetry/logging.ts";',
      "configureLogging();",
      'getLogger(["edgestream"]).info("hello {name}", { name: "x", n: 1 });',
    ].join("\n");
    const piped = await evalOutput(code, false);
    const line = JSON.parse(piped);
    assert.deepEqual([line.level, line.message, line.n], ["info", "hello x", 1]);
    const terminal = await evalOutput(code, true);
    assert.match(terminal, /^\d\d:\d\d:\d\d\.\d{3} INF edgestream: hello x n=1\n$/);
    // Colored unless NO_COLOR is set: the same line with ANSI escapes.
    const colored = await evalOutput(code, true, true);
    const escape = String.fromCharCode(0x1b);
    assert.ok(colored.includes(`${escape}[`), colored);
    assert.match(
      colored.replaceAll(new RegExp(`${escape}\\[[0-9;]*m`, "g"), ""),
      /^\d\d:\d\d:\d\d\.\d{3} INF edgestream: hello x n=1\n$/,
    );
  },
});

/** Runs `code` with `deno eval` at the repository root, stdout and stderr piped. */
function evalRun(code: string, vars: Record<string, string> = {}): Promise<EvalResult> {
  return evalAtRoot(code, { vars });
}

/** The start of a child process's script: JSON lines configured, `logger` the edgestream one. */
const JSON_LOGGER = [
  'import { getLogger } from "@logtape/logtape";',
  'import { configureLogging } from "./src/telemetry/logging.ts";',
  'configureLogging({ format: "json" });',
  'const logger = getLogger(["edgestream"]);',
];

const LOG_2000 = [
  ...JSON_LOGGER,
  'for (let i = 0; i < 2000; i++) logger.info("line {i}", { i });',
].join("\n");

function numbersLogged(stdout: string): number[] {
  return stdout.trimEnd().split("\n").map((line) => JSON.parse(line).i);
}

Deno.test("configureLogging() writes every waiting line when the process exits with Deno.exit", async () => {
  const run = await evalRun(`${LOG_2000}\nDeno.exit(0);`);
  assert.equal(run.code, 0, run.stderr);
  assert.deepEqual(numbersLogged(run.stdout), Array.from({ length: 2000 }, (_, i) => i));
});

Deno.test("configureLogging() writes lines of multi-byte characters and lines longer than its buffer whole", async () => {
  // Lines wait as UTF-8 in a 64 KiB buffer: characters of 2 to 4 bytes fall across its end, and
  // one line is longer than the buffer.
  const code = [
    ...JSON_LOGGER,
    'for (let i = 0; i < 3000; i++) logger.info("line {i} {text}", { i, text: "ü€😀".repeat(i % 7) });',
    'logger.info("long {i} {text}", { i: 3000, text: "€".repeat(100_000) });',
    "Deno.exit(0);",
  ].join("\n");
  const run = await evalRun(code);
  assert.equal(run.code, 0, run.stderr);
  const lines = run.stdout.trimEnd().split("\n").map((line) => JSON.parse(line));
  assert.deepEqual(lines.map((line) => line.i), Array.from({ length: 3001 }, (_, i) => i));
  assert.deepEqual(
    lines.map((line) => line.text),
    [...Array.from({ length: 3000 }, (_, i) => "ü€😀".repeat(i % 7)), "€".repeat(100_000)],
  );
});

Deno.test("configureLogging() writes whole lines only: another writer to stdout never lands inside one", async () => {
  // 70 lines of ~1 KB pass the 64 KiB buffer: the line that does not fit must not be written in
  // part, its rest waiting for the next flush while something else writes to stdout.
  const code = [
    ...JSON_LOGGER,
    'for (let i = 0; i < 70; i++) logger.info("line {i} {pad}", { i, pad: "x".repeat(1000) });',
    'Deno.stdout.writeSync(new TextEncoder().encode("OTHER\\n"));',
    "await new Promise((resolve) => setTimeout(resolve, 100));",
  ].join("\n");
  const run = await evalRun(code);
  assert.equal(run.code, 0, run.stderr);
  const lines = run.stdout.trimEnd().split("\n");
  assert.deepEqual(
    lines.filter((line) => line !== "OTHER").map((line) => JSON.parse(line).i),
    Array.from({ length: 70 }, (_, i) => i),
  );
  assert.equal(lines.filter((line) => line === "OTHER").length, 1);
});

Deno.test("configureLogging() writes every waiting line before an uncaught error ends the process", async () => {
  const run = await evalRun(`${LOG_2000}\nsetTimeout(() => { throw new Error("boom"); }, 0);`);
  assert.equal(run.code, 1);
  assert.match(run.stderr, /boom/);
  assert.deepEqual(numbersLogged(run.stdout), Array.from({ length: 2000 }, (_, i) => i));
});

Deno.test("configureLogging() writes a waiting line within a short time while the process runs", async () => {
  const code = [
    'import { getLogger } from "@logtape/logtape";',
    'import { configureLogging } from "./src/telemetry/logging.ts";',
    'configureLogging({ format: "json" });',
    'getLogger(["edgestream"]).info("first");',
    // The process stays alive, busy with nothing: only the flush timer writes the line.
    "setInterval(() => {}, 1000);",
  ].join("\n");
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--cached-only", code],
    cwd: fileURLToPath(new URL("../../", import.meta.url)),
    env: { ...Deno.env.toObject(), NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    // Not a timing assertion: a line that is never written would wait forever.
    const never = new Promise<never>((_, reject) =>
      timer = setTimeout(() => reject(new Error("No line within 20 s")), 20_000)
    );
    const { value } = await Promise.race([reader.read(), never]);
    assert.equal(JSON.parse(value!).message, "first");
  } finally {
    clearTimeout(timer);
    child.kill("SIGKILL");
    await reader.cancel();
    await child.status;
  }
});

Deno.test("configureLogging() writes each line with its own console call on Deno Deploy", async () => {
  const code = [
    'import { getLogger } from "@logtape/logtape";',
    'import { configureLogging } from "./src/telemetry/logging.ts";',
    // Marks what goes through the console, as Deploy's log viewer sees it.
    "const info = console.info;",
    'console.info = (text) => info("console: " + text);',
    'configureLogging({ format: "json" });',
    'getLogger(["edgestream"]).info("one");',
    'getLogger(["edgestream"]).info("two");',
  ].join("\n");
  const deployed = await evalRun(code, { DENO_DEPLOYMENT_ID: "test" });
  assert.equal(deployed.code, 0, deployed.stderr);
  const lines = deployed.stdout.trimEnd().split("\n");
  assert.deepEqual(lines.map((line) => line.startsWith("console: ")), [true, true]);
  assert.deepEqual(lines.map((line) => JSON.parse(line.slice(9)).message), ["one", "two"]);
  const elsewhere = await evalRun(code);
  assert.equal(elsewhere.code, 0, elsewhere.stderr);
  assert.deepEqual(
    elsewhere.stdout.trimEnd().split("\n").map((line) => JSON.parse(line).message),
    ["one", "two"],
  );
});

Deno.test({
  name: "configureLogging() does not prompt a process without env access at a terminal",
  // `script` (util-linux) gives the child a terminal, where Deno would prompt for a permission.
  ignore: !HAS_SCRIPT && Deno.env.get("CI") !== "true",
  async fn() {
    const root = fileURLToPath(new URL("../../", import.meta.url));
    const file = await Deno.makeTempFile({ suffix: ".ts" });
    await Deno.writeTextFile(
      file,
      [
        'import { getLogger } from "@logtape/logtape";',
        `import { configureLogging } from "${root}src/telemetry/logging.ts";`,
        'configureLogging({ format: "json" });',
        'getLogger(["edgestream"]).info("hello");',
      ].join("\n"),
    );
    const deno = [Deno.execPath(), "run", "--cached-only", `--config=${root}deno.json`, file];
    const quoted = deno.map((part) => `'${part.replaceAll("'", `'"'"'`)}'`).join(" ");
    try {
      // A prompt would wait for an answer: the child is killed after 20 s then.
      const output = await new Deno.Command("script", {
        args: ["-qec", quoted, "/dev/null"],
        env: { NO_COLOR: "1" },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(20_000),
      }).output();
      const text = new TextDecoder().decode(output.stdout);
      assert.doesNotMatch(text, /requests env access/);
      assert.equal(JSON.parse(text.trim()).message, "hello");
    } finally {
      await Deno.remove(file);
    }
  },
});

Deno.test("jsonLineFormatter() writes each record's time as toISOString() does, within a second and across seconds", () => {
  // Lines of one second share the text up to the milliseconds; any order of times, repeats and
  // times before 1970 or after 9999 must still read as the record's own time.
  fc.assert(
    fc.property(
      fc.array(
        fc.oneof(
          fc.integer({ min: 1_700_000_000_000, max: 1_700_000_003_000 }),
          fc.integer({ min: -8.64e15, max: 8.64e15 }),
        ),
        { minLength: 1, maxLength: 40 },
      ),
      (times) => {
        for (const timestamp of times) {
          const line = jsonLineFormatter({
            category: ["edgestream"],
            level: "info",
            timestamp,
            rawMessage: "tick",
            message: ["tick"],
            properties: {},
          } as LogRecord);
          assert.equal(JSON.parse(line)["@timestamp"], new Date(timestamp).toISOString());
        }
      },
    ),
  );
});

Deno.test("jsonLineFormatter() writes a line of plain values as the JSON of one object of the line's fields and the properties, in that object's key order", () => {
  // Names like array indexes ("404") come first in an object's JSON, before `@timestamp`.
  const name = fc.oneof(
    fc.string({ maxLength: 6 }),
    fc.constantFrom("404", "0", "07", "1a", "4294967295", "level", "message", "a"),
  ).filter((key) => key !== "__proto__");
  const value = fc.oneof(fc.string({ maxLength: 6 }), fc.integer(), fc.double(), fc.boolean());
  fc.assert(
    fc.property(fc.dictionary(name, value, { maxKeys: 6 }), (properties) => {
      const timestamp = Date.UTC(2026, 0, 1, 12);
      const line = jsonLineFormatter({
        category: ["edgestream", "http"],
        level: "info",
        timestamp,
        rawMessage: "m",
        message: ["m"],
        properties,
      } as LogRecord);
      const expected = JSON.stringify({
        "@timestamp": new Date(timestamp).toISOString(),
        level: "info",
        logger: "edgestream.http",
        message: "m",
        ...properties,
      }) + "\n";
      assert.equal(line, expected);
    }),
  );
});

Deno.test("jsonLineFormatter() writes a request line with odd characters and left-out values as the JSON of one object of the line's fields and the properties", () => {
  const text = fc.oneof(
    fc.string({ unit: "binary", maxLength: 8 }),
    fc.constantFrom(
      '"',
      "\\",
      "\u0000\u001f\u007f",
      "\u2028\u2029",
      "\ud800",
      "a\udc00b",
      "😀",
      "é",
    ),
  );
  const odd = fc.oneof(
    text,
    fc.constantFrom(-0, Number.NaN, Infinity, -Infinity, 1e21, 5e-7, 0.1 + 0.2),
    fc.double(),
    fc.boolean(),
    fc.constantFrom(null, undefined, () => 1, Symbol("s")),
  );
  const timestamp = Date.UTC(2026, 0, 1, 12, 0, 0, 7);
  fc.assert(
    fc.property(text, text, fc.double(), fc.dictionary(text, odd, { maxKeys: 5 }), (
      path,
      requestId,
      durationMs,
      added,
    ) => {
      fc.pre(!Object.hasOwn(added, "__proto__"));
      const properties = {
        method: "POST",
        path,
        status: 202,
        durationMs,
        requestId,
        ...added,
      } as Record<string, unknown>;
      const record = {
        category: ["edgestream", "http"],
        level: "info",
        timestamp,
        rawMessage: "{method} {path} {status} {durationMs} ms",
        message: ["", "POST", " ", path, " ", 202, " ", durationMs, " ms"],
        properties,
      } as LogRecord;
      const message = `POST ${path} 202 ${
        Number.isFinite(durationMs) ? String(durationMs) : JSON.stringify(durationMs)
      } ms`;
      const expected = JSON.stringify({
        "@timestamp": new Date(timestamp).toISOString(),
        level: "info",
        logger: "edgestream.http",
        message,
        ...properties,
      }) + "\n";
      assert.equal(jsonLineFormatter(record), expected);
    }),
    { numRuns: 300 },
  );
  // Inherited properties are left out, as an object's JSON leaves them out.
  const inherited = Object.assign(Object.create({ inherited: 1 }), { own: 2 });
  assert.equal(
    jsonLineFormatter({
      category: ["edgestream", "http"],
      level: "info",
      timestamp,
      rawMessage: "m",
      message: ["m"],
      properties: inherited,
    } as LogRecord),
    `{"@timestamp":"2026-01-01T12:00:00.007Z","level":"info","logger":"edgestream.http","message":"m","own":2}\n`,
  );
});

/** A whole record, as `Logger.emit` takes it. */
function wholeRecord(
  properties: Record<string, unknown>,
  options: { level?: LogLevel; category?: readonly string[] } = {},
): LogRecord {
  return {
    category: options.category ?? ["edgestream", "http"],
    level: options.level ?? "info",
    timestamp: Date.UTC(2026, 0, 1, 12, 0, 0, 7),
    rawMessage: "{method} {path} {status} ms",
    message: ["", properties.method, " ", properties.path, " ", properties.status, " ms"],
    properties,
  } as LogRecord;
}

Deno.test("writeLogRecord() writes the line LogTape's dispatch writes for the same record, JSON and text, secrets redacted", async () => {
  const secret = "k-0123456789abcdef";
  const plain = fc.oneof(
    fc.string({ maxLength: 8 }),
    fc.constantFrom(secret, `Bearer ${secret}`, "?token=abc", "whsec_abc", "a\nb", "\u0000"),
    fc.integer(),
    fc.double(),
    fc.boolean(),
    fc.constant(null),
  );
  const value = fc.oneof(
    plain,
    fc.array(plain, { maxLength: 2 }),
    fc.dictionary(fc.string(), plain),
  );
  const name = fc.oneof(
    fc.string({ maxLength: 6 }),
    fc.constantFrom("method", "path", "status", "apiKey", "token", "message", "404"),
  ).filter((key) => key !== "__proto__");
  const level = fc.constantFrom(...LOG_LEVELS);
  for (const format of ["json", "text"] as const) {
    await writtenLogs((lines) => {
      fc.assert(
        fc.property(fc.dictionary(name, value, { maxKeys: 6 }), level, (properties, at) => {
          lines.length = 0;
          const record = wholeRecord(properties, { level: at });
          assert.equal(writeLogRecord(record), true);
          getLogger(["edgestream", "http"]).emit(record);
          assert.equal(lines.length % 2, 0);
          assert.deepEqual(lines.slice(0, lines.length / 2), lines.slice(lines.length / 2));
          assert.ok(lines.every((line) => !line.text.includes(secret)));
        }),
      );
    }, { format, level: "debug", secrets: [secret] });
  }
});

Deno.test("writeLogRecord() writes a record below the configured level nowhere, as LogTape does", async () => {
  await writtenLogs((lines) => {
    assert.equal(writeLogRecord(wholeRecord({ status: 200 }, { level: "info" })), true);
    assert.equal(writeLogRecord(wholeRecord({ status: 503 }, { level: "warning" })), true);
    assert.deepEqual(jsonLines(lines).map((line) => line.status), [503]);
  }, { level: "warning" });
});

Deno.test("writeLogRecord() leaves a record to LogTape under another configuration, a context, or another category", async () => {
  const record = wholeRecord({ status: 200 });
  // An embedder's own configuration: its sinks get the record, through LogTape.
  await collectingLogs(async (records) => {
    assert.equal(writeLogRecord(record), false);
    getLogger(["edgestream", "http"]).emit(record);
    assert.equal(records.length, 1);
    await Promise.resolve();
  });
  await writtenLogs(async (lines) => {
    // A context: LogTape adds its fields (a line logged with `log`, not `emit`, carries them).
    await withContext({ worker: 3 }, () => {
      assert.equal(writeLogRecord(record), false);
    });
    assert.equal(writeLogRecord(wholeRecord({}, { category: ["other"] })), false);
    assert.equal(lines.length, 0);
    // Once configureLogging's configuration is replaced, the new one's sink gets it.
    await writtenLogs((later) => {
      assert.equal(writeLogRecord(record), true);
      assert.equal(later.length, 1);
    });
    assert.equal(lines.length, 0);
  });
  // With no configuration at all, LogTape drops it.
  assert.equal(writeLogRecord(record), false);
});

Deno.test("writeLogRecord() writes a record that carries every field of the active context itself, as LogTape writes it with the context added; one that lacks one is LogTape's", async () => {
  const record = (properties: Record<string, unknown>) =>
    ({
      category: ["edgestream", "http"],
      level: "info",
      timestamp: Date.UTC(2026, 0, 1, 12, 0, 0, 7),
      rawMessage: "{status} ms",
      message: ["", properties.status, " ms"],
      properties,
    }) as LogRecord;
  await writtenLogs(async (lines) => {
    await withContext({ requestId: "r-1" }, () => {
      assert.equal(carriesContext({ requestId: "r-1", status: 202 }, { requestId: "r-1" }), true);
      assert.equal(writeLogRecord(record({ status: 202, requestId: "r-1" })), true);
      assert.equal(writeLogRecord(record({ status: 202, requestId: "r-2" })), false);
      assert.equal(writeLogRecord(record({ status: 202 })), false);
      assert.equal(lines.length, 1);
      getLogger(["edgestream", "http"]).info("{status} ms", { status: 202 });
    });
    const [carried, logTape] = jsonLines(lines).map(({ ["@timestamp"]: _, ...line }) => line);
    assert.deepEqual(carried, logTape);
    assert.deepEqual(carried, {
      level: "info",
      logger: "edgestream.http",
      message: "202 ms",
      status: 202,
      requestId: "r-1",
    });
  });
});

Deno.test("configureLogging() redacts a short secret as a whole word only, leaving the words that hold its letters", async () => {
  await writtenLogs((lines) => {
    logger.info('token dev, "dev" and dev: but development and devices stay');
    assert.equal(
      jsonLines(lines)[0].message,
      `token ${REDACTED}, "${REDACTED}" and ${REDACTED}: but development and devices stay`,
    );
  }, { secrets: ["dev"] });
});

Deno.test("configureLogging() writes the stdout lines that wait before a warning or error line", async () => {
  const code = [
    'import { getLogger } from "@logtape/logtape";',
    'import { configureLogging } from "./src/telemetry/logging.ts";',
    'configureLogging({ format: "json" });',
    'const logger = getLogger(["edgestream"]);',
    'logger.info("first");',
    'logger.warn("second");',
    'logger.info("third");',
    'logger.error("fourth");',
    // Ends without waiting for the flush timer: stdout and stderr share one pipe below.
    "Deno.exit(0);",
  ].join("\n");
  // One pipe for both streams (sh's 2>&1), so the order of the lines is the order of the writes.
  const output = await new Deno.Command("sh", {
    args: ["-c", `"${Deno.execPath()}" eval --cached-only "$CODE" 2>&1`],
    cwd: fileURLToPath(new URL("../../", import.meta.url)),
    env: { ...Deno.env.toObject(), NO_COLOR: "1", CODE: code },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  assert.equal(output.code, 0, decoder.decode(output.stderr));
  const lines = decoder.decode(output.stdout).trimEnd().split("\n").map((line: string) =>
    JSON.parse(line)
  );
  assert.deepEqual(lines.map((line) => [line.message, line.level]), [
    ["first", "info"],
    ["second", "warning"],
    ["third", "info"],
    ["fourth", "error"],
  ]);
});

Deno.test("configureLogging() redacts the first characters of a secret that quoting client input cut at its length", async () => {
  const long = "0123456789abcdef0123456789abcdef";
  const short = "k-2x9Y";
  await writtenLogs((lines) => {
    // A path quoted as request lines quote it, the secret cut after `kept` of its characters.
    const cutAt = (secret: string, kept: number) =>
      quoteInput(`/v1/streams/${"a".repeat(MAX_QUOTED_CHARACTERS - 13 - kept)}/${secret}/events`);
    for (let kept = 4; kept < API_KEY.length; kept++) {
      logger.info("path {path}", { path: cutAt(API_KEY, kept) });
    }
    for (let kept = 4; kept < long.length; kept++) {
      logger.info("path {path}", { path: cutAt(long, kept) });
      logger.info("path {path}", { path: cutAt(RUNTIME_KEY, kept) });
    }
    logger.info("name {name}", { name: quoteInput(`${short}${short}`, 5) });
    logger.info("name {name}", { name: quoteInput(`x${short}${short}`, 6) });
    const logged = jsonLines(lines);
    assert.equal(logged.length, API_KEY.length - 4 + 2 * (long.length - 4) + 2);
    for (const line of logged.slice(0, -2)) {
      assert.match(line.path as string, /a\/(sk_)?\[REDACTED\]… \(\d+ characters\)$/);
    }
    // A short secret's cut first characters go as a word only, as the whole secret does.
    assert.equal(logged.at(-2)!.name, `${REDACTED}… (12 characters)`);
    assert.equal(logged.at(-1)!.name, `x${short.slice(0, 5)}… (13 characters)`);
    const text = lines.map((line) => line.text).join("\n");
    for (const secret of [API_KEY, JSON.stringify(API_KEY).slice(1, -1), long, RUNTIME_KEY]) {
      assert.ok(!text.includes(secret.slice(0, 4)), secret);
    }
  }, { secrets: [API_KEY, long, short] });
});

Deno.test("configureLogging() redacts a cut secret's first characters in every form it redacts the whole secret in", async () => {
  // Forms only the whole-secret pattern knew: JSON-escaped twice (a message quoting JSON, in a
  // JSON line: `"` as `\\\"`) and percent-encoded twice (`"` as `%2522`, `\` as `%255C`).
  const secret = 'ab"c\\d0123456789abcdef';
  const cutAt = (text: string, kept: number) => quoteInput(`x/${text}/y`, 2 + kept);
  await writtenLogs((lines) => {
    const twice = encodeURIComponent(encodeURIComponent(secret));
    for (let kept = 4; kept < secret.length; kept++) {
      logger.info("body {body}", { body: JSON.stringify({ path: cutAt(secret, kept) }) });
    }
    for (let kept = 4; kept < twice.length; kept++) {
      logger.info("GET {path} 404", { path: cutAt(twice, kept) });
    }
    const logged = jsonLines(lines);
    assert.equal(logged.length, secret.length - 4 + twice.length - 4);
    for (const line of logged) {
      const value = String(line.body ?? line.path);
      assert.match(value, /x\/\[REDACTED\]… \(\d+ characters\)/, value);
    }
    const text = lines.map((line) => line.text).join("\n");
    assert.ok(!text.includes('ab\\\\\\"c'), text);
    assert.ok(!text.includes("ab%2522c"), text);
  }, { secrets: [secret] });
});

Deno.test("configureLogging() redacts a secret or key query parameter that a line holds partly percent-encoded", async () => {
  const long = "0123456789abcdef0123456789abcdef";
  /** `text` with its characters at `indexes` percent-encoded (lowercase hex, as a client may). */
  const encodeAt = (text: string, indexes: number[]) =>
    [...text].map((char, index) =>
      indexes.includes(index) ? `%${char.charCodeAt(0).toString(16).padStart(2, "0")}` : char
    ).join("");
  await writtenLogs((lines) => {
    // As a request line holds a path: Hono decodes unreserved characters, not reserved ones.
    const plusAt = API_KEY.indexOf("+");
    logger.info("GET {path} 404", {
      path: `/v1/streams/orders/${encodeAt(API_KEY, [plusAt, plusAt + 3])}`,
    });
    logger.info("GET {path} 404", { path: `/v1/streams/%22s%22/${encodeAt(long, [10])}/events` });
    logger.info("GET {path} 404", { path: `/v1/${encodeAt(RUNTIME_KEY, [4, 30])}` });
    logger.info("GET {path} 404", { path: "/v1/streams/orders/events%3Fkey=pk_query-value" });
    logger.info("GET {url}", { url: "http://h/v1/streams/s/ws?types=a&t%6Fken=k-name-value&x=1" });
    logger.info("GET {path} 404", { path: "/v1/streams/a%2Fb/events%3Fx=1" });
    const text = lines.map((line) => line.text).join("\n");
    for (const secret of [API_KEY, long, RUNTIME_KEY, "pk_query-value", "k-name-value"]) {
      assert.ok(!decodeURIComponent(text).includes(secret.slice(4)), secret);
    }
    const [reserved, unreserved, runtime, query, name, none] = jsonLines(lines);
    assert.equal(reserved.path, `/v1/streams/orders/${REDACTED}`);
    assert.equal(unreserved.path, `/v1/streams/%22s%22/${REDACTED}/events`);
    assert.equal(runtime.path, `/v1/sk_${REDACTED}`);
    assert.equal(query.path, `/v1/streams/orders/events%3Fkey=${REDACTED}`);
    assert.equal(name.url, `http://h/v1/streams/s/ws?types=a&t%6Fken=${REDACTED}&x=1`);
    // A path that decodes to no secret is written as it is.
    assert.equal(none.path, "/v1/streams/a%2Fb/events%3Fx=1");
  }, { secrets: [API_KEY, long] });
});
