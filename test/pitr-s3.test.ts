import assert from 'node:assert/strict'
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process'
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import { runCliWithEnv as cli } from './helpers/run-cli.ts'
import {
  createSpareCluster,
  freePort,
  type SpareCluster,
  skipUnlessSpareClusters,
  startAndWait,
} from './helpers/spare-cluster.ts'
import { waitFor } from './helpers/wait-for.ts'

const skip =
  skipUnlessSpareClusters(['pgbackrest', 'openssl']) ||
  (spawnSync('sh', ['-c', 'command -v haproxy']).status === 0
    ? false
    : 'missing haproxy (apt-get install haproxy): the TLS proxy in front of s3rver')
const BUCKET = 'pgbackrest-repo'

async function query<T extends pg.QueryResultRow>(url: string, text: string): Promise<T[]> {
  const c = new pg.Client({ connectionString: url })
  await c.connect()
  try {
    return (await c.query<T>(text)).rows
  } finally {
    await c.end()
  }
}

function stop(child: ChildProcess | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (!child || child.exitCode !== null || child.signalCode !== null) return resolve()
    child.once('exit', () => resolve())
    child.kill('SIGTERM')
  })
}

/** s3rver (plain HTTP) on a free port, in its own process. */
async function startS3rver(dir: string): Promise<{ port: number; child: ChildProcess }> {
  const bin = createRequire(import.meta.url).resolve('s3rver/bin/s3rver.js')
  const child = spawn(
    process.execPath,
    [bin, '-d', dir, '-a', '127.0.0.1', '-p', '0', '--configure-bucket', BUCKET],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  const port = await new Promise<number>((resolve, reject) => {
    let out = ''
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString()
      const m = /listening on \S+:(\d+)/.exec(out)
      if (m) resolve(Number(m[1]))
    })
    child.on('exit', (code) => reject(new Error(`s3rver exited (${code}): ${out}`)))
  })
  return { port, child }
}

/**
 * A CA and a server certificate for `localhost` made with openssl, and haproxy terminating TLS with
 * it in front of s3rver (pgBackRest speaks HTTPS only).
 */
async function startTlsProxy(
  dir: string,
  backendPort: number,
): Promise<{ port: number; ca: string; child: ChildProcess }> {
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' })
  ssl(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    'ca.key',
    '-out',
    'ca.crt',
    '-days',
    '1',
    '-subj',
    '/CN=Plinth test CA',
  )
  ssl(
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    'server.key',
    '-out',
    'server.csr',
    '-subj',
    '/CN=localhost',
  )
  writeFileSync(join(dir, 'san.cnf'), 'subjectAltName=DNS:localhost\n')
  ssl(
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca.crt',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    'server.crt',
    '-days',
    '1',
    '-extfile',
    'san.cnf',
  )
  execFileSync('sh', ['-c', 'cat server.crt server.key > server.pem'], { cwd: dir })
  const port = await freePort()
  writeFileSync(
    join(dir, 'haproxy.cfg'),
    [
      'global',
      '  maxconn 200',
      'defaults',
      '  mode tcp',
      '  timeout connect 5s',
      '  timeout client 120s',
      '  timeout server 120s',
      'frontend s3_tls',
      `  bind 127.0.0.1:${port} ssl crt ${join(dir, 'server.pem')}`,
      '  default_backend s3rver',
      'backend s3rver',
      `  server s3rver 127.0.0.1:${backendPort}`,
      '',
    ].join('\n'),
  )
  const child = spawn('haproxy', ['-db', '-f', join(dir, 'haproxy.cfg')], { stdio: 'ignore' })
  await waitFor(
    'the TLS proxy to answer',
    async () => {
      try {
        execFileSync(
          'openssl',
          [
            's_client',
            '-connect',
            `127.0.0.1:${port}`,
            '-CAfile',
            join(dir, 'ca.crt'),
            '-verify_return_error',
            '-brief',
          ],
          {
            input: '',
            stdio: ['pipe', 'ignore', 'ignore'],
            timeout: 5000,
          },
        )
        return true
      } catch {
        return false
      }
    },
    { timeoutMs: 20_000, intervalMs: 200 },
  )
  return { port, ca: join(dir, 'ca.crt'), child }
}

/**
 * A pgBackRest repository in an S3 bucket (`repo1-type=s3`): s3rver behind haproxy with a CA the
 * test makes, WAL archived there, a full backup, and a point-in-time restore from the bucket.
 */
