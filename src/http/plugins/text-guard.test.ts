import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { isStorableText, toStorableText, unstorableFields } from './text-guard.ts'

describe('text guard', () => {
  it('tells storable text from NUL and unpaired surrogates, paired ones (emoji) being fine', () => {
    for (const ok of ['', 'plain', '\u{1F600}', '\u0001\uFEFF\uFFFF', 'e\u0301'])
      assert.ok(isStorableText(ok), ok)
    for (const bad of ['\u0000', 'a\u0000', '\uD800', 'x\uDFFF', '\uDC00\uD800'])
      assert.ok(!isStorableText(bad))
    assert.equal(toStorableText('a\u0000b\uD800c\u{1F600}'), 'a\uFFFDb\uFFFDc\u{1F600}')
  })

  it('names every bad value and key at any depth, and walks a deeply nested body without recursion', () => {
    assert.deepEqual(
      unstorableFields('body', { a: ['ok', 'b\u0000'], 'k\uD800': 1, n: { m: { o: '\uDC00' } } })
        .map((e) => e.field)
        .sort(),
      ['a.1', 'k\uFFFD', 'n.m.o'],
    )
    let deep: unknown = ['\u0000']
    for (let i = 0; i < 200_000; i++) deep = [deep]
    assert.equal(unstorableFields('body', deep).length, 1)
  })

  it('stops at the error cap and leaves Buffers (a route parser of its own) alone', () => {
    assert.equal(
      unstorableFields(
        'body',
        Array.from({ length: 100 }, () => '\u0000'),
        20,
      ).length,
      20,
    )
    assert.deepEqual(unstorableFields('body', Buffer.from([0, 0xed, 0xa0, 0x80])), [])
  })
})
