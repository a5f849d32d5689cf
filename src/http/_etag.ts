/**
 * The strong `ETag` of the files and documents served from memory (`/`, `/docs`, the static
 * files, `/openapi.json`) and `If-None-Match` on them: one tag and one comparison for all of them;
 * and the reading of `If-Match` and `If-None-Match`, one for the versioned records (a stream's
 * definition, a webhook endpoint), whose `ETag` is their version quoted (`"3"`).
 *
 * @module
 */
import { headerListElements } from "./_header_list.ts";
import { toHex } from "./auth.ts";
import { ApiError } from "./errors.ts";
import type { DefinitionPrecondition } from "../config/mod.ts";
import { quoteInput } from "../telemetry/logging.ts";

/** The strong `ETag` of `bytes`: the first 16 bytes of their SHA-256, in hex, quoted. */
export async function strongETagOf(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return `"${toHex(digest.subarray(0, 16))}"`;
}

/**
 * Whether `header` (an `If-None-Match`) names `etag`: `*`, or one of its tags by the weak
 * comparison RFC 9110 §13.1.2 asks of it (`W/"x"` matches `"x"`). (`If-Match` compares
 * strongly: see {@linkcode ifMatchOf}.)
 */
export function noneMatchNames(header: string | null | undefined, etag: string): boolean {
  return headerListElements(header).some((tag) => tag === "*" || tag.replace(/^W\//, "") === etag);
}

/**
 * `*` alone in a list-valued header, with empty list elements around it (`*,`, `, *, ,`): RFC
 * 9110 §5.6.1.2 has a recipient ignore those, so `If-Match` and `If-None-Match` take it as `*`.
 * `*` beside a tag is not the fields' grammar. One expression for the check and the document's
 * pattern of `If-None-Match`, so what the document says is what is taken. Spaces and tabs only
 * (a list's whitespace, RFC 9110 §5.6.3); each run is matched one way only, so a long one is
 * read in linear time.
 */
export const STAR = /^[ \t]*(?:,[ \t]*)*\*[ \t]*(?:,[ \t]*)*$/;

/**
 * What an `If-None-Match` header asks of a versioned record (a stream's definition, a webhook
 * endpoint): only `*` is taken, `{ absent: true }`, which holds only while the record does not
 * exist (RFC 9110 §13.1.2: on a `PUT`, create only; on a change or deletion of a record that
 * exists, a `412`). Anything else is 400 `invalid_request`; `meaning` says what `*` asks (e.g.
 * "the stream must not exist").
 */
function ifNoneMatchOf(ifNoneMatch: string, meaning: string): { absent: true } {
  if (!STAR.test(ifNoneMatch)) {
    throw new ApiError(
      400,
      "invalid_request",
      `If-None-Match: only '*' (${meaning}) is taken, got '${quoteInput(ifNoneMatch)}'`,
    );
  }
  return { absent: true };
}

/** A record's version as its entity tag's opaque part holds it (`3` in `"3"`). */
const VERSION_TAG = /^\d{1,15}$/;

/**
 * One element of an entity-tag list (RFC 9110 §8.8.3: `entity-tag = [ "W/" ] DQUOTE *etagc
 * DQUOTE`, where `etagc` is any visible character but `"`, a comma included), or an empty
 * element, each followed by a comma or the header's end. The spaces after a tag are matched with
 * it: two runs of spaces side by side (an empty element) would be tried at every split, quadratic
 * in a long run.
 */
const ENTITY_TAG_ELEMENT = /[ \t]*(?:(W\/)?"([\x21\x23-\x7e\x80-\xff]*)"[ \t]*)?(,|$)/y;

/**
 * The entity tags of an `If-Match` header (empty elements ignored, RFC 9110 §5.6.1.2);
 * undefined when the header is not a list of entity tags. A comma inside a tag's quotes is the
 * tag's own, so the header is read tag by tag rather than split at commas.
 */
function entityTagsOf(header: string): { weak: boolean; opaque: string }[] | undefined {
  const tags: { weak: boolean; opaque: string }[] = [];
  ENTITY_TAG_ELEMENT.lastIndex = 0;
  for (;;) {
    const element = ENTITY_TAG_ELEMENT.exec(header);
    if (element === null) return undefined;
    if (element[2] !== undefined) tags.push({ weak: element[1] !== undefined, opaque: element[2] });
    if (element[3] === "") return tags;
  }
}

/**
 * What an `If-Match` header asks of a versioned record: `*` is `{ exists: true }`, entity tags
 * the `versions` they name (and the `weakVersions` named by weak tags only, for the refusal to
 * name). A header that is not entity-tag syntax is 400 `invalid_request` (`whose` says what a
 * tag names, e.g. "a stream's version"); a well-formed tag that names no version (`"x"`, `"01"`)
 * is kept out of `versions`, to fail as a 412.
 */
function ifMatchOf(
  ifMatch: string,
  whose: string,
): { exists?: true; versions?: number[]; weakVersions?: number[] } {
  if (STAR.test(ifMatch)) return { exists: true };
  // Empty elements (`"2", , "3"`, a trailing comma) are ignored (RFC 9110 §5.6.1.2); a
  // header that names no tag at all is still malformed.
  const tags = entityTagsOf(ifMatch);
  if (tags === undefined || tags.length === 0) {
    throw new ApiError(
      400,
      "invalid_request",
      `If-Match: expected '*' or entity tags such as '"3"' (${whose}), got '${
        quoteInput(ifMatch)
      }'`,
    );
  }
  // Strong comparison (RFC 9110 §13.1.1): a weak tag matches no version, nor a tag whose
  // characters differ from a version's own (`"03"` is not `"3"`, the tag of version 3), nor
  // one that is no version at all (`"x"`): those are well-formed, so they fail as a 412.
  const expected: { versions: number[]; weakVersions?: number[] } = {
    versions: tags.filter(({ weak, opaque }) =>
      !weak && VERSION_TAG.test(opaque) && opaque === String(+opaque)
    ).map(({ opaque }) => Number(opaque)),
  };
  const weak = tags.filter(({ weak, opaque }) => weak && VERSION_TAG.test(opaque))
    .map(({ opaque }) => Number(opaque));
  if (weak.length > 0) expected.weakVersions = weak;
  return expected;
}

/** How a refusal of {@linkcode preconditionOf} names each kind of versioned record's version. */
const VERSION_OF = { stream: "a stream's version", endpoint: "an endpoint's version" } as const;

/**
 * A versioned record's precondition from a request's `If-Match` (`*`, or entity tags compared
 * strongly: see {@linkcode ifMatchOf}) and `If-None-Match` (only `*`, which holds only while the
 * record does not exist: see {@linkcode ifNoneMatchOf}), the same for every operation on a
 * stream's definition or a webhook endpoint; undefined without either. A header they do not take
 * is 400 `invalid_request`, naming the `record` kind.
 */
export function preconditionOf(
  headers: { "if-match"?: string | undefined; "if-none-match"?: string | undefined },
  record: keyof typeof VERSION_OF,
): DefinitionPrecondition | undefined {
  const { "if-match": ifMatch, "if-none-match": ifNoneMatch } = headers;
  if (ifMatch === undefined && ifNoneMatch === undefined) return undefined;
  return {
    ...ifNoneMatch === undefined ? {} : ifNoneMatchOf(ifNoneMatch, `the ${record} must not exist`),
    ...ifMatch === undefined ? {} : ifMatchOf(ifMatch, VERSION_OF[record]),
  };
}
