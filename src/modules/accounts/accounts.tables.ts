import type { ColumnType, Generated, Selectable } from 'kysely'
import type { Role } from '../../core/permissions.ts'

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>
type NullableTimestamp = ColumnType<Date | null, Date | string | null | undefined, Date | string | null>

export interface UsersTable {
  id: Generated<string>
  email: string
  email_normalized: string
  password_hash: string | null
  role: Role
  status: Generated<'active' | 'disabled'>
  failed_logins: Generated<number>
  locked_until: NullableTimestamp
  checks_in_flight: Generated<number>
  checks_in_flight_until: NullableTimestamp
  last_login_at: NullableTimestamp
  password_changed_at: NullableTimestamp
  created_at: Generated<Date>
  updated_at: Generated<Date>
}

export interface SessionsTable {
  id: Generated<string>
  user_id: string
  token_hash: string
  ip: string | null
  user_agent: string | null
  created_at: Generated<Date>
  last_seen_at: Generated<Date>
  expires_at: Timestamp
  mfa_enrolment_pending: Generated<boolean>
  revoked_at: NullableTimestamp
}

export interface LoginChallengesTable {
  id: Generated<string>
  user_id: string
  token_hash: string
  failures: Generated<number>
  ip: string | null
  user_agent: string | null
  created_at: Generated<Date>
  expires_at: Timestamp
  completed_at: NullableTimestamp
}

export interface ApiTokensTable {
  id: Generated<string>
  user_id: string
  name: string
  token_hash: string
  token_hint: string
  scopes: string[]
  created_at: Generated<Date>
  expires_at: NullableTimestamp
  last_used_at: NullableTimestamp
  revoked_at: NullableTimestamp
}

export interface TotpCredentialsTable {
  user_id: string
  secret_ciphertext: string
  key_id: string
  last_used_step: ColumnType<string | null, number | string | null | undefined, number | string | null>
  created_at: Generated<Date>
  confirmed_at: NullableTimestamp
}

export interface RecoveryCodesTable {
  id: Generated<string>
  user_id: string
  code_hash: string
  used_at: NullableTimestamp
}

export interface PasswordResetTokensTable {
  id: Generated<string>
  user_id: string
  token_hash: string
  created_at: Generated<Date>
  expires_at: Timestamp
  used_at: NullableTimestamp
}

export interface InvitesTable {
  id: Generated<string>
  email_normalized: string
  role: Role
  token_hash: string
  created_by: string | null
  created_at: Generated<Date>
  expires_at: Timestamp
  used_at: NullableTimestamp
}

export interface RolePoliciesTable {
  role: Role
  mfa_required: boolean
  updated_at: Generated<Date>
}

declare module '../../infra/db/tables.ts' {
  interface PlinthTables {
    users: UsersTable
    sessions: SessionsTable
    login_challenges: LoginChallengesTable
    api_tokens: ApiTokensTable
    totp_credentials: TotpCredentialsTable
    recovery_codes: RecoveryCodesTable
    password_reset_tokens: PasswordResetTokensTable
    invites: InvitesTable
    role_policies: RolePoliciesTable
  }
}

export type User = Selectable<UsersTable>
export type Session = Selectable<SessionsTable>
export type ApiToken = Selectable<ApiTokensTable>
