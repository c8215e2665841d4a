import assert from 'node:assert/strict'
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import {
  attributePerfScript,
  attributionLines,
  ownerOfFrame,
  partOfSample,
  removeV8Logs,
} from '../bench/http/perf.ts'

// bench/http/perf.ts (decision 0049) reads `perf script` output; these samples have its shape: a
// header line with the period before the event name, then the frames, innermost first.
const sample = (period: number, ...frames: string[]) =>
  [`MainThread  8150   484.948087:     ${period} cpu-clock: `, ...frames.map((f) => `\t${f}`), ''].join('\n')

const WRITE = [
  'ffffffff81e7f079 tcp_sendmsg+0x19 ([kernel.kallsyms])',
  'ffffffff81d00000 ksys_write+0x60 ([kernel.kallsyms])',
  '7f4ea60d63d8 __GI___libc_write+0x17 (/usr/lib/x86_64-linux-gnu/libc.so.6)',
  "7f4ea6134ee2 JS:*'writeHead node:_http_server:408:19 (/tmp/perf-8150.map)",
]
const HEADER_LINES = [
  '55d0 Builtins_StringAdd_CheckNone+0x20 (/work/main/node_modules/node/bin/node)',
  "7f4e JS:*'_storeHeader node:_http_outgoing:438:22 (/tmp/perf-8150.map)",
  "7f4f JS:*' file:///work/main/src/http/plugins/security-headers.ts:149:28 (/tmp/perf-8150.map)",
]
const SECURITY_HEADERS = [
  '55d1 Builtins_StringToLowerCaseIntl+0x20 (/work/main/node_modules/node/bin/node)',
  "7f4f JS:*' file:///work/main/src/http/plugins/security-headers.ts:149:28 (/tmp/perf-8150.map)",
  "7f50 JS:*'hookIterator /work/main/node_modules/fastify/lib/hooks.js:410:23 (/tmp/perf-8150.map)",
]
const PINO = [
  "7f51 JS:*'_asJson /work/main/node_modules/pino/lib/tools.js:144:18 (/tmp/perf-8150.map)",
  "7f52 JS:*'record file:///work/main/src/http/plugins/request-context.ts:72:18 (/tmp/perf-8150.map)",
]
const GC = [
  '55d2 v8::internal::Heap::CollectGarbage+0x10 (/work/main/node_modules/node/bin/node)',
  "7f51 JS:*'_asJson /work/main/node_modules/pino/lib/tools.js:144:18 (/tmp/perf-8150.map)",
]
const PARSER = [
  '55d3 llhttp__internal__run+0x10 (/work/main/node_modules/node/bin/node)',
  '55d4 uv__read+0x315 (/work/main/node_modules/node/bin/node)',
]

describe('bench/http/perf.ts: where perf samples are charged', () => {
  it('charges a sample to its system call before any frame above it', () => {
    assert.equal(partOfSample(WRITE), 'kernel: socket write')
    assert.equal(
      partOfSample([
        'ffffffff8 vfs_read+0x1 ([kernel.kallsyms])',
        'ffffffff8 ksys_read+0x1 ([kernel.kallsyms])',
      ]),
      'kernel: socket read',
    )
    assert.equal(partOfSample(['ffffffff8 net_rx_action+0x1 ([kernel.kallsyms])']), 'kernel: other')
  })

  it('charges builtins to the innermost JavaScript frame, and names its owner', () => {
    assert.equal(partOfSample(HEADER_LINES), 'node: http response and server')
    assert.equal(partOfSample(SECURITY_HEADERS), 'plinth http/plugins/security-headers')
    assert.equal(partOfSample(PINO), 'pino')
    assert.equal(partOfSample(GC), 'garbage collector')
    assert.equal(partOfSample(PARSER), 'node: llhttp (C)')
    assert.equal(
      ownerOfFrame("7f50 JS:*'hookIterator /work/main/node_modules/fastify/lib/hooks.js:410:23 (x)"),
      'fastify core',
    )
    assert.equal(
      ownerOfFrame('55d0 Builtins_StringAdd_CheckNone+0x20 (/work/main/node_modules/node/bin/node)'),
      undefined,
    )
  })

  it('adds up the periods per part, heaviest first, and prints them per request', () => {
    const text = [
      sample(250000, ...WRITE),
      sample(250000, ...WRITE),
      sample(250000, ...SECURITY_HEADERS),
      sample(500000, ...PINO),
    ].join('\n')
    const attribution = attributePerfScript(text)
    assert.equal(attribution.totalNs, 1_250_000)
    assert.deepEqual(attribution.parts, [
      ['kernel: socket write', 500_000],
      ['pino', 500_000],
      ['plinth http/plugins/security-headers', 250_000],
    ])
    const lines = attributionLines(attribution, 100)
    assert.equal(lines[0], '  main thread: 0.00 s of CPU sampled, 12.50 us per request')
    assert.match(lines[1]!, /40\.0 %\s+5\.00 us\/request {2}kernel: socket write/)
    assert.deepEqual(attributionLines({ totalNs: 0, parts: [] }, 10), ['  (no samples)'])
  })

  it("removes only the given process's V8 code logs", () => {
    const dir = mkdtempSync(join(tmpdir(), 'bench-perf-'))
    try {
      for (const name of [
        'isolate-0x1-123-v8.log',
        'isolate-0x7f-123-v8.log',
        'isolate-0x2-1234-v8.log',
        'notes.log',
      ])
        writeFileSync(join(dir, name), '')
      removeV8Logs(123, dir)
      assert.deepEqual(readdirSync(dir).sort(), ['isolate-0x2-1234-v8.log', 'notes.log'])
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
