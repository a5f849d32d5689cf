/**
 * A file the server serves at a fixed path (the docs' and the dashboard's) that it cannot read:
 * one error, worded once, for both.
 *
 * @module
 */
import { fileURLToPath } from "node:url";

/** A file URL as the path a log line names, any other URL as written. */
function pathOf(url: URL): string {
  return url.protocol === "file:" ? fileURLToPath(url) : url.href;
}

/**
 * A file the server serves at a fixed path that it cannot read (`url`, under the static folder
 * `root`): the deployment left it out, a 500 that says so (logged as an error), not a 404 as for
 * a file a client named. `cause` is the read's own error, when there was one.
 */
export function unreadableFile(url: URL, root: URL, cause?: unknown): Error {
  // The file's own path, under `staticDir` when one is given, not where the default keeps it.
  const why = cause === undefined ? "" : `: ${(cause as Error).message}`;
  return new Error(
    `Cannot read ${pathOf(url)}${why} (is ${pathOf(root)} part of the deployment?)`,
    cause === undefined ? undefined : { cause },
  );
}
