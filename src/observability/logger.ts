import { appendFileSync, writeSync } from 'node:fs'
import { createRequire } from 'node:module'
import pino, { type DestinationStream, type Logger } from 'pino'
import type { PlinthConfig } from '../config/config.schema.ts'
import { type TracingConfig, traceFields, tracingConfigured } from './tracing.ts'

/**
 * Keys whose values never reach a log line, at any depth: credentials, session and API tokens,
 * second factors, keys. Matched against the whole key, case-insensitively, so `tokenId` or
 * `passwordChangedAt` stay readable while `token`, `sessionToken` or `newPassword` do not.
 */
export const SENSITIVE_KEY =
  /^(.*password|.*passphrase|.*passcode|.*secret(key)?|.*token|api[-_]?key|authorization|proxy-authorization|cookie|set-cookie|x-csrf-token|[th]?otp([-_]?(code|secret))?|(mfa|totp|otp|second[-_]?factor|verification|backup)[-_]?codes?|challenge|.*recovery[-_]?codes?|(master|private|data)[-_]?key|credentials?|database[-_]?url|redis[-_]?url|smtp[-_]?url)$/i

/**
 * Keys that are credentials inside a request or response body (`code`, `codes`, `pin`: second
 * factors and recovery codes), whatever the route, but ordinary words elsewhere (`code` is an error
 * code on most log lines). They are redacted beneath a `body` key, at any depth.
 */
export const SENSITIVE_BODY_KEY = /^(codes?|pin)$/i

/** The keys beneath which SENSITIVE_BODY_KEY applies too. */
const BODY_KEY = /^(body|payload|request[-_]?body|response[-_]?body)$/i

const REDACTED = '[redacted]'

// Log lines repeat the same few keys, so the verdict per key is remembered (bounded).
// 0: readable, 1: sensitive, 2: sensitive in a body only, 3: readable, but starts a body.
const verdicts = new Map<string, number>()
function verdictOf(key: string): number {
  let verdict = verdicts.get(key)
  if (verdict === undefined) {
    verdict = SENSITIVE_KEY.test(key) ? 1 : SENSITIVE_BODY_KEY.test(key) ? 2 : BODY_KEY.test(key) ? 3 : 0
    if (verdicts.size < 4096) verdicts.set(key, verdict)
  }
  return verdict
}
const MAX_DEPTH = 8

function redactArray(
  value: readonly unknown[],
  depth: number,
  inBody: boolean,
): unknown[] | readonly unknown[] {
  let copy: unknown[] | undefined
  for (let i = 0; i < value.length; i++) {
    const next = redactValue(value[i], depth + 1, inBody)
    if (next !== value[i]) {
      copy ??= [...value]
      copy[i] = next
    }
  }
  return copy ?? value
}

const copyObject = (value: object): object => ({ ...value })
/**
 * The same error for pino's serializer (its class, message, stack and cause), its fields copied. The
 * stack is read, not copied: V8 keeps it behind an accessor that answers only for the original.
 */
function copyError(error: object): object {
  const copy = Object.create(Object.getPrototypeOf(error), Object.getOwnPropertyDescriptors(error))
  Object.defineProperty(copy, 'stack', { value: (error as Error).stack, writable: true, configurable: true })
  return copy
}

function redactValue(value: unknown, depth: number, inBody: boolean): unknown {
  if (value === null || typeof value !== 'object' || value instanceof Date) return value
  if (depth > MAX_DEPTH) return '[truncated]'
  if (Array.isArray(value)) return redactArray(value, depth, inBody)
  // pino writes an error's enumerable fields beside its message and stack (a client library's
  // `request.headers.authorization`, a module's own `token`): they are redacted like any others.
  return redactFields(value, depth, inBody, value instanceof Error ? copyError : copyObject)
}

