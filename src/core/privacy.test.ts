import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  createPersonalDataRegistry,
  type PersonalDataTable,
  PSEUDONYM_PREFIX,
  pseudonymFor,
} from './privacy.ts'

const notes: PersonalDataTable = {
  table: 'notes',
  description: 'Notes people write',
  match: { column: 'author_id', holds: 'user-id' },
  columns: [
    { name: 'author_id', export: 'value' },
    { name: 'body', export: 'value' },
    { name: 'ip', export: 'presence', note: 'where it was written from: said, not shown' },
  ],
  context: ['created_at'],
  erase: { action: 'set-null', columns: ['ip'] },
}

const registry = (...entries: PersonalDataTable[]) =>
  createPersonalDataRegistry([{ name: 'notes', personalData: entries }])

describe('the personal data registry', () => {
  it('keeps valid declarations, frozen, each with its module; modules without any add nothing', () => {
    const all = createPersonalDataRegistry([
      { name: 'plain' },
      {
        name: 'notes',
        personalData: [notes, { ...notes, table: 'archive.notes', erase: { action: 'delete' } }],
      },
    ])
    assert.deepEqual(
      all.map((e) => [e.module, e.table]),
      [
        ['notes', 'notes'],
        ['notes', 'archive.notes'],
      ],
    )
    assert.ok(Object.isFrozen(all) && Object.isFrozen(all[0]))
  })

  it('refuses each kind of bad declaration, naming the entry and what is wrong', () => {
    const custom = { custom: 'rows the module finds itself' }
    const cases: [PersonalDataTable, RegExp][] = [
      [{ ...notes, table: 'Notes' }, /personal data notes\/Notes: "Notes" is not a lower-case table name/],
      [
        { ...notes, columns: [...notes.columns, { name: 'Body2', export: 'value' }] },
        /"Body2" is not a lower-case column name/,
      ],
      [{ ...notes, context: ['created-at'] }, /"created-at" is not a lower-case column name/],
      [{ ...notes, columns: [] }, /declares no column/],
      [
        { ...notes, columns: [...notes.columns, { name: 'body', export: 'value' }] },
        /a column is declared twice/,
      ],
      [
        { ...notes, match: { column: 'owner_id', holds: 'user-id' } },
        /the match column owner_id must be one of its columns/,
      ],
      [{ ...notes, match: custom, erase: { action: 'delete' } }, /a custom match needs exportRows/],
      [
        { ...notes, match: custom, exportRows: async () => [], erase: { action: 'delete' } },
        /a custom match needs a custom erasure/,
      ],
      [
        { ...notes, columns: [...notes.columns, { name: 'token', export: 'omit', note: '  ' }] },
        /token \(omit\) needs a note saying why/,
      ],
      [{ ...notes, context: ['body'] }, /body is both personal and context/],
      [
        { ...notes, erase: { action: 'set-null', columns: ['phone'] } },
        /set-null column phone is not declared/,
      ],
    ]
    for (const [entry, message] of cases)
      assert.throws(() => registry(entry), { name: 'TypeError', message }, String(message))
  })

  it('accepts a custom match with its own export and erasure', () => {
    const [entry] = registry({
      ...notes,
      match: { custom: 'shared notes' },
      exportRows: async () => [],
      erase: { action: 'custom', describe: 'unshares them', run: async () => ({ rows: 0 }) },
    })
    assert.equal(entry?.module, 'notes')
  })

  it('refuses the same table and match declared twice, even by two modules', () => {
    assert.throws(
      () =>
        createPersonalDataRegistry([
          { name: 'a', personalData: [notes] },
          { name: 'b', personalData: [notes] },
        ]),
      { name: 'TypeError', message: /personal data notes\.author_id is declared twice/ },
    )
  })
})

describe('pseudonymFor', () => {
  it('is stable per person and key, differs by person and key, and never holds the id', () => {
    const a = pseudonymFor('user-1', 'k1')
    assert.equal(a, pseudonymFor('user-1', 'k1'))
    assert.notEqual(a, pseudonymFor('user-2', 'k1'))
    assert.notEqual(a, pseudonymFor('user-1', 'k2'))
    assert.match(a, new RegExp(`^${PSEUDONYM_PREFIX}[0-9a-f]{32}$`))
    assert.ok(!a.includes('user-1'))
    // Without PLINTH_SECRET_KEY (development) a fixed key still gives stable pseudonyms.
    assert.equal(pseudonymFor('user-1', undefined), pseudonymFor('user-1', undefined))
    assert.notEqual(pseudonymFor('user-1', undefined), a)
  })
})
