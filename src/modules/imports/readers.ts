/**
 * Streaming readers of the three file formats. Each yields rows with the line they start at and
 * the byte offset and line count just after them (what a checkpoint stores), reading from a byte
 * offset so that an interrupted import resumes where its last batch committed. Memory stays bounded
 * by the read-ahead and the longest row (at most MAX_ROW_BYTES), whatever the file's size.
 */
import { isUtf8 } from 'node:buffer'
import { createReadStream } from 'node:fs'
import { open } from 'node:fs/promises'
import { parse } from 'csv-parse'
import { PlinthError } from '../../shared/errors.ts'

export type ImportFormat = 'json' | 'ndjson' | 'csv'

/** A row longer than this stops the file (a missing newline or a runaway quote would hold it all). */
export const MAX_ROW_BYTES = 16 * 1024 * 1024

const READ_AHEAD = 256 * 1024

export interface SourceRow {
  /** The line the row starts at (1-based). */
  readonly line: number
  /** Byte offset and lines consumed just after the row: resuming there reads the next row. */
  readonly endOffset: number
  readonly endLine: number
  /** The fields, or why the row cannot be read. */
  readonly value?: Record<string, unknown>
  readonly error?: string
}

export interface ReadPosition {
  readonly offset: number
  /** Lines consumed before `offset`. */
  readonly line: number
  /** The CSV header, read at offset 0 and kept by the checkpoint. */
  readonly header?: readonly string[] | undefined
}

export function formatOf(file: string): ImportFormat | undefined {
  const lower = file.toLowerCase()
  if (lower.endsWith('.json')) return 'json'
  if (lower.endsWith('.ndjson') || lower.endsWith('.jsonl')) return 'ndjson'
  if (lower.endsWith('.csv')) return 'csv'
  return undefined
}

const badFile = (file: string, message: string) =>
  new PlinthError('PLINTH_IMPORT_BAD_FILE', `${file}: ${message}`)

/**
 * Checks that the start of the file is what its extension says: text (no NUL byte, not gzip), a
 * JSON array for .json, one JSON object per line for .ndjson, not JSON for .csv.
 */
export async function sniff(file: string, format: ImportFormat): Promise<void> {
  const handle = await open(file, 'r')
  let head: Buffer
  try {
    const buf = Buffer.alloc(64 * 1024)
    const { bytesRead } = await handle.read(buf, 0, buf.length, 0)
    head = buf.subarray(0, bytesRead)
  } finally {
    await handle.close()
  }
  if (head[0] === 0x1f && head[1] === 0x8b)
    throw badFile(file, `is gzip-compressed, not ${format}: decompress it first`)
  if (head.includes(0)) throw badFile(file, `holds binary data (a NUL byte), not ${format} text`)
  let i = head[0] === 0xef && head[1] === 0xbb && head[2] === 0xbf ? 3 : 0
  while (i < head.length && (head[i] === 0x20 || head[i] === 0x0a || head[i] === 0x0d || head[i] === 0x09))
    i++
  const first = i < head.length ? String.fromCharCode(head[i]!) : ''
  if (format === 'json' && first !== '[')
    throw badFile(
      file,
      first === '{'
        ? 'is not a JSON array (it starts with an object: one object per line is NDJSON, name it .ndjson)'
        : 'is not a JSON array (a .json file must hold one array of objects)',
    )
  if (format === 'ndjson' && first !== '{' && first !== '')
    throw badFile(
      file,
      first === '['
        ? 'is not NDJSON (it starts with an array: name it .json)'
        : 'is not NDJSON (each line must be one JSON object)',
    )
  if (format === 'csv' && (first === '{' || first === '['))
    throw badFile(file, 'looks like JSON, not CSV: name it .json or .ndjson')
}

