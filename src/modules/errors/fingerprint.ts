import { createHash } from 'node:crypto'

/** Frames of a stack that name the error's group. */
export const FINGERPRINT_FRAMES = 5

const FRAME = /^\s*at\s+(?:(.*?)\s+\()?(.*?)(?::\d+)?(?::\d+)?\)?$/

/**
 * The top frames of `stack`, normalised so that the same fault groups together across restarts,
 * deploys and machines: line and column numbers dropped (an unrelated edit above moves them), paths
 * made relative to the project (`src/…`, `node_modules/<package>/…`, `node:…`), `file://` removed,
 * and anonymous frames kept as `<anonymous>`. Node's internal frames are skipped.
 *
 * @example
 * normaliseFrames('Error: x\n    at load (/srv/plinth/src/a.ts:10:5)') // ['load (src/a.ts)']
 */
export function normaliseFrames(stack: string | undefined, max = FINGERPRINT_FRAMES): string[] {
  if (!stack) return []
  const frames: string[] = []
  for (const line of stack.split('\n')) {
    if (!/^\s*at\s/.test(line)) continue
    const match = FRAME.exec(line)
    if (!match) continue
    const fn = match[1]?.replace(/^async\s+/, '') || '<anonymous>'
    let file = (match[2] ?? '').replace(/^file:\/\//, '')
    if (file.startsWith('node:internal') || file === 'native') continue
    const modules = file.lastIndexOf('/node_modules/')
    if (modules >= 0) file = file.slice(modules + 1)
    else {
      const src = file.search(/\/(src|test|bench|scripts|dist)\//)
      if (src >= 0) file = file.slice(src + 1)
    }
    frames.push(fn === file ? file : `${fn} (${file})`)
    if (frames.length >= max) break
  }
  return frames
}

/** The error's type name (`TypeError`, a custom class, or the `code` of a thrown non-error). */
export function errorNameOf(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code
    return typeof code === 'string' && /^[A-Z0-9_]{2,64}$/.test(code) && error.name === 'Error'
      ? `Error ${code}`
      : error.name || 'Error'
  }
  return typeof error
}

/**
 * The group of an error: SHA-256 (hex, first 32 characters) of its name, its normalised top frames
 * and where it surfaced (route template, job type, process). The message is left out: it carries
 * ids and values that differ for the same fault.
 */
export function fingerprintOf(error: unknown, where: string): string {
  const stack = error instanceof Error ? error.stack : undefined
  const parts = [errorNameOf(error), where, ...normaliseFrames(stack)]
  return createHash('sha256').update(parts.join('\n')).digest('hex').slice(0, 32)
}
