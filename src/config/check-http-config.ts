import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { createSecureContext } from 'node:tls'
import type { PlinthConfig } from './config.schema.ts'

type HttpKeys = Pick<PlinthConfig, 'env' | 'rateLimitAuth' | 'rateLimitWindow' | 'tlsCertFile' | 'tlsKeyFile'>

const MIN_WINDOW_MS = 1000
const MAX_WINDOW_MS = 86_400_000

function readPem(name: string, path: string, problems: string[]): Buffer | undefined {
  try {
    const pem = readFileSync(path)
    if (!pem.includes('-----BEGIN ')) {
      problems.push(`${name} points to ${path}, which is not a PEM file: give the PEM-encoded file.`)
      return undefined
    }
    return pem
  } catch (err) {
    problems.push(
      `${name} points to ${path}, which cannot be read (${(err as NodeJS.ErrnoException).code}): fix the path or its permissions.`,
    )
    return undefined
  }
}

/**
 * Rules of the HTTP edge: rate-limit bounds, and direct TLS (both files or neither, readable,
 * PEM, the key matching the certificate). The TLS paths in `values` are made absolute against
 * `cwd`, so that the server reads the files that were checked.
 */
export function checkHttpConfig(values: Record<string, unknown>, cwd: string): string[] {
  const c = values as unknown as HttpKeys
  const problems: string[] = []
  if (c.rateLimitWindow < MIN_WINDOW_MS || c.rateLimitWindow > MAX_WINDOW_MS) {
    problems.push(`PLINTH_RATE_LIMIT_WINDOW must be from 1s to 1d: use e.g. 1m.`)
  }
  if (c.rateLimitAuth === 0 && (c.env === 'staging' || c.env === 'production')) {
    problems.push(
      `PLINTH_RATE_LIMIT_AUTH=0 is refused in ${c.env}: it would leave sign-in open to password guessing; lower the limit instead of removing it.`,
    )
  }
  if ((c.tlsCertFile === undefined) !== (c.tlsKeyFile === undefined)) {
    const [set, unset] =
      c.tlsCertFile === undefined
        ? ['PLINTH_TLS_KEY_FILE', 'PLINTH_TLS_CERT_FILE']
        : ['PLINTH_TLS_CERT_FILE', 'PLINTH_TLS_KEY_FILE']
    problems.push(
      `${set} is set but ${unset} is not: set both to serve HTTPS directly, or neither to let your proxy terminate TLS.`,
    )
    return problems
  }
  if (c.tlsCertFile === undefined || c.tlsKeyFile === undefined) return problems
  const certPath = resolve(cwd, c.tlsCertFile)
  const keyPath = resolve(cwd, c.tlsKeyFile)
  values.tlsCertFile = certPath
  values.tlsKeyFile = keyPath
  const cert = readPem('PLINTH_TLS_CERT_FILE', certPath, problems)
  const key = readPem('PLINTH_TLS_KEY_FILE', keyPath, problems)
  if (cert && key) {
    try {
      createSecureContext({ cert, key })
    } catch (err) {
      // OpenSSL's reason (e.g. "key values mismatch"), never the key itself.
      problems.push(
        `PLINTH_TLS_CERT_FILE and PLINTH_TLS_KEY_FILE cannot be used together (${(err as Error).message}): give the certificate and its own private key.`,
      )
    }
  }
  return problems
}
