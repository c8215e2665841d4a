import { randomUUID } from 'node:crypto'
import { sql } from 'kysely'
import type { Logger } from 'pino'
import type { PlinthModule } from '../../src/core/module.ts'
import { encryptedColumn } from '../../src/infra/crypto/encrypted-column.ts'
import type { Keyring } from '../../src/infra/crypto/keyring.ts'
import { createKeyStore, type KeyStore } from '../../src/modules/keys/key-store.ts'
import { masterKeysFrom } from '../../src/modules/keys/master-keys.ts'
import { testLogger } from './run-logs.ts'
import type { TestPlinth } from './test-plinth.ts'

/** The encrypted column of the test module: `test_secrets.secret`, AAD `test_secrets.secret:<id>`. */
export const secretColumn = encryptedColumn({
  table: 'test_secrets',
  idColumn: 'id',
  column: 'secret',
  keyIdColumn: 'key_id',
})

/**
 * A module owning one table of encrypted values (migration 9301), declared in the registry the way
 * a real module declares its columns: what rotation tests write to and read back.
 */
export const secretsModule: PlinthModule = {
  name: 'test-secrets',
  migrations: {
    '9301-test-secrets': {
      async up(db) {
        await db.schema
          .createTable('test_secrets')
          .addColumn('id', 'uuid', (c) => c.primaryKey())
          .addColumn('secret', 'text')
          .addColumn('key_id', 'text')
          .execute()
      },
      async down(db) {
        await db.schema.dropTable('test_secrets').execute()
      },
    },
  },
  encryptedColumns: [secretColumn],
}

type Handle = Pick<TestPlinth, 'db' | 'context'>

/** Encrypts `plaintext` for row `id` with `keyring` (the plinth's by default) and upserts it. */
export async function writeSecret(
  plinth: Handle,
  plaintext: string,
  id: string = randomUUID(),
  keyring: Keyring = plinth.context.keyring,
): Promise<string> {
  const value = keyring.encrypt(plaintext, secretColumn.aad(id))
  await sql`insert into test_secrets (id, secret, key_id) values (${id}, ${value}, ${keyring.keyIdOf(value)})
            on conflict (id) do update set secret = excluded.secret, key_id = excluded.key_id`.execute(
    plinth.db.kysely,
  )
  return id
}

/** Every row of the test table: id, ciphertext and recorded key id. */
export async function secretRows(plinth: Handle): Promise<{ id: string; secret: string; key_id: string }[]> {
  const { rows } = await sql<{ id: string; secret: string; key_id: string }>`
    select id::text as id, secret, key_id from test_secrets order by id`.execute(plinth.db.kysely)
  return rows
}

const quiet: Logger = testLogger()

/** The key store a `plinth keys` command would use against this plinth's database and master key. */
export function keyStoreOf(plinth: Pick<TestPlinth, 'db' | 'config'>, logger: Logger = quiet): KeyStore {
  return createKeyStore(plinth.db.kysely, masterKeysFrom(plinth.config, logger))
}
