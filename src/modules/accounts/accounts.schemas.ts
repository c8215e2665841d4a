import { Type } from 'typebox'
import { PERMISSION_NAME, PERMISSIONS } from '../../core/permissions.ts'

export const Email = Type.String({ format: 'email', minLength: 3, maxLength: 254 })
/** Bounded well above the policy's 128 characters, so the policy (not the schema) explains a long one. */
export const Password = Type.String({ minLength: 1, maxLength: 1024 })
export const Secret = Type.String({ minLength: 1, maxLength: 200 })
export const RoleSchema = Type.Union([
  Type.Literal('admin'),
  Type.Literal('operator'),
  Type.Literal('member'),
  Type.Literal('viewer'),
])
/**
 * A permission: a built-in one or one a loaded module declares (`<module>:<action>`); which exist
 * is known only once the modules are loaded, so the token service checks that (422 otherwise).
 */
export const PermissionSchema = Type.String({
  pattern: PERMISSION_NAME.source,
  maxLength: 127,
  description: `A built-in permission (${PERMISSIONS.join(', ')}) or one an application module declares.`,
})
export const Id = Type.Object({ id: Type.String({ format: 'uuid' }) }, { additionalProperties: false })
const DateTime = Type.String({ format: 'date-time' })

export const SignupBody = Type.Object(
  { email: Email, password: Password, inviteToken: Type.Optional(Secret) },
  { additionalProperties: false },
)
export const LoginBody = Type.Object({ email: Email, password: Password }, { additionalProperties: false })
export const MfaBody = Type.Object(
  {
    challenge: Secret,
    code: Type.Optional(Type.String({ maxLength: 16 })),
    recoveryCode: Type.Optional(Type.String({ maxLength: 64 })),
  },
  { additionalProperties: false },
)
export const ResetRequestBody = Type.Object({ email: Email }, { additionalProperties: false })
export const ResetConfirmBody = Type.Object(
  { token: Secret, password: Password },
  { additionalProperties: false },
)
export const ChangePasswordBody = Type.Object(
  { currentPassword: Password, newPassword: Password },
  { additionalProperties: false },
)
export const TotpConfirmBody = Type.Object(
  { code: Type.String({ maxLength: 16 }) },
  { additionalProperties: false },
)
export const TotpDisableBody = Type.Object(
  {
    password: Password,
    code: Type.Optional(Type.String({ maxLength: 16 })),
    recoveryCode: Type.Optional(Type.String({ maxLength: 64 })),
  },
  { additionalProperties: false },
)
export const TokenCreateBody = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 100 }),
    scopes: Type.Array(PermissionSchema, { minItems: 1, maxItems: 200, uniqueItems: true }),
    expiresAt: Type.Optional(DateTime),
  },
  { additionalProperties: false },
)

export const SessionIssued = Type.Object({
  token: Type.String({
    description: 'Session token for `Authorization: Bearer`; browsers use the cookie instead.',
  }),
  expiresAt: DateTime,
  csrfToken: Type.String({ description: 'Send as X-CSRF-Token with cookie-authenticated changes.' }),
  mfaEnrolmentRequired: Type.Boolean(),
})
export const LoginResponse = Type.Union([
  Type.Object({ mfaRequired: Type.Literal(true), challenge: Type.String(), challengeExpiresAt: DateTime }),
  Type.Intersect([Type.Object({ mfaRequired: Type.Literal(false) }), SessionIssued]),
])

export const UserSchema = Type.Object({
  id: Type.String(),
  email: Type.String(),
  role: RoleSchema,
  status: Type.Union([Type.Literal('active'), Type.Literal('disabled')]),
  mfaEnabled: Type.Boolean(),
  locked: Type.Boolean(),
  createdAt: DateTime,
  lastLoginAt: Type.Union([DateTime, Type.Null()]),
})
export const SessionSchema = Type.Object({
  id: Type.String(),
  createdAt: DateTime,
  lastSeenAt: DateTime,
  expiresAt: DateTime,
  ip: Type.Union([Type.String(), Type.Null()]),
  userAgent: Type.Union([Type.String(), Type.Null()]),
  current: Type.Boolean(),
})
export const TokenSchema = Type.Object({
  id: Type.String(),
  name: Type.String(),
  hint: Type.String(),
  scopes: Type.Array(Type.String()),
  createdAt: DateTime,
  expiresAt: Type.Union([DateTime, Type.Null()]),
  lastUsedAt: Type.Union([DateTime, Type.Null()]),
  mfaEnrolmentRequired: Type.Boolean({
    description:
      'The owner’s role requires a second factor they have not enrolled: the token is refused (403 PLINTH_AUTH_MFA_ENROLMENT_REQUIRED) until they do.',
  }),
})
export const UserListQuery = Type.Object(
  {
    role: Type.Optional(RoleSchema),
    status: Type.Optional(Type.Union([Type.Literal('active'), Type.Literal('disabled')])),
    email: Type.Optional(Type.String({ maxLength: 254 })),
    limit: Type.Integer({ minimum: 1, maximum: 200, default: 50 }),
    offset: Type.Integer({ minimum: 0, maximum: 1_000_000, default: 0 }),
  },
  { additionalProperties: false },
)
export const UserCreateBody = Type.Object(
  { email: Email, role: RoleSchema, password: Type.Optional(Password) },
  { additionalProperties: false },
)
export const UserPatchBody = Type.Object(
  {
    role: Type.Optional(RoleSchema),
    status: Type.Optional(Type.Union([Type.Literal('active'), Type.Literal('disabled')])),
  },
  { additionalProperties: false, minProperties: 1 },
)
export const MfaPolicyBody = Type.Object(
  { role: RoleSchema, mfaRequired: Type.Boolean() },
  { additionalProperties: false },
)
