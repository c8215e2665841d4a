import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { AuditChainSummary } from '../src/core/audit.ts'
import type { DatabaseFacts } from '../src/modules/backups/database-facts.ts'
import {
  archiveName,
  BACKUP_ID,
  type BackupManifest,
  manifestName,
  parseManifest,
  unsealed,
  verificationName,
} from '../src/modules/backups/manifest.ts'
import { PITR_BACKUP_JOB, pitrSchedules } from '../src/modules/backups/pitr-job.ts'
import { compareFacts } from '../src/modules/backups/verification.ts'
import { isPlinthError } from '../src/shared/errors.ts'

const ID = '20261206T071500Z-0a1b2c3d'

const manifest = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
  format: 1,
  id: ID,
  kind: 'postgres',
  engine: 'pg_dump',
  startedAt: '2026-12-06T07:15:00.000Z',
  finishedAt: '2026-12-06T07:15:04.000Z',
  plinthVersion: '0.1.0',
  postgresVersion: '17.2',
  migrationHead: '0014-create-error-groups',
  rowCounts: { 'public.users': 3, 'public.audit_log': 12 },
  auditHead: { seq: '12', hash: 'ab'.repeat(32) },
  compression: 'zstd',
  chunkSize: 65536,
  parts: [{ name: archiveName(ID), dumpBytes: 4096, bytes: 1024, sha256: 'cd'.repeat(32) }],
  wrappedKey: 'wrapped',
  recoveryKey: 'recovery',
  seal: 'seal',
  ...over,
})

const corruptBecause = (reason: RegExp) => (err: unknown) => {
  assert.ok(isPlinthError(err))
  assert.equal(err.code, 'PLINTH_BACKUP_CORRUPT')
  assert.match(err.message, new RegExp(`^The manifest of backup ${ID} is damaged or was altered: `))
  assert.match(err.message, reason)
  return true
}

describe('backup file names', () => {
  it('derive from the backup id, which is a UTC timestamp and 8 hex digits', () => {
    assert.match(ID, BACKUP_ID)
    assert.doesNotMatch('20261206T071500Z-0A1B2C3D', BACKUP_ID)
    assert.doesNotMatch('../20261206T071500Z-0a1b2c3d', BACKUP_ID)
    assert.equal(manifestName(ID), `${ID}.manifest.json`)
    assert.equal(archiveName(ID), `${ID}.archive`)
    assert.equal(verificationName(ID), `${ID}.verification.json`)
  })
})

describe('parseManifest', () => {
  it('accepts a well-formed manifest, and unsealed() is it without the seal', () => {
    const parsed = parseManifest(ID, JSON.stringify(manifest()))
    assert.equal(parsed.id, ID)
    const body = unsealed(parsed)
    assert.equal('seal' in body, false)
    assert.deepEqual({ ...body, seal: 'seal' }, parsed)
  })

  const damaged: [string, string, RegExp][] = [
    ['text that is not JSON', '{"format":1,', /it is not valid JSON/],
    ['an array', '[1,2]', /it is not a JSON object/],
    ['null', 'null', /it is not a JSON object/],
    ['another format', JSON.stringify(manifest({ format: 2 })), /unknown format 2/],
    [
      'another id (a manifest copied over another)',
      JSON.stringify(manifest({ id: '20260101T000000Z-00000000' })),
      /its id differs from its file name/,
    ],
    ['an unknown kind', JSON.stringify(manifest({ kind: 'mysql' })), /unknown kind/],
    ['a missing seal', JSON.stringify(manifest({ seal: undefined })), /seal is missing/],
    ['a numeric version', JSON.stringify(manifest({ postgresVersion: 17 })), /postgresVersion is missing/],
    ['an unknown compression', JSON.stringify(manifest({ compression: 'lz4' })), /unknown compression/],
    ['a fractional chunk size', JSON.stringify(manifest({ chunkSize: 1.5 })), /chunkSize is missing/],
    ['row counts as a list', JSON.stringify(manifest({ rowCounts: [3] })), /rowCounts is malformed/],
    [
      'a negative row count',
      JSON.stringify(manifest({ rowCounts: { 'public.users': -1 } })),
      /rowCounts is malformed/,
    ],
    ['no parts', JSON.stringify(manifest({ parts: [] })), /parts is malformed/],
    ['parts that are not a list', JSON.stringify(manifest({ parts: {} })), /parts is malformed/],
    [
      'a part of another backup',
      JSON.stringify(
        manifest({ parts: [{ name: 'other.archive', dumpBytes: 1, bytes: 1, sha256: 'cd'.repeat(32) }] }),
      ),
      /parts is malformed/,
    ],
    [
      'a checksum that is not SHA-256 hex',
      JSON.stringify(
        manifest({ parts: [{ name: archiveName(ID), dumpBytes: 1, bytes: 1, sha256: 'CD'.repeat(32) }] }),
      ),
      /parts is malformed/,
    ],
    [
      'a part without sizes',
      JSON.stringify(manifest({ parts: [{ name: archiveName(ID), sha256: 'cd'.repeat(32) }] })),
      /parts is malformed/,
    ],
  ]
  for (const [what, text, reason] of damaged)
    it(`refuses ${what} as PLINTH_BACKUP_CORRUPT, saying why`, () => {
      assert.throws(() => parseManifest(ID, text), corruptBecause(reason))
    })
})

