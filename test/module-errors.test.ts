/**
 * Application modules' own error codes (`errors` of `defineModule`): served as
 * application/problem+json with the declared status, title and detail, listed in the application's
 * OpenAPI document and error reference (`plinth errors`), and refused at boot when they clash.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { useApplicationModules } from '../src/app/create-plinth.ts'
import { defineModule, Type } from '../src/index.ts'
import { runCli } from '../src/main.ts'
import { renderErrorDocs } from '../src/shared/error-docs.ts'
import { moduleErrorCodes } from '../src/shared/errors.ts'
import { createTestPlinth, type TestPlinth } from '../src/testing/index.ts'

const tickets = defineModule({
  name: 'tickets',
  permissions: { 'tickets:write': { roles: ['admin', 'member'] } },
  errors: {
    TICKETS_LOCKED: {
      status: 409,
      title: 'Ticket Locked',
      detail: 'The ticket is locked by another agent; retry once they release it.',
    },
    TICKETS_QUOTA_EXCEEDED: {
      status: 429,
      title: 'Ticket Quota Exceeded',
      detail: 'You opened as many tickets today as your plan allows; close some or wait until tomorrow.',
    },
  },
  routes(app, ctx) {
    app.post(
      '/:id/close',
      {
        config: { permission: 'tickets:write', errors: ['TICKETS_LOCKED', 'PLINTH_RESOURCE_NOT_FOUND'] },
        schema: {
          params: Type.Object({ id: Type.String() }),
          body: Type.Object({ reason: Type.Optional(Type.String()) }),
        },
      },
      async (request) => {
        if (request.params.id === 'locked') throw ctx.error('TICKETS_LOCKED')
        if (request.params.id === 'held')
          throw ctx.error('TICKETS_LOCKED', 'Ticket held is locked by agent 7 until 10:00.', {
            headers: { 'retry-after': '60' },
          })
        if (request.params.id === 'typo') throw ctx.error('TICKETS_LOKCED')
        return { closed: request.params.id }
      },
    )
    app.post(
      '/',
      { config: { permission: 'tickets:write', errors: ['TICKETS_QUOTA_EXCEEDED'] } },
      async () => {
        throw ctx.error('TICKETS_QUOTA_EXCEEDED', undefined, {
          errors: [{ in: 'body', field: '', message: 'quota of 3 reached' }],
        })
      },
    )
  },
})

describe("a module's own error codes", () => {
  let t: TestPlinth
  before(async () => {
    t = await createTestPlinth({ modules: [tickets] })
  })
  after(() => t?.close())

  it('are answered as problem+json with the declared status, title and detail', async () => {
    const member = await t.createUser({ role: 'member' })
    const locked = await member.inject({ method: 'POST', url: '/api/v1/tickets/locked/close', payload: {} })
    assert.equal(locked.statusCode, 409)
    assert.match(String(locked.headers['content-type']), /^application\/problem\+json/)
    const body = locked.json()
    assert.equal(body.code, 'TICKETS_LOCKED')
    assert.equal(body.type, 'urn:plinth:error:TICKETS_LOCKED')
    assert.equal(body.title, 'Ticket Locked')
    assert.equal(body.status, 409)
    assert.equal(body.detail, 'The ticket is locked by another agent; retry once they release it.')
    assert.equal(body.instance, '/api/v1/tickets/locked/close')
    assert.equal(body.requestId, locked.headers['x-request-id'])

    const held = await member.inject({ method: 'POST', url: '/api/v1/tickets/held/close', payload: {} })
    assert.equal(held.statusCode, 409)
    assert.equal(held.json().detail, 'Ticket held is locked by agent 7 until 10:00.')
    assert.equal(held.headers['retry-after'], '60')

    const quota = await member.inject({ method: 'POST', url: '/api/v1/tickets', payload: {} })
    assert.equal(quota.statusCode, 429)
    assert.equal(quota.json().code, 'TICKETS_QUOTA_EXCEEDED')
    assert.deepEqual(quota.json().errors, [{ in: 'body', field: '', message: 'quota of 3 reached' }])

    assert.equal(
      (await member.inject({ method: 'POST', url: '/api/v1/tickets/7/close', payload: {} })).json().closed,
      '7',
    )
  })

  it('refuse a code the module did not declare as a programming error (500, nothing leaked)', async () => {
    const member = await t.createUser({ role: 'member' })
    const typo = await member.inject({ method: 'POST', url: '/api/v1/tickets/typo/close', payload: {} })
    assert.equal(typo.statusCode, 500)
    assert.equal(typo.json().code, 'PLINTH_INTERNAL')
    assert.doesNotMatch(typo.body, /TICKETS_LOKCED/)
  })

  it("are in the application's OpenAPI document: on the routes that list them, and all at the top", async () => {
    const doc = (await t.inject('/api/openapi.json')).json()
    const close = doc.paths['/api/v1/tickets/{id}/close'].post
    const conflict = close.responses['409']
    assert.match(conflict.description, /`TICKETS_LOCKED`: Ticket Locked/)
    const codes = conflict.content['application/problem+json'].schema.allOf[1].properties.code.enum
    assert.ok(codes.includes('TICKETS_LOCKED'), JSON.stringify(codes))
    assert.ok(close.responses['404'].description.includes('PLINTH_RESOURCE_NOT_FOUND'))
    const create = doc.paths['/api/v1/tickets'].post
    assert.ok(create.responses['429'].description.includes('`TICKETS_QUOTA_EXCEEDED`: Ticket Quota Exceeded'))
    assert.ok(create.responses['429'].description.includes('PLINTH_HTTP_RATE_LIMITED'))
    const listed = doc['x-plinth-module-errors']
    assert.deepEqual(
      listed.filter((e: { module: string }) => e.module === 'tickets'),
      [
        {
          code: 'TICKETS_LOCKED',
          module: 'tickets',
          status: 409,
          title: 'Ticket Locked',
          detail: 'The ticket is locked by another agent; retry once they release it.',
        },
        {
          code: 'TICKETS_QUOTA_EXCEEDED',
          module: 'tickets',
          status: 429,
          title: 'Ticket Quota Exceeded',
          detail: 'You opened as many tickets today as your plan allows; close some or wait until tomorrow.',
        },
      ],
    )
  })

  it("are in the application's error reference (plinth errors), after Plinth's own", async () => {
    const markdown = renderErrorDocs(moduleErrorCodes())
    assert.ok(markdown.indexOf('PLINTH_HTTP_NOT_FOUND') < markdown.indexOf('## Module `tickets`'))
    assert.match(markdown, /\| `TICKETS_LOCKED` \| 409 \| Ticket Locked \| The ticket is locked/)
    // Plinth's own reference (docs/errors.md) is unchanged by an application's codes.
    assert.doesNotMatch(renderErrorDocs(), /TICKETS_/)

    useApplicationModules([tickets])
    try {
      let out = ''
      const io = { out: (s: string) => (out += `${s}\n`), err: () => {} }
      assert.equal(await runCli(['errors', '--json'], io), 0)
      const all = JSON.parse(out) as { code: string; module: string | null; status: number }[]
      assert.deepEqual(
        all.filter((e) => e.module === 'tickets').map((e) => [e.code, e.status]),
        [
          ['TICKETS_LOCKED', 409],
          ['TICKETS_QUOTA_EXCEEDED', 429],
        ],
      )
      assert.equal(all.find((e) => e.code === 'PLINTH_HTTP_NOT_FOUND')?.module, null)
      out = ''
      assert.equal(await runCli(['errors'], io), 0)
      assert.match(out, /## Module `tickets`/)
    } finally {
      useApplicationModules([])
    }
  })
})

describe('module error codes that clash stop the boot', () => {
  const entry = { status: 409, title: 'Conflict Of Mine', detail: 'Something of mine conflicts; fix it.' }
  const cases: { what: string; modules: Parameters<typeof defineModule>[0][]; message: RegExp }[] = [
    {
      what: 'a built-in code',
      modules: [{ name: 'copycat', errors: { PLINTH_AUTH_FORBIDDEN: entry } }],
      message: /module "copycat" declares the error code "PLINTH_AUTH_FORBIDDEN", which is built in/,
    },
    {
      what: "a new code in Plinth's namespace",
      modules: [{ name: 'squatter', errors: { PLINTH_SQUATTER_THING: entry } }],
      message: /codes starting with PLINTH_ are Plinth's own/,
    },
    {
      what: 'a malformed code',
      modules: [{ name: 'lowly', errors: { 'lowly-broken': entry } }],
      message: /upper-case words joined by underscores/,
    },
    {
      what: 'a status that is not an error',
      modules: [{ name: 'happy', errors: { HAPPY_DONE: { ...entry, status: 200 } } }],
      message: /status 200: an error status is 400–599/,
    },
    {
      what: 'a code without its documentation',
      modules: [{ name: 'terse', errors: { TERSE_FAILED: { ...entry, detail: ' ' } } }],
      message: /without a detail/,
    },
    {
      what: 'a code two modules declare',
      modules: [
        { name: 'first-one', errors: { SHARED_CONFLICT: entry } },
        { name: 'second-one', errors: { SHARED_CONFLICT: entry } },
      ],
      message:
        /module "second-one" declares the error code "SHARED_CONFLICT", which module "first-one" declares too/,
    },
    {
      what: "a code another module declared in this process (tickets', above)",
      modules: [{ name: 'late', errors: { TICKETS_LOCKED: entry } }],
      message: /which module "tickets" declares too/,
    },
    {
      what: 'a route listing a code nobody declared',
      modules: [
        {
          name: 'listy',
          routes(app) {
            app.get('/', { config: { public: true, errors: ['LISTY_UNDECLARED'] } }, async () => ({}))
          },
        },
      ],
      message: /route GET \/api\/v1\/listy\/? lists the error code "LISTY_UNDECLARED"/,
    },
  ]
  for (const c of cases) {
    it(`refuses ${c.what}`, async () => {
      await assert.rejects(createTestPlinth({ modules: c.modules.map((m) => defineModule(m)) }), c.message)
    })
  }
})
