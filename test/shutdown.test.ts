import assert from 'node:assert/strict'
import { type ChildProcessWithoutNullStreams, spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import http from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { slowModule, slowRoute } from './fixtures/serve-with-slow-route.ts'
import { captureLogs } from './helpers/log-capture.ts'
import { teeChildLogs } from './helpers/run-logs.ts'
import { testConfig } from './helpers/test-config.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const NODE = join(ROOT, 'node_modules/.bin/node')
/** The machine's own Node, older than 24 here (Debian's 20), which `plinth` re-runs itself from. */
const OLD_NODE = '/usr/bin/node'
const OLD_NODE_PROBLEM = (() => {
  const version = spawnSync(OLD_NODE, ['--version'], { encoding: 'utf8' }).stdout?.trim()
  if (!version) return `no ${OLD_NODE}`
  return Number(version.slice(1).split('.')[0]) >= 24 ? `${OLD_NODE} is ${version}, not older than 24` : false
})()

/** Whether a process of this id exists (signal 0 checks without sending anything). */
/** Exited but not yet reaped by its parent (Linux: state Z in /proc). */
function isZombie(pid: number): boolean {
  try {
    return /^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** One GET on a fresh connection (no keep-alive agent), so each request really connects. */
function get(base: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(new URL(path, base), { agent: false, timeout: 15_000 }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => (body += d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error('no answer within 15 s')))
    req.on('error', reject)
  })
}

/** Polls `probe` every 25 ms until it returns true; fails after `deadlineMs`. */
async function waitFor(what: string, probe: () => boolean, deadlineMs = 10_000) {
  const until = performance.now() + deadlineMs
  while (!probe()) {
    if (performance.now() > until) assert.fail(`${what}: not within ${deadlineMs} ms`)
    await sleep(25)
  }
}

/** Rejects when `promise` takes longer than `ms`. */
function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)
  })
  return Promise.race([promise, late]).finally(() => clearTimeout(timer))
}

/**
 * Starts `GET /api/v1/test/slow?ms=…` (or, with `ms` 'held', one that ends at `slowRoute.release()`)
 * and resolves once its handler runs; `done` is the response.
 */
async function startSlow(base: string, ms: number | 'held') {
  const before = slowRoute.started
  let settled: string | undefined
  const done = get(base, ms === 'held' ? '/api/v1/test/slow?ms=0&hold=true' : `/api/v1/test/slow?ms=${ms}`)
  done.then(
    (r) => (settled = `${r.status} ${r.body}`),
    (e: Error) => (settled = String(e)),
  )
  await waitFor('slow request in flight', () => {
    if (settled !== undefined) assert.fail(`the slow request ended before its handler ran: ${settled}`)
    return slowRoute.started > before
  })
  return { done, settled: () => settled !== undefined }
}

