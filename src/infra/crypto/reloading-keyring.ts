import type { Logger } from 'pino'
import { ciphertextKeyId, type Keyring } from './keyring.ts'

/** A keyring whose keys are reloaded from a source: at start, periodically, and on an unknown key id. */
export interface ReloadingKeyring extends Keyring {
  /** True once a load from the source succeeded; until then the initial keyring answers. */
  readonly loaded: boolean
  /** Reloads every `intervalMs` (timer unref'd) until `stop()`; failures are logged, the keys kept. */
  start(intervalMs: number): void
  stop(): void
}

export interface ReloadingKeyringOptions {
  /** Answers until the first successful load (e.g. the legacy, master-derived keyring). */
  readonly initial: Keyring
  /**
   * Builds the current keyring from the source; `undefined` when the source does not exist yet
   * (migrations pending), which keeps the keys in use.
   */
  readonly load: () => Promise<Keyring | undefined>
  readonly logger: Pick<Logger, 'info' | 'warn'>
  /**
   * After a reload that did not find a key id, how long reads naming that id fail without another
   * reload, so that a value under a key nobody has cannot turn every read into a database query.
   * A key id not looked for yet always reloads at once (a rotation elsewhere). Default 1000 ms.
   */
  readonly unknownKeyReloadMs?: number
  readonly now?: () => number
}

/**
 * The keyring the service hands to its modules: one object whose keys change underneath when
 * another process rotates. Every operation reads the current key set once, so an encryption never
 * mixes two sets. Reloads are shared: concurrent callers wait for the same one.
 *
 * @example
 * const keyring = createReloadingKeyring({ initial, load: () => store.loadKeyring(), logger })
 * await keyring.refresh()
 * keyring.start(30_000)
 */
export function createReloadingKeyring(options: ReloadingKeyringOptions): ReloadingKeyring {
  const now = options.now ?? Date.now
  const minGap = options.unknownKeyReloadMs ?? 1000
  let current = options.initial
  let loaded = false
  let inflight: Promise<void> | undefined
  /** Key ids a reload did not find, with when: not looked for again before `minGap` has passed. */
  const missing = new Map<string, number>()
  let timer: NodeJS.Timeout | undefined

  function refresh(): Promise<void> {
    inflight ??= (async () => {
      try {
        const next = await options.load()
        if (!next) return
        if (loaded && next.keyId !== current.keyId) {
          options.logger.info(
            { keyId: next.keyId, previousKeyId: current.keyId },
            'encryption keys reloaded: new active key',
          )
        }
        current = next
        loaded = true
      } finally {
        inflight = undefined
      }
    })()
    return inflight
  }

  /** The reload a ciphertext naming a key we lack starts (or joins), unless that key was just missed. */
  function reloadForUnknown(ciphertext: string): Promise<void> | undefined {
    const id = ciphertextKeyId(ciphertext)
    if (id === undefined || current.keyIds.includes(id)) return undefined
    if (inflight) return inflight
    const missedAt = missing.get(id)
    if (missedAt !== undefined && now() - missedAt < minGap) return undefined
    return refresh().finally(() => {
      if (current.keyIds.includes(id)) return
      if (missing.size >= 1000) missing.clear()
      missing.set(id, now())
    })
  }

  function quietReload(ciphertext: string): void {
    reloadForUnknown(ciphertext)?.catch((err: unknown) =>
      options.logger.warn({ err }, 'could not reload encryption keys; keeping the loaded ones'),
    )
  }

  async function decryptAsync(ciphertext: string, aad: string): Promise<Buffer> {
    const reload = reloadForUnknown(ciphertext)
    if (reload) {
      try {
        await reload
      } catch (err) {
        options.logger.warn({ err }, 'could not reload encryption keys; keeping the loaded ones')
      }
    }
    return current.decrypt(ciphertext, aad)
  }

  return Object.freeze({
    get keyId() {
      return current.keyId
    },
    get keyIds() {
      return current.keyIds
    },
    get loaded() {
      return loaded
    },
    encrypt: (plaintext: string | Uint8Array, aad: string) => current.encrypt(plaintext, aad),
    decrypt(ciphertext: string, aad: string) {
      // A synchronous caller cannot wait: it fails now, and the reload serves its retry.
      quietReload(ciphertext)
      return current.decrypt(ciphertext, aad)
    },
    decryptString(ciphertext: string, aad: string) {
      quietReload(ciphertext)
      return current.decryptString(ciphertext, aad)
    },
    keyIdOf: ciphertextKeyId,
    decryptAsync,
    decryptStringAsync: async (ciphertext: string, aad: string) =>
      (await decryptAsync(ciphertext, aad)).toString('utf8'),
    refresh,
    start(intervalMs: number) {
      if (timer) return
      timer = setInterval(() => {
        refresh().catch((err: unknown) =>
          options.logger.warn({ err }, 'could not reload encryption keys; keeping the loaded ones'),
        )
      }, intervalMs)
      timer.unref()
    },
    stop() {
      if (timer) clearInterval(timer)
      timer = undefined
    },
  })
}
