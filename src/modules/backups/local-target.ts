import { randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import type { Readable, Writable } from 'node:stream'
import { PlinthError } from '../../shared/errors.ts'

/** A part being written: invisible to `list` and `open` until `publish()`. */
export interface PendingPart {
  readonly writable: Writable
  /** The bytes written so far, from the temporary name (to check them before publishing). */
  readBack(): Readable
  /** Makes the part visible under its name (an atomic rename on a local directory). */
  publish(): Promise<void>
  /** Deletes the temporary part. */
  discard(): Promise<void>
}

/**
 * Where backups are kept. A local directory today; an S3 bucket implements the same calls
 * (multipart upload to a temporary key, copy-then-delete to publish).
 */
export interface BackupTarget {
  /** For messages and logs, without credentials. */
  readonly description: string
  create(name: string): Promise<PendingPart>
  /** @throws PlinthError `PLINTH_BACKUP_NOT_FOUND` when `name` is not published. */
  open(name: string): Promise<Readable>
  /** Size in bytes of a published part, or undefined when it does not exist. */
  size(name: string): Promise<number | undefined>
  readText(name: string): Promise<string | undefined>
  /** Writes a small text file atomically (temporary name, then rename). */
  writeText(name: string, text: string): Promise<void>
  /** Every published name. */
  list(): Promise<string[]>
  remove(name: string): Promise<void>
  /** Releases what it holds open (an S3 target's clients and their sockets); idempotent. */
  close?(): Promise<void>
}

const TEMP_PREFIX = '.tmp-'
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/

function assertName(name: string): void {
  if (!NAME.test(name) || name.includes('..')) throw new TypeError(`backup target: invalid part name ${name}`)
}

/** The local-directory target (`PLINTH_BACKUP_DIR`, default `<data dir>/backups`), created mode 0700. */
export function createLocalTarget(dir: string): BackupTarget {
  const root = resolve(dir)
  const ready = () => mkdir(root, { recursive: true, mode: 0o700 })
  const tempName = (name: string) => join(root, `${TEMP_PREFIX}${randomBytes(6).toString('hex')}-${name}`)
  const notFound = (name: string) =>
    new PlinthError('PLINTH_BACKUP_NOT_FOUND', `The backup target ${root} holds no ${name}.`)

  return Object.freeze({
    description: root,
    async create(name: string) {
      assertName(name)
      await ready()
      const temp = tempName(name)
      const writable = createWriteStream(temp, { flags: 'wx', mode: 0o600 })
      return {
        writable,
        readBack: () => createReadStream(temp),
        async publish() {
          // The data must be on disk before the name says it is there.
          const fh = await open(temp, 'r')
          try {
            await fh.sync()
          } finally {
            await fh.close()
          }
          await rename(temp, join(root, name))
        },
        discard: () => rm(temp, { force: true }),
      }
    },
    async open(name: string) {
      assertName(name)
      const path = join(root, name)
      try {
        await stat(path)
      } catch {
        throw notFound(name)
      }
      return createReadStream(path)
    },
    async size(name: string) {
      assertName(name)
      try {
        return (await stat(join(root, name))).size
      } catch {
        return undefined
      }
    },
    async readText(name: string) {
      assertName(name)
      try {
        return await readFile(join(root, name), 'utf8')
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
        throw err
      }
    },
    async writeText(name: string, text: string) {
      assertName(name)
      await ready()
      const temp = tempName(name)
      try {
        await writeFile(temp, text, { mode: 0o600, flag: 'wx' })
        await rename(temp, join(root, name))
      } catch (err) {
        await rm(temp, { force: true }).catch(() => {})
        throw err
      }
    },
    async list() {
      try {
        return (await readdir(root)).filter((n) => !n.startsWith(TEMP_PREFIX) && NAME.test(n))
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
        throw err
      }
    },
    async remove(name: string) {
      assertName(name)
      await rm(join(root, name), { force: true })
    },
  })
}