function decodeObject(bytes: Buffer): { value?: Record<string, unknown>; error?: string } {
  if (!isUtf8(bytes)) return { error: 'invalid UTF-8' }
  let value: unknown
  try {
    value = JSON.parse(bytes.toString('utf8'))
  } catch (err) {
    return { error: `malformed JSON: ${(err as Error).message}` }
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    return {
      error: `not a JSON object (${value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value})`,
    }
  return { value: value as Record<string, unknown> }
}

function countNewlines(buf: Buffer, from = 0, to = buf.length): number {
  let n = 0
  let i = buf.indexOf(10, from)
  while (i !== -1 && i < to) {
    n++
    i = buf.indexOf(10, i + 1)
  }
  return n
}

/** NDJSON: one object per line; blank lines are skipped (and counted). */
export async function* readNdjson(file: string, from: ReadPosition): AsyncGenerator<SourceRow> {
  let offset = from.offset
  let line = from.line
  let pending: Buffer = Buffer.alloc(0)
  const stream = createReadStream(file, { start: from.offset, highWaterMark: READ_AHEAD })
  let first = from.offset === 0
  const emit = function* (chunk: Buffer, final: boolean): Generator<SourceRow> {
    let buf = pending.length > 0 ? Buffer.concat([pending, chunk]) : chunk
    if (first && buf.length >= 3) {
      first = false
      if (buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf) {
        buf = buf.subarray(3)
        offset += 3
      }
    }
    let start = 0
    for (;;) {
      let nl = buf.indexOf(10, start)
      if (nl === -1) {
        if (!final || start >= buf.length) break
        nl = buf.length
      }
      const end = nl < buf.length ? nl + 1 : nl
      let lineBytes = buf.subarray(start, nl)
      if (lineBytes.at(-1) === 0x0d) lineBytes = lineBytes.subarray(0, -1)
      line += nl < buf.length ? 1 : 0
      offset += end - start
      const rowLine = nl < buf.length ? line : line + 1
      if (lineBytes.some((b) => b !== 0x20 && b !== 0x09)) {
        const decoded = decodeObject(lineBytes)
        yield { line: rowLine, endOffset: offset, endLine: nl < buf.length ? line : line + 1, ...decoded }
      }
      start = end
    }
    pending = buf.subarray(start)
    if (pending.length > MAX_ROW_BYTES)
      throw badFile(file, `line ${line + 1} is longer than ${MAX_ROW_BYTES} bytes`)
    // A copy: the rest of the chunk is not held through `pending`.
    pending = Buffer.from(pending)
  }
  for await (const chunk of stream) yield* emit(chunk as Buffer, false)
  yield* emit(Buffer.alloc(0), true)
}

/**
 * A JSON array of objects, cut into its elements by a byte scanner (strings and nesting tracked)
 * so that each element can be parsed alone and the position after it checkpointed.
 */
export async function* readJsonArray(file: string, from: ReadPosition): AsyncGenerator<SourceRow> {
  // Where the scanner is: before '[', after '[' or ',' (an element or ']' next), after an element
  // (',' or ']' next), inside an element, after ']' (only whitespace may follow).
  type State = 'start' | 'element-or-end' | 'element' | 'after-element' | 'inside' | 'done'
  let state: State = from.offset === 0 ? 'start' : 'after-element'
  let offset = from.offset
  let line = from.line
  let depth = 0
  let inString = false
  let escaped = false
  let bare = false
  let elementStartLine = 0
  let parts: Buffer[] = []
  let partsBytes = 0
  let partStart = 0
  const stream = createReadStream(file, { start: from.offset, highWaterMark: READ_AHEAD })
  const where = () => `line ${line + 1}`
  for await (const raw of stream) {
    let chunk = raw as Buffer
    if (state === 'start' && offset === 0 && chunk[0] === 0xef && chunk[1] === 0xbb && chunk[2] === 0xbf) {
      chunk = chunk.subarray(3)
      offset += 3
    }
    partStart = 0
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk[i]!
      if (state === 'inside') {
        let end = -1
        if (bare) {
          // A bare value (a number, true, null…) ends before the next separator, reread as such.
          if (c === 0x2c || c === 0x5d || c === 0x0a || c === 0x20 || c === 0x09 || c === 0x0d) {
            end = i
            i--
          }
        } else {
          if (inString) {
            if (escaped) escaped = false
            else if (c === 0x5c) escaped = true
            else if (c === 0x22) inString = false
            else if (c === 0x0a) line++
          } else if (c === 0x22) inString = true
          else if (c === 0x7b || c === 0x5b) depth++
          else if (c === 0x7d || c === 0x5d) depth--
          else if (c === 0x0a) line++
          if (depth === 0 && !inString) end = i + 1
        }
        if (end === -1) continue
        parts.push(chunk.subarray(partStart, end))
        const bytes = parts.length === 1 ? parts[0]! : Buffer.concat(parts)
        parts = []
        partsBytes = 0
        yield { line: elementStartLine, endOffset: offset + end, endLine: line, ...decodeObject(bytes) }
        state = 'after-element'
        continue
      }
      if (c === 0x0a) {
        line++
        continue
      }
      if (c === 0x20 || c === 0x09 || c === 0x0d) continue
      if (state === 'start') {
        if (c !== 0x5b) throw badFile(file, `is not a JSON array (${where()})`)
        state = 'element-or-end'
      } else if (state === 'after-element') {
        if (c === 0x2c) state = 'element'
        else if (c === 0x5d) state = 'done'
        else throw badFile(file, `malformed JSON array at ${where()}: expected "," or "]" between elements`)
      } else if (state === 'done') {
        throw badFile(file, `unexpected data after the end of the JSON array (${where()})`)
      } else {
        if (c === 0x5d && state === 'element-or-end') {
          state = 'done'
          continue
        }
        if (c === 0x5d || c === 0x2c)
          throw badFile(file, `malformed JSON array at ${where()}: an element is missing`)
        state = 'inside'
        elementStartLine = line + 1
        partStart = i
        depth = 0
        inString = false
        escaped = false
        bare = false
        if (c === 0x22) inString = true
        else if (c === 0x7b || c === 0x5b) depth = 1
        else bare = true
      }
    }
    if (state === 'inside') {
      parts.push(chunk.subarray(partStart))
      partsBytes += chunk.length - partStart
      if (partsBytes > MAX_ROW_BYTES)
        throw badFile(file, `the element at line ${elementStartLine} is longer than ${MAX_ROW_BYTES} bytes`)
      // Copies, so that the chunk's other bytes are not held.
      parts = [Buffer.concat(parts)]
    }
    offset += chunk.length
  }
  if ((state as State) !== 'done')
    throw badFile(file, `ends before the JSON array is closed (line ${line + 1}): the file is truncated`)
}

