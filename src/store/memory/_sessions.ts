/**
 * Session windows of one counter in the memory store. Per group, the open
 * sessions are kept sorted by start; an update at time `t` joins every open
 * session it is within the gap of (`t - end < gap` and `start - t < gap`),
 * merging them into one, or opens a new session. Sessions that a close
 * claimed never change again (the lateness check keeps events that could
 * reach them out), so they are only read until they expire.
 *
 * @module
 */
import {
  addValue,
  type AggregateKind,
  type AggregateState,
  emptyState,
  mergeState,
  normalizeState,
} from "../aggregate_state.ts";
import {
  compareGroupKeys,
  type CounterMeta,
  type SessionRange,
  type SessionValue,
} from "../types.ts";

interface Session {
  group: string;
  start: number;
  end: number;
  state: AggregateState;
  /** Distinct values (distinct counters only). */
  values?: Set<string>;
  closed: boolean;
  expiresAt: number;
}

/** A session's member in the Redis store's indexes: its start's decimal text, and group. */
function redisMember(session: { start: number; group: string }): string {
  return `${session.start}:${session.group}`;
}

/** The sessions of one session counter of one stream. */
export class SessionTable {
  #kind: AggregateKind;
  /** Group → open sessions, sorted by start. */
  #open = new Map<string, Session[]>();
  /** Every live session, open or closed. */
  #all = new Set<Session>();
  #openCount = 0;
  /**
   * The open sessions by when they expire, earliest first, while {@linkcode #byExpiryOrdered}: a
   * session given a life moves to the end, which keeps the order while lives are given as
   * `now + ttlMs` with one ttl. So {@linkcode admits} finds the expired ones from the front,
   * costing what expired, not what is open.
   */
  #byExpiry = new Set<Session>();
  /** The latest life given since {@linkcode #byExpiry} was last ordered. */
  #latestExpiry = -Infinity;
  /** False once a life was given earlier than one before it (a ttl lowered, the clock back). */
  #byExpiryOrdered = true;
  /** Open sessions whose life {@linkcode admits} has looked at to find the expired ones. */
  #expiryChecks = 0;

  constructor(kind: AggregateKind) {
    this.#kind = kind;
  }

  /**
   * How many open sessions' lives {@linkcode admits} has looked at, in all, to find the expired
   * ones (for tests of its cost: what expired, not what is open).
   */
  get expiryChecks(): number {
    return this.#expiryChecks;
  }

