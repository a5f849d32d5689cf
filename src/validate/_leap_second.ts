/**
 * Where a leap second may fall, shared by the instant reader (`time.ts`) and the event schema's
 * `date-time` format check (`event.ts`).
 */

/**
 * Whether the minute `hour`:`minute` of a time `offsetMinutes` ahead of UTC (`-480` for `-08:00`)
 * is 23:59 UTC, the last minute of a UTC day: where a leap second (`:60`) may fall, in any offset
 * (`15:59:60-08:00` is one, `22:59:60Z` is not).
 */
export function endsUtcDay(hour: number, minute: number, offsetMinutes: number): boolean {
  return ((hour * 60 + minute - offsetMinutes) % 1440 + 1440) % 1440 === 1439;
}
