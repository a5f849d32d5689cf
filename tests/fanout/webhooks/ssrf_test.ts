import assert from "node:assert/strict";
import FakeTimers from "@sinonjs/fake-timers";
import ipaddr from "ipaddr.js";
import {
  AllowListError,
  describeRange,
  nonPublicRange,
  parseAllowList,
  resolveWithDns,
  UnsafeUrlError,
  UrlPolicy,
} from "../../../src/fanout/webhooks/ssrf.ts";
import { DEFAULT_TIMEOUT_MS } from "../../../src/fanout/webhooks/http_post.ts";

/** A resolver answering from a table; unknown names do not resolve. */
function table(records: Record<string, string[]>) {
  return (hostname: string) =>
    hostname in records
      ? Promise.resolve(records[hostname])
      : Promise.reject(new Error(`No record for ${hostname}`));
}

Deno.test("nonPublicRange() names every internal range and passes public addresses", () => {
  const cases: Array<[string, string | null]> = [
    ["127.0.0.1", "loopback"],
    ["127.255.0.9", "loopback"],
    ["10.0.0.1", "private"],
    ["172.16.5.4", "private"],
    ["192.168.1.1", "private"],
    ["169.254.169.254", "linkLocal"],
    ["100.64.0.1", "carrierGradeNat"],
    ["0.0.0.0", "unspecified"],
    ["255.255.255.255", "broadcast"],
    ["224.0.0.1", "multicast"],
    ["240.0.0.1", "reserved"],
    ["::1", "loopback"],
    ["::", "unspecified"],
    ["fc00::1", "uniqueLocal"],
    ["fd12:3456::1", "uniqueLocal"],
    ["fe80::1", "linkLocal"],
    ["ff02::1", "multicast"],
    ["::ffff:127.0.0.1", "loopback"],
    ["::ffff:10.0.0.1", "private"],
    ["::ffff:169.254.169.254", "linkLocal"],
    ["::127.0.0.1", "loopback"],
    ["::a00:1", "reserved"],
    ["64:ff9b::a00:1", "rfc6052"],
    ["2002:a00:1::", "6to4"],
    ["93.184.216.34", null],
    ["8.8.8.8", null],
    ["::ffff:8.8.8.8", null],
    ["2606:4700::1111", null],
  ];
  for (const [address, expected] of cases) {
    assert.equal(nonPublicRange(address), expected, address);
  }
});

Deno.test("UrlPolicy.check() refuses internal IP literals, naming the address", async () => {
  const policy = new UrlPolicy({ resolve: table({}) });
  const cases: Array<[string, RegExp]> = [
    [
      "https://127.0.0.1/hook",
      /^UnsafeUrlError: 'url' is a loopback address: 127\.0\.0\.1; EDGESTREAM_WEBHOOK_ALLOW can allow it$/,
    ],
    ["https://10.0.0.1/hook", /'url' is a private address: 10\.0\.0\.1/],
    ["https://169.254.169.254/latest/meta-data", /link-local address: 169\.254\.169\.254/],
    ["https://[::1]/hook", /loopback address: ::1/],
    ["https://[::ffff:127.0.0.1]/hook", /loopback address: ::ffff:7f00:1/],
    ["https://100.64.0.1/hook", /carrier-grade NAT address: 100\.64\.0\.1/],
    ["https://[fc00::1]/hook", /unique-local address: fc00::1/],
    ["https://2130706433/hook", /loopback address: 127\.0\.0\.1/],
    ["https://0x7f.1/hook", /loopback address: 127\.0\.0\.1/],
  ];
  for (const [url, message] of cases) {
    await assert.rejects(() => policy.check(url), UnsafeUrlError, url);
    await assert.rejects(() => policy.check(url), message, url);
  }
});

