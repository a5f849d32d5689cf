/**
 * Keeps the layout of `src/` honest (see README's Layout section).
 *
 * Folders are ranked in the order data flows; a file may import only its own
 * folder or folders to its right. `validate` and `store` share the last rank
 * and import no other `src/` folder. A folder that is not in the order fails
 * the test, so a new one is added on purpose; `src/` never imports `tools/`;
 * and no two files may import each other through any chain (file cycles).
 *
 * Imports are read from the text: static, type-only, re-exports and dynamic
 * imports of a string literal. Comments are removed first, so the imports in
 * `@example` blocks do not count.
 */
import assert from "node:assert/strict";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The import order: each entry may import only entries after it. */
const ORDER: readonly (readonly string[])[] = [
  ["<root>"], // src/main.ts, src/env.ts, src/app.ts
  ["http"],
  ["ingest"],
  ["fanout"],
  ["query"],
  ["config"],
  ["transform"],
  ["window"],
  ["telemetry"],
  ["validate", "store"],
];

/** One source file: its path relative to the repository, and its text. */
interface SourceFile {
  path: string;
  text: string;
}

/** Removes comments, keeping string and template literals intact. */
export function stripComments(text: string): string {
  let out = "";
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    const next = text[i + 1];
    if (c === "/" && next === "/") {
      while (i < text.length && text[i] !== "\n") i++;
    } else if (c === "/" && next === "*") {
      const end = text.indexOf("*/", i + 2);
      i = end === -1 ? text.length : end + 2;
    } else if (c === '"' || c === "'" || c === "`") {
      let j = i + 1;
      while (j < text.length && text[j] !== c) {
        if (text[j] === "\\") j++;
        if (c !== "`" && text[j] === "\n") break;
        j++;
      }
      out += text.slice(i, j + 1);
      i = j + 1;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

/** Every module specifier a file imports or re-exports. */
export function importSpecifiers(text: string): string[] {
  const code = stripComments(text);
  const found: string[] = [];
  const patterns = [
    /^\s*(?:import|export)\b[^;]*?\bfrom\s*["']([^"']+)["']/gm,
    /^\s*import\s*["']([^"']+)["']/gm,
    /\bimport\s*\(\s*["']([^"']+)["']\s*[,)]/g,
  ];
  for (const pattern of patterns) {
    for (const match of code.matchAll(pattern)) found.push(match[1]);
  }
  return found;
}

/** The folder of `src/` a file belongs to (`<root>` for files directly in it). */
function folderOf(path: string): string {
  const parts = path.split("/");
  return parts.length <= 2 ? "<root>" : parts[1];
}

function rankOf(folder: string): number {
  return ORDER.findIndex((rank) => rank.includes(folder));
}

/** Every rule the tree breaks, as readable lines (empty when it is clean). */
export function checkArchitecture(files: readonly SourceFile[]): string[] {
  const problems: string[] = [];
  const graph = new Map<string, string[]>();
  for (const file of files) {
    const from = folderOf(file.path);
    if (rankOf(from) === -1) {
      problems.push(`${file.path}: folder 'src/${from}' is not in the import order`);
    }
    const edges: string[] = [];
    for (const specifier of importSpecifiers(file.text)) {
      if (!specifier.startsWith(".")) continue; // packages come through deno.json
      const target = join(dirname(file.path), specifier);
      if (target.startsWith("tools/")) {
        problems.push(`${file.path}: imports development tool ${target}`);
        continue;
      }
      if (!target.startsWith("src/")) {
        problems.push(`${file.path}: imports ${target} from outside src/`);
        continue;
      }
      edges.push(target);
      const to = folderOf(target);
      if (to === from) continue;
      const fromRank = rankOf(from);
      const toRank = rankOf(to);
      if (toRank === -1) {
        problems.push(`${file.path}: imports unknown folder 'src/${to}'`);
      } else if (toRank <= fromRank) {
        problems.push(`${file.path}: imports ${target}, but '${from}' comes after '${to}'`);
      }
    }
    graph.set(file.path, edges);
  }
  problems.push(...findCycles(graph));
  return problems;
}

/** One line per file cycle, found by depth-first search. */
function findCycles(graph: Map<string, string[]>): string[] {
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const cycles: string[] = [];
  const visit = (node: string) => {
    state.set(node, "open");
    stack.push(node);
    for (const next of graph.get(node) ?? []) {
      const seen = state.get(next);
      if (seen === "open") {
        cycles.push(`file cycle: ${[...stack.slice(stack.indexOf(next)), next].join(" → ")}`);
      } else if (seen === undefined) {
        visit(next);
      }
    }
    stack.pop();
    state.set(node, "done");
  };
  for (const node of [...graph.keys()].sort()) {
    if (!state.has(node)) visit(node);
  }
  return cycles;
}

async function readTree(root: string, dir: string): Promise<SourceFile[]> {
  const files: SourceFile[] = [];
  for await (const entry of Deno.readDir(join(root, dir))) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) files.push(...await readTree(root, path));
    else if (entry.name.endsWith(".ts")) {
      files.push({ path, text: await Deno.readTextFile(join(root, path)) });
    }
  }
  return files;
}