function redactFields(
  value: object,
  depth: number,
  inBody: boolean,
  copyOf: (value: object) => object,
): object {
  let copy: Record<string, unknown> | undefined
  for (const key in value) {
    const current = (value as Record<string, unknown>)[key]
    const verdict = verdictOf(key)
    const next =
      verdict === 1 || (verdict === 2 && inBody)
        ? REDACTED
        : redactValue(current, depth + 1, inBody || verdict === 3)
    if (next !== current) {
      copy ??= copyOf(value) as Record<string, unknown>
      copy[key] = next
    }
  }
  return copy ?? value
}

/**
 * `value` with every sensitive field replaced by `[redacted]`, however deeply nested. Copy on
 * write: an object with nothing to hide is returned as is, so the common log line costs one regex
 * test per key and no allocation.
 */
export function redactDeep<T>(value: T): T {
  return redactValue(value, 0, false) as T
}

/**
 * The password of a URL written into free text (`scheme://user:password@host`), in a message, an
 * error's message or stack, or any value: `$1` keeps the scheme and the user. A password already
 * masked as `****` (what `redactUrl` writes for the configuration's URLs) is left as it is.
 */
const URL_PASSWORD = /(\b[a-z][a-z0-9+.-]*:\/\/[^\s:/?#@"\\]*:)(?!\*+@)[^\s/?#@"\\]+@/gi
/**
 * Plinth's own secrets (modules/accounts/secrets.ts: API tokens `plt_`, sessions `pls_`, sign-in
 * challenges `plc_`, reset `plr_` and invitation `pli_` links), each its prefix and 256 bits in
 * base64url: exactly 43 characters of `A-Za-z0-9_-`, not part of a longer run of them.
 */
const PLINTH_SECRET = /(?<![A-Za-z0-9_-])pl[tscri]_[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])/g

/**
 * `text` with every one of Plinth's own secrets replaced by `mask`: the one definition of their
 * shape, for the log lines (`scrubText`) and the mail kept in `mail_outbox` and in data exports.
 */
export function maskPlinthSecrets(text: string, mask: string = REDACTED): string {
  return text.includes('_') ? text.replace(PLINTH_SECRET, mask) : text
}

/**
 * `text` with the secrets that free text can carry masked: the password of any URL, and, with
 * `plinthSecrets` (the default), any of Plinth's own secrets, wherever they appear. Every log line
 * passes through it (a message, an error's message or stack, a value under an ordinary key such as
 * `url`: fields named for secrets are already redacted by `redactDeep`, and this is the net for what
 * no key names), and so does what is stored of an error (the errors module). Each pattern runs only
 * when the text holds its marker (`://`, `_`), so text without one costs two searches.
 */
export function scrubText(text: string, plinthSecrets = true): string {
  let out = text
  if (out.includes('://')) out = out.replace(URL_PASSWORD, `$1${REDACTED}@`)
  return plinthSecrets ? maskPlinthSecrets(out) : out
}

type LoggerConfig = Pick<PlinthConfig, 'logLevel' | 'logFormat' | 'env'> & Partial<TracingConfig>

/**
 * Lines are written in batches of about this many bytes. Each write costs a fixed ~10 µs of CPU
 * (libuv's thread pool and its wake-ups) whatever its size: at 4 KiB (~14 request lines) that was
 * most of a microsecond per request line (decision 0043).
 */
export const LOG_BATCH_BYTES = 64 * 1024
/** A batch that has not filled up is written after at most this long: a quiet instance still logs promptly. */
export const LOG_FLUSH_MS = 250

/** sonic-boom in buffer mode (`contentMode: 'buffer'`): it is handed encoded batches. */
type SonicBoomLike = Omit<DestinationStream, 'write'> & {
  write(bytes: Buffer): boolean
  flush(cb?: (err?: Error) => void): void
  flushSync(): void
  end(): void
  destroyed?: boolean
  /** The open file descriptor (negative until a file destination has opened). */
  readonly fd: number
  on(event: string, listener: (...args: unknown[]) => void): unknown
  once(event: string, listener: (...args: unknown[]) => void): unknown
  removeListener(event: string, listener: (...args: unknown[]) => void): unknown
}

/** At most this many bytes wait in a batch for its file to open. */
const HELD_MAX = 1024 * 1024

/**
 * The lines of one destination not yet handed to it, encoded (UTF-8) as they arrive: a batch held
 * as one string would be a tree of thousands of small strings (pino builds each line from pieces)
 * that the write has to flatten and encode at once, after they outlived a few garbage collections.
 */
interface Batch {
  /** Filled chunks held back (until the file opens), oldest first. */
  readonly held: Buffer[]
  heldBytes: number
  /** The chunk being filled (allocated on the first line after a release) and its used bytes. */
  chunk: Buffer | undefined
  used: number
  readonly boom: SonicBoomLike
  /** Its file is open (a file destination opens asynchronously; a descriptor is ready at once). */
  ready: boolean
  /** The file's path, for a destination given as one. */
  readonly file: string | undefined
}

/** The batch's pending bytes, oldest first; the batch is left empty. */
function take(batch: Batch): Buffer[] {
  const out = batch.held.splice(0)
  batch.heldBytes = 0
  if (batch.chunk !== undefined && batch.used > 0) {
    // A small remainder (a flush of a quiet instance) is copied; its chunk is kept for the next lines.
    if (batch.used < batch.chunk.length / 4) out.push(Buffer.from(batch.chunk.subarray(0, batch.used)))
    else {
      out.push(batch.chunk.subarray(0, batch.used))
      batch.chunk = undefined
    }
  }
  batch.used = 0
  return out
}

/** Appends one line, encoded; a chunk that might not hold it is released (or held) first. */
function append(batch: Batch, line: string): void {
  // A UTF-16 code unit takes at most 3 bytes of UTF-8.
  const most = line.length * 3
  let chunk = batch.chunk
  if (chunk !== undefined && chunk.length - batch.used < most) {
    if (batch.used > 0) {
      batch.held.push(chunk.subarray(0, batch.used))
      batch.heldBytes += batch.used
    }
    chunk = undefined
    batch.used = 0
    release(batch)
  }
  if (chunk === undefined) {
    chunk = Buffer.allocUnsafe(Math.max(LOG_BATCH_BYTES, most))
    batch.chunk = chunk
  }
  batch.used += chunk.write(line, batch.used)
}

/**
 * Hands a batch's pending lines to its destination (asynchronous write). Until the destination is
 * ready they stay in the batch (unless `force`: sonic-boom then holds them until its file opens),
 * so that an exit meanwhile can still write them (`releaseSync`).
 */
function release(batch: Batch, force = false): void {
  if ((batch.heldBytes === 0 && batch.used === 0) || batch.boom.destroyed) return
  // A file that does not open (a missing folder) must not grow the batch without end: past
  // HELD_MAX, the lines go to sonic-boom, which holds (or drops) them as it did before batching.
  if (!(batch.ready || force || batch.heldBytes > HELD_MAX)) return
  for (const bytes of take(batch)) batch.boom.write(bytes)
}

/**
 * Writes a batch's pending lines, and whatever its destination holds, synchronously (at exit). A
 * file destination that has not opened yet cannot be written by sonic-boom ("sonic boom is not
 * ready yet"): the lines are appended to its file directly instead.
 */
function releaseSync(batch: Batch): void {
  if (!batch.ready) {
    if (batch.file !== undefined && (batch.heldBytes > 0 || batch.used > 0)) {
      try {
        appendFileSync(batch.file, Buffer.concat(take(batch)))
      } catch {
        // Nowhere to write them: an exit must not fail over its logs.
      }
    }
    return
  }
  if (batch.boom.destroyed) return
  try {
    // What sonic-boom holds (older lines) first, then the batch, both written here and now. Handed to
    // sonic-boom, the batch would start an asynchronous write, which sonic-boom's flushSync skips
    // (it is in flight) and which an exit does not wait for: the lines were lost under load.
    batch.boom.flushSync()
    for (const bytes of take(batch))
      for (let off = 0; off < bytes.length; ) off += writeSync(batch.boom.fd, bytes, off)
  } catch {
    // A failing destination (EPIPE, EAGAIN on a full pipe …) must not turn an exit into a crash.
  }
}

// Every live batch, for the one timer and the one exit handler of the process (not one per logger:
// tests build many). A destination that is garbage collected hands over its last lines first.
const batches = new Set<Batch>()
const collected = new FinalizationRegistry<Batch>((batch) => {
  release(batch, true)
  batches.delete(batch)
})
let flushing: NodeJS.Timeout | undefined
function track(batch: Batch): void {
  batches.add(batch)
  batch.boom.once('close', () => batches.delete(batch))
  if (flushing) return
  flushing = setInterval(() => {
    for (const b of batches) release(b)
  }, LOG_FLUSH_MS)
  flushing.unref()
  // pino flushes its destinations on exit (its own handler); the pending batches are ours.
  process.on('exit', () => {
    for (const b of batches) releaseSync(b)
  })
}

/**
 * Log lines gathered into batches of LOG_BATCH_BYTES before they reach the asynchronous
 * destination: one `write` per ~220 request lines instead of one per line. (sonic-boom's own
 * `minLength` does the same but measures the whole pending batch with `Buffer.byteLength` on every
 * line, which cost more than it saved.) A batch goes out when full, every LOG_FLUSH_MS, on
 * `flush`/`flushSync`/`end`, and synchronously when the process exits.
 */
class BatchedDestination {
  private readonly batch: Batch
  constructor(boom: SonicBoomLike, file?: string) {
    // A descriptor (stdout) is open from the start; a file opens asynchronously.
    this.batch = { held: [], heldBytes: 0, chunk: undefined, used: 0, boom, ready: file === undefined, file }
    const batch = this.batch
    boom.once('ready', () => {
      batch.ready = true
      release(batch)
    })
    // pino flushes its destination synchronously at exit (its own handler): before the file has
    // opened, sonic-boom's flushSync throws "sonic boom is not ready yet" from the exit handler.
    // Ours (track) writes the lines then; pino's must not throw.
    const flushSync = boom.flushSync.bind(boom)
    boom.flushSync = () => {
      if (batch.ready && !boom.destroyed) flushSync()
    }
    track(batch)
    collected.register(this, batch)
  }
  write(line: string): boolean {
    append(this.batch, line)
    return true
  }
  flush(cb?: (err?: Error) => void): void {
    release(this.batch, true)
    this.batch.boom.flush(cb)
  }
  flushSync(): void {
    releaseSync(this.batch)
  }
  end(): void {
    release(this.batch, true)
    this.batch.boom.end()
  }
  // The destination's events ('ready', 'error', 'close' …), for whoever waits on them.
  on(event: string, listener: (...args: unknown[]) => void): this {
    this.batch.boom.on(event, listener)
    return this
  }
  once(event: string, listener: (...args: unknown[]) => void): this {
    this.batch.boom.once(event, listener)
    return this
  }
  removeListener(event: string, listener: (...args: unknown[]) => void): this {
    this.batch.boom.removeListener(event, listener)
    return this
  }
}

/**
 * Where JSON logs go: stdout (or `dest`), written asynchronously in batches (BatchedDestination).
 * Every exit through `process.exit` or the end of the event loop writes what is pending
 * synchronously, the fatal-error path of app/lifecycle.ts included; only a hard kill (SIGKILL, the
 * OOM killer, a power cut) can lose lines: those of the last LOG_FLUSH_MS, at most
 * LOG_BATCH_BYTES of them, plus any write in flight (as before batching).
 */
export function logDestination(dest: string | number = 1): DestinationStream {
  return new BatchedDestination(
    // Buffers in, written as they are: no string to measure and encode again at each write.
    pino.destination({ dest, sync: false, contentMode: 'buffer' }) as unknown as SonicBoomLike,
    typeof dest === 'string' ? dest : undefined,
  )
}

/**
 * pino's `isoTime`, remembering the formatted second: only the milliseconds are formatted per line
 * (`new Date().toISOString()` per line cost ~3 % of a request's CPU). Same output.
 */
export function isoTime(): string {
  const now = Date.now()
  const ms = now % 1000
  const second = now - ms
  if (second !== isoSecond) {
    isoSecond = second
    // "2026-12-06T10:11:36." (every year from 0 to 9999 formats to this width)
    isoPrefix = `,"time":"${new Date(second).toISOString().slice(0, 20)}`
  }
  return `${isoPrefix}${ms < 10 ? '00' : ms < 100 ? '0' : ''}${ms}Z"`
}
let isoSecond = Number.NaN
let isoPrefix = ''

/**
 * Pretty log lines (pino-pretty, a development dependency) into `destination` (stdout by default),
 * or undefined when pino-pretty is not installed.
 */
export function prettyStream(destination?: NodeJS.WritableStream): DestinationStream | undefined {
  try {
    // pino-pretty is a development dependency: absent in production images, hence the guarded require.
    const pretty = createRequire(import.meta.url)('pino-pretty') as (o: object) => DestinationStream
    return pretty({
      colorize: destination === undefined ? true : Boolean((destination as { isTTY?: boolean }).isTTY),
      translateTime: 'HH:MM:ss.l',
      ignore: 'pid,hostname,service,env',
      ...(destination ? { destination } : {}),
    })
  } catch {
    return undefined
  }
}

/**
 * The process logger: JSON lines with a string level and ISO time. Every line's object passes
 * through `redactDeep` (one place, every depth) instead of pino's path list, which must name each
 * nesting and costs more per line.
 *
 * While tracing is configured (or `options.traceIds`), every line written inside a trace carries
 * its `traceId` and `spanId` (a pino `mixin`), so logs and traces join; otherwise no mixin runs.
 *
 * @example
 * const log = createLogger(config)
 * log.info({ jobId }, 'job completed')
 */
export function createLogger(
  config: LoggerConfig,
  destination?: DestinationStream,
  options: { traceIds?: boolean } = {},
): Logger {
  const traceIds =
    options.traceIds ??
    (config.otelEndpoint !== undefined || config.otelTracesEndpoint !== undefined
      ? tracingConfigured(config as TracingConfig)
      : false)
  const stream =
    destination ?? (config.logFormat === 'pretty' ? prettyStream() : undefined) ?? logDestination()
  const plinthSecrets = config.env !== 'development' && config.env !== 'test'
  const root = pino(
    {
      level: config.logLevel,
      base: { service: 'plinth', env: config.env },
      timestamp: isoTime,
      ...(traceIds ? { mixin: traceFields } : {}),
      formatters: {
        level: (label) => ({ level: label }),
        log: (object) => redactDeep(object),
        bindings: (bindings) => redactDeep(bindings),
      },
      // Development and test keep Plinth's secrets readable in free text: the mail captured without
      // SMTP_URL is logged whole there, so that its link can be followed.
      hooks: { streamWrite: (line) => scrubText(line, plinthSecrets) },
    },
    stream,
  )
  // pino applies `formatters.bindings` to the root's own bindings only: a child's are written as
  // given. Every child descends from this root (a child is an object whose prototype is its parent,
  // request loggers included), so redacting here covers `log.child({ token })` at any depth.
  const child = root.child as unknown as (
    this: Logger,
    bindings: pino.Bindings,
    options?: pino.ChildLoggerOptions,
  ) => Logger
  Object.defineProperty(root, 'child', {
    value: function redactedChild(this: Logger, bindings: pino.Bindings, options?: pino.ChildLoggerOptions) {
      return child.call(this, redactDeep(bindings), options)
    },
    writable: true,
    configurable: true,
  })
  return root
}