Deno.test("UrlPolicy.check() names every range ipaddr.js has in words with a fitting article, not 'a as112'", async () => {
  const policy = new UrlPolicy({
    resolve: table({ "drip.example.com": ["2001:30::1", "5f00::1"] }),
  });
  const cases: Array<[string, string]> = [
    ["https://192.175.48.1/hook", "'url' is an AS112 address: 192.175.48.1"],
    ["https://[2001:4:112::1]/hook", "'url' is an AS112 address: 2001:4:112::1"],
    ["https://192.52.193.1/hook", "'url' is an AMT (multicast tunnelling) address: 192.52.193.1"],
    ["https://[2001:20::1]/hook", "'url' is an ORCHIDv2 address: 2001:20::1"],
    ["https://[fec0::1]/hook", "'url' is a site-local (deprecated) address: fec0::1"],
  ];
  for (const [url, message] of cases) {
    await assert.rejects(
      () => policy.check(url),
      new UnsafeUrlError(`${message}; EDGESTREAM_WEBHOOK_ALLOW can allow it`),
      url,
    );
  }
  await assert.rejects(
    () => policy.check("https://drip.example.com/hook"),
    new UnsafeUrlError(
      "'url' resolves only to internal addresses: 2001:30::1 (drone remote ID (DRIP)), 5f00::1 (segment routing (SRv6)); EDGESTREAM_WEBHOOK_ALLOW can allow them",
    ),
  );
  // Every name the installed ipaddr.js gives has its words; one it may add later is quoted.
  const names = [ipaddr.IPv4, ipaddr.IPv6].flatMap((kind) =>
    Object.keys((kind.prototype as unknown as { SpecialRanges: object }).SpecialRanges)
  );
  assert.ok(names.includes("as112") && names.includes("segmentRouting"));
  for (const name of names) {
    assert.match(describeRange(name), /^an? [^ ]/, name);
    assert.doesNotMatch(describeRange(name), /in the range/, name);
  }
  assert.equal(describeRange("futureRange"), "an address in the range 'futureRange'");
});

Deno.test("UrlPolicy.check() refuses a host name resolving to an internal address", async () => {
  const policy = new UrlPolicy({
    resolve: table({
      "internal.example.com": ["10.0.0.7"],
      "mixed.example.com": ["fd00::7"],
      "public.example.com": ["93.184.216.34", "2606:4700::1111"],
    }),
  });
  await assert.rejects(
    () => policy.check("https://internal.example.com/hook"),
    /'url' resolves to a private address: 10\.0\.0\.7/,
  );
  await assert.rejects(
    () => policy.check("https://mixed.example.com/hook"),
    /resolves to a unique-local address: fd00::7; EDGESTREAM_WEBHOOK_ALLOW can allow it$/,
  );
  await assert.rejects(() => policy.check("https://nowhere.example.com/"), /does not resolve/);
  const { url, addresses } = await policy.check("https://public.example.com/hook");
  assert.equal(url.hostname, "public.example.com");
  assert.deepEqual(addresses, ["93.184.216.34", "2606:4700::1111"]);
});

Deno.test("UrlPolicy.check() treats localhost names as loopback with the default resolver", async () => {
  assert.deepEqual(await resolveWithDns("localhost"), ["127.0.0.1", "::1"]);
  assert.deepEqual(await resolveWithDns("api.localhost."), ["127.0.0.1", "::1"]);
  const policy = new UrlPolicy();
  await assert.rejects(
    () => policy.check("https://localhost:8443/hook"),
    /^UnsafeUrlError: 'url' resolves only to internal addresses: 127\.0\.0\.1 \(loopback\), ::1 \(loopback\); EDGESTREAM_WEBHOOK_ALLOW can allow them$/,
  );
});

Deno.test("UrlPolicy.check() approves localhost through the allowed one of its addresses", async () => {
  const v4 = new UrlPolicy({ allow: parseAllowList("127.0.0.1") });
  assert.deepEqual((await v4.check("http://localhost:9100/hook")).addresses, ["127.0.0.1"]);
  const v6 = new UrlPolicy({ allow: parseAllowList("::1") });
  assert.deepEqual((await v6.check("http://localhost:9100/hook")).addresses, ["::1"]);
  const byName = new UrlPolicy({ allow: parseAllowList("localhost") });
  assert.deepEqual((await byName.check("http://localhost:9100/hook")).addresses, []);
});