describe('compareFacts: what a scratch restore holds against what the manifest promised', () => {
  const m = manifest() as unknown as BackupManifest
  const facts = (over: Partial<DatabaseFacts> = {}): DatabaseFacts => ({
    postgresVersion: '17.2',
    migrationHead: m.migrationHead,
    rowCounts: { ...m.rowCounts },
    ...over,
  })
  const chain = (over: Partial<AuditChainSummary> = {}): AuditChainSummary => ({
    ok: true,
    checked: 12,
    head: m.auditHead,
    ...over,
  })
  const byName = (checks: ReturnType<typeof compareFacts>) =>
    Object.fromEntries(checks.map((c) => [c.name, c]))

  it('passes every check when the restore matches', () => {
    const checks = compareFacts(m, facts(), chain())
    assert.deepEqual(checks, [
      { name: 'migration-head', ok: true, detail: 'at 0014-create-error-groups' },
      { name: 'row-counts', ok: true, detail: '2 table(s) hold the counted rows' },
      { name: 'audit-chain', ok: true, detail: '12 row(s) verify, head seq 12' },
    ])
  })

  it('names another migration head, and a database never migrated', () => {
    assert.deepEqual(byName(compareFacts(m, facts({ migrationHead: '0013-x' }), chain()))['migration-head'], {
      name: 'migration-head',
      ok: false,
      detail: 'restored at 0013-x, the manifest says 0014-create-error-groups',
    })
    const bare = { ...m, migrationHead: null, rowCounts: {}, auditHead: null }
    const checks = byName(compareFacts(bare, facts({ migrationHead: null, rowCounts: {} }), null))
    assert.equal(checks['migration-head']?.detail, 'at no migration')
    assert.equal(checks['row-counts']?.detail, '0 table(s) hold the counted rows')
    assert.deepEqual(checks['audit-chain'], {
      name: 'audit-chain',
      ok: true,
      detail: 'no audit log in this backup',
    })
  })

  it('lists tables whose counts differ, or that are missing on either side (at most 10)', () => {
    const checks = byName(
      compareFacts(m, facts({ rowCounts: { 'public.users': 2, 'public.extra': 1 } }), chain()),
    )
    assert.equal(checks['row-counts']?.ok, false)
    assert.equal(
      checks['row-counts']?.detail,
      'public.users: restored 2, manifest 3; public.audit_log: restored missing, manifest 12; public.extra: restored 1, manifest missing',
    )
    const many = Object.fromEntries(Array.from({ length: 15 }, (_, i) => [`public.t${i}`, i + 1]))
    const detail = byName(compareFacts(m, facts({ rowCounts: { ...m.rowCounts, ...many } }), chain()))[
      'row-counts'
    ]?.detail
    assert.equal(detail?.split('; ').length, 10)
  })

  it('fails the audit check when the log is missing, the chain breaks, or it ends elsewhere', () => {
    assert.deepEqual(byName(compareFacts(m, facts(), null))['audit-chain'], {
      name: 'audit-chain',
      ok: false,
      detail: 'the audit log is missing',
    })
    assert.equal(
      byName(compareFacts(m, facts(), chain({ ok: false, failure: 'row 7: hash mismatch' })))['audit-chain']
        ?.detail,
      'row 7: hash mismatch',
    )
    assert.equal(
      byName(compareFacts(m, facts(), chain({ ok: false })))['audit-chain']?.detail,
      'the restored audit chain does not verify',
    )
    const shorter = byName(compareFacts(m, facts(), chain({ head: { seq: '11', hash: 'ef'.repeat(32) } })))
    assert.deepEqual(shorter['audit-chain'], {
      name: 'audit-chain',
      ok: false,
      detail: 'the restored chain ends at seq 11, the manifest at 12',
    })
    const empty = byName(compareFacts(m, facts(), chain({ head: null, checked: 0 })))
    assert.equal(empty['audit-chain']?.detail, 'the restored chain ends at seq none, the manifest at 12')
    const noHead = byName(compareFacts({ ...m, auditHead: null }, facts(), chain({ head: null, checked: 0 })))
    assert.deepEqual(noHead['audit-chain'], {
      name: 'audit-chain',
      ok: true,
      detail: '0 row(s) verify, head seq none',
    })
    const unexpected = byName(compareFacts({ ...m, auditHead: null }, facts(), chain()))
    assert.equal(unexpected['audit-chain']?.detail, 'the restored chain ends at seq 12, the manifest at none')
  })
})

describe('the pgBackRest backup schedule', () => {
  it('exists only with a stanza and a cron that is not "off"', () => {
    assert.deepEqual(pitrSchedules({ pitrStanza: undefined, pitrBackupCron: '0 2 * * *' }), [])
    assert.deepEqual(pitrSchedules({ pitrStanza: 'main', pitrBackupCron: ' OFF ' }), [])
    const [schedule] = pitrSchedules({ pitrStanza: 'main', pitrBackupCron: '0 2 * * *' })
    assert.equal(schedule?.input.jobName, PITR_BACKUP_JOB)
    assert.equal(schedule?.input.cron, '0 2 * * *')
    assert.deepEqual(schedule?.input.payload, {})
  })
})
