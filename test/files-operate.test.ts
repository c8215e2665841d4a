import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { createUser, NO_RATE_LIMITS, type Session, uniqueEmail } from './helpers/accounts.ts'
import { filesUnder, uploadOne } from './helpers/files-kit.ts'
import { runCliWithEnv } from './helpers/run-cli.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { TEST_MASTER_KEY } from './helpers/test-config.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

describe('operating files: plinth files usage | sweep | verify', { skip: await skipUnlessPostgres() }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-files-ops-'))
  let plinth: TestPlinth
  let alice: Session
  let env: Record<string, string>
  const cli = (...argv: string[]) => runCliWithEnv(['files', ...argv], env)

  before(async () => {
    plinth = await startTestPlinth({
      backend: 'postgres',
      env: {
        ...NO_RATE_LIMITS,
        PLINTH_RATE_LIMIT_UPLOAD: '0',
        PLINTH_FILES_DIR: dir,
        PLINTH_MASTER_KEY: TEST_MASTER_KEY,
      },
    })
    env = {
      DATABASE_URL: plinth.config.databaseUrl!,
      PLINTH_ENV: 'test',
      PLINTH_LOG_LEVEL: 'silent',
      PLINTH_FILES_DIR: dir,
      PLINTH_DATA_DIR: 'memory://',
      PLINTH_MASTER_KEY: TEST_MASTER_KEY,
    }
    alice = await createUser(plinth, uniqueEmail('alice'), 'member')
  })
  after(async () => {
    await plinth?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('reports usage per owner', async () => {
    await uploadOne(plinth, alice, 'a.txt', Buffer.from('usage one'))
    await uploadOne(plinth, alice, 'b.txt', Buffer.from('usage two!'))
    const res = await cli('usage', '--json')
    assert.equal(res.code, 0, res.err)
    const usage = JSON.parse(res.out)
    assert.equal(usage.storage, dir)
    assert.deepEqual(usage.owners, [{ owner: alice.userId, files: 2, bytes: 19 }])
  })

  it('sweeps orphan objects and stale staged uploads, and reports rows whose object is gone', async () => {
    // An object no row refers to (a crash between storing and committing), and a stale staged part.
    const orphan = `${alice.userId}/ab/${'ab'.repeat(32)}`
    mkdirSync(join(dir, alice.userId, 'ab'), { recursive: true })
    writeFileSync(join(dir, orphan), 'orphan bytes')
    const stale = join(dir, '.staging', 'upload-stale')
    writeFileSync(stale, 'half an upload')
    const old = new Date(Date.now() - 2 * 3600_000)
    utimesSync(stale, old, old)
    // Resumable uploads: one paused for two hours is kept (they may pause a day), one older goes.
    const tus = join(dir, '.staging', 'tus')
    mkdirSync(tus, { recursive: true })
    const paused = join(tus, `${alice.userId}_${'1'.repeat(32)}`)
    const expired = join(tus, `${alice.userId}_${'2'.repeat(32)}`)
    const dayAgo = new Date(Date.now() - 25 * 3600_000)
    for (const [path, when] of [
      [paused, old],
      [`${paused}.json`, old],
      [expired, dayAgo],
      [`${expired}.json`, dayAgo],
      [tus, dayAgo],
    ] as const) {
      if (path !== tus) writeFileSync(path, 'part')
      utimesSync(path, when, when)
    }

    const dry = await cli('sweep', '--dry-run', '--json')
    assert.equal(dry.code, 0, dry.err)
    assert.deepEqual(JSON.parse(dry.out).orphanObjects, [orphan])
    assert.ok(filesUnder(dir).includes(orphan), 'a dry run removes nothing')

    const run = await cli('sweep', '--json')
    assert.equal(run.code, 0, run.err)
    const report = JSON.parse(run.out)
    assert.deepEqual(report.orphanObjects, [orphan])
    assert.equal(report.staleStaging, 3)
    assert.ok(!filesUnder(dir).includes(orphan))
    assert.ok(!filesUnder(dir).includes('.staging/upload-stale'))
    const tusLeft = filesUnder(dir).filter((k) => k.startsWith('.staging/tus/'))
    assert.deepEqual(tusLeft.sort(), [
      `.staging/tus/${basename(paused)}`,
      `.staging/tus/${basename(paused)}.json`,
    ])

    const lost = await uploadOne(plinth, alice, 'lost.txt', Buffer.from('this object will vanish'))
    rmSync(join(dir, alice.userId, lost.sha256.slice(0, 2), lost.sha256))
    const missing = await cli('sweep', '--json')
    assert.equal(missing.code, 1)
    assert.deepEqual(
      JSON.parse(missing.out).missingObjects.map((m: { id: string }) => m.id),
      [lost.id],
    )
    rmSync(join(dir, alice.userId, lost.sha256.slice(0, 2)), { recursive: true, force: true })
    await plinth.db.kysely.deleteFrom('files').where('id', '=', lost.id).execute()
  })

  it('leaves the object of an upload in flight alone, and takes back what a dead upload left after an hour', async () => {
    // Two objects without a row, each with an upload's reservation: one just taken (its bytes are
    // on their way), one two hours old (its process died between writing and recording).
    const key = (c: string) => `${alice.userId}/${c}${c}/${c.repeat(64)}`
    const writeObject = (c: string) => {
      mkdirSync(join(dir, alice.userId, `${c}${c}`), { recursive: true })
      writeFileSync(join(dir, key(c)), `bytes ${c}`)
    }
    writeObject('c')
    writeObject('d')
    await plinth.db.kysely
      .insertInto('file_uploads')
      .values([
        { owner: alice.userId, sha256: 'c'.repeat(64), size: 7, token: randomUUID() },
        {
          owner: alice.userId,
          sha256: 'd'.repeat(64),
          size: 7,
          token: randomUUID(),
          started: new Date(Date.now() - 2 * 3600_000),
        },
      ])
      .execute()
    const run = await cli('sweep', '--json')
    assert.equal(run.code, 0, run.err)
    assert.deepEqual(JSON.parse(run.out).orphanObjects, [key('d')])
    assert.ok(filesUnder(dir).includes(key('c')), 'the upload in flight keeps its object')
    assert.ok(!filesUnder(dir).includes(key('d')))
    const left = await plinth.db.kysely.selectFrom('file_uploads').select('sha256').execute()
    assert.deepEqual(
      left.map((r) => r.sha256),
      ['c'.repeat(64)],
    )
    await plinth.db.kysely.deleteFrom('file_uploads').execute()
    rmSync(join(dir, alice.userId, 'cc'), { recursive: true, force: true })
  })

  it('verifies every stored file against its SHA-256', async () => {
    const file = await uploadOne(plinth, alice, 'kept.txt', Buffer.from('bytes to keep intact'))
    const ok = await cli('verify', '--json')
    assert.equal(ok.code, 0, ok.err)
    assert.deepEqual(JSON.parse(ok.out).corrupt, [])
    writeFileSync(join(dir, alice.userId, file.sha256.slice(0, 2), file.sha256), 'bytes to keep INTACT')
    const bad = await cli('verify', '--json')
    assert.equal(bad.code, 1)
    assert.deepEqual(JSON.parse(bad.out).corrupt, [file.id])
    const text = await cli('verify')
    assert.match(text.out, new RegExp(`CORRUPT ${file.id}`))
  })
})