  /**
   * Whether a run of a group's events, the first at `firstMs` and the last at `lastMs` (each less
   * than the gap after the one before), may be added: it reaches an open session (less than the gap from it), or fewer
   * than `maxSessions` are open. A run that may not is dropped whole, as the Redis store drops it.
   */
  admits(
    counter: CounterMeta,
    group: string,
    run: { firstMs: number; lastMs: number },
    now: number,
  ): boolean {
    const { gapMs, maxSessions } = counter.session!;
    if (this.#openCount < maxSessions) return true;
    // An open session that expired before a sweep closed it is gone and takes no room, as on
    // Redis (whose apply drops it from the counter's index first), whenever the table was last
    // swept.
    this.#forgetExpiredOpen(now);
    if (this.#openCount < maxSessions) return true;
    return (this.#open.get(group) ?? []).some((session) =>
      session.expiresAt > now && session.start - run.lastMs < gapMs &&
      run.firstMs - session.end < gapMs
    );
  }

  /**
   * Adds one event (at `update.pane`, its event time) to its group's sessions, opening one when
   * it reaches none; past `maxSessions` too: {@linkcode admits} says whether its run may be added.
   */
  add(
    counter: CounterMeta,
    update: { pane: number; group: string; value?: number | string },
    now: number,
  ): void {
    const { gapMs } = counter.session!;
    const time = update.pane;
    const list = this.#open.get(update.group) ?? [];
    // Open sessions of a group are disjoint and sorted by start, so by end too: scan back
    // from the newest past those that start a gap or more after `time`, and take the run
    // that ends less than a gap before it. `at` ends as the index a new session goes to.
    let at = list.length;
    while (at > 0 && list[at - 1].start - time >= gapMs) at -= 1;
    let first = at;
    while (first > 0 && time - list[first - 1].end < gapMs) first -= 1;
    const hits = list.slice(first, at).filter((session) => session.expiresAt > now);
    let target: Session;
    if (hits.length === 0) {
      target = {
        group: update.group,
        start: time,
        end: time,
        state: emptyState(),
        closed: false,
        expiresAt: 0,
      };
      if (this.#kind === "distinct") target.values = new Set();
      list.splice(at, 0, target);
      if (list.length === 1) this.#open.set(update.group, list);
      this.#all.add(target);
      this.#openCount += 1;
    } else {
      // The earliest keeps its place in the list; the others merge into it and leave.
      target = hits[0];
      for (const other of hits.slice(1)) {
        mergeState(target.state, other.state);
        if (other.values) { for (const value of other.values) target.values!.add(value); }
        target.end = Math.max(target.end, other.end);
        this.#forget(other);
      }
      target.start = Math.min(target.start, time);
      target.end = Math.max(target.end, time);
    }
    if (target.values) {
      target.state.count += 1;
      target.values.add(String(update.value));
      target.state.distinct = target.values.size;
    } else {
      addValue(target.state, typeof update.value === "number" ? update.value : undefined);
    }
    this.#live(target, now + counter.ttlMs);
  }

  /** Gives an open session its life, keeping {@linkcode #byExpiry} in order of it. */
  #live(session: Session, expiresAt: number): void {
    session.expiresAt = expiresAt;
    this.#byExpiry.delete(session);
    this.#byExpiry.add(session);
    if (expiresAt < this.#latestExpiry) this.#byExpiryOrdered = false;
    else this.#latestExpiry = expiresAt;
  }

  /**
   * Forgets the open sessions expired at `now`: from the front of {@linkcode #byExpiry} up to the
   * first still live, or, when its order was broken, all of them once and the order made again.
   */
  #forgetExpiredOpen(now: number): void {
    if (!this.#byExpiryOrdered) {
      this.#expiryChecks += this.#byExpiry.size;
      const live = [...this.#byExpiry].filter((session) => {
        if (session.expiresAt > now) return true;
        this.#forget(session);
        return false;
      });
      live.sort((a, b) => a.expiresAt - b.expiresAt);
      this.#byExpiry = new Set(live);
      this.#latestExpiry = live.at(-1)?.expiresAt ?? -Infinity;
      this.#byExpiryOrdered = true;
      return;
    }
    for (const session of this.#byExpiry) {
      this.#expiryChecks += 1;
      if (session.expiresAt > now) return;
      this.#forget(session);
    }
  }

  /**
   * Open sessions whose end + gap <= `cutoff`, by that time, at most `limit`. Those due together
   * in the order Redis keeps them (its members `<start>:<group>`, by byte): by the start's
   * decimal text, not its value (`10000` before `9000`), then group, so both stores close the
   * same ones when more are due than a close takes.
   */
  due(
    counter: CounterMeta,
    cutoff: number,
    options: {
      now: number;
      limit: number;
      last?: { due: number; start: number; group: string };
    },
  ): Session[] {
    const gapMs = counter.session!.gapMs;
    const due: Array<{ session: Session; member: string }> = [];
    const last = options.last;
    const lastMember = last && redisMember(last);
    for (const list of this.#open.values()) {
      for (const session of list) {
        if (session.expiresAt > options.now && session.end + gapMs <= cutoff) {
          const member = redisMember(session);
          // Of those due at `last.due`, none after `last` (CloseOptions.throughSession).
          if (
            last && session.end + gapMs === last.due && compareGroupKeys(member, lastMember!) > 0
          ) continue;
          due.push({ session, member });
        }
      }
    }
    return due.sort((a, b) => a.session.end - b.session.end || compareGroupKeys(a.member, b.member))
      .slice(0, options.limit).map((item) => item.session);
  }

  /**
   * Keeps the open sessions alive while they wait to close (a producer's pause stands the
   * watermark still), as the Redis store's sweep does: one whose life ends within `ttlMs / 2` of
   * `now` gets `ttlMs` from `now`, so it outlives a pause as long as the sweep runs more often
   * than that.
   */
  keepOpen(counter: CounterMeta, now: number): void {
    const soon = now + Math.floor(counter.ttlMs / 2);
    for (const list of this.#open.values()) {
      for (const session of list) {
        if (session.expiresAt > now && session.expiresAt <= soon) {
          this.#live(session, now + counter.ttlMs);
        }
      }
    }
  }

  /**
   * Marks a session closed: it leaves the open sessions and stays readable until `expiresAt`
   * (the counter's ttl from the close), or longer when it was given a longer life (a retention
   * lowered since).
   */
  close(session: Session, expiresAt: number): void {
    const list = this.#open.get(session.group);
    const index = list?.indexOf(session) ?? -1;
    if (index < 0) return;
    list!.splice(index, 1);
    if (list!.length === 0) this.#open.delete(session.group);
    this.#byExpiry.delete(session);
    session.closed = true;
    session.expiresAt = Math.max(session.expiresAt, expiresAt);
    this.#openCount -= 1;
  }

  /** The session's state as the store reports it. */
  valueOf(session: Session): SessionValue {
    return {
      start: session.start,
      end: session.end,
      group: session.group,
      state: normalizeState(this.#kind, session.state),
      closed: session.closed,
    };
  }

  /**
   * Live sessions with `fromMs <= start < toMs`, newest start first, those
   * that start together by group key (code point order), at most `limit`; of the open ones only
   * with `range.open`.
   */
  read(range: SessionRange, now: number): SessionValue[] {
    const found: Session[] = [];
    const sessions = range.open ? [...this.#open.values()].flat() : this.#all;
    for (const session of sessions) {
      if (session.expiresAt <= now) continue;
      if (session.start >= range.fromMs && session.start < range.toMs) found.push(session);
    }
    found.sort((a, b) => b.start - a.start || compareGroupKeys(a.group, b.group));
    return found.slice(0, range.limit ?? found.length).map((session) => this.valueOf(session));
  }

  /** Drops expired sessions (an expired open one no longer counts towards `maxSessions`). */
  sweep(now: number): void {
    for (const session of this.#all) if (session.expiresAt <= now) this.#forget(session);
  }

  #forget(session: Session): void {
    this.#all.delete(session);
    if (session.closed) return;
    this.#byExpiry.delete(session);
    const list = this.#open.get(session.group);
    const index = list?.indexOf(session) ?? -1;
    if (index < 0) return;
    list!.splice(index, 1);
    if (list!.length === 0) this.#open.delete(session.group);
    this.#openCount -= 1;
  }
}
