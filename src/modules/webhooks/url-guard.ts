import { lookup as dnsLookup, type LookupAddress } from 'node:dns'
import { isIP, type LookupFunction } from 'node:net'
import { PlinthError } from '../../shared/errors.ts'

/**
 * Where outbound webhooks may go. Plinth posts to URLs its users choose, from inside the operator's
 * network: without these checks a subscription could make it call its own admin endpoints, the
 * cloud metadata service (169.254.169.254) or anything else only the server can reach (SSRF).
 */
export interface UrlPolicy {
  /** `PLINTH_WEBHOOKS_ALLOW_PRIVATE`: allow loopback, private, link-local and other non-public addresses. */
  readonly allowPrivate: boolean
  /** `PLINTH_WEBHOOKS_ALLOW_HTTP`: allow plain `http:` (otherwise `https:` only). */
  readonly allowHttp: boolean
}

export const MAX_URL_LENGTH = 2048

/** Resolves every address of a host name, as `dns.lookup(host, { all: true })` does. */
export type ResolveAll = (hostname: string) => Promise<readonly LookupAddress[]>

const resolveAll: ResolveAll = (hostname) =>
  new Promise((resolve, reject) => {
    dnsLookup(hostname, { all: true, order: 'verbatim' }, (err, addresses) =>
      err ? reject(err) : resolve(addresses),
    )
  })

/** A refused URL; `reason` says why in words a caller can act on. */
export class UrlRefused extends Error {
  readonly reason: string
  constructor(reason: string) {
    super(`webhook URL refused: ${reason}`)
    this.name = 'UrlRefused'
    this.reason = reason
  }
}

function ipv4ToInt(ip: string): number {
  return ip.split('.').reduce((n, part) => n * 256 + Number(part), 0)
}

// [first address, prefix length, why it is refused]
const V4_RANGES: readonly (readonly [string, number, string])[] = [
  ['0.0.0.0', 8, 'an unspecified ("this network") address'],
  ['10.0.0.0', 8, 'a private address (RFC 1918)'],
  ['100.64.0.0', 10, 'a shared carrier-grade NAT address (RFC 6598)'],
  ['127.0.0.0', 8, 'a loopback address'],
  ['169.254.0.0', 16, 'a link-local address (this includes cloud metadata services)'],
  ['172.16.0.0', 12, 'a private address (RFC 1918)'],
  ['192.0.0.0', 24, 'a reserved address (IETF protocol assignments)'],
  ['192.0.2.0', 24, 'a reserved address (documentation)'],
  ['192.168.0.0', 16, 'a private address (RFC 1918)'],
  ['198.18.0.0', 15, 'a reserved address (benchmarking)'],
  ['198.51.100.0', 24, 'a reserved address (documentation)'],
  ['203.0.113.0', 24, 'a reserved address (documentation)'],
  ['224.0.0.0', 4, 'a multicast address'],
  ['240.0.0.0', 4, 'a reserved or broadcast address'],
]
const V4 = V4_RANGES.map(([base, bits, why]) => {
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0
  return { net: (ipv4ToInt(base) & mask) >>> 0, mask, why }
})

function ipv4Refusal(ip: string): string | undefined {
  const n = ipv4ToInt(ip)
  return V4.find((r) => (n & r.mask) >>> 0 === r.net)?.why
}

/** The eight 16-bit groups of an IPv6 address (zone id dropped), or undefined when it is not one. */
function ipv6Groups(ip: string): number[] | undefined {
  let text = ip.replace(/%.*$/, '')
  if (isIP(text) !== 6) return undefined
  // An embedded dotted quad (::ffff:10.0.0.1) becomes two groups.
  const quad = /(\d+\.\d+\.\d+\.\d+)$/.exec(text)
  if (quad) {
    const n = ipv4ToInt(quad[1]!)
    text = `${text.slice(0, -quad[1]!.length)}${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`
  }
  const [head = '', tail] = text.split('::') as [string, string | undefined]
  const part = (s: string) => (s === '' ? [] : s.split(':').map((g) => Number.parseInt(g, 16)))
  const left = part(head)
  const right = tail === undefined ? [] : part(tail)
  const fill = tail === undefined ? 0 : 8 - left.length - right.length
  return [...left, ...Array<number>(fill).fill(0), ...right]
}

