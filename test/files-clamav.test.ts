/**
 * The virus scan against a real ClamAV daemon (Debian `clamav-daemon`). There is no network for
 * freshclam here, so the test starts its own `clamd` with a signature database it writes itself
 * (the MD5 signature of the EICAR test string, in a `.hdb` file), a temporary config and a Unix
 * socket. Skipped, saying so, only when no clamd binary is installed.
 */
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { bearer, createUser, NO_RATE_LIMITS, type Session, uniqueEmail, waitFor } from './helpers/accounts.ts'
import { assertProblem } from './helpers/assert-problem.ts'
import { filesUnder, png, upload, uploadOne } from './helpers/files-kit.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const CLAMD = ['/usr/sbin/clamd', '/usr/bin/clamd', '/usr/local/sbin/clamd'].find((p) => existsSync(p))

// The EICAR anti-virus test file: harmless, and every scanner reports it (here: our own signature).
const EICAR = Buffer.from('X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*', 'latin1')
const SIGNATURE = 'Plinth.Test.EICAR'

/** Asks clamd for PING over its socket: true once it answers PONG. */
function ping(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ path: socket })
    let answer = ''
    s.setTimeout(2000, () => s.destroy())
    s.on('error', () => resolve(false))
    s.on('data', (d: Buffer) => {
      answer += d.toString()
    })
    s.on('close', () => resolve(answer.replace(/\0/g, '').trim() === 'PONG'))
    s.on('connect', () => s.end('zPING\0'))
  })
}

/** A clamd of our own: config, signature database and socket in `dir`. */
async function startClamd(dir: string): Promise<{ socket: string; stop(): Promise<void> }> {
  const db = join(dir, 'db')
  mkdirSync(db)
  mkdirSync(join(dir, 'tmp'))
  const md5 = createHash('md5').update(EICAR).digest('hex')
  writeFileSync(join(db, 'plinth-test.hdb'), `${md5}:${EICAR.length}:${SIGNATURE}\n`)
  const socket = join(dir, 'clamd.sock')
  const config = join(dir, 'clamd.conf')
  writeFileSync(
    config,
    [
      'Foreground yes',
      `LocalSocket ${socket}`,
      'LocalSocketMode 600',
      `DatabaseDirectory ${db}`,
      `TemporaryDirectory ${join(dir, 'tmp')}`,
      `PidFile ${join(dir, 'clamd.pid')}`,
      `LogFile ${join(dir, 'clamd.log')}`,
      'LogTime yes',
      'Bytecode no',
      'StreamMaxLength 20M',
      'MaxThreads 2',
      '',
    ].join('\n'),
  )
  const child: ChildProcess = spawn(CLAMD!, ['--config-file', config], { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout!.on('data', (d: Buffer) => {
    output += d.toString()
  })
  child.stderr!.on('data', (d: Buffer) => {
    output += d.toString()
  })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  await waitFor(
    'clamd to answer PING',
    async () => {
      if (child.exitCode !== null)
        throw new Error(`clamd exited (${child.exitCode}): ${output}${readLog(dir)}`)
      return ping(socket)
    },
    { timeoutMs: 60_000, intervalMs: 200 },
  )
  return {
    socket,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM')
        await exited
      }
    },
  }
}

function readLog(dir: string): string {
  try {
    return readFileSync(join(dir, 'clamd.log'), 'utf8')
  } catch {
    return ''
  }
}

describe('virus scan with a real clamd', {
  skip: CLAMD ? false : 'clamd is not installed (apt-get install clamav-daemon)',
}, () => {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-files-clamav-'))
  const filesDir = join(dir, 'files')
  let clamd: Awaited<ReturnType<typeof startClamd>>
  let plinth: TestPlinth
  let alice: Session

  before(async () => {
    clamd = await startClamd(dir)
    plinth = await startTestPlinth({
      env: {
        ...NO_RATE_LIMITS,
        PLINTH_RATE_LIMIT_UPLOAD: '0',
        PLINTH_FILES_DIR: filesDir,
        PLINTH_FILES_CLAMD_SOCKET: clamd.socket,
      },
    })
    alice = await createUser(plinth, uniqueEmail('alice'), 'member')
  })
  after(async () => {
    await plinth?.close()
    await clamd?.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  // Originals only: the variants job of the image upload adds its variants at its own pace.
  const stored = () => filesUnder(filesDir).filter((k) => !k.startsWith('.staging/') && !k.includes('.v/'))

  it('accepts a clean file and an image once clamd has scanned them', async () => {
    const text = await uploadOne(plinth, alice, 'notes.txt', Buffer.from('nothing to see here\n'))
    assert.equal(text.type, 'text/plain')
    const image = await uploadOne(plinth, alice, 'photo.png', await png(64, 48), { purpose: 'image' })
    assert.equal(image.type, 'image/png')
    const res = await plinth.app.inject({ url: text.url, headers: bearer(alice.token) })
    assert.equal(res.statusCode, 200)
    assert.equal(res.body, 'nothing to see here\n')
  })

  it('refuses an infected upload with 422 PLINTH_FILE_INFECTED naming the signature, storing nothing', async () => {
    const before = stored()
    const res = await upload(plinth, alice, [{ name: 'file', filename: 'eicar.txt', content: EICAR }])
    const problem = assertProblem(res, 422, 'PLINTH_FILE_INFECTED')
    assert.ok(String(problem.detail).includes(SIGNATURE), String(problem.detail))
    assert.deepEqual(stored(), before)
    const list = await plinth.app.inject({ url: '/api/v1/files', headers: bearer(alice.token) })
    assert.ok(!list.json().files.some((f: { name: string }) => f.name === 'eicar.txt'))
    // The signature name exists only in this test's own database: the verdict came from clamd.
  })

  it('refuses an infected file among clean ones in one request: all or nothing', async () => {
    const before = stored()
    const res = await upload(plinth, alice, [
      { name: 'file', filename: 'fine.txt', content: Buffer.from('a clean file, first in the request\n') },
      { name: 'file', filename: 'eicar.com', content: EICAR },
    ])
    assertProblem(res, 422, 'PLINTH_FILE_INFECTED')
    assert.deepEqual(stored(), before)
  })

  it('refuses uploads with 503 PLINTH_FILE_SCANNER_UNAVAILABLE while clamd is down (never stored unscanned)', async () => {
    await clamd.stop()
    const before = stored()
    const res = await upload(plinth, alice, [
      { name: 'file', filename: 'later.txt', content: Buffer.from('uploaded while the scanner is down\n') },
    ])
    assertProblem(res, 503, 'PLINTH_FILE_SCANNER_UNAVAILABLE')
    assert.deepEqual(stored(), before)
    // Back up: uploads are accepted again, with no restart of Plinth.
    rmSync(join(dir, 'db'), { recursive: true, force: true })
    rmSync(join(dir, 'tmp'), { recursive: true, force: true })
    rmSync(clamd.socket, { force: true })
    clamd = await startClamd(dir)
    await uploadOne(plinth, alice, 'later.txt', Buffer.from('uploaded while the scanner is down\n'))
  })
})
