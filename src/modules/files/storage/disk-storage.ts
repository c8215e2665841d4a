import { createReadStream, open as openFd } from 'node:fs'
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises'
import { dirname, join, relative, sep } from 'node:path'
import type { Readable } from 'node:stream'
import {
  assertKey,
  type ByteRange,
  type FileStorage,
  ownerPrefix,
  type StoredObject,
} from './file-storage.ts'

const STAGING = '.staging'

async function fsyncPath(path: string): Promise<void> {
  const handle = await open(path, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

const absent = (err: unknown) => (err as NodeJS.ErrnoException).code === 'ENOENT'

/**
 * Files on the local disk under `root`. A put fsyncs the staged file, renames it into place (atomic
 * on one filesystem: the staging folder is inside `root`) and fsyncs the folder, so that a row
 * written after `put` returns never points at bytes a crash could lose.
 */
export async function createDiskStorage(root: string): Promise<FileStorage> {
  const stagingDir = join(root, STAGING)
  await mkdir(stagingDir, { recursive: true, mode: 0o700 })
  const pathOf = (key: string) => join(root, ...assertKey(key).split('/'))

  /**
   * Writes through a temporary file renamed into place. `durable` (originals) fsyncs the file and
   * the folder; variants are a cache made again on demand, so they skip both (a crash may leave
   * one empty: an empty variant counts as absent, see variants.ts).
   */
  async function place(key: string, write: (tmp: string) => Promise<void>, durable: boolean): Promise<void> {
    const target = pathOf(key)
    await mkdir(dirname(target), { recursive: true, mode: 0o700 })
    const tmp = join(stagingDir, `put-${process.pid}-${Math.random().toString(36).slice(2)}`)
    try {
      await write(tmp)
      if (durable) await fsyncPath(tmp)
      await rename(tmp, target)
    } catch (err) {
      await rm(tmp, { force: true })
      throw err
    }
    if (durable) await fsyncPath(dirname(target)).catch(() => {})
  }

  async function* walk(dir: string): AsyncGenerator<StoredObject> {
    let entries: import('node:fs').Dirent[]
    try {
      entries = await readdir(dir, { withFileTypes: true })
    } catch (err) {
      if (absent(err)) return
      throw err
    }
    for (const entry of entries) {
      const full = join(dir, entry.name)
      if (entry.isDirectory()) {
        if (dir === root && entry.name === STAGING) continue
        yield* walk(full)
      } else if (entry.isFile()) {
        const key = relative(root, full).split(sep).join('/')
        yield { key, size: (await stat(full)).size }
      }
    }
  }

  return {
    kind: 'disk',
    location: root,
    stagingDir,
    async put(key, stagedPath) {
      await place(key, (tmp) => rename(stagedPath, tmp), true)
    },
    async putBuffer(key, bytes) {
      await place(
        key,
        async (tmp) => {
          const handle = await open(tmp, 'wx', 0o600)
          try {
            await handle.writeFile(bytes)
          } finally {
            await handle.close()
          }
        },
        false,
      )
    },
    async read(key, range?: ByteRange): Promise<Readable | undefined> {
      const path = pathOf(key)
      // Opened first (a missing object is undefined, not a stream that fails after the headers),
      // then read by a plain fd stream: lighter per request than a FileHandle's.
      const fd = await new Promise<number | undefined>((resolve, reject) =>
        openFd(path, 'r', (err, fd) =>
          err ? (absent(err) ? resolve(undefined) : reject(err)) : resolve(fd),
        ),
      )
      if (fd === undefined) return undefined
      return createReadStream(path, { fd, ...(range ? { start: range.start, end: range.end } : {}) })
    },
    localPath: pathOf,
    async stat(key) {
      try {
        return { size: (await stat(pathOf(key))).size }
      } catch (err) {
        if (absent(err)) return undefined
        throw err
      }
    },
    async delete(key) {
      const path = pathOf(key)
      await rm(`${path}.v`, { recursive: true, force: true })
      await rm(path, { force: true })
    },
    async deletePrefix(prefix) {
      const dir = join(root, ownerPrefix(prefix.replace(/\/$/, '')))
      let count = 0
      for await (const _ of walk(dir)) count++
      await rm(dir, { recursive: true, force: true })
      return count
    },
    list(prefix) {
      return walk(prefix ? join(root, ownerPrefix(prefix.replace(/\/$/, ''))) : root)
    },
    async close() {},
  }
}
