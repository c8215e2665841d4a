import assert from 'node:assert/strict'
import { execFile, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmodSync, cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import { parse } from 'yaml'
import { PASSWORD, uniqueEmail } from './helpers/accounts.ts'
import { ROOT, sparePort } from './helpers/fleet.ts'
import { recordSecret, type SecretKind } from './helpers/run-logs.ts'
import { waitFor } from './helpers/wait-for.ts'

// The production compose stack, started for real: deploy/compose.production.yaml run unchanged by
// podman-compose (Debian podman-compose, Podman with runc and netavark), with the Plinth image built
// by deploy/build-image.sh and local stand-ins, under the real names, for the third-party images
// (deploy/podman/standin-services.sh: no registry here). Then: both API replicas ready behind the
// TLS proxy, sign-up and sign-in through it, the worker running a job, PostgreSQL archiving WAL,
// Prometheus scraping every Plinth process and loading the rules, Alertmanager up, the secrets read
// from files, and `down` stopping every process cleanly inside its grace period.

const CONTAINERS_CONF = join(ROOT, 'deploy/podman/containers.conf')
const env = { ...process.env, CONTAINERS_CONF }
const run = promisify(execFile)
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }
/** Plinth's drain (5 s delay + up to 30 s in flight) and the compose file's stop_grace_period. */
const GRACE_SECONDS = 45

function problem(): string | false {
  const info = spawnSync('podman', ['info', '--format', '{{.Host.NetworkBackend}}'], {
    env,
    encoding: 'utf8',
  })
  if (info.error)
    return 'podman is not installed (Debian: apt-get install podman runc; .ci/run installs them)'
  if (info.status !== 0) return `podman cannot run here: ${info.stderr.trim().split('\n').at(-1)}`
  if (info.stdout.trim() !== 'netavark')
    return `podman uses ${info.stdout.trim()}, not netavark (Debian: apt-get install netavark aardvark-dns)`
  if (spawnSync('podman-compose', ['version'], { env }).error)
    return 'podman-compose is not installed (Debian: apt-get install podman-compose; .ci/run installs it)'
  for (const tool of ['openssl', 'curl', 'mmdebstrap'])
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `${tool} is not installed`
  return false
}
const skip = problem()
if (skip) console.log(`# compose stack test skipped: ${skip}`)

const sh = async (file: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) =>
  (await run(file, args, { env, maxBuffer: 1 << 26, ...options })).stdout.trim()
const podman = (...args: string[]) => sh('podman', args)
const seconds = (since: number) => (performance.now() - since) / 1000

