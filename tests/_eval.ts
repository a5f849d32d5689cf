/**
 * Code run in a child Deno process at the repository root (`deno eval
 * --cached-only`, so it resolves `deno.json`'s imports from the warmed cache),
 * with the machine's environment plus the given variables.
 *
 * @module
 */
import { fileURLToPath } from "node:url";

/** Options for {@linkcode evalAtRoot}. */
export interface EvalOptions {
  /** Variables added to the environment. */
  vars?: Record<string, string>;
  /** Flags before the code, e.g. `--v8-flags=…`. */
  flags?: string[];
}

/** What the child wrote and how it ended. */
export interface EvalResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `code` with `deno eval` at the repository root, stdout and stderr piped. */
export async function evalAtRoot(code: string, options: EvalOptions = {}): Promise<EvalResult> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--cached-only", ...options.flags ?? [], code],
    cwd: fileURLToPath(new URL("../", import.meta.url)),
    env: { ...Deno.env.toObject(), NO_COLOR: "1", ...options.vars },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}
