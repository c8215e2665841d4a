/**
 * A small production fleet on this machine: Plinth replicas as real processes (`plinth start`,
 * production settings) on spare ports, behind a real HAProxy configured with Plinth's policy
 * (deploy/haproxy/defaults.cfg), on real PostgreSQL and Redis. Used by the rolling-deploy and
 * scale tests.
 */
import assert from 'node:assert/strict'
import { type ChildProcessWithoutNullStreams, spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { sparePort } from '../../src/infra/net/spare-port.ts'
import { recordEnvSecrets, recordSecret, teeChildLogs } from './run-logs.ts'
import { TEST_REDIS_URL } from './services.ts'
import { createTestDatabase, type TestDatabase } from './test-database.ts'
import { waitFor } from './wait-for.ts'

export { sparePort }

export const ROOT = fileURLToPath(new URL('../..', import.meta.url))

/** False when HAProxy runs here, else why not (the tests skip with it). */
export function skipUnlessHaproxy(): false | string {
  const probe = spawnSync('haproxy', ['-v'], { encoding: 'utf8' })
  if (probe.error || probe.status !== 0)
    return 'haproxy is not installed (Debian package haproxy; .ci/run installs it): fleet tests skipped'
  return false
}

/** What every replica of one fleet shares: keys, database, Redis namespace. */
export function fleetEnv(databaseUrl: string, extra: Record<string, string> = {}): Record<string, string> {
  const env = {
    PATH: process.env.PATH ?? '',
    PLINTH_ENV: 'production',
    PLINTH_SECRET_KEY: randomBytes(48).toString('base64'),
    PLINTH_MASTER_KEY: randomBytes(32).toString('base64'),
    HOST: '127.0.0.1',
    DATABASE_URL: databaseUrl,
    REDIS_URL: TEST_REDIS_URL,
    // One namespace per fleet: the shared test Redis holds other runs' keys too.
    PLINTH_REDIS_PREFIX: `fleet-${process.pid}-${randomBytes(3).toString('hex')}:`,
    PLINTH_REPLICAS: '3',
    PLINTH_TRUST_PROXY: '127.0.0.1/32',
    PLINTH_LOG_FORMAT: 'json',
    PLINTH_LOG_LEVEL: 'info',
    PLINTH_SHUTDOWN_DELAY: '5s',
    PLINTH_SHUTDOWN_TIMEOUT: '20s',
    ...extra,
  }
  recordEnvSecrets(env)
  return env
}

export interface Replica {
  readonly name: string
  readonly port: number
  readonly proc: ChildProcessWithoutNullStreams
  /** JSON log lines so far. */
  lines(): Record<string, unknown>[]
  /** Resolves when it logs `plinth listening`; rejects if it exits first. */
  readonly listening: Promise<void>
  readonly exited: Promise<number | null>
  /** SIGTERM, then the exit code. */
  stop(): Promise<number | null>
}

export function startReplica(name: string, port: number, env: Record<string, string>): Replica {
  const full = { ...env, PORT: String(port) }
  const proc = spawn(process.execPath, ['src/main.ts', 'start'], { cwd: ROOT, env: full })
  teeChildLogs(proc, full)
  const lines: Record<string, unknown>[] = []
  let buffered = ''
  let stderr = ''
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)))
  const listening = new Promise<void>((resolve, reject) => {
    proc.stdout.on('data', (d: Buffer) => {
      buffered += d.toString('utf8')
      let nl = buffered.indexOf('\n')
      while (nl >= 0) {
        const line = buffered.slice(0, nl)
        buffered = buffered.slice(nl + 1)
        try {
          const parsed = JSON.parse(line) as Record<string, unknown>
          lines.push(parsed)
          if (parsed.msg === 'plinth listening') resolve()
        } catch {}
        nl = buffered.indexOf('\n')
      }
    })
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')))
    void exited.then((code) =>
      reject(new Error(`replica ${name} exited (${code}) before listening: ${stderr}`)),
    )
  })
  listening.catch(() => undefined)
  return {
    name,
    port,
    proc,
    lines: () => lines,
    listening,
    exited,
    stop() {
      if (proc.exitCode === null) proc.kill('SIGTERM')
      return exited
    },
  }
}