const v4Of = (hi: number, lo: number) => `${hi >>> 8}.${hi & 0xff}.${lo >>> 8}.${lo & 0xff}`

function ipv6Refusal(g: number[]): string | undefined {
  const [a = 0, b = 0, c = 0, d = 0, e = 0, f = 0, h = 0, i = 0] = g
  const zeroTo = (n: number) => g.slice(0, n).every((x) => x === 0)
  if (zeroTo(8)) return 'an unspecified address'
  if (zeroTo(7) && i === 1) return 'a loopback address'
  // IPv4-mapped (::ffff:a.b.c.d) and IPv4-translated (::ffff:0:a.b.c.d): judged as the IPv4 address.
  if (zeroTo(5) && f === 0xffff) return ipv4Refusal(v4Of(h, i))
  if (zeroTo(4) && e === 0xffff && f === 0) return ipv4Refusal(v4Of(h, i))
  if (zeroTo(6)) return 'a reserved address (IPv4-compatible IPv6)'
  // NAT64 (64:ff9b::/96): public IPv4 hosts seen from an IPv6-only network; judged as the IPv4 address.
  if (a === 0x64 && b === 0xff9b && c === 0 && d === 0 && e === 0 && f === 0) return ipv4Refusal(v4Of(h, i))
  if (a === 0x64 && b === 0xff9b && c === 1) return 'a private address (local-use NAT64)'
  if ((a & 0xfe00) === 0xfc00) return 'a private address (unique local, fc00::/7)'
  if ((a & 0xffc0) === 0xfe80) return 'a link-local address (fe80::/10)'
  if ((a & 0xffc0) === 0xfec0) return 'a private address (site-local, fec0::/10)'
  if ((a & 0xff00) === 0xff00) return 'a multicast address'
  // 6to4 (2002::/16) carries an IPv4 address in its next 32 bits.
  if (a === 0x2002) return ipv4Refusal(v4Of(b, c))
  if (a === 0x2001 && b === 0x0db8) return 'a reserved address (documentation)'
  if (a === 0x2001 && b === 0) return 'a reserved address (Teredo)'
  // Everything else outside global unicast (2000::/3) is unassigned or special-purpose.
  if ((a & 0xe000) !== 0x2000) return 'a reserved address (not global unicast)'
  return undefined
}

/**
 * Why a webhook must not connect to `ip`, or undefined when it is a public unicast address.
 * Loopback, private (RFC 1918, fc00::/7), link-local, carrier-grade NAT, unspecified, multicast,
 * documentation and other reserved ranges are refused, as are IPv6 forms that embed such an IPv4
 * address (IPv4-mapped, NAT64, 6to4).
 *
 * @example
 * addressRefusal('169.254.169.254') // 'a link-local address (this includes cloud metadata services)'
 * addressRefusal('93.184.215.14')   // undefined
 */
export function addressRefusal(ip: string): string | undefined {
  const family = isIP(ip.replace(/%.*$/, ''))
  if (family === 4) return ipv4Refusal(ip)
  const groups = family === 6 ? ipv6Groups(ip) : undefined
  return groups ? ipv6Refusal(groups) : 'not an IP address'
}

/** The host of a URL as `net.connect` wants it (IPv6 literals without their brackets). */
export function hostOf(url: URL): string {
  return url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname
}

/**
 * Checks what a URL says, without resolving it: an absolute `http:`/`https:` URL (https only
 * unless `allowHttp`), no user name or password in it, no fragment, at most 2048 characters, and,
 * when the host is an IP address, a public one (unless `allowPrivate`).
 * @throws UrlRefused naming the reason.
 */
