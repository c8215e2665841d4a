import { createHmac, timingSafeEqual } from 'node:crypto'

/** Seconds a receiver should accept between a signature's timestamp and its own clock (default). */
export const DEFAULT_TOLERANCE_SECONDS = 300

/**
 * The `plinth-signature` header of a delivery: `t=<unix seconds>,v1=<hex HMAC-SHA256>`, where the
 * HMAC (keyed with the subscription's secret, as UTF-8) covers `"<t>.<raw body>"`. Binding the
 * timestamp lets a receiver refuse replays older than its tolerance; the body is signed exactly
 * as sent, so a receiver must verify the raw bytes before parsing them.
 *
 * @example
 * signatureHeader('whsec…', 1767225600, '{"id":"…"}') // 't=1767225600,v1=5f2b…'
 */
export function signatureHeader(secret: string, timestamp: number, body: string): string {
  const v1 = createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')
  return `t=${timestamp},v1=${v1}`
}

/**
 * What a receiver does (in Node): true when `header` carries a `v1` signature of `body` made with
 * `secret`, and its timestamp is within `toleranceSeconds` of `now`. Several `v1=` entries are
 * accepted (any may match), so that a sender can sign with two secrets during a rotation.
 */
export function verifySignature(
  secret: string,
  header: string,
  body: string | Buffer,
  { toleranceSeconds = DEFAULT_TOLERANCE_SECONDS, now = Date.now() } = {},
): boolean {
  const parts = header.split(',').map((p) => p.trim().split('='))
  const t = Number(parts.find(([k]) => k === 't')?.[1])
  if (!Number.isInteger(t) || Math.abs(now / 1000 - t) > toleranceSeconds) return false
  const expected = createHmac('sha256', secret).update(`${t}.`).update(body).digest()
  return parts
    .filter(([k, v]) => k === 'v1' && v !== undefined && /^[0-9a-f]{64}$/.test(v))
    .some(([, v]) => timingSafeEqual(Buffer.from(v as string, 'hex'), expected))
}
