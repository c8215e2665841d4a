import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { request } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import type { SecureVersion, TLSSocket } from 'node:tls'
import { ConfigError, loadConfig } from '../src/config/load-config.ts'
import { selfSignedCertificate } from './helpers/certificate.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const dir = mkdtempSync(join(tmpdir(), 'plinth-tls-'))
const CERT = join(dir, 'cert.pem')
const KEY = join(dir, 'key.pem')
const OTHER_KEY = join(dir, 'other-key.pem')

/** A throwaway self-signed certificate for localhost, valid one day, and another key. */
function makeCertificate(): void {
  selfSignedCertificate(dir, { commonName: 'localhost', days: 1, san: 'DNS:localhost,IP:127.0.0.1' })
  execFileSync('openssl', ['genpkey', '-algorithm', 'RSA', '-out', OTHER_KEY], {
    stdio: 'ignore',
    timeout: 30_000,
  })
}

interface TlsAnswer {
  readonly status: number
  readonly protocol: string | null
  readonly headers: Record<string, string | string[] | undefined>
}

/** GET over HTTPS trusting only the throwaway certificate, within the TLS versions given. */
function get(
  port: number,
  path: string,
  versions: { minVersion?: SecureVersion; maxVersion?: SecureVersion } = {},
): Promise<TlsAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path,
        servername: 'localhost',
        ca: readFileSync(CERT),
        agent: false,
        timeout: 5000,
        ...versions,
        // Lets this client offer TLS 1.0/1.1 at all, so that a refusal comes from the server.
        ciphers: 'DEFAULT@SECLEVEL=0',
      },
      (res) => {
        const protocol = (res.socket as TLSSocket).getProtocol()
        res.resume()
        res.on('end', () => resolve({ status: res.statusCode ?? 0, protocol, headers: res.headers }))
      },
    )
    req.on('timeout', () => req.destroy(new Error('timed out')))
    req.on('error', reject)
    req.end()
  })
}

before(makeCertificate)
after(() => rmSync(dir, { recursive: true, force: true }))

describe('serving TLS directly', () => {
  let plinth: TestPlinth
  let port: number
  before(async () => {
    plinth = await startTestPlinth({
      env: { PLINTH_TLS_CERT_FILE: CERT, PLINTH_TLS_KEY_FILE: KEY, HOST: '127.0.0.1' },
    })
    const address = await plinth.listen()
    assert.match(address, /^https:\/\//)
    port = Number(new URL(address).port)
  })
  after(() => plinth?.close())

  it('negotiates TLS 1.3 with a client that offers it, and answers /live', async () => {
    const res = await get(port, '/live')
    assert.equal(res.status, 200)
    assert.equal(res.protocol, 'TLSv1.3')
  })

  it('still accepts a client limited to TLS 1.2', async () => {
    const res = await get(port, '/live', { maxVersion: 'TLSv1.2' })
    assert.equal(res.status, 200)
    assert.equal(res.protocol, 'TLSv1.2')
  })

  it('refuses a client limited to TLS 1.1: the server answers with a protocol-version alert', async () => {
    await assert.rejects(get(port, '/live', { minVersion: 'TLSv1', maxVersion: 'TLSv1.1' }), (err) => {
      // An alert received from the server (alert 70), not a client that could not offer the version.
      assert.match(String(err), /tlsv1 alert protocol version/i)
      return true
    })
  })

  it('sends HSTS when serving TLS itself, even outside production', async () => {
    const res = await get(port, '/live')
    assert.match(String(res.headers['strict-transport-security']), /^max-age=\d+; includeSubDomains$/)
    assert.equal(res.headers['x-content-type-options'], 'nosniff')
  })
})

describe('TLS configuration', () => {
  const problemsOf = (env: Record<string, string>): string[] => {
    try {
      loadConfig({ env: { PLINTH_ENV: 'test', ...env }, envFile: false, cwd: dir })
    } catch (err) {
      if (err instanceof ConfigError) return [...err.problems]
      throw err
    }
    return []
  }

  it('accepts both files, and resolves relative paths against the working directory', () => {
    const config = loadConfig({
      env: { PLINTH_TLS_CERT_FILE: 'cert.pem', PLINTH_TLS_KEY_FILE: 'key.pem' },
      envFile: false,
      cwd: dir,
    })
    assert.equal(config.tlsCertFile, CERT)
    assert.equal(config.tlsKeyFile, KEY)
  })

  it('refuses one file without the other', () => {
    assert.match(problemsOf({ PLINTH_TLS_CERT_FILE: CERT }).join('\n'), /PLINTH_TLS_KEY_FILE is not/)
    assert.match(problemsOf({ PLINTH_TLS_KEY_FILE: KEY }).join('\n'), /PLINTH_TLS_CERT_FILE is not/)
  })

  it('lists unreadable or non-PEM files with the other problems', () => {
    const notPem = join(dir, 'not.pem')
    writeFileSync(notPem, 'hello')
    const problems = problemsOf({
      PLINTH_TLS_CERT_FILE: join(dir, 'missing.pem'),
      PLINTH_TLS_KEY_FILE: notPem,
      PORT: 'eighty',
    })
    assert.equal(problems.length, 3, problems.join('\n'))
    assert.match(problems.join('\n'), /PORT/)
    assert.match(
      problems.join('\n'),
      /PLINTH_TLS_CERT_FILE points to .*missing\.pem, which cannot be read \(ENOENT\)/,
    )
    assert.match(problems.join('\n'), /PLINTH_TLS_KEY_FILE points to .*not\.pem, which is not a PEM file/)
  })

  it('refuses a key that does not belong to the certificate, without printing the key', () => {
    const problems = problemsOf({ PLINTH_TLS_CERT_FILE: CERT, PLINTH_TLS_KEY_FILE: OTHER_KEY })
    assert.equal(problems.length, 1, problems.join('\n'))
    assert.match(problems[0]!, /cannot be used together/)
    assert.doesNotMatch(problems[0]!, /BEGIN|PRIVATE/)
  })
})
