import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { createPlinth } from '../src/app/create-plinth.ts'
import { builtinModules } from '../src/app/modules.ts'
import type { Mailer, MailMessage } from '../src/core/mail.ts'
import type { PlinthModule } from '../src/core/module.ts'
import { PASSWORD, signUp, uniqueEmail } from './helpers/accounts.ts'
import { testConfig } from './helpers/test-config.ts'
import { waitFor } from './helpers/wait-for.ts'

/** A third-party mail module: keeps messages in memory instead of SMTP and `mail_outbox`. */
function memoryMailModule(name = 'memory-mail') {
  const sent: MailMessage[] = []
  const seen: { keys: string[] } = { keys: [] }
  let closed = 0
  let instance: Mailer | undefined
  const module: PlinthModule = {
    name,
    provides: {
      mailer(ctx) {
        seen.keys = Object.keys(ctx)
        const mailer: Mailer = {
          canDeliver: true,
          async send(message) {
            sent.push(message)
            return { id: String(sent.length), delivered: 'outbox' }
          },
          async close() {
            closed++
          },
        }
        instance = mailer
        return { value: mailer, close: () => mailer.close() }
      },
    },
  }
  return { module, sent, seen, closed: () => closed, instance: () => instance }
}

const withoutMail = builtinModules.filter((m) => m.name !== 'mail')

describe('services the modules provide (ctx.audit, ctx.mailer, ctx.jobs…)', () => {
  it('a module that provides the mailer in place of the mail module gets the mail every module sends', async () => {
    const mail = memoryMailModule()
    const plinth = await createPlinth({
      config: testConfig({ PLINTH_SIGNUP_MODE: 'open' }),
      modules: [...withoutMail, mail.module],
    })
    try {
      await plinth.prepare()
      assert.equal(plinth.context.mailer, mail.instance())
      // built in dependency order: the mailer sees the adapters, the audit writer and the keyring, not the job engine
      for (const key of ['config', 'db', 'logger', 'audit', 'keyring', 'encryptedColumns'])
        assert.ok(mail.seen.keys.includes(key), `the mailer's factory saw ${key}`)
      for (const key of ['jobs', 'schedules', 'events', 'users'])
        assert.ok(!mail.seen.keys.includes(key), `the mailer's factory did not see ${key}`)

      const email = uniqueEmail('provided')
      await signUp(plinth.app, email, PASSWORD)
      const res = await plinth.app.inject({
        method: 'POST',
        url: '/api/v1/auth/password-reset',
        payload: { email },
      })
      assert.equal(res.statusCode, 202, res.body)
      const message = await waitFor('the reset mail', () => mail.sent.find((m) => m.to === email))
      assert.equal(message.category, 'password-reset')
    } finally {
      await plinth.shutdown()
    }
    assert.equal(mail.closed(), 1, 'closed once at shutdown')
  })

  it('a second module providing the same service stops the boot, naming both', async () => {
    const mail = memoryMailModule('second-mail')
    await assert.rejects(createPlinth({ config: testConfig(), modules: [...builtinModules, mail.module] }), {
      message: /Modules "mail" and "second-mail" all provide mailer \(ctx\.mailer\); exactly one may/,
    })
  })

  it('a service no module provides stops the boot, naming it', async () => {
    await assert.rejects(createPlinth({ config: testConfig(), modules: withoutMail }), {
      message: /No module provides mailer \(ctx\.mailer\)/,
    })
  })

  it('when a provider fails, the services built before it are closed and the boot stops', async () => {
    const mail = memoryMailModule()
    const failing: PlinthModule = {
      name: 'failing-events',
      provides: {
        events() {
          throw new Error('the event bus cannot start')
        },
      },
    }
    await assert.rejects(
      createPlinth({
        config: testConfig(),
        modules: [...withoutMail.filter((m) => m.name !== 'webhooks'), mail.module, failing],
      }),
      { message: 'the event bus cannot start' },
    )
    assert.equal(mail.closed(), 1)
  })
})
