/**
 * The one declaration of the `plinth` command: every command, action, option and `--json` shape.
 * `--help`, the argument checks, shell completion, the README's CLI block and docs/cli.md are all
 * generated from it (cli-spec.ts). To add a command, add an entry here whose `load` imports its
 * handler (`(input: CommandInput, io: CliIo) => Promise<number>`) from its own file in src/cli.
 */
import { JOB_STATES } from '../core/jobs.ts'
import { UsageError } from './cli-io.ts'
import { type CommandDecl, completionScript, type OptionDecl } from './cli-spec.ts'

const ROLES = ['api', 'worker', 'all']
const USER_ROLES = ['admin', 'operator', 'member', 'viewer']

const DB_NOTE = `Connects with the server's configuration (DATABASE_URL, or the embedded database in
PLINTH_DATA_DIR) and runs no workers. While a server runs on the embedded database, the command
reaches it through the server's socket in the data directory (backup create excepted: back up in
the server, POST /api/v1/admin/backups).`

const JOB =
  'a job: {id, name, state, attempts, retryLimit, priority, payload, output, lastError, requestId, scheduleId, createdAt, runAfter, startedAt, completedAt}'
const SCHEDULE =
  'a schedule: {id, jobName, cron, timezone, payload, missed, description, paused, builtin, nextRuns[], createdAt, updatedAt}'

const BACKUP =
  'a backup: {id, status, problem, manifest: {kind, engine, startedAt, finishedAt, migrationHead, rowCounts, parts…}, verification}'

const scheduleOptions: OptionDecl[] = [
  {
    name: 'cron',
    type: 'string',
    arg: 'EXPR',
    description: 'cron expression, 5 fields (minute first) or 6 (seconds first)',
  },
  { name: 'tz', type: 'string', arg: 'ZONE', description: 'IANA time zone (default UTC)' },
  { name: 'payload', type: 'string', arg: 'JSON', description: "the job's payload" },
  {
    name: 'missed',
    type: 'string',
    choices: ['skip', 'once'],
    description: 'ticks missed while no worker ran: skip them, or run once for the latest',
  },
  { name: 'description', type: 'string', arg: 'TEXT', description: 'what the schedule is for' },
]

