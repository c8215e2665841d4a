/**
 * The one registry of Plinth's error codes. Each code has its HTTP status, a short title and a
 * default detail that tells the caller how to fix the problem. Codes are stable: clients may rely
 * on them, so rename none; add new ones.
 */
export const errorRegistry = {
  PLINTH_HTTP_NOT_FOUND: {
    status: 404,
    title: 'Not Found',
    detail: 'No route matches this path. The routes are listed in /api/openapi.json.',
  },
  PLINTH_HTTP_METHOD_NOT_ALLOWED: {
    status: 405,
    title: 'Method Not Allowed',
    detail: 'This path does not accept this method; the Allow header lists the methods it does.',
  },
  PLINTH_HTTP_BODY_TOO_LARGE: {
    status: 413,
    title: 'Content Too Large',
    detail: 'The request body is larger than this server accepts (PLINTH_BODY_LIMIT).',
  },
  PLINTH_HTTP_UNSUPPORTED_MEDIA_TYPE: {
    status: 415,
    title: 'Unsupported Media Type',
    detail: 'Send the body as application/json, or in a content type this route declares.',
  },
  PLINTH_HTTP_MALFORMED_BODY: {
    status: 400,
    title: 'Malformed Body',
    detail: 'The request body could not be parsed; check that it is valid JSON.',
  },
  PLINTH_HTTP_INVALID_REQUEST: {
    status: 400,
    title: 'Invalid Request',
    detail: 'The path, query string or headers do not match what this route accepts; see `errors`.',
  },
  PLINTH_HTTP_VALIDATION_FAILED: {
    status: 422,
    title: 'Validation Failed',
    detail: 'The request body does not match the schema of this route; see `errors` for each failing field.',
  },
  PLINTH_HTTP_BAD_REQUEST: {
    status: 400,
    title: 'Bad Request',
    detail: 'The request could not be understood.',
  },
  PLINTH_HTTP_BAD_URL: {
    status: 400,
    title: 'Malformed URL',
    detail: 'The URL path does not decode: a percent sign must start a valid UTF-8 escape such as %2F.',
  },
  PLINTH_HTTP_URI_TOO_LONG: {
    status: 414,
    title: 'URI Too Long',
    detail: 'A path parameter is longer than this server accepts (100 characters).',
  },
  PLINTH_HTTP_HEADERS_TOO_LARGE: {
    status: 431,
    title: 'Request Header Fields Too Large',
    detail:
      'The request headers are larger than this server accepts; send fewer or smaller headers (cookies included).',
  },
  PLINTH_HTTP_CLIENT_ERROR: {
    status: 400,
    title: 'Client Error',
    detail: 'The request was refused; the status and detail say why.',
  },
  PLINTH_HTTP_INVALID_TEXT: {
    status: 400,
    title: 'Text Not Accepted',
    detail:
      'A string (in the path, query string or body, or a body key) holds a NUL character or an unpaired UTF-16 surrogate (U+D800 to U+DFFF), which cannot be stored; `errors` names each field.',
  },
  PLINTH_HTTP_OVERLOADED: {
    status: 503,
    title: 'Service Overloaded',
    detail: 'The server is under pressure; retry after the delay in Retry-After.',
  },
  PLINTH_HTTP_SHUTTING_DOWN: {
    status: 503,
    title: 'Shutting Down',
    detail: 'This instance is shutting down; retry, and another instance will answer.',
  },
  PLINTH_HTTP_REQUEST_TIMEOUT: {
    status: 408,
    title: 'Request Timeout',
    detail: 'The request took too long to arrive (PLINTH_REQUEST_TIMEOUT).',
  },
  PLINTH_HTTP_RATE_LIMITED: {
    status: 429,
    title: 'Too Many Requests',
    detail:
      'This client (the signed-in user, otherwise the IP address) used up its requests for this window (PLINTH_RATE_LIMIT_*); retry after the seconds in Retry-After, and pace requests by RateLimit-Remaining and RateLimit-Reset.',
  },
  PLINTH_AUTH_REQUIRED: {
    status: 401,
    title: 'Authentication Required',
    detail: 'Sign in (session cookie) or send Authorization: Bearer <session or API token>.',
  },
  PLINTH_AUTH_INVALID_CREDENTIALS: {
    status: 401,
    title: 'Invalid Credentials',
    detail: 'The e-mail address or password is wrong.',
  },
  PLINTH_AUTH_SESSION_EXPIRED: {
    status: 401,
    title: 'Session Expired',
    detail: 'The session or token has expired or was revoked; sign in again.',
  },
  PLINTH_AUTH_FORBIDDEN: {
    status: 403,
    title: 'Forbidden',
    detail: 'Your role or token scopes do not grant this permission.',
  },
  PLINTH_AUTH_CSRF: {
    status: 403,
    title: 'CSRF Token Missing Or Wrong',
    detail:
      'Cookie-authenticated changes need the X-CSRF-Token header from GET /api/v1/me (or use a bearer token).',
  },
  PLINTH_AUTH_LOCKED: {
    status: 429,
    title: 'Account Temporarily Locked',
    detail: 'Too many failed sign-ins; wait for the time in Retry-After, or reset the password.',
  },
  PLINTH_AUTH_MFA_INVALID: {
    status: 401,
    title: 'Invalid Second Factor',
    detail: 'The code is wrong, expired or already used.',
  },
  PLINTH_AUTH_MFA_CHALLENGE_EXPIRED: {
    status: 401,
    title: 'Sign-in Challenge Expired',
    detail: 'The sign-in challenge expired or had too many failures; sign in again.',
  },
  PLINTH_AUTH_MFA_ENROLMENT_REQUIRED: {
    status: 403,
    title: 'MFA Enrolment Required',
    detail: 'Your role requires a second factor: enrol at POST /api/v1/me/mfa/totp before anything else.',
  },
  PLINTH_AUTH_MFA_ALREADY_ENABLED: {
    status: 409,
    title: 'MFA Already Enabled',
    detail: 'Disable the current second factor before enrolling a new one.',
  },
  PLINTH_AUTH_MFA_NOT_ENABLED: {
    status: 409,
    title: 'MFA Not Enabled',
    detail: 'There is no second factor to confirm or disable.',
  },
  PLINTH_AUTH_WEAK_PASSWORD: {
    status: 422,
    title: 'Weak Password',
    detail: 'Choose a password of 8 to 128 characters that is not a common one.',
  },
  PLINTH_AUTH_SIGNUP_CLOSED: {
    status: 403,
    title: 'Sign-up Closed',
    detail: 'Sign-up is closed or needs an invitation (PLINTH_SIGNUP_MODE).',
  },
  PLINTH_AUTH_TOKEN_INVALID: {
    status: 400,
    title: 'Invalid Or Expired Link',
    detail: 'The link or token is invalid, expired or already used; request a new one.',
  },
  PLINTH_USER_EXISTS: {
    status: 409,
    title: 'Account Exists',
    detail: 'An account with this e-mail address exists; sign in or reset the password.',
  },
  PLINTH_USER_NOT_FOUND: {
    status: 404,
    title: 'User Not Found',
    detail: 'No user has this id; list users at GET /api/v1/admin/users.',
  },
  PLINTH_RESOURCE_NOT_FOUND: {
    status: 404,
    title: 'Not Found',
    detail: 'No such resource, or it is not yours.',
  },
  PLINTH_USER_LAST_ADMIN: {
    status: 409,
    title: 'Last Administrator',
    detail: 'This would leave no active administrator; promote another one first.',
  },
  PLINTH_OPS_FORBIDDEN: {
    status: 403,
    title: 'Forbidden',
    detail:
      'Operator access is required: call from a network in PLINTH_OPS_NETWORKS or send Authorization: Bearer <PLINTH_OPS_TOKEN>.',
  },
  PLINTH_DB_UNAVAILABLE: {
    status: 503,
    title: 'Database Unavailable',
    detail: 'The database cannot be reached right now; retry shortly.',
  },
  PLINTH_DB_TIMEOUT: {
    status: 503,
    title: 'Database Timeout',
    detail: 'A database statement took longer than allowed; retry, or narrow the request.',
  },
  PLINTH_DB_CONFLICT: {
    status: 409,
    title: 'Conflict',
    detail: 'The change conflicts with existing data (a duplicate or a concurrent update); reload and retry.',
  },
  PLINTH_DB_UNREACHABLE: {
    status: 503,
    title: 'Database Unreachable',
    detail: 'Could not connect to the database before the deadline.',
  },
  PLINTH_DB_LOCKED: {
    status: 503,
    title: 'Data Directory In Use',
    detail: 'Another Plinth process uses this data directory; the embedded database serves one process only.',
  },
  PLINTH_MIGRATION_FAILED: {
    status: 500,
    title: 'Migration Failed',
    detail: 'A migration failed and was rolled back; see the cause.',
  },
  PLINTH_MIGRATION_UNKNOWN: {
    status: 400,
    title: 'Unknown Migration',
    detail: 'No migration has this number; `plinth migrate status` lists them.',
  },
  PLINTH_MAIL_UNAVAILABLE: {
    status: 503,
    title: 'Mail Unavailable',
    detail:
      'The e-mail could not be sent; retry later. Operators: set SMTP_URL to a reachable SMTP server that accepts its credentials (the "mail delivery failed" log line and the mail_outbox row say why).',
  },
  PLINTH_MAIL_INVALID: {
    status: 400,
    title: 'Invalid Mail Message',
    detail:
      'The e-mail cannot be sent as given: the recipient must be one address and the subject one line, without line breaks or control characters.',
  },
  PLINTH_CONFIG_INVALID: {
    status: 500,
    title: 'Invalid Configuration',
    detail: 'The configuration is missing or invalid; the message lists every problem.',
  },
  PLINTH_CRYPTO_DECRYPT_FAILED: {
    status: 500,
    title: 'Decryption Failed',
    detail:
      'A stored encrypted value could not be decrypted: it was altered, moved to another row, or encrypted with a key this server does not have (check PLINTH_MASTER_KEY).',
  },
  PLINTH_BACKUP_NOT_FOUND: {
    status: 404,
    title: 'Backup Not Found',
    detail: 'No published backup has this id in the backup target; `plinth backup list` lists them.',
  },
  PLINTH_BACKUP_CORRUPT: {
    status: 422,
    title: 'Backup Damaged',
    detail:
      'The backup failed its integrity checks (checksum, authenticated chunks or manifest seal): it was damaged or altered and cannot be restored. Use another backup.',
  },
  PLINTH_BACKUP_KEY_UNAVAILABLE: {
    status: 422,
    title: 'Backup Key Unavailable',
    detail:
      'The key that encrypts this backup cannot be unwrapped with the keys this server holds: set the PLINTH_MASTER_KEY the backup was made under (docs/operations/backups.md).',
  },
  PLINTH_BACKUP_TOO_NEW: {
    status: 409,
    title: 'Backup From Newer Code',
    detail:
      'The backup was taken at a migration this version of Plinth does not know: restore it with the Plinth version named in its manifest, or newer.',
  },
  PLINTH_BACKUP_TARGET_NOT_EMPTY: {
    status: 409,
    title: 'Restore Target Not Empty',
    detail:
      'The restore target already holds tables; restore into an empty database, or pass --force --yes to replace it.',
  },
  PLINTH_BACKUP_NOT_CONFIGURED: {
    status: 409,
    title: 'Backups Not Configured',
    detail:
      'This instance has no backup target: its database is in memory (PLINTH_DATA_DIR=memory://), so there is no default directory. Set PLINTH_BACKUP_DIR or PLINTH_BACKUP_S3_BUCKET.',
  },
  PLINTH_BACKUP_SERVER_ONLY: {
    status: 409,
    title: 'Backup Must Run In The Server',
    detail:
      'A running Plinth serves this embedded database (this process reached it through its socket), and only that process can copy its data directory. Back up there: POST /api/v1/admin/backups, or plinth jobs enqueue plinth.backup; or stop the server first.',
  },
  PLINTH_BACKUP_IN_PROGRESS: {
    status: 409,
    title: 'Backup In Progress',
    detail: 'Another backup runs now (one at a time); retry when it has finished.',
  },
  PLINTH_BACKUP_TARGET_UNAVAILABLE: {
    status: 503,
    title: 'Backup Target Unavailable',
    detail:
      'The backup target (the S3 bucket) did not answer or refused the request: check PLINTH_BACKUP_S3_* and that the endpoint is reachable, then retry. Nothing half-written was published.',
  },
  PLINTH_BACKUP_ENGINE_FAILED: {
    status: 500,
    title: 'Backup Engine Failed',
    detail:
      'pg_dump, pg_restore or PGlite failed; the log holds its message. Nothing half-written was published.',
  },
  PLINTH_BACKUP_TARGET_FULL: {
    status: 507,
    title: 'Backup Target Full',
    detail:
      'The backup target ran out of space while the backup was written: nothing half-written was published and the temporary files were removed. Free space (plinth backup prune) or move PLINTH_BACKUP_DIR, then retry.',
  },
  PLINTH_PITR_NOT_CONFIGURED: {
    status: 409,
    title: 'Point-In-Time Recovery Not Configured',
    detail:
      'PITR needs PLINTH_PITR_STANZA, PLINTH_PITR_PG_DATA and PLINTH_PITR_CIPHER_PASS (20+ characters); then run plinth pitr setup (docs/operations/backups.md).',
  },
  PLINTH_PITR_FAILED: {
    status: 500,
    title: 'pgBackRest Failed',
    detail:
      'pgBackRest exited with an error; the message names its cause (plinth pitr status shows the repository).',
  },
  PLINTH_PITR_TARGET_INVALID: {
    status: 400,
    title: 'Invalid Recovery Target',
    detail:
      'A point-in-time restore needs exactly one target: --to-time (ISO 8601 with a zone) or --to-lsn (such as 0/3000028).',
  },
  PLINTH_DRILL_NOT_FOUND: {
    status: 404,
    title: 'Drill Not Found',
    detail: 'No disaster-recovery drill has this id; GET /api/v1/admin/backups/drills lists them.',
  },
  PLINTH_DRILL_NO_BACKUP: {
    status: 409,
    title: 'Nothing To Drill',
    detail:
      'The backup target holds no backup whose manifest checks out: make one first (plinth backup create).',
  },
  PLINTH_JOB_TYPE_UNKNOWN: {
    status: 404,
    title: 'Unknown Job Type',
    detail: 'No job type of this name is registered; GET /api/v1/job-types lists them.',
  },
  PLINTH_JOB_NOT_FOUND: {
    status: 404,
    title: 'Job Not Found',
    detail: 'No job has this id (completed jobs are deleted after their retention).',
  },
  PLINTH_JOB_PAYLOAD_INVALID: {
    status: 422,
    title: 'Invalid Job Payload',
    detail: "The payload does not match the job type's schema; `errors` names the fields.",
  },
  PLINTH_JOB_STATE_CONFLICT: {
    status: 409,
    title: 'Job State Conflict',
    detail:
      'The job is not in a state that allows this: only waiting jobs can be cancelled, and only failed or cancelled jobs retried.',
  },
  PLINTH_JOB_QUEUE_FULL: {
    status: 503,
    title: 'Job Queue Full',
    detail:
      "This job type already has its maximum of waiting jobs (PLINTH_JOBS_MAX_QUEUED or the type's maxQueued); retry after the seconds in Retry-After.",
  },
  PLINTH_JOB_INPUT_INVALID: {
    status: 422,
    title: 'Job Input Not Storable',
    detail:
      'The job (its payload, event data or idempotency key) cannot be stored as given; the detail says why. Retrying the same request fails the same way.',
  },
  PLINTH_JOBS_UNAVAILABLE: {
    status: 503,
    title: 'Jobs Unavailable',
    detail: 'The job engine is not running (starting, stopping, or pending migrations); retry shortly.',
  },
  PLINTH_SCHEDULE_INVALID: {
    status: 422,
    title: 'Invalid Schedule',
    detail:
      'The cron expression (5 or 6 fields) or time zone (an IANA name such as Europe/Paris) is not valid.',
  },
  PLINTH_SCHEDULE_NOT_FOUND: {
    status: 404,
    title: 'Schedule Not Found',
    detail: 'No schedule has this id.',
  },
  PLINTH_AUDIT_CURSOR_INVALID: {
    status: 400,
    title: 'Invalid Audit Cursor',
    detail: 'The cursor is not one this API returned; start again without it and follow nextCursor.',
  },
  PLINTH_AUDIT_CHAIN_BROKEN: {
    status: 500,
    title: 'Audit Chain Broken',
    detail:
      'The audit log hash chain does not verify, so it was left untouched; run "plinth audit verify" and follow docs/operations/audit.md.',
  },
  PLINTH_WEBHOOK_URL_INVALID: {
    status: 422,
    title: 'Webhook URL Refused',
    detail:
      'Use an https URL (http needs PLINTH_WEBHOOKS_ALLOW_HTTP) without credentials, whose host resolves only to public addresses (loopback and private ones need PLINTH_WEBHOOKS_ALLOW_PRIVATE=true); the detail says which rule failed.',
  },
  PLINTH_ERROR_GROUP_NOT_FOUND: {
    status: 404,
    title: 'Error Group Not Found',
    detail:
      'No error group has this id (groups not seen for PLINTH_ERRORS_RETENTION are deleted); GET /api/v1/admin/errors lists them.',
  },
  PLINTH_WEBHOOK_NOT_FOUND: {
    status: 404,
    title: 'Webhook Not Found',
    detail: 'No webhook subscription has this id; GET /api/v1/webhooks lists them.',
  },
  PLINTH_EVENT_INVALID: {
    status: 422,
    title: 'Invalid Event',
    detail:
      'An event type is lower case letters, digits and "_", ".", ":", "-", starting with a letter (at most 100); an event id is a UUID.',
  },
  PLINTH_INTERNAL: {
    status: 500,
    title: 'Internal Server Error',
    detail: 'Something went wrong on our side; the request id identifies it in the logs.',
  },
  PLINTH_IMPORT_UNKNOWN_DATASET: {
    status: 404,
    title: 'Unknown Import Dataset',
    detail:
      'No loaded module declares this importable dataset; `plinth import --help` explains the arguments, and a module lists its datasets in `importables`.',
  },
  PLINTH_IMPORT_BAD_FILE: {
    status: 422,
    title: 'Import File Unreadable',
    detail:
      'The file cannot be imported as a whole (not what its extension says, not UTF-8, a CSV header that does not match, or no such file); the message names the file and the line. Rows committed before stay, and a re-run resumes.',
  },
  PLINTH_IMPORT_BUSY: {
    status: 409,
    title: 'Import Already Running',
    detail:
      'Another import of this file into this dataset moved its checkpoint meanwhile; let it finish, then re-run.',
  },
  PLINTH_IMPORT_UNSUPPORTED_HASH: {
    status: 422,
    title: 'Unsupported Password Hash',
    detail:
      'Only bcrypt hashes ($2a$, $2b$, $2y$) are carried over from another system; this account was not created (its owner can sign up or be invited).',
  },
  PLINTH_IMPORT_SOURCE_UNREADABLE: {
    status: 422,
    title: 'Migration Source Unreadable',
    detail:
      'The PocketBase data directory or the Supabase database could not be read as one: the message says what is missing (data.db, the users collection, the auth.users table).',
  },
  PLINTH_INCIDENT_NOT_FOUND: {
    status: 404,
    title: 'Incident Not Found',
    detail: 'No incident has this id; GET /api/v1/admin/incidents lists them.',
  },
  PLINTH_INCIDENT_RESOLVED: {
    status: 409,
    title: 'Incident Already Resolved',
    detail:
      'This incident is resolved: it can no longer be acknowledged or resolved. If the condition returns, a new incident opens.',
  },
  PLINTH_FILE_NOT_FOUND: {
    status: 404,
    title: 'File Not Found',
    detail:
      'No file with this id is visible to you (your own, public ones, or through a valid share link); GET /api/v1/files lists yours.',
  },
  PLINTH_FILE_UPLOAD_INVALID: {
    status: 400,
    title: 'Invalid Upload',
    detail:
      'Send multipart/form-data with one or more `file` parts (and optional `visibility`, `purpose`, `metadata` fields before them); the detail says what was wrong.',
  },
  PLINTH_FILE_UPLOAD_INCOMPLETE: {
    status: 400,
    title: 'Upload Incomplete',
    detail:
      'The upload ended before the whole body arrived (the connection was cut or the multipart body is truncated); nothing was stored. Send it again.',
  },
  PLINTH_FILE_TOO_LARGE: {
    status: 413,
    title: 'File Too Large',
    detail:
      'A file is larger than PLINTH_FILES_MAX_FILE_SIZE allows; nothing was stored. Use a smaller file.',
  },
  PLINTH_FILE_REQUEST_TOO_LARGE: {
    status: 413,
    title: 'Upload Too Large',
    detail:
      'The files of this request together exceed PLINTH_FILES_MAX_REQUEST_SIZE, or there are more than PLINTH_FILES_MAX_FILES_PER_REQUEST; send them in several requests.',
  },
  PLINTH_FILE_QUOTA_EXCEEDED: {
    status: 413,
    title: 'Storage Quota Exceeded',
    detail:
      'Storing this file would take you over your storage quota (PLINTH_FILES_QUOTA); delete files you no longer need (GET /api/v1/files/usage shows your use).',
  },
  PLINTH_FILE_EMPTY: {
    status: 422,
    title: 'Empty File',
    detail: 'The file has no bytes; there is nothing to store.',
  },
  PLINTH_FILE_TYPE_NOT_ALLOWED: {
    status: 415,
    title: 'File Type Not Allowed',
    detail:
      'The type of the file, decided from its content (not its name), is not accepted for this purpose; the detail names the type found and those accepted.',
  },
  PLINTH_FILE_IMAGE_INVALID: {
    status: 422,
    title: 'Invalid Image',
    detail:
      'The image could not be decoded whole (truncated or malformed), or has more pixels than PLINTH_FILES_IMAGE_MAX_PIXELS; nothing was stored.',
  },
  PLINTH_FILE_INFECTED: {
    status: 422,
    title: 'File Refused by Virus Scan',
    detail: 'The virus scanner (ClamAV) found a signature in the file; nothing was stored.',
  },
  PLINTH_FILE_SCANNER_UNAVAILABLE: {
    status: 503,
    title: 'Virus Scanner Unavailable',
    detail:
      'Uploads are scanned (PLINTH_FILES_CLAMD_SOCKET) and the scanner did not answer; nothing was stored. Retry later.',
  },
  PLINTH_FILE_RANGE_NOT_SATISFIABLE: {
    status: 416,
    title: 'Range Not Satisfiable',
    detail: 'The Range asked for starts beyond the end of the file; Content-Range gives its size.',
  },
  PLINTH_FILE_LINK_INVALID: {
    status: 403,
    title: 'Invalid Share Link',
    detail: 'The share link was altered or is not one this server made; ask its owner for a new one.',
  },
  PLINTH_FILE_LINK_EXPIRED: {
    status: 410,
    title: 'Share Link Expired',
    detail: 'The share link has expired; ask its owner for a new one.',
  },
  PLINTH_FILE_TRANSFORM_INVALID: {
    status: 400,
    title: 'Image Transform Not Allowed',
    detail:
      'Transforms apply to raster images only, with w and h among PLINTH_FILES_IMAGE_WIDTHS, fit one of cover, contain, inside, and format one of webp, avif, jpeg, png; or name a declared variant (thumb, medium).',
  },
  PLINTH_FILE_CURSOR_INVALID: {
    status: 400,
    title: 'Invalid Cursor',
    detail: 'The cursor is not one this API returned; start again without it and follow nextCursor.',
  },
  PLINTH_UPLOAD_REFUSED: {
    status: 400,
    title: 'Resumable Upload Refused',
    detail:
      'The tus request does not follow the protocol (a missing or invalid Upload-Length, Upload-Metadata or header); the detail says which. See https://tus.io/protocols/resumable-upload.',
  },
  PLINTH_UPLOAD_NOT_FOUND: {
    status: 404,
    title: 'Upload Not Found',
    detail:
      'No resumable upload of yours has this id (it was finished, abandoned or expired after 24 h); create a new one with POST /api/v1/uploads.',
  },
  PLINTH_UPLOAD_OFFSET_MISMATCH: {
    status: 409,
    title: 'Upload Offset Mismatch',
    detail:
      'Upload-Offset is not where the upload stands: ask with HEAD and continue from its Upload-Offset.',
  },
  PLINTH_UPLOAD_VERSION_UNSUPPORTED: {
    status: 412,
    title: 'Tus Version Unsupported',
    detail: 'Send Tus-Resumable: 1.0.0 on every tus request.',
  },
  PLINTH_FILES_STORAGE_UNAVAILABLE: {
    status: 503,
    title: 'File Storage Unavailable',
    detail:
      'The file storage is not configured (PLINTH_DATA_DIR is memory:// and neither PLINTH_FILES_DIR nor PLINTH_FILES_S3_BUCKET is set) or did not answer; retry later, or see docs/operations/files.md.',
  },
  PLINTH_EVENTS_STREAM_FULL: {
    status: 503,
    title: 'Event Streams Full',
    detail:
      'This server holds as many event streams open as it may (PLINTH_EVENTS_STREAM_MAX); reconnect after the seconds in Retry-After (the load balancer may send you to another replica).',
  },
} as const satisfies Record<string, { status: number; title: string; detail: string }>