describe('plinth pitr with the repository on S3 (s3rver behind a TLS proxy)', { skip }, () => {
  let source: SpareCluster
  let restored: SpareCluster
  let dir: string
  let s3: ChildProcess | undefined
  let proxy: ChildProcess | undefined
  let env: Record<string, string>

  before(async () => {
    dir = mkdtempSync('/tmp/plinth-pitr-s3-')
    chmodSync(dir, 0o755) // the server's user reads the CA and walks to its log and spool directories
    const server = await startS3rver(join(dir, 's3'))
    s3 = server.child
    const tls = await startTlsProxy(dir, server.port)
    proxy = tls.child
    chmodSync(tls.ca, 0o644)
    source = await createSpareCluster('plinth_pitr_s3')
    restored = await createSpareCluster('plinth_pitr_s3r')
    await startAndWait(source)
    env = {
      PLINTH_ENV: 'test',
      PLINTH_LOG_LEVEL: 'silent',
      PLINTH_DATA_DIR: 'memory://',
      DATABASE_URL: source.url(),
      PLINTH_PITR_STANZA: 'plinth',
      PLINTH_PITR_PG_DATA: source.dataDir,
      PLINTH_PITR_PG_PORT: String(source.port),
      PLINTH_PITR_PG_SOCKET: source.socket,
      PLINTH_PITR_REPO_PATH: join(dir, 'pgbackrest'),
      PLINTH_PITR_CIPHER_PASS: 'a-test-passphrase-of-some-length',
      PLINTH_PITR_OS_USER: 'postgres',
      PLINTH_PITR_ARCHIVE_TIMEOUT: '10s',
      PLINTH_PITR_S3_BUCKET: BUCKET,
      PLINTH_PITR_S3_ENDPOINT: `https://localhost:${tls.port}`,
      PLINTH_PITR_S3_ACCESS_KEY_ID: 'S3RVER',
      PLINTH_PITR_S3_SECRET_ACCESS_KEY: 'S3RVER',
      PLINTH_PITR_S3_PATH_STYLE: 'true',
      PLINTH_PITR_S3_CA_FILE: tls.ca,
    }
  })

  after(async () => {
    source?.drop()
    restored?.drop()
    await stop(proxy)
    await stop(s3)
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  it('refuses a bucket without credentials, naming them', async () => {
    const r = await cli(['pitr', 'status'], { ...env, PLINTH_PITR_S3_SECRET_ACCESS_KEY: '' })
    assert.equal(r.code, 1)
    assert.match(r.err, /PLINTH_PITR_NOT_CONFIGURED/)
    assert.match(r.err, /PLINTH_PITR_S3_SECRET_ACCESS_KEY/)
  })

  it('archives WAL into the bucket over TLS, backs up, and restores to a point in time from it', async () => {
    const applied = await cli(['pitr', 'setup', '--apply', '--json'], env)
    assert.equal(JSON.parse(applied.out).restartNeeded, true, applied.err)
    source.restart()
    await startAndWait(source)
    const ready = await cli(['pitr', 'setup', '--json'], env)
    assert.equal(ready.code, 0, `${ready.out}\n${ready.err}`)
    const setup = JSON.parse(ready.out)
    assert.match(
      setup.steps.find((s: { name: string }) => s.name === 'stanza').detail,
      new RegExp(`s3://${BUCKET}/pgbackrest`),
    )

    const db = source.url()
    await query(
      db,
      'create table canary (n int primary key, at timestamptz not null default clock_timestamp())',
    )
    const full = await cli(['pitr', 'backup', '--type', 'full', '--json'], env)
    assert.equal(full.code, 0, full.err)
    let n = 0
    const write = async (count: number) => {
      for (let i = 0; i < count; i++) {
        n += 1
        await query(db, `insert into canary (n) values (${n})`)
        await sleep(200)
      }
    }
    await write(5)
    const [row] = await query<{ t: string }>(
      db,
      `select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as t`,
    )
    const targetTime = row!.t
    await write(5)
    const expected = (
      await query<{ n: number }>(db, `select n from canary where at <= '${targetTime}' order by n`)
    ).map((r) => r.n)
    await query(db, 'select pg_switch_wal()')
    await waitFor(
      'the WAL to reach the bucket',
      async () => {
        const r = await cli(['pitr', 'status', '--json'], env)
        return r.code === 0 && JSON.parse(r.out).archive.pendingBytes === 0
      },
      { timeoutMs: 60_000, intervalMs: 500 },
    )
    const verify = await cli(['pitr', 'verify', '--json'], env)
    assert.equal(verify.code, 0, verify.err)

    // The repository is in the bucket (s3rver's directory), not on the local disk.
    assert.ok(existsSync(join(dir, 's3', BUCKET)))
    assert.equal(existsSync(join(dir, 'pgbackrest', 'repo')), false)
    const objects = execFileSync('find', [join(dir, 's3', BUCKET), '-type', 'f'], { encoding: 'utf8' })
    assert.match(objects, /pgbackrest\/archive\/plinth\//)
    assert.match(objects, /pgbackrest\/backup\/plinth\//)

    restored.stop()
    for (const f of readdirSync(restored.dataDir)) rmSync(join(restored.dataDir, f), { recursive: true })
    const r = await cli(
      ['pitr', 'restore', '--to-time', targetTime, '--pg-data', restored.dataDir, '--yes', '--json'],
      env,
    )
    assert.equal(r.code, 0, r.err)
    await startAndWait(restored)
    const got = (await query<{ n: number }>(restored.url(), 'select n from canary order by n')).map(
      (x) => x.n,
    )
    assert.deepEqual(got, expected, 'exactly the canaries committed up to the target time, from the bucket')
    console.log(
      `PITR from S3 over TLS: ${got.length} canaries up to the target, restore ${JSON.parse(r.out).durationMs} ms`,
    )
  })
})
