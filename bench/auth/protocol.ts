/** What bench/auth/run.ts and its server child (bench/auth/server.ts) share. */

/**
 * Sign-ins run at this many connections (argon2id takes ~40 ms of one core per sign-in: a few
 * connections already keep every core busy), each as its own account. One account signed into from
 * more connections can be refused 429 PLINTH_AUTH_LOCKED: every password check is counted as a
 * failure until it succeeds (the lockout's atomic reservation), so more than FREE_FAILURES (5)
 * concurrent sign-ins to one account lock it for a second, and a load run has up to twice its
 * connections in flight at its start (the warm-up's last requests are still being answered).
 */
export const LOGIN_CONNECTIONS = 4

/** The child's messages over the IPC channel; the parent sends `'stop'`. */
export type ServerMessage =
  | {
      type: 'ready'
      port: number
      email: string
      password: string
      token: string
      /** LOGIN_CONNECTIONS more accounts, one per sign-in connection. */
      logins: readonly { readonly email: string; readonly password: string }[]
    }
  | { type: 'failed'; message: string }

/**
 * A bench-only route (under /api/v1) that needs a session and does nothing else (no database), so
 * that the cost of authentication itself (session lookup, permission check, per-user rate limit)
 * shows apart from the database read `GET /api/v1/me` makes.
 */
export const WHOAMI = '/bench/whoami'