export type ErrorCode = keyof typeof errorRegistry

/**
 * An error code an application module declares (`errors` of `defineModule`), e.g.
 * `NOTES_LOCKED`: served as `application/problem+json` like Plinth's own, listed in the
 * application's OpenAPI document and in `plinth errors`.
 */
export type ModuleErrorCode = string & {}

/** What a module declares of one of its error codes (the same fields as a built-in code's). */
export interface ModuleErrorDeclaration {
  /** The HTTP status, 400–599. */
  readonly status: number
  /** A short, stable title (e.g. `Note Locked`). */
  readonly title: string
  /** The default detail: what went wrong and how the caller fixes it (the code's documentation). */
  readonly detail: string
}

/** A declared module error code and the module that declared it. */
export interface RegisteredModuleError extends ModuleErrorDeclaration {
  readonly code: string
  readonly module: string
}

/** Upper-case words joined by underscores, at least two (`NOTES_LOCKED`). */
export const MODULE_ERROR_CODE = /^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$/

// Process-wide, like the roles' permissions (core/permissions.ts): declaring the same code again
// with the same declaration (a second Plinth in one process, tests) is a no-op.
const moduleErrors = new Map<string, RegisteredModuleError>()

/**
 * Adds a module's error codes to the registry (the root calls it at boot, before anything is
 * opened). A code that is malformed, starts with `PLINTH_` (reserved for Plinth's own, so that a
 * later Plinth cannot clash with an application), is built in, is declared by another module or
 * again with other fields throws an error naming it: the boot stops.
 */
