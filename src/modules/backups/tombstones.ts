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

/**
 * The tombstone file's writer: `add` appends one entry, `sync` merges in every erasure the audit log
 * records. One writer per process at a time (a queue); the file is rewritten atomically. Writers of
 * several processes can still race on the read-modify-write (an S3 bucket has no lock), so the
 * file is rebuilt from the audit log — the one record every writer shares — at start, after each
 * erasure and before each backup: an entry a racing writer dropped comes back at the next sync.
 * Entries are never removed (the audit log's retention may prune rows older than the file's).
 */
export function tombstoneWriter(
  target: () => BackupTarget,
  erasures?: () => Promise<readonly { pseudonym: string; at: Date }[]>,
) {
  let queue: Promise<unknown> = Promise.resolve()
  const merge = (entries: () => Promise<readonly Tombstone[]>): Promise<Tombstone[]> => {
    const next = queue.then(async () => {
      const wanted = await entries()
      const all = await readTombstones(target())
      const known = new Set(all.map((t) => t.pseudonym))
      const added = wanted.filter((t) => !known.has(t.pseudonym) && known.add(t.pseudonym))
      if (added.length === 0) return all
      const merged = [...all, ...added].sort((x, y) => x.at.localeCompare(y.at))
      await target().writeText(TOMBSTONES, `${JSON.stringify({ format: 1, erasures: merged }, null, 1)}\n`)
      return merged
    })
    queue = next.catch(() => {})
    return next
  }
  return {
    /** Adds one tombstone (if its pseudonym is not there yet). */
    add: async (entry: Tombstone): Promise<void> => {
      await merge(async () => [entry])
    },
    /** Merges in every erasure the audit log records; returns the whole list. */
    sync: (): Promise<Tombstone[]> =>
      merge(async () =>
        (await (erasures?.() ?? Promise.resolve([]))).map((e) => ({
          pseudonym: e.pseudonym,
          at: e.at.toISOString(),
        })),
      ),
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
