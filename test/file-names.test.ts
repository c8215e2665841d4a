import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { contentDisposition, sanitiseFileName } from '../src/modules/files/file-name.ts'

const bytes = (s: string) => Buffer.byteLength(s)

describe('sanitiseFileName', () => {
  it('keeps the last path segment only, whatever the separator', () => {
    assert.equal(sanitiseFileName('../../etc/passwd'), 'passwd')
    assert.equal(sanitiseFileName('C:\\Users\\ada\\report.pdf'), 'report.pdf')
    assert.equal(sanitiseFileName('folder/'), 'file', 'a trailing separator leaves no name')
  })

  it('removes control, bidirectional and invisible characters, and replaces reserved ones', () => {
    assert.equal(sanitiseFileName('invoice\u202Efdp.exe'), 'invoicefdp.exe')
    assert.equal(sanitiseFileName('a\u0000b\u001fc\u007f\u009fd.txt'), 'abcd.txt')
    assert.equal(sanitiseFileName('zero\u200Bwidth\uFEFF.txt'), 'zerowidth.txt')
    assert.equal(sanitiseFileName('what? <now>: "yes" | no*.txt'), 'what_ _now__ _yes_ _ no_.txt')
  })

  it('drops leading dots and spaces and trailing ones, NFC-normalises, and names an empty result `file`', () => {
    assert.equal(sanitiseFileName('  ..hidden.txt. '), 'hidden.txt')
    assert.equal(sanitiseFileName('e\u0301te\u0301.txt'), '\u00e9t\u00e9.txt')
    for (const empty of [undefined, '', '...', '\u202E\u200B', '   '])
      assert.equal(sanitiseFileName(empty), 'file')
  })

  it('cuts a long name to 200 UTF-8 bytes, keeping a short extension', () => {
    const long = `${'a'.repeat(300)}.pdf`
    const cut = sanitiseFileName(long)
    assert.equal(bytes(cut), 200)
    assert.ok(cut.endsWith('.pdf'))

    // Multi-byte characters are never split.
    const wide = sanitiseFileName(`${'é'.repeat(150)}.jpeg`)
    assert.ok(bytes(wide) <= 200)
    assert.ok(wide.endsWith('.jpeg'))
    assert.match(wide, /^é+\.jpeg$/u)

    // No extension, or an "extension" too long to be one: the name is simply cut.
    assert.equal(sanitiseFileName('b'.repeat(250)), 'b'.repeat(200))
    const odd = sanitiseFileName(`report.${'x'.repeat(250)}`)
    assert.equal(odd, `report.${'x'.repeat(193)}`)
  })

  it('leaves a name of exactly 200 bytes as it is', () => {
    const exact = `${'c'.repeat(196)}.txt`
    assert.equal(sanitiseFileName(exact), exact)
  })
})

describe('contentDisposition', () => {
  it('gives an ASCII fallback and the UTF-8 name, with quotes, backslashes and percent signs neutralised', () => {
    assert.equal(
      contentDisposition('attachment', 'Résumé (final) 100%.pdf'),
      `attachment; filename="R_sum_ (final) 100_.pdf"; filename*=UTF-8''R%C3%A9sum%C3%A9%20%28final%29%20100%25.pdf`,
    )
    assert.equal(
      contentDisposition('inline', "it's*.png"),
      `inline; filename="it's*.png"; filename*=UTF-8''it%27s%2A.png`,
    )
  })
})