export function parseWebhookUrl(raw: string, policy: UrlPolicy): URL {
  if (raw.length > MAX_URL_LENGTH) throw new UrlRefused(`it is longer than ${MAX_URL_LENGTH} characters`)
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    throw new UrlRefused('it is not an absolute URL')
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw new UrlRefused(`the scheme must be https${policy.allowHttp ? ' or http' : ''}, not ${url.protocol}`)
  if (url.protocol === 'http:' && !policy.allowHttp)
    throw new UrlRefused('the scheme must be https (plain http needs PLINTH_WEBHOOKS_ALLOW_HTTP=true)')
  if (url.username || url.password)
    throw new UrlRefused(
      'it contains credentials (user:password@); put a secret in the signing secret instead',
    )
  if (url.hash) throw new UrlRefused('it has a fragment (#…), which is never sent')
  if (!url.hostname) throw new UrlRefused('it has no host')
  const host = hostOf(url)
  if (isIP(host) && !policy.allowPrivate) {
    const why = addressRefusal(host)
    if (why) throw new UrlRefused(`${host} is ${why} (allowed only with PLINTH_WEBHOOKS_ALLOW_PRIVATE=true)`)
  }
  return url
}

/** Throws `UrlRefused` when any of a host's addresses is refused by the policy. */
function assertAddresses(host: string, addresses: readonly LookupAddress[], policy: UrlPolicy): void {
  if (addresses.length === 0) throw new UrlRefused(`${host} has no address`)
  if (policy.allowPrivate) return
  for (const { address } of addresses) {
    const why = addressRefusal(address)
    // One bad address refuses the host: a name that also points inside the network is not a public receiver.
    if (why)
      throw new UrlRefused(
        `${host} resolves to ${address}, ${why} (allowed only with PLINTH_WEBHOOKS_ALLOW_PRIVATE=true)`,
      )
  }
}

/**
 * `parseWebhookUrl`, then resolves the host and refuses it when any of its addresses is not
 * public (unless `allowPrivate`) or when it does not resolve. Used when a subscription is
 * created or changed; deliveries check again at connect time (`guardedLookup`).
 * @throws PlinthError `PLINTH_WEBHOOK_URL_INVALID` naming the reason.
 */
export async function assertWebhookUrl(
  raw: string,
  policy: UrlPolicy,
  resolve: ResolveAll = resolveAll,
): Promise<URL> {
  try {
    const url = parseWebhookUrl(raw, policy)
    const host = hostOf(url)
    if (!isIP(host)) {
      let addresses: readonly LookupAddress[]
      try {
        addresses = await resolve(host)
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? 'error'
        throw new UrlRefused(`the host ${host} does not resolve (${code})`)
      }
      assertAddresses(host, addresses, policy)
    }
    return url
  } catch (err) {
    if (!(err instanceof UrlRefused)) throw err
    throw new PlinthError('PLINTH_WEBHOOK_URL_INVALID', `The webhook URL is refused: ${err.reason}.`, {
      errors: [{ in: 'body', field: 'url', message: err.reason }],
    })
  }
}

/**
 * A `lookup` for `http.request` that resolves the host and refuses the connection when any
 * address is not public (unless `allowPrivate`). Because the socket connects to exactly the
 * addresses checked here, a name that resolved to a public address when the subscription was
 * made and to 127.0.0.1 now (DNS rebinding) is refused at delivery time, with no window between
 * check and use. IP literals never reach a lookup: `parseWebhookUrl` checks those.
 */
export function guardedLookup(policy: UrlPolicy, resolve: ResolveAll = resolveAll): LookupFunction {
  return (hostname, options, callback) => {
    resolve(hostname).then(
      (all) => {
        const family = options.family === 'IPv4' ? 4 : options.family === 'IPv6' ? 6 : options.family
        const addresses = family ? all.filter((a) => a.family === family) : all
        try {
          assertAddresses(hostname, addresses, policy)
        } catch (err) {
          const refused = Object.assign(err as Error, { code: 'EPLINTHREFUSED' })
          return callback(refused as NodeJS.ErrnoException, '', 0)
        }
        if (options.all) return callback(null, addresses as LookupAddress[])
        const [first] = addresses as [LookupAddress]
        callback(null, first.address, first.family)
      },
      (err: NodeJS.ErrnoException) => callback(err, '', 0),
    )
  }
}
