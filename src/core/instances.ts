/**
 * Bringing up another Plinth: what a disaster-recovery drill needs to prove that a restored copy
 * serves (`/ready` 200), and what no module can do itself (a module cannot build a Plinth; only the
 * composition root knows how). The root puts an implementation in every module context as
 * `ctx.instances`: it starts `plinth start` (role `api`, no workers, no Redis) in a process of its
 * own on 127.0.0.1 at a spare port, with this process's configuration pointed at the given database.
 */

/** The database the new Plinth runs on: a PostgreSQL server database, or an embedded data directory. */
export type InstanceDatabase = { readonly databaseUrl: string } | { readonly dataDir: string }

/** A Plinth started by `InstanceLauncher.launch`. */
export interface LaunchedInstance {
  /** `http://127.0.0.1:<port>`. */
  readonly address: string
  /**
   * A connection string to the database as that Plinth serves it: the server database, or for an
   * embedded data directory the socket the running Plinth opens in it (`host=<dir>`, port 5432).
   */
  readonly databaseUrl: string
  /** The process id (undefined once it is gone). */
  readonly pid: number | undefined
  /**
   * Polls `<address>/ready` until it answers 200, the process exits, or `timeoutMs` passes. Never
   * throws: `detail` says what happened (an early exit carries the last lines the process logged).
   */
  waitReady(timeoutMs: number): Promise<{ readonly ok: boolean; readonly detail: string }>
  /** SIGTERM, then SIGKILL after a grace period; resolves once the process has exited. */
  stop(): Promise<void>
}

export interface InstanceLauncher {
  /**
   * Starts a Plinth on `database` (pending migrations are applied, as a recovering server would).
   * Resolves once the process is spawned, not once it is ready: call `waitReady`.
   */
  launch(database: InstanceDatabase): Promise<LaunchedInstance>
}
