import assert from 'node:assert/strict'
import type { LookupAddress } from 'node:dns'
import { describe, it } from 'node:test'
import { PlinthError } from '../../shared/errors.ts'
import {
  addressRefusal,
  assertWebhookUrl,
  guardedLookup,
  parseWebhookUrl,
  type ResolveAll,
  type UrlPolicy,
  UrlRefused,
} from './url-guard.ts'

const strict: UrlPolicy = { allowPrivate: false, allowHttp: false }
const lax: UrlPolicy = { allowPrivate: true, allowHttp: true }

/** A resolver answering from a table, as DNS would (unknown names: ENOTFOUND). */
const dnsOf =
  (table: Record<string, string[]>): ResolveAll =>
  async (host) => {
    const addresses = table[host]
    if (!addresses) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' })
    return addresses.map((address): LookupAddress => ({ address, family: address.includes(':') ? 6 : 4 }))
  }

describe('addressRefusal', () => {
  const refused: [string, RegExp][] = [
    ['127.0.0.1', /loopback/],
    ['127.255.0.9', /loopback/],
    ['::1', /loopback/],
    ['0.0.0.0', /unspecified/],
    ['::', /unspecified/],
    ['10.1.2.3', /private/],
    ['172.16.0.1', /private/],
    ['172.31.255.255', /private/],
    ['192.168.1.1', /private/],
    ['fc00::1', /private.*unique local/],
    ['fd12:3456::1', /private/],
    ['169.254.169.254', /link-local.*metadata/],
    ['fe80::1', /link-local/],
    ['fe80::1%eth0', /link-local/],
    ['100.64.0.1', /carrier-grade NAT/],
    ['100.127.255.254', /carrier-grade NAT/],
    ['224.0.0.1', /multicast/],
    ['ff02::1', /multicast/],
    ['255.255.255.255', /broadcast/],
    ['192.0.2.10', /documentation/],
    ['2001:db8::1', /documentation/],
    ['::ffff:127.0.0.1', /loopback/],
    ['::ffff:7f00:1', /loopback/],
    ['::ffff:10.0.0.1', /private/],
    ['::ffff:169.254.169.254', /link-local/],
    ['::ffff:0:10.0.0.1', /private/],
    ['64:ff9b::7f00:1', /loopback/],
    ['64:ff9b::192.168.0.1', /private/],
    ['2002:7f00:1::', /loopback/],
    ['2002:a00:1::1', /private/],
    ['::127.0.0.1', /reserved/],
    ['fec0::1', /site-local/],
    ['100::1', /not global unicast/],
    ['2001::1', /Teredo/],
    ['not-an-ip', /not an IP/],
  ]
  for (const [ip, why] of refused) {
    it(`refuses ${ip}`, () => assert.match(addressRefusal(ip) ?? 'allowed', why))
  }

  for (const ip of [
    '93.184.215.14',
    '8.8.8.8',
    '1.1.1.1',
    '172.15.255.255',
    '172.32.0.0',
    '100.63.255.255',
    '100.128.0.0',
    '169.253.255.255',
    '11.0.0.1',
    '2606:4700:4700::1111',
    '2a00:1450:4007:80e::200e',
    '::ffff:8.8.8.8',
    '64:ff9b::808:808',
    '2002:808:808::1',
  ]) {
    it(`allows the public address ${ip}`, () => assert.equal(addressRefusal(ip), undefined))
  }
})

describe('parseWebhookUrl', () => {
  const refusals: [string, UrlPolicy, RegExp][] = [
    ['not a url', lax, /not an absolute URL/],
    ['/relative/path', lax, /not an absolute URL/],
    ['ftp://example.com/hook', lax, /scheme must be https or http, not ftp:/],
    ['file:///etc/passwd', lax, /scheme/],
    ['javascript:alert(1)', lax, /scheme/],
    ['http://example.com/hook', strict, /must be https .*PLINTH_WEBHOOKS_ALLOW_HTTP/],
    ['https://user:pass@example.com/hook', lax, /credentials/],
    ['https://user@example.com/hook', lax, /credentials/],
    ['https://example.com/hook#part', lax, /fragment/],
    [`https://example.com/${'a'.repeat(2048)}`, lax, /longer than 2048/],
    ['https://127.0.0.1/hook', strict, /127\.0\.0\.1 is a loopback address .*PLINTH_WEBHOOKS_ALLOW_PRIVATE/],
    ['https://[::1]:8443/hook', strict, /::1 is a loopback/],
    ['https://[::ffff:10.0.0.1]/hook', strict, /private/],
    ['https://169.254.169.254/latest/meta-data', strict, /link-local/],
    // The WHATWG parser normalises these spellings of 127.0.0.1, and the check sees the result.
    ['https://2130706433/hook', strict, /loopback/],
    ['https://0x7f.1/hook', strict, /loopback/],
    ['https://017700000001/hook', strict, /loopback/],
  ]
  for (const [raw, policy, why] of refusals) {
    it(`refuses ${raw.slice(0, 60)}`, () => {
      assert.throws(
        () => parseWebhookUrl(raw, policy),
        (err: unknown) => err instanceof UrlRefused && why.test(err.reason),
      )
    })
  }

  it('accepts https, and http or private literals only when the policy allows them', () => {
    assert.equal(parseWebhookUrl('https://hooks.example.com/in?x=1', strict).host, 'hooks.example.com')
    assert.equal(parseWebhookUrl('http://127.0.0.1:8080/hook', lax).port, '8080')
    assert.equal(parseWebhookUrl('https://93.184.215.14/hook', strict).hostname, '93.184.215.14')
  })
})

