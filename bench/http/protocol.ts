/** What bench/http/run.ts and its server child (bench/http/server.ts) share. */

/** The child's messages over the IPC channel; the parent sends `'stop'`. `token` is '' for bare. */
export type ServerMessage =
  | { type: 'ready'; port: number; token: string }
  | { type: 'failed'; message: string }

/** POST (bench-only, under /api/v1): update a random one of ITEMS rows in a transaction. */
export const WRITE = '/bench/write'
/** Rows the write picks from at random, so that writers rarely wait on one another's row lock. */
export const ITEMS = 1000
/** GET (bench-only, under /api/v1): the embedded database's session queue counters, `{ stats }` (null on PostgreSQL). */
export const QUEUE_STATS = '/bench/queue-stats'
