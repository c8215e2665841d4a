import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { builtinModules } from '../src/app/modules.ts'
import { keyringFromKeys } from '../src/infra/crypto/keyring.ts'
import { HEADER_BYTES } from '../src/modules/backups/archive-format.ts'
import { type BackupService, createBackupService } from '../src/modules/backups/backup.service.ts'
import { createLocalTarget } from '../src/modules/backups/local-target.ts'
import { archiveName, manifestName, verificationName } from '../src/modules/backups/manifest.ts'
import { createUser, NO_RATE_LIMITS, uniqueEmail } from './helpers/accounts.ts'
import { TEST_MASTER_KEY } from './helpers/test-config.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const knownMigrations = builtinModules.flatMap((m) => Object.keys(m.migrations ?? {}))

/** Offsets of each record of an archive (after the header), from their length fields. */
function records(archive: Buffer): { start: number; end: number }[] {
  const out = []
  for (let at = HEADER_BYTES; at + 4 <= archive.length; ) {
    const end = at + 4 + 12 + archive.readUInt32BE(at) + 16
    out.push({ start: at, end })
    at = end
  }
  return out
}

type Files = { dir: string; a: string; b: string }
interface Damage {
  readonly name: string
  apply(f: Files): void
  /** Verify with other keys (a wrong master key). */
  readonly wrongKey?: boolean
}

const archiveOf = (f: Files) => join(f.dir, archiveName(f.a))
const manifestOf = (f: Files) => join(f.dir, manifestName(f.a))
function editArchive(f: Files, fn: (b: Buffer) => Buffer) {
  writeFileSync(archiveOf(f), fn(readFileSync(archiveOf(f))))
}
function flip(at: (b: Buffer) => number) {
  return (f: Files) =>
    editArchive(f, (b) => {
      const c = Buffer.from(b)
      c[at(c)]! ^= 0x20
      return c
    })
}
function editManifest(f: Files, fn: (m: Record<string, unknown>) => void) {
  const m = JSON.parse(readFileSync(manifestOf(f), 'utf8'))
  fn(m)
  writeFileSync(manifestOf(f), JSON.stringify(m, null, 2))
}
function reorder(pick: (recs: Buffer[]) => Buffer[]) {
  return (f: Files) =>
    editArchive(f, (b) => {
      const recs = records(b).map((r) => b.subarray(r.start, r.end))
      return Buffer.concat([b.subarray(0, HEADER_BYTES), ...pick(recs)])
    })
}
/** Also fixes up the manifest's size and SHA-256, as an attacker who can write both would. */
function rehash(f: Files) {
  const bytes = readFileSync(archiveOf(f))
  editManifest(f, (m) => {
    const part = (m.parts as Record<string, unknown>[])[0]!
    part.bytes = bytes.length
    part.sha256 = createHash('sha256').update(bytes).digest('hex')
  })
}

const fixedUp =
  (damage: (f: Files) => void) =>
  (f: Files): void => {
    damage(f)
    rehash(f)
  }

const damages: Damage[] = [
  { name: 'flipped byte in the magic', apply: flip(() => 0) },
  { name: 'flipped compression byte of the header', apply: flip(() => 8) },
  { name: 'flipped chunk-size byte of the header', apply: flip(() => 11) },
  { name: 'flipped byte in the first record length', apply: flip(() => HEADER_BYTES + 3) },
  { name: 'flipped byte in the first nonce', apply: flip(() => HEADER_BYTES + 6) },
  { name: 'flipped byte at the start of the ciphertext', apply: flip(() => HEADER_BYTES + 20) },
  { name: 'flipped byte in the middle', apply: flip((b) => Math.floor(b.length / 2)) },
  { name: 'flipped last byte (final tag)', apply: flip((b) => b.length - 1) },
  {
    name: 'flipped byte, size and SHA-256 fixed up in the manifest',
    apply: fixedUp(flip((b) => Math.floor(b.length / 3))),
  },
  { name: 'truncated to half', apply: (f) => editArchive(f, (b) => b.subarray(0, b.length >> 1)) },
  { name: 'truncated by one byte', apply: (f) => editArchive(f, (b) => b.subarray(0, b.length - 1)) },
  {
    name: 'final record dropped, manifest fixed up',
    apply: fixedUp(reorder((r) => r.slice(0, -1))),
  },
  {
    name: 'middle record dropped, manifest fixed up',
    apply: fixedUp(reorder((r) => [...r.slice(0, 2), ...r.slice(3)])),
  },
  {
    name: 'two records swapped, manifest fixed up',
    apply: fixedUp(reorder((r) => [r[1]!, r[0]!, ...r.slice(2)])),
  },
  {
    name: 'a record replayed, manifest fixed up',
    apply: fixedUp(reorder((r) => [r[0]!, ...r])),
  },
  { name: 'bytes appended', apply: (f) => editArchive(f, (b) => Buffer.concat([b, Buffer.from('extra')])) },
  {
    name: 'bytes appended, manifest fixed up',
    apply: fixedUp((f) => editArchive(f, (b) => Buffer.concat([b, randomBytes(40)]))),
  },
  { name: 'archive zeroed (same length)', apply: (f) => editArchive(f, (b) => Buffer.alloc(b.length)) },
  { name: 'archive empty', apply: (f) => editArchive(f, () => Buffer.alloc(0)) },
  { name: 'archive part missing', apply: (f) => unlinkSync(archiveOf(f)) },
  {
    name: 'archive of another backup put in its place, manifest fixed up',
    apply: fixedUp((f) => cpSync(join(f.dir, archiveName(f.b)), archiveOf(f))),
  },
  {
    name: 'manifest row count edited',
    apply: (f) => editManifest(f, (m) => ((m.rowCounts as Record<string, number>)['public.users']! += 1)),
  },
  {
    name: 'manifest migration head edited',
    apply: (f) => editManifest(f, (m) => (m.migrationHead = '0001-initial')),
  },
  {
    name: 'manifest audit head edited',
    apply: (f) => editManifest(f, (m) => (m.auditHead = { seq: '1', hash: 'f'.repeat(64) })),
  },
  { name: 'manifest kind edited', apply: (f) => editManifest(f, (m) => (m.kind = 'postgres')) },
  { name: 'manifest seal removed', apply: (f) => editManifest(f, (m) => delete m.seal) },
  {
    name: 'manifest truncated',
    apply: (f) => writeFileSync(manifestOf(f), readFileSync(manifestOf(f)).subarray(0, 100)),
  },
  {
    name: 'keys and seal of another backup pasted into the manifest',
    apply: (f) => {
      const other = JSON.parse(readFileSync(join(f.dir, manifestName(f.b)), 'utf8'))
      editManifest(f, (m) => {
        m.wrappedKey = other.wrappedKey
        m.recoveryKey = other.recoveryKey
        m.seal = other.seal
      })
    },
  },
  { name: 'wrong master key and data keys', apply: () => {}, wrongKey: true },
]

