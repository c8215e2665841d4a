/**
 * The readers resume at any row boundary: reading from the offset and line a checkpoint stores
 * after row k gives exactly the rows after k, with the same lines, in every format.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { type ImportFormat, readRows, type SourceRow } from '../src/modules/imports/readers.ts'

const dir = mkdtempSync(join(tmpdir(), 'plinth-readers-'))
after(() => rmSync(dir, { recursive: true, force: true }))

async function all(
  path: string,
  format: ImportFormat,
  from = { offset: 0, line: 0 },
  header?: readonly string[],
) {
  const out: SourceRow[] = []
  let seen: readonly string[] | undefined = header
  for await (const r of readRows(path, format, { ...from, header }, (h) => (seen = h))) out.push(r)
  return { rows: out, header: seen }
}

const rows = Array.from({ length: 9 }, (_, i) => ({
  id: `r${i}`,
  text: i % 3 === 0 ? `multi\nline "quoted" ${i}` : `é ${i}`,
  n: i,
}))
const files: [ImportFormat, string][] = [
  ['ndjson', `\ufeff${rows.map((r) => JSON.stringify(r)).join('\r\n')}\r\n\n`],
  ['json', JSON.stringify([...rows, 'x', 7], null, 2)],
  ['csv', `id,text,n\n${rows.map((r) => `${r.id},"${r.text.replaceAll('"', '""')}",${r.n}`).join('\n')}\n`],
]

describe('import readers', () => {
  for (const [format, content] of files)
    it(`${format}: resuming after any row gives the rest, with the same lines`, async () => {
      const path = join(dir, `f.${format}`)
      writeFileSync(path, content)
      const full = await all(path, format)
      assert.ok(full.rows.length >= rows.length)
      const values = full.rows.filter((r) => r.value)
      assert.deepEqual(
        values.map((r) => String(r.value!.id)),
        rows.map((r) => r.id),
      )
      if (format !== 'csv') assert.deepEqual(values[3]!.value, rows[3])
      else assert.equal(values[3]!.value!.text, rows[3]!.text)
      // Every row starts on the line the file puts it on.
      const lines = content.replace(/^\ufeff/, '').split('\n')
      // (For a JSON array: the line of the row's opening brace.)
      for (const r of values)
        assert.match(lines[r.line - 1]!, format === 'json' ? /^\s*\{$/ : new RegExp(String(r.value!.id)))
      for (let k = 0; k < full.rows.length - 1; k++) {
        const at = full.rows[k]!
        const rest = await all(path, format, { offset: at.endOffset, line: at.endLine }, full.header)
        assert.deepEqual(rest.rows, full.rows.slice(k + 1), `resumed after row ${k}`)
      }
    })
})
