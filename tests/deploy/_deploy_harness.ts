/**
 * Runs `deploy/main.ts` the way Deno Deploy evaluates it, and says what it
 * did in order: `harness: cron <name> <schedule>` when it registers a cron,
 * `harness: fetch` on every outgoing request (Redis calls go through fetch),
 * and, with `HARNESS_SWEEP=1`, runs the registered cron handler once the
 * module has loaded (`harness: swept`); with `HARNESS_SWEEP=signal`, says
 * `harness: loaded` once the module has loaded and runs it at each SIGUSR1
 * (`harness: sweeping`, then `harness: swept`).
 */
type CronHandler = () => Promise<void> | void;
let sweep: CronHandler | undefined;

const originalFetch = globalThis.fetch;
globalThis.fetch = ((...args: Parameters<typeof fetch>) => {
  console.log("harness: fetch");
  return originalFetch(...args);
}) as typeof fetch;

// The last argument is the handler in every overload of Deno.cron.
Object.defineProperty(Deno, "cron", {
  value: (name: string, schedule: string, ...rest: unknown[]) => {
    console.log(`harness: cron ${name} ${schedule}`);
    sweep = rest.at(-1) as CronHandler;
    return Promise.resolve();
  },
});

await import("../../deploy/main.ts");
if (Deno.env.get("HARNESS_SWEEP") === "1") {
  await sweep!();
  console.log("harness: swept");
}
if (Deno.env.get("HARNESS_SWEEP") === "signal") {
  Deno.addSignalListener("SIGUSR1", () => {
    console.log("harness: sweeping");
    Promise.resolve(sweep!()).then(() => console.log("harness: swept"));
  });
  console.log("harness: loaded");
}