interface Child {
  readonly proc: ChildProcessWithoutNullStreams
  /** Parsed JSON lines of stdout so far. */
  lines(): Record<string, unknown>[]
  stderr(): string
  /** Resolves with the first stdout line `match` accepts; fails when the process exits first or time runs out. */
  line(match: (l: Record<string, unknown>) => boolean, ms?: number): Promise<Record<string, unknown>>
  exit(ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

// Real processes start in parallel with the in-process tests (which stay sequential: they time
// their own event loop); every wait is bounded, and every child is killed in `after`.
describe('graceful shutdown', { concurrency: true }, () => {
  describe('in process', { concurrency: 1 }, () => {
    const plinths: TestPlinth[] = []
    after(() => Promise.all(plinths.map((p) => p.close())))
    // The boot's own event-loop stalls must not read as overload: these tests are about draining.
    const env = { HOST: '127.0.0.1', PLINTH_MAX_EVENT_LOOP_DELAY: '0' }

    it('drains: /ready 503 during the delay, in-flight request finishes, then new connections are refused', async () => {
      // Every step waits on a condition, not on a window of time: the delay is long enough for two
      // probes on a loaded machine, the request in flight is held until the listener has closed,
      // and the only time asserted is a lower bound (a late timer cannot make it fail).
      const DELAY_MS = 5000
      const plinth = await startTestPlinth({
        env: { ...env, PLINTH_SHUTDOWN_DELAY: `${DELAY_MS}ms`, PLINTH_SHUTDOWN_TIMEOUT: '60s' },
        modules: [slowModule],
      })
      plinths.push(plinth)
      const base = await plinth.listen()
      const slow = await startSlow(base, 'held')

      const started = performance.now()
      const stopping = plinth.shutdown()
      assert.equal(plinth.shutdown(), stopping, 'a second shutdown() started another one')
      assert.equal(plinth.shuttingDown, true)

      // Each probe opens a new connection: that it is answered at all shows the listener was still
      // open, that is, the delay had not ended.
      const ready = await get(base, '/ready')
      assert.equal(ready.status, 503)
      assert.deepEqual(JSON.parse(ready.body), {
        status: 'down',
        failing: [{ component: 'shutdown', error: 'shutting down' }],
      })
      assert.equal((await get(base, '/live')).status, 200)

      // After the delay the listener closes: new connections are refused while the held one goes on.
      const refusedAfter = async () => {
        for (
          const until = performance.now() + DELAY_MS + 30_000;
          performance.now() < until;
          await sleep(25)
        ) {
          const err = await get(base, '/live').then(
            () => undefined,
            (e: NodeJS.ErrnoException) => e,
          )
          if (err?.code === 'ECONNREFUSED') return performance.now() - started
        }
        return assert.fail('connections still accepted 30 s after the delay')
      }
      const refused = await refusedAfter()
      assert.ok(
        refused >= DELAY_MS - 50,
        `connections were refused ${Math.round(refused)} ms after shutdown began, before the ${DELAY_MS} ms delay ended`,
      )
      assert.equal(slow.settled(), false, 'the held request ended before it was released')

      slowRoute.release()
      const res = await within(30_000, 'the held request', slow.done)
      assert.equal(res.status, 200, res.body)
      assert.deepEqual(JSON.parse(res.body), { held: true })
      await within(30_000, 'shutdown()', stopping)
    })

    it('cuts a request slower than PLINTH_SHUTDOWN_TIMEOUT and completes within about the timeout', async () => {
      const config = testConfig({ ...env, PLINTH_SHUTDOWN_DELAY: '0', PLINTH_SHUTDOWN_TIMEOUT: '500ms' })
      const logs = captureLogs(config)
      const plinth = await startTestPlinth({ config, logger: logs.logger, modules: [slowModule] })
      plinths.push(plinth)
      const base = await plinth.listen()
      const slow = await startSlow(base, 20_000)

      const started = performance.now()
      await within(5000, 'shutdown()', plinth.shutdown())
      const elapsed = performance.now() - started
      assert.ok(elapsed >= 450, `shutdown did not wait for the request (${Math.round(elapsed)} ms)`)
      assert.ok(elapsed < 3000, `shutdown took ${Math.round(elapsed)} ms for a 500 ms timeout`)
      const err = await within(1000, 'cut request', slow.done).then(
        (r) => assert.fail(`the slow request was answered: ${r.status}`),
        (e: NodeJS.ErrnoException) => e,
      )
      assert.equal(err.code, 'ECONNRESET', String(err))
      assert.ok(logs.lines().some((l) => l.msg === 'shutdown timeout reached, closing open connections'))
    })
    it('closes idle keep-alive connections at once: they do not hold the drain, and the request in flight ends with Connection: close', async () => {
      // A timeout far above the bound below: only connections left open could make it wait that long.
      const plinth = await startTestPlinth({
        env: { ...env, PLINTH_SHUTDOWN_DELAY: '0', PLINTH_SHUTDOWN_TIMEOUT: '30s' },
        modules: [slowModule],
      })
      plinths.push(plinth)
      const base = await plinth.listen()
      const idleAgent = new http.Agent({ keepAlive: true, maxSockets: 1 })
      const busyAgent = new http.Agent({ keepAlive: true, maxSockets: 1 })
      after(() => {
        idleAgent.destroy()
        busyAgent.destroy()
      })
      const onAgent = (agent: http.Agent, path: string) =>
        new Promise<{ status: number; connection: string | undefined; body: string }>((resolve, reject) => {
          http
            .get(new URL(path, base), { agent }, (res) => {
              let body = ''
              res.setEncoding('utf8')
              res.on('data', (d: string) => (body += d))
              res.on('end', () =>
                resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body }),
              )
              res.on('error', reject)
            })
            .on('error', reject)
        })
      // Both clients hold a kept-alive connection; one of them then sends a slow request.
      const idle = await onAgent(idleAgent, '/live')
      assert.equal(idle.connection, 'keep-alive')
      await onAgent(busyAgent, '/live')
      const before = slowRoute.started
      const slow = onAgent(busyAgent, '/api/v1/test/slow?ms=1500')
      await waitFor('slow request in flight', () => slowRoute.started > before)
      const idleSocket = Object.values(idleAgent.freeSockets).flat()[0]
      assert.ok(idleSocket, 'the idle client holds no kept-alive connection: nothing proven')
      let idleClosed = false
      idleSocket.once('close', () => (idleClosed = true))

      const stopping = plinth.shutdown()
      await waitFor('the idle connection closed by the server', () => idleClosed, 5000)
      const res = await within(10_000, 'slow request', slow)
      assert.equal(res.status, 200, res.body)
      assert.deepEqual(JSON.parse(res.body), { sleptMs: 1500 })
      assert.equal(res.connection, 'close', 'an answer sent while draining must close its connection')
      // Nothing left open: the drain ends with the slow request, not at the 30 s timeout.
      await within(5000, 'shutdown()', stopping)
    })
  })

  // One process at a time: each boots its own embedded database (initdb in WebAssembly, seconds
  // of CPU), and three at once on a loaded 2-core CI machine took longer than any sane deadline.
  describe('of a real process', () => {
    const children: Child[] = []
    const dirs: string[] = []
    after(() => {
      for (const c of children) {
        if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL')
        // A relayed start's server is in its own process group (detached): it goes with the group.
        if (c.proc.spawnargs.includes('bin/plinth.js')) {
          try {
            process.kill(-c.proc.pid!, 'SIGKILL')
          } catch {}
        }
      }
      for (const d of dirs) rmSync(d, { recursive: true, force: true })
    })

    function start(
      args: string[],
      extraEnv: Record<string, string>,
      how: { node?: string; detached?: boolean } = {},
    ): Child {
      const env = {
        PATH: process.env.PATH ?? '',
        PLINTH_ENV: 'test',
        PORT: '0',
        HOST: '127.0.0.1',
        PLINTH_MAX_EVENT_LOOP_DELAY: '0',
      }
      const logEnv = { PLINTH_LOG_FORMAT: 'json', PLINTH_LOG_LEVEL: 'info' }
      const proc = spawn(how.node ?? NODE, args, {
        cwd: ROOT,
        env: { ...env, ...logEnv, ...extraEnv },
        detached: how.detached ?? false,
      })
      let out = ''
      let err = ''
      proc.stdout.on('data', (d) => (out += d))
      proc.stderr.on('data', (d) => (err += d))
      teeChildLogs(proc, extraEnv)
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
        proc.on('exit', (code, signal) => resolve({ code, signal })),
      )
      const lines = () =>
        out
          .split('\n')
          .slice(0, -1) // the last piece is an incomplete line (or empty)
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as Record<string, unknown>)
      const child: Child = {
        proc,
        lines,
        stderr: () => err,
        async line(match, ms = 90_000) {
          const until = performance.now() + ms
          for (;;) {
            const found = lines().find(match)
            if (found) return found
            if (proc.exitCode !== null || proc.signalCode !== null)
              assert.fail(`exited (${proc.exitCode ?? proc.signalCode}) first:\n${out}\n${err}`)
            if (performance.now() > until) assert.fail(`no such line within ${ms} ms:\n${out}\n${err}`)
            await sleep(25)
          }
        },
        exit: (ms) => within(ms, 'process exit', exited),
      }
      children.push(child)
      return child
    }
    const fixture = (env: Record<string, string>) =>
      start(['test/fixtures/serve-with-slow-route.ts'], { PLINTH_DATA_DIR: 'memory://', ...env })
    const cli = (dataDir: string) => start(['src/main.ts', 'start'], { PLINTH_DATA_DIR: dataDir })
    /**
     * `plinth start` started by an older Node, which re-runs itself on Node 24 and relays its
     * signals (bin/plinth.js), on a new data directory; resolves once it listens. Detached: its
     * process group is its own, as a terminal's foreground job's would be. `server` is the re-run's
     * pid (from the data directory's lock), never the process spawned here.
     */
    const relayed = async (env: Record<string, string> = {}) => {
      const dataDir = mkdtempSync(join(tmpdir(), 'plinth-relay-'))
      dirs.push(dataDir)
      const child = start(
        ['bin/plinth.js', 'start'],
        { PLINTH_DATA_DIR: dataDir, ...env },
        { node: OLD_NODE, detached: true },
      )
      await listening(child)
      const server = Number(readFileSync(join(dataDir, 'plinth.lock'), 'utf8').trim())
      assert.notEqual(server, child.proc.pid)
      return { child, dataDir, server }
    }
    const listening = async (c: Child) => String((await c.line((l) => l.msg === 'plinth listening')).address)
    const has = (c: Child, msg: string) => c.lines().some((l) => l.msg === msg)

    it('on SIGTERM finishes the request in flight and exits 0', async () => {
      const child = fixture({ PLINTH_SHUTDOWN_DELAY: '200ms' })
      const base = await listening(child)
      const slow = get(base, '/api/v1/test/slow?ms=1000')
      await child.line((l) => l.msg === 'slow request started', 15_000)
      child.proc.kill('SIGTERM')
      const res = await within(15_000, 'slow request', slow)
      assert.equal(res.status, 200, res.body)
      assert.deepEqual(await child.exit(15_000), { code: 0, signal: null })
      assert.ok(has(child, 'signal received, shutting down'))
      assert.ok(has(child, 'shutdown complete'), 'no "shutdown complete" line')
    })

    it('a second SIGTERM during the drain forces the exit with code 1', async () => {
      const child = fixture({ PLINTH_SHUTDOWN_DELAY: '30s' })
      await listening(child)
      child.proc.kill('SIGTERM')
      await child.line((l) => l.msg === 'shutdown started', 15_000)
      child.proc.kill('SIGTERM')
      // Promptly: the 30 s drain is not waited for (15 s of slack for a loaded CI machine).
      assert.deepEqual(await child.exit(15_000), { code: 1, signal: null })
      assert.ok(has(child, 'second signal, forcing exit'), 'no "second signal, forcing exit" line')
    })

    it('started by an older Node: a SIGTERM to the `plinth` process stops the server it re-ran, gracefully', {
      skip: OLD_NODE_PROBLEM,
    }, async () => {
      const { child, dataDir, server } = await relayed()
      child.proc.kill('SIGTERM')
      assert.deepEqual(await child.exit(20_000), { code: 0, signal: null })
      assert.equal(isAlive(server), false, 'the server outlived the plinth process')
      assert.equal(child.lines().filter((l) => l.msg === 'signal received, shutting down').length, 1)
      assert.ok(has(child, 'shutdown complete'), 'no "shutdown complete" line')
      assert.equal(existsSync(join(dataDir, 'plinth.lock')), false, 'the lock outlived a clean exit')
    })

    it('started by an older Node: a kill -9 of the `plinth` process still stops the server it re-ran, gracefully', {
      skip: OLD_NODE_PROBLEM,
    }, async () => {
      const { child, dataDir, server } = await relayed()
      child.proc.kill('SIGKILL')
      assert.deepEqual(await child.exit(20_000), { code: null, signal: 'SIGKILL' })
      // No signal reaches the server: its end of the IPC channel closes, and it shuts down.
      // Orphaned, it is reaped by whoever adopts it (init, or not at all in some containers): a
      // zombie counts as exited.
      await waitFor('the server to exit', () => !isAlive(server) || isZombie(server), 20_000)
      assert.equal(existsSync(join(dataDir, 'plinth.lock')), false, 'the server did not exit cleanly')
    })

    it('started by an older Node: Ctrl-C (SIGINT to the process group, so twice to the server) is one signal', {
      skip: OLD_NODE_PROBLEM,
    }, async () => {
      const { child } = await relayed()
      process.kill(-child.proc.pid!, 'SIGINT')
      assert.deepEqual(await child.exit(20_000), { code: 0, signal: null })
      assert.equal(
        has(child, 'second signal, forcing exit'),
        false,
        'the relayed copy counted as a second signal',
      )
      assert.ok(has(child, 'shutdown complete'), 'no "shutdown complete" line')
    })

    it('started by an older Node: a second Ctrl-C right after the first forces the exit', {
      skip: OLD_NODE_PROBLEM,
    }, async () => {
      const { child } = await relayed({ PLINTH_SHUTDOWN_DELAY: '30s' })
      process.kill(-child.proc.pid!, 'SIGINT')
      await child.line((l) => l.msg === 'shutdown started', 15_000)
      process.kill(-child.proc.pid!, 'SIGINT')
      // Promptly: the 30 s drain is not waited for.
      assert.deepEqual(await child.exit(20_000), { code: 1, signal: null })
      assert.ok(has(child, 'second signal, forcing exit'), 'the second Ctrl-C was taken for a relayed copy')
      assert.equal(child.lines().filter((l) => l.msg === 'signal received, shutting down').length, 1)
    })

    it('`plinth start` keeps its data across restarts, refuses a second process and takes over a dead one’s lock', async () => {
      const dataDir = mkdtempSync(join(tmpdir(), 'plinth-shutdown-'))
      dirs.push(dataDir)
      const lockFile = join(dataDir, 'plinth.lock')

      const first = cli(dataDir)
      const base = await listening(first)
      // A fresh data directory gets the schema: migrations applied, or the cached migrated
      // cluster of the same migration set loaded or copied (decisions 0013, 0034).
      const origin = (c: Child) => c.lines().find((l) => l.msg === 'embedded database ready')?.origin
      assert.ok(
        has(first, 'migration applied') || ['migrated', 'copied'].includes(String(origin(first))),
        'a fresh data directory got no migration',
      )
      assert.equal((await get(base, '/live')).status, 200)
      first.proc.kill('SIGTERM')
      assert.deepEqual(await first.exit(20_000), { code: 0, signal: null })
      assert.equal(existsSync(lockFile), false, 'the lock outlived a clean exit')

      const second = cli(dataDir)
      const secondBase = await listening(second)
      assert.equal(has(second, 'migration applied'), false, 'the restart applied migrations again: data lost')
      assert.equal(origin(second), 'existing', 'the restart did not reopen the existing cluster')
      assert.equal((await get(secondBase, '/ready')).status, 200)
      assert.equal(readFileSync(lockFile, 'utf8').trim(), String(second.proc.pid))

      const third = cli(dataDir)
      assert.equal((await third.exit(30_000)).code, 1)
      assert.match(third.stderr(), /\[PLINTH_DB_LOCKED\]/)
      assert.match(third.stderr(), new RegExp(`in use by process ${second.proc.pid}\\b`))
      assert.match(third.stderr(), /PLINTH_DATA_DIR|DATABASE_URL/)

      second.proc.kill('SIGKILL')
      await second.exit(10_000)
      assert.equal(existsSync(lockFile), true, 'kill -9 should leave the lock behind')

      const fourth = cli(dataDir)
      const fourthBase = await listening(fourth)
      assert.equal(has(fourth, 'migration applied'), false, 'data lost after kill -9')
      assert.equal(readFileSync(lockFile, 'utf8').trim(), String(fourth.proc.pid))
      assert.equal((await get(fourthBase, '/ready')).status, 200)
      fourth.proc.kill('SIGTERM')
      assert.deepEqual(await fourth.exit(20_000), { code: 0, signal: null })
    })
  })
})
