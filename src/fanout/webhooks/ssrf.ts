/**
 * SSRF protection for webhook URLs: a URL must be `https:` (or `http:` when
 * allowed), carry no credentials, and its host must resolve to at least one
 * address that may be reached: a public unicast address, or one an
 * allow-list entry (CIDR or address) permits. Deliveries connect only to
 * such an address, so other addresses of the same name are never contacted.
 * An allow-listed host name may be reached whatever it resolves to. Checked
 * at registration and again before every attempt, since DNS answers change.
 * A lookup is bounded (by default the request timeout, 15 s), so a name whose
 * DNS server never answers is refused rather than holding the request open.
 * Address ranges come from `ipaddr.js`.
 *
 * @module
 */
import ipaddr from "ipaddr.js";
import { quoteInput, withoutCredentials } from "../../validate/mod.ts";
import { describeDuration } from "../../config/mod.ts";
import { DEFAULT_TIMEOUT_MS } from "./http_post.ts";

/**
 * Resolves a host name to its A and AAAA addresses; `signal` aborts when the
 * policy stops waiting (its lookup bound ran out).
 */
export type Resolver = (hostname: string, signal?: AbortSignal) => Promise<string[]>;

/** A URL may not be used for webhooks; the message says why, naming the address. */
export class UnsafeUrlError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "UnsafeUrlError";
  }
}

/** An allow-list entry is neither a CIDR, an address nor a host name. */
export class AllowListError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "AllowListError";
  }
}

type Address = ipaddr.IPv4 | ipaddr.IPv6;

/**
 * Each range `ipaddr.js` names (IPv4's and IPv6's `SpecialRanges`), in words with their article;
 * a test checks that every name it has is here.
 */
const RANGE_WORDS: Record<string, string> = {
  unspecified: "an unspecified",
  broadcast: "a broadcast",
  multicast: "a multicast",
  linkLocal: "a link-local",
  loopback: "a loopback",
  carrierGradeNat: "a carrier-grade NAT",
  private: "a private",
  reserved: "a reserved",
  as112: "an AS112",
  as112v6: "an AS112",
  amt: "an AMT (multicast tunnelling)",
  uniqueLocal: "a unique-local",
  ipv4Mapped: "an IPv4-mapped",
  deprecatedSiteLocal: "a site-local (deprecated)",
  discard: "a discard-only",
  rfc6145: "an IPv4-translated",
  rfc6052: "a NAT64",
  "6to4": "a 6to4",
  teredo: "a Teredo",
  benchmarking: "a benchmarking",
  deprecatedOrchid: "an ORCHID (deprecated)",
  orchid2: "an ORCHIDv2",
  droneRemoteIdProtocolEntityTags: "a drone remote ID (DRIP)",
  segmentRouting: "a segment routing (SRv6)",
};

/** Global unicast IPv6 space (2000::/3); everything outside it is refused. */
const GLOBAL_UNICAST_V6 = ipaddr.IPv6.parseCIDR("2000::/3");

/**
 * The kind of non-public range an address is in (`loopback`, `private`,
 * `linkLocal`, `carrierGradeNat`, `uniqueLocal`, …), or null for a public
 * unicast address. IPv4-mapped IPv6 addresses are judged as their IPv4 address.
 *
 * @example
 * ```ts
 * nonPublicRange("169.254.169.254"); // "linkLocal"
 * nonPublicRange("::ffff:127.0.0.1"); // "loopback"
 * nonPublicRange("93.184.216.34"); // null
 * ```
 */
export function nonPublicRange(address: string): string | null {
  const parsed = ipaddr.process(address);
  const range = parsed.range();
  if (range !== "unicast") return range;
  if (parsed.kind() === "ipv6" && !parsed.match(GLOBAL_UNICAST_V6)) return "reserved";
  return null;
}

/**
 * The range `range` (a name {@linkcode nonPublicRange} gives) as a refusal names an address in
 * it, with its article: `a link-local address`, `an AS112 address`. A name the table does not
 * have (a newer `ipaddr.js`) is quoted rather than given an article that may not fit it.
 *
 * @example
 * ```ts
 * import { describeRange } from "./ssrf.ts";
 *
 * describeRange("linkLocal"); // "a link-local address"
 * describeRange("as112"); // "an AS112 address"
 * ```
 */
export function describeRange(range: string): string {
  const words = RANGE_WORDS[range];
  return words === undefined ? `an address in the range '${range}'` : `${words} address`;
}

/** The range's name without its article: `link-local`. */
function rangeName(range: string): string {
  return (RANGE_WORDS[range] ?? range).replace(/^an? /, "");
}

/** Where operators allow internal addresses; refusals point there. */
const ALLOW_VARIABLE = "EDGESTREAM_WEBHOOK_ALLOW";