export const commands: readonly CommandDecl[] = [
  {
    name: 'start',
    summary: 'serve the API, run the workers, or both',
    description: `Starts Plinth: connects to the database (retrying up to PLINTH_DB_CONNECT_DEADLINE), applies
pending migrations (PLINTH_MIGRATE_ON_START) and serves HTTP on HOST:PORT. Every role serves
/live, /ready, /health, /api/metrics, /api/openapi.json and (unless PLINTH_API_DOCS=false)
/api/docs; only api and all serve the application routes under /api/v1.
Logs go to standard output (JSON lines, pretty in development) at PLINTH_LOG_LEVEL.
SIGTERM or SIGINT shuts down gracefully; a second signal forces the exit.`,
    options: [
      {
        name: 'role',
        type: 'string',
        choices: ROLES,
        description:
          'api: HTTP routes and enqueueing, no workers; worker: workers, the operations routes and the API docs, no /api/v1; all: both (default; PLINTH_ROLE sets it too)',
      },
    ],
    load: async () => (await import('./start.ts')).startCommand,
  },
  {
    name: 'migrate',
    summary: 'apply, revert or list database migrations',
    description: 'Runs under a PostgreSQL advisory lock: safe while other replicas start or migrate.',
    logs: true,
    actions: [
      {
        name: 'up',
        summary: 'apply every pending migration (or those numbered up to --to)',
        options: [
          { name: 'to', type: 'string', arg: 'N', description: 'the last migration number to apply or keep' },
        ],
        json: '{"action": "up", "done": [name…]} (the migrations applied, oldest first)',
      },
      {
        name: 'down',
        summary: 'revert the newest applied migration, or every one numbered above --to (0 reverts all)',
        options: [
          { name: 'to', type: 'string', arg: 'N', description: 'the last migration number to apply or keep' },
        ],
        json: '{"action": "down", "done": [name…]} (the migrations reverted, newest first)',
      },
      {
        name: 'status',
        summary: 'list migrations, applied and pending',
        json: '[{"name", "applied": boolean, "appliedAt": ISO time | null}…] oldest first',
      },
    ],
    load: async () => (await import('./migrate.ts')).migrateCommand,
  },
  {
    name: 'config',
    summary: 'validate the configuration without starting',
    description: `Validates the configuration (environment, .env and *_FILE secrets) exactly as "plinth start"
does, without starting anything. Exits 0 when valid, 1 with every problem listed otherwise.`,
    actions: [
      {
        name: 'check',
        summary: 'validate; --print also prints the effective configuration (secrets masked)',
        options: [{ name: 'print', description: 'also print the effective configuration (secrets masked)' }],
        json: '{"valid": true, "env", "config"?: {ENV_NAME: value…}} or, exit 1, {"valid": false, "problems": [text…]}',
      },
    ],
    load: async () => (await import('./config-check.ts')).configCommand,
  },
  {
    name: 'user',
    summary: 'create a user (the first administrator, or when sign-up is closed)',
    description: `Creates a user with a password directly in the database. The password is read from standard
input: typed twice at a hidden prompt on a terminal, otherwise the first line
(plinth user create --admin --email a@example.com < pw.txt); never from the command line, where
the process list and shell history would show it. It works while the server runs (on the
embedded database, through the server's socket).`,
    logs: true,
    actions: [
      {
        name: 'create',
        summary: 'create a user with a password from standard input',
        options: [
          {
            name: 'email',
            type: 'string',
            arg: 'ADDRESS',
            required: true,
            description: "the user's e-mail address",
          },
          { name: 'role', type: 'string', choices: USER_ROLES, description: 'the role (default member)' },
          { name: 'admin', description: 'shorthand for --role admin' },
        ],
        json: '{"id", "email", "role"}',
      },
    ],
    load: async () => (await import('./user-create.ts')).userCommand,
  },
  {
    name: 'jobs',
    summary: 'list, show, enqueue, retry or cancel jobs; queues and dead letters',
    description: DB_NOTE,
    logs: true,
    actions: [
      {
        name: 'list',
        summary: 'newest jobs first (internal queues are never listed)',
        options: [
          { name: 'name', type: 'string', arg: 'NAME', description: 'only this job type' },
          { name: 'state', type: 'string', choices: [...JOB_STATES], description: 'only jobs in this state' },
          { name: 'limit', type: 'string', arg: 'N', description: 'at most N jobs (default 50)' },
        ],
        json: `[${JOB}…]`,
      },
      { name: 'show', args: ['<id>'], summary: 'one job: payload, attempts, last error, timings', json: JOB },
      {
        name: 'enqueue',
        args: ['<name>'],
        summary: 'enqueue a job (the payload is checked against its schema)',
        options: [
          { name: 'payload', type: 'string', arg: 'JSON', description: "the job's payload (default {})" },
          { name: 'delay', type: 'string', arg: 'MS', description: 'run after this many milliseconds' },
          {
            name: 'key',
            type: 'string',
            arg: 'KEY',
            description: 'idempotency key: a repeated key enqueues nothing',
          },
        ],
        json: '{"id", "created": boolean} (false: the idempotency key named an existing job)',
      },
      { name: 'retry', args: ['<id>'], summary: 'run a failed or cancelled job again', json: JOB },
      { name: 'cancel', args: ['<id>'], summary: 'cancel a job that has not started', json: JOB },
      {
        name: 'types',
        summary: 'job types, their policies and queue depths',
        json: '[{"name", "waiting", "deadLettered", "policy": {concurrency, retryLimit, timeout…}}…]',
      },
      {
        name: 'purge-dead',
        args: ['<name>'],
        summary: "delete every job in a type's dead-letter queue",
        json: '{"count"}',
      },
      {
        name: 'redrive-dead',
        args: ['<name>'],
        summary: "move a type's dead-lettered jobs back into its queue",
        json: '{"count"}',
      },
    ],
    load: async () => (await import('./jobs.ts')).jobsCommand,
  },
  {
    name: 'schedules',
    summary: 'list, create, update, pause, resume or delete cron schedules',
    description: `EXPR has 5 fields (minute hour day month weekday) or 6 (seconds first); ZONE is an IANA name
(default UTC). --missed says what happens to ticks missed while no worker ran: skip them (default)
or run once for the latest.
${DB_NOTE}`,
    logs: true,
    actions: [
      {
        name: 'list',
        summary: 'every schedule, with its next runs',
        options: [
          { name: 'job', type: 'string', arg: 'NAME', description: 'only schedules of this job type' },
        ],
        json: `[${SCHEDULE}…]`,
      },
      { name: 'show', args: ['<id>'], summary: 'one schedule', json: SCHEDULE },
      {
        name: 'create',
        summary: 'create a schedule (needs --job and --cron)',
        options: [
          {
            name: 'job',
            type: 'string',
            arg: 'NAME',
            required: true,
            description: 'the job type to enqueue',
          },
          { ...scheduleOptions[0]!, required: true },
          ...scheduleOptions.slice(1),
        ],
        json: SCHEDULE,
      },
      {
        name: 'update',
        args: ['<id>'],
        summary: 'change a schedule',
        options: scheduleOptions,
        json: SCHEDULE,
      },
      { name: 'pause', args: ['<id>'], summary: 'stop enqueueing until resumed', json: SCHEDULE },
      { name: 'resume', args: ['<id>'], summary: 'enqueue again', json: SCHEDULE },
      { name: 'delete', args: ['<id>'], summary: 'delete a schedule', json: '{"deleted": id}' },
    ],
    load: async () => (await import('./jobs.ts')).schedulesCommand,
  },
  {
    name: 'audit',
    summary: 'verify the audit log hash chain, export it as NDJSON, or prune it',
    description: `Reads the database of the configuration (DATABASE_URL, or the embedded one in PLINTH_DATA_DIR,
which a running server keeps locked: use the server's own PostgreSQL for a live system).
See docs/operations/audit.md.`,
    logs: true,
    actions: [
      {
        name: 'verify',
        summary:
          'walk the chain from the last retention checkpoint: exit 0 when every row holds, 1 naming the first that does not',
        json: '{"valid": boolean, "checked", "from": {seq, checkpoint}, "head": {seq, hash} | null, "unsealed", "erased", "unverifiable", "failure"?: {seq, id, message}}',
      },
      {
        name: 'export',
        summary: 'print the audit log as NDJSON, oldest first (what GET /api/v1/audit/export gives)',
        options: [
          { name: 'from', type: 'string', arg: 'TIME', description: 'rows at or after this time' },
          { name: 'to', type: 'string', arg: 'TIME', description: 'rows before this time' },
          {
            name: 'action',
            type: 'string',
            arg: 'NOUN:VERB',
            description: 'e.g. user:role-changed or user:*',
          },
          { name: 'actor', type: 'string', arg: 'USER_ID', description: 'rows by this user' },
          { name: 'target-type', type: 'string', arg: 'TYPE', description: 'rows about this kind of thing' },
          { name: 'target-id', type: 'string', arg: 'ID', description: 'rows about this thing' },
          {
            name: 'outcome',
            type: 'string',
            choices: ['success', 'failure'],
            description: 'only this outcome',
          },
          { name: 'request-id', type: 'string', arg: 'ID', description: 'rows of this request' },
        ],
        json: 'NDJSON (always): one audit entry object per line',
      },
      {
        name: 'prune',
        summary: 'delete rows older than PLINTH_AUDIT_RETENTION after verifying them, leaving a checkpoint',
        json: '{"pruned", "before": ISO time, "checkpoint": {lastSeq, lastHash} | null}',
      },
    ],
    load: async () => (await import('./audit.ts')).auditCommand,
  },
  {
    name: 'retention',
    summary: 'delete expired sessions, tokens, e-mail and audit rows now, or list the rules',
    description: `Periods: PLINTH_SESSION_RETENTION, PLINTH_MAIL_RETENTION, PLINTH_WEBHOOKS_RETENTION,
PLINTH_AUDIT_RETENTION; the job's schedule: PLINTH_RETENTION_CRON (docs/operations/retention.md).
${DB_NOTE}`,
    logs: true,
    actions: [
      {
        name: 'run',
        summary:
          'run every rule now, as the plinth.retention job does (exit 1 when a rule failed; the others still ran)',
        json: '{"ok", "deleted", "durationMs", "results": [{rule, describe, deleted, error?}…]}',
      },
      { name: 'list', summary: 'the rules and what each deletes', json: '[{"rule", "describe"}…]' },
    ],
    load: async () => (await import('./retention.ts')).retentionCommand,
  },
  {
    name: 'privacy',
    summary: 'export or erase everything Plinth holds about a user',
    description: `Reads the database of the configuration (DATABASE_URL, or the embedded one in PLINTH_DATA_DIR,
which a running server keeps locked). See docs/operations/privacy.md.`,
    logs: true,
    actions: [
      {
        name: 'export',
        summary:
          'print everything Plinth holds about the user as one JSON document (what GET /api/v1/me/export gives); audited',
        options: [
          {
            name: 'user',
            type: 'string',
            arg: 'ID|EMAIL',
            required: true,
            description: 'the user: id or e-mail address',
          },
        ],
        json: 'the export document (always JSON): {user, …one key per module}',
      },
      {
        name: 'erase',
        summary:
          'erase the user; audit rows are kept, pseudonymised. Irreversible: needs --yes; refuses the last administrator',
        options: [
          {
            name: 'user',
            type: 'string',
            arg: 'ID|EMAIL',
            required: true,
            description: 'the user: id or e-mail address',
          },
          { name: 'yes', required: true, description: 'confirm the erasure' },
        ],
        json: '{"userId", "pseudonym", "rows": {table: count…}}',
      },
    ],
    load: async () => (await import('./privacy.ts')).privacyCommand,
  },
  {
    name: 'keys',
    summary: 'rotate the data keys, or show which key encrypts how many values',
    description: `rotate is safe while the service runs; interrupted, run it again: it finishes the unfinished
rotation. It waits 2 x PLINTH_KEYS_REFRESH for every replica to load the new key before its last
sweep (no wait on the embedded database). See docs/operations/key-rotation.md.`,
    logs: true,
    actions: [
      {
        name: 'rotate',
        summary: 'make a new data key active, re-encrypt older values in batches, retire the old keys',
        options: [
          {
            name: 'batch-size',
            type: 'string',
            arg: 'N',
            description: 'rows per batch, 1..10000 (default 500)',
          },
          { name: 'resume', description: 'only finish an unfinished rotation; never create a key' },
        ],
        json: '{"moved", "activeId", "converged", "remaining": {keyId: count…}, "failed": [{table, column, id, keyId}…]} (progress lines go to standard error)',
      },
      {
        name: 'status',
        summary: 'which key encrypts how many values, per table and column',
        json: '{"keys": [{id, state, values, legacy, createdAt, retiredAt}…], "columns": [{table, column, total, byKey}…], "unfinished", "warnings": [text…]}',
      },
      {
        name: 'rewrap',
        summary:
          'after changing PLINTH_MASTER_KEY (old one in PLINTH_MASTER_KEY_PREVIOUS): re-wrap every data key',
        json: '{"rewrapped": [keyId…], "kept": [keyId…]}',
      },
    ],
    load: async () => (await import('./keys.ts')).keysCommand,
  },
  {
    name: 'backup',
    summary: 'create, list, show, verify, restore or prune encrypted backups',
    description: `Backups are pg_dump -Fc on a server and PGlite's data directory when embedded, compressed and
encrypted (AES-256-GCM) into PLINTH_BACKUP_DIR (or PLINTH_BACKUP_S3_BUCKET). A restore needs this
server's data keys or the PLINTH_MASTER_KEY the backup was made under (docs/operations/backups.md).
${DB_NOTE}`,
    logs: true,
    actions: [
      {
        name: 'create',
        summary: 'back up the database now, then verify it',
        options: [{ name: 'no-verify', description: 'skip the verification (restore to a scratch target)' }],
        json: BACKUP,
      },
      {
        name: 'list',
        summary: 'every backup, newest first, with its verification status',
        json: `{"backups": [${'$'}{BACKUP}…]}`,
      },
      { name: 'show', args: ['<id>'], summary: "one backup's manifest and last verification", json: BACKUP },
      {
        name: 'verify',
        args: ['<id>'],
        summary:
          'restore it to a scratch target and check checksums, migration head, row counts and the audit chain (exit 1 when it fails)',
        json: '{id, ok, durationMs, checks: [{name, ok, detail}…]}',
      },
      {
        name: 'restore',
        args: ['<id>'],
        summary:
          'restore into --target <DATABASE_URL> (server backups) or --data-dir <DIR> (embedded ones), then erase again everyone erased since (tombstones); refuses newer backups and non-empty targets unless --force --yes',
        options: [
          {
            name: 'target',
            type: 'string',
            arg: 'URL',
            description: 'the PostgreSQL database to restore into',
          },
          {
            name: 'data-dir',
            type: 'string',
            arg: 'DIR',
            description: 'the data directory to restore an embedded backup into',
          },
          {
            name: 'force',
            description: 'replace what the target holds (the old embedded directory is moved aside)',
          },
          { name: 'yes', description: 'confirm --force' },
          {
            name: 'progress',
            description:
              'show the progress bar (archive bytes read) on standard error even when it is not a terminal; never with --json',
          },
        ],
        json: '{id, target, matches, replaced, erasuresReapplied}',
      },
      {
        name: 'reapply-erasures',
        summary:
          'erase again, in a restored database (--target URL or --data-dir DIR), everyone the erasure tombstones name (after plinth pitr restore or a manual restore)',
        options: [
          { name: 'target', type: 'string', arg: 'URL', description: 'the restored PostgreSQL database' },
          {
            name: 'data-dir',
            type: 'string',
            arg: 'DIR',
            description: 'the restored embedded data directory',
          },
        ],
        json: '{erasuresReapplied}',
      },
      {
        name: 'prune',
        summary:
          'delete the backups grandfather-father-son retention does not keep (PLINTH_BACKUP_KEEP_*); the newest verified one always stays',
        options: [{ name: 'dry-run', description: 'only list what would go' }],
        json: '{dryRun, keep: [{id, reasons}…], remove: [{id, reason}…], damaged: [id…]}',
      },
    ],
    load: async () => (await import('./backup.ts')).backupCommand,
  },
  {
    name: 'import',
    summary: "load JSON, NDJSON or CSV files into a module's table; move users from PocketBase or Supabase",
    description: `plinth import <module> <dataset> <file|dir> streams each file into the table the module
declares importable: in batches that each commit with the file's checkpoint (a re-run after a kill
resumes), as an upsert on the dataset's key that rewrites only changed rows (a re-run changes
nothing). Rejected rows are reported with their line and reason. A progress bar is drawn on a
terminal's standard error.
plinth import pocketbase <pb_data> brings the users of PocketBase (v0.23+) auth collections, and
with --collections those collections' records into migration_records; plinth import supabase
<DATABASE_URL|env:NAME> brings Supabase's auth.users. People keep their passwords: the bcrypt hash
is checked at their next sign-in, then replaced by argon2id. Exit 1 when a file did not complete,
a row was rejected, or a user could not come over. See docs/guides/import-and-migrate.md.`,
    logs: true,
    args: ['<module|pocketbase|supabase>', '<dataset|pb_data|url>', '[file|dir]'],
    options: [
      {
        name: 'dry-run',
        description: 'do every check and report what would change, changing nothing',
      },
      {
        name: 'batch-size',
        type: 'string',
        arg: 'N',
        description: 'rows per transaction (default 5000)',
      },
      {
        name: 'collections',
        type: 'string',
        arg: 'A,B',
        description: "PocketBase: also bring these collections' records (into migration_records)",
      },
    ],
    json: '{module, dataset, dryRun, ok, files: [{file, format, status, resumedAtLine, rows, inserted, updated, unchanged, rejected, rejections: [{line, reason}…], error?}…]}; for pocketbase|supabase {source, dryRun, ok, users: {created, unchanged, exists, skipped, list: [{externalId, collection, email, outcome, reason?, oauthProviders?, verified}…]}, records}',
    load: async () => (await import('./import.ts')).importCommand,
  },
  {
    name: 'pitr',
    summary: 'point-in-time recovery through pgBackRest: setup, backup, status, verify, restore',
    description: `Continuous WAL archiving and physical backups by pgBackRest on the database host
(PLINTH_PITR_STANZA, PLINTH_PITR_PG_DATA, PLINTH_PITR_CIPHER_PASS …; docs/operations/backups.md).
Boots no Plinth: a restore works when the database is gone. setup and status read the server at
DATABASE_URL when it is set.`,
    logs: true,
    actions: [
      {
        name: 'setup',
        summary:
          'write the pgBackRest configuration, check (or --apply) the archive_* settings, create the stanza and run pgbackrest check (exit 1 until ready)',
        options: [
          {
            name: 'apply',
            description:
              'apply the archive settings with ALTER SYSTEM (superuser; archive_mode needs a restart)',
          },
        ],
        json: '{configPath, settings, sql: [text…], steps: [{name, ok, detail}…], restartNeeded, ready}',
      },
      {
        name: 'backup',
        summary: 'take a pgBackRest backup now',
        options: [
          {
            name: 'type',
            type: 'string',
            choices: ['full', 'diff', 'incr'],
            description: 'backup type (default full)',
          },
        ],
        json: '{label, type, startedAt, finishedAt, sizeBytes, repoBytes, walStart, walStop, lsnStart, lsnStop, error}',
      },
      {
        name: 'status',
        summary: 'the repository, its backups, the last backup age and the WAL archive lag',
        json: '{stanza, repository: {ok, message}, backups: […], lastBackup, lastBackupAgeSeconds, archive: {min, max, lastArchivedWal, lastArchivedAt, lastFailedWal, lastFailedAt, pendingBytes, lagSeconds}}',
      },
      {
        name: 'verify',
        summary:
          'pgbackrest verify: check every backup and WAL file in the repository (exit 1 when it fails); --restore also proves it by a real restore',
        options: [
          {
            name: 'restore',
            description:
              "also restore the newest backup and the archived WAL into a scratch cluster (pg_ctl, a spare port), read back a canary written first and Plinth's tables, then remove it (root or the server's user)",
          },
        ],
        json: '{ok, detail, restore: {ok, restoreMs, checks: [{name, ok, detail}…]} | null}',
      },
      {
        name: 'restore',
        summary:
          'restore into a stopped, empty data directory up to --to-time or --to-lsn (asks unless --yes); start the server on it afterwards',
        options: [
          {
            name: 'to-time',
            type: 'string',
            arg: 'TIME',
            description: 'ISO 8601 time with a zone to recover to',
          },
          { name: 'to-lsn', type: 'string', arg: 'LSN', description: 'LSN to recover to (0/3000028)' },
          {
            name: 'pg-data',
            type: 'string',
            arg: 'DIR',
            description: 'data directory to restore into (default PLINTH_PITR_PG_DATA)',
          },
          { name: 'force', description: 'overwrite a non-empty directory (pgBackRest --delta)' },
          { name: 'yes', description: 'do not ask for confirmation' },
        ],
        json: '{pgData, type, target, durationMs}',
      },
    ],
    load: async () => (await import('./pitr.ts')).pitrCommand,
  },
  {
    name: 'dr',
    summary:
      'disaster-recovery drills: restore the newest backup to a scratch target, check it, measure RTO and RPO',
    description: `A drill writes a canary row (the last write committed before the "disaster"), restores the
newest backup (--fresh: one it takes first) to a scratch target (a scratch database beside
DATABASE_URL, or a scratch data directory), brings a Plinth up on it (plinth start in a process
of its own, role api, on 127.0.0.1 at a spare port; POST /api/v1/admin/backups/drills and the
schedule do the same) and reports RTO (start of the restore to /ready 200, measured) and RPO (the last canary
committed before the disaster minus the newest canary recovered) beside the goals (300 s, 60 s);
it also checks checksums, row counts, the audit chain and the migration head, then drops the
scratch target. Reports are stored in the backup target (GET /api/v1/admin/backups/drills).
Runbook: docs/operations/disaster-recovery.md.
${DB_NOTE}`,
    logs: true,
    actions: [
      {
        name: 'drill',
        summary: 'run a drill now (exit 1 when a check fails or the restored copy never answers /ready)',
        options: [
          { name: 'fresh', description: 'take a fresh backup (after a canary row) and drill on it' },
          {
            name: 'pitr',
            description:
              'restore through pgBackRest into a scratch cluster (PLINTH_PITR_*): canaries for one archive timeout, then the end of the archived WAL',
          },
          {
            name: 'to-time',
            type: 'string',
            arg: 'TIME',
            description:
              'with --pitr: recover to this ISO 8601 time; every canary up to it must be there, none after',
          },
        ],
        json: '{id, at, ok, backupId, backupKind, rtoSeconds, rtoBasis, restoreSeconds, ready: {reached, seconds, detail}, rpoSeconds, rpoBasis, canaries: {lastCommittedAt, lastRecoveredAt, recovered}, freshBackup, walArchiveLagSeconds, pitr: {toTime, expected?, recovered?, mismatches?} | null, targets, meetsTargets, checks: [{name, ok, detail}…]}',
      },
      { name: 'list', summary: 'stored drill reports, newest first', json: '{"drills": [drill…]}' },
    ],
    load: async () => (await import('./dr.ts')).drCommand,
  },
  {
    name: 'files',
    summary: 'stored files: usage per owner, reconcile rows and objects, verify checksums',
    description: `Works on the configured file storage (PLINTH_FILES_DIR, <PLINTH_DATA_DIR>/files, or
PLINTH_FILES_S3_BUCKET); the files.sweep job runs the sweep daily (docs/operations/files.md).
${DB_NOTE}`,
    logs: true,
    actions: [
      {
        name: 'usage',
        summary: 'files and bytes stored, in total and per owner',
        json: '{storage, files, bytes, owners: [{owner, files, bytes}…]}',
      },
      {
        name: 'sweep',
        summary:
          'remove objects no row refers to and stale staged uploads; report rows whose object is missing (exit 1 then)',
        options: [{ name: 'dry-run', description: 'only list what would go' }],
        json: '{objects, orphanObjects: [key…], missingObjects: [{id, owner, sha256}…], staleStaging, dryRun}',
      },
      {
        name: 'verify',
        summary: 'read every stored file back and check its SHA-256 (exit 1 when one is missing or damaged)',
        json: '{checked, missing: [id…], corrupt: [id…]}',
      },
    ],
    load: async () => (await import('./files.ts')).filesCommand,
  },
  {
    name: 'completion',
    summary: 'print a shell completion script (bash or zsh)',
    description: `plinth completion bash >> ~/.bashrc, or plinth completion zsh > "\${fpath[1]}/_plinth".`,
    args: ['<shell>'],
    options: [],
    load: async () => async (input, io) => {
      if (input.args[0] !== 'bash' && input.args[0] !== 'zsh')
        throw new UsageError('the shell is bash or zsh')
      io.out(completionScript(input.args[0] === 'zsh' ? 'zsh' : 'bash', commands))
      return 0
    },
  },
  {
    name: 'errors',
    summary: "print the error-code reference: Plinth's codes and the application's modules'",
    description: `Prints every error code an API response can carry, with its HTTP status, title and what to
do about it, as Markdown (docs/errors.md, then a section for each application module that declares
codes of its own in its errors). Run from an application's main.ts (node main.ts errors) to include
its modules. The modules are checked as at start: a code that clashes stops it with exit 1.`,
    json: '[{"code", "status", "title", "detail", "module": name | null (built in)}…]',
    load: async () => (await import('./errors.ts')).errorsCommand,
  },
  {
    name: 'version',
    summary: 'print the version',
    description: "Prints Plinth's version and the Node.js version it runs on.",
    json: '{"version", "node"}',
    load: async () => (await import('./version.ts')).versionCommand,
  },
]
