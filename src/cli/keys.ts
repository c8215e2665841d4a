import { defaultModules } from '../app/create-plinth.ts'
import { RELAYED_SIGNAL_EVENT } from '../app/lifecycle.ts'
import { loadConfig } from '../config/load-config.ts'
import { cliCaller } from '../core/audit.ts'
import { createDatabase } from '../infra/db/create-db.ts'
import { createMigrator } from '../infra/db/migrator.ts'
import { createAudit } from '../modules/audit/audit.service.ts'
import { type KeyStatus, keyStatus } from '../modules/keys/key-status.ts'
import { createKeyStore } from '../modules/keys/key-store.ts'
import { masterKeysFrom } from '../modules/keys/master-keys.ts'
import { type RotationEvent, type RotationResult, rotateKeys } from '../modules/keys/rotation.ts'
import { type CliIo, cliLogger, printJson, UsageError } from './cli-io.ts'
import type { CommandInput } from './cli-spec.ts'

export async function keysCommand(input: CommandInput, io: CliIo): Promise<number> {
  const action = input.action as 'rotate' | 'status' | 'rewrap'
  const values = input.values as { 'batch-size'?: string; resume?: boolean }
  const batchSize = values['batch-size'] === undefined ? 500 : Number(values['batch-size'])
  if (!/^\d+$/.test(values['batch-size'] ?? '500') || batchSize < 1 || batchSize > 10_000) {
    throw new UsageError('--batch-size takes a whole number from 1 to 10000')
  }

  const config = loadConfig()
  const logger = cliLogger(config, { verbose: input.verbose })
  const db = await createDatabase(config, { logger, attachToRunning: true })
  const abort = new AbortController()
  let stopListening = () => {}
  // Rotations, retirements and re-wraps are recorded in the audit log (sealed before exit).
  const audit = createAudit({ db: db.kysely, logger })
  try {
    await db.connect()
    const migrations = Object.assign({}, ...defaultModules().map((m) => m.migrations ?? {}))
    const pending = await createMigrator(db, migrations, { logger }).pendingCount()
    if (pending > 0) {
      io.err(`plinth keys: ${pending} migration(s) pending: run "plinth migrate up" first`)
      return 1
    }
    const columns = defaultModules().flatMap((m) => m.encryptedColumns ?? [])
    const store = createKeyStore(db.kysely, masterKeysFrom(config, logger), {
      audit: { audit, caller: cliCaller() },
    })

    if (action === 'status') {
      const status = await keyStatus(db.kysely, store, columns)
      if (input.json) printJson(io, status)
      else io.out(formatStatus(status))
      return 0
    }
    if (action === 'rewrap') {
      if (!store.masters.previous) {
        io.err(
          'plinth keys rewrap: PLINTH_MASTER_KEY_PREVIOUS is not set: set it to the old master key (docs/operations/key-rotation.md)',
        )
        return 1
      }
      const counts = await keyStatus(db.kysely, store, columns)
      const inUse = async (id: string) => (counts.keys.find((k) => k.id === id)?.values ?? 0) > 0
      const { rewrapped, kept } = await store.rewrap(inUse)
      if (input.json) {
        printJson(io, { rewrapped, kept })
        return 0
      }
      io.out(
        rewrapped.length === 0
          ? 'Every data key is already wrapped under the current master key.'
          : `re-wrapped ${rewrapped.length} data key(s) under the current master key: ${rewrapped.join(', ')}`,
      )
      if (kept.length > 0)
        io.out(
          `kept the previous master key's legacy key ${kept.join(', ')} (values still use it): run "plinth keys rotate" to move them`,
        )
      io.out('PLINTH_MASTER_KEY_PREVIOUS can be removed once every replica runs with the new master key.')
      return 0
    }

    stopListening = abortOnInterrupt(abort)
    const graceMs = db.kind === 'embedded' ? 0 : 2 * config.keysRefresh
    let result: RotationResult
    try {
      result = await rotateKeys(
        { db: db.kysely, store, columns, logger },
        {
          batchSize,
          graceMs,
          resume: values.resume === true,
          signal: abort.signal,
          // With --json, standard output holds only the result: progress goes to standard error.
          onProgress: (e) => (input.json ? io.err(formatEvent(e)) : io.out(formatEvent(e))),
        },
      )
    } catch (err) {
      if (abort.signal.aborted) {
        io.err('plinth keys rotate: interrupted; what was done stays done: run it again to finish')
        return 130
      }
      throw err
    }
    if (input.json) printJson(io, result)
    return reportRotation(result, io, { json: input.json })
  } finally {
    stopListening()
    await audit.close()
    await db.close()
  }
}