describe('assertWebhookUrl', () => {
  const dns = dnsOf({
    'public.example': ['93.184.215.14', '2606:2800:21f:cb07:6820:80da:af6b:8b2c'],
    'mixed.example': ['93.184.215.14', '10.0.0.7'],
    'localhost.example': ['127.0.0.1'],
    'empty.example': [],
  })

  it('resolves the host and accepts it when every address is public', async () => {
    const url = await assertWebhookUrl('https://public.example/hook', strict, dns)
    assert.equal(url.href, 'https://public.example/hook')
  })

  for (const [host, why] of [
    ['mixed.example', /mixed\.example resolves to 10\.0\.0\.7, a private address/],
    ['localhost.example', /resolves to 127\.0\.0\.1, a loopback address/],
    ['nowhere.example', /does not resolve \(ENOTFOUND\)/],
    ['empty.example', /has no address/],
  ] as const) {
    it(`refuses ${host} with PLINTH_WEBHOOK_URL_INVALID naming why`, async () => {
      await assert.rejects(assertWebhookUrl(`https://${host}/hook`, strict, dns), (err: unknown) => {
        assert.ok(err instanceof PlinthError)
        assert.equal(err.code, 'PLINTH_WEBHOOK_URL_INVALID')
        assert.equal(err.status, 422)
        assert.match(err.message, why)
        assert.equal(err.errors?.[0]?.field, 'url')
        return true
      })
    })
  }

  it('accepts private addresses when PLINTH_WEBHOOKS_ALLOW_PRIVATE is on', async () => {
    await assertWebhookUrl('https://localhost.example/hook', { ...strict, allowPrivate: true }, dns)
    await assertWebhookUrl('https://10.0.0.1/hook', { ...strict, allowPrivate: true }, dns)
  })

  it('turns syntax refusals into the same error', async () => {
    await assert.rejects(assertWebhookUrl('https://u:p@public.example/', strict, dns), /credentials/)
  })

  it('counts any resolver failure as a host that does not resolve', async () => {
    const broken: ResolveAll = () => Promise.reject(new Error('resolver down'))
    await assert.rejects(
      assertWebhookUrl('https://public.example/', strict, broken),
      /does not resolve \(error\)/,
    )
  })
})

describe('guardedLookup', () => {
  const dns = dnsOf({ 'public.example': ['93.184.215.14', '2606:4700::1'], 'rebound.example': ['127.0.0.1'] })
  const call = (policy: UrlPolicy, host: string, options: object) =>
    new Promise<{ err: NodeJS.ErrnoException | null; address: unknown; family?: number | undefined }>(
      (resolve) =>
        guardedLookup(policy, dns)(host, options, (err, address, family) =>
          resolve({ err, address, family }),
        ),
    )

  it('answers with every checked address (all: true) or the first one of the family asked for', async () => {
    const all = await call(strict, 'public.example', { all: true })
    assert.equal(all.err, null)
    assert.deepEqual(all.address, [
      { address: '93.184.215.14', family: 4 },
      { address: '2606:4700::1', family: 6 },
    ])
    const v6 = await call(strict, 'public.example', { family: 6 })
    assert.deepEqual([v6.address, v6.family], ['2606:4700::1', 6])
    const v4 = await call(strict, 'public.example', { family: 'IPv4' })
    assert.deepEqual([v4.address, v4.family], ['93.184.215.14', 4])
  })

  it('fails the connection when the name now resolves to a refused address (DNS rebinding)', async () => {
    const { err } = await call(strict, 'rebound.example', { all: true })
    assert.match(String(err?.message), /rebound\.example resolves to 127\.0\.0\.1, a loopback address/)
    assert.equal(err?.code, 'EPLINTHREFUSED')
    assert.equal((await call(lax, 'rebound.example', {})).address, '127.0.0.1')
  })

  it('passes resolution errors on', async () => {
    const { err } = await call(strict, 'nowhere.example', {})
    assert.equal(err?.code, 'ENOTFOUND')
  })
})