export function declareErrorCodes(
  module: string,
  errors: Readonly<Record<string, ModuleErrorDeclaration>>,
): void {
  for (const [code, declaration] of Object.entries(errors)) {
    const where = `module "${module}" declares the error code "${code}"`
    if (code in errorRegistry) throw new Error(`${where}, which is built in (docs/errors.md): choose another`)
    if (code.startsWith('PLINTH_'))
      throw new Error(
        `${where}: codes starting with PLINTH_ are Plinth's own; prefix it with your module's name`,
      )
    if (!MODULE_ERROR_CODE.test(code))
      throw new Error(
        `${where}: an error code is upper-case words joined by underscores, like "NOTES_LOCKED"`,
      )
    const { status, title, detail } = declaration ?? ({} as ModuleErrorDeclaration)
    if (!Number.isInteger(status) || status < 400 || status > 599)
      throw new Error(`${where} with the status ${JSON.stringify(status)}: an error status is 400–599`)
    if (typeof title !== 'string' || title.trim() === '') throw new Error(`${where} without a title`)
    if (typeof detail !== 'string' || detail.trim() === '')
      throw new Error(`${where} without a detail (what went wrong and how to fix it)`)
    const before = moduleErrors.get(code)
    if (before && before.module !== module)
      throw new Error(`${where}, which module "${before.module}" declares too`)
    if (before && (before.status !== status || before.title !== title || before.detail !== detail))
      throw new Error(`${where} again with another status, title or detail`)
    if (!before) moduleErrors.set(code, { code, module, status, title, detail })
  }
}

