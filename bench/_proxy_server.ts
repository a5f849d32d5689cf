/**
 * The counting Upstash proxy (`tests/_upstash_proxy.ts`) in its own process, so that its work
 * neither slows the load generator nor the app under test. Forwards to `BENCH_TARGET_URL`;
 * prints `listening <port>` for a control server that answers:
 * - `GET /url`: the proxy's base URL, to give the app as `UPSTASH_REDIS_REST_URL`;
 * - `GET /take`: what was forwarded since the last take, as
 *   `{"requests", "billed", "commands": {"evalsha": n, …}}`, and forgets it.
 */
import { billedCommands, commandNames, startUpstashProxy } from "../tests/_upstash_proxy.ts";
import { serveForBench } from "./_shared.ts";

const target = Deno.env.get("BENCH_TARGET_URL");
if (!target) {
  console.error("_proxy_server.ts needs BENCH_TARGET_URL");
  Deno.exit(1);
}
const proxy = await startUpstashProxy({ targetUrl: target });

serveForBench((request) => {
  const path = new URL(request.url).pathname;
  if (path === "/url") return new Response(proxy.url);
  if (path === "/take") {
    const taken = proxy.take();
    const commands: Record<string, number> = {};
    for (const name of taken.flatMap(commandNames)) commands[name] = (commands[name] ?? 0) + 1;
    return Response.json({
      requests: taken.length,
      billed: taken.reduce((sum, item) => sum + billedCommands(item), 0),
      commands,
    });
  }
  return new Response("Not found", { status: 404 });
});
