/**
 * What every route module's OpenAPI definitions share: the error envelope's
 * schema, the one table of error responses, the JSON content helper, and the
 * documented routes (for 405s).
 *
 * @module
 */
import { z } from "@hono/zod-openapi";

/** The error envelope. */
export const ErrorSchema = z.object({
  error: z.object({
    code: z.string().openapi({ example: "stream_not_found" }),
    message: z.string().openapi({ example: "Stream 'orders' is not configured" }),
    details: z.record(z.string(), z.unknown()).optional().openapi({
      description:
        "More about some errors: a 503 from the store says `outcome` (`unknown`: a write may have been applied, so resend an ingest request with the same Idempotency-Key, and read the state back before sending another write again; `not_applied`: nothing was applied)",
      example: { outcome: "unknown" },
    }),
    requestId: z.string().openapi({
      description: "The request's id, also in the `X-Request-Id` response header and the logs",
      example: "3f1c9a52-7e0b-4d8e-9a57-1b2f6c0d4e8a",
    }),
  }),
}).openapi("Error");

/** Names of streams, counters and endpoints in paths. */
export const NAME = /^[A-Za-z0-9_-]{1,64}$/;

const errorContent = { "application/json": { schema: ErrorSchema } };

/** The error responses routes declare, by status: pick the ones a route can give. */
export const errorResponses = {
  400: { description: "Bad request", content: errorContent },
  401: { description: "Missing or invalid key", content: errorContent },
  403: { description: "Key lacks the scope", content: errorContent },
  404: { description: "Not found", content: errorContent },
  406: { description: "Not an acceptable representation", content: errorContent },
  408: { description: "Body not received in time", content: errorContent },
  409: {
    description: "Conflicts with the current state (or a request in progress)",
    content: errorContent,
  },
  412: {
    description: "If-Match or If-None-Match does not hold (changed meanwhile)",
    content: errorContent,
  },
  413: { description: "Too large", content: errorContent },
  415: { description: "Unsupported media type", content: errorContent },
  422: { description: "Idempotency-Key reused with another body", content: errorContent },
  426: { description: "Not a WebSocket upgrade", content: errorContent },
  429: { description: "Rate limited (see Retry-After)", content: errorContent },
  503: {
    description: "Store unavailable, or the server is shutting down (see Retry-After)",
    content: errorContent,
  },
} as const;

/** A JSON response of `schema`. */
export function jsonContent<T extends z.ZodType>(schema: T, description: string) {
  return { description, content: { "application/json": { schema } } };
}

/** The rows of {@linkcode errorResponses} for these statuses. */
export function errorsFor<S extends keyof typeof errorResponses>(
  ...statuses: S[]
): Pick<typeof errorResponses, S> {
  const picked = {} as Pick<typeof errorResponses, S>;
  for (const status of statuses) picked[status] = errorResponses[status];
  return picked;
}