const repository = resolve(dirname(fileURLToPath(import.meta.url)), "..");

Deno.test("src/ imports only folders to the right, never tools/, with no file cycle", async () => {
  const files = await readTree(repository, "src");
  assert.ok(files.length > 40, `read only ${files.length} files`);
  assert.deepEqual(checkArchitecture(files), []);
});

Deno.test("checkArchitecture() fails on a backward import", () => {
  const problems = checkArchitecture([
    { path: "src/http/errors.ts", text: "export const x = 1;\n" },
    {
      path: "src/store/types.ts",
      text: 'import type { x } from "../http/errors.ts";\nexport type Y = typeof x;\n',
    },
  ]);
  assert.equal(problems.length, 1);
  assert.match(problems[0], /src\/store\/types\.ts: imports src\/http\/errors\.ts/);
});

Deno.test("checkArchitecture() fails on validate ↔ store, unknown folders and tools/", () => {
  const problems = checkArchitecture([
    { path: "src/validate/event.ts", text: 'export * from "../store/types.ts";\n' },
    { path: "src/store/types.ts", text: "export {};\n" },
    { path: "src/gadgets/x.ts", text: "export {};\n" },
    { path: "src/http/y.ts", text: 'const m = await import("../gadgets/x.ts");\n' },
    { path: "src/ingest/z.ts", text: 'import { a } from "../../tools/upstash_bridge.ts";\n' },
  ]);
  assert.equal(problems.length, 4, problems.join("\n"));
  assert.ok(problems.some((p) => p.includes("'validate' comes after 'store'")));
  assert.ok(problems.some((p) => p.includes("folder 'src/gadgets' is not in the import order")));
  assert.ok(problems.some((p) => p.includes("imports unknown folder 'src/gadgets'")));
  assert.ok(problems.some((p) => p.includes("imports development tool tools/upstash_bridge.ts")));
});

Deno.test("checkArchitecture() fails on a file cycle inside one folder", () => {
  const problems = checkArchitecture([
    { path: "src/window/a.ts", text: 'import { b } from "./b.ts";\nexport const a = b;\n' },
    { path: "src/window/b.ts", text: 'import type { a } from "./a.ts";\nexport const b = 1;\n' },
  ]);
  assert.deepEqual(problems, [
    "file cycle: src/window/a.ts → src/window/b.ts → src/window/a.ts",
  ]);
});

Deno.test("importSpecifiers() skips imports inside comments and keeps strings intact", () => {
  const text = [
    "/**",
    " * @example",
    ' * import { x } from "../http/mod.ts";',
    " */",
    'import {\n  a,\n  type B,\n} from "./a.ts";',
    'export { c } from "./c.ts";',
    'import "./side_effect.ts";',
    'const url = "http://example.com/*not a comment*/";',
    'const lazy = await import("./lazy.ts");',
    '// import { y } from "./commented.ts";',
  ].join("\n");
  assert.deepEqual(importSpecifiers(text), [
    "./a.ts",
    "./c.ts",
    "./side_effect.ts",
    "./lazy.ts",
  ]);
});

Deno.test("the README's Layout section names every folder of src/", async () => {
  const readme = await Deno.readTextFile(join(repository, "README.md"));
  const layout = readme.slice(readme.indexOf("## Layout"));
  for await (const entry of Deno.readDir(join(repository, "src"))) {
    if (!entry.isDirectory) continue;
    assert.ok(layout.includes(`${entry.name}/`), `README Layout does not name src/${entry.name}/`);
  }
});

/** The specifiers of a file's `// @ts-types="…"` directives (types taken from a package). */
function typeDirectives(text: string): string[] {
  return [...text.matchAll(/^\s*\/\/\s*@(?:ts|deno)-types\s*=\s*["']([^"']+)["']/gm)].map((match) =>
    match[1]
  );
}

/** The README's Layout block: the lines after the import order, each `src/…` entry with its text. */
async function layoutBlock(): Promise<string> {
  const readme = await Deno.readTextFile(join(repository, "README.md"));
  const layout = readme.slice(readme.indexOf("## Layout"));
  const start = layout.indexOf("```\nsrc/");
  return layout.slice(start, layout.indexOf("```", start + 3));
}

Deno.test("the README's Layout names every file directly in src/, and every path it names exists", async () => {
  const block = await layoutBlock();
  for await (const entry of Deno.readDir(join(repository, "src"))) {
    if (entry.isFile) {
      assert.match(block, new RegExp(`^src/${entry.name} `, "m"), `Layout omits src/${entry.name}`);
    }
  }
  for (const [path] of block.matchAll(/\b(?:src|tests|static|tools|bench|deploy)\/[\w./]*\w\/?/g)) {
    await Deno.stat(join(repository, path)).catch(() => assert.fail(`Layout names ${path}`));
  }
});

