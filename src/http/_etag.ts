/**
 * `If-None-Match` on the files and documents served with a strong `ETag` (`/`, `/docs`, the
 * static files, `/openapi.json`): one comparison for all of them.
 *
 * @module
 */
import { headerListElements } from "./_header_list.ts";

/**
 * Whether `header` (an `If-None-Match`) names `etag`: `*`, or one of its tags by the weak
 * comparison RFC 9110 §13.1.2 asks of it (`W/"x"` matches `"x"`). (`If-Match` compares
 * strongly: see `definition_routes.ts`.)
 */
export function noneMatchNames(header: string | null | undefined, etag: string): boolean {
  return headerListElements(header).some((tag) => tag === "*" || tag.replace(/^W\//, "") === etag);
}
