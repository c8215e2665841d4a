import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { sql } from 'kysely'
import { backupServiceOf } from '../src/modules/backups/backups.module.ts'
import { NO_RATE_LIMITS } from './helpers/accounts.ts'
import { runCliWithEnv as cli } from './helpers/run-cli.ts'
import { skipUnlessPostgres } from './helpers/services.ts'
import { TEST_MASTER_KEY } from './helpers/test-config.ts'
import { createTestDatabase } from './helpers/test-database.ts'
import { startTestPlinth } from './helpers/test-plinth.ts'

const skip = await skipUnlessPostgres()
const BAR = /^restoring (\S+) \[(#*)(-*)\]\s+(\d+)%\s+([\d.]+) \/ ([\d.]+) MiB$/

describe('plinth backup restore: the progress bar', { skip }, () => {
  it('shows archive bytes read / total on standard error (--progress or a terminal), never with --json; the result is unchanged', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'plinth-progress-'))
    const env = { ...NO_RATE_LIMITS, PLINTH_BACKUP_DIR: dir, PLINTH_MASTER_KEY: TEST_MASTER_KEY }
    const source = await startTestPlinth({ backend: 'postgres', env })
    const targets = await Promise.all([createTestDatabase(), createTestDatabase(), createTestDatabase()])
    try {
      // About 2.5 MB of hex that compresses to some 1 MB: an archive read in many pieces.
      await sql`create table progress_filler as
        select i, md5(random()::text) || md5(random()::text) as t from generate_series(1, 40000) i`.execute(
        source.db.kysely,
      )
      const backup = await backupServiceOf(source.context).create()
      const archiveBytes = backup.manifest!.parts[0]!.bytes
      assert.ok(archiveBytes > 4 * 65536, `archive of ${archiveBytes} bytes`)
      const cliEnv = {
        ...env,
        DATABASE_URL: source.config.databaseUrl!,
        PLINTH_ENV: 'test',
        PLINTH_LOG_LEVEL: 'silent',
      }
      const resultLine = (url: string) =>
        `restored backup ${backup.id} into ${new URL(url).host}${new URL(url).pathname}; row counts match the manifest; 0 erasure(s) made since re-applied\n`

      const shown = await cli(
        ['backup', 'restore', backup.id, '--target', targets[0]!.url, '--progress'],
        cliEnv,
      )
      assert.equal(shown.code, 0, shown.err)
      assert.equal(shown.out, resultLine(targets[0]!.url), 'standard output holds the result only')
      const bars = shown.err
        .trim()
        .split('\n')
        .map((l) => BAR.exec(l))
      assert.ok(
        bars.every((m) => m !== null),
        shown.err,
      )
      assert.ok(bars.length >= 3 && bars.length <= 11, shown.err)
      const percents = bars.map((m) => Number(m![4]))
      assert.deepEqual(
        percents,
        [...percents].sort((a, b) => a - b),
        'it only moves forward',
      )
      assert.equal(new Set(percents).size, percents.length, 'one line per step')
      const last = bars.at(-1)!
      assert.equal(last[1], backup.id)
      assert.equal(last[2], '##########')
      assert.equal(last[4], '100')
      assert.equal(last[5], last[6])
      assert.equal(Number(last[6]), Number((archiveBytes / 1048576).toFixed(1)))

      const json = await cli(
        ['backup', 'restore', backup.id, '--target', targets[1]!.url, '--progress', '--json'],
        cliEnv,
      )
      assert.equal(json.code, 0, json.err)
      assert.equal(json.err, '', 'no progress with --json')
      assert.equal(JSON.parse(json.out).matches, true)

      // Standard error is not a terminal here: no bar unless asked for.
      assert.equal(process.stderr.isTTY, undefined)
      const plain = await cli(['backup', 'restore', backup.id, '--target', targets[2]!.url], cliEnv)
      assert.equal(plain.code, 0, plain.err)
      assert.equal(plain.err, '')
      assert.equal(plain.out, resultLine(targets[2]!.url))
    } finally {
      await source.close()
      for (const t of targets) await t.drop()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
