import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { createS3Client, isS3NotFound, keyPrefix, S3_MAX_ATTEMPTS } from './client.ts'

describe('createS3Client', () => {
  it('builds a path-style client for an endpoint with the given keys and the retry budget', async () => {
    const client = createS3Client({
      endpoint: 'http://127.0.0.1:9000',
      region: 'eu-west-3',
      accessKeyId: 'id',
      secretAccessKey: 'secret',
      forcePathStyle: true,
    })
    try {
      assert.equal(await client.config.region(), 'eu-west-3')
      assert.equal(client.config.forcePathStyle, true)
      assert.equal(await client.config.maxAttempts(), S3_MAX_ATTEMPTS)
      const endpoint = await client.config.endpoint?.()
      assert.equal(endpoint?.hostname, '127.0.0.1')
      assert.equal(endpoint?.port, 9000)
      const credentials = await client.config.credentials()
      assert.equal(credentials.accessKeyId, 'id')
      assert.equal(credentials.secretAccessKey, 'secret')
    } finally {
      client.destroy()
    }
  })

  it('leaves the endpoint to AWS when none is given', () => {
    const client = createS3Client({ region: 'us-east-1', forcePathStyle: false })
    try {
      assert.equal(client.config.endpoint, undefined)
      assert.equal(client.config.forcePathStyle, false)
    } finally {
      client.destroy()
    }
  })
})

describe('keyPrefix', () => {
  it('ends a prefix with one slash, and keeps the bucket root empty', () => {
    assert.equal(keyPrefix('plinth'), 'plinth/')
    assert.equal(keyPrefix('plinth/'), 'plinth/')
    assert.equal(keyPrefix('a/b'), 'a/b/')
    assert.equal(keyPrefix(''), '')
  })
})

describe('isS3NotFound', () => {
  it('knows a missing object by its error name or its 404', () => {
    assert.equal(isS3NotFound({ name: 'NoSuchKey' }), true)
    assert.equal(isS3NotFound({ name: 'NotFound' }), true)
    assert.equal(isS3NotFound({ name: 'Unknown', $metadata: { httpStatusCode: 404 } }), true)
    assert.equal(isS3NotFound({ name: 'AccessDenied', $metadata: { httpStatusCode: 403 } }), false)
    assert.equal(isS3NotFound(new Error('socket hang up')), false)
  })
})
