import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { after, before, describe, it } from 'node:test'
import { type BackupTarget, createLocalTarget } from '../src/modules/backups/local-target.ts'
import { createS3Target } from '../src/modules/backups/s3-target.ts'
import { isPlinthError } from '../src/shared/errors.ts'
import { closedPort } from './helpers/smtp-server.ts'

const BUCKET = 'targets'
const credentials = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' }

/** A real S3-protocol server (s3rver) in its own process, on a free port. */
async function startS3rver(dir: string): Promise<{ endpoint: string; stop(): Promise<void> }> {
  const bin = createRequire(import.meta.url).resolve('s3rver/bin/s3rver.js')
  const child: ChildProcess = spawn(
    process.execPath,
    [bin, '-d', dir, '-a', '127.0.0.1', '-p', '0', '--configure-bucket', BUCKET],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  const endpoint = await new Promise<string>((resolve, reject) => {
    let out = ''
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString()
      const m = /listening on (\S+):(\d+)/.exec(out)
      if (m) resolve(`http://${m[1]}:${m[2]}`)
    })
    child.on('exit', (code) => reject(new Error(`s3rver exited (${code}): ${out}`)))
  })
  return {
    endpoint,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve()
        child.once('exit', () => resolve())
        child.kill('SIGTERM')
      }),
  }
}

const readAll = async (stream: Readable): Promise<string> => {
  const chunks: Buffer[] = []
  for await (const c of stream) chunks.push(Buffer.from(c as Buffer))
  return Buffer.concat(chunks).toString('utf8')
}

const writePart = async (target: BackupTarget, name: string, text: string) => {
  const part = await target.create(name)
  await pipeline(
    (async function* () {
      yield Buffer.from(text)
    })(),
    part.writable,
  )
  return part
}

const isCode = (code: string) => (err: unknown) => {
  assert.ok(isPlinthError(err), `expected a PlinthError, got ${String(err)}`)
  assert.equal(err.code, code)
  return true
}

/** What every backup target does, the same on a directory and a bucket. */
function targetContract(name: string, make: () => BackupTarget) {
  describe(`backup target contract: ${name}`, () => {
    it('keeps a part invisible until published, readable back before, and under its name after', async () => {
      const target = make()
      const part = await writePart(target, 'a.archive', 'archive bytes')
      assert.deepEqual(await target.list(), [], 'a pending part is not listed')
      assert.equal(await target.size('a.archive'), undefined)
      assert.equal(await readAll(part.readBack()), 'archive bytes')
      await part.publish()
      assert.deepEqual(await target.list(), ['a.archive'])
      assert.equal(await target.size('a.archive'), 13)
      assert.equal(await readAll(await target.open('a.archive')), 'archive bytes')
    })

    it('discards a part without a trace', async () => {
      const target = make()
      const part = await writePart(target, 'b.archive', 'never published')
      await part.discard()
      assert.equal((await target.list()).includes('b.archive'), false)
      assert.equal(await target.size('b.archive'), undefined)
    })

    it('writes and reads small text files, replacing them whole, and removes names (twice is fine)', async () => {
      const target = make()
      assert.equal(await target.readText('c.manifest.json'), undefined)
      await target.writeText('c.manifest.json', '{"v":1}')
      await target.writeText('c.manifest.json', '{"v":2}')
      assert.equal(await target.readText('c.manifest.json'), '{"v":2}')
      assert.ok((await target.list()).includes('c.manifest.json'))
      await target.remove('c.manifest.json')
      await target.remove('c.manifest.json')
      assert.equal(await target.readText('c.manifest.json'), undefined)
    })

    it('answers PLINTH_BACKUP_NOT_FOUND for a part it does not hold', async () => {
      await assert.rejects(make().open('missing.archive'), isCode('PLINTH_BACKUP_NOT_FOUND'))
    })

    it("refuses names that could leave the target or hide: the caller's mistake (TypeError), not an outage", async () => {
      const target = make()
      // Refused before any request, by every target alike: never PLINTH_BACKUP_TARGET_UNAVAILABLE
      // (503, "the bucket did not answer"), which would send an operator after the wrong problem.
      const refused = (err: unknown) =>
        err instanceof TypeError && /invalid part name/.test(err.message) && !('code' in err)
      for (const bad of ['../escape', 'a/b', '.hidden', 'x..y', '', 'sp ace']) {
        await assert.rejects(target.readText(bad), refused, bad)
        await assert.rejects(target.writeText(bad, '{}'), refused, bad)
      }
      await assert.rejects(target.create('../up'), refused)
      await assert.rejects(target.open('a/../../b'), refused)
      await assert.rejects(target.remove('a/../../b'), refused)
      await assert.rejects(target.size('..'), refused)
    })
  })
}