describe('backup corruption suite: every kind of damage is detected, none restores', () => {
  let plinth: TestPlinth
  let base: string
  let files: Omit<Files, 'dir'>
  let service: (dir: string, wrongKey?: boolean) => BackupService

  before(async () => {
    plinth = await startTestPlinth({ env: { ...NO_RATE_LIMITS, PLINTH_MASTER_KEY: TEST_MASTER_KEY } })
    await createUser(plinth, uniqueEmail('admin'), 'admin')
    base = mkdtempSync(join(tmpdir(), 'plinth-backup-damage-'))
    const ctx = plinth.context
    service = (dir, wrongKey = false) =>
      createBackupService({
        config: wrongKey ? { ...ctx.config, masterKey: randomBytes(32).toString('base64') } : ctx.config,
        logger: ctx.logger,
        db: ctx.db,
        keyring: wrongKey ? keyringFromKeys([randomBytes(32)]) : ctx.keyring,
        audit: ctx.audit,
        target: createLocalTarget(dir),
        // Small records: the archive has hundreds of them to drop, swap and replay.
        chunkSize: 16 * 1024,
      })
    const original = service(join(base, 'original'))
    const a = await original.create()
    const b = await original.create()
    files = { a: a.id, b: b.id }
    assert.equal((await original.verify(a.id)).ok, true, 'the undamaged backup verifies')
    rmSync(join(base, 'original', verificationName(a.id)))
    assert.ok(records(readFileSync(join(base, 'original', archiveName(a.id)))).length > 10)
  })
  after(async () => {
    await plinth.close()
    rmSync(base, { recursive: true, force: true })
  })

  it(`has at least 20 kinds of damage (${damages.length})`, () => assert.ok(damages.length >= 20))

  for (const damage of damages) {
    it(`detects: ${damage.name}`, async () => {
      const dir = join(base, randomBytes(4).toString('hex'))
      cpSync(join(base, 'original'), dir, { recursive: true })
      const f = { dir, ...files }
      damage.apply(f)
      const s = service(dir, damage.wrongKey)

      const result = await s.verify(f.a)
      assert.equal(result.ok, false, `verify passed a backup with ${damage.name}`)
      const shown = await s.show(f.a)
      assert.notEqual(shown.status, 'verified')
      assert.ok(['failed', 'damaged'].includes(shown.status))

      const restoreDir = join(dir, 'restored')
      await assert.rejects(
        s.restore(f.a, { dataDir: restoreDir, force: false, knownMigrations }),
        (err: { code?: string }) =>
          ['PLINTH_BACKUP_CORRUPT', 'PLINTH_BACKUP_KEY_UNAVAILABLE', 'PLINTH_BACKUP_TOO_NEW'].includes(
            err.code ?? '',
          ),
      )
      assert.equal(existsSync(join(restoreDir, 'pglite')), false, 'a damaged backup wrote something')
    })
  }

  it('a verification result edited to say "ok" is not believed', async () => {
    const dir = join(base, 'forged')
    cpSync(join(base, 'original'), dir, { recursive: true })
    const s = service(dir)
    const v = await s.verify(files.b)
    assert.equal(v.ok, true)
    const path = join(dir, verificationName(files.b))
    const stored = JSON.parse(readFileSync(path, 'utf8'))
    writeFileSync(path, JSON.stringify({ ...stored, at: new Date(0).toISOString() }))
    assert.equal((await s.show(files.b)).status, 'failed')
  })
})