Deno.test("UrlPolicy.check() returns only the addresses it may reach, refusing when there are none", async () => {
  const policy = new UrlPolicy({
    allow: ["10.1.0.0/16"],
    resolve: table({
      "mixed.example.com": ["fd00::7", "93.184.216.34"],
      "lab.example.com": ["10.2.0.1", "93.184.216.34", "10.1.2.3"],
      "inside.example.com": ["10.2.0.1", "169.254.169.254"],
    }),
  });
  assert.deepEqual((await policy.check("https://mixed.example.com/")).addresses, [
    "93.184.216.34",
  ]);
  assert.deepEqual((await policy.check("https://lab.example.com/")).addresses, [
    "93.184.216.34",
    "10.1.2.3",
  ]);
  // Plain http may go only to an allow-listed address.
  assert.deepEqual((await policy.check("http://lab.example.com/")).addresses, ["10.1.2.3"]);
  await assert.rejects(
    () => policy.check("http://mixed.example.com/"),
    /must use https; http is allowed only for hosts EDGESTREAM_WEBHOOK_ALLOW lists, or for every host with EDGESTREAM_WEBHOOK_ALLOW_HTTP=true$/,
  );
  await assert.rejects(
    () => policy.check("https://inside.example.com/"),
    /^UnsafeUrlError: 'url' resolves only to internal addresses: 10\.2\.0\.1 \(private\), 169\.254\.169\.254 \(link-local\); EDGESTREAM_WEBHOOK_ALLOW can allow them$/,
  );
});

Deno.test("UrlPolicy.check() quotes a URL that does not parse without its credentials, query or fragment: the refusal is logged", async () => {
  const policy = new UrlPolicy({ resolve: table({}) });
  for (
    const [url, shown] of [
      ["https://user:pw-secret-0123@exa mple.com/hook", "https://[REDACTED]@exa mple.com/hook"],
      ["https://hooks.exa mple.com/h?sig=sig-secret-0123", "https://hooks.exa mple.com/h"],
      ["https://hooks.exa mple.com/h#sig-secret-0123", "https://hooks.exa mple.com/h"],
      ["//user:pw-secret-0123@exa mple.com/h?x=1", "[REDACTED]@exa mple.com/h"],
    ]
  ) {
    await assert.rejects(
      () => policy.check(url),
      (error) =>
        error instanceof UnsafeUrlError &&
        error.message.startsWith(`'url' is not an absolute URL: ${shown}`) &&
        !error.message.includes("secret-0123"),
      url,
    );
  }
  await assert.rejects(
    () => policy.check("https://hooks.exa mple.com/h?sig=sig-secret-0123"),
    /not an absolute URL: https:\/\/hooks\.exa mple\.com\/h and a query or fragment \(not shown\)$/,
  );
});

Deno.test("UrlPolicy.check() wants https, no credentials and an absolute URL", async () => {
  const policy = new UrlPolicy({ resolve: table({ "example.com": ["93.184.216.34"] }) });
  // Naming the settings that allow it: a newcomer's first receiver is often http://localhost.
  await assert.rejects(
    () => policy.check("http://example.com/"),
    /^UnsafeUrlError: 'url' must use https; http is allowed only for hosts EDGESTREAM_WEBHOOK_ALLOW lists, or for every host with EDGESTREAM_WEBHOOK_ALLOW_HTTP=true$/,
  );
  await assert.rejects(() => policy.check("ftp://example.com/"), /must use https, got ftp/);
  await assert.rejects(() => policy.check("https://u:p@example.com/"), /credentials/);
  await assert.rejects(() => policy.check("/relative"), /not an absolute URL: \/relative/);
  await assert.rejects(
    () => policy.check("https://example.com:0/"),
    /port must be 1 to 65535, got 0/,
  );
  await assert.rejects(() => policy.check("https://example.com:00/"), /port must be 1 to 65535/);
  await policy.check("https://example.com:1/");
  await assert.rejects(() => policy.check("https://example.com:65536/"), /not an absolute URL/);
  await policy.check("https://example.com/");
  await new UrlPolicy({ allowHttp: true, resolve: table({ "example.com": ["93.184.216.34"] }) })
    .check("http://example.com/");
});

