import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { type Keyring, keyringFromKeys } from './keyring.ts'
import { createReloadingKeyring, type ReloadingKeyringOptions } from './reloading-keyring.ts'

const AAD = 'test.secret:1'

/** A reloading keyring over a mutable "source", counting loads, with a controllable clock. */
function setup(initial: Keyring, overrides: Partial<ReloadingKeyringOptions> = {}) {
  const logged: { level: string; msg: string; obj: object }[] = []
  const state = { source: undefined as Keyring | undefined, loads: 0, fail: false, clock: 0 }
  const ring = createReloadingKeyring({
    initial,
    async load() {
      state.loads++
      await sleep(1)
      if (state.fail) throw new Error('database unavailable')
      return state.source
    },
    logger: {
      info: (obj: object, msg: string) => logged.push({ level: 'info', obj, msg }),
      warn: (obj: object, msg: string) => logged.push({ level: 'warn', obj, msg }),
    } as unknown as ReloadingKeyringOptions['logger'],
    now: () => state.clock,
    ...overrides,
  })
  return { ring, state, logged }
}

describe('reloading keyring', () => {
  const k1 = randomBytes(32)
  const k2 = randomBytes(32)
  const legacy = keyringFromKeys([k1])
  const rotated = keyringFromKeys([k2, k1])

  it('answers with the initial keys until a load succeeds, then with the loaded ones', async () => {
    const { ring, state, logged } = setup(legacy)
    assert.equal(ring.loaded, false)
    assert.equal(ring.keyId, legacy.keyId)
    const before = ring.encrypt('x', AAD)
    await ring.refresh() // the source does not exist yet: nothing changes
    assert.equal(ring.loaded, false)
    state.source = legacy
    await ring.refresh()
    assert.equal(ring.loaded, true)
    assert.equal(logged.length, 0, 'the first load is not a rotation')
    state.source = rotated
    await ring.refresh()
    assert.equal(ring.keyId, rotated.keyId)
    assert.deepEqual(ring.keyIds, rotated.keyIds)
    assert.equal(ring.keyIdOf(ring.encrypt('y', AAD)), rotated.keyId)
    assert.equal(ring.decryptString(before, AAD), 'x')
    assert.equal(logged[0]?.msg, 'encryption keys reloaded: new active key')
  })

  it('shares one load between concurrent refreshes', async () => {
    const { ring, state } = setup(legacy)
    state.source = rotated
    await Promise.all([ring.refresh(), ring.refresh(), ring.refresh()])
    assert.equal(state.loads, 1)
  })

  it('reloads once when an async read names a key it lacks (another replica rotated), at most once per interval', async () => {
    const { ring, state } = setup(legacy)
    state.source = legacy
    await ring.refresh()
    const fromElsewhere = rotated.encrypt('new', AAD)
    state.source = rotated
    state.loads = 0
    assert.equal(await ring.decryptStringAsync(fromElsewhere, AAD), 'new')
    assert.equal(state.loads, 1)
    // A known key never reloads.
    assert.equal(await ring.decryptStringAsync(fromElsewhere, AAD), 'new')
    assert.equal(state.loads, 1)

    // A value naming a key nobody has reloads, then fails without reloading for a second.
    const nobody = keyringFromKeys([randomBytes(32)]).encrypt('?', AAD)
    state.clock = 10_000
    await assert.rejects(ring.decryptAsync(nobody, AAD), { code: 'PLINTH_CRYPTO_DECRYPT_FAILED' })
    await assert.rejects(ring.decryptAsync(nobody, AAD), { code: 'PLINTH_CRYPTO_DECRYPT_FAILED' })
    assert.equal(state.loads, 2)
    state.clock = 11_000
    await assert.rejects(ring.decryptAsync(nobody, AAD), { code: 'PLINTH_CRYPTO_DECRYPT_FAILED' })
    assert.equal(state.loads, 3)
    // Another unknown key id is looked for at once (it may be a rotation).
    const another = keyringFromKeys([randomBytes(32)]).encrypt('?', AAD)
    await assert.rejects(ring.decryptAsync(another, AAD), { code: 'PLINTH_CRYPTO_DECRYPT_FAILED' })
    assert.equal(state.loads, 4)
    // Not a keyring value at all: nothing to reload for.
    await assert.rejects(ring.decryptAsync('plain text', AAD), { code: 'PLINTH_CRYPTO_DECRYPT_FAILED' })
    assert.equal(state.loads, 4)
  })

  it('a synchronous read of an unknown key fails now and starts the reload that serves its retry', async () => {
    const { ring, state } = setup(legacy)
    const fromElsewhere = rotated.encrypt('new', AAD)
    state.source = rotated
    assert.throws(() => ring.decryptString(fromElsewhere, AAD), { code: 'PLINTH_CRYPTO_DECRYPT_FAILED' })
    await ring.refresh() // joins the reload already under way
    assert.equal(state.loads, 1)
    assert.equal(ring.decryptString(fromElsewhere, AAD), 'new')
    assert.deepEqual(ring.decrypt(fromElsewhere, AAD), Buffer.from('new'))
  })

  it('keeps its keys when a reload fails: refresh rejects, reads and the timer log a warning', async () => {
    const { ring, state, logged } = setup(legacy)
    state.source = legacy
    await ring.refresh()
    state.fail = true
    await assert.rejects(ring.refresh(), /database unavailable/)
    assert.equal(ring.keyId, legacy.keyId)
    const fromElsewhere = rotated.encrypt('new', AAD)
    await assert.rejects(ring.decryptAsync(fromElsewhere, AAD), { code: 'PLINTH_CRYPTO_DECRYPT_FAILED' })
    state.clock = 5000
    assert.throws(() => ring.decrypt(fromElsewhere, AAD), { code: 'PLINTH_CRYPTO_DECRYPT_FAILED' })
    await sleep(10)
    ring.start(20)
    ring.start(20) // idempotent
    await sleep(70)
    ring.stop()
    const warnings = logged.filter((l) => l.level === 'warn')
    assert.ok(warnings.length >= 3, `expected warnings, got ${JSON.stringify(logged)}`)
    assert.ok(warnings.every((w) => w.msg === 'could not reload encryption keys; keeping the loaded ones'))
  })

  it('reloads periodically once started, and stops when told', async () => {
    const { ring, state } = setup(legacy)
    state.source = legacy
    ring.start(15)
    await sleep(60)
    assert.ok(state.loads >= 2, `loads: ${state.loads}`)
    state.source = rotated
    await sleep(40)
    assert.equal(ring.keyId, rotated.keyId)
    ring.stop()
    ring.stop()
    const loads = state.loads
    await sleep(50)
    assert.equal(state.loads, loads)
  })
})
