import { execFileSync, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createServer } from 'node:net'
import pg from 'pg'
import { REQUIRE_SERVICES } from './services.ts'
import { waitFor } from './wait-for.ts'

/**
 * A PostgreSQL cluster of its own (Debian `pg_createcluster`, trust auth, a spare port, reached over
 * the Unix socket in /var/run/postgresql), for tests that change server settings or restore data
 * directories: PITR and DR drills. Needs root (pg_createcluster makes directories owned by postgres).
 */
export interface SpareCluster {
  readonly name: string
  readonly version: string
  readonly port: number
  readonly dataDir: string
  readonly socket: string
  /** `postgresql://postgres@localhost:PORT/DB?host=/var/run/postgresql` (the socket; the port names it) */
  url(database?: string): string
  start(): void
  stop(): void
  restart(): void
  /** Stops and removes the cluster, its data directory and its configuration. */
  drop(): void
}

function has(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0
}

/** `false` when spare clusters and pgBackRest can be made here, else the reason (throws under PLINTH_TEST_REQUIRE_SERVICES). */
export function skipUnlessSpareClusters(tools: readonly string[] = ['pgbackrest']): false | string {
  const missing = ['pg_createcluster', 'pg_ctlcluster', ...tools].filter((t) => !has(t))
  let why: string | undefined
  if (process.getuid?.() !== 0) why = 'spare PostgreSQL clusters need root (pg_createcluster)'
  else if (missing.length > 0)
    why = `missing ${missing.join(', ')} (apt-get install postgresql-common pgbackrest)`
  if (!why) return false
  if (REQUIRE_SERVICES) throw new Error(why)
  return why
}

export async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  await new Promise((resolve) => server.close(resolve))
  return port
}

function serverVersion(): string {
  const out = execFileSync('pg_lsclusters', ['--no-header'], { encoding: 'utf8' })
  return out.trim().split('\n')[0]!.split(/\s+/)[0]!
}

export async function createSpareCluster(prefix = 'plinth_t'): Promise<SpareCluster> {
  const version = serverVersion()
  const name = `${prefix}_${randomBytes(4).toString('hex')}`
  const port = await freePort()
  execFileSync(
    'pg_createcluster',
    [version, name, '-p', String(port), '--', '--auth-local=trust', '--auth-host=trust'],
    { stdio: 'ignore' },
  )
  const socket = '/var/run/postgresql'
  const ctl = (action: string) =>
    execFileSync('pg_ctlcluster', ['--skip-systemctl-redirect', version, name, action], { stdio: 'ignore' })
  const cluster: SpareCluster = {
    name,
    version,
    port,
    dataDir: `/var/lib/postgresql/${version}/${name}`,
    socket,
    url: (database = 'postgres') =>
      `postgresql://postgres@localhost:${port}/${database}?host=${encodeURIComponent(socket)}`,
    start: () => {
      const running =
        spawnSync('pg_ctlcluster', ['--skip-systemctl-redirect', version, name, 'status'], {
          stdio: 'ignore',
        }).status === 0
      if (!running) ctl('start')
    },
    stop: () => {
      spawnSync('pg_ctlcluster', ['--skip-systemctl-redirect', version, name, 'stop'], { stdio: 'ignore' })
    },
    restart: () => ctl('restart'),
    drop: () => {
      spawnSync('pg_dropcluster', [version, name, '--stop'], { stdio: 'ignore' })
    },
  }
  return cluster
}

/** Starts the cluster (unless it runs) and waits until it accepts connections (a restored one first recovers). */
export async function startAndWait(cluster: SpareCluster, timeoutMs = 60_000): Promise<void> {
  cluster.start()
  await waitFor(
    `cluster ${cluster.name} to accept connections out of recovery`,
    async () => {
      const c = new pg.Client({ connectionString: cluster.url() })
      c.on('error', () => {})
      try {
        await c.connect()
        const { rows } = await c.query<{ r: boolean }>('select pg_is_in_recovery() as r')
        return rows[0]?.r === false
      } catch {
        return false
      } finally {
        await c.end().catch(() => {})
      }
    },
    { timeoutMs, intervalMs: 200 },
  )
}
