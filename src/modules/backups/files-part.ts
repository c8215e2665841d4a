import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises'
import { dirname, join, relative, resolve, sep } from 'node:path'
import type { RegisteredBackupPath } from '../../core/module.ts'
import { PlinthError } from '../../shared/errors.ts'

/**
 * The second part of a backup: the files under the directories modules declare (`backupPaths`, e.g.
 * the files module's local storage), concatenated in the order the manifest lists them and
 * encrypted like the database's archive (`<id>.files.archive`, its records bound to `<id>:files`).
 * The sealed manifest lists every file (root, path, size, SHA-256): a file changed, dropped or
 * swapped in the archive fails its hash. Names starting with `.` (staging areas) are left out.
 */
export interface FilesRoot {
  /** `<module>/<name>` of the declaration. */
  readonly root: string
  readonly files: { readonly path: string; readonly size: number; readonly sha256: string }[]
}

export const filesArchiveName = (id: string) => `${id}.files.archive`
/** The id the files part's records are bound to (not the database archive's). */
export const filesPartId = (id: string) => `${id}:files`
export const rootOf = (p: Pick<RegisteredBackupPath, 'module' | 'name'>) => `${p.module}/${p.name}`

/** Every regular file under `dir` (relative paths with `/`, sorted), leaving out dot-names. */
async function walk(dir: string): Promise<{ path: string; size: number }[]> {
  const out: { path: string; size: number }[] = []
  const visit = async (d: string): Promise<void> => {
    let entries: import('node:fs').Dirent[]
    try {
      entries = await readdir(d, { withFileTypes: true })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
      throw err
    }
    for (const e of entries) {
      if (e.name.startsWith('.')) continue
      const full = join(d, e.name)
      if (e.isDirectory()) await visit(full)
      else if (e.isFile())
        out.push({ path: relative(dir, full).split(sep).join('/'), size: (await stat(full)).size })
    }
  }
  await visit(dir)
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
}

/**
 * Lists the files under `paths` and streams their bytes; `done()` (after the stream ends) gives the
 * roots with each file's size and SHA-256 as read (a file cut short while read fails the backup).
 */
export async function filesSource(paths: readonly RegisteredBackupPath[]): Promise<{
  readonly count: number
  stream(): AsyncGenerator<Buffer>
  done(): FilesRoot[]
}> {
  const listed = await Promise.all(
    paths.map(async (p) => ({ root: rootOf(p), dir: resolve(p.path), files: await walk(resolve(p.path)) })),
  )
  const roots: { root: string; files: { path: string; size: number; sha256: string }[] }[] = listed.map(
    (l) => ({ root: l.root, files: [] }),
  )
  return {
    count: listed.reduce((n, l) => n + l.files.length, 0),
    async *stream() {
      for (const [i, l] of listed.entries()) {
        for (const f of l.files) {
          const hash = createHash('sha256')
          let size = 0
          for await (const chunk of createReadStream(join(l.dir, ...f.path.split('/')))) {
            const b = chunk as Buffer
            // Only the bytes listed: a file that grew while read is cut at its listed size.
            const take = b.subarray(0, Math.max(0, f.size - size))
            hash.update(take)
            size += take.length
            if (take.length > 0) yield take
          }
          if (size !== f.size)
            throw new PlinthError(
              'PLINTH_BACKUP_ENGINE_FAILED',
              `${l.root}: ${f.path} shrank while it was backed up (${size} of ${f.size} bytes): retry the backup.`,
            )
          roots[i]!.files.push({ path: f.path, size, sha256: hash.digest('hex') })
        }
      }
    },
    done: () => roots,
  }
}

/**
 * Reads the files part back (`source`: its decrypted, decompressed bytes) against the manifest's
 * list: each file's bytes are hashed and, with `into`, written to `<dir of its root>/<path>`
 * (temporary name, then renamed; a root with no directory there is only checked).
 */
export async function readFilesPart(
  source: AsyncIterable<Uint8Array>,
  roots: readonly FilesRoot[],
  into?: ReadonlyMap<string, string>,
): Promise<{ files: number; bytes: number; restored: number }> {
  const queue = roots.flatMap((r) => r.files.map((f) => ({ root: r.root, ...f })))
  let i = 0
  let left = queue[0]?.size ?? 0
  let hash = createHash('sha256')
  let out: import('node:fs/promises').FileHandle | undefined
  let tmp = ''
  let restored = 0
  let bytes = 0
  const target = (q: (typeof queue)[number]) => {
    const dir = into?.get(q.root)
    return dir ? join(resolve(dir), ...q.path.split('/')) : undefined
  }
  const begin = async () => {
    const q = queue[i]
    const dest = q && target(q)
    if (!dest) return
    await mkdir(dirname(dest), { recursive: true })
    tmp = `${dest}.restore-${process.pid}`
    out = await open(tmp, 'w', 0o600)
  }
  const finish = async () => {
    const q = queue[i]!
    const digest = hash.digest('hex')
    if (digest !== q.sha256)
      throw new PlinthError(
        'PLINTH_BACKUP_CORRUPT',
        `${q.root}: ${q.path} does not match its SHA-256 in the manifest.`,
      )
    if (out) {
      await out.sync()
      await out.close()
      out = undefined
      await rename(tmp, target(q)!)
      restored += 1
    }
    i += 1
    hash = createHash('sha256')
    left = queue[i]?.size ?? 0
  }
  try {
    await begin()
    // Empty files complete at once.
    while (i < queue.length && left === 0) {
      await finish()
      await begin()
    }
    for await (const piece of source) {
      let b = Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength)
      while (b.length > 0) {
        if (i >= queue.length)
          throw new PlinthError(
            'PLINTH_BACKUP_CORRUPT',
            'The files part holds more bytes than its manifest lists.',
          )
        const take = b.subarray(0, left)
        hash.update(take)
        if (out) await out.write(take)
        bytes += take.length
        left -= take.length
        b = b.subarray(take.length)
        while (i < queue.length && left === 0) {
          await finish()
          await begin()
        }
      }
    }
    if (i < queue.length)
      throw new PlinthError(
        'PLINTH_BACKUP_CORRUPT',
        'The files part ends before every file its manifest lists.',
      )
  } finally {
    if (out) {
      await out.close().catch(() => {})
      await rm(tmp, { force: true })
    }
  }
  return { files: queue.length, bytes, restored }
}
