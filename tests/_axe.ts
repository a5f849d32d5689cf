/**
 * axe-core (`npm:axe-core`) run in a Playwright page: its source is evaluated
 * through the DevTools protocol, which the page's Content-Security-Policy does
 * not govern, so pages are checked under their real policy.
 *
 * @module
 */
import axe from "axe-core";
import type { Page } from "playwright-core";

/** One rule axe found broken, with the nodes that break it. */
export interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  nodes: { target: unknown[]; failureSummary?: string }[];
}

/** Options for {@linkcode axeViolations}. */
export interface AxeOptions {
  /** CSS selectors left out of the check (vendored markup we do not write). @default {[]} */
  exclude?: string[];
  /** Impacts reported. @default {["serious", "critical"]} */
  impacts?: string[];
}

/** The violations axe finds in `page` as it is now, of the given impacts. */
export async function axeViolations(page: Page, options: AxeOptions = {}): Promise<AxeViolation[]> {
  const impacts = options.impacts ?? ["serious", "critical"];
  if (!(await page.evaluate("typeof window.axe === 'object'"))) {
    await page.evaluate((axe as unknown as { source: string }).source);
  }
  const exclude = options.exclude ?? [];
  const violations = await page.evaluate(async (exclude) => {
    // deno-lint-ignore no-explicit-any
    const result = await (globalThis as any).axe.run({ exclude: exclude.map((s) => [s]) });
    return result.violations;
  }, exclude) as AxeViolation[];
  return violations.filter((violation) => impacts.includes(violation.impact ?? ""));
}

/** A line per violation and node, for an assertion message. */
export function describeViolations(violations: AxeViolation[]): string {
  return violations.flatMap((violation) =>
    violation.nodes.map((node) =>
      `${violation.impact} ${violation.id} (${violation.help}): ${JSON.stringify(node.target)} ${
        node.failureSummary ?? ""
      }`
    )
  ).join("\n");
}
