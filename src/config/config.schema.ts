import { isIP } from 'node:net'
import { bool, duration, int, list, oneOf, optionalStr, ratio, size, str, url } from './config-parsers.ts'
import { type ConfigKey, type ConfigOf, PLINTH_ENVS, type PlinthEnv } from './config-types.ts'

const isLocal = (env: PlinthEnv) => env === 'development' || env === 'test'

/** Accepts `10.0.0.0/8`, `::1/128` or a bare address. */
function assertCidr(value: string): void {
  const [address = '', prefix] = value.split('/')
  const family = isIP(address)
  const max = family === 6 ? 128 : 32
  if (family === 0 || (prefix !== undefined && !(/^\d+$/.test(prefix) && Number(prefix) <= max))) {
    throw new Error(`"${value}" is not an IP address or CIDR range (e.g. 10.0.0.0/8, ::1/128)`)
  }
}

/**
 * The 32 bytes of a master key written as base64 (standard or URL-safe, padding optional), or
 * undefined when the text is not exactly that. `loadConfig` refuses such a value (without echoing
 * it); the keyring decodes with this same function.
 */
export function decodeMasterKey(text: string): Buffer | undefined {
  const value = text.trim()
  if (!/^[A-Za-z0-9+/_-]{43}=?$/.test(value)) return undefined
  const key = Buffer.from(value, 'base64')
  return key.length === 32 ? key : undefined
}

const ADDRESS = String.raw`[^\s<>@,;:"()[\]\\]+@[^\s<>@,;:"()[\]\\]+`
const MAILBOX = new RegExp(`^(?:${ADDRESS}|[^<>]*<${ADDRESS}>)$`)

/** Accepts one bare address, `ops@example.com` (what the mailer sends to). */
function assertAddress(value: string): void {
  if (!new RegExp(`^${ADDRESS}$`).test(value))
    throw new Error(`expected an address such as ops@example.com, got ${JSON.stringify(value)}`)
}

/** Accepts `no-reply@example.com` or `Name <no-reply@example.com>`, on one line. */
function assertMailbox(value: string): void {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
  if (/[\u0000-\u001f\u007f]/.test(value) || !MAILBOX.test(value.trim())) {
    throw new Error(
      `expected one address such as no-reply@example.com or "Example <no-reply@example.com>", got ${JSON.stringify(value)}`,
    )
  }
}

/** The key, refusing durations below `min` milliseconds. */
function atLeast(min: number, key: ConfigKey<number>): ConfigKey<number> {
  return {
    ...key,
    parse(raw) {
      const ms = key.parse(raw)
      if (ms < min) throw new Error(`expected at least ${min}ms, got "${raw}"`)
      return ms
    },
  }
}

/** The key, refusing durations outside `min`..`max` milliseconds. */
function between(min: number, max: number, key: ConfigKey<number>): ConfigKey<number> {
  return {
    ...atLeast(min, key),
    parse(raw) {
      const ms = atLeast(min, key).parse(raw)
      if (ms > max) throw new Error(`expected at most ${max}ms, got "${raw}"`)
      return ms
    },
  }
}

/**
 * Every configuration key Plinth reads. `docs/configuration.md` is generated from this table
 * (`npm run docs:generate`), and a test fails when the two drift apart.
 */
