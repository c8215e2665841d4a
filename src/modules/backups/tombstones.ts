import { pseudonymFor } from '../../core/privacy.ts'
import type { SecurityEvents } from '../../core/security-events.ts'
import type { BackupTarget } from './local-target.ts'

/**
 * Erasure tombstones: the minimal list (pseudonym and time, nothing else) of every privacy erasure,
 * kept in the backup target beside the backups, so that it survives the database. After a restore,
 * the people a tombstone names are erased again (`erasedIn`), so that restoring an older backup
 * never brings an erased person back. A pseudonym (core/privacy.ts) names nobody; only whoever holds
 * PLINTH_SECRET_KEY and a user id can match it.
 */
export const TOMBSTONES = 'tombstones.json'

export interface Tombstone {
  readonly pseudonym: string
  readonly at: string
}

export async function readTombstones(target: BackupTarget): Promise<Tombstone[]> {
  const text = await target.readText(TOMBSTONES)
  if (text === undefined) return []
  const parsed = JSON.parse(text) as { format: 1; erasures: Tombstone[] }
  return Array.isArray(parsed.erasures) ? parsed.erasures : []
}

/** Appends tombstones (one writer per process at a time; the file is rewritten atomically). */
export function tombstoneWriter(target: () => BackupTarget) {
  let queue: Promise<unknown> = Promise.resolve()
  return (entry: Tombstone): Promise<void> => {
    const next = queue.then(async () => {
      const all = await readTombstones(target())
      if (all.some((t) => t.pseudonym === entry.pseudonym)) return
      all.push(entry)
      await target().writeText(TOMBSTONES, `${JSON.stringify({ format: 1, erasures: all }, null, 1)}\n`)
    })
    queue = next.catch(() => {})
    return next
  }
}

/** Records a tombstone for every successful `user:erased` security event of this process. */
export function recordErasures(
  events: SecurityEvents,
  write: (t: Tombstone) => Promise<void>,
  onError: (err: unknown) => void,
): () => void {
  return events.on(async (e) => {
    if (e.type !== 'user:erased' || e.outcome !== 'success' || !e.target) return
    await write({ pseudonym: e.target.id, at: e.at.toISOString() }).catch(onError)
  })
}

/** The user ids among `userIds` that a tombstone names (to erase again after a restore). */
export function erasedIn(
  userIds: readonly string[],
  tombstones: readonly Tombstone[],
  secretKey: string | undefined,
): string[] {
  const gone = new Set(tombstones.map((t) => t.pseudonym))
  return userIds.filter((id) => gone.has(pseudonymFor(id, secretKey)))
}