/**
 * CSV (RFC 4180, csv-parse): the first record is the header (kept by the checkpoint); fields of
 * each row are named by it. A malformed record (a stray quote) is rejected with its lines, a row
 * whose bytes are not UTF-8 likewise.
 */
export async function* readCsv(
  file: string,
  from: ReadPosition,
  onHeader: (header: readonly string[]) => void,
): AsyncGenerator<SourceRow> {
  let header = from.header
  // The raw bytes since the last record's end, to check each record's encoding and count its lines.
  let window: Buffer[] = []
  let windowStart = from.offset
  let windowBytes = 0
  const stream = createReadStream(file, { start: from.offset, highWaterMark: READ_AHEAD })
  const parser = parse({
    info: true,
    bom: from.offset === 0,
    relax_column_count: true,
    skip_records_with_error: true,
    skip_empty_lines: true,
    max_record_size: MAX_ROW_BYTES,
    on_record: (record) => {
      parsed++
      return record
    },
  })
  // A malformed record (csv-parse reports it, and may report the rest of it again, before the next
  // good record): one rejection, at the line where the parser found the problem. Records parsed
  // before it may still wait in the parser's buffer: it is yielded in line order.
  const skipped: { line: number; to: number; message: string; error: string; parsedAt: number }[] = []
  let parsed = 0
  parser.on('skip', (err: Error & { lines?: number }) => {
    const at = from.line + (err.lines ?? 1)
    const message = err.message.replace(/ at line \d+/, '')
    const open = skipped.at(-1)
    if (open && open.parsedAt === parsed) open.to = Math.max(open.to, at)
    else skipped.push({ line: at, to: at, message, error: '', parsedAt: parsed })
    const last = skipped.at(-1)!
    last.error = `malformed CSV${last.to > last.line ? ` (lines ${last.line}–${last.to})` : ''}: ${last.message}`
  })
  stream.on('data', (chunk) => {
    window.push(chunk as Buffer)
    windowBytes += (chunk as Buffer).length
  })
  stream.on('error', (err) => parser.destroy(err))
  stream.pipe(parser)
  /** The bytes from the window's start to `end` (absolute), dropping them from the window. */
  const take = (end: number): Buffer => {
    const all = window.length === 1 ? window[0]! : Buffer.concat(window)
    const n = end - windowStart
    const out = all.subarray(0, n)
    const rest = all.subarray(n)
    window = rest.length > 0 ? [rest] : []
    windowBytes = rest.length
    windowStart = end
    return out
  }
  for await (const item of parser as AsyncIterable<{
    record: string[]
    info: { bytes: number; lines: number }
  }>) {
    const endOffset = from.offset + item.info.bytes
    const endLine = from.line + item.info.lines
    let afterSkip = false
    // Malformed records found before this one (complete: a later record was parsed) come first.
    while (skipped.length > 0 && skipped[0]!.line <= endLine && skipped[0]!.parsedAt < parsed) {
      const s = skipped.shift()!
      afterSkip = true
      yield { line: s.line, endOffset: -1, endLine: -1, error: s.error }
    }
    const raw = take(endOffset)
    // Where the record starts: its end line less the newlines inside it (blank lines before it skipped).
    let s = 0
    while (s < raw.length && (raw[s] === 0x0a || raw[s] === 0x0d)) s++
    let e = raw.length
    while (e > s && (raw[e - 1] === 0x0a || raw[e - 1] === 0x0d)) e--
    // After a malformed record, the window holds it too: its end line is the best known start.
    const line = afterSkip ? endLine : endLine - countNewlines(raw, s, e)
    if (!header) {
      header = item.record.map((h) => h.trim())
      onHeader(header)
      if (!isUtf8(raw)) throw badFile(file, 'the header line is not valid UTF-8')
      continue
    }
    if (!isUtf8(raw)) {
      yield { line, endOffset, endLine, error: 'invalid UTF-8' }
      continue
    }
    if (item.record.length !== header.length) {
      yield {
        line,
        endOffset,
        endLine,
        error: `has ${item.record.length} fields where the header has ${header.length}`,
      }
      continue
    }
    const value: Record<string, unknown> = {}
    // An empty field is an absent value.
    header.forEach((name, i) => {
      if (item.record[i] !== '') value[name] = item.record[i]
    })
    yield { line, endOffset, endLine, value }
  }
  for (const s of skipped.splice(0)) yield { line: s.line, endOffset: -1, endLine: -1, error: s.error }
  void windowBytes
}

/** The rows of `file` from `from`, in its format. */
export function readRows(
  file: string,
  format: ImportFormat,
  from: ReadPosition,
  onHeader: (header: readonly string[]) => void,
): AsyncGenerator<SourceRow> {
  if (format === 'ndjson') return readNdjson(file, from)
  if (format === 'json') return readJsonArray(file, from)
  return readCsv(file, from, onHeader)
}
