/**
 * deploy/README.md sends an operator elsewhere for the details: to sections of itself and of the
 * README (`../README.md#stopping`), and to the tests that show what it says. Each must be there: a
 * heading renamed, or a test file moved, would leave the shipping guide pointing at nothing.
 */
import assert from "node:assert/strict";

const root = new URL("../../", import.meta.url);

/** GitHub's anchor of a heading: lower case, marks but `-` and `_` dropped, spaces to `-`. */
function anchorOf(heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, "").replace(/\s/g, "-");
}

/** The anchors of a Markdown file's headings (outside code blocks), repeats numbered as GitHub does. */
function anchorsOf(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  let fenced = false;
  for (const line of markdown.split("\n")) {
    if (line.startsWith("```")) fenced = !fenced;
    const heading = !fenced && line.match(/^#{1,6} (.+)$/);
    if (!heading) continue;
    const anchor = anchorOf(heading[1]);
    const count = seen.get(anchor) ?? 0;
    seen.set(anchor, count + 1);
    anchors.add(count === 0 ? anchor : `${anchor}-${count}`);
  }
  return anchors;
}

Deno.test("deploy/README.md's links to its own sections and to the README's name headings that exist", async () => {
  const text = await Deno.readTextFile(new URL("deploy/README.md", root));
  const own = anchorsOf(text);
  const readme = anchorsOf(await Deno.readTextFile(new URL("README.md", root)));
  const links = [...text.matchAll(/\]\(((?:\.\.\/README\.md)?)#([^)\s]+)\)/g)];
  // What the guide links to today: a reader that found none would check nothing.
  assert.ok(links.length >= 8, `${links.length} links`);
  for (const [link, file, anchor] of links) {
    assert.ok((file === "" ? own : readme).has(anchor), `${link}: no such heading`);
  }
  // The anchors are read as GitHub makes them.
  assert.equal(anchorOf("Self-hosted: N processes"), "self-hosted-n-processes");
  assert.equal(anchorOf("Redis persistence and eviction"), "redis-persistence-and-eviction");
  assert.equal(anchorOf("`EDGESTREAM_KEYS` and `/v1/keys`"), "edgestream_keys-and-v1keys");
});

Deno.test("the test files deploy/README.md names exist, and the tests it names by title are in them", async () => {
  const text = (await Deno.readTextFile(new URL("deploy/README.md", root))).replace(/\s+/g, " ");
  const files = new Set([...text.matchAll(/`(tests\/[\w/.-]+\.ts)`/g)].map((match) => match[1]));
  assert.ok(files.size >= 5, [...files].join(", "));
  for (const file of files) {
    const stat = await Deno.stat(new URL(file, root)).catch(() => undefined);
    assert.ok(stat?.isFile, `${file} is not there`);
  }
  // Named by the start of their title: `<file>` ("<title> …").
  const titled = [...text.matchAll(/`(tests\/[\w/.-]+\.ts)` \("([^"…]+) …"\)/g)];
  assert.equal(titled.length, 2, titled.map((match) => match[0]).join("\n"));
  for (const [, file, title] of titled) {
    const source = await Deno.readTextFile(new URL(file, root));
    assert.ok(source.includes(`"${title}`), `${file} has no test titled "${title} …"`);
  }
});
