/**
 * The strong `ETag` of the files and documents served from memory (`/`, `/docs`, the static
 * files, `/openapi.json`) and `If-None-Match` on them: one tag and one comparison for all of them.
 *
 * @module
 */
import { headerListElements } from "./_header_list.ts";
import { toHex } from "./auth.ts";

/** The strong `ETag` of `bytes`: the first 16 bytes of their SHA-256, in hex, quoted. */
export async function strongETagOf(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return `"${toHex(digest.subarray(0, 16))}"`;
}

/**
 * Whether `header` (an `If-None-Match`) names `etag`: `*`, or one of its tags by the weak
 * comparison RFC 9110 §13.1.2 asks of it (`W/"x"` matches `"x"`). (`If-Match` compares
 * strongly: see `definition_routes.ts`.)
 */
export function noneMatchNames(header: string | null | undefined, etag: string): boolean {
  return headerListElements(header).some((tag) => tag === "*" || tag.replace(/^W\//, "") === etag);
}
