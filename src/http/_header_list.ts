/**
 * Header fields defined as comma-separated lists (RFC 9110 §5.6.1) read one way: a sender that
 * merges values may leave empty elements (`"2", , "3"`, a trailing `, `), which a recipient must
 * ignore, not refuse. Read here: `Upgrade`, `Accept`, `Accept-Encoding` (`docs_routes.ts`) and the
 * `If-None-Match` of the files and documents served with an `ETag` (`_etag.ts`). A stream
 * definition's `If-Match` and `If-None-Match` are read in `definition_routes.ts`, which ignores
 * empty elements too: `*` by one pattern (`STAR`), which the OpenAPI document states, and
 * `If-Match`'s tags one by one, since a comma inside a tag's quotes is the tag's own.
 *
 * Header names on a request's path are read in lower case (`headers.get("content-type")`): a
 * name is case-insensitive, so the answer is the same, and Deno's `Headers.get` answers its few
 * common names in lower case without converting and checking the name first.
 *
 * @module
 */

/**
 * The elements of a list-valued header, each without the spaces around it, empty ones left out
 * (RFC 9110 §5.6.1.2); none for an absent header.
 *
 * @example
 * ```ts
 * import { headerListElements } from "./_header_list.ts";
 *
 * headerListElements('"2", , "3",'); // ['"2"', '"3"']
 * ```
 */
export function headerListElements(value: string | null | undefined): string[] {
  if (value === undefined || value === null) return [];
  return value.split(",").map((element) => element.trim()).filter((element) => element !== "");
}

/** Whether a request's `Upgrade` header lists `websocket` (case-insensitively, RFC 9110 §7.8). */
export function upgradeAsksForWebSocket(value: string | null | undefined): boolean {
  return headerListElements(value).some((protocol) => protocol.toLowerCase() === "websocket");
}

/**
 * Whether a request's `Accept` header lists `text/event-stream`: media types compare
 * case-insensitively (RFC 9110 §8.3.1), and a weight of 0 (`;q=0`) marks a type as not
 * acceptable (§12.4.2). Ranges (`*` / `*`, `text/*`) do not count: a page asking for anything
 * gets no event stream.
 */
export function acceptsEventStream(value: string | null | undefined): boolean {
  return headerListElements(value).some((range) => {
    const [type, ...params] = range.split(";").map((part) => part.trim().toLowerCase());
    return type === "text/event-stream" &&
      !params.some((param) => /^q\s*=\s*0(\.0{0,3})?$/.test(param));
  });
}