describe('the production compose stack (podman-compose)', { skip, timeout: 40 * 60_000 }, () => {
  const project = `plinth-compose-test-${process.pid}-${randomBytes(2).toString('hex')}`
  const dir = mkdtempSync(join(tmpdir(), 'plinth-compose-'))
  const file = join(dir, 'compose.production.yaml')
  const ports = { http: 0, https: 0, prometheus: 0, alertmanager: 0 }
  let composeEnv: NodeJS.ProcessEnv = env
  let base = ''
  const container = (service: string) => `${project}_${service}_1`
  const compose = (...args: string[]) =>
    // `rm -v`: the anonymous volumes of the images' VOLUME lines go with their containers.
    sh('podman-compose', ['--podman-rm-args=-v', '-p', project, '-f', file, ...args], {
      cwd: dir,
      env: composeEnv,
    })
  const secret = (name: string) => readFileSync(join(dir, 'secrets', name), 'utf8')
  let up = false
  const figures: string[] = []

  /** curl through the TLS proxy, trusting only the CA this test made. */
  async function curl(path: string, args: string[] = []) {
    const out = await sh('curl', [
      '-sS',
      '--cacert',
      join(dir, 'ca.pem'),
      '-w',
      '\n%{http_code}',
      ...args,
      `${base}${path}`,
    ])
    const at = out.lastIndexOf('\n')
    return { status: Number(out.slice(at + 1)), body: out.slice(0, at) }
  }
  const psql = (sql: string) =>
    podman('exec', container('postgres'), 'psql', '-U', 'plinth', '-d', 'plinth', '-Atc', sql)
  const prometheus = async <T>(path: string) =>
    (
      (await (await fetch(`http://127.0.0.1:${ports.prometheus}${path}`)).json()) as {
        data: T
      }
    ).data

  /** Each container's state and the end of the log of those that are not healthy, for a failure. */
  async function stackState(): Promise<string> {
    const out = [
      await podman('ps', '-a', '--filter', `name=${project}`, '--format', '{{.Names}} {{.Status}}').catch(
        (e: Error) => e.message,
      ),
    ]
    for (const service of ['proxy', 'api-1', 'api-2', 'worker', 'postgres', 'redis']) {
      const health = await podman('healthcheck', 'run', container(service)).catch(() => 'unhealthy')
      if (health === '' || health === 'healthy') continue
      const logs = await run('podman', ['logs', '--tail', '40', container(service)], {
        env,
        maxBuffer: 1 << 24,
      })
        .then((r) => `${r.stdout}${r.stderr}`.trim())
        .catch((e: Error) => e.message)
      out.push(`--- ${service} (${health}):\n${logs}`)
    }
    return out.join('\n')
  }

  before(
    async () => {
      // The images: stand-ins for the third-party ones, then Plinth's (both cached in Podman's store).
      let started = performance.now()
      await sh(join(ROOT, 'deploy/podman/standin-services.sh'), [])
      figures.push(`stand-in images ${seconds(started).toFixed(0)} s`)
      started = performance.now()
      const built = await sh(join(ROOT, 'deploy/build-image.sh'), [], {
        cwd: ROOT,
        env: { ...env, ENGINE: 'podman', PLINTH_STANDIN_BASE: '1' },
      })
      figures.push(`Plinth image ${seconds(started).toFixed(0)} s`)
      assert.match(built.split('\n').at(-1)!, new RegExp(`^plinth:${pkg.version.replaceAll('.', '\\.')} `))

      // The deploy files, as a user has them, in a directory of their own: secrets are written
      // beside the compose file, and the repository's deploy/secrets must stay the user's.
      for (const part of [
        'compose.production.yaml',
        'make-secrets.sh',
        'haproxy',
        'prometheus',
        'alertmanager',
      ])
        cpSync(join(ROOT, 'deploy', part), join(dir, part), { recursive: true })
      await sh(join(dir, 'make-secrets.sh'), [])
      const kinds: Record<string, SecretKind> = {
        plinth_secret_key: 'secret key',
        plinth_master_key: 'master key',
        plinth_ops_token: 'ops token',
        postgres_password: 'connection password',
        redis_password: 'connection password',
      }
      for (const [name, kind] of Object.entries(kinds)) recordSecret(kind, secret(name))
      // A certificate authority of our own and a certificate for localhost, as tls.pem (chain, key).
      const ssl = (...args: string[]) => sh('openssl', args, { cwd: dir })
      await ssl(
        ...['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=Plinth test CA'],
        ...['-keyout', 'ca.key', '-out', 'ca.pem'],
      )
      await ssl(
        'req',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-subj',
        '/CN=localhost',
        '-keyout',
        'tls.key',
        '-out',
        'tls.csr',
      )
      writeFileSync(join(dir, 'san.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n')
      await ssl(
        ...['x509', '-req', '-in', 'tls.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial'],
        ...['-days', '1', '-extfile', 'san.ext', '-out', 'tls.crt'],
      )
      writeFileSync(
        join(dir, 'secrets/tls.pem'),
        readFileSync(join(dir, 'tls.crt'), 'utf8') +
          readFileSync(join(dir, 'ca.pem'), 'utf8') +
          readFileSync(join(dir, 'tls.key'), 'utf8'),
      )
      chmodSync(join(dir, 'secrets/tls.pem'), 0o644)

      for (const key of Object.keys(ports) as (keyof typeof ports)[]) ports[key] = await sparePort()
      base = `https://localhost:${ports.https}`
      composeEnv = {
        ...env,
        PLINTH_VERSION: pkg.version,
        PLINTH_PUBLIC_URL: base,
        PLINTH_SIGNUP_MODE: 'open',
        // Podman's networks (netavark) are 10.89.0.0/16; Docker's default pools are in 172.16.0.0/12.
        PLINTH_TRUST_PROXY: '10.89.0.0/16',
        PLINTH_HTTP_PORT: String(ports.http),
        PLINTH_HTTPS_PORT: String(ports.https),
        PLINTH_PROMETHEUS_PORT: String(ports.prometheus),
        PLINTH_ALERTMANAGER_PORT: String(ports.alertmanager),
      }
      started = performance.now()
      up = true
      await compose('up', '-d')
      // Ready: both API replicas pass their healthcheck, and the proxy answers /ready over TLS.
      await waitFor(
        'both API replicas to be healthy and the proxy to answer /ready',
        async () => {
          for (const service of ['api-1', 'api-2', 'worker']) {
            const check = await podman('healthcheck', 'run', container(service)).catch(() => 'unhealthy')
            if (check !== '' && check !== 'healthy') return false
          }
          return (await curl('/ready').catch(() => ({ status: 0 }))).status === 200
        },
        { timeoutMs: 5 * 60_000, intervalMs: 1000 },
      ).catch(async (err: Error) => {
        // What the containers were doing: the teardown removes them and their logs.
        throw new Error(`${err.message}\n${await stackState()}`)
      })
      figures.push(`up -d to ready behind the proxy ${seconds(started).toFixed(0)} s`)
    },
    { timeout: 35 * 60_000 },
  )

  after(async () => {
    console.log(`# compose stack: ${figures.join('; ')}`)
    if (up) {
      await compose('down', '-v', '-t', '0').catch(() => undefined)
      for (const net of ['edge', 'backend', 'data'])
        await podman('network', 'rm', '-f', `${project}_${net}`).catch(() => undefined)
    }
    rmSync(dir, { recursive: true, force: true })
  })

  it('runs every service, each passing its own healthcheck', async () => {
    const services = Object.keys(
      (parse(readFileSync(file, 'utf8')) as { services: Record<string, { profiles?: string[] }> }).services,
    )
    const running = (
      await podman('ps', '--filter', `label=io.podman.compose.project=${project}`, '--format', '{{.Names}}')
    ).split('\n')
    for (const service of services.filter((s) => s !== 'api-canary')) {
      assert.ok(running.includes(container(service)), `${service} is not running (${running.join(', ')})`)
      await waitFor(
        `${service} to be healthy`,
        async () =>
          (await podman('healthcheck', 'run', container(service)).catch(() => 'unhealthy')) !== 'unhealthy',
        { timeoutMs: 60_000, intervalMs: 1000 },
      )
    }
    // The canary slot runs only with --profile canary.
    assert.ok(!running.includes(container('api-canary')))
  })

  it('serves both API replicas behind the TLS proxy (HAProxy sees both UP and sends each traffic)', async () => {
    // HAProxy's runtime API, through the haproxy-run volume, as docs/deploy/docker.md shows.
    const volume = await podman('volume', 'inspect', '--format', '{{.Mountpoint}}', `${project}_haproxy-run`)
    const stat = () =>
      new Promise<Map<string, { status: string; sessions: number }>>((resolve, reject) => {
        const conn = connect(join(volume, 'admin.sock'))
        let answer = ''
        conn.on('connect', () => conn.end('show stat\n'))
        conn.on('data', (d) => (answer += d))
        conn.on('error', reject)
        conn.on('end', () => {
          const [header, ...rows] = answer.trim().split('\n')
          const cols = header!.replace(/^# /, '').split(',')
          const result = new Map<string, { status: string; sessions: number }>()
          for (const row of rows.map((r) => r.split(',')))
            if (row[cols.indexOf('pxname')] === 'plinth_api')
              result.set(row[cols.indexOf('svname')]!, {
                status: row[cols.indexOf('status')]!,
                sessions: Number(row[cols.indexOf('stot')]),
              })
          resolve(result)
        })
      })
    await waitFor(
      'HAProxy to mark api-1 and api-2 UP',
      async () => {
        const s = await stat()
        return s.get('api-1')?.status === 'UP' && s.get('api-2')?.status === 'UP'
      },
      { timeoutMs: 60_000 },
    )
    const before = await stat()
    for (let i = 0; i < 6; i++) assert.equal((await curl('/live')).status, 200)
    const after = await stat()
    for (const name of ['api-1', 'api-2'])
      assert.ok(after.get(name)!.sessions > before.get(name)!.sessions, `${name} got no request`)
    // The canary slot is declared but not running: DOWN, no traffic.
    assert.match(after.get('canary')!.status, /DOWN|MAINT/)
    // Plain HTTP is redirected to HTTPS, with HSTS on HTTPS; metrics are not served publicly.
    const http = await sh('curl', [
      '-sS',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code} %{redirect_url}',
      `http://localhost:${ports.http}/live`,
    ])
    assert.match(http, /^301 https:\/\/localhost/)
    const live = await curl('/live', ['-D', '-'])
    assert.match(live.body, /strict-transport-security: max-age=63072000/i)
    assert.equal((await curl('/api/metrics')).status, 404)
  })

  it('signs up and signs in through the proxy', async () => {
    const email = uniqueEmail('compose')
    const json = ['-H', 'content-type: application/json', '-X', 'POST']
    const signup = await curl('/api/v1/auth/signup', [
      ...json,
      '-d',
      JSON.stringify({ email, password: PASSWORD }),
    ])
    assert.equal(signup.status, 201, signup.body)
    const login = await curl('/api/v1/auth/login', [
      ...json,
      '-d',
      JSON.stringify({ email, password: PASSWORD }),
    ])
    assert.equal(login.status, 200, login.body)
    const { token } = JSON.parse(login.body) as { token: string }
    recordSecret('session token', token)
    // Each replica accepts the session (shared database and session cache).
    for (let i = 0; i < 4; i++) {
      const me = await curl('/api/v1/me', ['-H', `authorization: Bearer ${token}`])
      assert.equal(me.status, 200, me.body)
      assert.equal((JSON.parse(me.body) as { user: { email: string } }).user.email, email)
    }
  })

  it('runs jobs on the worker: the built-in heartbeat completes', async () => {
    await waitFor(
      'the worker to complete a heartbeat job',
      async () =>
        Number(
          await psql(
            `select count(*) from plinth_jobs.job where name = 'plinth.heartbeat' and state = 'completed'`,
          ),
        ) > 0,
      { timeoutMs: 3 * 60_000, intervalMs: 2000 },
    )
    // Only the worker runs jobs: the API replicas start as jobs clients (role api), so the
    // completed heartbeat is the worker's.
    assert.match(await podman('logs', container('worker')), /"role":"worker"[^\n]*"msg":"plinth listening"/)
    for (const api of ['api-1', 'api-2'])
      assert.match(await podman('logs', container(api)), /"role":"api"[^\n]*"msg":"plinth listening"/)
  })

  it('archives WAL from PostgreSQL', async () => {
    await psql('select pg_switch_wal()')
    await psql(
      'create table if not exists compose_wal_probe (id int); insert into compose_wal_probe values (1)',
    )
    await psql('select pg_switch_wal()')
    await waitFor(
      'a WAL segment in the archive volume',
      async () =>
        (await podman('exec', container('postgres'), 'ls', '/var/lib/postgresql/wal-archive')).length > 0,
      { timeoutMs: 60_000, intervalMs: 500 },
    )
    assert.equal(await psql('show archive_mode'), 'on')
  })

  it('Prometheus scrapes every Plinth process with the ops token, loads the rules and finds Alertmanager', async () => {
    type Target = { labels: { job: string; instance: string }; health: string; lastError: string }
    await waitFor(
      'Prometheus to scrape api-1, api-2 and the worker',
      async () => {
        const { activeTargets } = await prometheus<{ activeTargets: Target[] }>('/api/v1/targets')
        const health = new Map(
          activeTargets.filter((t) => t.labels.job === 'plinth').map((t) => [t.labels.instance, t.health]),
        )
        return ['api-1:3000', 'api-2:3000', 'worker:3000'].every((i) => health.get(i) === 'up')
      },
      { timeoutMs: 2 * 60_000, intervalMs: 1000 },
    )
    // The series the alert rules select (PlinthInstanceDown: up{job="plinth"} == 0) are these three.
    const up = await prometheus<{ result: { metric: { instance: string }; value: [number, string] }[] }>(
      `/api/v1/query?query=${encodeURIComponent('up{job="plinth"}')}`,
    )
    assert.deepEqual(up.result.map((r) => `${r.metric.instance}=${r.value[1]}`).sort(), [
      'api-1:3000=1',
      'api-2:3000=1',
      'worker:3000=1',
    ])
    const { groups } = await prometheus<{ groups: { rules: { name: string; type: string }[] }[] }>(
      '/api/v1/rules',
    )
    const loaded = groups.flatMap((g) => g.rules)
    const shipped = readdirSync(join(ROOT, 'deploy/prometheus/rules'))
      .filter((f) => f.endsWith('.yml'))
      .flatMap((f) =>
        (
          parse(readFileSync(join(ROOT, 'deploy/prometheus/rules', f), 'utf8')) as {
            groups: { rules: unknown[] }[]
          }
        ).groups.flatMap((g) => g.rules),
      )
    assert.equal(loaded.length, shipped.length)
    assert.ok(loaded.some((r) => r.name === 'PlinthInstanceDown' && r.type === 'alerting'))
    const am = await prometheus<{ activeAlertmanagers: { url: string }[] }>('/api/v1/alertmanagers')
    assert.ok(
      am.activeAlertmanagers.some((a) => a.url.includes('alertmanager:9093')),
      JSON.stringify(am),
    )
    // The ops token really guards the metrics: from another container (not loopback, which counts
    // as an operator), refused without it and served with the one in the secret file.
    const scrape = (auth: string) =>
      podman(
        ...['exec', container('api-2'), 'node', '-e'],
        `fetch('http://api-1:3000/api/metrics', { headers: ${auth} }).then((r) => console.log(r.status))`,
      )
    assert.equal(await scrape('{}'), '403')
    assert.equal(
      await scrape(
        "{ authorization: 'Bearer ' + require('node:fs').readFileSync('/run/secrets/plinth_ops_token', 'utf8').trim() }",
      ),
      '200',
    )
  })

  it('Alertmanager is up and ready', async () => {
    assert.equal((await fetch(`http://127.0.0.1:${ports.alertmanager}/-/ready`)).status, 200)
    const status = (await (await fetch(`http://127.0.0.1:${ports.alertmanager}/api/v2/status`)).json()) as {
      config: { original: string }
    }
    assert.match(status.config.original, /receiver: ticket/)
  })

  it('reads every secret from a file: none is in a container environment, and each service uses them', async () => {
    for (const service of ['api-1', 'api-2', 'worker', 'postgres', 'redis', 'prometheus']) {
      const inspect = await podman('inspect', '--format', '{{json .Config.Env}}', container(service))
      for (const name of readdirSync(join(dir, 'secrets')).filter((n) => n !== 'tls.pem'))
        assert.ok(!inspect.includes(secret(name)), `${service}'s environment holds ${name}`)
    }
    const plinthEnv = await podman('inspect', '--format', '{{json .Config.Env}}', container('api-1'))
    for (const name of [
      'PLINTH_SECRET_KEY_FILE',
      'PLINTH_MASTER_KEY_FILE',
      'PLINTH_OPS_TOKEN_FILE',
      'DATABASE_URL_FILE',
      'REDIS_URL_FILE',
    ])
      assert.match(plinthEnv, new RegExp(`"${name}=/run/secrets/`))
    // Redis demands the password from its file; PostgreSQL checks the one from its file.
    const noAuth = await podman('exec', container('redis'), 'redis-cli', 'ping')
    assert.match(noAuth, /NOAUTH/)
    const withAuth = await podman(
      'exec',
      container('redis'),
      'sh',
      '-c',
      'redis-cli -a "$(cat /run/secrets/redis_password)" --no-auth-warning ping',
    )
    assert.equal(withAuth, 'PONG')
    const wrong = await podman(
      'exec',
      '-e',
      'PGPASSWORD=wrong',
      container('postgres'),
      'psql',
      '-h',
      '127.0.0.1',
      '-U',
      'plinth',
      '-d',
      'plinth',
      '-Atc',
      'select 1',
    ).then(
      () => 'accepted',
      (err: { stderr?: string }) => err.stderr ?? '',
    )
    assert.match(wrong, /password authentication failed/)
    const right = await podman(
      'exec',
      '-e',
      `PGPASSWORD=${secret('postgres_password')}`,
      container('postgres'),
      'psql',
      '-h',
      '127.0.0.1',
      '-U',
      'plinth',
      '-d',
      'plinth',
      '-Atc',
      'select 1',
    )
    assert.equal(right, '1')
  })

  it('`down` stops every Plinth process and PostgreSQL cleanly within the grace period', async () => {
    const watched = ['api-1', 'api-2', 'worker', 'postgres', 'redis']
    // podman-compose 1.0 does not read stop_grace_period: `-t` gives `podman stop` the same 45 s.
    const codes = Promise.all(watched.map((s) => podman('wait', container(s)).then(Number, () => Number.NaN)))
    const started = performance.now()
    await compose('down', '-t', String(GRACE_SECONDS))
    const took = seconds(started)
    figures.push(`down ${took.toFixed(1)} s`)
    up = false
    const exits = await codes
    // 0: each drained and exited by itself on SIGTERM (SIGINT for PostgreSQL); 137 would be SIGKILL.
    assert.deepEqual(
      exits,
      watched.map(() => 0),
      `exit codes ${watched.map((s, i) => `${s}=${exits[i]}`).join(' ')}`,
    )
    assert.ok(took < GRACE_SECONDS, `down took ${took} s`)
    await compose('down', '-v', '-t', '0').catch(() => undefined)
    for (const net of ['edge', 'backend', 'data'])
      await podman('network', 'rm', '-f', `${project}_${net}`).catch(() => undefined)
  })
})