const tempDirs: string[] = []
const freshDir = () => {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-target-'))
  tempDirs.push(dir)
  return dir
}
after(() => {
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true })
})

// A directory not created yet: the target makes it on first write.
targetContract('a local directory', () => createLocalTarget(join(freshDir(), 'backups')))

describe('the local directory target', () => {
  it('lists nothing while its directory does not exist, and creates it mode 0700 on first write', async () => {
    const dir = join(freshDir(), 'later')
    const target = createLocalTarget(dir)
    assert.equal(target.description, dir)
    assert.deepEqual(await target.list(), [])
    await target.writeText('x.json', '{}')
    const { statSync } = await import('node:fs')
    assert.equal(statSync(dir).mode & 0o777, 0o700)
    assert.equal(statSync(join(dir, 'x.json')).mode & 0o777, 0o600)
  })

  it('ignores stray files that are not part names', async () => {
    const dir = freshDir()
    writeFileSync(join(dir, '.tmp-abc-a.archive'), 'half')
    writeFileSync(join(dir, 'ok.archive'), 'x')
    assert.deepEqual(await createLocalTarget(dir).list(), ['ok.archive'])
  })

  it('reports what is not a missing file (a directory where a file should be) instead of hiding it', async () => {
    const dir = freshDir()
    mkdirSync(join(dir, 'taken.json'))
    const target = createLocalTarget(dir)
    await assert.rejects(target.readText('taken.json'), { code: 'EISDIR' })
    await assert.rejects(target.writeText('taken.json', '{}'))
    assert.deepEqual(
      readdirSync(dir).filter((n) => n.startsWith('.tmp-')),
      [],
      'the temporary file of the failed write is removed',
    )
    const file = join(dir, 'plain-file')
    writeFileSync(file, 'x')
    await assert.rejects(createLocalTarget(file).list(), { code: 'ENOTDIR' })
  })
})

describe('the S3 target, against a real s3rver process', () => {
  let s3: { endpoint: string; stop(): Promise<void> }
  before(async () => {
    s3 = await startS3rver(freshDir())
  })
  after(() => s3?.stop())

  const bucketTarget = (prefix: string, over: { bucket?: string; endpoint?: string } = {}) =>
    createS3Target({
      bucket: over.bucket ?? BUCKET,
      prefix,
      endpoint: over.endpoint ?? s3.endpoint,
      region: 'us-east-1',
      ...credentials,
      forcePathStyle: true,
    })

  let n = 0
  // Each test gets its own prefix ("folder"), written without the trailing slash the target adds.
  targetContract('an S3 bucket', () => bucketTarget(`contract-${++n}`))

  it('describes itself by bucket and prefix, with a slash added, or the bucket root for an empty prefix', async () => {
    assert.equal(bucketTarget('plinth').description, `s3://${BUCKET}/plinth/`)
    assert.equal(bucketTarget('plinth/').description, `s3://${BUCKET}/plinth/`)
    const root = bucketTarget('')
    assert.equal(root.description, `s3://${BUCKET}/`)
    await root.writeText('root.json', '{}')
    assert.ok((await root.list()).includes('root.json'))
    assert.equal(
      (await bucketTarget('other').list()).includes('root.json'),
      false,
      'another prefix does not see it',
    )
  })

  it('fails a read-back of a part whose upload was discarded', async () => {
    const target = bucketTarget('discarded')
    const part = await writePart(target, 'gone.archive', 'x')
    await part.discard()
    await assert.rejects(readAll(part.readBack()), /the uploaded part is missing/)
  })

  it('answers PLINTH_BACKUP_TARGET_UNAVAILABLE for a bucket that does not exist', async () => {
    const target = bucketTarget('p', { bucket: 'no-such-bucket' })
    await assert.rejects(target.list(), (err: unknown) => {
      isCode('PLINTH_BACKUP_TARGET_UNAVAILABLE')(err)
      assert.match((err as Error).message, /s3:\/\/no-such-bucket\/p\/.*NoSuchBucket/)
      return true
    })
    await assert.rejects(target.writeText('a.json', '{}'), isCode('PLINTH_BACKUP_TARGET_UNAVAILABLE'))
  })

  it('answers PLINTH_BACKUP_TARGET_UNAVAILABLE for every call when nothing listens at the endpoint', async () => {
    const target = bucketTarget('p', { endpoint: `http://127.0.0.1:${await closedPort()}` })
    const unavailable = isCode('PLINTH_BACKUP_TARGET_UNAVAILABLE')
    await assert.rejects(target.size('a.archive'), unavailable)
    await assert.rejects(target.readText('a.json'), unavailable)
    await assert.rejects(target.open('a.archive'), unavailable)
    await assert.rejects(target.remove('a.archive'), unavailable)
    await assert.rejects(target.list(), unavailable)
  })
})