/** The declared module error codes, in declaration order. */
export function moduleErrorCodes(): readonly RegisteredModuleError[] {
  return [...moduleErrors.values()]
}

/** A code's status, title and default detail: built in, or declared by a module; undefined if neither. */
export function errorEntry(
  code: string,
): { readonly status: number; readonly title: string; readonly detail: string } | undefined {
  return Object.hasOwn(errorRegistry, code) ? errorRegistry[code as ErrorCode] : moduleErrors.get(code)
}

export interface FieldError {
  /** Where the field is: body, querystring, params or headers. */
  readonly in: string
  /** The field's path, dot-separated (empty for the whole object). */
  readonly field: string
  readonly message: string
}

/** An error with a registered code; the HTTP layer turns it into `application/problem+json`. */
export class PlinthError extends Error {
  /** A built-in code, or one a module declared (`ModuleErrorCode`, see `declareErrorCodes`). */
  readonly code: ErrorCode | ModuleErrorCode
  readonly status: number
  readonly title: string
  readonly errors?: readonly FieldError[]
  /** Extra response headers (e.g. Retry-After, Allow). */
  readonly headers?: Readonly<Record<string, string>>

  constructor(
    code: ErrorCode,
    detail?: string,
    options: {
      cause?: unknown
      errors?: readonly FieldError[]
      headers?: Record<string, string>
      status?: number
    } = {},
  ) {
    // A module's code reaches here through `ModuleApi.error` (core/define-module.ts).
    const entry = errorEntry(code)
    if (!entry) throw new Error(`the error code "${code}" is neither built in nor declared by a module`)
    super(detail ?? entry.detail, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'PlinthError'
    this.code = code
    this.status = options.status ?? entry.status
    this.title = entry.title
    if (options.errors) this.errors = options.errors
    if (options.headers) this.headers = options.headers
  }
}

export function isPlinthError(err: unknown): err is PlinthError {
  return err instanceof PlinthError
}

/** PostgreSQL SQLSTATE codes (and socket errors) and the Plinth codes they become. */
const dbErrorMap: Readonly<Record<string, ErrorCode>> = {
  '23505': 'PLINTH_DB_CONFLICT', // unique_violation
  '23503': 'PLINTH_DB_CONFLICT', // foreign_key_violation
  '40001': 'PLINTH_DB_CONFLICT', // serialization_failure
  '40P01': 'PLINTH_DB_CONFLICT', // deadlock_detected
  '57014': 'PLINTH_DB_TIMEOUT', // query_canceled (statement_timeout)
  '57P01': 'PLINTH_DB_UNAVAILABLE', // admin_shutdown
  '57P02': 'PLINTH_DB_UNAVAILABLE', // crash_shutdown
  '57P03': 'PLINTH_DB_UNAVAILABLE', // cannot_connect_now (starting up, shutting down, recovering)
  '57P04': 'PLINTH_DB_UNAVAILABLE', // database_dropped
  '57P05': 'PLINTH_DB_UNAVAILABLE', // idle_session_timeout
  '55000': 'PLINTH_DB_UNAVAILABLE', // object_not_in_prerequisite_state ("not currently accepting connections")
  '25006': 'PLINTH_DB_UNAVAILABLE', // read_only_sql_transaction (a standby after a failover)
  '53000': 'PLINTH_DB_UNAVAILABLE', // insufficient_resources
  '53100': 'PLINTH_DB_UNAVAILABLE', // disk_full
  '53200': 'PLINTH_DB_UNAVAILABLE', // out_of_memory
  '53300': 'PLINTH_DB_UNAVAILABLE', // too_many_connections
  '53400': 'PLINTH_DB_UNAVAILABLE', // configuration_limit_exceeded
  ECONNREFUSED: 'PLINTH_DB_UNAVAILABLE',
  ECONNRESET: 'PLINTH_DB_UNAVAILABLE',
  ECONNABORTED: 'PLINTH_DB_UNAVAILABLE',
  ETIMEDOUT: 'PLINTH_DB_UNAVAILABLE',
  EPIPE: 'PLINTH_DB_UNAVAILABLE',
  EHOSTUNREACH: 'PLINTH_DB_UNAVAILABLE',
  ENETUNREACH: 'PLINTH_DB_UNAVAILABLE',
  EAI_AGAIN: 'PLINTH_DB_UNAVAILABLE',
}

/** SQLSTATE classes that all mean "the database cannot serve right now": 08 connection exception. */
const DB_UNAVAILABLE_CLASSES = ['08']

/** Driver messages (no SQLSTATE) and the Plinth codes they become. */
const DB_MESSAGES: readonly (readonly [string, ErrorCode])[] = [
  ['Query read timeout', 'PLINTH_DB_TIMEOUT'], // PLINTH_DB_QUERY_TIMEOUT: no answer at all
  ['Connection terminated', 'PLINTH_DB_UNAVAILABLE'],
  ['timeout exceeded when trying to connect', 'PLINTH_DB_UNAVAILABLE'],
  ['Client has encountered a connection error', 'PLINTH_DB_UNAVAILABLE'],
  ['Client was closed and is not queryable', 'PLINTH_DB_UNAVAILABLE'],
  ['Cannot use a pool after calling end on the pool', 'PLINTH_DB_UNAVAILABLE'],
]

/**
 * Translates a database driver error into a `PlinthError` (keeping it as `cause`), or returns
 * undefined when the error is not a known database condition.
 */
export function translateDbError(err: unknown): PlinthError | undefined {
  if (!(err instanceof Error)) return undefined
  const code = (err as { code?: unknown }).code
  const mapped = typeof code === 'string' ? dbErrorMap[code] : undefined
  if (mapped) return new PlinthError(mapped, undefined, { cause: err })
  if (
    typeof code === 'string' &&
    /^[0-9A-Z]{5}$/.test(code) &&
    DB_UNAVAILABLE_CLASSES.includes(code.slice(0, 2))
  )
    return new PlinthError('PLINTH_DB_UNAVAILABLE', undefined, { cause: err })
  const byMessage = DB_MESSAGES.find(([m]) => err.message.includes(m))
  if (byMessage) return new PlinthError(byMessage[1], undefined, { cause: err })
  return undefined
}
