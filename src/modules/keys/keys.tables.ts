import type { ColumnType } from 'kysely'

type NullableTimestamp = ColumnType<Date | null, Date | string | null | undefined, Date | string | null>

/** `active`: encrypts new values (exactly one); `retiring`: still decrypts while rotation moves its values; `retired`: used by nothing. */
export type EncryptionKeyState = 'active' | 'retiring' | 'retired'

export interface EncryptionKeysTable {
  /** `keyIdFor(key)`: 16 hex characters, the id every ciphertext under the key names. */
  id: string
  /** The data key wrapped by the master key (`v1.<kekId>.<payload>`, AAD `encryption_keys:<id>`). */
  wrapped_key: string
  state: EncryptionKeyState
  created_at: ColumnType<Date, Date | string | undefined, Date | string>
  retired_at: NullableTimestamp
}

declare module '../../infra/db/tables.ts' {
  interface PlinthTables {
    encryption_keys: EncryptionKeysTable
  }
}
