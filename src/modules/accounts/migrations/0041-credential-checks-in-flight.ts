import type { Kysely } from 'kysely'

/**
 * Checks of a password or second factor that are running (reserved, not yet settled) are counted
 * apart from failures: `checks_in_flight`, valid until `checks_in_flight_until` (a lease, so that
 * checks abandoned by a crashed process stop counting). A right password is never counted as a
 * failure, not even for the length of its check. See credential-attempts.ts and decision 0041.
 */
export default {
  // biome-ignore lint/suspicious/noExplicitAny: migrations are independent of the current table types
  async up(db: Kysely<any>) {
    await db.schema
      .alterTable('users')
      .addColumn('checks_in_flight', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('checks_in_flight_until', 'timestamptz')
      .execute()
  },
  // biome-ignore lint/suspicious/noExplicitAny: see above
  async down(db: Kysely<any>) {
    await db.schema
      .alterTable('users')
      .dropColumn('checks_in_flight_until')
      .dropColumn('checks_in_flight')
      .execute()
  },
}
