/**
 * The gauges `edgestream.webhook.pending` and `edgestream.webhook.dead`:
 * shared state, the same whichever instance reads it, so one instance at a
 * time reports it (were every instance to, a sum over instances would
 * multiply it). That instance holds a lease in the delivery store,
 * `telemetry:webhook-backlog`, taken after a sweep; every other instance
 * observes nothing for these gauges.
 *
 * The holder reads the counts after each of its sweeps and reports the last
 * ones until its lease ends; it renews the lease (gives it back and takes it
 * again at once) once half of it has passed, so it usually keeps reporting,
 * and another instance takes over within a lease after it stops sweeping.
 *
 * @module
 */
import { metrics, type ObservableResult } from "@opentelemetry/api";
import type { DeliveryCounts, DeliveryStore } from "../store/deliveries.ts";
import { withinPeriod } from "./clock.ts";
import { SCOPE_NAME, SCOPE_VERSION } from "./metrics.ts";

/** Name of the lease whose holder reports the gauges. */
export const BACKLOG_LEASE = "telemetry:webhook-backlog";

const meter = metrics.getMeter(SCOPE_NAME, SCOPE_VERSION);
const pendingGauge = meter.createObservableGauge("edgestream.webhook.pending", {
  description: "Webhook deliveries waiting to be sent (pending or retrying), over all instances",
  unit: "{delivery}",
});
const deadGauge = meter.createObservableGauge("edgestream.webhook.dead", {
  description: "Dead webhook deliveries still kept, over all instances",
  unit: "{delivery}",
});

/** Options for {@linkcode WebhookBacklogGauges}. */
export interface WebhookBacklogOptions {
  /**
   * How long (ms) one instance reports before another may take over; make
   * it longer than the time between two of its refreshes. @default {60000}
   */
  leaseMs?: number;
  /** Clock (ms). @default {Date.now} */
  now?: () => number;
}

/**
 * Reports the webhook backlog gauges from this instance while it holds the
 * lease (see the module doc). Call {@linkcode refresh} after each sweep.
 *
 * @example
 * ```ts
 * import { MemoryDeliveryStore } from "../store/mod.ts";
 * import { WebhookBacklogGauges } from "./backlog.ts";
 *
 * const backlog = new WebhookBacklogGauges(new MemoryDeliveryStore(), { leaseMs: 15_000 });
 * console.log(await backlog.refresh()); // { pending: 0, dead: 0 }
 * await backlog.close();
 * ```
 */
export class WebhookBacklogGauges {
  #deliveries: Pick<DeliveryStore, "countDeliveries" | "acquireLease" | "releaseLease">;
  #leaseMs: number;
  #now: () => number;
  /** The lease held, and when it was asked for (ms): it lasts `leaseMs` from then. */
  #lease: { token: string; askedAt: number } | null = null;
  #counts: DeliveryCounts | null = null;
  #refreshing: Promise<DeliveryCounts | null> | null = null;
  #observePending = (result: ObservableResult) => {
    const counts = this.reported;
    if (counts) result.observe(counts.pending);
  };
  #observeDead = (result: ObservableResult) => {
    const counts = this.reported;
    if (counts) result.observe(counts.dead);
  };

  constructor(
    deliveries: Pick<DeliveryStore, "countDeliveries" | "acquireLease" | "releaseLease">,
    options: WebhookBacklogOptions = {},
  ) {
    this.#deliveries = deliveries;
    this.#leaseMs = options.leaseMs ?? 60_000;
    this.#now = options.now ?? Date.now;
    pendingGauge.addCallback(this.#observePending);
    deadGauge.addCallback(this.#observeDead);
  }

  /** The counts this instance reports now, or null while it does not report. */
  get reported(): DeliveryCounts | null {
    // Not held when the clock is before its asking (stepped back): the store's lease may be over.
    if (!this.#lease || !withinPeriod(this.#now(), this.#lease.askedAt, this.#leaseMs)) return null;
    return this.#counts;
  }

  /**
   * Takes or renews the lease and, holding it, reads the counts from the
   * delivery store; returns them, or null when another instance reports.
   * Throws what the delivery store throws (and reports nothing until the
   * next refresh that reads the counts). A refresh while one runs joins it.
   */
  refresh(): Promise<DeliveryCounts | null> {
    this.#refreshing ??= this.#refresh().finally(() => this.#refreshing = null);
    return this.#refreshing;
  }

  async #refresh(): Promise<DeliveryCounts | null> {
    const now = this.#now();
    // Renewed past half its time, or when the clock is before its asking (stepped back): else it
    // would not be renewed until the clock passed that time again, and the store's lease end.
    if (this.#lease && !withinPeriod(now, this.#lease.askedAt, this.#leaseMs / 2)) {
      const { token } = this.#lease;
      this.#lease = null;
      await this.#deliveries.releaseLease(BACKLOG_LEASE, token);
    }
    if (!this.#lease) {
      this.#counts = null;
      const token = await this.#deliveries.acquireLease(BACKLOG_LEASE, this.#leaseMs);
      if (token === null) return null;
      // Measured from before the call, so this instance stops before the store's lease ends.
      this.#lease = { token, askedAt: now };
    }
    try {
      this.#counts = await this.#deliveries.countDeliveries();
    } catch (error) {
      this.#counts = null;
      throw error;
    }
    return this.#counts;
  }

  /** Stops reporting and gives the lease back. */
  async close(): Promise<void> {
    pendingGauge.removeCallback(this.#observePending);
    deadGauge.removeCallback(this.#observeDead);
    const lease = this.#lease;
    this.#lease = null;
    this.#counts = null;
    if (lease) await this.#deliveries.releaseLease(BACKLOG_LEASE, lease.token);
  }
}
