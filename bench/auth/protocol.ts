/** What bench/auth/run.ts and its server child (bench/auth/server.ts) share. */

/** The child's messages over the IPC channel; the parent sends `'stop'`. */
export type ServerMessage =
  | { type: 'ready'; port: number; email: string; password: string; token: string }
  | { type: 'failed'; message: string }

/**
 * A bench-only route (under /api/v1) that needs a session and does nothing else (no database), so
 * that the cost of authentication itself (session lookup, permission check, per-user rate limit)
 * shows apart from the database read `GET /api/v1/me` makes.
 */
export const WHOAMI = '/bench/whoami'
