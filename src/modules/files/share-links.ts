import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto'
import type { Logger } from 'pino'
import type { PlinthConfig } from '../../config/config.schema.ts'
import { decodeMasterKey } from '../../config/config.schema.ts'
import { resolveMasterKey } from '../../infra/crypto/keyring.ts'
import { PlinthError } from '../../shared/errors.ts'

/** What a share link carries in its query string: `?exp=<unix seconds>&sig=<base64url HMAC>`. */
export interface LinkParams {
  readonly exp?: string | undefined
  readonly sig?: string | undefined
}

export interface ShareLinks {
  /** The query string (`exp=…&sig=…`) that opens `fileId` (and its variants) until `expiresAt`. */
  sign(fileId: string, expiresAt: Date): string
  /**
   * Checks a link's parameters for `fileId` at `now`: returns its expiry (Unix seconds), throws
   * `PLINTH_FILE_LINK_INVALID` (altered, another file's) or `PLINTH_FILE_LINK_EXPIRED`.
   */
  verify(fileId: string, params: LinkParams, now: number): number
}

const derive = (master: Buffer) =>
  Buffer.from(hkdfSync('sha256', master, new Uint8Array(0), 'plinth file share links v1', 32))

/**
 * Share links are HMAC-SHA256 over `<file id>.<expiry>` under a key derived (HKDF) from
 * `PLINTH_MASTER_KEY`: no table, and rotating the master key (with `PLINTH_MASTER_KEY_PREVIOUS`
 * set for the overlap) keeps links made before the rotation valid until they expire.
 */
export function createShareLinks(
  config: Pick<PlinthConfig, 'masterKey' | 'masterKeyPrevious' | 'dataDir' | 'env'>,
  logger: Pick<Logger, 'warn' | 'info'>,
): ShareLinks {
  const current = derive(
    resolveMasterKey({
      masterKey: config.masterKey,
      dataDir: config.dataDir,
      env: config.env,
      // Warnings (a key file others can read) still show; which key is in use, the keys module
      // already said at start: one line, not one per module that reads it.
      logger: { warn: logger.warn.bind(logger), info: () => {} },
    }),
  )
  const previousMaster =
    config.masterKeyPrevious === undefined ? undefined : decodeMasterKey(config.masterKeyPrevious)
  const keys = [current, ...(previousMaster ? [derive(previousMaster)] : [])]
  const mac = (key: Buffer, fileId: string, exp: number) =>
    createHmac('sha256', key).update(`${fileId}.${exp}`).digest()
  return {
    sign(fileId, expiresAt) {
      const exp = Math.floor(expiresAt.getTime() / 1000)
      return `exp=${exp}&sig=${mac(current, fileId, exp).toString('base64url')}`
    },
    verify(fileId, params, now) {
      const exp = Number(params.exp)
      if (!/^\d{1,12}$/.test(params.exp ?? '') || !/^[A-Za-z0-9_-]{43}$/.test(params.sig ?? ''))
        throw new PlinthError('PLINTH_FILE_LINK_INVALID')
      const given = Buffer.from(params.sig!, 'base64url')
      const ok = keys.some((k) => {
        const expected = mac(k, fileId, exp)
        return expected.length === given.length && timingSafeEqual(expected, given)
      })
      if (!ok) throw new PlinthError('PLINTH_FILE_LINK_INVALID')
      if (exp * 1000 <= now) throw new PlinthError('PLINTH_FILE_LINK_EXPIRED')
      return exp
    },
  }
}