/** The refusal of a plain http URL, naming both settings that can allow it. */
const HTTP_REFUSED = `'url' must use https; http is allowed only for hosts ${ALLOW_VARIABLE} ` +
  "lists, or for every host with EDGESTREAM_WEBHOOK_ALLOW_HTTP=true";

/** Whether `hostname` is one of the names that always mean this machine (RFC 6761). */
function isLocalhostName(hostname: string): boolean {
  const name = hostname.toLowerCase().replace(/\.$/, "");
  return name === "localhost" || name.endsWith(".localhost");
}

/** Resolves A and AAAA records with `Deno.resolveDns`; `localhost` names are loopback. */
export async function resolveWithDns(
  hostname: string,
  signal?: AbortSignal,
): Promise<string[]> {
  if (isLocalhostName(hostname)) return ["127.0.0.1", "::1"];
  const [v4, v6] = await Promise.allSettled([
    Deno.resolveDns(hostname, "A", { signal }),
    Deno.resolveDns(hostname, "AAAA", { signal }),
  ]);
  const addresses = [
    ...(v4.status === "fulfilled" ? v4.value : []),
    ...(v6.status === "fulfilled" ? v6.value : []),
  ];
  if (addresses.length === 0 && v4.status === "rejected") throw v4.reason;
  return addresses;
}

/** Options for {@linkcode UrlPolicy}. */
export interface UrlPolicyOptions {
  /**
   * CIDRs (`10.0.0.0/8`), addresses (`127.0.0.1`) and host names
   * (`receiver.internal`, `*.internal`) allowed despite being non-public;
   * an allowed host may also use `http:`. @default {[]}
   */
  allow?: readonly string[];
  /** Allow `http:` URLs for every host. @default {false} */
  allowHttp?: boolean;
  /** Resolves host names. @default {resolveWithDns} */
  resolve?: Resolver;
  /**
   * Longest wait for a host name's lookup (ms); a name not resolved by then
   * is refused as not resolving. @default {DEFAULT_TIMEOUT_MS} (15,000)
   */
  resolveTimeoutMs?: number;
}

/** Splits `EDGESTREAM_WEBHOOK_ALLOW`-style text (commas or spaces) into entries. */
export function parseAllowList(text: string | undefined): string[] {
  return (text ?? "").split(/[\s,]+/).map((item) => item.trim()).filter(Boolean);
}

const HOST_NAME = /^(\*\.)?([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]*[a-z0-9])?$/i;

/** Decides whether a webhook URL may be used. */
export class UrlPolicy {
  #ranges: Array<[Address, number]> = [];
  #hosts: string[] = [];
  #suffixes: string[] = [];
  #allowHttp: boolean;
  #resolve: Resolver;
  #resolveTimeoutMs: number;

