import { execFileSync } from 'node:child_process'
import { join } from 'node:path'

/**
 * A throwaway self-signed certificate (RSA 2048, made by openssl) written to `dir` as cert.pem and
 * key.pem; `san` adds a subjectAltName (e.g. `DNS:localhost,IP:127.0.0.1`).
 */
export function selfSignedCertificate(
  dir: string,
  options: { commonName: string; days: number; san?: string },
): { cert: string; key: string } {
  const cert = join(dir, 'cert.pem')
  const key = join(dir, 'key.pem')
  execFileSync(
    'openssl',
    [
      ...['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', String(options.days)],
      ...['-subj', `/CN=${options.commonName}`],
      ...(options.san ? ['-addext', `subjectAltName=${options.san}`] : []),
      ...['-keyout', key, '-out', cert],
    ],
    { stdio: 'ignore', timeout: 30_000 },
  )
  return { cert, key }
}