Deno.test("UrlPolicy allow-list admits CIDRs, addresses and host names, and http for them", async () => {
  const policy = new UrlPolicy({
    allow: parseAllowList("10.1.0.0/16, 127.0.0.1 [::1] receiver.internal *.dev.internal"),
    resolve: table({
      "receiver.internal": ["10.9.9.9"],
      "a.dev.internal": ["10.9.9.9"],
      "lab.example.com": ["10.1.2.3"],
      "half.example.com": ["10.1.2.3", "10.2.0.1"],
    }),
  });
  await policy.check("http://127.0.0.1:9000/hook");
  await policy.check("http://[::1]:9000/hook");
  await policy.check("http://receiver.internal/hook");
  await policy.check("http://a.dev.internal/hook");
  await policy.check("http://lab.example.com/hook");
  await assert.rejects(() => policy.check("https://127.0.0.2/"), /loopback address: 127\.0\.0\.2/);
  assert.deepEqual((await policy.check("https://half.example.com/")).addresses, ["10.1.2.3"]);
  await assert.rejects(() => policy.check("https://10.2.0.1/"), /private address: 10\.2\.0\.1/);
  await assert.rejects(() => policy.check("https://dev.internal/"), /does not resolve/);
});

/** Settles like `promise`, or rejects once `ms` pass: a check that hangs fails the test. */
async function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`still waiting after ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("UrlPolicy.check() refuses a host whose lookup never answers once resolveTimeoutMs pass, and aborts the lookup", async () => {
  let signal: AbortSignal | undefined;
  const policy = new UrlPolicy({
    resolve: (_hostname, given) => {
      signal = given;
      return new Promise<string[]>(() => {});
    },
    resolveTimeoutMs: 50,
  });
  const refused = await within(
    policy.check("https://silent.example.com/hook").then(
      () => assert.fail("a host that never resolves was accepted"),
      (error: unknown) => error,
    ),
    2_000,
  );
  assert.ok(refused instanceof UnsafeUrlError, String(refused));
  assert.equal(refused.message, "'url' host 'silent.example.com' did not resolve within 50 ms");
  assert.equal(signal?.aborted, true, "the lookup is aborted once the policy stops waiting");
});

Deno.test("UrlPolicy's lookup bound is the request timeout (15 s) by default", async () => {
  const clock = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout"] });
  try {
    const policy = new UrlPolicy({ resolve: () => new Promise<string[]>(() => {}) });
    const seen: { outcome: unknown } = { outcome: "pending" };
    const checked = policy.check("https://silent.example.com/").catch((error) => {
      seen.outcome = error;
    });
    await clock.tickAsync(DEFAULT_TIMEOUT_MS - 1);
    const early = seen.outcome;
    assert.equal(early, "pending", "still waiting 1 ms before the bound");
    await clock.tickAsync(1);
    await checked;
    assert.ok(seen.outcome instanceof UnsafeUrlError, String(seen.outcome));
    assert.match(seen.outcome.message, /did not resolve within 15 s$/);
  } finally {
    clock.uninstall();
  }
  const readme = await Deno.readTextFile(new URL("../../../README.md", import.meta.url));
  assert.match(
    readme.replace(/\s+/g, " "),
    /whose lookup has not answered within 15 s, the request timeout \(the message says it did not resolve within 15 s\)/,
  );
});

Deno.test("UrlPolicy refuses an allow-list entry that is neither CIDR, address nor host", () => {
  assert.throws(() => new UrlPolicy({ allow: ["10.0.0.0/33"] }), AllowListError);
  assert.throws(
    () => new UrlPolicy({ allow: ["http://x"] }),
    /entry 'http:\/\/x' is not a CIDR, an address or a host name/,
  );
});