Deno.test("the README's Layout names every file of the folders it lists by file, and each store contract's suite", async () => {
  const block = await layoutBlock();
  // The entries that list their folder file by file (all but mod.ts and `_` helpers).
  for (
    const [folder, within] of [["http", "http"], ["fanout", "fanout"], ["query", "query"], [
      "fanout/webhooks",
      "fanout",
    ]]
  ) {
    const entry = new RegExp(`^src/${within}/([\\s\\S]*?)^\\S`, "m").exec(block)![1];
    for await (const file of Deno.readDir(join(repository, "src", folder))) {
      if (!file.isFile || file.name.startsWith("_") || file.name === "mod.ts") continue;
      const stem = file.name.replace(/\.ts$/, "");
      assert.match(entry, new RegExp(`\\b${stem}\\b`), `Layout's src/${folder}/ omits ${stem}`);
    }
  }
  // Each contract (`export interface …Store`) of src/store/<file>.ts has a suite run against
  // both stores: tests/store/<file>_test.ts (contract_test.ts for types.ts).
  for (const file of await readTree(repository, "src/store")) {
    if (file.path.split("/").length !== 3) continue;
    if (!/^export interface \w*Store\b/m.test(file.text)) continue;
    const name = file.path.endsWith("/types.ts")
      ? "contract"
      : file.path.replace(/^src\/store\/(\w+)\.ts$/, "$1");
    const suite = `tests/store/${name}_test.ts`;
    await Deno.stat(join(repository, suite));
    assert.ok(
      new RegExp(`\\b${name}_test\\.ts\\b`).test(block),
      `Layout does not name ${suite} among the suites run against both stores`,
    );
  }
});

/**
 * The top folders (src, tools, tests, bench) whose files import `name` or a path inside it, or take
 * their types from it.
 */
async function importersOf(name: string): Promise<Set<string>> {
  const found = new Set<string>();
  for (const top of ["src", "tools", "tests", "bench"]) {
    for (const file of await readTree(repository, top)) {
      if (
        [...importSpecifiers(file.text), ...typeDirectives(file.text)].some((specifier) =>
          specifier === name || specifier.startsWith(`${name}/`) ||
          specifier.startsWith(`npm:${name}@`)
        )
      ) found.add(top);
    }
  }
  return found;
}

Deno.test("the README's Dependencies table names every package of deno.json, and where it says a package is used, it is used only there", async () => {
  const readme = await Deno.readTextFile(join(repository, "README.md"));
  const section = readme.slice(readme.indexOf("## Dependencies"));
  const table = section.slice(0, section.indexOf("\n\n", section.indexOf("| package")));
  const rows = new Map<string, string>();
  for (const line of table.split("\n").filter((line) => line.startsWith("| `"))) {
    const [, first, why] = line.split("|");
    rows.set(/`([^`]+)`/.exec(first)![1], why.trim());
  }
  const { imports } = JSON.parse(await Deno.readTextFile(join(repository, "deno.json")));
  const packages = Object.keys(imports).filter((name) => !name.endsWith("/"));
  assert.deepEqual([...rows.keys()].sort(), packages.sort());
  for (const [name, why] of rows) {
    const importers = await importersOf(name);
    if (why.endsWith("(tests only)")) {
      assert.ok(
        [...importers].every((top) => top === "tests"),
        `${name}: "(tests only)", imported in ${[...importers]}`,
      );
    }
  }
  // The rows that say where: exactly those folders.
  assert.deepEqual([...await importersOf("redis")].sort(), ["bench", "tests", "tools"]);
  assert.match(
    rows.get("redis")!,
    /^only in the local Upstash REST bridge .*tests\) and the benchmarks/,
  );
  assert.deepEqual([...await importersOf("ws")].sort(), ["bench", "tests"]);
  assert.match(rows.get("ws")!, /in tests and `deno task bench:ws`$/);
  assert.deepEqual([...await importersOf("@types/ws")].sort(), ["bench", "tests"]);
  assert.match(rows.get("@types/ws")!, /in tests and `deno task bench:ws`$/);
  assert.deepEqual([...await importersOf("standardwebhooks")].sort(), ["bench", "tests"]);
  assert.match(rows.get("standardwebhooks")!, /in tests and `deno task bench:webhooks`$/);
  // Hono's Deno adapter (`hono/deno`, its `upgradeWebSocket`) is named only while it is used.
  if ((await importersOf("hono/deno")).size === 0) {
    assert.doesNotMatch(rows.get("hono")!, /Deno WebSocket support|hono\/deno/);
  }
  // The pages axe-core checks: each browser test that runs it (tests/<page>_browser_test.ts).
  const axePages = (await readTree(repository, "tests"))
    .filter((file) =>
      importSpecifiers(file.text).some((specifier) => specifier.endsWith("/_axe.ts"))
    )
    .map((file) => file.path.replace(/^.*\/(\w+?)_browser_test\.ts$/, "$1"));
  assert.ok(axePages.length > 0, "no browser test runs axe-core");
  for (const page of axePages) {
    assert.ok(rows.get("axe-core")!.includes(page), `axe-core row does not name ${page}`);
  }
  assert.deepEqual([...await importersOf("playwright-core")].sort(), ["bench", "tests"]);
  assert.match(
    rows.get("playwright-core")!,
    /browser tests .* and `deno task bench:dashboard-commands`$/,
  );
});
