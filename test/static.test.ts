import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { brotliCompressSync, brotliDecompressSync, gunzipSync, gzipSync } from 'node:zlib'
import { assertProblem } from './helpers/assert-problem.ts'
import { startTestPlinth, type TestPlinth } from './helpers/test-plinth.ts'

const INDEX =
  '<!doctype html><html><head><script type="module" src="/assets/index-3f9a1c2b.js"></script></head><body><div id="app"></div></body></html>'
const SCRIPT = `console.log(${JSON.stringify('x'.repeat(2000))})`

function buildSite(): string {
  const dir = mkdtempSync(join(tmpdir(), 'plinth-static-'))
  mkdirSync(join(dir, 'assets'))
  writeFileSync(join(dir, 'index.html'), INDEX)
  writeFileSync(join(dir, 'assets', 'index-3f9a1c2b.js'), SCRIPT)
  writeFileSync(join(dir, 'assets', 'index-3f9a1c2b.js.br'), brotliCompressSync(SCRIPT))
  writeFileSync(join(dir, 'assets', 'index-3f9a1c2b.js.gz'), gzipSync(SCRIPT))
  writeFileSync(join(dir, 'assets', 'style.BxY1_z9Q.css'), 'body{}')
  writeFileSync(join(dir, 'robots.txt'), 'User-agent: *\n')
  writeFileSync(join(dir, '.env'), 'SECRET=1')
  return dir
}

describe('a static single-page app at /', () => {
  const dir = buildSite()
  let plinth: TestPlinth
  const get = (url: string, headers: Record<string, string> = {}) => plinth.app.inject({ url, headers })

  before(async () => {
    plinth = await startTestPlinth({
      env: { PLINTH_STATIC_DIR: dir, PLINTH_STATIC_CSP: "connect-src 'self' https://api.example.com" },
    })
  })
  after(async () => {
    await plinth?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('serves index.html at / without caching, under a strict policy the operator extended', async () => {
    const res = await get('/', { accept: 'text/html' })
    assert.equal(res.statusCode, 200)
    assert.equal(res.body, INDEX)
    assert.match(String(res.headers['content-type']), /^text\/html/)
    assert.equal(res.headers['cache-control'], 'no-cache')
    assert.ok(res.headers.etag)
    const csp = String(res.headers['content-security-policy'])
    assert.match(csp, /default-src 'self'/)
    assert.match(csp, /script-src 'self'(;|$)/)
    assert.match(csp, /frame-ancestors 'none'/)
    assert.match(csp, /connect-src 'self' https:\/\/api\.example\.com/)
    assert.equal(csp.match(/connect-src/g)?.length, 1, 'the operator directive replaces the default one')
    assert.equal(res.headers['x-content-type-options'], 'nosniff')
  })

  it('caches hashed assets for a year and serves their precompressed siblings', async () => {
    const plain = await get('/assets/index-3f9a1c2b.js')
    assert.equal(plain.statusCode, 200)
    assert.equal(plain.body, SCRIPT)
    assert.equal(plain.headers['cache-control'], 'public, max-age=31536000, immutable')
    assert.match(String(plain.headers['content-type']), /javascript/)

    const br = await get('/assets/index-3f9a1c2b.js', { 'accept-encoding': 'gzip, br' })
    assert.equal(br.headers['content-encoding'], 'br')
    assert.equal(brotliDecompressSync(br.rawPayload).toString(), SCRIPT)
    assert.equal(br.headers['cache-control'], 'public, max-age=31536000, immutable')
    assert.match(String(br.headers.vary), /accept-encoding/i)
    const gz = await get('/assets/index-3f9a1c2b.js', { 'accept-encoding': 'gzip' })
    assert.equal(gz.headers['content-encoding'], 'gzip')
    assert.equal(gunzipSync(gz.rawPayload).toString(), SCRIPT)

    assert.equal(
      (await get('/assets/style.BxY1_z9Q.css')).headers['cache-control'],
      'public, max-age=31536000, immutable',
    )
    assert.equal((await get('/robots.txt')).headers['cache-control'], 'no-cache', 'unhashed files revalidate')
    const etag = String(plain.headers.etag)
    assert.equal((await get('/assets/index-3f9a1c2b.js', { 'if-none-match': etag })).statusCode, 304)
  })

  it('answers client-side routes with index.html, and missing assets and API paths with 404', async () => {
    const route = await get('/settings/profile', { accept: 'text/html,application/xhtml+xml' })
    assert.equal(route.statusCode, 200)
    assert.equal(route.body, INDEX)
    assert.equal(route.headers['cache-control'], 'no-cache')
    const noExt = await get('/orders/42')
    assert.equal(noExt.body, INDEX)
    assertProblem(await get('/assets/missing-0a1b2c3d.js', { accept: '*/*' }), 404, 'PLINTH_HTTP_NOT_FOUND')
    assertProblem(await get('/api/v1/nothing-here', { accept: 'text/html' }), 404, 'PLINTH_HTTP_NOT_FOUND')
    assertProblem(await get('/api', { accept: 'text/html' }), 404, 'PLINTH_HTTP_NOT_FOUND')
    assert.equal((await get('/live')).statusCode, 200, 'operations routes still answer')
  })

  it('serves no dotfile and nothing outside the directory', async () => {
    for (const url of ['/.env', '/assets/../.env', '/%2e%2e/%2e%2e/etc/passwd', '/..%2f..%2fetc%2fpasswd']) {
      const res = await get(url, { accept: '*/*' })
      assert.ok(
        !res.body.includes('SECRET') && !res.body.includes('root:'),
        `${url}: ${res.body.slice(0, 80)}`,
      )
      assert.ok(res.statusCode < 500, `${url}: ${res.statusCode}`)
    }
  })
})

describe('a static app under a prefix', () => {
  const dir = buildSite()
  let plinth: TestPlinth

  before(async () => {
    plinth = await startTestPlinth({ env: { PLINTH_STATIC_DIR: dir, PLINTH_STATIC_PREFIX: '/app/' } })
  })
  after(async () => {
    await plinth?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('serves the app under the prefix only', async () => {
    assert.equal((await plinth.app.inject({ url: '/app/' })).body, INDEX)
    assert.equal((await plinth.app.inject({ url: '/app/deep/link' })).body, INDEX)
    assert.equal((await plinth.app.inject({ url: '/app/assets/index-3f9a1c2b.js' })).body, SCRIPT)
    const bare = await plinth.app.inject({ url: '/app' })
    assert.equal(bare.statusCode, 308)
    assert.equal(bare.headers.location, '/app/')
    assertProblem(await plinth.app.inject({ url: '/elsewhere' }), 404, 'PLINTH_HTTP_NOT_FOUND')
  })
})