/**
 * Aborts `abort` on the first SIGINT or SIGTERM, sent directly or relayed by the `plinth` process
 * that re-ran this one on Node 24 (bin/plinth.js): Ctrl-C reaches such a command both ways, and the
 * second copy must not end it before it says what was done. One of each is taken; another signal
 * sent directly then ends the command at once (the default action). Returns the remover.
 */
export function abortOnInterrupt(abort: AbortController): () => void {
  const onSignal = () => abort.abort()
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  process.once(RELAYED_SIGNAL_EVENT, onSignal)
  return () => {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    process.off(RELAYED_SIGNAL_EVENT, onSignal)
  }
}

/** One line of rotation progress. */
export function formatEvent(e: RotationEvent): string {
  switch (e.type) {
    case 'started':
      return e.createdId
        ? `new active key ${e.createdId}${e.retiringIds.length > 0 ? `; retiring ${e.retiringIds.join(', ')}` : ''}`
        : `resuming: active key ${e.activeId}${e.retiringIds.length > 0 ? `; retiring ${e.retiringIds.join(', ')}` : ''}`
    case 'batch':
      return `${e.table}.${e.column}: ${e.moved} re-encrypted${e.failed ? `, ${e.failed} unreadable` : ''}${e.conflicts ? `, ${e.conflicts} changed meanwhile (next pass)` : ''}`
    case 'waiting':
      return `waiting ${Math.ceil(e.ms / 1000)}s for every replica to load the active key, then sweeping again…`
    case 'retired':
      return `retired ${e.ids.join(', ')}`
  }
}

/** Prints the outcome of a rotation; the exit code: 1 when a key could not be retired. */
export function reportRotation(result: RotationResult, io: CliIo, options: { json?: boolean } = {}): number {
  if (!options.json) io.out(`done: ${result.moved} value(s) re-encrypted; active key ${result.activeId}`)
  for (const f of result.failed.slice(0, 20)) {
    io.err(`unreadable: ${f.table}.${f.column} ${f.id} (key ${f.keyId ?? 'none'})`)
  }
  if (result.failed.length > 20) io.err(`… and ${result.failed.length - 20} more`)
  const remaining = Object.entries(result.remaining)
  if (!result.converged) {
    io.err(
      'plinth keys rotate: values under old keys kept appearing after the grace period (a replica not reloading its keys?); nothing was retired: run it again',
    )
    return 1
  }
  if (remaining.length > 0) {
    io.err(
      `plinth keys rotate: not retired, still in use: ${remaining.map(([id, n]) => `${id} (${n})`).join(', ')}. Fix or delete the unreadable values, then run "plinth keys rotate --resume"`,
    )
    return 1
  }
  return 0
}

/** The status as a few aligned lines of text. */
export function formatStatus(status: KeyStatus): string {
  const lines = ['Keys:']
  for (const k of status.keys) {
    const when = k.retiredAt
      ? `retired ${k.retiredAt}`
      : k.createdAt
        ? `created ${k.createdAt}`
        : k.legacy
          ? 'derived from the master key'
          : ''
    lines.push(
      `  ${k.state.padEnd(9)} ${k.id}  ${String(k.values).padStart(8)} value(s)  ${when}${k.legacy && k.createdAt ? ' (legacy)' : ''}`,
    )
  }
  lines.push('Columns:')
  for (const c of status.columns) {
    const parts = Object.entries(c.byKey).map(([id, n]) => `${id}: ${n}`)
    lines.push(`  ${`${c.table}.${c.column}`.padEnd(40)} ${String(c.total).padStart(8)}  ${parts.join(', ')}`)
  }
  if (status.unfinished)
    lines.push(
      'Rotation unfinished: run "plinth keys rotate" to move the remaining values to the active key.',
    )
  for (const w of status.warnings) lines.push(`warning: ${w}`)
  return lines.join('\n')
}
