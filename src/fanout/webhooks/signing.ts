/**
 * Standard Webhooks signatures: `v1,` + base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>"))
 * with `crypto.subtle`, and `whsec_` secrets. Pure functions, no I/O.
 *
 * @module
 */

/** Prefix of every secret. */
export const SECRET_PREFIX = "whsec_";

/** Random bytes in a generated secret (the spec asks for at least 24). */
export const SECRET_BYTES = 32;

/** A secret is not `whsec_` + base64 of at least 24 bytes, or a message id holds a `.`. */
export class SigningError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SigningError";
  }
}

function toBase64(bytes: Uint8Array): string {
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text);
}

/** A new secret: `whsec_` + base64 of 32 random bytes. */
export function generateSecret(): string {
  return SECRET_PREFIX + toBase64(crypto.getRandomValues(new Uint8Array(SECRET_BYTES)));
}

/** The HMAC key bytes of a secret. Throws {@linkcode SigningError} for a malformed one. */
export function secretKey(secret: string): Uint8Array<ArrayBuffer> {
  const body = secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : "";
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(body)) {
    throw new SigningError("Secret must be 'whsec_' followed by base64");
  }
  const bytes = Uint8Array.from(atob(body), (char) => char.charCodeAt(0));
  if (bytes.length < 24) {
    throw new SigningError(`Secret holds ${bytes.length} bytes; at least 24 are needed`);
  }
  return bytes;
}

const keys = new Map<string, Promise<CryptoKey>>();
const MAX_CACHED_KEYS = 1_000;

function hmacKey(secret: string): Promise<CryptoKey> {
  let key = keys.get(secret);
  if (!key) {
    if (keys.size >= MAX_CACHED_KEYS) keys.clear();
    key = crypto.subtle.importKey(
      "raw",
      secretKey(secret),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign"],
    );
    keys.set(secret, key);
  }
  return key;
}

/**
 * One signature `v1,<base64>` of a message.
 *
 * @example
 * ```ts
 * const signature = await sign(generateSecret(), "msg_orders_1-0", 1767225600, '{"type":"…"}');
 * // "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="
 * ```
 */
export async function sign(
  secret: string,
  messageId: string,
  timestampSeconds: number,
  body: string,
): Promise<string> {
  const content = new TextEncoder().encode(`${messageId}.${timestampSeconds}.${body}`);
  const mac = await crypto.subtle.sign("HMAC", await hmacKey(secret), content);
  return `v1,${toBase64(new Uint8Array(mac))}`;
}

/** The three Standard Webhooks headers of one attempt. */
export interface SignatureHeaders {
  "webhook-id": string;
  "webhook-timestamp": string;
  "webhook-signature": string;
}

/**
 * The `webhook-*` headers of an attempt at `nowMs`, signed with every secret
 * given (several during a rotation), space-separated.
 */
export async function signatureHeaders(
  secrets: readonly string[],
  messageId: string,
  nowMs: number,
  body: string,
): Promise<SignatureHeaders> {
  if (messageId.includes(".")) {
    throw new SigningError(`Message id must not contain '.': ${messageId}`);
  }
  const timestamp = Math.floor(nowMs / 1000);
  const signatures = await Promise.all(
    secrets.map((secret) => sign(secret, messageId, timestamp, body)),
  );
  return {
    "webhook-id": messageId,
    "webhook-timestamp": String(timestamp),
    "webhook-signature": signatures.join(" "),
  };
}