export const configSchema = {
  env: oneOf(PLINTH_ENVS, {
    env: 'PLINTH_ENV',
    default: 'development',
    doc: 'Deployment environment. `production` refuses unsafe settings; `development` enables pretty logs and error details.',
  }),
  role: oneOf(['all', 'api', 'worker'] as const, {
    env: 'PLINTH_ROLE',
    default: 'all',
    doc: 'What this process runs: `api` serves HTTP, `worker` runs background work (and serves only the operations endpoints), `all` does both. `plinth start --role` overrides it.',
  }),
  port: int({ env: 'PORT', default: 3000, min: 0, max: 65535, doc: 'TCP port the HTTP server listens on.' }),
  host: str({
    env: 'HOST',
    default: (env) => (isLocal(env) ? 'localhost' : '0.0.0.0'),
    defaultDoc: '`localhost` in development and test, `0.0.0.0` otherwise',
    doc: 'Interface the HTTP server binds to.',
  }),
  dataDir: str({
    env: 'PLINTH_DATA_DIR',
    default: './data',
    doc: 'Directory for local state: the embedded database (when `DATABASE_URL` is unset) and generated files.',
  }),
  secretKey: optionalStr({
    env: 'PLINTH_SECRET_KEY',
    secret: true,
    doc: 'Secret for signing cookies and tokens, and the key of the pseudonyms that replace erased users in the audit log (changing it changes later pseudonyms only); at least 32 characters. Required in staging and production (e.g. `openssl rand -base64 48`).',
  }),
  backupDir: optionalStr({
    env: 'PLINTH_BACKUP_DIR',
    defaultDoc: '`<PLINTH_DATA_DIR>/backups`',
    doc: 'Directory backups are written to (`plinth backup create`, `POST /api/v1/admin/backups`): a manifest and an encrypted archive per backup. Required when `PLINTH_DATA_DIR` is `memory://`. Keep it on another disk than the database, and copy it off the host (docs/operations/backups.md).',
  }),
  backupS3Bucket: optionalStr({
    env: 'PLINTH_BACKUP_S3_BUCKET',
    doc: 'When set, backups go to this S3-compatible bucket instead of `PLINTH_BACKUP_DIR` (multipart upload to a temporary key, published by copy once its checksum is verified).',
  }),
  backupS3Prefix: str({
    env: 'PLINTH_BACKUP_S3_PREFIX',
    default: 'plinth/',
    doc: 'Key prefix of the backups in `PLINTH_BACKUP_S3_BUCKET`.',
  }),
  backupS3Endpoint: optionalStr({
    env: 'PLINTH_BACKUP_S3_ENDPOINT',
    doc: 'Endpoint URL of an S3-compatible server (MinIO, Ceph, R2 …); unset for AWS S3.',
  }),
  backupS3Region: str({
    env: 'PLINTH_BACKUP_S3_REGION',
    default: 'us-east-1',
    doc: 'Region of the backup bucket.',
  }),
  backupS3AccessKeyId: optionalStr({
    env: 'PLINTH_BACKUP_S3_ACCESS_KEY_ID',
    doc: 'Access key id for the backup bucket; unset to use the AWS SDK default credential chain (instance role …).',
  }),
  backupS3SecretAccessKey: optionalStr({
    env: 'PLINTH_BACKUP_S3_SECRET_ACCESS_KEY',
    secret: true,
    doc: 'Secret access key for the backup bucket (with `PLINTH_BACKUP_S3_ACCESS_KEY_ID`).',
  }),
  backupS3ForcePathStyle: bool({
    env: 'PLINTH_BACKUP_S3_FORCE_PATH_STYLE',
    default: false,
    doc: 'Path-style bucket URLs (`endpoint/bucket/key`), which most S3-compatible servers need.',
  }),
  s3ConnectTimeout: duration({
    env: 'PLINTH_S3_CONNECT_TIMEOUT',
    default: 5000,
    doc: 'How long opening a connection to an S3 endpoint may take (the backup bucket and the files bucket; not pgBackRest). Past it the attempt fails and is retried (3 attempts in all), then the caller gets 503 `PLINTH_BACKUP_TARGET_UNAVAILABLE` or `PLINTH_FILES_STORAGE_UNAVAILABLE`. 0 disables it.',
  }),
  s3SocketTimeout: duration({
    env: 'PLINTH_S3_SOCKET_TIMEOUT',
    default: 30_000,
    doc: 'How long one S3 request may go without a byte sent or received (the backup bucket and the files bucket; not pgBackRest): an endpoint that accepts the connection and never answers fails the attempt after this long, and the request after 3 attempts (503 `PLINTH_BACKUP_TARGET_UNAVAILABLE` or `PLINTH_FILES_STORAGE_UNAVAILABLE`). An idle limit, not a total: a long transfer that keeps moving is not cut, and a download (a restore, a file served) is timed only while its reader waits for data, never while the reader itself pauses. 0 disables it.',
  }),
  backupCron: str({
    env: 'PLINTH_BACKUP_CRON',
    default: '23 * * * *',
    doc: 'Cron expression (UTC) of the built-in `plinth.backup` schedule: back up, verify, then prune (default hourly at :23; retention keeps the daily, weekly and monthly ones). `off` declares no schedule (pause an existing one with `plinth schedules pause plinth.backup`).',
  }),
  backupMaxAge: duration({
    env: 'PLINTH_BACKUP_MAX_AGE',
    default: 7_200_000,
    defaultDoc: '`2h`',
    doc: 'With the backup schedule on, the `backups` health check turns `degraded` when the newest verified backup is older than this (twice the hourly schedule by default).',
  }),
  backupKeepHourly: int({
    env: 'PLINTH_BACKUP_KEEP_HOURLY',
    default: 24,
    min: 0,
    max: 10_000,
    doc: 'Retention (`plinth backup prune`): keep the newest verified backup of each of this many most recent hours.',
  }),
  backupKeepDaily: int({
    env: 'PLINTH_BACKUP_KEEP_DAILY',
    default: 30,
    min: 0,
    max: 10_000,
    doc: 'Retention: keep the newest verified backup of each of this many most recent days (UTC).',
  }),
  backupKeepWeekly: int({
    env: 'PLINTH_BACKUP_KEEP_WEEKLY',
    default: 12,
    min: 0,
    max: 10_000,
    doc: 'Retention: keep the newest verified backup of each of this many most recent ISO weeks.',
  }),
  backupKeepMonthly: int({
    env: 'PLINTH_BACKUP_KEEP_MONTHLY',
    default: 12,
    min: 0,
    max: 10_000,
    doc: 'Retention: keep the newest verified backup of each of this many most recent months. The newest verified backup is always kept.',
  }),
  backupReverifyCron: str({
    env: 'PLINTH_BACKUP_REVERIFY_CRON',
    default: '47 4 * * *',
    doc: 'Cron expression (UTC) of the built-in `plinth.backup-reverify` schedule: re-verifies a sample of older backups (the newest and `PLINTH_BACKUP_REVERIFY_SAMPLE` - 1 others at random); a failure emits the `backup.verification_failed` event and counts in `plinth_backup_verification_failures_total`. `off` declares no schedule.',
  }),
  backupReverifySample: int({
    env: 'PLINTH_BACKUP_REVERIFY_SAMPLE',
    default: 3,
    min: 1,
    max: 1000,
    doc: 'How many backups each `plinth.backup-reverify` run restores and checks again.',
  }),
  backupDrillCron: str({
    env: 'PLINTH_BACKUP_DRILL_CRON',
    default: 'off',
    doc: 'Cron expression (UTC) of a scheduled disaster-recovery drill (`plinth.backup-drill`: the newest backup restored to a scratch target and checked, RTO and RPO measured and stored; docs/operations/disaster-recovery.md), e.g. `13 5 * * 1` weekly. `off` (default): drills run on demand only.',
  }),
  pitrStanza: optionalStr({
    env: 'PLINTH_PITR_STANZA',
    doc: 'Point-in-time recovery through pgBackRest (`plinth pitr`, docs/operations/backups.md): the stanza name. Unset: PITR is off.',
  }),
  pitrPgData: optionalStr({
    env: 'PLINTH_PITR_PG_DATA',
    doc: "With `PLINTH_PITR_STANZA`: the PostgreSQL server's data directory (pgBackRest `pg1-path`); pgBackRest runs on the database host.",
  }),
  pitrPgPort: int({
    env: 'PLINTH_PITR_PG_PORT',
    default: 5432,
    min: 1,
    max: 65_535,
    doc: 'Port of the PostgreSQL server pgBackRest backs up (`pg1-port`).',
  }),
  pitrPgSocket: str({
    env: 'PLINTH_PITR_PG_SOCKET',
    default: '/var/run/postgresql',
    doc: "Unix socket directory of that server (`pg1-socket-path`): pgBackRest connects as the server's operating-system user.",
  }),
  pitrRepoPath: optionalStr({
    env: 'PLINTH_PITR_REPO_PATH',
    defaultDoc: '`<PLINTH_DATA_DIR>/pgbackrest`',
    doc: 'The pgBackRest repository (`repo1-path`): keep it on another disk than the database, and copy it off the host.',
  }),
  pitrCipherPass: optionalStr({
    env: 'PLINTH_PITR_CIPHER_PASS',
    secret: true,
    doc: 'Passphrase of the pgBackRest repository (`repo1-cipher-type=aes-256-cbc`), at least 20 characters; required with `PLINTH_PITR_STANZA`. Lost, the repository cannot be read: keep it with the master key.',
  }),
  pitrConfigPath: optionalStr({
    env: 'PLINTH_PITR_CONFIG',
    defaultDoc: '`<repository>/pgbackrest.conf`',
    doc: 'Where `plinth pitr setup` writes the pgBackRest configuration (mode 0600: it holds the passphrase); every pgBackRest call and the `archive_command` use it.',
  }),
  pitrOsUser: optionalStr({
    env: 'PLINTH_PITR_OS_USER',
    doc: "Operating-system user pgBackRest runs as when Plinth runs as root (the database server's owner, e.g. `postgres`); unset: Plinth's own user.",
  }),
  pitrArchiveTimeout: duration({
    env: 'PLINTH_PITR_ARCHIVE_TIMEOUT',
    default: 60_000,
    defaultDoc: '`60s`',
    doc: 'The `archive_timeout` `plinth pitr setup` applies: a WAL segment is archived at least this often while there are writes, which bounds the recovery point (RPO).',
  }),
  pitrBackupCron: str({
    env: 'PLINTH_PITR_BACKUP_CRON',
    default: '41 2 * * *',
    doc: 'Cron expression (UTC) of the built-in `plinth.pitr-backup` schedule when `PLINTH_PITR_STANZA` is set: a pgBackRest backup (full on Sundays, differential otherwise), then `pgbackrest verify`. `off` declares no schedule.',
  }),
  pitrRestoreCheck: bool({
    env: 'PLINTH_PITR_RESTORE_CHECK',
    default: true,
    doc: "After each scheduled pgBackRest backup and `pgbackrest verify`, prove it by a real restore: a canary row is written and its WAL archived, the repository is restored into a scratch cluster under `<repository>/scratch` (started with `pg_ctl` on a spare port, archiving off), the canary and Plinth's tables are read back, and the cluster is removed. Needs room for a second copy of the database on the repository's disk; `false` keeps only `pgbackrest verify`.",
  }),
  pitrS3Bucket: optionalStr({
    env: 'PLINTH_PITR_S3_BUCKET',
    doc: "When set, the pgBackRest repository is in this S3-compatible bucket (`repo1-type=s3`) instead of `<PLINTH_PITR_REPO_PATH>/repo` (which then keeps only pgBackRest's logs, locks, spool and scratch restores). pgBackRest speaks HTTPS only: see docs/operations/backups.md.",
  }),
  pitrS3Prefix: str({
    env: 'PLINTH_PITR_S3_PREFIX',
    default: '/pgbackrest',
    doc: 'Path of the pgBackRest repository in `PLINTH_PITR_S3_BUCKET` (`repo1-path`).',
  }),
  pitrS3Endpoint: url({
    env: 'PLINTH_PITR_S3_ENDPOINT',
    protocols: ['https:'],
    defaultDoc: '`https://s3.<region>.amazonaws.com`',
    doc: 'HTTPS endpoint of the S3-compatible server for the pgBackRest repository (`https://host[:port]`; pgBackRest does not speak plain HTTP).',
  }),
  pitrS3Region: str({
    env: 'PLINTH_PITR_S3_REGION',
    default: 'us-east-1',
    doc: 'Region of `PLINTH_PITR_S3_BUCKET`.',
  }),
  pitrS3AccessKeyId: optionalStr({
    env: 'PLINTH_PITR_S3_ACCESS_KEY_ID',
    doc: 'Access key id for `PLINTH_PITR_S3_BUCKET` (written into the 0600 pgBackRest configuration).',
  }),
  pitrS3SecretAccessKey: optionalStr({
    env: 'PLINTH_PITR_S3_SECRET_ACCESS_KEY',
    secret: true,
    doc: 'Secret access key for `PLINTH_PITR_S3_BUCKET` (written into the 0600 pgBackRest configuration, never on a command line).',
  }),
  pitrS3PathStyle: bool({
    env: 'PLINTH_PITR_S3_PATH_STYLE',
    default: false,
    doc: 'Path-style bucket URLs (`repo1-s3-uri-style=path`), which most S3-compatible servers (MinIO …) need.',
  }),
  pitrS3CaFile: optionalStr({
    env: 'PLINTH_PITR_S3_CA_FILE',
    doc: "CA certificate file pgBackRest trusts for the S3 endpoint (`repo1-storage-ca-file`), for a server with a private CA; unset: the system's.",
  }),
  pitrPgBin: optionalStr({
    env: 'PLINTH_PITR_PG_BIN',
    defaultDoc: "Debian's `/usr/lib/postgresql/<major>/bin`, else `PATH`",
    doc: "Directory of the PostgreSQL server programs (`pg_ctl`) of the archived server's major version, for the scratch clusters of restore checks and PITR drills.",
  }),
  masterKey: {
    ...optionalStr({
      env: 'PLINTH_MASTER_KEY',
      secret: true,
      doc: 'Key that wraps the data keys encrypting secrets stored in the database (e.g. TOTP secrets): base64 of exactly 32 random bytes (`openssl rand -base64 32`). Required in staging and production; unset in development and test, one is generated into `PLINTH_DATA_DIR/master.key`. Keep it safe: values it protects cannot be read without it. To change it, see docs/operations/key-rotation.md.',
    }),
    type: 'base64 (32 bytes)',
  },
  masterKeyPrevious: {
    ...optionalStr({
      env: 'PLINTH_MASTER_KEY_PREVIOUS',
      secret: true,
      doc: 'While changing the master key: the old `PLINTH_MASTER_KEY`, used only to unwrap data keys it wrapped until `plinth keys rewrap` has re-wrapped them under the new one; then remove it (docs/operations/key-rotation.md).',
    }),
    type: 'base64 (32 bytes)',
    parse(raw: string) {
      if (!decodeMasterKey(raw)) throw new Error('expected base64 of exactly 32 bytes')
      return raw.trim()
    },
  },
  keysRefresh: atLeast(
    1000,
    duration({
      env: 'PLINTH_KEYS_REFRESH',
      default: 30_000,
      doc: 'How often each process reloads the data keys, so that a key rotated by `plinth keys rotate` reaches every replica (at least 1s). `plinth keys rotate` waits twice this before its final sweep.',
    }),
  ),
  revision: str({
    env: 'PLINTH_REVISION',
    default: 'unknown',
    doc: 'Source revision of this build, shown in `plinth_build_info` and in `/health` for operators, so a canary is told from the stable release (the image build sets it).',
  }),
  publicUrl: url({
    env: 'PLINTH_PUBLIC_URL',
    protocols: ['http:', 'https:'],
    doc: 'The URL users reach Plinth at, used in links Plinth generates (e-mails, redirects).',
  }),

  databaseUrl: url({
    env: 'DATABASE_URL',
    protocols: ['postgres:', 'postgresql:'],
    secret: true,
    doc: 'PostgreSQL connection URL. Unset: the embedded database (PGlite) in `PLINTH_DATA_DIR`. Add `?sslmode=require` for TLS.',
  }),
  dbPoolMax: int({
    env: 'PLINTH_DB_POOL_MAX',
    default: 10,
    min: 1,
    max: 1000,
    doc: 'Maximum connections in the pool per process.',
  }),
  dbConnectTimeout: duration({
    env: 'PLINTH_DB_CONNECT_TIMEOUT',
    default: 5000,
    doc: 'How long one connection attempt may take.',
  }),
  dbStatementTimeout: duration({
    env: 'PLINTH_DB_STATEMENT_TIMEOUT',
    default: 30_000,
    doc: 'Server-side limit for one SQL statement (`statement_timeout`); 0 disables it.',
  }),
  dbQueryTimeout: duration({
    env: 'PLINTH_DB_QUERY_TIMEOUT',
    default: 35_000,
    doc: 'Client-side limit for the answer to one SQL statement: when the network or the server goes silent (a half-open connection) the statement fails with 503 after this long and its connection is dropped. Keep it above `PLINTH_DB_STATEMENT_TIMEOUT`; 0 disables it.',
  }),
  dbIdleTimeout: duration({
    env: 'PLINTH_DB_IDLE_TIMEOUT',
    default: 30_000,
    doc: 'How long an idle pooled connection is kept.',
  }),
  dbConnectDeadline: duration({
    env: 'PLINTH_DB_CONNECT_DEADLINE',
    default: 60_000,
    doc: 'At start, how long to keep retrying (exponential backoff with jitter) before giving up.',
  }),
  dbPreparedStatements: bool({
    env: 'PLINTH_DB_PREPARED_STATEMENTS',
    default: true,
    doc: 'On PostgreSQL, send a few fixed writes Plinth repeats on every request of a kind (the audit row) as named prepared statements, parsed once per connection. Set false behind a pooler in transaction mode that does not carry prepared statements across server connections (PgBouncer before 1.21, or with `max_prepared_statements = 0`).',
  }),
  migrateOnStart: bool({
    env: 'PLINTH_MIGRATE_ON_START',
    default: true,
    doc: 'Apply pending migrations at start, under an advisory lock (safe with many replicas). When false, run `plinth migrate up` yourself.',
  }),

  redisUrl: url({
    env: 'REDIS_URL',
    protocols: ['redis:', 'rediss:'],
    secret: true,
    doc: 'Redis connection URL. Optional: enables shared rate limits, caches and pub/sub across replicas.',
  }),
  redisCommandTimeout: duration({
    env: 'PLINTH_REDIS_COMMAND_TIMEOUT',
    default: 1000,
    doc: 'How long one Redis command may wait for its answer before the caller falls back (cache to memory, rate limits to in-process counters): a silent or slow Redis never holds a request longer. 0 disables it.',
  }),
  redisPrefix: str({
    env: 'PLINTH_REDIS_PREFIX',
    default: 'plinth:',
    doc: 'Prefix for every Redis key Plinth writes.',
  }),

  smtpUrl: url({
    env: 'SMTP_URL',
    protocols: ['smtp:', 'smtps:'],
    secret: true,
    doc: 'SMTP server for outgoing e-mail (password resets, invitations), credentials included: `smtps://user:pass@smtp.example.com:465`, or `smtp://user:pass@smtp.example.com:587` (upgraded with STARTTLS, which staging and production require when the URL carries credentials; `?requireTLS=false` opts out). Unset: in development and test messages go to the log and the `mail_outbox` table; in staging and production sending fails with `PLINTH_MAIL_UNAVAILABLE`, `plinth start` warns, and `POST /api/v1/admin/invites` answers 503 `PLINTH_MAIL_UNAVAILABLE` before creating anything (an invitation is its e-mail).',
  }),
  mailFrom: {
    ...str({
      env: 'PLINTH_MAIL_FROM',
      default: 'Plinth <no-reply@localhost>',
      doc: 'Sender of the e-mail Plinth sends, `address` or `Name <address>`; use a domain your SMTP server may send for.',
    }),
    parse(raw: string) {
      assertMailbox(raw)
      return raw.trim()
    },
  },
  smtpTimeout: atLeast(
    100,
    duration({
      env: 'PLINTH_SMTP_TIMEOUT',
      default: 10_000,
      doc: 'Longest the SMTP server may take to connect, greet or answer, and the deadline for one message, retries included (at least 100ms).',
    }),
  ),
  importRetention: atLeast(
    86_400_000,
    duration({
      env: 'PLINTH_IMPORT_RETENTION',
      default: 90 * 86_400_000,
      defaultDoc: '`90d`',
      doc: 'How long a finished import (complete or failed) keeps its checkpoint and rejected-row report before the retention job deletes them; running imports are kept so that they can resume. At least 1d.',
    }),
  ),
  mailRetention: atLeast(
    3_600_000,
    duration({
      env: 'PLINTH_MAIL_RETENTION',
      default: 30 * 86_400_000,
      defaultDoc: '`30d`',
      doc: 'How long e-mail recorded in `mail_outbox` (bodies included; the secrets of single-use links are masked in them, except in messages captured for a developer without `SMTP_URL`) is kept before the retention job deletes it, whatever its status. At least 1h.',
    }),
  ),

  replicas: int({
    env: 'PLINTH_REPLICAS',
    default: 1,
    min: 1,
    max: 1000,
    doc: 'How many replicas you run. More than one requires `DATABASE_URL` (the embedded database is single-process).',
  }),

  logLevel: oneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const, {
    env: 'PLINTH_LOG_LEVEL',
    default: (env) => (env === 'development' ? 'debug' : env === 'test' ? 'warn' : 'info'),
    defaultDoc: '`debug` in development, `warn` in test, `info` otherwise',
    doc: 'Minimum level written to the log; `silent` turns logging off.',
  }),
  logFormat: oneOf(['json', 'pretty'] as const, {
    env: 'PLINTH_LOG_FORMAT',
    default: (env) => (env === 'development' ? 'pretty' : 'json'),
    defaultDoc: '`pretty` in development, `json` otherwise',
    doc: 'JSON lines, or human-readable output (development only).',
  }),
  logBodies: bool({
    env: 'PLINTH_LOG_BODIES',
    default: false,
    doc: 'Log request bodies at debug level (redacted). Refused in production.',
  }),

  bodyLimit: size({
    env: 'PLINTH_BODY_LIMIT',
    default: 1024 * 1024,
    doc: 'Largest request body accepted (413 above).',
  }),
  requestTimeout: duration({
    env: 'PLINTH_REQUEST_TIMEOUT',
    default: 60_000,
    doc: 'Time allowed to receive a whole request; protects against slow clients. 0 disables it.',
  }),
  trustProxy: list({
    env: 'PLINTH_TRUST_PROXY',
    default: [],
    item: assertCidr,
    doc: 'Addresses or CIDR ranges of reverse proxies whose `X-Forwarded-For` is trusted for the client IP.',
  }),
  tlsCertFile: optionalStr({
    env: 'PLINTH_TLS_CERT_FILE',
    doc: 'PEM certificate (chain) to serve HTTPS directly, TLS 1.2 or later; set together with `PLINTH_TLS_KEY_FILE`. Unset: plain HTTP, with TLS terminated by your proxy (docs/operations/tls.md).',
  }),
  tlsKeyFile: optionalStr({
    env: 'PLINTH_TLS_KEY_FILE',
    doc: 'PEM private key of `PLINTH_TLS_CERT_FILE`.',
  }),
  corsOrigins: list({
    env: 'PLINTH_CORS_ORIGINS',
    default: [],
    doc: 'Origins allowed to call the API from a browser (e.g. `https://app.example.com`). Empty: no cross-origin access. `*` allows any origin, without credentials.',
  }),
  corsCredentials: bool({
    env: 'PLINTH_CORS_CREDENTIALS',
    default: false,
    doc: 'Allow cookies on cross-origin requests from `PLINTH_CORS_ORIGINS` (never with `*`).',
  }),
  rateLimitApi: int({
    env: 'PLINTH_RATE_LIMIT_API',
    default: 100,
    min: 0,
    max: 1_000_000,
    doc: 'Requests one client (the signed-in user, otherwise the IP address) may make per `PLINTH_RATE_LIMIT_WINDOW` to API routes; above it, 429 with `Retry-After`. 0 turns the tier off.',
  }),
  rateLimitAuth: int({
    env: 'PLINTH_RATE_LIMIT_AUTH',
    default: 20,
    min: 0,
    max: 1_000_000,
    doc: 'Like `PLINTH_RATE_LIMIT_API`, for authentication routes (sign-in, sign-up, password reset, MFA), counted separately: per IP address whatever session or token is sent, and for routes that name an account (sign-in, sign-up, reset) per account too. 0 turns the tier off outside staging and production.',
  }),
  rateLimitUpload: int({
    env: 'PLINTH_RATE_LIMIT_UPLOAD',
    default: 10,
    min: 0,
    max: 1_000_000,
    doc: 'Like `PLINTH_RATE_LIMIT_API`, for upload routes, counted separately. 0 turns the tier off.',
  }),
  rateLimitWindow: duration({
    env: 'PLINTH_RATE_LIMIT_WINDOW',
    default: 60_000,
    doc: "The window rate limits count over, from a client's first request in it (1s to 1d). Counters live in Redis when `REDIS_URL` is set (shared by replicas), in-process otherwise and whenever Redis fails.",
  }),
  apiDocs: bool({
    env: 'PLINTH_API_DOCS',
    default: (env) => env !== 'production',
    defaultDoc: '`false` in production, `true` otherwise',
    doc: 'Serve the API docs UI at `/api/docs` (the OpenAPI document at `/api/openapi.json` is always served).',
  }),

  signupMode: oneOf(['open', 'invite', 'closed'] as const, {
    env: 'PLINTH_SIGNUP_MODE',
    default: (env) => (isLocal(env) ? 'open' : 'invite'),
    defaultDoc: '`open` in development and test, `invite` otherwise',
    doc: 'Who may create an account: anyone (`open`), holders of an invitation (`invite`), or nobody (`closed`; admins create users).',
  }),
  sessionIdleTimeout: duration({
    env: 'PLINTH_SESSION_IDLE_TIMEOUT',
    default: 30 * 60_000,
    doc: 'A session unused for this long expires (NIST AAL2: 30 minutes).',
  }),
  sessionMaxAge: duration({
    env: 'PLINTH_SESSION_MAX_AGE',
    default: 12 * 3_600_000,
    doc: 'A session expires this long after sign-in however active it is (NIST AAL2: 12 hours).',
  }),
  sessionRetention: atLeast(
    3_600_000,
    duration({
      env: 'PLINTH_SESSION_RETENTION',
      default: 30 * 86_400_000,
      defaultDoc: '`30d`',
      doc: 'How long ended sessions (signed out, revoked, idle or expired) and revoked or expired API tokens are kept, with their IP address and user agent, before the retention job deletes them. At least 1h.',
    }),
  ),
  auditRetention: atLeast(
    86_400_000,
    duration({
      env: 'PLINTH_AUDIT_RETENTION',
      default: 400 * 86_400_000,
      defaultDoc: '`400d`',
      doc: 'Audit rows older than this are pruned by the retention job (or `plinth audit prune`), leaving a checkpoint so the hash chain still verifies. At least 1d.',
    }),
  ),
  auditVerifyCron: str({
    env: 'PLINTH_AUDIT_VERIFY_CRON',
    default: '23 3 * * *',
    doc: 'Cron expression (UTC) of the built-in `plinth.audit-verify` schedule: verifies the audit hash chain (as `plinth audit verify` does), sets `plinth_audit_last_verification_timestamp_seconds`, and on a broken chain counts in `plinth_audit_verification_failures_total` and emits the `audit.verification_failed` event. `off` declares no schedule.',
  }),
  adminEmail: optionalStr({
    env: 'PLINTH_ADMIN_EMAIL',
    doc: 'On first start with no administrator, create one with this e-mail address (and PLINTH_ADMIN_PASSWORD_FILE).',
  }),
  adminPassword: optionalStr({
    env: 'PLINTH_ADMIN_PASSWORD',
    secret: true,
    doc: 'Password of the first administrator; prefer PLINTH_ADMIN_PASSWORD_FILE. Used only while no administrator exists.',
  }),

  opsNetworks: list({
    env: 'PLINTH_OPS_NETWORKS',
    default: ['127.0.0.0/8', '::1/128'],
    item: assertCidr,
    doc: 'Client networks treated as operators: they see `/health` details and may scrape `/api/metrics`.',
  }),
  opsToken: optionalStr({
    env: 'PLINTH_OPS_TOKEN',
    secret: true,
    doc: 'Bearer token that grants operator access to `/health` details and `/api/metrics` from anywhere (at least 32 characters).',
  }),
  metricsPublic: bool({
    env: 'PLINTH_METRICS_PUBLIC',
    default: false,
    doc: 'Let anyone scrape `/api/metrics`, not only operators.',
  }),
  healthTimeout: duration({
    env: 'PLINTH_HEALTH_TIMEOUT',
    default: 2000,
    doc: 'Longest a single health check may take before it counts as down.',
  }),

  shutdownDelay: duration({
    env: 'PLINTH_SHUTDOWN_DELAY',
    default: (env) => (isLocal(env) ? 0 : 5000),
    defaultDoc: '`0` in development and test, `5s` otherwise',
    doc: 'After SIGTERM, how long to keep accepting connections (with `/ready` at 503) so load balancers stop routing here.',
  }),
  shutdownTimeout: duration({
    env: 'PLINTH_SHUTDOWN_TIMEOUT',
    default: 30_000,
    doc: 'After the delay, how long in-flight requests and work may take before connections are cut.',
  }),
  maxEventLoopDelay: duration({
    env: 'PLINTH_MAX_EVENT_LOOP_DELAY',
    default: 1000,
    doc: 'Above this event-loop delay, requests get 503 with `Retry-After` instead of queueing. 0 disables the check.',
  }),
  maxHeapUsedRatio: ratio({
    env: 'PLINTH_MAX_HEAP_USED_RATIO',
    default: 0.95,
    doc: 'Above this share of the V8 heap limit, requests get 503 with `Retry-After`. 0 disables the check.',
  }),

  jobsConcurrency: int({
    env: 'PLINTH_JOBS_CONCURRENCY',
    default: 2,
    min: 1,
    max: 1000,
    doc: 'How many jobs of one type a worker process runs at once, unless the job type sets its own `concurrency`.',
  }),
  jobsPollInterval: atLeast(
    500,
    duration({
      env: 'PLINTH_JOBS_POLL_INTERVAL',
      default: 1000,
      doc: 'How often an idle worker looks for new jobs (at least 500ms). Jobs enqueued by the same process, and on PostgreSQL any process, wake workers at once; polling is the backstop. On the embedded database one query per interval looks for due jobs of every type and wakes their workers.',
    }),
  ),
  jobsLease: atLeast(
    10_000,
    duration({
      env: 'PLINTH_JOBS_LEASE',
      default: 30_000,
      doc: 'A running job is renewed by its worker every half lease; a worker that vanishes (kill -9, lost host) gives its jobs back after at most this lease plus `PLINTH_JOBS_MONITOR_INTERVAL`, and they are retried elsewhere after their retry delay (the crash uses one of their retries). At least 10s.',
    }),
  ),
  jobsMonitorInterval: atLeast(
    1000,
    duration({
      env: 'PLINTH_JOBS_MONITOR_INTERVAL',
      default: 10_000,
      doc: 'How often workers look for expired leases and timed-out jobs, and refresh queue statistics (at least 1s).',
    }),
  ),
  jobsMaxQueued: int({
    env: 'PLINTH_JOBS_MAX_QUEUED',
    default: 100_000,
    min: 1,
    doc: 'Backpressure: when a job type has more waiting jobs than this (unless it sets its own `maxQueued`), enqueueing answers 503 with `Retry-After` instead of growing the queue.',
  }),
  jobsIdempotencyWindow: duration({
    env: 'PLINTH_JOBS_IDEMPOTENCY_WINDOW',
    default: 86_400_000,
    doc: 'How long an idempotency key is remembered: the same key for the same job type within this window returns the existing job instead of creating one.',
  }),
  jobsHeartbeatCron: str({
    env: 'PLINTH_JOBS_HEARTBEAT_CRON',
    default: '* * * * *',
    doc: 'Cron expression (UTC) of the built-in heartbeat job, whose last completion `/health` reports.',
  }),
  jobsHeartbeatMaxAge: duration({
    env: 'PLINTH_JOBS_HEARTBEAT_MAX_AGE',
    default: 300_000,
    doc: 'When the last heartbeat job completed longer ago than this, the `jobs` health check turns `degraded`: no worker is running jobs.',
  }),
  retentionCron: str({
    env: 'PLINTH_RETENTION_CRON',
    default: '17 3 * * *',
    doc: 'Cron expression (UTC) of the built-in retention job, which deletes expired sessions and tokens, old e-mail, webhook deliveries and audit rows (default daily at 03:17). Pause the `plinth.retention` schedule to stop it (docs/operations/retention.md).',
  }),
  jobsDbPool: int({
    env: 'PLINTH_JOBS_DB_POOL',
    default: 4,
    min: 1,
    max: 100,
    doc: 'On PostgreSQL, connections the job engine opens besides the main pool (plus one for LISTEN/NOTIFY). The embedded database shares the main pool.',
  }),

  webhooksAllowPrivate: bool({
    env: 'PLINTH_WEBHOOKS_ALLOW_PRIVATE',
    default: false,
    doc: 'Let webhook URLs reach loopback, private (RFC 1918, fc00::/7), link-local (incl. cloud metadata), carrier-grade NAT and other non-public addresses. Off, such URLs are refused when a subscription is saved and again at each delivery (against DNS rebinding), to prevent server-side request forgery.',
  }),
  webhooksAllowHttp: bool({
    env: 'PLINTH_WEBHOOKS_ALLOW_HTTP',
    default: (env) => isLocal(env),
    defaultDoc: '`true` in development and test, `false` otherwise',
    doc: 'Accept plain `http:` webhook URLs. Off, only `https:` is accepted (payloads may carry personal data; the signature protects integrity, not confidentiality).',
  }),
  webhooksTimeout: between(
    1000,
    300_000,
    duration({
      env: 'PLINTH_WEBHOOKS_TIMEOUT',
      default: 10_000,
      doc: 'How long one webhook delivery attempt may take (connect, send, response) before it counts as failed and is retried (1s to 5m).',
    }),
  ),
  webhooksRetryDelay: between(
    1000,
    3_600_000,
    duration({
      env: 'PLINTH_WEBHOOKS_RETRY_DELAY',
      default: 10_000,
      doc: 'Wait before the first retry of a failed webhook delivery; each further retry waits about twice as long (with jitter, at most 1h), for 10 retries.',
    }),
  ),
  webhooksConcurrency: int({
    env: 'PLINTH_WEBHOOKS_CONCURRENCY',
    default: 4,
    min: 1,
    max: 256,
    doc: 'Webhook deliveries one worker process runs at once (a slow receiver holds one for up to `PLINTH_WEBHOOKS_TIMEOUT`).',
  }),
  webhooksRetention: duration({
    env: 'PLINTH_WEBHOOKS_RETENTION',
    default: 30 * 86_400_000,
    defaultDoc: '`30d`',
    doc: 'How long delivery attempts are kept (`GET /api/v1/webhooks/{id}/deliveries`); older ones are pruned as new attempts are recorded, and by the retention job.',
  }),
  alertsEnabled: bool({
    env: 'PLINTH_ALERTS_ENABLED',
    default: true,
    doc: 'Built-in alerting (docs/operations/alerting.md): every process records its own metrics every `PLINTH_ALERTS_INTERVAL`, and one worker (an advisory lock elects it) evaluates the alert conditions and anomaly detectors over all of them, opening and resolving incidents (`GET /api/v1/admin/incidents`). `false` turns both off (with Prometheus and Alertmanager doing the job, say).',
  }),
  alertsInterval: between(
    1000,
    300_000,
    duration({
      env: 'PLINTH_ALERTS_INTERVAL',
      default: 15_000,
      doc: 'How often each process records its metrics for the built-in alerting, and how often the elected worker evaluates them (1s to 5m).',
    }),
  ),
  alertsEmail: list({
    env: 'PLINTH_ALERTS_EMAIL',
    default: [],
    defaultDoc: 'none',
    item: assertAddress,
    doc: 'Addresses that receive an e-mail when an incident opens or resolves (comma-separated). Webhook subscriptions to `incident.*` receive the same as signed events.',
  }),
  alertsEscalationEmail: list({
    env: 'PLINTH_ALERTS_ESCALATION_EMAIL',
    default: [],
    defaultDoc: 'none',
    item: assertAddress,
    doc: 'The second channel: addresses e-mailed when an incident stays unacknowledged for `PLINTH_ALERTS_ESCALATE_AFTER` (together with the `incident.escalated` event).',
  }),
  alertsEscalateAfter: between(
    10_000,
    7 * 86_400_000,
    duration({
      env: 'PLINTH_ALERTS_ESCALATE_AFTER',
      default: 900_000,
      defaultDoc: '`15m`',
      doc: 'An open incident nobody acknowledged (`POST /api/v1/admin/incidents/{id}/acknowledge`) after this long is escalated to the second channel, once.',
    }),
  ),
  alertsRetention: duration({
    env: 'PLINTH_ALERTS_RETENTION',
    default: 90 * 86_400_000,
    defaultDoc: '`90d`',
    doc: 'How long resolved incidents (and their timelines) are kept; the retention job deletes older ones.',
  }),

  errorsRetention: atLeast(
    3_600_000,
    duration({
      env: 'PLINTH_ERRORS_RETENTION',
      default: 90 * 86_400_000,
      defaultDoc: '`90d`',
      doc: 'How long an error group (`GET /api/v1/admin/errors`) is kept after it was last seen, whatever its status; the retention job deletes older ones. At least 1h.',
    }),
  ),
  otelEndpoint: url({
    env: 'OTEL_EXPORTER_OTLP_ENDPOINT',
    protocols: ['http:', 'https:'],
    doc: 'OpenTelemetry collector base URL (e.g. `http://otel-collector:4318`): traces are exported to `<url>/v1/traces` over OTLP HTTP/protobuf. Unset (and no `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`): tracing is off and its SDK is never loaded. See docs/operations/observability.md.',
  }),
  otelTracesEndpoint: url({
    env: 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT',
    protocols: ['http:', 'https:'],
    doc: 'Full URL traces are POSTed to (OTLP HTTP/protobuf), used as is; wins over `OTEL_EXPORTER_OTLP_ENDPOINT`.',
  }),
  otelHeaders: optionalStr({
    env: 'OTEL_EXPORTER_OTLP_HEADERS',
    secret: true,
    doc: 'Headers sent with every export, `key=value` pairs separated by commas, values URL-encoded (e.g. `authorization=Bearer%20abc`): how a hosted collector takes its credentials.',
  }),
  otelServiceName: str({
    env: 'OTEL_SERVICE_NAME',
    default: 'plinth',
    doc: 'The `service.name` resource attribute of every span (how a tracing backend names this service).',
  }),
  otelTracesSampler: oneOf(
    [
      'parentbased_always_on',
      'parentbased_always_off',
      'parentbased_traceidratio',
      'always_on',
      'always_off',
      'traceidratio',
    ] as const,
    {
      env: 'OTEL_TRACES_SAMPLER',
      default: 'parentbased_always_on',
      doc: "Which traces are recorded: `parentbased_traceidratio` keeps `OTEL_TRACES_SAMPLER_ARG` of new traces and follows the caller's decision (`traceparent`) otherwise; `always_on`/`always_off` ignore the caller; the `parentbased_` forms follow it.",
    },
  ),
  otelTracesSamplerArg: ratio({
    env: 'OTEL_TRACES_SAMPLER_ARG',
    default: 1,
    doc: 'The ratio of the `traceidratio` samplers, 0 to 1 (`0.01`: one trace in a hundred).',
  }),
  otelSdkDisabled: bool({
    env: 'OTEL_SDK_DISABLED',
    default: false,
    doc: 'Turns tracing off even when an OTLP endpoint is set.',
  }),

  filesDir: optionalStr({
    env: 'PLINTH_FILES_DIR',
    defaultDoc: '`<PLINTH_DATA_DIR>/files`',
    doc: 'Directory uploaded files are stored in (content-addressed, one folder per owner; docs/operations/files.md). Required when `PLINTH_DATA_DIR` is `memory://` and no `PLINTH_FILES_S3_BUCKET` is set. Include it in your backups.',
  }),
  filesS3Bucket: optionalStr({
    env: 'PLINTH_FILES_S3_BUCKET',
    doc: 'When set, uploaded files are stored in this S3-compatible bucket instead of `PLINTH_FILES_DIR` (turn bucket versioning on: that is what makes them recoverable).',
  }),
  filesS3Prefix: str({
    env: 'PLINTH_FILES_S3_PREFIX',
    default: 'files/',
    doc: 'Key prefix of the objects in `PLINTH_FILES_S3_BUCKET`.',
  }),
  filesS3Endpoint: optionalStr({
    env: 'PLINTH_FILES_S3_ENDPOINT',
    doc: 'Endpoint of an S3-compatible service (MinIO, R2, …); unset for AWS S3.',
  }),
  filesS3Region: str({
    env: 'PLINTH_FILES_S3_REGION',
    default: 'us-east-1',
    doc: 'Region of the files bucket.',
  }),
  filesS3AccessKeyId: optionalStr({
    env: 'PLINTH_FILES_S3_ACCESS_KEY_ID',
    doc: 'Access key id for the files bucket; unset to use the AWS SDK default credential chain.',
  }),
  filesS3SecretAccessKey: optionalStr({
    env: 'PLINTH_FILES_S3_SECRET_ACCESS_KEY',
    secret: true,
    doc: 'Secret access key for the files bucket (with `PLINTH_FILES_S3_ACCESS_KEY_ID`).',
  }),
  filesS3ForcePathStyle: bool({
    env: 'PLINTH_FILES_S3_FORCE_PATH_STYLE',
    default: false,
    doc: 'Address the files bucket as `<endpoint>/<bucket>` (MinIO, s3rver) instead of `<bucket>.<endpoint>`.',
  }),
  filesMaxFileSize: size({
    env: 'PLINTH_FILES_MAX_FILE_SIZE',
    default: 25 * 1024 * 1024,
    doc: 'Largest file one upload may carry (413 `PLINTH_FILE_TOO_LARGE` above; the upload stops as soon as it passes the limit).',
  }),
  filesMaxRequestSize: size({
    env: 'PLINTH_FILES_MAX_REQUEST_SIZE',
    default: 100 * 1024 * 1024,
    doc: 'Largest total of the files of one multipart request to `POST /api/v1/files`.',
  }),
  filesMaxFilesPerRequest: int({
    env: 'PLINTH_FILES_MAX_FILES_PER_REQUEST',
    default: 10,
    min: 1,
    max: 1000,
    doc: 'Files one multipart request may carry.',
  }),
  filesQuota: size({
    env: 'PLINTH_FILES_QUOTA',
    default: 1024 * 1024 * 1024,
    doc: 'Bytes of files one user may store (413 `PLINTH_FILE_QUOTA_EXCEEDED` above). Administrators are held to `PLINTH_FILES_QUOTA_ADMIN`.',
  }),
  filesQuotaAdmin: size({
    env: 'PLINTH_FILES_QUOTA_ADMIN',
    default: 10 * 1024 * 1024 * 1024,
    doc: 'Bytes of files one administrator may store.',
  }),
  filesAllowedTypes: list({
    env: 'PLINTH_FILES_ALLOWED_TYPES',
    default: [
      'image/png',
      'image/jpeg',
      'image/gif',
      'image/webp',
      'image/avif',
      'application/pdf',
      'text/plain',
      'application/zip',
      'audio/mpeg',
      'audio/ogg',
      'video/mp4',
      'video/webm',
    ],
    doc: 'Media types (decided from the bytes, never from the name or the Content-Type sent) accepted for the `attachment` purpose; `avatar` and `image` accept raster images only. `image/svg+xml` and `text/html` may be added: they are then always served as attachments in a sandbox.',
  }),
  filesImageMaxPixels: int({
    env: 'PLINTH_FILES_IMAGE_MAX_PIXELS',
    default: 50_000_000,
    min: 1,
    max: 1_000_000_000,
    doc: 'Largest image (width × height, per frame) accepted and decoded; larger ones are refused as `PLINTH_FILE_IMAGE_INVALID` (decompression bombs).',
  }),
  filesImageWidths: list({
    env: 'PLINTH_FILES_IMAGE_WIDTHS',
    default: ['64', '128', '256', '512', '1024', '2048'],
    item: (v) => {
      if (!/^[1-9]\d{0,4}$/.test(v)) throw new Error(`"${v}" is not a width in pixels`)
    },
    doc: 'The widths and heights on-the-fly image transforms (`?w=&h=`) may ask for; other sizes are refused (so that the transform cache stays bounded).',
  }),
  filesLinkMaxAge: duration({
    env: 'PLINTH_FILES_LINK_MAX_AGE',
    default: 7 * 86_400_000,
    defaultDoc: '`7d`',
    doc: 'Longest lifetime of a signed share link (`POST /api/v1/files/{id}/links`).',
  }),
  filesUploadIdleTimeout: duration({
    env: 'PLINTH_FILES_UPLOAD_IDLE_TIMEOUT',
    default: 30_000,
    doc: 'An upload that sends no bytes for this long is cut (408 `PLINTH_HTTP_REQUEST_TIMEOUT`) and what it sent is removed; `PLINTH_REQUEST_TIMEOUT` bounds the whole request.',
  }),
  filesSweepCron: str({
    env: 'PLINTH_FILES_SWEEP_CRON',
    default: '41 4 * * *',
    doc: 'Cron expression (UTC) of the built-in `plinth.files-sweep` schedule, which removes stored objects no file row refers to and stale staged uploads, and reports rows whose object is missing (default daily at 04:41). `off` declares no schedule.',
  }),
  filesClamdSocket: optionalStr({
    env: 'PLINTH_FILES_CLAMD_SOCKET',
    doc: 'Path of a ClamAV `clamd` socket (Debian `clamav-daemon`: `/run/clamav/clamd.ctl`), or `host:port`. When set, every upload is scanned before it is stored; an infected file is refused (422 `PLINTH_FILE_INFECTED`) and an unreachable scanner refuses uploads (503).',
  }),
  filesTusDir: optionalStr({
    env: 'PLINTH_FILES_TUS_DIR',
    doc: 'Directory where resumable (tus) uploads accumulate until their last byte; default `tus` in the staging folder (inside the files directory on the disk, a local temporary folder with S3). With several replicas, point every one at one shared directory (a shared volume) and set `REDIS_URL`: any replica then resumes any upload, the upload locks being held in Redis.',
  }),
  staticDir: optionalStr({
    env: 'PLINTH_STATIC_DIR',
    doc: 'Directory of a built single-page app to serve (e.g. `dist/`): files by path, `index.html` for unknown paths outside `/api`, hashed assets cached for a year, precompressed `.br`/`.gz` siblings when present.',
  }),
  staticPrefix: str({
    env: 'PLINTH_STATIC_PREFIX',
    default: '/',
    doc: 'URL prefix the `PLINTH_STATIC_DIR` app is served under (e.g. `/app/`).',
  }),
  staticCsp: str({
    env: 'PLINTH_STATIC_CSP',
    default: '',
    doc: "Directives added to the strict Content-Security-Policy of the static app (`default-src 'self'`, no inline script, no framing), e.g. `connect-src 'self' https://api.example.com; img-src 'self' https://cdn.example.com`; a directive named here replaces the default one.",
  }),
  eventsStreamHeartbeat: between(
    1000,
    300_000,
    duration({
      env: 'PLINTH_EVENTS_STREAM_HEARTBEAT',
      default: 15_000,
      doc: 'How often an open event stream (`GET /api/v1/events/stream`) gets a heartbeat comment (so that proxies keep it open) and its session or API token is checked again: a revoked one ends the stream (1s to 5m).',
    }),
  ),
  eventsStreamRetry: between(
    0,
    300_000,
    duration({
      env: 'PLINTH_EVENTS_STREAM_RETRY',
      default: 3000,
      doc: 'The `retry:` hint an event stream sends first: how long a browser waits before it reconnects (with `Last-Event-ID`) after the stream ends.',
    }),
  ),
  eventsStreamMaxAge: between(
    10,
    86_400_000,
    duration({
      env: 'PLINTH_EVENTS_STREAM_MAX_AGE',
      default: 3_600_000,
      doc: 'How long one event stream stays open before the server ends it; the client reconnects with `Last-Event-ID` (and loses nothing within the history), possibly to another replica, so streams spread over replicas added since (10ms to 24h).',
    }),
  ),
  eventsStreamMax: int({
    env: 'PLINTH_EVENTS_STREAM_MAX',
    default: 1000,
    min: 0,
    max: 100_000,
    doc: 'Event streams one process holds open at most; one more is answered 503 `PLINTH_EVENTS_STREAM_FULL` with `Retry-After`. 0 turns the stream off (every request gets that 503).',
  }),
  eventsStreamHistory: int({
    env: 'PLINTH_EVENTS_STREAM_HISTORY',
    default: 1000,
    min: 1,
    max: 100_000,
    doc: 'Recent events kept (in each process, and in the Redis stream when `REDIS_URL` is set) for clients that reconnect with `Last-Event-ID`; a client that missed more gets a `stream.gap` event.',
  }),
} as const

export type PlinthConfig = ConfigOf<typeof configSchema>
