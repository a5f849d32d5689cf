/**
 * Which windows and sessions a read calls final, shared by counter and session reads: the
 * definition's rule (`config/final.ts`), which a definition change keeps too.
 *
 * @module
 */
export { closedBefore, watermarkAt } from "../config/final.ts";