export interface ServerStat {
  readonly status: string
  /** Requests this server was sent (HAProxy's stot: sessions in total). */
  readonly sessions: number
}

export interface Haproxy {
  readonly port: number
  /** `show stat` of the backend's servers, by name. */
  stats(): Promise<Map<string, ServerStat>>
  /** Waits until HAProxy's health checks put `server` into `status` (UP or DOWN). */
  waitFor(server: string, status: 'UP' | 'DOWN', timeoutMs?: number): Promise<void>
  stop(): Promise<void>
}

/**
 * HAProxy on a spare port in front of `servers`, with deploy/haproxy/defaults.cfg loaded first.
 * A server whose port nothing listens on is simply DOWN: slots for later releases can be declared
 * up front. `weights` gives the canary split.
 */
export async function startHaproxy(
  servers: readonly { name: string; port: number; weight?: number }[],
): Promise<Haproxy> {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-haproxy-'))
  const port = await sparePort()
  const socket = join(dir, 'admin.sock')
  writeFileSync(
    join(dir, 'test.cfg'),
    [
      'global',
      `    stats socket ${socket} mode 600 level admin`,
      'frontend plinth',
      `    bind 127.0.0.1:${port}`,
      '    default_backend plinth_api',
      'backend plinth_api',
      '    balance roundrobin',
      ...servers.map((s) => `    server ${s.name} 127.0.0.1:${s.port} weight ${s.weight ?? 100}`),
      '',
    ].join('\n'),
  )
  const proc = spawn('haproxy', [
    '-db',
    '-f',
    join(ROOT, 'deploy/haproxy/defaults.cfg'),
    '-f',
    join(dir, 'test.cfg'),
  ])
  let output = ''
  proc.stdout.on('data', (d) => (output += d))
  proc.stderr.on('data', (d) => (output += d))
  const exited = new Promise<void>((resolve) => proc.on('exit', () => resolve()))

  const command = (cmd: string) =>
    new Promise<string>((resolve, reject) => {
      const conn = connect(socket)
      let answer = ''
      conn.on('connect', () => conn.end(`${cmd}\n`))
      conn.on('data', (d) => (answer += d))
      conn.on('end', () => resolve(answer))
      conn.on('error', reject)
    })

  async function stats(): Promise<Map<string, ServerStat>> {
    const csv = await command('show stat')
    const [header, ...rows] = csv.trim().split('\n')
    const columns = header!.replace(/^# /, '').split(',')
    const at = (name: string) => columns.indexOf(name)
    const result = new Map<string, ServerStat>()
    for (const row of rows) {
      const cells = row.split(',')
      if (cells[at('pxname')] !== 'plinth_api' || ['FRONTEND', 'BACKEND'].includes(cells[at('svname')]!))
        continue
      result.set(cells[at('svname')]!, {
        status: cells[at('status')]!,
        sessions: Number(cells[at('stot')]),
      })
    }
    return result
  }

  await waitFor(
    'HAProxy to answer on its admin socket',
    async () => {
      if (proc.exitCode !== null) assert.fail(`haproxy exited: ${output}`)
      return (await stats().catch(() => undefined))?.size === servers.length
    },
    { timeoutMs: 15_000 },
  )
  return {
    port,
    stats,
    async waitFor(server, status, timeoutMs = 60_000) {
      await waitFor(
        `HAProxy to mark ${server} ${status}`,
        async () => (await stats()).get(server)?.status.startsWith(status),
        { timeoutMs, intervalMs: 100 },
      )
    },
    async stop() {
      proc.kill('SIGTERM')
      await exited
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/** Signs in through `base` and returns the session token. */
export async function signIn(base: string, email: string, password: string): Promise<string> {
  recordSecret('password', password)
  const res = await fetch(`${base}/api/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password }),
  })
  assert.equal(res.status, 200, await res.clone().text())
  const body = (await res.json()) as { token: string; mfaRequired: boolean }
  assert.equal(body.mfaRequired, false)
  recordSecret('session token', body.token)
  return body.token
}

export interface FleetOptions {
  /**
   * Replicas to start now, by name: the first migrates and creates the administrator, then the
   * others start together. HAProxy waits until each is UP.
   */
  readonly replicas: readonly string[]
  /** Further servers HAProxy lists on spare ports nothing listens on yet (DOWN until `start`ed). */
  readonly slots?: readonly string[]
  /** The administrator `PLINTH_ADMIN_EMAIL`/`_PASSWORD` creates. */
  readonly admin: { readonly email: string; readonly password: string }
  /** Settings every replica shares, over fleetEnv's. */
  readonly env?: Record<string, string>
  /** One replica's own settings (e.g. its revision), over the shared ones. */
  readonly envFor?: (name: string) => Record<string, string>
}

export interface Fleet {
  readonly db: TestDatabase
  /** The shared settings (fleetEnv plus `env`). */
  readonly env: Record<string, string>
  readonly proxy: Haproxy
  /** HAProxy's address: `http://127.0.0.1:<port>`. */
  readonly base: string
  /** Every replica started so far, in order, including stopped ones. */
  readonly replicas: Replica[]
  readonly ports: ReadonlyMap<string, number>
  /** Starts a replica on the port of a declared replica or slot, with the fleet's settings over `env`. */
  start(name: string, env?: Record<string, string>): Replica
  /** SIGKILLs every replica, stops HAProxy and drops the database. */
  stop(): Promise<void>
}

/**
 * The setup the rolling-deploy and scale tests share: a database of their own, the replicas as
 * processes on spare ports with one set of keys and one Redis namespace, and HAProxy (with
 * deploy/haproxy/defaults.cfg) in front of them and of any spare slots, checked UP and DOWN.
 */
export async function startFleet(options: FleetOptions): Promise<Fleet> {
  const db = await createTestDatabase()
  const env = fleetEnv(db.url, {
    PLINTH_ADMIN_EMAIL: options.admin.email,
    PLINTH_ADMIN_PASSWORD: options.admin.password,
    ...options.env,
  })
  const ports = new Map<string, number>()
  for (const name of [...options.replicas, ...(options.slots ?? [])]) ports.set(name, await sparePort())
  const replicas: Replica[] = []
  let proxy: Haproxy | undefined
  const start = (name: string, extra: Record<string, string> = {}) => {
    const port = ports.get(name)
    assert.ok(port, `no replica or slot named ${name}`)
    const replica = startReplica(name, port, { ...env, ...options.envFor?.(name), ...extra })
    replicas.push(replica)
    return replica
  }
  const stop = async () => {
    for (const r of replicas) r.proc.kill('SIGKILL')
    await Promise.all(replicas.map((r) => r.exited))
    await proxy?.stop()
    await db.drop()
  }
  try {
    const [first, ...rest] = options.replicas
    assert.ok(first, 'a fleet needs a replica')
    await start(first).listening
    await Promise.all(rest.map((name) => start(name).listening))
    proxy = await startHaproxy([...ports].map(([name, port]) => ({ name, port })))
    for (const name of options.replicas) await proxy.waitFor(name, 'UP')
    // HAProxy starts every server as up until its checks say otherwise: no traffic before the empty
    // slots are known DOWN (a request sent there would be retried elsewhere, but counted there).
    for (const name of options.slots ?? []) await proxy.waitFor(name, 'DOWN')
  } catch (err) {
    await stop()
    throw err
  }
  return { db, env, proxy, base: `http://127.0.0.1:${proxy.port}`, replicas, ports, start, stop }
}
