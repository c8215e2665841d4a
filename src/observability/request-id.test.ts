import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { pickRequestId } from './request-id.ts'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

describe('pickRequestId', () => {
  it('echoes a safe caller id: UUIDs, ULIDs, trace ids, up to 128 characters', () => {
    for (const id of [
      '0f8fad5b-d9cb-469f-a165-70867728950e',
      '01ARZ3NDEKTSV4RRFFQ69G5FAV',
      'svc:abc.1_2-3',
      'a'.repeat(128),
    ])
      assert.equal(pickRequestId(id), id)
  })

  it('takes the first of repeated headers', () => {
    assert.equal(pickRequestId(['first-id', 'second-id']), 'first-id')
  })

  it('makes a new UUID when the header is missing, empty, too long or carries unsafe characters', () => {
    for (const header of [undefined, '', 'a'.repeat(129), 'id with spaces', 'x\ninjected: 1', '<script>', []])
      assert.match(pickRequestId(header), UUID, JSON.stringify(header))
    assert.notEqual(pickRequestId(undefined), pickRequestId(undefined))
  })
})
