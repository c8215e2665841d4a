import { createServer, type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'

/**
 * A minimal OTLP/HTTP trace receiver: records every POST to /v1/traces and decodes its protobuf
 * body (opentelemetry-proto's ExportTraceServiceRequest) with a wire-format reader written here,
 * independent of the SDK's encoder, so the test checks what a collector would read.
 */
export async function startOtlpReceiver() {
  const requests: { path: string; headers: IncomingHttpHeaders; body: Buffer }[] = []
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      requests.push({ path: req.url ?? '/', headers: req.headers, body: Buffer.concat(chunks) })
      // An empty ExportTraceServiceResponse: full success.
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    /** Every span of every request received so far. */
    spans: () => requests.flatMap((r) => decodeTraces(r.body)),
    async close() {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

export interface DecodedSpan {
  readonly resource: Record<string, string>
  readonly scope: string
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId: string
  readonly name: string
  readonly kind: number
  readonly attributes: Record<string, string | number | boolean>
}

type Field = { no: number; wire: number; value: bigint | Buffer }

/** The fields of one protobuf message (varint, 64-bit, length-delimited and 32-bit wire types). */
function fields(buf: Buffer): Field[] {
  const out: Field[] = []
  let i = 0
  const varint = () => {
    let result = 0n
    let shift = 0n
    for (;;) {
      const byte = buf[i++]
      if (byte === undefined) throw new Error('truncated varint')
      result |= BigInt(byte & 0x7f) << shift
      if ((byte & 0x80) === 0) return result
      shift += 7n
    }
  }
  while (i < buf.length) {
    const key = Number(varint())
    const no = key >> 3
    const wire = key & 7
    if (wire === 0) out.push({ no, wire, value: varint() })
    else if (wire === 1) {
      out.push({ no, wire, value: buf.subarray(i, i + 8) })
      i += 8
    } else if (wire === 2) {
      const len = Number(varint())
      out.push({ no, wire, value: buf.subarray(i, i + len) })
      i += len
    } else if (wire === 5) {
      out.push({ no, wire, value: buf.subarray(i, i + 4) })
      i += 4
    } else throw new Error(`unexpected wire type ${wire}`)
  }
  return out
}

const bytesOf = (fs: Field[], no: number) => fs.filter((f) => f.no === no).map((f) => f.value as Buffer)
const first = (fs: Field[], no: number) => bytesOf(fs, no)[0]
const text = (fs: Field[], no: number) => first(fs, no)?.toString('utf8') ?? ''

/** KeyValue { 1: key, 2: AnyValue { 1: string, 2: bool, 3: int, 4: double } } */
function attributesOf(list: Buffer[]): Record<string, string | number | boolean> {
  const attrs: Record<string, string | number | boolean> = {}
  for (const kv of list) {
    const f = fields(kv)
    const value = first(f, 2)
    if (!value) continue
    const v = fields(value)[0]
    if (!v) continue
    attrs[text(f, 1)] =
      v.no === 1
        ? (v.value as Buffer).toString('utf8')
        : v.no === 2
          ? v.value === 1n
          : v.no === 3
            ? Number(v.value as bigint)
            : v.no === 4
              ? (v.value as Buffer).readDoubleLE(0)
              : String(v.value)
  }
  return attrs
}

/** ExportTraceServiceRequest { 1: ResourceSpans { 1: Resource { 1: attributes }, 2: ScopeSpans { 1: scope, 2: Span } } } */
export function decodeTraces(body: Buffer): DecodedSpan[] {
  const spans: DecodedSpan[] = []
  for (const rs of bytesOf(fields(body), 1)) {
    const rsf = fields(rs)
    const resourceBuf = first(rsf, 1)
    const resource = resourceBuf
      ? (attributesOf(bytesOf(fields(resourceBuf), 1)) as Record<string, string>)
      : {}
    for (const ss of bytesOf(rsf, 2)) {
      const ssf = fields(ss)
      const scopeBuf = first(ssf, 1)
      const scope = scopeBuf ? text(fields(scopeBuf), 1) : ''
      for (const s of bytesOf(ssf, 2)) {
        const f = fields(s)
        const kind = f.find((x) => x.no === 6)?.value
        spans.push({
          resource,
          scope,
          traceId: first(f, 1)?.toString('hex') ?? '',
          spanId: first(f, 2)?.toString('hex') ?? '',
          parentSpanId: first(f, 4)?.toString('hex') ?? '',
          name: text(f, 5),
          kind: typeof kind === 'bigint' ? Number(kind) : 0,
          attributes: attributesOf(bytesOf(f, 9)),
        })
      }
    }
  }
  return spans
}
