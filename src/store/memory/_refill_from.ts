/**
 * A token bucket's refill time across instances whose clocks differ, for the memory store's
 * rate limits and webhook delivery buckets (the Redis scripts write the same rule in Lua, once:
 * `LUA_REFILL_FROM` of `src/store/redis/_lua_common.ts`).
 *
 * @module
 */

/**
 * The time a rate-limit bucket updated at `updatedMs` refills from after an update at `now`: that
 * update's time when it is ahead of `now` (written by an instance whose clock is ahead, or before
 * this clock stepped back) by at most `windowMs`, the time the bucket takes to refill from empty;
 * else `now`. Kept, the next update by the clock ahead refills only what its own time saw pass:
 * moved back to `now`, it refilled the time between the two clocks again, a full bucket at every
 * turn of two instances whose clocks differ by a bucket's window. A lead past the window is a
 * clock gone wrong, not skew: kept, it would hold the bucket empty longer than emptying it does.
 */
export function refillFrom(now: number, updatedMs: number, windowMs: number): number {
  return updatedMs > now && updatedMs - now <= windowMs ? updatedMs : now;
}