  /** Throws {@linkcode AllowListError} for an entry that is not a CIDR, address or host name. */
  constructor(options: UrlPolicyOptions = {}) {
    this.#allowHttp = options.allowHttp ?? false;
    this.#resolve = options.resolve ?? resolveWithDns;
    this.#resolveTimeoutMs = options.resolveTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    for (const entry of options.allow ?? []) {
      const text = entry.replace(/^\[(.*)\]$/, "$1");
      if (ipaddr.isValidCIDR(text)) {
        const [address, bits] = ipaddr.parseCIDR(text);
        this.#ranges.push([address, bits]);
      } else if (ipaddr.isValid(text)) {
        const address = ipaddr.parse(text);
        this.#ranges.push([address, address.kind() === "ipv4" ? 32 : 128]);
      } else if (HOST_NAME.test(text)) {
        if (text.startsWith("*.")) this.#suffixes.push(text.slice(1).toLowerCase());
        else this.#hosts.push(text.toLowerCase());
      } else {
        throw new AllowListError(
          `Webhook allow-list entry '${entry}' is not a CIDR, an address or a host name`,
        );
      }
    }
  }

  #hostAllowed(hostname: string): boolean {
    const name = hostname.toLowerCase();
    return this.#hosts.includes(name) || this.#suffixes.some((suffix) => name.endsWith(suffix));
  }

  #addressAllowed(address: Address): boolean {
    const candidates = [address];
    if (address.kind() === "ipv6" && (address as ipaddr.IPv6).isIPv4MappedAddress()) {
      candidates.push((address as ipaddr.IPv6).toIPv4Address());
    }
    return candidates.some((candidate) =>
      this.#ranges.some(([range, bits]) =>
        range.kind() === candidate.kind() && candidate.match(range, bits)
      )
    );
  }

  /**
   * The addresses `hostname` resolves to, or {@linkcode UnsafeUrlError} when
   * the lookup fails or does not answer within the bound (the lookup is then
   * aborted): an admin's registration never waits on a silent DNS server.
   */
  async #lookup(hostname: string): Promise<string[]> {
    const ms = this.#resolveTimeoutMs;
    const abort = new AbortController();
    // Made when the bound runs out only: this runs before every delivery attempt too.
    let timedOut: UnsafeUrlError | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      return await Promise.race([
        this.#resolve(hostname, abort.signal),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            timedOut = new UnsafeUrlError(
              `'url' host '${hostname}' did not resolve within ${describeDuration(ms)}`,
            );
            reject(timedOut);
            abort.abort();
          }, ms);
        }),
      ]);
    } catch (error) {
      if (error !== undefined && error === timedOut) throw error;
      throw new UnsafeUrlError(`'url' host '${hostname}' does not resolve`, { cause: error });
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Checks a URL and the addresses its host resolves to now. Returns the
   * parsed URL and the addresses that may be reached, in resolver order
   * (empty for an allow-listed host name: any of its addresses may be);
   * throws {@linkcode UnsafeUrlError} when none may, naming the addresses,
   * e.g. `'url' resolves to a private address: 10.0.0.7; EDGESTREAM_WEBHOOK_ALLOW can allow it`,
   * or when the host does not resolve within `resolveTimeoutMs`.
   */
  async check(url: string): Promise<{ url: URL; addresses: string[] }> {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new UnsafeUrlError(`'url' is not an absolute URL: ${shownUnparsedUrl(url)}`);
    }
    if (parsed.protocol !== "https:" && parsed.protocol !== "http:") {
      throw new UnsafeUrlError(`'url' must use https, got ${parsed.protocol.slice(0, -1)}`);
    }
    if (parsed.username || parsed.password) {
      throw new UnsafeUrlError("'url' must not contain credentials; send them as 'headers'");
    }
    // Port 0 names no port a connection can reach: every delivery would fail.
    if (parsed.port === "0") throw new UnsafeUrlError("'url' port must be 1 to 65535, got 0");
    const hostname = parsed.hostname.replace(/^\[(.*)\]$/, "$1");
    const httpRefused = parsed.protocol === "http:" && !this.#allowHttp;
    if (httpRefused && this.#ranges.length === 0 && !this.#hostAllowed(hostname)) {
      throw new UnsafeUrlError(HTTP_REFUSED);
    }
    const isLiteral = ipaddr.isValid(hostname);
    let addresses: string[];
    if (isLiteral) {
      addresses = [hostname];
    } else if (this.#hostAllowed(hostname)) {
      return { url: parsed, addresses: [] };
    } else {
      addresses = await this.#lookup(hostname);
      if (addresses.length === 0) {
        throw new UnsafeUrlError(`'url' host '${hostname}' has no A or AAAA record`);
      }
    }
    // Connections are pinned to an approved address, so a name that also
    // resolves elsewhere (localhost: 127.0.0.1 and ::1) is usable through the
    // addresses that may be reached; it is refused only when there are none.
    const reachable: string[] = [];
    const internal: Array<[string, string]> = [];
    for (const text of addresses) {
      if (!ipaddr.isValid(text)) {
        throw new UnsafeUrlError(`'url' host '${hostname}' resolves to a non-address: ${text}`);
      }
      if (this.#addressAllowed(ipaddr.parse(text))) {
        reachable.push(text);
        continue;
      }
      const range = nonPublicRange(text);
      if (range !== null) internal.push([text, range]);
      else if (!httpRefused) reachable.push(text);
    }
    if (reachable.length > 0) return { url: parsed, addresses: reachable };
    if (internal.length < addresses.length) {
      throw new UnsafeUrlError(HTTP_REFUSED);
    }
    if (internal.length === 1) {
      const [[text, range]] = internal;
      throw new UnsafeUrlError(
        `'url' ${isLiteral ? "is" : "resolves to"} ${describeRange(range)}: ${text}; ` +
          `${ALLOW_VARIABLE} can allow it`,
      );
    }
    const listed = internal.map(([text, range]) => `${text} (${rangeName(range)})`).join(", ");
    throw new UnsafeUrlError(
      `'url' resolves only to internal addresses: ${listed}; ${ALLOW_VARIABLE} can allow them`,
    );
  }
}

/**
 * A webhook URL that does not parse, as a refusal (a reply, and the request's log line) quotes
 * it: without the credentials written into it (refused as such once it parses) nor its query or
 * fragment, where a receiver's token often goes, within {@linkcode quoteInput}'s bound.
 */
function shownUnparsedUrl(url: string): string {
  let shown = withoutCredentials(url);
  // No scheme (`//user:pw@host`): anything up to an '@' may be credentials.
  if (shown.includes("@") && !shown.includes("[REDACTED]@")) {
    shown = shown.replace(/^[^]*@/, "[REDACTED]@");
  }
  const cut = shown.search(/[?#]/);
  return cut < 0
    ? quoteInput(shown)
    : `${quoteInput(shown.slice(0, cut))} and a query or fragment (not shown)`;
}
